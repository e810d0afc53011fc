//! `twlab matrix`: factors × values → cells; each cell is one
//! [`Experiment`](crate::experiment::Experiment) run in its own fresh network namespace (own loopback, own
//! port space, own sysctls), in parallel; each shows the rule model's
//! prediction beside the observation, and any disagreement is loud.
//!
//! # Meaningful combinations (the default matrix)
//! The full product of every factor is mostly repetition, so by default:
//! - socket options vary on the side the next step touches: the client for
//!   `reconnect`/`rebind`, the listener for `restart-listener`. Five
//!   combinations: SO_REUSEADDR old × new (off/on each), plus SO_REUSEPORT on
//!   both with SO_REUSEADDR off. A reconnect from a kernel-chosen port binds
//!   no port, so there only "none" is run;
//! - `restart-listener` does not depend on how the client got its port, so
//!   it runs with a fixed client port only;
//! - `tcp_timestamps` (0, 1) and `tcp_tw_reuse` (0, 1, 2) are read by
//!   connect() only (`tcp_twsk_unique`), so they vary for `reconnect`; the
//!   other cells use the host's values.
//!
//! Naming a factor with `--factor` replaces its default values, and naming
//! any option factor switches the option defaults off: then the product of the
//! named option factors is run, unnamed ones off.
//!
//! # Isolation
//! As root, each cell runs on a worker thread that first moves into a fresh
//! network namespace with a TCP hash of its own
//! (`netns::enter_fresh_private_ehash`). As an ordinary user, twlab
//! re-executes itself as a hidden worker that unshares a user and a network
//! namespace before any thread exists (CLONE_NEWUSER needs a single-threaded
//! process), maps its uid to root there, and then does the same per thread;
//! cells travel as JSON on stdin, results come back as JSON lines on stdout.
//! When neither works, cells run in the host namespace on kernel-chosen free
//! ports, with the host's sysctls only; cells that need other sysctls are
//! skipped, and the output says so above the table.
//!
//! # Layout
//! - [`factors`]: the factor descriptors and the parsed [`Selection`];
//! - [`cells`]: the product of the selected values → [`CellSpec`]s;
//! - [`pool`]: the worker threads, and the `--until-free` phase;
//! - [`isolation`]: namespaces per cell, the unprivileged worker, the host
//!   fallback (whose cells get ports of their own, `host_ports`);
//! - [`results`]: a cell's observation beside the predictions, the run;
//! - [`render`](mod@render): table, Markdown, CSV, JSON.
//!
//! The command line parses its arguments into a [`Plan`]; [`execute`] runs it and returns the [`MatrixRun`] it prints.

pub mod cells;
pub mod factors;
mod host_ports;
pub mod isolation;
pub mod pool;
pub mod render;
pub mod results;

pub use cells::{
    CELL_SYSCTLS, CLIENT_PORT, CellOpts, CellSpec, MAX_CELLS, ONE_PORT, SERVER_PORT, build_cells,
    check_size, check_sysctl_names, count_cells,
};
pub use factors::{FACTORS, Factor, MAX_AFTER_MS, RangeChoice, Selection, list_factors};
pub use isolation::{Isolation, IsolationChoice};
pub(crate) use isolation::{before_worker_threads, choose_isolation};
pub use pool::{RunOptions, UNTIL_FREE_LIMIT, default_jobs};
pub use render::{TableLayout, render, render_csv, render_md, render_table};
pub use results::{
    CellResult, CellStatus, FreeTiming, MatrixRun, RanCell, held_by_open_descriptor, verdict,
};

use crate::error::{Error, Result};
use crate::json::OutputFormat;
use crate::model;
use crate::sysctl::{NetSysctls, Sysctl};
use std::sync::Mutex;
use std::time::Instant;

/// A matrix run, as the command line asked for it. Built with
/// [`Plan::new`] (or `Default`) outside this crate: it may grow fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// The factor values (`--factor`).
    pub selection: Selection,
    /// Jobs and `--until-free`.
    pub run: RunOptions,
    /// Namespaces, or the host's (`--host-netns`).
    pub isolation: IsolationChoice,
    /// How the command line prints the result.
    pub format: OutputFormat,
    /// The most cells to run (`--max-cells`); `None`: [`MAX_CELLS`].
    pub max_cells: Option<usize>,
    /// The table's rows grouped by rule (`--group-by rule`).
    pub group_by_rule: bool,
}

impl Plan {
    /// The cells of `selection`, with every other choice at its default
    /// (jobs per core, namespaces where possible, the text table).
    pub fn new(selection: Selection) -> Self {
        Plan {
            selection,
            ..Plan::default()
        }
    }
}

/// Run the cells of `plan` and return everything (no printing; a progress
/// bar on stderr if `progress`).
pub fn execute(plan: &Plan, progress: bool) -> Result<MatrixRun> {
    if plan.run.jobs == Some(0) {
        return Err(Error::Usage(
            "--jobs 0: at least one cell must run at a time".into(),
        ));
    }
    let host = NetSysctls::read()?;
    // Before anything is built or started: a selection of millions of
    // cells is refused at once.
    check_size(&plan.selection, &host, plan.max_cells.unwrap_or(MAX_CELLS))?;
    let iso = choose_isolation(plan.isolation);
    let cells = build_cells(&plan.selection, &host, iso.is_isolated())?;
    if cells.is_empty() {
        return Err(Error::Usage("the factors select no cells".into()));
    }
    let t0 = Instant::now();
    let bar = if progress {
        indicatif::ProgressBar::with_draw_target(
            Some(cells.len() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} cells {wide_bar} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let results = Mutex::new(Vec::with_capacity(cells.len()));
    let done = |r: CellResult| {
        bar.inc(1);
        results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
    };
    iso.run(&cells, plan.run, &done)?;
    bar.finish_and_clear();
    let mut cells = results.into_inner().unwrap_or_else(|p| p.into_inner());
    cells.sort_by_key(|c| c.spec.id);
    Ok(MatrixRun {
        kernel_release: model::kernel_release(),
        host_sysctls: crate::sysctl::reuse_sysctls()
            .into_iter()
            .filter_map(|(n, v)| v.map(|v| Sysctl::new(n, v)))
            .collect(),
        isolation: iso.describe(),
        cells,
        elapsed_ms: t0.elapsed().as_millis() as u64,
    })
}

/// Cell `id` of `sel` (numbered as the table numbers them, built for a
/// namespace of its own) as an experiment file that `twlab run` replays
/// through the same prediction and check (`--emit-cell`).
pub fn emit_cell(sel: &Selection, id: usize, max_cells: Option<usize>) -> Result<String> {
    let host = NetSysctls::read()?;
    check_size(sel, &host, max_cells.unwrap_or(MAX_CELLS))?;
    let cells = build_cells(sel, &host, true)?;
    let n = cells.len();
    let c = cells.into_iter().nth(id).ok_or_else(|| {
        Error::Usage(format!(
            "--emit-cell {id}: the selection has {n} cells (0 to {})",
            n.saturating_sub(1)
        ))
    })?;
    let x = &c.experiment;
    let description = format!(
        "matrix cell {id}: close={} when={} next={} client-port={} family={} options client {} / listener {} / new {}{}",
        x.close,
        x.when.name(),
        x.next.name(),
        x.client_port.name(),
        x.family.name(),
        x.client.label(),
        x.listener.label(),
        x.new_opts.label(),
        if c.sysctl_label.is_empty() {
            String::new()
        } else {
            format!(" {}", c.sysctl_label)
        }
    );
    let sysctls: Vec<(String, String)> = c.sysctls.into_iter().map(|s| (s.name, s.value)).collect();
    Ok(crate::scenario::file::experiment_toml(
        &description,
        &sysctls,
        x,
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Checked;
    use crate::diag::TupleView;
    use crate::model::{CellFacts, KernelFacts};
    use crate::outcome::Outcome;
    use crate::scenario::Report;

    /// A cell whose observation differs from the prediction is loud: listed
    /// under the table, and exit code 3.
    #[test]
    fn a_mismatch_is_loud_and_exits_3() {
        let spec = build_cells(
            &Selection::parse(&[
                "next=rebind".into(),
                "close=client".into(),
                "when=after-peer".into(),
                "family=ipv4".into(),
                "client-port=fixed".into(),
                "old-client-reuseaddr=off".into(),
                "new-reuseaddr=off".into(),
            ])
            .unwrap(),
            &cells::test_host(),
            true,
        )
        .unwrap()
        .remove(0);
        let addr = |s: &str| s.parse().unwrap();
        let report = Report {
            experiment: spec.experiment.clone(),
            client_addr: addr("127.0.0.1:23456"),
            server_addr: addr("127.0.0.1:12345"),
            before: TupleView {
                client: None,
                server: None,
            },
            // Nothing holds the port, so the model says ok; pretend the
            // kernel said otherwise.
            outcome: Outcome::Failed {
                step: crate::outcome::Step::Bind,
                error: crate::outcome::SysError::linux(crate::sys::linux_errno::EADDRINUSE),
            },
            at_failure: None,
            new_local: None,
            until_free: None,
            steps: Vec::new(),
            elapsed_us: 0,
        };
        let kernel = KernelFacts {
            release: "test".into(),
            timestamps: true,
            tw_reuse: model::TwReuse::LoopbackOnly,
            tw_reuse_delay_ms: Some(1000),
            port_range: model::PortRange {
                low: 32768,
                high: 60999,
            },
            max_tw_buckets: 1,
        };
        let view = report.before.clone();
        let prediction = model::predict_linux(&CellFacts {
            experiment: &report.experiment,
            view: &view,
            client_addr: report.client_addr,
            kernel: &kernel,
        });
        let agrees = model::same_outcome(&prediction.outcome, &report.outcome);
        let cell = results::judge(
            Checked::new(
                report,
                view,
                prediction,
                crate::check::Verdict {
                    agrees,
                    runs: 1,
                    raced: false,
                },
                &kernel,
            ),
            kernel,
        );
        assert!(!cell.matches);
        let run = MatrixRun {
            kernel_release: "test".into(),
            host_sysctls: Vec::new(),
            isolation: "test".into(),
            cells: vec![CellResult {
                spec,
                status: CellStatus::Ran(Box::new(cell)),
            }],
            elapsed_ms: 0,
        };
        assert_eq!(run.mismatches().len(), 1);
        assert_eq!(verdict(&run), crate::outcome::Exit::Disagreed);
        let t = render_table(
            &run,
            TableLayout {
                color: false,
                width: 160,
                by_rule: false,
            },
        );
        assert!(
            t.contains("MISMATCH cell 0") && t.contains("predicted ok, observed bind: EADDRINUSE"),
            "{t}"
        );
        assert!(render_md(&run).contains("**Mismatches**"));
    }
}
