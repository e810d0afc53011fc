//! The rule part on hand-written tables: no sockets, no namespace. Expected
//! values come from the kernel rules cited in each module.

use super::*;
use crate::diag::{SockEntry, TcpState, Timer, TimerKind};
use crate::model::RuleId;
use crate::outcome::Step;
use crate::socket::{Family, SocketOpts};
use crate::sysctl::NetSysctls;
use std::net::SocketAddr;

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn entry(state: TcpState, local: &str, peer: &str, tw_left_ms: Option<u32>) -> SockEntry {
    let local = a(local);
    SockEntry {
        family: Family::of(&local),
        state,
        local,
        peer: a(peer),
        timer: tw_left_ms.map(|ms| Timer {
            kind: TimerKind::Timewait,
            expires_ms: ms,
            retrans: 0,
        }),
        recv_q: 0,
        send_q: 0,
        uid: 0,
        inode: if tw_left_ms.is_some() { 0 } else { 1 },
        v6only: None,
        pid: None,
    }
}

fn tw(local: &str, peer: &str, left: u32) -> SockEntry {
    entry(TcpState::TimeWait, local, peer, Some(left))
}

fn listen(local: &str) -> SockEntry {
    let any = if local.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    entry(TcpState::Listen, local, any, None)
}

fn sys(range: &str, reserved: &str, tw_reuse: &str) -> NetSysctls {
    NetSysctls::from_lookup(|n| {
        Some(
            match n {
                "net.ipv4.tcp_timestamps" => "1",
                "net.ipv4.tcp_tw_reuse" => tw_reuse,
                "net.ipv4.ip_local_port_range" => range,
                "net.ipv4.ip_local_reserved_ports" => reserved,
                "net.ipv4.tcp_max_tw_buckets" => "262144",
                "net.ipv4.tcp_tw_reuse_delay" => "1000",
                "net.ipv6.bindv6only" => "0",
                _ => return None,
            }
            .to_string(),
        )
    })
    .unwrap()
}

fn default_sys() -> NetSysctls {
    sys("32768 60999", "", "2")
}

fn opts(reuseaddr: bool, reuseport: bool) -> SocketOpts {
    SocketOpts {
        reuseaddr,
        reuseport,
        ..Default::default()
    }
}

fn bind_q(addr: &str, o: SocketOpts) -> BindQuestion {
    BindQuestion {
        addr: a(addr),
        opts: o,
        v6only: false,
        uid: 0,
        cap_net_bind_service: true,
        asker: Default::default(),
    }
}

fn inuse() -> Expect {
    Expect::Fails {
        step: Step::Bind,
        errno: Errno::EADDRINUSE,
    }
}

#[test]
fn server_side_time_wait_blocks_a_plain_restart_and_needs_reuseaddr_on_both() {
    let t = Table::from_entries(vec![
        tw("127.0.0.1:8080", "127.0.0.1:40001", 41_300),
        tw("127.0.0.1:8080", "127.0.0.1:40003", 12_000),
    ]);
    let d = diagnose_bind(
        &bind_q("0.0.0.0:8080", opts(false, false)),
        &t,
        &default_sys(),
    );
    assert_eq!(d.expect, inuse());
    assert_eq!(d.rule, RuleId::BindConflict);
    assert_eq!(d.holders.len(), 2);
    assert!(d.holders.iter().all(|h| h.origin == Origin::Incoming));
    assert_eq!(d.fixes[0].fix, Fix::ReuseaddrOnBoth);
    // Every TIME_WAIT must be gone: the longest timer.
    assert_eq!(d.fixes[1].fix, Fix::Wait { ms: 41_300 });
    assert_eq!(d.blocking_wait_ms(), Some(41_300));
    // With SO_REUSEADDR it depends on the holders' hidden sk_reuse.
    let v = &d.variants[1];
    assert_eq!(v.opts, opts(true, false));
    assert!(matches!(&v.expect, Expect::Depends { ok_if, .. } if ok_if.contains("SO_REUSEADDR")));
}

#[test]
fn reuseaddr_never_shares_with_a_listener_reuseport_needs_the_same_uid() {
    let mut l = listen("0.0.0.0:9000");
    l.uid = 1000;
    let q = bind_q("127.0.0.1:9000", opts(true, false));
    assert_eq!(
        blocking(&q, &l, &ReuseKnown::Unknown, false),
        Blocking::Always
    );
    let mut q = bind_q("127.0.0.1:9000", opts(false, true));
    // Another uid: the full check refuses, unless the bucket's stale
    // SO_REUSEPORT fast path lets it skip the check (sk_reuseport_match()).
    assert!(
        matches!(blocking(&q, &l, &ReuseKnown::Unknown, false), Blocking::Unless { needs } if needs.contains("fast path")),
        "different uid"
    );
    q.uid = 1000;
    assert!(
        matches!(blocking(&q, &l, &ReuseKnown::Unknown, false), Blocking::Unless { needs } if needs.contains("SO_REUSEPORT"))
    );
}

#[test]
fn a_listen_port_in_the_range_taken_by_an_outgoing_time_wait_is_fixed_by_reserving_it() {
    let t = Table::from_entries(vec![tw("127.0.0.1:40000", "127.0.0.1:80", 30_000)]);
    let s = sys("40000 40009", "", "2");
    let d = diagnose_bind(&bind_q("0.0.0.0:40000", opts(false, false)), &t, &s);
    assert_eq!(d.expect, inuse());
    assert_eq!(d.holders[0].origin, Origin::Outgoing);
    assert_eq!(d.fixes[0].fix, Fix::ReservePort { port: 40000 });
    assert!(
        d.flags
            .iter()
            .any(|f| matches!(f, Flag::InEphemeralRange { port: 40000, .. }))
    );
    // Reserved: flagged as such, and reserving is no longer offered.
    let s = sys("40000 40009", "40000", "2");
    let d = diagnose_bind(&bind_q("0.0.0.0:40000", opts(false, false)), &t, &s);
    assert!(d.flags.contains(&Flag::Reserved { port: 40000 }));
    assert!(
        d.fixes
            .iter()
            .all(|f| !matches!(f.fix, Fix::ReservePort { .. }))
    );
}

#[test]
fn free_when_nothing_overlaps() {
    let t = Table::from_entries(vec![listen("127.0.0.2:7000")]);
    let d = diagnose_bind(
        &bind_q("127.0.0.1:7000", opts(false, false)),
        &t,
        &default_sys(),
    );
    assert_eq!(d.expect, Expect::Ok);
    assert_eq!(d.rule, RuleId::BindDisjoint);
    assert_eq!(d.holders[0].blocking, Blocking::NoOverlap);
}

fn connect_q(dst: &str, from: Option<&str>, bind_no_port: bool) -> ConnectQuestion {
    ConnectQuestion {
        dst: a(dst),
        from: from.map(a),
        bind_no_port,
        opts: SocketOpts::default(),
        uid: 0,
        cap_net_bind_service: true,
    }
}

#[test]
fn listeners_filling_the_range_leave_connect_no_port() {
    let t = Table::from_entries(
        (40000..=40003)
            .map(|p| listen(&format!("127.0.0.1:{p}")))
            .collect(),
    );
    let s = sys("40000 40003", "", "2");
    let d = diagnose_connect(&connect_q("127.0.0.1:5000", None, false), &t, &s);
    let c = d.capacity.as_ref().unwrap();
    assert_eq!((c.bind_owned, c.usable), (4, 0));
    assert_eq!(d.rule, RuleId::EphemeralExhausted);
    assert_eq!(
        d.expect,
        Expect::Fails {
            step: Step::Connect,
            errno: Errno::EADDRNOTAVAIL
        }
    );
    assert_eq!(d.fixes[0].fix, Fix::MoveBoundOutOfRange);
    // One reserved port: three bind-owned, still none usable.
    let s = sys("40000 40003", "40003", "2");
    let c = diagnose_connect(&connect_q("127.0.0.1:5000", None, false), &t, &s)
        .capacity
        .unwrap();
    assert_eq!((c.reserved, c.bind_owned, c.usable), (1, 3, 0));
}

#[test]
fn held_connections_fill_the_ports_to_one_peer_only() {
    let t = Table::from_entries(
        (40000..=40003)
            .map(|p| {
                entry(
                    TcpState::Established,
                    &format!("127.0.0.1:{p}"),
                    "127.0.0.1:5000",
                    None,
                )
            })
            .collect(),
    );
    let s = sys("40000 40003", "", "2");
    let d = diagnose_connect(&connect_q("127.0.0.1:5000", None, false), &t, &s);
    let c = d.capacity.as_ref().unwrap();
    assert_eq!((c.tuple_busy, c.usable), (4, 0));
    assert_eq!(d.fixes[0].fix, Fix::MoreSourceAddresses);
    // Another destination port: every 4-tuple is free — if those ports
    // came from connect(); a port bind(ip, 0) gave is skipped for every
    // destination, and sock_diag cannot tell which: it depends.
    let d = diagnose_connect(&connect_q("127.0.0.1:5001", None, false), &t, &s);
    let c = d.capacity.as_ref().unwrap();
    assert_eq!((c.usable, c.surely_usable), (4, 0));
    assert!(
        matches!(&d.expect, Expect::Depends { step: Step::Connect, ok_if, .. } if ok_if.contains("bind(ip, 0)")),
        "{:?}",
        d.expect
    );
    // One port with no socket at all: surely usable.
    let s = sys("40000 40004", "", "2");
    let d = diagnose_connect(&connect_q("127.0.0.1:5001", None, false), &t, &s);
    assert_eq!(d.capacity.as_ref().unwrap().surely_usable, 1);
    assert_eq!(d.expect, Expect::Ok);
}

#[test]
fn time_wait_reuse_follows_tcp_twsk_unique() {
    let old = tw("127.0.0.1:40000", "127.0.0.1:5000", 50_000); // 10 s old
    let young = tw("127.0.0.1:40000", "127.0.0.1:5000", 59_500); // 0.5 s old
    let far = tw("10.0.0.1:40000", "10.0.0.2:5000", 50_000);
    assert!(time_wait_reusable(&old, &sys("1 2", "", "2")));
    assert!(
        !time_wait_reusable(&young, &sys("1 2", "", "2")),
        "tcp_tw_reuse_delay"
    );
    assert!(!time_wait_reusable(&old, &sys("1 2", "", "0")));
    assert!(
        !time_wait_reusable(&far, &sys("1 2", "", "2")),
        "2 = loopback only"
    );
    assert!(time_wait_reusable(&far, &sys("1 2", "", "1")));
    // One young TIME_WAIT on the only port: retry after the rest of the
    // delay (1000 ms − 500 ms age, +1 for the strict comparison).
    let t = Table::from_entries(vec![young]);
    let d = diagnose_connect(
        &connect_q("127.0.0.1:5000", None, false),
        &t,
        &sys("40000 40000", "", "2"),
    );
    assert_eq!(
        d.expect,
        Expect::Fails {
            step: Step::Connect,
            errno: Errno::EADDRNOTAVAIL
        }
    );
    assert_eq!(d.fixes[0].fix, Fix::RetryAfter { ms: 501 });
    let d = diagnose_connect(
        &connect_q("127.0.0.1:5000", None, false),
        &t,
        &sys("40000 40000", "", "0"),
    );
    assert_eq!(d.fixes[0].fix, Fix::TwReuse);
}

#[test]
fn bind_ip_zero_takes_a_port_per_socket_bind_no_port_per_tuple() {
    // Connections to 127.0.0.1:5000 from every port of a 4-port range.
    let t = Table::from_entries(
        (40000..=40003)
            .map(|p| {
                entry(
                    TcpState::Established,
                    &format!("127.0.0.1:{p}"),
                    "127.0.0.1:5000",
                    None,
                )
            })
            .collect(),
    );
    let s = sys("40000 40003", "", "2");
    let d = diagnose_connect(
        &connect_q("127.0.0.1:5001", Some("127.0.0.1:0"), false),
        &t,
        &s,
    );
    assert_eq!(d.rule, RuleId::BindAutoExhausted);
    assert_eq!(d.expect, inuse());
    assert_eq!(d.fixes[0].fix, Fix::BindAddressNoPort);
    let d = diagnose_connect(
        &connect_q("127.0.0.1:5001", Some("127.0.0.1:0"), true),
        &t,
        &s,
    );
    assert_eq!(d.rule, RuleId::EphemeralOtherPort);
    assert_eq!(d.capacity.unwrap().usable, 4);
}

#[test]
fn a_bound_port_takes_a_time_wait_over_only_with_timestamps() {
    let t = Table::from_entries(vec![tw("127.0.0.1:40000", "127.0.0.1:5000", 50_000)]);
    let mut q = connect_q("127.0.0.1:5000", Some("127.0.0.1:40000"), false);
    q.opts.reuseaddr = true;
    // bind() depends on the TIME_WAIT's hidden sk_reuse; if it passes,
    // tcp_twsk_unique() (twp = NULL) takes the TIME_WAIT over.
    let d = diagnose_connect(&q, &t, &default_sys());
    assert!(matches!(
        d.expect,
        Expect::Depends {
            step: Step::Bind,
            ..
        }
    ));
    assert_eq!(d.rule, RuleId::BindConflict);
    assert!(d.explanation.contains("tcp_twsk_unique"));
    // The client's own fixed port: SO_REUSEADDR on both first, then let
    // connect() choose — never the listener fixes (reserve the port).
    assert_eq!(d.fixes[0].fix, Fix::ReuseaddrForFixedPort);
    assert!(d.fixes.iter().any(|f| f.fix == Fix::LetConnectChoose));
    assert!(
        d.fixes
            .iter()
            .all(|f| !matches!(f.fix, Fix::ReservePort { .. } | Fix::PortOutsideRange))
    );
    // Without timestamps the 4-tuple refuses it even if bind() passes:
    // bind() fails unless the TIME_WAIT has SO_REUSEADDR, and connect()
    // fails after it anyway.
    let mut s = default_sys();
    s.timestamps = false;
    let d = diagnose_connect(&q, &t, &s);
    assert_eq!(d.rule, RuleId::BindConflict);
    assert!(
        matches!(
            &d.expect,
            Expect::Depends {
                step: Step::Bind,
                errno: Errno::EADDRINUSE,
                then: Some(Failure {
                    step: Step::Connect,
                    errno: Errno::EADDRNOTAVAIL,
                    maybe: false
                }),
                ..
            }
        ),
        "{:?}",
        d.expect
    );
    // A plain socket: bind() fails first, whatever the holder has.
    q.opts.reuseaddr = false;
    let d = diagnose_connect(&q, &t, &default_sys());
    assert_eq!(d.expect, inuse());
    // A full socket on the 4-tuple from a free port (nothing else bound).
    let t = Table::from_entries(vec![entry(
        TcpState::Established,
        "127.0.0.2:40000",
        "127.0.0.1:5000",
        None,
    )]);
    let d = diagnose_connect(
        &connect_q("127.0.0.1:5000", Some("127.0.0.1:40000"), false),
        &t,
        &default_sys(),
    );
    assert_eq!(
        d.rule,
        RuleId::TupleFree,
        "another source address: another 4-tuple"
    );
}

#[test]
fn self_connect_is_flagged() {
    let t = Table::from_entries(vec![entry(
        TcpState::Established,
        "127.0.0.1:40001",
        "127.0.0.1:40001",
        None,
    )]);
    let s = sys("40000 40003", "", "2");
    let d = diagnose_port(40001, &t, &s, 0);
    assert!(d.flags.contains(&Flag::SelfConnected {
        addr: a("127.0.0.1:40001")
    }));
    assert!(d.holders[0].self_connected);
    let d = diagnose_connect(
        &connect_q("127.0.0.1:40002", None, false),
        &Table::default(),
        &s,
    );
    assert!(d.flags.contains(&Flag::SelfConnectRisk {
        dst: a("127.0.0.1:40002")
    }));
}

#[test]
fn try_results_are_compared_with_the_prediction() {
    use super::live::agreement;
    assert_eq!(agreement(&inuse(), Some("EADDRINUSE")), Agreement::Agrees);
    assert_eq!(agreement(&inuse(), None), Agreement::Mismatch);
    assert_eq!(
        agreement(&Expect::Ok, Some("EADDRINUSE")),
        Agreement::Mismatch
    );
    let dep = Expect::Depends {
        step: Step::Bind,
        errno: Errno::EADDRINUSE,
        ok_if: "x".into(),
        then: None,
    };
    assert_eq!(agreement(&dep, None), Agreement::Resolves);
    assert_eq!(agreement(&dep, Some("EADDRINUSE")), Agreement::Resolves);
    assert_eq!(agreement(&dep, Some("EACCES")), Agreement::Mismatch);
}

/// Before 6.5 sock_diag does not dump bound-only sockets (idiag_states bit
/// 13, TCP_BOUND_INACTIVE): on such a table a predicted success can be
/// overturned by a socket nobody can see, so it is a "depends" naming the
/// call that would fail (bind() with EADDRINUSE from the bucket rules,
/// connect() with EADDRNOTAVAIL from __inet_hash_connect()); a failure the
/// table shows stays sure.
fn seen_table() -> Table {
    Table::from_entries(vec![listen("127.0.0.1:8080")])
}

#[test]
fn a_table_blind_to_bound_only_sockets_makes_success_depend_on_them() {
    let unseen = |d: &Diagnosis, step: Step, errno: Errno| match &d.expect {
        Expect::Depends {
            step: s,
            errno: e,
            ok_if,
            then: None,
        } => *s == step && *e == errno && ok_if.contains("only bound"),
        _ => false,
    };
    let mut blind = Table::from_entries(vec![listen("127.0.0.1:8080")]);
    blind.bound_only_hidden = true;
    let sys = sys("40000 40009", "", "0");
    // A free port: bind() depends on an unseen bound-only socket.
    let d = diagnose_bind(&bind_q("127.0.0.1:9090", opts(false, false)), &blind, &sys);
    assert!(unseen(&d, Step::Bind, Errno::EADDRINUSE), "{:?}", d.expect);
    // The listener's port: refused whatever else holds it.
    let d = diagnose_bind(&bind_q("127.0.0.1:8080", opts(false, false)), &blind, &sys);
    assert_eq!(d.expect, inuse());
    // A kernel-chosen port toward a listener: ten empty-looking ports,
    // none sure.
    let d = diagnose_connect(&connect_q("127.0.0.1:8080", None, false), &blind, &sys);
    assert!(
        unseen(&d, Step::Connect, Errno::EADDRNOTAVAIL),
        "{:?}",
        d.expect
    );
    assert_eq!(d.capacity.as_ref().unwrap().usable, 10);
    // A fixed port: its bind() depends.
    let d = diagnose_connect(
        &connect_q("127.0.0.1:8080", Some("127.0.0.1:7000"), false),
        &blind,
        &sys,
    );
    assert!(unseen(&d, Step::Bind, Errno::EADDRINUSE), "{:?}", d.expect);
    // ss --summary's count toward a new peer: the same.
    let mut u = range_use(&[listen("127.0.0.1:8080")], &sys, 5);
    assert_eq!(u.expect_new_peer(), Expect::Ok);
    u.bound_only_hidden = true;
    let d = Diagnosis {
        expect: u.expect_new_peer(),
        ..diagnose_bind(
            &bind_q("127.0.0.1:9090", opts(false, false)),
            &seen_table(),
            &sys,
        )
    };
    assert!(
        unseen(&d, Step::Connect, Errno::EADDRNOTAVAIL),
        "{:?}",
        d.expect
    );
    // The same table where bound-only sockets are dumped: sure.
    let seen = Table::from_entries(vec![listen("127.0.0.1:8080")]);
    let d = diagnose_connect(&connect_q("127.0.0.1:8080", None, false), &seen, &sys);
    assert_eq!(d.expect, Expect::Ok);
    let d = diagnose_bind(&bind_q("127.0.0.1:9090", opts(false, false)), &seen, &sys);
    assert_eq!(d.expect, Expect::Ok);
}
