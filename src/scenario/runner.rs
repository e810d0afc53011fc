//! The runner: performs an [`Experiment`] on real sockets in the calling
//! thread's network namespace, one named step after another, synchronising
//! on the kernel's socket states (read through [`diag`]), never on sleeps.
//!
//! [`diag`]: crate::diag

use super::{Report, StepRecord, UntilFree};
use crate::diag::{self, Side, TcpState, TupleView};
use crate::error::{Error, Result};
use crate::experiment::{ClientPort, Experiment, NextStep, When};
use crate::outcome::{Outcome, Step, StepResult};
use crate::socket::{Family, SocketOpts, StepError, TcpSock};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long to wait for the kernel to reach a state a step needs. Loopback
/// settles in microseconds; this bound only turns a stuck run into an error,
/// so it is generous: on a machine loaded with hundreds of parallel cells a
/// thread can wait seconds for a CPU.
const SETTLE: Duration = Duration::from_secs(10);
/// Connect/accept bound: a SYN on loopback is answered at once (same
/// generosity as SETTLE).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most tries of a blocked step under `until_free` (the time limit bounds
/// it too).
const MAX_RETRIES: u32 = 100_000;
/// Longest pause between two tries under `until_free`: the resolution
/// promised for "freed after".
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A callback run after each recorded step.
type StepHook = Box<dyn FnMut(&StepRecord)>;

thread_local! {
    /// Called after every step this thread's runner records (see
    /// [`with_step_hook`]).
    static STEP_HOOK: std::cell::RefCell<Option<StepHook>> =
        const { std::cell::RefCell::new(None) };
}

/// Run `f` with `hook` called right after each step the runner records on
/// this thread (`twlab trace` reads both ends' states there).
pub fn with_step_hook<T>(hook: impl FnMut(&StepRecord) + 'static, f: impl FnOnce() -> T) -> T {
    STEP_HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    let r = f();
    STEP_HOOK.with(|h| *h.borrow_mut() = None);
    r
}

fn call_hook(step: Option<&StepRecord>) {
    if let Some(step) = step {
        STEP_HOOK.with(|h| {
            if let Some(hook) = h.borrow_mut().as_mut() {
                hook(step)
            }
        });
    }
}

/// Records steps as they happen.
struct Log {
    start: Instant,
    steps: Vec<StepRecord>,
}

impl Log {
    fn new(start: Instant) -> Self {
        Log {
            start,
            steps: Vec::new(),
        }
    }
    fn at_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    fn rec<T>(&mut self, actor: &str, step: Step, r: &std::result::Result<T, StepError>) {
        let at_us = self.at_us();
        self.steps.push(StepRecord {
            actor: actor.to_string(),
            step,
            result: match r {
                Ok(_) => StepResult::Ok,
                Err(e) => StepResult::Err {
                    error: e.error.clone(),
                },
            },
            at_us,
            note: None,
        });
        call_hook(self.steps.last());
    }
    fn note(&mut self, actor: &str, step: Step, note: String) {
        let at_us = self.at_us();
        self.steps.push(StepRecord {
            actor: actor.to_string(),
            step,
            result: StepResult::Ok,
            at_us,
            note: Some(note),
        });
        call_hook(self.steps.last());
    }
}

/// A setup step that must succeed (the experiment is about the *next* step).
fn setup<T>(
    log: &mut Log,
    actor: &str,
    step: Step,
    r: std::result::Result<T, StepError>,
) -> Result<T> {
    log.rec(actor, step, &r);
    r.map_err(|e| Error::Sys {
        what: format!("setting up the experiment: {actor} {step}"),
        err: e.error,
    })
}

/// The first connection's two ends: the old 4-tuple.
#[derive(Debug, Clone, Copy)]
struct Ends {
    client: SocketAddr,
    server: SocketAddr,
}

impl Ends {
    /// Wait (bounded) until the kernel's view of the old connection
    /// satisfies `pred`; `what` names the state for the error if it never
    /// comes.
    fn settle(&self, what: &str, pred: impl Fn(&TupleView) -> bool) -> Result<TupleView> {
        let (view, ok) = diag::wait_for(self.client, self.server, SETTLE, pred)?;
        if ok {
            Ok(view)
        } else {
            Err(Error::Timeout {
                secs: SETTLE.as_secs_f64(),
                what: format!("{what} (kernel shows {})", view.describe()),
            })
        }
    }

    /// The kernel's view of the old 4-tuple now.
    fn view(&self) -> Result<TupleView> {
        diag::tuple_view(self.client, self.server)
    }
}

/// One end's state in a view of the old 4-tuple.
fn state_of(v: &TupleView, side: Side) -> Option<TcpState> {
    match side {
        Side::Client => v.client_state(),
        Side::Server => v.server_state(),
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

fn actor(side: Side) -> &'static str {
    match side {
        Side::Client => "client",
        Side::Server => "server",
    }
}

/// True while an end is still closing after its FIN: it has not reached
/// TIME_WAIT (or gone) yet.
fn closing(s: Option<TcpState>) -> bool {
    matches!(
        s,
        Some(TcpState::FinWait1 | TcpState::Closing | TcpState::LastAck | TcpState::Established)
    )
}

/// Pick a free port on `family`'s loopback by binding port 0 and reading it
/// back. The probe socket never connects, so it leaves no TIME_WAIT.
pub fn free_port(family: Family) -> Result<u16> {
    let s = TcpSock::new(family, SocketOpts::default()).map_err(|e| Error::Sys {
        what: "socket".into(),
        err: e.error,
    })?;
    let addr = SocketAddr::new(family.loopback(), 0);
    s.bind(addr).map_err(|e| Error::Sys {
        what: format!("bind {addr}"),
        err: e.error,
    })?;
    Ok(s.local_addr().map(|a| a.port()).unwrap_or(0))
}

/// What bind_client() did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientBind {
    /// bind() was called and succeeded.
    Bound,
    /// The mode makes no bind() call (ephemeral).
    NoCall,
}

/// Bind a client socket as `mode` says. `port` is the fixed port for
/// `Fixed`; ignored otherwise.
fn bind_client(
    sock: &TcpSock,
    family: Family,
    mode: ClientPort,
    port: u16,
) -> std::result::Result<ClientBind, StepError> {
    match mode {
        ClientPort::Fixed(_) => sock
            .bind(SocketAddr::new(family.loopback(), port))
            .map(|_| ClientBind::Bound),
        ClientPort::BindNoPort => sock
            .bind(SocketAddr::new(family.loopback(), 0))
            .map(|_| ClientBind::Bound),
        ClientPort::Ephemeral => Ok(ClientBind::NoCall),
    }
}

/// The first connection, established at both ends.
struct Established {
    /// `None` once closed (restart-listener).
    listener: Option<TcpSock>,
    client: TcpSock,
    accepted: TcpSock,
    ends: Ends,
}

/// Step 1: the listener, and the first connection, until the kernel shows
/// both ends ESTABLISHED.
fn establish(x: &Experiment, log: &mut Log) -> Result<Established> {
    let fam = x.family;
    let server_port = match x.server_port {
        0 => free_port(fam)?,
        p => p,
    };
    let server_addr = SocketAddr::new(fam.loopback(), server_port);
    let listener = setup(log, "server", Step::Socket, TcpSock::new(fam, x.listener))?;
    let r = listener.bind(server_addr);
    log.rec("server", Step::Bind, &r);
    // A port the user chose may be taken: say so plainly.
    r.map_err(|e| crate::socket::explain_step_error(&e, server_addr))?;
    setup(log, "server", Step::Listen, listener.listen(16))?;

    let fixed_port = match x.client_port {
        ClientPort::Fixed(0) => free_port(fam)?,
        ClientPort::Fixed(p) => p,
        _ => 0,
    };
    let mut opts = x.client;
    if x.client_port == ClientPort::BindNoPort {
        opts.bind_no_port = true;
    }
    let client = setup(log, "client", Step::Socket, TcpSock::new(fam, opts))?;
    let bound = bind_client(&client, fam, x.client_port, fixed_port);
    if !matches!(bound, Ok(ClientBind::NoCall)) {
        setup(log, "client", Step::Bind, bound)?;
    }
    setup(
        log,
        "client",
        Step::Connect,
        client.connect(server_addr, IO_TIMEOUT),
    )?;
    let (accepted, _) = setup(log, "server", Step::Accept, listener.accept(IO_TIMEOUT))?;
    let client_addr = client
        .local_addr()
        .ok_or_else(|| Error::Invalid("client has no local address".into()))?;
    let ends = Ends {
        client: client_addr,
        server: server_addr,
    };
    ends.settle("both ends ESTABLISHED", |v| {
        v.client_state() == Some(TcpState::Established)
            && v.server_state() == Some(TcpState::Established)
    })?;
    Ok(Established {
        listener: Some(listener),
        client,
        accepted,
        ends,
    })
}

/// Step 2: the first close, with FIN or RST, until the kernel shows it took
/// effect as far as the step's timing needs. Returns the other end's socket,
/// still open.
fn close_first_connection(
    x: &Experiment,
    log: &mut Log,
    client: TcpSock,
    accepted: TcpSock,
    ends: Ends,
) -> Result<TcpSock> {
    let first_side = x.close.side;
    let (mut first, other_sock) = match first_side {
        Side::Client => (client, accepted),
        Side::Server => (accepted, client),
    };
    let first_name = actor(first_side);
    if x.close.is_rst() {
        // SO_LINGER {on, 0} at close time: tcp_close() → tcp_disconnect()
        // sends RST and the socket goes straight to CLOSE (RFC 793 ABORT).
        let r = first
            .sock
            .set_linger(Some(Duration::ZERO))
            .map_err(|e| StepError::from_io(Step::SetOpt, &e));
        setup(log, first_name, Step::SetOpt, r)?;
        first.opts.linger = Some(0);
    }
    first.close();
    log.note(first_name, Step::Close, x.close.how.name().into());
    if x.close.is_rst() {
        // The RST removes the tuple from both ends' established hash.
        ends.settle("the RST to reach both ends", |v| {
            v.client.is_none() && v.server.is_none()
        })?;
    } else if x.when == When::AfterAck {
        // FIN sent and ACKed: closer in FIN_WAIT2 (a full socket, or an
        // orphan kept as a timewait mini-socket with substate FIN_WAIT2, see
        // tcp_close()), the other end in CLOSE_WAIT.
        ends.settle(
            "the FIN to be acknowledged (FIN_WAIT2 / CLOSE_WAIT)",
            // With tcp_max_tw_buckets reached (e.g. 0) the orphaned
            // FIN_WAIT2 mini-socket cannot be allocated (inet_twsk_alloc()
            // returns NULL) and tcp_time_wait() destroys the closer: "gone"
            // is the settled state then.
            |v| {
                matches!(state_of(v, first_side), Some(TcpState::FinWait2) | None)
                    && state_of(v, other(first_side)) == Some(TcpState::CloseWait)
            },
        )?;
    }
    Ok(other_sock)
}

/// Step 3, [`When`]: for `AfterPeer` and `AfterMs`, the other end reads to
/// EOF and closes too, then the kernel settles (TIME_WAIT on the first
/// closer), then the optional wait. Returns the other end's socket if it is
/// still open at the next step.
fn wait_for_when(
    x: &Experiment,
    log: &mut Log,
    mut other_sock: TcpSock,
    ends: Ends,
) -> Result<Option<TcpSock>> {
    if !matches!(x.when, When::AfterPeer | When::AfterMs(_)) {
        return Ok(Some(other_sock));
    }
    let first_side = x.close.side;
    let other_name = actor(other(first_side));
    let r = other_sock.recv_until_eof(IO_TIMEOUT);
    // After an RST the read ends in ECONNRESET: that is the point.
    log.rec(other_name, Step::Recv, &r);
    other_sock.close();
    log.note(other_name, Step::Close, "after EOF".into());
    ends.settle(
        "the second close to settle (TIME_WAIT on the first closer)",
        |v| {
            state_of(v, other(first_side)).is_none()
                && !closing(state_of(v, first_side))
                && state_of(v, first_side) != Some(TcpState::FinWait2)
        },
    )?;
    if let When::AfterMs(ms) = x.when {
        // The wait itself is the factor under test, not a synchronisation;
        // Ctrl-C ends it within 50 ms.
        crate::signal::sleep_interruptible(Duration::from_millis(ms))?;
    }
    Ok(None)
}

/// One try of the next step: a new socket, its bind(), then connect()
/// (reconnect) or listen() (restart-listener); rebind stops after bind().
/// A socket that got through is kept open in `keep` (so its port stays
/// taken until the run ends). Returns the outcome and, on success, the new
/// socket's local address.
fn next_step(
    x: &Experiment,
    ends: Ends,
    log: &mut Log,
    keep: &mut Vec<TcpSock>,
) -> (Outcome, Option<SocketAddr>) {
    let fail = |e: StepError| {
        let outcome = Outcome::Failed {
            step: e.step,
            error: e.error,
        };
        (outcome, None)
    };
    let actor = match x.next {
        NextStep::Reconnect | NextStep::Rebind => "client#2",
        NextStep::RestartListener => "server#2",
    };
    let mut opts = x.new_opts;
    if x.next == NextStep::Reconnect && x.client_port == ClientPort::BindNoPort {
        opts.bind_no_port = true;
    }
    let s = match TcpSock::new(x.family, opts) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let bound = match x.next {
        NextStep::Reconnect => bind_client(&s, x.family, x.client_port, ends.client.port()),
        NextStep::Rebind => s.bind(ends.client).map(|_| ClientBind::Bound),
        NextStep::RestartListener => s.bind(ends.server).map(|_| ClientBind::Bound),
    };
    // A reconnect from a kernel-chosen port makes no bind() call at all.
    if !matches!(bound, Ok(ClientBind::NoCall)) {
        log.rec(actor, Step::Bind, &bound);
    }
    if let Err(e) = bound {
        return fail(e);
    }
    let last = match x.next {
        NextStep::Reconnect => Some((Step::Connect, s.connect(ends.server, IO_TIMEOUT))),
        // listen() checks the port again (inet_csk_listen_start →
        // get_port), so it can fail where bind() passed.
        NextStep::RestartListener => Some((Step::Listen, s.listen(16))),
        NextStep::Rebind => None,
    };
    if let Some((step, r)) = last {
        log.rec(actor, step, &r);
        if let Err(e) = r {
            return fail(e);
        }
    }
    let local = s.local_addr();
    keep.push(s);
    (Outcome::Ok, local)
}

/// Step 5, `until_free`: retry the blocked next step with a bounded
/// backoff until it succeeds or `limit` passes. Retries are not logged
/// (their count is the result). Returns the result and, on success, the
/// local address the step finally got.
fn retry_until_free(
    x: &Experiment,
    ends: Ends,
    limit: Duration,
    first_failure: &Outcome,
    start: Instant,
    keep: &mut Vec<TcpSock>,
) -> Result<(UntilFree, Option<SocketAddr>)> {
    let t0 = Instant::now();
    let mut attempts = 0u32;
    let mut last = first_failure.clone();
    let mut pause = Duration::from_millis(1);
    let mut quiet = Log::new(start);
    // Bounded by `limit` and by the attempt count.
    while t0.elapsed() < limit && attempts < MAX_RETRIES {
        if crate::interrupted() {
            return Err(Error::Interrupted);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
        attempts += 1;
        let (o, local) = next_step(x, ends, &mut quiet, keep);
        if o.is_ok() {
            let freed = UntilFree {
                freed_after_ms: Some(t0.elapsed().as_millis() as u64),
                attempts,
                last,
            };
            return Ok((freed, local));
        }
        last = o;
    }
    let never = UntilFree {
        freed_after_ms: None,
        attempts,
        last,
    };
    Ok((never, None))
}

/// Run one experiment on real sockets in the calling thread's network
/// namespace.
pub fn run(x: &Experiment) -> Result<Report> {
    let mut log = Log::new(Instant::now());
    let Established {
        mut listener,
        client,
        accepted,
        ends,
    } = establish(x, &mut log)?;
    let other_sock = close_first_connection(x, &mut log, client, accepted, ends)?;
    let other_open = wait_for_when(x, &mut log, other_sock, ends)?;

    // Step 4: the next step, with the old 4-tuple read right before it and
    // again right after a failure.
    if x.next == NextStep::RestartListener
        && let Some(l) = listener.take()
    {
        l.close();
        log.note("server", Step::Close, "old listener".into());
    }
    let before = ends.view()?;
    let mut keep: Vec<TcpSock> = Vec::new();
    let (outcome, mut new_local) = next_step(x, ends, &mut log, &mut keep);
    let at_failure = if outcome.is_ok() {
        None
    } else {
        Some(ends.view()?)
    };
    let until_free = match (x.until_free, &outcome) {
        (Some(limit), Outcome::Failed { .. }) => {
            let (u, local) = retry_until_free(x, ends, limit, &outcome, log.start, &mut keep)?;
            new_local = local;
            Some(u)
        }
        _ => None,
    };

    // Clean up: the new connection's server end, then everything else.
    if x.next == NextStep::Reconnect
        && outcome.is_ok()
        && let Some(l) = &listener
        && let Ok((a2, _)) = l.accept(IO_TIMEOUT)
    {
        keep.push(a2);
    }
    drop(other_open);
    drop(keep);
    drop(listener);

    Ok(Report {
        experiment: x.clone(),
        client_addr: ends.client,
        server_addr: ends.server,
        before,
        outcome,
        at_failure,
        new_local,
        until_free,
        steps: log.steps,
        elapsed_us: log.start.elapsed().as_micros() as u64,
    })
}
