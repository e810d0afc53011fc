//! The socket that holds a port's bind bucket or the old 4-tuple, reduced to
//! what the rules look at: its [`Role`] on its port (a dump's socket), and
//! the [`Holder`] built from the kernel's view of one end of the old
//! connection.

use super::TIMEWAIT_LEN_MS;
use crate::diag::{Side, SockEntry, TcpState, TupleView};
use crate::experiment::{Experiment, When};
use crate::socket::SocketOpts;
use serde::Serialize;

/// What a socket is doing on its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// listen() was called.
    Listener,
    /// bind() without listen() or connect() (diag state CLOSE, dumped with
    /// `idiag_states` bit 13, TCP_BOUND_INACTIVE), or a reset socket whose
    /// open descriptor keeps its explicitly bound port.
    BoundOnly,
    /// A TIME_WAIT mini-socket (or an orphaned FIN_WAIT2 kept as one).
    TimeWait,
    /// A connection in any other state.
    Connected,
}

/// The role of a socket.
pub fn role(e: &SockEntry) -> Role {
    if e.state == TcpState::Listen {
        Role::Listener
    } else if e.state == TcpState::TimeWait || e.is_timewait_sock() {
        Role::TimeWait
    } else if e.state == TcpState::Closed {
        Role::BoundOnly
    } else {
        Role::Connected
    }
}

/// What holds a port's bind bucket or a 4-tuple, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The state the kernel shows; `Closed` for a socket that got an RST and
    /// left the established hash but whose descriptor, still open, keeps its
    /// explicitly bound port (SOCK_BINDPORT_LOCK: `tcp_set_state(TCP_CLOSE)`
    /// skips `inet_put_port`).
    pub(crate) state: TcpState,
    /// A timewait mini-socket (`inet_timewait_sock`): TIME_WAIT, or an
    /// orphaned FIN_WAIT2 kept as one (`tcp_time_wait(sk, TCP_FIN_WAIT2, ..)`
    /// from `tcp_close`/`tcp_rcv_state_process`). diag shows the substate
    /// with the timewait timer (`inet_twsk_diag_fill`).
    pub(crate) mini: bool,
    /// Still in the established hash (so it blocks the 4-tuple).
    pub(crate) hashed: bool,
    /// Timewait age in ms (TCP_TIMEWAIT_LEN minus the time left), for a
    /// real TIME_WAIT substate.
    pub(crate) tw_age_ms: Option<u32>,
    /// The socket options it carries (a TIME_WAIT keeps `sk_reuse` and
    /// `sk_reuseport`, `inet_twsk_alloc`; accepted sockets inherit the
    /// listener's, `sk_clone_lock`).
    pub(crate) opts: SocketOpts,
}

fn holder_from_entry(e: &SockEntry, opts: SocketOpts) -> Holder {
    let mini = e.state == TcpState::TimeWait || e.is_timewait_sock();
    let tw_age_ms = match (e.state, e.timer) {
        (TcpState::TimeWait, Some(t)) => Some(TIMEWAIT_LEN_MS.saturating_sub(t.expires_ms)),
        _ => None,
    };
    Holder {
        state: e.state,
        mini,
        hashed: true,
        tw_age_ms,
        opts,
    }
}

/// Is a side's descriptor still open at the step? Only the end that did not
/// close first, and only when the step comes before that end closed
/// (`When::AtOnce`, `When::AfterAck`).
pub fn fd_open(x: &Experiment, side: Side) -> bool {
    matches!(x.when, When::AtOnce | When::AfterAck) && x.close.side != side
}

/// The holder of one end of the old connection.
pub(super) fn holder(x: &Experiment, view: &TupleView, side: Side) -> Option<Holder> {
    let (entry, opts, port_locked) = match side {
        // A fixed client port was bound explicitly (SOCK_BINDPORT_LOCK);
        // ephemeral and bind-no-port ports were chosen by connect() and are
        // released at TCP_CLOSE.
        Side::Client => (view.client.as_ref(), x.client, x.client_port.is_fixed()),
        // Accepted sockets do NOT inherit the listener's bind lock:
        // sk_clone_lock() sets `sk_userlocks & ~SOCK_BINDPORT_LOCK`, so a
        // reset child leaves the port at TCP_CLOSE even with its descriptor
        // open (first found by a matrix mismatch, then read in the source).
        Side::Server => (view.server.as_ref(), x.listener, false),
    };
    match entry {
        Some(e) => Some(holder_from_entry(e, opts)),
        None if fd_open(x, side) && port_locked => Some(Holder {
            state: TcpState::Closed,
            mini: false,
            hashed: false,
            tw_age_ms: None,
            opts,
        }),
        None => None,
    }
}

/// "the client's TIME_WAIT", "the server's orphaned FIN_WAIT2 (a timewait
/// mini-socket)", "the client's reset socket (…)".
pub(super) fn describe_holder(side: Side, h: &Holder) -> String {
    if !h.hashed {
        format!("the {side}'s reset socket (CLOSE, descriptor still open)")
    } else if h.mini && h.state == TcpState::FinWait2 {
        format!("the {side}'s orphaned FIN_WAIT2 (a timewait mini-socket)")
    } else {
        format!("the {side}'s {}", h.state)
    }
}

/// "TIME_WAIT", "FIN_WAIT2 (timewait mini-socket)".
pub(super) fn holder_state_name(h: &Holder) -> String {
    if h.mini && h.state != TcpState::TimeWait {
        format!("{} (timewait mini-socket)", h.state)
    } else {
        h.state.to_string()
    }
}
