//! connect(): the 4-tuple check for a bound port (`__inet_check_established()`
//! → `tcp_twsk_unique()` with twp = NULL) and the ephemeral scan for an
//! unbound one (`__inet_hash_connect()`), with the range accounted port by
//! port.

use super::bind::Asker;
use super::bind::{BindQuestion, diagnose_bind, report};
use super::diagnosis::{
    Asked, Blocking, Capacity, Diagnosis, Errno, Expect, Failure, Flag, HOLDERS_LISTED,
    HolderReport,
};
use super::documented::connect_elsewhere;
use super::fix::{Fix, RankedFix};
use super::table::{Occupant, Origin, Role, Table, is_loopback, role, same_source};
use crate::diag::TcpState;
use crate::model::RuleId;
use crate::model::kernel::Fact;
use crate::model::kernel::addr::Claims;
use crate::model::kernel::bind::shareable_ports;
use crate::model::kernel::connect::{
    PortOrigin, ReuseSysctls, ScanPort, TupleVerdict, check_established, scan_port, scan_rule,
    tw_reuse_applies, tw_reuse_delay_ms,
};
use crate::model::range::PortTally;
use crate::model::tuple::{TupleUse, on_tuple, rate_window_ms};
use crate::outcome::Step;
use crate::socket::SocketOpts;
use crate::sysctl::NetSysctls;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A connect() to diagnose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectQuestion {
    /// The destination.
    pub dst: SocketAddr,
    /// `--from ADDR[:PORT]`: bind() before connect().
    pub from: Option<SocketAddr>,
    /// IP_BIND_ADDRESS_NO_PORT with bind(addr, 0).
    pub bind_no_port: bool,
    /// SO_REUSEADDR/SO_REUSEPORT of the connecting socket.
    pub opts: SocketOpts,
    /// Effective uid of the connecting process.
    pub uid: u32,
    /// The caller has CAP_NET_BIND_SERVICE (for a `--from` port below
    /// `ip_unprivileged_port_start`).
    pub cap_net_bind_service: bool,
}

/// Diagnose `connect(q.dst)`.
pub fn diagnose_connect(q: &ConnectQuestion, table: &Table, sys: &NetSysctls) -> Diagnosis {
    let mut d = match q.from {
        Some(from) if from.port() != 0 => fixed_port(q, from, table, sys),
        Some(from) if !q.bind_no_port => {
            let b = bind_question(q, from);
            let mut d = diagnose_bind(&b, table, sys);
            if d.rule == RuleId::BindAutoShared {
                shared_port_tuple(&mut d, q, from, table, sys);
            }
            if d.expect == Expect::Ok && d.rule == RuleId::BindAutoFree {
                // The port bind() picks has no socket on an overlapping
                // address, so the 4-tuple is free too.
                d.rule = RuleId::TupleFree;
                d.kernel_fn = d.rule.kernel_fn();
                d.explanation.push_str(
                    "; the port has no other socket, so the 4-tuple is free at connect()",
                );
            }
            d
        }
        _ => ephemeral(q, table, sys),
    };
    if let Some(from) = q.from.filter(|f| f.port() != 0 && table.bound_only_hidden) {
        // A socket that is only bound on the fixed port refuses bind()
        // (the bucket rules, inet_bind_conflict()), and this table cannot
        // show one.
        d.expect = std::mem::replace(&mut d.expect, Expect::Ok).unless_unseen(
            Step::Bind,
            Errno::EADDRINUSE,
            &format!("port {}", from.port()),
        );
    }
    d.asked = Asked::Connect {
        dst: q.dst,
        from: q.from,
        bind_no_port: q.bind_no_port,
    };
    d.other_systems = connect_elsewhere(q, &d);
    d.flags.extend(self_connect_flags(q, table, sys));
    d
}

/// The bind() before connect(): the `--from` address, IPV6_V6ONLY as a
/// client's IPv6 socket has it (`TcpSock` sets it), the caller's options.
fn bind_question(q: &ConnectQuestion, from: SocketAddr) -> BindQuestion {
    BindQuestion {
        addr: from,
        opts: q.opts,
        v6only: true,
        uid: q.uid,
        cap_net_bind_service: q.cap_net_bind_service,
        asker: Asker::Client,
    }
}

/// bind(ip, 0) shares a port under `ip_autobind_reuse`: the port is then
/// bound (`twp == NULL` at connect()), and its 4-tuple to the destination
/// may be held. If it is on every port the relaxed pass could pick,
/// connect() fails after the bind.
fn shared_port_tuple(
    d: &mut Diagnosis,
    q: &ConnectQuestion,
    from: SocketAddr,
    table: &Table,
    sys: &NetSysctls,
) {
    let b = bind_question(q, from);
    let new = super::bind::new_socket(&b, b.opts);
    let reuseaddr = SocketOpts {
        reuseaddr: true,
        ..SocketOpts::default()
    };
    let candidates: Vec<u16> = shareable_ports(&new, sys, |port| {
        table
            .bucket(port)
            .map(|o| super::bind::port_holder(&o.entry, reuseaddr, true))
            .collect::<Vec<_>>()
    })
    .collect();
    let rsys = ReuseSysctls::from(sys);
    let blocked = |port: u16| {
        !check_established(
            tuple_holders(table, from.ip(), port, q.dst).map(|o| on_tuple(&o.entry)),
            PortOrigin::Bound,
            &rsys,
        )
        .usable()
    };
    let n_blocked = candidates.iter().filter(|p| blocked(**p)).count();
    if n_blocked == 0 {
        return;
    }
    // Some blocked, some not: the port the relaxed pass takes (from a random
    // offset) decides.
    let fails = Failure {
        maybe: n_blocked < candidates.len(),
        ..Failure::sure(Step::Connect, Errno::EADDRNOTAVAIL)
    };
    d.expect = match d.expect.clone() {
        Expect::Ok if !fails.maybe => Expect::Fails {
            step: fails.step,
            errno: fails.errno,
        },
        Expect::Ok => Expect::Depends {
            step: fails.step,
            errno: fails.errno,
            ok_if: "the port the relaxed pass takes (from a random offset) is one whose 4-tuple to the destination is free".into(),
            then: None,
        },
        Expect::Depends {
            step, errno, ok_if, ..
        } => Expect::Depends {
            step,
            errno,
            ok_if,
            then: Some(fails),
        },
        other => other,
    };
    d.explanation.push_str(&format!(
        "; {n_blocked} of the {} port(s) it could share already hold the 4-tuple to {} in a state __inet_check_established() does not take over (the port is bound: twp = NULL), and connect() fails with EADDRNOTAVAIL on those",
        candidates.len(),
        q.dst
    ));
}

/// The source address connect() will use (the `--from` one, else any).
///
/// Without one, the route to the destination picks it (`ip_route_connect()`
/// → the route's preferred source): for a loopback destination that is the
/// loopback route's `src`, 127.0.0.1 for all of 127/8 and ::1 for ::1 (and
/// `::ffff:127.0.0.1` for a v4-mapped one). Elsewhere the route is not read
/// here: any local address counts, which can only overstate what is taken.
fn source_ip(q: &ConnectQuestion) -> IpAddr {
    let given = q.from.map(|f| f.ip()).filter(|ip| !ip.is_unspecified());
    match (given, q.dst.ip()) {
        (Some(ip), _) => ip,
        (None, IpAddr::V4(d)) if d.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (None, IpAddr::V6(d)) if d.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (None, IpAddr::V6(d)) if d.to_ipv4_mapped().is_some_and(|m| m.is_loopback()) => {
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())
        }
        (None, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Sockets holding `(src, port) → dst`.
fn tuple_holders(
    table: &Table,
    src: IpAddr,
    port: u16,
    dst: SocketAddr,
) -> impl Iterator<Item = &Occupant> {
    table
        .bucket(port)
        .filter(move |o| o.entry.peer == dst && same_source(o.entry.local, src))
}

/// A bound port: bind() first, then `__inet_check_established()` with twp =
/// NULL, where a TIME_WAIT is taken over if it saw timestamps
/// (`tcp_twsk_unique()`: `ts_recent_stamp && !twp`).
// Two stages (bind, then the 4-tuple) and their combination; kept in one
// place so the order of the kernel checks is visible.
fn fixed_port(q: &ConnectQuestion, from: SocketAddr, table: &Table, sys: &NetSysctls) -> Diagnosis {
    let b = bind_question(q, from);
    let mut d = diagnose_bind(&b, table, sys);
    if matches!(d.expect, Expect::Fails { .. }) {
        if !d.fixes.iter().any(|f| f.fix == Fix::LetConnectChoose) {
            d.fixes.insert(0, Fix::LetConnectChoose.ranked());
        }
        return d;
    }
    // bind() passes, or passes only if the holders carry hidden options:
    // then the 4-tuple decides.
    let bind_part = match &d.expect {
        Expect::Depends { ok_if, .. } => Some((d.expect.clone(), ok_if.clone(), d.fixes.clone())),
        _ => None,
    };
    let on: Vec<&Occupant> = tuple_holders(table, from.ip(), from.port(), q.dst).collect();
    let rsys = ReuseSysctls::from(sys);
    let verdict = check_established(
        on.iter().map(|o| on_tuple(&o.entry)),
        PortOrigin::Bound,
        &rsys,
    );
    let holders: Vec<HolderReport> = on
        .iter()
        .map(|o| report(o, Blocking::HoldsTuple, table, sys))
        .collect();
    let tuple = format!("{from} → {}", q.dst);
    let tw_left = holders
        .iter()
        .filter(|h| h.timewait_sock)
        .filter_map(|h| h.timer.map(|t| t.expires_ms))
        .max()
        .unwrap_or(0);
    let rule = verdict.bound_rule();
    let (expect, explanation, fixes) = match verdict {
        TupleVerdict::Busy => {
            let h = holders.iter().find(|h| !h.timewait_sock);
            let state = h.map_or("full".to_string(), |h| h.state.to_string());
            (
                fails_connect(),
                format!(
                    "{tuple} is held by a {state} socket, so __inet_check_established() refuses it (only a timewait socket can be taken over): connect() fails with EADDRNOTAVAIL"
                ),
                vec![Fix::WaitPeerClose, Fix::LetConnectChoose],
            )
        }
        TupleVerdict::TakeOver { .. } => (
            Expect::Ok,
            format!(
                "{tuple} is held by a TIME_WAIT; a bound port takes it over when the old connection saw TCP timestamps (tcp_twsk_unique() with twp = NULL; tcp_timestamps=1 here, assumed negotiated by both ends)"
            ),
            Vec::new(),
        ),
        TupleVerdict::TimeWaitBlocks(_) => (
            fails_connect(),
            format!(
                "{tuple} is held by a TIME_WAIT that saw no timestamps (tcp_timestamps=0), so tcp_twsk_unique() refuses it: connect() fails with EADDRNOTAVAIL"
            ),
            vec![
                Fix::LetConnectChoose,
                Fix::Wait { ms: tw_left },
                Fix::ServerClosesFirst,
                Fix::Linger0,
            ],
        ),
        TupleVerdict::Free => (
            Expect::Ok,
            format!(
                "bind() is allowed and no socket holds {tuple}, so __inet_check_established() passes"
            ),
            Vec::new(),
        ),
    };
    d.facts.extend([
        Fact::new("tuple_holders", holders.len()),
        Fact::new("port_origin", "bound"),
        Fact::new("tcp_timestamps", u8::from(sys.timestamps)),
    ]);
    // A socket of the bucket that also holds the 4-tuple is listed once.
    for h in holders {
        if !d
            .holders
            .iter()
            .any(|o| o.local == h.local && o.peer == h.peer && o.state == h.state)
        {
            d.holders.push(h);
        }
    }
    match bind_part {
        // bind() may already fail; if it passes, connect() succeeds.
        Some((bind_expect, ok_if, bind_fixes)) if expect == Expect::Ok => {
            d.explanation = format!(
                "{}; if bind() passes ({ok_if}): {explanation}",
                d.explanation
            );
            d.expect = bind_expect;
            d.fixes = bind_fixes;
            if !d.fixes.iter().any(|f| f.fix == Fix::LetConnectChoose) {
                d.fixes.insert(0, Fix::LetConnectChoose.ranked());
            }
        }
        Some((_, ok_if, bind_fixes)) => {
            // bind() fails unless the holders allow it, and connect() fails
            // after it anyway: both failures stay in the prediction.
            d.explanation = format!("bind() passes only if {ok_if}; then {explanation}");
            let then = match expect {
                Expect::Fails { step, errno } => Some(Failure::sure(step, errno)),
                _ => None,
            };
            set(&mut d, rule, expect, fixes);
            d.expect = Expect::Depends {
                step: Step::Bind,
                errno: Errno::EADDRINUSE,
                ok_if,
                then,
            };
            d.rule = RuleId::BindConflict;
            d.kernel_fn = d.rule.kernel_fn();
            for f in bind_fixes {
                if !d.fixes.contains(&f) {
                    d.fixes.push(f);
                }
            }
        }
        None => {
            d.explanation = explanation;
            set(&mut d, rule, expect, fixes);
        }
    }
    d
}

fn set(d: &mut Diagnosis, rule: RuleId, expect: Expect, fixes: Vec<Fix>) {
    d.rule = rule;
    d.kernel_fn = rule.kernel_fn();
    d.expect = expect;
    d.fixes = fixes.into_iter().map(Fix::ranked).collect();
}

fn fails_connect() -> Expect {
    Expect::Fails {
        step: Step::Connect,
        errno: Errno::EADDRNOTAVAIL,
    }
}

/// The holder reports of a range scan: the first [`HOLDERS_LISTED`] kept,
/// the rest only counted (the capacity counts every port either way).
#[derive(Default)]
struct Listed {
    kept: Vec<HolderReport>,
    more: usize,
}

impl Listed {
    /// One more holder; its report is made only if it is kept.
    fn add(&mut self, report: impl FnOnce() -> HolderReport) {
        if self.kept.len() < HOLDERS_LISTED {
            self.kept.push(report());
        } else {
            self.more += 1;
        }
    }
}

/// The ephemeral scan, port by port, as `__inet_hash_connect()` does it
/// ([`scan_port`]): count the range toward `q.dst` (the model's
/// [`PortTally`]), collecting the sockets that stand in the way.
fn count_range(q: &ConnectQuestion, table: &Table, sys: &NetSysctls) -> (Capacity, Listed) {
    let range = sys.port_range;
    let src = source_ip(q);
    let rsys = ReuseSysctls::from(sys);
    let loopback = is_loopback(q.dst.ip());
    let window_ms = rate_window_ms(sys, loopback);
    let mut t = PortTally::default();
    let listener_ports = listener_ports(table);
    let mut holders = Listed::default();
    for port in range.low..=range.high {
        let reserved = sys.reserved_ports.contains(port);
        let bucket: Vec<&Occupant> = if reserved {
            Vec::new()
        } else {
            table.bucket(port).collect()
        };
        let owned = !reserved && bucket_from_bind(&bucket, listener_ports, sys);
        let on: Vec<&Occupant> = if reserved || owned {
            Vec::new()
        } else {
            bucket
                .iter()
                .copied()
                .filter(|o| o.entry.peer == q.dst && same_source(o.entry.local, src))
                .collect()
        };
        match scan_port(
            reserved,
            owned,
            on.iter().map(|o| on_tuple(&o.entry)),
            &rsys,
        ) {
            ScanPort::Reserved => t.reserved += 1,
            ScanPort::BindOwned => {
                t.bind_owned += 1;
                for o in bucket.iter().filter(|o| {
                    !matches!(role(&o.entry), Role::Connected | Role::TimeWait)
                        || o.entry.peer == q.dst
                }) {
                    holders.add(|| report(o, Blocking::Always, table, sys));
                }
            }
            ScanPort::Tuple(TupleVerdict::Free) => {
                t.free += 1;
                t.surely_usable += u32::from(bucket.is_empty());
            }
            ScanPort::Tuple(verdict) => {
                t.held(
                    TupleUse::from(verdict),
                    on.iter().map(|o| &o.entry),
                    window_ms,
                    sys,
                );
                for o in &on {
                    holders.add(|| report(o, Blocking::HoldsTuple, table, sys));
                }
            }
        }
    }
    let c = t.capacity(range, loopback, sys, table.bound_only_hidden);
    (c, holders)
}

fn ephemeral(q: &ConnectQuestion, table: &Table, sys: &NetSysctls) -> Diagnosis {
    let range = sys.port_range;
    let src = source_ip(q);
    let (mut c, holders) = count_range(q, table, sys);
    c.tuple_limit = format!(
        "at most {} connections held at once from {} to {} (usable ports × 1 source address)",
        c.range_ports - c.reserved - c.bind_owned,
        if src.is_unspecified() {
            "one source address".to_string()
        } else {
            src.to_string()
        },
        q.dst
    );
    let how = if q.bind_no_port {
        "bind(addr, 0) with IP_BIND_ADDRESS_NO_PORT defers the port to connect(); "
    } else {
        ""
    };
    let rule = scan_rule(c.free, c.time_wait_reusable);
    let (expect, explanation) = if rule != RuleId::EphemeralExhausted {
        (
            c.expect(),
            format!(
                "{how}__inet_hash_connect() finds {} usable port(s) toward {} ({} free, {} with a reusable TIME_WAIT)",
                c.usable, q.dst, c.free, c.time_wait_reusable
            ),
        )
    } else {
        (
            fails_connect(),
            format!(
                "{how}__inet_hash_connect() finds no usable port toward {} in {}-{}: {} reserved, {} owned by bind() (skipped for every destination: tb->fastreuse >= 0), {} with the 4-tuple held, {} with a TIME_WAIT it may not reuse; connect() fails with EADDRNOTAVAIL",
                q.dst,
                range.low,
                range.high,
                c.reserved,
                c.bind_owned,
                c.tuple_busy,
                c.time_wait_blocking
            ),
        )
    };
    let fixes = if c.usable > 0 {
        Vec::new()
    } else {
        ephemeral_fixes(&c, sys, q)
    };
    let facts = vec![
        Fact::new("range", format!("{}-{}", range.low, range.high)),
        Fact::new("port_origin", "chosen"),
        Fact::new("reserved", c.reserved),
        Fact::new("bind_owned", c.bind_owned),
        Fact::new("tuple_busy", c.tuple_busy),
        Fact::new("time_wait_blocking", c.time_wait_blocking),
        Fact::new("time_wait_reusable", c.time_wait_reusable),
        Fact::new("free", c.free),
        Fact::new("tcp_timestamps", u8::from(sys.timestamps)),
        Fact::new("tcp_tw_reuse", sys.tw_reuse.value()),
        Fact::new(
            "tcp_tw_reuse_delay_ms",
            tw_reuse_delay_ms(&ReuseSysctls::from(sys)),
        ),
        Fact::new("loopback", is_loopback(q.dst.ip())),
    ];
    Diagnosis {
        asked: Asked::Connect { dst: q.dst, from: q.from, bind_no_port: q.bind_no_port },
        kernel_fn: rule.kernel_fn(),
        rule,
        explanation,
        other_systems: Vec::new(),
        expect,
        variants: Vec::new(),
        flags: Vec::new(),
        capacity: Some(c),
        fixes,
        unknowns: vec!["sock_diag does not show whether a connected socket's port came from bind(): such ports are counted as chosen by connect(). If one came from bind() (bind(addr, 0) without IP_BIND_ADDRESS_NO_PORT), connect() skips it for every destination.".into()],
        facts,
        holders: holders.kept,
        holders_not_listed: holders.more,
        tried: Vec::new(),
    }
}

/// The local ports with a listener on them.
pub(crate) fn listener_ports(table: &Table) -> &std::collections::HashSet<u16> {
    table.listener_ports()
}

/// Did this port's bucket come from bind()? A listener or bound-only socket
/// in it, or an accepted connection (its port is its listener's).
fn bucket_from_bind(
    bucket: &[&Occupant],
    listener_ports: &std::collections::HashSet<u16>,
    sys: &NetSysctls,
) -> bool {
    bucket.iter().any(|o| {
        matches!(role(&o.entry), Role::Listener | Role::BoundOnly)
            || super::table::origin_given(
                &o.entry,
                listener_ports.contains(&o.entry.local.port()),
                sys.port_range,
            ) == Origin::Incoming
    })
}

/// Fixes for an exhausted range toward one destination, picked by what
/// holds the ports: only fixes that would change something here.
pub(crate) fn ephemeral_fixes(
    c: &Capacity,
    sys: &NetSysctls,
    q: &ConnectQuestion,
) -> Vec<RankedFix> {
    let mut fixes = Vec::new();
    let biggest = [c.bind_owned, c.tuple_busy, c.time_wait_blocking]
        .into_iter()
        .max()
        .unwrap_or(0);
    if c.bind_owned == biggest && c.bind_owned > 0 {
        fixes.push(Fix::MoveBoundOutOfRange);
        fixes.push(Fix::BindAddressNoPort);
    }
    if c.tuple_busy == biggest && c.tuple_busy > 0 {
        // Open connections: they are already kept alive; more 4-tuples help.
        fixes.extend([Fix::MoreSourceAddresses, Fix::WidenRange]);
    }
    if c.time_wait_blocking == biggest && c.time_wait_blocking > 0 {
        // tcp_tw_reuse=1 changes something only where the current value
        // does not already reuse (2 covers loopback), with timestamps on.
        if sys.timestamps && !tw_reuse_applies(sys.tw_reuse, is_loopback(q.dst.ip())) {
            fixes.push(Fix::TwReuse);
        }
        // Where tcp_tw_reuse applies the ports come back after its delay
        // (RetryAfter below), not after the 60 s timer.
        let reuse_applies =
            sys.timestamps && tw_reuse_applies(sys.tw_reuse, is_loopback(q.dst.ip()));
        if let (Some(ms), false) = (c.soonest_time_wait_ms, reuse_applies) {
            fixes.push(Fix::Wait { ms });
        }
        fixes.extend([Fix::KeepAlive, Fix::ServerClosesFirst]);
    }
    if let Some(ms) = c.time_wait_reusable_in_ms {
        fixes.insert(0, Fix::RetryAfter { ms });
    }
    if q.from.is_some() && !q.bind_no_port {
        fixes.insert(0, Fix::BindAddressNoPort);
    }
    fixes.push(Fix::WidenRange);
    let mut out: Vec<Fix> = Vec::new();
    for f in fixes {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out.into_iter().map(Fix::ranked).collect()
}

/// Self-connect: sockets already connected to themselves on the
/// destination port, and the risk of one when the destination is local, in
/// the range, and nothing listens there.
fn self_connect_flags(q: &ConnectQuestion, table: &Table, sys: &NetSysctls) -> Vec<Flag> {
    let mut flags: Vec<Flag> = table
        .bucket(q.dst.port())
        .filter(|o| super::table::self_connected(&o.entry))
        .map(|o| Flag::SelfConnected {
            addr: o.entry.local,
        })
        .collect();
    let default_v6only = sys.bindv6only.unwrap_or(false);
    let dst = Claims::of(q.dst.ip(), false);
    let listening = table.bucket(q.dst.port()).any(|o| {
        o.entry.state == TcpState::Listen
            && dst.overlap(Claims::of(
                o.entry.local.ip(),
                super::bind::holder_v6only(&o.entry, default_v6only),
            ))
    });
    let port = q.dst.port();
    if is_loopback(q.dst.ip())
        && sys.port_range.contains(port)
        && !sys.reserved_ports.contains(port)
        && !listening
        && flags.is_empty()
    {
        flags.push(Flag::SelfConnectRisk { dst: q.dst });
    }
    flags
}
