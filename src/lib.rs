//! twlab: reproduce, observe and explain TCP address and port reuse.
//!
//! # Layout
//! - [`socket`]: [`socket::SocketOpts`] and socket calls done as recorded steps.
//! - [`outcome`]: which step failed, with which errno ([`outcome::Outcome`]).
//! - [`sys`]: the only platform-specific code (errno and Winsock names).
//! - [`diag`]: the kernel's TCP socket table via sock_diag netlink, with
//!   TIME_WAIT timers; the one source of socket states for every command.
//! - [`sysctl`]: the namespace's net sysctls, read and written in one place.
//! - [`netns`]: fresh Linux network namespaces with their own sysctls.
//! - [`scenario`]: the classic two-connection experiment as data, and its runner.
//! - [`model`]: the Linux rule model (predicts and explains an outcome from the
//!   factors, the old 4-tuple's state and the sysctls), plus documented
//!   Windows and BSD/macOS behaviour.
//! - [`check`]: run an experiment and check it against the model.
//! - [`peer`]: the `server` and `client` programs of the story.
//! - [`demo`]: the lesson in one command.
//! - [`matrix`]: every combination of factors, one namespace per cell.
//! - [`ss`]: `twlab ss`, the socket table with TIME_WAIT timers, summary and watch.
//! - [`report`]: the demo's table.

pub mod check;
pub mod demo;
pub mod diag;
pub mod error;
pub mod load;
pub mod matrix;
pub mod model;
pub mod netns;
pub mod outcome;
pub mod peer;
pub mod report;
pub mod scenario;
pub mod socket;
pub mod ss;
pub mod sys;
pub mod sysctl;

pub use error::{Error, Result};

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Install a Ctrl-C handler that sets a flag every long loop checks, so an
/// interrupted run closes its sockets and exits with one line, not a trace.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
}

/// True once Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
