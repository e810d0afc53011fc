//! Unit tests of the scenario file loader: good files, bad files with
//! their line, and the experiment round trip.

use super::*;
use crate::outcome::SysError;
use crate::scenario::{ClientPort, CloseBy, NextStep, When};
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
            close: CloseBy::ServerRst,
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
