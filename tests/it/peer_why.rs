//! `twlab server` and `twlab client` explain a failed bind() or connect()
//! with the `twlab why` diagnosis of the live namespace (issue 9, item 2):
//! each situation staged in its own namespace.

use crate::common;

use common::*;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use twlab::diag::{self, Query, StateSet, TcpState};

const SERVER: &str = "127.0.0.1:12345";

/// The TIME_WAIT sockets whose local address is `local`.
fn time_waits_on(local: SocketAddr) -> usize {
    diag::dump(&Query::states(StateSet::of(&[TcpState::TimeWait])))
        .unwrap()
        .iter()
        .filter(|e| e.local == local)
        .count()
}

/// A server that closed first (so its end holds TIME_WAIT on SERVER) and
/// has exited: the port has no listener, only the TIME_WAIT.
fn server_side_time_wait() {
    let s: SocketAddr = SERVER.parse().unwrap();
    let server = start_server(s, &["--close", "first", "--count", "1"]);
    let c = run(&[
        "client",
        "--connect",
        SERVER,
        "--count",
        "1",
        "--close",
        "after-peer",
        "--json",
    ]);
    assert_eq!(json_lines(&c)[0]["outcome"]["kind"], "ok", "{c:?}");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while time_waits_on(s) != 1 {
        assert!(
            std::time::Instant::now() < end,
            "no server-side TIME_WAIT:\n{}\nclient: {}\nserver: {}",
            socket_table(),
            String::from_utf8_lossy(&c.stdout),
            stop_server(server)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    stop_server(server);
    wait_until(Duration::from_secs(5), "no listener left", || {
        (count(&[TcpState::Listen]) == 0).then_some(())
    });
}

netns_test! {
    fn a_restart_blocked_by_server_side_time_wait_names_it_and_the_fix() {
        server_side_time_wait();
        let o = run(&["server", "--listen", SERVER, "--count", "1", "--idle-timeout", "1"]);
        let line = one_line_failure(&o);
        assert!(line.contains("EADDRINUSE"), "{line}");
        assert!(!line.contains("another program listens"), "{line}");
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(text.contains("why: bind() fails with EADDRINUSE"), "{text}");
        assert!(
            text.contains("holder: TIME_WAIT   127.0.0.1:12345 → 127.0.0.1:"),
            "{text}"
        );
        assert!(text.contains("accepted (server side)"), "{text}");
        assert!(text.contains("fix 1: set SO_REUSEADDR on both sockets"), "{text}");
        assert!(!text.contains("another program listens"), "{text}");

        // --json: one object with the diagnosis; with SO_REUSEADDR on the new
        // listener only, the prediction depends on the old one's flag, and
        // the kernel's EADDRINUSE resolves it.
        let o = run(&[
            "server", "--listen", SERVER, "--count", "1", "--idle-timeout", "1", "--reuseaddr",
            "--json",
        ]);
        one_line_failure(&o);
        let v = &json_lines(&o)[0];
        assert_eq!(v["failed"]["step"], "bind", "{v}");
        // The errno as every command writes one: {name, code, wsa}.
        assert_eq!(v["why"]["errno"]["name"], "EADDRINUSE", "{v}");
        assert_eq!(v["why"]["errno"]["code"], libc::EADDRINUSE, "{v}");
        common::assert_conforms("server", v);
        assert_eq!(v["why"]["agreement"], "resolves", "{v}");
        let d = &v["why"]["diagnosis"];
        assert_eq!(d["rule"], "bind-conflict", "{d}");
        assert_eq!(d["holders"][0]["local"], SERVER, "{d}");
        assert_eq!(d["holders"][0]["timewait_sock"], true, "{d}");
        assert_eq!(d["fixes"][0]["fix"]["kind"], "reuseaddr-on-both", "{d}");
    }
}

netns_test! {
    fn a_client_binding_a_port_held_by_server_side_time_wait_names_the_holders() {
        server_side_time_wait();
        let args = ["client", "--connect", "127.0.0.1:12346", "--bind", SERVER, "--count", "1"];
        let o = run(&args);
        assert_eq!(o.status.code(), Some(4), "{o:?}");
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(text.contains("bind FAILED EADDRINUSE"), "{text}");
        assert!(
            text.contains("holder: TIME_WAIT   127.0.0.1:12345 → 127.0.0.1:"),
            "{text}"
        );
        // The 4-tuple to the client's own destination says nothing here.
        assert!(!text.contains("no socket"), "{text}");
        assert!(!text.contains("right after bind() failed"), "{text}");

        let mut json = args.to_vec();
        json.push("--json");
        let o = run(&json);
        let a = &json_lines(&o)[0];
        assert_eq!(a["outcome"]["step"], "bind", "{a}");
        assert!(a.get("kernel_view").is_none(), "{a}");
        assert_eq!(a["why"]["agreement"], "agrees", "{a}");
        // The errno object, as in every command; the plain name it was
        // before (issue 19) breaks the client's schema.
        assert_eq!(a["why"]["errno"]["name"], "EADDRINUSE", "{a}");
        common::assert_conforms("client", a);
        let mut was = a.clone();
        was["why"]["errno"] = "EADDRINUSE".into();
        assert!(!common::schema_errors("client", &was).is_empty(), "{was}");
        // So is the diagnosis's predicted errno.
        let predicted = &a["why"]["diagnosis"]["expect"]["errno"];
        assert_eq!(predicted["name"], "EADDRINUSE", "{a}");
        assert_eq!(predicted["code"], libc::EADDRINUSE, "{a}");
        let holders = a["why"]["diagnosis"]["holders"].as_array().unwrap();
        assert_eq!(holders.len(), 1, "{a}");
        assert_eq!(holders[0]["local"], SERVER, "{a}");
        assert_eq!(holders[0]["origin"], "incoming", "{a}");
    }
}

netns_test! {
    fn a_connect_out_of_ephemeral_ports_prints_the_range_accounting(
        sysctls = [("net.ipv4.ip_local_port_range", "40000 40001")]
    ) {
        let l = TcpListener::bind("127.0.0.1:7000").unwrap();
        // Two held connections take both ports of the range toward 7000.
        let held: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect("127.0.0.1:7000").unwrap())
            .collect();
        let accepted: Vec<TcpStream> = (0..2).map(|_| l.accept().unwrap().0).collect();
        let o = run(&["client", "--connect", "127.0.0.1:7000", "--count", "1"]);
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(text.contains("connect FAILED EADDRNOTAVAIL"), "{text}");
        assert!(
            text.contains("why: connect() fails with EADDRNOTAVAIL (ephemeral-exhausted"),
            "{text}"
        );
        assert!(
            text.contains("ephemeral ports 40000-40001 (2): reserved 0, owned by bind() 0, 4-tuple held 2"),
            "{text}"
        );
        assert!(text.contains("usable now 0"), "{text}");

        let o = run(&["client", "--connect", "127.0.0.1:7000", "--count", "1", "--json"]);
        let a = &json_lines(&o)[0];
        assert_eq!(a["why"]["agreement"], "agrees", "{a}");
        let c = &a["why"]["diagnosis"]["capacity"];
        assert_eq!(c["tuple_busy"], 2, "{a}");
        assert_eq!(c["usable"], 0, "{a}");
        drop((held, accepted));
    }
}
