//! `twlab run`: the example scenarios pass (observation = model =
//! expectation), a scenario whose expectation is wrong exits 3, and bad
//! files are refused in one line naming file and line.

mod common;

use common::*;
use std::path::PathBuf;

fn examples() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/scenarios");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples/scenarios")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.display().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_scenario_agrees() {
    if !netns_or_skip("every_example_scenario_agrees") {
        return;
    }
    let files = examples();
    assert!(files.len() >= 8, "{files:?}");
    let mut args = vec!["run"];
    args.extend(files.iter().map(String::as_str));
    let o = run(&args);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("{} scenario(s), 0 step(s)", files.len())),
        "{text}"
    );
    // The drain case: the queued client really was reset.
    assert!(
        text.lines()
            .any(|l| l.contains("recv client") && l.contains("ECONNRESET")),
        "{text}"
    );
}

fn temp(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("twlab-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn a_wrong_expectation_exits_3() {
    if !netns_or_skip("a_wrong_expectation_exits_3") {
        return;
    }
    let f = temp(
        "wrong.toml",
        "[[socket]]\nname = \"a\"\naddress = \"127.0.0.1:8080\"\n\n[[socket]]\nname = \"b\"\naddress = \"0.0.0.0:8080\"\n\n[[step]]\ndo = \"bind\"\nsocket = \"a\"\n\n[[step]]\ndo = \"bind\"\nsocket = \"b\"\nexpect = \"ok\"\n",
    );
    let o = run(&["run", &f]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{text}");
    assert!(text.contains("!!"), "{text}");
    assert!(text.contains("EADDRINUSE"), "{text}");
}

#[test]
fn bad_files_are_refused_in_one_line_with_file_and_line() {
    let cases = [
        (
            "syntax.toml",
            "[[socket]]\nname = \"a\"\naddress = \"127.0.0.1:8080\nx = 1\n",
            ":3:",
        ),
        (
            "unknown-socket.toml",
            "[[socket]]\nname = \"a\"\naddress = \"127.0.0.1:8080\"\n\n[[step]]\ndo = \"bind\"\nsocket = \"b\"\n",
            ":5: step uses an unknown socket 'b'",
        ),
        (
            "bad-verb.toml",
            "[[socket]]\nname = \"a\"\naddress = \"127.0.0.1:8080\"\n\n[[step]]\ndo = \"jump\"\nsocket = \"a\"\n",
            ":5: step:",
        ),
        (
            "bad-address.toml",
            "[[socket]]\nname = \"a\"\naddress = \"::1:80\"\n",
            ":1: socket 'a':",
        ),
        (
            "bad-state.toml",
            "[[socket]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\n[[step]]\ndo = \"wait-for-state\"\nsocket = \"a\"\nstate = \"SLEEPING\"\n",
            ":5: unknown TCP state 'SLEEPING'",
        ),
    ];
    for (name, text, want) in cases {
        let f = temp(name, text);
        let o = run(&["run", &f]);
        let line = one_line_failure(&o);
        assert!(line.contains(&f), "{name}: {line}");
        assert!(line.contains(want), "{name}: want {want:?} in {line}");
    }
    let o = run(&["run", "/nonexistent/x.toml"]);
    let line = one_line_failure(&o);
    assert!(
        line.contains("/nonexistent/x.toml:1: cannot read"),
        "{line}"
    );
}
