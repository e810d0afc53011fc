//! Events in words: one line each, with what the kernel's reason means.

use super::event::{Context, Event, What};
use crate::diag::TcpState;
use std::fmt;

/// What an RST reason (`enum sk_rst_reason`, include/net/rstreason.h)
/// means, where twlab knows.
pub fn reset_hint(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "NOT_SPECIFIED" => "the kernel gave no reason",
        "NO_SOCKET" => {
            "no socket for the segment: nothing listens there, or the connection is gone (tcp_v4_rcv() → tcp_v4_send_reset())"
        }
        "TCP_INVALID_ACK_SEQUENCE" => "the segment acknowledges something never sent",
        "TCP_RFC7323_PAWS" => "the segment's timestamp is too old (PAWS, RFC 7323)",
        "TCP_TOO_OLD_ACK" | "TCP_OLD_ACK" => "the segment's ACK is too old",
        "TCP_ACK_UNSENT_DATA" => "the segment acknowledges data never sent",
        "TCP_FLAGS" => "unexpected flags for the socket's state",
        "TCP_ABORT_ON_DATA" => {
            "data arrived for a socket whose application already closed it (tcp_rcv_state_process())"
        }
        "TCP_TIMEWAIT_SOCKET" => {
            "a TIME_WAIT socket answered a segment it could not accept (tcp_timewait_state_process() → TCP_TW_RST)"
        }
        "INVALID_SYN" => "a SYN for a connection already synchronized",
        "TCP_ABORT_ON_CLOSE" => {
            "close() with unread data in the receive queue: the data is discarded and the peer reset (tcp_close())"
        }
        "TCP_ABORT_ON_LINGER" => "an orphaned FIN_WAIT2 with tcp_linger2 < 0",
        "TCP_ABORT_ON_MEMORY" => "too many orphaned sockets or out of socket memory",
        "TCP_STATE" => {
            "tcp_disconnect() of a connected socket: SO_LINGER {on, 0} at close(), or connect(AF_UNSPEC)"
        }
        "TCP_KEEPALIVE_TIMEOUT" => "keepalive probes went unanswered",
        "TCP_DISCONNECT_WITH_DATA" => "tcp_disconnect() with data still queued",
        _ => return None,
    })
}

/// What a drop reason (`enum skb_drop_reason`, include/net/dropreason-core.h)
/// means, where twlab knows.
pub fn drop_hint(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "NO_SOCKET" => "no socket for the segment (nothing listens, or the 4-tuple is gone)",
        "TCP_RFC7323_PAWS" => {
            "PAWS: the segment's TSval is older than the socket's ts_recent (RFC 7323 §5, tcp_validate_incoming() → tcp_paws_discard())"
        }
        "TCP_RFC7323_PAWS_ACK" => "PAWS on a pure ACK",
        "TCP_RFC7323_TW_PAWS" => {
            "PAWS in TIME_WAIT: the segment is older than the TIME_WAIT's ts_recent (tcp_timewait_state_process())"
        }
        "TCP_RFC7323_TSECR" => "the segment echoes a timestamp never sent",
        "TCP_OLD_SEQUENCE" => {
            "the segment lies before the receive window: old data (tcp_sequence())"
        }
        "TCP_INVALID_SEQUENCE" => "the segment lies beyond the receive window (tcp_sequence())",
        "TCP_INVALID_END_SEQUENCE" => "the segment ends beyond the receive window",
        "TCP_OLD_DATA" => "data already received (a retransmission)",
        "TCP_RESET" => "an RST, consumed after it reset the socket",
        "TCP_CLOSE" => "a segment for a socket already closed",
        "TCP_FLAGS" => "flags not acceptable in the socket's state",
        "TCP_INVALID_SYN" => "a SYN the socket could not take",
        "TCP_LISTEN_OVERFLOW" => "the listener's accept queue is full",
        "TCP_ZEROWINDOW" => "the receive window is zero",
        "TCP_OVERWINDOW" => "the segment exceeds the receive window",
        "SOCKET_RCVBUFF" => "the socket's receive buffer is full",
        "TCP_OLD_ACK" | "TCP_TOO_OLD_ACK" => "an ACK older than what was already acknowledged",
        "TCP_ACK_UNSENT_DATA" => "an ACK for data never sent",
        "TCP_FASTOPEN" => "a Fast Open SYN's data was not taken",
        _ => return None,
    })
}

/// The time of day (UTC) with microseconds, from ns since the epoch.
pub fn clock_time(ns: u64) -> String {
    ClockTime(ns).to_string()
}

/// [`clock_time`], written in place.
struct ClockTime(u64);

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0 / 1_000_000_000;
        let us = (self.0 % 1_000_000_000) / 1_000;
        // "HH:MM:SS.uuuuuu" digit by digit: padded integers through the
        // formatter were a tenth of `twlab events`' time.
        let mut b = *b"00:00:00.000000";
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 2, (s / 3600) % 24);
        put(3, 2, (s / 60) % 60);
        put(6, 2, s % 60);
        put(9, 6, us);
        f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
    }
}

/// An address and port as `SocketAddr` shows them ("127.0.0.1:5000",
/// "[::1]:5000"), the IPv4 ones through [`crate::text::put_addr`] in one
/// piece: through the formatter, each octet is a call of its own, and the
/// addresses were a quarter of `twlab events`' time.
pub(crate) struct Addr(pub(crate) std::net::SocketAddr);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ipv6() {
            return write!(f, "{}", self.0);
        }
        // "255.255.255.255:65535" is 21 bytes.
        let mut buf = [0u8; 21];
        let left = {
            let mut w = &mut buf[..];
            crate::text::put_addr(&mut w, &self.0).map_err(|_| fmt::Error)?;
            w.len()
        };
        let n = buf.len() - left;
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

/// Who caused it, in words.
pub fn who(e: &Event) -> String {
    Who(e).to_string()
}

/// [`who`], written in place.
struct Who<'a>(&'a Event);

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        match e.context {
            Context::Process => match &e.comm {
                Some(c) => write!(f, "pid {} {c}", e.pid),
                None => write!(f, "pid {}", e.pid),
            },
            Context::Softirq => f.write_str("kernel, softirq"),
            Context::Irq => f.write_str("kernel, interrupt"),
        }
    }
}

/// The event's description without time and ends ("ESTABLISHED →
/// FIN_WAIT1", "RST sent, reason …", "dropped: …").
pub fn what(e: &Event) -> String {
    Desc(e).to_string()
}

/// [`what`], written in place.
struct Desc<'a>(&'a Event);

impl fmt::Display for Desc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.what {
            What::State { old, new } => {
                write!(f, "{} → {}", old.kernel_name(), new.kernel_name())
            }
            What::SendReset { reason, state, .. } => {
                let r = reason.as_deref().unwrap_or("?");
                write!(f, "RST sent, reason {r}")?;
                if let Some(h) = reset_hint(r) {
                    write!(f, ": {h}")?;
                }
                if let Some(st) = state.filter(|s| *s != TcpState::Closed) {
                    write!(f, " (socket {})", st.kernel_name())?;
                }
                Ok(())
            }
            What::ReceiveReset => f.write_str("RST received (tcp_reset())"),
            What::Drop { reason, .. } => {
                write!(f, "dropped, reason {reason}")?;
                if let Some(h) = drop_hint(reason) {
                    write!(f, ": {h}")?;
                }
                Ok(())
            }
            What::Retransmit { state } => {
                f.write_str("segment retransmitted")?;
                if let Some(s) = state {
                    write!(f, " ({})", s.kernel_name())?;
                }
                Ok(())
            }
            What::Destroy => f.write_str("socket freed (tcp_v4_destroy_sock())"),
        }
    }
}

/// One line: time, ends, what, who.
pub fn line(e: &Event) -> String {
    Line(e).to_string()
}

/// [`line()`], written in place: `twlab events` writes one per event, and
/// the story's loop makes ten a connection.
pub struct Line<'a>(pub &'a Event);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(f, "{}  {:<13} ", ClockTime(e.at_ns), e.what.name())?;
        match (e.local, e.peer) {
            (Some(l), Some(p)) => write!(f, "{} ⇄ {}", Addr(l), Addr(p)),
            (Some(l), None) => write!(f, "{}", Addr(l)),
            _ => f.write_str("(no socket)"),
        }?;
        write!(f, "  {}  [{}]", Desc(e), Who(e))
    }
}

/// A short form for a ladder row: "client ESTABLISHED → FIN_WAIT1 (pid
/// 4711 twlab)".
pub fn short(e: &Event, side: &str) -> String {
    let by = match e.context {
        Context::Process => format!(
            "  [pid {}{}]",
            e.pid,
            e.comm.as_deref().map_or(String::new(), |c| format!(" {c}"))
        ),
        _ => "  [softirq]".into(),
    };
    format!("{side} {}{by}", what(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written digits say what the formatter says.
    #[test]
    fn addresses_and_times_read_as_the_formatter_writes_them() {
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:5000",
            "10.20.30.40:65535",
            "255.255.255.255:65535",
            "1.2.3.4:9",
            "[::1]:443",
            "[::ffff:127.0.0.1]:80",
        ] {
            let sa: std::net::SocketAddr = a.parse().unwrap();
            assert_eq!(Addr(sa).to_string(), sa.to_string());
        }
        for ns in [
            0u64,
            999,
            1_000,
            59_999_999_999,
            86_399_999_999_999,
            1_764_857_343_303_716_123,
        ] {
            let s = ns / 1_000_000_000;
            let want = format!(
                "{:02}:{:02}:{:02}.{:06}",
                (s / 3600) % 24,
                (s / 60) % 60,
                s % 60,
                (ns % 1_000_000_000) / 1_000
            );
            assert_eq!(clock_time(ns), want);
        }
    }
}
