//! The command line: clap's raw arguments, one file per command, each
//! turning its arguments into the library's typed plan and calling it
//! (ripgrep's raw vs resolved arguments). Only this module sees clap, and
//! only with the `cli` feature; the binary is one call into it.

use crate::outcome::Exit;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod client;
mod demo;
#[cfg(target_os = "linux")]
mod events;
#[cfg(not(target_os = "linux"))]
mod linux_only;
mod load;
mod matrix;
mod pairs;
mod reuseport;
mod run;
mod selfcheck;
mod server;
mod shell;
mod socket_flags;
mod ss;
mod trace;
mod why;

/// Reproduce, observe and explain TCP address and port reuse: TIME_WAIT,
/// SO_REUSEADDR, SO_REUSEPORT, SO_LINGER, fixed client ports.
///
/// Start with `twlab demo`: it runs the classic experiment (a client with a
/// fixed local port reconnecting at once) on loopback and explains every
/// outcome with the rule that decided it.
#[derive(Parser)]
#[command(name = "twlab", version, propagate_version = true, after_help = WHERE_HELP)]
pub(crate) struct Cli {
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
    /// Capture every TCP segment of one experiment in its namespace: a
    /// ladder with each end's state and the moment that explains it.
    Trace(trace::TraceArgs),
    /// The kernel's own TCP events, live: state changes with the process
    /// that caused them, resets and drops with the kernel's reasons, each
    /// connection's life.
    #[cfg(target_os = "linux")]
    Events(events::EventsArgs),
    /// The kernel's own TCP events (Linux only).
    #[cfg(not(target_os = "linux"))]
    Events(linux_only::Args),
    /// Why does my bind()/connect() fail? Who holds the port, the kernel
    /// rule that decides, ranked fixes; --try asks the kernel itself.
    Why(why::WhyArgs),
    /// Two sockets on one port (dual-stack, wildcard vs specific,
    /// SO_REUSEADDR/SO_REUSEPORT, uid): bind()/listen() observed in fresh
    /// namespaces beside the model (exit 3 if any differ).
    Pairs(pairs::PairsArgs),
    /// Play scenario files (TOML: sockets and steps), each in a fresh
    /// namespace: observed outcome, model prediction and expectation per
    /// step (exit 3 if any disagree).
    Run(run::RunArgs),
    /// A SO_REUSEPORT group: connections per listener, and (--drain) the
    /// queued connections reset when one listener closes.
    Reuseport(reuseport::ReuseportArgs),
    /// A connection workload in its own namespace: when do ephemeral ports
    /// run out, at what rate, and what each mitigation buys (--compare).
    Load(load::LoadArgs),
    /// Check twlab's live diagnosis (`why`, the `server`/`client` failure
    /// diagnosis, `ss --summary`) against the kernel on random socket
    /// tables in fresh namespaces; disagreements become scenario files
    /// (exit 3 if any).
    Selfcheck(selfcheck::SelfcheckArgs),
    /// Shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(shell::CompletionsArgs),
    /// The man page of twlab or of one command (roff) on stdout.
    Man(shell::ManArgs),
}

impl Cmd {
    /// The command's name and, for a command that needs Linux, what for.
    /// Every new command is added here too (the match is exhaustive): a
    /// command that uses network namespaces, sock_diag or packet capture
    /// names what it needs, and on any other system it stops at once with
    /// one line (see [`refuse_unless_linux`]).
    fn linux_needs(&self) -> (&'static str, Option<&'static str>) {
        const NS_DIAG: &str = "network namespaces and sock_diag";
        match self {
            Cmd::Server(_) => ("server", None),
            Cmd::Client(_) => ("client", None),
            // demo and ss read the system's own TCP table off Linux
            // (GetExtendedTcpTable, the BSD pcblists: see crate::diag).
            Cmd::Demo(_) => ("demo", None),
            Cmd::Matrix(_) => ("matrix", Some(NS_DIAG)),
            Cmd::Ss(_) => ("ss", None),
            Cmd::Why(_) => ("why", Some("sock_diag")),
            Cmd::Trace(_) => ("trace", Some("network namespaces and packet capture")),
            Cmd::Events(_) => ("events", Some("tracefs and the kernel's tracepoints")),
            Cmd::Load(_) => ("load", Some(NS_DIAG)),
            Cmd::Pairs(_) => ("pairs", Some("network namespaces")),
            Cmd::Reuseport(_) => ("reuseport", Some("network namespaces")),
            Cmd::Run(_) => ("run", Some("network namespaces")),
            Cmd::Selfcheck(_) => ("selfcheck", Some(NS_DIAG)),
            Cmd::Completions(_) => ("completions", None),
            Cmd::Man(_) => ("man", None),
        }
    }
}

/// Off Linux, a command that needs Linux says so once, up front, and exits
/// 1, instead of failing in every cell or line: `None` if it may run here.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn refuse_unless_linux(cmd: &Cmd) -> Option<ExitCode> {
    let (name, Some(needs)) = cmd.linux_needs() else {
        return None;
    };
    eprintln!(
        "twlab: {name} needs Linux ({needs}); on {} use `twlab demo`, `twlab ss`, `twlab server` and `twlab client`",
        crate::sys::OS_NAME
    );
    Some(ExitCode::from(1))
}

/// `trace`, `load`, `pairs`, `run` and `reuseport` make network namespaces
/// of their own. An ordinary user gets them inside an unprivileged user
/// namespace (the uid mapped to root there), entered here while the
/// process has one thread, as `matrix`'s worker does.
/// `Err(exit code)` when that is impossible: one line says why.
/// `Ok(Some(note))` when it was entered: the note is said once the command
/// has run through (see [`main`]), not before, so that a bad argument or a
/// failure still gets its one line (a user saw the note and then the
/// error: two lines where the contract is one).
fn unprivileged_namespaces(cmd: &Cmd) -> Result<Option<String>, ExitCode> {
    let name = match cmd {
        Cmd::Trace(_) => "trace",
        Cmd::Load(_) => "load",
        Cmd::Pairs(_) => "pairs",
        Cmd::Run(_) => "run",
        Cmd::Reuseport(_) => "reuseport",
        _ => return Ok(None),
    };
    #[cfg(unix)]
    if nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    if !cfg!(target_os = "linux") {
        return Ok(None);
    }
    match crate::netns::enter_unprivileged() {
        Ok(()) => Ok(Some(format!(
            "twlab: note: not root: {name} ran in an unprivileged user namespace (your uid is root only there; sockets of other uids and the kernel's events are out of reach)"
        ))),
        Err(why) => {
            eprintln!(
                "twlab: error: {name} needs network namespaces: not root, and no user namespace either ({}); run as root",
                safe_line(&why.to_string())
            );
            Err(ExitCode::from(1))
        }
    }
}

/// `--reuseport` where the system has no SO_REUSEPORT (Windows): a usage
/// error (exit 2) that says so and names the options Windows has, instead
/// of a failed setsockopt() in every attempt.
pub(crate) fn refuse_reuseport_here(reuseport: bool) -> Result<(), crate::Error> {
    if reuseport && cfg!(windows) {
        return Err(crate::Error::Usage(
            "--reuseport: Windows has no SO_REUSEPORT; use --reuseaddr (on Windows it lets another socket bind a port in use) or --exclusiveaddruse".into(),
        ));
    }
    Ok(())
}

/// What runs on this system, under `twlab --help`.
#[cfg(target_os = "linux")]
const WHERE_HELP: &str = "Every command runs on Linux. On Windows, macOS and FreeBSD: demo, ss, server and client (read from that system's own TCP table, without timers).";
/// What runs on this system, under `twlab --help`.
#[cfg(not(target_os = "linux"))]
const WHERE_HELP: &str = "On this system `twlab demo`, `ss`, `server` and `client` run, reading its own TCP table (states and owners, no timers); matrix, trace, why, pairs, run, reuseport and load need Linux (network namespaces, sock_diag, packet capture).";

/// What `twlab` alone prints (on stderr, exit 2): where to start.
#[cfg(target_os = "linux")]
const SHORT_USAGE: &str = "\
twlab: reproduce, observe and explain TCP address and port reuse (TIME_WAIT, SO_REUSEADDR, ...)
usage: twlab <demo|why|server|client|ss|matrix|trace|events|load|run|pairs|reuseport|selfcheck> [OPTIONS]
start with `twlab demo`; all commands: `twlab --help`; one command: `twlab <command> --help`";

/// Off Linux the demo, ss and the story's two programs run (see
/// [`Cmd::linux_needs`]).
#[cfg(not(target_os = "linux"))]
const SHORT_USAGE: &str = "\
twlab: reproduce, observe and explain TCP address and port reuse (TIME_WAIT, SO_REUSEADDR, ...)
usage: twlab <demo|ss|server|client> [OPTIONS]
on this system `twlab demo`, `ss`, `server` and `client` run (the other commands need Linux);
start with `twlab demo`; all commands: `twlab --help`; one command: `twlab <command> --help`";

/// Longest error line printed, in characters (after escaping control
/// characters): an argument echoed by any command cannot flood the terminal.
const ERROR_MAX_CHARS: usize = 600;

/// One error message as printed: control characters escaped (they may
/// come from user input), every argument it echoes cut at
/// [`crate::text::ECHO_MAX_CHARS`] (also where clap or a parser quoted it
/// whole), and the whole cut at [`ERROR_MAX_CHARS`].
fn safe_line(msg: &str) -> String {
    safe_within(msg, ERROR_MAX_CHARS)
}

/// [`safe_line`] cut to `max` characters, the cut's note included.
fn safe_within(msg: &str, max: usize) -> String {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cut = crate::text::cut_echoes(msg, &args);
    if cut.chars().count() <= max {
        return cut;
    }
    // "… (123456 more characters)" takes at most 32.
    crate::text::shorten(&cut, max.saturating_sub(32)).into_owned()
}

/// `twlab: error: MSG` then `tail`, at most [`ERROR_MAX_CHARS`] long in
/// all: the message (made safe) is cut to leave room for the rest.
fn error_line(msg: &str, tail: &str) -> String {
    const PREFIX: &str = "twlab: error: ";
    let room = ERROR_MAX_CHARS.saturating_sub(PREFIX.len() + tail.chars().count());
    format!("{PREFIX}{}{tail}", safe_within(msg, room))
}

/// Parse the command line, run the command, map the result to an exit code.
pub fn main() -> ExitCode {
    if std::env::args_os().len() <= 1 {
        eprintln!("{SHORT_USAGE}");
        return ExitCode::from(2);
    }
    // `twlab --version` alone: what clap prints, without building the
    // parser of every command first.
    if let [_, flag] = std::env::args_os().collect::<Vec<_>>().as_slice()
        && (flag == "--version" || flag == "-V")
    {
        let _ = out(format!("twlab {}\n", env!("CARGO_PKG_VERSION")));
        return ExitCode::SUCCESS;
    }
    // Before anything runs: SIGINT, SIGTERM, SIGHUP and SIGQUIT only set a
    // flag from now on. (No thread is started, so the unprivileged matrix
    // worker may still unshare its user namespace below.)
    crate::signal::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    #[cfg(not(target_os = "linux"))]
    if let Some(code) = refuse_unless_linux(&cli.cmd) {
        return code;
    }
    let unprivileged_note = match unprivileged_namespaces(&cli.cmd) {
        Ok(note) => note,
        Err(code) => return code,
    };
    // Said after a run that went through, never beside an error (one
    // line, whatever the error) or a stop.
    let say_note = || {
        if let Some(n) = &unprivileged_note {
            eprintln!("{n}");
        }
    };
    // The unprivileged matrix worker must unshare its user namespace while
    // the process is single-threaded.
    if let Cmd::Matrix(a) = &cli.cmd {
        matrix::before_threads(a);
    }
    let r: anyhow::Result<Exit> = match cli.cmd {
        Cmd::Demo(a) => demo::run(a),
        Cmd::Server(a) => server::run(a),
        Cmd::Client(a) => client::run(a),
        Cmd::Ss(a) => ss::run(a),
        Cmd::Matrix(a) => matrix::run(a),
        Cmd::Trace(a) => trace::run(a),
        #[cfg(target_os = "linux")]
        Cmd::Events(a) => events::run(a),
        #[cfg(not(target_os = "linux"))]
        Cmd::Events(a) => linux_only::run(a),
        Cmd::Why(a) => why::run(a),
        Cmd::Pairs(a) => pairs::run_cmd(a),
        Cmd::Run(a) => run::run(a),
        Cmd::Reuseport(a) => reuseport::run(a),
        Cmd::Load(a) => load::run(a),
        Cmd::Selfcheck(a) => selfcheck::run(a),
        Cmd::Completions(a) => shell::completions(a),
        Cmd::Man(a) => shell::man(a),
    };
    // A stop signal decides the exit code whatever the command returned
    // (it may have stopped early and cleanly): 128 + its number, as a
    // shell reports a process the signal killed.
    if let Some(sig) = crate::signal::received() {
        eprintln!("twlab: interrupted by {sig}");
        return ExitCode::from(sig.exit_code());
    }
    match r {
        Ok(exit) => {
            say_note();
            ExitCode::from(exit.exit_code())
        }
        // `twlab … | head`: the reader went away. Not an error, for every
        // command (ss already says so itself).
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line: the error and its causes, never a backtrace.
            let mut line = format!("{e}");
            for cause in e.chain().skip(1) {
                line.push_str(&format!(": {cause}"));
            }
            // A bad argument found after parsing exits 2 like clap's own.
            let code = match e.downcast_ref::<crate::Error>() {
                Some(crate::Error::Interrupted) => 130,
                Some(crate::Error::Usage(_) | crate::Error::BadAddress { .. }) => 2,
                _ => 1,
            };
            eprintln!("{}", error_line(&line, ""));
            ExitCode::from(code)
        }
    }
}

/// Write `text` to stdout and flush. Unlike `print!`, which panics on a
/// closed stdout (Rust ignores SIGPIPE), an error comes back: EPIPE is
/// then a quiet exit 0 in `main` (`twlab … | head`).
pub(crate) fn out(text: impl AsRef<str>) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_ref().as_bytes())?;
    o.flush()
}

/// Help and version go to stdout with exit 0; usage errors are one line
/// on stderr with exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        _ => {}
    }
    // Usage errors in one line too: clap's first line names the problem;
    // --help has the rest.
    let mut text = e.to_string();
    // A value with a newline in it would split clap's message over lines:
    // escaped first, as every echo is.
    for (_, v) in e.context() {
        if let clap::error::ContextValue::String(v) = v
            && v.chars().any(char::is_control)
        {
            text = text.replace(v.as_str(), &crate::text::escape_for_terminal(v));
        }
    }
    let what: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let what = what.join(" ");
    let what = what.trim_start_matches("error: ");
    let what = value_once(&e, what);
    let what = what.as_str();
    let hint = match (e.kind(), e.get(clap::error::ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(clap::error::ContextValue::String(arg))) => ss_habit(arg),
        _ => None,
    };
    match hint {
        Some(h) => eprintln!("{}", error_line(what, &format!("; {h}"))),
        None => eprintln!(
            "{}",
            error_line(what, " (see `twlab --help` or `twlab <command> --help`)")
        ),
    }
    ExitCode::from(2)
}

/// clap's "invalid value 'V' for '--flag <X>': MESSAGE" where the value
/// parser's MESSAGE quotes V itself: the value once, the flag once
/// ("--flag: MESSAGE", or MESSAGE alone when it starts with the flag).
fn value_once(e: &clap::Error, what: &str) -> String {
    use clap::error::{ContextKind, ContextValue};
    let (Some(ContextValue::String(v)), Some(ContextValue::String(arg))) = (
        e.get(ContextKind::InvalidValue),
        e.get(ContextKind::InvalidArg),
    ) else {
        return what.to_string();
    };
    // (clap may have dropped escape sequences from the value it quotes:
    // its part is found by what comes after the value.)
    let after = format!("' for '{arg}': ");
    let Some(msg) = what
        .strip_prefix("invalid value '")
        .and_then(|w| w.find(&after).map(|i| &w[i + after.len()..]))
    else {
        return what.to_string();
    };
    if !msg.contains(&format!("'{v}'")) && !msg.contains(&format!("'{}'", crate::text::echo(v))) {
        return what.to_string();
    }
    let flag = arg.split(' ').next().unwrap_or(arg);
    if msg.starts_with(flag) {
        msg.to_string()
    } else {
        format!("{flag}: {msg}")
    }
}

/// iproute2's `ss` flags people type from habit (`ss -tan`), and what
/// twlab spells instead. Clap names only the first unknown letter of a
/// group: the group is found again in the command line.
fn ss_habit(arg: &str) -> Option<String> {
    let letter = arg
        .strip_prefix('-')
        .filter(|a| !a.starts_with('-'))?
        .chars()
        .next()?;
    let group = std::env::args()
        .find(|a| a.len() > 1 && a.starts_with(&format!("-{letter}")) && !a.starts_with("--"))
        .unwrap_or_else(|| arg.to_string());
    let mut advice: Vec<&str> = Vec::new();
    for c in group.chars().skip(1) {
        let instead = match c {
            't' => "TCP is all twlab ss shows (leave -t out)",
            'n' => "it never resolves names (leave -n out)",
            'a' => "every state is its default (-a not needed)",
            'l' => "listeners only: --state listening",
            'o' => "timers are always shown (leave -o out)",
            'p' => "processes: --processes",
            's' => "`ss -s`: twlab ss --summary",
            '4' => "IPv4 only: --family 4",
            '6' => "IPv6 only: --family 6",
            _ => return None,
        };
        if !advice.contains(&instead) {
            advice.push(instead);
        }
    }
    (!advice.is_empty()).then(|| {
        format!(
            "'{}' is iproute2's ss spelling; in twlab ss: {} (see `twlab ss --help`)",
            crate::text::echo(&group),
            advice.join("; ")
        )
    })
}
