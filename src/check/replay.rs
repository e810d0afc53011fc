//! Replay an experiment file ([`ExperimentFile`]) the way `demo` and
//! `matrix` run theirs: in a fresh network namespace with the file's
//! sysctls, through [`check::run_checked`] (the model's prediction beside
//! the kernel's outcome, runs spoiled by a transient state repeated in a
//! new namespace), then the author's expectation beside both.

use crate::check::{self, Checked};
use crate::error::Result;
use crate::model::KernelFacts;
use crate::netns::{self, Sysctl};
use crate::scenario::file::{Expect, ExperimentFile};
use serde::Serialize;

/// Runs an experiment may take when a race with a transient state spoils
/// one (as in `demo`).
const MAX_RUNS: u32 = 5;

/// A replayed experiment file.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ExperimentReport {
    /// The run, the model's verdict on it, and the documented predictions
    /// for other systems.
    pub checked: Checked,
    /// What the file's author expects, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// The observed outcome and the model's rule are what the author
    /// expects (true without an `[expect]` table).
    pub expect_agrees: bool,
}

impl ExperimentReport {
    /// 0 when the kernel, the model and the expectation agree; else the
    /// number of the three-way comparisons that failed (model, expectation).
    pub fn disagreements(&self) -> usize {
        usize::from(!self.checked.agrees) + usize::from(!self.expect_agrees)
    }
}

/// Replay `f` in a fresh namespace (on a thread of its own).
pub fn replay(f: &ExperimentFile) -> Result<ExperimentReport> {
    let sysctls: Vec<Sysctl> = f.sysctls.iter().map(|(k, v)| Sysctl::new(k, v)).collect();
    let x = f.experiment.clone();
    let again = sysctls.clone();
    let checked = netns::run_in_fresh(sysctls, move || -> Result<Checked> {
        // The kernel facts (sysctls) of the namespace the run happens in.
        let kernel = KernelFacts::read_current()?;
        // A re-run gets a namespace of its own, so the first run's
        // sockets cannot meet the second's (as matrix cells do).
        check::run_checked(&x, &kernel, MAX_RUNS, || netns::enter_fresh(&again))
    })??;
    let expect_agrees = f.expect.as_ref().is_none_or(|e| {
        e.outcome_matches(&checked.report.outcome) && e.rule_matches(checked.prediction.rule)
    });
    Ok(ExperimentReport {
        checked,
        expect: f.expect.clone(),
        expect_agrees,
    })
}
