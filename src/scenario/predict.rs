//! The model's prediction for one step of a played scenario: the facts of
//! the [`ModelView`] (every socket, the port the kernel gave it, the
//! namespace's sysctls) handed to the kernel-rule layer
//! ([`crate::model::kernel`]), and its answer worded. No kernel rule is
//! decided here; a step the layer has no rule for gets no prediction.

use super::file::Action;
use super::view::{ModelView, SockState, SocketView};
use crate::model::RuleId;
use crate::model::kernel::addr::{Claims, v6only_after_bind};
use crate::model::kernel::bind::{
    self, Autobind, HolderKind, NewSocket, PortHolder, PortVerdict, Refusal, Share,
};
use crate::sys::linux_errno;
use serde::Serialize;
use std::net::IpAddr;

/// What the model says a step returns, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Prediction {
    /// "ok", "EADDRINUSE", ...
    pub outcome: String,
    /// The rule that decides it (`None` for close()).
    pub rule: Option<RuleId>,
    /// The answer in a sentence, naming the kernel function.
    pub why: String,
}

/// The prediction for `action` on socket `i` of `view`, made before the
/// step runs; `None` where the rule layer does not cover the step.
pub fn predict(view: &ModelView, i: Option<usize>, action: &Action) -> Option<Prediction> {
    match action {
        Action::Bind { .. } => bind_step(view, i?),
        Action::Listen { .. } => listen_step(view, i?),
        Action::Close { .. } | Action::CloseRst { .. } => Some(Prediction {
            outcome: "ok".into(),
            rule: None,
            why: "close() returns 0 (tcp_close())".into(),
        }),
        _ => None,
    }
}

/// Socket `i` as the socket that binds (`sk`), on address `ip`.
fn new_socket(view: &ModelView, s: &SocketView, ip: IpAddr) -> NewSocket {
    NewSocket {
        ip,
        v6only: s.v6only,
        reuseaddr: s.opts.reuseaddr,
        reuseport: s.opts.reuseport,
        uid: s.uid,
        cap_net_bind_service: view.cap_net_bind_service && !s.unprivileged,
    }
}

/// A socket on a port as the rule layer's holder (`sk2`): what its local
/// address (narrowed by connect()) holds, with IPV6_V6ONLY as its bind()
/// left it; `None` for a closing socket whose state the player has not
/// seen yet (a full FIN_WAIT socket or a timewait one).
fn holder(s: &SocketView) -> Option<PortHolder> {
    let local = s.local?;
    let kind = match s.state {
        SockState::Bound => HolderKind::Bound,
        SockState::Listening => HolderKind::Listen,
        SockState::Connected => HolderKind::Connected,
        SockState::TimeWait => HolderKind::TimeWait,
        SockState::Created | SockState::Gone | SockState::Closing => return None,
    };
    Some(PortHolder {
        claims: Claims::of(local.ip(), v6only_after_bind(s.addr.ip(), s.v6only)),
        reuseaddr: s.opts.reuseaddr,
        reuseport: s.opts.reuseport,
        uid: s.uid,
        kind,
        v4_mapped_any: crate::model::kernel::addr::is_v4_mapped_any(local.ip()),
    })
}

/// The holders of `port` other than socket `except`, with their names;
/// `None` if one of them is in a state the model cannot place.
fn holders(view: &ModelView, port: u16, except: usize) -> Option<Vec<(&str, PortHolder)>> {
    view.holders(port, except)
        .map(|(_, s)| holder(s).map(|h| (s.name.as_str(), h)))
        .collect()
}

fn errno_name(errno: i32) -> String {
    linux_errno::name(errno)
}

/// bind(): `__inet_bind()`'s prechecks, then `inet_csk_get_port()` for the
/// port asked for, or `inet_csk_find_open_port()` for port 0.
fn bind_step(view: &ModelView, i: usize) -> Option<Prediction> {
    let s = &view.sockets[i];
    // A second bind() of a bound socket is EINVAL in __inet_bind(), a rule
    // the layer does not hold: no prediction.
    if s.state != SockState::Created || s.accepted {
        return None;
    }
    let sys = view.sysctls.as_ref()?;
    let addr = view.bind_addr(i)?;
    let new = new_socket(view, s, addr.ip());
    if let Some(r) = bind::precheck(&new, addr.port(), sys) {
        let facts: Vec<String> = r
            .facts
            .iter()
            .map(|f| format!("{} = {}", f.name, f.value))
            .collect();
        return Some(Prediction {
            outcome: errno_name(r.errno),
            rule: Some(r.rule),
            why: format!("{} refuses ({})", r.rule.kernel_fn(), facts.join(", ")),
        });
    }
    if addr.port() == 0 {
        // IP_BIND_ADDRESS_NO_PORT defers the port to connect(): no rule of
        // the layer decides that bind().
        if s.opts.bind_no_port {
            return None;
        }
        return autobind(view, i, &new, "bind(ip, 0)");
    }
    explicit_port(view, i, &new, addr.port(), "bind()")
}

/// listen(): `inet_csk_listen_start()` calls `inet_csk_get_port()` again
/// for the socket's port, or picks one (`inet_csk_find_open_port()`) for
/// a socket without one.
fn listen_step(view: &ModelView, i: usize) -> Option<Prediction> {
    let s = &view.sockets[i];
    match s.state {
        SockState::Bound => {
            let ip = s.local.map_or(s.addr.ip(), |a| a.ip());
            let new = new_socket(view, s, ip);
            match s.held_port() {
                Some(port) => explicit_port(view, i, &new, port, "listen()"),
                None => autobind(view, i, &new, "listen() without a port"),
            }
        }
        SockState::Created => {
            let new = new_socket(view, s, view.wildcard(i));
            autobind(view, i, &new, "listen() without bind()")
        }
        // listen() on a listening, connected or closed socket: rules the
        // layer does not hold.
        _ => None,
    }
}

fn refusal_words(why: Refusal, holder: &str) -> String {
    match why {
        Refusal::NoReuseOnBoth => {
            format!("neither SO_REUSEADDR nor SO_REUSEPORT is set on both it and {holder}")
        }
        Refusal::HolderListens => {
            format!("SO_REUSEADDR is set on both, but {holder} listens")
        }
        Refusal::OtherUid => {
            format!("SO_REUSEPORT is set on both, but another uid owns {holder}")
        }
        Refusal::AutobindStrict | Refusal::AutobindRelaxed => {
            format!("{holder} holds an overlapping address")
        }
    }
}

fn share_words(share: Share) -> &'static str {
    match share {
        Share::Disjoint => "the sockets on it hold other addresses",
        Share::Reuseaddr => "SO_REUSEADDR on both and no listener",
        Share::Reuseport => "SO_REUSEPORT on both, same uid or TIME_WAIT",
    }
}

/// `inet_csk_get_port()` for an explicit port.
fn explicit_port(
    view: &ModelView,
    i: usize,
    new: &NewSocket,
    port: u16,
    call: &str,
) -> Option<Prediction> {
    let on_port = holders(view, port, i)?;
    let hs: Vec<PortHolder> = on_port.iter().map(|(_, h)| *h).collect();
    Some(match bind::bind_port(new, &hs) {
        PortVerdict::Free => Prediction {
            outcome: "ok".into(),
            rule: Some(RuleId::BindFree),
            why: format!(
                "{call}: no other socket holds port {port} ({})",
                RuleId::BindFree.kernel_fn()
            ),
        },
        PortVerdict::Shared(share) => Prediction {
            outcome: "ok".into(),
            rule: Some(share.rule()),
            why: format!(
                "{call}: port {port} is shared: {} ({})",
                share_words(share),
                share.rule().kernel_fn()
            ),
        },
        PortVerdict::Conflict { index, why } => Prediction {
            outcome: errno_name(linux_errno::EADDRINUSE),
            rule: Some(RuleId::BindConflict),
            why: format!(
                "{call}: {} ({})",
                refusal_words(why, on_port[index].0),
                RuleId::BindConflict.kernel_fn()
            ),
        },
    })
}

/// `inet_csk_find_open_port()`: bind(ip, 0), or listen() without a port.
fn autobind(view: &ModelView, i: usize, new: &NewSocket, call: &str) -> Option<Prediction> {
    let sys = view.sysctls.as_ref()?;
    // A closing socket the player has not seen settle could be a full
    // FIN_WAIT socket or a timewait one: no prediction while one holds a
    // port.
    if view
        .sockets
        .iter()
        .any(|s| s.held_port().is_some() && holder(s).is_none())
    {
        return None;
    }
    let holders_of = |port: u16| {
        view.holders(port, i)
            .filter_map(|(_, s)| holder(s))
            .collect::<Vec<_>>()
    };
    let a = bind::autobind(new, sys, holders_of);
    let range = format!("{}-{}", sys.port_range.low, sys.port_range.high);
    let (outcome, why) = match a {
        Autobind::Free { free_ports, .. } => (
            "ok".to_string(),
            format!("{call}: {free_ports} port(s) of {range} free for it"),
        ),
        Autobind::Shared { port } => (
            "ok".to_string(),
            format!(
                "{call}: no free port in {range}; ip_autobind_reuse shares port {port} (SO_REUSEADDR on every overlapping holder, none listening, none SO_REUSEPORT with the same uid)"
            ),
        ),
        Autobind::Exhausted => (
            errno_name(linux_errno::EADDRINUSE),
            format!(
                "{call}: no free port in {range}{}",
                if sys.autobind_reuse.unwrap_or(false) {
                    " and none ip_autobind_reuse may share"
                } else {
                    " (ip_autobind_reuse = 0)"
                }
            ),
        ),
    };
    Some(Prediction {
        outcome,
        rule: Some(a.rule()),
        why: format!("{why} ({})", a.rule().kernel_fn()),
    })
}

#[cfg(test)]
#[path = "predict_tests.rs"]
mod tests;
