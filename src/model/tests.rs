//! Whole predictions for experiments, over hand-made socket tables.
//! Expected values come from the kernel rules cited in each test, not
//! from running anything.

use super::*;
use crate::diag::{SockEntry, TcpState, Timer, TimerKind, TupleView};
use crate::experiment::{ClientPort, Close, Experiment, NextStep, When};
use crate::socket::{Family, SocketOpts};

const C: &str = "127.0.0.1:23456";
const S: &str = "127.0.0.1:12345";

fn facts() -> KernelFacts {
    KernelFacts {
        release: "6.18.0".into(),
        timestamps: true,
        tw_reuse: TwReuse::LoopbackOnly,
        tw_reuse_delay_ms: Some(1000),
        port_range: PortRange {
            low: 32768,
            high: 60999,
        },
        max_tw_buckets: 131072,
    }
}

fn ra() -> SocketOpts {
    SocketOpts {
        reuseaddr: true,
        ..Default::default()
    }
}
fn rp() -> SocketOpts {
    SocketOpts {
        reuseport: true,
        ..Default::default()
    }
}

fn exp(close: Close, when: When, next: NextStep, port: ClientPort) -> Experiment {
    Experiment {
        family: Family::V4,
        server_port: 12345,
        client_port: port,
        listener: SocketOpts::default(),
        client: ra(),
        close,
        when,
        next,
        new_opts: ra(),
        until_free: None,
    }
}

/// A diag entry; `tw_left` gives a timewait timer (mini-socket).
fn entry(local: &str, peer: &str, state: TcpState, tw_left: Option<u32>) -> SockEntry {
    SockEntry {
        family: Family::V4,
        state,
        local: local.parse().unwrap(),
        peer: peer.parse().unwrap(),
        timer: tw_left.map(|ms| Timer {
            kind: TimerKind::Timewait,
            expires_ms: ms,
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
fn cli(state: TcpState, tw_left: Option<u32>) -> Option<SockEntry> {
    Some(entry(C, S, state, tw_left))
}
fn srv(state: TcpState, tw_left: Option<u32>) -> Option<SockEntry> {
    Some(entry(S, C, state, tw_left))
}
fn view(client: Option<SockEntry>, server: Option<SockEntry>) -> TupleView {
    TupleView { client, server }
}

fn predict(x: &Experiment, v: &TupleView, k: &KernelFacts) -> Prediction {
    predict_linux(&CellFacts {
        experiment: x,
        view: v,
        client_addr: C.parse().unwrap(),
        kernel: k,
    })
}
fn short(p: &Prediction) -> String {
    p.outcome.short()
}

// tcp_twsk_unique(), twp == NULL: bound port, TIME_WAIT with timestamps → takeover
// (twp == NULL), whatever tcp_tw_reuse is.
#[test]
fn fixed_port_time_wait_with_timestamps_is_taken_over_for_any_tw_reuse() {
    let x = exp(
        Close::CLIENT,
        When::AfterPeer,
        NextStep::Reconnect,
        ClientPort::Fixed(23456),
    );
    let v = view(cli(TcpState::TimeWait, Some(59_990)), None);
    for r in [TwReuse::Off, TwReuse::On, TwReuse::LoopbackOnly] {
        let k = KernelFacts {
            tw_reuse: r,
            ..facts()
        };
        let p = predict(&x, &v, &k);
        assert_eq!(short(&p), "ok", "{r:?}");
        assert_eq!(p.rule, RuleId::TwTakeoverTimestamps);
    }
}

// tcp_twsk_unique(): timestamps off → tw_ts_recent_stamp == 0 → no reuse.
#[test]
fn fixed_port_time_wait_without_timestamps_is_eaddrnotavail() {
    let x = exp(
        Close::CLIENT,
        When::AfterPeer,
        NextStep::Reconnect,
        ClientPort::Fixed(23456),
    );
    let v = view(cli(TcpState::TimeWait, Some(59_990)), None);
    let k = KernelFacts {
        timestamps: false,
        ..facts()
    };
    let p = predict(&x, &v, &k);
    assert_eq!(short(&p), "connect: EADDRNOTAVAIL");
    assert_eq!(p.rule, RuleId::TwNoTimestamps);
}

// Bind rule: TIME_WAIT keeps sk_reuse; both need SO_REUSEADDR.
#[test]
fn bind_needs_reuseaddr_on_both() {
    let v = view(cli(TcpState::TimeWait, Some(59_990)), None);
    for (old, new, want) in [
        (false, false, "bind: EADDRINUSE"),
        (true, false, "bind: EADDRINUSE"),
        (false, true, "bind: EADDRINUSE"),
        (true, true, "ok"),
    ] {
        let mut x = exp(
            Close::CLIENT,
            When::AfterPeer,
            NextStep::Rebind,
            ClientPort::Fixed(23456),
        );
        x.client.reuseaddr = old;
        x.new_opts.reuseaddr = new;
        assert_eq!(
            short(&predict(&x, &v, &facts())),
            want,
            "old {old} new {new}"
        );
    }
}

// Bind rule: SO_REUSEPORT on both shares the port even with a live
// (non-TIME_WAIT) holder of the same uid.
#[test]
fn reuseport_on_both_shares_even_a_live_port() {
    let mut x = exp(
        Close::SERVER,
        When::AtOnce,
        NextStep::Rebind,
        ClientPort::Fixed(23456),
    );
    x.client = rp();
    x.new_opts = rp();
    let v = view(
        cli(TcpState::CloseWait, None),
        srv(TcpState::FinWait2, Some(59_000)),
    );
    let p = predict(&x, &v, &facts());
    assert_eq!(short(&p), "ok");
    assert_eq!(p.rule, RuleId::BindReuseport);
    x.new_opts = SocketOpts::default();
    assert_eq!(short(&predict(&x, &v, &facts())), "bind: EADDRINUSE");
}

// Timing: CLOSE_WAIT (server closed first, client has not) → bind can
// pass with REUSEADDR, connect hits a full socket → EADDRNOTAVAIL.
#[test]
fn close_wait_blocks_the_tuple() {
    let x = exp(
        Close::SERVER,
        When::AtOnce,
        NextStep::Reconnect,
        ClientPort::Fixed(23456),
    );
    let v = view(
        cli(TcpState::CloseWait, None),
        srv(TcpState::FinWait2, Some(59_000)),
    );
    let p = predict(&x, &v, &facts());
    assert_eq!(short(&p), "connect: EADDRNOTAVAIL");
    assert_eq!(p.rule, RuleId::TupleBusy);
}

// Timing: LAST_ACK (the story's tight loop, when the client is faster than
// the server's close).
#[test]
fn last_ack_blocks_the_tuple() {
    let x = exp(
        Close::SERVER,
        When::AfterPeer,
        NextStep::Reconnect,
        ClientPort::Fixed(23456),
    );
    let v = view(
        cli(TcpState::LastAck, None),
        srv(TcpState::TimeWait, Some(59_000)),
    );
    assert_eq!(short(&predict(&x, &v, &facts())), "connect: EADDRNOTAVAIL");
}

// Timing: a full-socket FIN_WAIT2 (no timewait timer) blocks; an orphaned
// FIN_WAIT2 mini-socket is taken over by a bound port with timestamps
// (tcp_twsk_unique: reuse = 0 only matters when twp != NULL), but never
// for a kernel-chosen port.
#[test]
fn fin_wait2_full_socket_vs_mini_socket() {
    let x = exp(
        Close::CLIENT,
        When::AtOnce,
        NextStep::Reconnect,
        ClientPort::Fixed(23456),
    );
    let full = view(
        cli(TcpState::FinWait2, None),
        srv(TcpState::CloseWait, None),
    );
    assert_eq!(
        short(&predict(&x, &full, &facts())),
        "connect: EADDRNOTAVAIL"
    );
    let mini = view(
        cli(TcpState::FinWait2, Some(59_000)),
        srv(TcpState::CloseWait, None),
    );
    let p = predict(&x, &mini, &facts());
    assert_eq!(short(&p), "ok");
    assert_eq!(p.rule, RuleId::ChallengeAckThenRetry);
    let k = KernelFacts {
        timestamps: false,
        ..facts()
    };
    assert_eq!(short(&predict(&x, &mini, &k)), "connect: EADDRNOTAVAIL");

    let x = exp(
        Close::CLIENT,
        When::AtOnce,
        NextStep::Reconnect,
        ClientPort::Ephemeral,
    );
    let k = KernelFacts {
        tw_reuse: TwReuse::On,
        port_range: PortRange {
            low: 23456,
            high: 23456,
        },
        ..facts()
    };
    let p = predict(&x, &mini, &k);
    assert_eq!(short(&p), "connect: EADDRNOTAVAIL");
    assert_eq!(p.rule, RuleId::EphemeralExhausted);
    assert!(
        p.explanation.contains("Linux ≥ 6.11: "),
        "{}",
        p.explanation
    );

    // Before 6.11 (Debian 12's 6.1) tcp_twsk_unique() does not look at the
    // substate: the mini-socket goes on to the age test, whose age sock_diag
    // does not give for it (borderline).
    let k61 = KernelFacts {
        release: "6.1.0-57-cloud-amd64".into(),
        tw_reuse_delay_ms: None,
        ..k
    };
    let p = predict(&x, &mini, &k61);
    assert!(
        !p.explanation.contains("FIN_WAIT2 substate)"),
        "{}",
        p.explanation
    );
    assert!(p.borderline);
    let note = p.version_note.unwrap_or_default();
    assert!(note.contains("Linux < 6.11"), "{note}");
    assert!(note.contains("Linux < 6.14"), "{note}");
}

// Server closed first, after peer: client gone, server TIME_WAIT →
// SYN accepted into TIME_WAIT with or without timestamps.
#[test]
fn server_time_wait_accepts_a_new_syn() {
    let x = exp(
        Close::SERVER,
        When::AfterPeer,
        NextStep::Reconnect,
        ClientPort::Fixed(23456),
    );
    let v = view(None, srv(TcpState::TimeWait, Some(59_990)));
    for ts in [true, false] {
        let k = KernelFacts {
            timestamps: ts,
            ..facts()
        };
        let p = predict(&x, &v, &k);
        assert_eq!(short(&p), "ok");
        assert_eq!(p.rule, RuleId::SynIntoTimeWait);
    }
}

// Ephemeral with the full range: another port, always ok.
#[test]
fn ephemeral_with_a_wide_range_picks_another_port() {
    let x = exp(
        Close::CLIENT,
        When::AfterPeer,
        NextStep::Reconnect,
        ClientPort::Ephemeral,
    );
    let v = view(cli(TcpState::TimeWait, Some(59_990)), None);
    for r in [TwReuse::Off, TwReuse::On, TwReuse::LoopbackOnly] {
        let k = KernelFacts {
            tw_reuse: r,
            timestamps: false,
            ..facts()
        };
        assert_eq!(predict(&x, &v, &k).rule, RuleId::EphemeralOtherPort);
    }
}

// Ephemeral with the range narrowed to the one port: tcp_tw_reuse 0/1/2,
// the delay, and timestamps decide (tcp_twsk_unique with twp != NULL).
#[test]
fn ephemeral_one_port_tw_reuse_cases() {
    let x = exp(
        Close::CLIENT,
        When::AfterMs(1500),
        NextStep::Reconnect,
        ClientPort::BindNoPort,
    );
    let one = PortRange {
        low: 23456,
        high: 23456,
    };
    // TIME_WAIT 1500 ms old.
    let old = view(cli(TcpState::TimeWait, Some(58_500)), None);
    // TIME_WAIT 10 ms old.
    let young = view(cli(TcpState::TimeWait, Some(59_990)), None);
    let k = |r, ts| KernelFacts {
        tw_reuse: r,
        timestamps: ts,
        port_range: one,
        ..facts()
    };
    let cases = [
        (TwReuse::Off, true, &old, "connect: EADDRNOTAVAIL"),
        (TwReuse::On, true, &old, "ok"),
        (TwReuse::LoopbackOnly, true, &old, "ok"),
        (TwReuse::On, false, &old, "connect: EADDRNOTAVAIL"),
        (TwReuse::On, true, &young, "connect: EADDRNOTAVAIL"),
    ];
    for (r, ts, v, want) in cases {
        assert_eq!(short(&predict(&x, v, &k(r, ts))), want, "{r:?} ts {ts}");
    }
    // A shorter delay lets the young one go.
    let short_delay = KernelFacts {
        tw_reuse_delay_ms: Some(1),
        ..k(TwReuse::On, true)
    };
    assert_eq!(short(&predict(&x, &young, &short_delay)), "ok");
    // Without the sysctl (pre-6.14): 1 s on a seconds clock, with a note.
    let old_kernel = KernelFacts {
        tw_reuse_delay_ms: None,
        ..k(TwReuse::On, true)
    };
    let p = predict(&x, &old, &old_kernel);
    assert!(!p.borderline, "1.5 s is past the seconds clock's tick");
    assert!(p.version_note.unwrap().contains("tcp_tw_reuse_delay"));
}

// tcp_tw_reuse=2 is loopback only: a non-loopback TIME_WAIT is not reused.
#[test]
fn tw_reuse_2_is_loopback_only() {
    let x = exp(
        Close::CLIENT,
        When::AfterMs(1500),
        NextStep::Reconnect,
        ClientPort::Ephemeral,
    );
    let mut e = entry(
        "10.0.0.1:40000",
        "10.0.0.2:12345",
        TcpState::TimeWait,
        Some(58_000),
    );
    e.family = Family::V4;
    let v = view(Some(e), None);
    let k = KernelFacts {
        port_range: PortRange {
            low: 40000,
            high: 40000,
        },
        ..facts()
    };
    let p = predict_linux(&CellFacts {
        experiment: &x,
        view: &v,
        client_addr: "10.0.0.1:40000".parse().unwrap(),
        kernel: &k,
    });
    assert_eq!(p.outcome.short(), "connect: EADDRNOTAVAIL");
    let k1 = KernelFacts {
        tw_reuse: TwReuse::On,
        ..k
    };
    let p = predict_linux(&CellFacts {
        experiment: &x,
        view: &v,
        client_addr: "10.0.0.1:40000".parse().unwrap(),
        kernel: &k1,
    });
    assert_eq!(p.outcome.short(), "ok");
}

// tcp_max_tw_buckets = 0: no TIME_WAIT is created (inet_twsk_alloc
// returns NULL), the closer's entry is gone: nothing blocks.
#[test]
fn no_time_wait_buckets_means_nothing_blocks() {
    let mut x = exp(
        Close::CLIENT,
        When::AfterPeer,
        NextStep::Reconnect,
        ClientPort::Fixed(23456),
    );
    x.client = SocketOpts::default();
    x.new_opts = SocketOpts::default();
    let v = view(None, None);
    let k = KernelFacts {
        max_tw_buckets: 0,
        timestamps: false,
        ..facts()
    };
    let p = predict(&x, &v, &k);
    assert_eq!(short(&p), "ok");
    assert_eq!(p.rule, RuleId::TupleFree);
}

// RST close at once: the peer's descriptor is still open, its socket is
// out of the established hash but keeps an explicitly bound port.
#[test]
fn rst_peer_with_open_descriptor_keeps_a_bound_port() {
    let mut x = exp(
        Close::SERVER_RST,
        When::AtOnce,
        NextStep::Reconnect,
        ClientPort::Fixed(23456),
    );
    x.client = SocketOpts::default();
    let v = view(None, None);
    assert_eq!(short(&predict(&x, &v, &facts())), "bind: EADDRINUSE");
    x.client = ra();
    assert_eq!(short(&predict(&x, &v, &facts())), "ok");
    // A connect()-chosen port is released at TCP_CLOSE.
    let mut x = exp(
        Close::SERVER_RST,
        When::AtOnce,
        NextStep::Rebind,
        ClientPort::Ephemeral,
    );
    x.client = SocketOpts::default();
    x.new_opts = SocketOpts::default();
    assert_eq!(short(&predict(&x, &v, &facts())), "ok");
    // An accepted socket's bind lock is cleared by sk_clone_lock(), so
    // a reset child with an open descriptor does not keep the port.
    let mut x = exp(
        Close::CLIENT_RST,
        When::AtOnce,
        NextStep::RestartListener,
        ClientPort::Fixed(23456),
    );
    x.new_opts = SocketOpts::default();
    assert_eq!(short(&predict(&x, &v, &facts())), "ok");
    // After the peer closed too, nothing holds anything.
    let mut x = exp(
        Close::CLIENT_RST,
        When::AfterPeer,
        NextStep::RestartListener,
        ClientPort::Fixed(23456),
    );
    x.new_opts = SocketOpts::default();
    assert_eq!(short(&predict(&x, &v, &facts())), "ok");
}

// Restart-listener: accepted sockets carry the listener's SO_REUSEADDR.
#[test]
fn restart_listener_rules() {
    let v = view(None, srv(TcpState::TimeWait, Some(59_990)));
    for (old, new, want) in [
        (false, false, "bind: EADDRINUSE"),
        (false, true, "bind: EADDRINUSE"),
        (true, false, "bind: EADDRINUSE"),
        (true, true, "ok"),
    ] {
        let mut x = exp(
            Close::SERVER,
            When::AfterPeer,
            NextStep::RestartListener,
            ClientPort::Fixed(23456),
        );
        x.listener.reuseaddr = old;
        x.new_opts = SocketOpts {
            reuseaddr: new,
            ..Default::default()
        };
        assert_eq!(
            short(&predict(&x, &v, &facts())),
            want,
            "old {old} new {new}"
        );
    }
    // Client closed first, at once: the server's CLOSE_WAIT holds the port.
    let mut x = exp(
        Close::CLIENT,
        When::AtOnce,
        NextStep::RestartListener,
        ClientPort::Fixed(23456),
    );
    x.listener = ra();
    let v = view(
        cli(TcpState::FinWait2, Some(59_000)),
        srv(TcpState::CloseWait, None),
    );
    assert_eq!(short(&predict(&x, &v, &facts())), "ok");
    x.listener = SocketOpts::default();
    assert_eq!(short(&predict(&x, &v, &facts())), "bind: EADDRINUSE");
}

#[test]
fn other_systems_are_labelled_and_differ_where_documented() {
    let x = exp(
        Close::CLIENT,
        When::AfterPeer,
        NextStep::Reconnect,
        ClientPort::Fixed(23456),
    );
    let v = view(cli(TcpState::TimeWait, Some(59_990)), None);
    let cell = CellFacts {
        experiment: &x,
        view: &v,
        client_addr: C.parse().unwrap(),
        kernel: &facts(),
    };
    let w = predict_windows(&cell);
    assert_eq!(w.label, "documented, not run");
    assert_eq!(w.outcome.short(), "connect: WSAEADDRINUSE");
    assert_eq!(w.outcome.error().unwrap().code, 10048);
    let b = predict_bsd(&cell);
    assert_eq!(b.outcome.short(), "connect: EADDRINUSE");
    // No SO_REUSEPORT on Windows at all.
    let mut x = x.clone();
    x.new_opts = rp();
    let cell = CellFacts {
        experiment: &x,
        ..cell
    };
    assert_eq!(
        predict_windows(&cell).outcome.short(),
        "setsockopt: WSAENOPROTOOPT"
    );
}

// after-ack: the other end's descriptor is still open, as at once; an
// RST peer that keeps an explicitly bound port blocks a rebind.
#[test]
fn after_ack_keeps_the_peer_descriptor_open() {
    let mut x = exp(
        Close::SERVER_RST,
        When::AfterAck,
        NextStep::Rebind,
        ClientPort::Fixed(23456),
    );
    x.client = SocketOpts::default();
    let v = view(None, None);
    assert_eq!(short(&predict(&x, &v, &facts())), "bind: EADDRINUSE");
    x.when = When::AfterPeer;
    assert_eq!(short(&predict(&x, &v, &facts())), "ok");
}

#[test]
fn port_range_helpers() {
    let r = PortRange {
        low: 40000,
        high: 40000,
    };
    assert_eq!(r.len(), 1);
    assert!(r.is_only(40000));
    assert!(!PortRange { low: 1, high: 2 }.is_only(1));
    assert_eq!(TwReuse::from_sysctl("2"), Some(TwReuse::LoopbackOnly));
    assert_eq!(TwReuse::from_sysctl("3"), None);
}
