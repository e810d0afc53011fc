//! `twlab matrix`: arguments (clap) → the library's [`Plan`].

use crate::json::OutputFormat;
use crate::matrix::{self, IsolationChoice, Plan, RunOptions, Selection};
use crate::outcome::Exit;

/// Run the experiment over a matrix of factors, compare each cell with the
/// rule model, and show Windows and BSD/macOS expectations beside it.
///
/// Default: every meaningful combination of close × when × next × socket
/// options × client-port × family, with tcp_timestamps 0/1 and tcp_tw_reuse
/// 0/1/2 for reconnects. "Meaningful": options vary on the side the next step
/// touches (client for reconnect/rebind, listener for restart-listener):
/// SO_REUSEADDR old×new plus SO_REUSEPORT on both; a reconnect from a
/// kernel-chosen port binds nothing, so runs with no options;
/// restart-listener runs with a fixed client port only; the sysctls vary
/// only for reconnect (only connect() reads them). Naming a factor replaces
/// its defaults; naming any option factor runs the product of the named
/// option factors (unnamed ones off). See `--list-factors`.
///
/// Limits: `when=after-<N>ms` takes N ≤ 600000 (10 minutes); a matrix of
/// more than 100000 cells is refused unless --max-cells allows it.
/// Exit code 3 if any observation differs from the prediction, 2 for a bad
/// argument (also one the kernel refuses, such as a sysctl value), 130 on
/// Ctrl-C.
#[derive(Debug, Clone, clap::Args)]
pub struct MatrixArgs {
    /// NAME=V1,V2,...: the values of one factor (repeatable).
    #[arg(long = "factor", short = 'f', value_name = "NAME=V1,V2")]
    factors: Vec<String>,
    /// List the factors, their values and defaults, and exit.
    #[arg(long)]
    list_factors: bool,
    /// For cells whose step failed, retry until it succeeds (≤ 50 ms
    /// resolution, give up after 70 s) and show how long that took.
    #[arg(long)]
    until_free: bool,
    /// Cells run at once (default: 4 × available cores). Cells that wait
    /// after-<N>ms (N ≥ 50) run afterwards, up to 256 at once, since they
    /// sleep; with --until-free the blocked cells are re-run all at once.
    #[arg(long, short = 'j', value_parser = parse_jobs)]
    jobs: Option<usize>,
    /// Refuse a matrix of more cells than this (default 100000); counted
    /// before any cell is built.
    #[arg(long, value_name = "N")]
    max_cells: Option<usize>,
    #[arg(long, value_enum, default_value = "table")]
    format: FormatArg,
    /// The run as one JSON document (the same as --format json; every
    /// command takes --json).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Group the table's rows by the rule that decided them (each rule's
    /// cells together, a break between rules) instead of by the factors.
    #[arg(long, value_enum, value_name = "BY")]
    group_by: Option<GroupBy>,
    /// Print cell N of the selection (numbered as the table numbers them)
    /// as a scenario file, without running anything; `twlab run FILE`
    /// replays it with the same prediction and check.
    #[arg(long, value_name = "N")]
    emit_cell: Option<usize>,
    /// Internal: run cells read from stdin inside a user+network namespace
    /// (`crate::matrix::isolation`'s worker protocol).
    #[arg(long, hide = true)]
    internal_worker: bool,
    /// Internal/testing: do not create namespaces (host fallback).
    #[arg(long, hide = true)]
    host_netns: bool,
}

/// `--group-by`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum GroupBy {
    /// The rule that decided each cell.
    Rule,
}

/// `--format`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FormatArg {
    Table,
    Json,
    Md,
    Csv,
}

impl From<FormatArg> for OutputFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Table => OutputFormat::Text,
            FormatArg::Json => OutputFormat::Json,
            FormatArg::Md => OutputFormat::Md,
            FormatArg::Csv => OutputFormat::Csv,
        }
    }
}

/// The most cells at once `--jobs` takes: each is a thread (with
/// --until-free, every blocked cell is one at once anyway).
const MAX_JOBS: usize = 4096;

/// `--jobs`: 1 to [`MAX_JOBS`].
fn parse_jobs(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_JOBS).contains(&n) => Ok(n),
        Ok(_) => Err(format!("must be between 1 and {MAX_JOBS}")),
        Err(e) => Err(e.to_string()),
    }
}

impl MatrixArgs {
    fn run_options(&self) -> RunOptions {
        RunOptions {
            jobs: self.jobs,
            until_free: self.until_free,
        }
    }

    fn plan(&self) -> crate::Result<Plan> {
        Ok(Plan {
            selection: Selection::parse(&self.factors)?,
            run: self.run_options(),
            isolation: if self.host_netns {
                IsolationChoice::Host
            } else {
                IsolationChoice::Auto
            },
            format: if self.json {
                OutputFormat::Json
            } else {
                self.format.into()
            },
            max_cells: self.max_cells,
            group_by_rule: self.group_by == Some(GroupBy::Rule),
        })
    }
}

/// Run the command; returns how it ended (disagreed: a cell differed).
pub fn run(a: MatrixArgs) -> anyhow::Result<Exit> {
    if a.internal_worker {
        return Ok(matrix::isolation::run_worker(a.run_options())?);
    }
    let text = if a.list_factors {
        matrix::list_factors()
    } else if let Some(id) = a.emit_cell {
        let sel = Selection::parse(&a.factors)?;
        matrix::emit_cell(&sel, id, a.max_cells)?
            .trim_end()
            .to_string()
    } else {
        let plan = a.plan()?;
        let run = matrix::execute(&plan, std::io::IsTerminal::is_terminal(&std::io::stderr()))?;
        if let Some(e) = run.refused_sysctl() {
            return Err(e.into());
        }
        let layout = matrix::TableLayout {
            color: crate::layout::color() && plan.format == OutputFormat::Text,
            width: crate::layout::width(),
            by_rule: plan.group_by_rule,
        };
        super::out(format!("{}\n", matrix::render(&run, plan.format, layout)?))?;
        return Ok(matrix::verdict(&run));
    };
    super::out(format!("{text}\n"))?;
    Ok(Exit::Done)
}

/// Before any thread starts: the unprivileged worker enters its user and
/// network namespace here (see `crate::matrix::before_worker_threads`).
pub fn before_threads(a: &MatrixArgs) {
    if a.internal_worker {
        matrix::before_worker_threads();
    }
}
