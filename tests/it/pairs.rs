//! Two sockets on one port, on real sockets: each rule of the pair model
//! checked against the kernel with values written here (not taken from the
//! model), `--v6only` on `twlab server`, and the whole family at 0
//! mismatches.

use crate::common;

use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use twlab::model::pairs::{FirstState, PairAddr, PairCase, PairSocket, Uid};
use twlab::pairs::run_cell;
use twlab::socket::V6Only;

fn sock(addr: PairAddr, v6only: V6Only, reuseaddr: bool, reuseport: bool) -> PairSocket {
    PairSocket {
        addr,
        v6only,
        reuseaddr,
        reuseport,
        uid: Uid::Same,
    }
}

/// Run the cell for real; return (second bind, second listen, first
/// listen) as short names, and check the model agrees.
fn real(first: PairSocket, state: FirstState, second: PairSocket, bindv6only: bool) -> [String; 3] {
    let c = PairCase {
        first,
        state,
        second,
        bindv6only,
    };
    let r = run_cell(&c);
    let o = r.observed.as_ref().expect("cell ran");
    assert!(r.agrees(), "model disagrees: {r:?}");
    [
        o.second_bind.short(),
        o.second_listen.short(),
        o.first_listen.short(),
    ]
}

fn skip_unless_root(test: &str) -> bool {
    netns_or_skip(test)
}

use PairAddr::*;
use V6Only::{Off, On, System};

#[test]
fn dual_stack_any_holds_ipv4_unless_v6only() {
    if !skip_unless_root("dual_stack_any_holds_ipv4_unless_v6only") {
        return;
    }
    let plain = |a, v| sock(a, v, false, false);
    let l = FirstState::Listening;
    assert_eq!(
        real(plain(V6Any, System), l, plain(V4Any, System), false)[0],
        "EADDRINUSE"
    );
    assert_eq!(
        real(plain(V6Any, System), l, plain(V4Any, System), true)[0],
        "ok"
    );
    assert_eq!(
        real(plain(V6Any, On), l, plain(V4Loopback, System), false)[0],
        "ok"
    );
    assert_eq!(
        real(plain(V4Loopback, System), l, plain(V6Any, Off), true)[0],
        "EADDRINUSE"
    );
    assert_eq!(
        real(plain(V6Any, On), l, plain(V6Loopback, System), false)[0],
        "EADDRINUSE"
    );
    assert_eq!(
        real(plain(V4Any, System), l, plain(V6Loopback, System), false)[0],
        "ok"
    );
    assert_eq!(
        real(plain(V4Any, System), l, plain(V4Mapped, System), false)[0],
        "EADDRINUSE"
    );
    assert_eq!(
        real(plain(V4Any, System), l, plain(V4Mapped, System), true)[0],
        "EINVAL"
    );
}

#[test]
fn reuseaddr_shares_a_bound_port_and_listen_rechecks() {
    if !skip_unless_root("reuseaddr_shares_a_bound_port_and_listen_rechecks") {
        return;
    }
    let ra = |a| sock(a, System, true, false);
    assert_eq!(
        real(ra(V4Any), FirstState::Bound, ra(V4Loopback), false),
        ["ok", "ok", "EADDRINUSE"]
    );
    assert_eq!(
        real(ra(V4Any), FirstState::Listening, ra(V4Loopback), false)[0],
        "EADDRINUSE"
    );
    assert_eq!(
        real(ra(V4Any), FirstState::TimeWait, ra(V4Any), false)[0],
        "ok"
    );
    assert_eq!(
        real(ra(V4Any), FirstState::Connected, ra(V4Any), false)[0],
        "ok"
    );
    // Connected: the wildcard narrowed to 127.0.0.1, and a dual-stack ::
    // connected to ::1 still meets a later 0.0.0.0 (LOOPBACK4_IPV6).
    let plain = |a, v| sock(a, v, false, false);
    assert_eq!(
        real(
            plain(V4Any, System),
            FirstState::Connected,
            plain(V6Loopback, System),
            false
        )[0],
        "ok"
    );
    assert_eq!(
        real(
            plain(V6Any, Off),
            FirstState::Connected,
            plain(V4Any, System),
            false
        )[0],
        "EADDRINUSE"
    );
    assert_eq!(
        real(
            plain(V6Any, Off),
            FirstState::Connected,
            plain(V4Loopback, System),
            false
        )[0],
        "ok"
    );
}

#[test]
fn reuseport_checks_the_uid_except_for_timewait() {
    if !skip_unless_root("reuseport_checks_the_uid_except_for_timewait") {
        return;
    }
    let rp = |a| sock(a, System, false, true);
    let mut other = rp(V4Loopback);
    other.uid = Uid::Other;
    assert_eq!(
        real(rp(V4Loopback), FirstState::Listening, rp(V4Loopback), false),
        ["ok", "ok", "-"]
    );
    assert_eq!(
        real(rp(V4Loopback), FirstState::Listening, other, false)[0],
        "EADDRINUSE"
    );
    assert_eq!(
        real(rp(V4Loopback), FirstState::TimeWait, other, false)[0],
        "ok"
    );
}

#[test]
fn the_whole_family_agrees_with_the_model() {
    if !skip_unless_root("the_whole_family_agrees_with_the_model") {
        return;
    }
    let o = run(&["pairs"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let last = text.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("12544 cells"), "{last}");
    assert!(last.contains(" 0 mismatches, 0 errors"), "{text}");
    assert_eq!(o.status.code(), Some(0));
}

fn server(addr: &str, args: &[&str]) -> std::process::Child {
    Command::new(bin())
        .args(["server", "--listen", addr, "--idle-timeout", "30"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn twlab server")
}

netns_test! {
    /// A default `[::]` server is dual-stack: `0.0.0.0` on the same port fails.
    fn server_on_ipv6_any_is_dual_stack_by_default(sysctls = [("net.ipv6.bindv6only", "0")]) {
        let a: SocketAddr = "[::]:8080".parse().unwrap();
        let first = server("[::]:8080", &[]);
        wait_listening(a);
        let o = run(&["server", "--listen", "0.0.0.0:8080", "--idle-timeout", "1"]);
        let err = one_line_failure(&o);
        assert!(err.contains("EADDRINUSE"), "{err}");
        let out = stop_server(first);
        assert!(out.contains("[::]:8080 (dual-stack, none)"), "{out}");
    }
}

netns_test! {
    /// With `--v6only on` both servers start.
    fn server_with_v6only_on_leaves_ipv4_free() {
        let first = server("[::]:8081", &["--v6only", "on"]);
        wait_listening("[::]:8081".parse().unwrap());
        let second = server("0.0.0.0:8081", &[]);
        wait_listening("0.0.0.0:8081".parse().unwrap());
        let out = stop_server(first);
        stop_server(second);
        assert!(out.contains("(v6-only, none)"), "{out}");
    }
}

#[test]
fn reuseport_group_spreads_connections_and_drain_resets_the_queue() {
    use twlab::pairs::group::{GroupPlan, run as group};
    if !skip_unless_root("reuseport_group_spreads_connections_and_drain_resets_the_queue") {
        return;
    }
    let r = group(GroupPlan::new(4, 200)).unwrap();
    assert_eq!(r.per_listener.len(), 4);
    assert_eq!(r.per_listener.iter().sum::<usize>(), 200, "{r:?}");
    // (3/4)^200 ≈ 1e-25: every member of the group gets some.
    assert!(r.per_listener.iter().all(|n| *n > 0), "{r:?}");
    assert!(r.drain.is_none());

    // Drain: every connection queued in the closed listener is reset, and
    // its client sees ECONNRESET; the others are still accepted.
    let mut drain = GroupPlan::new(2, 60);
    drain.drain = true;
    let r = group(drain).unwrap();
    let d = r.drain.clone().expect("drain report");
    assert!(d.queued > 0, "{r:?}");
    assert_eq!(d.clients_reset, d.queued, "{r:?}");
    assert_eq!(d.accepted_by_others, 60 - d.queued, "{r:?}");

    // tcp_migrate_req=1: the queue moves to the other listener instead.
    let mut migrate = drain;
    migrate.migrate = true;
    let r = group(migrate).unwrap();
    let d = r.drain.clone().expect("drain report");
    assert!(d.queued > 0, "{r:?}");
    assert_eq!(d.clients_reset, 0, "{r:?}");
    assert_eq!(d.accepted_by_others, 60, "{r:?}");
}
