//! What the model answers: which rule decided ([`RuleId`]), the predicted
//! outcome with its explanation ([`Prediction`]), and the documented
//! expectation for systems not run here ([`DocumentedPrediction`]).

use crate::outcome::Outcome;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which rule decided a prediction, named after the kernel check that
/// applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// The kebab-case name shown in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            RuleId::BindConflict => "bind-conflict",
            RuleId::BindReuseaddr => "bind-reuseaddr",
            RuleId::BindReuseport => "bind-reuseport",
            RuleId::BindFree => "bind-free",
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
