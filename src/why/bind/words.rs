//! The words of a bind() answer: the explanation that names the rule and
//! the holder that decided it, the flags about the port, and the fixes,
//! chosen by what holds the port. The verdicts come from the parent
//! module's holders; nothing here decides whether bind() succeeds.

use super::BindQuestion;
use crate::diag::TcpState;
use crate::model::RuleId;
use crate::socket::SocketOpts;
use crate::sysctl::NetSysctls;
use crate::why::diagnosis::{Blocking, Expect, Flag, HolderClass, HolderReport, ReuseKnown};
use crate::why::fix::Fix;
use crate::why::table::{Origin, Role};

/// The sentence for sock_diag's blind spot.
pub(super) fn reuse_unknown_note() -> String {
    "SO_REUSEADDR/SO_REUSEPORT of the holders cannot be read: sock_diag has no attribute for sk_reuse/sk_reuseport, and a TIME_WAIT keeps the flags of the socket it came from (inet_twsk_alloc()), accepted sockets those of their listener. If a holder has SO_REUSEADDR and is not listening, a new socket with SO_REUSEADDR shares the port; if it has SO_REUSEPORT (same uid, or it is TIME_WAIT), a new socket with SO_REUSEPORT does; without either it blocks. --try asks the kernel.".into()
}

pub(super) fn bind_explanation(
    q: &BindQuestion,
    holders: &[HolderReport],
    expect: &Expect,
) -> (RuleId, String) {
    let overlapping: Vec<&HolderReport> = holders
        .iter()
        .filter(|h| h.blocking != Blocking::NoOverlap)
        .collect();
    let port = q.addr.port();
    if overlapping.is_empty() {
        return if holders.is_empty() {
            (
                RuleId::BindFree,
                "the port's bind bucket is empty, so inet_csk_get_port() gives the port".into(),
            )
        } else {
            (
                RuleId::BindDisjoint,
                format!(
                    "the {} socket(s) in port {port}'s bind bucket are on addresses that do not overlap {}{}, so inet_csk_get_port() gives the port",
                    holders.len(),
                    q.addr.ip(),
                    if q.addr.is_ipv6() && q.addr.ip().is_unspecified() && q.v6only {
                        " (V6ONLY: no IPv4 address)"
                    } else {
                        ""
                    }
                ),
            )
        };
    }
    let summary = summarize(&overlapping);
    match expect {
        Expect::Ok => {
            let rule = if q.opts.reuseport
                && overlapping
                    .iter()
                    .any(|h| h.role == Role::Listener || !q.opts.reuseaddr)
            {
                RuleId::BindReuseport
            } else {
                RuleId::BindReuseaddr
            };
            (
                rule,
                format!(
                    "port {port} is held by {summary}, but each lets the new socket ({}) share it (inet_bind_conflict())",
                    q.opts.label()
                ),
            )
        }
        Expect::Fails { .. } => {
            let first = overlapping
                .iter()
                .find(|h| h.blocking == Blocking::Always)
                .unwrap_or(&overlapping[0]);
            (
                RuleId::BindConflict,
                format!(
                    "port {port}'s bind bucket holds {summary}; {} on {}{} refuses to share with a new socket with {}: {} (inet_bind_conflict()), so bind() fails with EADDRINUSE — the whole port counts, not one 4-tuple",
                    state_name(first),
                    first.local,
                    match first.class {
                        Some(HolderClass::DualStack) if first.local.is_ipv6() => {
                            " (dual-stack: it also holds every IPv4 address)"
                        }
                        Some(HolderClass::DualStack) => {
                            " (the new [::] socket is dual-stack: it claims every IPv4 address too)"
                        }
                        _ => "",
                    },
                    q.opts.label(),
                    why_refuses(q.opts, first)
                ),
            )
        }
        Expect::Depends { ok_if, .. } => (
            RuleId::BindConflict,
            format!(
                "port {port}'s bind bucket holds {summary}; with {} on the new socket inet_bind_conflict() lets it in only if {ok_if}, which sock_diag cannot show",
                q.opts.label()
            ),
        ),
    }
}

fn state_name(h: &HolderReport) -> String {
    if h.timewait_sock && h.state != TcpState::TimeWait {
        format!("the {} timewait mini-socket", h.state)
    } else {
        format!("the {}", h.state)
    }
}

fn why_refuses(new: SocketOpts, h: &HolderReport) -> &'static str {
    if !new.reuseaddr && !new.reuseport {
        "the new socket has neither SO_REUSEADDR nor SO_REUSEPORT"
    } else if h.role == Role::Listener && !new.reuseport {
        "SO_REUSEADDR never shares with a listener"
    } else if h.role == Role::Listener && h.reuse != ReuseKnown::Unknown {
        "the SO_REUSEPORT group belongs to another uid"
    } else if new.reuseport && !new.reuseaddr {
        "SO_REUSEPORT shares only with SO_REUSEPORT sockets of the same uid"
    } else {
        "the SO_REUSEPORT owners have different uids"
    }
}

/// "3 TIME_WAIT (server side), 1 LISTEN". Each socket is counted once.
fn summarize(hs: &[&HolderReport]) -> String {
    let mut parts: Vec<(String, usize)> = Vec::new();
    for h in hs {
        let side = match h.origin {
            _ if h.role == Role::BoundOnly => " (bound only)",
            Origin::Incoming if h.role != Role::Listener => " (accepted, server side)",
            Origin::Outgoing => " (outgoing, client side)",
            _ => "",
        };
        let name = format!("{}{side}", h.state);
        match parts.iter_mut().find(|(n, _)| *n == name) {
            Some(p) => p.1 += 1,
            None => parts.push((name, 1)),
        }
    }
    parts
        .iter()
        .map(|(n, c)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Flags about the port itself.
pub(super) fn port_flags(port: u16, sys: &NetSysctls) -> Vec<Flag> {
    if !sys.port_range.contains(port) {
        Vec::new()
    } else if sys.reserved_ports.contains(port) {
        vec![Flag::Reserved { port }]
    } else {
        vec![Flag::InEphemeralRange {
            port,
            range: sys.port_range,
        }]
    }
}

/// Overlapping listeners on one address:port: a SO_REUSEPORT group, and
/// connections are split between its members.
pub(super) fn reuseport_groups(holders: &[HolderReport]) -> Vec<Flag> {
    let mut flags: Vec<Flag> = Vec::new();
    for h in holders.iter().filter(|h| {
        h.class == Some(HolderClass::ReuseportGroup)
            || matches!(h.reuse, ReuseKnown::Inferred { .. })
    }) {
        let members: Vec<&HolderReport> = holders
            .iter()
            .filter(|o| o.role == Role::Listener && o.local == h.local)
            .collect();
        if members.len() < 2
            || flags
                .iter()
                .any(|f| matches!(f, Flag::ReuseportGroup { addr, .. } if *addr == h.local))
        {
            continue;
        }
        let mut owners: Vec<String> = members
            .iter()
            .flat_map(|m| m.owners.iter().map(|o| format!("{}/{}", o.name, o.pid)))
            .collect();
        owners.dedup();
        flags.push(Flag::ReuseportGroup {
            addr: h.local,
            listeners: members.len() as u32,
            owners,
        });
    }
    flags
}

/// Fixes for a refused bind(), best first, chosen by what holds the port.
pub(super) fn bind_fixes(
    q: &BindQuestion,
    holders: &[HolderReport],
    sys: &NetSysctls,
) -> Vec<crate::why::fix::RankedFix> {
    let port = q.addr.port();
    let blockers: Vec<&HolderReport> = holders
        .iter()
        .filter(|h| matches!(h.blocking, Blocking::Always | Blocking::Unless { .. }))
        .collect();
    let mut fixes: Vec<Fix> = Vec::new();
    let push = |fixes: &mut Vec<Fix>, f: Fix| {
        if !fixes.contains(&f) {
            fixes.push(f);
        }
    };
    let tw_wait = blockers
        .iter()
        .filter(|h| h.timewait_sock)
        .filter_map(|h| h.timer.map(|t| t.expires_ms))
        .max();
    let who = |h: &HolderReport| {
        h.owners
            .first()
            .map(|o| format!("pid {} ({})", o.pid, o.name))
            .unwrap_or_else(|| format!("the {} socket on {}", h.state, h.local))
    };
    for h in &blockers {
        let same_address = h.local.ip() == q.addr.ip();
        match h.class.unwrap_or(HolderClass::Listener) {
            HolderClass::OwnFixedPort => {
                push(&mut fixes, Fix::ReuseaddrForFixedPort);
                push(&mut fixes, Fix::LetConnectChoose);
                if let Some(ms) = tw_wait {
                    push(&mut fixes, Fix::Wait { ms });
                }
                if h.timewait_sock {
                    push(&mut fixes, Fix::ServerClosesFirst);
                    push(&mut fixes, Fix::Linger0);
                }
            }
            HolderClass::ServerSide => {
                push(&mut fixes, Fix::ReuseaddrOnBoth);
                if let Some(ms) = tw_wait {
                    push(&mut fixes, Fix::Wait { ms });
                }
                if h.timewait_sock {
                    push(&mut fixes, Fix::ClientClosesFirst);
                    push(&mut fixes, Fix::Linger0);
                }
            }
            HolderClass::Listener => {
                push(&mut fixes, Fix::StopHolder { who: who(h) });
                push(&mut fixes, Fix::ReuseportOnBoth { same_address });
            }
            HolderClass::ReuseportGroup => {
                push(&mut fixes, Fix::StopHolder { who: who(h) });
                push(&mut fixes, Fix::LeaveReuseportGroup);
            }
            HolderClass::DualStack => {
                push(
                    &mut fixes,
                    Fix::V6Only {
                        on_new: q.addr.is_ipv6(),
                    },
                );
                push(&mut fixes, Fix::StopHolder { who: who(h) });
            }
            HolderClass::BoundOnly => {
                push(&mut fixes, Fix::StopHolder { who: who(h) });
                push(&mut fixes, Fix::ReuseaddrOnBoth);
                if sys.port_range.contains(h.local.port()) {
                    push(&mut fixes, Fix::BindAddressNoPort);
                }
            }
            HolderClass::Ephemeral => {
                if !sys.reserved_ports.contains(port) {
                    push(&mut fixes, Fix::ReservePort { port });
                }
                push(&mut fixes, Fix::PortOutsideRange);
                if let Some(ms) = tw_wait {
                    push(&mut fixes, Fix::Wait { ms });
                }
            }
            HolderClass::SelfConnect => {
                push(&mut fixes, Fix::SelfConnectRetry);
                if !sys.reserved_ports.contains(port) {
                    push(&mut fixes, Fix::ReservePort { port });
                }
                push(&mut fixes, Fix::PortOutsideRange);
            }
        }
    }
    fixes.into_iter().map(Fix::ranked).collect()
}
