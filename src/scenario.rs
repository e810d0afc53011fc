//! The classic experiment as data, and the runner that performs it on real
//! sockets, synchronising on kernel socket states (read through [`diag`]).
//!
//! An [`Experiment`] is one connection that is opened and closed, followed by
//! one *next step* whose outcome is the point of the experiment:
//!
//! 1. a listener on the server port, a client socket (fixed port, ephemeral
//!    port, or bind(addr, 0) with IP_BIND_ADDRESS_NO_PORT), connect, accept;
//! 2. one side closes first ([`CloseBy`]), with FIN or with RST (SO_LINGER 0);
//!    twlab waits until the kernel shows that close took effect;
//! 3. [`When`]: at once (the other side has *not* closed yet), or after the
//!    other side has closed too and the kernel has settled (TIME_WAIT on the
//!    side that closed first), optionally plus a wait;
//! 4. the [`NextStep`]: reconnect from the same local port, a new bind of that
//!    port, or a restart of the server's listener; each socket call recorded;
//! 5. the kernel's view of the old 4-tuple, from both ends, right before the
//!    next step and again at a failure.
//!
//! `demo` cases and `matrix` cells are experiments built in code; being
//! plain serde data, they can later be read from files.
//!
//! [`diag`]: crate::diag

use crate::diag::{self, TcpState, TupleView};
use crate::error::{Error, Result};
use crate::outcome::{Outcome, Step, StepResult};
use crate::socket::{Family, SocketOpts, StepError, TcpSock};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Which end closes the first connection first, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloseBy {
    /// The client calls close() first: FIN; the client will hold TIME_WAIT.
    Client,
    /// The server calls close() first: FIN; the server will hold TIME_WAIT.
    Server,
    /// The client closes with SO_LINGER {on, 0}: RST, no TIME_WAIT anywhere.
    ClientRst,
    /// The server closes with SO_LINGER {on, 0}: RST, no TIME_WAIT anywhere.
    ServerRst,
}

impl CloseBy {
    pub const ALL: [CloseBy; 4] = [
        CloseBy::Client,
        CloseBy::Server,
        CloseBy::ClientRst,
        CloseBy::ServerRst,
    ];
    pub fn name(self) -> &'static str {
        match self {
            CloseBy::Client => "client",
            CloseBy::Server => "server",
            CloseBy::ClientRst => "client-rst",
            CloseBy::ServerRst => "server-rst",
        }
    }
    pub fn first(self) -> diag::Side {
        match self {
            CloseBy::Client | CloseBy::ClientRst => diag::Side::Client,
            CloseBy::Server | CloseBy::ServerRst => diag::Side::Server,
        }
    }
    pub fn is_rst(self) -> bool {
        matches!(self, CloseBy::ClientRst | CloseBy::ServerRst)
    }
}

impl fmt::Display for CloseBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When the next step happens, relative to the closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    /// Right after the first close() returns, with no wait at all; the
    /// other end has not closed (the story's tight loop). After a FIN the
    /// closer is usually still FIN_WAIT1 here: the peer delays its ACK of a
    /// FIN (tcp_fin() enters pingpong mode, so the ACK waits for the
    /// delayed-ACK timer, about 40 ms, or for the peer's own FIN).
    AtOnce,
    /// After the first FIN was acknowledged (closer FIN_WAIT2, other end
    /// CLOSE_WAIT), the other end still open. On Linux the orphaned
    /// FIN_WAIT2 is a timewait mini-socket (tcp_close → tcp_time_wait(sk,
    /// TCP_FIN_WAIT2, ...)) when tcp_fin_timeout ≤ 60 s.
    AfterAck,
    /// After the other end saw EOF and closed too, and the kernel settled.
    AfterPeer,
    /// As `AfterPeer`, then a further wait of this many milliseconds.
    AfterMs(u64),
}

impl When {
    pub fn name(self) -> String {
        match self {
            When::AtOnce => "at-once".into(),
            When::AfterAck => "after-ack".into(),
            When::AfterPeer => "after-peer".into(),
            When::AfterMs(ms) => format!("after-{ms}ms"),
        }
    }
}

/// What the experiment does after the first connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NextStep {
    /// A new client socket connects again from the same local port
    /// (for `ClientPort::Ephemeral`, from a kernel-chosen port).
    Reconnect,
    /// A new socket binds the old connection's client address:port.
    Rebind,
    /// The server closes its listener and a new one binds and listens on
    /// the same port.
    RestartListener,
}

impl NextStep {
    pub const ALL: [NextStep; 3] = [
        NextStep::Reconnect,
        NextStep::Rebind,
        NextStep::RestartListener,
    ];
    pub fn name(self) -> &'static str {
        match self {
            NextStep::Reconnect => "reconnect",
            NextStep::Rebind => "rebind",
            NextStep::RestartListener => "restart-listener",
        }
    }
}

/// How the client gets its local port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientPort {
    /// bind(addr, port) before connect(); port 0 here means "pick a free
    /// port once, then bind it explicitly each time".
    Fixed(u16),
    /// No bind(): connect() picks the port from ip_local_port_range.
    Ephemeral,
    /// bind(addr, 0) with IP_BIND_ADDRESS_NO_PORT: the port is chosen at
    /// connect() time, with the whole 4-tuple known.
    BindNoPort,
}

impl ClientPort {
    pub fn name(self) -> &'static str {
        match self {
            ClientPort::Fixed(_) => "fixed",
            ClientPort::Ephemeral => "ephemeral",
            ClientPort::BindNoPort => "bind-no-port",
        }
    }
}

/// One experiment: everything that decides its outcome except the kernel
/// and its sysctls.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Experiment {
    pub family: Family,
    /// Server port; 0 picks a free one.
    pub server_port: u16,
    pub client_port: ClientPort,
    /// Options of the first listener (accepted sockets inherit them).
    pub listener: SocketOpts,
    /// Options of the first client socket.
    pub client: SocketOpts,
    pub close: CloseBy,
    pub when: When,
    pub next: NextStep,
    /// Options of the socket the next step creates (a client socket for
    /// reconnect and rebind, the new listener for restart-listener).
    pub new_opts: SocketOpts,
    /// If the next step fails: keep retrying it (bounded backoff, at most
    /// 50 ms apart) up to this long, and report when it first succeeded.
    pub until_free: Option<Duration>,
}

impl Experiment {
    /// The story's experiment: SO_REUSEADDR on every socket, the client
    /// binds `client_port` (0: a free one), closes first, the server closes
    /// after it, then the client reconnects from the same port. Other cases
    /// are this with a field or two changed.
    pub fn story(family: Family, server_port: u16, client_port: u16) -> Self {
        let ra = SocketOpts {
            reuseaddr: true,
            ..Default::default()
        };
        Experiment {
            family,
            server_port,
            client_port: ClientPort::Fixed(client_port),
            listener: ra,
            client: ra,
            close: CloseBy::Client,
            when: When::AfterPeer,
            next: NextStep::Reconnect,
            new_opts: ra,
            until_free: None,
        }
    }
}

/// When a step of the retry loop first succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UntilFree {
    /// Milliseconds from the first failure to the first success, or `None`
    /// if it never succeeded within the limit.
    pub freed_after_ms: Option<u64>,
    pub attempts: u32,
    /// The last failure seen before success (or at the limit).
    pub last: Outcome,
}

/// A step that was performed, with its result, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// "client", "server", "client#2"...
    pub actor: String,
    pub step: Step,
    #[serde(flatten)]
    pub result: StepResult,
    /// Microseconds since the experiment started.
    pub at_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What running an [`Experiment`] showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub experiment: Experiment,
    /// The first connection: client end and server end.
    pub client_addr: SocketAddr,
    pub server_addr: SocketAddr,
    /// The old 4-tuple, from both ends, right before the next step.
    pub before: TupleView,
    /// The next step's outcome.
    pub outcome: Outcome,
    /// The old 4-tuple at the moment the next step failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_failure: Option<TupleView>,
    /// For reconnects: the local address the new connection got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_local: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_free: Option<UntilFree>,
    pub steps: Vec<StepRecord>,
    /// How long the run took, in microseconds.
    pub elapsed_us: u64,
}

/// How long to wait for the kernel to reach a state a step needs. Loopback
/// settles in microseconds; this bound only turns a stuck run into an error,
/// so it is generous: on a machine loaded with hundreds of parallel cells a
/// thread can wait seconds for a CPU.
const SETTLE: Duration = Duration::from_secs(10);
/// Connect/accept bound: a SYN on loopback is answered at once (same
/// generosity as SETTLE).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Records steps as they happen.
struct Log {
    start: Instant,
    steps: Vec<StepRecord>,
}

impl Log {
    fn rec<T>(&mut self, actor: &str, step: Step, r: &std::result::Result<T, StepError>) {
        self.steps.push(StepRecord {
            actor: actor.to_string(),
            step,
            result: match r {
                Ok(_) => StepResult::Ok,
                Err(e) => StepResult::Err {
                    error: e.error.clone(),
                },
            },
            at_us: self.start.elapsed().as_micros() as u64,
            note: None,
        });
    }
    fn note(&mut self, actor: &str, step: Step, note: String) {
        self.steps.push(StepRecord {
            actor: actor.to_string(),
            step,
            result: StepResult::Ok,
            at_us: self.start.elapsed().as_micros() as u64,
            note: Some(note),
        });
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

/// Wait (bounded) until the kernel's view of the old connection satisfies
/// `pred`; `what` names the state for the error if it never comes.
fn settle(
    client: SocketAddr,
    server: SocketAddr,
    what: &str,
    pred: impl Fn(&TupleView) -> bool,
) -> Result<TupleView> {
    let (view, ok) = diag::wait_for(client, server, SETTLE, pred)?;
    if ok {
        Ok(view)
    } else {
        Err(Error::Timeout {
            secs: SETTLE.as_secs_f64(),
            what: format!("{what} (kernel shows {})", view.describe()),
        })
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

/// Bind a client socket as `mode` says; `Ok(false)` when the mode makes no
/// bind() call (ephemeral). `port` is the fixed port for `Fixed`; ignored
/// otherwise.
fn bind_client(
    sock: &TcpSock,
    family: Family,
    mode: ClientPort,
    port: u16,
) -> std::result::Result<bool, StepError> {
    match mode {
        ClientPort::Fixed(_) => sock
            .bind(SocketAddr::new(family.loopback(), port))
            .map(|_| true),
        ClientPort::BindNoPort => sock
            .bind(SocketAddr::new(family.loopback(), 0))
            .map(|_| true),
        ClientPort::Ephemeral => Ok(false),
    }
}

/// Run one experiment on real sockets in the calling thread's network
/// namespace.
pub fn run(x: &Experiment) -> Result<Report> {
    let mut log = Log {
        start: Instant::now(),
        steps: Vec::new(),
    };
    let fam = x.family;
    let lo = fam.loopback();

    // 1. The listener, and the first connection.
    let server_port = if x.server_port == 0 {
        free_port(fam)?
    } else {
        x.server_port
    };
    let server_addr = SocketAddr::new(lo, server_port);
    let mut listener = Some(setup(
        &mut log,
        "server",
        Step::Socket,
        TcpSock::new(fam, x.listener),
    )?);
    if let Some(l) = &listener {
        let r = l.bind(server_addr);
        log.rec("server", Step::Bind, &r);
        // A port the user chose may be taken: say so plainly.
        r.map_err(|e| crate::socket::explain_step_error(&e, server_addr))?;
        setup(&mut log, "server", Step::Listen, l.listen(16))?;
    }

    let fixed_port = match x.client_port {
        ClientPort::Fixed(0) => free_port(fam)?,
        ClientPort::Fixed(p) => p,
        _ => 0,
    };
    let mut opts1 = x.client;
    if x.client_port == ClientPort::BindNoPort {
        opts1.bind_no_port = true;
    }
    let c1 = setup(&mut log, "client", Step::Socket, TcpSock::new(fam, opts1))?;
    let bound = bind_client(&c1, fam, x.client_port, fixed_port);
    if !matches!(bound, Ok(false)) {
        setup(&mut log, "client", Step::Bind, bound)?;
    }
    setup(
        &mut log,
        "client",
        Step::Connect,
        c1.connect(server_addr, IO_TIMEOUT),
    )?;
    let (a1, _) = setup(
        &mut log,
        "server",
        Step::Accept,
        listener
            .as_ref()
            .expect("listener is open here")
            .accept(IO_TIMEOUT),
    )?;
    let client_addr = c1
        .local_addr()
        .ok_or_else(|| Error::Invalid("client has no local address".into()))?;
    settle(client_addr, server_addr, "both ends ESTABLISHED", |v| {
        v.client_state() == Some(TcpState::Established)
            && v.server_state() == Some(TcpState::Established)
    })?;

    // 2. The first close.
    let (mut first, other) = match x.close.first() {
        diag::Side::Client => (c1, a1),
        diag::Side::Server => (a1, c1),
    };
    let (first_name, other_name) = match x.close.first() {
        diag::Side::Client => ("client", "server"),
        diag::Side::Server => ("server", "client"),
    };
    if x.close.is_rst() {
        // SO_LINGER {on, 0} at close time: tcp_close() → tcp_disconnect()
        // sends RST and the socket goes straight to CLOSE (RFC 793 ABORT).
        let r = first
            .sock
            .set_linger(Some(Duration::ZERO))
            .map_err(|e| StepError::from_io(Step::SetOpt, &e));
        setup(&mut log, first_name, Step::SetOpt, r)?;
        first.opts.linger = Some(0);
    }
    first.close();
    log.note(
        first_name,
        Step::Close,
        if x.close.is_rst() {
            "RST".into()
        } else {
            "FIN".into()
        },
    );
    let first_side = x.close.first();
    let pick = move |v: &TupleView, side: diag::Side| match side {
        diag::Side::Client => v.client_state(),
        diag::Side::Server => v.server_state(),
    };
    let other_side = match first_side {
        diag::Side::Client => diag::Side::Server,
        diag::Side::Server => diag::Side::Client,
    };
    if x.close.is_rst() {
        // The RST removes the tuple from both ends' established hash.
        settle(
            client_addr,
            server_addr,
            "the RST to reach both ends",
            |v| v.client.is_none() && v.server.is_none(),
        )?;
    } else if x.when == When::AfterAck {
        // FIN sent and ACKed: closer in FIN_WAIT2 (a full socket, or an
        // orphan kept as a timewait mini-socket with substate FIN_WAIT2, see
        // tcp_close()), the other end in CLOSE_WAIT.
        settle(
            client_addr,
            server_addr,
            "the FIN to be acknowledged (FIN_WAIT2 / CLOSE_WAIT)",
            // With tcp_max_tw_buckets reached (e.g. 0) the orphaned
            // FIN_WAIT2 mini-socket cannot be allocated (inet_twsk_alloc()
            // returns NULL) and tcp_time_wait() destroys the closer: "gone"
            // is the settled state then.
            |v| {
                matches!(pick(v, first_side), Some(TcpState::FinWait2) | None)
                    && pick(v, other_side) == Some(TcpState::CloseWait)
            },
        )?;
    }

    // 3. When.
    let mut other_open = Some(other);
    if matches!(x.when, When::AfterPeer | When::AfterMs(_)) {
        let mut o = other_open.take().expect("other end still open");
        let r = o.recv_until_eof(IO_TIMEOUT);
        // After an RST the read ends in ECONNRESET: that is the point.
        log.rec(other_name, Step::Recv, &r);
        o.close();
        log.note(other_name, Step::Close, "after EOF".into());
        settle(
            client_addr,
            server_addr,
            "the second close to settle (TIME_WAIT on the first closer)",
            |v| {
                pick(v, other_side).is_none()
                    && !closing(pick(v, first_side))
                    && pick(v, first_side) != Some(TcpState::FinWait2)
            },
        )?;
        if let When::AfterMs(ms) = x.when {
            // The wait itself is the factor under test, not a synchronisation.
            std::thread::sleep(Duration::from_millis(ms));
        }
    }

    // 4. The next step.
    let mut new_local = None;
    let mut keep: Vec<TcpSock> = Vec::new();
    if x.next == NextStep::RestartListener
        && let Some(l) = listener.take()
    {
        l.close();
        log.note("server", Step::Close, "old listener".into());
    }
    let before = diag::tuple_view(client_addr, server_addr)?;
    // The next step: a new socket, its bind(), then connect() (reconnect)
    // or listen() (restart-listener); rebind stops after bind().
    let attempt = |log: &mut Log, keep: &mut Vec<TcpSock>| -> (Outcome, Option<SocketAddr>) {
        let fail = |e: StepError| {
            (
                Outcome::Failed {
                    step: e.step,
                    error: e.error,
                },
                None,
            )
        };
        let actor = match x.next {
            NextStep::Reconnect | NextStep::Rebind => "client#2",
            NextStep::RestartListener => "server#2",
        };
        let mut opts = x.new_opts;
        if x.next == NextStep::Reconnect && x.client_port == ClientPort::BindNoPort {
            opts.bind_no_port = true;
        }
        let s = match TcpSock::new(fam, opts) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let bound = match x.next {
            NextStep::Reconnect => bind_client(&s, fam, x.client_port, client_addr.port()),
            NextStep::Rebind => s.bind(client_addr).map(|_| true),
            NextStep::RestartListener => s.bind(server_addr).map(|_| true),
        };
        // A reconnect from a kernel-chosen port makes no bind() call at all.
        if !matches!(bound, Ok(false)) {
            log.rec(actor, Step::Bind, &bound);
        }
        if let Err(e) = bound {
            return fail(e);
        }
        let last = match x.next {
            NextStep::Reconnect => Some((Step::Connect, s.connect(server_addr, IO_TIMEOUT))),
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
    };
    let (outcome, local) = attempt(&mut log, &mut keep);
    new_local = new_local.or(local);
    let at_failure = if outcome.is_ok() {
        None
    } else {
        Some(diag::tuple_view(client_addr, server_addr)?)
    };

    // 5. Optionally: how long until the blocked step succeeds.
    let until_free = match (x.until_free, &outcome) {
        (Some(limit), Outcome::Failed { .. }) => {
            let t0 = Instant::now();
            let mut attempts = 0u32;
            let mut last = outcome.clone();
            let mut pause = Duration::from_millis(1);
            let mut freed = None;
            let mut quiet = Log {
                start: log.start,
                steps: Vec::new(),
            };
            // Bounded by `limit` and by the attempt count.
            while t0.elapsed() < limit && attempts < 100_000 {
                if crate::interrupted() {
                    return Err(Error::Interrupted);
                }
                std::thread::sleep(pause);
                // Back off to at most 50 ms between tries: the resolution
                // promised for "freed after".
                pause = (pause * 2).min(Duration::from_millis(50));
                attempts += 1;
                let (o, local) = attempt(&mut quiet, &mut keep);
                if o.is_ok() {
                    freed = Some(t0.elapsed().as_millis() as u64);
                    new_local = local;
                    break;
                }
                last = o;
            }
            Some(UntilFree {
                freed_after_ms: freed,
                attempts,
                last,
            })
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
        client_addr,
        server_addr,
        before,
        outcome,
        at_failure,
        new_local,
        until_free,
        steps: log.steps,
        elapsed_us: log.start.elapsed().as_micros() as u64,
    })
}
