//! What cells produced: a cell's result beside the model's predictions, and
//! the whole run.

use super::cells::CellSpec;
use crate::check::Checked;
use crate::diag::{Side, TupleView};
use crate::error::Error;
use crate::experiment::{Experiment, NextStep};
use crate::model::{self, DocumentedPrediction, KernelFacts, Prediction};
use crate::outcome::Exit;
use crate::outcome::{Outcome, WsaName};
use crate::scenario::Report;
use crate::sysctl::Sysctl;
use serde::{Deserialize, Serialize};

/// A cell that ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RanCell {
    /// The observation.
    pub report: Report,
    /// The old 4-tuple the prediction was made from (see `check::Checked`).
    pub view: TupleView,
    /// The kernel and sysctls the cell ran with.
    pub kernel: KernelFacts,
    /// The Linux rule model's prediction.
    pub predicted: Prediction,
    /// Documented Windows behaviour (not run).
    pub windows: DocumentedPrediction,
    /// Documented BSD/macOS behaviour (not run).
    pub bsd: DocumentedPrediction,
    /// Observation equals prediction (step and errno name).
    pub matches: bool,
    /// Runs needed (more than 1 only after a race with a transient state).
    pub runs: u32,
    /// Every run disagreed while the old connection was in a transient
    /// state (FIN_WAIT1, LAST_ACK, ...): a race, not evidence either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raced: bool,
    /// `--until-free`: how long the failed step stayed blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_free: Option<FreeTiming>,
}

/// How long a blocked step stayed blocked (`--until-free`). Written
/// tagged with `kind` (`{"kind": "freed-after-ms", "ms": 1200}`), as every
/// tagged value in twlab's JSON, not with serde's external tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FreeTimingOut", into = "FreeTimingOut")]
pub enum FreeTiming {
    /// The step first succeeded this long after its first failure.
    FreedAfterMs(u64),
    /// Still blocked when twlab gave up.
    NotWithin {
        /// The limit, in seconds.
        secs: u64,
    },
    /// The blocker is a socket whose descriptor stays open for the whole
    /// cell: waiting cannot free it.
    HeldByOpenSocket,
    /// The re-run's step succeeded at once (it raced a state change).
    OkOnRerun,
    /// The re-run itself failed.
    Error(String),
}

/// [`FreeTiming`] as it is written and read (the matrix worker sends it
/// to its parent in this shape too).
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum FreeTimingOut {
    /// The step first succeeded this long after its first failure.
    FreedAfterMs {
        /// In milliseconds.
        ms: u64,
    },
    /// Still blocked when twlab gave up.
    NotWithin {
        /// The limit, in seconds.
        secs: u64,
    },
    /// The blocker's descriptor stays open for the whole cell.
    HeldByOpenSocket,
    /// The re-run's step succeeded at once.
    OkOnRerun,
    /// The re-run itself failed.
    Error {
        /// Why.
        error: String,
    },
}

impl From<FreeTiming> for FreeTimingOut {
    fn from(f: FreeTiming) -> Self {
        match f {
            FreeTiming::FreedAfterMs(ms) => FreeTimingOut::FreedAfterMs { ms },
            FreeTiming::NotWithin { secs } => FreeTimingOut::NotWithin { secs },
            FreeTiming::HeldByOpenSocket => FreeTimingOut::HeldByOpenSocket,
            FreeTiming::OkOnRerun => FreeTimingOut::OkOnRerun,
            FreeTiming::Error(error) => FreeTimingOut::Error { error },
        }
    }
}

impl From<FreeTimingOut> for FreeTiming {
    fn from(f: FreeTimingOut) -> Self {
        match f {
            FreeTimingOut::FreedAfterMs { ms } => FreeTiming::FreedAfterMs(ms),
            FreeTimingOut::NotWithin { secs } => FreeTiming::NotWithin { secs },
            FreeTimingOut::HeldByOpenSocket => FreeTiming::HeldByOpenSocket,
            FreeTimingOut::OkOnRerun => FreeTiming::OkOnRerun,
            FreeTimingOut::Error { error } => FreeTiming::Error(error),
        }
    }
}

impl schemars::JsonSchema for FreeTiming {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FreeTiming".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        FreeTimingOut::json_schema(generator)
    }
}

impl FreeTiming {
    /// The table's "freed after" text.
    pub fn label(&self) -> String {
        match self {
            FreeTiming::FreedAfterMs(ms) => format!("{:.2} s", *ms as f64 / 1000.0),
            FreeTiming::NotWithin { secs } => format!("not within {secs} s"),
            FreeTiming::HeldByOpenSocket => "never (open socket)".into(),
            FreeTiming::OkOnRerun => "ok on re-run".into(),
            FreeTiming::Error(e) => format!("error: {e}"),
        }
    }
}

/// What happened to a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum CellStatus {
    /// It ran; the observation beside the predictions.
    Ran(Box<RanCell>),
    /// It could not run here (the host fallback lacks its sysctls).
    Skipped {
        /// Why.
        reason: String,
    },
    /// Setting it up or running it failed.
    Error {
        /// The error.
        message: String,
    },
    /// The kernel refused one of the cell's sysctl values (a factor value
    /// out of the kernel's range, e.g. `tcp-max-tw-buckets=2147483648`).
    SysctlRefused {
        /// The sysctl and the value the kernel refused.
        sysctl: Sysctl,
        /// The kernel's answer.
        why: String,
    },
}

impl CellStatus {
    /// The one-line message of a cell that did not run (error or refused
    /// sysctl), else `None`.
    pub fn error_message(&self) -> Option<String> {
        match self {
            CellStatus::Error { message } => Some(message.clone()),
            CellStatus::SysctlRefused { sysctl, why } => Some(format!(
                "the kernel refused {}={}: {why}",
                sysctl.name, sysctl.value
            )),
            _ => None,
        }
    }
}

/// A cell and what happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CellResult {
    /// The cell.
    pub spec: CellSpec,
    /// What happened.
    #[serde(flatten)]
    pub status: CellStatus,
}

/// Which end of the old connection the next step touches.
fn touched(next: NextStep) -> Side {
    match next {
        NextStep::RestartListener => Side::Server,
        _ => Side::Client,
    }
}

/// The touched end's descriptor stays open for the whole cell (the step
/// comes at once and that end did not close first): a failure there never
/// clears by waiting, so `--until-free` does not wait for it.
pub fn held_by_open_descriptor(x: &Experiment) -> bool {
    model::fd_open(x, touched(x.next))
}

/// A cell's result from the checked run: the Linux prediction, its verdict
/// and the Windows and BSD columns all come from [`crate::check`], computed
/// once from the view that decided.
pub(crate) fn judge(c: Checked, kernel: KernelFacts) -> RanCell {
    let mut c = c;
    // The Winsock twin of a Linux error names what Windows reports in the
    // same cell, not the errno's namesake: an exhausted range is
    // EADDRNOTAVAIL on Linux but WSAEADDRINUSE (10048) on Windows, not
    // WSAEADDRNOTAVAIL (10049).
    let twin = match &c.windows.outcome {
        Outcome::Failed { error, .. } if error.name.starts_with("WSA") => Some(WsaName {
            name: error.name.clone(),
            code: error.code,
        }),
        _ => None,
    };
    for o in [&mut c.report.outcome, &mut c.prediction.outcome] {
        if let Outcome::Failed { error, .. } = o
            && error.wsa.is_some()
        {
            error.wsa = twin.clone();
        }
    }
    RanCell {
        report: c.report,
        view: c.view,
        kernel,
        predicted: c.prediction,
        windows: c.windows,
        bsd: c.bsd,
        matches: c.agrees,
        runs: c.runs,
        raced: c.raced,
        until_free: None,
    }
}

/// Everything a `matrix` run produced.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MatrixRun {
    /// `uname -r`.
    pub kernel_release: String,
    /// The host's reuse sysctls (the cells' defaults), for bug reports.
    #[serde(default)]
    pub host_sysctls: Vec<Sysctl>,
    /// How the cells were isolated, in words.
    pub isolation: String,
    /// Every cell, in matrix order.
    pub cells: Vec<CellResult>,
    /// Wall time of the run.
    pub elapsed_ms: u64,
}

impl MatrixRun {
    /// The cells that ran.
    pub fn ran(&self) -> impl Iterator<Item = (&CellSpec, &RanCell)> {
        self.cells.iter().filter_map(|c| match &c.status {
            CellStatus::Ran(r) => Some((&c.spec, r.as_ref())),
            _ => None,
        })
    }
    /// Cells whose observation differs from the prediction (borderline
    /// timing cells are listed but do not count).
    pub fn mismatches(&self) -> Vec<(&CellSpec, &RanCell)> {
        self.ran()
            .filter(|(_, r)| !r.matches && !r.predicted.borderline && !r.raced)
            .collect()
    }
    /// Cells that could not run.
    pub fn errors(&self) -> usize {
        (self.cells.iter())
            .filter(|c| c.status.error_message().is_some())
            .count()
    }

    /// If the kernel refused a sysctl value a factor asked for: one error
    /// naming the sysctl and the value (a bad argument, found only when the
    /// kernel was asked), for the first such cell.
    pub fn refused_sysctl(&self) -> Option<Error> {
        let n = (self.cells.iter())
            .filter(|c| matches!(c.status, CellStatus::SysctlRefused { .. }))
            .count();
        self.cells.iter().find_map(|c| match &c.status {
            CellStatus::SysctlRefused { sysctl, why } => Some(Error::Usage(format!(
                "the kernel refused {}={} ({why}) in {n} of {} cells; pick a value the kernel accepts (see --list-factors)",
                sysctl.name,
                sysctl.value,
                self.cells.len()
            ))),
            _ => None,
        })
    }
}

/// Disagreed if any cell's observation differs from the prediction, else
/// incomplete if a cell could not run, else done.
pub fn verdict(run: &MatrixRun) -> Exit {
    if !run.mismatches().is_empty() {
        Exit::Disagreed
    } else if run.errors() > 0 {
        Exit::Incomplete
    } else {
        Exit::Done
    }
}

#[cfg(test)]
mod tests {
    use super::FreeTiming;

    /// Tagged with `kind` on the way out, and read back in that shape (the
    /// unprivileged worker sends its results to the parent as JSON).
    #[test]
    fn free_timing_is_tagged_with_kind_and_reads_back() {
        for (f, json) in [
            (
                FreeTiming::FreedAfterMs(1200),
                r#"{"kind":"freed-after-ms","ms":1200}"#,
            ),
            (
                FreeTiming::NotWithin { secs: 30 },
                r#"{"kind":"not-within","secs":30}"#,
            ),
            (
                FreeTiming::HeldByOpenSocket,
                r#"{"kind":"held-by-open-socket"}"#,
            ),
            (FreeTiming::OkOnRerun, r#"{"kind":"ok-on-rerun"}"#),
            (
                FreeTiming::Error("cell lost".into()),
                r#"{"kind":"error","error":"cell lost"}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&f).unwrap(), json);
            assert_eq!(serde_json::from_str::<FreeTiming>(json).unwrap(), f);
        }
    }
}
