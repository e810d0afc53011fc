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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// The old connection's segment, held back by the delay box, reached
    /// the new connection on the same 4-tuple.
    DelayedDuplicate(Box<Duplicate>),
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

/// The first SYN (no ACK, not delayed) of connection `conn`.
fn syn_of(segs: &[Segment], conn: u32) -> Option<&Segment> {
    segs.iter().find(|s| {
        s.conn == conn && s.dir == Direction::ToServer && s.wire.flags.syn && !s.wire.flags.ack
    })
}

/// The last segment `dir` of connection `conn`, excluding RSTs and
/// delayed frames.
fn last_of(segs: &[Segment], conn: u32, dir: Direction) -> Option<&Wire> {
    segs.iter()
        .rev()
        .find(|s| s.conn == conn && s.dir == dir && !s.wire.flags.rst && !s.delayed)
        .map(|s| &s.wire)
}

/// The end of the sequence space `dir` used on `conn` (its snd_nxt, the
/// other end's rcv_nxt).
pub fn seq_end(segs: &[Segment], conn: u32, dir: Direction) -> Option<u32> {
    segs.iter()
        .filter(|s| s.conn == conn && s.dir == dir && !s.wire.flags.rst && !s.delayed)
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

/// What the new connection did with the old segment, as its reply shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Its TSval is older than the new connection's ts_recent: PAWS
    /// (RFC 7323 §5; tcp_validate_incoming() → tcp_paws_discard()) drops
    /// it and sends a duplicate ACK.
    PawsDropped,
    /// Outside the receive window (tcp_sequence() fails): duplicate ACK,
    /// dropped.
    OutOfWindowDropped,
    /// Taken into the new connection's byte stream: the old bytes corrupt
    /// the new connection.
    Accepted,
    /// No reply was captured.
    NoReply,
}

/// The numbers behind [`Moment::DelayedDuplicate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Duplicate {
    /// Row of the old segment's late arrival.
    pub segment: usize,
    /// Its sequence number and payload length.
    pub seq: u32,
    /// Payload bytes.
    pub len: u32,
    /// Its TSval (None without timestamps).
    pub tsval: Option<u32>,
    /// The old connection's client ISN.
    pub old_isn: u32,
    /// The new connection's client ISN (from the new SYN).
    pub new_isn: u32,
    /// The server's rcv_nxt on the new connection when it arrived.
    pub rcv_nxt: u32,
    /// The server's receive window then (header window << window scale).
    pub rcv_wnd: u32,
    /// The server's ts_recent on the new connection (the last client
    /// TSval it saw before the old segment).
    pub ts_recent: Option<u32>,
    /// `ts_recent - tsval > 1` (TCP_PAWS_WINDOW): PAWS rejects it.
    pub paws_rejects: Option<bool>,
    /// tcp_sequence(): the segment overlaps [rcv_nxt, rcv_nxt + rcv_wnd].
    pub in_window: bool,
    /// Row of the server's reply to it.
    pub reply: Option<usize>,
    /// That reply's ack number.
    pub reply_ack: Option<u32>,
    /// What happened, from the reply: ack unchanged → dropped; advanced →
    /// accepted.
    pub fate: Fate,
    /// How long the box held the segment, in ms.
    pub held_ms: f64,
    /// PAWSEstab (TcpExt, /proc/net/netstat) of the server's namespace,
    /// after minus before.
    pub paws_estab_delta: Option<u64>,
    /// What the server application's recv() on the new connection returned
    /// afterwards.
    pub app_recv: String,
}

/// Reads taken outside the segments for [`delayed_duplicate`].
#[derive(Debug, Clone)]
pub struct DuplicateFacts {
    /// How long the box held the segment, in ms.
    pub held_ms: f64,
    /// PAWSEstab delta in the server's namespace.
    pub paws_estab_delta: Option<u64>,
    /// The server application's recv() afterwards.
    pub app_recv: String,
}

/// The delayed old segment (of connection `old`) on the new connection
/// `new`: what the server knew when it came, and what it answered.
pub fn delayed_duplicate(
    segs: &[Segment],
    old: u32,
    new: u32,
    facts: DuplicateFacts,
) -> Option<Moment> {
    let d = segs.iter().find(|s| s.delayed)?;
    let before = &segs[..d.n - 1];
    let rcv_nxt = seq_end(before, new, Direction::ToServer)?;
    let old_isn = syn_of(segs, old)?.wire.seq;
    let new_isn = syn_of(segs, new)?.wire.seq;
    let ts_recent = last_of(before, new, Direction::ToServer).and_then(|w| w.tsval);
    // The server's window: its last header window, scaled by the shift its
    // SYN-ACK offered if both SYNs carried the option (RFC 7323 §2.2).
    let synack = before.iter().find(|s| {
        s.conn == new && s.dir == Direction::ToClient && s.wire.flags.syn && s.wire.flags.ack
    });
    let shift = match (
        synack.and_then(|s| s.wire.wscale),
        syn_of(segs, new)?.wire.wscale,
    ) {
        (Some(w), Some(_)) => u32::from(w.min(14)),
        _ => 0,
    };
    // A SYN's own window is never scaled (RFC 7323 §2.2).
    let rcv_wnd = last_of(before, new, Direction::ToClient).map_or(0, |w| {
        u32::from(w.window) << if w.flags.syn { 0 } else { shift }
    });
    let w = &d.wire;
    let paws_rejects = match (w.tsval, ts_recent) {
        (Some(v), Some(r)) => Some((r.wrapping_sub(v) as i32) > 1),
        _ => None,
    };
    // tcp_sequence(): !before(end_seq, rcv_wup) && !after(seq, rcv_nxt + rcv_wnd).
    let in_window = !after(rcv_nxt, w.end_seq()) && !after(w.seq, rcv_nxt.wrapping_add(rcv_wnd));
    let reply = segs[d.n..]
        .iter()
        .find(|s| s.dir == Direction::ToClient && s.conn == new);
    let fate = match reply {
        None => Fate::NoReply,
        Some(r) if after(r.wire.ack, rcv_nxt) => Fate::Accepted,
        Some(_) if paws_rejects == Some(true) => Fate::PawsDropped,
        Some(_) => Fate::OutOfWindowDropped,
    };
    Some(Moment::DelayedDuplicate(Box::new(Duplicate {
        segment: d.n,
        seq: w.seq,
        len: w.len,
        tsval: w.tsval,
        old_isn,
        new_isn,
        rcv_nxt,
        rcv_wnd,
        ts_recent,
        paws_rejects,
        in_window,
        reply: reply.map(|r| r.n),
        reply_ack: reply.map(|r| r.wire.ack),
        fate,
        held_ms: facts.held_ms,
        paws_estab_delta: facts.paws_estab_delta,
        app_recv: facts.app_recv,
    })))
}

fn describe_duplicate(d: &Duplicate) -> Vec<String> {
    let ts = |v: &Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
    let mut v = vec![
        format!(
            "#{}: the old connection's segment (seq {}, {} bytes, TSval {}), held {:.1} ms by the delay box: the same bytes the client sent then, not a copy made by twlab",
            d.segment,
            d.seq,
            d.len,
            ts(&d.tsval),
            d.held_ms
        ),
        format!(
            "  new connection: server rcv_nxt {}, window {}, ts_recent {}; old ISN {}, new ISN {} (+{}: RFC 6528's clock-driven ISN, one tick per 64 ns)",
            d.rcv_nxt,
            d.rcv_wnd,
            ts(&d.ts_recent),
            d.old_isn,
            d.new_isn,
            d.new_isn.wrapping_sub(d.old_isn)
        ),
    ];
    match d.paws_rejects {
        Some(p) => v.push(format!(
            "  PAWS: ts_recent {} - TSval {} = {} {} 1 (TCP_PAWS_WINDOW): {}",
            ts(&d.ts_recent),
            ts(&d.tsval),
            d.ts_recent
                .zip(d.tsval)
                .map_or(0, |(r, t)| r.wrapping_sub(t) as i32),
            if p { ">" } else { "<=" },
            if p { "too old, rejected" } else { "passes" }
        )),
        None => v.push(
            "  no timestamps: PAWS cannot tell old from new; only the sequence number can".into(),
        ),
    }
    v.push(format!(
        "  sequence: {} the window (tcp_sequence())",
        if d.in_window { "inside" } else { "outside" }
    ));
    let reply = match (d.reply, d.reply_ack) {
        (Some(n), Some(a)) => format!("#{n} ACK {a}"),
        _ => "none captured".into(),
    };
    v.push(match d.fate {
        Fate::PawsDropped => format!(
            "  dropped by PAWS (tcp_validate_incoming() → tcp_paws_discard()), duplicate ACK sent: {reply} = rcv_nxt unchanged"
        ),
        Fate::OutOfWindowDropped => format!(
            "  dropped as out of window, duplicate ACK sent: {reply} = rcv_nxt unchanged"
        ),
        Fate::Accepted => format!(
            "  ACCEPTED into the new connection: {reply} moved past rcv_nxt: the old bytes are now the new connection's data"
        ),
        Fate::NoReply => format!("  the server's reply: {reply}"),
    });
    v.push(format!(
        "  server namespace PAWSEstab: +{}; the server application's recv(): {}",
        d.paws_estab_delta
            .map_or("?".to_string(), |n| n.to_string()),
        d.app_recv
    ));
    v
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
        .find(|s| s.conn == conn && s.wire.flags.rst && !s.delayed)?;
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
        Moment::DelayedDuplicate(d) => describe_duplicate(d),
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
