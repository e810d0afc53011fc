//! `twlab run`: the example scenarios pass (observation = model =
//! expectation), a scenario whose expectation is wrong exits 3, and bad
//! files are refused in one line naming file and line.

use crate::common;

use common::*;
use std::path::PathBuf;

/// The scenario files (`*.toml`) in `dir` of the repository, sorted.
fn toml_files(dir: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<String> = std::fs::read_dir(&path)
        .expect(dir)
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.display().to_string())
        .collect();
    v.sort();
    v
}

/// `twlab` with `args` then `files`: its output and its stdout as text.
fn run_files(args: &[&str], files: &[String]) -> (std::process::Output, String) {
    let mut all = args.to_vec();
    all.extend(files.iter().map(String::as_str));
    let o = run(&all);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    (o, text)
}

/// Write `text` to a file `name` in a fresh directory of its own; its path.
fn temp(name: &str, text: &str) -> String {
    let p = fresh_dir(&format!("run-{name}")).join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// `twlab run FILE` of a scenario `text` written to `name`: it refuses the
/// file in one line naming the file and containing `want`.
fn refused_in_one_line(name: &str, text: &str, want: &str) {
    let f = temp(name, text);
    let o = run(&["run", &f]);
    let line = one_line_failure(&o);
    assert!(line.contains(&f), "{name}: {line}");
    assert!(line.contains(want), "{name}: want {want:?} in {line}");
}

/// `twlab run FILE` of a scenario `text` written to `name`, whose
/// expectation is wrong: exit 3; its stdout.
fn disagrees(name: &str, text: &str) -> String {
    let (o, text) = run_files(&["run"], &[temp(name, text)]);
    assert_eq!(o.status.code(), Some(3), "{text}");
    text
}

/// `twlab` with `args` succeeds: its stdout (its stderr shown if not).
fn stdout_of(args: &[&str]) -> Vec<u8> {
    let o = run(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

#[test]
fn every_example_scenario_agrees() {
    if !netns_or_skip("every_example_scenario_agrees") {
        return;
    }
    let files = toml_files("examples/scenarios");
    assert!(files.len() >= 8, "{files:?}");
    let (o, text) = run_files(&["run"], &files);
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

// The kernel's own selftests (net/bind_wildcard.c: 44 variants x 3
// TEST_F; net/reuseaddr_ports_exhausted.c: 3 TESTs) as scenario files:
// every step has a model prediction (from the kernel-rule layer), and
// kernel, model and the selftest's expectation agree on every one.
#[test]
fn the_kernel_selftests_agree_step_by_step() {
    if !netns_or_skip("the_kernel_selftests_agree_step_by_step") {
        return;
    }
    let files = toml_files("examples/scenarios/selftests");
    let count = |prefix: &str| files.iter().filter(|f| f.contains(prefix)).count();
    assert_eq!(count("/bind_wildcard-"), 44, "{files:?}");
    assert_eq!(count("/reuseaddr_ports_exhausted-"), 3, "{files:?}");
    let (o, text) = run_files(&["run", "--json"], &files);
    assert_eq!(o.status.code(), Some(0), "{text}");
    // With --json the totals are the last line, as JSON (docs/json.md).
    let lines = json_lines(&o);
    let summary = lines.last().expect("a summary line");
    assert_eq!(summary["type"], "summary", "{text}");
    assert_eq!(summary["scenarios"], 47, "{text}");
    assert_eq!(summary["disagreements"], 0, "{text}");
    let (mut steps, mut expected) = (0, 0);
    let mut rules = std::collections::BTreeSet::new();
    for l in lines.iter().filter(|l| l["type"] == "scenario") {
        for st in l["report"]["steps"].as_array().unwrap() {
            steps += 1;
            // Outcomes as every command writes a call's: {"result": "ok"}
            // or {"result": "failed", "error": ERRNO}; the file's expect
            // is its own word for one ("ok", "EADDRINUSE").
            let observed = &st["observed"];
            let model = &st["model"]["outcome"];
            assert!(
                model.is_object(),
                "{}: a step without a prediction: {st}",
                l["file"]
            );
            assert_eq!(model, observed, "{}: {st}", l["file"]);
            let word = match observed["result"].as_str() {
                Some("ok") => "ok",
                Some("failed") => observed["error"]["name"].as_str().unwrap_or("?"),
                _ => panic!("{}: an outcome of no known shape: {st}", l["file"]),
            };
            if let Some(e) = st["expect"].as_str() {
                expected += 1;
                assert_eq!(e, word, "{}: {st}", l["file"]);
            }
            if let Some(r) = st["rule"].as_str() {
                rules.insert(r.to_string());
            }
        }
    }
    // 132 fixtures of 8 binds and 8 closes; 20 cases of 2 binds and 2
    // closes, 4 of them with 2 listens.
    assert_eq!(steps, 132 * 16 + 20 * 4 + 4 * 2);
    assert_eq!(summary["steps"], steps, "{text}");
    assert_eq!(expected, 132 * 8 + 20 * 2 + 4 * 2);
    for r in [
        "bind-auto-free",
        "bind-auto-shared",
        "bind-auto-exhausted",
        "bind-conflict",
        "bind-disjoint",
        "bind-reuseaddr",
        "bind-reuseport",
    ] {
        assert!(rules.contains(r), "no step decided by {r}: {rules:?}");
    }
}

#[test]
fn a_wrong_expectation_exits_3() {
    if !netns_or_skip("a_wrong_expectation_exits_3") {
        return;
    }
    let text = disagrees(
        "wrong.toml",
        "[[socket]]\nname = \"a\"\naddress = \"127.0.0.1:8080\"\n\n[[socket]]\nname = \"b\"\naddress = \"0.0.0.0:8080\"\n\n[[step]]\ndo = \"bind\"\nsocket = \"a\"\n\n[[step]]\ndo = \"bind\"\nsocket = \"b\"\nexpect = \"ok\"\n",
    );
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
        refused_in_one_line(name, text, want);
    }
    let o = run(&["run", "/nonexistent/x.toml"]);
    let line = one_line_failure(&o);
    assert!(
        line.contains("/nonexistent/x.toml:1: cannot read"),
        "{line}"
    );
}

// The demo's own case files, replayed by `twlab run` in a namespace: the
// model agrees with the kernel and the files' [expect] tables hold.
#[test]
fn demo_case_files_replay_in_agreement() {
    if !netns_or_skip("demo_case_files_replay_in_agreement") {
        return;
    }
    let files = toml_files("examples/scenarios/demo");
    assert_eq!(files.len(), 5, "{files:?}");
    let (o, text) = run_files(&["run"], &files);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("5 scenario(s), 0 step(s)"), "{text}");
    // Case 5 fails at bind() by the bind-conflict rule, with its fix.
    assert!(
        text.contains("observed:   bind() failed: EADDRINUSE"),
        "{text}"
    );
    assert!(text.contains("(rule bind-conflict)"), "{text}");
    assert!(
        text.contains("fix: set SO_REUSEADDR on both sockets"),
        "{text}"
    );
    assert!(text.contains("old 4-tuple: client TIME_WAIT"), "{text}");
}

#[test]
fn a_wrong_experiment_expectation_exits_3() {
    if !netns_or_skip("a_wrong_experiment_expectation_exits_3") {
        return;
    }
    // Case 5 of the demo (no SO_REUSEADDR: bind() fails), expected "ok".
    let text = disagrees(
        "wrong-experiment.toml",
        "[experiment]\nfamily = \"v4\"\nclient_port = { fixed = 0 }\nlistener = { reuseaddr = true }\nclose = \"client\"\nwhen = \"after-peer\"\nnext = \"reconnect\"\n\n[expect]\noutcome = \"ok\"\n",
    );
    assert!(text.contains("!! expected:   ok"), "{text}");
    assert!(text.contains("1 scenario(s), 1 step(s)"), "{text}");
}

#[test]
fn bad_experiment_files_are_refused_in_one_line_with_file_and_line() {
    let x = "[experiment]\nfamily = \"v4\"\nclient_port = \"ephemeral\"\n";
    let cases = [
        (
            "bad-close.toml",
            format!("{x}close = \"sideways\"\nwhen = \"at-once\"\nnext = \"reconnect\"\n"),
            ":4: unknown variant `sideways`",
        ),
        (
            "unknown-field.toml",
            format!("{x}close = \"client\"\nwhen = \"at-once\"\nnext = \"reconnect\"\nclse = 1\n"),
            ":7: unknown field `clse`",
        ),
        (
            "unknown-option.toml",
            format!(
                "{x}close = \"client\"\nwhen = \"at-once\"\nnext = \"reconnect\"\nclient = {{ reuse_addr = true }}\n"
            ),
            ":7: unknown field `reuse_addr`",
        ),
        (
            "missing-next.toml",
            format!("description = \"d\"\n\n{x}close = \"client\"\nwhen = \"at-once\"\n"),
            ":3: missing field `next`",
        ),
        (
            "bad-expect.toml",
            format!(
                "{x}close = \"client\"\nwhen = \"at-once\"\nnext = \"reconnect\"\n\n[expect]\noutcome = \"fails\"\n"
            ),
            ":8: expect: outcome 'fails'",
        ),
        (
            "bad-rule.toml",
            format!(
                "{x}close = \"client\"\nwhen = \"at-once\"\nnext = \"reconnect\"\n\n[expect]\nrule = \"magic\"\n"
            ),
            ":9: unknown variant `magic`",
        ),
        (
            "mixed.toml",
            format!(
                "{x}close = \"client\"\nwhen = \"at-once\"\nnext = \"reconnect\"\n\n[[socket]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n"
            ),
            ":8: [[socket]] beside [experiment] (line 1)",
        ),
        (
            "expect-alone.toml",
            "[[socket]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\n[expect]\noutcome = \"ok\"\n"
                .into(),
            ":5: [expect] without [experiment]",
        ),
    ];
    for (name, text, want) in cases {
        refused_in_one_line(name, &text, want);
    }
}

/// Outcome (kind, step, errno) and rule of a prediction, from JSON.
fn verdict(p: &serde_json::Value) -> (String, String, String, String) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let o = &p["outcome"];
    (
        s(&o["kind"]),
        s(&o["step"]),
        s(&o["error"]["name"]),
        s(&p["rule"]),
    )
}

// `twlab matrix --emit-cell N` writes cell N as an experiment file; `twlab
// run` replays it (sysctls included) with the prediction the matrix made.
#[test]
fn an_emitted_matrix_cell_replays_with_the_same_prediction() {
    if !netns_or_skip("an_emitted_matrix_cell_replays_with_the_same_prediction") {
        return;
    }
    let selections: [&[&str]; 2] = [
        // Depends on the cell's sysctls: one ephemeral port, TIME_WAIT on it.
        &[
            "-f",
            "next=reconnect",
            "-f",
            "close=client",
            "-f",
            "when=after-peer",
            "-f",
            "client-port=ephemeral",
            "-f",
            "port-range=one",
            "-f",
            "family=ipv4",
            "-f",
            "tcp-timestamps=1",
            "-f",
            "tcp-tw-reuse=0",
        ],
        // Depends on the socket options: rebinding a port in TIME_WAIT.
        &[
            "-f",
            "next=rebind",
            "-f",
            "close=client",
            "-f",
            "when=after-peer",
            "-f",
            "client-port=fixed",
            "-f",
            "family=ipv6",
        ],
    ];
    let dir = fresh_dir("run-emit");
    let (mut oks, mut fails) = (0, 0);
    for factors in selections {
        let mut args = vec!["matrix", "--format", "json"];
        args.extend(factors);
        let m: serde_json::Value = serde_json::from_slice(&stdout_of(&args)).unwrap();
        let cells = m["cells"].as_array().unwrap();
        assert!(!cells.is_empty());
        for cell in cells {
            let i = cell["spec"]["id"].as_u64().unwrap();
            let id = i.to_string();
            let mut args = vec!["matrix", "--emit-cell", &id];
            args.extend(factors);
            let f = dir.join(format!("cell-{i}.toml"));
            std::fs::write(&f, stdout_of(&args)).unwrap();
            let f = f.display().to_string();
            let o = run(&["run", "--json", &f]);
            let lines = json_lines(&o);
            assert_eq!(o.status.code(), Some(0), "{f}: {lines:?}");
            let r = &lines[0]["report"]["checked"];
            assert_eq!(r["report"]["experiment"], cell["spec"]["experiment"], "{f}");
            let want = verdict(&cell["predicted"]);
            assert_eq!(verdict(&r["prediction"]), want, "{f}");
            if want.0 == "ok" {
                oks += 1;
            } else {
                fails += 1;
            }
        }
    }
    assert!(oks > 0 && fails > 0, "ok {oks}, failed {fails}");
}

/// A `sleep` step (up to the file's 60 s) stops at Ctrl-C: one line, exit
/// 130 (before: a plain thread::sleep that no signal cut short).
#[test]
fn ctrl_c_stops_a_sleeping_scenario() {
    if !netns_or_skip("ctrl_c_stops_a_sleeping_scenario") {
        return;
    }
    let file = temp(
        "sleep.toml",
        "description = \"a long sleep\"\n\n[[socket]]\nname = \"s\"\naddress = \"127.0.0.1:32150\"\n\n\
         [[step]]\ndo = \"bind\"\nsocket = \"s\"\n\n[[step]]\ndo = \"sleep\"\nms = 60000\n",
    );
    let child = start(&["run", &file]);
    // Kernel state: the script's bound socket exists (in the script's own
    // namespace, found through the process's descriptors: a socket fd).
    let fds = format!("/proc/{}/fd", child.id());
    wait_until(
        std::time::Duration::from_secs(10),
        "the script's socket",
        || {
            std::fs::read_dir(&fds)
                .ok()?
                .flatten()
                .any(|f| {
                    std::fs::read_link(f.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .then_some(())
        },
    );
    let five = std::time::Duration::from_secs(5);
    let o = stop_with(child, nix::sys::signal::Signal::SIGINT, five);
    let _ = std::fs::remove_dir_all(std::path::Path::new(&file).parent().unwrap());
    let line = o.one_line();
    assert_eq!(o.code, Some(130), "{line}");
    // A liveness bound far below the 60 s sleep.
    assert!(o.elapsed < five, "{:?}", o.elapsed);
}
