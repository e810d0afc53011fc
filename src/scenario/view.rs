//! The model's view of a played scenario: every socket of the script with
//! what the model needs to predict the next step — the address it binds,
//! its options and owner, what it is doing, and the port the kernel
//! actually gave it — and the namespace's sysctls. The player
//! ([`play`](super::play)) keeps it up to date after each step from what
//! the kernel answered (getsockname(), sock_diag); the predictor
//! ([`predict`](super::predict)) turns it into the rule layer's facts.
//! Nothing here decides a kernel outcome.

use super::file::SocketSpec;
use crate::socket::SocketOpts;
use crate::sysctl::NetSysctls;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

/// What a socket is doing, as far as the port it holds goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SockState {
    /// socket() only, or a bind() that failed: holds nothing.
    Created,
    /// bind() succeeded (with IP_BIND_ADDRESS_NO_PORT and port 0: no port
    /// yet).
    Bound,
    /// listen() succeeded.
    Listening,
    /// connect() or accept() gave it a connection.
    Connected,
    /// Closed while connected: FIN_WAIT or TIME_WAIT, not known yet.
    Closing,
    /// The kernel showed its connection in TIME_WAIT.
    TimeWait,
    /// Closed: holds nothing.
    Gone,
}

/// One socket of the scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SocketView {
    /// Its name in the file (accepted sockets: the `as` of the accept step).
    pub name: String,
    /// The address it binds, as written (an accepted socket: its
    /// listener's); the port is 0 when the kernel picks or `port_from`
    /// says.
    pub addr: SocketAddr,
    /// The socket whose port it binds (`port_from`), if any.
    pub port_from: Option<String>,
    /// SO_REUSEADDR, SO_REUSEPORT, SO_LINGER, IP_BIND_ADDRESS_NO_PORT,
    /// IPV6_V6ONLY as asked.
    pub opts: SocketOpts,
    /// IPV6_V6ONLY as the socket had it at socket() (the option, else
    /// `net.ipv6.bindv6only`); false for IPv4.
    pub v6only: bool,
    /// Its owner (the fsuid at socket()).
    pub uid: u32,
    /// Made by accept().
    pub accepted: bool,
    /// Its calls run without CAP_NET_BIND_SERVICE (`unprivileged`).
    pub unprivileged: bool,
    /// What it is doing.
    pub state: SockState,
    /// Its local address as the kernel reports it (getsockname() after
    /// bind(), listen() or connect()): the port the kernel gave.
    pub local: Option<SocketAddr>,
    /// Its peer, once connected.
    pub peer: Option<SocketAddr>,
}

impl SocketView {
    /// The view of a scenario socket before any step: created, holding
    /// nothing. `bindv6only` is the namespace's `net.ipv6.bindv6only`;
    /// `running_uid` owns sockets that name no uid.
    pub fn of_spec(
        spec: &SocketSpec,
        addr: SocketAddr,
        bindv6only: bool,
        running_uid: u32,
    ) -> Self {
        SocketView {
            name: spec.name.clone(),
            addr,
            port_from: spec.port_from.clone(),
            opts: spec.opts(),
            v6only: addr.is_ipv6() && spec.v6only.resolve(bindv6only),
            uid: spec.uid.unwrap_or(running_uid),
            accepted: false,
            unprivileged: spec.unprivileged,
            state: SockState::Created,
            local: None,
            peer: None,
        }
    }

    /// The port it holds in the port's bind bucket, if any: the kernel's
    /// answer for a socket that is bound, listening, connected or closing.
    pub fn held_port(&self) -> Option<u16> {
        match self.state {
            SockState::Created | SockState::Gone => None,
            _ => self.local.map(|a| a.port()).filter(|p| *p != 0),
        }
    }
}

/// Every socket of a played scenario and its namespace's settings.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ModelView {
    /// The sockets, in the file's order, accepted ones appended.
    pub sockets: Vec<SocketView>,
    /// The namespace's sysctls (read after the file's were set); `None`
    /// if they could not be read.
    pub sysctls: Option<NetSysctls>,
    /// `net.ipv6.bindv6only` of the namespace.
    pub bindv6only: bool,
    /// The player holds CAP_NET_BIND_SERVICE (binds below
    /// `ip_unprivileged_port_start` are allowed).
    pub cap_net_bind_service: bool,
}

impl ModelView {
    /// The socket named `name` (the newest of that name).
    pub fn index(&self, name: &str) -> Option<usize> {
        self.sockets.iter().rposition(|s| s.name == name)
    }

    /// The address socket `i` binds: its own, with the port of its
    /// `port_from` socket; `None` when that socket holds no port yet.
    pub fn bind_addr(&self, i: usize) -> Option<SocketAddr> {
        let s = &self.sockets[i];
        match &s.port_from {
            None => Some(s.addr),
            Some(from) => {
                let port = self.sockets[self.index(from)?].local?.port();
                (port != 0).then(|| SocketAddr::new(s.addr.ip(), port))
            }
        }
    }

    /// The other sockets that hold `port` (every address: which of them
    /// overlap is the rule layer's business), with their index.
    pub fn holders(&self, port: u16, except: usize) -> impl Iterator<Item = (usize, &SocketView)> {
        self.sockets
            .iter()
            .enumerate()
            .filter(move |(j, s)| *j != except && s.held_port() == Some(port))
    }

    /// The address family's wildcard for socket `i` (what listen() without
    /// bind() takes).
    pub fn wildcard(&self, i: usize) -> IpAddr {
        match self.sockets[i].addr {
            SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        }
    }
}
