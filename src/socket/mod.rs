//! Sockets as the experiment sees them: options chosen up front
//! ([`SocketOpts`]), and each socket call done as a separate, recorded step.
//!
//! socket2 gives the raw calls (bind, connect, listen, setsockopt) without
//! std's opinions: std's `TcpListener::bind` sets SO_REUSEADDR on its own on
//! Unix, which would hide exactly the rule twlab exists to show.

use crate::error::Error;
use crate::outcome::{Step, StepResult, SysError};
use socket2::{Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

mod opts;
mod wait;
#[cfg(target_os = "linux")]
pub(crate) use wait::connect_bounded;

use wait::wait_readable;

pub use opts::{Family, SocketOpts, V6Only, parse_endpoint, v6only_word};

/// Raise RLIMIT_NOFILE to its hard limit, and refuse (exit 2) a run that
/// would hold more than `need` descriptors: it would end in EMFILE part
/// way through, measuring the limit on descriptors instead of what it set
/// out to (load's `--held 30000` ended in "socket EMFILE ×19963"; reuseport
/// `--connections 20000` in "socket failed: EMFILE" under a hard limit of
/// 20,000). `fewer` says what to ask for less of.
#[cfg(target_os = "linux")]
pub(crate) fn ensure_descriptors(need: u64, fewer: &str) -> crate::error::Result<()> {
    let have =
        crate::sys::load::raise_nofile().map_err(|e| Error::sys("getrlimit(RLIMIT_NOFILE)", &e))?;
    if need > have {
        return Err(Error::Usage(format!(
            "this run holds up to {need} descriptors and RLIMIT_NOFILE allows {have} (its hard limit): raise it (ulimit -Hn {need} as root, or LimitNOFILE= in a unit) or {fewer}"
        )));
    }
    Ok(())
}

/// A TCP socket created with [`SocketOpts`], each call recorded as a step.
#[derive(Debug)]
pub struct TcpSock {
    /// The socket itself.
    pub sock: Socket,
    /// The options it was created with.
    pub opts: SocketOpts,
}

/// A failed step: which call, and the OS error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// The call that failed.
    pub step: Step,
    /// Its error, by name.
    pub error: SysError,
    /// std's classification of the error.
    pub io_kind: io::ErrorKind,
}

impl StepError {
    /// The error of `step` from an io error.
    pub fn from_io(step: Step, e: &io::Error) -> Self {
        Self::new(step, e)
    }

    fn new(step: Step, e: &io::Error) -> Self {
        StepError {
            step,
            error: SysError::from_io(e),
            io_kind: e.kind(),
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}() failed: {}", self.step, self.error)
    }
}

/// The result of one step.
pub type StepRes<T> = std::result::Result<T, StepError>;

impl TcpSock {
    /// socket() and the options, in the order a C program would set them.
    pub fn new(family: Family, opts: SocketOpts) -> StepRes<Self> {
        let sock = Socket::new(family.domain(), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| StepError::new(Step::Socket, &e))?;
        let set = |r: io::Result<()>| r.map_err(|e| StepError::new(Step::SetOpt, &e));
        // Off is every system's default: one system call saved per socket.
        if opts.reuseaddr {
            set(sock.set_reuse_address(true))?;
        }
        #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
        if opts.reuseport {
            set(sock.set_reuse_port(true))?;
        }
        #[cfg(not(unix))]
        if opts.reuseport {
            // Windows has no SO_REUSEPORT; say so instead of ignoring it.
            return Err(StepError {
                step: Step::SetOpt,
                error: SysError::from_code(crate::sys::err::NO_PROTO_OPT),
                io_kind: io::ErrorKind::Unsupported,
            });
        }
        if let Some(secs) = opts.linger {
            set(sock.set_linger(Some(Duration::from_secs(secs as u64))))?;
        }
        #[cfg(target_os = "linux")]
        if opts.bind_no_port {
            set(sys_set_bind_no_port(&sock))?;
        }
        if family == Family::V6 {
            // Like a C program: only touch IPV6_V6ONLY when asked, so the
            // default follows net.ipv6.bindv6only (inet6_create()).
            if let Some(on) = opts.v6only.explicit() {
                set(sock.set_only_v6(on))?;
            }
        }
        Ok(TcpSock { sock, opts })
    }

    /// IPV6_V6ONLY as the kernel has it (getsockopt), `None` for IPv4.
    pub fn v6only(&self) -> Option<bool> {
        // getsockname() tells the family even before bind().
        match self.sock.local_addr().ok().and_then(|a| a.as_socket()) {
            Some(SocketAddr::V6(_)) => self.sock.only_v6().ok(),
            _ => None,
        }
    }

    /// "dual-stack, REUSEADDR", "v6-only, none", or the options alone for
    /// IPv4: what the socket really is, read back from the kernel.
    pub fn label(&self) -> String {
        match self.v6only() {
            Some(v) => {
                let mut o = self.opts;
                o.v6only = V6Only::System;
                format!("{}, {}", v6only_word(v), o.label())
            }
            None => self.opts.label(),
        }
    }

    /// bind().
    pub fn bind(&self, addr: SocketAddr) -> StepRes<()> {
        self.sock
            .bind(&SockAddr::from(addr))
            .map_err(|e| StepError::new(Step::Bind, &e))
    }

    /// listen() with this queue length.
    pub fn listen(&self, backlog: i32) -> StepRes<()> {
        self.sock
            .listen(backlog)
            .map_err(|e| StepError::new(Step::Listen, &e))
    }

    /// Blocking connect with a timeout (loopback answers at once; the timeout
    /// only guards against a peer namespace that drops SYNs).
    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> StepRes<()> {
        #[cfg(target_os = "linux")]
        {
            // One blocking connect() bounded by SO_SNDTIMEO (Linux's
            // __inet_stream_connect() waits sk_sndtimeo), instead of
            // non-blocking connect + poll + two fcntl calls: the story's
            // loop pays this per attempt.
            let step = |e: &io::Error| StepError::new(Step::Connect, e);
            self.sock
                .set_write_timeout(Some(timeout))
                .map_err(|e| step(&e))?;
            match self.sock.connect(&SockAddr::from(addr)) {
                Ok(()) => Ok(()),
                // The timeout ran out with the handshake still under way.
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    Err(step(&io::Error::from_raw_os_error(libc::ETIMEDOUT)))
                }
                Err(e) => Err(step(&e)),
            }
        }
        #[cfg(not(target_os = "linux"))]
        self.sock
            .connect_timeout(&SockAddr::from(addr), timeout)
            .map_err(|e| StepError::new(Step::Connect, &e))
    }

    /// accept() with a timeout, so a lost SYN never hangs the experiment.
    pub fn accept(&self, timeout: Duration) -> StepRes<(TcpSock, SocketAddr)> {
        wait_readable(&self.sock, timeout).map_err(|e| StepError::new(Step::Accept, &e))?;
        self.accept_now()
    }

    /// How long [`Self::accept_timed`] waits. On Linux this is
    /// SO_RCVTIMEO, which bounds a blocking accept() (inet_csk_accept()
    /// waits sock_rcvtimeo); set it only when it changes, so a busy
    /// listener pays one accept() per connection, like C.
    pub fn set_accept_timeout(&self, timeout: Duration) -> StepRes<()> {
        #[cfg(target_os = "linux")]
        {
            self.sock
                .set_read_timeout(Some(timeout))
                .map_err(|e| StepError::new(Step::Accept, &e))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = timeout;
            Ok(())
        }
    }

    /// accept(), waiting at most `timeout`, which must be what
    /// [`Self::set_accept_timeout`] last set: `None` if no connection came
    /// (or a signal interrupted the wait).
    pub fn accept_timed(&self, timeout: Duration) -> StepRes<Option<(TcpSock, SocketAddr)>> {
        #[cfg(not(target_os = "linux"))]
        match wait_readable(&self.sock, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(None),
            Err(e) => return Err(StepError::new(Step::Accept, &e)),
        }
        #[cfg(target_os = "linux")]
        let _ = timeout;
        match self.accept_now() {
            Ok(c) => Ok(Some(c)),
            Err(e)
                if matches!(
                    e.io_kind,
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn accept_now(&self) -> StepRes<(TcpSock, SocketAddr)> {
        let (s, a) = self
            .sock
            .accept()
            .map_err(|e| StepError::new(Step::Accept, &e))?;
        let peer = a.as_socket().ok_or_else(|| StepError {
            step: Step::Accept,
            error: SysError::from_code(crate::sys::err::AF_NOT_SUPPORTED),
            io_kind: io::ErrorKind::Other,
        })?;
        Ok((
            TcpSock {
                sock: s,
                opts: self.opts,
            },
            peer,
        ))
    }

    /// SO_EXCLUSIVEADDRUSE (Windows only): no other socket may bind this
    /// socket's address and port, whatever options it sets. Elsewhere the
    /// option does not exist: ENOPROTOOPT, as setsockopt() would say.
    pub fn set_exclusive_addr_use(&self) -> StepRes<()> {
        #[cfg(windows)]
        {
            crate::sys::set_exclusive_addr_use(&self.sock)
                .map_err(|e| StepError::new(Step::SetOpt, &e))
        }
        #[cfg(not(windows))]
        Err(StepError {
            step: Step::SetOpt,
            error: SysError::from_code(libc::ENOPROTOOPT),
            io_kind: io::ErrorKind::Unsupported,
        })
    }

    /// getsockname().
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.sock.local_addr().ok().and_then(|a| a.as_socket())
    }

    /// getpeername().
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.sock.peer_addr().ok().and_then(|a| a.as_socket())
    }

    /// close(): with SO_LINGER {on, 0} this sends RST.
    pub fn close(self) {
        drop(self.sock);
    }
}

/// IP_BIND_ADDRESS_NO_PORT (Linux 4.2+; socket2 has no setter for it).
#[cfg(target_os = "linux")]
fn sys_set_bind_no_port(sock: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turn a failed step of a user-facing command into the one-line error the
/// CLI prints, recognising the common faults (port in use, privileged port,
/// connection refused).
pub fn explain_step_error(e: &StepError, addr: SocketAddr) -> Error {
    let err = e.error.clone();
    match (e.step, e.io_kind) {
        (Step::Bind, io::ErrorKind::AddrInUse) => Error::AddrInUse {
            addr,
            holder: Box::new(addr),
            err,
        },
        (Step::Bind, io::ErrorKind::PermissionDenied) => Error::PrivilegedPort { addr, err },
        (Step::Connect, io::ErrorKind::ConnectionRefused) => Error::Refused { addr, err },
        _ => Error::Sys {
            what: format!("{} {addr}", e.step),
            err,
        },
    }
}

/// Convert a step result for reports.
pub fn step_result<T>(r: &StepRes<T>) -> StepResult {
    match r {
        Ok(_) => StepResult::Ok,
        Err(e) => StepResult::Err {
            error: e.error.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            parse_endpoint("127.0.0.1:12345").unwrap(),
            "127.0.0.1:12345".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_endpoint("[::1]:80").unwrap(),
            "[::1]:80".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_endpoint("localhost:23456").unwrap(),
            "127.0.0.1:23456".parse::<SocketAddr>().unwrap()
        );
        // A blank or a control character anywhere is refused.
        for bad in [
            " localhost:23456",
            "127.0.0.1:80\n",
            "127.0.0.1:8\t0",
            "::1\u{0}",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    fn why(input: &str) -> String {
        match parse_endpoint(input) {
            Err(Error::BadAddress { why, .. }) => why,
            other => panic!("{input}: expected BadAddress, got {other:?}"),
        }
    }

    #[test]
    fn malformed_endpoints_say_why() {
        assert_eq!(why(""), "empty");
        assert_eq!(why("127.0.0.1"), "the port is missing");
        assert_eq!(why("12345"), "the IP address is missing");
        assert_eq!(why(":12345"), "the IP address is missing");
        assert_eq!(why("127.0.0.1:70000"), "port 70000 is out of range 0-65535");
        assert_eq!(why("127.0.0.1:http"), "'http' is not a port number");
        assert_eq!(why("example.com:80"), "'example.com' is not an IP address");
        assert_eq!(
            why("::1:80"),
            "the port is missing (an IPv6 address with a port is written [ADDR]:PORT)"
        );
        assert_eq!(
            why("fe80::1::80"),
            "an IPv6 address needs brackets before the port"
        );
        assert_eq!(why("300.1.1.1:80"), "'300.1.1.1' is not an IP address");
    }

    #[test]
    fn option_labels() {
        assert_eq!(SocketOpts::default().label(), "none");
        let o = SocketOpts {
            reuseaddr: true,
            linger: Some(0),
            ..Default::default()
        };
        assert_eq!(o.label(), "REUSEADDR+LINGER0");
    }
}
