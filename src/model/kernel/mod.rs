//! The kernel-rule layer: every Linux decision twlab predicts, written
//! once, as a pure function over small fact structs, each citing the kernel
//! function it follows. `matrix`, `pairs`, `run`, `why`, the `server` /
//! `client` failure diagnosis, `ss --summary` and `load` gather the facts
//! (from an experiment's factors, a scenario's sockets, or a sock_diag dump)
//! and word the answer; none of them keeps a rule of its own.
//!
//! - [`addr`]: which addresses of its port a socket holds (wildcards,
//!   dual-stack, V6ONLY, v4-mapped, `LOOPBACK4_IPV6`), and whether two meet.
//! - [`bind`]: bind() and listen(): `inet_bind_conflict()` (SO_REUSEADDR,
//!   SO_REUSEPORT, uid, TIME_WAIT), the privileged-port check
//!   (`ip_unprivileged_port_start`), the v4-mapped-on-V6ONLY check, and
//!   bind(ip, 0) (`inet_csk_find_open_port()` with `ip_autobind_reuse`).
//! - [`connect`]: connect(): `tcp_twsk_unique()` (tw_reuse 0/1/2,
//!   timestamps, loopback, `tcp_tw_reuse_delay`, the FIN_WAIT2 substate),
//!   `__inet_check_established()` for one 4-tuple, and the per-port verdict
//!   of `__inet_hash_connect()`'s scan (reserved ports, bind()-owned
//!   buckets).
//!
//! - [`version`]: the kernel version a rule is for ([`KernelVersion`]) and
//!   the facts that differ between the kernels people run.
//!
//! Every verdict carries a [`RuleId`](super::RuleId), the one identifier
//! all commands print, and the facts it used ([`Fact`]), which the JSON of
//! `why`, `client`, `server` and `ss --summary` carries.

pub mod addr;
pub mod bind;
pub mod connect;
#[cfg(test)]
mod tests;
pub mod version;

use serde::Serialize;
pub use version::KernelVersion;

/// One fact a rule used, for the JSON of a diagnosis: `tw_reuse = 2`,
/// `holder_state = TIME_WAIT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Fact {
    /// The fact's name, snake_case.
    pub name: &'static str,
    /// Its value as text.
    pub value: String,
}

impl Fact {
    /// A fact from anything printable.
    pub fn new(name: &'static str, value: impl std::fmt::Display) -> Self {
        Fact {
            name,
            value: value.to_string(),
        }
    }
}
