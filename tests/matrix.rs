//! `twlab matrix` on the real kernel: every cell of the default matrix must
//! behave as the rule model predicts; the unprivileged path; bad input.

mod common;

use common::{bin, netns_or_skip, one_line_failure, run, skip};
use std::process::Command;
use twlab::matrix::{self, CellStatus, IsolationChoice, Plan, Selection};

/// The plan of `twlab matrix -f F1 -f F2 ...`.
fn plan(factors: &[&str]) -> Plan {
    let factors: Vec<String> = factors.iter().map(|s| s.to_string()).collect();
    Plan {
        selection: Selection::parse(&factors).expect("valid factors"),
        ..Plan::default()
    }
}

/// Run a matrix in-process and fail with every disagreement listed.
fn assert_all_agree(factors: &[&str], test: &str) {
    if !netns_or_skip(test) {
        return;
    }
    let run = matrix::execute(&plan(factors), false).expect("matrix runs");
    assert!(
        run.isolation.starts_with("one fresh network namespace"),
        "{}",
        run.isolation
    );
    let mut problems = Vec::new();
    for c in &run.cells {
        match &c.status {
            // A race with a transient state three times in a row counts
            // against the run too: on an idle CI machine it does not happen.
            CellStatus::Ran(r) if !r.matches && !r.predicted.borderline => problems.push(format!(
                "cell {} {:?}: predicted {}, observed {} (before: {}; at failure: {})",
                c.spec.id,
                c.spec.experiment,
                r.predicted.outcome.short(),
                r.report.outcome.short(),
                r.report.before.describe(),
                r.report
                    .at_failure
                    .as_ref()
                    .map(|v| v.describe())
                    .unwrap_or_default()
            )),
            CellStatus::Ran(_) => {}
            CellStatus::Skipped { reason } => {
                problems.push(format!("cell {} skipped: {reason}", c.spec.id))
            }
            CellStatus::Error { message } => {
                problems.push(format!("cell {} error: {message}", c.spec.id))
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} cells disagree with the model:\n{}",
        problems.len(),
        run.cells.len(),
        problems.join("\n")
    );
    // The matrix is not empty and covered both outcomes.
    let ok = run.ran().filter(|(_, r)| r.report.outcome.is_ok()).count();
    assert!(
        ok > 0 && ok < run.cells.len(),
        "ok in {ok} of {}",
        run.cells.len()
    );
}

/// MAIN TEST: every cell of the default matrix, observation == prediction.
#[test]
fn default_matrix_agrees_with_the_model() {
    assert_all_agree(&[], "default_matrix_agrees_with_the_model");
}

/// The sysctl cases: ip_local_port_range narrowed to the one port the first
/// connection used, tcp_tw_reuse 0/1/2, timestamps 0/1, waits around the
/// 1 s tcp_tw_reuse_delay; tcp_max_tw_buckets = 0.
#[test]
fn sysctl_cells_agree_with_the_model() {
    assert_all_agree(
        &[
            "next=reconnect",
            "port-range=one",
            "client-port=fixed,ephemeral,bind-no-port",
            "close=client,server",
            "when=after-ack,after-peer,after-1100ms",
            "family=ipv4",
        ],
        "sysctl_cells_agree_with_the_model",
    );
    assert_all_agree(
        &["tcp-max-tw-buckets=0", "family=ipv6", "tcp-timestamps=1"],
        "sysctl_cells_agree_with_the_model (max_tw_buckets=0)",
    );
}

/// The exit code and the loud report: table output, exit 0 on agreement.
#[test]
fn cli_prints_counts_and_exits_zero_on_agreement() {
    if !netns_or_skip("cli_prints_counts_and_exits_zero_on_agreement") {
        return;
    }
    let o = run(&[
        "matrix",
        "-f",
        "next=reconnect",
        "-f",
        "close=client",
        "-f",
        "family=ipv4",
        "--format",
        "md",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("| # | next |"), "{out}");
    assert!(
        out.contains("cells:") && out.contains("0 mismatches"),
        "{out}"
    );
    assert!(out.contains("documented, not run"), "{out}");
}

/// The unprivileged path: as nobody, twlab re-executes itself in a user +
/// network namespace.
#[test]
fn unprivileged_user_runs_cells_in_a_user_namespace() {
    if !nix::unistd::getuid().is_root() {
        skip(
            "unprivileged_user_runs_cells_in_a_user_namespace: not root, cannot switch to uid 65534 with setpriv",
        );
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip(
            "unprivileged_user_runs_cells_in_a_user_namespace: setpriv (util-linux) is not installed",
        );
        return;
    }
    let exe = bin();
    // nobody must be able to reach and execute the binary.
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .arg("--version")
        .output()
        .expect("setpriv");
    if !probe.status.success() {
        skip(&format!(
            "unprivileged_user_runs_cells_in_a_user_namespace: uid 65534 cannot execute {} ({})",
            exe.display(),
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
        return;
    }
    let userns = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["unshare", "-Urn", "true"])
        .output();
    match userns {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            skip(&format!(
                "unprivileged_user_runs_cells_in_a_user_namespace: user namespaces are not allowed for uid 65534 here ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            return;
        }
        Err(e) => {
            skip(&format!(
                "unprivileged_user_runs_cells_in_a_user_namespace: cannot run unshare ({e})"
            ));
            return;
        }
    }
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "matrix",
            "-f",
            "next=reconnect",
            "-f",
            "close=client,server",
            "-f",
            "client-port=fixed",
            "-f",
            "family=ipv4",
            "--format",
            "json",
        ])
        .output()
        .expect("run as nobody");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let iso = v["isolation"].as_str().unwrap();
    assert!(iso.contains("unprivileged user namespace"), "{iso}");
    let cells = v["cells"].as_array().unwrap();
    assert!(!cells.is_empty());
    for c in cells {
        assert_eq!(c["status"], "ran", "{c}");
        // The cells' own sysctls were applied inside the user's namespaces:
        // the kernel facts read there equal what the cell asked for.
        let want_ts = c["spec"]["sysctls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "net.ipv4.tcp_timestamps")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            == "1";
        assert_eq!(c["kernel"]["timestamps"].as_bool(), Some(want_ts), "{c}");
    }
}

#[test]
fn unknown_factor_is_one_line() {
    let o = run(&["matrix", "--factor", "colse=client"]);
    let line = one_line_failure(&o);
    assert!(line.contains("unknown factor 'colse'"), "{line}");
    assert!(line.contains("close, when, next"), "{line}");
}

#[test]
fn unknown_value_is_one_line() {
    let o = run(&["matrix", "--factor", "when=later"]);
    let line = one_line_failure(&o);
    assert!(line.contains("unknown value 'later'"), "{line}");
    assert!(line.contains("after-peer"), "{line}");
    let o = run(&["matrix", "--factor", "tcp-tw-reuse=3"]);
    let line = one_line_failure(&o);
    assert!(line.contains("tcp-tw-reuse"), "{line}");
    let o = run(&["matrix", "--factor", "close"]);
    one_line_failure(&o);
}

#[test]
fn list_factors_names_every_factor() {
    let o = run(&["matrix", "--list-factors"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for f in matrix::FACTORS {
        assert!(out.contains(f.name), "{} missing in\n{out}", f.name);
    }
}

/// With no namespaces, the host fallback says so and skips cells that need
/// other sysctls.
#[test]
fn host_fallback_skips_cells_needing_other_sysctls() {
    // The "host" is this test's own fresh namespace: no traffic on the
    // real host's loopback.
    if !netns_or_skip("host_fallback_skips_cells_needing_other_sysctls") {
        return;
    }
    common::in_netns(&[], host_fallback_body);
}

fn host_fallback_body() {
    let host_ts = twlab::sysctl::read("net.ipv4.tcp_timestamps").unwrap();
    let other = if host_ts == "0" { "1" } else { "0" };
    let ts = format!("tcp-timestamps={host_ts},{other}");
    let mut p = plan(&[
        "next=rebind",
        "close=client-rst",
        "family=ipv4",
        "client-port=fixed",
        "when=after-peer",
        &ts,
    ]);
    p.isolation = IsolationChoice::Host;
    let run = matrix::execute(&p, false).expect("host fallback runs");
    assert!(
        run.isolation.starts_with("HOST NAMESPACE"),
        "{}",
        run.isolation
    );
    let skipped = run
        .cells
        .iter()
        .filter(|c| matches!(c.status, CellStatus::Skipped { .. }))
        .count();
    assert_eq!(
        skipped * 2,
        run.cells.len(),
        "half the cells need the other tcp_timestamps"
    );
    for (_, r) in run.ran() {
        assert!(r.matches, "{:?}", r.report.outcome);
    }
}
