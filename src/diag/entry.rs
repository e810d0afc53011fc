//! Decoded sockets: one kernel entry ([`SockEntry`]) and the two ends of a
//! 4-tuple ([`TupleView`]).

use super::TcpState;
use crate::socket::Family;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Which timer runs on a socket (`idiag_timer`), with ss's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TimerKind {
    /// Retransmission timer ("on" in ss).
    Retransmit,
    /// Keepalive timer.
    Keepalive,
    /// The TIME_WAIT timer (`tw_timer`, TCP_TIMEWAIT_LEN = 60 s on Linux).
    Timewait,
    /// Zero window probe timer ("persist" in ss).
    Persist,
}

impl TimerKind {
    /// The name in JSON, in every command (its serde name): `retransmit`
    /// where [`TimerKind::ss_name`], iproute2's word, says `on`.
    pub fn json_name(self) -> &'static str {
        match self {
            TimerKind::Retransmit => "retransmit",
            TimerKind::Keepalive => "keepalive",
            TimerKind::Timewait => "timewait",
            TimerKind::Persist => "persist",
        }
    }

    /// The name `ss -o` prints.
    pub fn ss_name(self) -> &'static str {
        match self {
            TimerKind::Retransmit => "on",
            TimerKind::Keepalive => "keepalive",
            TimerKind::Timewait => "timewait",
            TimerKind::Persist => "persist",
        }
    }
}

/// A running timer and the time left on it when the kernel answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Timer {
    /// Which timer.
    pub kind: TimerKind,
    /// Milliseconds left (`idiag_expires`).
    pub expires_ms: u32,
    /// Retransmissions so far (`idiag_retrans`).
    pub retrans: u8,
}

/// One TCP socket as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SockEntry {
    /// IPv4 or IPv6.
    pub family: Family,
    /// The TCP state (`tw_substate` for a timewait mini socket).
    pub state: TcpState,
    /// This socket's own address.
    pub local: SocketAddr,
    /// The peer's address (unspecified, port 0, for listeners).
    pub peer: SocketAddr,
    /// The running timer, if any. Only Linux's sock_diag reports timers:
    /// the tables read on Windows, macOS and FreeBSD carry none, so there
    /// this is always `None` (and a TIME_WAIT shows no time left).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timer: Option<Timer>,
    /// Bytes received, not read (`idiag_rqueue`; the accept queue length
    /// for a listener).
    pub recv_q: u32,
    /// Bytes sent, not acknowledged (`idiag_wqueue`; the backlog for a
    /// listener).
    pub send_q: u32,
    /// Owner uid; 0 for TIME_WAIT, which has no owner (inet_twsk_diag_fill),
    /// and on Windows, whose table has no uid.
    pub uid: u32,
    /// Socket inode; 0 for TIME_WAIT (the socket file is gone).
    pub inode: u32,
    /// IPV6_V6ONLY as the kernel holds it (`INET_DIAG_SKV6ONLY`), for the
    /// IPv6 sockets the kernel reports it for: listeners and bound-only
    /// sockets. `None` for the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v6only: Option<bool>,
    /// The owning process, where the system's table names it: Windows
    /// (`GetExtendedTcpTable`'s dwOwningPid; 0 for TIME_WAIT, which has no
    /// owner) and macOS (`so_last_pid`). `None` on Linux, whose sock_diag
    /// gives the inode instead (`ss -p` maps it to processes through
    /// /proc), and on FreeBSD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl SockEntry {
    /// A TIME_WAIT as sock_diag reports one (`inet_twsk_diag_fill()`): a
    /// timewait mini socket with `left` on its timer, no owner (uid 0,
    /// inode 0), empty queues. For tests and for a library user's table.
    ///
    /// ```
    /// use std::time::Duration;
    /// use twlab::diag::{SockEntry, TcpState};
    /// let tw = SockEntry::time_wait(
    ///     "127.0.0.1:40000".parse().unwrap(),
    ///     "127.0.0.1:8080".parse().unwrap(),
    ///     Duration::from_secs(59),
    /// );
    /// assert_eq!(tw.state, TcpState::TimeWait);
    /// assert!(tw.is_timewait_sock());
    /// assert_eq!(tw.time_wait_left(), Some(Duration::from_secs(59)));
    /// ```
    pub fn time_wait(local: SocketAddr, peer: SocketAddr, left: Duration) -> Self {
        SockEntry {
            family: Family::of(&local),
            state: TcpState::TimeWait,
            local,
            peer,
            timer: Some(Timer {
                kind: TimerKind::Timewait,
                expires_ms: u32::try_from(left.as_millis()).unwrap_or(u32::MAX),
                retrans: 0,
            }),
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode: 0,
            v6only: None,
            pid: None,
        }
    }

    /// A full socket in `state` (a listener, a connected or closing end)
    /// owned by `uid`, with no timer and empty queues; `peer` is
    /// `0.0.0.0:0` (or `[::]:0`) for a listener or a bound-only socket.
    pub fn full(state: TcpState, local: SocketAddr, peer: SocketAddr, uid: u32) -> Self {
        SockEntry {
            family: Family::of(&local),
            state,
            local,
            peer,
            timer: None,
            recv_q: 0,
            send_q: 0,
            uid,
            inode: 0,
            v6only: None,
            pid: None,
        }
    }

    /// For TIME_WAIT: the time left before the kernel frees the 4-tuple.
    pub fn time_wait_left(&self) -> Option<Duration> {
        match (self.state, self.timer) {
            (TcpState::TimeWait, Some(t)) => Some(Duration::from_millis(t.expires_ms as u64)),
            _ => None,
        }
    }

    /// Is this a TIME_WAIT mini socket (`struct inet_timewait_sock`)? Only
    /// `inet_twsk_diag_fill()` reports `idiag_timer == 3`; such a socket
    /// reports its `tw_substate` as state: TIME_WAIT, or FIN_WAIT2 for an
    /// orphaned FIN_WAIT2 socket that `tcp_time_wait(sk, TCP_FIN_WAIT2, tmo)`
    /// turned into a mini socket (tcp_close / tcp_rcv_state_process).
    pub fn is_timewait_sock(&self) -> bool {
        matches!(self.timer, Some(t) if t.kind == TimerKind::Timewait)
    }

    /// Time left on whatever timer runs on the socket, if any.
    pub fn timer_left(&self) -> Option<Duration> {
        self.timer
            .map(|t| Duration::from_millis(u64::from(t.expires_ms)))
    }

    /// "TIME_WAIT, 58.9 s left" / "FIN_WAIT2 (orphaned, timewait timer
    /// 59.8 s left)" / "ESTABLISHED".
    pub fn describe(&self) -> String {
        if let Some(left) = self.time_wait_left() {
            return format!("{}, {:.1} s left", self.state, left.as_secs_f64());
        }
        // Off Linux the table has no timers: say so rather than leave the
        // time out silently.
        if self.state == TcpState::TimeWait && self.timer.is_none() && !cfg!(target_os = "linux") {
            return format!(
                "{} (time left unknown: this system's table has no timers)",
                self.state
            );
        }
        match (self.is_timewait_sock(), self.timer_left()) {
            (true, Some(left)) => format!(
                "{} (orphaned, timewait timer {:.1} s left)",
                self.state,
                left.as_secs_f64()
            ),
            _ => self.state.to_string(),
        }
    }
}

/// The kernel's view of one connection's 4-tuple, from both ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TupleView {
    /// The client's end: local = client address, peer = server address.
    pub client: Option<SockEntry>,
    /// The server's end: local = server address, peer = client address.
    pub server: Option<SockEntry>,
}

impl TupleView {
    /// The client end's state, if it exists.
    pub fn client_state(&self) -> Option<TcpState> {
        self.client.as_ref().map(|e| e.state)
    }
    /// The server end's state, if it exists.
    pub fn server_state(&self) -> Option<TcpState> {
        self.server.as_ref().map(|e| e.state)
    }

    /// "client TIME_WAIT (58.9 s left), server gone".
    pub fn describe(&self) -> String {
        let side = |e: &Option<SockEntry>| match e {
            Some(e) => e.describe(),
            None => "gone".to_string(),
        };
        format!(
            "client {}; server {}",
            side(&self.client),
            side(&self.server)
        )
    }

    /// Which side holds TIME_WAIT, if any.
    pub fn time_wait_holder(&self) -> Option<Side> {
        if self.client_state() == Some(TcpState::TimeWait) {
            Some(Side::Client)
        } else if self.server_state() == Some(TcpState::TimeWait) {
            Some(Side::Server)
        } else {
            None
        }
    }
}

/// One end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The end that called connect().
    Client,
    /// The end that accepted.
    Server,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
        })
    }
}
