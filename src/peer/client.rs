//! `twlab client`: the story's client. Binds its own port (optionally),
//! connects, closes, and loops; every attempt reports bind, connect and
//! close as separate steps, and every failure comes with the kernel's view
//! of the 4-tuple that caused it.

use super::why::FailureWhy;
use super::{
    CloseMode, FIN_WAIT_NOTICE_AFTER, Output, OutputFormat, describe_view, line, say_waiting,
};
use crate::diag::{self, DiagSocket};
use crate::error::{Error, Result};
use crate::outcome::Exit;
use crate::outcome::{Outcome, Step, StepResult, SysError};
use crate::socket::{Family, SocketOpts, StepError, TcpSock};
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// When the loop stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Until {
    /// Stop at the first failed attempt (the story's loop).
    FirstError,
    /// Retry a failing attempt until one succeeds, and report how long it
    /// took (e.g. until TIME_WAIT expired).
    FirstOk,
}

/// What `twlab client` does, parsed and checked.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// The server.
    pub connect: SocketAddr,
    /// The local address to bind before connect(); port 0 lets the kernel
    /// pick at bind time. `None`: connect() picks (ephemeral port).
    pub bind: Option<SocketAddr>,
    /// SO_REUSEADDR, SO_REUSEPORT and SO_LINGER for every attempt.
    pub opts: SocketOpts,
    /// SO_EXCLUSIVEADDRUSE before bind() (Windows only; elsewhere
    /// [`TcpSock::set_exclusive_addr_use`] fails).
    pub exclusive_addr_use: bool,
    /// Who closes first.
    pub close: CloseMode,
    /// Attempts at most (retries under [`Until::FirstOk`] are bounded by
    /// `timeout` instead).
    pub count: u64,
    /// Pause between attempts (zero: the tight loop).
    pub interval: Duration,
    /// When to stop.
    pub until: Until,
    /// Give up after this long in all.
    pub timeout: Duration,
    /// Text lines or JSON Lines.
    pub format: OutputFormat,
}

impl ClientPlan {
    /// Check what the types cannot: both ends of one address family.
    pub fn check(&self) -> Result<()> {
        if let Some(b) = self.bind
            && b.is_ipv4() != self.connect.is_ipv4()
        {
            return Err(Error::Usage(format!(
                "--bind {b} and --connect {} are of different address families; use two IPv4 or two IPv6 addresses",
                self.connect
            )));
        }
        Ok(())
    }
}

/// One step of an attempt in JSON: `{"step": "connect", "result": "ok"}`.
#[derive(Serialize, schemars::JsonSchema)]
struct StepObject<'a> {
    /// The call.
    step: Step,
    /// Its result.
    #[serde(flatten)]
    result: &'a StepResult,
}

/// `(step, result)` pairs as objects, not positional tuples (docs/json.md).
fn steps_as_objects<S: serde::Serializer>(
    v: &[(Step, StepResult)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|(step, result)| StepObject {
        step: *step,
        result,
    }))
}

/// One attempt: bind, connect and close as separate steps.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Attempt {
    /// The attempt's number, from 1.
    pub n: u64,
    /// Under `--until first-ok`: how many failed tries of this attempt came
    /// before this one (0: the first try).
    #[serde(skip_serializing_if = "is_zero")]
    pub retry: u64,
    /// Seconds since the client started (in JSON `t_s`).
    #[serde(rename = "t_s")]
    pub t: f64,
    /// The client end's address, once known.
    pub local: Option<SocketAddr>,
    /// Each call and its result, in order (in JSON one object per step:
    /// `{"step": "connect", "result": "failed", "error": {…}}`).
    #[serde(serialize_with = "steps_as_objects")]
    #[schemars(with = "Vec<StepObject<'static>>")]
    pub steps: Vec<(Step, StepResult)>,
    /// With `--close after-peer`: how long the client waited for the
    /// server's FIN, until it came (the `recv` step ok) or the wait ran out
    /// (`recv` failed with ETIMEDOUT, and the client closed first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fin_wait_s: Option<f64>,
    /// Ok, or the step that failed and its error.
    pub outcome: Outcome,
    /// connect() found the socket connected to itself: nothing listened on
    /// the server's port, which lies in ip_local_port_range, and the
    /// kernel picked that very port as this end's (TCP simultaneous
    /// open, RFC 793 §3.4: the SYN meets itself).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub self_connect: bool,
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
    /// For a bind() or connect() that failed over ports (EADDRINUSE,
    /// EADDRNOTAVAIL): who holds the port or the 4-tuple, the kernel rule,
    /// the ephemeral range accounting and the fixes, from the live table
    /// (`twlab why`), with whether it explains the errno. Only for failures
    /// that are printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<FailureWhy>,
    /// What the kernel's tracepoints recorded for this 4-tuple before the
    /// failure (Linux, root; else one line saying why not).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_events: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The end of the loop.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Summary {
    /// Attempts made (numbered #1, #2, …): under `--until first-ok` a
    /// failing attempt is tried again and again, and stays one attempt.
    pub attempts: u64,
    /// Attempts that ended ok (a blocked attempt that came free counts).
    pub ok: u64,
    /// Attempts that ended failed.
    pub failed: u64,
    /// connect tries that failed, retries included.
    pub failed_tries: u64,
    /// For `--until first-ok`: seconds the loop was blocked, from the
    /// first failure to the success after it or to the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_s: Option<f64>,
    /// For `--until first-ok`: seconds from the first failure to the first
    /// success after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_after_s: Option<f64>,
    /// Why the loop ended.
    pub stopped_because: String,
}

/// The failed attempt, with the kernel's view of the 4-tuple before the
/// call (if taken) and right after it.
fn failed(
    nl: &mut Option<DiagSocket>,
    server: SocketAddr,
    (n, t): (u64, f64),
    steps: Vec<(Step, StepResult)>,
    e: StepError,
    local: Option<SocketAddr>,
    before: Option<diag::TupleView>,
) -> Attempt {
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
    if let Some(l) = local.filter(|_| e.step != Step::Socket) {
        let v = match nl.as_mut() {
            Some(nl) => nl.tuple_view(l, server),
            None => diag::tuple_view(l, server),
        };
        match v {
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
        }
    }
    Attempt {
        n,
        retry: 0,
        t,
        local,
        steps,
        fin_wait_s: None,
        self_connect: false,
        outcome: Outcome::Failed {
            step: e.step,
            error: e.error,
        },
        kernel_view,
        view_before: before,
        view_after,
        why: None,
        kernel_events: Vec::new(),
    }
}

/// Add the diagnosis to a failed attempt about to be printed. For bind()
/// the port's whole bind bucket decides, so the diagnosis replaces the
/// 4-tuple view; for connect() both stay.
fn explain(p: &ClientPlan, a: &mut Attempt) {
    let Outcome::Failed { step, error } = &a.outcome else {
        return;
    };
    a.why = match step {
        Step::Bind => p
            .bind
            .and_then(|b| super::why::after_bind(b, p.opts, crate::why::Asker::Client, error)),
        Step::Connect => super::why::after_connect(p.connect, p.bind, p.opts, error),
        _ => None,
    };
    if *step == Step::Bind && a.why.is_some() {
        a.kernel_view.clear();
        a.view_after = None;
    }
}

/// The longest connect() waits for the handshake (loopback answers at
/// once; this only guards against a namespace that drops SYNs).
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// The line the client says once its wait for the server's FIN lasts
/// [`FIN_WAIT_NOTICE_AFTER`]: with `server --close after-peer` (the
/// server's default) both wait for the other's FIN and neither sends one
/// (a deadlock by construction, ended only by a wait's bound).
fn waiting_line(left: Duration) -> String {
    format!(
        "waiting up to {:.0} s (what is left of --timeout) for the server's FIN (client --close after-peer); if the server also waits for ours (server --close after-peer, its default), neither closes until one gives up (the server after 30 s): use --close first on one side",
        left.as_secs_f64()
    )
}

/// Where an attempt says that it waits for the server's FIN: the output
/// (flushed first) and whether it was said already in this run.
struct Notice<'a, W: Write> {
    out: &'a mut Output<W>,
    format: OutputFormat,
    said: bool,
}

/// One attempt: socket, bind (if asked), connect, close, each a step.
/// Every wait ends at `deadline` (`--timeout` bounds the whole attempt) and
/// at Ctrl-C. (Over 80 lines: the calls in the order a C program makes
/// them, each recorded as it happens, read best in one place.)
fn attempt(
    p: &ClientPlan,
    nl: &mut Option<DiagSocket>,
    n: u64,
    (start, deadline): (Instant, Instant),
    notice: &mut Notice<'_, impl Write>,
) -> Result<Attempt> {
    let server = p.connect;
    let bind = p.bind;
    let mut steps = Vec::with_capacity(4);
    let t = start.elapsed().as_secs_f64();
    let s = match TcpSock::new(Family::of(&server), p.opts) {
        Ok(s) => s,
        Err(e) => return Ok(failed(nl, server, (n, t), steps, e, bind, None)),
    };
    if p.exclusive_addr_use
        && let Err(e) = s.set_exclusive_addr_use()
    {
        return Ok(failed(nl, server, (n, t), steps, e, bind, None));
    }
    // The kernel's view of the 4-tuple just before connect(), taken only
    // when the local port is fixed (the 4-tuple is known in advance): two
    // exact lookups in one netlink request. The old connection can move on
    // within microseconds (a delayed ACK turns FIN_WAIT1 into FIN_WAIT2,
    // the peer's FIN turns it into TIME_WAIT), so a failure is shown with
    // both the view before the call and after it.
    let mut before = None;
    if let Some(b) = bind {
        let r = s.bind(b);
        steps.push((Step::Bind, crate::socket::step_result(&r)));
        if let Err(e) = r {
            return Ok(failed(nl, server, (n, t), steps, e, bind, None));
        }
        if b.port() != 0 {
            before = nl.as_mut().and_then(|nl| nl.tuple_view(b, server).ok());
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let r = s.connect_interruptible(
        server,
        left.min(CONNECT_WAIT),
        super::WAIT_SLICE,
        crate::interrupted,
    );
    // ECONNRESET from connect() means the handshake completed and the
    // peer's RST came before this thread ran again: a reset in SYN_SENT
    // is ECONNREFUSED (tcp_reset()). So connect worked, the next step
    // saw the reset.
    let reset = matches!(&r, Err(e) if e.error.is("ECONNRESET"));
    steps.push((
        Step::Connect,
        if reset {
            StepResult::Ok
        } else {
            crate::socket::step_result(&r)
        },
    ));
    if let Err(e) = r
        && !reset
    {
        if e.error.is("EINTR") {
            return Err(Error::Interrupted);
        }
        if e.io_kind == std::io::ErrorKind::ConnectionRefused {
            return Err(Error::Refused {
                addr: server,
                err: e.error,
            });
        }
        return Ok(failed(nl, server, (n, t), steps, e, bind, before));
    }
    // A fixed port is known; otherwise ask (getsockname).
    let local = match bind {
        Some(b) if b.port() != 0 && !b.ip().is_unspecified() => Some(b),
        _ => s.local_addr(),
    };
    let self_connect = local == Some(server);
    let fin_wait_s = after_connect(p, s, &mut steps, (reset, self_connect), deadline, notice)?;
    Ok(Attempt {
        n,
        retry: 0,
        t,
        local,
        steps,
        fin_wait_s,
        outcome: Outcome::Ok,
        self_connect,
        kernel_view: Vec::new(),
        view_before: None,
        view_after: None,
        why: None,
        kernel_events: Vec::new(),
    })
}

/// The steps after a working connect(): the reset connect() already saw,
/// or the wait for the peer's FIN (bounded by `deadline` only, i.e. by
/// `--timeout`; not for a self-connected socket, which would wait for its
/// own FIN), then close. Returns how long the wait lasted, if there was
/// one.
fn after_connect(
    p: &ClientPlan,
    mut s: TcpSock,
    steps: &mut Vec<(Step, StepResult)>,
    (reset, self_connect): (bool, bool),
    deadline: Instant,
    notice: &mut Notice<'_, impl Write>,
) -> Result<Option<f64>> {
    let wait_step = if p.close == CloseMode::AfterPeer {
        Step::Recv
    } else {
        Step::Close
    };
    if reset {
        steps.push((
            wait_step,
            StepResult::Err {
                error: SysError::from_code(crate::sys::err::CONN_RESET),
            },
        ));
    } else if p.close == CloseMode::AfterPeer && !self_connect {
        // A self-connected socket would wait for its own FIN: never.
        // The wait is cut in two: a short one, after which a wait that
        // goes on is said (once per run), then the rest up to `deadline`.
        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        let mut wait = |d| s.recv_until_eof_interruptible(d, super::WAIT_SLICE, crate::interrupted);
        let mut r = wait(left.min(FIN_WAIT_NOTICE_AFTER));
        if matches!(&r, Err(e) if e.error.is("ETIMEDOUT")) && left > FIN_WAIT_NOTICE_AFTER {
            say_waiting(
                notice.out,
                notice.format,
                &mut notice.said,
                &waiting_line(left),
            );
            r = wait(deadline.saturating_duration_since(Instant::now()));
        }
        let waited = started.elapsed().as_secs_f64();
        steps.push((
            Step::Recv,
            match r {
                Ok(_) => StepResult::Ok,
                Err(e) if e.error.is("EINTR") => return Err(Error::Interrupted),
                Err(e) => StepResult::Err { error: e.error },
            },
        ));
        s.close();
        steps.push((Step::Close, StepResult::Ok));
        return Ok(Some(waited));
    }
    s.close();
    if !reset || wait_step != Step::Close {
        steps.push((Step::Close, StepResult::Ok));
    }
    Ok(None)
}

/// A step's result as the text line says it: timeouts and resets in
/// words, other errors by name. Written straight into the output, as the
/// tight loop prints one line per attempt.
/// `waited`: how long the wait for the server's FIN lasted (the recv
/// step of `--close after-peer`).
fn write_step(
    out: &mut impl Write,
    step: Step,
    r: &StepResult,
    waited: Option<f64>,
) -> std::io::Result<()> {
    match (r, waited) {
        (StepResult::Ok, Some(w)) if step == Step::Recv => {
            write!(out, "recv: the server's FIN after {w:.3} s")
        }
        (StepResult::Err { error }, Some(w)) if error.is("ETIMEDOUT") && step == Step::Recv => {
            write!(
                out,
                "recv timed out after {w:.3} s (no FIN from the server; the client closes first)"
            )
        }
        _ => write_step_result(out, step, r),
    }
}

/// [`write_step`] for a step without a measured wait.
fn write_step_result(out: &mut impl Write, step: Step, r: &StepResult) -> std::io::Result<()> {
    match r {
        StepResult::Ok => {
            out.write_all(step.name().as_bytes())?;
            out.write_all(b" ok")
        }
        StepResult::Err { error } if error.is("ETIMEDOUT") && step == Step::Recv => {
            write!(out, "recv timed out (no FIN from the server)")
        }
        StepResult::Err { error } if error.is("ETIMEDOUT") => write!(out, "{step} timed out"),
        StepResult::Err { error } if error.is("ECONNRESET") => {
            write!(out, "{step}: connected, then reset by the peer ({error})")
        }
        StepResult::Err { error } => write!(out, "{step} FAILED {error}"),
    }
}

fn print_attempt(out: &mut impl Write, a: &Attempt, format: OutputFormat) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        serde_json::to_writer(&mut *out, &crate::json::line("attempt", a))?;
        return writeln!(out);
    }
    // One line per attempt in the tight loop: written without the
    // formatter (`line`), as `{Secs3}s #{n:<4} ` and `{local}  ` would be.
    line::put_secs3(out, a.t)?;
    out.write_all(b"s #")?;
    line::put_u64_left(out, a.n, 4)?;
    out.write_all(b" ")?;
    if a.retry > 0 {
        write!(out, "(retry {}) ", a.retry)?;
    }
    match &a.local {
        Some(l) => line::put_addr(out, l)?,
        None => out.write_all(b"-")?,
    }
    out.write_all(b"  ")?;
    for (i, (s, r)) in a.steps.iter().enumerate() {
        if i > 0 {
            out.write_all(b", ")?;
        }
        write_step(out, *s, r, a.fin_wait_s)?;
    }
    if a.self_connect {
        write!(
            out,
            "; self-connect: local == peer (nothing listens there; the port is in ip_local_port_range)"
        )?;
    }
    writeln!(out)?;
    for line in &a.kernel_view {
        writeln!(out, "           {line}")?;
    }
    if let Some(w) = &a.why {
        for line in w.text().lines() {
            writeln!(out, "           {line}")?;
        }
    }
    for line in &a.kernel_events {
        writeln!(out, "           {line}")?;
    }
    Ok(())
}

/// Run the client loop, writing a line per attempt (and the summary) to
/// `out` through a 64 KiB buffer flushed at least every 100 ms, at each
/// failure and at every pause; the command line hands its stdout. A write
/// that fails (a closed pipe) ends the loop quietly. (Over 80 lines: one loop whose counters, attempts,
/// tries and blocked time, feed the summary; split, they would travel
/// together as one struct anyway.)
pub fn run<W: Write>(p: &ClientPlan, out: W) -> Result<Exit> {
    p.check()?;
    let start = Instant::now();
    let deadline = start + p.timeout;
    let mut out = Output::new(out);
    // One sock_diag socket for the whole loop; without one (no sock_diag
    // here) the attempts still run, without the kernel's view.
    let mut nl = DiagSocket::open().ok();
    // Bound every blocking connect() and recv() by a tick of this thread
    // instead of a socket timeout per attempt (two setsockopt calls saved
    // per attempt). Without a ticker the attempts set the timeouts.
    #[cfg(target_os = "linux")]
    let _tick = crate::sys::tick::Ticker::start(super::WAIT_SLICE).ok();
    // The kernel's events of the server's port, read only on a failure.
    #[cfg(target_os = "linux")]
    // Not for a single attempt: making a tracefs instance (~30 ms) would
    // be most of such a run, and its failure is diagnosed without it.
    let witness = (p.count > 1).then(|| crate::events::hook::Witness::start(p.connect.port()));
    let (mut ok, mut failed_tries) = (0u64, 0u64);
    // Under --until first-ok: when the current attempt first failed, and
    // how many times it was tried again since.
    let mut blocked_since: Option<Instant> = None;
    let mut retry = 0u64;
    let mut freed_after_s = None;
    let mut stopped = format!("--count {} reached", p.count);
    let mut verdict = Exit::Done;
    // --count bounds the attempts; under --until first-ok the retries of a
    // failing attempt are bounded by --timeout instead (TIME_WAIT lasts 60 s
    // on Linux, up to 240 s on Windows).
    let mut n = 0u64;
    let mut retry_pause = Duration::from_millis(1);
    let mut said_waiting = false;
    let r: Result<()> = (|| {
        loop {
            let retrying = blocked_since.is_some();
            if !retrying && n >= p.count {
                return Ok(());
            }
            if crate::interrupted() {
                return Err(Error::Interrupted);
            }
            if Instant::now() >= deadline {
                stopped = format!("--timeout {} s reached", p.timeout.as_secs_f64());
                return Ok(());
            }
            if retrying {
                retry += 1;
            } else {
                n += 1;
            }
            let mut notice = Notice {
                out: &mut out,
                format: p.format,
                said: said_waiting,
            };
            let mut at = attempt(p, &mut nl, n, (start, deadline), &mut notice)?;
            said_waiting = notice.said;
            at.retry = retry;
            let is_ok = at.outcome.is_ok();
            // While retrying a failure, print only the first failure and the
            // success that ends it; a failure is flushed at once. Only a
            // failure that is printed reads the socket table.
            if !retrying && !is_ok {
                explain(p, &mut at);
                #[cfg(target_os = "linux")]
                {
                    at.kernel_events = match &witness {
                        Some(w) => w.lines(at.local, p.connect),
                        None => vec![
                            "kernel events: not recorded for a single attempt (--count 2 or more records them)".into(),
                        ],
                    };
                }
            }
            if !retrying || is_ok {
                let r = print_attempt(&mut out, &at, p.format).and_then(|_| {
                    if is_ok {
                        out.flush_if_due()
                    } else {
                        out.flush()
                    }
                });
                if r.is_err() {
                    return Ok(());
                }
            }
            if is_ok {
                ok += 1;
                if let Some(t0) = blocked_since {
                    freed_after_s = Some(t0.elapsed().as_secs_f64());
                    stopped = "first success after a failure".into();
                    return Ok(());
                }
            } else {
                failed_tries += 1;
                if p.until == Until::FirstError {
                    stopped = format!("first error: {}", at.outcome);
                    verdict = Exit::Failed;
                    return Ok(());
                }
                blocked_since.get_or_insert_with(Instant::now);
            }
            let pause = next_pause(&mut retry_pause, blocked_since.is_some(), p.interval);
            if !pause.is_zero() {
                let _ = out.flush();
                crate::signal::sleep_interruptible(
                    pause.min(deadline.saturating_duration_since(Instant::now())),
                )?;
            }
        }
    })();
    if let Err(e) = r {
        let _ = out.flush();
        return Err(e);
    }
    if blocked_since.is_some() && freed_after_s.is_none() {
        verdict = Exit::Failed;
    }
    let summary = Summary {
        attempts: n,
        ok,
        failed: n - ok,
        failed_tries,
        blocked_s: blocked_since.map(|t0| freed_after_s.unwrap_or(t0.elapsed().as_secs_f64())),
        freed_after_s,
        stopped_because: stopped,
    };
    let _ = print_summary(&mut out, &summary, p.format).and_then(|_| out.flush());
    Ok(verdict)
}

/// The pause before the next try: `--interval`, or while blocked a
/// back-off from 1 ms to 50 ms, so "freed after" is exact to within 50 ms.
fn next_pause(retry_pause: &mut Duration, blocked: bool, interval: Duration) -> Duration {
    if !blocked {
        return interval;
    }
    let p = *retry_pause;
    *retry_pause = (p * 2).min(Duration::from_millis(50));
    p
}

fn print_summary(
    out: &mut impl Write,
    summary: &Summary,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        serde_json::to_writer(&mut *out, &crate::json::line("summary", summary))?;
        return writeln!(out);
    }
    let freed = summary
        .freed_after_s
        .map(|s| format!("; the failing step succeeded again after {s:.3} s"))
        .unwrap_or_default();
    let blocked = match summary.blocked_s {
        Some(b) => format!("; blocked {b:.3} s ({} failed tries)", summary.failed_tries),
        None => String::new(),
    };
    writeln!(
        out,
        "{} attempt{}: {} ok, {} failed{blocked}; stopped: {}{freed}",
        summary.attempts,
        if summary.attempts == 1 { "" } else { "s" },
        summary.ok,
        summary.failed,
        summary.stopped_because
    )
}
