//! Run an experiment and check it against the rule model.
//!
//! The model predicts from the state of the old 4-tuple at the moment of the
//! step. twlab reads that state just before the step and again right after a
//! failure; when the old connection is in a transient state (FIN_WAIT1
//! waiting for a delayed ACK, LAST_ACK, CLOSING) it can move on between the
//! read and the syscall, on a loaded machine by tens of milliseconds. Such a
//! run is not evidence either way: it is run again (bounded), and the number
//! of runs is reported. A mismatch from a stable state is never retried.
//!
//! The Windows and BSD/macOS expectations are attached here too, from the
//! same view as the Linux prediction, so every caller shows the same ones.
//!
//! [`replay`] replays an experiment file (`twlab run`) through
//! [`run_checked`].

pub mod replay;

use crate::diag::{TcpState, TupleView};
use crate::error::Result;
use crate::experiment::Experiment;
use crate::model::{self, CellFacts, DocumentedPrediction, KernelFacts, Prediction};
use crate::scenario::{self, Report};
use serde::Serialize;

/// An experiment's report with the model's verdict on it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Checked {
    /// What the run showed.
    pub report: Report,
    /// The Linux model's prediction, from `view`.
    pub prediction: Prediction,
    /// The kernel's view of the old 4-tuple the prediction was made from:
    /// the one read before the step, or the one read right after a failure
    /// when the old connection moved on in between.
    pub view: TupleView,
    /// The model's prediction equals what the kernel did.
    pub agrees: bool,
    /// How many times the experiment ran (more than 1 only after a race).
    pub runs: u32,
    /// The last run still disagreed while the old connection was in a
    /// transient state (or the prediction was borderline): not evidence.
    pub raced: bool,
    /// What Windows would do, from its documentation, for the same view.
    pub windows: DocumentedPrediction,
    /// What BSD/macOS would do, from their documentation and source, for
    /// the same view.
    pub bsd: DocumentedPrediction,
}

impl Checked {
    /// A verdict on `report`: the Linux `prediction` made from `view`, and
    /// the Windows and BSD/macOS expectations computed here from the same
    /// view.
    pub fn new(
        report: Report,
        view: TupleView,
        prediction: Prediction,
        verdict: Verdict,
        kernel: &KernelFacts,
    ) -> Self {
        let facts = CellFacts {
            experiment: &report.experiment,
            view: &view,
            client_addr: report.client_addr,
            kernel,
        };
        let windows = model::predict_windows(&facts);
        let bsd = model::predict_bsd(&facts);
        Checked {
            report,
            prediction,
            view,
            agrees: verdict.agrees,
            runs: verdict.runs,
            raced: verdict.raced,
            windows,
            bsd,
        }
    }
}

/// How a checked run came out against the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The prediction equals what the kernel did.
    pub agrees: bool,
    /// How many times the experiment ran.
    pub runs: u32,
    /// The last run disagreed from a transient state: not evidence.
    pub raced: bool,
}

/// True for states an old connection leaves by itself within milliseconds.
pub fn transient(s: Option<TcpState>) -> bool {
    matches!(
        s,
        Some(
            TcpState::FinWait1
                | TcpState::Closing
                | TcpState::LastAck
                | TcpState::SynSent
                | TcpState::SynRecv
                | TcpState::NewSynRecv
        )
    )
}

fn racy(v: &TupleView) -> bool {
    transient(v.client_state()) || transient(v.server_state())
}

fn predict(r: &Report, view: &TupleView, kernel: &KernelFacts) -> Prediction {
    model::predict_linux(&CellFacts {
        experiment: &r.experiment,
        view,
        client_addr: r.client_addr,
        kernel,
    })
}

/// Run `x` (in the calling thread's namespace) up to `max_runs` times until
/// the run is not spoiled by a race, and check it against the model.
/// `before_rerun` prepares a re-run (the matrix moves the thread into a fresh
/// namespace, so the first run's sockets cannot meet the second's).
pub fn run_checked(
    x: &Experiment,
    kernel: &KernelFacts,
    max_runs: u32,
    mut before_rerun: impl FnMut() -> Result<()>,
) -> Result<Checked> {
    let mut runs = 0;
    loop {
        runs += 1;
        if runs > 1 {
            before_rerun()?;
        }
        let report = scenario::run(x)?;
        // The state just before the step decides; if the step failed and the
        // state read right after the failure explains it instead, the old
        // connection moved on in between and that later read is the truth.
        let mut view = report.before.clone();
        let mut prediction = predict(&report, &view, kernel);
        let mut agrees = model::same_outcome(&prediction.outcome, &report.outcome);
        if !agrees && let Some(after) = &report.at_failure {
            let p2 = predict(&report, after, kernel);
            if model::same_outcome(&p2.outcome, &report.outcome) {
                prediction = p2;
                view = after.clone();
                agrees = true;
            }
        }
        let spoiled = !agrees && (racy(&report.before) || prediction.borderline);
        if !spoiled || runs >= max_runs {
            let verdict = Verdict {
                agrees,
                runs,
                raced: spoiled,
            };
            return Ok(Checked::new(report, view, prediction, verdict, kernel));
        }
    }
}

/// A `scenario` line of `twlab run --json`: the file and its report.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RunLine<'a> {
    /// The scenario file, as given.
    pub file: &'a std::path::Path,
    /// What playing it gave.
    pub report: RunReport,
}

/// The report of one scenario file: a script's or an experiment's.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RunReport {
    /// A script's steps.
    Script(crate::scenario::play::ScriptReport),
    /// An experiment checked against the model.
    Experiment(Box<replay::ExperimentReport>),
}

/// The `summary` line of `twlab run --json`: the totals.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RunSummary {
    /// Steps or experiments where observation, model or expectation differ
    /// (the exit code is 3 when any do).
    pub disagreements: usize,
    /// Differences only because the kernel is older than a file's
    /// `min_kernel`, counted apart.
    pub older_kernel_differences: usize,
    /// Files played.
    pub scenarios: usize,
    /// Steps played (an experiment counts one).
    pub steps: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SockEntry;
    use crate::outcome::Outcome;
    use crate::socket::Family;
    use crate::sysctl::{PortRange, TwReuse};

    const C: &str = "127.0.0.1:23456";
    const S: &str = "127.0.0.1:12345";

    fn client_time_wait() -> SockEntry {
        SockEntry::time_wait(
            C.parse().unwrap(),
            S.parse().unwrap(),
            std::time::Duration::from_millis(59_990),
        )
    }

    // The documented predictions come from the view the verdict was made
    // from (here: the client's TIME_WAIT read at the failure), not from the
    // report's `before` (here: nothing left).
    #[test]
    fn other_systems_are_predicted_from_the_deciding_view() {
        let report = Report {
            experiment: Experiment::story(Family::V4, 12345, 23456),
            client_addr: C.parse().unwrap(),
            server_addr: S.parse().unwrap(),
            before: TupleView {
                client: None,
                server: None,
            },
            outcome: Outcome::Ok,
            at_failure: None,
            new_local: None,
            until_free: None,
            steps: Vec::new(),
            elapsed_us: 0,
        };
        let view = TupleView {
            client: Some(client_time_wait()),
            server: None,
        };
        let kernel = KernelFacts {
            release: "test".into(),
            timestamps: true,
            tw_reuse: TwReuse::LoopbackOnly,
            tw_reuse_delay_ms: Some(1000),
            port_range: PortRange {
                low: 32768,
                high: 60999,
            },
            max_tw_buckets: 131072,
        };
        let prediction = predict(&report, &view, &kernel);
        let verdict = Verdict {
            agrees: true,
            runs: 1,
            raced: false,
        };
        let c = Checked::new(report, view, prediction, verdict, &kernel);
        // Linux takes the TIME_WAIT over (bound port, timestamps); Windows
        // and BSD refuse a 4-tuple in TIME_WAIT at connect().
        assert_eq!(c.prediction.outcome.short(), "ok");
        assert_eq!(c.windows.outcome.short(), "connect: WSAEADDRINUSE");
        assert_eq!(c.bsd.outcome.short(), "connect: EADDRINUSE");
        assert_eq!(c.windows.label, "documented, not run");
        assert_eq!((c.agrees, c.runs, c.raced), (true, 1, false));
    }
}
