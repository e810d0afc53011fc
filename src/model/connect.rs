//! The Linux connect() rules for a reconnect: a fixed port goes through
//! bind() first and then `__inet_hash_connect()` with the port already bound
//! (`check_established(.., twp = NULL)`); a kernel-chosen port (ephemeral,
//! or bind(addr, 0) with IP_BIND_ADDRESS_NO_PORT) is picked by
//! `__inet_hash_connect()` scanning ip_local_port_range with
//! `check_established(.., &tw)`. Either way `__inet_check_established()`
//! decides whether the old 4-tuple is free, and `tcp_twsk_unique()` whether
//! a timewait socket on it may be taken over.

use super::facts::CellFacts;
use super::holder::{Holder, describe_holder};
use super::kernel::{
    self,
    connect::{
        PeerEnd, PortOrigin, ReuseSysctls, TimeWaitFacts, TwRefusal, TwVerdict, syn_at_peer,
        twsk_unique,
    },
    version::{FIN_WAIT2_NOT_REUSED, TW_REUSE_DELAY_SYSCTL},
};
use super::linux::{BindVerdict, failed, predict_bind};
use super::rules::{Prediction, RuleId};
use crate::diag::{Side, TcpState, TupleView};
use crate::experiment::ClientPort;
use crate::outcome::Step;
use crate::sys::linux_errno;
use crate::sysctl::PortRange;
use std::net::SocketAddr;

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
        Some(h) => take_over_bound(&h, &ReuseSysctls::from(cell.kernel)),
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
fn take_over_bound(h: &Holder, sys: &ReuseSysctls) -> Prediction {
    let tw = TimeWaitFacts {
        fin_wait2: h.state == TcpState::FinWait2,
        age_ms: h.tw_age_ms.unwrap_or(0),
        // Not looked at with twp == NULL.
        loopback: true,
    };
    if !twsk_unique(&tw, PortOrigin::Bound, sys).reuses() {
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
        let has = sys.has(FIN_WAIT2_NOT_REUSED);
        p.version_note = Some(format!(
            "{}: tcp_twsk_unique() {}, which only matters for kernel-chosen ports",
            FIN_WAIT2_NOT_REUSED.variant(has),
            if has {
                "sets reuse = 0 for a FIN_WAIT2 substate"
            } else {
                "does not look at the FIN_WAIT2 substate (reuse = 0 for it came in 6.11)"
            }
        ));
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
/// by a timewait socket ([`kernel::connect::twsk_unique`]), worded.
fn take_over_only_port(cell: &CellFacts, h: &Holder, old_port: u16) -> Prediction {
    let k = cell.kernel;
    let sys = ReuseSysctls::from(k);
    let tw = TimeWaitFacts {
        fin_wait2: h.state == TcpState::FinWait2,
        age_ms: h.tw_age_ms.unwrap_or(0),
        loopback: is_loopback(cell.view, cell.client_addr),
    };
    let delay_ms = kernel::connect::tw_reuse_delay_ms(&sys);
    let no_delay_sysctl = k.tw_reuse_delay_ms.is_none().then(|| {
        format!(
            "{}: no tcp_tw_reuse_delay; tcp_twsk_unique() tests time_after32(ktime_get_seconds(), tw_ts_recent_stamp), so reuse comes when the seconds clock ticks past the second of the last timestamped segment, 0 to 1 s after it",
            TW_REUSE_DELAY_SYSCTL.variant(false)
        )
    });
    // Before 6.11 a FIN_WAIT2 substate is taken over like a TIME_WAIT.
    let fin_wait2_note = (tw.fin_wait2 && !sys.has(FIN_WAIT2_NOT_REUSED)).then(|| {
        format!(
            "{}: tcp_twsk_unique() does not look at the FIN_WAIT2 substate, so it is taken over like a TIME_WAIT (6.11 sets reuse = 0 for it)",
            FIN_WAIT2_NOT_REUSED.variant(false)
        )
    });
    let age_ms = tw.age_ms;
    let refusal = |why: String, fix: &'static str, borderline, version_note| {
        exhausted(
            old_port,
            Refusal {
                why,
                fix,
                borderline,
                version_note,
            },
        )
    };
    match twsk_unique(&tw, PortOrigin::Chosen, &sys) {
        TwVerdict::Reuse { borderline } => {
            let mut p = Prediction::ok(
                RuleId::EphemeralTwReuse,
                format!(
                    "connect(): the only port {old_port} is held by a TIME_WAIT {age_ms} ms old, and tcp_tw_reuse={} with timestamps lets tcp_twsk_unique() take it over once tw_entry_stamp + tcp_tw_reuse_delay ({delay_ms} ms) has passed",
                    k.tw_reuse.value(),
                ),
            );
            p.borderline = borderline;
            p.version_note = join_notes(fin_wait2_note, no_delay_sysctl);
            p
        }
        TwVerdict::Refuse {
            why, borderline, ..
        } => match why {
            TwRefusal::FinWait2 => refusal(
                format!(
                    "{}: {} is not reused for kernel-chosen ports (tcp_twsk_unique() sets reuse = 0 for the FIN_WAIT2 substate)",
                    FIN_WAIT2_NOT_REUSED.variant(true),
                    describe_holder(Side::Client, h)
                ),
                "wait until the peer closes (TIME_WAIT), or bind the port explicitly",
                false,
                Some(format!(
                    "{}: tcp_twsk_unique() did not look at the FIN_WAIT2 substate and took it over like a TIME_WAIT",
                    FIN_WAIT2_NOT_REUSED.variant(false)
                )),
            ),
            TwRefusal::NoTimestamps => refusal(
                "its TIME_WAIT saw no timestamps, so tcp_twsk_unique() refuses it".into(),
                NO_TS_FIX,
                false,
                None,
            ),
            TwRefusal::TwReuseOff | TwRefusal::NotLoopback => refusal(
                format!(
                    "{} forbids tcp_twsk_unique() to take its TIME_WAIT over",
                    if why == TwRefusal::TwReuseOff {
                        "tcp_tw_reuse=0"
                    } else {
                        "tcp_tw_reuse=2 applies to loopback only and this is not loopback"
                    }
                ),
                "set net.ipv4.tcp_tw_reuse=1 (or 2 on loopback), or widen ip_local_port_range",
                false,
                Some("tcp_tw_reuse=2 (loopback only) is the default since 4.x".into()),
            ),
            TwRefusal::TooYoung => refusal(
                format!(
                    "its TIME_WAIT is only {age_ms} ms old, younger than tcp_tw_reuse_delay ({delay_ms} ms) that tcp_twsk_unique() requires"
                ),
                "retry after tcp_tw_reuse_delay, lower net.ipv4.tcp_tw_reuse_delay, or widen ip_local_port_range",
                // sock_diag gives a FIN_WAIT2 mini-socket's fin_timeout
                // timer, not its age: on a kernel that may take it over
                // the age test is a guess.
                borderline || (fin_wait2_note.is_some() && h.tw_age_ms.is_none()),
                join_notes(fin_wait2_note, no_delay_sysctl),
            ),
        },
    }
}

/// Two optional version notes as one.
fn join_notes(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// `tcp_twsk_unique()`'s loopback test for tcp_tw_reuse=2: a loopback
/// address at either end, IPv4-mapped IPv6 loopback included
/// (`ipv6_addr_v4mapped_loopback`).
fn is_loopback(view: &TupleView, client_addr: SocketAddr) -> bool {
    let lo = kernel::addr::is_loopback;
    match &view.client {
        Some(e) => lo(e.local.ip()) || lo(e.peer.ip()),
        None => lo(client_addr.ip()),
    }
}

/// The client's 4-tuple is free: what does the server end say?
fn free_tuple(cell: &CellFacts, server: Option<Holder>) -> Prediction {
    let server = server.filter(|h| h.hashed);
    let peer = match server {
        None => PeerEnd::Gone,
        Some(h) if h.state == TcpState::TimeWait => PeerEnd::TimeWait,
        Some(_) => PeerEnd::Full,
    };
    let rule = syn_at_peer(peer);
    match server {
        Some(_) if peer == PeerEnd::TimeWait => Prediction::ok(
            rule,
            if cell.kernel.timestamps {
                "connect(): the 4-tuple is free at the client; the server's TIME_WAIT accepts the new SYN because its timestamp is newer than tw_ts_recent (tcp_timewait_state_process() → TCP_TW_SYN, RFC 6191)".into()
            } else {
                "connect(): the 4-tuple is free at the client; the server's TIME_WAIT accepts the new SYN because its sequence number is above tw_rcv_nxt (tcp_timewait_state_process() → TCP_TW_SYN, RFC 1122 §4.2.2.13)".into()
            },
        ),
        Some(h) => Prediction::ok(
            rule,
            format!(
                "connect(): the 4-tuple is free at the client; {} answers the SYN with a challenge ACK (tcp_validate_incoming(), RFC 5961 §4), the client's RST kills it and the SYN, retransmitted after TCP_TIMEOUT_MIN (tcp_rcv_synsent_state_process()), connects",
                describe_holder(Side::Server, &h)
            ),
        ),
        None => Prediction::ok(rule, nobody_holds_the_tuple(cell)),
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
