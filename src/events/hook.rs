//! The kernel's events beside a failed call: `twlab client` (and `why
//! --try`) keep a [`Witness`] on the server's port while they run, and on
//! a failure print what the kernel did to that 4-tuple just before — the
//! old socket's last transitions and who made them, the RST and its
//! reason, the drop and its reason — next to the rule-based diagnosis.
//!
//! The witness reads nothing while things go well: the ring buffer keeps
//! the most recent events by itself (overwrite mode), and a failure drains
//! it once.

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
    session: Result<Mutex<(Session, VecDeque<Event>)>, String>,
}

impl Witness {
    /// Start watching `port` (either end). Without events (not root, no
    /// tracefs) the witness says so, in one line, beside each failure.
    pub fn start(port: u16) -> Witness {
        Witness {
            session: Session::open(Filter::ports(&[port]))
                .map(|s| Mutex::new((s, VecDeque::new()))),
        }
    }

    /// True when the kernel's events are being recorded.
    pub fn active(&self) -> bool {
        self.session.is_ok()
    }

    /// The events of `local` ⇄ `peer` (either end; `local` None: any
    /// socket to `peer`) recorded so far, newest last, as lines; or the
    /// one line that says why there are none.
    pub fn lines(&self, local: Option<SocketAddr>, peer: SocketAddr) -> Vec<String> {
        let m = match &self.session {
            Ok(m) => m,
            Err(why) => return vec![format!("kernel events: off ({why})")],
        };
        let Ok(mut g) = m.lock() else {
            return Vec::new();
        };
        let (session, recent) = &mut *g;
        // The events of the failed call itself may still sit in a per-CPU
        // buffer page the reader has not been woken for: drain them all.
        for e in session.drain() {
            if recent.len() >= KEEP {
                recent.pop_front();
            }
            recent.push_back(e);
        }
        let ends = |e: &Event| match (e.local, e.peer) {
            (Some(l), Some(p)) => {
                let ours = |a: SocketAddr, b: SocketAddr| b == peer && local.is_none_or(|x| x == a);
                ours(l, p) || ours(p, l)
            }
            _ => false,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let picked: Vec<&Event> = recent
            .iter()
            .filter(|e| ends(e) && !matches!(e.what, What::Destroy))
            .collect();
        let skip = picked.len().saturating_sub(MAX_LINES);
        let mut v: Vec<String> = picked[skip..]
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
            .collect();
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
