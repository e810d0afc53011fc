//! Library errors. Each says what went wrong and what to do about it, in one
//! line, because the CLI prints exactly this line and exits non-zero.

use crate::outcome::SysError;
use std::net::SocketAddr;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An address the user typed could not be parsed.
    #[error(
        "malformed address '{input}': {why}; expected IP:PORT such as 127.0.0.1:12345 or [::1]:12345"
    )]
    BadAddress {
        /// What was typed.
        input: String,
        /// What is wrong with it.
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
        /// The call, e.g. "bind 127.0.0.1:23456".
        what: String,
        /// The errno.
        err: SysError,
    },

    /// The sock_diag netlink conversation failed.
    #[error("sock_diag: {0}")]
    Diag(String),

    /// A network namespace could not be made or entered.
    #[error("network namespace: {0}")]
    Netns(String),

    /// A sysctl could not be read or written.
    #[error("sysctl {name}: {why}")]
    Sysctl {
        /// Dotted name.
        name: String,
        /// What went wrong.
        why: String,
    },

    /// A stop signal arrived (see the `signal` module).
    #[error("interrupted (Ctrl-C)")]
    Interrupted,

    /// A bounded wait ran out.
    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout {
        /// How long it waited.
        secs: f64,
        /// What it waited for.
        what: String,
    },

    /// Input that is well-formed but makes no sense (the text says why).
    #[error("{0}")]
    Invalid(String),

    /// The feature needs another operating system.
    #[error("not supported on {os}: {what}")]
    Unsupported {
        /// This OS.
        os: &'static str,
        /// What needs another one.
        what: String,
    },

    /// A bad argument found after parsing (a value out of its documented
    /// range, a matrix too large): the CLI exits 2, as for clap's errors.
    #[error("{0}")]
    Usage(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wrap an io error from `what` (e.g. "bind 127.0.0.1:23456").
    pub fn sys(what: impl Into<String>, e: &std::io::Error) -> Self {
        Error::Sys {
            what: what.into(),
            err: SysError::from_io(e),
        }
    }
}
