//! `cargo bench --bench stop`: how long each long-running command takes to
//! stop after SIGINT or SIGTERM, at several moments of its run (issue 19:
//! "every command, every moment: ≤ 200 ms, exit 128+N").
//!
//! Each run starts the release binary in a fresh network namespace of its
//! own (`unshare -n`, loopback up), so nothing touches the host's ports;
//! after a delay the signal goes to twlab itself, and the time until it has
//! exited (all its descriptors closed: the kernel's teardown counts) is
//! measured. A run that ended before its signal is counted as such, not as
//! a stop. Prints, per command, the slowest and median stop, how many were
//! over the 200 ms goal, and any exit code other than 128 + N. Needs root
//! (namespaces); otherwise says why. `TWLAB_STOP_ROUNDS=N` repeats every
//! moment N times (default 2).
//!
//! The floor under `reuseport`'s stop is the kernel's own teardown of its
//! connections (one RST and two socket frees each): the bench measures it
//! too, in a fresh namespace, with nothing of twlab's but the namespace —
//! the same sockets, closed listeners first on one thread.

fn main() {
    #[cfg(target_os = "linux")]
    imp::main();
    #[cfg(not(target_os = "linux"))]
    println!("skipped stop bench: it needs Linux (network namespaces, unshare)");
}

#[cfg(target_os = "linux")]
mod imp {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// The goal: stopped within this after the signal.
    const GOAL: Duration = Duration::from_millis(200);
    /// The moments after the start at which the signal is sent.
    const MOMENTS_MS: [u64; 5] = [30, 120, 300, 700, 1500];
    /// A run that has not stopped this long after its signal is killed and
    /// reported as not stopped.
    const GIVE_UP: Duration = Duration::from_secs(10);

    struct Case {
        name: &'static str,
        /// Started in the background in the same namespace first (a shell
        /// command), and waited for until something listens on its port.
        peer: Option<(&'static str, u16)>,
        args: Vec<String>,
    }

    fn cases(scenario: &str) -> Vec<Case> {
        let c = |name, args: &[&str]| Case {
            name,
            peer: None,
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        vec![
            c("server", &["server", "--listen", "127.0.0.1:23001"]),
            // Both ends wait for the other's FIN (after-peer on both sides):
            // the client sits in its wait for the server's FIN.
            Case {
                peer: Some(("server --listen 127.0.0.1:23002 --count 1", 23002)),
                ..c(
                    "client (waiting for FIN)",
                    &[
                        "client",
                        "--connect",
                        "127.0.0.1:23002",
                        "--close",
                        "after-peer",
                        "--count",
                        "1",
                    ],
                )
            },
            c(
                "reuseport 19,000",
                &["reuseport", "--connections", &GROUP_CONNECTIONS.to_string()],
            ),
            c("trace 1", &["trace", "1"]),
            c("trace delayed-duplicate", &["trace", "delayed-duplicate"]),
            c("load", &["load", "--duration", "30s"]),
            c("matrix", &["matrix"]),
            c("pairs", &["pairs"]),
            c("selfcheck", &["selfcheck", "--cases", "100000"]),
            c("ss --watch", &["ss", "--watch=100ms"]),
            c("events", &["events"]),
            c("run (a 60 s sleep)", &["run", scenario]),
        ]
    }

    #[derive(Default)]
    struct Tally {
        stops: Vec<Duration>,
        ended_before: usize,
        wrong_code: Vec<String>,
        not_stopped: usize,
    }

    fn one(bin: &str, case: &Case, delay: Duration, sig: nix::sys::signal::Signal, t: &mut Tally) {
        // The peer (if any) in the background, then a bounded wait until its
        // port listens (its kernel state, read with iproute2's ss), then exec:
        // the signal goes to twlab itself.
        let (peer, port) = case
            .peer
            .map_or((String::new(), 0), |(p, port)| (format!("{bin} {p}"), port));
        let script = "ip link set lo up || exit 1
    if [ -n \"$1\" ]; then
      $1 >/dev/null 2>&1 &
      i=0
      until ss -Hltn \"sport = :$2\" | grep -q .; do
        i=$((i+1)); [ $i -gt 500 ] && exit 1; sleep 0.01
      done
    fi
    shift 2
    exec \"$@\"";
        let mut child = match Command::new("unshare")
            .args([
                "-n",
                "sh",
                "-c",
                script,
                "sh",
                &peer,
                &port.to_string(),
                bin,
            ])
            .args(&case.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                println!("{}: cannot start: {e}", case.name);
                return;
            }
        };
        std::thread::sleep(delay);
        if let Ok(Some(_)) = child.try_wait() {
            t.ended_before += 1;
            return;
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let start = Instant::now();
        let _ = nix::sys::signal::kill(pid, sig);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let took = start.elapsed();
                    use std::os::unix::process::ExitStatusExt;
                    let want = 128 + sig as i32;
                    // sh has exec'd twlab, so the status is twlab's own.
                    if status.code() != Some(want) {
                        t.wrong_code.push(format!(
                            "{} at {} ms: {status:?} (want {want})",
                            sig.as_str(),
                            delay.as_millis(),
                        ));
                        if status.signal().is_some() {
                            return;
                        }
                    }
                    t.stops.push(took);
                    return;
                }
                Ok(None) if start.elapsed() > GIVE_UP => {
                    let _ = child.kill();
                    let _ = child.wait();
                    t.not_stopped += 1;
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_micros(500)),
                Err(e) => {
                    println!("{}: wait: {e}", case.name);
                    return;
                }
            }
        }
    }

    /// Connections in the `reuseport` case and in the floor measurement.
    const GROUP_CONNECTIONS: usize = 19_000;

    /// The kernel's teardown of a SO_REUSEPORT group with its connections
    /// still queued (what `reuseport` closes on a signal), timed alone.
    fn teardown_floor() -> Result<Duration, String> {
        use socket2::{Domain, Socket, Type};
        let somaxconn =
            twlab::netns::Sysctl::new("net.core.somaxconn", (GROUP_CONNECTIONS + 16).to_string());
        twlab::netns::run_in_fresh(vec![somaxconn], || -> Result<Duration, String> {
            let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
            let e = |what: &str, err: std::io::Error| format!("{what}: {err}");
            let mut listeners = Vec::new();
            for _ in 0..4 {
                let l =
                    Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|x| e("socket", x))?;
                l.set_reuse_port(true).map_err(|x| e("SO_REUSEPORT", x))?;
                l.bind(&addr.into()).map_err(|x| e("bind", x))?;
                l.listen(GROUP_CONNECTIONS as i32 + 16)
                    .map_err(|x| e("listen", x))?;
                listeners.push(l);
            }
            let mut clients = Vec::with_capacity(GROUP_CONNECTIONS);
            for _ in 0..GROUP_CONNECTIONS {
                clients.push(std::net::TcpStream::connect(addr).map_err(|x| e("connect", x))?);
            }
            let start = Instant::now();
            drop(listeners);
            drop(clients);
            Ok(start.elapsed())
        })
        .map_err(|e| e.to_string())?
    }

    pub fn main() {
        if let Err(why) = twlab::netns::can_unshare() {
            println!("stop bench skipped: cannot create network namespaces ({why}); run as root");
            return;
        }
        let bin = env!("CARGO_BIN_EXE_twlab");
        let rounds: usize = std::env::var("TWLAB_STOP_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2)
            .clamp(1, 20);
        let dir = std::env::temp_dir().join(format!("twlab-stop-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let scenario = dir.join("sleep.toml");
        std::fs::write(
            &scenario,
            "description = \"a long sleep\"\n\n[[socket]]\nname = \"s\"\naddress = \"127.0.0.1:32150\"\n\n\
             [[step]]\ndo = \"bind\"\nsocket = \"s\"\n\n[[step]]\ndo = \"sleep\"\nms = 60000\n",
        )
        .expect("scenario file");
        println!(
            "stop after a signal: SIGINT and SIGTERM at {MOMENTS_MS:?} ms, {rounds} round(s); goal ≤ {} ms",
            GOAL.as_millis()
        );
        println!(
            "{:<26} {:>6} {:>9} {:>9} {:>6} {:>7}  exit codes",
            "command", "stops", "median", "slowest", ">goal", "ended"
        );
        let mut over = 0;
        for case in cases(&scenario.to_string_lossy()) {
            let mut t = Tally::default();
            for _ in 0..rounds {
                for ms in MOMENTS_MS {
                    for sig in [
                        nix::sys::signal::Signal::SIGINT,
                        nix::sys::signal::Signal::SIGTERM,
                    ] {
                        one(bin, &case, Duration::from_millis(ms), sig, &mut t);
                    }
                }
            }
            t.stops.sort();
            let ms = |d: Option<&Duration>| {
                d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
            };
            let late = t.stops.iter().filter(|d| **d > GOAL).count() + t.not_stopped;
            over += late;
            println!(
                "{:<26} {:>6} {:>9} {:>9} {:>6} {:>7}  {}",
                case.name,
                t.stops.len(),
                ms(t.stops.get(t.stops.len() / 2)),
                ms(t.stops.last()),
                late,
                t.ended_before,
                if t.wrong_code.is_empty() && t.not_stopped == 0 {
                    "all 128+N".to_string()
                } else {
                    format!(
                        "{} not stopped in {} s; {}",
                        t.not_stopped,
                        GIVE_UP.as_secs(),
                        t.wrong_code.join("; ")
                    )
                }
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        for _ in 0..rounds {
            match teardown_floor() {
                Ok(d) => println!(
                    "kernel floor: closing a 4-listener SO_REUSEPORT group with {GROUP_CONNECTIONS} queued connections (listeners first, one thread, no twlab): {:.1} ms",
                    d.as_secs_f64() * 1e3
                ),
                Err(e) => println!("kernel floor: not measured ({e})"),
            }
        }
        println!(
            "{over} stop(s) over {} ms (\"ended\": runs that finished before their signal)",
            GOAL.as_millis()
        );
    }
}
