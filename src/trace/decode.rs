//! Frames → TCP segments (etherparse), and segments → a ladder's rows:
//! direction, connection number, and sequence numbers relative to each
//! direction's ISN.

use crate::diag::TcpState;
use etherparse::{NetSlice, SlicedPacket, TcpOptionElement, TransportSlice};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The TCP flags a ladder shows.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Flags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
    /// PSH.
    pub psh: bool,
}

impl Flags {
    /// The flags as the TCP header's flag byte (FIN = 0x01 … ACK = 0x10),
    /// as `tshark -e tcp.flags` prints them.
    pub fn bits(self) -> u8 {
        u8::from(self.fin)
            | u8::from(self.syn) << 1
            | u8::from(self.rst) << 2
            | u8::from(self.psh) << 3
            | u8::from(self.ack) << 4
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.syn, "SYN"),
            (self.fin, "FIN"),
            (self.rst, "RST"),
            (self.psh, "PSH"),
            (self.ack, "ACK"),
        ];
        let v: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&v.join(","))
    }
}

/// One TCP segment as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Wire {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Flags.
    pub flags: Flags,
    /// Absolute sequence number.
    pub seq: u32,
    /// Absolute acknowledgment number (0 without ACK).
    pub ack: u32,
    /// Timestamp option: TSval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tsval: Option<u32>,
    /// Timestamp option: TSecr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tsecr: Option<u32>,
    /// Advertised window (unscaled, as in the header).
    pub window: u16,
    /// Payload bytes.
    pub len: u32,
    /// Window scale option (SYN and SYN-ACK only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wscale: Option<u8>,
}

impl Wire {
    /// Sequence space the segment takes: payload, plus one for SYN and for
    /// FIN (RFC 9293 §3.4).
    pub fn seq_len(&self) -> u32 {
        self.len + u32::from(self.flags.syn) + u32::from(self.flags.fin)
    }
    /// The sequence number after this segment (its sender's snd_nxt once
    /// sent, its receiver's rcv_nxt once accepted).
    pub fn end_seq(&self) -> u32 {
        self.seq.wrapping_add(self.seq_len())
    }
}

/// Decode one Ethernet frame; `None` if it is not TCP over IPv4/IPv6.
pub fn decode_frame(frame: &[u8]) -> Option<Wire> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (src_ip, dst_ip): (IpAddr, IpAddr) = match p.net? {
        NetSlice::Ipv4(v4) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(v6) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        _ => return None,
    };
    let TransportSlice::Tcp(t) = p.transport? else {
        return None;
    };
    let (mut tsval, mut tsecr, mut wscale) = (None, None, None);
    for o in t.options_iterator().flatten() {
        match o {
            TcpOptionElement::Timestamp(v, e) => {
                tsval = Some(v);
                tsecr = Some(e);
            }
            TcpOptionElement::WindowScale(w) => wscale = Some(w),
            _ => {}
        }
    }
    Some(Wire {
        src: SocketAddr::new(src_ip, t.source_port()),
        dst: SocketAddr::new(dst_ip, t.destination_port()),
        flags: Flags {
            syn: t.syn(),
            ack: t.ack(),
            fin: t.fin(),
            rst: t.rst(),
            psh: t.psh(),
        },
        seq: t.sequence_number(),
        ack: if t.ack() {
            t.acknowledgment_number()
        } else {
            0
        },
        tsval,
        tsecr,
        window: t.window_size(),
        len: t.payload().len() as u32,
        wscale,
    })
}

/// Which way a segment went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// client → server.
    ToServer,
    /// client ← server.
    ToClient,
}

impl Direction {
    /// "→" or "←", read with the client on the left.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::ToServer => "→",
            Direction::ToClient => "←",
        }
    }
}

/// Each end's TCP states right after a segment: every socket the kernel
/// has for that end of the 4-tuple (two at a takeover, e.g. TIME_WAIT and
/// NEW_SYN_RECV), empty when it has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EndStates {
    /// The client end (local = client address).
    pub client: Vec<TcpState>,
    /// The server end (local = server address).
    pub server: Vec<TcpState>,
}

/// One row of the ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Segment {
    /// Row number, from 1.
    pub n: usize,
    /// Microseconds since the capture started.
    pub at_us: u64,
    /// Client → server or back.
    pub dir: Direction,
    /// Which connection on this 4-tuple: 1, then 2 after a new SYN.
    pub conn: u32,
    /// The segment itself (absolute numbers).
    #[serde(flatten)]
    pub wire: Wire,
    /// seq relative to the sender's ISN on this connection.
    pub rel_seq: u32,
    /// ack relative to the receiver's ISN (0 without ACK).
    pub rel_ack: u32,
    /// States read by a sock_diag dump right after the segment was read
    /// from the capture socket (best effort: the kernel may have moved on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub states: Option<EndStates>,
    /// The old connection's segment that the delay box held back and let
    /// go after the 4-tuple was reused (numbered as the old connection's).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub delayed: bool,
}

/// A decoded frame with what was recorded beside it.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Microseconds since the capture started.
    pub at_us: u64,
    /// The decoded segment.
    pub wire: Wire,
    /// States after it, if dumped.
    pub states: Option<Vec<(SocketAddr, SocketAddr, TcpState)>>,
    /// Held back by the delay box and let go late.
    pub delayed: bool,
}

/// Number the captured segments of connections to `server`: direction,
/// connection (a SYN without ACK from the client with a new sequence number
/// opens the next one), and relative sequence numbers. A delayed segment
/// belongs to the connection before the current one of its 4-tuple.
pub fn number(captured: &[Captured], server: SocketAddr) -> Vec<Segment> {
    // Per 4-tuple (client end): the current connection number and its ISNs.
    struct Conn {
        n: u32,
        isn: [Option<u32>; 2],
        syn_seq: Option<u32>,
        /// The previous connection on this 4-tuple: number and ISNs.
        prev: Option<(u32, [Option<u32>; 2])>,
    }
    let mut conns: HashMap<SocketAddr, Conn> = HashMap::new();
    let mut next_conn = 1;
    let mut out = Vec::new();
    for c in captured {
        let w = &c.wire;
        let dir = if w.dst == server {
            Direction::ToServer
        } else if w.src == server {
            Direction::ToClient
        } else {
            continue;
        };
        let client = if dir == Direction::ToServer {
            w.src
        } else {
            w.dst
        };
        let fresh_syn = dir == Direction::ToServer && w.flags.syn && !w.flags.ack;
        let conn = conns.entry(client).or_insert_with(|| {
            let n = next_conn;
            next_conn += 1;
            Conn {
                n,
                isn: [None, None],
                syn_seq: None,
                prev: None,
            }
        });
        if fresh_syn && conn.syn_seq.is_some_and(|s| s != w.seq) && !c.delayed {
            conn.prev = Some((conn.n, conn.isn));
            conn.n = next_conn;
            next_conn += 1;
            conn.isn = [None, None];
        }
        if fresh_syn && !c.delayed {
            conn.syn_seq = Some(w.seq);
        }
        let (me, peer) = match dir {
            Direction::ToServer => (0, 1),
            Direction::ToClient => (1, 0),
        };
        if !c.delayed && (conn.isn[me].is_none() || w.flags.syn) {
            conn.isn[me] = Some(w.seq);
        }
        let (n, isn) = match (c.delayed, conn.prev) {
            (true, Some(p)) => p,
            _ => (conn.n, conn.isn),
        };
        let rel_seq = w.seq.wrapping_sub(isn[me].unwrap_or(w.seq));
        let rel_ack = if w.flags.ack {
            w.ack.wrapping_sub(isn[peer].unwrap_or(w.ack))
        } else {
            0
        };
        let states = c.states.as_ref().map(|v| EndStates {
            client: pick(v, client, server),
            server: pick(v, server, client),
        });
        out.push(Segment {
            n: out.len() + 1,
            at_us: c.at_us,
            dir,
            conn: n,
            wire: w.clone(),
            rel_seq,
            rel_ack,
            states,
            delayed: c.delayed,
        });
    }
    out
}

fn pick(
    v: &[(SocketAddr, SocketAddr, TcpState)],
    local: SocketAddr,
    peer: SocketAddr,
) -> Vec<TcpState> {
    v.iter()
        .filter(|(l, p, _)| *l == local && *p == peer)
        .map(|(_, _, s)| *s)
        .collect()
}
