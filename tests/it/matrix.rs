//! `twlab matrix` on the real kernel: every cell of the default matrix must
//! behave as the rule model predicts; the unprivileged path; bad input.

use crate::common;

use common::{
    bin, netns_or_skip, one_line_failure, run, skip, start, stop_group_with, stop_with, wait_until,
};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use twlab::matrix::{self, CellStatus, IsolationChoice, Plan, Selection};

/// The plan of `twlab matrix -f F1 -f F2 ...`.
fn plan(factors: &[&str]) -> Plan {
    let factors: Vec<String> = factors.iter().map(|s| s.to_string()).collect();
    Plan::new(Selection::parse(&factors).expect("valid factors"))
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
            CellStatus::Error { .. } | CellStatus::SysctlRefused { .. } => problems.push(format!(
                "cell {} error: {}",
                c.spec.id,
                c.status.error_message().unwrap_or_default()
            )),
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

netns_test! {
    /// With no namespaces, the host fallback says so and skips cells that
    /// need other sysctls. (The "host" is this test's own fresh namespace:
    /// no traffic on the real host's loopback.)
    fn host_fallback_skips_cells_needing_other_sysctls() {
        host_fallback_body()
    }
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

/// `twlab matrix | head`: a reader that went away is not an error. The
/// read end is closed before twlab writes, so every write meets EPIPE.
#[test]
fn closed_stdout_exits_zero_quietly() {
    let closed = |args: &[&str]| {
        let mut c = Command::new(bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("twlab");
        drop(c.stdout.take());
        let o = c.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    };
    closed(&["matrix", "--list-factors"]);
    if !netns_or_skip("closed_stdout_exits_zero_quietly (formats)") {
        return;
    }
    for f in ["table", "json", "md", "csv"] {
        closed(&[
            "matrix",
            "-f",
            "next=rebind",
            "-f",
            "close=client",
            "-f",
            "when=at-once",
            "-f",
            "family=ipv4",
            "-f",
            "client-port=fixed",
            "--format",
            f,
        ]);
    }
}

/// The sleeping cell: waits 20 s after the close.
const SLEEPY: &[&str] = &[
    "matrix",
    "-f",
    "close=client",
    "-f",
    "when=after-20000ms",
    "-f",
    "next=rebind",
    "-f",
    "family=ipv4",
    "-f",
    "client-port=fixed",
];

/// True once process `pid` runs a cell thread (named twlab-cell-N).
fn runs_a_cell(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.starts_with("twlab-cell"))
            })
        })
        .unwrap_or(false)
}

/// Ctrl-C during a cell's after-<N>ms wait ends the run at once: exit 130,
/// one line.
#[test]
fn sigint_ends_a_sleeping_cell_at_once() {
    if !netns_or_skip("sigint_ends_a_sleeping_cell_at_once") {
        return;
    }
    let child = start(SLEEPY);
    let pid = child.id();
    wait_until(Duration::from_secs(5), "a cell thread", || {
        runs_a_cell(pid).then_some(())
    });
    let o = stop_with(
        child,
        nix::sys::signal::Signal::SIGINT,
        Duration::from_secs(3),
    );
    let (err, took) = (o.stderr, o.elapsed);
    assert_eq!(o.code, Some(130), "{err}");
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("interrupted"), "{err}");
}

/// A factor value the kernel refuses, a duration past its bound, `--jobs
/// 0` and a matrix past the cell limit: one line each, exit 2.
#[test]
fn bad_values_found_after_parsing_exit_2() {
    let two = |args: &[&str], want: &str| {
        let o = run(args);
        let line = one_line_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {line}");
        assert!(line.contains(want), "{args:?}: {line}");
    };
    two(&["matrix", "--jobs", "0"], "--jobs");
    two(&["matrix", "-f", "when=after-600001ms"], "N ≤ 600000");
    two(
        &["matrix", "-f", "when=after-18446744073709551615ms"],
        "after-<N>ms",
    );
    // 1.24 million cells: refused before one is built.
    let many: Vec<String> = (1000..2000).map(|n| n.to_string()).collect();
    let t0 = Instant::now();
    two(
        &[
            "matrix",
            "-f",
            &format!("tcp-max-tw-buckets={}", many.join(",")),
        ],
        "more than 100000 cells",
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    if !netns_or_skip("bad_values_found_after_parsing_exit_2 (sysctl)") {
        return;
    }
    two(
        &[
            "matrix",
            "-f",
            "tcp-max-tw-buckets=2147483648",
            "-f",
            "next=rebind",
            "-f",
            "close=client",
            "-f",
            "family=ipv4",
        ],
        "refused net.ipv4.tcp_max_tw_buckets=2147483648",
    );
}

/// `--max-cells` raises the limit: the same selection is then counted,
/// not refused (and fails later only on its own merits).
#[test]
fn max_cells_raises_the_limit() {
    let o = run(&[
        "matrix",
        "--max-cells",
        "1",
        "-f",
        "next=rebind",
        "-f",
        "close=client",
        "-f",
        "family=ipv4,ipv6",
    ]);
    let line = one_line_failure(&o);
    assert_eq!(o.status.code(), Some(2), "{line}");
    assert!(line.contains("more than 1 cells"), "{line}");
}

/// The host-fallback run, a few times: cells share one port space
/// there, and still no mismatch (exit 3) or error may appear.
#[test]
fn host_fallback_has_no_false_mismatches() {
    if !netns_or_skip("host_fallback_has_no_false_mismatches") {
        return;
    }
    for i in 0..3 {
        let o = common::in_netns(&[], || run(&["matrix", "--host-netns"]));
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(0),
            "run {i}: {}\n{}",
            out.lines()
                .filter(|l| l.contains("MISMATCH") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The command that runs twlab as uid 65534, or why it cannot.
fn as_nobody(test: &str) -> Option<Command> {
    if !nix::unistd::getuid().is_root() {
        skip(&format!(
            "{test}: not root, cannot switch to uid 65534 with setpriv"
        ));
        return None;
    }
    let nobody = || {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        c
    };
    match nobody().args(["unshare", "-Urn", "true"]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            skip(&format!(
                "{test}: no user namespaces for uid 65534 ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            return None;
        }
        Err(e) => {
            skip(&format!("{test}: cannot run setpriv ({e})"));
            return None;
        }
    }
    let probe = nobody().arg(bin()).arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skip(&format!("{test}: uid 65534 cannot execute the binary"));
        return None;
    }
    let mut c = nobody();
    c.arg(bin());
    Some(c)
}

/// The `--internal-worker` child of `parent`, once it runs a cell.
fn worker_of(parent: u32) -> u32 {
    wait_until(Duration::from_secs(10), "the worker's cell thread", || {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (ppid == parent
                && String::from_utf8_lossy(&cmd).contains("--internal-worker")
                && runs_a_cell(pid))
            .then_some(pid)
        })
    })
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
    })
}

/// As an ordinary user, SIGINT or SIGTERM to the front end ends the run,
/// and its namespace worker with it; Ctrl-C to the whole process group
/// exits 130 with one line (not a nested message).
#[test]
fn unprivileged_run_ends_on_signals_with_its_worker() {
    use nix::sys::signal::Signal;
    let test = "unprivileged_run_ends_on_signals_with_its_worker";
    for (sig, group) in [
        (Signal::SIGINT, false),
        (Signal::SIGTERM, false),
        (Signal::SIGINT, true),
    ] {
        let Some(mut c) = as_nobody(test) else { return };
        let child = c
            .args(SLEEPY)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("twlab as nobody");
        let pid = child.id();
        let worker = worker_of(pid);
        let stop = if group { stop_group_with } else { stop_with };
        let o = stop(child, sig, Duration::from_secs(3));
        let (status, err) = (o.status, o.stderr);
        match sig {
            Signal::SIGINT => {
                assert_eq!(status.code(), Some(130), "{sig} group={group}: {err}");
                assert_eq!(err.lines().count(), 1, "{sig} group={group}: {err}");
                assert!(!err.contains("worker failed"), "{err}");
            }
            // 143 once SIGTERM is handled like Ctrl-C; killed by it until then.
            _ => assert!(
                status.code() == Some(143) || status.signal() == Some(15),
                "{sig}: {status:?} {err}"
            ),
        }
        wait_until(
            Duration::from_secs(3),
            "the worker to die with its parent",
            || (!alive(worker)).then_some(()),
        );
    }
}

/// Rows sharing a rule id keep their own explanation and fix: tw_reuse=0
/// (forbidden) and tw_reuse=1 (blocked by tcp_tw_reuse_delay) both end in
/// ephemeral-exhausted, and each row points at its own note in the table
/// and the Markdown. Windows and BSD fail there too (exhausted range).
#[test]
fn each_row_points_at_its_own_explanation() {
    if !netns_or_skip("each_row_points_at_its_own_explanation") {
        return;
    }
    if twlab::sysctl::read("net.ipv4.tcp_tw_reuse_delay").is_none() {
        skip("each_row_points_at_its_own_explanation: no tcp_tw_reuse_delay (Linux < 6.14)");
        return;
    }
    let args = [
        "matrix",
        "-f",
        "next=reconnect",
        "-f",
        "port-range=one",
        "-f",
        "client-port=ephemeral",
        "-f",
        "close=client",
        "-f",
        "when=after-peer",
        "-f",
        "family=ipv4",
        "-f",
        "tcp-tw-reuse=0,1",
        "-f",
        "tcp-timestamps=1",
        "-f",
        "tcp-tw-reuse-delay=60000",
    ];
    for format in ["md", "table"] {
        // Wide enough that every row and note is one line.
        let o = Command::new(bin())
            .args([&args[..], &["--format", format]].concat())
            .env("COLUMNS", "1000")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{out}");
        // The note each row's rule column points at.
        let note_of = |reuse: &str| -> String {
            let line = out
                .lines()
                .find(|l| l.contains(&format!("tw_reuse={reuse} ")))
                .unwrap_or_else(|| panic!("no tw_reuse={reuse} row in\n{out}"));
            let at = line
                .find("ephemeral-exhausted [")
                .expect("rule with a note");
            line[at..].split(']').next().unwrap().to_string() + "]"
        };
        let (off, on) = (note_of("0"), note_of("1"));
        assert_ne!(off, on, "{out}");
        let note = |n: &str| {
            out.lines()
                .find(|l| l.starts_with(&format!("- {}", &n["ephemeral-exhausted ".len()..])))
                .unwrap_or_else(|| panic!("no note {n} in\n{out}"))
                .to_string()
        };
        let (off, on) = (note(&off), note(&on));
        assert!(
            off.contains("tcp_tw_reuse=0 forbids")
                && off.contains("Fix: set net.ipv4.tcp_tw_reuse=1"),
            "{off}"
        );
        assert!(
            on.contains("younger than tcp_tw_reuse_delay")
                && on.contains("Fix: retry after tcp_tw_reuse_delay"),
            "{on}"
        );
        assert!(out.contains("connect: WSAEADDRINUSE"), "{out}");
    }
}

/// Too many namespaces (ENOSPC from unshare, user.max_net_namespaces
/// reached) is named as the limit it is, never as "run as root". Made in a
/// user + network namespace of this test's own whose limit is 0.
#[test]
fn a_namespace_limit_is_named_not_root() {
    let test = "a_namespace_limit_is_named_not_root";
    if !netns_or_skip(test) || !common::tool_or_skip(test, "ip") {
        return;
    }
    let script = format!(
        "ip link set lo up && echo 0 > /proc/sys/user/max_net_namespaces && exec {} matrix --format json -f next=rebind -f close=client -f family=ipv4 -f client-port=fixed -f when=at-once",
        bin().display()
    );
    let o = match Command::new("unshare")
        .args(["-Urn", "sh", "-c", &script])
        .output()
    {
        Ok(o) => o,
        Err(e) => return skip(&format!("{test}: cannot run unshare ({e})")),
    };
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("max_net_namespaces") && !o.status.success() && o.stdout.is_empty() {
        return skip(&format!("{test}: cannot lower the limit here ({err})"));
    }
    assert_eq!(o.status.code(), Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let iso = v["isolation"].as_str().unwrap();
    assert!(
        iso.contains("ENOSPC") && iso.contains("user.max_net_namespaces = 0"),
        "{iso}"
    );
    assert!(
        !iso.contains("run as root") && !iso.contains("twlab: error"),
        "{iso}"
    );
}

/// The table fits the width it is given: the summary comes first, and at
/// 80 columns the compact table (factors in one column) has every line
/// within 80 characters and every outcome whole.
#[test]
fn matrix_fits_80_columns_with_its_summary_first() {
    if !netns_or_skip("matrix_fits_80_columns_with_its_summary_first") {
        return;
    }
    let o = Command::new(bin())
        .args([
            "matrix",
            "-f",
            "next=reconnect",
            "-f",
            "close=client",
            "-f",
            "when=at-once",
        ])
        .args(["-f", "family=ipv4", "-f", "tcp-timestamps=1"])
        .env("COLUMNS", "80")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.lines().next().unwrap().contains(" cells: "), "{out}");
    for l in out.lines() {
        assert!(l.chars().count() <= 80, "{l:?} in\n{out}");
    }
    assert!(out.contains("predicted → observed"), "{out}");
    assert!(out.contains("bind: EADDRINUSE"), "{out}");
    // Not a terminal: no colour codes.
    assert!(!out.contains('\x1b'), "{out}");
}

/// `--group-by rule`: each rule's rows come together, in one block, and
/// every cell is still shown once.
#[test]
fn group_by_rule_puts_each_rules_cells_together() {
    if !netns_or_skip("group_by_rule_puts_each_rules_cells_together") {
        return;
    }
    let o = Command::new(bin())
        .args([
            "matrix",
            "-f",
            "next=reconnect",
            "-f",
            "close=client,server",
        ])
        .args(["-f", "family=ipv4", "--group-by", "rule"])
        .env("COLUMNS", "1000")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    // Rows: "│ 12 ┆ … ┆ rule-name [n] │".
    let rows: Vec<(usize, String)> = out
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('│').split('┆').map(str::trim).collect();
            let id = cells.first()?.parse().ok()?;
            let rule = cells.last()?.split(" [").next()?.to_string();
            Some((id, rule))
        })
        .collect();
    let total: usize = out
        .lines()
        .next()
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .expect("the summary's cell count first");
    let mut ids: Vec<usize> = rows.iter().map(|(i, _)| *i).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..total).collect::<Vec<_>>(), "{out}");
    let mut seen = Vec::new();
    for (_, rule) in &rows {
        if seen.last() != Some(rule) {
            assert!(!seen.contains(rule), "{rule} in two blocks:\n{out}");
            seen.push(rule.clone());
        }
    }
    assert!(seen.len() >= 2, "{out}");
}
