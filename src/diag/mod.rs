//! The kernel's TCP socket table, read through NETLINK_SOCK_DIAG.
//!
//! Two kinds of question:
//! - a dump ([`dump`], [`dump_each`]): one request per address family with
//!   the state filter applied by the kernel (`inet_diag_dump_icsk()` walks
//!   only the hash tables the state mask needs);
//! - an exact lookup ([`lookup`], [`tuple_view`]): where the 4-tuple is
//!   known, a request without NLM_F_DUMP carrying it in `inet_diag_sockid`
//!   (cookie INET_DIAG_NOCOOKIE) is answered by `inet_diag_find_one_icsk()`
//!   from the hash tables, TIME_WAIT included, or with -ENOENT. Where the
//!   kernel refuses exact requests, the same answer comes from a dump.
//!
//! Off Linux the same API reads the system's own TCP table instead
//! (`table`: Windows `GetExtendedTcpTable`, macOS and FreeBSD sysctl
//! pcblists): states and owners, no timers, no exact lookups.
//!
//! Layout: `state` and `entry` hold the decoded types; `wire` (Linux)
//! is the checked view over the bytes and the netlink framing; `netlink`
//! (Linux) the socket that sends and reads them. [`DiagSocket`] keeps one
//! socket open for many questions. [`owners`] names the processes that hold
//! a socket (`ss -p`, `why`).

mod entry;
#[cfg(target_os = "linux")]
mod netlink;
pub mod owners;
mod state;
// Windows, macOS and FreeBSD: the system's own TCP table (no timers).
#[cfg(any(test, windows, target_os = "macos", target_os = "freebsd"))]
mod table;
#[cfg(not(any(
    target_os = "linux",
    windows,
    target_os = "macos",
    target_os = "freebsd"
)))]
mod unsupported;
#[cfg(target_os = "linux")]
pub(crate) mod wire;

pub use entry::{Side, SockEntry, Timer, TimerKind, TupleView};
#[cfg(target_os = "linux")]
pub use netlink::DiagSocket;
pub use state::{StateSet, TcpState, UnknownState};
#[cfg(any(windows, target_os = "macos", target_os = "freebsd"))]
pub use table::DiagSocket;
#[cfg(not(any(
    target_os = "linux",
    windows,
    target_os = "macos",
    target_os = "freebsd"
)))]
pub use unsupported::DiagSocket;

use crate::error::Result;
use crate::socket::Family;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What to dump.
#[derive(Debug, Clone)]
pub struct Query {
    /// Address families, each dumped with its own request.
    pub families: Vec<Family>,
    /// The states the kernel filters on.
    pub states: StateSet,
    /// Only connections whose peer port is this one, filtered by the
    /// kernel while it walks the established table (tcp_diag_dump()
    /// skips a socket whose `sk_dport` differs from `idiag_dport` before
    /// filling a message for it), so a dump for one destination costs a
    /// walk, not a copy, of a big table. Listeners and bound-only sockets
    /// are not filtered by it.
    pub peer_port: Option<u16>,
    /// Only sockets whose own port is this one, filtered by the kernel in
    /// the listening and established tables (`idiag_sport`; bound-only
    /// sockets are not filtered by it).
    pub local_port: Option<u16>,
    /// Sockets with this port at either end, when neither port above is
    /// given: filter bytecode the kernel runs on every socket of every
    /// table it walks, as iproute2's `sport = :P or dport = :P` does. Should
    /// a kernel refuse the bytecode, the dump is made without it.
    pub either_port: Option<u16>,
    /// Only sockets that pass any of these tests, as filter bytecode the
    /// kernel runs on every socket before it copies it out (a diagnosis
    /// asks for the sockets of the ports it names and the listeners and
    /// bound-only sockets, not the whole table). Empty: no bytecode. Should
    /// a kernel refuse it, the dump is made without it: callers must be
    /// right with more sockets than they asked for.
    pub any_of: Vec<PortTest>,
}

/// One test of the dump filter ([`Query::any_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortTest {
    /// The socket's own port is this one (`INET_DIAG_BC_S_EQ`).
    Local(u16),
    /// The peer's port is this one (`INET_DIAG_BC_D_EQ`; 0 for listeners
    /// and bound-only sockets).
    Peer(u16),
    /// The socket's port was set by bind() (`SOCK_BINDPORT_LOCK`: the
    /// negation of `INET_DIAG_BC_AUTO`): listeners and bound-only sockets
    /// with an explicit port, and connections from a fixed port. Never a
    /// TIME_WAIT (the kernel reads no userlocks from a mini socket).
    PortFromBind,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            families: vec![Family::V4, Family::V6],
            states: StateSet::all(),
            peer_port: None,
            local_port: None,
            either_port: None,
            any_of: Vec::new(),
        }
    }
}

impl Query {
    /// Both families, these states.
    pub fn states(states: StateSet) -> Self {
        Query {
            states,
            ..Default::default()
        }
    }
}

/// Dump the TCP sockets matching `q` into a vector.
pub fn dump(q: &Query) -> Result<Vec<SockEntry>> {
    let mut v = Vec::new();
    dump_each(q, |e| {
        v.push(e);
        Ok(())
    })?;
    Ok(v)
}

/// Dump the TCP sockets matching `q`, calling `f` for each as it is decoded
/// (no intermediate vector, so a 30,000-socket table streams straight out).
///
/// A dump is never an atomic snapshot: `inet_diag_dump_icsk()` walks the
/// hash buckets one lock at a time, so sockets that appear or vanish while
/// it runs may or may not be in it, exactly as with `ss`. If the kernel
/// flags the dump as interrupted (NLM_F_DUMP_INTR; inet_diag does not call
/// `nl_dump_check_consistent()` today, but the netlink contract allows it),
/// the result is an error that says so: each socket is delivered at most
/// once, and never from a torn table.
pub fn dump_each(q: &Query, f: impl FnMut(SockEntry) -> Result<()>) -> Result<()> {
    if q.states.is_empty() {
        return Ok(());
    }
    DiagSocket::open()?.dump_each(q, f)
}

/// The socket whose own end is `local` and whose peer is `peer`, by exact
/// lookup. A listener is found with `peer` = unspecified address, port 0.
pub fn lookup(local: SocketAddr, peer: SocketAddr) -> Result<Option<SockEntry>> {
    DiagSocket::open()?.lookup(local, peer)
}

/// Look up the connection `client` ↔ `server` from both ends (two exact
/// lookups in one request). Callers that ask often keep a [`DiagSocket`]
/// and call [`DiagSocket::tuple_view`].
pub fn tuple_view(client: SocketAddr, server: SocketAddr) -> Result<TupleView> {
    DiagSocket::open()?.tuple_view(client, server)
}

/// Poll the kernel, bounded by `timeout`, until `pred` holds for the view of
/// `client` ↔ `server`. Returns the last view and whether `pred` held.
///
/// This is how experiments synchronise: on the kernel's state, not on
/// sleeps. Polls start at 200 µs and back off to 5 ms. A stop signal ends
/// the wait with [`crate::Error::Interrupted`].
pub fn wait_for(
    client: SocketAddr,
    server: SocketAddr,
    timeout: Duration,
    pred: impl Fn(&TupleView) -> bool,
) -> Result<(TupleView, bool)> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    let mut nl = DiagSocket::open()?;
    loop {
        let v = nl.tuple_view(client, server)?;
        if pred(&v) {
            return Ok((v, true));
        }
        if start.elapsed() >= timeout {
            return Ok((v, false));
        }
        // Every wait stops on a signal (crate::signal's contract).
        crate::signal::check()?;
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// What the summary calls the ephemeral port range on this system.
pub const PORT_RANGE_NAME: &str = if cfg!(target_os = "linux") {
    "ip_local_port_range"
} else if cfg!(windows) {
    "dynamic port range"
} else {
    "net.inet.ip.portrange.first-last"
};

/// Off Linux, where `net.ipv4.ip_local_port_range` does not exist: the
/// system's ephemeral port range and where it comes from, in one sentence.
/// macOS and FreeBSD: read from `net.inet.ip.portrange.first`/`last`.
/// Windows: the documented default 49152-65535 (Microsoft, "The default
/// dynamic port range for TCP/IP has changed since Windows Vista"), not
/// read (`netsh int ipv4 show dynamicport tcp` shows this system's).
pub fn port_range_elsewhere() -> Option<(crate::sysctl::PortRange, String)> {
    #[cfg(windows)]
    {
        Some((
            crate::sysctl::PortRange {
                low: 49152,
                high: 65535,
            },
            "the dynamic port range 49152-65535 is Windows' documented default, not read from this system (`netsh int ipv4 show dynamicport tcp` shows its own)".into(),
        ))
    }
    #[cfg(any(target_os = "macos", target_os = "freebsd"))]
    {
        let (low, high) = crate::sys::port_range().ok()?;
        Some((
            crate::sysctl::PortRange { low, high },
            format!("ephemeral ports {low}-{high} from net.inet.ip.portrange.first and .last"),
        ))
    }
    #[cfg(not(any(windows, target_os = "macos", target_os = "freebsd")))]
    {
        None
    }
}
