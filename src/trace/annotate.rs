//! The annotated moments: the numbers from the captured segments that show
//! why the kernel let a 4-tuple be used again (or what an RST cost).

use super::decode::{Direction, Segment, Wire};
use serde::{Deserialize, Serialize};

/// RFC 1323 / 6191 and tcp_twsk_unique(): a new ISN after a TIME_WAIT is
/// the old snd_nxt plus 65535 + 2.
pub const TW_ISN_GAP: u32 = 65_537;

/// What let a SYN through a TIME_WAIT (tcp_timewait_state_process() →
/// TCP_TW_SYN: `after(seq, tw_rcv_nxt) || (saw_tstamp && (s32)(tw_ts_recent
/// - rcv_tsval) < 0)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Admission {
    /// The SYN's TSval is newer than the last one the TIME_WAIT saw (RFC 6191).
    Timestamp,
    /// The SYN's sequence number is after the TIME_WAIT's rcv_nxt (RFC 1122
    /// §4.2.2.13).
    Sequence,
    /// Both hold (the kernel tests the sequence number first).
    Both,
    /// Neither holds: the kernel would not take the SYN as new.
    Neither,
}

/// One annotated moment of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "moment", rename_all = "kebab-case")]
pub enum Moment {
    /// The client's new SYN reached the server's TIME_WAIT.
    TimeWaitSyn {
        /// Row of the new SYN.
        segment: usize,
        /// Its ISN.
        isn: u32,
        /// Its TSval.
        tsval: Option<u32>,
        /// The TIME_WAIT's rcv_nxt: the end of the old client's last segment.
        tw_rcv_nxt: u32,
        /// The TIME_WAIT's ts_recent: the old client's last TSval.
        tw_ts_recent: Option<u32>,
        /// ISN after tw_rcv_nxt.
        seq_after: bool,
        /// TSval newer than tw_ts_recent (None without timestamps).
        ts_newer: Option<bool>,
        /// Which condition held.
        admitted_by: Admission,
    },
    /// The client's new connection took over its own TIME_WAIT
    /// (tcp_twsk_unique()).
    Takeover {
        /// Row of the new SYN.
        segment: usize,
        /// Its ISN.
        isn: u32,
        /// The old connection's snd_nxt, from its last client segment.
        old_snd_nxt: u32,
        /// old_snd_nxt + 65537.
        expected_isn: u32,
        /// isn == expected_isn.
        matches: bool,
    },
    /// An RST ended the connection.
    Reset {
        /// Row of the RST.
        segment: usize,
        /// Which way it went.
        dir: Direction,
        /// Bytes that were ACKed to their sender but never read by the
        /// closer's application (lost with the RST), when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        lost_bytes: Option<u32>,
        /// The error the peer's next call got.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer_error: Option<String>,
    },
}

fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The first SYN (no ACK, not injected) of connection `conn`.
fn syn_of(segs: &[Segment], conn: u32) -> Option<&Segment> {
    segs.iter().find(|s| {
        s.conn == conn && s.dir == Direction::ToServer && s.wire.flags.syn && !s.wire.flags.ack
    })
}

/// The last segment `dir` of connection `conn`, excluding RSTs and
/// injected frames.
fn last_of(segs: &[Segment], conn: u32, dir: Direction) -> Option<&Wire> {
    segs.iter()
        .rev()
        .find(|s| s.conn == conn && s.dir == dir && !s.wire.flags.rst && !s.injected)
        .map(|s| &s.wire)
}

/// The end of the sequence space `dir` used on `conn` (its snd_nxt, the
/// other end's rcv_nxt).
pub fn seq_end(segs: &[Segment], conn: u32, dir: Direction) -> Option<u32> {
    segs.iter()
        .filter(|s| s.conn == conn && s.dir == dir && !s.wire.flags.rst && !s.injected)
        .map(|s| s.wire.end_seq())
        .reduce(|a, b| if after(b, a) { b } else { a })
}

/// The SYN that reached a server TIME_WAIT: compare it with what the
/// TIME_WAIT remembers from the old connection (conn `old`).
pub fn time_wait_syn(segs: &[Segment], old: u32, new: u32) -> Option<Moment> {
    let syn = syn_of(segs, new)?;
    let tw_rcv_nxt = seq_end(segs, old, Direction::ToServer)?;
    let tw_ts_recent = last_of(segs, old, Direction::ToServer)?.tsval;
    let seq_after = after(syn.wire.seq, tw_rcv_nxt);
    let ts_newer = match (syn.wire.tsval, tw_ts_recent) {
        (Some(v), Some(r)) => Some((r.wrapping_sub(v) as i32) < 0),
        _ => None,
    };
    let admitted_by = match (seq_after, ts_newer == Some(true)) {
        (true, true) => Admission::Both,
        (true, false) => Admission::Sequence,
        (false, true) => Admission::Timestamp,
        (false, false) => Admission::Neither,
    };
    Some(Moment::TimeWaitSyn {
        segment: syn.n,
        isn: syn.wire.seq,
        tsval: syn.wire.tsval,
        tw_rcv_nxt,
        tw_ts_recent,
        seq_after,
        ts_newer,
        admitted_by,
    })
}

/// The SYN of a client that took over its own TIME_WAIT.
pub fn takeover(segs: &[Segment], old: u32, new: u32) -> Option<Moment> {
    let syn = syn_of(segs, new)?;
    let old_snd_nxt = seq_end(segs, old, Direction::ToServer)?;
    let expected_isn = old_snd_nxt.wrapping_add(TW_ISN_GAP);
    Some(Moment::Takeover {
        segment: syn.n,
        isn: syn.wire.seq,
        old_snd_nxt,
        expected_isn,
        matches: syn.wire.seq == expected_isn,
    })
}

/// The first RST of connection `conn`.
pub fn reset(
    segs: &[Segment],
    conn: u32,
    lost: Option<u32>,
    peer: Option<String>,
) -> Option<Moment> {
    let rst = segs
        .iter()
        .find(|s| s.conn == conn && s.wire.flags.rst && !s.injected)?;
    Some(Moment::Reset {
        segment: rst.n,
        dir: rst.dir,
        lost_bytes: lost,
        peer_error: peer,
    })
}

/// The moment in words, for the text ladder.
pub fn describe(m: &Moment) -> Vec<String> {
    match m {
        Moment::TimeWaitSyn {
            segment,
            isn,
            tsval,
            tw_rcv_nxt,
            tw_ts_recent,
            seq_after,
            ts_newer,
            admitted_by,
        } => {
            let ts = |v: &Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
            let why = match admitted_by {
                Admission::Timestamp => {
                    "its TSval is newer than the TIME_WAIT's ts_recent (RFC 6191)"
                }
                Admission::Sequence => {
                    "its sequence number is after the TIME_WAIT's rcv_nxt (RFC 1122 4.2.2.13)"
                }
                Admission::Both => {
                    "its TSval is newer (RFC 6191) and its sequence number is after rcv_nxt (RFC 1122 4.2.2.13)"
                }
                Admission::Neither => {
                    "neither its TSval nor its sequence number is newer: the kernel should not have taken it as new"
                }
            };
            vec![
                format!(
                    "#{segment}: the new SYN reaches the server's TIME_WAIT of the same 4-tuple"
                ),
                format!("  new SYN     ISN {isn:>10}   TSval {}", ts(tsval)),
                format!(
                    "  TIME_WAIT   rcv_nxt {tw_rcv_nxt:>10} (old client's last seq + FIN)   ts_recent {}",
                    ts(tw_ts_recent)
                ),
                format!(
                    "  seq after rcv_nxt: {}; TSval newer: {}",
                    if *seq_after { "yes" } else { "no" },
                    ts_newer.map_or("no timestamps", |b| if b { "yes" } else { "no" })
                ),
                format!(
                    "  accepted as a new connection because {why}: tcp_timewait_state_process() → TCP_TW_SYN"
                ),
            ]
        }
        Moment::Takeover {
            segment,
            isn,
            old_snd_nxt,
            expected_isn,
            matches,
        } => vec![
            format!(
                "#{segment}: the client's new SYN takes over its own TIME_WAIT (tcp_twsk_unique())"
            ),
            format!(
                "  old snd_nxt {old_snd_nxt} + 65537 = {expected_isn}; new ISN {isn}: {}",
                if *matches {
                    "equal (write_seq = tw_snd_nxt + 65535 + 2)"
                } else {
                    "differs: not a takeover"
                }
            ),
        ],
        Moment::Reset {
            segment,
            dir,
            lost_bytes,
            peer_error,
        } => {
            let who = match dir {
                Direction::ToServer => "the client",
                Direction::ToClient => "the server",
            };
            let mut v = vec![format!(
                "#{segment}: {who} closed with SO_LINGER 0: RST instead of FIN, no TIME_WAIT (tcp_disconnect())"
            )];
            match lost_bytes {
                Some(n) if *n > 0 => v.push(format!(
                    "  {n} bytes the peer sent were ACKed but never read by the closer: lost with the RST"
                )),
                _ => v.push("  no payload was unread or unsent at the close".into()),
            }
            if let Some(e) = peer_error {
                v.push(format!("  the peer's next call got {e}"));
            }
            v
        }
    }
}
