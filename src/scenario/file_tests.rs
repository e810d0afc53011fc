//! Unit tests of the scenario file loader: good files, bad files with
//! their line, and the experiment round trip.

use super::*;
use crate::experiment::{ClientPort, Close, NextStep, When};
use crate::outcome::SysError;
use crate::socket::Family;

// Whatever a matrix cell holds, the emitted file reads back into it.
#[test]
fn an_emitted_experiment_reads_back_the_same() {
    let base = Experiment::story(Family::V6, 12345, 23456);
    let variants = [
        base.clone(),
        Experiment {
            when: When::AfterMs(1500),
            client_port: ClientPort::Ephemeral,
            close: Close::SERVER_RST,
            next: NextStep::RestartListener,
            // Every option off: left out of the file, none on reading.
            new_opts: SocketOpts::default(),
            ..base.clone()
        },
        Experiment {
            client_port: ClientPort::BindNoPort,
            client: SocketOpts {
                linger: Some(0),
                bind_no_port: true,
                v6only: V6Only::Off,
                ..Default::default()
            },
            until_free: Some(std::time::Duration::from_millis(700)),
            ..base
        },
    ];
    let sysctls = vec![("net.ipv4.tcp_tw_reuse".to_string(), "0".to_string())];
    let expect = Expect {
        outcome: Some("connect EADDRNOTAVAIL".into()),
        rule: Some(RuleId::TupleBusy),
    };
    for x in variants {
        let text = experiment_toml("d", &sysctls, &x, Some(&expect));
        match parse(Path::new("x.toml"), &text) {
            Ok(Scenario::Experiment(f)) => {
                assert_eq!(f.experiment, x, "{text}");
                assert_eq!(f.sysctls, sysctls);
                assert_eq!(f.expect.as_ref(), Some(&expect));
                assert_eq!(f.description.as_deref(), Some("d"));
            }
            other => panic!("{other:?}\n{text}"),
        }
    }
}

#[test]
fn expectations_match_outcomes() {
    let failed = Outcome::Failed {
        step: Step::Connect,
        error: SysError::from_code(libc::EADDRNOTAVAIL),
    };
    let e = |o: &str| Expect {
        outcome: Some(o.into()),
        rule: None,
    };
    assert!(e("EADDRNOTAVAIL").outcome_matches(&failed));
    assert!(e("connect EADDRNOTAVAIL").outcome_matches(&failed));
    assert!(!e("bind EADDRNOTAVAIL").outcome_matches(&failed));
    assert!(!e("ok").outcome_matches(&failed));
    assert!(e("ok").outcome_matches(&Outcome::Ok));
    assert!(!e("EADDRINUSE").outcome_matches(&Outcome::Ok));
    for bad in ["fails", "accept EADDRINUSE", "connect", "eaddrinuse"] {
        assert!(e(bad).check().is_err(), "{bad}");
    }
    for good in ["ok", "EADDRINUSE", "listen EADDRINUSE"] {
        assert!(e(good).check().is_ok(), "{good}");
    }
}

fn script(text: &str) -> Result<Script, LoadError> {
    match parse(Path::new("s.toml"), text)? {
        Scenario::Script(s) => Ok(s),
        other => panic!("{other:?}"),
    }
}

// The kernel selftests' form: sockets and steps as arrays of inline
// tables, one line each; `port_from` binds to the port another socket got.
#[test]
fn inline_arrays_and_port_from_read_with_their_lines() {
    let s = script(
        "socket = [\n  { name = \"a\", address = \"0.0.0.0:0\" },\n  { name = \"b\", address = \"[::]:0\", port_from = \"a\" },\n]\nstep = [\n  { do = \"bind\", socket = \"a\", expect = \"ok\" },\n  { do = \"bind\", socket = \"b\", expect = \"EADDRINUSE\" },\n]\n",
    )
    .unwrap();
    assert_eq!(s.sockets.len(), 2);
    assert_eq!(s.sockets[0].0.port_from, None);
    assert_eq!(s.sockets[1].0.port_from.as_deref(), Some("a"));
    let lines: Vec<usize> = s.steps.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [6, 7]);
    assert_eq!(s.steps[1].1.expect.as_deref(), Some("EADDRINUSE"));
}

#[test]
fn a_bad_port_from_is_refused_with_its_line() {
    let cases = [
        (
            "[[socket]]\nname = \"a\"\naddress = \"0.0.0.0:0\"\n\n[[socket]]\nname = \"b\"\naddress = \"[::]:8080\"\nport_from = \"a\"\n",
            5,
            "the address says port 8080, not 0",
        ),
        (
            "[[socket]]\nname = \"a\"\naddress = \"0.0.0.0:0\"\nport_from = \"z\"\n",
            1,
            "port_from names no other socket of the file: 'z'",
        ),
        (
            "[[socket]]\nname = \"a\"\naddress = \"0.0.0.0:0\"\nport_from = \"a\"\n",
            1,
            "port_from names no other socket of the file: 'a'",
        ),
    ];
    for (text, line, what) in cases {
        let e = script(text).unwrap_err();
        assert_eq!(e.line, line, "{e}");
        assert!(e.what.contains(what), "{e}");
    }
}

// What `twlab selfcheck` writes reads back into the same script.
#[test]
fn a_written_script_reads_back_the_same() {
    let sockets = vec![
        SocketSpec {
            name: "l".into(),
            address: "[::]:8080".into(),
            reuseaddr: true,
            reuseport: false,
            v6only: V6Only::Off,
            linger: None,
            bind_address_no_port: false,
            uid: Some(65534),
            unprivileged: true,
            port_from: None,
        },
        SocketSpec {
            name: "c".into(),
            address: "127.0.0.2:0".into(),
            reuseaddr: false,
            reuseport: false,
            v6only: V6Only::System,
            linger: Some(0),
            bind_address_no_port: true,
            uid: None,
            unprivileged: false,
            port_from: Some("l".into()),
        },
    ];
    let steps = vec![
        StepSpec {
            action: Action::Bind { socket: "l".into() },
            expect: Some("ok".into()),
        },
        StepSpec {
            action: Action::WaitForState {
                socket: "c".into(),
                state: "TIME-WAIT".into(),
                timeout_ms: None,
            },
            expect: None,
        },
        StepSpec {
            action: Action::Connect {
                socket: "c".into(),
                to: "127.0.0.1:8080".into(),
            },
            expect: Some("EADDRNOTAVAIL".into()),
        },
    ];
    let sysctls = vec![("net.ipv4.tcp_tw_reuse".to_string(), "0".to_string())];
    let text = script_toml(
        &["two\nlines".into()],
        "a \"quoted\" description",
        &sysctls,
        &sockets,
        &steps,
    );
    assert!(text.starts_with("# two\n# lines\n"), "{text}");
    let Scenario::Script(s) = parse(Path::new("x.toml"), &text).unwrap() else {
        panic!("not a script: {text}");
    };
    assert_eq!(s.description.as_deref(), Some("a \"quoted\" description"));
    assert_eq!(s.sysctls, sysctls);
    let read: Vec<SocketSpec> = s.sockets.into_iter().map(|(spec, _)| spec).collect();
    assert_eq!(read, sockets);
    let read: Vec<StepSpec> = s.steps.into_iter().map(|(_, st)| st).collect();
    assert_eq!(read, steps);
}

/// `n` sockets `s0`… on 127.0.0.1, port 0, as inline tables.
fn sockets(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| format!("  {{ name = \"s{i}\", address = \"127.0.0.1:0\" }},"))
        .collect();
    format!("socket = [\n{}\n]\n", rows.join("\n"))
}

/// The steps, one inline table per line.
fn steps(rows: &[String]) -> String {
    format!("step = [\n{}\n]\n", rows.join("\n"))
}

// Each limit holds at its value and refuses one past it, naming the line
// of the first socket or step past it.
#[test]
fn scripts_past_their_limits_are_refused_with_the_line() {
    assert!(script(&sockets(MAX_SOCKETS)).is_ok());
    let e = script(&sockets(MAX_SOCKETS + 1)).unwrap_err();
    assert!(!e.unreadable);
    assert_eq!(e.line, MAX_SOCKETS + 2, "{e}");
    assert!(e.what.contains(&format!("at most {MAX_SOCKETS}")), "{e}");

    let close = |n: usize| vec![r#"  { do = "close", socket = "s0" },"#.to_string(); n];
    assert!(script(&(sockets(1) + &steps(&close(MAX_STEPS)))).is_ok());
    let e = script(&(sockets(1) + &steps(&close(MAX_STEPS + 1)))).unwrap_err();
    assert_eq!(e.line, 5 + MAX_STEPS, "{e}");
    assert!(e.what.contains(&format!("at most {MAX_STEPS}")), "{e}");

    // Accepted sockets count: one accept past the declared maximum.
    let accept = vec![r#"  { do = "accept", socket = "s0", as = "new" },"#.to_string()];
    let e = script(&(sockets(MAX_SOCKETS) + &steps(&accept))).unwrap_err();
    assert!(e.what.contains("accepted ones included"), "{e}");

    let sleep = |ms: u64| format!("  {{ do = \"sleep\", ms = {ms} }},");
    let wait = |ms: u64| {
        format!(
            "  {{ do = \"wait-for-state\", socket = \"s0\", state = \"TIME-WAIT\", timeout_ms = {ms} }},"
        )
    };
    for ok in [sleep(MAX_STEP_WAIT_MS), wait(MAX_STEP_WAIT_MS)] {
        assert!(script(&(sockets(1) + &steps(&[ok]))).is_ok());
    }
    for bad in [sleep(MAX_STEP_WAIT_MS + 1), wait(MAX_STEP_WAIT_MS + 1)] {
        let e = script(&(sockets(1) + &steps(&[bad]))).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.what.contains(&format!("at most {MAX_STEP_WAIT_MS} ms")),
            "{e}"
        );
    }
    // Together: the step that passes the total is named.
    let n = (MAX_TOTAL_WAIT_MS / MAX_STEP_WAIT_MS) as usize;
    let mut rows = vec![sleep(MAX_STEP_WAIT_MS); n];
    assert!(script(&(sockets(1) + &steps(&rows))).is_ok());
    rows.push(sleep(1));
    let e = script(&(sockets(1) + &steps(&rows))).unwrap_err();
    assert_eq!(e.line, 4 + rows.len(), "{e}");
    assert!(e.what.contains(&format!("{MAX_TOTAL_WAIT_MS} ms")), "{e}");
}

#[test]
fn experiments_wait_at_most_their_limit() {
    let x = |extra: &str| {
        format!(
            "[experiment]\nfamily = \"v4\"\nclient_port = \"ephemeral\"\nclose = \"client\"\nnext = \"reconnect\"\n{extra}\n"
        )
    };
    let max_ms = MAX_EXPERIMENT_WAIT.as_millis() as u64;
    let s = MAX_EXPERIMENT_WAIT.as_secs();
    for ok in [
        format!("when = {{ after-ms = {max_ms} }}"),
        format!("when = \"at-once\"\nuntil_free = {{ secs = {s}, nanos = 0 }}"),
    ] {
        let text = x(&ok);
        assert!(parse(Path::new("x.toml"), &text).is_ok(), "{text}");
    }
    for bad in [
        format!("when = {{ after-ms = {} }}", max_ms + 1),
        format!("when = \"at-once\"\nuntil_free = {{ secs = {s}, nanos = 1 }}"),
    ] {
        let text = x(&bad);
        let e = parse(Path::new("x.toml"), &text).unwrap_err();
        assert!(e.what.contains(&format!("at most {max_ms} ms")), "{e}");
    }
}

// What is not a regular file of UTF-8 text at most MAX_FILE_BYTES long
// is refused before a read could block or run on: a FIFO without a
// writer (open() would wait for one), /dev/zero (endless), a directory,
// a file one byte too large, bytes that are not UTF-8.
#[cfg(target_os = "linux")]
#[test]
fn only_regular_files_of_bounded_size_are_read() {
    let dir = std::env::temp_dir().join(format!("twlab-file-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo.toml");
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(
        &fifo,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    let big = dir.join("big.toml");
    std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
    let at_max = dir.join("max.toml");
    let mut text = b"description = \"x\"\n".to_vec();
    text.resize(MAX_FILE_BYTES as usize, b'#');
    std::fs::write(&at_max, &text).unwrap();
    let binary = dir.join("binary.toml");
    std::fs::write(&binary, b"description = \"\xff\"\n").unwrap();
    for (path, want) in [
        (fifo.as_path(), "not a regular file (a FIFO)"),
        (
            Path::new("/dev/zero"),
            "not a regular file (a character device)",
        ),
        (dir.as_path(), "not a regular file (a directory)"),
        (big.as_path(), "larger than 1 MiB"),
        (
            binary.as_path(),
            "not UTF-8 text (an invalid byte at offset 15)",
        ),
    ] {
        let e = load(path).unwrap_err();
        assert!(e.what.contains(want), "{}: {e}", path.display());
        assert!(!e.unreadable, "{e}");
        assert_eq!(e.line, 1);
    }
    let e = load(&dir.join("missing.toml")).unwrap_err();
    assert!(e.unreadable && e.what.starts_with("cannot read"), "{e}");
    assert!(load(&at_max).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}
