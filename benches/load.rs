//! Is `twlab load` fast enough not to be the bottleneck?
//!
//! In one fresh namespace (wide port range, so nothing runs out), against
//! one server, the C closed loop `../shared/bench/loop.c` (`loop server
//! PORT 1`: closes at accept; `loop client PORT 0 COUNT 0`: connects, waits
//! for the server's FIN, closes) and `twlab load` with one worker doing the
//! same (server closes first, no requests), alternated round by round,
//! with the same CPU placement (client on CPU 0, server on CPU 1, see
//! `common`); the figure is the median of the rounds' ratios. Then `twlab
//! load` with 1..=cores workers against its own in-process server.
//!
//! `cargo bench --bench load` (root: needs network namespaces and `cc`).
//! Set TWLAB_LOOP_C to the path of loop.c if it is not at ../shared/bench.

mod common;

fn main() {
    #[cfg(target_os = "linux")]
    imp::main();
    #[cfg(not(target_os = "linux"))]
    println!("skipped load bench: it needs Linux (network namespaces)");
}

#[cfg(target_os = "linux")]
mod imp {

    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::Duration;
    use twlab::experiment::Side;
    use twlab::load::{self, Mode, NsSettings, Plan, PortChoice, Rate, Stop, Target, Workload};
    use twlab::netns;
    use twlab::sysctl::PortRange;

    use super::common::{self, median, median_ci95};

    const COUNT: u64 = 10_000;
    /// Rounds of the comparison with loop.c, unless TWLAB_LOAD_BENCH_ROUNDS
    /// says otherwise (1 to 400).
    const ROUNDS: u16 = 61;
    /// Rounds of the scaling runs (1..=cores workers each).
    const SCALING_ROUNDS: usize = 5;
    /// Each measurement gets a server port of its own: a port reused from an
    /// earlier measurement would meet the server's TIME_WAITs of that 4-tuple
    /// and take the slower SYN-on-TIME_WAIT path (`tcp_timewait_state_process`).
    const FIRST_PORT: u16 = 6000;

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

    fn plan(workers: u32, target: Target, port: u16) -> Plan {
        let netns = (target == Target::InProcess).then(wide_ns);
        let mut plan = Plan::new(
            Workload {
                workers,
                mode: Mode::Churn {
                    concurrency: 1,
                    pool: 0,
                    requests: 0,
                },
                rate: Rate::Max,
                closer: Side::Server,
                linger_zero: false,
                sources: vec![],
                destinations: vec![SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)],
                port_choice: PortChoice::Kernel,
            },
            Stop {
                duration: Duration::from_secs(60),
                count: Some(COUNT * workers as u64),
                on_first_error: false,
            },
            target,
            netns,
        );
        plan.sample_every = Duration::from_millis(500);
        plan.count_free_ports = false;
        plan
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
    fn c_rate(bin: &PathBuf, port: u16) -> f64 {
        let o = Command::new(bin)
            .args(["client", &port.to_string(), "0", &COUNT.to_string(), "0"])
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

    /// `loop server PORT 1`, once it listens (a connect succeeds, bounded).
    fn start_server(bin: &PathBuf, port: u16) -> std::process::Child {
        let mut cmd = Command::new(bin);
        cmd.args(["server", &port.to_string(), "1"])
            .stdout(Stdio::null());
        if let Some((_, server_cpu)) = common::cpus() {
            common::pin_command(&mut cmd, server_cpu);
        }
        let server = cmd.spawn().expect("loop server");
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let up = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            std::net::TcpStream::connect(addr).is_ok()
        });
        assert!(up, "loop server did not listen on {addr}");
        server
    }

    fn versus_c(bin: PathBuf) {
        let rounds: u16 = std::env::var("TWLAB_LOAD_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| (1..=400).contains(n))
            .unwrap_or(ROUNDS);
        let sysctls = wide_ns().sysctls();
        let (c, t) = std::thread::spawn(move || {
            netns::enter_fresh(&sysctls).expect("fresh namespace");
            // The C client and twlab's worker threads inherit this.
            if let Some((client_cpu, _)) = common::cpus() {
                common::pin_thread(client_cpu);
            }
            let (mut c, mut t) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                let port = FIRST_PORT + 2 * round;
                let servers = [start_server(&bin, port), start_server(&bin, port + 1)];
                // Alternate who goes first.
                if round % 2 == 0 {
                    c.push(c_rate(&bin, port));
                    t.push(twlab_rate(&plan(1, Target::External, port + 1)));
                } else {
                    t.push(twlab_rate(&plan(1, Target::External, port + 1)));
                    c.push(c_rate(&bin, port));
                }
                for mut s in servers {
                    let _ = s.kill();
                    let _ = s.wait();
                }
            }
            let _ = std::fs::remove_file(&bin);
            (c, t)
        })
        .join()
        .expect("bench thread");
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let placement = common::placement();
        println!(
            "churn, server closes first, {COUNT} connections, one worker vs loop.c, {rounds} rounds, {placement} (best / median):"
        );
        println!(
            "  loop.c      {:>9.0} / {:>9.0} conn/s   runs {c:.0?}",
            best(&c),
            median(&c)
        );
        println!(
            "  twlab load  {:>9.0} / {:>9.0} conn/s   runs {t:.0?}",
            best(&t),
            median(&t)
        );
        // Each round's pair ran back to back, under the same load from the
        // rest of the machine: the median of the pairs' ratios is the figure.
        let ratios: Vec<f64> = t.iter().zip(&c).map(|(t, c)| t / c).collect();
        let ci = median_ci95(&ratios)
            .map(|(lo, hi)| format!(" (95% CI {lo:.2}–{hi:.2})"))
            .unwrap_or_default();
        println!(
            "  ratio       {:>9.2} / {:>9.2}×   median of the rounds' ratios {:.2}×{ci} {ratios:.2?}",
            best(&t) / best(&c),
            median(&t) / median(&c),
            median(&ratios)
        );
    }

    pub fn main() {
        if let Err(why) = netns::can_unshare() {
            println!("skipped load bench: cannot create network namespaces ({why})");
            return;
        }
        match loop_c().and_then(|src| compile(&src)) {
            Some(bin) => versus_c(bin),
            None => println!("skipped loop.c comparison: loop.c not found or cc failed"),
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        // Worker counts alternate within each round, so a burst of load
        // elsewhere hits them alike; the figure is each count's median.
        let counts: Vec<u32> = (1..=cores.max(2)).collect();
        let mut rates = vec![Vec::new(); counts.len()];
        for _ in 0..SCALING_ROUNDS {
            for (w, r) in counts.iter().zip(rates.iter_mut()) {
                r.push(twlab_rate(&plan(*w, Target::InProcess, FIRST_PORT)));
            }
        }
        println!(
            "scaling, in-process server, {COUNT} connections per worker, {SCALING_ROUNDS} rounds (median):"
        );
        let one = median(&rates[0]);
        for (w, r) in counts.iter().zip(&rates) {
            println!(
                "  {w} worker(s)  {:>9.0} conn/s  {:.2}× one worker   runs {r:.0?}",
                median(r),
                median(r) / one
            );
        }
    }
}
