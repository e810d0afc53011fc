//! `twlab trace`: run one experiment (a demo case, a matrix cell, or one of
//! the trace's own scenarios) in a fresh network namespace while an
//! AF_PACKET socket captures every TCP segment, and show them as a ladder
//! with each end's state and the annotated moment that answers the story's
//! question: why a 4-tuple can be used again at once.

mod annotate;
mod capture;
mod decode;
mod delaybox;
mod duplicate;
mod kernel;
mod lost;
pub(crate) mod pcap;
mod render;
mod veth;

pub use annotate::{
    Admission, Duplicate, DuplicateFacts, Fate, Moment, TW_ISN_GAP, delayed_duplicate, seq_end,
};
pub use decode::{Captured, Direction, EndStates, Flags, Segment, Wire, decode_frame, number};
pub use duplicate::OLD_PAYLOAD;
pub use kernel::{Cite, EXACT_SOURCE, KernelEvent};
pub use render::ladder_text;

use crate::diag::Side;
use crate::error::{Error, Result};
use crate::experiment::{ClientPort, Experiment, NextStep};
use crate::matrix::{Selection, build_cells};
use crate::netns::{self, Sysctl};
use crate::outcome::Step;
use crate::scenario::{self, Report, StepRecord};
use crate::socket::Family;
use crate::sysctl::NetSysctls;
use capture::{Capture, Keep, needs_root};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Server port inside the trace's namespace (the story's).
const SERVER_PORT: u16 = 12345;
/// Fixed client port inside the trace's namespace (the story's).
const CLIENT_PORT: u16 = 23456;

/// What to trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A case of `twlab demo`, from 1.
    Demo(usize),
    /// The one matrix cell these `--factor NAME=VALUE` arguments select.
    Cell(Vec<String>),
    /// The client closes with SO_LINGER 0 while the server's bytes sit
    /// unread in its receive queue.
    RstUnread,
    /// Client and server in two namespaces joined through a delay box: an
    /// old segment arrives after the 4-tuple was reused (SO_LINGER 0 close,
    /// immediate reconnect).
    DelayedDuplicate,
}

impl Target {
    /// Parse the CASE argument: a demo case number, a word of its name, or
    /// `rst-unread`, `delayed-duplicate` (or `old-duplicate`).
    pub fn parse(case: &str) -> Result<Self> {
        match case {
            "rst-unread" => return Ok(Target::RstUnread),
            "delayed-duplicate" | "old-duplicate" => return Ok(Target::DelayedDuplicate),
            _ => {}
        }
        let cases = crate::demo::cases(Family::V4, None);
        if let Ok(n) = case.parse::<usize>() {
            if (1..=cases.len()).contains(&n) {
                return Ok(Target::Demo(n));
            }
        } else if let Some(i) = cases.iter().position(|(name, _)| name.contains(case)) {
            return Ok(Target::Demo(i + 1));
        }
        let names: Vec<String> = cases
            .iter()
            .enumerate()
            .map(|(i, (n, _))| format!("{}: {n}", i + 1))
            .collect();
        Err(Error::Usage(format!(
            "no trace case '{case}': give a demo case 1-{} ({}), rst-unread, delayed-duplicate, or -f factors for a matrix cell",
            cases.len(),
            names.join("; ")
        )))
    }
}

/// The default: the story's open question, server closes first, reconnect.
pub const DEFAULT_CASE: usize = 3;

/// What `twlab trace` runs and how it prints it.
/// Built with [`TracePlan::new`] outside this crate (it may grow fields).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TracePlan {
    /// What to trace.
    pub target: Target,
    /// `net.ipv4.tcp_timestamps` in the namespace (`None`: its default).
    pub timestamps: Option<bool>,
    /// Absolute sequence numbers instead of relative ones.
    pub absolute: bool,
    /// Write the captured frames here: pcapng with the explanations as
    /// packet comments if the name ends in `.pcapng`, else a classic pcap.
    pub pcap: Option<PathBuf>,
    /// JSON instead of the text ladder.
    pub json: bool,
    /// Record the kernel's own events (tracepoints) beside the segments
    /// where this machine allows it (root, tracefs); a note says why not.
    pub events: bool,
}

impl TracePlan {
    /// Trace `target` with the namespace's default timestamps, relative
    /// sequence numbers, no pcap, the text ladder, and no kernel events.
    pub fn new(target: Target) -> Self {
        TracePlan {
            target,
            timestamps: None,
            absolute: false,
            pcap: None,
            json: false,
            events: false,
        }
    }
}

/// Where the ladder's states come from.
pub const STATES_SOURCE: &str = "states at step: a sock_diag dump right after each socket call returned (not per segment: the exchange runs in microseconds, faster than a dump per segment could follow)";

/// Both ends' states right after one socket call.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StepState {
    /// Microseconds since the capture started (same clock as the segments).
    pub at_us: u64,
    /// "client", "server", "client#2"...
    pub actor: String,
    /// The call, with its note ("close() FIN").
    pub call: String,
    /// "ok" or the errno.
    pub result: String,
    /// Each end of the traced 4-tuple after the call.
    pub states: EndStates,
}

/// Raw snapshots taken by the step hook: when, the call, every socket.
type Snap = (
    std::time::SystemTime,
    StepRecord,
    Vec<(SocketAddr, SocketAddr, crate::diag::TcpState)>,
);

/// Take a snapshot of the calling thread's namespace after a step.
pub(crate) fn snap(step: &StepRecord) -> Snap {
    let at = std::time::SystemTime::now();
    let socks = crate::diag::dump(&crate::diag::Query::default())
        .map(|v| v.into_iter().map(|e| (e.local, e.peer, e.state)).collect())
        .unwrap_or_default();
    (at, step.clone(), socks)
}

/// Snapshots → step rows for the 4-tuple client ↔ server.
pub(crate) fn step_states(
    snaps: Vec<Snap>,
    start: std::time::SystemTime,
    client: SocketAddr,
    server: SocketAddr,
) -> Vec<StepState> {
    let pick =
        |v: &[(SocketAddr, SocketAddr, crate::diag::TcpState)], l: SocketAddr, p: SocketAddr| {
            v.iter()
                .filter(|(a, b, _)| *a == l && *b == p)
                .map(|(_, _, s)| *s)
                .collect()
        };
    snaps
        .into_iter()
        .map(|(t, step, socks)| StepState {
            at_us: capture::since(start, t),
            actor: step.actor.clone(),
            call: match &step.note {
                Some(n) => format!("{}() {n}", step.step),
                None => format!("{}()", step.step),
            },
            result: match &step.result {
                crate::outcome::StepResult::Ok => "ok".into(),
                crate::outcome::StepResult::Err { error } => error.to_string(),
            },
            states: EndStates {
                client: pick(&socks, client, server),
                server: pick(&socks, server, client),
            },
        })
        .collect()
}

/// A trace: the segments, the moments, and the run behind them.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Trace {
    /// What ran, in words.
    pub title: String,
    /// `net.ipv4.tcp_timestamps` in the namespace.
    pub timestamps: bool,
    /// The client's end of the first connection.
    pub client: SocketAddr,
    /// The server's end.
    pub server: SocketAddr,
    /// The interface captured on.
    pub capture_on: String,
    /// Frames the capture socket read (on `lo` each twice).
    pub frames_seen: usize,
    /// Of those, the PACKET_OUTGOING copies.
    pub frames_outgoing: usize,
    /// Where the states come from.
    pub states_source: &'static str,
    /// The ladder.
    pub segments: Vec<Segment>,
    /// The annotated moments.
    pub moments: Vec<Moment>,
    /// Socket calls, in order, with both ends' states after each.
    pub steps: Vec<StepState>,
    /// The kernel's own events (state changes, resets, drops), on the
    /// segments' clock; empty without them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_events: Vec<KernelEvent>,
    /// Lines citing the kernel's events under the annotated moments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cites: Vec<Cite>,
    /// Other facts shown under the ladder (counters, notes).
    pub notes: Vec<String>,
    /// The runner's report, for demo cases and matrix cells.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// The raw frames, for `--pcap`.
    #[serde(skip)]
    pub(crate) raw: Vec<capture::RawFrame>,
    /// When the capture started: `at_us` counts from here.
    #[serde(skip)]
    pub(crate) start: std::time::SystemTime,
}

/// The experiment and namespace sysctls of a demo case or matrix cell.
fn experiment_of(plan: &TracePlan) -> Result<(String, Experiment, Vec<Sysctl>)> {
    let mut sysctls = Vec::new();
    let (title, mut x) = match &plan.target {
        Target::Demo(n) => {
            let cases = crate::demo::cases(Family::V4, Some(SERVER_PORT));
            let (name, x) = cases
                .into_iter()
                .nth(n - 1)
                .ok_or_else(|| Error::Usage(format!("no demo case {n}")))?;
            (format!("demo case {n}: {name}"), x)
        }
        Target::Cell(factors) => {
            let sel = Selection::parse(factors)?;
            let host = NetSysctls::read()?;
            let cells = build_cells(&sel, &host, true)?;
            if cells.len() != 1 {
                return Err(Error::Usage(format!(
                    "the factors select {} matrix cells; name more factors (see `twlab matrix --list-factors`) until one remains",
                    cells.len()
                )));
            }
            let c = cells.into_iter().next().expect("one cell");
            sysctls = c.sysctls;
            (format!("matrix cell: {}", factors.join(" ")), c.experiment)
        }
        _ => unreachable!("not a runner experiment"),
    };
    if let ClientPort::Fixed(0) = x.client_port {
        x.client_port = ClientPort::Fixed(CLIENT_PORT);
    }
    if x.server_port == 0 {
        x.server_port = SERVER_PORT;
    }
    if let Some(ts) = plan.timestamps {
        sysctls.retain(|s| s.name != crate::sysctl::TIMESTAMPS);
        sysctls.push(Sysctl::new(
            crate::sysctl::TIMESTAMPS,
            if ts { "1" } else { "0" },
        ));
    }
    Ok((title, x, sysctls))
}

/// Run the plan's experiment under capture and return the trace, with the
/// kernel's events beside it when `plan.events` and the machine allow.
pub fn run_trace(plan: &TracePlan) -> Result<Trace> {
    netns::can_unshare().map_err(needs_root)?;
    let runner = match plan.target {
        Target::RstUnread | Target::DelayedDuplicate => None,
        _ => Some(experiment_of(plan)?),
    };
    let (port, addrs) = match (&runner, &plan.target) {
        (Some((_, x, _)), _) => (x.server_port, Vec::new()),
        (None, Target::DelayedDuplicate) => (SERVER_PORT, vec![veth::SERVER_IP.into()]),
        (None, _) => (SERVER_PORT, Vec::new()),
    };
    // Started before the namespace exists, so its first socket is seen.
    let rec = plan.events.then(|| kernel::start(port, &addrs));
    // A signal during the tracefs set-up (tens of ms) stops here, not
    // after a whole run whose ladder would then be printed (seen: the
    // ladder, then "interrupted"); `rec` removes its instance on the way.
    crate::signal::check()?;
    let mut t = match (runner, &plan.target) {
        (Some(r), _) => run_experiment(r)?,
        (None, Target::RstUnread) => lost::run(plan)?,
        (None, _) => duplicate::run(plan)?,
    };
    match rec {
        Some(Ok(r)) => {
            let start = t.start;
            kernel::attach(&mut t, r, start);
        }
        Some(Err(why)) => t.notes.push(format!("kernel events: off ({why})")),
        None => {}
    }
    Ok(t)
}

/// A demo case or matrix cell under capture.
fn run_experiment((title, x, sysctls): (String, Experiment, Vec<Sysctl>)) -> Result<Trace> {
    let x2 = x.clone();
    let (report, collected, timestamps, snaps, start) =
        netns::run_in_fresh(sysctls, move || -> Result<_> {
            let cap = Capture::start("lo", Keep::IncomingOnly, false)?;
            let start = cap.start;
            let snaps = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let s2 = snaps.clone();
            let report = scenario::with_step_hook(
                move |st| s2.borrow_mut().push(snap(st)),
                || scenario::run(&x2),
            );
            let collected = cap.finish()?;
            let ts = crate::sysctl::read(crate::sysctl::TIMESTAMPS).is_some_and(|v| v != "0");
            let snaps = std::mem::take(&mut *snaps.borrow_mut());
            Ok((report?, collected, ts, snaps, start))
        })??;
    let segments = number(&collected.segments, report.server_addr);
    let moments = moments_of(&x, &report, &segments);
    Ok(Trace {
        title,
        timestamps,
        client: report.client_addr,
        server: report.server_addr,
        capture_on: "lo".into(),
        frames_seen: collected.frames_seen,
        frames_outgoing: collected.frames_outgoing,
        states_source: STATES_SOURCE,
        segments,
        moments,
        steps: step_states(snaps, start, report.client_addr, report.server_addr),
        kernel_events: Vec::new(),
        cites: Vec::new(),
        notes: vec![format!(
            "outcome of the next step: {}",
            report.outcome.short()
        )],
        report: Some(report),
        raw: collected.raw,
        start,
    })
}

/// The annotated moments of a runner experiment.
fn moments_of(x: &Experiment, r: &Report, segs: &[Segment]) -> Vec<Moment> {
    let mut v = Vec::new();
    if x.close.is_rst() {
        // The other end's next call after the RST: its recv() in the runner.
        let other = match x.close.side {
            Side::Client => "server",
            Side::Server => "client",
        };
        let peer_error = r
            .steps
            .iter()
            .find(|s| s.actor == other && s.step == Step::Recv)
            .and_then(|s| match &s.result {
                crate::outcome::StepResult::Err { error } => Some(format!("{error} from recv()")),
                _ => None,
            });
        v.extend(annotate::reset(segs, 1, Some(0), peer_error));
    }
    let reused = r.new_local == Some(r.client_addr);
    if x.next == NextStep::Reconnect && reused && r.outcome.is_ok() {
        let m = match r.before.time_wait_holder() {
            Some(Side::Server) => annotate::time_wait_syn(segs, 1, 2),
            Some(Side::Client) => annotate::takeover(segs, 1, 2),
            None => None,
        };
        v.extend(m);
    }
    v
}
