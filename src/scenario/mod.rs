//! The runner that performs the classic experiment (plain data in
//! [`crate::experiment`]) on real sockets, synchronising on kernel socket
//! states (read through [`diag`]).
//!
//! An [`Experiment`] is one connection that is opened and closed, followed by
//! one *next step* whose outcome is the point of the experiment:
//!
//! 1. a listener on the server port, a client socket (fixed port, ephemeral
//!    port, or bind(addr, 0) with IP_BIND_ADDRESS_NO_PORT), connect, accept;
//! 2. one side closes first ([`Close`]), with FIN or with RST (SO_LINGER 0);
//!    twlab waits until the kernel shows that close took effect;
//! 3. [`When`]: at once (the other side has *not* closed yet), or after the
//!    other side has closed too and the kernel has settled (TIME_WAIT on the
//!    side that closed first), optionally plus a wait;
//! 4. the [`NextStep`]: reconnect from the same local port, a new bind of that
//!    port, or a restart of the server's listener; each socket call recorded;
//! 5. the kernel's view of the old 4-tuple, from both ends, right before the
//!    next step and again at a failure.
//!
//! Being plain serde data, an experiment is also a scenario file's
//! `[experiment]` table ([`mod@file`]): `demo` cases are such files
//! (`examples/scenarios/demo/`, embedded), `matrix` cells are experiments
//! built in code that `twlab matrix --emit-cell N` writes out as one, and
//! `twlab run` replays either through `check` (`check::replay`).
//!
//! [`diag`]: crate::diag
//! [`Close`]: crate::experiment::Close
//! [`When`]: crate::experiment::When
//! [`NextStep`]: crate::experiment::NextStep

pub mod file;
pub mod play;
pub mod predict;
mod runner;
pub mod view;

pub use runner::{free_port, run, with_step_hook};

use crate::diag::TupleView;
use crate::experiment::Experiment;
use crate::outcome::{Outcome, Step, StepResult};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// When a step of the retry loop first succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UntilFree {
    /// Milliseconds from the first failure to the first success, or `None`
    /// if it never succeeded within the limit.
    pub freed_after_ms: Option<u64>,
    /// Retries made after the first failure.
    pub attempts: u32,
    /// The last failure seen before success (or at the limit).
    pub last: Outcome,
}

/// A step that was performed, with its result, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepRecord {
    /// "client", "server", "client#2"...
    pub actor: String,
    /// The socket call.
    pub step: Step,
    /// What it returned.
    #[serde(flatten)]
    pub result: StepResult,
    /// Microseconds since the experiment started.
    pub at_us: u64,
    /// What a step that returns nothing did ("FIN", "RST", "after EOF").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What running an [`Experiment`] showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Report {
    /// The experiment that ran.
    pub experiment: Experiment,
    /// The first connection's client end.
    pub client_addr: SocketAddr,
    /// The first connection's server end.
    pub server_addr: SocketAddr,
    /// The old 4-tuple, from both ends, right before the next step.
    pub before: TupleView,
    /// The next step's outcome.
    pub outcome: Outcome,
    /// The old 4-tuple at the moment the next step failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_failure: Option<TupleView>,
    /// For reconnects: the local address the new connection got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_local: Option<SocketAddr>,
    /// With `Experiment::until_free`: when the failed step first succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_free: Option<UntilFree>,
    /// Every socket call, in order.
    pub steps: Vec<StepRecord>,
    /// How long the run took, in microseconds.
    pub elapsed_us: u64,
}
