//! The same situation on Windows and BSD/macOS, from their documentation
//! (Winsock's SO_REUSEADDR and SO_EXCLUSIVEADDRUSE pages; FreeBSD
//! `in_pcbbind_setup()` and `in_pcbconnect()`), labelled "documented, not
//! run" — consistent with [`crate::model::predict_windows`] and
//! [`crate::model::predict_bsd`].

use super::bind::BindQuestion;
use super::connect::ConnectQuestion;
use super::diagnosis::{Blocking, Diagnosis, Expect, HolderReport, OtherSystem};
use super::table::Role;
use crate::model::RuleId as Rule;

const LABEL: &str = "documented, not run";

fn sys(system: &'static str, outcome: String) -> OtherSystem {
    OtherSystem {
        system,
        outcome,
        label: LABEL,
    }
}

/// bind() of the same address with the same holders.
pub(crate) fn bind_elsewhere(q: &BindQuestion, holders: &[HolderReport]) -> Vec<OtherSystem> {
    let held: Vec<&HolderReport> = holders
        .iter()
        .filter(|h| h.blocking != Blocking::NoOverlap)
        .collect();
    let windows = if q.opts.reuseport {
        "setsockopt(SO_REUSEPORT) fails with WSAENOPROTOOPT: Windows has no SO_REUSEPORT".into()
    } else if held.is_empty() {
        "bind() succeeds: nothing uses the port".into()
    } else if q.opts.reuseaddr {
        "bind() succeeds: SO_REUSEADDR on the new socket alone shares the port, even with a listener, unless the holder set SO_EXCLUSIVEADDRUSE".into()
    } else {
        "bind() fails with WSAEADDRINUSE (10048): the port is in use and the new socket has no SO_REUSEADDR".into()
    };
    let exact_listener = held
        .iter()
        .any(|h| h.role == Role::Listener && h.local.ip() == q.addr.ip());
    let bsd = if held.is_empty() {
        "bind() succeeds: nothing uses the port".into()
    } else if exact_listener && !q.opts.reuseport {
        "bind() fails with EADDRINUSE: a listener has the same address and port; only SO_REUSEPORT on both shares it".into()
    } else if q.opts.reuseaddr || q.opts.reuseport {
        "bind() succeeds: SO_REUSEADDR on the new socket allows a port held by connected or TIME_WAIT sockets, and a different (wildcard vs specific) address".into()
    } else {
        "bind() fails with EADDRINUSE: the port is held and the new socket has no SO_REUSEADDR"
            .into()
    };
    vec![sys("Windows", windows), sys("BSD/macOS", bsd)]
}

/// connect() toward the same destination.
pub(crate) fn connect_elsewhere(q: &ConnectQuestion, d: &Diagnosis) -> Vec<OtherSystem> {
    let fixed = q.from.is_some_and(|f| f.port() != 0);
    let (windows, bsd) = match (d.rule, &d.expect) {
        (Rule::BindConflict, _) => return d.other_systems.clone(),
        (Rule::TupleBusy | Rule::TwTakeoverTimestamps | Rule::TwNoTimestamps, _) if fixed => (
            "connect() fails with WSAEADDRINUSE while the old socket holds the 4-tuple (TIME_WAIT lasts 240 s by default, TcpTimedWaitDelay)".to_string(),
            "connect() fails with EADDRINUSE while the 4-tuple is in use (in_pcbconnect()); a TIME_WAIT lasts 2×MSL".to_string(),
        ),
        (Rule::EphemeralExhausted | Rule::BindAutoExhausted, _) => (
            "connect() fails with WSAENOBUFS/WSAEADDRINUSE once the dynamic range (49152-65535 by default) has no free port toward the destination".to_string(),
            "connect() fails with EADDRNOTAVAIL when no port in net.inet.ip.portrange.first-last is free for the 4-tuple".to_string(),
        ),
        (_, Expect::Ok) => (
            "connect() succeeds: a free port or 4-tuple is available".to_string(),
            "connect() succeeds: a free port or 4-tuple is available".to_string(),
        ),
        _ => (
            "same failure expected: the port or 4-tuple is in use".to_string(),
            "same failure expected: the port or 4-tuple is in use".to_string(),
        ),
    };
    vec![sys("Windows", windows), sys("BSD/macOS", bsd)]
}
