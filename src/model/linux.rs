//! The Linux rules for the next step: dispatch on the step, and the bind
//! rules (`inet_csk_get_port()` → `inet_bind_conflict()`) that a rebind, a
//! new listener and a reconnect from a fixed port all pass through first.
//! The connect() rules are in `connect`.

use super::connect::predict_reconnect;
use super::facts::CellFacts;
use super::holder::{Holder, describe_holder, holder};
use super::kernel::{
    self,
    bind::{Check, HolderKind, NewSocket, PortHolder, Share},
};
use super::rules::{Prediction, RuleId};
use crate::diag::{Side, TcpState};
use crate::experiment::{Experiment, NextStep};
use crate::outcome::{Outcome, Step, SysError};
use crate::socket::SocketOpts;
use crate::sys::linux_errno;
use std::net::{IpAddr, Ipv4Addr};

/// Predict the Linux outcome of the cell's next step.
pub fn predict_linux(cell: &CellFacts) -> Prediction {
    let x = cell.experiment;
    let client = holder(x, cell.view, Side::Client);
    let server = holder(x, cell.view, Side::Server);
    match x.next {
        NextStep::Rebind => predict_rebind(x, client),
        NextStep::RestartListener => predict_restart_listener(x, server),
        NextStep::Reconnect => predict_reconnect(cell, client, server),
    }
}

/// A failed step's outcome with the errno `code`.
pub(super) fn failed(step: Step, code: i32) -> Outcome {
    Outcome::Failed {
        step,
        error: SysError::linux(code),
    }
}

/// A new client socket binds the old client address:port.
fn predict_rebind(x: &Experiment, client: Option<Holder>) -> Prediction {
    match predict_bind("bind()", Side::Client, x.new_opts, client) {
        BindVerdict::Conflict(p) => *p,
        BindVerdict::Shared(rule, h) => Prediction::ok(
            rule,
            format!(
                "bind(): {} holds the port but {}, so inet_bind_conflict() lets them share it",
                describe_holder(Side::Client, &h),
                share_reason(rule)
            ),
        ),
        BindVerdict::Free => Prediction::ok(
            RuleId::BindFree,
            "bind(): no socket is left in the port's bind bucket (RST close, or the connect()-chosen port was released at TCP_CLOSE), so inet_csk_get_port() finds it free".into(),
        ),
    }
}

/// The old listener closes; a new one binds and listens on the server port.
fn predict_restart_listener(x: &Experiment, server: Option<Holder>) -> Prediction {
    match predict_bind(
        "bind() of the new listener",
        Side::Server,
        x.new_opts,
        server,
    ) {
        BindVerdict::Conflict(p) => *p,
        BindVerdict::Shared(rule, h) => Prediction::ok(
            rule,
            format!(
                "{} holds the server port but {}, so inet_bind_conflict() passes at bind() and again at listen() (inet_csk_listen_start() → get_port(), relax = true, the holder is not LISTEN)",
                describe_holder(Side::Server, &h),
                share_reason(rule)
            ),
        ),
        BindVerdict::Free => Prediction::ok(
            RuleId::BindFree,
            "the old listener is closed and no accepted socket holds the server port (a reset one released it at TCP_CLOSE even with its descriptor open, since sk_clone_lock() clears SOCK_BINDPORT_LOCK), so bind() and listen() (inet_csk_listen_start() → get_port()) find it free".into(),
        ),
    }
}

fn share_reason(rule: RuleId) -> &'static str {
    match rule {
        RuleId::BindReuseaddr => "both sockets have SO_REUSEADDR and it is not listening",
        RuleId::BindReuseport => "both sockets have SO_REUSEPORT (same uid)",
        _ => "nothing conflicts",
    }
}

/// `inet_bind_conflict()` with relax = true and reuseport_ok = true, as
/// `inet_csk_get_port()` calls it for bind() and, through
/// `inet_csk_listen_start()`, again for listen(), from the kernel layer
/// ([`kernel::bind::conflict`]). The experiment's sockets are one
/// process's (same uid) on one address. Returns the rule that lets the new
/// socket share the port, or `None` on a conflict.
pub(crate) fn bind_shares(new: SocketOpts, h: &Holder) -> Option<RuleId> {
    let ip: IpAddr = Ipv4Addr::LOCALHOST.into();
    let sock = NewSocket {
        ip,
        v6only: false,
        reuseaddr: new.reuseaddr,
        reuseport: new.reuseport,
        uid: 0,
        cap_net_bind_service: true,
    };
    let kind = if h.mini {
        HolderKind::TimeWait
    } else if h.state == TcpState::Listen {
        HolderKind::Listen
    } else if !h.hashed || h.state == TcpState::Closed {
        HolderKind::Bound
    } else {
        HolderKind::Connected
    };
    let old = PortHolder {
        claims: sock.claims(),
        reuseaddr: h.opts.reuseaddr,
        reuseport: h.opts.reuseport,
        uid: 0,
        kind,
        v4_mapped_any: kernel::addr::is_v4_mapped_any(sock.ip),
    };
    kernel::bind::conflict(&sock, &old, Check::Bind)
        .ok()
        .map(Share::rule)
}

/// What bind() of a port does, given what (if anything) holds it.
#[derive(Debug)]
pub(super) enum BindVerdict {
    /// Nothing holds the port: `inet_csk_get_port()` finds it free.
    Free,
    /// The holder is there but `inet_bind_conflict()` lets the new socket
    /// share the port by this rule.
    Shared(RuleId, Holder),
    /// `inet_bind_conflict()` refuses: the step fails here.
    Conflict(Box<Prediction>),
}

/// bind() of the port held by `h` (if anything holds it); `step_name` and
/// `side` only word the explanation.
pub(super) fn predict_bind(
    step_name: &str,
    side: Side,
    new: SocketOpts,
    h: Option<Holder>,
) -> BindVerdict {
    let Some(h) = h else {
        return BindVerdict::Free;
    };
    if let Some(rule) = bind_shares(new, &h) {
        return BindVerdict::Shared(rule, h);
    }
    let fix = if h.opts.reuseaddr && !new.reuseaddr {
        "set SO_REUSEADDR on the new socket too"
    } else if !h.opts.reuseaddr && new.reuseaddr {
        "set SO_REUSEADDR on the old socket too (the kernel checks both)"
    } else {
        "set SO_REUSEADDR on both sockets"
    };
    BindVerdict::Conflict(Box::new(Prediction {
        outcome: failed(Step::Bind, linux_errno::EADDRINUSE),
        rule: RuleId::BindConflict,
        explanation: format!(
            "{step_name}: {} still sits in the port's bind bucket and SO_REUSEADDR is not set on both sockets (old {}, new {}), so inet_csk_get_port() → inet_bind_conflict() refuses it",
            describe_holder(side, &h),
            h.opts.label(),
            new.label()
        ),
        fix: Some(fix.into()),
        version_note: Some(
            "5.x: inet_csk_bind_conflict(); 6.x split into inet_bind_conflict()/inet_bhash2_conflict(), same rule".into(),
        ),
        borderline: false,
    }))
}

#[cfg(test)]
mod tests {
    //! `inet_bind_conflict()` over plain data: no sockets.
    use super::*;

    fn held(state: TcpState, reuseaddr: bool, reuseport: bool) -> Holder {
        Holder {
            state,
            mini: state == TcpState::TimeWait,
            hashed: true,
            tw_age_ms: None,
            opts: SocketOpts {
                reuseaddr,
                reuseport,
                ..Default::default()
            },
        }
    }

    fn opts(reuseaddr: bool, reuseport: bool) -> SocketOpts {
        SocketOpts {
            reuseaddr,
            reuseport,
            ..Default::default()
        }
    }

    // sk_reuse on both, and the holder not TCP_LISTEN.
    #[test]
    fn reuseaddr_shares_unless_the_holder_listens() {
        let tw = held(TcpState::TimeWait, true, false);
        assert_eq!(
            bind_shares(opts(true, false), &tw),
            Some(RuleId::BindReuseaddr)
        );
        assert_eq!(bind_shares(opts(false, false), &tw), None);
        let listening = held(TcpState::Listen, true, false);
        assert_eq!(bind_shares(opts(true, false), &listening), None);
    }

    // sk_reuseport on both shares even a LISTEN holder (same uid).
    #[test]
    fn reuseport_on_both_shares_even_a_listener() {
        let listening = held(TcpState::Listen, false, true);
        assert_eq!(
            bind_shares(opts(false, true), &listening),
            Some(RuleId::BindReuseport)
        );
        assert_eq!(bind_shares(opts(true, false), &listening), None);
    }

    // The fix names the side that lacks SO_REUSEADDR.
    #[test]
    fn a_conflict_says_which_socket_needs_reuseaddr() {
        let fix = |old, new| match predict_bind(
            "bind()",
            Side::Client,
            opts(new, false),
            Some(held(TcpState::TimeWait, old, false)),
        ) {
            BindVerdict::Conflict(p) => p.fix.unwrap(),
            v => panic!("expected a conflict, got {v:?}"),
        };
        assert!(fix(true, false).contains("new socket"));
        assert!(fix(false, true).contains("old socket"));
        assert!(fix(false, false).contains("both"));
        assert!(matches!(
            predict_bind("bind()", Side::Client, opts(false, false), None),
            BindVerdict::Free
        ));
    }
}
