//! connect(): whether a timewait socket on the 4-tuple may be taken over
//! (`tcp_twsk_unique()`), whether the 4-tuple is free
//! (`__inet_check_established()`), and what `__inet_hash_connect()`'s scan
//! makes of one port of the range.
//!
//! A socket that bound its port before connect() reaches
//! `__inet_check_established()` with `twp == NULL`; a kernel-chosen port
//! (no bind, or bind(ip, 0) with IP_BIND_ADDRESS_NO_PORT) with `twp !=
//! NULL`. IPv6 is the same: `inet6_hash_connect()` is `__inet_hash_connect()`
//! with `__inet6_check_established()`, and TCPv6 uses `tcp_twsk_unique()`.

use super::Fact;
use super::version::{FIN_WAIT2_NOT_REUSED, KernelVersion, VersionFact};
use crate::model::{BORDER_MS, RuleId, TIMEWAIT_LEN_MS};
use crate::sysctl::{NetSysctls, TwReuse};
use serde::Serialize;

/// The sysctls `tcp_twsk_unique()` reads, from a live namespace
/// ([`NetSysctls`]) or a cell's plan ([`KernelFacts`](crate::model::KernelFacts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ReuseSysctls {
    /// `net.ipv4.tcp_timestamps` != 0 (taken as "the old connection saw
    /// timestamps").
    pub timestamps: bool,
    /// `net.ipv4.tcp_tw_reuse`.
    pub tw_reuse: TwReuse,
    /// `net.ipv4.tcp_tw_reuse_delay` (ms), `None` before 6.14.
    pub tw_reuse_delay_ms: Option<u32>,
    /// The kernel the rules are for; `None`: unknown, the newest rules.
    pub kernel: Option<KernelVersion>,
}

impl ReuseSysctls {
    /// Does the kernel these sysctls are from have `fact`'s newer
    /// behaviour? (Unknown: yes.)
    pub fn has(&self, fact: VersionFact) -> bool {
        self.kernel.is_none_or(|v| v.has(fact))
    }
}

impl From<&NetSysctls> for ReuseSysctls {
    fn from(s: &NetSysctls) -> Self {
        ReuseSysctls {
            timestamps: s.timestamps,
            tw_reuse: s.tw_reuse,
            tw_reuse_delay_ms: s.tw_reuse_delay_ms,
            // A live namespace is on the running kernel.
            kernel: KernelVersion::running(),
        }
    }
}

impl From<&crate::model::KernelFacts> for ReuseSysctls {
    fn from(k: &crate::model::KernelFacts) -> Self {
        ReuseSysctls {
            timestamps: k.timestamps,
            tw_reuse: k.tw_reuse,
            tw_reuse_delay_ms: k.tw_reuse_delay_ms,
            kernel: KernelVersion::parse(&k.release),
        }
    }
}

/// How connect() got its port, which decides `twp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PortOrigin {
    /// bind() gave the port before connect(): `twp == NULL`.
    Bound,
    /// `__inet_hash_connect()` chooses it: `twp != NULL`.
    Chosen,
}

/// A timewait mini-socket on the 4-tuple, as `tcp_twsk_unique()` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TimeWaitFacts {
    /// The FIN_WAIT2 substate (an orphaned FIN_WAIT2 kept as a mini-socket).
    pub fin_wait2: bool,
    /// Milliseconds since it entered TIME_WAIT (60 s less the timer left).
    pub age_ms: u32,
    /// A loopback address at either end (`tw_rcv_saddr` or `tw_daddr`,
    /// IPv4-mapped loopback included).
    pub loopback: bool,
}

impl TimeWaitFacts {
    /// The age of a TIME_WAIT whose timer has `left_ms` to run.
    pub fn age_from_left(left_ms: u32) -> u32 {
        TIMEWAIT_LEN_MS.saturating_sub(left_ms)
    }
}

/// `tcp_twsk_unique()`'s verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TwVerdict {
    /// The new socket takes the timewait socket's place.
    Reuse {
        /// The age test was within [`BORDER_MS`] of its threshold.
        borderline: bool,
    },
    /// Refused, for this reason.
    Refuse {
        /// Why.
        why: TwRefusal,
        /// For [`TwRefusal::TooYoung`]: milliseconds until it is old enough.
        #[serde(skip_serializing_if = "Option::is_none")]
        reusable_in_ms: Option<u32>,
        /// The age test was within [`BORDER_MS`] of its threshold.
        borderline: bool,
    },
}

impl TwVerdict {
    /// True if the timewait socket is taken over.
    pub fn reuses(self) -> bool {
        matches!(self, TwVerdict::Reuse { .. })
    }
}

/// Why `tcp_twsk_unique()` refuses a timewait socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TwRefusal {
    /// It saw no TCP timestamps (`tw_ts_recent_stamp == 0`): never reused.
    NoTimestamps,
    /// Kernel-chosen port and the FIN_WAIT2 substate: `reuse = 0` (Linux
    /// 6.11+, [`FIN_WAIT2_NOT_REUSED`]).
    FinWait2,
    /// Kernel-chosen port and tcp_tw_reuse=0.
    TwReuseOff,
    /// Kernel-chosen port, tcp_tw_reuse=2 and neither end is loopback.
    NotLoopback,
    /// Kernel-chosen port, younger than `tcp_tw_reuse_delay`.
    TooYoung,
}

impl TwRefusal {
    /// The rule identifier.
    pub fn rule(self) -> RuleId {
        match self {
            TwRefusal::NoTimestamps => RuleId::TwNoTimestamps,
            _ => RuleId::EphemeralExhausted,
        }
    }
}

/// `tcp_tw_reuse_delay` in ms as the kernel applies it: the sysctl (6.14+),
/// else the hard-coded second of older kernels. The one place that default
/// is written.
pub fn tw_reuse_delay_ms(sys: &ReuseSysctls) -> u32 {
    sys.tw_reuse_delay_ms.unwrap_or(1000)
}

/// Does tcp_tw_reuse allow reuse for kernel-chosen ports here? 1 always,
/// 2 only with a loopback end (or a socket bound to `lo`), 0 never.
pub fn tw_reuse_applies(mode: TwReuse, loopback: bool) -> bool {
    match mode {
        TwReuse::Off => false,
        TwReuse::On => true,
        TwReuse::LoopbackOnly => loopback,
    }
}

/// `tcp_twsk_unique()`:
///
/// ```c
/// if (tw->tw_substate == TCP_FIN_WAIT2) reuse = 0;           /* 6.11+ */
/// if (reuse == 2 && !loopback) reuse = 0;
/// if (ts_recent_stamp && (!twp || (reuse &&
///     time_after32(tcp_clock_ms(), tw_entry_stamp + tcp_tw_reuse_delay))))
///         take it over (write_seq = tw_snd_nxt + 65535 + 2)
/// /* before 6.14: time_after32(ktime_get_seconds(), tw_ts_recent_stamp) */
/// ```
///
/// For a kernel-chosen port the reasons are named in the order the model
/// has always given them: the FIN_WAIT2 substate (only on kernels that
/// have [`FIN_WAIT2_NOT_REUSED`]; older ones go on as for a TIME_WAIT),
/// timestamps, tcp_tw_reuse, the delay. Whether the old connection saw
/// timestamps is taken from `tcp_timestamps` now (both ends are this
/// namespace's, or assumed to have negotiated them). Without the delay
/// sysctl (before 6.14) the test compares whole seconds with the second of
/// the last timestamped segment: reuse comes when the seconds clock ticks,
/// 0 to 1 s after it, so only an age over 1 s is sure and any age from
/// [`BORDER_MS`] up is borderline.
pub fn twsk_unique(tw: &TimeWaitFacts, origin: PortOrigin, sys: &ReuseSysctls) -> TwVerdict {
    let refuse = |why| TwVerdict::Refuse {
        why,
        reusable_in_ms: None,
        borderline: false,
    };
    if origin == PortOrigin::Bound {
        return if sys.timestamps {
            TwVerdict::Reuse { borderline: false }
        } else {
            refuse(TwRefusal::NoTimestamps)
        };
    }
    if tw.fin_wait2 && sys.has(FIN_WAIT2_NOT_REUSED) {
        return refuse(TwRefusal::FinWait2);
    }
    if !sys.timestamps {
        return refuse(TwRefusal::NoTimestamps);
    }
    if !tw_reuse_applies(sys.tw_reuse, tw.loopback) {
        return refuse(match sys.tw_reuse {
            TwReuse::Off => TwRefusal::TwReuseOff,
            _ => TwRefusal::NotLoopback,
        });
    }
    let threshold = tw_reuse_delay_ms(sys);
    let from = match sys.tw_reuse_delay_ms {
        Some(_) => threshold.saturating_sub(BORDER_MS),
        // The seconds clock may tick any time after the segment.
        None => BORDER_MS,
    };
    let borderline = tw.age_ms >= from && tw.age_ms <= threshold + BORDER_MS;
    if tw.age_ms > threshold {
        TwVerdict::Reuse { borderline }
    } else {
        TwVerdict::Refuse {
            why: TwRefusal::TooYoung,
            // +1: the kernel wants now > entry stamp + delay.
            reusable_in_ms: Some(threshold - tw.age_ms + 1),
            borderline,
        }
    }
}

/// One socket on the asked 4-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum OnTuple {
    /// A full socket (any state but a timewait mini-socket).
    Full,
    /// A timewait mini-socket.
    TimeWait(TimeWaitFacts),
}

/// `__inet_check_established()`'s verdict on one 4-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TupleVerdict {
    /// Nothing holds it.
    Free,
    /// Only timewait sockets that `tcp_twsk_unique()` lets go.
    TakeOver {
        /// A borderline age test.
        borderline: bool,
    },
    /// A full socket holds it: EADDRNOTAVAIL for a bound port.
    Busy,
    /// A timewait socket that may not be taken over (yet).
    TimeWaitBlocks(TwVerdict),
}

impl TupleVerdict {
    /// connect() may use the 4-tuple.
    pub fn usable(self) -> bool {
        matches!(self, TupleVerdict::Free | TupleVerdict::TakeOver { .. })
    }

    /// The rule identifier, for a port bound before connect().
    pub fn bound_rule(self) -> RuleId {
        match self {
            TupleVerdict::Free => RuleId::TupleFree,
            TupleVerdict::TakeOver { .. } => RuleId::TwTakeoverTimestamps,
            TupleVerdict::Busy => RuleId::TupleBusy,
            TupleVerdict::TimeWaitBlocks(_) => RuleId::TwNoTimestamps,
        }
    }
}

/// `__inet_check_established()` over the sockets on one 4-tuple: a full
/// socket blocks; timewait ones are asked `tcp_twsk_unique()`.
pub fn check_established(
    on_tuple: impl IntoIterator<Item = OnTuple>,
    origin: PortOrigin,
    sys: &ReuseSysctls,
) -> TupleVerdict {
    let mut verdict = TupleVerdict::Free;
    for s in on_tuple {
        match s {
            OnTuple::Full => return TupleVerdict::Busy,
            OnTuple::TimeWait(tw) => match twsk_unique(&tw, origin, sys) {
                TwVerdict::Reuse { borderline } => {
                    if matches!(verdict, TupleVerdict::Free | TupleVerdict::TakeOver { .. }) {
                        verdict = TupleVerdict::TakeOver { borderline };
                    }
                }
                refused => verdict = TupleVerdict::TimeWaitBlocks(refused),
            },
        }
    }
    verdict
}

/// What `__inet_hash_connect()`'s scan makes of one port of the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ScanPort {
    /// In `ip_local_reserved_ports`: skipped.
    Reserved,
    /// Its bind bucket came from bind() (`tb->fastreuse >= 0 ||
    /// tb->fastreuseport >= 0`): skipped for every destination.
    BindOwned,
    /// The 4-tuple to the destination, as `__inet_check_established()`
    /// (with `twp`) judges it.
    Tuple(TupleVerdict),
}

impl ScanPort {
    /// connect() may take this port.
    pub fn usable(self) -> bool {
        matches!(self, ScanPort::Tuple(t) if t.usable())
    }
}

/// One port of `__inet_hash_connect()`'s scan: reserved and bind()-owned
/// ports are skipped before the 4-tuple is looked at.
pub fn scan_port(
    reserved: bool,
    bind_owned: bool,
    on_tuple: impl IntoIterator<Item = OnTuple>,
    sys: &ReuseSysctls,
) -> ScanPort {
    if reserved {
        ScanPort::Reserved
    } else if bind_owned {
        ScanPort::BindOwned
    } else {
        ScanPort::Tuple(check_established(on_tuple, PortOrigin::Chosen, sys))
    }
}

/// Ports a kernel-chosen connect() gets back per second toward one
/// destination, once its TIME_WAITs are reusable: the usable ports every
/// `tcp_tw_reuse_delay` where tcp_tw_reuse applies (with timestamps), else
/// every 60 s (TCP_TIMEWAIT_LEN). The sustainable rate of new connections.
pub fn ports_back_per_s(ports: u32, loopback: bool, sys: &ReuseSysctls) -> f64 {
    let period_ms = if sys.timestamps && tw_reuse_applies(sys.tw_reuse, loopback) {
        tw_reuse_delay_ms(sys).max(1)
    } else {
        TIMEWAIT_LEN_MS
    };
    f64::from(ports) * 1000.0 / f64::from(period_ms)
}

/// The facts `tcp_twsk_unique()` read, for a diagnosis's JSON.
pub fn tw_facts(tw: &TimeWaitFacts, origin: PortOrigin, sys: &ReuseSysctls) -> Vec<Fact> {
    vec![
        Fact::new(
            "port_origin",
            match origin {
                PortOrigin::Bound => "bound",
                PortOrigin::Chosen => "chosen",
            },
        ),
        Fact::new("tcp_timestamps", u8::from(sys.timestamps)),
        Fact::new("tcp_tw_reuse", sys.tw_reuse.value()),
        Fact::new("tcp_tw_reuse_delay_ms", tw_reuse_delay_ms(sys)),
        Fact::new("loopback", tw.loopback),
        Fact::new("time_wait_age_ms", tw.age_ms),
        Fact::new("fin_wait2_substate", tw.fin_wait2),
    ]
}

/// The peer's end of a 4-tuple that is free at the connecting side, as the
/// new SYN meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PeerEnd {
    /// Nothing: the listener answers.
    Gone,
    /// A TIME_WAIT: `tcp_timewait_state_process()` returns TCP_TW_SYN for a
    /// SYN whose sequence number is above `tw_rcv_nxt` or whose timestamp
    /// is newer than `tw_ts_recent` (RFC 1122 §4.2.2.13, RFC 6191) — a new
    /// connection's always is (its ISN comes from a clock, and the old one
    /// closed), so the listener accepts it.
    TimeWait,
    /// A full socket (CLOSE_WAIT, LAST_ACK, …): it answers the SYN with a
    /// challenge ACK (`tcp_validate_incoming()`, RFC 5961 §4), the client's
    /// RST kills it and the retransmitted SYN connects.
    Full,
}

/// The rule a SYN on a 4-tuple free at the client meets at the peer.
pub fn syn_at_peer(peer: PeerEnd) -> RuleId {
    match peer {
        PeerEnd::Gone => RuleId::TupleFree,
        PeerEnd::TimeWait => RuleId::SynIntoTimeWait,
        PeerEnd::Full => RuleId::ChallengeAckThenRetry,
    }
}

/// The outcome of `__inet_hash_connect()`'s whole scan toward one
/// destination, from the ports [`scan_port`] judged: it takes the first
/// usable port it meets, so any free port or reusable TIME_WAIT will do;
/// none is EADDRNOTAVAIL.
pub fn scan_rule(free: u32, time_wait_reusable: u32) -> RuleId {
    if free > 0 {
        RuleId::EphemeralOtherPort
    } else if time_wait_reusable > 0 {
        RuleId::EphemeralTwReuse
    } else {
        RuleId::EphemeralExhausted
    }
}
