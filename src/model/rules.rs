//! What the model answers: which rule decided ([`RuleId`]), the predicted
//! outcome with its explanation ([`Prediction`]), and the documented
//! expectation for systems not run here ([`DocumentedPrediction`]).

use crate::outcome::Outcome;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which rule decided a prediction, named after the kernel check that
/// applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RuleId {
    /// A socket still in the port's bind bucket conflicts
    /// (`inet_bind_conflict()`).
    BindConflict,
    /// Both sockets have SO_REUSEADDR and the holder is not listening
    /// (`inet_bind_conflict()`, `sk_reuse`).
    BindReuseaddr,
    /// Both sockets have SO_REUSEPORT, same uid or holder TIME_WAIT
    /// (`inet_bind_conflict()`, `sk_reuseport`).
    BindReuseport,
    /// Nothing holds the port any more (`inet_csk_get_port()` finds it free).
    BindFree,
    /// The sockets on the port hold addresses that do not overlap
    /// (`inet_rcv_saddr_equal()`, `ipv6_only_sock()`).
    BindDisjoint,
    /// A v4-mapped address on a V6ONLY socket (`__inet6_bind()`: EINVAL).
    BindMappedOnV6only,
    /// A port below `ip_unprivileged_port_start` without
    /// CAP_NET_BIND_SERVICE (`__inet_bind()`: EACCES).
    BindPrivileged,
    /// bind(ip, 0) finds a port no overlapping socket holds
    /// (`inet_csk_find_open_port()`).
    BindAutoFree,
    /// bind(ip, 0) in an exhausted range shares a port with SO_REUSEADDR
    /// holders (`ip_autobind_reuse`, `inet_csk_find_open_port()` relax).
    BindAutoShared,
    /// bind(ip, 0) finds no port: EADDRINUSE (`inet_csk_find_open_port()`).
    BindAutoExhausted,
    /// The 4-tuple is held by a full socket, not a timewait one
    /// (`__inet_check_established()`).
    TupleBusy,
    /// Bound port, TIME_WAIT with timestamps → taken over
    /// (`tcp_twsk_unique()` with twp NULL).
    TwTakeoverTimestamps,
    /// The TIME_WAIT saw no timestamps → never reused (`tcp_twsk_unique()`).
    TwNoTimestamps,
    /// connect() chose another free port (`__inet_hash_connect()`).
    EphemeralOtherPort,
    /// Kernel-chosen port, tcp_tw_reuse allows taking the TIME_WAIT
    /// (`tcp_twsk_unique()` with twp != NULL).
    EphemeralTwReuse,
    /// Kernel-chosen port, TIME_WAIT not reusable (tw_reuse off, delay not
    /// over, FIN_WAIT2 substate, no timestamps) and no other port
    /// (`__inet_hash_connect()` → EADDRNOTAVAIL).
    EphemeralExhausted,
    /// The 4-tuple is free here; the server's TIME_WAIT accepts the new SYN
    /// (`tcp_timewait_state_process()` → TCP_TW_SYN).
    SynIntoTimeWait,
    /// The 4-tuple is free on both ends.
    TupleFree,
    /// The full socket at the server end answers the SYN with a challenge
    /// ACK; the client's RST kills it and the SYN retransmit succeeds
    /// (`tcp_validate_incoming()`, RFC 5961 §4).
    ChallengeAckThenRetry,
}

impl RuleId {
    /// Every rule, in the order of the rule table.
    pub const ALL: [RuleId; 19] = [
        RuleId::BindConflict,
        RuleId::BindReuseaddr,
        RuleId::BindReuseport,
        RuleId::BindFree,
        RuleId::BindDisjoint,
        RuleId::BindMappedOnV6only,
        RuleId::BindPrivileged,
        RuleId::BindAutoFree,
        RuleId::BindAutoShared,
        RuleId::BindAutoExhausted,
        RuleId::TupleBusy,
        RuleId::TwTakeoverTimestamps,
        RuleId::TwNoTimestamps,
        RuleId::EphemeralOtherPort,
        RuleId::EphemeralTwReuse,
        RuleId::EphemeralExhausted,
        RuleId::SynIntoTimeWait,
        RuleId::TupleFree,
        RuleId::ChallengeAckThenRetry,
    ];

    /// The kernel function that applies the rule.
    pub fn kernel_fn(self) -> &'static str {
        match self {
            RuleId::BindConflict | RuleId::BindReuseaddr | RuleId::BindReuseport => {
                "inet_csk_get_port() → inet_csk_bind_conflict() → inet_bind_conflict()"
            }
            RuleId::BindFree => "inet_csk_get_port()",
            RuleId::BindDisjoint => "inet_rcv_saddr_equal() / inet_bind2_bucket_match_addr_any()",
            RuleId::BindMappedOnV6only => "__inet6_bind()",
            RuleId::BindPrivileged => "__inet_bind() → inet_port_requires_bind_service()",
            RuleId::BindAutoFree | RuleId::BindAutoShared | RuleId::BindAutoExhausted => {
                "inet_csk_find_open_port()"
            }
            RuleId::TupleBusy | RuleId::TupleFree => "__inet_check_established()",
            RuleId::TwTakeoverTimestamps | RuleId::TwNoTimestamps => {
                "__inet_check_established() → tcp_twsk_unique()"
            }
            RuleId::EphemeralOtherPort | RuleId::EphemeralExhausted => "__inet_hash_connect()",
            RuleId::EphemeralTwReuse => "__inet_hash_connect() → tcp_twsk_unique()",
            RuleId::SynIntoTimeWait => "tcp_timewait_state_process()",
            RuleId::ChallengeAckThenRetry => "tcp_validate_incoming() (RFC 5961 §4)",
        }
    }

    /// The kebab-case name shown in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            RuleId::BindConflict => "bind-conflict",
            RuleId::BindReuseaddr => "bind-reuseaddr",
            RuleId::BindReuseport => "bind-reuseport",
            RuleId::BindFree => "bind-free",
            RuleId::BindDisjoint => "bind-disjoint",
            RuleId::BindMappedOnV6only => "bind-mapped-on-v6only",
            RuleId::BindPrivileged => "bind-privileged",
            RuleId::BindAutoFree => "bind-auto-free",
            RuleId::BindAutoShared => "bind-auto-shared",
            RuleId::BindAutoExhausted => "bind-auto-exhausted",
            RuleId::TupleBusy => "tuple-busy",
            RuleId::TwTakeoverTimestamps => "tw-takeover-timestamps",
            RuleId::TwNoTimestamps => "tw-no-timestamps",
            RuleId::EphemeralOtherPort => "ephemeral-other-port",
            RuleId::EphemeralTwReuse => "ephemeral-tw-reuse",
            RuleId::EphemeralExhausted => "ephemeral-exhausted",
            RuleId::SynIntoTimeWait => "syn-into-time-wait",
            RuleId::TupleFree => "tuple-free",
            RuleId::ChallengeAckThenRetry => "challenge-ack-then-retry",
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A predicted outcome with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Prediction {
    /// What the step will do.
    pub outcome: Outcome,
    /// The rule that decided it.
    pub rule: RuleId,
    /// One sentence, citing the kernel function or RFC section.
    pub explanation: String,
    /// What would make the step succeed, if it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Which part of the rule depends on the kernel version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_note: Option<String>,
    /// The prediction hangs on a timing comparison closer than
    /// [`BORDER_MS`](super::BORDER_MS) (TIME_WAIT age vs tcp_tw_reuse_delay).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub borderline: bool,
}

impl Prediction {
    /// A step that succeeds by `rule`.
    pub(crate) fn ok(rule: RuleId, explanation: String) -> Self {
        Prediction {
            outcome: Outcome::Ok,
            rule,
            explanation,
            fix: None,
            version_note: None,
            borderline: false,
        }
    }
}

/// A prediction for a system twlab cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DocumentedPrediction {
    /// What the system's documentation says the step does.
    pub outcome: Outcome,
    /// Why, citing the documentation or the BSD source.
    pub explanation: String,
    /// Always "documented, not run".
    pub label: String,
}

/// True if two outcomes agree on the step and the error name.
pub fn same_outcome(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Ok, Outcome::Ok) => true,
        (
            Outcome::Failed {
                step: s1,
                error: e1,
            },
            Outcome::Failed {
                step: s2,
                error: e2,
            },
        ) => s1 == s2 && e1.name == e2.name,
        _ => false,
    }
}
