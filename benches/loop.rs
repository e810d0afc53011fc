//! The story's loop at full speed: the C baseline (`../shared/bench/loop.c`,
//! compiled here with `cc -O2`) against `twlab client` and `twlab server`
//! in the four pairings, with fixed and kernel-chosen client ports and
//! either end closing first, all in one fresh network namespace in one
//! run. Prints connections per second and the ratio to C/C.
//!
//! Every cell runs once per round; each round starts at a different cell,
//! so no pairing always runs right after another, and the client runs on
//! CPU 0 and the server on CPU 1 whichever program plays them (see
//! `common`). A cell's ratio is the median over the rounds of its rate
//! divided by the C/C rate of the same round, group (port, closer).
//!
//! `cargo bench --bench loop [-- COUNT]` (default 10000 connections per
//! cell). Needs root (a network namespace), `cc`, and the shared folder
//! beside the repository; says what is missing and skips otherwise.
//! twlab's output (one line per attempt or connection, with the kernel's
//! view of the 4-tuple) goes to /dev/null: it is produced, not shown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use twlab::experiment::Side;
use twlab::netns::{self, Sysctl};

mod common;
use common::{median, median_ci95};

const TWLAB: &str = env!("CARGO_BIN_EXE_twlab");

/// Which program plays a part.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Impl {
    C,
    Twlab,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::C => "C",
            Impl::Twlab => "twlab",
        }
    }
}

/// One cell of the table.
struct Cell {
    client: Impl,
    server: Impl,
    fixed_port: bool,
    /// Who sends the first FIN (and holds TIME_WAIT).
    closer: Side,
}

fn compile(src: &Path, out: &Path) -> Result<(), String> {
    if !src.exists() {
        return Err(format!("{} not found", src.display()));
    }
    let st = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(out)
        .arg(src)
        .status()
        .map_err(|e| format!("cc: {e}"))?;
    if !st.success() {
        return Err(format!("cc -O2 {} failed: {st}", src.display()));
    }
    Ok(())
}

fn start_server(c_loop: &Path, cell: &Cell, port: u16) -> Child {
    let first = matches!(cell.closer, Side::Server);
    let mut cmd = match cell.server {
        Impl::C => {
            let mut c = Command::new(c_loop);
            c.args(["server", &port.to_string(), if first { "1" } else { "0" }]);
            c
        }
        Impl::Twlab => {
            let mut c = Command::new(TWLAB);
            c.args(["server", "--listen", &format!("127.0.0.1:{port}")]);
            c.args([
                "--reuseaddr",
                "--count",
                "100000000",
                "--idle-timeout",
                "600",
            ]);
            c.args(["--close", if first { "first" } else { "after-peer" }]);
            c
        }
    };
    #[cfg(target_os = "linux")]
    if let Some((_, cpu)) = common::cpus() {
        common::pin_command(&mut cmd, cpu);
    }
    cmd.stdout(Stdio::null()).spawn().expect("start the server")
}

/// Wait (bounded) until something listens on `addr`, on sock_diag.
fn wait_listening(addr: SocketAddr) {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let start = Instant::now();
    while twlab::diag::lookup(addr, any).ok().flatten().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "nothing listens on {addr}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Run the client's loop: conn/s over the client process's wall time, or
/// the line saying why the loop stopped early (with a fixed port and the
/// client closing first, that is the story itself: EADDRNOTAVAIL).
fn run_client(
    c_loop: &Path,
    cell: &Cell,
    (port, sport): (u16, u16),
    n: u32,
    out_file: &Path,
) -> Result<f64, String> {
    let first = matches!(cell.closer, Side::Client);
    let sport = if cell.fixed_port { sport } else { 0 };
    let mut cmd = match cell.client {
        Impl::C => {
            let mut c = Command::new(c_loop);
            c.args([
                "client",
                &port.to_string(),
                &sport.to_string(),
                &n.to_string(),
            ]);
            c.arg(if first { "1" } else { "0" });
            c
        }
        Impl::Twlab => {
            let mut c = Command::new(TWLAB);
            c.args(["client", "--connect", &format!("127.0.0.1:{port}")]);
            if sport != 0 {
                c.args(["--bind", &format!("127.0.0.1:{sport}")]);
            }
            c.args(["--reuseaddr", "--count", &n.to_string(), "--timeout", "600"]);
            c.args(["--close", if first { "first" } else { "after-peer" }]);
            c
        }
    };
    #[cfg(target_os = "linux")]
    if let Some((cpu, _)) = common::cpus() {
        common::pin_command(&mut cmd, cpu);
    }
    let file = std::fs::File::create(out_file).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let out = cmd
        .stdout(file)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    let dt = t.elapsed().as_secs_f64();
    if !out.status.success() {
        let printed = std::fs::read_to_string(out_file).unwrap_or_default();
        let why = match cell.client {
            Impl::C => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Impl::Twlab => printed.lines().last().unwrap_or("").to_string(),
        };
        return Err(why);
    }
    Ok(f64::from(n) / dt)
}

fn main() {
    if !cfg!(target_os = "linux") {
        println!("loop bench skipped: it needs Linux (network namespaces, sock_diag)");
        return;
    }
    let n: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `../shared` beside the clone (CI); a worktree nested deeper finds it
    // in a further ancestor.
    let src = root
        .ancestors()
        .skip(1)
        .map(|a| a.join("shared/bench/loop.c"))
        .find(|p| p.exists())
        .unwrap_or_else(|| root.join("../shared/bench/loop.c"));
    let c_loop: PathBuf = root.join("target/loop-c");
    if let Err(why) = compile(&src, &c_loop) {
        println!("loop bench skipped: {why} (needs cc and ../shared/bench/loop.c)");
        return;
    }
    if let Err(why) = netns::can_unshare() {
        println!("loop bench skipped: cannot make a network namespace ({why})");
        return;
    }
    // RFC 1337 protection as in the tests: no stray RST kills a TIME_WAIT.
    netns::enter_fresh(&[Sysctl::new("net.ipv4.tcp_rfc1337", "1")]).expect("fresh namespace");
    let placement = common::placement();
    println!(
        "{n} connections per cell, {ROUNDS} rounds, one namespace, loopback, {placement}; load average before: {}",
        load_average()
    );
    let mut cells = Vec::new();
    for fixed_port in [true, false] {
        for closer in [Side::Client, Side::Server] {
            for (client, server) in [
                (Impl::C, Impl::C),
                (Impl::Twlab, Impl::C),
                (Impl::C, Impl::Twlab),
                (Impl::Twlab, Impl::Twlab),
            ] {
                cells.push(Cell {
                    client,
                    server,
                    fixed_port,
                    closer,
                });
            }
        }
    }
    // Rounds interleave the cells, so a burst of load elsewhere on the
    // machine hits every pairing alike, and each round starts one cell
    // further on.
    let mut runs: Vec<Vec<Result<f64, String>>> = Vec::new();
    let out_file = root.join("target/loop-client.out");
    let mut port = 20_000u16;
    for round in 0..ROUNDS {
        let mut this: Vec<Result<f64, String>> = vec![Err("not run".into()); cells.len()];
        for k in 0..cells.len() {
            let i = (k + round) % cells.len();
            let cell = &cells[i];
            // Each run its own server and client port: no run meets
            // another's TIME_WAIT.
            port += 1;
            let mut srv = start_server(&c_loop, cell, port);
            wait_listening(SocketAddr::from(([127, 0, 0, 1], port)));
            this[i] = run_client(&c_loop, cell, (port, port + 10_000), n, &out_file);
            let _ = srv.kill();
            let _ = srv.wait();
        }
        runs.push(this);
    }
    print_table(&cells, &runs);
    println!("load average after: {}", load_average());
}

/// /proc/loadavg's first three fields: the bench shares the machine, and
/// its numbers mean little without them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

const ROUNDS: usize = 15;

/// Print the table (each cell's median rate, and the median of its
/// rounds' ratios to the C/C cell of its group), then how many twlab
/// pairings reached 0.8× C/C. The bench reports; it does not gate.
fn print_table(cells: &[Cell], runs: &[Vec<Result<f64, String>>]) {
    println!(
        "{:<6} {:<6} {:<13} {:<12} {:>8} {:>6} {:>11}  per round",
        "client", "server", "client port", "closes first", "conn/s", "× C/C", "95% CI"
    );
    let (mut ran, mut reached) = (0, 0);
    for (i, cell) in cells.iter().enumerate() {
        // The C/C cell of this group: the same port choice and closer.
        let base = cells
            .iter()
            .position(|c| {
                c.client == Impl::C
                    && c.server == Impl::C
                    && c.fixed_port == cell.fixed_port
                    && c.closer == cell.closer
            })
            .expect("every group has a C/C cell");
        let rates: Vec<f64> = runs
            .iter()
            .filter_map(|r| r[i].as_ref().ok().copied())
            .collect();
        let ratios: Vec<f64> = runs
            .iter()
            .filter_map(|r| match (&r[i], &r[base]) {
                (Ok(v), Ok(b)) => Some(v / b),
                _ => None,
            })
            .collect();
        let twlab = cell.client == Impl::Twlab || cell.server == Impl::Twlab;
        if twlab && !ratios.is_empty() {
            ran += 1;
            reached += usize::from(median(&ratios) >= 0.8);
        }
        let ci = match median_ci95(&ratios) {
            Some((lo, hi)) if twlab => format!("{lo:.2}–{hi:.2}"),
            _ => String::new(),
        };
        let (rate, ratio, per_round) = if rates.is_empty() {
            // Every round stopped early: say why, from the last round.
            let why = runs
                .last()
                .and_then(|r| r[i].as_ref().err().cloned())
                .unwrap_or_default();
            (format!("stopped: {why}"), String::new(), String::new())
        } else if ratios.is_empty() {
            (format!("{:.0}", median(&rates)), "-".into(), String::new())
        } else {
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            (
                format!("{:.0}", median(&rates)),
                format!("{:.2}", median(&ratios)),
                each.join(" "),
            )
        };
        println!(
            "{:<6} {:<6} {:<13} {:<12} {:>8} {:>6} {:>11}  {}",
            cell.client.name(),
            cell.server.name(),
            if cell.fixed_port {
                "fixed"
            } else {
                "kernel-chosen"
            },
            cell.closer.to_string(),
            rate,
            ratio,
            ci,
            per_round
        );
    }
    let uncompared = cells
        .iter()
        .filter(|c| c.client == Impl::Twlab || c.server == Impl::Twlab)
        .count()
        - ran;
    println!(
        "loop: {reached} of {ran} twlab pairings ≥ 0.8× C/C by the median of their rounds' ratios ({uncompared} not compared: stopped early, or C/C did)"
    );
}
