//! `twlab client`: the story's client. Binds its own port (optionally),
//! connects, closes, and loops; every attempt reports bind, connect and
//! close as separate steps, and every failure comes with the kernel's view
//! of the 4-tuple that caused it.

use super::{CloseMode, describe_view};
use crate::diag;
use crate::error::{Error, Result};
use crate::outcome::{Outcome, Step, StepResult};
use crate::socket::{Family, SocketOpts, StepError, TcpSock, parse_endpoint};
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// When the loop stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Until {
    /// Stop at the first failed attempt (the story's loop).
    FirstError,
    /// Retry a failing attempt until one succeeds, and report how long it
    /// took (e.g. until TIME_WAIT expired).
    FirstOk,
}

/// Arguments of `twlab client`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  # The story: fixed local port, SO_REUSEADDR, close first, loop until an error
  twlab client --connect 127.0.0.1:12345 --bind 127.0.0.1:23456 --reuseaddr --close first
  # How long until the fixed port can reconnect?
  twlab client --connect 127.0.0.1:12345 --bind 127.0.0.1:23456 --reuseaddr --until first-ok
Start `twlab server` first. Exit code: 0 if the loop ended as asked, 1 on a fault,
2 on bad arguments, 4 if --until first-error saw an error.")]
pub struct ClientArgs {
    /// Server to connect to.
    #[arg(long, value_name = "ADDR:PORT")]
    pub connect: String,
    /// Bind this local address and port before connect() (the fixed client
    /// port of the story). Without it the kernel picks an ephemeral port.
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<String>,
    /// Set SO_REUSEADDR before bind(). On Linux it lets bind() share a port
    /// with TIME_WAIT sockets that also had it; connect() is a separate check.
    #[arg(long)]
    pub reuseaddr: bool,
    /// Set SO_REUSEPORT before bind().
    #[arg(long)]
    pub reuseport: bool,
    /// SO_LINGER in seconds; 0 closes with RST (no TIME_WAIT).
    #[arg(long, value_name = "SECS")]
    pub linger: Option<u32>,
    /// `first`: close right after connecting (this end holds TIME_WAIT);
    /// `after-peer`: wait for the server's FIN, then close.
    #[arg(long, value_enum, default_value_t = CloseMode::First)]
    pub close: CloseMode,
    /// Number of attempts at most (retries of a failure under
    /// `--until first-ok` are bounded by --timeout instead).
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Pause between attempts, in milliseconds (0 = the tight loop).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub interval: u64,
    /// When to stop.
    #[arg(long, value_enum, default_value_t = Until::FirstError)]
    pub until: Until,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 70.0, value_name = "SECS")]
    pub timeout: f64,
    /// One JSON object per attempt (JSON Lines), then a summary object.
    #[arg(long)]
    pub json: bool,
}

/// One attempt: bind, connect and close as separate steps.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub n: u64,
    /// Seconds since the client started.
    pub t: f64,
    pub local: Option<SocketAddr>,
    pub steps: Vec<(Step, StepResult)>,
    pub outcome: Outcome,
    /// The old 4-tuple as the kernel saw it when the attempt failed, as
    /// text lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_view: Vec<String>,
    /// The 4-tuple (local → server) from both ends just before connect()
    /// (only with a fixed --bind port, only kept for failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_before: Option<diag::TupleView>,
    /// The same, right after the failed step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_after: Option<diag::TupleView>,
}

/// The end of the loop.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub attempts: u64,
    pub ok: u64,
    pub failed: u64,
    /// For `--until first-ok`: seconds from the first failure to the first
    /// success after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_after_s: Option<f64>,
    pub stopped_because: String,
}

fn attempt(
    a: &ClientArgs,
    n: u64,
    start: Instant,
    server: SocketAddr,
    bind: Option<SocketAddr>,
) -> Result<Attempt> {
    let opts = SocketOpts {
        reuseaddr: a.reuseaddr,
        reuseport: a.reuseport,
        linger: a.linger,
        bind_no_port: false,
    };
    let mut steps = Vec::new();
    let t = start.elapsed().as_secs_f64();
    // The kernel's view of the 4-tuple just before connect(), taken only
    // when the local port is fixed (the 4-tuple is known in advance). The
    // old connection can move on within microseconds (a delayed ACK turns
    // FIN_WAIT1 into FIN_WAIT2, the peer's FIN turns it into TIME_WAIT), so
    // a failure is shown with both the view before the call and after it.
    let mut before: Option<diag::TupleView> = None;
    let fail =
        |steps: Vec<(Step, StepResult)>, e: StepError, local, before: Option<diag::TupleView>| {
            let mut kernel_view = Vec::new();
            if let (Some(l), Some(v)) = (local, &before) {
                kernel_view.push("just before connect():".to_string());
                kernel_view.extend(
                    describe_view(l, server, v)
                        .into_iter()
                        .map(|s| format!("  {s}")),
                );
            }
            let mut view_after = None;
            match local {
                Some(l) if e.step != Step::Socket => match diag::tuple_view(l, server) {
                    Ok(v) => {
                        kernel_view.push(format!("right after {}() failed:", e.step));
                        kernel_view.extend(
                            describe_view(l, server, &v)
                                .into_iter()
                                .map(|s| format!("  {s}")),
                        );
                        view_after = Some(v);
                    }
                    Err(err) => kernel_view.push(format!("(socket states unavailable: {err})")),
                },
                _ => {}
            }
            Ok(Attempt {
                n,
                t,
                local,
                steps,
                outcome: Outcome::Failed {
                    step: e.step,
                    error: e.error,
                },
                kernel_view,
                view_before: before,
                view_after,
            })
        };
    let s = match TcpSock::new(Family::of(&server), opts) {
        Ok(s) => s,
        Err(e) => return fail(steps, e, bind, None),
    };
    if let Some(b) = bind {
        let r = s.bind(b);
        steps.push((Step::Bind, crate::socket::step_result(&r)));
        if let Err(e) = r {
            return fail(steps, e, bind, None);
        }
        if b.port() != 0 {
            before = diag::tuple_view(b, server).ok();
        }
    }
    let r = s.connect(server, Duration::from_secs(5));
    steps.push((Step::Connect, crate::socket::step_result(&r)));
    if let Err(e) = r {
        if e.io_kind == std::io::ErrorKind::ConnectionRefused {
            return Err(Error::Refused {
                addr: server,
                err: e.error,
            });
        }
        return fail(steps, e, bind, before);
    }
    let local = s.local_addr();
    let mut s = s;
    if a.close == CloseMode::AfterPeer
        && let Err(e) = s.recv_until_eof(Duration::from_secs(30))
    {
        steps.push((
            Step::Recv,
            StepResult::Err {
                error: e.error.clone(),
            },
        ));
    }
    s.close();
    steps.push((Step::Close, StepResult::Ok));
    Ok(Attempt {
        n,
        t,
        local,
        steps,
        outcome: Outcome::Ok,
        kernel_view: Vec::new(),
        view_before: None,
        view_after: None,
    })
}

fn print_attempt(out: &mut impl Write, a: &Attempt, json: bool) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", serde_json::to_string(a).unwrap_or_default());
    }
    let steps: Vec<String> = a
        .steps
        .iter()
        .map(|(s, r)| match r {
            StepResult::Ok => format!("{s} ok"),
            StepResult::Err { error } => format!("{s} FAILED {error}"),
        })
        .collect();
    writeln!(
        out,
        "{:>8.3}s #{:<4} {}  {}",
        a.t,
        a.n,
        a.local.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
        steps.join(", ")
    )?;
    for line in &a.kernel_view {
        writeln!(out, "           {line}")?;
    }
    Ok(())
}

/// Run the client loop.
pub fn run(a: &ClientArgs) -> Result<u8> {
    let server = parse_endpoint(&a.connect)?;
    let bind = a.bind.as_deref().map(parse_endpoint).transpose()?;
    if let Some(b) = bind
        && b.is_ipv4() != server.is_ipv4()
    {
        return Err(Error::Invalid(format!(
            "--bind {b} and --connect {server} are of different address families; use two IPv4 or two IPv6 addresses"
        )));
    }
    if a.timeout.is_nan() || a.timeout <= 0.0 {
        return Err(Error::Invalid(
            "--timeout must be a positive number of seconds".into(),
        ));
    }
    let start = Instant::now();
    let limit = Duration::from_secs_f64(a.timeout);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut first_failure: Option<Instant> = None;
    let mut freed_after_s = None;
    let mut stopped = format!("--count {} reached", a.count);
    let mut code = 0;
    // --count bounds the attempts; under --until first-ok the retries of a
    // failing attempt are bounded by --timeout instead (TIME_WAIT lasts 60 s
    // on Linux, up to 240 s on Windows).
    let mut n = 0u64;
    let mut retry_pause = Duration::from_millis(1);
    loop {
        let retrying = a.until == Until::FirstOk && first_failure.is_some();
        if !retrying {
            if n >= a.count {
                break;
            }
            n += 1;
        }
        if crate::interrupted() {
            return Err(Error::Interrupted);
        }
        if start.elapsed() >= limit {
            stopped = format!("--timeout {} s reached", a.timeout);
            break;
        }
        let at = attempt(a, n, start, server, bind)?;
        let is_ok = at.outcome.is_ok();
        // While retrying a failure, print only the first failure and the
        // success that ends it.
        let printed = !retrying || is_ok;
        if printed
            && print_attempt(&mut out, &at, a.json)
                .and_then(|_| out.flush())
                .is_err()
        {
            return Ok(0);
        }
        if is_ok {
            ok += 1;
            if let (Until::FirstOk, Some(t0)) = (a.until, first_failure) {
                freed_after_s = Some(t0.elapsed().as_secs_f64());
                stopped = "first success after a failure".into();
                break;
            }
        } else {
            failed += 1;
            if a.until == Until::FirstError {
                stopped = format!("first error: {}", at.outcome);
                code = 4;
                break;
            }
            first_failure.get_or_insert_with(Instant::now);
        }
        // Retries back off from 1 ms to 50 ms: "freed after" is exact to
        // within 50 ms.
        let pause = if first_failure.is_some() {
            let p = retry_pause;
            retry_pause = (retry_pause * 2).min(Duration::from_millis(50));
            p
        } else {
            Duration::from_millis(a.interval)
        };
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    if a.until == Until::FirstOk && first_failure.is_some() && freed_after_s.is_none() {
        code = 4;
    }
    let summary = Summary {
        attempts: ok + failed,
        ok,
        failed,
        freed_after_s,
        stopped_because: stopped,
    };
    let r = if a.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&summary).unwrap_or_default()
        )
    } else {
        let freed = summary
            .freed_after_s
            .map(|s| format!("; the failing step succeeded again after {s:.3} s"))
            .unwrap_or_default();
        writeln!(
            out,
            "{} attempts: {} ok, {} failed; stopped: {}{freed}",
            summary.attempts, summary.ok, summary.failed, summary.stopped_because
        )
    };
    let _ = r.and_then(|_| out.flush());
    Ok(code)
}
