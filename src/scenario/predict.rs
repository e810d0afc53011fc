//! The model's prediction for one step of a played scenario: the facts of
//! the [`ModelView`] handed to the model's rules, and the answer worded.
//! No kernel rule is decided here.

use super::file::Action;
use super::view::{ModelView, SockState, SocketView};
use crate::model::pairs::{FirstState, PairAddr, PairCase, PairSocket, Uid, predict_pair};
use serde::Serialize;

/// What the model says a step returns, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prediction {
    /// "ok", "EADDRINUSE", ...
    pub outcome: String,
    /// The rule, in a sentence naming the kernel function.
    pub why: String,
}

impl Prediction {
    fn new(outcome: impl Into<String>, why: impl Into<String>) -> Self {
        Prediction {
            outcome: outcome.into(),
            why: why.into(),
        }
    }
}

/// The prediction for `action` on socket `i` of `view`, before it runs;
/// `None` where the model does not cover the step.
pub fn predict(view: &ModelView, i: Option<usize>, action: &Action) -> Option<Prediction> {
    match action {
        Action::Bind { .. } => bind(view, i?, false),
        Action::Listen { .. } => bind(view, i?, true),
        Action::Close { .. } | Action::CloseRst { .. } => Some(Prediction::new(
            "ok",
            "close() returns 0 (tcp_close() cannot fail)",
        )),
        _ => None,
    }
}

fn pair_socket(s: &SocketView, other: &SocketView) -> Option<PairSocket> {
    Some(PairSocket {
        addr: PairAddr::of(s.addr.ip())?,
        v6only: s.opts.v6only,
        reuseaddr: s.opts.reuseaddr,
        reuseport: s.opts.reuseport,
        uid: if s.uid == other.uid {
            Uid::Same
        } else {
            Uid::Other
        },
    })
}

/// The pair model for bind()/listen() of socket `i`: every other socket on
/// its port is checked (`inet_csk_bind_conflict()` loops over the owners);
/// no prediction when one of them is in a state it does not cover, for a
/// port the kernel picks, or for an address it does not know.
fn bind(view: &ModelView, i: usize, listen: bool) -> Option<Prediction> {
    let me = &view.sockets[i];
    let port = if listen {
        me.held_port()?
    } else {
        view.bind_addr(i)?.port()
    };
    if port == 0 || me.accepted || (listen && me.state != SockState::Bound) {
        return None;
    }
    let alone = pair_socket(me, me)?;
    if !listen && alone.addr == PairAddr::V4Mapped && alone.v6only.resolve(view.bindv6only) {
        return Some(Prediction::new(
            "EINVAL",
            "a V6ONLY socket cannot bind a v4-mapped address (__inet6_bind())",
        ));
    }
    let mut verdict = Prediction::new(
        "ok",
        format!("no other socket holds port {port}: inet_csk_get_port() finds it free"),
    );
    for (_, h) in view.holders(port, i) {
        let state = match h.state {
            SockState::Bound => FirstState::Bound,
            SockState::Listening => FirstState::Listening,
            SockState::Connected => FirstState::Connected,
            SockState::TimeWait => FirstState::TimeWait,
            SockState::Created | SockState::Gone => continue,
            SockState::Closing => return None,
        };
        let mut first = pair_socket(h, me)?;
        first.uid = Uid::Same;
        let second = pair_socket(me, h)?;
        let c = PairCase {
            first,
            state,
            second,
            bindv6only: view.bindv6only,
        };
        let p = predict_pair(&c);
        let o = p.second_bind.short();
        let rank = |s: &str| u8::from(s != "ok");
        if rank(&o) >= rank(&verdict.outcome) {
            verdict = Prediction::new(o, format!("beside {}: {}", h.name, p.explanation));
        }
    }
    Some(verdict)
}
