//! The `twlab` command: parse arguments, call the library, turn errors into
//! one line on stderr and a non-zero exit code. No logic lives here.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Reproduce, observe and explain TCP address and port reuse: TIME_WAIT,
/// SO_REUSEADDR, SO_REUSEPORT, SO_LINGER, fixed client ports.
///
/// Start with `twlab demo`: it runs the classic experiment (a client with a
/// fixed local port reconnecting at once) on loopback and explains every
/// outcome with the kernel rule that decided it.
#[derive(Parser)]
#[command(name = "twlab", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    // Subcommands are added here, one line each; their arguments and logic
    // live in the library.
    /// Show TCP sockets with TIME_WAIT timers, like `ss -tan`; --summary
    /// explains where the ephemeral ports went; --watch shows them live.
    Ss(twlab::ss::SsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r: anyhow::Result<u8> = match cli.cmd {
        Cmd::Ss(args) => twlab::ss::run(args).map_err(Into::into),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the error and its causes, never a backtrace.
            let mut line = format!("twlab: error: {e}");
            for cause in e.chain().skip(1) {
                line.push_str(&format!(": {cause}"));
            }
            eprintln!("{line}");
            let interrupted = e
                .downcast_ref::<twlab::Error>()
                .is_some_and(|e| matches!(e, twlab::Error::Interrupted));
            ExitCode::from(if interrupted { 130 } else { 1 })
        }
    }
}
