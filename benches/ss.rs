//! `cargo bench --bench ss`: `twlab ss --state time-wait` against
//! `ss -tan state time-wait` on a table of 30,000 TIME_WAIT sockets, and
//! the same for the TIME_WAITs to one server port
//! (`TWLAB_SS_BENCH_SOCKETS=250000 cargo bench --bench ss` for more; up to
//! 400,000, made within the 60 s a TIME_WAIT lives, so fewer rounds).
//!
//! Needs root (a fresh network namespace per run, so the host's table and
//! sysctls are untouched); otherwise it says why and exits 0.
//!
//! The twlab binary measured is the one Cargo builds for this bench with the
//! bench profile (it inherits `release`): `CARGO_BIN_EXE_twlab`, which Cargo
//! sets when compiling benches and integration tests. Both programs are
//! spawned from the main thread, which lives in the namespace, so they see
//! the same table. Each runs under /usr/bin/time for its own peak RSS (see
//! `time_child`).

mod common;

use common::timewait::{MAX_WANT, count_time_wait, make_time_wait, time_child};
use std::process::Command;
use std::time::{Duration, Instant};
use twlab::netns::{self, Sysctl};

/// TIME_WAIT sockets made, unless TWLAB_SS_BENCH_SOCKETS says otherwise.
const DEFAULT_WANT: usize = 30_000;

/// One comparison: the same question to twlab and to iproute2.
struct Case {
    name: &'static str,
    twlab: &'static [&'static str],
    ss: &'static [&'static str],
}

/// The whole TIME_WAIT table; the part of it to one server port (an
/// eighth: clients spread over the eight listener ports), which twlab asks the kernel to
/// filter (`idiag_dport`) as iproute2 does with its bytecode; and the same
/// port at either end, which twlab filters itself after a whole dump
/// (the request's port fields cannot say "or").
const CASES: [Case; 3] = [
    Case {
        name: "all TIME_WAIT",
        twlab: &["ss", "--state", "time-wait"],
        ss: &["-tan", "state", "time-wait"],
    },
    Case {
        name: "TIME_WAIT to one port",
        twlab: &["ss", "--state", "time-wait", "--peer", ":5001"],
        ss: &["-tan", "state", "time-wait", "dst", ":5001"],
    },
    Case {
        name: "TIME_WAIT with the port at either end",
        twlab: &["ss", "--state", "time-wait", "--port", "5001"],
        ss: &[
            "-tan",
            "state",
            "time-wait",
            "(",
            "sport",
            "=",
            ":5001",
            "or",
            "dport",
            "=",
            ":5001",
            ")",
        ],
    },
];

fn main() {
    if let Err(why) = run() {
        println!("ss bench skipped: {why}");
    }
}

fn run() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("`twlab ss` needs Linux (sock_diag)".into());
    }
    #[cfg(unix)]
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root to create a network namespace".into());
    }
    netns::can_unshare().map_err(|e| format!("cannot create network namespaces: {e}"))?;
    if Command::new("ss").arg("-V").output().is_err() {
        return Err("iproute2's `ss` is not installed".into());
    }
    if Command::new("/usr/bin/time").arg("true").output().is_err() {
        return Err("GNU time (/usr/bin/time) is not installed".into());
    }
    let twlab = env!("CARGO_BIN_EXE_twlab");
    let want = match std::env::var("TWLAB_SS_BENCH_SOCKETS") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_WANT).contains(n))
            .ok_or(format!("TWLAB_SS_BENCH_SOCKETS must be 1 to {MAX_WANT}"))?,
        Err(_) => DEFAULT_WANT,
    };
    // TIME_WAIT lasts 60 s: large tables get fewer rounds so every run
    // sees the whole table.
    let rounds = if want > 100_000 { 3 } else { 15 };
    netns::enter_fresh(&[
        // 64,512 ports per (local, peer) pair and no reuse of TIME_WAIT
        // ports by connect(), so every connection leaves one TIME_WAIT.
        Sysctl::new("net.ipv4.ip_local_port_range", "1024 65535"),
        Sysctl::new("net.ipv4.tcp_max_tw_buckets", "524288"),
        Sysctl::new("net.ipv4.tcp_tw_reuse", "0"),
    ])
    .map_err(|e| e.to_string())?;

    let t0 = Instant::now();
    let (_listeners, made) = make_time_wait(want)?;
    let tw = count_time_wait()?;
    println!(
        "setup: {made} connections closed client-first in {:.2} s; sock_diag sees {tw} TIME_WAIT",
        t0.elapsed().as_secs_f64()
    );
    // A busy machine has lost a few (of 250,000: 147 once); both programs
    // then read the same smaller table, which the lines check below shows.
    if tw < want - want / 100 {
        return Err(format!("only {tw} TIME_WAIT sockets, wanted {want}"));
    }

    // Sanity: both print one line per socket plus a header.
    let lines = |cmd: &mut Command| -> Result<usize, String> {
        let o = cmd.output().map_err(|e| e.to_string())?;
        Ok(o.stdout.iter().filter(|b| **b == b'\n').count())
    };
    for case in &CASES {
        let a = lines(Command::new(twlab).args(case.twlab))?;
        let b = lines(Command::new("ss").args(case.ss))?;
        println!(
            "{}: lines twlab {a}, ss {b} (each with a header)",
            case.name
        );
        if a != b {
            return Err(format!("{}: twlab printed {a} lines, ss {b}", case.name));
        }
    }

    // runs[case][0] twlab, runs[case][1] ss.
    let mut runs: Vec<[Vec<(Duration, i64)>; 2]> = CASES.iter().map(|_| [vec![], vec![]]).collect();
    for round in 0..rounds {
        // Alternate which goes first, so neither always gets a warm cache.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for (case, r) in CASES.iter().zip(runs.iter_mut()) {
            for which in order {
                let cmd = if which == 0 {
                    let mut c = Command::new(twlab);
                    c.args(case.twlab);
                    c
                } else {
                    let mut c = Command::new("ss");
                    c.args(case.ss);
                    c
                };
                r[which].push(time_child(&cmd)?);
            }
        }
    }
    // TWLAB_SS_BENCH_BASELINE=/path/to/an/older/twlab: measured too, once
    // per round, to compare builds on the same table.
    if let Ok(base) = std::env::var("TWLAB_SS_BENCH_BASELINE") {
        for case in &CASES {
            let mut runs = Vec::new();
            for _ in 0..rounds {
                runs.push(time_child(Command::new(&base).args(case.twlab))?);
            }
            let (med, min, rss) = stats(&runs);
            println!(
                "  baseline {base}, {}: median {:7.2} ms  min {:7.2} ms  peak RSS {rss:6} KiB",
                case.name,
                ms(med),
                ms(min)
            );
        }
    }
    let tw_end = count_time_wait()?;
    println!("TIME_WAIT sockets at the end: {tw_end}");
    println!("{rounds} rounds each, stdout to /dev/null, alternating:");
    for (case, [tw_runs, ss_runs]) in CASES.iter().zip(&runs) {
        let (tw_med, tw_min, tw_rss) = stats(tw_runs);
        let (ss_med, ss_min, ss_rss) = stats(ss_runs);
        println!(
            "  {:<40} median {:7.2} ms  min {:7.2} ms  peak RSS {:6} KiB",
            format!("twlab {}", case.twlab.join(" ")),
            ms(tw_med),
            ms(tw_min),
            tw_rss
        );
        println!(
            "  {:<40} median {:7.2} ms  min {:7.2} ms  peak RSS {:6} KiB",
            format!("ss {}", case.ss.join(" ")),
            ms(ss_med),
            ms(ss_min),
            ss_rss
        );
        println!(
            "  {}: ratio twlab/ss: time (median) {:.2}x, time (min) {:.2}x, peak memory {:.2}x",
            case.name,
            ms(tw_med) / ms(ss_med),
            ms(tw_min) / ms(ss_min),
            tw_rss as f64 / ss_rss as f64
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and min wall time, and the largest peak RSS (KiB).
fn stats(runs: &[(Duration, i64)]) -> (Duration, Duration, i64) {
    let mut t: Vec<Duration> = runs.iter().map(|r| r.0).collect();
    t.sort();
    let rss = runs.iter().map(|r| r.1).max().unwrap_or(0);
    (t[t.len() / 2], t[0], rss)
}
