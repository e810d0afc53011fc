//! Every occupant of the ephemeral range at once, for `ss --summary`: the
//! port-by-port accounting [`super::diagnose_connect`] does toward one
//! destination (`__inet_hash_connect()`), done in one pass for every
//! (local address, peer) pair, with the same rules: a port whose bucket
//! came from bind() is skipped for every destination, a port whose 4-tuple
//! to the peer is taken is classified by [`tuple_use`], TIME_WAIT counted
//! as reusable only as `tcp_twsk_unique()` allows.

use super::connect::{
    TupleUse, ephemeral_fixes, is_young, rate_window_ms, reusable_in_ms, set_rates, time_wait_note,
    tuple_use,
};
use super::diagnosis::Capacity;
use super::fix::RankedFix;
use super::table::{Origin, Role, is_loopback, origin_given, role};
use crate::diag::{SockEntry, TcpState};
use crate::socket::SocketOpts;
use crate::sysctl::{NetSysctls, PortRange};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// What connect() can still use toward one peer from one local address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PeerCapacity {
    /// The local address of the pair.
    pub local_addr: IpAddr,
    /// The peer.
    pub peer: SocketAddr,
    /// ESTABLISHED sockets of the pair on a port of the range.
    pub established: u32,
    /// The rule a new connect() toward the peer meets now
    /// (`__inet_hash_connect()`): another free port, a TIME_WAIT taken
    /// over, or none.
    pub rule: crate::model::RuleId,
    /// The range accounted toward this peer, as `twlab why connect` does.
    pub capacity: Capacity,
}

/// The ephemeral range's occupants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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
    /// The dump could not show bound-only sockets (Linux before 6.5):
    /// ports that look empty may be held.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bound_only_hidden: bool,
}

/// The sockets of one pair on one port, by what they make of it.
#[derive(Default)]
struct PairTally {
    established: u32,
    busy: u32,
    tw_blocking: u32,
    tw_reusable: u32,
    soonest_tw_ms: Option<u32>,
    /// TIME_WAITs younger than the pair's rate window.
    young_tw: u32,
    /// The soonest a blocking TIME_WAIT passes `tcp_tw_reuse_delay`.
    reusable_in_ms: Option<u32>,
}

/// Account the range over `sockets` (the whole namespace, unfiltered); the
/// `top_n` tightest pairs are kept.
pub fn range_use(sockets: &[SockEntry], sys: &NetSysctls, top_n: usize) -> RangeUse {
    let mut ix = RangeIndex::new(sys.port_range);
    for e in sockets {
        ix.add(e);
    }
    ix.finish(sys, top_n)
}

/// What the range rules read of one socket (12 bytes, not a
/// [`SockEntry`]'s 100): a table of 250,000 sockets is held in 3 MB while
/// it streams past.
#[derive(Debug, Clone, Copy)]
struct Slot {
    port: u16,
    state: TcpState,
    /// `idiag_timer` (0: none).
    timer: u8,
    /// Index of the (local address, peer) pair in [`RangeIndex::pairs`].
    pair: u32,
    expires_ms: u32,
}

/// The sockets on ports of the ephemeral range, gathered one at a time
/// (as a dump delivers them), then accounted port by port in
/// [`RangeIndex::finish`]: O(sockets + ports in the range).
#[derive(Debug)]
pub struct RangeIndex {
    range: PortRange,
    slots: Vec<Slot>,
    /// Each (local address, peer) pair once, and its index.
    pairs: Vec<(IpAddr, SocketAddr)>,
    pair_ids: HashMap<(IpAddr, SocketAddr), u32>,
}

fn timer_code(e: &SockEntry) -> u8 {
    use crate::diag::TimerKind;
    match e.timer.map(|t| t.kind) {
        None => 0,
        Some(TimerKind::Retransmit) => 1,
        Some(TimerKind::Keepalive) => 2,
        Some(TimerKind::Timewait) => 3,
        Some(TimerKind::Persist) => 4,
    }
}

impl RangeIndex {
    /// An empty index of `range`.
    pub fn new(range: PortRange) -> Self {
        RangeIndex {
            range,
            slots: Vec::new(),
            pairs: Vec::new(),
            pair_ids: HashMap::new(),
        }
    }

    /// Take `e` into account if its local port is in the range.
    pub fn add(&mut self, e: &SockEntry) {
        if !self.range.contains(e.local.port()) {
            return;
        }
        let key = (e.local.ip(), e.peer);
        let next = self.pairs.len() as u32;
        let pair = *self.pair_ids.entry(key).or_insert(next);
        if pair == next {
            self.pairs.push(key);
        }
        self.slots.push(Slot {
            port: e.local.port(),
            state: e.state,
            timer: timer_code(e),
            pair,
            expires_ms: e.timer.map_or(0, |t| t.expires_ms),
        });
    }

    /// The socket a slot stands for, with what the rules read.
    fn entry(&self, s: &Slot) -> SockEntry {
        use crate::diag::{Timer, TimerKind};
        let (ip, peer) = self.pairs[s.pair as usize];
        let kind = match s.timer {
            1 => Some(TimerKind::Retransmit),
            2 => Some(TimerKind::Keepalive),
            3 => Some(TimerKind::Timewait),
            4 => Some(TimerKind::Persist),
            _ => None,
        };
        SockEntry {
            family: crate::socket::Family::of(&peer),
            state: s.state,
            local: SocketAddr::new(ip, s.port),
            peer,
            timer: kind.map(|kind| Timer {
                kind,
                expires_ms: s.expires_ms,
                retrans: 0,
            }),
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode: 0,
            v6only: None,
            pid: None,
        }
    }

    /// Account the range port by port; the `top_n` tightest pairs are kept.
    pub fn finish(mut self, sys: &NetSysctls, top_n: usize) -> RangeUse {
        let range = self.range;
        // The slots of each port together, by a counting sort on the port
        // done in place (each slot is swapped at most once into its port's
        // place): no second array of the table.
        let base = usize::from(range.low);
        let width = range.len() as usize;
        let mut slots = std::mem::take(&mut self.slots);
        let mut start = vec![0u32; width + 1];
        for s in &slots {
            start[usize::from(s.port) - base + 1] += 1;
        }
        for k in 0..width {
            start[k + 1] += start[k];
        }
        let mut fill = start.clone();
        for b in 0..width {
            while fill[b] < start[b + 1] {
                let at = fill[b] as usize;
                let d = usize::from(slots[at].port) - base;
                if d == b {
                    fill[b] += 1;
                } else {
                    let to = fill[d] as usize;
                    slots.swap(at, to);
                    fill[d] += 1;
                }
            }
        }
        drop(fill);
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
            // The index is fed from this kernel's dumps.
            bound_only_hidden: !crate::model::kernel::version::bound_only_visible(),
        };
        let mut pairs: Vec<Option<PairTally>> = Vec::new();
        pairs.resize_with(self.pairs.len(), || None);
        let mut bucket: Vec<(u32, SockEntry)> = Vec::new();
        for port in range.low..=range.high {
            if sys.reserved_ports.contains(port) {
                u.reserved += 1;
                continue;
            }
            let k = usize::from(port) - base;
            let here = &slots[start[k] as usize..start[k + 1] as usize];
            if here.is_empty() {
                u.empty += 1;
                continue;
            }
            bucket.clear();
            bucket.extend(here.iter().map(|s| (s.pair, self.entry(s))));
            // For a port inside the range, `bucket_from_bind()`'s "accepted
            // on a listener's port" case implies a listener in the same
            // bucket, so the roles alone decide.
            if bucket.iter().any(|(_, e)| role(e) == Role::Listener) {
                u.listeners += 1;
                continue;
            }
            if bucket.iter().any(|(_, e)| role(e) == Role::BoundOnly) {
                u.bound_only += 1;
                continue;
            }
            u.connections += 1;
            // Each 4-tuple's sockets next to each other, peers in order.
            bucket.sort_unstable_by(|a, b| {
                a.1.peer
                    .cmp(&b.1.peer)
                    .then(a.1.local.ip().cmp(&b.1.local.ip()))
            });
            let mut peers_here = 0u32;
            let mut at = 0;
            while at < bucket.len() {
                let pair = bucket[at].0;
                let peer = self.pairs[pair as usize].1;
                let end = at + bucket[at..].iter().take_while(|(p, _)| *p == pair).count();
                if at == 0 || bucket[at - 1].1.peer != peer {
                    peers_here += 1;
                }
                let on_tuple = &bucket[at..end];
                at = end;
                let t = pairs[pair as usize].get_or_insert_with(PairTally::default);
                let window = rate_window_ms(sys, is_loopback(peer.ip()));
                t.young_tw += on_tuple.iter().filter(|(_, e)| is_young(e, window)).count() as u32;
                t.established += on_tuple
                    .iter()
                    .filter(|(_, e)| e.state == TcpState::Established)
                    .count() as u32;
                match tuple_use(on_tuple.iter().map(|(_, e)| e), sys) {
                    TupleUse::Busy => t.busy += 1,
                    TupleUse::TimeWaitReusable => t.tw_reusable += 1,
                    TupleUse::TimeWaitBlocking => {
                        t.tw_blocking += 1;
                        let later = on_tuple
                            .iter()
                            .map(|(_, e)| reusable_in_ms(e, sys))
                            .collect::<Option<Vec<u32>>>()
                            .and_then(|v| v.into_iter().max());
                        t.reusable_in_ms = match (t.reusable_in_ms, later) {
                            (Some(x), Some(y)) => Some(x.min(y)),
                            (x, y) => x.or(y),
                        };
                        let left = on_tuple
                            .iter()
                            .filter_map(|(_, e)| e.timer.map(|t| t.expires_ms))
                            .max();
                        t.soonest_tw_ms = match (t.soonest_tw_ms, left) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                }
            }
            u.shared_across_peers += u32::from(peers_here > 1);
        }
        u.bind_owned = u.listeners + u.bound_only;
        let mut all_peers: Vec<SocketAddr> = pairs
            .iter()
            .zip(&self.pairs)
            .filter(|(t, _)| t.is_some())
            .map(|(_, (_, p))| *p)
            .collect();
        all_peers.sort_unstable();
        all_peers.dedup();
        u.distinct_peers = all_peers.len() as u32;
        u.usable_new_peer = u.range_ports - u.reserved - u.bind_owned;
        let mut peers: Vec<PeerCapacity> = pairs
            .into_iter()
            .zip(self.pairs)
            .filter_map(|(t, (local_addr, peer))| {
                let t = t?;
                let capacity = capacity(&u, peer, &t, sys);
                Some(PeerCapacity {
                    local_addr,
                    peer,
                    established: t.established,
                    rule: crate::model::kernel::connect::scan_rule(
                        capacity.free,
                        capacity.time_wait_reusable,
                    ),
                    capacity,
                })
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
}

fn capacity(u: &RangeUse, peer: SocketAddr, t: &PairTally, sys: &NetSysctls) -> Capacity {
    let usable_base = u.usable_new_peer;
    let free = usable_base - t.busy - t.tw_blocking - t.tw_reusable;
    let loopback = is_loopback(peer.ip());
    let mut c = Capacity {
        range: u.range,
        range_ports: u.range_ports,
        reserved: u.reserved,
        bind_owned: u.bind_owned,
        tuple_busy: t.busy,
        time_wait_blocking: t.tw_blocking,
        time_wait_reusable: t.tw_reusable,
        free,
        usable: free + t.tw_reusable,
        // Ports with no socket: no pair holds them.
        surely_usable: u.empty,
        soonest_time_wait_ms: t.soonest_tw_ms,
        time_wait_reusable_in_ms: t.reusable_in_ms,
        time_wait_note: time_wait_note(sys, is_loopback(peer.ip())),
        tuple_limit: format!(
            "at most {usable_base} connections held at once to {peer} from one source address"
        ),
        taken_per_min: None,
        rate_window_ms: None,
        back_per_min: None,
        bound_only_hidden: u.bound_only_hidden,
    };
    set_rates(
        &mut c,
        t.young_tw,
        rate_window_ms(sys, loopback),
        loopback,
        sys,
    );
    c
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
    /// What connect() toward a peer nothing is connected to yet does.
    pub fn expect_new_peer(&self) -> super::Expect {
        super::diagnosis::connect_expect_seen(
            self.usable_new_peer,
            self.empty,
            self.bound_only_hidden,
        )
    }

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
                "listeners ({}) and bound-only sockets ({}) hold {} of {} ephemeral ports: connect() skips their ports for every destination (__inet_hash_connect(): tb->fastreuse >= 0), so {} are left for any peer and connect() fails with EADDRNOTAVAIL once none is; `twlab ss --state listening,unconnected -p` lists them; what helps: {}",
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
            let per_s = |m: Option<u32>| f64::from(m.unwrap_or(0)) / 60.0;
            let (taken, back) = (per_s(c.taken_per_min), per_s(c.back_per_min));
            let time_wait = c.time_wait_blocking + c.time_wait_reusable;
            let rates = format!(
                "ports come back at about {back:.1}/s ({}) and the table shows about {taken:.1}/s being taken (TIME_WAITs younger than {} ms)",
                if sys.timestamps
                    && crate::model::kernel::connect::tw_reuse_applies(
                        sys.tw_reuse,
                        is_loopback(p.peer.ip()),
                    )
                {
                    "every tcp_tw_reuse_delay: tcp_twsk_unique() takes TIME_WAITs over"
                } else {
                    "as TIME_WAITs expire, 60 s each"
                },
                c.rate_window_ms.unwrap_or(0)
            );
            // TIME_WAITs that come back faster than they are taken do not
            // exhaust the range: say so instead of warning.
            if time_wait > c.tuple_busy && taken <= back {
                a.notes.push(format!(
                    "{} -> {}: {} of {} ports free right now, the rest mostly TIME_WAIT; {rates}: sustainable at this rate (`twlab why connect {}` accounts every port)",
                    p.local_addr, p.peer, c.usable, avail, p.peer
                ));
                continue;
            }
            a.warnings.push(format!(
                "{} -> {}: ephemeral ports nearly exhausted ({} free of {}: {} held by open connections ({} ESTABLISHED), {} in TIME_WAIT not reusable, {} in TIME_WAIT reusable, {} owned by bind()); {rates}; connect() without an explicit bind() fails with EADDRNOTAVAIL once none is free (__inet_hash_connect); `twlab why connect {}` lists the holders; what helps: {}",
                p.local_addr,
                p.peer,
                c.usable,
                avail,
                c.tuple_busy,
                p.established.min(c.tuple_busy),
                c.time_wait_blocking,
                c.time_wait_reusable,
                c.bind_owned,
                p.peer,
                helps(&peer_fixes(p, sys))
            ));
        }
        // bind(addr, 0) needs an empty port; say so only where the table
        // shows programs doing it: many peers and no port shared across
        // them (connect() shares ports across peers once the range is
        // crowded; ports bind(addr, 0) took never are).
        if self.connections > 0
            && low(self.empty)
            && self.distinct_peers > 1
            && self.shared_across_peers == 0
        {
            let line = format!(
                "only {} of {} ephemeral ports have no socket at all ({} hold connections to {} peer(s), {} of them shared across peers): connect() can share a port across peers, but bind(addr, 0) before connect() needs an empty one (inet_csk_find_open_port() shares none) and fails with EADDRINUSE once none is; what helps: {}",
                self.empty,
                avail,
                self.connections,
                self.distinct_peers,
                self.shared_across_peers,
                super::Fix::BindAddressNoPort.text()
            );
            if a.warnings.is_empty() {
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
    let mut sides = TimeWaitSides::default();
    for e in shown {
        sides.add(e, &listening, range);
    }
    sides
}

impl TimeWaitSides {
    /// Count `e`, if it is a TIME_WAIT, on its side; `listening` holds the
    /// local ports with a listener (so a table can be counted as it
    /// streams once those are known).
    pub fn add(&mut self, e: &SockEntry, listening: &HashSet<u16>, range: Option<PortRange>) {
        if e.state != TcpState::TimeWait {
            return;
        }
        // No range known: only a listener tells a server-side socket.
        let range = range.unwrap_or(PortRange { low: 1, high: 0 });
        let here = listening.contains(&e.local.port());
        if origin_given(e, here, range) == Origin::Incoming {
            *self.server_by_port.entry(e.local.port()).or_default() += 1;
        } else {
            *self.others_by_peer.entry(e.peer).or_default() += 1;
        }
    }
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

        // The same ports shared across two peers: connect() chose them, and
        // nothing points at bind(addr, 0): no advice about it at all.
        let mut shared = socks.clone();
        shared.push(sock(TcpState::Established, "10.0.0.1:40000", "10.0.1.2:80"));
        let a = range_use(&shared, &sys(), 10).advice(&sys());
        assert!(a.warnings.is_empty(), "{a:?}");
        assert!(a.notes.is_empty(), "{a:?}");
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

#[cfg(test)]
mod rate_tests {
    //! Exhaustion warnings that know the rate: ports come back every
    //! `tcp_tw_reuse_delay` where tcp_tw_reuse applies, and a range that
    //! turns over faster than it is taken is not "nearly exhausted".
    use super::*;

    fn tw(port: u16, age_ms: u32) -> SockEntry {
        let local: SocketAddr = format!("10.0.0.1:{port}").parse().unwrap();
        let left = std::time::Duration::from_millis(u64::from(60_000 - age_ms));
        SockEntry::time_wait(local, "10.0.1.1:80".parse().unwrap(), left)
    }

    fn sys(tw_reuse: &str) -> NetSysctls {
        NetSysctls::from_lookup(|n| {
            Some(
                match n {
                    "net.ipv4.tcp_timestamps" => "1",
                    "net.ipv4.tcp_tw_reuse" => tw_reuse,
                    "net.ipv4.tcp_tw_reuse_delay" => "1000",
                    "net.ipv4.ip_local_port_range" => "40000 40099",
                    "net.ipv4.tcp_max_tw_buckets" => "262144",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .unwrap()
    }

    /// 99 of 100 ports in TIME_WAIT, one new one every 11 ms (about 91/s):
    /// with tcp_tw_reuse=1 a port comes back 1 s after it closed, 100 per
    /// second: sustainable, a note and no warning. With tcp_tw_reuse=0 they
    /// come back after 60 s: a warning that names both rates.
    #[test]
    fn tw_reuse_turns_the_range_over_faster_than_it_is_taken() {
        let socks: Vec<SockEntry> = (0..99u16)
            .map(|i| tw(40000 + i, u32::from(i) * 11))
            .collect();
        let s = sys("1");
        let u = range_use(&socks, &s, 10);
        let c = &u.peers[0].capacity;
        // 46 TIME_WAITs younger than the 500 ms window: 92 per second.
        assert_eq!(c.rate_window_ms, Some(500));
        assert_eq!(c.taken_per_min, Some(46 * 120));
        assert_eq!(c.back_per_min, Some(6000));
        assert!(c.usable <= 10, "{c:?}");
        let a = u.advice(&s);
        assert!(a.warnings.is_empty(), "{a:?}");
        assert!(a.notes.iter().any(|n| n.contains("sustainable")), "{a:?}");

        let s = sys("0");
        let u = range_use(&socks, &s, 10);
        let a = u.advice(&s);
        assert_eq!(a.warnings.len(), 1, "{a:?}");
        assert!(a.warnings[0].contains("nearly exhausted"));
        assert!(a.warnings[0].contains("come back at about 1.7/s"), "{a:?}");
        assert!(a.warnings[0].contains("twlab why connect 10.0.1.1:80"));
    }

    /// Faster than the ports come back even with tcp_tw_reuse=1 (one new
    /// TIME_WAIT every 4 ms, about 250/s): the warning stays, and its
    /// advice is not "wait 60 s" but the delay.
    #[test]
    fn a_rate_above_the_turnover_still_warns() {
        let socks: Vec<SockEntry> = (0..99u16)
            .map(|i| tw(40000 + i, u32::from(i) * 4))
            .collect();
        let s = sys("1");
        let u = range_use(&socks, &s, 10);
        let a = u.advice(&s);
        assert_eq!(a.warnings.len(), 1, "{a:?}");
        assert!(!a.warnings[0].contains("wait 59"), "{a:?}");
        assert!(a.warnings[0].contains("retry connect() after"), "{a:?}");
    }
}
