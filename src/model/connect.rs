//! The Linux connect() rules for a reconnect: a fixed port goes through
//! bind() first and then `__inet_hash_connect()` with the port already bound
//! (`check_established(.., twp = NULL)`); a kernel-chosen port (ephemeral,
//! or bind(addr, 0) with IP_BIND_ADDRESS_NO_PORT) is picked by
//! `__inet_hash_connect()` scanning ip_local_port_range with
//! `check_established(.., &tw)`. Either way `__inet_check_established()`
//! decides whether the old 4-tuple is free, and `tcp_twsk_unique()` whether
//! a timewait socket on it may be taken over.

use super::BORDER_MS;
use super::facts::{CellFacts, KernelFacts};
use super::holder::{Holder, describe_holder};
use super::linux::{BindVerdict, failed, predict_bind};
use super::rules::{Prediction, RuleId};
use crate::diag::{Side, TcpState, TupleView};
use crate::outcome::Step;
use crate::scenario::ClientPort;
use crate::sys::linux_errno;
use crate::sysctl::{PortRange, TwReuse};
use std::net::{IpAddr, SocketAddr};

const NO_TS_FIX: &str = "enable net.ipv4.tcp_timestamps (both ends), or wait out TIME_WAIT (60 s)";

/// A new client socket connects again, from the old port if it was fixed.
pub(super) fn predict_reconnect(
    cell: &CellFacts,
    client: Option<Holder>,
    server: Option<Holder>,
) -> Prediction {
    let x = cell.experiment;
    // Only a socket still in the established hash holds the 4-tuple.
    let tuple = |client: Option<Holder>| client.filter(|h| h.hashed);
    match x.client_port {
        ClientPort::Fixed(_) => match predict_bind("bind()", Side::Client, x.new_opts, client) {
            BindVerdict::Conflict(p) => *p,
            BindVerdict::Shared(..) => {
                reconnect_bound_port(cell, tuple(client), server, BindPassed::Shared)
            }
            BindVerdict::Free => {
                reconnect_bound_port(cell, tuple(client), server, BindPassed::Free)
            }
        },
        ClientPort::Ephemeral | ClientPort::BindNoPort => {
            reconnect_kernel_port(cell, tuple(client), server)
        }
    }
}

/// How a fixed port's bind() passed before connect(); only words the
/// explanation of a busy 4-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindPassed {
    /// Nothing held the port.
    Free,
    /// A holder was there and the bind rules let the new socket share it.
    Shared,
}

/// `__inet_hash_connect()` with the port already bound: `twp == NULL`.
fn reconnect_bound_port(
    cell: &CellFacts,
    tuple: Option<Holder>,
    server: Option<Holder>,
    bind: BindPassed,
) -> Prediction {
    match tuple {
        Some(h) if !h.mini => tuple_busy(&h, bind),
        Some(h) => take_over_bound(&h, cell.kernel.timestamps),
        None => free_tuple(cell, server),
    }
}

/// `__inet_check_established()` reuses only timewait entries: a full
/// socket on the 4-tuple makes connect() fail with EADDRNOTAVAIL.
fn tuple_busy(h: &Holder, bind: BindPassed) -> Prediction {
    Prediction {
        outcome: failed(Step::Connect, linux_errno::EADDRNOTAVAIL),
        rule: RuleId::TupleBusy,
        explanation: format!(
            "connect(): {} still owns the 4-tuple in the established hash, and __inet_check_established() reuses only TIME_WAIT entries{}",
            describe_holder(Side::Client, h),
            match bind {
                BindPassed::Shared => " (bind() passed: the bind bucket rules allow sharing the port, not the 4-tuple)",
                BindPassed::Free => "",
            }
        ),
        fix: Some("wait until the old connection is fully closed (the peer closes too), or use a kernel-chosen port".into()),
        version_note: None,
        borderline: false,
    }
}

/// `tcp_twsk_unique()` with `twp == NULL`: only `tw_ts_recent_stamp`
/// counts; tcp_tw_reuse, its delay and the FIN_WAIT2 substate do not.
fn take_over_bound(h: &Holder, timestamps: bool) -> Prediction {
    if !timestamps {
        return Prediction {
            outcome: failed(Step::Connect, linux_errno::EADDRNOTAVAIL),
            rule: RuleId::TwNoTimestamps,
            explanation: format!(
                "connect(): {} holds the 4-tuple and saw no TCP timestamps (tcp_timestamps=0), so tcp_twsk_unique() cannot prove the new connection safe (no PAWS, RFC 7323 §5) and __inet_check_established() refuses it",
                describe_holder(Side::Client, h)
            ),
            fix: Some(NO_TS_FIX.into()),
            version_note: None,
            borderline: false,
        };
    }
    let mut p = Prediction::ok(
        RuleId::TwTakeoverTimestamps,
        format!(
            "connect(): {} holds the 4-tuple, but the port was bound before connect() (twp = NULL) and the connection used timestamps, so tcp_twsk_unique() lets the new socket take it over whatever tcp_tw_reuse says (ISN = tw_snd_nxt + 65537, PAWS protects it)",
            describe_holder(Side::Client, h)
        ),
    );
    if h.state == TcpState::FinWait2 {
        p.explanation.push_str("; the peer, still in CLOSE_WAIT, answers the SYN with a challenge ACK (RFC 5961 §4), the client answers that ACK with an RST that kills it, and tcp_rcv_synsent_state_process() re-arms the SYN timer at TCP_TIMEOUT_MIN so the retransmitted SYN connects within milliseconds");
        p.rule = RuleId::ChallengeAckThenRetry;
        p.version_note = Some(
            "6.11+ sets reuse = 0 for a FIN_WAIT2 substate, which only matters for kernel-chosen ports".into(),
        );
    }
    p
}

/// Kernel-chosen port: `__inet_hash_connect()` scans ip_local_port_range
/// calling `check_established(.., &tw)`. The old 4-tuple matters only when
/// the range holds nothing but the old port.
fn reconnect_kernel_port(
    cell: &CellFacts,
    tuple: Option<Holder>,
    server: Option<Holder>,
) -> Prediction {
    let range = cell.kernel.port_range;
    let old_port = cell.client_addr.port();
    if !range.is_only(old_port) {
        return other_port(range);
    }
    match tuple {
        None => free_tuple(cell, server),
        Some(h) if !h.mini => exhausted(
            old_port,
            Refusal {
                why: format!(
                    "{} still owns its 4-tuple (__inet_check_established())",
                    describe_holder(Side::Client, &h)
                ),
                fix: "widen ip_local_port_range, or wait until the old connection is fully closed",
                borderline: false,
                version_note: None,
            },
        ),
        Some(h) => take_over_only_port(cell, &h, old_port),
    }
}

/// `__inet_hash_connect()` finds another free port in the range.
fn other_port(range: PortRange) -> Prediction {
    Prediction::ok(
        RuleId::EphemeralOtherPort,
        format!(
            "connect(): __inet_hash_connect() picks another free port from ip_local_port_range {}-{}, so the old 4-tuple does not matter",
            range.low, range.high
        ),
    )
}

/// Why the only port in the range cannot be used.
struct Refusal {
    /// The clause after "holds only port N and".
    why: String,
    fix: &'static str,
    borderline: bool,
    version_note: Option<String>,
}

/// The range holds only the old port and it cannot be used:
/// `__inet_hash_connect()` returns EADDRNOTAVAIL.
fn exhausted(old_port: u16, r: Refusal) -> Prediction {
    Prediction {
        outcome: failed(Step::Connect, linux_errno::EADDRNOTAVAIL),
        rule: RuleId::EphemeralExhausted,
        explanation: format!(
            "connect(): ip_local_port_range holds only port {old_port} and {}, so __inet_hash_connect() finds no port and returns EADDRNOTAVAIL",
            r.why
        ),
        fix: Some(r.fix.into()),
        version_note: r.version_note,
        borderline: r.borderline,
    }
}

/// `tcp_twsk_unique()` with `twp != NULL` for the range's only port, held
/// by a timewait socket: checked in the kernel's order — the FIN_WAIT2
/// substate, timestamps, tcp_tw_reuse, then its delay.
fn take_over_only_port(cell: &CellFacts, h: &Holder, old_port: u16) -> Prediction {
    let k = cell.kernel;
    if h.state == TcpState::FinWait2 {
        return exhausted(
            old_port,
            Refusal {
                why: format!(
                    "{} is not reused for kernel-chosen ports (tcp_twsk_unique() sets reuse = 0 for the FIN_WAIT2 substate)",
                    describe_holder(Side::Client, h)
                ),
                fix: "wait until the peer closes (TIME_WAIT), or bind the port explicitly",
                borderline: false,
                version_note: Some(
                    "before 6.11 tcp_twsk_unique() did not look at the FIN_WAIT2 substate".into(),
                ),
            },
        );
    }
    if !k.timestamps {
        return exhausted(
            old_port,
            Refusal {
                why: "its TIME_WAIT saw no timestamps, so tcp_twsk_unique() refuses it".into(),
                fix: NO_TS_FIX,
                borderline: false,
                version_note: None,
            },
        );
    }
    if !tw_reuse_allows(k.tw_reuse, is_loopback(cell.view, cell.client_addr)) {
        let why = match k.tw_reuse {
            TwReuse::Off => "tcp_tw_reuse=0",
            _ => "tcp_tw_reuse=2 applies to loopback only and this is not loopback",
        };
        return exhausted(
            old_port,
            Refusal {
                why: format!("{why} forbids tcp_twsk_unique() to take its TIME_WAIT over"),
                fix: "set net.ipv4.tcp_tw_reuse=1 (or 2 on loopback), or widen ip_local_port_range",
                borderline: false,
                version_note: Some(
                    "tcp_tw_reuse=2 (loopback only) is the default since 4.x".into(),
                ),
            },
        );
    }
    take_over_after_delay(k, h.tw_age_ms.unwrap_or(0), old_port)
}

/// `tcp_twsk_unique()`: tcp_tw_reuse=1 always, =2 only when either end is
/// loopback, =0 never.
fn tw_reuse_allows(mode: TwReuse, loopback: bool) -> bool {
    match mode {
        TwReuse::Off => false,
        TwReuse::On => true,
        TwReuse::LoopbackOnly => loopback,
    }
}

/// `tcp_twsk_unique()`'s age test, `tw_entry_stamp + tcp_tw_reuse_delay`
/// in the past, for a TIME_WAIT `age_ms` old.
fn take_over_after_delay(k: &KernelFacts, age_ms: u32, old_port: u16) -> Prediction {
    let delay = reuse_delay(k.tw_reuse_delay_ms, age_ms);
    let version_note = k.tw_reuse_delay_ms.is_none().then(|| {
        "this kernel has no tcp_tw_reuse_delay (added in 6.14): the delay is 1 s on a seconds clock, so reuse comes 1–2 s after TIME_WAIT began".to_string()
    });
    if delay.passed {
        let mut p = Prediction::ok(
            RuleId::EphemeralTwReuse,
            format!(
                "connect(): the only port {old_port} is held by a TIME_WAIT {age_ms} ms old, and tcp_tw_reuse={} with timestamps lets tcp_twsk_unique() take it over once tw_entry_stamp + tcp_tw_reuse_delay ({} ms) has passed",
                k.tw_reuse.value(),
                delay.delay_ms
            ),
        );
        p.borderline = delay.borderline;
        p.version_note = version_note;
        p
    } else {
        exhausted(
            old_port,
            Refusal {
                why: format!(
                    "its TIME_WAIT is only {age_ms} ms old, younger than tcp_tw_reuse_delay ({} ms) that tcp_twsk_unique() requires",
                    delay.delay_ms
                ),
                fix: "retry after tcp_tw_reuse_delay, lower net.ipv4.tcp_tw_reuse_delay, or widen ip_local_port_range",
                borderline: delay.borderline,
                version_note,
            },
        )
    }
}

/// The result of `tcp_twsk_unique()`'s age test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReuseDelay {
    /// The delay the kernel applies (ms).
    delay_ms: u32,
    /// The TIME_WAIT is old enough.
    passed: bool,
    /// The age is within [`BORDER_MS`] of the threshold: the dump and the
    /// connect() may see different sides of it.
    borderline: bool,
}

/// With the `tcp_tw_reuse_delay` sysctl (6.14+) the test is in ms:
/// age > delay. Without it the kernel compares whole seconds
/// (`ktime_get_seconds()` against `tw_ts_recent_stamp`), so reuse comes
/// 1–2 s after TIME_WAIT began: only an age over 2 s is surely past it.
fn reuse_delay(sysctl_ms: Option<u32>, age_ms: u32) -> ReuseDelay {
    let delay = sysctl_ms.unwrap_or(1000);
    let (threshold, hi) = match sysctl_ms {
        Some(_) => (delay, delay + BORDER_MS),
        None => (2 * delay, 2 * delay + BORDER_MS),
    };
    let lo = delay.saturating_sub(BORDER_MS);
    ReuseDelay {
        delay_ms: delay,
        passed: age_ms > threshold,
        borderline: age_ms >= lo && age_ms <= hi,
    }
}

/// `tcp_twsk_unique()`'s loopback test for tcp_tw_reuse=2: a loopback
/// address at either end, IPv4-mapped IPv6 loopback included
/// (`ipv6_addr_v4mapped_loopback`).
fn is_loopback(view: &TupleView, client_addr: SocketAddr) -> bool {
    let lo = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    };
    match &view.client {
        Some(e) => lo(e.local.ip()) || lo(e.peer.ip()),
        None => lo(client_addr.ip()),
    }
}

/// The client's 4-tuple is free: what does the server end say?
fn free_tuple(cell: &CellFacts, server: Option<Holder>) -> Prediction {
    match server.filter(|h| h.hashed) {
        Some(h) if h.state == TcpState::TimeWait => Prediction::ok(
            RuleId::SynIntoTimeWait,
            if cell.kernel.timestamps {
                "connect(): the 4-tuple is free at the client; the server's TIME_WAIT accepts the new SYN because its timestamp is newer than tw_ts_recent (tcp_timewait_state_process() → TCP_TW_SYN, RFC 6191)".into()
            } else {
                "connect(): the 4-tuple is free at the client; the server's TIME_WAIT accepts the new SYN because its sequence number is above tw_rcv_nxt (tcp_timewait_state_process() → TCP_TW_SYN, RFC 1122 §4.2.2.13)".into()
            },
        ),
        Some(h) => Prediction::ok(
            RuleId::ChallengeAckThenRetry,
            format!(
                "connect(): the 4-tuple is free at the client; {} answers the SYN with a challenge ACK (tcp_validate_incoming(), RFC 5961 §4), the client's RST kills it and the SYN, retransmitted after TCP_TIMEOUT_MIN (tcp_rcv_synsent_state_process()), connects",
                describe_holder(Side::Server, &h)
            ),
        ),
        None => Prediction::ok(RuleId::TupleFree, nobody_holds_the_tuple(cell)),
    }
}

/// Which of the ways to free a 4-tuple applied here.
fn nobody_holds_the_tuple(cell: &CellFacts) -> String {
    let why = if cell.experiment.close.is_rst() {
        "the SO_LINGER 0 close sent an RST, which leaves no TIME_WAIT at either end (tcp_disconnect(), RFC 793 ABORT)"
    } else if cell.kernel.max_tw_buckets == 0 {
        "tcp_max_tw_buckets = 0, so the first closer got no TIME_WAIT (inet_twsk_alloc() refused) and was destroyed"
    } else {
        "both ends finished closing and no TIME_WAIT is left"
    };
    format!(
        "connect(): neither end holds the old 4-tuple any more: {why}; __inet_check_established() finds it free"
    )
}

#[cfg(test)]
mod tests {
    //! `tcp_twsk_unique()`'s tests over plain data: no sockets.
    use super::*;

    // tcp_tw_reuse: 0 never, 1 always, 2 loopback only.
    #[test]
    fn tw_reuse_modes() {
        for lo in [true, false] {
            assert!(!tw_reuse_allows(TwReuse::Off, lo));
            assert!(tw_reuse_allows(TwReuse::On, lo));
            assert_eq!(tw_reuse_allows(TwReuse::LoopbackOnly, lo), lo);
        }
    }

    // 6.14+: a millisecond comparison against the sysctl.
    #[test]
    fn reuse_delay_with_the_sysctl() {
        let d = |age| reuse_delay(Some(1000), age);
        assert!(!d(500).passed && !d(500).borderline);
        assert!(!d(1000).passed && d(1000).borderline);
        assert!(d(1001).passed && d(1001).borderline);
        assert!(d(1100).passed && !d(1100).borderline);
        assert_eq!(d(0).delay_ms, 1000);
        assert!(reuse_delay(Some(1), 10).passed);
    }

    // Before 6.14: 1 s on a seconds clock, so 1–2 s is borderline and only
    // beyond 2 s is surely past.
    #[test]
    fn reuse_delay_without_the_sysctl() {
        let d = |age| reuse_delay(None, age);
        assert!(!d(1500).passed && d(1500).borderline);
        assert!(!d(2000).passed && d(2000).borderline);
        assert!(d(2001).passed && d(2001).borderline);
        assert!(d(2100).passed && !d(2100).borderline);
        assert!(!d(900).passed && !d(900).borderline);
    }
}
