//! `twlab run FILE…`: play scenario files, each in its own namespace; exit
//! 3 if any step's observation, model prediction or expectation differ.
//! A script file plays its steps; an experiment file (`[experiment]`, the
//! type of `demo` cases and `matrix` cells) runs through the model check.

use crate::check::replay::{ExperimentReport, replay};
use crate::check::{RunLine, RunReport, RunSummary};
use crate::outcome::Exit;
use crate::scenario::file::{ExperimentFile, Scenario, Script, load};
use crate::scenario::play::{ScriptReport, play};
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `twlab run`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  twlab run examples/scenarios/*.toml
  twlab run examples/scenarios/demo/*.toml
  twlab run --json examples/scenarios/dual-stack-any.toml
  twlab matrix -f next=rebind -f close=client --emit-cell 0 > cell.toml && twlab run cell.toml")]
pub struct RunArgs {
    /// Scenario files (TOML): scripts ([[socket]], [[step]]) or experiments
    /// ([experiment], [expect]).
    #[arg(required = true, value_name = "FILE")]
    ///
    /// Limits: a file is a regular file (not a FIFO or a device) of at
    /// most 1 MiB; a script has at most 256 sockets (accepted ones
    /// included) and 1024 steps, each sleep or wait-for-state timeout at
    /// most 60000 ms and all of them together at most 600000 ms; an
    /// experiment waits (after-ms, until_free) at most 600 s. Past a
    /// limit: one line naming the file and line, exit 2.
    pub files: Vec<PathBuf>,
    /// One JSON object per file.
    #[arg(long)]
    pub json: bool,
}

/// Load every file first (a bad one stops here, in one line: exit 2, or
/// 1 when the system could not read it), then play.
pub fn run(a: RunArgs) -> Result<Exit> {
    let scenarios = a
        .files
        .iter()
        .map(|f| {
            load(f).map_err(|e| match e.unreadable {
                true => anyhow::Error::new(e),
                false => crate::Error::Usage(e.to_string()).into(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out = std::io::stdout().lock();
    let mut bad = 0;
    let mut steps = 0;
    // Disagreements on a kernel older than the file's min_kernel.
    let mut older = 0;
    let running = crate::model::kernel::KernelVersion::running();
    for s in &scenarios {
        let (report, n) = match s {
            Scenario::Script(script) => {
                let r = play(script)?;
                let mut n = r.disagreements();
                steps += r.steps.len();
                if !a.json {
                    print_script(&mut out, script, &r)?;
                }
                if let (Some(min), Some(v)) = (script.min_kernel, running)
                    && v < min
                    && n > 0
                {
                    // The file's expectations are for min_kernel and
                    // later; the model is for this kernel, so a step
                    // the model gets wrong still counts.
                    let model_wrong = r.model_mismatches();
                    let apart = n - model_wrong;
                    if !a.json && apart > 0 {
                        writeln!(
                            out,
                            "   note: Linux {v} is older than this scenario's min_kernel {min}: {apart} step(s) differ from its expectations only (the model predicted this kernel's outcome), counted apart\n"
                        )?;
                    }
                    older += apart;
                    n = model_wrong;
                }
                (RunReport::Script(r), n)
            }
            Scenario::Experiment(f) => {
                let r = replay(f)?;
                let n = r.disagreements();
                steps += 1;
                if !a.json {
                    print_experiment(&mut out, f, &r)?;
                }
                (RunReport::Experiment(Box::new(r)), n)
            }
        };
        bad += n;
        if a.json {
            let v = RunLine {
                file: s.file(),
                report,
            };
            writeln!(out, "{}", crate::json::compact_line("scenario", &v)?)?;
        }
    }
    if a.json {
        // stdout holds only JSON: the totals are one more line.
        let v = RunSummary {
            disagreements: bad,
            older_kernel_differences: older,
            scenarios: scenarios.len(),
            steps,
        };
        writeln!(out, "{}", crate::json::compact_line("summary", &v)?)?;
        return Ok(Exit::disagreed_if(bad > 0));
    }
    writeln!(out, "{steps} step(s) played")?;
    if older > 0 {
        writeln!(
            out,
            "{older} step(s) differ on this kernel, older than their scenario's min_kernel, from the expectations only: the model predicted them (not counted below)"
        )?;
    }
    writeln!(
        out,
        "{} scenario(s), {bad} step(s) where observation, model and expectation disagree",
        scenarios.len()
    )?;
    Ok(Exit::disagreed_if(bad > 0))
}

/// Text from a scenario file (its description, socket names, states,
/// expectations) or its path, as printed: control characters escaped as
/// in every other echo (`crate::text`), so a file cannot drive the
/// terminal.
fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    crate::text::escape_for_terminal(s)
}

/// `FILE: description`, both made safe to print.
fn title(out: &mut impl Write, file: &std::path::Path, description: Option<&str>) -> Result<()> {
    writeln!(
        out,
        "{}: {}",
        safe(&file.display().to_string()),
        safe(description.unwrap_or(""))
    )?;
    Ok(())
}

fn print_script(out: &mut impl Write, s: &Script, r: &ScriptReport) -> Result<()> {
    title(out, &s.file, s.description.as_deref())?;
    writeln!(
        out,
        "   line  {:<40} {:<13} {:<13} expected",
        "step", "observed", "model"
    )?;
    for st in &r.steps {
        let model = st.model.as_ref().map(|m| m.outcome.word()).unwrap_or("-");
        writeln!(
            out,
            "{} {:>4}  {:<40} {:<13} {:<13} {}",
            mark(st.agrees()),
            st.line,
            safe(&st.what),
            st.observed,
            model,
            safe(st.expect.as_deref().unwrap_or("-"))
        )?;
        if let Some(crate::scenario::play::ModelSays { why, .. }) = &st.model {
            match st.rule {
                Some(r) => writeln!(out, "         model ({r}): {}", safe(why))?,
                None => writeln!(out, "         model: {}", safe(why))?,
            }
        }
    }
    writeln!(out)?;
    Ok(())
}

fn mark(agrees: bool) -> &'static str {
    if agrees { "  " } else { "!!" }
}

/// The experiment, the kernel's outcome beside the model's, the old
/// 4-tuple's state, the rule, its explanation and fix, and the expectation.
fn print_experiment(out: &mut impl Write, f: &ExperimentFile, r: &ExperimentReport) -> Result<()> {
    let c = &r.checked;
    let x = &c.report.experiment;
    title(out, &f.file, f.description.as_deref())?;
    writeln!(
        out,
        "   experiment: {} client-port={} close={} when={} next={}; options client {} / listener {} / new {}",
        x.family.name(),
        x.client_port.name(),
        x.close,
        x.when.name(),
        x.next.name(),
        x.client.label(),
        x.listener.label(),
        x.new_opts.label()
    )?;
    writeln!(out, "   observed:   {}", c.report.outcome)?;
    writeln!(
        out,
        "{} model:      {} (rule {}{})",
        mark(c.agrees),
        c.prediction.outcome,
        c.prediction.rule,
        if c.runs > 1 {
            format!(
                "; {} runs, the old connection changed state during one",
                c.runs
            )
        } else {
            String::new()
        }
    )?;
    if let Some(e) = &r.expect {
        let rule = e.rule.map(|r| format!(" (rule {r})")).unwrap_or_default();
        writeln!(
            out,
            "{} expected:   {}{rule}",
            mark(r.expect_agrees),
            safe(e.outcome.as_deref().unwrap_or("any outcome"))
        )?;
    }
    writeln!(out, "   old 4-tuple: {}", c.view.describe())?;
    writeln!(out, "   why: {}", c.prediction.explanation)?;
    if let Some(fix) = &c.prediction.fix {
        writeln!(out, "   fix: {fix}")?;
    }
    writeln!(out)?;
    Ok(())
}
