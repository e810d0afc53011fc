//! Every occupant of the ephemeral range at once, for `ss --summary`: the
//! port-by-port accounting [`super::diagnose_connect`] does toward one
//! destination (`__inet_hash_connect()`), done in one pass for every
//! (local address, peer) pair, with the same rules: a port whose bucket
//! came from bind() is skipped for every destination, a port whose 4-tuple
//! to the peer is taken is classified by [`tuple_use`], TIME_WAIT counted
//! as reusable only as `tcp_twsk_unique()` allows.

use super::connect::{TupleUse, ephemeral_fixes, time_wait_note, tuple_use};
use super::diagnosis::Capacity;
use super::fix::RankedFix;
use super::table::{Origin, Role, is_loopback, origin_given, role};
use crate::diag::{SockEntry, TcpState};
use crate::socket::SocketOpts;
use crate::sysctl::{NetSysctls, PortRange};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// What connect() can still use toward one peer from one local address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerCapacity {
    /// The local address of the pair.
    pub local_addr: IpAddr,
    /// The peer.
    pub peer: SocketAddr,
    /// ESTABLISHED sockets of the pair on a port of the range.
    pub established: u32,
    /// The range accounted toward this peer, as `twlab why connect` does.
    pub capacity: Capacity,
}

/// The ephemeral range's occupants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RangeUse {
    /// `ip_local_port_range`.
    pub range: PortRange,
    /// Ports in the range.
    pub range_ports: u32,
    /// Of those, in `ip_local_reserved_ports`.
    pub reserved: u32,
    /// Ports with a listener: connect() skips them for every destination
    /// (`tb->fastreuse >= 0`).
    pub listeners: u32,
    /// Ports with a bound-only socket (bind() without listen() or
    /// connect()) and no listener: skipped the same way.
    pub bound_only: u32,
    /// `listeners + bound_only`.
    pub bind_owned: u32,
    /// Ports held only by connections (any state, TIME_WAIT included):
    /// usable toward every other peer, not by bind(addr, 0).
    pub connections: u32,
    /// Ports with no socket at all: what bind(addr, 0) can take
    /// (`inet_csk_find_open_port()` shares none).
    pub empty: u32,
    /// What connect() can use toward a peer nothing is connected to yet.
    pub usable_new_peer: u32,
    /// Ports held by connections to two or more peers: connect() shares
    /// a port across peers, a port taken by bind(addr, 0) is never shared.
    pub shared_across_peers: u32,
    /// Distinct peers of the connections on the range's ports.
    pub distinct_peers: u32,
    /// The pairs with the least usable ports first.
    pub peers: Vec<PeerCapacity>,
}

/// The sockets of one pair on one port, by what they make of it.
#[derive(Default)]
struct PairTally {
    established: u32,
    busy: u32,
    tw_blocking: u32,
    tw_reusable: u32,
    soonest_tw_ms: Option<u32>,
}

/// Account the range over `sockets` (the whole namespace, unfiltered); the
/// `top_n` tightest pairs are kept.
pub fn range_use(sockets: &[SockEntry], sys: &NetSysctls, top_n: usize) -> RangeUse {
    let range = sys.port_range;
    let mut by_port: HashMap<u16, Vec<&SockEntry>> = HashMap::new();
    for e in sockets.iter().filter(|e| range.contains(e.local.port())) {
        by_port.entry(e.local.port()).or_default().push(e);
    }
    let mut u = RangeUse {
        range,
        range_ports: range.len(),
        reserved: 0,
        listeners: 0,
        bound_only: 0,
        bind_owned: 0,
        connections: 0,
        empty: 0,
        usable_new_peer: 0,
        shared_across_peers: 0,
        distinct_peers: 0,
        peers: Vec::new(),
    };
    let mut pairs: BTreeMap<(IpAddr, SocketAddr), PairTally> = BTreeMap::new();
    for port in range.low..=range.high {
        if sys.reserved_ports.contains(port) {
            u.reserved += 1;
            continue;
        }
        let Some(bucket) = by_port.get(&port) else {
            u.empty += 1;
            continue;
        };
        // For a port inside the range, `bucket_from_bind()`'s "accepted
        // on a listener's port" case implies a listener in the same
        // bucket, so the roles alone decide.
        let roles: Vec<Role> = bucket.iter().map(|e| role(e)).collect();
        if roles.contains(&Role::Listener) {
            u.listeners += 1;
            continue;
        }
        if roles.contains(&Role::BoundOnly) {
            u.bound_only += 1;
            continue;
        }
        u.connections += 1;
        let mut tuples: BTreeMap<(IpAddr, SocketAddr), Vec<&SockEntry>> = BTreeMap::new();
        for e in bucket {
            tuples.entry((e.local.ip(), e.peer)).or_default().push(e);
        }
        let mut peers_here: Vec<SocketAddr> = bucket.iter().map(|e| e.peer).collect();
        peers_here.sort_unstable();
        peers_here.dedup();
        u.shared_across_peers += u32::from(peers_here.len() > 1);
        for (pair, on_tuple) in tuples {
            let t = pairs.entry(pair).or_default();
            t.established += on_tuple
                .iter()
                .filter(|e| e.state == TcpState::Established)
                .count() as u32;
            match tuple_use(&on_tuple, sys) {
                TupleUse::Busy => t.busy += 1,
                TupleUse::TimeWaitReusable => t.tw_reusable += 1,
                TupleUse::TimeWaitBlocking => {
                    t.tw_blocking += 1;
                    let left = on_tuple
                        .iter()
                        .filter_map(|e| e.timer.map(|t| t.expires_ms))
                        .max();
                    t.soonest_tw_ms = match (t.soonest_tw_ms, left) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
    }
    u.bind_owned = u.listeners + u.bound_only;
    let mut all_peers: Vec<SocketAddr> = pairs.keys().map(|(_, p)| *p).collect();
    all_peers.sort_unstable();
    all_peers.dedup();
    u.distinct_peers = all_peers.len() as u32;
    u.usable_new_peer = u.range_ports - u.reserved - u.bind_owned;
    let mut peers: Vec<PeerCapacity> = pairs
        .into_iter()
        .map(|((local_addr, peer), t)| PeerCapacity {
            local_addr,
            peer,
            established: t.established,
            capacity: capacity(&u, peer, &t, sys),
        })
        .collect();
    peers.sort_by(|a, b| {
        a.capacity
            .usable
            .cmp(&b.capacity.usable)
            .then(a.peer.cmp(&b.peer))
            .then(a.local_addr.cmp(&b.local_addr))
    });
    peers.truncate(top_n);
    u.peers = peers;
    u
}

fn capacity(u: &RangeUse, peer: SocketAddr, t: &PairTally, sys: &NetSysctls) -> Capacity {
    let usable_base = u.usable_new_peer;
    let free = usable_base - t.busy - t.tw_blocking - t.tw_reusable;
    Capacity {
        range: u.range,
        range_ports: u.range_ports,
        reserved: u.reserved,
        bind_owned: u.bind_owned,
        tuple_busy: t.busy,
        time_wait_blocking: t.tw_blocking,
        time_wait_reusable: t.tw_reusable,
        free,
        usable: free + t.tw_reusable,
        soonest_time_wait_ms: t.soonest_tw_ms,
        time_wait_reusable_in_ms: None,
        time_wait_note: time_wait_note(sys, is_loopback(peer.ip())),
        tuple_limit: format!(
            "at most {usable_base} connections held at once to {peer} from one source address"
        ),
    }
}

/// The fixes `twlab why connect` gives for this capacity, best first
/// (connect() without bind(), as the summary cannot tell).
pub fn peer_fixes(p: &PeerCapacity, sys: &NetSysctls) -> Vec<RankedFix> {
    let q = super::ConnectQuestion {
        dst: p.peer,
        from: None,
        bind_no_port: false,
        opts: SocketOpts::default(),
        uid: 0,
        cap_net_bind_service: true,
    };
    ephemeral_fixes(&p.capacity, sys, &q)
}

/// What the summary says about the range: warnings (connect() or bind()
/// fails soon) and notes (a limit that only some programs meet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeAdvice {
    /// One line each, with what helps.
    pub warnings: Vec<String>,
    /// One line each.
    pub notes: Vec<String>,
}

/// "a; b; c": the fixes' texts.
fn helps(fixes: &[RankedFix]) -> String {
    fixes
        .iter()
        .take(3)
        .map(|f| f.text.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

impl RangeUse {
    /// Ports connect() may pick at all: the range less the reserved ones.
    pub fn pickable(&self) -> u32 {
        self.range_ports - self.reserved
    }

    /// Warnings at 90 % or more of the pickable ports, computed from the
    /// accounting, each with the fixes `twlab why` ranks for the case.
    pub fn advice(&self, sys: &NetSysctls) -> RangeAdvice {
        let avail = self.pickable().max(1);
        let low = |n: u32| u64::from(n) * 10 <= u64::from(avail);
        let mut a = RangeAdvice::default();
        if self.bind_owned > 0 && low(self.usable_new_peer) {
            a.warnings.push(format!(
                "listeners ({}) and bound-only sockets ({}) hold {} of {} ephemeral ports: connect() skips their ports for every destination (__inet_hash_connect(): tb->fastreuse >= 0), so {} are left for any peer and connect() fails with EADDRNOTAVAIL once none is; what helps: {}",
                self.listeners,
                self.bound_only,
                self.bind_owned,
                avail,
                self.usable_new_peer,
                super::Fix::MoveBoundOutOfRange.text()
            ));
        }
        for p in self
            .peers
            .iter()
            .filter(|p| low(p.capacity.usable) && p.capacity.usable < self.usable_new_peer)
        {
            let c = &p.capacity;
            a.warnings.push(format!(
                "{} -> {}: ephemeral ports nearly exhausted ({} free of {}: {} held by open connections, {} in TIME_WAIT not reusable, {} in TIME_WAIT reusable, {} owned by bind()); connect() without an explicit bind() fails with EADDRNOTAVAIL once none is free (__inet_hash_connect); what helps: {}",
                p.local_addr,
                p.peer,
                c.usable,
                avail,
                c.tuple_busy,
                c.time_wait_blocking,
                c.time_wait_reusable,
                c.bind_owned,
                helps(&peer_fixes(p, sys))
            ));
        }
        if self.connections > 0 && low(self.empty) {
            let line = format!(
                "only {} of {} ephemeral ports have no socket at all ({} hold connections to {} peer(s), {} of them shared across peers): connect() can share a port across peers, but bind(addr, 0) before connect() needs an empty one (inet_csk_find_open_port() shares none) and fails with EADDRINUSE once none is; what helps: {}",
                self.empty,
                avail,
                self.connections,
                self.distinct_peers,
                self.shared_across_peers,
                super::Fix::BindAddressNoPort.text()
            );
            // Ports connect() picked are shared across peers once the range
            // is crowded; ports bind(addr, 0) took never are. Many peers and
            // no shared port: the programs bind before connecting.
            if a.warnings.is_empty() && self.distinct_peers > 1 && self.shared_across_peers == 0 {
                a.warnings.push(line);
            } else {
                a.notes.push(line);
            }
        }
        a
    }
}

/// TIME_WAIT by which end of its connection it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeWaitSides {
    /// Server side (accepted connections), by local (listening) port.
    pub server_by_port: HashMap<u16, u32>,
    /// The others, by peer.
    pub others_by_peer: HashMap<SocketAddr, u32>,
}

/// Sort the TIME_WAIT among `shown` by side, with [`origin_given`]'s
/// guess (sock_diag does not say which end a socket was); `all` tells
/// which ports have a listener.
pub fn time_wait_sides<'a>(
    all: &[SockEntry],
    shown: impl Iterator<Item = &'a SockEntry>,
    range: Option<PortRange>,
) -> TimeWaitSides {
    let listening: HashSet<u16> = all
        .iter()
        .filter(|e| e.state == TcpState::Listen)
        .map(|e| e.local.port())
        .collect();
    // No range known: only a listener tells a server-side socket.
    let range = range.unwrap_or(PortRange { low: 1, high: 0 });
    let mut sides = TimeWaitSides::default();
    for e in shown.filter(|e| e.state == TcpState::TimeWait) {
        let here = listening.contains(&e.local.port());
        if origin_given(e, here, range) == Origin::Incoming {
            *sides.server_by_port.entry(e.local.port()).or_default() += 1;
        } else {
            *sides.others_by_peer.entry(e.peer).or_default() += 1;
        }
    }
    sides
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::Family;

    fn sock(state: TcpState, local: &str, peer: &str) -> SockEntry {
        let local: SocketAddr = local.parse().unwrap();
        SockEntry {
            family: Family::of(&local),
            state,
            local,
            peer: peer.parse().unwrap(),
            timer: None,
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode: 1,
            v6only: None,
            pid: None,
        }
    }

    fn sys() -> NetSysctls {
        NetSysctls::from_lookup(|n| {
            Some(
                match n {
                    "net.ipv4.tcp_timestamps" => "1",
                    "net.ipv4.tcp_tw_reuse" => "0",
                    "net.ipv4.ip_local_port_range" => "40000 40009",
                    "net.ipv4.ip_local_reserved_ports" => "40009",
                    "net.ipv4.tcp_max_tw_buckets" => "262144",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .unwrap()
    }

    /// bind(ip, 0) before connect(): one port per connection, each to
    /// another peer, never shared. connect() alone still finds ports for
    /// every peer, so the only warning is about bind(), and its fix is
    /// IP_BIND_ADDRESS_NO_PORT, not more peers.
    #[test]
    fn ports_never_shared_across_peers_point_at_bind_before_connect() {
        let socks: Vec<SockEntry> = (0..9u16)
            .map(|i| {
                sock(
                    TcpState::Established,
                    &format!("10.0.0.1:{}", 40000 + i),
                    &format!("10.0.1.{}:80", i + 1),
                )
            })
            .collect();
        let u = range_use(&socks, &sys(), 10);
        assert_eq!(
            (u.range_ports, u.reserved, u.connections, u.empty),
            (10, 1, 9, 0)
        );
        assert_eq!((u.distinct_peers, u.shared_across_peers), (9, 0));
        assert!(
            u.peers.iter().all(|p| p.capacity.usable == 8),
            "{:?}",
            u.peers
        );
        let a = u.advice(&sys());
        assert_eq!(a.warnings.len(), 1, "{a:?}");
        assert!(a.warnings[0].starts_with("only 0 of 9 ephemeral ports have no socket at all"));
        assert!(a.warnings[0].contains("IP_BIND_ADDRESS_NO_PORT"), "{a:?}");
        assert!(a.notes.is_empty());

        // The same ports shared across two peers: connect() chose them,
        // bind(addr, 0) is only a note.
        let mut shared = socks.clone();
        shared.push(sock(TcpState::Established, "10.0.0.1:40000", "10.0.1.2:80"));
        let a = range_use(&shared, &sys(), 10).advice(&sys());
        assert!(a.warnings.is_empty(), "{a:?}");
        assert_eq!(a.notes.len(), 1, "{a:?}");
    }

    #[test]
    fn a_listener_port_is_skipped_for_every_peer_a_connection_only_for_its_own() {
        let socks = vec![
            sock(TcpState::Listen, "0.0.0.0:40000", "0.0.0.0:0"),
            // Accepted on the listener's port: the bucket came from bind().
            sock(TcpState::Established, "127.0.0.1:40000", "127.0.0.1:5000"),
            sock(TcpState::Closed, "127.0.0.1:40001", "0.0.0.0:0"),
            sock(TcpState::Established, "127.0.0.1:40002", "127.0.0.1:80"),
        ];
        let u = range_use(&socks, &sys(), 10);
        assert_eq!((u.listeners, u.bound_only, u.bind_owned), (1, 1, 2));
        assert_eq!((u.connections, u.empty, u.usable_new_peer), (1, 6, 7));
        assert_eq!(u.peers.len(), 1);
        assert_eq!(u.peers[0].peer, "127.0.0.1:80".parse().unwrap());
        assert_eq!(u.peers[0].capacity.tuple_busy, 1);
        assert_eq!(u.peers[0].capacity.usable, 6);
        assert!(u.advice(&sys()).warnings.is_empty());
    }

    /// One rule: toward each peer the summary counts what `twlab why
    /// connect` counts.
    #[test]
    fn each_pair_is_counted_as_why_connect_counts_it() {
        let mut tw = sock(TcpState::TimeWait, "127.0.0.1:40004", "127.0.0.1:80");
        tw.timer = Some(crate::diag::Timer {
            kind: crate::diag::TimerKind::Timewait,
            expires_ms: 30_000,
            retrans: 0,
        });
        tw.inode = 0;
        let socks = vec![
            sock(TcpState::Listen, "0.0.0.0:40000", "0.0.0.0:0"),
            sock(TcpState::Closed, "127.0.0.1:40001", "0.0.0.0:0"),
            sock(TcpState::Established, "127.0.0.1:40002", "127.0.0.1:80"),
            sock(TcpState::FinWait2, "127.0.0.1:40003", "127.0.0.1:80"),
            tw,
            sock(TcpState::Established, "127.0.0.1:40005", "127.0.0.1:81"),
        ];
        let u = range_use(&socks, &sys(), 10);
        let table = super::super::Table::from_entries(socks);
        for p in &u.peers {
            let q = super::super::ConnectQuestion {
                dst: p.peer,
                from: None,
                bind_no_port: false,
                opts: SocketOpts::default(),
                uid: 0,
                cap_net_bind_service: true,
            };
            let d = super::super::diagnose_connect(&q, &table, &sys());
            let c = d.capacity.unwrap();
            let nums = |c: &Capacity| {
                (
                    c.reserved,
                    c.bind_owned,
                    c.tuple_busy,
                    c.time_wait_blocking,
                    c.time_wait_reusable,
                    c.free,
                    c.usable,
                )
            };
            assert_eq!(nums(&p.capacity), nums(&c), "{}", p.peer);
        }
        assert_eq!(u.peers[0].capacity.usable, 4);
    }
}
