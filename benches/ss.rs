//! `cargo bench --bench ss`: `twlab ss --state time-wait` against
//! `ss -tan state time-wait` on a table of 30,000 TIME_WAIT sockets.
//!
//! Needs root (a fresh network namespace per run, so the host's table and
//! sysctls are untouched); otherwise it says why and exits 0.
//!
//! The twlab binary measured is the one Cargo builds for this bench with the
//! bench profile (it inherits `release`): `CARGO_BIN_EXE_twlab`, which Cargo
//! sets when compiling benches and integration tests. Both programs are
//! spawned from the main thread, which lives in the namespace, so they see
//! the same table. Each child is reaped with wait4() to read its own wall
//! time and peak RSS (ru_maxrss).

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use twlab::diag::{self, Query, StateSet, TcpState};
use twlab::netns::{self, Sysctl};

const WANT: usize = 30_000;
const ROUNDS: usize = 15;
/// Listener ports on 127.0.0.1; clients spread over them.
const PORTS: [u16; 4] = [5001, 5002, 5003, 5004];
const BATCH: usize = 500;

fn main() {
    if let Err(why) = run() {
        println!("ss bench skipped: {why}");
    }
}

fn run() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root to create a network namespace".into());
    }
    netns::can_unshare().map_err(|e| format!("cannot create network namespaces: {e}"))?;
    if Command::new("ss").arg("-V").output().is_err() {
        return Err("iproute2's `ss` is not installed".into());
    }
    let twlab = env!("CARGO_BIN_EXE_twlab");
    netns::enter_fresh(&[
        // 64,512 ports per (local, peer) pair and no reuse of TIME_WAIT
        // ports by connect(), so every connection leaves one TIME_WAIT.
        Sysctl::new("net.ipv4.ip_local_port_range", "1024 65535"),
        Sysctl::new("net.ipv4.tcp_max_tw_buckets", "262144"),
        Sysctl::new("net.ipv4.tcp_tw_reuse", "0"),
    ])
    .map_err(|e| e.to_string())?;

    let t0 = Instant::now();
    let made = make_time_wait(WANT)?;
    let tw = count_time_wait()?;
    println!(
        "setup: {made} connections closed client-first in {:.2} s; sock_diag sees {tw} TIME_WAIT",
        t0.elapsed().as_secs_f64()
    );
    if tw < WANT {
        return Err(format!("only {tw} TIME_WAIT sockets, wanted {WANT}"));
    }

    // Sanity: both print one line per TIME_WAIT plus a header.
    let lines = |cmd: &mut Command| -> Result<usize, String> {
        let o = cmd.output().map_err(|e| e.to_string())?;
        Ok(o.stdout.iter().filter(|b| **b == b'\n').count())
    };
    let a = lines(Command::new(twlab).args(["ss", "--state", "time-wait"]))?;
    let b = lines(Command::new("ss").args(["-tan", "state", "time-wait"]))?;
    println!("lines: twlab {a}, ss {b} (each with a header)");

    let mut tw_runs = Vec::new();
    let mut ss_runs = Vec::new();
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither always gets a warm cache.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            if which == 0 {
                tw_runs.push(time_child(Command::new(twlab).args([
                    "ss",
                    "--state",
                    "time-wait",
                ]))?);
            } else {
                ss_runs.push(time_child(Command::new("ss").args([
                    "-tan",
                    "state",
                    "time-wait",
                ]))?);
            }
        }
    }
    let tw_end = count_time_wait()?;
    let (tw_med, tw_min, tw_rss) = stats(&tw_runs);
    let (ss_med, ss_min, ss_rss) = stats(&ss_runs);
    println!("TIME_WAIT sockets at the end: {tw_end}");
    println!("{ROUNDS} rounds each, stdout to /dev/null, alternating:");
    println!(
        "  twlab ss --state time-wait     median {:7.2} ms  min {:7.2} ms  peak RSS {:6} KiB",
        ms(tw_med),
        ms(tw_min),
        tw_rss
    );
    println!(
        "  ss -tan state time-wait        median {:7.2} ms  min {:7.2} ms  peak RSS {:6} KiB",
        ms(ss_med),
        ms(ss_min),
        ss_rss
    );
    println!(
        "  ratio twlab/ss: time (median) {:.2}x, time (min) {:.2}x, peak memory {:.2}x",
        ms(tw_med) / ms(ss_med),
        ms(tw_min) / ms(ss_min),
        tw_rss as f64 / ss_rss as f64
    );
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

/// Spawn `cmd` with stdout to /dev/null, reap it with wait4, return its
/// wall time and ru_maxrss (KiB on Linux).
fn time_child(cmd: &mut Command) -> Result<(Duration, i64), String> {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child; std's Child is not waited again.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    if r != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{cmd:?} failed (status {status})"));
    }
    Ok((wall, ru.ru_maxrss))
}

fn count_time_wait() -> Result<usize, String> {
    let mut n = 0;
    diag::dump_each(&Query::states(StateSet::of(&[TcpState::TimeWait])), |_| {
        n += 1;
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(n)
}

/// Make `want` connections to a few loopback listeners and close each
/// client first, then its server end, so each client end goes
/// FIN_WAIT2 → TIME_WAIT. Batches keep the number of open fds bounded.
fn make_time_wait(want: usize) -> Result<usize, String> {
    let listeners: Vec<TcpListener> = PORTS
        .iter()
        .map(|p| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, *p))))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("listen: {e}"))?;
    let mut made = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while made < want {
        if Instant::now() > deadline {
            return Err(format!("setup took over 120 s ({made} made)"));
        }
        let n = BATCH.min(want - made);
        let mut clients = Vec::with_capacity(n);
        let mut servers = Vec::with_capacity(n);
        for i in 0..n {
            let l = &listeners[(made + i) % listeners.len()];
            let c = TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?)
                .map_err(|e| format!("connect #{}: {e}", made + i))?;
            let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
            clients.push(c);
            servers.push(s);
        }
        // Client first (FIN_WAIT2), then the server once it has read the
        // client's FIN (its own FIN moves the client's mini socket to
        // TIME_WAIT). Waiting for EOF avoids a simultaneous close, which
        // would leave TIME_WAIT on the server end too.
        drop(clients);
        for s in servers {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            match (&s).read(&mut [0u8; 16]) {
                Ok(0) => {}
                other => return Err(format!("expected EOF from the client, got {other:?}")),
            }
        }
        made += n;
    }
    // The last FINs are processed synchronously on loopback, but wait on
    // the kernel's state rather than assume it (bounded, 5 s).
    let end = Instant::now() + Duration::from_secs(5);
    while count_time_wait()? < want && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(made)
}
