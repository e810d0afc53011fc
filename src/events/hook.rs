//! The kernel's events beside a failed call: `twlab client` keeps a
//! [`Witness`] on the server's port while it runs, and on a failure
//! prints what the kernel did to that 4-tuple just before — the
//! old socket's last transitions and who made them, the RST and its
//! reason, the drop and its reason — next to the rule-based diagnosis.
//!
//! The witness reads nothing while things go well: the ring buffer keeps
//! the most recent events by itself (overwrite mode), and a failure drains
//! it once.
//!
//! [`tuple_lines`] and [`verdict`] say the same for any list of events:
//! `why connect --try` records its own attempt with them.

use super::{Event, Filter, Session, What, render};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;

/// How many recent events of the watched port are kept between failures.
const KEEP: usize = 4096;
/// At most this many event lines beside one failure.
const MAX_LINES: usize = 12;

/// A session on one port, drained only when a failure asks.
pub struct Witness {
    state: Mutex<State>,
}

/// A witness's session: made on a thread of its own, so the first attempt
/// does not wait the ~30 ms a tracefs instance takes to make.
enum State {
    Starting(std::thread::JoinHandle<Result<Session, String>>),
    Ready(Box<Session>, VecDeque<Event>),
    Off(String),
    /// Between states (a join in progress).
    Gone,
}

impl State {
    /// The session, once its thread has finished (never waits).
    fn settle(&mut self) {
        if matches!(self, State::Starting(h) if h.is_finished()) {
            let State::Starting(h) = std::mem::replace(self, State::Gone) else {
                return;
            };
            *self = match h.join() {
                Ok(Ok(s)) => State::Ready(Box::new(s), VecDeque::new()),
                Ok(Err(why)) => State::Off(why),
                Err(_) => State::Off("the events thread panicked".into()),
            };
        }
    }
}

impl Drop for Witness {
    /// A session still being made is waited for, so that its tracefs
    /// instance is removed (instances are global to the kernel).
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .map(|s| std::mem::replace(s, State::Gone))
            .unwrap_or(State::Gone);
        if let State::Starting(h) = state {
            let _ = h.join();
        }
    }
}

impl Witness {
    /// Start watching `port` (either end), on a thread. Without events
    /// (not root, no tracefs) the witness says so, in one line, beside
    /// each failure.
    pub fn start(port: u16) -> Witness {
        let starting = std::thread::Builder::new()
            .name("twlab-witness".into())
            // The kernel's default buffer: a failure reads at most the
            // last few thousand events of one port.
            .spawn(move || {
                Session::open_sized(Filter::ports(&[port]), None).map_err(|e| e.to_string())
            });
        Witness {
            state: Mutex::new(match starting {
                Ok(h) => State::Starting(h),
                Err(e) => State::Off(format!("spawn: {e}")),
            }),
        }
    }

    /// True when the kernel's events are being recorded.
    pub fn active(&self) -> bool {
        self.state.lock().is_ok_and(|mut s| {
            s.settle();
            matches!(*s, State::Ready(..))
        })
    }

    /// The events of `local` ⇄ `peer` (either end; `local` None: any
    /// socket to `peer`) recorded so far, newest last, as lines; or the
    /// one line that says why there are none.
    pub fn lines(&self, local: Option<SocketAddr>, peer: SocketAddr) -> Vec<String> {
        let Ok(mut g) = self.state.lock() else {
            return Vec::new();
        };
        g.settle();
        let (session, recent) = match &mut *g {
            State::Ready(session, recent) => (session, recent),
            State::Off(why) => return vec![format!("kernel events: off ({why})")],
            State::Starting(_) | State::Gone => {
                return vec![
                    "kernel events: not recording yet (this failure came before the tracefs session was ready)".into(),
                ];
            }
        };
        // The events of the failed call itself may still sit in a per-CPU
        // buffer page the reader has not been woken for: drain them all.
        for e in session.drain() {
            if recent.len() >= KEEP {
                recent.pop_front();
            }
            recent.push_back(e);
        }
        // No one-line verdict here: these events span earlier connections
        // on the 4-tuple too (an old RST is not why this call failed); the
        // lines carry their ages. `why connect --try` records only its own
        // attempt and gives one.
        let recent = recent.make_contiguous();
        let mut v = tuple_lines(recent, local, peer);
        if v.is_empty() {
            v.push(format!(
                "kernel events: none for this 4-tuple in the last {} events of port {}",
                recent.len(),
                peer.port()
            ));
        }
        v
    }
}

/// Does `e` belong to `local` ⇄ `peer` (either end; `local` None: any
/// socket to `peer`)?
fn on_tuple(e: &Event, local: Option<SocketAddr>, peer: SocketAddr) -> bool {
    match (e.local, e.peer) {
        (Some(l), Some(p)) => {
            let ours = |a: SocketAddr, b: SocketAddr| b == peer && local.is_none_or(|x| x == a);
            ours(l, p) || ours(p, l)
        }
        _ => false,
    }
}

/// The last `MAX_LINES` (12) events of `local` ⇄ `peer` among `events`, as
/// lines: how long ago, which end, what, who.
pub fn tuple_lines(events: &[Event], local: Option<SocketAddr>, peer: SocketAddr) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // A connect() without bind() sets SYN_SENT before
    // inet_hash_connect() picks its port (tcp_v4_connect()): that event
    // has port 0, and belongs to the tuple by its socket's address.
    let socks: std::collections::HashSet<u64> = events
        .iter()
        .filter(|e| e.sock != 0 && on_tuple(e, local, peer))
        .map(|e| e.sock)
        .collect();
    let picked: Vec<&Event> = events
        .iter()
        .filter(|e| on_tuple(e, local, peer) || (e.sock != 0 && socks.contains(&e.sock)))
        .filter(|e| !matches!(e.what, What::Destroy))
        .collect();
    let skip = picked.len().saturating_sub(MAX_LINES);
    picked[skip..]
        .iter()
        .map(|e| {
            let side = if e.local.is_some_and(|l| l == peer) {
                "peer end"
            } else {
                "this end"
            };
            format!(
                "kernel, {:.3} ms ago: {} {}",
                now.saturating_sub(e.at_ns) as f64 / 1e6,
                render::short(e, side),
                e.local.map_or(String::new(), |l| format!("({l})"))
            )
        })
        .collect()
}

/// The kernel's own reason for what happened to `local` ⇄ `peer`, in one
/// line, when its events hold one: a segment of the connection dropped
/// (`kfree_skb`'s reason), an RST sent by the peer's kernel
/// (`tcp_send_reset`'s `sk_rst_reason`), an RST this end received.
pub fn verdict(events: &[Event], local: SocketAddr, peer: SocketAddr) -> Option<String> {
    let mine: Vec<&Event> = events
        .iter()
        .filter(|e| on_tuple(e, Some(local), peer))
        .collect();
    // The peer's RST first: a SYN to a closed port is dropped (NO_SOCKET)
    // and answered with an RST, and the RST is what connect() reports.
    if let Some(e) = mine
        .iter()
        .find(|e| e.local == Some(peer) && matches!(e.what, What::SendReset { .. }))
    {
        return Some(format!(
            "the RST came from the peer's kernel: {}",
            render::what(e)
        ));
    }
    if let Some(e) = mine.iter().find(|e| matches!(e.what, What::Drop { .. })) {
        let end = if e.local == Some(peer) {
            "the peer's"
        } else {
            "this end's"
        };
        return Some(format!(
            "the kernel dropped a segment of this connection at {end} side: {}",
            render::what(e)
        ));
    }
    if mine
        .iter()
        .any(|e| e.local == Some(local) && matches!(e.what, What::ReceiveReset))
    {
        return Some("an RST reached this end (tcp_reset())".into());
    }
    None
}
