//! `cargo bench --bench demo`: wall time of the `twlab demo` command as a
//! user runs it (process start to exit, stdout to /dev/null), 30 runs.
//! Goal: well under 2 s, never waiting for TIME_WAIT to expire.
//!
//! As root the runs happen in a fresh network namespace of the bench's own
//! (children inherit it), so the host's loopback keeps none of the demo's
//! TIME_WAIT sockets; otherwise on the host's loopback, as a user would.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 30;

fn main() {
    if !cfg!(target_os = "linux") {
        println!("demo bench skipped: `twlab demo` needs Linux (network namespaces, sock_diag)");
        return;
    }
    let place = match twlab::netns::enter_fresh(&[]) {
        Ok(()) => "a fresh network namespace",
        Err(_) => "the host's loopback (not root: no namespace)",
    };
    let bin = env!("CARGO_BIN_EXE_twlab");
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let t = Instant::now();
        let st = Command::new(bin)
            .arg("demo")
            .stdout(Stdio::null())
            .status()
            .expect("run twlab demo");
        times.push(t.elapsed());
        if !st.success() {
            println!("run {i}: twlab demo exited with {st} (3 = the model disagreed)");
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "twlab demo, {RUNS} runs in {place}: median {:.1} ms, min {:.1} ms, max {:.1} ms (goal < 2000 ms: {})",
        ms(times[RUNS / 2]),
        ms(times[0]),
        ms(times[RUNS - 1]),
        if times[RUNS - 1] < Duration::from_secs(2) {
            "met"
        } else {
            "MISSED"
        }
    );
}
