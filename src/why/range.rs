//! What `ss --summary` says about the ephemeral range: the model's
//! accounting of every occupant at once ([`RangeUse`], counted by the
//! rules `twlab why connect` counts one destination by) worded as warnings
//! and notes, each with the fixes [`super::diagnose_connect`] ranks for the
//! case; and the TIME_WAIT sorted by which end of its connection it was.

use super::connect::ephemeral_fixes;
use super::fix::RankedFix;
use super::table::{Origin, is_loopback, origin_given};
use crate::diag::{SockEntry, TcpState};
use crate::model::range::{PeerCapacity, RangeUse};
use crate::socket::SocketOpts;
use crate::sysctl::{NetSysctls, PortRange};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

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

// The model accounts the range; what the accounting predicts and what
// to do about it are said here.
impl RangeUse {
    /// What connect() toward a peer nothing is connected to yet does.
    pub fn expect_new_peer(&self) -> super::Expect {
        super::diagnosis::connect_expect_seen(
            self.usable_new_peer,
            self.empty,
            self.bound_only_hidden,
        )
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
    use crate::model::range::{Capacity, range_use};

    fn sock(state: TcpState, local: &str, peer: &str) -> SockEntry {
        SockEntry {
            inode: 1,
            ..SockEntry::full(state, local.parse().unwrap(), peer.parse().unwrap(), 0)
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
        // A listener and a bound-only socket hold 2 of the 9 pickable
        // ports: nothing to warn about.
        assert!(u.advice(&sys()).warnings.is_empty());
    }
}

#[cfg(test)]
mod rate_tests {
    //! Exhaustion warnings that know the rate: ports come back every
    //! `tcp_tw_reuse_delay` where tcp_tw_reuse applies, and a range that
    //! turns over faster than it is taken is not "nearly exhausted".
    use super::*;
    use crate::model::range::range_use;

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
