//! `twlab run FILE…`: play scenario files, each in its own namespace; exit
//! 3 if any step's observation, model prediction or expectation differ.

use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;
use twlab::scenario::file::load;
use twlab::scenario::play::play;

/// Arguments of `twlab run`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  twlab run examples/scenarios/*.toml
  twlab run --json examples/scenarios/dual-stack-any.toml")]
pub struct RunArgs {
    /// Scenario files (TOML).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// One JSON object per file.
    #[arg(long)]
    pub json: bool,
}

/// Load every file first (a bad one stops here, in one line), then play.
pub fn run(a: RunArgs) -> Result<u8> {
    let scripts = a
        .files
        .iter()
        .map(|f| load(f))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut out = std::io::stdout().lock();
    let mut bad = 0;
    for s in &scripts {
        let r = play(s)?;
        bad += r.disagreements();
        if a.json {
            let v = serde_json::json!({ "file": s.file, "report": r });
            writeln!(out, "{v}")?;
            continue;
        }
        writeln!(
            out,
            "{}: {}",
            s.file.display(),
            s.description.as_deref().unwrap_or("")
        )?;
        writeln!(
            out,
            "   line  {:<40} {:<13} {:<13} expected",
            "step", "observed", "model"
        )?;
        for st in &r.steps {
            let model = st.model.as_ref().map(|m| m.0.as_str()).unwrap_or("-");
            writeln!(
                out,
                "{} {:>4}  {:<40} {:<13} {:<13} {}",
                if st.agrees() { "  " } else { "!!" },
                st.line,
                st.what,
                st.observed,
                model,
                st.expect.as_deref().unwrap_or("-")
            )?;
            if let Some((_, why)) = &st.model {
                writeln!(out, "         model: {why}")?;
            }
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "{} scenario(s), {bad} step(s) where observation, model and expectation disagree",
        scripts.len()
    )?;
    Ok(if bad > 0 { 3 } else { 0 })
}
