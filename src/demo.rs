//! `twlab demo`: the lesson in one command. Runs the classic experiment in
//! five variants on loopback, in this process, and explains each outcome
//! with the kernel rule that decided it ([`crate::model`]).

use crate::check::{self, Checked};
use crate::diag::Side;
use crate::error::{Error, Result};
use crate::model::{self, DocumentedPrediction, KernelFacts};
use crate::outcome::Outcome;
use crate::scenario::{CloseBy, Experiment, Report, When};
use crate::socket::{Family, SocketOpts};
use serde::Serialize;
use std::io::Write;

/// What `twlab demo` runs and how it prints it (the command line's
/// arguments, parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoPlan {
    /// IPv4 (127.0.0.1) or IPv6 (::1) loopback.
    pub family: Family,
    /// Server port for every case; `None` picks a free one for each case.
    pub port: Option<u16>,
    /// Table or JSON.
    pub output: Output,
}

/// How the demo is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The table, the explanations under it, the host facts and other
    /// systems (`report::demo_text`).
    Table,
    /// One JSON document (the [`Demo`] as serde writes it).
    Json,
}

/// One row of the lesson.
#[derive(Debug, Clone, Serialize)]
pub struct DemoRow {
    /// The case, in words.
    pub case: String,
    /// The end that closed first, with " (RST)" for an abortive close.
    pub closed_first: String,
    /// "client options / listener options".
    pub options: String,
    /// "ok", or the step that failed.
    pub step: String,
    /// The errno name and number, if a step failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// The old 4-tuple at the deciding moment, from both ends.
    pub old_tuple: String,
    /// Which end held TIME_WAIT, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_wait_held_by: Option<Side>,
    /// The rule of the model that decided it.
    pub rule: model::RuleId,
    /// The model's explanation, citing the kernel function or RFC.
    pub explanation: String,
    /// What would make a failed step succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// True when the model's prediction equals what the kernel did.
    pub model_agrees: bool,
    /// Runs needed: more than 1 when the old connection changed state
    /// during the step and the run was repeated (see [`crate::check`]).
    pub runs: u32,
    /// What Windows would do (documented, not run).
    pub windows: DocumentedPrediction,
    /// What BSD/macOS would do (documented, not run).
    pub bsd: DocumentedPrediction,
    /// The run itself.
    pub report: Report,
}

/// The whole demo.
#[derive(Debug, Clone, Serialize)]
pub struct Demo {
    /// This kernel and the namespace's sysctls.
    pub kernel: KernelFacts,
    /// One row per case, in order.
    pub rows: Vec<DemoRow>,
    /// Wall time of all the cases.
    pub elapsed_ms: f64,
}

/// The five cases of the lesson.
pub fn cases(family: Family, port: Option<u16>) -> Vec<(&'static str, Experiment)> {
    let base = Experiment::story(family, port.unwrap_or(0), 0);
    vec![
        (
            "client closes first; reconnect after the peer closed",
            base.clone(),
        ),
        (
            "client closes first; reconnect before the peer closed (the story's tight loop)",
            Experiment {
                when: When::AtOnce,
                ..base.clone()
            },
        ),
        (
            "server closes first; reconnect at once",
            Experiment {
                close: CloseBy::Server,
                ..base.clone()
            },
        ),
        (
            "client closes with SO_LINGER 0 (RST); reconnect",
            Experiment {
                close: CloseBy::ClientRst,
                ..base.clone()
            },
        ),
        (
            "no SO_REUSEADDR on the client; reconnect after the peer closed",
            Experiment {
                client: SocketOpts::default(),
                new_opts: SocketOpts::default(),
                ..base
            },
        ),
    ]
}

fn row(case: &str, c: Checked) -> DemoRow {
    let Checked {
        report: r,
        prediction: p,
        view,
        agrees,
        runs,
        raced: _,
        windows,
        bsd,
    } = c;
    let x = &r.experiment;
    DemoRow {
        case: case.to_string(),
        closed_first: format!(
            "{}{}",
            x.close.first(),
            if x.close.is_rst() { " (RST)" } else { "" }
        ),
        options: format!("{} / {}", x.client.label(), x.listener.label()),
        step: match &r.outcome {
            Outcome::Ok => "ok".into(),
            Outcome::Failed { step, .. } => format!("{step}()"),
        },
        errno: r.outcome.error().map(|e| e.to_string()),
        old_tuple: view.describe(),
        time_wait_held_by: view.time_wait_holder(),
        rule: p.rule,
        explanation: p.explanation,
        fix: p.fix,
        model_agrees: agrees,
        runs,
        windows,
        bsd,
        report: r,
    }
}

/// Run the demo and return its data.
pub fn run_demo(plan: &DemoPlan) -> Result<Demo> {
    let start = std::time::Instant::now();
    let kernel = KernelFacts::read_current()?;
    let mut rows = Vec::new();
    for (case, x) in cases(plan.family, plan.port) {
        if crate::interrupted() {
            return Err(Error::Interrupted);
        }
        // Each run picks fresh ports, so a re-run needs no preparation.
        let c = check::run_checked(&x, &kernel, 5, || Ok(()))?;
        rows.push(row(case, c));
    }
    Ok(Demo {
        kernel,
        rows,
        elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// `twlab demo`: run it, print it; the exit code is 0 when the model agreed
/// with the kernel on every row, 3 otherwise.
pub fn run(plan: &DemoPlan) -> Result<u8> {
    let demo = run_demo(plan)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let text = match plan.output {
        Output::Json => {
            serde_json::to_string_pretty(&demo).map_err(|e| Error::Invalid(e.to_string()))?
        }
        Output::Table => crate::report::demo_text(&demo),
    };
    let _ = writeln!(out, "{text}").and_then(|_| out.flush());
    Ok(if demo.rows.iter().all(|r| r.model_agrees) {
        0
    } else {
        3
    })
}
