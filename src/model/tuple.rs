//! A 4-tuple toward one peer as the connect() rules see the sockets a dump
//! shows on it ([`SockEntry`]): what `__inet_check_established()` and
//! `tcp_twsk_unique()` ([`kernel::connect`](super::kernel::connect)) make
//! of them for a kernel-chosen port, and how recent a TIME_WAIT is. The
//! diagnosis of one connect() and the range accounting ([`super::range`])
//! both read a 4-tuple through these, so the two count every port alike.

use super::kernel::{
    addr::is_loopback,
    connect::{
        OnTuple, PortOrigin, ReuseSysctls, TimeWaitFacts, TupleVerdict, TwRefusal, TwVerdict,
        check_established, tw_reuse_applies, tw_reuse_delay_ms, twsk_unique,
    },
};
use crate::diag::{SockEntry, TcpState};
use crate::sysctl::NetSysctls;

/// A timewait socket on a 4-tuple as `tcp_twsk_unique()` sees it.
pub(crate) fn time_wait_facts(e: &SockEntry) -> TimeWaitFacts {
    TimeWaitFacts {
        fin_wait2: e.state == TcpState::FinWait2,
        age_ms: TimeWaitFacts::age_from_left(e.timer.map_or(0, |t| t.expires_ms)),
        loopback: is_loopback(e.local.ip()) || is_loopback(e.peer.ip()),
    }
}

/// A socket on the asked 4-tuple as `__inet_check_established()` sees it.
pub(crate) fn on_tuple(e: &SockEntry) -> OnTuple {
    if e.is_timewait_sock() || e.state == TcpState::TimeWait {
        OnTuple::TimeWait(time_wait_facts(e))
    } else {
        OnTuple::Full
    }
}

/// May connect() with a kernel-chosen port take this TIME_WAIT over now?
/// [`twsk_unique`] with `twp != NULL`.
pub fn time_wait_reusable(e: &SockEntry, sys: &NetSysctls) -> bool {
    (e.is_timewait_sock() || e.state == TcpState::TimeWait)
        && twsk_unique(
            &time_wait_facts(e),
            PortOrigin::Chosen,
            &ReuseSysctls::from(sys),
        )
        .reuses()
}

/// What the sockets on one 4-tuple make of its port for connect() toward
/// that peer (`__inet_check_established()` → `tcp_twsk_unique()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TupleUse {
    /// A full socket holds it: never reused.
    Busy,
    /// Only TIME_WAITs that connect() may take over now.
    TimeWaitReusable,
    /// A TIME_WAIT that connect() may not take over (yet).
    TimeWaitBlocking,
}

impl From<TupleVerdict> for TupleUse {
    /// `__inet_check_established()`'s verdict on a 4-tuple some socket
    /// holds. (A free one, which no socket holds, is as usable as a
    /// TIME_WAIT taken over; the callers count free ports before.)
    fn from(v: TupleVerdict) -> Self {
        match v {
            TupleVerdict::Busy => TupleUse::Busy,
            TupleVerdict::Free | TupleVerdict::TakeOver { .. } => TupleUse::TimeWaitReusable,
            TupleVerdict::TimeWaitBlocks(_) => TupleUse::TimeWaitBlocking,
        }
    }
}

/// Classify the (non-empty) sockets on one 4-tuple for a kernel-chosen port.
pub(crate) fn tuple_use<'a>(
    on: impl IntoIterator<Item = &'a SockEntry>,
    sys: &NetSysctls,
) -> TupleUse {
    check_established(
        on.into_iter().map(on_tuple),
        PortOrigin::Chosen,
        &ReuseSysctls::from(sys),
    )
    .into()
}

/// How long until a blocking TIME_WAIT passes `tcp_tw_reuse_delay`, if that
/// is all it lacks (`tcp_twsk_unique()`'s age test, the only refusal that
/// time lifts before the 60 s timer).
pub(crate) fn reusable_in_ms(e: &SockEntry, sys: &NetSysctls) -> Option<u32> {
    match twsk_unique(
        &time_wait_facts(e),
        PortOrigin::Chosen,
        &ReuseSysctls::from(sys),
    ) {
        TwVerdict::Refuse {
            why: TwRefusal::TooYoung,
            reusable_in_ms,
            ..
        } => reusable_in_ms,
        _ => None,
    }
}

/// The window over which young TIME_WAITs count as "being taken now":
/// shorter than the time a port stays out of use, so a port reused before
/// the window ends is not missed — half of `tcp_tw_reuse_delay` where
/// tcp_tw_reuse applies, else 10 s of the 60 s TIME_WAIT.
pub(crate) fn rate_window_ms(sys: &NetSysctls, loopback: bool) -> u32 {
    let r = ReuseSysctls::from(sys);
    if r.timestamps && tw_reuse_applies(r.tw_reuse, loopback) {
        (tw_reuse_delay_ms(&r) / 2).clamp(50, 10_000)
    } else {
        10_000
    }
}

/// A TIME_WAIT that entered its state within the last `window_ms`.
pub(crate) fn is_young(e: &SockEntry, window_ms: u32) -> bool {
    e.state == TcpState::TimeWait
        && e.timer
            .is_some_and(|t| TimeWaitFacts::age_from_left(t.expires_ms) <= window_ms)
}
