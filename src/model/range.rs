//! The ephemeral range's accounting, as `__inet_hash_connect()` meets its
//! ports. Toward one destination: a [`Capacity`], counted port by port in
//! a `PortTally` (the diagnosis of one connect() does it over its table).
//! Every occupant at once, for `ss --summary` ([`RangeUse`]): the same
//! accounting in one pass for every (local address, peer) pair, by the same
//! rules — a port whose bucket came from bind() is skipped for every
//! destination, a port whose 4-tuple to the peer is taken is classified by
//! `tuple_use` ([`super::tuple`]), TIME_WAIT counted as reusable only as
//! `tcp_twsk_unique()` allows.
//!
//! Pure: sockets and sysctls in, counts out. What a count predicts and what
//! to do about it (warnings, notes, the fixes ranked) is the diagnosis
//! layer's.

use super::holder::{Role, role};
use super::kernel::addr::is_loopback;
use super::kernel::connect::{ReuseSysctls, ports_back_per_s, scan_rule, tw_reuse_delay_ms};
use super::tuple::{TupleUse, is_young, rate_window_ms, reusable_in_ms, tuple_use};
use crate::diag::{SockEntry, TcpState};
use crate::sysctl::{NetSysctls, PortRange, TwReuse};
use serde::Serialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Ephemeral ports connect() (or bind(addr, 0)) can still use toward one
/// destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Capacity {
    /// `ip_local_port_range`.
    pub range: PortRange,
    /// Ports in the range.
    pub range_ports: u32,
    /// Of those, reserved (`ip_local_reserved_ports`).
    pub reserved: u32,
    /// Ports whose bucket came from bind(): listeners, bound-only sockets
    /// (connect() skips them: `tb->fastreuse >= 0`). For bind(addr, 0):
    /// ports with any overlapping socket.
    pub bind_owned: u32,
    /// Ports whose 4-tuple to this destination a full socket holds.
    pub tuple_busy: u32,
    /// Ports whose 4-tuple is held by a TIME_WAIT that cannot be reused now.
    pub time_wait_blocking: u32,
    /// Ports whose TIME_WAIT connect() may take over (`tcp_twsk_unique()`).
    pub time_wait_reusable: u32,
    /// Ports nothing stands on.
    pub free: u32,
    /// free + time_wait_reusable: what connect() can use now.
    pub usable: u32,
    /// Of `usable`, the ports with no socket at all: surely usable. The
    /// others are held by connections whose ports connect() chose — unless
    /// bind(ip, 0) gave them, which makes a port's bucket skipped for every
    /// destination (`tb->fastreuse >= 0`) and which sock_diag cannot show.
    pub surely_usable: u32,
    /// The soonest blocking TIME_WAIT expiry, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soonest_time_wait_ms: Option<u32>,
    /// When the first blocking TIME_WAIT passes `tcp_tw_reuse_delay` and
    /// becomes reusable, in ms (only when tw_reuse and timestamps allow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_wait_reusable_in_ms: Option<u32>,
    /// Why TIME_WAIT is or is not reusable under the current sysctls.
    pub time_wait_note: String,
    /// Held connections to one destination are limited by 4-tuples:
    /// usable ports × source addresses (one source here).
    pub tuple_limit: String,
    /// New connections per minute the table shows being made toward the
    /// destination: TIME_WAITs younger than `rate_window_ms`, scaled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken_per_min: Option<u32>,
    /// The window behind `taken_per_min`, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_window_ms: Option<u32>,
    /// Ports per minute that come back for new connections once taken:
    /// the ports not held by open connections, every `tcp_tw_reuse_delay`
    /// where tcp_tw_reuse applies (timestamps on), else every 60 s
    /// (`kernel::connect::ports_back_per_s`). A rate above it exhausts the
    /// range; one below it is sustainable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_per_min: Option<u32>,
    /// The dump could not show bound-only sockets (Linux before 6.5): a
    /// port that looks empty may be held, so no port is sure.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bound_only_hidden: bool,
}

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
    pub rule: super::RuleId,
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

impl RangeUse {
    /// Ports connect() may pick at all: the range less the reserved ones.
    pub fn pickable(&self) -> u32 {
        self.range_ports - self.reserved
    }
}

/// The ports of the range toward one destination, counted as
/// `__inet_hash_connect()`'s scan meets them: the counts a [`Capacity`] is
/// made of. The diagnosis of one connect() counts them over its table (and
/// lists the holders), the range accounting for every pair at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PortTally {
    /// In `ip_local_reserved_ports`: skipped.
    pub(crate) reserved: u32,
    /// The bucket came from bind() (`tb->fastreuse >= 0`): skipped for
    /// every destination.
    pub(crate) bind_owned: u32,
    /// No socket on the 4-tuple (`__inet_check_established()` passes).
    pub(crate) free: u32,
    /// Of `free`, the ports with no socket at all.
    pub(crate) surely_usable: u32,
    /// A full socket on the 4-tuple.
    pub(crate) busy: u32,
    /// A TIME_WAIT on the 4-tuple that `tcp_twsk_unique()` refuses now.
    pub(crate) time_wait_blocking: u32,
    /// Only TIME_WAITs on the 4-tuple that `tcp_twsk_unique()` lets go.
    pub(crate) time_wait_reusable: u32,
    /// TIME_WAITs younger than the rate window (`is_young`): the
    /// connections being made now.
    pub(crate) young: u32,
    /// The soonest a blocking TIME_WAIT's timer frees its 4-tuple, in ms.
    pub(crate) soonest_time_wait_ms: Option<u32>,
    /// The soonest a blocking 4-tuple passes `tcp_tw_reuse_delay`, in ms.
    pub(crate) reusable_in_ms: Option<u32>,
}

impl PortTally {
    /// One port whose 4-tuple to the destination the sockets `on` hold
    /// (at least one), counted by `class` (what `__inet_check_established()`
    /// makes of them). A blocking one is free again when the last of its
    /// TIME_WAITs lets go: its delay (`tcp_twsk_unique()`'s age test) or its
    /// timer; the soonest such port is kept. Its TIME_WAITs younger than
    /// `window_ms` count as connections being made now (`young`), unless a
    /// full socket holds the 4-tuple: `why connect` and `ss --summary` both
    /// count them here, so the two answers give the same rate.
    pub(crate) fn held<'a, I>(&mut self, class: TupleUse, on: I, window_ms: u32, sys: &NetSysctls)
    where
        I: IntoIterator<Item = &'a SockEntry>,
        I::IntoIter: Clone,
    {
        let on = on.into_iter();
        if class != TupleUse::Busy {
            self.young += on.clone().filter(|e| is_young(e, window_ms)).count() as u32;
        }
        match class {
            TupleUse::Busy => self.busy += 1,
            TupleUse::TimeWaitReusable => self.time_wait_reusable += 1,
            TupleUse::TimeWaitBlocking => {
                self.time_wait_blocking += 1;
                let later = on
                    .clone()
                    .map(|e| reusable_in_ms(e, sys))
                    .collect::<Option<Vec<u32>>>()
                    .and_then(|v| v.into_iter().max());
                self.reusable_in_ms = soonest(self.reusable_in_ms, later);
                let left = on.filter_map(|e| e.timer.map(|t| t.expires_ms)).max();
                self.soonest_time_wait_ms = soonest(self.soonest_time_wait_ms, left);
            }
        }
    }

    /// What connect() can use toward a destination (`loopback`: either end
    /// is) by these counts: the free ports and the reusable TIME_WAITs, the
    /// rule that decides whether a TIME_WAIT is reusable, and the rates.
    /// `tuple_limit` is left for the caller to word.
    pub(crate) fn capacity(
        &self,
        range: PortRange,
        loopback: bool,
        sys: &NetSysctls,
        bound_only_hidden: bool,
    ) -> Capacity {
        let mut c = Capacity {
            range,
            range_ports: range.len(),
            reserved: self.reserved,
            bind_owned: self.bind_owned,
            tuple_busy: self.busy,
            time_wait_blocking: self.time_wait_blocking,
            time_wait_reusable: self.time_wait_reusable,
            free: self.free,
            usable: self.free + self.time_wait_reusable,
            surely_usable: self.surely_usable,
            soonest_time_wait_ms: self.soonest_time_wait_ms,
            time_wait_reusable_in_ms: self.reusable_in_ms,
            time_wait_note: time_wait_note(sys, loopback),
            tuple_limit: String::new(),
            taken_per_min: None,
            rate_window_ms: None,
            back_per_min: None,
            bound_only_hidden,
        };
        set_rates(
            &mut c,
            self.young,
            rate_window_ms(sys, loopback),
            loopback,
            sys,
        );
        c
    }
}

/// The sooner of two times, either maybe unknown.
fn soonest(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Why TIME_WAIT is or is not reusable by a kernel-chosen port under these
/// sysctls (`tcp_twsk_unique()`: timestamps, then tcp_tw_reuse, then the
/// delay).
fn time_wait_note(sys: &NetSysctls, loopback: bool) -> String {
    let delay = tw_reuse_delay_ms(&ReuseSysctls::from(sys));
    match (sys.tw_reuse, sys.timestamps) {
        (_, false) => "TIME_WAIT is never reused: tcp_timestamps=0".into(),
        (TwReuse::Off, _) => "TIME_WAIT is not reused by connect(): tcp_tw_reuse=0".into(),
        (TwReuse::LoopbackOnly, _) if !loopback => {
            "TIME_WAIT is not reused: tcp_tw_reuse=2 applies to loopback only".into()
        }
        _ => format!(
            "a TIME_WAIT older than tcp_tw_reuse_delay ({delay} ms) is reusable (tcp_tw_reuse={}, timestamps on, assumed negotiated)",
            sys.tw_reuse.value()
        ),
    }
}

/// The intake the table shows (`young` TIME_WAITs in `window_ms`) and the
/// rate at which ports come back ([`ports_back_per_s`]) for the ports not
/// held by open connections.
fn set_rates(c: &mut Capacity, young: u32, window_ms: u32, loopback: bool, sys: &NetSysctls) {
    let open = c.range_ports - c.reserved - c.bind_owned;
    let cycling = open.saturating_sub(c.tuple_busy);
    let back = ports_back_per_s(cycling, loopback, &ReuseSysctls::from(sys)) * 60.0;
    c.back_per_min = Some(back.round().min(f64::from(u32::MAX)) as u32);
    c.rate_window_ms = Some(window_ms);
    c.taken_per_min = Some(
        (f64::from(young) * 60_000.0 / f64::from(window_ms.max(1)))
            .round()
            .min(f64::from(u32::MAX)) as u32,
    )
}

/// The sockets of one pair on one port, by what they make of it.
#[derive(Default)]
struct PairTally {
    established: u32,
    /// The pair's ports; reserved, bind()-owned and free ones are the
    /// range's, filled in at the end.
    ports: PortTally,
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
            timer: kind.map(|kind| Timer {
                kind,
                expires_ms: s.expires_ms,
                retrans: 0,
            }),
            ..SockEntry::full(s.state, SocketAddr::new(ip, s.port), peer, 0)
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
            bound_only_hidden: !super::kernel::version::bound_only_visible(),
        };
        let mut pairs: Vec<Option<PairTally>> = Vec::new();
        pairs.resize_with(self.pairs.len(), || None);
        let mut bucket: Vec<(u32, SockEntry)> = Vec::new();
        for port in range.low..=range.high {
            // `__inet_hash_connect()` skips a reserved port
            // (`inet_is_local_reserved_port()`) for every destination.
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
            // A bucket that came from bind() is skipped for every
            // destination (`__inet_hash_connect()`: `tb->fastreuse >= 0`).
            // An accepted connection's bucket came from its listener's
            // bind(), but inside the range that listener is in the same
            // bucket, so the roles alone decide.
            if bucket.iter().any(|(_, e)| role(e) == Role::Listener) {
                u.listeners += 1;
                continue;
            }
            if bucket.iter().any(|(_, e)| role(e) == Role::BoundOnly) {
                u.bound_only += 1;
                continue;
            }
            // Only connections: connect() may still pick the port toward
            // any peer whose 4-tuple on it is free.
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
                let on = on_tuple.iter().map(|(_, e)| e);
                t.established += on
                    .clone()
                    .filter(|e| e.state == TcpState::Established)
                    .count() as u32;
                // `__inet_check_established()` over the pair's 4-tuple.
                t.ports.held(tuple_use(on.clone(), sys), on, window, sys);
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
                let capacity = capacity(&u, peer, &t.ports, sys);
                Some(PeerCapacity {
                    local_addr,
                    peer,
                    established: t.established,
                    rule: scan_rule(capacity.free, capacity.time_wait_reusable),
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

/// The capacity toward `peer` of one pair: the ports the range leaves to
/// any peer, less the ones the pair's 4-tuples hold.
fn capacity(u: &RangeUse, peer: SocketAddr, t: &PortTally, sys: &NetSysctls) -> Capacity {
    let usable_base = u.usable_new_peer;
    let ports = PortTally {
        reserved: u.reserved,
        bind_owned: u.bind_owned,
        free: usable_base - t.busy - t.time_wait_blocking - t.time_wait_reusable,
        // Ports with no socket: no pair holds them.
        surely_usable: u.empty,
        ..*t
    };
    let mut c = ports.capacity(u.range, is_loopback(peer.ip()), sys, u.bound_only_hidden);
    c.tuple_limit =
        format!("at most {usable_base} connections held at once to {peer} from one source address");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(state: TcpState, local: &str, peer: &str) -> SockEntry {
        SockEntry::full(state, local.parse().unwrap(), peer.parse().unwrap(), 0)
    }

    /// A range of 10 ports, the last reserved.
    fn sys() -> NetSysctls {
        NetSysctls {
            tw_reuse: TwReuse::Off,
            port_range: PortRange {
                low: 40000,
                high: 40009,
            },
            reserved_ports: crate::sysctl::ReservedPorts::parse("40009").unwrap(),
            ..NetSysctls::linux_defaults()
        }
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
    }

    /// The rate both `why connect` and `ss --summary` print comes from
    /// `held`: a TIME_WAIT 0.5 s old counts in a 1 s window, one 30 s old
    /// does not, and nothing counts on a 4-tuple a full socket holds.
    #[test]
    fn young_time_waits_are_counted_where_the_tuple_is_held() {
        let tw = |left_ms: u32| {
            let mut e = sock(TcpState::TimeWait, "127.0.0.1:40000", "127.0.0.1:80");
            e.timer = Some(crate::diag::Timer {
                kind: crate::diag::TimerKind::Timewait,
                expires_ms: left_ms,
                retrans: 0,
            });
            e
        };
        let (young, old) = (tw(59_500), tw(30_000));
        let mut t = PortTally::default();
        t.held(TupleUse::TimeWaitBlocking, [&young, &old], 1_000, &sys());
        assert_eq!((t.young, t.time_wait_blocking), (1, 1));
        t.held(TupleUse::TimeWaitReusable, [&young], 1_000, &sys());
        assert_eq!((t.young, t.time_wait_reusable), (2, 1));
        t.held(TupleUse::Busy, [&young], 1_000, &sys());
        assert_eq!((t.young, t.busy), (2, 1));
    }
}
