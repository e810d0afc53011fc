//! Systems without sock_diag: the same API, every call an
//! [`Error::Unsupported`].

use super::{Query, SockEntry, TupleView};
use crate::error::{Error, Result};
use std::net::SocketAddr;

fn unsupported<T>() -> Result<T> {
    Err(Error::Unsupported {
        os: crate::sys::OS_NAME,
        what: "reading the TCP socket table with timers needs Linux sock_diag".into(),
    })
}

/// A NETLINK_SOCK_DIAG socket; Linux only, so never opened here.
#[derive(Debug)]
pub struct DiagSocket {
    _private: (),
}

impl DiagSocket {
    /// Always [`Error::Unsupported`] off Linux.
    pub fn open() -> Result<Self> {
        unsupported()
    }
    /// See the Linux version.
    pub fn uses_exact_lookups(&self) -> bool {
        false
    }
    /// See the Linux version.
    pub fn lookup(&mut self, _local: SocketAddr, _peer: SocketAddr) -> Result<Option<SockEntry>> {
        unsupported()
    }
    /// See the Linux version.
    pub fn tuple_view(&mut self, _client: SocketAddr, _server: SocketAddr) -> Result<TupleView> {
        unsupported()
    }
    /// See the Linux version.
    pub fn dump_each(&mut self, _q: &Query, _f: impl FnMut(SockEntry) -> Result<()>) -> Result<()> {
        unsupported()
    }
}
