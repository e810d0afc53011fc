//! `twlab why`: who holds my port, which kernel rule refuses my bind() or
//! connect(), and what will help — on the live socket table.
//!
//! The rule part is pure: [`diagnose_bind`], [`diagnose_connect`] and
//! [`diagnose_port`] take a question, a [`Table`] (the sockets, however they
//! were obtained) and the namespace's [`NetSysctls`], and return a
//! [`Diagnosis`]. The live part ([`live`]) reads the table through sock_diag
//! (every state: listeners, bound-only sockets via `idiag_states` bit 13,
//! TIME_WAIT with its timer), the owners from /proc, and with `--try`
//! performs the bind() itself (never listen(), and connect() only to
//! loopback) to put the kernel's answer beside the prediction. [`render`]
//! prints a diagnosis in a long form (`twlab why`) or a short one (for
//! `server`/`client` to print beside the errno they just got).
//!
//! # Layout
//! - `table`: the sockets, their roles, address overlap.
//! - `bind`: the bind bucket rule (reusing [`crate::model`]'s reuse rule).
//! - `connect`: the 4-tuple rule and the ephemeral scan toward one
//!   destination, counted by [`crate::model::range`]'s rules, with its
//!   holders.
//! - `fix`: fixes and their costs.
//! - `range`: what `ss --summary` says of the model's accounting of the
//!   whole range (warnings, notes, fixes).
//! - `documented`: Windows and BSD/macOS.
//! - `diagnosis`: the answer's types.
//! - [`live`], reading the namespace and `--try`.
//! - [`render`], the text forms.

mod bind;
mod connect;
mod diagnosis;
mod documented;
mod fix;
pub mod live;
mod range;
pub mod render;
mod table;
#[cfg(test)]
mod tests;

/// The range accounting and the TIME_WAIT reuse rule are the model's; the
/// diagnosis words them.
pub use crate::model::{
    range::{PeerCapacity, RangeIndex, RangeUse, range_use},
    tuple::time_wait_reusable,
};
pub use bind::{Asker, BindQuestion, REUSE_VARIANTS, blocking, diagnose_bind, expect_of, shares};
pub use connect::{ConnectQuestion, diagnose_connect};
pub use diagnosis::{
    Agreement, Asked, Attempt, Blocking, Capacity, Diagnosis, Errno, Expect, Failure, Flag,
    HOLDERS_LISTED, HolderClass, HolderReport, OtherSystem, ReuseKnown, Variant,
};
pub use fix::{Fix, RankedFix};
pub use range::{RangeAdvice, TimeWaitSides, peer_fixes, time_wait_sides};
pub use table::{Occupant, Origin, Role, Table, origin_given};

use crate::sysctl::NetSysctls;
use std::net::{Ipv4Addr, SocketAddr};

/// Everything about one port: its bind bucket, what a plain bind() of
/// `0.0.0.0:PORT` would meet with each option variant, and its flags.
pub fn diagnose_port(port: u16, table: &Table, sys: &NetSysctls, uid: u32) -> Diagnosis {
    let q = BindQuestion {
        addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        opts: crate::socket::SocketOpts::default(),
        v6only: false,
        uid,
        // `why port` asks about the bucket, not the caller's privileges.
        cap_net_bind_service: true,
        asker: Asker::Unknown,
    };
    let mut d = diagnose_bind(&q, table, sys);
    d.asked = Asked::Port { port };
    d
}
