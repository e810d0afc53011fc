//! `twlab server` and `twlab client`, run as two real processes inside a
//! fresh network namespace per test, with the namespace's sysctls set by
//! the test. This is the story's experiment, exactly as a user runs it.

use crate::common;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use twlab::diag::{self, TcpState, TupleView};

const SERVER: &str = "127.0.0.1:12345";
const CLIENT: &str = "127.0.0.1:23456";

fn addrs() -> (SocketAddr, SocketAddr) {
    (CLIENT.parse().unwrap(), SERVER.parse().unwrap())
}

/// The result of the story: the first connection, the kernel's view of the
/// old 4-tuple when the wait ended, and the reconnect attempt.
struct Story {
    view: TupleView,
    second: Value,
    second_exit: i32,
}

/// Run server + client once in the calling thread's namespace, wait
/// (bounded, on sock_diag) until `settled` holds for the old 4-tuple, then
/// run the client once more.
fn story(server_args: &[&str], client_args: &[&str], settled: fn(&TupleView) -> bool) -> Story {
    let (c, s) = addrs();
    let server = start_server(s, server_args);
    let base = [
        "client",
        "--connect",
        SERVER,
        "--bind",
        CLIENT,
        "--count",
        "1",
        "--json",
    ];
    let args: Vec<&str> = base.iter().chain(client_args.iter()).copied().collect();
    let first = run(&args);
    let lines = json_lines(&first);
    assert_eq!(
        lines[0]["outcome"]["kind"], "ok",
        "first connection: {lines:?}"
    );
    let (view, ok) = diag::wait_for(c, s, Duration::from_secs(10), settled).unwrap();
    if !ok {
        let table = socket_table();
        panic!(
            "the old 4-tuple never reached the state the step needs: {view:?}\nsockets:\n{table}\nss:\n{}\ncounters: {}\nclient: {}\nserver: {}",
            iproute2_ss(),
            tcp_counters(),
            String::from_utf8_lossy(&first.stdout),
            stop_server(server)
        );
    }
    let second = run(&args);
    stop_server(server);
    let lines = json_lines(&second);
    Story {
        view,
        second: lines[0].clone(),
        second_exit: second.status.code().unwrap_or(-1),
    }
}

fn client_time_wait(v: &TupleView) -> bool {
    v.client_state() == Some(TcpState::TimeWait) && v.server.is_none()
}

fn server_time_wait(v: &TupleView) -> bool {
    v.server_state() == Some(TcpState::TimeWait) && v.client.is_none()
}

fn client_fin_wait2(v: &TupleView) -> bool {
    v.client_state() == Some(TcpState::FinWait2) && v.server_state() == Some(TcpState::CloseWait)
}

fn failed_step(attempt: &Value) -> (String, String) {
    (
        attempt["outcome"]["step"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        attempt["outcome"]["error"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

netns_test! {
    fn client_closes_first_reconnect_after_peer_with_timestamps_is_ok(
        sysctls = [("net.ipv4.tcp_timestamps", "1")]
    ) {
        let st = story(
            &["--reuseaddr"],
            &["--reuseaddr", "--close", "first"],
            client_time_wait,
        );
        // Linux tcp_twsk_unique(): a bound port (twp == NULL) may take over a
        // TIME_WAIT that saw timestamps, whatever tcp_tw_reuse says.
        assert_eq!(st.view.time_wait_holder(), Some(diag::Side::Client));
        assert_eq!(st.second["outcome"]["kind"], "ok", "{}", st.second);
        assert_eq!(st.second_exit, 0);
    }
}

netns_test! {
    fn client_closes_first_reconnect_after_peer_without_timestamps_fails_at_connect(
        sysctls = [("net.ipv4.tcp_timestamps", "0")]
    ) {
        let st = story(
            &["--reuseaddr"],
            &["--reuseaddr", "--close", "first"],
            client_time_wait,
        );
        // bind() passes (both SO_REUSEADDR, holder not LISTEN), connect() finds
        // the 4-tuple in TIME_WAIT without timestamps: __inet_check_established
        // → EADDRNOTAVAIL.
        assert_eq!(
            failed_step(&st.second),
            ("connect".into(), "EADDRNOTAVAIL".into())
        );
        assert_eq!(st.second["outcome"]["error"]["code"], 99);
        assert_eq!(st.second_exit, 4);
        // The reported state of the old 4-tuple: TIME_WAIT, held by the client.
        let before: TupleView = serde_json::from_value(st.second["view_before"].clone()).unwrap();
        assert_eq!(before.client_state(), Some(TcpState::TimeWait));
        assert_eq!(before.time_wait_holder(), Some(diag::Side::Client));
        let left = before.client.as_ref().unwrap().time_wait_left().unwrap();
        assert!(
            left > Duration::from_secs(50) && left <= Duration::from_secs(60),
            "{left:?}"
        );
        let text = st.second["kernel_view"].to_string();
        assert!(
            text.contains("127.0.0.1:23456 → 127.0.0.1:12345 is TIME_WAIT"),
            "{text}"
        );
    }
}

/// Server closes first: the reconnect is ok and the server held TIME_WAIT.
/// Timestamps on or off: the SYN is accepted into the server's TIME_WAIT
/// (tcp_timewait_state_process → TCP_TW_SYN, RFC 1122 §4.2.2.13).
fn server_closes_first() {
    let st = story(
        &["--reuseaddr", "--close", "first"],
        &["--reuseaddr", "--close", "after-peer"],
        server_time_wait,
    );
    assert_eq!(st.view.time_wait_holder(), Some(diag::Side::Server));
    assert!(st.view.client.is_none(), "the client end must be gone");
    assert_eq!(st.second["outcome"]["kind"], "ok", "{}", st.second);
}

netns_test! {
    fn server_closes_first_without_timestamps_reconnect_is_ok(
        sysctls = [("net.ipv4.tcp_timestamps", "0")]
    ) {
        server_closes_first();
    }
}

netns_test! {
    fn server_closes_first_with_timestamps_reconnect_is_ok(
        sysctls = [("net.ipv4.tcp_timestamps", "1")]
    ) {
        server_closes_first();
    }
}

netns_test! {
    fn reconnect_before_the_peer_closed_fails_at_connect_in_fin_wait2(
        sysctls = [("net.ipv4.tcp_timestamps", "0")]
    ) {
        // The server holds its end open (CLOSE_WAIT) for 20 s after the FIN, so
        // the client's old socket stays FIN_WAIT2. Without timestamps nothing
        // may take the 4-tuple over (tcp_twsk_unique needs tw_ts_recent_stamp).
        let st = story(
            &["--reuseaddr", "--close-delay", "20000"],
            &["--reuseaddr", "--close", "first"],
            client_fin_wait2,
        );
        assert_eq!(
            failed_step(&st.second),
            ("connect".into(), "EADDRNOTAVAIL".into())
        );
        let before: TupleView = serde_json::from_value(st.second["view_before"].clone()).unwrap();
        assert_eq!(
            before.client_state(),
            Some(TcpState::FinWait2),
            "{before:?}"
        );
        assert_eq!(
            before.server_state(),
            Some(TcpState::CloseWait),
            "{before:?}"
        );
    }
}

netns_test! {
    fn fin_wait2_kept_as_a_full_socket_blocks_the_reconnect_even_with_timestamps(
        sysctls = [
            ("net.ipv4.tcp_timestamps", "1"),
            ("net.ipv4.tcp_fin_timeout", "120"),
        ]
    ) {
        // tcp_fin_timeout > 60 s keeps the orphaned FIN_WAIT2 as a full socket
        // (tcp_close: tmo > TCP_TIMEWAIT_LEN → keepalive timer), which
        // __inet_check_established treats as busy whatever the timestamps.
        let st = story(
            &["--reuseaddr", "--close-delay", "20000"],
            &["--reuseaddr", "--close", "first"],
            client_fin_wait2,
        );
        assert_eq!(
            failed_step(&st.second),
            ("connect".into(), "EADDRNOTAVAIL".into())
        );
    }
}

netns_test! {
    fn orphaned_fin_wait2_with_timestamps_is_taken_over(
        sysctls = [
            ("net.ipv4.tcp_timestamps", "1"),
            ("net.ipv4.tcp_fin_timeout", "60"),
        ]
    ) {
        // With tcp_fin_timeout ≤ 60 s the orphan is a timewait mini-socket in
        // substate FIN_WAIT2 (tcp_time_wait(sk, TCP_FIN_WAIT2, tmo)); for a bound
        // port tcp_twsk_unique() looks only at tw_ts_recent_stamp, so the
        // reconnect takes the 4-tuple over although the peer never closed.
        let st = story(
            &["--reuseaddr", "--close-delay", "20000"],
            &["--reuseaddr", "--close", "first"],
            client_fin_wait2,
        );
        let e = st.view.client.as_ref().unwrap();
        assert_eq!(
            e.timer.map(|t| t.kind),
            Some(diag::TimerKind::Timewait),
            "{e:?}"
        );
        assert_eq!(st.second["outcome"]["kind"], "ok", "{}", st.second);
    }
}

netns_test! {
    fn no_reuseaddr_fails_at_bind(sysctls = [("net.ipv4.tcp_timestamps", "1")]) {
        let st = story(
            &["--reuseaddr"],
            &["--close", "first"],
            client_time_wait,
        );
        // inet_bind_conflict: the TIME_WAIT keeps the old socket's sk_reuse = 0.
        assert_eq!(
            failed_step(&st.second),
            ("bind".into(), "EADDRINUSE".into())
        );
        assert_eq!(
            st.second["outcome"]["error"]["wsa"]["name"],
            "WSAEADDRINUSE"
        );
        assert_eq!(st.second["outcome"]["error"]["wsa"]["code"], 10048);
    }
}

netns_test! {
    fn until_first_ok_reports_when_the_port_came_free(
        sysctls = [
            ("net.ipv4.tcp_timestamps", "0"),
            ("net.ipv4.tcp_fin_timeout", "120"),
            ("net.ipv4.tcp_max_tw_buckets", "0"),
        ]
    ) {
        // tcp_fin_timeout = 120 keeps the client's orphaned FIN_WAIT2 a full
        // socket, which blocks the reconnect until the server closes, 300 ms
        // after the FIN. With tcp_max_tw_buckets = 0 the kernel then creates no
        // TIME_WAIT (inet_twsk_alloc refuses, tcp_time_wait → tcp_done), so the
        // 4-tuple is free the moment the server's FIN arrives.
        let (_, s) = addrs();
        let server = start_server(s, &["--reuseaddr", "--close-delay", "300"]);
        let o = run(&[
            "client",
            "--connect",
            SERVER,
            "--bind",
            CLIENT,
            "--reuseaddr",
            "--close",
            "first",
            "--count",
            "2",
            "--until",
            "first-ok",
            "--json",
        ]);
        stop_server(server);
        let lines = json_lines(&o);
        let summary = lines.last().unwrap();
        assert_eq!(o.status.code(), Some(0), "{lines:?}");
        // Two attempts (--count 2): the second was blocked, tried again
        // and again, and came free; the retries are not attempts.
        assert_eq!(summary["attempts"], 2, "{summary}");
        assert_eq!(summary["ok"], 2, "{summary}");
        assert_eq!(summary["failed"], 0, "{summary}");
        let blocked = summary["blocked_s"].as_f64().expect("blocked_s");
        let freed = summary["freed_after_s"].as_f64().expect("freed_after_s");
        // The server closes 300 ms after the FIN; the retry resolution
        // is 50 ms; loopback adds nothing measurable.
        assert!(freed > 0.2 && freed < 2.0, "freed after {freed} s");
        assert_eq!(blocked, freed);
        assert!(summary["failed_tries"].as_u64().unwrap() >= 1, "{summary}");
    }
}

/// Send SIGINT to `child` and check it ends within 1 s with exit 130 and
/// one line on stderr saying it was interrupted.
fn sigint_ends_within_1s(child: std::process::Child, what: &str) {
    sigint_ends_within(child, what, Duration::from_secs(1));
}

/// [`sigint_ends_within_1s`] within `limit`.
fn sigint_ends_within(child: std::process::Child, what: &str, limit: Duration) {
    // Bounded: the child is killed if it has not ended 1 s past the limit.
    let o = stop_with(
        child,
        nix::sys::signal::Signal::SIGINT,
        limit + Duration::from_secs(1),
    );
    let (took, status, err) = (o.elapsed, o.status, o.stderr);
    assert!(took < limit, "{what}: ended {took:?} after SIGINT");
    assert_eq!(status.code(), Some(130), "{what}: {status:?} {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: {err}");
    assert!(lines[0].contains("interrupted"), "{what}: {err}");
}

fn spawn(args: &[&str]) -> std::process::Child {
    std::process::Command::new(bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait (bounded) until the namespace has a socket in `state` on `port`.
fn wait_state(state: TcpState, port: u16) {
    wait_until(
        Duration::from_secs(5),
        &format!("{state:?} on {port}"),
        || {
            let all = diag::dump(&diag::Query::default()).unwrap();
            all.iter()
                .any(|e| e.state == state && (e.local.port() == port || e.peer.port() == port))
                .then_some(())
        },
    );
}

netns_test! {
    fn ctrl_c_during_the_client_interval() {
        let (_, s) = addrs();
        let server = start_server(s, &[]);
        let mut client = spawn(&[
            "client", "--connect", SERVER, "--count", "2", "--interval", "15000",
        ]);
        // The first attempt's line is flushed before the pause.
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(client.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("connect ok"), "{line}");
        sigint_ends_within_1s(client, "client --interval 15000");
        stop_server(server);
    }
}

netns_test! {
    fn ctrl_c_while_the_server_waits_for_a_silent_client() {
        let (_, s) = addrs();
        let server = start_server(s, &[]);
        let _silent = std::net::TcpStream::connect(s).unwrap();
        // Accepted and now in recv(): the server end is ESTABLISHED.
        wait_until(Duration::from_secs(5), "the server end", || {
            (count(&[TcpState::Established]) == 2).then_some(())
        });
        sigint_ends_within_1s(server, "server blocked in recv");
    }
}

netns_test! {
    fn ctrl_c_during_the_close_delay() {
        let (_, s) = addrs();
        let server = start_server(s, &["--close-delay", "20000"]);
        let o = run(&["client", "--connect", SERVER, "--count", "1", "--close", "first"]);
        assert_eq!(o.status.code(), Some(0));
        wait_state(TcpState::CloseWait, 12345);
        sigint_ends_within_1s(server, "server --close-delay 20000");
    }
}

netns_test! {
    fn ctrl_c_while_the_server_waits_for_a_connection() {
        let (_, s) = addrs();
        let server = start_server(s, &[]);
        sigint_ends_within_1s(server, "server in accept");
    }
}

netns_test! {
    fn ctrl_c_while_connect_waits_for_an_answer() {
        // A listener with a full accept queue drops new SYNs
        // (tcp_conn_request(): sk_acceptq_is_full → drop), so the client's
        // connect() waits for an answer that never comes.
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let s: SocketAddr = SERVER.parse().unwrap();
        l.bind(&s.into()).unwrap();
        l.listen(0).unwrap();
        let _queued = std::net::TcpStream::connect(s).unwrap();
        wait_until(Duration::from_secs(5), "the queued connection", || {
            (count(&[TcpState::Established]) == 2).then_some(())
        });
        let client = spawn(&["client", "--connect", SERVER, "--count", "1"]);
        wait_state(TcpState::SynSent, 12345);
        sigint_ends_within_1s(client, "client in connect");
    }
}

netns_test! {
    fn the_client_timeout_bounds_the_wait_for_the_peer() {
        // Both wait for the other's FIN: only --timeout ends the client.
        let (_, s) = addrs();
        let server = start_server(s, &["--close", "after-peer"]);
        let start = std::time::Instant::now();
        let o = run(&[
            "client", "--connect", SERVER, "--close", "after-peer", "--timeout", "1",
        ]);
        let took = start.elapsed();
        stop_server(server);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(took < Duration::from_secs(3), "took {took:?}: {out}");
        assert!(out.contains("recv timed out"), "{out}");
        assert!(!out.contains("EAGAIN"), "{out}");
        assert!(out.contains("stopped: --timeout 1 s reached"), "{out}");
    }
}

netns_test! {
    fn the_server_names_how_each_end_closed() {
        // The client closes first with FIN; the server, SO_LINGER 0, answers
        // with RST.
        let (_, s) = addrs();
        let server = start_server(s, &["--linger", "0", "--count", "1", "--json"]);
        let o = run(&["client", "--connect", SERVER, "--count", "1", "--close", "first"]);
        assert_eq!(o.status.code(), Some(0));
        let out = server.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let ev: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(ev["closed_first"], "client", "{text}");
        assert_eq!(ev["client_close"], "FIN", "{text}");
        assert_eq!(ev["server_close"], "RST", "{text}");
        // And in text.
        let server = start_server(s, &["--linger", "0", "--count", "1"]);
        run(&["client", "--connect", SERVER, "--count", "1", "--close", "first"]);
        let out = server.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("client closed first (FIN), then the server (RST)"),
            "{text}"
        );
    }
}

netns_test! {
    fn a_reset_after_the_handshake_is_not_a_connect_failure() {
        // The server accepts and aborts at once (SO_LINGER 0): the client's
        // connect() completed, the RST comes after. Whether connect()
        // itself returns ECONNRESET depends on which runs first; over 200
        // connections it happens here in most runs.
        let (_, s) = addrs();
        let server = start_server(s, &["--linger", "0", "--close", "first", "--count", "200"]);
        let o = run(&[
            "client", "--connect", SERVER, "--count", "200", "--close", "after-peer",
        ]);
        stop_server(server);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(!out.contains("connect FAILED"), "{out}");
        assert_eq!(o.status.code(), Some(0), "{out}");
        assert!(out.contains("recv: connected, then reset by the peer (ECONNRESET"), "{out}");
    }
}

netns_test! {
    fn a_self_connected_client_is_flagged(
        sysctls = [("net.ipv4.ip_local_port_range", "40000 40001")]
    ) {
        // Nothing listens on 40000, which is one of the two ephemeral ports:
        // when connect() picks 40000 itself, the SYN meets itself
        // (simultaneous open). Bounded: 40 tries, each 1/2 likely.
        for _ in 0..40 {
            let o = run(&[
                "client", "--connect", "127.0.0.1:40000", "--count", "1", "--close",
                "after-peer", "--timeout", "5",
            ]);
            let out = String::from_utf8_lossy(&o.stdout);
            if out.contains("connect ok") {
                assert!(out.contains("self-connect: local == peer"), "{out}");
                assert!(!out.contains("EAGAIN"), "{out}");
                return;
            }
        }
        panic!("connect() never picked port 40000 in 40 tries");
    }
}

/// The next line `child` writes on stdout (blocking: bounded by the
/// child's own waits, after which it writes its result line or ends).
fn next_line(out: &mut std::io::BufReader<std::process::ChildStdout>) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line
}

/// Both sides `--close after-peer` on `server` and `client`, waiting for
/// each other: the children and their stdout, once each has said that it
/// waits and the kernel shows both ends still ESTABLISHED (neither sent a
/// FIN).
struct Deadlock {
    server: std::process::Child,
    server_out: std::io::BufReader<std::process::ChildStdout>,
    client: std::process::Child,
    client_out: std::io::BufReader<std::process::ChildStdout>,
}

fn deadlock(s: SocketAddr, c: SocketAddr) -> Deadlock {
    let mut server = start_server(s, &["--close", "after-peer", "--count", "1"]);
    let mut client = spawn(&[
        "client",
        "--connect",
        &s.to_string(),
        "--bind",
        &c.to_string(),
        "--close",
        "after-peer",
        "--count",
        "1",
        "--timeout",
        "20",
    ]);
    let mut server_out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut client_out = std::io::BufReader::new(client.stdout.take().unwrap());
    let listening = next_line(&mut server_out);
    assert!(listening.starts_with("listening on"), "{listening}");
    let said = next_line(&mut server_out);
    assert!(
        said.starts_with("waiting up to 30 s for the client's FIN"),
        "{said}"
    );
    assert!(
        said.contains("client --close after-peer") && said.contains("use --close first"),
        "{said}"
    );
    let said = next_line(&mut client_out);
    assert!(said.starts_with("waiting up to "), "{said}");
    assert!(
        said.contains("for the server's FIN") && said.contains("use --close first"),
        "{said}"
    );
    // Said while waiting: neither end has sent a FIN.
    let established = |v: &TupleView| {
        v.client_state() == Some(TcpState::Established)
            && v.server_state() == Some(TcpState::Established)
    };
    let (v, ok) = diag::wait_for(c, s, Duration::from_secs(5), established).unwrap();
    assert!(ok, "{v:?}");
    Deadlock {
        server,
        server_out,
        client,
        client_out,
    }
}

netns_test! {
    /// Both sides `--close after-peer`: each waits for the other's FIN and
    /// neither sends one. Each says so while it waits, and each stops on
    /// SIGINT within 200 ms; the exit closes its end, and the other side
    /// then tells what it saw.
    fn both_after_peer_each_side_says_it_waits_and_stops_on_sigint() {
        let limit = Duration::from_millis(200);
        // The server stopped: the kernel closes its end (FIN), the client
        // sees it.
        let mut d = deadlock(addrs().1, addrs().0);
        sigint_ends_within(d.server, "server waiting for the client's FIN", limit);
        let line = next_line(&mut d.client_out);
        assert!(line.contains("connect ok, recv: the server's FIN after "), "{line}");
        assert_eq!(d.client.wait().unwrap().code(), Some(0));
        // The client stopped: the server sees its FIN, and says the client
        // closed first.
        let s = "127.0.0.1:12346".parse().unwrap();
        let mut d = deadlock(s, "127.0.0.1:23457".parse().unwrap());
        sigint_ends_within(d.client, "client waiting for the server's FIN", limit);
        let line = next_line(&mut d.server_out);
        assert!(line.contains("client closed first (FIN), then the server (FIN), ok"), "{line}");
        assert_eq!(d.server.wait().unwrap().code(), Some(0));
    }
}

netns_test! {
    /// Both sides `--close after-peer`, the client with `--timeout 1`: the
    /// client gives up after 1 s and closes first, says so, and the
    /// server's line agrees with the kernel (the client holds TIME_WAIT).
    fn both_after_peer_the_client_timeout_ends_it_and_both_say_who_closed() {
        let (c, s) = addrs();
        let server = start_server(s, &["--close", "after-peer", "--count", "1", "--json"]);
        let o = run(&[
            "client", "--connect", SERVER, "--bind", CLIENT, "--close", "after-peer",
            "--count", "1", "--timeout", "1", "--json",
        ]);
        let a = &json_lines(&o)[0];
        let recv = &a["steps"][2];
        assert_eq!(recv["step"], "recv", "{a}");
        assert_eq!(recv["result"], "failed", "{a}");
        assert_eq!(recv["error"]["name"], "ETIMEDOUT", "{a}");
        let waited = a["fin_wait_s"].as_f64().unwrap();
        assert!((0.9..3.0).contains(&waited), "{a}");
        // Under --json the notice is on stderr, stdout only JSON.
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("for the server's FIN"), "{err}");
        let (v, ok) = diag::wait_for(c, s, Duration::from_secs(10), client_time_wait).unwrap();
        assert!(ok, "{v:?}");
        let out = server.wait_with_output().unwrap();
        let ev = &json_lines(&out)[0];
        assert_eq!(ev["closed_first"], "client", "{ev}");
        assert_eq!(ev["client_close"], "FIN", "{ev}");
        let st = ev["state_after_close"].as_str().unwrap();
        assert!(["last-ack", "gone"].contains(&st), "{ev}");
    }
}

/// Wait (bounded) until every connection on `port` has settled: nothing
/// left but the listener and TIME_WAITs.
fn wait_settled(port: u16) {
    wait_until(Duration::from_secs(10), "every connection settled", || {
        let all = diag::dump(&diag::Query::default()).unwrap();
        all.iter()
            .filter(|e| e.local.port() == port || e.peer.port() == port)
            .all(|e| matches!(e.state, TcpState::Listen | TcpState::TimeWait))
            .then_some(())
    });
}

netns_test! {
    /// In every order of closing, the server's `closed_first` agrees with
    /// the kernel: whoever closed first holds TIME_WAIT (RFC 793 §3.5), both
    /// of them after a simultaneous close. Both `--close first` is the
    /// order where the server used to claim "server" for connections the
    /// client had closed first.
    fn who_closed_first_agrees_with_the_kernel_in_every_order() {
        const N: usize = 20;
        // A server port per order: each order's TIME_WAITs stay apart.
        for (port, server_close, client_close) in [
            (12345, "first", "after-peer"),
            (12346, "after-peer", "first"),
            (12347, "first", "first"),
        ] {
            let s = SocketAddr::from(([127, 0, 0, 1], port));
            let server = start_server(s, &["--close", server_close, "--count", &N.to_string(), "--json"]);
            let o = run(&[
                "client", "--connect", &s.to_string(), "--close", client_close, "--count",
                &N.to_string(), "--json",
            ]);
            assert_eq!(o.status.code(), Some(0), "{o:?}");
            let out = server.wait_with_output().unwrap();
            let events = json_lines(&out);
            assert_eq!(events.len(), N, "{events:?}");
            // Once every connection settled, whoever sent a FIN before it
            // saw the other's holds TIME_WAIT (RFC 793 §3.5): one end, or
            // both after a simultaneous close.
            wait_settled(port);
            let tw: Vec<(SocketAddr, SocketAddr)> = diag::dump(&diag::Query::default())
                .unwrap()
                .iter()
                .filter(|e| e.state == TcpState::TimeWait)
                .map(|e| (e.local, e.peer))
                .collect();
            let case = format!("server {server_close}, client {client_close}");
            for e in &events {
                let server_end: SocketAddr = e["local"].as_str().unwrap().parse().unwrap();
                let client_end: SocketAddr = e["peer"].as_str().unwrap().parse().unwrap();
                let held = (
                    tw.contains(&(server_end, client_end)),
                    tw.contains(&(client_end, server_end)),
                );
                let truth = match held {
                    (true, true) => "both",
                    (true, false) => "server",
                    (false, true) => "client",
                    (false, false) => panic!("{case}: no TIME_WAIT for {e}"),
                };
                let said = e["closed_first"].as_str().unwrap();
                let st = e["state_after_close"].as_str().unwrap();
                // The one thing a look right after close() cannot know: a
                // client FIN not yet sent (or not yet processed) that then
                // crosses the server's.
                let later_crossing =
                    truth == "both" && said == "server" && st.starts_with("fin-wait");
                assert!(said == truth || later_crossing, "{case}: kernel says {truth}: {e}");
                // And each line with the state it reports (tcp_close_state()).
                let want = match st {
                    "last-ack" => "client",
                    "closing" => "both",
                    "fin-wait-1" | "fin-wait-2" => "server",
                    _ => continue, // gone, time-wait: the kernel's end state decided
                };
                assert_eq!(said, want, "{case}: {e}");
            }
            if client_close == "after-peer" {
                for a in json_lines(&o).iter().filter(|a| a["type"] == "attempt") {
                    assert_eq!(a["steps"][1]["step"], "recv", "{a}");
                    assert_eq!(a["steps"][1]["result"], "ok", "{a}");
                    assert!(a["fin_wait_s"].as_f64().is_some(), "{a}");
                }
            }
        }
    }
}
