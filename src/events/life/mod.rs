//! Each connection's life from its events (like bcc's tcplife, with who
//! closed first and where the TIME_WAIT went), and a summary of them.
//!
//! What the tracepoint shows and what twlab reads from it: when this end
//! closed first and the peer's FIN arrives, `tcp_time_wait()` allocates a
//! timewait socket that takes over the 4-tuple and calls `tcp_done()` on
//! the full socket; `sock:inet_sock_set_state` therefore shows
//! FIN_WAIT2 → CLOSE (or CLOSING → CLOSE), never → TIME_WAIT. twlab names
//! that transition TIME_WAIT when no RST came with it. The timewait
//! socket's own end (its 60 s timer, or a new SYN that takes it over in
//! `tcp_timewait_state_process()` → TCP_TW_SYN, or the client's own
//! connect() in `tcp_twsk_unique()`) fires no tracepoint: twlab infers the
//! takeover from the next connection on the same 4-tuple.

use super::event::{Context, Event, What};
use crate::diag::TcpState;
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use std::net::SocketAddr;

mod summary;
mod words;

pub use summary::{Service, Summary};
use summary::{Tally, service_of};

/// Which way this end opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// connect(): SYN_SENT first.
    Client,
    /// Accepted from a listener: SYN_RECV first.
    Server,
}

/// How this end ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "how", rename_all = "kebab-case")]
pub enum Ending {
    /// Closed first; the 4-tuple went to a TIME_WAIT socket on this end.
    TimeWait,
    /// Closed first and orphaned before the peer's FIN came: a timewait
    /// socket in the FIN_WAIT2 substate holds the 4-tuple until the FIN
    /// comes (then TIME_WAIT) or tcp_fin_timeout ends it
    /// (tcp_time_wait(sk, TCP_FIN_WAIT2, tmo)).
    FinWait2Timewait,
    /// Closed second (LAST_ACK → CLOSE): no TIME_WAIT here.
    LastAck,
    /// This end sent an RST (with the kernel's reason).
    ResetSent {
        /// `sk_rst_reason`.
        reason: Option<String>,
    },
    /// An RST from the peer ended it.
    ResetReceived,
    /// connect() was answered with an RST: nothing listened there.
    Refused,
    /// connect() never got an answer it accepted (SYN_SENT → CLOSE).
    NeverEstablished,
    /// Any other path to CLOSE.
    Other {
        /// The state it left.
        from: TcpState,
    },
}

/// One end of one connection, from its first event to CLOSE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Life {
    /// This end.
    pub local: SocketAddr,
    /// The other end.
    pub peer: SocketAddr,
    /// Client or server end.
    pub role: Role,
    /// First event (ns since the Unix epoch).
    pub start_ns: u64,
    /// The CLOSE (ns since the Unix epoch).
    pub end_ns: u64,
    /// Every state, in order (TIME_WAIT as read above); in JSON as every
    /// state is (`time-wait`), in the text line the kernel's names.
    pub states: Vec<TcpState>,
    /// Did this end close first?
    pub closed_first: bool,
    /// The process whose close() (or shutdown()) started this end's close.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closer_pid: Option<i32>,
    /// Its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closer_comm: Option<std::sync::Arc<str>>,
    /// How it ended.
    pub ending: Ending,
    /// Segments sent again (tcp_retransmit_skb).
    pub retransmits: u32,
}

impl Life {
    /// Duration in milliseconds.
    pub fn ms(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e6
    }

    /// One line, like tcplife (the [`Display`](std::fmt::Display) form).
    pub fn line(&self) -> String {
        self.to_string()
    }
}

/// A socket being followed.
#[derive(Debug, Clone)]
struct Open {
    local: SocketAddr,
    peer: SocketAddr,
    role: Role,
    start_ns: u64,
    states: Vec<TcpState>,
    closed_first: bool,
    closer: Option<(i32, Option<std::sync::Arc<str>>)>,
    reset_sent: Option<Option<String>>,
    reset_received: bool,
    retransmits: u32,
}

/// A 4-tuple as the reader's map key: each address as IPv6 (an IPv4 one
/// mapped, as a dual-stack socket shows it, so both ends of one connection
/// meet whichever family each socket has) and both ports in one integer.
/// Three integers hash and compare faster than two `SocketAddr` enums field
/// by field, and the reader looks up a dozen keys per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Tuple {
    local: u128,
    peer: u128,
    ports: u32,
}

impl Tuple {
    fn new(local: SocketAddr, peer: SocketAddr) -> Tuple {
        let ip = |a: SocketAddr| match a.ip() {
            std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            std::net::IpAddr::V6(v6) => u128::from(v6),
        };
        Tuple {
            local: ip(local),
            peer: ip(peer),
            ports: u32::from(local.port()) << 16 | u32::from(peer.port()),
        }
    }
}

/// A TIME_WAIT twlab believes the kernel holds.
#[derive(Debug, Clone, Copy)]
struct Tw {
    since_ns: u64,
    role: Role,
}

/// What a TIME_WAIT became, inferred from the next connection on its
/// 4-tuple.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Takeover {
    /// The TIME_WAIT's end.
    pub local: SocketAddr,
    /// Its peer.
    pub peer: SocketAddr,
    /// How long it had been TIME_WAIT, in ms.
    pub after_ms: f64,
    /// Whose TIME_WAIT it was.
    pub role: Role,
    /// What took it over.
    pub by: &'static str,
}

impl Takeover {
    /// One line (the [`Display`](std::fmt::Display) form).
    pub fn line(&self) -> String {
        self.to_string()
    }
}

/// A TIME_WAIT lasts TCP_TIMEWAIT_LEN (60 s) and is freed by 62 s:
/// beliefs older than this are dropped.
const TW_FORGET_NS: u64 = 63_000_000_000;
/// Old TIME_WAIT beliefs are swept at most this often (event time).
const SWEEP_EVERY_NS: u64 = 1_000_000_000;
/// At most this many sockets and TIME_WAITs followed at once.
const MAX_FOLLOWED: usize = 200_000;

/// Follows sockets by their kernel address and makes a [`Life`] of each
/// at its CLOSE.
#[derive(Debug, Default)]
pub struct Lives {
    open: HashMap<u64, Open>,
    /// Ends closed by a call that sends its RST right after the state
    /// change (tcp_close() sets CLOSE, then tcp_send_active_reset()): held
    /// until that socket's next event.
    pending: HashMap<u64, Life>,
    /// Open sockets by (local, peer).
    by_tuple: HashMap<Tuple, u64>,
    /// (local, peer) of sockets that sent their FIN (→ FIN_WAIT1 or
    /// → LAST_ACK), with when.
    fin_from: HashMap<Tuple, u64>,
    /// Ends handed to a FIN_WAIT2 timewait socket, waiting for the peer's
    /// FIN to become TIME_WAIT.
    awaiting: HashMap<Tuple, Life>,
    tw: HashMap<Tuple, Tw>,
    /// Event time before which `tw` is not swept again: a sweep walks the
    /// whole map, so at most one a second (one per new connection made
    /// the reader quadratic once 1,024 TIME_WAITs were followed).
    next_sweep_ns: u64,
    /// Everything seen, for the summary, but the services.
    totals: Summary,
    /// Per service, by the server's address: what [`Summary::services`]
    /// shows, kept with plain keys (a string per end and a sorted map
    /// lookup was a tenth of the reader's time); made into words only
    /// when a summary is asked for.
    services: HashMap<SocketAddr, Tally>,
}

/// What one event meant.
#[derive(Debug, Default)]
pub struct Fed {
    /// Ends that ended with it.
    pub lives: Vec<Life>,
    /// TIME_WAITs it took over.
    pub takeovers: Vec<Takeover>,
    /// twlab's reading of the event where the tracepoint alone does not
    /// say it (FIN_WAIT2 → CLOSE is TIME_WAIT, or a FIN_WAIT2 timewait
    /// socket).
    pub reading: Option<Reading>,
}

/// What twlab reads into a state change that the tracepoint does not name
/// (no tracepoint fires in `tcp_time_wait()` or
/// `tcp_timewait_state_process()`). Words only when printed: most readings
/// are of events nobody prints (`twlab events --lives`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// FIN_WAIT2 or CLOSING → CLOSE with both FINs through: TIME_WAIT.
    TimeWait,
    /// FIN_WAIT2 → CLOSE before the peer's FIN: a FIN_WAIT2 timewait socket.
    FinWait2Timewait,
    /// This end's FIN (→ LAST_ACK) reaches the peer's FIN_WAIT2 timewait
    /// socket, which turns TIME_WAIT.
    PeerTimeWait {
        /// The peer end that now holds the TIME_WAIT.
        peer: SocketAddr,
    },
}

impl Lives {
    /// Take one event; return what ended with it and how twlab reads it.
    pub fn feed(&mut self, e: &Event) -> Fed {
        self.totals.events += 1;
        let mut lives = Vec::new();
        let mut tws = Vec::new();
        let mut reading = None;
        // Almost always empty: no hash and probe per event then.
        if !self.pending.is_empty()
            && let Some(mut life) = self.pending.remove(&e.sock)
        {
            if let What::SendReset { reason, .. } = &e.what {
                life.ending = Ending::ResetSent {
                    reason: reason.clone(),
                };
                life.closed_first = true;
                if life.closer_pid.is_none() && e.context == Context::Process {
                    life.closer_pid = Some(e.pid);
                    life.closer_comm = e.comm.clone();
                }
            }
            self.finish(life, &mut lives);
        }
        match &e.what {
            What::State { old, new } => {
                self.totals.state_changes += 1;
                reading = self.state(e, *old, *new, &mut lives, &mut tws);
            }
            What::SendReset { reason, .. } => {
                let r = reason.clone().unwrap_or_else(|| "?".into());
                *self.totals.resets_sent.entry(r).or_default() += 1;
                if let Some(o) = self.open.get_mut(&e.sock) {
                    o.reset_sent = Some(reason.clone());
                    if o.closer.is_none() && e.context == Context::Process {
                        o.closer = Some((e.pid, e.comm.clone()));
                        o.closed_first = true;
                    }
                }
            }
            What::ReceiveReset => {
                self.totals.resets_received += 1;
                if let Some(o) = self.open.get_mut(&e.sock) {
                    o.reset_received = true;
                }
            }
            What::Drop { reason, .. } => {
                *self.totals.drops.entry(reason.clone()).or_default() += 1;
            }
            What::Retransmit { .. } => {
                self.totals.retransmits += 1;
                if let Some(o) = self.open.get_mut(&e.sock) {
                    o.retransmits += 1;
                }
            }
            What::Destroy => {}
        }
        Fed {
            lives,
            takeovers: tws,
            reading,
        }
    }

    /// The ends still waiting for the peer's FIN, as they are (at exit).
    pub fn flush(&mut self) -> Vec<Life> {
        let v: Vec<Life> = self.awaiting.drain().map(|(_, l)| l).collect();
        for l in &v {
            self.count(l);
        }
        v
    }

    fn state(
        &mut self,
        e: &Event,
        old: TcpState,
        new: TcpState,
        lives: &mut Vec<Life>,
        tws: &mut Vec<Takeover>,
    ) -> Option<Reading> {
        let (Some(local), Some(peer)) = (e.local, e.peer) else {
            return None;
        };
        let mut reading = None;
        if matches!(new, TcpState::FinWait1 | TcpState::LastAck) {
            if self.fin_from.len() >= MAX_FOLLOWED {
                self.fin_from.clear();
            }
            self.fin_from.insert(Tuple::new(local, peer), e.at_ns);
        }
        // This end's FIN reaches a peer end that waits in a FIN_WAIT2
        // timewait socket: tcp_timewait_state_process() moves it to
        // TIME_WAIT (no tracepoint there).
        if new == TcpState::LastAck
            && let Some(mut l) = self.awaiting.remove(&Tuple::new(peer, local))
        {
            l.ending = Ending::TimeWait;
            l.states.push(TcpState::TimeWait);
            reading = Some(Reading::PeerTimeWait { peer });
            self.finish(l, lives);
        }
        // A new connection on a 4-tuple that twlab believes in TIME_WAIT.
        let opening = match (old, new) {
            (TcpState::Closed, TcpState::SynSent) => Some(Role::Client),
            (TcpState::Listen, TcpState::SynRecv) => Some(Role::Server),
            _ => None,
        };
        if let Some(role) = opening {
            self.forget_old(e.at_ns);
            self.fin_from.remove(&Tuple::new(local, peer));
            self.fin_from.remove(&Tuple::new(peer, local));
            if let Some(tw) = self.tw.remove(&Tuple::new(local, peer)) {
                let by = match (role, tw.role) {
                    (Role::Server, Role::Server) => {
                        "a new SYN from the client was accepted into the server's TIME_WAIT (tcp_timewait_state_process() → TCP_TW_SYN), the new connection is SYN_RECV"
                    }
                    (Role::Client, Role::Client) => {
                        "connect() on the same 4-tuple took over the client's own TIME_WAIT (tcp_twsk_unique())"
                    }
                    _ => "a new connection on the same 4-tuple",
                };
                let svc = service_of(tw.role, local, peer);
                self.services.entry(svc).or_default().counts.tw_taken_over += 1;
                tws.push(Takeover {
                    local,
                    peer,
                    after_ms: e.at_ns.saturating_sub(tw.since_ns) as f64 / 1e6,
                    role: tw.role,
                    by,
                });
            }
            if self.open.len() >= MAX_FOLLOWED {
                self.open.clear();
                self.by_tuple.clear();
            }
            self.by_tuple.insert(Tuple::new(local, peer), e.sock);
            self.open.insert(
                e.sock,
                Open {
                    local,
                    peer,
                    role,
                    start_ns: e.at_ns,
                    states: vec![new],
                    closed_first: false,
                    closer: None,
                    reset_sent: None,
                    reset_received: false,
                    retransmits: 0,
                },
            );
            return reading;
        }
        let Some(o) = self.open.get_mut(&e.sock) else {
            return reading;
        };
        // connect() without a port gets it after SYN_SENT is recorded.
        if (o.local, o.peer) != (local, peer) {
            self.by_tuple.remove(&Tuple::new(o.local, o.peer));
            self.by_tuple.insert(Tuple::new(local, peer), e.sock);
            (o.local, o.peer) = (local, peer);
        }
        // The first close of this end: ESTABLISHED → FIN_WAIT1 (closed
        // first) or CLOSE_WAIT → LAST_ACK (second), in the closer's call.
        if matches!(
            (old, new),
            (
                TcpState::Established | TcpState::SynRecv,
                TcpState::FinWait1
            )
        ) {
            o.closed_first = true;
        }
        if matches!(new, TcpState::FinWait1 | TcpState::LastAck)
            && o.closer.is_none()
            && e.context == Context::Process
        {
            o.closer = Some((e.pid, e.comm.clone()));
        }
        if new != TcpState::Closed {
            o.states.push(new);
            return reading;
        }
        let Some(o) = self.open.remove(&e.sock) else {
            return reading;
        };
        self.by_tuple.remove(&Tuple::new(local, peer));
        let ending = if let Some(reason) = &o.reset_sent {
            Ending::ResetSent {
                reason: reason.clone(),
            }
        } else if o.reset_received && old == TcpState::SynSent {
            Ending::Refused
        } else if o.reset_received {
            Ending::ResetReceived
        } else {
            match old {
                TcpState::Closing | TcpState::TimeWait => Ending::TimeWait,
                TcpState::FinWait2 if self.fin_from.contains_key(&Tuple::new(peer, local)) => {
                    Ending::TimeWait
                }
                TcpState::FinWait2 => Ending::FinWait2Timewait,
                TcpState::LastAck => Ending::LastAck,
                TcpState::SynSent => Ending::NeverEstablished,
                from => Ending::Other { from },
            }
        };
        let mut states = o.states;
        match ending {
            Ending::TimeWait => {
                states.push(TcpState::TimeWait);
                reading = Some(Reading::TimeWait);
            }
            Ending::FinWait2Timewait => {
                reading = Some(Reading::FinWait2Timewait);
            }
            _ => states.push(TcpState::Closed),
        }
        let life = Life {
            local: o.local,
            peer: o.peer,
            role: o.role,
            start_ns: o.start_ns,
            end_ns: e.at_ns,
            states,
            closed_first: o.closed_first,
            closer_pid: o.closer.as_ref().map(|c| c.0),
            closer_comm: o.closer.and_then(|c| c.1),
            ending,
            retransmits: o.retransmits,
        };
        if matches!(life.ending, Ending::Other { .. }) && e.context == Context::Process {
            if self.pending.len() >= MAX_FOLLOWED {
                self.pending.clear();
            }
            self.pending.insert(e.sock, life);
            return reading;
        }
        if life.ending == Ending::FinWait2Timewait
            && self.by_tuple.contains_key(&Tuple::new(peer, local))
        {
            if self.awaiting.len() >= MAX_FOLLOWED {
                self.awaiting.clear();
            }
            self.awaiting.insert(Tuple::new(local, peer), life);
            return reading;
        }
        self.finish(life, lives);
        reading
    }

    fn finish(&mut self, life: Life, lives: &mut Vec<Life>) {
        self.count(&life);
        if life.ending == Ending::TimeWait {
            if self.tw.len() >= MAX_FOLLOWED {
                self.tw.clear();
            }
            self.tw.insert(
                Tuple::new(life.local, life.peer),
                Tw {
                    since_ns: life.end_ns,
                    role: life.role,
                },
            );
        }
        lives.push(life);
    }

    fn forget_old(&mut self, now: u64) {
        if self.tw.len() > 1024 && now >= self.next_sweep_ns {
            self.tw
                .retain(|_, t| now.saturating_sub(t.since_ns) < TW_FORGET_NS);
            self.next_sweep_ns = now.saturating_add(SWEEP_EVERY_NS);
        }
    }

    /// The TIME_WAIT twlab believes on `local` ⇄ `peer`, since when (ns).
    pub fn time_wait(&self, local: SocketAddr, peer: SocketAddr) -> Option<u64> {
        self.tw.get(&Tuple::new(local, peer)).map(|t| t.since_ns)
    }
}

#[cfg(test)]
mod tests;
