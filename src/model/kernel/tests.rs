//! The rule table: one row per rule identifier, each a situation in plain
//! data and the rule the kernel layer names for it, plus the edges of each
//! decision. No sockets: the kernel itself checks these same functions
//! through `matrix`, `pairs`, `run` and `selfcheck`.

use super::addr::{Claims, LOOPBACK4_IPV6, v6only_after_bind};
use super::bind::{
    Autobind, Check, HolderKind, NewSocket, PortHolder, PortVerdict, Refusal, Share, autobind,
    bind_port, conflict, precheck,
};
use super::connect::{
    OnTuple, PeerEnd, PortOrigin, ReuseSysctls, ScanPort, TimeWaitFacts, TupleVerdict, TwRefusal,
    TwVerdict, check_established, ports_back_per_s, scan_port, syn_at_peer, twsk_unique,
};
use super::version::KernelVersion;
use crate::model::RuleId;
use crate::sysctl::{NetSysctls, PortRange, ReservedPorts, TwReuse};
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn new(addr: &str, reuseaddr: bool, reuseport: bool) -> NewSocket {
    NewSocket {
        ip: ip(addr),
        v6only: false,
        reuseaddr,
        reuseport,
        uid: 1000,
        cap_net_bind_service: false,
    }
}

fn held(addr: &str, kind: HolderKind, reuseaddr: bool, reuseport: bool) -> PortHolder {
    let a = ip(addr);
    PortHolder {
        claims: Claims::of(a, v6only_after_bind(a, false)),
        reuseaddr,
        reuseport,
        uid: 1000,
        kind,
        v4_mapped_any: super::addr::is_v4_mapped_any(a),
    }
}

fn sys() -> NetSysctls {
    NetSysctls {
        timestamps: true,
        tw_reuse: TwReuse::LoopbackOnly,
        tw_reuse_delay_ms: Some(1000),
        port_range: PortRange {
            low: 40000,
            high: 40001,
        },
        reserved_ports: ReservedPorts::default(),
        max_tw_buckets: 4096,
        fin_timeout_s: Some(60),
        rfc1337: Some(false),
        bindv6only: Some(false),
        unprivileged_port_start: Some(1024),
        autobind_reuse: Some(false),
    }
}

/// The reuse sysctls of `s` on a 6.18 kernel, whatever the host runs.
fn reuse(s: &NetSysctls) -> ReuseSysctls {
    ReuseSysctls {
        kernel: Some(KernelVersion::new(6, 18)),
        ..ReuseSysctls::from(s)
    }
}

fn tw(age_ms: u32, loopback: bool) -> TimeWaitFacts {
    TimeWaitFacts {
        fin_wait2: false,
        age_ms,
        loopback,
    }
}

fn bind_rule(v: PortVerdict) -> RuleId {
    match v {
        PortVerdict::Free => RuleId::BindFree,
        PortVerdict::Shared(s) => s.rule(),
        PortVerdict::Conflict { .. } => RuleId::BindConflict,
    }
}

fn scan_rule(p: ScanPort) -> RuleId {
    match p {
        ScanPort::Tuple(TupleVerdict::Free) => RuleId::EphemeralOtherPort,
        ScanPort::Tuple(TupleVerdict::TakeOver { .. }) => RuleId::EphemeralTwReuse,
        _ => RuleId::EphemeralExhausted,
    }
}

/// One row per rule: the situation, and the rule the layer names.
#[test]
fn every_rule_has_a_row() {
    let s = sys();
    let r = reuse(&s);
    let lo_tw = || OnTuple::TimeWait(tw(5000, true));
    let rows: Vec<(RuleId, &str, RuleId)> = vec![
        (
            RuleId::BindConflict,
            "a listener holds 0.0.0.0:P; bind 127.0.0.1:P with SO_REUSEADDR",
            bind_rule(bind_port(
                &new("127.0.0.1", true, false),
                &[held("0.0.0.0", HolderKind::Listen, true, false)],
            )),
        ),
        (
            RuleId::BindReuseaddr,
            "a TIME_WAIT with SO_REUSEADDR; new socket with SO_REUSEADDR",
            bind_rule(bind_port(
                &new("127.0.0.1", true, false),
                &[held("127.0.0.1", HolderKind::TimeWait, true, false)],
            )),
        ),
        (
            RuleId::BindReuseport,
            "a SO_REUSEPORT listener of the same uid; new socket with SO_REUSEPORT",
            bind_rule(bind_port(
                &new("0.0.0.0", false, true),
                &[held("0.0.0.0", HolderKind::Listen, false, true)],
            )),
        ),
        (
            RuleId::BindFree,
            "nothing on the port",
            bind_rule(bind_port(&new("127.0.0.1", false, false), &[])),
        ),
        (
            RuleId::BindDisjoint,
            "127.0.0.2:P beside 127.0.0.1:P",
            bind_rule(bind_port(
                &new("127.0.0.2", false, false),
                &[held("127.0.0.1", HolderKind::Listen, false, false)],
            )),
        ),
        (
            RuleId::BindMappedOnV6only,
            "::ffff:127.0.0.1 on a V6ONLY socket",
            precheck(
                &NewSocket {
                    v6only: true,
                    ..new("::ffff:127.0.0.1", false, false)
                },
                8080,
                &s,
            )
            .unwrap()
            .rule,
        ),
        (
            RuleId::BindPrivileged,
            "port 80 without CAP_NET_BIND_SERVICE",
            precheck(&new("127.0.0.1", false, false), 80, &s)
                .unwrap()
                .rule,
        ),
        (
            RuleId::BindAutoFree,
            "bind(ip, 0) with a free port",
            autobind(&new("127.0.0.1", false, false), &s, |_| Vec::new()).rule(),
        ),
        (
            RuleId::BindAutoShared,
            "bind(ip, 0), range full of SO_REUSEADDR bound sockets, ip_autobind_reuse=1",
            autobind(
                &new("127.0.0.1", true, false),
                &NetSysctls {
                    autobind_reuse: Some(true),
                    ..sys()
                },
                |_| vec![held("127.0.0.1", HolderKind::Bound, true, false)],
            )
            .rule(),
        ),
        (
            RuleId::BindAutoExhausted,
            "bind(ip, 0), range full, ip_autobind_reuse=0",
            autobind(&new("127.0.0.1", true, false), &s, |_| {
                vec![held("127.0.0.1", HolderKind::Bound, true, false)]
            })
            .rule(),
        ),
        (
            RuleId::TupleBusy,
            "a bound port; an ESTABLISHED socket on the 4-tuple",
            check_established([OnTuple::Full], PortOrigin::Bound, &r).bound_rule(),
        ),
        (
            RuleId::TwTakeoverTimestamps,
            "a bound port; a TIME_WAIT on the 4-tuple; timestamps on",
            check_established([lo_tw()], PortOrigin::Bound, &r).bound_rule(),
        ),
        (
            RuleId::TwNoTimestamps,
            "a bound port; a TIME_WAIT on the 4-tuple; timestamps off",
            check_established(
                [lo_tw()],
                PortOrigin::Bound,
                &ReuseSysctls {
                    timestamps: false,
                    ..r
                },
            )
            .bound_rule(),
        ),
        (
            RuleId::EphemeralOtherPort,
            "a kernel-chosen port with nothing on its 4-tuple",
            scan_rule(scan_port(false, false, [], &r)),
        ),
        (
            RuleId::EphemeralTwReuse,
            "a kernel-chosen port; a loopback TIME_WAIT 5 s old; tw_reuse=2",
            scan_rule(scan_port(false, false, [lo_tw()], &r)),
        ),
        (
            RuleId::EphemeralExhausted,
            "a kernel-chosen port in a bucket that bind() made",
            scan_rule(scan_port(false, true, [], &r)),
        ),
        (
            RuleId::SynIntoTimeWait,
            "the client end is gone; the server holds TIME_WAIT",
            syn_at_peer(PeerEnd::TimeWait),
        ),
        (
            RuleId::TupleFree,
            "both ends gone",
            check_established([], PortOrigin::Bound, &r).bound_rule(),
        ),
        (
            RuleId::ChallengeAckThenRetry,
            "the client end is gone; the server is still CLOSE_WAIT",
            syn_at_peer(PeerEnd::Full),
        ),
    ];
    for (want, situation, got) in &rows {
        assert_eq!(got, want, "{situation}");
    }
    let covered: Vec<RuleId> = rows.iter().map(|r| r.0).collect();
    for rule in RuleId::ALL {
        assert!(covered.contains(&rule), "no row for {rule}");
    }
}

// Dual-stack: `::` without V6ONLY meets 0.0.0.0 and 127.0.0.1; with V6ONLY
// it meets neither; v4-mapped is IPv4; a specific IPv6 address is V6ONLY.
#[test]
fn address_overlap() {
    let c = |a: &str, v6only| Claims::of(ip(a), v6only_after_bind(ip(a), v6only));
    assert!(c("::", false).overlap(c("0.0.0.0", false)));
    assert!(c("::", false).overlap(c("127.0.0.1", false)));
    assert!(!c("::", true).overlap(c("0.0.0.0", false)));
    assert!(c("::", true).overlap(c("::1", false)));
    assert!(c("::ffff:127.0.0.1", false).overlap(c("127.0.0.1", false)));
    assert!(c("::ffff:0.0.0.0", false).overlap(c("127.0.0.2", false)));
    assert!(!c("::1", false).overlap(c("0.0.0.0", false)));
    assert!(!c("127.0.0.1", false).overlap(c("127.0.0.2", false)));
    // A dual-stack `::` that connected to ::1 keeps sk_ipv6only = 0 and
    // inet_rcv_saddr = LOOPBACK4_IPV6, which an IPv4 wildcard meets.
    let connected = Claims::of(ip("::1"), false);
    assert!(connected.overlap(c("0.0.0.0", false)));
    assert!(connected.overlap(Claims::of(IpAddr::V4(LOOPBACK4_IPV6), false)));
    assert!(c("::", false).dual_stack_any() && !c("::", true).dual_stack_any());
}

// inet_bind_conflict(): each branch.
#[test]
fn conflict_branches() {
    let tw = held("127.0.0.1", HolderKind::TimeWait, true, true);
    let other_uid = |mut h: PortHolder| {
        h.uid = 0;
        h
    };
    // SO_REUSEADDR never shares with a listener, SO_REUSEPORT does.
    let l = held("127.0.0.1", HolderKind::Listen, true, false);
    assert_eq!(
        conflict(&new("127.0.0.1", true, false), &l, Check::Bind),
        Err(Refusal::HolderListens)
    );
    // SO_REUSEPORT needs the same uid, unless the holder is TIME_WAIT.
    let lp = other_uid(held("127.0.0.1", HolderKind::Listen, false, true));
    assert_eq!(
        conflict(&new("127.0.0.1", false, true), &lp, Check::Bind),
        Err(Refusal::OtherUid)
    );
    assert_eq!(
        conflict(&new("127.0.0.1", false, true), &other_uid(tw), Check::Bind),
        Ok(Share::Reuseport)
    );
    // bind(ip, 0)'s first pass: any overlap conflicts.
    assert_eq!(
        conflict(&new("127.0.0.1", true, true), &tw, Check::AutobindStrict),
        Err(Refusal::AutobindStrict)
    );
    // Relaxed: SO_REUSEADDR on both shares, unless SO_REUSEPORT on both
    // with the same uid (or TIME_WAIT) would: reuseaddr_ports_exhausted.c.
    assert_eq!(
        conflict(&new("127.0.0.1", true, true), &tw, Check::AutobindRelaxed),
        Err(Refusal::AutobindRelaxed)
    );
    let b = held("127.0.0.1", HolderKind::Bound, true, true);
    assert_eq!(
        conflict(
            &new("127.0.0.1", true, true),
            &other_uid(b),
            Check::AutobindRelaxed
        ),
        Ok(Share::Reuseaddr)
    );
    assert_eq!(
        conflict(&new("127.0.0.1", true, false), &b, Check::AutobindRelaxed),
        Ok(Share::Reuseaddr)
    );
}

// Privileged ports: below the sysctl, without the capability; never port 0.
#[test]
fn privileged_ports() {
    let s = sys();
    let user = new("127.0.0.1", false, false);
    assert!(precheck(&user, 1023, &s).is_some());
    assert!(precheck(&user, 1024, &s).is_none());
    assert!(precheck(&user, 0, &s).is_none());
    let root = NewSocket {
        cap_net_bind_service: true,
        ..user
    };
    assert!(precheck(&root, 80, &s).is_none());
    let open = NetSysctls {
        unprivileged_port_start: Some(0),
        ..sys()
    };
    assert!(precheck(&user, 80, &open).is_none());
}

// bind(ip, 0): reserved ports are never picked; a port held only on
// another address is free.
#[test]
fn autobind_scan() {
    let s = NetSysctls {
        reserved_ports: ReservedPorts::parse("40000").unwrap(),
        ..sys()
    };
    let other = |_| vec![held("127.0.0.2", HolderKind::Bound, false, false)];
    assert_eq!(
        autobind(&new("127.0.0.1", false, false), &s, other),
        Autobind::Free {
            port: 40001,
            free_ports: 1
        }
    );
    let full = |p: u16| {
        if p == 40001 {
            vec![held("127.0.0.1", HolderKind::Bound, false, false)]
        } else {
            Vec::new()
        }
    };
    assert_eq!(
        autobind(&new("127.0.0.1", false, false), &s, full),
        Autobind::Exhausted
    );
}

// tcp_twsk_unique(): bound ports need only timestamps; chosen ports need
// tw_reuse (2: loopback), no FIN_WAIT2 substate, and the delay.
#[test]
fn twsk_unique_branches() {
    let r = reuse(&sys());
    let chosen = |t: TimeWaitFacts, r: &ReuseSysctls| twsk_unique(&t, PortOrigin::Chosen, r);
    assert!(twsk_unique(&tw(0, false), PortOrigin::Bound, &r).reuses());
    assert!(chosen(tw(1001, true), &r).reuses());
    assert!(matches!(
        chosen(tw(5000, false), &r),
        TwVerdict::Refuse {
            why: TwRefusal::NotLoopback,
            ..
        }
    ));
    assert!(matches!(
        chosen(
            TimeWaitFacts {
                fin_wait2: true,
                ..tw(5000, true)
            },
            &r
        ),
        TwVerdict::Refuse {
            why: TwRefusal::FinWait2,
            ..
        }
    ));
    match chosen(tw(400, true), &r) {
        TwVerdict::Refuse {
            why: TwRefusal::TooYoung,
            reusable_in_ms,
            ..
        } => assert_eq!(reusable_in_ms, Some(601)),
        v => panic!("expected too young, got {v:?}"),
    }
    // Before 6.14: the seconds clock ticks past the last segment's second
    // 0 to 1 s after it: surely reused after 1 s, borderline before.
    let old = ReuseSysctls {
        tw_reuse_delay_ms: None,
        kernel: Some(KernelVersion::new(6, 1)),
        ..r
    };
    assert!(matches!(
        chosen(tw(1100, true), &old),
        TwVerdict::Reuse { borderline: false }
    ));
    assert!(matches!(
        chosen(tw(400, true), &old),
        TwVerdict::Refuse {
            why: TwRefusal::TooYoung,
            borderline: true,
            ..
        }
    ));
    assert!(matches!(
        chosen(tw(5, true), &old),
        TwVerdict::Refuse {
            borderline: false,
            ..
        }
    ));
    // Before 6.11 a FIN_WAIT2 substate is taken over like a TIME_WAIT.
    let fw2 = TimeWaitFacts {
        fin_wait2: true,
        ..tw(5000, true)
    };
    assert!(chosen(fw2, &old).reuses());
    assert!(
        !chosen(
            fw2,
            &ReuseSysctls {
                kernel: Some(KernelVersion::new(6, 11)),
                ..old
            }
        )
        .reuses()
    );
    // 6.14+: the millisecond test, borderline within BORDER_MS.
    assert!(matches!(
        chosen(tw(1000, true), &r),
        TwVerdict::Refuse {
            borderline: true,
            ..
        }
    ));
    assert!(matches!(
        chosen(tw(1100, true), &r),
        TwVerdict::Reuse { borderline: false }
    ));
}

// The sustainable rate: ports back every tcp_tw_reuse_delay where reuse
// applies, else every 60 s.
#[test]
fn ports_come_back() {
    let s = sys();
    let r = reuse(&s);
    assert_eq!(ports_back_per_s(100, true, &r), 100.0);
    assert!((ports_back_per_s(120, false, &r) - 2.0).abs() < 1e-9);
    let off = ReuseSysctls {
        tw_reuse: TwReuse::Off,
        ..r
    };
    assert!((ports_back_per_s(120, true, &off) - 2.0).abs() < 1e-9);
}

/// A socket on `::ffff:0.0.0.0` (the v4-mapped IPv4 wildcard) and a later
/// bind of `::ffff:127.0.0.1`: before bhash2 (6.1) `ipv6_rcv_saddr_equal()`
/// sees both as IPv4 addresses, one a wildcard, and they conflict; from
/// 6.1 to 6.8 the bhash2 checks never meet the two, and the bind
/// succeeds; 6.9's bhash2 fixes make them conflict again. A plain
/// `0.0.0.0` holder conflicts on every kernel.
#[test]
fn a_v4_mapped_wildcard_holder_is_missed_by_bhash2_from_6_1_to_6_8() {
    let mapped_any = held("::ffff:0.0.0.0", HolderKind::Listen, false, false);
    assert!(mapped_any.v4_mapped_any);
    let v4_any = held("0.0.0.0", HolderKind::Listen, false, false);
    let mapped = new("::ffff:127.0.0.1", false, false);
    let on = |old: &PortHolder, major, minor| {
        super::bind::conflict_on(
            &mapped,
            old,
            Check::Bind,
            Some(KernelVersion::new(major, minor)),
        )
    };
    assert_eq!(on(&mapped_any, 5, 15), Err(Refusal::NoReuseOnBoth));
    assert_eq!(on(&mapped_any, 6, 1), Ok(Share::Disjoint));
    assert_eq!(on(&mapped_any, 6, 8), Ok(Share::Disjoint));
    assert_eq!(on(&mapped_any, 6, 9), Err(Refusal::NoReuseOnBoth));
    assert_eq!(on(&mapped_any, 6, 18), Err(Refusal::NoReuseOnBoth));
    for v in [(5, 15), (6, 1), (6, 9)] {
        assert_eq!(on(&v4_any, v.0, v.1), Err(Refusal::NoReuseOnBoth), "{v:?}");
    }
    // Only a v4-mapped non-wildcard bind is missed: an IPv4 127.0.0.1 is
    // refused on 6.1 too.
    let plain = new("127.0.0.1", false, false);
    assert_eq!(
        super::bind::conflict_on(
            &plain,
            &mapped_any,
            Check::Bind,
            Some(KernelVersion::new(6, 1))
        ),
        Err(Refusal::NoReuseOnBoth)
    );
    // At the port: a 0.0.0.0 holder beside the ::ffff:0.0.0.0 one is
    // missed too on 6.1 to 6.8 (the wildcard check stops at the first
    // wildcard bucket), and refuses on 6.9.
    let both = [mapped_any, v4_any];
    let at = |major, minor| {
        super::bind::bind_port_on(&mapped, &both, Some(KernelVersion::new(major, minor)))
    };
    assert_eq!(at(6, 1), PortVerdict::Shared(Share::Disjoint));
    assert!(
        matches!(at(6, 9), PortVerdict::Conflict { index: 0, .. }),
        "{:?}",
        at(6, 9)
    );
    assert!(matches!(at(5, 15), PortVerdict::Conflict { .. }));
    // 0.0.0.0 bound first: met, and it refuses on 6.1 too.
    let other_order = [v4_any, mapped_any];
    assert!(matches!(
        super::bind::bind_port_on(&mapped, &other_order, Some(KernelVersion::new(6, 1))),
        PortVerdict::Conflict { index: 0, .. }
    ));
    // Without the ::ffff:0.0.0.0 holder, 0.0.0.0 refuses on 6.1 too.
    assert!(matches!(
        super::bind::bind_port_on(&mapped, &[v4_any], Some(KernelVersion::new(6, 1))),
        PortVerdict::Conflict { .. }
    ));
}
