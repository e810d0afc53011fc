//! The command line: clap's raw arguments, one file per command, each
//! turning its arguments into the library's typed plan and calling it
//! (ripgrep's raw vs resolved arguments). Only the binary sees clap.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod client;
mod demo;
mod load;
mod matrix;
mod server;
mod ss;

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
    /// The lesson in one command: the fixed-client-port experiment in five
    /// variants on loopback, each outcome explained by the kernel rule.
    Demo(demo::DemoArgs),
    /// The story's server: listen, accept, close first or after the peer.
    Server(server::ServerArgs),
    /// The story's client: bind a fixed port, connect, close, loop; every
    /// failure shown with the kernel state of the 4-tuple that caused it.
    Client(client::ClientArgs),
    /// Show TCP sockets with TIME_WAIT timers, like `ss -tan`; --summary
    /// explains where the ephemeral ports went; --watch shows them live.
    Ss(ss::SsArgs),
    /// Factors × values → cells, each in a fresh network namespace: the
    /// observed outcome beside the rule model's prediction (exit 3 if any
    /// differ), with Windows and BSD/macOS expectations.
    Matrix(matrix::MatrixArgs),
    /// A connection workload in its own namespace: when do ephemeral ports
    /// run out, at what rate, and what each mitigation buys (--compare).
    Load(load::LoadArgs),
}

/// Parse the command line, run the command, map the result to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || matches!(
                    e.kind(),
                    ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                )
            {
                let _ = e.print();
                return ExitCode::from(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            // Usage errors in one line too: clap's first line names the
            // problem; --help has the rest.
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let what = what.join(" ");
            let what = what.trim_start_matches("error: ");
            eprintln!("twlab: error: {what} (see `twlab --help` or `twlab <command> --help`)");
            return ExitCode::from(2);
        }
    };
    // The unprivileged matrix worker must unshare its user namespace while
    // the process is single-threaded, before the Ctrl-C handler's thread.
    if let Cmd::Matrix(a) = &cli.cmd {
        matrix::before_threads(a);
    }
    twlab::install_interrupt_handler();
    let r: anyhow::Result<u8> = match cli.cmd {
        Cmd::Demo(a) => demo::run(a),
        Cmd::Server(a) => server::run(a),
        Cmd::Client(a) => client::run(a),
        Cmd::Ss(a) => ss::run(a),
        Cmd::Matrix(a) => matrix::run(a),
        Cmd::Load(a) => load::run(a),
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
