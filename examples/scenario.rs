//! `cargo run --example scenario -- examples/scenarios/story-client.toml`
//! (as root, or as a user where unprivileged user namespaces are allowed):
//! a scenario file played from the library — each step on real sockets in
//! a fresh network namespace, beside the rule model's prediction. What
//! `twlab run` does, as plain data.

use std::path::PathBuf;
use std::process::ExitCode;
use twlab::scenario::file::{Scenario, load};
use twlab::scenario::play::play;

fn main() -> ExitCode {
    let Some(file) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: scenario FILE.toml (e.g. examples/scenarios/story-client.toml)");
        return ExitCode::from(2);
    };
    let script = match load(&file) {
        Ok(Scenario::Script(s)) => s,
        Ok(Scenario::Experiment(_)) => {
            eprintln!(
                "scenario: {} is an experiment file; `twlab run` replays those",
                file.display()
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("scenario: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match play(&script) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scenario: {e}");
            return ExitCode::FAILURE;
        }
    };
    for st in &report.steps {
        let model = st.model.as_ref().map_or("-", |m| m.outcome.word());
        let mark = if st.agrees() { " " } else { "≠" };
        // The step's text comes from the file: escaped, as twlab run does.
        println!(
            "{mark} line {:>3}  {:<40} kernel: {:<14} model: {model}",
            st.line,
            twlab::text::escape_for_terminal(&st.what),
            st.observed
        );
    }
    let bad = report.disagreements();
    println!(
        "{} step(s), {bad} where kernel, model and expectation disagree",
        report.steps.len()
    );
    ExitCode::from(if bad > 0 { 3 } else { 0 })
}
