//! The kernel's own events beside the captured segments: every state
//! change of both ends (exact, from `sock:inet_sock_set_state`), every RST
//! with its reason and every drop with its reason, on the segments' clock
//! (see [`crate::events`]), and the lines that cite them under the
//! annotated moments.

use super::Trace;
use super::annotate::Moment;
use super::decode::{Direction, Segment};
use crate::diag::TcpState;
use crate::events::{self, Event, Filter, Session, What, render};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::SystemTime;

/// One kernel event on the ladder.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct KernelEvent {
    /// Microseconds since the capture started (the segments' clock).
    pub at_us: u64,
    /// "client", "server", "listener", or "-" (a drop with no socket).
    pub side: &'static str,
    /// twlab's reading where the tracepoint alone does not say it (see
    /// [`crate::events::life`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reading: Option<String>,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

impl KernelEvent {
    /// The row's text after the time.
    pub fn text(&self) -> String {
        match &self.reading {
            Some(r) => format!("{}  {r}", render::short(&self.event, self.side)),
            None => render::short(&self.event, self.side),
        }
    }
}

/// Lines under one annotated moment that cite the kernel's events.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Cite {
    /// The moment's row (segment number).
    pub segment: usize,
    /// The lines.
    pub lines: Vec<String>,
}

/// The events session of one trace, held with the process-wide lock (the
/// trace's well-known ports are the same in every namespace).
pub(crate) struct Recording {
    session: Session,
    _lock: std::sync::MutexGuard<'static, ()>,
}

/// Where the ladder's states come from when the kernel's events are on.
pub const EXACT_SOURCE: &str = "states: exact, each change as the kernel made it (sock:inet_sock_set_state rows marked ◆); a call's row shows a sock_diag dump right after it returned";

/// Start recording the events of sockets on `port` (and `addrs`, if any),
/// or say in one line why not.
pub(crate) fn start(port: u16, addrs: &[std::net::IpAddr]) -> Result<Recording, String> {
    let lock = events::exclusive();
    let filter = Filter {
        ports: vec![port],
        addrs: addrs.to_vec(),
    };
    Session::open(filter).map(|session| Recording {
        session,
        _lock: lock,
    })
}

fn side(e: &Event, server: SocketAddr) -> &'static str {
    match (e.local, e.peer) {
        (Some(l), Some(p)) if l == server && p.port() == 0 => "listener",
        (Some(l), _) if l == server => "server",
        (Some(_), _) => "client",
        _ => "-",
    }
}

/// Drain the recording and put its events on the trace's clock; the
/// clock's description goes to the notes. Socket frees are left out: they
/// follow the CLOSE they belong to.
pub(crate) fn attach(t: &mut Trace, rec: Recording, start: SystemTime) {
    let mut s = rec.session;
    let evs = s.drain();
    let lost = s.missed() + s.skipped();
    t.notes.push(format!(
        "kernel events: {}, {}{}",
        s.source(),
        s.clock().describe(),
        if lost > 0 {
            format!("; {lost} events LOST")
        } else {
            String::new()
        }
    ));
    let server = t.server;
    let mut lives = events::Lives::default();
    t.kernel_events = evs
        .into_iter()
        .filter_map(|e| {
            let fed = lives.feed(&e);
            let reading = match (fed.reading, fed.takeovers.first()) {
                (r, None) => r.map(|r| r.to_string()),
                (_, Some(tw)) => Some(format!(
                    "TIME_WAIT of this 4-tuple → gone ({:.3} ms old): {}",
                    tw.after_ms, tw.by
                )),
            };
            (!matches!(e.what, What::Destroy)).then(|| KernelEvent {
                at_us: super::capture::since(start, e.at()),
                side: side(&e, server),
                reading,
                event: e,
            })
        })
        .collect();
    t.states_source = EXACT_SOURCE;
    t.cites = cites(&t.moments, &t.segments, &t.kernel_events);
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn state_of(k: &KernelEvent, side: &str, old: Option<TcpState>, new: TcpState) -> bool {
    k.side == side
        && matches!(&k.event.what, What::State { old: o, new: n }
            if *n == new && old.is_none_or(|x| x == *o))
}

/// The kernel's events that bear on each moment.
pub fn cites(moments: &[Moment], segs: &[Segment], evs: &[KernelEvent]) -> Vec<Cite> {
    let at = |n: usize| segs.get(n.wrapping_sub(1)).map_or(0, |s| s.at_us);
    let mut out = Vec::new();
    for m in moments {
        let (segment, lines) = match m {
            Moment::TimeWaitSyn { segment, .. } => {
                let t = at(*segment);
                let tw = evs.iter().rfind(|k| {
                    k.at_us <= t
                        && k.side == "server"
                        && matches!(
                            k.event.what,
                            What::State {
                                old: TcpState::FinWait2 | TcpState::Closing,
                                new: TcpState::Closed
                            }
                        )
                });
                let syn_recv = evs.iter().find(|k| {
                    k.at_us >= t && state_of(k, "server", Some(TcpState::Listen), TcpState::SynRecv)
                });
                let mut v = Vec::new();
                if let Some(k) = tw {
                    let fin = evs.iter().find(|c| {
                        c.at_us >= k.at_us
                            && c.at_us <= t
                            && state_of(c, "client", None, TcpState::LastAck)
                    });
                    match fin.filter(|_| {
                        // Read as a FIN_WAIT2 timewait socket, not as TIME_WAIT.
                        k.reading.as_deref().is_some_and(|r| r != events::Reading::TimeWait.to_string())
                    }) {
                        Some(f) => v.push(format!(
                            "kernel: the server's socket went to a FIN_WAIT2 timewait socket at {} (FIN_WAIT2 → CLOSE: tcp_time_wait()), TIME_WAIT at {} with the client's FIN (CLOSE_WAIT → LAST_ACK)",
                            ms(k.at_us),
                            ms(f.at_us)
                        )),
                        None => v.push(format!(
                            "kernel: the server's TIME_WAIT began at {} (FIN_WAIT2 → CLOSE: tcp_time_wait())",
                            ms(k.at_us)
                        )),
                    }
                }
                if let Some(k) = syn_recv {
                    v.push(format!(
                        "kernel: TIME_WAIT → gone, and at {} the new connection's LISTEN → SYN_RECV (sock:inet_sock_set_state): the SYN was taken as new",
                        ms(k.at_us)
                    ));
                }
                (*segment, v)
            }
            Moment::Takeover { segment, .. } => {
                let t = at(*segment);
                let connect = evs.iter().rfind(|k| {
                    k.at_us <= t && state_of(k, "client", Some(TcpState::Closed), TcpState::SynSent)
                });
                let v = connect
                    .map(|k| {
                        vec![format!(
                            "kernel: CLOSE → SYN_SENT at {} [{}]: connect() replaced the client's TIME_WAIT (no event marks a timewait socket's end)",
                            ms(k.at_us),
                            render::who(&k.event)
                        )]
                    })
                    .unwrap_or_default();
                (*segment, v)
            }
            Moment::DelayedDuplicate(d) => {
                let t = at(d.segment);
                let drop = evs.iter().find(|k| {
                    k.at_us + 1000 >= t
                        && matches!(k.event.what, What::Drop { .. })
                        && k.side == "server"
                });
                let v = match drop {
                    Some(k) => {
                        let What::Drop { reason, .. } = &k.event.what else {
                            unreachable!("filtered on Drop")
                        };
                        vec![format!(
                            "kernel: skb:kfree_skb at {}, reason {reason}{}{}",
                            ms(k.at_us),
                            render::drop_hint(reason).map_or(String::new(), |h| format!(": {h}")),
                            d.paws_estab_delta
                                .map_or(String::new(), |n| format!(" (beside PAWSEstab +{n})"))
                        )]
                    }
                    None => vec!["kernel: no drop event for the old segment: the new connection took it or answered it without a drop".into()],
                };
                (d.segment, v)
            }
            Moment::Reset { segment, dir, .. } => {
                let sender = match dir {
                    Direction::ToServer => "client",
                    Direction::ToClient => "server",
                };
                let t = at(*segment);
                let mut v = Vec::new();
                if let Some(k) = evs.iter().rfind(|k| {
                    k.at_us <= t + 1000
                        && k.side == sender
                        && matches!(k.event.what, What::SendReset { .. })
                }) {
                    v.push(format!(
                        "kernel: {} at {}",
                        render::short(&k.event, sender),
                        ms(k.at_us)
                    ));
                }
                if let Some(k) = evs.iter().find(|k| {
                    k.at_us + 1000 >= t
                        && k.side != sender
                        && matches!(k.event.what, What::ReceiveReset)
                }) {
                    v.push(format!(
                        "kernel: the {} received it at {} (tcp_reset()), its socket → CLOSE",
                        k.side,
                        ms(k.at_us)
                    ));
                }
                (*segment, v)
            }
        };
        if !lines.is_empty() {
            out.push(Cite { segment, lines });
        }
    }
    out
}
