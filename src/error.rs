//! Library errors. Each says what went wrong and what to do about it, in one
//! line, because the CLI prints exactly this line and exits non-zero.

use crate::outcome::SysError;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "malformed address '{input}': {why}; expected IP:PORT such as 127.0.0.1:12345 or [::1]:12345"
    )]
    BadAddress { input: String, why: String },

    #[error(
        "{addr} is already in use: {err}; another program listens there: pick another port, or find it with `twlab ss --local {addr} -p`"
    )]
    AddrInUse { addr: SocketAddr, err: SysError },

    #[error(
        "permission denied binding {addr}: {err}; ports below 1024 need root or CAP_NET_BIND_SERVICE: use a port of 1024 or more"
    )]
    PrivilegedPort { addr: SocketAddr, err: SysError },

    #[error(
        "connection to {addr} refused: {err}; nothing listens there: start `twlab server --listen {addr}` first"
    )]
    Refused { addr: SocketAddr, err: SysError },

    #[error("{what} failed: {err}")]
    Sys { what: String, err: SysError },

    #[error("sock_diag: {0}")]
    Diag(String),

    #[error("network namespace: {0}")]
    Netns(String),

    #[error("sysctl {name}: {why}")]
    Sysctl { name: String, why: String },

    #[error("interrupted (Ctrl-C)")]
    Interrupted,

    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout { secs: f64, what: String },

    #[error("{0}")]
    Invalid(String),

    #[error("not supported on {os}: {what}")]
    Unsupported { os: &'static str, what: String },

    /// A bad argument found after parsing (a value out of its documented
    /// range, a matrix too large): the CLI exits 2, as for clap's errors.
    #[error("{0}")]
    Usage(String),
}

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
