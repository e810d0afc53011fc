//! The kernel's events as twlab shows them, decoded from records through
//! their `format` files.

use super::format::{Format, Key, Record};
use crate::diag::TcpState;
use serde::{Serialize, Serializer};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which tracepoints twlab enables: (system, event).
pub const TRACEPOINTS: [(&str, &str); 5] = [
    ("sock", "inet_sock_set_state"),
    ("tcp", "tcp_send_reset"),
    ("tcp", "tcp_receive_reset"),
    ("tcp", "tcp_retransmit_skb"),
    ("skb", "kfree_skb"),
];

/// Enabled only on request (`twlab events --freed`): two more events per
/// connection that no explanation needs (a life ends at its CLOSE), and
/// every event costs the traced program ~0.2 µs in the kernel
/// (`trace_event_buffer_reserve()` → `ring_buffer_write()`), reader or not.
pub const FREED: (&str, &str) = ("tcp", "tcp_destroy_sock");

/// In what context the kernel ran when the event fired (`common_flags`:
/// TRACE_FLAG_HARDIRQ 0x08, TRACE_FLAG_SOFTIRQ 0x10, TRACE_FLAG_NMI 0x40,
/// kernel/trace/trace.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Context {
    /// A system call of the process `pid` (close(), connect(), …): that
    /// process caused it.
    Process,
    /// Packet processing (softirq): the kernel acting on a segment that
    /// arrived or a timer; `pid` is merely whoever was running then.
    Softirq,
    /// A hardware interrupt or NMI.
    Irq,
}

impl Context {
    fn from_flags(flags: u64) -> Context {
        if flags & (0x08 | 0x40) != 0 {
            Context::Irq
        } else if flags & 0x10 != 0 {
            Context::Softirq
        } else {
            Context::Process
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum What {
    /// `sock:inet_sock_set_state`: a socket changed state
    /// (`inet_sk_state_store()` / `inet_sk_set_state()`).
    State {
        /// Before.
        old: TcpState,
        /// After.
        new: TcpState,
    },
    /// `tcp:tcp_send_reset`: this end's kernel sent an RST
    /// (`tcp_v4_send_reset()`, `tcp_send_active_reset()`).
    SendReset {
        /// The socket's state then, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<TcpState>,
        /// `enum sk_rst_reason`, by the print format's name
        /// (TCP_ABORT_ON_CLOSE, NO_SOCKET, …); absent on kernels before
        /// 6.10.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The segment answered (0 for an RST the socket sent on its own).
        #[serde(skip)]
        skb: u64,
    },
    /// `tcp:tcp_receive_reset`: an RST reached this socket (`tcp_reset()`).
    ReceiveReset,
    /// `skb:kfree_skb`: the kernel dropped a packet
    /// (`kfree_skb_reason()`), with `enum skb_drop_reason`.
    Drop {
        /// TCP_RFC7323_PAWS, NO_SOCKET, TCP_OLD_SEQUENCE, …
        reason: String,
        /// The socket it was for, if known (`rx_sk`).
        #[serde(skip)]
        rx_sk: u64,
        /// The packet.
        #[serde(skip)]
        skb: u64,
    },
    /// `tcp:tcp_retransmit_skb`: a segment was sent again.
    Retransmit {
        /// The socket's state.
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<TcpState>,
    },
    /// `tcp:tcp_destroy_sock`: the socket's memory was freed
    /// (`tcp_v4_destroy_sock()`).
    Destroy,
}

impl What {
    /// The event's short name: "state", "send-reset", "drop", …
    pub fn name(&self) -> &'static str {
        match self {
            What::State { .. } => "state",
            What::SendReset { .. } => "send-reset",
            What::ReceiveReset => "receive-reset",
            What::Drop { .. } => "drop",
            What::Retransmit { .. } => "retransmit",
            What::Destroy => "destroy",
        }
    }
}

fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// One event of the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Event {
    /// When, in nanoseconds since the Unix epoch on CLOCK_REALTIME: the
    /// clock of packet capture timestamps (see [`super::Clock`]).
    pub at_ns: u64,
    /// The CPU that recorded it.
    pub cpu: u32,
    /// `common_pid`: the thread running when it fired.
    pub pid: i32,
    /// That thread's name (/proc/PID/comm), if it still exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<std::sync::Arc<str>>,
    /// Whether `pid` caused it (a system call) or only happened to run.
    pub context: Context,
    /// The kernel's address of the socket (`skaddr`; 0 if none): the same
    /// value ties a socket's events together while it lives.
    #[serde(serialize_with = "hex")]
    #[schemars(schema_with = "crate::json::schema_of::hex")]
    pub sock: u64,
    /// The socket's own address, when the event has addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
    /// The peer's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

impl Event {
    /// Nanoseconds since the Unix epoch as a [`std::time::SystemTime`].
    pub fn at(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(self.at_ns)
    }
}

fn state(r: &Record, key: Key) -> Option<TcpState> {
    u8::try_from(r.int(key)?)
        .ok()
        .and_then(TcpState::from_kernel)
}

fn ip(r: &Record, v4: Key, v6: Key, family: u64) -> Option<IpAddr> {
    if family == libc::AF_INET6 as u64 {
        let b: [u8; 16] = r.bytes(v6)?.try_into().ok()?;
        Some(Ipv6Addr::from(b).into())
    } else {
        let b: [u8; 4] = r.bytes(v4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b).into())
    }
}

/// The 4-tuple of events with `family`, `sport`, `dport`, `saddr`,
/// `daddr`, `saddr_v6`, `daddr_v6` (TP_STORE_ADDRS: the socket's own
/// address first).
fn tuple_fields(r: &Record) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let family = r.uint(Key::Family).unwrap_or(libc::AF_INET as u64);
    let l = ip(r, Key::Saddr, Key::SaddrV6, family)
        .zip(r.uint(Key::Sport))
        .map(|(a, p)| SocketAddr::new(a, p as u16));
    let p = ip(r, Key::Daddr, Key::DaddrV6, family)
        .zip(r.uint(Key::Dport))
        .map(|(a, p)| SocketAddr::new(a, p as u16));
    (l, p)
}

/// A `struct sockaddr_in` / `sockaddr_in6` as tcp_send_reset stores it
/// (`TP_STORE_ADDR_PORTS`): family in this machine's order, port and
/// address in network order.
fn sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET as u16 {
        let a: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::new(Ipv4Addr::from(a).into(), port))
    } else if family == libc::AF_INET6 as u16 {
        let a: [u8; 16] = b.get(8..24)?.try_into().ok()?;
        Some(SocketAddr::new(Ipv6Addr::from(a).into(), port))
    } else {
        None
    }
}

/// Decode one record whose format is `f`. `None` for a record twlab does
/// not show (another protocol's state change, a missing field).
pub(crate) fn decode(f: &Format, data: &[u8], at_ns: u64, cpu: u32) -> Option<Event> {
    let r = Record { format: f, data };
    let pid = r.int(Key::CommonPid).unwrap_or(-1) as i32;
    let context = Context::from_flags(r.uint(Key::CommonFlags).unwrap_or(0));
    let sock = r.uint(Key::Skaddr).unwrap_or(0);
    let (mut local, mut peer) = (None, None);
    let what = match f.name.as_str() {
        "inet_sock_set_state" => {
            if r.uint(Key::Protocol)
                .is_some_and(|p| p != libc::IPPROTO_TCP as u64)
            {
                return None;
            }
            (local, peer) = tuple_fields(&r);
            What::State {
                old: state(&r, Key::Oldstate)?,
                new: state(&r, Key::Newstate)?,
            }
        }
        "tcp_send_reset" => {
            local = r.bytes(Key::Saddr).and_then(sockaddr);
            peer = r.bytes(Key::Daddr).and_then(sockaddr);
            What::SendReset {
                state: state(&r, Key::State),
                reason: r.symbol(Key::Reason),
                skb: r.uint(Key::Skbaddr).unwrap_or(0),
            }
        }
        "tcp_receive_reset" => {
            (local, peer) = tuple_fields(&r);
            What::ReceiveReset
        }
        "tcp_destroy_sock" => {
            (local, peer) = tuple_fields(&r);
            What::Destroy
        }
        "tcp_retransmit_skb" => {
            (local, peer) = tuple_fields(&r);
            What::Retransmit {
                state: state(&r, Key::State),
            }
        }
        "kfree_skb" => What::Drop {
            reason: r.symbol(Key::Reason).unwrap_or_else(|| "?".into()),
            rx_sk: r.uint(Key::RxSk).unwrap_or(0),
            skb: r.uint(Key::Skbaddr).unwrap_or(0),
        },
        _ => return None,
    };
    Some(Event {
        at_ns,
        cpu,
        pid,
        comm: None,
        context,
        sock,
        local,
        peer,
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_read_as_the_kernel_stores_them() {
        let mut b = [0u8; 28];
        b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&23456u16.to_be_bytes());
        b[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(sockaddr(&b), Some("127.0.0.1:23456".parse().unwrap()));
        b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        b[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(sockaddr(&b), Some("[::1]:23456".parse().unwrap()));
        assert_eq!(sockaddr(&[0u8; 28]), None);
        assert_eq!(Context::from_flags(0x10 | 0x01), Context::Softirq);
        assert_eq!(Context::from_flags(0x80), Context::Process);
    }
}
