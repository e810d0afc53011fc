//! `twlab ss` on real sockets, checked against iproute2's `ss` in the same
//! network namespace.
//!
//! Each test builds its own namespace on its own thread
//! (`netns::run_in_fresh`) and spawns `twlab` and `ss` from inside it: a
//! child process starts in the namespace of the thread that forked it, so
//! tests run in parallel without seeing each other's sockets.

use assert_cmd::Command;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use twlab::diag::{self, Query, StateSet, TcpState};
use twlab::netns::{self, Sysctl};

/// (ss state column, local, peer)
type Row = (String, SocketAddr, SocketAddr);

fn skip_reason() -> Option<String> {
    if let Err(why) = netns::can_unshare() {
        return Some(format!("cannot create network namespaces ({why})"));
    }
    if std::process::Command::new("ss").arg("-V").output().is_err() {
        return Some("iproute2's ss is not installed".into());
    }
    None
}

macro_rules! need_netns {
    () => {
        if let Some(why) = skip_reason() {
            // Straight to stderr: eprintln! is hidden for passing tests.
            let _ = writeln!(std::io::stderr(), "skipped: {why}");
            return;
        }
    };
}

fn twlab(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("twlab")
        .unwrap()
        .arg("ss")
        .args(args)
        .output()
        .unwrap()
}

fn column_of(ss_name: &str) -> String {
    TcpState::ALL
        .iter()
        .find(|s| s.ss_name() == ss_name)
        .unwrap_or_else(|| panic!("unknown state {ss_name}"))
        .ss_column()
        .to_string()
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
                column_of(s["state"].as_str().unwrap()),
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
    let out = std::process::Command::new("ss")
        .arg("-tanH")
        .args(args)
        .output()
        .unwrap();
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

fn count(states: &[TcpState]) -> usize {
    diag::dump(&Query::states(StateSet::of(states)))
        .unwrap()
        .len()
}

/// Poll the kernel (bounded) until `pred` holds.
fn wait_until(what: &str, timeout: Duration, pred: impl Fn() -> bool) {
    let end = Instant::now() + timeout;
    while !pred() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// With the default tcp_tw_reuse=2, connect() on loopback may take over a
/// TIME_WAIT port older than tcp_tw_reuse_delay (1 s) on a slow run, and
/// the count of TIME_WAIT would fall short: turn it off.
fn no_tw_reuse() -> Vec<Sysctl> {
    vec![Sysctl::new("net.ipv4.tcp_tw_reuse", "0")]
}

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
        "TIME_WAIT and FIN_WAIT2 to settle",
        Duration::from_secs(5),
        || {
            count(&[TcpState::TimeWait]) == tw
                && count(&[TcpState::FinWait2]) == fw2
                && count(&[TcpState::LastAck, TcpState::FinWait1, TcpState::Closing]) == 0
        },
    );
    Table {
        _keep: keep,
        _listeners: listeners,
    }
}

#[test]
fn list_matches_ss_and_time_wait_counts_down() {
    need_netns!();
    netns::run_in_fresh(no_tw_reuse(), || {
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
    })
    .unwrap();
}

#[test]
fn filters_narrow_like_ss() {
    need_netns!();
    netns::run_in_fresh(no_tw_reuse(), || {
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
    })
    .unwrap();
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

#[test]
fn a_dump_larger_than_one_netlink_buffer_comes_back_whole() {
    need_netns!();
    netns::run_in_fresh(
        vec![
            Sysctl::new("net.ipv4.ip_local_port_range", "10000 60000"),
            Sysctl::new("net.ipv4.tcp_tw_reuse", "0"),
            Sysctl::new("net.ipv4.tcp_rfc1337", "1"),
        ],
        || {
            let n = 3_000;
            let l = TcpListener::bind(v4(7200)).unwrap();
            client_closed(&l, n).unwrap();
            wait_until("3,000 TIME_WAIT", Duration::from_secs(10), || {
                count(&[TcpState::TimeWait]) == n
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
        },
    )
    .unwrap();
}

#[test]
fn summary_measures_ephemeral_port_exhaustion() {
    need_netns!();
    netns::run_in_fresh(
        vec![
            Sysctl::new("net.ipv4.ip_local_port_range", "40000 40199"),
            Sysctl::new("net.ipv4.tcp_tw_reuse", "0"),
            Sysctl::new("net.ipv4.tcp_rfc1337", "1"),
            Sysctl::new("net.ipv4.tcp_max_tw_buckets", "1000"),
        ],
        || {
            let l = TcpListener::bind(v4(7100)).unwrap();
            client_closed(&l, 150).unwrap();
            wait_until("150 TIME_WAIT", Duration::from_secs(5), || {
                count(&[TcpState::TimeWait]) == 150
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
            wait_until("200 TIME_WAIT", Duration::from_secs(5), || {
                count(&[TcpState::TimeWait]) == 200
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
        },
    )
    .unwrap();
}

#[test]
fn watch_is_bounded_and_marks_changes() {
    need_netns!();
    netns::run_in_fresh(no_tw_reuse(), || {
        use std::io::{BufRead, BufReader};
        let l = TcpListener::bind(v4(7300)).unwrap();
        let frames = 10;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_twlab"))
            .args(["ss", "--watch=100", "--iterations", &frames.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
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
        while next(&mut text).is_some() {}
        assert!(child.wait().unwrap().success());
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
    })
    .unwrap();
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    need_netns!();
    netns::run_in_fresh(no_tw_reuse(), || {
        let l = TcpListener::bind(v4(7400)).unwrap();
        client_closed(&l, 2_000).unwrap();
        // Read one line, then close the pipe while twlab still writes.
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_twlab"))
            .args(["ss"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
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
    })
    .unwrap();
}

#[test]
fn processes_are_found_for_full_sockets_only() {
    need_netns!();
    netns::run_in_fresh(no_tw_reuse(), || {
        let l = TcpListener::bind(v4(7500)).unwrap();
        client_closed(&l, 1).unwrap();
        wait_until("one TIME_WAIT", Duration::from_secs(5), || {
            count(&[TcpState::TimeWait]) == 1
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
    })
    .unwrap();
}

/// The interactive path: a real terminal (tmux), raw mode, `q` quits and
/// the terminal is restored. Skipped without tmux.
#[test]
fn watch_in_a_terminal_quits_on_q() {
    need_netns!();
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        let _ = writeln!(
            std::io::stderr(),
            "skipped watch_in_a_terminal_quits_on_q: tmux is not installed"
        );
        return;
    }
    netns::run_in_fresh(no_tw_reuse(), || {
        let l = TcpListener::bind(v4(7600)).unwrap();
        // A private tmux server, started from this thread, so it and the
        // shell it runs live in this namespace.
        let sock = format!("twlab-ss-test-{}", std::process::id());
        let tmux = |args: &[&str]| {
            std::process::Command::new("tmux")
                .args(["-L", &sock])
                .args(args)
                .output()
                .unwrap()
        };
        let cmd = format!(
            "{} ss --watch=100; echo EXIT=$?; stty -a; echo STTY-DONE; sleep 20",
            env!("CARGO_BIN_EXE_twlab")
        );
        let o = tmux(&[
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
        let pane = || String::from_utf8(tmux(&["capture-pane", "-p", "-t", "w"]).stdout).unwrap();
        let wait_pane = |what: &str| -> String {
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                let p = pane();
                if p.contains(what) || Instant::now() > end {
                    return p;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let p = wait_pane("127.0.0.1:7600");
        let shown = p.contains("twlab ss --watch:") && p.contains("LISTEN");
        tmux(&["send-keys", "-t", "w", "q"]);
        let after = wait_pane("STTY-DONE");
        tmux(&["kill-server"]);
        drop(l);
        assert!(shown, "{p}");
        assert!(after.contains("EXIT=0"), "{after}");
        // Left the alternate screen and restored canonical mode and echo.
        assert!(!after.contains("twlab ss --watch:"), "{after}");
        let words: Vec<&str> = after.split_whitespace().collect();
        for flag in ["icanon", "echo", "isig"] {
            assert!(words.contains(&flag), "{flag} not restored: {after}");
        }
    })
    .unwrap();
}
