//! Run an experiment and check it against the rule model.
//!
//! The model predicts from the state of the old 4-tuple at the moment of the
//! step. twlab reads that state just before the step and again right after a
//! failure; when the old connection is in a transient state (FIN_WAIT1
//! waiting for a delayed ACK, LAST_ACK, CLOSING) it can move on between the
//! read and the syscall, on a loaded machine by tens of milliseconds. Such a
//! run is not evidence either way: it is run again (bounded), and the number
//! of runs is reported. A mismatch from a stable state is never retried.

use crate::diag::{TcpState, TupleView};
use crate::error::Result;
use crate::model::{self, CellFacts, KernelFacts, Prediction};
use crate::scenario::{self, Experiment, Report};
use serde::Serialize;

/// An experiment's report with the model's verdict on it.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub report: Report,
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
            return Ok(Checked {
                report,
                prediction,
                view,
                agrees,
                runs,
                raced: spoiled,
            });
        }
    }
}
