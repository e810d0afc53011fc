//! TCP states as the kernel numbers them, and sets of them as the
//! `idiag_states` bit mask of a sock_diag request.

use serde::{Deserialize, Serialize};
use std::fmt;

/// TCP states, numbered as in include/net/tcp_states.h.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum TcpState {
    /// ESTABLISHED: data flows both ways.
    Established = 1,
    /// SYN_SENT: connect() sent a SYN, no answer yet.
    SynSent = 2,
    /// SYN_RECV: a full socket that received a SYN (Fast Open child).
    SynRecv = 3,
    // Serialised with ss's state names (`ss state fin-wait-1`).
    /// FIN_WAIT1: this end closed first, its FIN is not acknowledged yet.
    #[serde(rename = "fin-wait-1")]
    FinWait1 = 4,
    /// FIN_WAIT2: this end's FIN is acknowledged, waiting for the peer's.
    #[serde(rename = "fin-wait-2")]
    FinWait2 = 5,
    /// TIME_WAIT: closed first, both FINs done; held 60 s on Linux.
    TimeWait = 6,
    /// CLOSE: no connection (also what bound-only sockets report).
    Closed = 7,
    /// CLOSE_WAIT: the peer closed, this end has not.
    CloseWait = 8,
    /// LAST_ACK: closed after the peer, waiting for the last ACK.
    LastAck = 9,
    /// LISTEN.
    #[serde(rename = "listening")]
    Listen = 10,
    /// CLOSING: both ends closed at once.
    Closing = 11,
    /// A request socket (mini socket for a SYN received on a listener);
    /// `ss` shows it as SYN-RECV.
    NewSynRecv = 12,
}

impl TcpState {
    /// Every state, in the kernel's order.
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Closed,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    /// The state for the kernel's number (`idiag_state`), if known.
    pub fn from_kernel(n: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| *s as u8 == n)
    }

    /// The name in the kernel's and RFC 793's spelling: TIME_WAIT.
    pub fn kernel_name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv | TcpState::NewSynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Closed => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }

    /// The name in JSON, in every command (its serde name): `time-wait`,
    /// `listening`, `new-syn-recv` (where [`TcpState::ss_name`], iproute2's
    /// word, says `syn-recv`).
    pub fn json_name(self) -> &'static str {
        match self {
            TcpState::Established => "established",
            TcpState::SynSent => "syn-sent",
            TcpState::SynRecv => "syn-recv",
            TcpState::FinWait1 => "fin-wait-1",
            TcpState::FinWait2 => "fin-wait-2",
            TcpState::TimeWait => "time-wait",
            TcpState::Closed => "closed",
            TcpState::CloseWait => "close-wait",
            TcpState::LastAck => "last-ack",
            TcpState::Listen => "listening",
            TcpState::Closing => "closing",
            TcpState::NewSynRecv => "new-syn-recv",
        }
    }

    /// The name `ss` uses in its filter syntax: time-wait.
    pub fn ss_name(self) -> &'static str {
        match self {
            TcpState::Established => "established",
            TcpState::SynSent => "syn-sent",
            TcpState::SynRecv | TcpState::NewSynRecv => "syn-recv",
            TcpState::FinWait1 => "fin-wait-1",
            TcpState::FinWait2 => "fin-wait-2",
            TcpState::TimeWait => "time-wait",
            TcpState::Closed => "closed",
            TcpState::CloseWait => "close-wait",
            TcpState::LastAck => "last-ack",
            TcpState::Listen => "listening",
            TcpState::Closing => "closing",
        }
    }

    /// The column `ss -tan` prints: TIME-WAIT, ESTAB, LISTEN...
    pub fn ss_column(self) -> &'static str {
        match self {
            TcpState::Established => "ESTAB",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynRecv | TcpState::NewSynRecv => "SYN-RECV",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::TimeWait => "TIME-WAIT",
            TcpState::Closed => "UNCONN",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::LastAck => "LAST-ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A name that is no TCP state's: [`TcpState`]'s `FromStr` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState {
    /// The name as given.
    pub name: String,
    /// A state whose `ss` name has the same letters ("timewait",
    /// "TIME_WAIT" for time-wait... when the spelling was near but wrong).
    pub guess: Option<TcpState>,
}

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown TCP state '{}'", crate::text::echo(&self.name))?;
        if let Some(g) = self.guess {
            write!(f, " (did you mean '{}'?)", g.ss_name())?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownState {}

/// A TCP state by any of its names, in any case, `_` or `-` alike,
/// surrounding blanks ignored: `ss`'s filter names ("time-wait",
/// "listening"), the kernel's ("TIME_WAIT", "LISTEN", "CLOSE"), the column
/// of `ss -tan` ("TIME-WAIT", "ESTAB", "UNCONN"), and iproute2's aliases
/// "unconnected" and "syn-rcv". The one parser of state names: `ss
/// --state` (which adds its groups) and scenario files use it.
impl std::str::FromStr for TcpState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = |x: &str| x.trim().to_ascii_lowercase().replace('_', "-");
        let want = norm(s);
        let alias = match want.as_str() {
            "unconnected" => Some(TcpState::Closed),
            "syn-rcv" => Some(TcpState::SynRecv),
            _ => None,
        };
        // SynRecv comes before NewSynRecv in ALL: "syn-recv" is SynRecv.
        let found = alias.or_else(|| {
            Self::ALL.into_iter().find(|t| {
                [t.ss_name(), t.kernel_name(), t.ss_column()]
                    .iter()
                    .any(|n| norm(n) == want)
            })
        });
        found.ok_or_else(|| {
            let letters = |x: &str| -> String {
                x.chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
                    .to_ascii_lowercase()
            };
            UnknownState {
                name: s.to_string(),
                guess: Self::ALL
                    .into_iter()
                    .find(|t| letters(t.ss_name()) == letters(s)),
            }
        })
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kernel_name())
    }
}

/// A set of TCP states, as the kernel's `idiag_states` bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateSet(u32);

/// Bit 13 of `idiag_states`, TCP_BOUND_INACTIVE (include/net/tcp_states.h,
/// Linux 6.5+): sockets that are bound but neither listening nor connected.
/// They are not in the established or listening hash, so
/// `inet_diag_dump_icsk()` walks the bind hash for them only when this bit
/// is set (TCPF_CLOSE alone does not find them); they report state CLOSE.
const BOUND_INACTIVE: u32 = 1 << 13;

impl StateSet {
    /// Every state, bound-only sockets included (what `ss -a` asks for).
    pub const fn all() -> Self {
        StateSet(0xffff_fffe)
    }
    /// No state: a query for it returns nothing.
    pub const fn none() -> Self {
        StateSet(0)
    }
    /// This set plus bound-only sockets (TCP_BOUND_INACTIVE), reported as
    /// [`TcpState::Closed`].
    pub const fn with_bound_inactive(self) -> Self {
        StateSet(self.0 | BOUND_INACTIVE)
    }
    /// Does the set ask for bound-only sockets?
    pub fn contains_bound_inactive(&self) -> bool {
        self.0 & BOUND_INACTIVE != 0
    }
    /// The set of `states`.
    pub fn of(states: &[TcpState]) -> Self {
        let mut s = StateSet(0);
        for st in states {
            s.insert(*st);
        }
        s
    }
    /// Add a state (SYN_RECV brings request sockets along).
    pub fn insert(&mut self, s: TcpState) {
        self.0 |= s.bit();
        // The kernel reports request sockets under SYN_RECV
        // (inet_diag_dump_icsk: TCPF_SYN_RECV implies TCPF_NEW_SYN_RECV).
        if s == TcpState::SynRecv {
            self.0 |= TcpState::NewSynRecv.bit();
        }
    }
    /// Is `s` in the set?
    pub fn contains(&self, s: TcpState) -> bool {
        self.0 & s.bit() != 0
    }
    /// The `idiag_states` bit mask.
    pub fn mask(&self) -> u32 {
        self.0
    }
    /// True for the empty set.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_name_is_the_serde_name() {
        for st in TcpState::ALL {
            assert_eq!(serde_json::to_value(st).unwrap(), st.json_name(), "{st:?}");
        }
    }

    #[test]
    fn state_numbers_match_the_kernel() {
        assert_eq!(TcpState::from_kernel(6), Some(TcpState::TimeWait));
        for (name, want) in [
            ("time-wait", TcpState::TimeWait),
            ("TIME_WAIT", TcpState::TimeWait),
            ("TIME-WAIT", TcpState::TimeWait),
            (" time_wait ", TcpState::TimeWait),
            ("estab", TcpState::Established),
            ("ESTABLISHED", TcpState::Established),
            ("listen", TcpState::Listen),
            ("listening", TcpState::Listen),
            ("close", TcpState::Closed),
            ("closed", TcpState::Closed),
            ("UNCONN", TcpState::Closed),
            ("unconnected", TcpState::Closed),
            ("syn-rcv", TcpState::SynRecv),
            ("SYN_RECV", TcpState::SynRecv),
            ("fin-wait1", TcpState::FinWait1),
            ("FIN_WAIT2", TcpState::FinWait2),
            ("fin-wait-2", TcpState::FinWait2),
            ("close-wait", TcpState::CloseWait),
            ("LAST_ACK", TcpState::LastAck),
            ("closing", TcpState::Closing),
        ] {
            assert_eq!(name.parse::<TcpState>(), Ok(want), "{name:?}");
        }
        for s in TcpState::ALL {
            let back = |n: &str| n.parse::<TcpState>().unwrap();
            let s = if s == TcpState::NewSynRecv {
                TcpState::SynRecv
            } else {
                s
            };
            assert_eq!(back(s.ss_name()), s);
            assert_eq!(back(s.kernel_name()), s);
            assert_eq!(back(s.ss_column()), s);
        }
        let e = "timewait".parse::<TcpState>().unwrap_err();
        assert_eq!(e.guess, Some(TcpState::TimeWait));
        assert_eq!(
            e.to_string(),
            "unknown TCP state 'timewait' (did you mean 'time-wait'?)"
        );
        assert_eq!("SLEEPING".parse::<TcpState>().unwrap_err().guess, None);
        assert_eq!(TcpState::from_kernel(5), Some(TcpState::FinWait2));
        assert_eq!(TcpState::from_kernel(10), Some(TcpState::Listen));
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(13), None);
    }

    #[test]
    fn syn_recv_includes_request_sockets() {
        let s = StateSet::of(&[TcpState::SynRecv]);
        assert!(s.contains(TcpState::NewSynRecv));
        assert!(!s.contains(TcpState::Established));
        assert_eq!(StateSet::of(&[TcpState::TimeWait]).mask(), 1 << 6);
    }

    #[test]
    fn bound_inactive_is_bit_13_not_close() {
        let s = StateSet::of(&[TcpState::Closed]);
        assert!(!s.contains_bound_inactive());
        let s = s.with_bound_inactive();
        assert!(s.contains_bound_inactive());
        assert_eq!(s.mask(), (1 << 7) | (1 << 13));
        assert!(StateSet::all().contains_bound_inactive());
        assert!(!StateSet::none().with_bound_inactive().is_empty());
    }
}
