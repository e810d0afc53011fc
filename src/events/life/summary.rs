//! What `twlab events` prints on exit: the counts kept while events come
//! in (by the server's address and the closing process, plain keys), and
//! the summary in words made of them only when asked for.

use super::{Ending, Life, Lives, Role};
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One service's counts while events come in.
#[derive(Debug, Default, Clone)]
pub(super) struct Tally {
    /// Everything but `closers`.
    pub(super) counts: Service,
    /// The processes that closed first: (pid, comm) → count.
    closers: HashMap<(i32, Option<std::sync::Arc<str>>), u64>,
}

/// At most this many distinct closing processes counted per service.
const MAX_CLOSERS: usize = 64;

/// What `twlab events` prints on exit.
#[derive(Debug, Default, Clone, Serialize, schemars::JsonSchema)]
pub struct Summary {
    /// Events seen.
    pub events: u64,
    /// State changes seen.
    pub state_changes: u64,
    /// RSTs sent, by reason.
    pub resets_sent: BTreeMap<String, u64>,
    /// RSTs received.
    pub resets_received: u64,
    /// Drops, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Events the kernel lost (ring buffer overrun).
    pub lost: u64,
    /// Events the kernel did not hand to twlab's BPF program because
    /// another BPF program ran on that CPU then (`trace_call_bpf()`: a
    /// softirq's event while the program ran for a system call's, say).
    /// Counted by kernels from 6.7; tracefs has no such gap.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// Events whose context (a system call, or the kernel) the BPF
    /// programs could not tell; read as the kernel's, so no process is
    /// named for them. 0 unless this kernel's per-CPU layout is unusual.
    #[serde(skip_serializing_if = "is_zero")]
    pub unsure_context: u64,
    /// Per service (the server's address): the connections' ends.
    pub services: BTreeMap<String, Service>,
}

/// Connections to one server address.
#[derive(Debug, Default, Clone, Serialize, schemars::JsonSchema)]
pub struct Service {
    /// Client ends that ended.
    pub client_ends: u64,
    /// Server ends that ended.
    pub server_ends: u64,
    /// Closed first by the client side (TIME_WAIT on the client side).
    pub client_closed_first: u64,
    /// Closed first by the server side (TIME_WAIT on the server side).
    pub server_closed_first: u64,
    /// Ends that sent an RST.
    pub reset: u64,
    /// connect()s refused (RST in answer to the SYN).
    pub refused: u64,
    /// The processes that closed first, by "pid comm": count.
    pub closers: BTreeMap<String, u64>,
    /// TIME_WAITs taken over by a new connection on the same 4-tuple.
    pub tw_taken_over: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Summary {
    /// The summary in lines.
    pub fn lines(&self) -> Vec<String> {
        let mut v = vec![format!(
            "summary: {} events, {} state changes, {} retransmits{}",
            thousands(self.events),
            thousands(self.state_changes),
            thousands(self.retransmits),
            if self.lost > 0 {
                format!(
                    ", {} LOST by the kernel (buffer overrun)",
                    thousands(self.lost)
                )
            } else {
                String::new()
            }
        )];
        if self.skipped > 0 {
            v.push(format!(
                "  {} events LOST: the kernel skipped twlab's BPF program while another BPF program ran on that CPU (`--via tracefs` has no such gap)",
                thousands(self.skipped)
            ));
        }
        if self.unsure_context > 0 {
            v.push(format!(
                "  {} events of unknown context (system call or kernel): no process named for them",
                thousands(self.unsure_context)
            ));
        }
        for (svc, s) in &self.services {
            let n = s.client_ends.max(s.server_ends);
            let closers: Vec<String> = s
                .closers
                .iter()
                .map(|(k, c)| format!("{k} ×{}", thousands(*c)))
                .collect();
            let mut parts = Vec::new();
            if s.client_closed_first > 0 {
                parts.push(format!(
                    "{} closed first by the client: {} TIME_WAIT on the client side",
                    thousands(s.client_closed_first),
                    thousands(s.client_closed_first)
                ));
            }
            if s.server_closed_first > 0 {
                parts.push(format!(
                    "{} closed first by the server: {} TIME_WAIT on the server side",
                    thousands(s.server_closed_first),
                    thousands(s.server_closed_first)
                ));
            }
            if s.reset > 0 {
                parts.push(format!("{} ended with an RST", thousands(s.reset)));
            }
            if s.refused > 0 {
                parts.push(format!("{} refused", thousands(s.refused)));
            }
            v.push(format!(
                "  {} connections to {svc}: {}{}{}",
                thousands(n),
                if parts.is_empty() {
                    "none closed yet".to_string()
                } else {
                    parts.join("; ")
                },
                if closers.is_empty() {
                    String::new()
                } else {
                    format!(" (closed first by {})", closers.join(", "))
                },
                if s.tw_taken_over > 0 {
                    format!(
                        "; {} TIME_WAIT taken over by a new connection",
                        thousands(s.tw_taken_over)
                    )
                } else {
                    String::new()
                }
            ));
        }
        for (r, n) in &self.resets_sent {
            v.push(format!("  RST sent ×{}: {r}", thousands(*n)));
        }
        if self.resets_received > 0 {
            v.push(format!(
                "  RST received ×{}",
                thousands(self.resets_received)
            ));
        }
        for (r, n) in &self.drops {
            v.push(format!("  dropped ×{}: {r}", thousands(*n)));
        }
        v
    }
}

/// The server's address of a connection: the service it is counted under.
pub(super) fn service_of(role: Role, local: SocketAddr, peer: SocketAddr) -> SocketAddr {
    match role {
        Role::Client => peer,
        Role::Server => local,
    }
}

impl Lives {
    pub(super) fn count(&mut self, l: &Life) {
        let t = self
            .services
            .entry(service_of(l.role, l.local, l.peer))
            .or_default();
        let s = &mut t.counts;
        match l.role {
            Role::Client => s.client_ends += 1,
            Role::Server => s.server_ends += 1,
        }
        if l.ending == Ending::Refused {
            s.refused += 1;
        } else if matches!(l.ending, Ending::ResetSent { .. }) {
            s.reset += 1;
        } else if l.closed_first {
            match l.role {
                Role::Client => s.client_closed_first += 1,
                Role::Server => s.server_closed_first += 1,
            }
        }
        if l.closed_first
            && let Some(p) = l.closer_pid
        {
            let key = (p, l.closer_comm.clone());
            if t.closers.len() < MAX_CLOSERS || t.closers.contains_key(&key) {
                *t.closers.entry(key).or_default() += 1;
            }
        }
    }

    /// The summary of everything seen so far (`lost` is the session's to
    /// fill in).
    pub fn summary(&self) -> Summary {
        let mut s = self.totals.clone();
        s.services = self
            .services
            .iter()
            .map(|(addr, t)| {
                let mut svc = t.counts.clone();
                svc.closers = t
                    .closers
                    .iter()
                    .map(|((p, c), n)| {
                        let key = match c {
                            Some(c) => format!("pid {p} {c}"),
                            None => format!("pid {p}"),
                        };
                        (key, *n)
                    })
                    .collect();
                (addr.to_string(), svc)
            })
            .collect();
        s
    }
}
