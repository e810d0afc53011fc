//! `twlab ss` on real sockets, checked against iproute2's `ss` in the same
//! network namespace.
//!
//! Each test builds its own namespace on its own thread (`netns_test!`)
//! and spawns `twlab` and `ss` from inside it: a child process starts in
//! the namespace of the thread that forked it, so tests run in parallel
//! without seeing each other's sockets.

use crate::common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;
use twlab::diag::{self, Query, StateSet, TcpState};

/// (ss state column, local, peer)
type Row = (String, SocketAddr, SocketAddr);

/// `twlab ss ARGS`.
fn twlab(args: &[&str]) -> std::process::Output {
    let all: Vec<&str> = std::iter::once("ss").chain(args.iter().copied()).collect();
    run(&all)
}

fn column_of(ss_name: &str) -> String {
    TcpState::ALL
        .iter()
        .find(|s| s.ss_name() == ss_name)
        .unwrap_or_else(|| panic!("unknown state {ss_name}"))
        .ss_column()
        .to_string()
}

/// The `ss -tan` column of a state as JSON names it (serde's name, the
/// same in every command: `time-wait`, `new-syn-recv`).
fn column_of_json(name: &str) -> String {
    let st: TcpState = serde_json::from_value(Value::from(name))
        .unwrap_or_else(|e| panic!("unknown state {name}: {e}"));
    st.ss_column().to_string()
}

/// `twlab ss --json ARGS` as rows, plus the raw JSON sockets.
fn twlab_rows(args: &[&str]) -> (BTreeSet<Row>, Vec<Value>) {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = twlab(&a);
    assert!(
        out.status.success(),
        "twlab ss {a:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let socks = v["sockets"].as_array().expect("a sockets array").clone();
    let rows = socks
        .iter()
        .map(|s| {
            (
                column_of_json(s["state"].as_str().unwrap()),
                s["local"].as_str().unwrap().parse().unwrap(),
                s["peer"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    (rows, socks)
}

/// `127.0.0.1:80`, `[::1]:80`, `0.0.0.0:*` → SocketAddr (port `*` = 0).
fn ss_addr(s: &str) -> SocketAddr {
    let (host, port) = s.rsplit_once(':').unwrap();
    let port: u16 = if port == "*" {
        0
    } else {
        port.parse().unwrap()
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.split('%').next().unwrap();
    SocketAddr::new(host.parse().unwrap(), port)
}

/// `ss -tan ARGS` as rows. When one state is selected ss leaves out the
/// State column; `state` then says which it is.
fn ss_rows(args: &[&str], state: Option<&str>) -> BTreeSet<Row> {
    let out = Command::new("ss").arg("-tanH").args(args).output().unwrap();
    assert!(out.status.success(), "ss {args:?}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match state {
                Some(st) => (st.to_string(), ss_addr(f[2]), ss_addr(f[3])),
                None => (f[0].to_string(), ss_addr(f[3]), ss_addr(f[4])),
            }
        })
        .collect()
}

/// With the default tcp_tw_reuse=2, connect() on loopback may take over a
/// TIME_WAIT port older than tcp_tw_reuse_delay (1 s) on a slow run, and
/// the count of TIME_WAIT would fall short: every test turns it off.
const NO_TW_REUSE: (&str, &str) = ("net.ipv4.tcp_tw_reuse", "0");

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}
fn v6(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::LOCALHOST, port))
}

/// Close `first`, then close `second` once it has seen `first`'s FIN.
/// Closing both at once can, on a loaded machine where loopback softirqs
/// are deferred, cross the FINs (simultaneous close, RFC 793 CLOSING) and
/// leave TIME_WAIT on both ends; waiting for EOF makes `first` the only
/// TIME_WAIT holder.
fn close_in_order(first: TcpStream, second: TcpStream) {
    drop(first);
    close_after_eof(second);
}

/// Wait (bounded, 5 s) until the peer's FIN has arrived, then close.
fn close_after_eof(s: TcpStream) {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = (&s).read(&mut [0u8; 16]).expect("EOF from the peer");
    assert_eq!(n, 0, "expected EOF");
}

/// Sockets kept open by a test while it reads the table.
struct Table {
    _keep: Vec<TcpStream>,
    _listeners: Vec<TcpListener>,
}

/// Listeners on 127.0.0.1:7001 and [::1]:7002; per family: established
/// pairs, client-closed connections (client TIME_WAIT), server-closed
/// connections (server TIME_WAIT), and client-closed connections whose
/// server has not closed (client FIN_WAIT2 mini socket, server CLOSE_WAIT).
/// Returns once the kernel shows the expected TIME_WAIT and FIN_WAIT2.
fn build_table() -> Table {
    let mut keep = Vec::new();
    let mut listeners = Vec::new();
    let mut tw = 0;
    let mut fw2 = 0;
    for addr in [v4(7001), v6(7002)] {
        let l = TcpListener::bind(addr).unwrap();
        let pair = || {
            let c = TcpStream::connect(addr).unwrap();
            let (s, _) = l.accept().unwrap();
            (c, s)
        };
        for _ in 0..2 {
            let (c, s) = pair();
            keep.push(c);
            keep.push(s);
        }
        for _ in 0..3 {
            let (c, s) = pair();
            close_in_order(c, s);
            tw += 1;
        }
        for _ in 0..2 {
            let (c, s) = pair();
            close_in_order(s, c);
            tw += 1;
        }
        let (c, s) = pair();
        drop(c);
        keep.push(s);
        fw2 += 1;
        listeners.push(l);
    }
    wait_until(
        Duration::from_secs(5),
        "TIME_WAIT and FIN_WAIT2 to settle",
        || {
            (count(&[TcpState::TimeWait]) == tw
                && count(&[TcpState::FinWait2]) == fw2
                && count(&[TcpState::LastAck, TcpState::FinWait1, TcpState::Closing]) == 0)
                .then_some(())
        },
    );
    Table {
        _keep: keep,
        _listeners: listeners,
    }
}

netns_test! {
    fn list_matches_ss_and_time_wait_counts_down(sysctls = [NO_TW_REUSE], tools = ["ss"]) {
        let _t = build_table();
        let (ours, socks) = twlab_rows(&[]);
        let theirs = ss_rows(&[], None);
        assert_eq!(ours, theirs, "twlab ss and ss -tan disagree");
        // Both families, and both sides of TIME_WAIT are present.
        let tw: Vec<&Row> = ours.iter().filter(|r| r.0 == "TIME-WAIT").collect();
        assert_eq!(tw.len(), 10);
        assert!(tw.iter().any(|r| r.1.is_ipv6()));
        assert!(
            tw.iter().any(|r| r.1.port() == 7001),
            "server-side TIME_WAIT"
        );
        assert!(
            tw.iter().any(|r| r.2.port() == 7001),
            "client-side TIME_WAIT"
        );
        assert_eq!(ours.iter().filter(|r| r.0 == "FIN-WAIT-2").count(), 2);

        let left = |socks: &[Value]| -> BTreeMap<(String, String), u64> {
            socks
                .iter()
                .filter(|s| s["state"] == "time-wait")
                .map(|s| {
                    assert_eq!(s["timer"]["kind"], "timewait");
                    assert!(s["inode"].is_null() && s["uid"].is_null());
                    let ms = s["timer"]["expires_ms"].as_u64().unwrap();
                    assert!(ms > 0 && ms <= 60_000, "time left {ms} ms");
                    ((s["local"].to_string(), s["peer"].to_string()), ms)
                })
                .collect()
        };
        let first = left(&socks);
        // A short pause so the countdown can move (not a synchronisation).
        std::thread::sleep(Duration::from_millis(300));
        let (_, socks2) = twlab_rows(&[]);
        let second = left(&socks2);
        assert_eq!(first.len(), 10);
        assert_eq!(
            first.keys().collect::<Vec<_>>(),
            second.keys().collect::<Vec<_>>()
        );
        for (k, a) in &first {
            let b = second[k];
            assert!(
                b < *a,
                "{k:?}: {a} ms then {b} ms; the countdown must decrease"
            );
        }

        // FIN_WAIT2 mini sockets carry the timewait timer too; the library
        // describes them as orphaned.
        let fw2: Vec<_> = diag::dump(&Query::states(StateSet::of(&[TcpState::FinWait2]))).unwrap();
        assert_eq!(fw2.len(), 2);
        for e in &fw2 {
            assert!(e.is_timewait_sock());
            let d = e.describe();
            assert!(d.starts_with("FIN_WAIT2 (orphaned, timewait timer "), "{d}");
        }

        // Text output: ms precision for TIME_WAIT.
        let out = twlab(&["--state", "time-wait"]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 11, "{text}");
        for l in text.lines().skip(1) {
            let i = l.find("timewait ").expect(l);
            let t = l[i + 9..].split_whitespace().next().unwrap();
            let (s, frac) = t.trim_end_matches('s').split_once('.').expect(t);
            assert!(s.parse::<u32>().unwrap() <= 60 && frac.len() == 3, "{l}");
        }
    }
}

netns_test! {
    fn filters_narrow_like_ss(sysctls = [NO_TW_REUSE], tools = ["ss"]) {
        let _t = build_table();
        let cases: &[(&[&str], &[&str], Option<&str>)] = &[
            (
                &["--state", "time-wait"],
                &["state", "time-wait"],
                Some("TIME-WAIT"),
            ),
            (
                &["--state", "fin-wait-2"],
                &["state", "fin-wait-2"],
                Some("FIN-WAIT-2"),
            ),
            (
                &["--state", "established,listening"],
                &["state", "established", "state", "listening"],
                None,
            ),
            (&["--state", "connected"], &["state", "connected"], None),
            (
                &["--state", "synchronized"],
                &["state", "synchronized"],
                None,
            ),
            (&["--state", "bucket"], &["state", "bucket"], None),
            (&["--state", "big"], &["state", "big"], None),
            (
                &["--port", "7001"],
                &["( sport = :7001 or dport = :7001 )"],
                None,
            ),
            (
                &["--state", "time-wait", "--port", "7002"],
                &["state", "time-wait", "( sport = :7002 or dport = :7002 )"],
                Some("TIME-WAIT"),
            ),
            (
                &["--local", "127.0.0.1:7001"],
                &["src", "127.0.0.1:7001"],
                None,
            ),
            (&["--local", "[::1]:7002"], &["src", "[::1]:7002"], None),
            (
                &["--peer", "127.0.0.1:7001"],
                &["dst", "127.0.0.1:7001"],
                None,
            ),
            (&["--peer", "::1"], &["dst", "[::1]"], None),
            (&["--family", "6"], &["-6"], None),
            (
                &["--family", "4", "--state", "time-wait"],
                &["-4", "state", "time-wait"],
                Some("TIME-WAIT"),
            ),
        ];
        let (all, _) = twlab_rows(&[]);
        for (ours_args, ss_args, st) in cases {
            let (ours, _) = twlab_rows(ours_args);
            let theirs = ss_rows(ss_args, *st);
            assert_eq!(ours, theirs, "twlab ss {ours_args:?} vs ss {ss_args:?}");
            assert!(!ours.is_empty(), "{ours_args:?} matched nothing");
            // Connected and big hold everything here (nothing is closed or
            // SYN_RECV), the others narrow.
            if !matches!(ours_args[1], "connected" | "synchronized" | "big") {
                assert!(ours.len() < all.len(), "{ours_args:?} did not narrow");
            }
        }
    }
}

#[test]
fn bad_input_is_one_line_and_non_zero() {
    for args in [
        &["--state", "time_waiting"][..],
        &["--state", "established,nosuch"],
        &["--local", "127.0.0.1:99999"],
        &["--peer", "[::1"],
        &["--local", "localhost:80"],
        &["--family", "5"],
        &["--port", "http"],
        &["--watch=abc"],
    ] {
        let out = twlab(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.starts_with("twlab: error: "), "{err}");
        assert!(out.stdout.is_empty());
    }
    let err = String::from_utf8(twlab(&["--state", "nosuch"]).stderr).unwrap();
    assert!(err.contains("'nosuch'") && err.contains("time-wait") && err.contains("bucket"));
}

/// Make `n` client-closed connections to `to` (client TIME_WAIT), fds
/// bounded by batches.
fn client_closed(l: &TcpListener, n: usize) -> std::io::Result<()> {
    let to = l.local_addr()?;
    let mut left = n;
    while left > 0 {
        let k = left.min(200);
        let mut pairs = Vec::with_capacity(k);
        for _ in 0..k {
            let c = TcpStream::connect(to)?;
            let (s, _) = l.accept()?;
            pairs.push((c, s));
        }
        let (cs, ss): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        drop(cs);
        for s in ss {
            close_after_eof(s);
        }
        left -= k;
    }
    Ok(())
}

netns_test! {
    fn a_dump_larger_than_one_netlink_buffer_comes_back_whole(
        sysctls = [
            ("net.ipv4.ip_local_port_range", "10000 60000"),
            NO_TW_REUSE,
        ],
        tools = ["ss"]
    ) {
        let n = 3_000;
        let l = TcpListener::bind(v4(7200)).unwrap();
        client_closed(&l, n).unwrap();
        wait_until(Duration::from_secs(10), "3,000 TIME_WAIT", || {
            (count(&[TcpState::TimeWait]) == n).then_some(())
        });
        // 3,000 × 88 bytes is ~8 netlink skbs of 32 KiB.
        let (ours, _) = twlab_rows(&["--state", "time-wait"]);
        assert_eq!(ours.len(), n);
        assert_eq!(ours, ss_rows(&["state", "time-wait"], Some("TIME-WAIT")));
        let text = twlab(&["--state", "time-wait"]);
        assert_eq!(
            String::from_utf8(text.stdout).unwrap().lines().count(),
            n + 1
        );
    }
}

netns_test! {
    fn summary_measures_ephemeral_port_exhaustion(
        sysctls = [
            ("net.ipv4.ip_local_port_range", "40000 40199"),
            NO_TW_REUSE,
            ("net.ipv4.tcp_max_tw_buckets", "1000"),
        ]
    ) {
        let l = TcpListener::bind(v4(7100)).unwrap();
        client_closed(&l, 150).unwrap();
        wait_until(Duration::from_secs(5), "150 TIME_WAIT", || {
            (count(&[TcpState::TimeWait]) == 150).then_some(())
        });
        let out = twlab(&["--summary", "--json"]);
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ip_local_port_range"], serde_json::json!([40000, 40199]));
        let u = &v["port_use"][0];
        assert_eq!(u["peer"], "127.0.0.1:7100");
        assert_eq!(u["local_addr"], "127.0.0.1");
        assert_eq!(u["time_wait"], 150);
        assert_eq!(u["ephemeral_ports"], 200);
        assert_eq!(u["percent_time_wait"], 75.0);
        assert_eq!(v["tw_buckets"]["limit"], 1000);
        assert_eq!(v["tw_buckets"]["in_use"], 150);
        assert_eq!(v["time_wait_by_peer"][0]["key"], "127.0.0.1:7100");
        assert_eq!(v["time_wait_by_peer"][0]["count"], 150);
        assert!(v["warnings"].as_array().unwrap().is_empty());

        // Take the rest of the range: the summary must say it is
        // exhausted, and the kernel must agree (EADDRNOTAVAIL).
        client_closed(&l, 50).unwrap();
        wait_until(Duration::from_secs(5), "200 TIME_WAIT", || {
            (count(&[TcpState::TimeWait]) == 200).then_some(())
        });
        let next = TcpStream::connect(v4(7100));
        assert_eq!(
            next.err().and_then(|e| e.raw_os_error()),
            Some(libc::EADDRNOTAVAIL)
        );
        let out = twlab(&["--summary"]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(
                "127.0.0.1 -> 127.0.0.1:7100: 200 of 200 ephemeral ports (100.0%) in TIME_WAIT"
            ),
            "{text}"
        );
        assert!(text.contains("EADDRNOTAVAIL"), "{text}");
        assert!(
            text.contains("tcp_max_tw_buckets: 200 of 1,000 in use (20.0%)"),
            "{text}"
        );
        assert!(text.contains("TIME-WAIT"), "{text}");
    }
}

netns_test! {
    fn watch_is_bounded_and_marks_changes(sysctls = [NO_TW_REUSE]) {
        use std::io::{BufRead, BufReader};
        use std::io::Write as _;
        let l = TcpListener::bind(v4(7300)).unwrap();
        // A connection with 5 bytes its server end never reads, open
        // before the watch starts: when it goes, its row keeps them.
        let l2 = TcpListener::bind(v4(7301)).unwrap();
        let mut c2 = TcpStream::connect(v4(7301)).unwrap();
        let (s2, _) = l2.accept().unwrap();
        c2.write_all(b"hello").unwrap();
        wait_until(Duration::from_secs(5), "5 bytes queued", || {
            (s2.peek(&mut [0u8; 8]).ok()? == 5).then_some(())
        });
        let frames = 10;
        let mut child = Command::new(bin())
            .args(["ss", "--watch=100", "--iterations", &frames.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut text = String::new();
        let mut next = |text: &mut String| -> Option<String> {
            let l = lines.next()?.unwrap();
            text.push_str(&l);
            text.push('\n');
            Some(l)
        };
        // Synchronise on the output: connect once the first frame is out,
        // close once a frame has shown the connection as new.
        while let Some(l) = next(&mut text) {
            if l.starts_with("twlab ss --watch:") {
                break;
            }
        }
        let c = TcpStream::connect(v4(7300)).unwrap();
        let (s, _) = l.accept().unwrap();
        while let Some(l) = next(&mut text) {
            if l.starts_with("+ ESTAB") {
                break;
            }
        }
        drop(c);
        drop(s);
        drop(s2);
        drop(c2);
        while next(&mut text).is_some() {}
        assert!(child.wait().unwrap().success());
        // Gone, with the values it had last (Recv-Q 5), not zeros.
        let gone = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&"-") && cols.get(4) == Some(&"127.0.0.1:7301"))
            .unwrap_or_else(|| panic!("no gone row of the server end :7301 in {text}"));
        assert_eq!(&gone[1..4], ["ESTAB", "5", "0"], "{gone:?}");
        // Nobody can press q on a pipe: the header does not offer it.
        assert!(!text.contains("quits"), "{text}");
        assert_eq!(text.matches("twlab ss --watch:").count(), frames, "{text}");
        assert!(text.contains("+ ESTAB"), "{text}");
        // The client end moved to TIME_WAIT, the server end went away.
        assert!(text.contains("* TIME-WAIT"), "{text}");
        // (Its last state seen is ESTAB, or CLOSE-WAIT if a refresh fell
        // between the two closes.)
        assert!(
            text.lines()
                .any(|l| l.starts_with("- ") && l.contains(" 127.0.0.1:7300 ")),
            "{text}"
        );
        assert!(
            !text.contains('\x1b'),
            "no ANSI codes when stdout is not a terminal"
        );
    }
}

netns_test! {
    fn a_closed_stdout_is_not_an_error(sysctls = [NO_TW_REUSE]) {
        let l = TcpListener::bind(v4(7400)).unwrap();
        client_closed(&l, 2_000).unwrap();
        // Read one line, then close the pipe while twlab still writes.
        let mut child = Command::new(bin())
            .args(["ss"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 16];
        use std::io::Read;
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.is_empty(), "{err}");
        assert!(out.status.success());
    }
}

netns_test! {
    fn processes_are_found_for_full_sockets_only(sysctls = [NO_TW_REUSE]) {
        let l = TcpListener::bind(v4(7500)).unwrap();
        client_closed(&l, 1).unwrap();
        wait_until(Duration::from_secs(5), "one TIME_WAIT", || {
            (count(&[TcpState::TimeWait]) == 1).then_some(())
        });
        let (_, socks) = twlab_rows(&["-p"]);
        let me = u64::from(std::process::id());
        let listener = socks.iter().find(|s| s["state"] == "listening").unwrap();
        let procs = listener["processes"].as_array().unwrap();
        assert!(
            procs
                .iter()
                .any(|p| p["pid"] == me && p["name"].is_string()),
            "{listener}"
        );
        assert!(listener["inode"].as_u64().unwrap() > 0);
        let tw = socks.iter().find(|s| s["state"] == "time-wait").unwrap();
        assert!(tw.get("processes").is_none(), "{tw}");
        // Without -p no scan is done.
        let (_, socks) = twlab_rows(&[]);
        assert!(socks.iter().all(|s| s.get("processes").is_none()));
        let text = String::from_utf8(twlab(&["-p", "--state", "listening"]).stdout).unwrap();
        assert!(text.contains(&format!("(pid={me})")), "{text}");
    }
}

/// A private tmux server (its own socket), killed on drop so a failed
/// assertion leaves nothing running.
struct Tmux {
    sock: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.sock])
            .args(args)
            .output()
            .unwrap()
    }

    /// The pane once it shows `what` (bounded, 10 s).
    fn pane_showing(&self, what: &str) -> String {
        wait_until(
            Duration::from_secs(10),
            &format!("{what:?} in the pane"),
            || {
                let p =
                    String::from_utf8(self.run(&["capture-pane", "-p", "-t", "w"]).stdout).unwrap();
                p.contains(what).then_some(p)
            },
        )
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

netns_test! {
    /// The interactive path: a real terminal (tmux), raw mode, `q` quits and
    /// the terminal is restored. Skipped without tmux.
    fn watch_in_a_terminal_quits_on_q(sysctls = [NO_TW_REUSE], tools = ["tmux"]) {
        let _l = TcpListener::bind(v4(7600)).unwrap();
        // Started from this thread, so the tmux server and the shell it
        // runs live in this namespace.
        let tmux = Tmux {
            sock: format!("twlab-ss-test-{}", std::process::id()),
        };
        let cmd = format!(
            "{} ss --watch=100; echo EXIT=$?; stty -a; echo STTY-DONE; sleep 20",
            bin().display()
        );
        let o = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            "150",
            "-y",
            "30",
            &cmd,
        ]);
        assert!(o.status.success(), "{o:?}");
        let p = tmux.pane_showing("127.0.0.1:7600");
        assert!(p.contains("twlab ss --watch:") && p.contains("LISTEN"), "{p}");
        assert!(p.contains("q or Ctrl-C quits"), "{p}");
        tmux.run(&["send-keys", "-t", "w", "q"]);
        let after = tmux.pane_showing("STTY-DONE");
        assert!(after.contains("EXIT=0"), "{after}");
        // Left the alternate screen and restored canonical mode and echo.
        assert!(!after.contains("twlab ss --watch:"), "{after}");
        let words: Vec<&str> = after.split_whitespace().collect();
        for flag in ["icanon", "echo", "isig"] {
            assert!(words.contains(&flag), "{flag} not restored: {after}");
        }
    }
}

/// The pid of the one child of `parent` (bounded wait: it may not have
/// started yet).
fn only_child(parent: u32) -> i32 {
    wait_until(Duration::from_secs(10), "the shell's child", || {
        let p = format!("/proc/{parent}/task/{parent}/children");
        let kids = std::fs::read_to_string(p).ok()?;
        kids.split_whitespace().next()?.parse().ok()
    })
}

netns_test! {
    /// SIGTERM, SIGHUP and SIGQUIT to a watch on a real terminal: the
    /// alternate screen is left, the cursor shown, termios restored, one
    /// line printed and the exit code is 128 + the signal's number.
    fn watch_in_a_terminal_restores_it_on_stop_signals(
        sysctls = [NO_TW_REUSE],
        tools = ["tmux"]
    ) {
        use nix::sys::signal::Signal::{SIGHUP, SIGQUIT, SIGTERM};
        let _l = TcpListener::bind(v4(7610)).unwrap();
        for (sig, code) in [(SIGTERM, 143), (SIGHUP, 129), (SIGQUIT, 131)] {
            let tmux = Tmux {
                sock: format!("twlab-ss-sig-{}-{}", std::process::id(), sig as i32),
            };
            let cmd = format!(
                "{} ss --watch=100; echo EXIT=$?; stty -a; echo STTY-DONE; sleep 20",
                bin().display()
            );
            let o = tmux.run(&[
                "new-session", "-d", "-s", "w", "-x", "150", "-y", "30", &cmd,
            ]);
            assert!(o.status.success(), "{o:?}");
            tmux.pane_showing("127.0.0.1:7610");
            let shell = String::from_utf8(
                tmux.run(&["display-message", "-p", "-t", "w", "#{pane_pid}"]).stdout,
            )
            .unwrap();
            let pid = only_child(shell.trim().parse().unwrap());
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
            let after = tmux.pane_showing("STTY-DONE");
            assert!(after.contains(&format!("EXIT={code}")), "{sig}: {after}");
            assert!(
                after.contains(&format!("twlab: interrupted by {sig}")),
                "{sig}: {after}"
            );
            assert!(!after.contains("twlab ss --watch:"), "{sig}: {after}");
            let words: Vec<&str> = after.split_whitespace().collect();
            for flag in ["icanon", "echo", "isig"] {
                assert!(words.contains(&flag), "{sig}: {flag} not restored: {after}");
            }
            let cursor = tmux.run(&["display-message", "-p", "-t", "w", "#{cursor_flag}"]);
            assert_eq!(String::from_utf8_lossy(&cursor.stdout).trim(), "1", "{sig}: cursor hidden");
        }
    }
}

netns_test! {
    /// Not on a terminal, --watch prints the first table whole and then
    /// only what changed: 300 idle listeners are printed once, not once
    /// per refresh.
    fn watch_to_a_pipe_prints_only_changes(sysctls = [NO_TW_REUSE]) {
        let listeners: Vec<TcpListener> =
            (0..300).map(|i| TcpListener::bind(v4(7700 + i)).unwrap()).collect();
        let frames = 5;
        let o = Command::new(bin())
            .args(["ss", "--watch=20", "--state", "listening"])
            .args(["--iterations", &frames.to_string()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let text = String::from_utf8(o.stdout).unwrap();
        assert_eq!(text.matches("twlab ss --watch:").count(), frames, "{text}");
        let rows = text.lines().filter(|l| l.contains("LISTEN")).count();
        assert_eq!(rows, listeners.len(), "{text}");
        assert_eq!(text.matches("300 sockets").count(), frames, "{text}");
    }
}

netns_test! {
    /// A process that names itself with an escape sequence (here a shell
    /// writing its /proc/PID/comm) is shown escaped by `ss -p`, never raw;
    /// JSON carries the name as it is (serde escapes it).
    fn process_names_are_escaped(sysctls = [NO_TW_REUSE]) {
        use std::os::fd::OwnedFd;
        let l = TcpListener::bind(v4(7650)).unwrap();
        let name = "\x1b]0;x\x07";
        // The shell holds the listener as its stdin.
        let mut child = Command::new("sh")
            .args(["-c", "printf '\\033]0;x\\007' > /proc/$$/comm; exec 9<&0; read x <&9 || true; sleep 30"])
            .stdin(Stdio::from(OwnedFd::from(l)))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let comm = format!("/proc/{}/comm", child.id());
        wait_until(Duration::from_secs(5), "the renamed shell", || {
            (std::fs::read_to_string(&comm).ok()?.trim_end_matches('\n') == name).then_some(())
        });
        let out = twlab(&["-p", "--state", "listening", "--port", "7650"]);
        let (_, socks) = twlab_rows(&["-p", "--state", "listening", "--port", "7650"]);
        let _ = child.kill();
        let _ = child.wait();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(
            text.contains(&format!("\\u001b]0;x\\u0007(pid={})", child.id())),
            "{text}"
        );
        let procs = socks[0]["processes"].as_array().unwrap();
        assert!(procs.iter().any(|p| p["name"] == name), "{procs:?}");
    }
}

/// Set a sysctl of the calling thread's namespace.
fn set_sysctl(name: &str, value: &str) {
    twlab::sysctl::write(&twlab::sysctl::Sysctl::new(name, value)).unwrap();
}

netns_test! {
    /// A reserved port that still holds a TIME_WAIT is not one connect()
    /// could pick: counted neither as used nor as available, so the share
    /// never passes 100 % (it said "2 of 1 ephemeral ports (200.0%)").
    fn summary_leaves_reserved_ports_out(
        sysctls = [("net.ipv4.ip_local_port_range", "40000 40001"), NO_TW_REUSE]
    ) {
        let l = TcpListener::bind(v4(7110)).unwrap();
        client_closed(&l, 2).unwrap();
        wait_until(Duration::from_secs(5), "2 TIME_WAIT", || {
            (count(&[TcpState::TimeWait]) == 2).then_some(())
        });
        set_sysctl("net.ipv4.ip_local_reserved_ports", "40001");
        let out = twlab(&["--summary", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let u = &v["port_use"][0];
        assert_eq!(u["time_wait"], 1, "{u}");
        assert_eq!(u["ephemeral_ports"], 1, "{u}");
        assert_eq!(u["percent_time_wait"], 100.0, "{u}");
        let text = String::from_utf8(twlab(&["--summary"]).stdout).unwrap();
        assert!(
            text.contains("127.0.0.1 -> 127.0.0.1:7110: 1 of 1 ephemeral ports (100.0%) in TIME_WAIT"),
            "{text}"
        );
    }
}

netns_test! {
    /// With tcp_tw_reuse 1 (or 2 on loopback) and timestamps, a range full
    /// of TIME_WAIT is not exhausted: connect() takes them over once older
    /// than tcp_tw_reuse_delay. The summary says so instead of warning.
    fn summary_counts_tw_reuse(
        sysctls = [
            ("net.ipv4.ip_local_port_range", "40000 40199"),
            NO_TW_REUSE,
            ("net.ipv4.tcp_timestamps", "1"),
        ]
    ) {
        let l = TcpListener::bind(v4(7120)).unwrap();
        client_closed(&l, 200).unwrap();
        wait_until(Duration::from_secs(5), "200 TIME_WAIT", || {
            (count(&[TcpState::TimeWait]) == 200).then_some(())
        });
        let v: Value = serde_json::from_slice(&twlab(&["--summary", "--json"]).stdout).unwrap();
        assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{v}");
        if std::path::Path::new("/proc/sys/net/ipv4/tcp_tw_reuse_delay").exists() {
            set_sysctl("net.ipv4.tcp_tw_reuse_delay", "1");
        }
        for reuse in ["1", "2"] {
            set_sysctl("net.ipv4.tcp_tw_reuse", reuse);
            // Once the TIME_WAITs are older than the delay, the summary
            // calls them reusable and does not warn...
            let v = wait_until(Duration::from_secs(5), "reusable TIME_WAIT", || {
                let v: Value =
                    serde_json::from_slice(&twlab(&["--summary", "--json"]).stdout).unwrap();
                let u = &v["port_use"][0];
                (u["time_wait_reusable"] == u["time_wait"]).then_some(v)
            });
            assert!(v["warnings"].as_array().unwrap().is_empty(), "{reuse}: {v}");
            // ... and the kernel agrees: connect() gets a port of the range.
            let c = TcpStream::connect(v4(7120)).unwrap();
            assert!((40000..=40199).contains(&c.local_addr().unwrap().port()));
            let text = String::from_utf8(twlab(&["--summary"]).stdout).unwrap();
            assert!(text.contains("reusable by connect() now (tcp_tw_reuse)"), "{text}");
            assert!(!text.contains("WARNING"), "{text}");
        }
    }
}

netns_test! {
    /// `--state closed` lists bound-only sockets (bind() without listen()
    /// or connect()): it asks for idiag_states bit 13 (TCP_BOUND_INACTIVE),
    /// as iproute2's `ss --bound-inactive` does; `all` does too, the
    /// `connected` group does not. Where the installed `ss` knows `-B`
    /// the rows must match it; an older one (no bit 13) must match every
    /// other row.
    fn state_closed_lists_bound_only_sockets(sysctls = [NO_TW_REUSE], tools = ["ss"]) {
        let bound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .unwrap();
        bound.bind(&v4(7400).into()).unwrap();
        let bound6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)
            .unwrap();
        bound6.set_only_v6(true).unwrap();
        bound6.bind(&v6(7402).into()).unwrap();
        let l = TcpListener::bind(v4(7401)).unwrap();
        let c = TcpStream::connect(v4(7401)).unwrap();
        let (a, _) = l.accept().unwrap();
        let closed = column_of(TcpState::Closed.ss_name());
        let unspec4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let unspec6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        let expected: BTreeSet<Row> = [
            (closed.clone(), v4(7400), unspec4),
            (closed.clone(), v6(7402), unspec6),
        ]
        .into();
        let (ours, _) = twlab_rows(&["--state", "closed"]);
        assert_eq!(ours, expected);
        let (all, _) = twlab_rows(&[]);
        assert!(expected.is_subset(&all), "{all:?}");
        assert_eq!(all.len(), 5, "{all:?}");
        let (conn, _) = twlab_rows(&["--state", "connected"]);
        assert!(conn.is_disjoint(&expected), "{conn:?}");
        assert_eq!(conn.len(), 2, "{conn:?}");
        let knows_b = Command::new("ss").args(["-tanH", "-B"]).output().unwrap();
        if knows_b.status.success() {
            assert_eq!(ours, ss_rows(&["-B"], Some(&closed)));
        } else {
            // This ss predates TCP_BOUND_INACTIVE: it never asks for bit 13.
            let others: BTreeSet<Row> = all.difference(&expected).cloned().collect();
            assert_eq!(others, ss_rows(&[], None));
        }
        drop((bound, bound6, c, a, l));
    }
}

/// `twlab ss --summary --json`.
fn summary_json() -> Value {
    let out = twlab(&["--summary", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn summary_text() -> String {
    let out = twlab(&["--summary"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

netns_test! {
    /// Listeners and bound-only sockets inside a small range leave
    /// connect() no port for any destination (it skips ports whose bucket
    /// came from bind()): the summary warns, and the kernel agrees.
    fn summary_warns_when_listeners_fill_the_range(
        sysctls = [("net.ipv4.ip_local_port_range", "40000 40009"), NO_TW_REUSE]
    ) {
        let listeners: Vec<TcpListener> =
            (40000..40008).map(|p| TcpListener::bind(v4(p)).unwrap()).collect();
        let bound: Vec<socket2::Socket> = (40008..40010)
            .map(|p| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                s.bind(&v4(p).into()).unwrap();
                s
            })
            .collect();
        let target = TcpListener::bind(v4(7200)).unwrap();
        let next = TcpStream::connect(v4(7200));
        assert_eq!(next.err().and_then(|e| e.raw_os_error()), Some(libc::EADDRNOTAVAIL));
        let v = summary_json();
        let u = &v["range_use"];
        assert_eq!(u["listeners"], 8, "{u}");
        assert_eq!(u["bound_only"], 2, "{u}");
        assert_eq!(u["usable_new_peer"], 0, "{u}");
        let w = v["warnings"].as_array().unwrap();
        assert_eq!(w.len(), 1, "{v}");
        let w = w[0].as_str().unwrap();
        assert!(w.starts_with("listeners (8) and bound-only sockets (2) hold 10 of 10 ephemeral ports"), "{w}");
        assert!(w.contains("EADDRNOTAVAIL") && w.contains("out of the ephemeral range"), "{w}");
        let text = summary_text();
        assert!(text.contains("occupants: 8 listening, 2 bound only, 0 held by connections, 0 reserved, 0 empty; connect() to a new peer can use 0"), "{text}");
        assert!(text.contains("WARNING: listeners (8)"), "{text}");
        assert!(!text.contains("no TIME_WAIT holds"), "{text}");
        drop((listeners, bound, target));
    }
}

netns_test! {
    /// Held connections fill every port toward one peer: that pair is
    /// exhausted (4-tuples held by open connections, not TIME_WAIT) while
    /// another peer still gets a port; the advice is about source addresses
    /// and keeping connections, not "more peer ports".
    fn summary_warns_when_held_connections_fill_the_ports_to_one_peer(
        sysctls = [("net.ipv4.ip_local_port_range", "40000 40003"), NO_TW_REUSE]
    ) {
        let l = TcpListener::bind(v4(7300)).unwrap();
        let other = TcpListener::bind(v4(7301)).unwrap();
        let held: Vec<(TcpStream, TcpStream)> = (0..4)
            .map(|_| {
                let c = TcpStream::connect(v4(7300)).unwrap();
                (c, l.accept().unwrap().0)
            })
            .collect();
        let next = TcpStream::connect(v4(7300));
        assert_eq!(next.err().and_then(|e| e.raw_os_error()), Some(libc::EADDRNOTAVAIL));
        let elsewhere = TcpStream::connect(v4(7301)).unwrap();
        drop(elsewhere);
        let v = summary_json();
        let p = &v["range_use"]["peers"][0];
        assert_eq!(p["peer"], "127.0.0.1:7300", "{v}");
        assert_eq!(p["established"], 4, "{p}");
        assert_eq!(p["capacity"]["tuple_busy"], 4, "{p}");
        assert_eq!(p["capacity"]["usable"], 0, "{p}");
        assert_eq!(v["range_use"]["usable_new_peer"], 4, "{v}");
        let w: Vec<&str> = v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("127.0.0.1 -> 127.0.0.1:7300: ephemeral ports nearly exhausted (0 free of 4: 4 held by open connections (4 ESTABLISHED), 0 in TIME_WAIT not reusable"),
            "{}", w[0]
        );
        assert!(w[0].contains("add source addresses"), "{}", w[0]);
        let text = summary_text();
        assert!(!text.contains("spread over more peer ports"), "{text}");
        assert!(text.contains("127.0.0.1 -> 127.0.0.1:7300: 0 usable of 4 (4 held by open connections, 4 of them ESTABLISHED"), "{text}");
        drop((held, other));
    }
}

netns_test! {
    /// Server-side TIME_WAIT (the server closed first) is one line per
    /// listening port, not one per client port — also once the listener
    /// is gone.
    fn summary_groups_server_side_time_wait_by_listening_port(sysctls = [NO_TW_REUSE]) {
        let mut l = Some(TcpListener::bind(v4(7400)).unwrap());
        for _ in 0..20 {
            let c = TcpStream::connect(v4(7400)).unwrap();
            let (s, _) = l.as_ref().unwrap().accept().unwrap();
            close_in_order(s, c);
        }
        wait_until(Duration::from_secs(5), "20 TIME_WAIT", || {
            (count(&[TcpState::TimeWait]) == 20).then_some(())
        });
        for listening in [true, false] {
            let v = summary_json();
            assert_eq!(v["time_wait_server_side"], 20, "{listening}: {v}");
            assert_eq!(
                v["time_wait_server_side_by_port"],
                serde_json::json!([{"key": 7400, "count": 20}]),
                "{listening}: {v}"
            );
            assert_eq!(v["time_wait_client_side_by_peer"], serde_json::json!([]), "{v}");
            // The old field stays as it was: every TIME_WAIT by peer.
            assert_eq!(v["time_wait_by_peer"].as_array().unwrap().len(), 10, "{v}");
            let text = summary_text();
            assert!(
                text.contains("server side (accepted connections), by local listening port: 20"),
                "{text}"
            );
            assert!(!text.contains("client side, top peers"), "{text}");
            if listening {
                drop(l.take());
                wait_until(Duration::from_secs(5), "no listener", || {
                    (count(&[TcpState::Listen]) == 0).then_some(())
                });
            }
        }
    }
}
