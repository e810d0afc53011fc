//! `cargo bench --bench matrix`: wall time of the default `twlab matrix`
//! (every cell in its own fresh network namespace) with the default job
//! count and with `--jobs 1`, and the speedup between them. With
//! `TWLAB_BENCH_UNTIL_FREE=1` it also times one `--until-free` run over the
//! default matrix (about one TIME_WAIT period, 60 s).
//!
//! Needs root (namespaces per cell; the host's sysctls are never touched);
//! otherwise it says why and exits 0. Every cell must agree with the model,
//! or the bench reports it: a fast wrong run is not a result.

use std::time::{Duration, Instant};
use twlab::matrix::{self, Plan, RunOptions};

const ROUNDS: usize = 3;

fn args(jobs: Option<usize>, until_free: bool) -> Plan {
    let mut plan = Plan::default();
    plan.run = RunOptions { jobs, until_free };
    plan
}

/// One run: wall time, cell count, mismatches.
fn once(a: &Plan) -> Result<(Duration, usize, usize), String> {
    let t = Instant::now();
    let run = matrix::execute(a, false).map_err(|e| e.to_string())?;
    Ok((t.elapsed(), run.cells.len(), run.mismatches().len()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn series(label: &str, a: &Plan) -> Result<Duration, String> {
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let (t, cells, bad) = once(a)?;
        if bad > 0 {
            println!(
                "{label}: {bad} of {cells} cells disagree with the model (see `twlab matrix`)"
            );
        }
        times.push(t);
        println!("{label}: {cells} cells in {:.2} s", t.as_secs_f64());
    }
    let m = median(times.clone());
    println!(
        "{label}: median {:.2} s, min {:.2} s over {ROUNDS} runs",
        m.as_secs_f64(),
        times.iter().min().expect("rounds > 0").as_secs_f64()
    );
    Ok(m)
}

fn run() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("`twlab matrix` needs Linux (network namespaces, sock_diag)".into());
    }
    // SAFETY: geteuid has no preconditions.
    #[cfg(unix)]
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root to create a network namespace per cell".into());
    }
    twlab::netns::can_unshare().map_err(|e| format!("cannot create network namespaces: {e}"))?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("{cores} cores, kernel {}", twlab::model::kernel_release());
    let par = series("default jobs", &args(None, false))?;
    let seq = series("--jobs 1", &args(Some(1), false))?;
    println!(
        "speedup default jobs vs --jobs 1: {:.1}x",
        seq.as_secs_f64() / par.as_secs_f64()
    );
    if std::env::var_os("TWLAB_BENCH_UNTIL_FREE").is_some() {
        let (t, cells, bad) = once(&args(None, true))?;
        println!(
            "--until-free: {cells} cells in {:.1} s ({bad} mismatches)",
            t.as_secs_f64()
        );
    }
    Ok(())
}

fn main() {
    if let Err(why) = run() {
        println!("matrix bench skipped: {why}");
    }
}
