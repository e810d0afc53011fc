//! The socket table as the rules see it: every socket with its owners, what
//! role it plays on its port, and which addresses it covers.
//!
//! A port's bind bucket (`inet_bind_bucket`, one per port and namespace,
//! shared by IPv4 and IPv6) holds every socket that has the port as its local
//! port: listeners, bound-only sockets, connected sockets, and TIME_WAIT
//! mini-sockets (`inet_twsk_bind_hash()` keeps them there until the timer
//! fires). bind() is checked against all of them, not against one 4-tuple.

use crate::diag::owners::Owner;
use crate::diag::{SockEntry, TcpState};
use crate::sysctl::PortRange;
use serde::Serialize;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

/// One socket of the table with the processes that hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Occupant {
    /// The kernel's view of the socket.
    #[serde(flatten)]
    pub entry: SockEntry,
    /// Processes with a descriptor for it (none for TIME_WAIT).
    pub owners: Vec<Owner>,
}

/// The sockets of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Table {
    /// Every TCP socket, in every state, listeners and bound-only included.
    pub sockets: Vec<Occupant>,
    /// The sockets of each local port and the ports with a listener,
    /// built on first use: every question walks buckets, never the whole
    /// table per port or per holder.
    #[serde(skip)]
    index: OnceLock<Index>,
    /// The dump could not show bound-only sockets (a kernel before 6.5):
    /// a port that looks free may be held, so a predicted success is a
    /// "depends" ([`crate::model::kernel::version::unseen_bound_only`]).
    #[serde(skip)]
    pub bound_only_hidden: bool,
}

/// Local ports there are (0 to 65535).
const PORTS: usize = 1 << 16;

/// [`Table`]'s index, built in one pass over the sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Index {
    /// The sockets of each local port, by a counting sort on the port:
    /// port p's are `order[start[p]..start[p + 1]]` (indices into
    /// `sockets`). A question about the range looks up every one of its
    /// 64,512 ports: an array, not a hash, answers each.
    start: Vec<u32>,
    order: Vec<u32>,
    /// Local ports with a listener on them.
    listening: HashSet<u16>,
}

impl Table {
    /// A table of these sockets.
    pub fn new(sockets: Vec<Occupant>) -> Self {
        Table {
            sockets,
            index: OnceLock::new(),
            bound_only_hidden: false,
        }
    }

    /// A table from diag entries without owners (tests, or when /proc is
    /// not readable).
    pub fn from_entries(entries: Vec<SockEntry>) -> Self {
        Table::new(
            entries
                .into_iter()
                .map(|entry| Occupant {
                    entry,
                    owners: Vec::new(),
                })
                .collect(),
        )
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| {
            let mut ix = Index {
                start: vec![0; PORTS + 1],
                order: vec![0; self.sockets.len()],
                listening: HashSet::new(),
            };
            for o in &self.sockets {
                let port = o.entry.local.port();
                ix.start[usize::from(port) + 1] += 1;
                if o.entry.state == TcpState::Listen {
                    ix.listening.insert(port);
                }
            }
            for p in 0..PORTS {
                ix.start[p + 1] += ix.start[p];
            }
            let mut fill = ix.start.clone();
            for (i, o) in self.sockets.iter().enumerate() {
                let at = &mut fill[usize::from(o.entry.local.port())];
                ix.order[*at as usize] = i as u32;
                *at += 1;
            }
            ix
        })
    }

    /// Is a listener on this local port?
    pub fn listener_on(&self, port: u16) -> bool {
        self.index().listening.contains(&port)
    }

    /// The local ports with a listener on them.
    pub fn listener_ports(&self) -> &HashSet<u16> {
        &self.index().listening
    }

    /// The port's bind bucket: every socket whose local port is `port`.
    pub fn bucket(&self, port: u16) -> impl Iterator<Item = &Occupant> {
        let ix = self.index();
        let p = usize::from(port);
        ix.order[ix.start[p] as usize..ix.start[p + 1] as usize]
            .iter()
            .map(|&i| &self.sockets[i as usize])
    }

    /// Does the port's bucket hold a socket that got its port from bind()
    /// (a listener, a bound-only socket, or an accepted socket on a
    /// listener's port)? `__inet_hash_connect()` skips such ports
    /// (`tb->fastreuse >= 0 || tb->fastreuseport >= 0`).
    pub fn bind_owned(&self, port: u16) -> bool {
        self.bucket(port)
            .any(|o| matches!(role(&o.entry), Role::Listener | Role::BoundOnly))
    }
}

/// Which end of its connection a socket was, guessed from the ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// It connected out: its local port is in the ephemeral range, its
    /// peer's is not (or a listener's port is the peer).
    Outgoing,
    /// It was accepted: its local port is a listener's, or outside the
    /// range while the peer's is inside.
    Incoming,
    /// Both or neither port is in the range: cannot tell.
    Unknown,
    /// Not a connection (listener, bound-only).
    NotConnected,
}

/// Guess which end of its connection `e` is (sock_diag does not say).
pub fn origin(e: &SockEntry, table: &Table, range: PortRange) -> Origin {
    if matches!(role(e), Role::Listener | Role::BoundOnly) {
        return Origin::NotConnected;
    }
    origin_given(e, table.listener_on(e.local.port()), range)
}

/// `origin` when the caller already knows whether a listener is on `e`'s
/// local port (`ss --summary` looks that up once for the whole table).
pub fn origin_given(e: &SockEntry, listener_here: bool, range: PortRange) -> Origin {
    if matches!(role(e), Role::Listener | Role::BoundOnly) {
        return Origin::NotConnected;
    }
    if listener_here {
        return Origin::Incoming;
    }
    match (
        range.contains(e.local.port()),
        range.contains(e.peer.port()),
    ) {
        (true, false) => Origin::Outgoing,
        (false, true) => Origin::Incoming,
        _ => Origin::Unknown,
    }
}

/// A socket connected to itself: simultaneous open with local == peer.
pub fn self_connected(e: &SockEntry) -> bool {
    e.local == e.peer && e.local.port() != 0
}

/// Is `ip` a loopback address (the kernel layer's test)?
pub use crate::model::kernel::addr::is_loopback;

/// What a socket does on its port (the model's classification).
pub use crate::model::{Role, role};

/// Does a socket's local address `local` match the source `src` a question
/// names (an unspecified `src` matches every address)?
pub fn same_source(local: SocketAddr, src: IpAddr) -> bool {
    src.is_unspecified() || local.ip() == src
}
