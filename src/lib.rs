//! twlab: reproduce, observe and explain TCP address and port reuse.
//!
//! # Layout
//! - [`socket`]: [`socket::SocketOpts`] and socket calls done as recorded steps.
//! - [`outcome`]: which step failed, with which errno ([`outcome::Outcome`]).
//! - [`outfile`]: files written whole through a temporary and a rename, never
//!   through a symbolic link.
//! - [`sys`]: the only platform-specific code (errno and Winsock names).
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
//! - [`peer`]: the `server` and `client` programs of the story.
//! - [`demo`]: the lesson in one command, and its table.
//! - [`matrix`]: every combination of factors, one namespace per cell.
//! - [`ss`]: `twlab ss`, the socket table with TIME_WAIT timers, summary and watch.
//! - [`json`]: the JSON contract: `schema_version`, one shape per concept;
//!   [`schema`]: every output's JSON Schema, generated from its types.
//! - [`layout`]: tables that fit the terminal's width (no word split, optional
//!   columns left out first, blocks when nothing fits) and when to use colour.
//! - [`signal`]: the signals that ask twlab to stop, and waits that notice them.
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
//!   drops) from its tracepoints, through a private tracefs instance;
//!   `twlab events`, and beside `trace` and the client's failures.
//! - [`error`]: the library's typed errors.
//!
//! The command line lives in the binary (`src/cli/`): it parses arguments
//! into the typed plans these modules take.

#![warn(missing_docs)]

pub mod check;
pub mod demo;
pub mod diag;
pub mod error;
#[cfg(target_os = "linux")]
pub mod events;
pub mod experiment;
pub mod json;
pub mod layout;
#[cfg(target_os = "linux")]
pub mod load;
pub mod matrix;
pub mod model;
pub mod netns;
pub mod netstat;
pub mod outcome;
pub mod outfile;
pub mod pairs;
pub mod peer;
pub mod scenario;
pub mod schema;
#[cfg(target_os = "linux")]
pub mod selfcheck;
pub mod signal;
pub mod socket;
pub mod ss;
pub mod sys;
pub mod sysctl;
pub mod text;
#[cfg(target_os = "linux")]
pub mod trace;
pub mod why;

pub use error::{Error, Result};

/// Catch SIGINT, SIGTERM, SIGHUP and SIGQUIT (see [`signal::install`]).
pub fn install_interrupt_handler() {
    signal::install();
}

/// True once a stop signal arrived (see [`signal::interrupted`]).
pub fn interrupted() -> bool {
    signal::interrupted()
}
