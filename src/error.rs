//! Library errors. Each says what went wrong and what to do about it, in one
//! line, because the CLI prints exactly this line and exits non-zero.
//!
//! The causes are typed fields ([`SysError`] for an errno the kernel gave,
//! [`std::io::Error`] for a failed std call, [`DiagError`], [`NetnsError`]
//! and [`SysctlError`] for the three subsystems) for a program to match on.
//! Every `Display` here is the whole line, causes included, and so no error
//! of this module returns its cause from `source()`: the CLI prints an
//! error and then each cause of its chain, and would say the cause twice;
//! other callers keep `to_string()` as the complete message (matrix cells,
//! the namespace worker's last line, JSON `message` fields).

use crate::outcome::SysError;
use std::net::SocketAddr;

/// Everything the library can fail with. New variants may come: match with
/// a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address the user typed could not be parsed.
    #[error(
        "malformed address '{input}': {why}; expected IP:PORT such as 127.0.0.1:12345 or [::1]:12345"
    )]
    BadAddress {
        /// What was typed.
        input: String,
        /// What is wrong with it, in words (the parser's own message, e.g.
        /// "invalid port number"): a sentence for the reader, not a cause
        /// to match on.
        why: String,
    },

    /// bind() failed with EADDRINUSE.
    #[error(
        "{addr} is already in use: {err}; another program listens there: pick another port, or find it with `twlab ss --local {holder} -p`"
    )]
    AddrInUse {
        /// The address bind() was given.
        addr: SocketAddr,
        /// The listener found in the way (its own address: `[::]:80` for
        /// a dual-stack listener that holds `127.0.0.1:80`), or `addr`.
        holder: Box<SocketAddr>,
        /// The errno.
        err: SysError,
    },

    /// bind() of a privileged port without the capability.
    #[error(
        "permission denied binding {addr}: {err}; ports below 1024 need root or CAP_NET_BIND_SERVICE: use a port of 1024 or more"
    )]
    PrivilegedPort {
        /// The address bind() was given.
        addr: SocketAddr,
        /// The errno.
        err: SysError,
    },

    /// connect() got ECONNREFUSED.
    #[error(
        "connection to {addr} refused: {err}; nothing listens there: start `twlab server --listen {addr}` first"
    )]
    Refused {
        /// The address connect() was given.
        addr: SocketAddr,
        /// The errno.
        err: SysError,
    },

    /// Any other failed system call, with the errno.
    #[error("{what} failed: {err}")]
    Sys {
        /// The call and what it acted on, e.g. "bind 127.0.0.1:23456": text
        /// because it names one of many calls with its arguments; the
        /// typed part is `err`.
        what: String,
        /// The errno.
        err: SysError,
    },

    /// The sock_diag netlink conversation failed.
    #[error("sock_diag: {0}")]
    Diag(DiagError),

    /// A network namespace could not be made, entered or used.
    #[error("network namespace: {0}")]
    Netns(NetnsError),

    /// A sysctl could not be read or written.
    #[error("sysctl {name}: {why}")]
    Sysctl {
        /// Dotted name.
        name: String,
        /// What went wrong.
        why: SysctlError,
    },

    /// A stop signal arrived (see the `signal` module).
    #[error("interrupted (Ctrl-C)")]
    Interrupted,

    /// A bounded wait ran out.
    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout {
        /// How long it waited.
        secs: f64,
        /// What it waited for, in words, with what the kernel showed at the
        /// end ("the RST to reach the server (kernel shows ...)"): text
        /// because it describes one of many waits; there is no cause
        /// beyond the time.
        what: String,
    },

    /// Input that is well-formed but makes no sense. The text says why and
    /// what to type instead; it is a `String` because the sentence *is*
    /// the error (a scenario's line, a file's field, a flag's value): there
    /// is no cause below it to match on.
    #[error("{0}")]
    Invalid(String),

    /// The feature needs another operating system.
    #[error("not supported on {os}: {what}")]
    Unsupported {
        /// This OS.
        os: &'static str,
        /// What needs another one, in words.
        what: String,
    },

    /// A bad argument found after parsing (a value out of its documented
    /// range, a matrix too large): the CLI exits 2, as for clap's errors.
    /// Like [`Error::Invalid`] a `String`: the sentence, naming the
    /// argument and its allowed values, is the whole error.
    #[error("{0}")]
    Usage(String),
}

/// Why a sock_diag (NETLINK_SOCK_DIAG) request failed: the socket, the
/// kernel's answer, or the bytes it sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiagError {
    /// The NETLINK_SOCK_DIAG socket could not be made: no inet_diag
    /// support in this kernel, or the socket call was refused.
    #[error(
        "cannot open a NETLINK_SOCK_DIAG socket ({err}); is the inet_diag/tcp_diag module available?"
    )]
    Open {
        /// The error of socket(2).
        err: std::io::Error,
    },

    /// A call on the open socket failed.
    #[error("{call}: {err}")]
    Socket {
        /// The call: `bind`, `connect`, `send` or `recv`.
        call: &'static str,
        /// Its error, with the errno.
        err: std::io::Error,
    },

    /// A read without a wait returned no datagram at all.
    #[error("recv: empty read")]
    EmptyRead,

    /// A read returned 0 bytes: the kernel closed the socket.
    #[error("the kernel closed the socket")]
    Closed,

    /// A netlink message whose header, or NLMSG_ERROR payload, does not
    /// fit its datagram.
    #[error("malformed netlink message: {why}")]
    Malformed {
        /// The netlink decoder's description (which length field and how
        /// many bytes there were).
        why: String,
    },

    /// A message shorter than the struct it must hold.
    #[error("{what} of {len} bytes, shorter than {need} bytes")]
    Truncated {
        /// The struct, e.g. `inet_diag_msg`.
        what: &'static str,
        /// The bytes there were.
        len: usize,
        /// The struct's size.
        need: usize,
    },

    /// An address family other than AF_INET and AF_INET6.
    #[error("unknown address family {0}")]
    Family(u8),

    /// A TCP state number this build does not know.
    #[error("unknown TCP state {0}")]
    State(u8),

    /// The kernel answered a dump request with an NLMSG_ERROR.
    #[error("the kernel refused the dump: {err}")]
    Refused {
        /// The errno the kernel sent (as -errno in `nlmsgerr`).
        err: SysError,
    },

    /// A batch of exact lookups ended with some unanswered.
    #[error("the kernel did not answer every lookup")]
    Unanswered,

    /// The kernel flagged the dump as inconsistent (NLM_F_DUMP_INTR).
    #[error(
        "the kernel flagged the socket dump as interrupted (NLM_F_DUMP_INTR): the table changed while it was read; run the command again"
    )]
    DumpInterrupted,

    /// A dump went on for more reads than any socket table needs, without
    /// NLMSG_DONE.
    #[error("dump did not end")]
    Endless,
}

/// Why a network namespace could not be made, entered or used: the step
/// that failed, with its errno or io error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// unshare(2) failed; the message advises by the errno (EPERM is a
    /// missing privilege, ENOSPC a namespace count limit, EUSERS the
    /// nesting limit, ENOMEM memory).
    #[error(
        "unshare({flags}) failed: {err}; {}",
        unshare_advice(flags, err, limits)
    )]
    Unshare {
        /// The flags as C spells them: `CLONE_NEWNET`,
        /// `CLONE_NEWUSER|CLONE_NEWNET`.
        flags: &'static str,
        /// The errno.
        err: SysError,
        /// For ENOSPC, the namespace limits as read when it failed (they
        /// apply to root too); else empty.
        limits: Vec<NsLimit>,
    },

    /// setns(2) into a namespace held open failed.
    #[error("{what}: {err}")]
    Setns {
        /// The step: `setns`, `setns to the nursery namespace`.
        what: &'static str,
        /// The errno.
        err: SysError,
    },

    /// Bringing the namespace's `lo` up failed.
    #[error("{step}: {err}")]
    LoopbackUp {
        /// The step: `socket for ioctl`, `SIOCGIFFLAGS lo`,
        /// `SIOCSIFFLAGS lo up`.
        step: &'static str,
        /// The errno.
        err: SysError,
    },

    /// A write that sets up a new user namespace failed.
    #[error("{path}: {err}")]
    IdMap {
        /// `/proc/self/setgroups`, `/proc/self/uid_map` or
        /// `/proc/self/gid_map`.
        path: &'static str,
        /// The write's error.
        err: std::io::Error,
    },

    /// The kernel refused an rtnetlink request (a veth pair, an address,
    /// a link up).
    #[error("rtnetlink `{what}`: {detail}")]
    Rtnl {
        /// What was asked, in iproute2's words (`link add m0 type veth`).
        what: String,
        /// The errno, when the kernel answered with one.
        err: Option<SysError>,
        /// The kernel's text (its extended ack, or the errno's).
        detail: String,
    },

    /// TX checksum offload could not be turned off on a device.
    #[error("TX checksum offload off on {dev}: {err}")]
    ChecksumOffload {
        /// The device.
        dev: String,
        /// The ioctl's error.
        err: std::io::Error,
    },

    /// A packet socket on a device could not be opened.
    #[error("packet socket on {dev}: {err}")]
    PacketSocket {
        /// The device.
        dev: String,
        /// The error.
        err: std::io::Error,
    },

    /// Another step of namespace work failed with an io error: starting the
    /// thread or process that holds a namespace, talking to it, opening a
    /// namespace's file.
    #[error("{what}: {err}")]
    Io {
        /// The step, e.g. `spawn`, `starting the namespace worker`,
        /// `reading the worker`, `open the nursery namespace`.
        what: &'static str,
        /// Its error.
        err: std::io::Error,
    },

    /// A thread doing namespace work panicked.
    #[error("{what} panicked")]
    Panicked {
        /// The thread: `a cell worker`, `probe thread`.
        what: &'static str,
    },

    /// A line from the namespace worker process was not a result.
    #[error("bad worker output: {err}")]
    WorkerOutput {
        /// The JSON error.
        err: serde_json::Error,
    },

    /// The namespace worker process failed.
    #[error("the namespace worker failed: {last}")]
    WorkerFailed {
        /// Its own last line of error, without its "twlab: error: "
        /// prefix: the message of another process, so text.
        last: String,
    },

    /// The worker process reached its work without having made its
    /// namespaces first (a bug).
    #[error("the worker did not unshare before threads started")]
    NotUnshared,

    /// Namespaces are a Linux feature.
    #[error("{what} are a Linux feature")]
    NotLinux {
        /// `network namespaces` or `user namespaces`.
        what: &'static str,
    },
}

/// One namespace count limit (a `user.max_*_namespaces` sysctl) and its
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsLimit {
    /// Dotted name, `user.max_net_namespaces`.
    pub name: &'static str,
    /// Its value, `None` if it could not be read.
    pub value: Option<String>,
}

/// What to do about a failed unshare(2) (see unshare(2) for the errnos).
fn unshare_advice(flags: &str, err: &SysError, limits: &[NsLimit]) -> String {
    let user = flags.contains("NEWUSER");
    if err.is("EPERM") && user {
        "user namespaces are not allowed for this user here (see /proc/sys/user/max_user_namespaces and kernel.unprivileged_userns_clone)".into()
    } else if err.is("EPERM") {
        "run as root, or with CAP_SYS_ADMIN".into()
    } else if err.is("ENOSPC") {
        let limits: Vec<String> = limits
            .iter()
            .map(|l| format!("{} = {}", l.name, l.value.as_deref().unwrap_or("?")))
            .collect();
        format!(
            "too many namespaces: a namespace limit is reached ({}); raise it with sysctl, or end other namespaces",
            limits.join(", ")
        )
    } else if err.is("EUSERS") {
        "user namespaces are nested too deeply (32 levels at most)".into()
    } else if err.is("ENOMEM") {
        "out of memory".into()
    } else {
        "namespaces are not available here".into()
    }
}

/// Why a sysctl could not be read, written or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SysctlError {
    /// This kernel has no such sysctl (no file under /proc/sys).
    #[error("this kernel has no such sysctl")]
    Missing,

    /// The sysctl a factor needs came in a later kernel than this one.
    #[error(
        "this kernel ({release}) has no {sysctl} (added in Linux {since}); drop the {factor} factor"
    )]
    TooNew {
        /// This kernel's release, e.g. `6.8.0-45-generic`.
        release: String,
        /// The sysctl's dotted name again (the message names it).
        sysctl: &'static str,
        /// The first release that has it, e.g. `6.14`.
        since: &'static str,
        /// The matrix factor that sets it.
        factor: &'static str,
    },

    /// It could not be read (missing, or not readable here).
    #[error("cannot read it")]
    Unreadable,

    /// Its value is not what this build can parse (not a number, not a
    /// known setting).
    #[error("unexpected value '{value}'")]
    Unexpected {
        /// The text read.
        value: String,
    },

    /// Writing it was not allowed (EACCES, EPERM: not root in the
    /// namespace that owns it).
    #[error("cannot set it to '{value}': {err}")]
    PermissionDenied {
        /// The value written.
        value: String,
        /// The write's error.
        err: std::io::Error,
    },

    /// The kernel refused the value (EINVAL: out of its range), or another
    /// error of the write.
    #[error("cannot set it to '{value}': {err}")]
    Write {
        /// The value written.
        value: String,
        /// The write's error.
        err: std::io::Error,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<DiagError> for Error {
    fn from(e: DiagError) -> Self {
        Error::Diag(e)
    }
}

impl From<NetnsError> for Error {
    fn from(e: NetnsError) -> Self {
        Error::Netns(e)
    }
}

impl Error {
    /// Wrap an io error from `what` (e.g. "bind 127.0.0.1:23456").
    pub fn sys(what: impl Into<String>, e: &std::io::Error) -> Self {
        Error::Sys {
            what: what.into(),
            err: SysError::from_io(e),
        }
    }
}
