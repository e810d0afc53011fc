//! `cargo bench --bench diag`: every command that reads the socket table,
//! against the limit — one raw sock_diag dump, read and discarded — on
//! tables of 30,000 and 250,000 TIME_WAIT sockets.
//!
//! For each size the bench enters a fresh network namespace
//! (`ip_local_port_range` 1024-65535, `tcp_tw_reuse` 0), keeps 8 loopback
//! listeners open, makes the TIME_WAITs (clients close first), then runs,
//! alternating the order every round, stdout to /dev/null:
//! - the raw dump: this bench's own binary started again (so it pays a
//!   process start like the others) sending one `inet_diag_req_v2` per
//!   family by hand and reading the answers until NLMSG_DONE, nothing
//!   decoded: TIME_WAIT only (what `ss --state time-wait` needs), and
//!   every state (what a diagnosis needs);
//! - iproute2's `ss -tan state time-wait`;
//! - `twlab ss --state time-wait`, the same with `--json`, `ss --summary`;
//! - `twlab why port 5001`, `why bind 127.0.0.1:5001`, `why connect
//!   127.0.0.1:5001`;
//! - one failed `twlab client` step with its diagnosis: bind() of a port a
//!   TIME_WAIT holds (EADDRINUSE), and the diagnosis it prints.
//!
//! Each is printed with its median wall time as a ratio to the raw dump
//! of the states it needs, and its peak RSS (one more run under
//! /usr/bin/time). `TWLAB_DIAG_BENCH_SOCKETS=30000` picks the sizes (comma
//! separated); `TWLAB_DIAG_BENCH_EXEC='sh command'` runs that command in the
//! namespace once the table is made instead of the bench (to profile one).
//!
//! Needs root (namespaces) and iproute2's `ss`; otherwise it says why and
//! exits 0.

mod common;

fn main() {
    #[cfg(target_os = "linux")]
    imp::main();
    #[cfg(not(target_os = "linux"))]
    println!("skipped diag bench: it needs Linux (network namespaces, sock_diag)");
}

#[cfg(target_os = "linux")]
mod imp {
    use super::common;

    use common::timewait::{MAX_WANT, count_time_wait, make_time_wait, time_child};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    use twlab::netns::{self, Sysctl};

    /// Set in the environment of the raw dump's child: the states to dump.
    const RAW_ENV: &str = "TWLAB_DIAG_BENCH_RAW_STATES";
    /// TCP_TIME_WAIT's bit in `idiag_states`.
    const TW_BIT: u32 = 1 << 6;
    /// Every state, TCP_BOUND_INACTIVE (bit 13) included, as twlab asks.
    const ALL_BITS: u32 = 0x3ffe;

    pub fn main() {
        if let Ok(states) = std::env::var(RAW_ENV) {
            // The child: one raw dump, then exit.
            let states = states.parse().unwrap_or(ALL_BITS);
            std::process::exit(match raw_dump(states) {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("raw dump: {e}");
                    1
                }
            });
        }
        if let Err(why) = run() {
            println!("diag bench skipped: {why}");
        }
    }

    /// Which raw dump a command is measured against.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Limit {
        TimeWait,
        All,
    }

    struct Case {
        name: String,
        cmd: Command,
        /// The raw dump it is compared with (None: the raw dumps themselves).
        against: Option<Limit>,
        /// Exit codes that count as success.
        ok: &'static [i32],
    }

    fn raw_case(states: u32) -> Case {
        let mut cmd = Command::new(std::env::current_exe().unwrap_or_default());
        cmd.env(RAW_ENV, states.to_string());
        Case {
            name: if states == TW_BIT {
                "raw dump, TIME_WAIT".into()
            } else {
                "raw dump, all states".into()
            },
            cmd,
            against: None,
            ok: &[0],
        }
    }

    fn case(name: &str, program: &str, args: &[&str], against: Limit, ok: &'static [i32]) -> Case {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Case {
            name: name.to_string(),
            cmd,
            against: Some(against),
            ok,
        }
    }

    fn cases(twlab: &str, tw_port: u16) -> Vec<Case> {
        let bind = format!("127.0.0.1:{tw_port}");
        // `why` exits 4 when it predicts a failure, `client` 4 when its loop
        // saw an error.
        vec![
            raw_case(TW_BIT),
            raw_case(ALL_BITS),
            case(
                "ss -tan state time-wait",
                "ss",
                &["-tan", "state", "time-wait"],
                Limit::TimeWait,
                &[0],
            ),
            case(
                "twlab ss --state time-wait",
                twlab,
                &["ss", "--state", "time-wait"],
                Limit::TimeWait,
                &[0],
            ),
            case(
                "twlab ss --state time-wait --json",
                twlab,
                &["ss", "--state", "time-wait", "--json"],
                Limit::TimeWait,
                &[0],
            ),
            case(
                "twlab ss --summary",
                twlab,
                &["ss", "--summary"],
                Limit::All,
                &[0],
            ),
            case(
                "twlab why port 5001",
                twlab,
                &["why", "port", "5001"],
                Limit::All,
                &[0, 4],
            ),
            case(
                "twlab why bind 127.0.0.1:5001",
                twlab,
                &["why", "bind", "127.0.0.1:5001"],
                Limit::All,
                &[0, 4],
            ),
            case(
                "twlab why connect 127.0.0.1:5001",
                twlab,
                &["why", "connect", "127.0.0.1:5001"],
                Limit::All,
                &[0, 4],
            ),
            Case {
                name: "twlab client, failed bind() + why".into(),
                cmd: {
                    let mut c = Command::new(twlab);
                    c.args([
                        "client",
                        "--connect",
                        "127.0.0.1:5001",
                        "--bind",
                        &bind,
                        "--count",
                        "1",
                    ]);
                    c
                },
                against: Some(Limit::All),
                ok: &[4],
            },
        ]
    }

    fn run() -> Result<(), String> {
        if !cfg!(target_os = "linux") {
            return Err("sock_diag is Linux's".into());
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
        let sizes: Vec<usize> = match std::env::var("TWLAB_DIAG_BENCH_SOCKETS") {
            Ok(v) => v
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_WANT).contains(n))
                        .ok_or(format!(
                            "TWLAB_DIAG_BENCH_SOCKETS: sizes of 1 to {MAX_WANT}, comma separated"
                        ))
                })
                .collect::<Result<_, _>>()?,
            Err(_) => vec![30_000, 250_000],
        };
        for want in sizes {
            // Each size in a namespace of its own (the last one's TIME_WAITs
            // would still be there for up to 60 s).
            netns::enter_fresh(&[
                Sysctl::new("net.ipv4.ip_local_port_range", "1024 65535"),
                Sysctl::new("net.ipv4.tcp_max_tw_buckets", "524288"),
                Sysctl::new("net.ipv4.tcp_tw_reuse", "0"),
            ])
            .map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let (listeners, made) = make_time_wait(want)?;
            let tw = count_time_wait()?;
            let setup = t0.elapsed();
            println!(
                "\n{want} TIME_WAIT: {made} connections closed client-first in {:.2} s; sock_diag sees {tw} TIME_WAIT, {} listeners",
                setup.as_secs_f64(),
                listeners.len()
            );
            if tw < want - want / 100 {
                return Err(format!("only {tw} TIME_WAIT sockets, wanted {want}"));
            }
            if let Ok(sh) = std::env::var("TWLAB_DIAG_BENCH_EXEC") {
                let st = Command::new("sh")
                    .args(["-c", &sh])
                    .env("TWLAB", twlab)
                    .status()
                    .map_err(|e| e.to_string())?;
                println!("TWLAB_DIAG_BENCH_EXEC: {st}");
                continue;
            }
            // A local port a TIME_WAIT holds, for the client's bind().
            let tw_port = time_wait_port()?;
            measure(cases(twlab, tw_port), t0)?;
            drop(listeners);
        }
        Ok(())
    }

    /// The local port of one TIME_WAIT socket.
    fn time_wait_port() -> Result<u16, String> {
        use twlab::diag::{self, Query, StateSet, TcpState};
        let mut port = None;
        diag::dump_each(&Query::states(StateSet::of(&[TcpState::TimeWait])), |e| {
            port.get_or_insert(e.local.port());
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        port.ok_or("no TIME_WAIT socket".into())
    }

    /// Time every case, alternating, while the table lasts: at least 3
    /// rounds, at most 15, and no round started after 52 s from the first
    /// TIME_WAIT (they live 60 s).
    fn measure(mut cases: Vec<Case>, t0: Instant) -> Result<(), String> {
        for c in &mut cases {
            c.cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        }
        // Each case once first: it must succeed (and warms the caches).
        for c in &mut cases {
            let out = c.cmd.output().map_err(|e| format!("{}: {e}", c.name))?;
            let code = out.status.code().unwrap_or(-1);
            if !c.ok.contains(&code) {
                return Err(format!(
                    "{}: exit {code}: {}",
                    c.name,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let mut runs: Vec<Vec<Duration>> = cases.iter().map(|_| Vec::new()).collect();
        let mut rounds = 0;
        while rounds < 15 && (rounds < 3 || t0.elapsed() < Duration::from_secs(45)) {
            // Rotate the order each round, so no command always follows the
            // same one (or always gets the warm cache).
            let n = cases.len();
            for k in 0..n {
                let i = (k + rounds) % n;
                let start = Instant::now();
                let st = cases[i]
                    .cmd
                    .status()
                    .map_err(|e| format!("{}: {e}", cases[i].name))?;
                runs[i].push(start.elapsed());
                if !cases[i].ok.contains(&st.code().unwrap_or(-1)) {
                    return Err(format!("{}: {st}", cases[i].name));
                }
            }
            rounds += 1;
        }
        // Peak memory: one run each under /usr/bin/time (see time_child).
        let mut rss = Vec::new();
        for c in &cases {
            rss.push(time_child(&c.cmd)?.1);
        }
        let tw_end = count_time_wait()?;
        let med = |v: &[Duration]| {
            let ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
            common::median(&ms)
        };
        let limit = |l: Limit| med(&runs[if l == Limit::TimeWait { 0 } else { 1 }]);
        let ss_rss = rss[2];
        println!(
            "{rounds} rounds, alternating, stdout to /dev/null; {tw_end} TIME_WAIT at the end; wall time of each process (spawn to exit)"
        );
        println!(
            "  {:<36} {:>10} {:>10} {:>9} {:>10} {:>8}",
            "command", "median ms", "min ms", "× raw", "RSS KiB", "× ss RSS"
        );
        for (i, c) in cases.iter().enumerate() {
            let m = med(&runs[i]);
            let min = runs[i].iter().min().map_or(0.0, |d| d.as_secs_f64() * 1e3);
            let ratio = match c.against {
                Some(l) => format!("{:.2}×", m / limit(l)),
                None => "limit".into(),
            };
            println!(
                "  {:<36} {:>10.2} {:>10.2} {:>9} {:>10} {:>7.2}×",
                c.name,
                m,
                min,
                ratio,
                rss[i],
                rss[i] as f64 / ss_rss as f64
            );
        }
        Ok(())
    }

    /// The limit: the sockets in `states` of both families, read and
    /// discarded — a netlink socket, one 76-byte request (`struct nlmsghdr` +
    /// `struct inet_diag_req`, TCPDIAG_GETSOCK: both families in one walk of
    /// the kernel's tables, the cheapest way to ask), reads until NLMSG_DONE.
    /// A kernel that refuses it gets one `inet_diag_req_v2` per family.
    fn raw_dump(states: u32) -> std::io::Result<usize> {
        const NETLINK_SOCK_DIAG: i32 = 4;
        const TCPDIAG_GETSOCK: u16 = 18;
        const SOCK_DIAG_BY_FAMILY: u16 = 20;
        const NLM_F_REQUEST: u16 = 1;
        const NLM_F_DUMP: u16 = 0x300;
        const NLMSG_DONE: u16 = 3;
        const NLMSG_ERROR: u16 = 2;
        let header = |len: usize, kind: u16, seq: u32| {
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
            h[4..6].copy_from_slice(&kind.to_ne_bytes());
            h[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
            h[8..12].copy_from_slice(&seq.to_ne_bytes());
            h
        };
        let mut compat = vec![0u8; 76];
        compat[..16].copy_from_slice(&header(76, TCPDIAG_GETSOCK, 1));
        compat[68..72].copy_from_slice(&states.to_ne_bytes());
        let per_family = |seq: u32, family: u8| {
            let mut req = vec![0u8; 72];
            req[..16].copy_from_slice(&header(72, SOCK_DIAG_BY_FAMILY, seq));
            req[16] = family;
            req[17] = libc::IPPROTO_TCP as u8;
            req[20..24].copy_from_slice(&states.to_ne_bytes());
            req
        };
        // SAFETY: plain system calls on a descriptor this function owns; the
        // buffers outlive each call and their lengths are passed with them.
        unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut buf = vec![0u8; 32 * 1024];
            let mut sockets = 0;
            let mut requests = vec![compat];
            while let Some(req) = requests.pop() {
                if libc::send(fd, req.as_ptr().cast(), req.len(), 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                'answer: loop {
                    let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n <= 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let mut off = 0;
                    while off + 16 <= n as usize {
                        let len = u32::from_ne_bytes([
                            buf[off],
                            buf[off + 1],
                            buf[off + 2],
                            buf[off + 3],
                        ]) as usize;
                        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                        if kind == NLMSG_ERROR && sockets == 0 && req.len() == 76 {
                            // No TCPDIAG_GETSOCK here: one request per family.
                            requests = vec![per_family(3, 10), per_family(2, 2)];
                            break 'answer;
                        }
                        if kind == NLMSG_DONE || kind == NLMSG_ERROR || len < 16 {
                            break 'answer;
                        }
                        sockets += 1;
                        off += (len + 3) & !3;
                    }
                }
            }
            libc::close(fd);
            Ok(sockets)
        }
    }
}
