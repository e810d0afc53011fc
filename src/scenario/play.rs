//! Play a [`Script`] on real sockets in a fresh network namespace with the
//! file's sysctls: every step's observed outcome beside the pair model's
//! prediction (for bind() and listen(), where it covers the sockets on the
//! port) and the author's expectation.

use super::file::{Action, Script, SocketSpec, parse_state};
use crate::diag::{self, Query, TcpState};
use crate::error::{Error, Result};
use crate::model::pairs::{FirstState, PairAddr, PairCase, PairSocket, Uid, predict_pair};
use crate::netns::{self, Sysctl};
use crate::socket::{SocketOpts, StepError, TcpSock};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(2);

/// One step as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Its line in the file.
    pub line: usize,
    /// `"bind v6 [::]:8080"`.
    pub what: String,
    /// "ok", "EADDRINUSE", "timeout".
    pub observed: String,
    /// The model's outcome and explanation, where it covers the step.
    pub model: Option<(String, String)>,
    /// The author's expectation.
    pub expect: Option<String>,
}

impl StepReport {
    /// Observation, model and expectation all agree (where given).
    pub fn agrees(&self) -> bool {
        self.model.as_ref().is_none_or(|(m, _)| *m == self.observed)
            && self.expect.as_ref().is_none_or(|e| *e == self.observed)
    }
}

/// A played scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptReport {
    /// Its steps.
    pub steps: Vec<StepReport>,
}

impl ScriptReport {
    /// Steps where observation, model or expectation differ.
    pub fn disagreements(&self) -> usize {
        self.steps.iter().filter(|s| !s.agrees()).count()
    }
}

/// Where a socket is, as far as the model cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    Created,
    Bound,
    Listening,
    Connected,
    /// Closed while connected: FIN_WAIT or TIME_WAIT, not known yet.
    Closing,
    TimeWait,
    Gone,
}

struct Live {
    name: String,
    spec: SocketSpec,
    /// The address it binds (an accepted socket: its local address).
    addr: SocketAddr,
    accepted: bool,
    sock: Option<TcpSock>,
    track: Track,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
}

/// The address `name` binds: its own, or with `port_of` the port that
/// other socket has now (its own port if that one has none).
fn bind_addr(live: &mut [Live], name: &str) -> SocketAddr {
    let l = find(live, name);
    let (addr, of) = (l.addr, l.spec.port_of.clone());
    match of {
        Some(other) => {
            // An accepted socket exists only if its accept() succeeded.
            let port = live
                .iter()
                .rev()
                .find(|o| o.name == other)
                .and_then(|o| o.local)
                .map_or(addr.port(), |a| a.port());
            SocketAddr::new(addr.ip(), port)
        }
        None => addr,
    }
}

/// Run a socket call with the privileges `spec` asks for: without
/// CAP_NET_BIND_SERVICE for an `unprivileged` socket (see
/// [`crate::sys::caps`]).
fn as_spec<T>(spec: &SocketSpec, f: impl FnOnce() -> T) -> T {
    if spec.unprivileged {
        crate::sys::caps::without_bind_service(f).0
    } else {
        f()
    }
}

fn short<T>(r: &std::result::Result<T, StepError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.error.name.clone(),
    }
}

/// Play `script` in a fresh namespace (on a thread of its own).
pub fn play(script: &Script) -> Result<ScriptReport> {
    let sysctls = script
        .sysctls
        .iter()
        .map(|(k, v)| Sysctl::new(k, v))
        .collect();
    let script = script.clone();
    netns::run_in_fresh(sysctls, move || play_here(&script))?
}

fn play_here(script: &Script) -> Result<ScriptReport> {
    let mut live = Vec::new();
    for (spec, addr) in &script.sockets {
        let sock = crate::sys::fsuid::with_fsuid(spec.uid.unwrap_or(0), || {
            TcpSock::new(crate::socket::Family::of(addr), spec.opts())
        })
        .map_err(|e| Error::Sys {
            what: format!("socket '{}'", spec.name),
            err: e.error,
        })?;
        live.push(Live {
            name: spec.name.clone(),
            spec: spec.clone(),
            addr: *addr,
            accepted: false,
            sock: Some(sock),
            track: Track::Created,
            local: None,
            peer: None,
        });
    }
    let bindv6only = crate::sysctl::read("net.ipv6.bindv6only").as_deref() == Some("1");
    let mut steps = Vec::new();
    for (line, step) in &script.steps {
        let (what, observed, model) = act(&mut live, &step.action, bindv6only);
        steps.push(StepReport {
            line: *line,
            what,
            observed,
            model,
            expect: step.expect.clone(),
        });
    }
    Ok(ScriptReport { steps })
}

fn find<'a>(live: &'a mut [Live], name: &str) -> &'a mut Live {
    // The loader checked every name.
    live.iter_mut()
        .rev()
        .find(|l| l.name == name)
        .expect("socket names checked at load")
}

type Done = (String, String, Option<(String, String)>);

fn act(live: &mut Vec<Live>, a: &Action, bindv6only: bool) -> Done {
    let gone = || "EBADF".to_string();
    match a {
        Action::Bind { socket } => {
            let model = predict(live, socket, bindv6only, false);
            let addr = bind_addr(live, socket);
            let l = find(live, socket);
            let what = format!("bind {socket} {addr}");
            let Some(s) = l.sock.as_ref() else {
                return (what, gone(), model);
            };
            let r = as_spec(&l.spec, || s.bind(addr));
            if r.is_ok() {
                l.track = Track::Bound;
                l.local = s.local_addr();
            }
            (what, short(&r), model)
        }
        Action::Listen { socket, backlog } => {
            let model = predict(live, socket, bindv6only, true);
            let l = find(live, socket);
            let what = format!("listen {socket}");
            let Some(s) = l.sock.as_ref() else {
                return (what, gone(), model);
            };
            let r = as_spec(&l.spec, || s.listen(backlog.unwrap_or(16)));
            if r.is_ok() {
                l.track = Track::Listening;
                l.local = s.local_addr();
            }
            (what, short(&r), model)
        }
        Action::Connect { socket, to } => {
            let to: SocketAddr = crate::socket::parse_endpoint(to).expect("checked at load");
            let l = find(live, socket);
            let what = format!("connect {socket} → {to}");
            let Some(s) = l.sock.as_ref() else {
                return (what, gone(), None);
            };
            let r = as_spec(&l.spec, || s.connect(to, TIMEOUT));
            if r.is_ok() {
                l.track = Track::Connected;
                l.local = s.local_addr();
                l.peer = Some(to);
            }
            (what, short(&r), None)
        }
        Action::Accept { socket, name } => accept(live, socket, name),
        Action::Send { socket, data } => {
            let l = find(live, socket);
            let what = format!("send {socket}");
            let Some(s) = l.sock.as_ref() else {
                return (what, gone(), None);
            };
            let data = data.as_deref().unwrap_or("x");
            let r = s.sock.send(data.as_bytes());
            let obs = match r {
                Ok(_) => "ok".into(),
                Err(e) => crate::outcome::SysError::from_io(&e).name,
            };
            (what, obs, None)
        }
        Action::Recv { socket } => {
            let l = find(live, socket);
            let what = format!("recv {socket} (until EOF)");
            let Some(s) = l.sock.as_mut() else {
                return (what, gone(), None);
            };
            (what, short(&s.recv_until_eof(TIMEOUT)), None)
        }
        Action::Close { socket } | Action::CloseRst { socket } => {
            let rst = matches!(a, Action::CloseRst { .. });
            let l = find(live, socket);
            let what = format!("{} {socket}", a.verb());
            let Some(s) = l.sock.take() else {
                return (what, gone(), None);
            };
            if rst {
                let _ = s.sock.set_linger(Some(Duration::ZERO));
            }
            let lingers0 = rst || l.spec.linger == Some(0);
            l.track = if l.track == Track::Connected && !lingers0 {
                Track::Closing
            } else {
                Track::Gone
            };
            s.close();
            (what, "ok".into(), None)
        }
        Action::WaitForState {
            socket,
            state,
            timeout_ms,
        } => {
            let l = find(live, socket);
            let what = format!("wait {socket} {state}");
            let st = parse_state(state).expect("checked at load");
            let t = Duration::from_millis(timeout_ms.unwrap_or(2000));
            let ok = wait_state(l.local, l.peer, st, t);
            if ok && st == TcpState::TimeWait {
                l.track = Track::TimeWait;
            }
            (what, if ok { "ok" } else { "timeout" }.into(), None)
        }
        Action::Sleep { ms } => {
            std::thread::sleep(Duration::from_millis(*ms));
            (format!("sleep {ms} ms"), "ok".into(), None)
        }
    }
}

fn accept(live: &mut Vec<Live>, socket: &str, name: &str) -> Done {
    let l = find(live, socket);
    let what = format!("accept {socket} as {name}");
    let Some(s) = l.sock.as_ref() else {
        return (what, "EBADF".into(), None);
    };
    let (spec, addr) = (l.spec.clone(), l.addr);
    match s.accept(TIMEOUT) {
        Ok((c, peer)) => {
            let local = c.local_addr();
            live.push(Live {
                name: name.to_string(),
                addr: local.unwrap_or(addr),
                spec,
                accepted: true,
                sock: Some(c),
                track: Track::Connected,
                local,
                peer: Some(peer),
            });
            (what, "ok".into(), None)
        }
        Err(e) => (what, e.error.name, None),
    }
}

fn wait_state(
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    st: TcpState,
    t: Duration,
) -> bool {
    let Some(local) = local else { return false };
    let end = Instant::now() + t;
    loop {
        let found = diag::dump(&Query::default())
            .map(|v| {
                v.iter()
                    .any(|e| e.state == st && e.local == local && peer.is_none_or(|p| e.peer == p))
            })
            .unwrap_or(false);
        if found {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn pair_socket(l: &Live, other: &Live) -> Option<PairSocket> {
    let o: SocketOpts = l.spec.opts();
    Some(PairSocket {
        addr: PairAddr::of(l.addr.ip())?,
        v6only: o.v6only,
        reuseaddr: o.reuseaddr,
        reuseport: o.reuseport,
        uid: if l.spec.uid == other.spec.uid {
            Uid::Same
        } else {
            Uid::Other
        },
    })
}

/// The pair model for bind()/listen() of `name`: every other socket on its
/// port is checked (`inet_csk_bind_conflict()` loops over the owners); no
/// prediction when one of them is in a state it does not cover.
fn predict(live: &[Live], name: &str, bindv6only: bool, listen: bool) -> Option<(String, String)> {
    let me = live.iter().rev().find(|l| l.name == name)?;
    let port = me.addr.port();
    if port == 0 || me.accepted || (listen && me.track != Track::Bound) {
        return None;
    }
    let alone = pair_socket(me, me)?;
    if !listen && alone.addr == PairAddr::V4Mapped && alone.v6only.resolve(bindv6only) {
        return Some((
            "EINVAL".into(),
            "a V6ONLY socket cannot bind a v4-mapped address (__inet6_bind())".into(),
        ));
    }
    let mut verdict = (
        "ok".to_string(),
        format!("no other socket holds port {port}: inet_csk_get_port() finds it free"),
    );
    for h in live.iter().filter(|h| !std::ptr::eq(*h, me)) {
        if h.local.map(|a| a.port()) != Some(port) {
            continue;
        }
        let state = match h.track {
            Track::Bound => FirstState::Bound,
            Track::Listening => FirstState::Listening,
            Track::Connected => FirstState::Connected,
            Track::TimeWait => FirstState::TimeWait,
            Track::Created | Track::Gone => continue,
            Track::Closing => return None,
        };
        let mut first = pair_socket(h, me)?;
        first.uid = Uid::Same;
        let second = pair_socket(me, h)?;
        let c = PairCase {
            first,
            state,
            second,
            bindv6only,
        };
        let p = predict_pair(&c);
        let o = p.second_bind.short();
        let rank = |s: &str| u8::from(s != "ok");
        if rank(&o) >= rank(&verdict.0) {
            verdict = (o, format!("beside {}: {}", h.name, p.explanation));
        }
    }
    Some(verdict)
}
