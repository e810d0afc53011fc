//! Is `twlab load` fast enough not to be the bottleneck?
//!
//! In one fresh namespace (wide port range, so nothing runs out), against
//! one server, the C closed loop `../shared/bench/loop.c` (`loop server
//! PORT 1`: closes at accept; `loop client PORT 0 COUNT 0`: connects, waits
//! for the server's FIN, closes) and `twlab load` with one worker doing the
//! same (server closes first, no requests), alternated, best of each; then
//! `twlab load` with 1..=cores workers against its own in-process server.
//!
//! `cargo bench --bench load` (root: needs network namespaces and `cc`).
//! Set TWLAB_LOOP_C to the path of loop.c if it is not at ../shared/bench.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use twlab::load::{self, Closer, Mode, NsSettings, Plan, PortChoice, Rate, Stop, Target, Workload};
use twlab::netns;
use twlab::sysctl::PortRange;

const COUNT: u64 = 20_000;
const ROUNDS: usize = 3;
const PORT: u16 = 5999;

fn loop_c() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TWLAB_LOOP_C") {
        return Some(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The repo's ../shared, or the worktree's ../../shared.
    [
        root.join("../shared/bench/loop.c"),
        root.join("../../shared/bench/loop.c"),
    ]
    .into_iter()
    .find(|p| p.exists())
}

fn compile(src: &PathBuf) -> Option<PathBuf> {
    let out = std::env::temp_dir().join(format!("twlab-bench-loop-{}", std::process::id()));
    let ok = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(out)
}

fn plan(workers: u32, target: Target) -> Plan {
    Plan {
        workload: Workload {
            workers,
            mode: Mode::Churn {
                concurrency: 1,
                pool: 0,
                requests: 0,
            },
            rate: Rate::Max,
            closer: Closer::Server,
            linger_zero: false,
            sources: vec![],
            destinations: vec![SocketAddrV4::new(Ipv4Addr::LOCALHOST, PORT)],
            port_choice: PortChoice::Kernel,
        },
        stop: Stop {
            duration: Duration::from_secs(60),
            count: Some(COUNT * workers as u64),
            on_first_error: false,
        },
        netns: (target == Target::InProcess).then(wide_ns),
        target,
        sample_every: Duration::from_millis(500),
        count_free_ports: false,
    }
}

fn wide_ns() -> NsSettings {
    NsSettings {
        port_range: PortRange {
            low: 10000,
            high: 65000,
        },
        ..NsSettings::default()
    }
}

fn twlab_rate(p: &Plan) -> f64 {
    let r = load::run(p, "bench", Arc::new(|_: &load::Sample| {})).expect("load run");
    assert_eq!(r.errors, 0, "{}", r.text());
    r.conn_per_s
}

/// "N connections in T s = R conn/s" → R.
fn c_rate(bin: &PathBuf) -> f64 {
    let o = Command::new(bin)
        .args(["client", &PORT.to_string(), "0", &COUNT.to_string(), "0"])
        .output()
        .expect("run loop client");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "loop client: {text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    text.split('=')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .expect("a rate")
}

fn versus_c(bin: PathBuf) {
    let sysctls = wide_ns().sysctls();
    let (c, t) = std::thread::spawn(move || {
        netns::enter_fresh(&sysctls).expect("fresh namespace");
        let mut server = Command::new(&bin)
            .args(["server", &PORT.to_string(), "1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("loop server");
        // Wait (bounded) until it listens: a connect succeeds.
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, PORT);
        let up = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            std::net::TcpStream::connect(addr).is_ok()
        });
        assert!(up, "loop server did not listen");
        let (mut c, mut t) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            c.push(c_rate(&bin));
            t.push(twlab_rate(&plan(1, Target::External)));
        }
        let _ = server.kill();
        let _ = server.wait();
        let _ = std::fs::remove_file(&bin);
        (c, t)
    })
    .join()
    .expect("bench thread");
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "churn, server closes first, {COUNT} connections, one worker vs loop.c, best of {ROUNDS}:"
    );
    println!("  loop.c      {:>9.0} conn/s   runs {c:.0?}", best(&c));
    println!("  twlab load  {:>9.0} conn/s   runs {t:.0?}", best(&t));
    println!("  ratio       {:>9.2}×", best(&t) / best(&c));
}

fn main() {
    if let Err(why) = netns::can_unshare() {
        println!("skipped load bench: cannot create network namespaces ({why})");
        return;
    }
    match loop_c().and_then(|src| compile(&src)) {
        Some(bin) => versus_c(bin),
        None => println!("skipped loop.c comparison: loop.c not found or cc failed"),
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    println!("scaling, in-process server, {COUNT} connections per worker:");
    for w in 1..=cores.max(2) {
        let r = twlab_rate(&plan(w, Target::InProcess));
        println!("  {w} worker(s)  {r:>9.0} conn/s");
    }
}
