//! `twlab demo`: the lesson in one command. Runs the classic experiment in
//! five variants on loopback, in this process, and explains each outcome
//! with the kernel rule that decided it ([`crate::model`]).

use crate::check::{self, Checked};
use crate::diag::Side;
use crate::error::{Error, Result};
use crate::model::{self, CellFacts, DocumentedPrediction, KernelFacts};
use crate::outcome::Outcome;
use crate::scenario::{CloseBy, Experiment, Report, When};
use crate::socket::{Family, SocketOpts};
use serde::Serialize;
use std::io::Write;

/// Arguments of `twlab demo`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Runs in well under 2 seconds and never waits for TIME_WAIT to expire. Each
row is a real experiment on this machine's loopback; the explanation names
the kernel function or RFC section that decided it. Use `twlab matrix` for
every combination, each in its own network namespace.")]
pub struct DemoArgs {
    /// Server port to use; by default a free one is picked for each case.
    #[arg(long)]
    pub port: Option<u16>,
    /// Use IPv6 loopback (::1) instead of 127.0.0.1.
    #[arg(long)]
    pub ipv6: bool,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One row of the lesson.
#[derive(Debug, Clone, Serialize)]
pub struct DemoRow {
    pub case: String,
    pub closed_first: String,
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
    pub explanation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// True when the model's prediction equals what the kernel did.
    pub model_agrees: bool,
    /// Runs needed: more than 1 when the old connection changed state
    /// during the step and the run was repeated (see [`crate::check`]).
    pub runs: u32,
    pub windows: DocumentedPrediction,
    pub bsd: DocumentedPrediction,
    pub report: Report,
}

/// The whole demo.
#[derive(Debug, Clone, Serialize)]
pub struct Demo {
    pub kernel: KernelFacts,
    pub rows: Vec<DemoRow>,
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

fn row(case: &str, c: Checked, kernel: &KernelFacts) -> DemoRow {
    let Checked {
        report: r,
        prediction: p,
        view,
        agrees,
        runs,
        raced: _,
    } = c;
    let facts = CellFacts {
        experiment: &r.experiment,
        view: &view,
        client_addr: r.client_addr,
        kernel,
    };
    let windows = model::predict_windows(&facts);
    let bsd = model::predict_bsd(&facts);
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
        explanation: p.explanation.clone(),
        fix: p.fix.clone(),
        model_agrees: agrees,
        runs,
        windows,
        bsd,
        report: r,
    }
}

/// Run the demo and return its data.
pub fn run_demo(a: &DemoArgs) -> Result<Demo> {
    let start = std::time::Instant::now();
    let family = if a.ipv6 { Family::V6 } else { Family::V4 };
    let kernel = KernelFacts::read_current()?;
    let mut rows = Vec::new();
    for (case, x) in cases(family, a.port) {
        if crate::interrupted() {
            return Err(Error::Interrupted);
        }
        // Each run picks fresh ports, so a re-run needs no preparation.
        let c = check::run_checked(&x, &kernel, 5, || Ok(()))?;
        rows.push(row(case, c, &kernel));
    }
    Ok(Demo {
        kernel,
        rows,
        elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// `twlab demo`.
pub fn run(a: &DemoArgs) -> Result<u8> {
    let demo = run_demo(a)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let text = if a.json {
        serde_json::to_string_pretty(&demo).map_err(|e| Error::Invalid(e.to_string()))?
    } else {
        crate::report::demo_text(&demo)
    };
    let _ = writeln!(out, "{text}").and_then(|_| out.flush());
    Ok(if demo.rows.iter().all(|r| r.model_agrees) {
        0
    } else {
        3
    })
}
