//! The Linux rule model: predict the outcome of an experiment's next step
//! from its factors, the kernel's view of the old 4-tuple, and the
//! namespace's sysctls — without running anything — and explain it in one
//! sentence that names the kernel function or RFC section that decides it.
//!
//! The rules were read from the kernel source: `inet_csk_get_port()` and
//! `inet_bind_conflict()` (net/ipv4/inet_connection_sock.c) for bind() and
//! listen(); `__inet_hash_connect()` and `__inet_check_established()`
//! (net/ipv4/inet_hashtables.c) for connect(); `tcp_twsk_unique()`
//! (net/ipv4/tcp_ipv4.c) for taking a TIME_WAIT over;
//! `tcp_timewait_state_process()` (net/ipv4/tcp_minisocks.c) for a SYN that
//! meets a TIME_WAIT; `tcp_close()`/`tcp_disconnect()` (net/ipv4/tcp.c) and
//! `tcp_validate_incoming()` (net/ipv4/tcp_input.c) for the rest.
//! `tcp_twsk_unique()` does not refuse a FIN_WAIT2-substate timewait socket
//! outright, it sets `reuse = 0` (commit "tcp: avoid reusing FIN_WAIT2 when
//! trying to find port in connect() process", 6.11). That matters only for
//! kernel-chosen ports (`twp != NULL`); a socket that bound its port
//! explicitly takes the FIN_WAIT2 mini-socket over just like a TIME_WAIT one,
//! as long as timestamps were seen.
//!
//! IPv6 follows the same rules: `inet6_hash_connect()` is
//! `__inet_hash_connect()` with `__inet6_check_established()`, TCPv6 uses the
//! same `tcp_twsk_unique()` and `inet_csk_get_port()`. IP_BIND_ADDRESS_NO_PORT
//! with bind(addr, 0) skips `inet_csk_get_port()` in `__inet_bind()`, so the
//! port is chosen in `__inet_hash_connect()` exactly as for a socket that never
//! bound (no SOCK_BINDPORT_LOCK either).
//!
//! Windows and BSD/macOS predictions come from their documentation (Winsock's
//! SO_REUSEADDR/SO_EXCLUSIVEADDRUSE pages; FreeBSD `in_pcbbind_setup()`,
//! `in_pcbconnect()`) and are labelled "documented, not run".
//!
//! # Layout
//! - `facts`: what the model is told ([`KernelFacts`], [`CellFacts`]).
//! - `rules`: what it answers ([`RuleId`], [`Prediction`],
//!   [`DocumentedPrediction`]).
//! - `holder`: the socket that holds a port or a 4-tuple, as the rules see it
//!   ([`Role`]: what a dump's socket does on its port).
//! - [`tuple`](mod@tuple): a dump's sockets on one 4-tuple as the connect()
//!   rules see them (`__inet_check_established()`, `tcp_twsk_unique()`), for
//!   the diagnosis of one connect() and the range accounting alike.
//! - [`range`]: the ephemeral range's accounting, every occupant at once
//!   (`ss --summary`): ports by class, and per (local address, peer) pair
//!   what `__inet_hash_connect()` can still use ([`range::Capacity`]).
//! - `linux`: the Linux rules ([`predict_linux`]).
//! - `documented`: Windows and BSD/macOS ([`predict_windows`], [`predict_bsd`]).

mod connect;
mod documented;
mod facts;
mod holder;
pub mod kernel;
mod linux;
pub mod pairs;
pub mod pairs_documented;
pub mod range;
mod rules;
#[cfg(test)]
mod tests;
pub mod tuple;

pub use crate::sysctl::{PortRange, TwReuse};
pub use documented::{predict_bsd, predict_windows};
pub use facts::{CellFacts, KernelFacts, kernel_release};
pub use holder::{Role, fd_open, role};
pub use linux::predict_linux;
pub use rules::{DocumentedPrediction, Prediction, RuleId, same_outcome};

/// TCP_TIMEWAIT_LEN (include/net/tcp.h): 60 s, not a sysctl.
pub const TIMEWAIT_LEN_MS: u32 = 60_000;

/// How close (ms) a TIME_WAIT's age may come to `tcp_tw_reuse_delay` before
/// the prediction is called borderline: diag reports the timer at jiffy
/// resolution (up to 4 ms at HZ=250) and some milliseconds pass between the
/// dump and the connect().
pub const BORDER_MS: u32 = 30;
