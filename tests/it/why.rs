//! `twlab why` on staged situations, each in its own namespace: the
//! holder, the rule, the top fix, and `--try` against the prediction.
//! Expected values come from the kernel rules (inet_bind_conflict(),
//! inet_csk_find_open_port(), __inet_hash_connect(),
//! __inet_check_established()), never from the output under test.

use crate::common;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;
use twlab::diag::{self, Query, TcpState};
use twlab::model::RuleId;
use twlab::outcome::Step;
use twlab::socket::SocketOpts;
use twlab::why::{
    Agreement, BindQuestion, ConnectQuestion, Diagnosis, Errno, Expect, Fix, Flag, Origin, Role,
    live,
};

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn opts(reuseaddr: bool) -> SocketOpts {
    SocketOpts {
        reuseaddr,
        ..Default::default()
    }
}

fn sock(reuseaddr: bool) -> Socket {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_reuse_address(reuseaddr).unwrap();
    s
}

fn listener(addr: &str, reuseaddr: bool) -> Socket {
    let s = sock(reuseaddr);
    s.bind(&SockAddr::from(a(addr))).unwrap();
    s.listen(64).unwrap();
    s
}

fn connect(dst: &str) -> Socket {
    let s = sock(false);
    s.connect(&SockAddr::from(a(dst))).unwrap();
    s
}

fn local_port(s: &Socket) -> u16 {
    s.local_addr().unwrap().as_socket().unwrap().port()
}

/// Wait until `n` sockets in `state` have local port `port`.
fn wait_for(state: TcpState, port: u16, n: usize) {
    common::wait_until(
        Duration::from_secs(5),
        &format!("{n} {state} on port {port}"),
        || {
            let t = diag::dump(&Query::default()).unwrap();
            (t.iter()
                .filter(|e| e.state == state && e.local.port() == port)
                .count()
                >= n)
                .then_some(())
        },
    );
}

/// One connection to a listener on 127.0.0.1:`port` (SO_REUSEADDR as
/// `reuseaddr` says), closed by the server first, and the listener gone:
/// the port is held by a server-side TIME_WAIT alone (waited for).
fn server_time_wait(port: u16, reuseaddr: bool) {
    let addr = format!("127.0.0.1:{port}");
    let l = listener(&addr, reuseaddr);
    close_one(&l, &addr, true);
    drop(l);
    wait_for(TcpState::TimeWait, port, 1);
}

/// One connection to `l` where the side `server_first` closes first; the
/// TIME_WAIT ends up on that side. Returns the client's port.
fn close_one(l: &Socket, dst: &str, server_first: bool) -> u16 {
    let c = connect(dst);
    let port = local_port(&c);
    let (acc, _) = l.accept().unwrap();
    let (first, second) = if server_first { (acc, c) } else { (c, acc) };
    drop(first);
    let mut second = second;
    let mut buf = [0u8; 1];
    assert_eq!(
        second.read(&mut buf).unwrap(),
        0,
        "EOF after the first close"
    );
    drop(second);
    port
}

fn bind_q(addr: &str, reuseaddr: bool) -> BindQuestion {
    BindQuestion {
        addr: a(addr),
        opts: opts(reuseaddr),
        v6only: false,
        uid: live::euid(),
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

fn notavail() -> Expect {
    Expect::Fails {
        step: Step::Connect,
        errno: Errno::EADDRNOTAVAIL,
    }
}

/// The attempt with these options, which must agree (not merely resolve).
fn tried(d: &Diagnosis, o: SocketOpts) -> &twlab::why::Attempt {
    d.tried
        .iter()
        .find(|t| t.opts == o)
        .expect("a --try attempt")
}

fn no_mismatch(d: &Diagnosis) {
    assert!(
        d.tried.iter().all(|t| t.agrees != Agreement::Mismatch),
        "--try contradicts the prediction:\n{}",
        twlab::why::render::long(d)
    );
}

netns_test! {
    /// A server restarted while its old connections sit in server-side
    /// TIME_WAIT: nothing listens, the TIME_WAITs hold the port; SO_REUSEADDR
    /// on both the old and the new listener is the fix.
    fn server_time_wait_blocks_a_restart() {
        server_time_wait(8080, false);
        let d = live::bind(&bind_q("0.0.0.0:8080", false), true).unwrap();
        // inet_bind_conflict(): no SO_REUSEADDR on the new socket → conflict
        // whatever the TIME_WAIT carries.
        assert_eq!(d.expect, inuse());
        assert_eq!(d.rule, RuleId::BindConflict);
        let h = &d.holders[0];
        assert!(h.timewait_sock && h.origin == Origin::Incoming && h.local == a("127.0.0.1:8080"));
        assert!(d.holders.iter().all(|h| h.role == Role::TimeWait), "nothing listens");
        assert_eq!(d.fixes[0].fix, Fix::ReuseaddrOnBoth);
        assert_eq!(tried(&d, opts(false)).agrees, Agreement::Agrees);
        // The old listener had no SO_REUSEADDR: the TIME_WAIT's sk_reuse is 0,
        // so SO_REUSEADDR on the new socket alone is refused too.
        assert_eq!(tried(&d, opts(true)).error.as_ref().map(|e| e.name.as_str()), Some("EADDRINUSE"));
        no_mismatch(&d);

        // The fix: SO_REUSEADDR on both.
        server_time_wait(8081, true);
        // Without --try it depends on the holder's hidden sk_reuse; --try
        // settles it in the answer itself.
        let d = live::bind(&bind_q("0.0.0.0:8081", true), false).unwrap();
        assert!(matches!(&d.expect, Expect::Depends { ok_if, .. } if ok_if.contains("SO_REUSEADDR")));
        let d = live::bind(&bind_q("0.0.0.0:8081", true), true).unwrap();
        assert_eq!(tried(&d, opts(true)).error, None);
        assert_eq!(tried(&d, opts(true)).agrees, Agreement::Resolves);
        assert_eq!(d.expect, Expect::Ok);
        assert!(d.explanation.contains("--try settled it"), "{}", d.explanation);
        no_mismatch(&d);
    }
}

netns_test! {
    /// A client binds a port that server-side TIME_WAITs hold: the holders
    /// are the whole bind bucket, whose 4-tuples have nothing to do with the
    /// client's destination.
    fn client_bind_on_a_port_held_by_server_time_wait() {
        server_time_wait(7000, false);
        let _other = listener("127.0.0.1:7001", false);
        let q = ConnectQuestion {
            dst: a("127.0.0.1:7001"),
            from: Some(a("127.0.0.1:7000")),
            bind_no_port: false,
            opts: opts(false),
            uid: live::euid(),
            cap_net_bind_service: true,
        };
        let d = live::connect(&q, true).unwrap();
        assert_eq!(d.expect, inuse(), "bind() fails before connect()");
        assert_eq!(d.rule, RuleId::BindConflict);
        let h = &d.holders[0];
        assert!(h.timewait_sock && h.origin == Origin::Incoming);
        assert_ne!(h.peer, q.dst, "the holder is not the 4-tuple to the destination");
        assert_eq!(d.fixes[0].fix, Fix::LetConnectChoose);
        assert_eq!(d.tried[0].agrees, Agreement::Agrees);
        assert_eq!(d.tried[0].error.as_ref().map(|e| e.name.as_str()), Some("EADDRINUSE"));
    }
}

netns_test! {
    /// A listening port inside ip_local_port_range taken by an outgoing
    /// connection's TIME_WAIT; ip_local_reserved_ports keeps connect() off it.
    fn listen_port_in_range_taken_by_outgoing_time_wait(
        sysctls = [("net.ipv4.ip_local_port_range", "40000 40001")]
    ) {
        let l = listener("127.0.0.1:5000", false);
        let p = close_one(&l, "127.0.0.1:5000", false);
        wait_for(TcpState::TimeWait, p, 1);
        let d = live::bind(&bind_q(&format!("0.0.0.0:{p}"), false), true).unwrap();
        assert_eq!(d.expect, inuse());
        assert_eq!(d.rule, RuleId::BindConflict);
        assert_eq!(d.holders[0].origin, Origin::Outgoing);
        assert_eq!(d.holders[0].peer, a("127.0.0.1:5000"));
        assert_eq!(d.fixes[0].fix, Fix::ReservePort { port: p });
        assert!(d.flags.iter().any(|f| matches!(f, Flag::InEphemeralRange { port, .. } if *port == p)));
        assert_eq!(tried(&d, opts(false)).agrees, Agreement::Agrees);
        no_mismatch(&d);

        // Apply the fix: connect() never picks p again. Toward another
        // destination p's 4-tuple is free and __inet_hash_connect() would
        // try it (its bucket came from connect()); reserved, it is skipped.
        let _l2 = listener("127.0.0.1:5001", false);
        twlab::sysctl::write(&twlab::sysctl::Sysctl::new("net.ipv4.ip_local_reserved_ports", p.to_string())).unwrap();
        let c = connect("127.0.0.1:5001");
        assert_ne!(local_port(&c), p);
        let d = live::bind(&bind_q(&format!("0.0.0.0:{p}"), false), false).unwrap();
        assert!(d.flags.contains(&Flag::Reserved { port: p }));
    }
}

netns_test! {
    /// A client connecting to a vacated port inside the range, where nothing
    /// listens, picks that port as its source and connects to itself.
    fn self_connect(sysctls = [("net.ipv4.ip_local_port_range", "40000 40000")]) {
        let q = ConnectQuestion {
            dst: a("127.0.0.1:40000"),
            from: None,
            bind_no_port: false,
            opts: opts(false),
            uid: live::euid(),
            cap_net_bind_service: true,
        };
        let d = live::connect(&q, false).unwrap();
        assert!(d.flags.contains(&Flag::SelfConnectRisk { dst: q.dst }));
        assert_eq!(d.expect, Expect::Ok);
        // The only ephemeral port is 40000: the SYN meets itself.
        let c = connect("127.0.0.1:40000");
        assert_eq!(c.peer_addr().unwrap().as_socket(), c.local_addr().unwrap().as_socket());
        let d = live::port(40000, true).unwrap();
        assert!(d.flags.contains(&Flag::SelfConnected { addr: q.dst }));
        let h = d.holders.iter().find(|h| h.self_connected).expect("the self-connected socket");
        assert_eq!(h.state, TcpState::Established);
        // A connected holder without SO_REUSEADDR on the new socket → conflict.
        assert_eq!(d.expect, inuse());
        assert_eq!(d.rule, RuleId::BindConflict);
        // The fix for a self-connect: check local == peer and retry; and
        // keep connect() off the port.
        assert_eq!(d.fixes[0].fix, Fix::SelfConnectRetry);
        assert!(d.fixes.iter().any(|f| f.fix == Fix::ReservePort { port: 40000 }));
        assert_eq!(tried(&d, opts(false)).agrees, Agreement::Agrees);
        no_mismatch(&d);
    }
}

netns_test! {
    /// Listeners and a bound-only socket inside a small range: connect()
    /// skips every port whose bucket came from bind() and fails with
    /// EADDRNOTAVAIL.
    fn listeners_fill_a_small_range(sysctls = [("net.ipv4.ip_local_port_range", "40000 40003")]) {
        let _ls: Vec<Socket> = (40000..=40002).map(|p| listener(&format!("127.0.0.1:{p}"), false)).collect();
        let bound = sock(false);
        bound.bind(&SockAddr::from(a("127.0.0.1:40003"))).unwrap();
        let _dst = listener("127.0.0.1:5000", false);
        let q = ConnectQuestion {
            dst: a("127.0.0.1:5000"),
            from: None,
            bind_no_port: false,
            opts: opts(false),
            uid: live::euid(),
            cap_net_bind_service: true,
        };
        let d = live::connect(&q, true).unwrap();
        let c = d.capacity.as_ref().unwrap();
        assert_eq!((c.range_ports, c.bind_owned, c.usable), (4, 4, 0));
        assert_eq!(d.expect, notavail());
        assert_eq!(d.rule, RuleId::EphemeralExhausted);
        assert_eq!(d.holders.iter().filter(|h| h.role == Role::Listener).count(), 3);
        // The bound-only socket (dumped with idiag_states bit 13), with its
        // owner: this process.
        let b = d.holders.iter().find(|h| h.role == Role::BoundOnly).expect("the bound-only socket");
        assert_eq!(b.local, a("127.0.0.1:40003"));
        assert!(b.owners.iter().any(|o| o.pid == std::process::id()), "{:?}", b.owners);
        assert_eq!(d.fixes[0].fix, Fix::MoveBoundOutOfRange);
        assert_eq!(d.tried[0].agrees, Agreement::Agrees);
        // bind() of the bound-only socket's port: it is not listening, so
        // SO_REUSEADDR on both would share it; without, EADDRINUSE.
        let d = live::bind(&bind_q("127.0.0.1:40003", false), true).unwrap();
        assert_eq!(d.expect, inuse());
        assert_eq!(d.holders[0].role, Role::BoundOnly);
        assert_eq!(tried(&d, opts(false)).agrees, Agreement::Agrees);
        no_mismatch(&d);
    }
}

netns_test! {
    /// Held connections fill every port to one peer; another peer port still
    /// has all its 4-tuples.
    fn held_connections_fill_the_ports_to_one_peer(
        sysctls = [("net.ipv4.ip_local_port_range", "40000 40003")]
    ) {
        let l = listener("127.0.0.1:5000", false);
        let _l2 = listener("127.0.0.1:5001", false);
        let held: Vec<(Socket, Socket)> = (0..4)
            .map(|_| {
                let c = connect("127.0.0.1:5000");
                (c, l.accept().unwrap().0)
            })
            .collect();
        let q = |dst: &str| ConnectQuestion {
            dst: a(dst),
            from: None,
            bind_no_port: false,
            opts: opts(false),
            uid: live::euid(),
            cap_net_bind_service: true,
        };
        let d = live::connect(&q("127.0.0.1:5000"), true).unwrap();
        let c = d.capacity.as_ref().unwrap();
        assert_eq!((c.tuple_busy, c.usable), (held.len() as u32, 0));
        assert_eq!(d.expect, notavail());
        assert_eq!(d.rule, RuleId::EphemeralExhausted);
        assert!(d.holders.iter().all(|h| h.state == TcpState::Established && h.origin == Origin::Outgoing));
        assert_eq!(d.fixes[0].fix, Fix::MoreSourceAddresses);
        assert_eq!(d.tried[0].agrees, Agreement::Agrees);
        // 5001: the same source ports, other 4-tuples.
        // Their ports came from connect(): the diagnosis's dump asks the
        // kernel for the sockets whose port came from bind() (the negation
        // of INET_DIAG_BC_AUTO), and these are not among them, so their
        // ports are free toward 5001 for certain.
        let d = live::connect(&q("127.0.0.1:5001"), true).unwrap();
        assert_eq!(d.capacity.as_ref().unwrap().usable, 4);
        assert_eq!(d.expect, Expect::Ok);
        assert_eq!(d.tried[0].agrees, Agreement::Agrees);
    }
}

netns_test! {
    /// bind(ip, 0) takes a port of its own for every socket, whatever the
    /// destination; IP_BIND_ADDRESS_NO_PORT lets connect() share ports
    /// across destinations.
    fn bind_ip_zero_vs_bind_address_no_port(
        sysctls = [("net.ipv4.ip_local_port_range", "40000 40003")]
    ) {
        let l = listener("127.0.0.1:5000", false);
        let _l2 = listener("127.0.0.1:5001", false);
        let q = |bind_no_port| ConnectQuestion {
            dst: a("127.0.0.1:5001"),
            from: Some(a("127.0.0.1:0")),
            bind_no_port,
            opts: opts(false),
            uid: live::euid(),
            cap_net_bind_service: true,
        };
        // Four held connections to 5000, their ports chosen by connect().
        let _held: Vec<(Socket, Socket)> = (0..4)
            .map(|_| {
                let c = connect("127.0.0.1:5000");
                (c, l.accept().unwrap().0)
            })
            .collect();
        let d = live::connect(&q(false), true).unwrap();
        assert_eq!(d.expect, inuse(), "inet_csk_find_open_port(): every port has a socket on 127.0.0.1");
        assert_eq!(d.rule, RuleId::BindAutoExhausted);
        assert_eq!(d.capacity.as_ref().unwrap().free, 0);
        assert_eq!(d.fixes[0].fix, Fix::BindAddressNoPort);
        assert_eq!(d.tried[0].agrees, Agreement::Agrees);
        let d = live::connect(&q(true), true).unwrap();
        assert_eq!(d.rule, RuleId::EphemeralOtherPort);
        assert_eq!(d.capacity.as_ref().unwrap().usable, 4);
        assert_eq!(d.expect, Expect::Ok);
        assert_eq!(d.tried[0].agrees, Agreement::Agrees);
        assert!(d.tried[0].port.is_some_and(|p| (40000..=40003).contains(&p)));
    }
}

netns_test! {
    /// The command line: text names the rule and the fix, --json parses,
    /// and the exit status says "predicted to fail".
    fn cli_text_and_json() {
        server_time_wait(8080, false);
        let out = std::process::Command::new(common::bin())
            .args(["why", "bind", "0.0.0.0:8080", "--try"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(4), "{text}");
        assert!(text.contains("inet_bind_conflict()") && text.contains("SO_REUSEADDR on both"), "{text}");
        let out = std::process::Command::new(common::bin())
            .args(["why", "port", "8080", "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["rule"], "bind-conflict");
        assert_eq!(v["holders"][0]["state"], "time-wait");
        assert_eq!(v["other_systems"][0]["label"], "documented, not run");
    }
}

netns_test! {
    /// 700 client-side TIME_WAITs toward one destination, timestamps off
    /// (none reusable): the capacity counts every one of their ports, the
    /// diagnosis keeps the first 500 holder reports and counts the other
    /// 200 (a table of 31,000 would otherwise cost more memory than the
    /// dump), and the text says where all of them can be read.
    fn a_large_table_is_counted_exactly(sysctls = [
        ("net.ipv4.ip_local_port_range", "40000 40999"),
        ("net.ipv4.tcp_timestamps", "0"),
        ("net.ipv4.tcp_tw_reuse", "0"),
    ]) {
        const MADE: usize = 700;
        let l = listener("127.0.0.1:7100", false);
        for _ in 0..MADE {
            close_one(&l, "127.0.0.1:7100", false);
        }
        let q = ConnectQuestion {
            dst: a("127.0.0.1:7100"),
            from: None,
            bind_no_port: false,
            opts: opts(false),
            uid: live::euid(),
            cap_net_bind_service: true,
        };
        // Until all 700 closes have reached TIME_WAIT (bounded).
        let d = common::wait_until(Duration::from_secs(10), "700 TIME_WAIT", || {
            let d = live::connect(&q, false).unwrap();
            let c = d.capacity.clone().unwrap();
            (c.time_wait_blocking as usize == MADE).then_some(d)
        });
        let c = d.capacity.as_ref().unwrap();
        assert_eq!(c.range_ports, 1000);
        assert_eq!(c.free as usize, 1000 - MADE);
        assert_eq!(c.time_wait_reusable, 0);
        assert_eq!(d.holders.len(), twlab::why::HOLDERS_LISTED);
        assert_eq!(d.holders.len() + d.holders_not_listed, MADE);
        assert!(d.holders.iter().all(|h| h.timewait_sock && h.peer == a("127.0.0.1:7100")));
        let text = twlab::why::render::long(&d);
        assert!(
            text.contains(&format!(
                "… {} more (--json lists {} of them, {} are counted only; `twlab ss --peer 127.0.0.1:7100` lists all)",
                MADE - 20,
                twlab::why::HOLDERS_LISTED,
                MADE - twlab::why::HOLDERS_LISTED
            )),
            "{text}"
        );
    }
}

netns_test! {
    /// `why connect --try` waits for the loopback handshake and tells its
    /// result: a closed port refuses (the peer's kernel answers the SYN
    /// with an RST, tcp_v4_send_reset()); a listener completes it. As root
    /// with tracefs the kernel's own reason comes with it: the RST's
    /// `sk_rst_reason` NO_SOCKET, and the attempt's states, its SYN_SENT
    /// (set before inet_hash_connect() picks the port) included.
    fn why_connect_try_tells_the_handshake_and_the_kernels_reason() {
        let ask = |dst: &str| {
            let q = ConnectQuestion {
                dst: a(dst),
                from: None,
                bind_no_port: false,
                opts: opts(false),
                uid: live::euid(),
                cap_net_bind_service: true,
            };
            live::connect(&q, true).unwrap().tried.remove(0)
        };
        let events = twlab::events::probe().is_ok();
        let closed = ask("127.0.0.1:31951");
        assert_eq!(closed.error, None, "connect() itself takes a port: {closed:?}");
        assert_eq!(closed.handshake.as_deref(), Some("refused: ECONNREFUSED"), "{closed:?}");
        if events {
            let v = closed.kernel_verdict.as_deref().unwrap_or_default();
            assert!(v.contains("RST came from the peer's kernel") && v.contains("NO_SOCKET"), "{closed:?}");
            let lines = closed.kernel_events.join("\n");
            assert!(lines.contains("CLOSE → SYN_SENT") && lines.contains("RST received"), "{lines}");
        } else {
            assert!(closed.kernel_events.iter().any(|l| l.starts_with("kernel events: off")), "{closed:?}");
            common::skip("why_connect_try_tells_the_handshake_and_the_kernels_reason: kernel events part");
        }
        let _l = std::net::TcpListener::bind("127.0.0.1:31952").unwrap();
        let open = ask("127.0.0.1:31952");
        assert_eq!(open.handshake.as_deref(), Some("established"), "{open:?}");
        assert_eq!(open.kernel_verdict, None, "{open:?}");
        if events {
            let lines = open.kernel_events.join("\n");
            assert!(lines.contains("SYN_SENT → ESTABLISHED") && lines.contains("LISTEN → SYN_RECV"), "{lines}");
        }
    }
}
