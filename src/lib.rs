//! twlab: reproduce, observe and explain TCP address and port reuse.
//!
//! # Layout
//! - [`socket`]: [`socket::SocketOpts`] and socket calls done as recorded steps.
//! - [`outcome`]: which step failed, with which errno ([`outcome::Outcome`]).
//! - `outfile`: files written whole through a temporary and a rename, never
//!   through a symbolic link.
//! - `sys`: the only platform-specific code (errno and Winsock names).
//! - [`diag`]: the kernel's TCP socket table via sock_diag netlink, with
//!   TIME_WAIT timers (on Windows, macOS and FreeBSD: the system's own
//!   table, states without timers); the one source of socket states for
//!   every command.
//! - [`sysctl`]: the namespace's net sysctls, read and written in one place.
//! - [`netstat`]: the namespace's TCP counters and TIME_WAIT count.
//! - [`netns`]: fresh Linux network namespaces with their own sysctls.
//! - [`experiment`]: the classic two-connection experiment as pure data.
//! - [`scenario`]: the experiment's runner, scenario files and scripts.
//! - [`model`]: the Linux rule model (predicts and explains an outcome from the
//!   factors, the old 4-tuple's state and the sysctls), plus documented
//!   Windows and BSD/macOS behaviour.
//! - [`check`]: run an experiment and check it against the model.
//! - `peer`: the `server` and `client` programs of the story.
//! - [`demo`]: the lesson in one command, and its table.
//! - [`matrix`]: every combination of factors, one namespace per cell.
//! - `ss`: `twlab ss`, the socket table with TIME_WAIT timers, summary and watch.
//! - [`json`]: the JSON contract: `schema_version`, one shape per concept;
//!   [`schema`]: every output's JSON Schema, generated from its types.
//! - `layout`: tables that fit the terminal's width (no word split, optional
//!   columns left out first, blocks when nothing fits) and when to use colour.
//! - `signal`: the signals that ask twlab to stop, and waits that notice them.
//! - [`text`]: user input and process names made safe to print on a terminal.
//! - [`why`]: `twlab why`, who holds a port and which kernel rule refuses a bind() or connect().
//! - [`pairs`]: `twlab pairs` and `twlab reuseport`: two sockets on one port,
//!   and SO_REUSEPORT groups.
//! - `load` (Linux): `twlab load`, a connection workload that finds when ephemeral
//!   ports run out and what each mitigation buys.
//! - `trace` (Linux): `twlab trace`, every segment of one experiment as a
//!   ladder and a pcap, with the moment that explains it.
//! - `selfcheck` (Linux): `twlab selfcheck`, the live diagnosis checked against
//!   the kernel on random socket tables in fresh namespaces.
//! - `events` (Linux): the kernel's own TCP events (state changes, resets,
//!   drops) from its tracepoints, through BPF programs twlab assembles
//!   from the tracepoints' formats, or a private tracefs instance;
//!   `twlab events`, and beside `trace` and the client's failures.
//! - [`error`]: the library's typed errors.
//!
//! # As a library
//! Public are the kernel's state and settings ([`diag`], [`sysctl`],
//! [`socket`], [`netns`], [`netstat`], `events`), the experiment and its
//! rules ([`experiment`], [`model`], [`why`]), and runners that return
//! reports ([`scenario`], [`check`], [`demo`], [`matrix`], [`pairs`],
//! `load`, `trace`, `selfcheck`), whose plans are `#[non_exhaustive]` and
//! built with their `new`. `examples/` has three short programs: predict a
//! reconnect, list who holds a port, play a scenario file.
//!
//! The command line (`src/cli/`) is private: it parses arguments into the
//! typed plans these modules take, prints their reports and maps how each
//! command ended ([`outcome::Exit`]) to an exit code, in one place. The
//! commands that stream (`server`, `client`, `ss`, `events`) write to the
//! writer the command line gives them as they run; they and the printing
//! helpers are private to the crate too. The binary is one call,
//! [`cli_main`].

#![warn(missing_docs)]
// Without the command line (`--no-default-features`), the commands that
// only it calls (the server and client loops, `ss`, the events' live
// view) are still built, as the JSON Schemas name their outputs, but
// nothing calls them.
#![cfg_attr(not(feature = "cli"), allow(dead_code, unused_imports))]

pub mod check;
#[cfg(feature = "cli")]
mod cli;
pub mod demo;
pub mod diag;
pub mod error;
#[cfg(target_os = "linux")]
pub mod events;
pub mod experiment;
pub mod json;
pub(crate) mod layout;
#[cfg(target_os = "linux")]
pub mod load;
pub mod matrix;
pub mod model;
pub mod netns;
pub mod netstat;
pub mod outcome;
// Its writers (pcap, plots, selfcheck's files) are Linux commands.
#[cfg(target_os = "linux")]
pub(crate) mod outfile;
pub mod pairs;
pub(crate) mod peer;
pub mod scenario;
pub mod schema;
#[cfg(target_os = "linux")]
pub mod selfcheck;
pub(crate) mod signal;
pub mod socket;
pub(crate) mod ss;
pub(crate) mod sys;
pub mod sysctl;
pub mod text;
#[cfg(target_os = "linux")]
pub mod trace;
pub mod why;

pub use error::{Error, Result};

/// The `twlab` command line: parse the arguments, run the command, print
/// its report, map it to an exit code. The binary (`src/main.rs`) is this
/// call alone; the commands it reaches are private to the crate.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub fn cli_main() -> std::process::ExitCode {
    cli::main()
}

/// Catch SIGINT, SIGTERM, SIGHUP and SIGQUIT (the `signal` module: the flag and the waits that notice it).
pub fn install_interrupt_handler() {
    signal::install();
}

/// True once a stop signal arrived (the `signal` module).
pub fn interrupted() -> bool {
    signal::interrupted()
}
