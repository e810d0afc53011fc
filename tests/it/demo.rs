//! `twlab demo`, run as a user runs it, inside fresh network namespaces
//! whose sysctls the test sets.

use crate::common;

use common::*;
use serde_json::Value;

/// `twlab demo --json` in the calling thread's namespace: the document
/// and the exit code.
fn demo_json() -> (Value, i32) {
    let o = run(&["demo", "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("demo --json is not JSON ({e}): {err}"));
    (v, o.status.code().unwrap_or(-1))
}

fn row(v: &Value, i: usize) -> &Value {
    &v["rows"][i]
}

/// Every one of the five rows: the model agreed with what the kernel did.
fn assert_every_row_agrees(v: &Value) {
    for i in 0..5 {
        assert_eq!(
            row(v, i)["model_agrees"],
            true,
            "row {}: {}",
            i + 1,
            row(v, i)
        );
    }
}

fn outcome(r: &Value) -> String {
    let o = &r["report"]["outcome"];
    match o["kind"].as_str() {
        Some("ok") => "ok".into(),
        _ => format!(
            "{}: {}",
            o["step"].as_str().unwrap(),
            o["error"]["name"].as_str().unwrap()
        ),
    }
}

netns_test! {
    fn demo_with_timestamps_on(sysctls = [("net.ipv4.tcp_timestamps", "1")]) {
        let (v, code) = demo_json();
        assert_eq!(v["rows"].as_array().unwrap().len(), 5);
        // 1: the client's TIME_WAIT is taken over (bound port + timestamps).
        assert_eq!(outcome(row(&v, 0)), "ok");
        assert_eq!(row(&v, 0)["time_wait_held_by"], "client");
        // 3: server closed first: the server held TIME_WAIT, the SYN got in.
        assert_eq!(outcome(row(&v, 2)), "ok");
        assert_eq!(row(&v, 2)["time_wait_held_by"], "server");
        // 4: RST: no TIME_WAIT anywhere.
        assert_eq!(outcome(row(&v, 3)), "ok");
        assert!(row(&v, 3)["time_wait_held_by"].is_null());
        assert_eq!(row(&v, 3)["report"]["before"]["client"], Value::Null);
        // 5: no SO_REUSEADDR: bind() refuses the port held by TIME_WAIT.
        assert_eq!(outcome(row(&v, 4)), "bind: EADDRINUSE");
        assert_eq!(row(&v, 4)["time_wait_held_by"], "client");
        // Every row: the model agrees with the kernel, and the exit code says so.
        assert_every_row_agrees(&v);
        for i in 0..5 {
            assert!(!row(&v, i)["explanation"].as_str().unwrap().is_empty());
        }
        assert_eq!(code, 0);
        assert_eq!(v["kernel"]["timestamps"], true);
    }
}

netns_test! {
    fn demo_with_timestamps_off(sysctls = [("net.ipv4.tcp_timestamps", "0")]) {
        let (v, code) = demo_json();
        // 1: without timestamps the TIME_WAIT cannot be taken over.
        assert_eq!(outcome(row(&v, 0)), "connect: EADDRNOTAVAIL");
        assert_eq!(row(&v, 0)["time_wait_held_by"], "client");
        assert!(row(&v, 0)["fix"].is_string());
        // 2: before the peer closed: the old 4-tuple is still closing.
        assert_eq!(outcome(row(&v, 1)), "connect: EADDRNOTAVAIL");
        let st = row(&v, 1)["report"]["at_failure"]["client"]["state"]
            .as_str()
            .unwrap();
        assert!(st == "fin-wait-1" || st == "fin-wait-2", "{st}");
        // 3: the server's TIME_WAIT accepts the SYN (sequence numbers suffice).
        assert_eq!(outcome(row(&v, 2)), "ok");
        assert_every_row_agrees(&v);
        assert_eq!(code, 0);
    }
}

netns_test! {
    fn demo_text_shows_the_table_the_rules_and_other_systems() {
        let o = run(&["demo", "--port", "12345"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = String::from_utf8(o.stdout).unwrap();
        for want in [
            "TIME_WAIT held by",
            "tw-takeover-timestamps",
            "EADDRINUSE (98)",
            "TIME_WAIT",
            "net.ipv4.tcp_timestamps",
            "net.ipv4.tcp_tw_reuse",
            "documented, not run here",
            "Windows",
            "BSD/macOS",
            "inet_bind_conflict",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
    }
}

netns_test! {
    /// COLUMNS is honoured off a terminal: at every width each line fits,
    /// no word of the table is split (EADDRNOTAVAIL whole, never
    /// "EADDR|NOTAV|AIL"), and what is left out of a narrow table is said.
    fn demo_fits_the_width_it_is_given() {
        for width in [40usize, 80, 120] {
            let o = std::process::Command::new(bin())
                .args(["demo", "--port", "12346"])
                .env("COLUMNS", width.to_string())
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
            let out = String::from_utf8(o.stdout).unwrap();
            for l in out.lines() {
                assert!(l.chars().count() <= width, "{width}: {l:?} in\n{out}");
            }
            for word in ["EADDRNOTAVAIL", "EADDRINUSE", "tw-takeover-timestamps", "inet_bind_conflict()"] {
                assert!(out.contains(word), "{width}: {word} split or missing in\n{out}");
            }
        }
        let o = std::process::Command::new(bin())
            .args(["demo", "--port", "12346"])
            .env("COLUMNS", "80")
            .output()
            .unwrap();
        let out = String::from_utf8(o.stdout).unwrap();
        assert!(out.contains("(left out at 80 columns:"), "{out}");
    }
}

netns_test! {
    fn demo_ipv6(sysctls = [("net.ipv4.tcp_timestamps", "0")]) {
        let o = run(&["demo", "--ipv6", "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        // net.ipv4.tcp_timestamps governs IPv6 TCP too.
        assert_eq!(outcome(row(&v, 0)), "connect: EADDRNOTAVAIL");
        assert!(
            row(&v, 0)["report"]["client_addr"]
                .as_str()
                .unwrap()
                .starts_with("[::1]")
        );
        assert_every_row_agrees(&v);
    }
}

#[test]
fn demo_port_in_use() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let o = run(&["demo", "--port", &port]);
    let line = one_line_failure(&o);
    assert!(
        line.contains("already in use") || line.contains("EADDRINUSE"),
        "{line}"
    );
}

/// The demo's cases as they were built in code before they became files
/// (`examples/scenarios/demo/`): kept here only, to prove the files say
/// exactly the same.
fn cases_built_in_code(
    family: twlab::socket::Family,
    port: Option<u16>,
) -> Vec<(&'static str, twlab::experiment::Experiment)> {
    use twlab::experiment::{Close, Experiment, When};
    use twlab::socket::SocketOpts;
    let base = Experiment::story(family, port.unwrap_or(0), 0);
    vec![
        (
            "client closes first; reconnect after the peer closed",
            base.clone(),
        ),
        (
            "client closes first; reconnect before the peer closed (the story's tight loop)",
            Experiment {
                when: When::AtOnce,
                ..base.clone()
            },
        ),
        (
            "server closes first; reconnect at once",
            Experiment {
                close: Close::SERVER,
                ..base.clone()
            },
        ),
        (
            "client closes with SO_LINGER 0 (RST); reconnect",
            Experiment {
                close: Close::CLIENT_RST,
                ..base.clone()
            },
        ),
        (
            "no SO_REUSEADDR on the client; reconnect after the peer closed",
            Experiment {
                client: SocketOpts::default(),
                new_opts: SocketOpts::default(),
                ..base
            },
        ),
    ]
}

#[test]
fn demo_case_files_are_the_experiments_built_in_code_before() {
    use twlab::scenario::file::{Scenario, load};
    use twlab::socket::Family;
    for family in [Family::V4, Family::V6] {
        for port in [None, Some(4242)] {
            assert_eq!(
                twlab::demo::cases(family, port),
                cases_built_in_code(family, port),
                "{family:?} {port:?}"
            );
        }
    }
    // The files on disk (what `twlab run` reads) say the same, for the
    // family and port they name (IPv4, a free port).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenarios/demo");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let want = cases_built_in_code(Family::V4, None);
    assert_eq!(files.len(), want.len());
    for (f, (case, x)) in files.iter().zip(want) {
        match load(f).unwrap() {
            Scenario::Experiment(e) => {
                assert_eq!(e.description.as_deref(), Some(case), "{}", f.display());
                assert_eq!(e.experiment, x, "{}", f.display());
                assert!(e.sysctls.is_empty(), "{}", f.display());
            }
            Scenario::Script(_) => panic!("{}: not an experiment", f.display()),
        }
    }
}
