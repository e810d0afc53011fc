//! The predictor over hand-made views: the facts it hands to the rule
//! layer, without a kernel.

use super::*;
use crate::scenario::file::SocketSpec;
use crate::socket::V6Only;
use crate::sysctl::{NetSysctls, PortRange, ReservedPorts, TwReuse};
use std::net::SocketAddr;

fn sys(low: u16, high: u16, autobind_reuse: bool) -> NetSysctls {
    NetSysctls {
        timestamps: true,
        tw_reuse: TwReuse::LoopbackOnly,
        tw_reuse_delay_ms: Some(1000),
        port_range: PortRange { low, high },
        reserved_ports: ReservedPorts::default(),
        max_tw_buckets: 4096,
        fin_timeout_s: Some(60),
        rfc1337: Some(false),
        bindv6only: Some(false),
        unprivileged_port_start: Some(1024),
        autobind_reuse: Some(autobind_reuse),
    }
}

fn spec(name: &str, address: &str, reuseaddr: bool, reuseport: bool, uid: u32) -> SocketSpec {
    SocketSpec {
        name: name.into(),
        address: address.into(),
        reuseaddr,
        reuseport,
        v6only: V6Only::System,
        linger: None,
        bind_address_no_port: false,
        uid: Some(uid),
        unprivileged: false,
        port_from: None,
    }
}

fn view(sockets: &[SocketSpec], sysctls: NetSysctls, cap: bool) -> ModelView {
    ModelView {
        sockets: sockets
            .iter()
            .map(|s| {
                let a: SocketAddr = crate::socket::parse_endpoint(&s.address).unwrap();
                SocketView::of_spec(s, a, false, 0)
            })
            .collect(),
        sysctls: Some(sysctls),
        bindv6only: false,
        cap_net_bind_service: cap,
    }
}

fn bound(v: &mut ModelView, i: usize, local: &str) {
    v.sockets[i].state = SockState::Bound;
    v.sockets[i].local = Some(local.parse().unwrap());
}

fn bind_of(v: &ModelView, name: &str) -> Prediction {
    let a = Action::Bind {
        socket: name.into(),
    };
    predict(v, v.index(name), &a).expect("a prediction")
}

fn listen_of(v: &ModelView, name: &str) -> Prediction {
    let a = Action::Listen {
        socket: name.into(),
        backlog: None,
    };
    predict(v, v.index(name), &a).expect("a prediction")
}

// reuseaddr_ports_exhausted.c: one port, ip_autobind_reuse = 1.
#[test]
fn bind_port_0_in_an_exhausted_range_follows_the_autobind_rules() {
    let cases = [
        // (reuseaddr, reuseport, uid) of fd0 and fd1, bind of fd1.
        ((false, false, 0), (true, false, 0), "EADDRINUSE"),
        ((true, false, 0), (true, false, 0), "ok"),
        ((true, true, 0), (true, true, 0), "EADDRINUSE"),
        ((true, true, 10), (true, true, 20), "ok"),
    ];
    for (a, b, want) in cases {
        let mut v = view(
            &[
                spec("fd0", "127.0.0.1:0", a.0, a.1, a.2),
                spec("fd1", "127.0.0.1:0", b.0, b.1, b.2),
            ],
            sys(32768, 32768, true),
            true,
        );
        let first = bind_of(&v, "fd0");
        assert_eq!(first.outcome, "ok");
        assert_eq!(first.rule, Some(RuleId::BindAutoFree));
        bound(&mut v, 0, "127.0.0.1:32768");
        let p = bind_of(&v, "fd1");
        assert_eq!(p.outcome, want, "{a:?} {b:?}: {}", p.why);
        let rule = if want == "ok" {
            RuleId::BindAutoShared
        } else {
            RuleId::BindAutoExhausted
        };
        assert_eq!(p.rule, Some(rule));
    }
    // Without ip_autobind_reuse nothing shares.
    let mut v = view(
        &[
            spec("fd0", "127.0.0.1:0", true, false, 0),
            spec("fd1", "127.0.0.1:0", true, false, 0),
        ],
        sys(32768, 32768, false),
        true,
    );
    bound(&mut v, 0, "127.0.0.1:32768");
    assert_eq!(bind_of(&v, "fd1").outcome, "EADDRINUSE");
}

// The listen() re-check looks at the other socket's state: of two
// SO_REUSEADDR sockets on one port only the first listens.
#[test]
fn listen_rechecks_against_the_other_sockets_state() {
    let mut v = view(
        &[
            spec("fd0", "127.0.0.1:0", true, false, 10),
            spec("fd1", "127.0.0.1:0", true, false, 20),
        ],
        sys(32768, 32768, true),
        true,
    );
    bound(&mut v, 0, "127.0.0.1:32768");
    bound(&mut v, 1, "127.0.0.1:32768");
    let p = listen_of(&v, "fd0");
    assert_eq!(
        (p.outcome.as_str(), p.rule),
        ("ok", Some(RuleId::BindReuseaddr))
    );
    v.sockets[0].state = SockState::Listening;
    let p = listen_of(&v, "fd1");
    assert_eq!(p.outcome, "EADDRINUSE");
    assert_eq!(p.rule, Some(RuleId::BindConflict));
    assert!(p.why.contains("fd0 listens"), "{}", p.why);
}

// bind_wildcard.c: `port_from` takes the port the first socket got, and
// the addresses decide (dual-stack `::` holds 0.0.0.0; ::1 does not).
#[test]
fn port_from_binds_are_judged_on_the_port_the_kernel_gave() {
    let mut specs = vec![
        spec("s0", "0.0.0.0:0", false, false, 0),
        spec("any6", "[::]:0", false, false, 0),
        spec("lo6", "[::1]:0", false, false, 0),
        spec("mapped", "[::ffff:0.0.0.0]:0", false, false, 0),
    ];
    for s in &mut specs[1..] {
        s.port_from = Some("s0".into());
    }
    let mut v = view(&specs, sys(40000, 40009, false), true);
    // Before s0 holds a port there is no address to judge.
    assert_eq!(
        predict(
            &v,
            Some(1),
            &Action::Bind {
                socket: "any6".into()
            }
        ),
        None
    );
    bound(&mut v, 0, "0.0.0.0:40003");
    assert_eq!(v.bind_addr(1), Some("[::]:40003".parse().unwrap()));
    assert_eq!(bind_of(&v, "any6").outcome, "EADDRINUSE");
    let lo6 = bind_of(&v, "lo6");
    assert_eq!(
        (lo6.outcome.as_str(), lo6.rule),
        ("ok", Some(RuleId::BindDisjoint))
    );
    assert_eq!(bind_of(&v, "mapped").outcome, "EADDRINUSE");
    // A V6ONLY socket on a v4-mapped address: EINVAL before any port.
    v.sockets[3].v6only = true;
    let p = bind_of(&v, "mapped");
    assert_eq!(
        (p.outcome.as_str(), p.rule),
        ("EINVAL", Some(RuleId::BindMappedOnV6only))
    );
}

#[test]
fn a_privileged_port_without_the_capability_is_eacces() {
    let v = view(
        &[spec("a", "127.0.0.1:80", false, false, 1000)],
        sys(40000, 40009, false),
        false,
    );
    let p = bind_of(&v, "a");
    assert_eq!(
        (p.outcome.as_str(), p.rule),
        ("EACCES", Some(RuleId::BindPrivileged))
    );
    let v = view(
        &[spec("a", "127.0.0.1:80", false, false, 0)],
        sys(40000, 40009, false),
        true,
    );
    assert_eq!(bind_of(&v, "a").outcome, "ok");
}

// Steps the layer has no rule for get no prediction; close() always
// returns 0.
#[test]
fn uncovered_steps_have_no_prediction() {
    let mut v = view(
        &[spec("a", "127.0.0.1:0", false, false, 0)],
        sys(40000, 40009, false),
        true,
    );
    bound(&mut v, 0, "127.0.0.1:40001");
    // A second bind() of a bound socket.
    assert_eq!(
        predict(&v, Some(0), &Action::Bind { socket: "a".into() }),
        None
    );
    let c = Action::Connect {
        socket: "a".into(),
        to: "127.0.0.1:1".into(),
    };
    assert_eq!(predict(&v, Some(0), &c), None);
    let close = predict(&v, Some(0), &Action::Close { socket: "a".into() }).unwrap();
    assert_eq!(close.outcome, "ok");
}
