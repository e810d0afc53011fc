//! Play a [`Script`] on real sockets in a fresh network namespace with the
//! file's sysctls: every step's observed outcome beside the model's
//! prediction ([`predict`], made from the [`ModelView`] of every socket
//! before the step runs) and the author's expectation.

use super::file::{Action, Script, parse_state};
use super::predict::predict;
use super::view::{ModelView, SockState, SocketView};
use crate::diag::{self, Query, TcpState};
use crate::error::{Error, Result};
use crate::model::RuleId;
use crate::model::pairs::Call;
use crate::netns::{self, Sysctl};
use crate::outcome::SysError;
use crate::socket::{StepError, TcpSock};
use crate::sysctl::NetSysctls;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(2);

/// One step as it ran.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StepReport {
    /// Its line in the file.
    pub line: usize,
    /// `"bind v6 [::]:8080"`.
    pub what: String,
    /// What the kernel did, as a call's outcome: `{"result": "ok"}`,
    /// `{"result": "failed", "error": ERRNO}`, `{"result": "not-run"}`
    /// (the file's word for it, "ok", "EADDRINUSE", "timeout", is
    /// [`StepOutcome::word`]).
    pub observed: StepOutcome,
    /// The model's outcome and explanation, where it covers the step.
    pub model: Option<ModelSays>,
    /// The rule of the model's prediction, if it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleId>,
    /// The author's expectation, as the file words it ("ok",
    /// "EADDRINUSE", "timeout").
    pub expect: Option<String>,
}

/// A step's outcome: the word a scenario file uses for it ("ok",
/// "EADDRINUSE", "timeout"), which the author's `expect` and the model are
/// compared by, and in JSON a call's outcome as every command writes one
/// (docs/json.md): `{"result": "ok"}`, `{"result": "failed", "error":
/// ERRNO}`, or `{"result": "not-run"}` for a call twlab could not make (a
/// bind() to the port of a socket that holds none). A wait that timed out
/// fails with this system's ETIMEDOUT, an interrupted sleep with its
/// EINTR, a step on a closed socket with its EBADF, as twlab's own waits
/// fail everywhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    /// The file's word.
    word: String,
    /// The contract's shape.
    call: Call,
}

impl StepOutcome {
    /// The call succeeded.
    pub fn ok() -> Self {
        StepOutcome {
            word: "ok".into(),
            call: Call::Ok,
        }
    }

    /// The call failed with `error` (the word is its name).
    pub fn failed(error: SysError) -> Self {
        StepOutcome {
            word: error.name.clone(),
            call: Call::Failed { error },
        }
    }

    /// A twlab error of its own (`err`, this system's number), under the
    /// file's `word` for it.
    fn own(word: &str, err: i32) -> Self {
        StepOutcome {
            word: word.into(),
            call: Call::Failed {
                error: SysError::from_code(err),
            },
        }
    }

    /// The outcome of a socket call.
    fn of<T>(r: &std::result::Result<T, StepError>) -> Self {
        match r {
            Ok(_) => Self::ok(),
            Err(e) => Self::failed(e.error.clone()),
        }
    }

    /// The model's outcome: "ok" or the name of a Linux errno (the rules
    /// are Linux's, numbered as Linux numbers them).
    fn predicted(word: String) -> Self {
        if word == "ok" {
            return Self::ok();
        }
        let code = crate::sys::linux_errno::code(&word).unwrap_or(0);
        StepOutcome {
            call: Call::Failed {
                error: SysError {
                    name: word.clone(),
                    ..SysError::linux(code)
                },
            },
            word,
        }
    }

    /// The file's word for it: "ok", "EADDRINUSE", "timeout".
    pub fn word(&self) -> &str {
        &self.word
    }

    /// The call's outcome, as JSON writes it.
    pub fn call(&self) -> &Call {
        &self.call
    }
}

impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.word)
    }
}

impl Serialize for StepOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.call.serialize(s)
    }
}

/// Described as what it serializes to: a call's outcome.
impl schemars::JsonSchema for StepOutcome {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Call::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        Call::schema_id()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Call::json_schema(g)
    }
}

/// What the rule model says of a step.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ModelSays {
    /// The predicted outcome, as `observed` is written (its errno
    /// numbered as Linux numbers it).
    pub outcome: StepOutcome,
    /// The explanation, citing the kernel function.
    pub why: String,
}

impl StepReport {
    /// Observation, model and expectation all agree (where given).
    pub fn agrees(&self) -> bool {
        self.model
            .as_ref()
            .is_none_or(|m| m.outcome.word() == self.observed.word())
            && self
                .expect
                .as_ref()
                .is_none_or(|e| e == self.observed.word())
    }
}

/// A played scenario.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ScriptReport {
    /// Its steps.
    pub steps: Vec<StepReport>,
}

impl ScriptReport {
    /// Steps where observation, model or expectation differ.
    pub fn disagreements(&self) -> usize {
        self.steps.iter().filter(|s| !s.agrees()).count()
    }

    /// Steps where the model and the observation differ (the model is
    /// held to every kernel, whatever the file's expectations are for).
    pub fn model_mismatches(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| {
                s.model
                    .as_ref()
                    .is_some_and(|m| m.outcome.word() != s.observed.word())
            })
            .count()
    }
}

/// The played sockets: the model's view of each, and the real socket
/// beside it (same index).
struct Table {
    view: ModelView,
    socks: Vec<Option<TcpSock>>,
}

/// Run a socket call with the privileges the socket asks for: without
/// CAP_NET_BIND_SERVICE for an `unprivileged` socket (see
/// [`crate::sys::caps`]).
fn as_unprivileged<T>(unprivileged: bool, f: impl FnOnce() -> T) -> T {
    if unprivileged {
        crate::sys::caps::without_bind_service(f).0
    } else {
        f()
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
    let bindv6only = crate::sysctl::read("net.ipv6.bindv6only").as_deref() == Some("1");
    let running_uid = crate::sys::fsuid::running_uid();
    let mut t = Table {
        view: ModelView {
            sockets: Vec::new(),
            sysctls: NetSysctls::read().ok(),
            bindv6only,
            cap_net_bind_service: crate::sys::fsuid::has_cap_net_bind_service(),
        },
        socks: Vec::new(),
    };
    for (spec, addr) in &script.sockets {
        // Another uid's socket needs root over that uid (not an ordinary
        // user's user namespace, where only its own uid is mapped):
        // refused, not silently made with the running uid.
        if let Some(uid) = spec.uid.filter(|u| !crate::sys::fsuid::can_act_as(*u)) {
            return Err(Error::Invalid(format!(
                "socket '{}' belongs to uid {uid}, and this process cannot act as another uid (run as root)",
                spec.name
            )));
        }
        let sock = crate::sys::fsuid::with_fsuid(spec.uid.unwrap_or(running_uid), || {
            TcpSock::new(crate::socket::Family::of(addr), spec.opts())
        })
        .map_err(|e| Error::Sys {
            what: format!("socket '{}'", spec.name),
            err: e.error,
        })?;
        t.view
            .sockets
            .push(SocketView::of_spec(spec, *addr, bindv6only, running_uid));
        t.socks.push(Some(sock));
    }
    let mut steps = Vec::new();
    for (line, step) in &script.steps {
        // A stop signal ends the script between steps (a sleep step
        // notices it within its slices).
        crate::signal::check()?;
        let i = step.action.socket().and_then(|n| t.view.index(n));
        let model = predict(&t.view, i, &step.action);
        let (what, observed) = act(&mut t, i, &step.action);
        steps.push(StepReport {
            line: *line,
            what,
            observed,
            rule: model.as_ref().and_then(|p| p.rule),
            model: model.map(|p| ModelSays {
                outcome: StepOutcome::predicted(p.outcome),
                why: p.why,
            }),
            expect: step.expect.clone(),
        });
    }
    Ok(ScriptReport { steps })
}

type Done = (String, StepOutcome);

/// Run one step on the real socket `i` and bring the view up to date
/// with what the kernel answered.
fn act(t: &mut Table, i: Option<usize>, a: &Action) -> Done {
    let gone = || StepOutcome::own("EBADF", crate::sys::err::BAD_FD);
    // The loader checked every name; only sleep has no socket.
    let Some(i) = i else {
        let Action::Sleep { ms } = a else {
            unreachable!("socket names checked at load")
        };
        // Up to the file's limit (60 s): cut short by a stop signal, which
        // the step loop then reports.
        let r = crate::signal::sleep_interruptible(Duration::from_millis(*ms));
        return (
            format!("sleep {ms} ms"),
            if r.is_ok() {
                StepOutcome::ok()
            } else {
                StepOutcome::own("interrupted", crate::sys::err::INTERRUPTED)
            },
        );
    };
    let name = t.view.sockets[i].name.clone();
    match a {
        Action::Bind { .. } => {
            let Some(addr) = t.view.bind_addr(i) else {
                let from = t.view.sockets[i].port_from.clone().unwrap_or_default();
                let what = format!("bind {name} {} (port of {from})", t.view.sockets[i].addr);
                let word = format!("no port: {from} holds none");
                return (
                    what,
                    StepOutcome {
                        word,
                        call: Call::NotRun,
                    },
                );
            };
            let what = match &t.view.sockets[i].port_from {
                Some(from) => format!("bind {name} {addr} (port of {from})"),
                None => format!("bind {name} {addr}"),
            };
            let Some(s) = t.socks[i].as_ref() else {
                return (what, gone());
            };
            let r = as_unprivileged(t.view.sockets[i].unprivileged, || s.bind(addr));
            if r.is_ok() {
                let v = &mut t.view.sockets[i];
                v.state = SockState::Bound;
                v.local = s.local_addr();
            }
            (what, StepOutcome::of(&r))
        }
        Action::Listen { backlog, .. } => {
            let what = format!("listen {name}");
            let Some(s) = t.socks[i].as_ref() else {
                return (what, gone());
            };
            let r = as_unprivileged(t.view.sockets[i].unprivileged, || {
                s.listen(backlog.unwrap_or(16))
            });
            if r.is_ok() {
                let v = &mut t.view.sockets[i];
                v.state = SockState::Listening;
                v.local = s.local_addr();
            }
            (what, StepOutcome::of(&r))
        }
        Action::Connect { to, .. } => {
            let to: SocketAddr = crate::socket::parse_endpoint(to).expect("checked at load");
            let what = format!("connect {name} → {to}");
            let Some(s) = t.socks[i].as_ref() else {
                return (what, gone());
            };
            let r = as_unprivileged(t.view.sockets[i].unprivileged, || s.connect(to, TIMEOUT));
            if r.is_ok() {
                let v = &mut t.view.sockets[i];
                v.state = SockState::Connected;
                v.local = s.local_addr();
                v.peer = Some(to);
            }
            (what, StepOutcome::of(&r))
        }
        Action::Accept { name: new, .. } => accept(t, i, new),
        Action::Send { data, .. } => {
            let what = format!("send {name}");
            let Some(s) = t.socks[i].as_ref() else {
                return (what, gone());
            };
            let data = data.as_deref().unwrap_or("x");
            let obs = match s.sock.send(data.as_bytes()) {
                Ok(_) => StepOutcome::ok(),
                Err(e) => StepOutcome::failed(SysError::from_io(&e)),
            };
            (what, obs)
        }
        Action::Recv { .. } => {
            let what = format!("recv {name} (until EOF)");
            let Some(s) = t.socks[i].as_mut() else {
                return (what, gone());
            };
            (what, StepOutcome::of(&s.recv_until_eof(TIMEOUT)))
        }
        Action::Close { .. } | Action::CloseRst { .. } => {
            let rst = matches!(a, Action::CloseRst { .. });
            let what = format!("{} {name}", a.verb());
            let Some(s) = t.socks[i].take() else {
                return (what, gone());
            };
            if rst {
                let _ = s.sock.set_linger(Some(Duration::ZERO));
            }
            let v = &mut t.view.sockets[i];
            let lingers0 = rst || v.opts.linger == Some(0);
            v.state = if v.state == SockState::Connected && !lingers0 {
                SockState::Closing
            } else {
                SockState::Gone
            };
            s.close();
            (what, StepOutcome::ok())
        }
        Action::WaitForState {
            state, timeout_ms, ..
        } => {
            let what = format!("wait {name} {state}");
            let st = parse_state(state).expect("checked at load");
            let wait = Duration::from_millis(timeout_ms.unwrap_or(2000));
            let v = &mut t.view.sockets[i];
            let ok = wait_state(v.local, v.peer, st, wait);
            if ok && st == TcpState::TimeWait {
                v.state = SockState::TimeWait;
            }
            let observed = if ok {
                StepOutcome::ok()
            } else {
                StepOutcome::own("timeout", crate::sys::err::TIMED_OUT)
            };
            (what, observed)
        }
        Action::Sleep { .. } => unreachable!("sleep names no socket"),
    }
}

fn accept(t: &mut Table, i: usize, new: &str) -> Done {
    let l = &t.view.sockets[i];
    let what = format!("accept {} as {new}", l.name);
    let Some(s) = t.socks[i].as_ref() else {
        return (what, StepOutcome::own("EBADF", crate::sys::err::BAD_FD));
    };
    match s.accept(TIMEOUT) {
        Ok((c, peer)) => {
            let local = c.local_addr();
            // sk_clone_lock(): the accepted socket inherits the listener's
            // options, owner and IPV6_V6ONLY (so its bind address too).
            let v = SocketView {
                name: new.to_string(),
                port_from: None,
                accepted: true,
                state: SockState::Connected,
                local,
                peer: Some(peer),
                ..l.clone()
            };
            t.view.sockets.push(v);
            t.socks.push(Some(c));
            (what, StepOutcome::ok())
        }
        Err(e) => (what, StepOutcome::failed(e.error)),
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
        // A stop signal: give up now; the step loop reports it.
        if Instant::now() > end || crate::signal::received().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_step_outcome_is_the_files_word_in_text_and_a_calls_outcome_in_json() {
        let j = |o: &StepOutcome| serde_json::to_value(o).unwrap();
        assert_eq!(j(&StepOutcome::ok()), json!({"result": "ok"}));
        let model = StepOutcome::predicted("EADDRINUSE".into());
        assert_eq!(model.word(), "EADDRINUSE");
        assert_eq!(j(&model)["result"], "failed");
        assert_eq!(j(&model)["error"]["name"], "EADDRINUSE");
        assert_eq!(j(&model)["error"]["code"], 98);
        let timeout = StepOutcome::own("timeout", crate::sys::err::TIMED_OUT);
        assert_eq!(format!("{timeout:<9}|"), "timeout  |");
        assert_eq!(j(&timeout)["error"]["code"], crate::sys::err::TIMED_OUT);
        let no_port = StepOutcome {
            word: "no port: a holds none".into(),
            call: Call::NotRun,
        };
        assert_eq!(j(&no_port), json!({"result": "not-run"}));
        assert_eq!(StepOutcome::predicted("ok".into()), StepOutcome::ok());
    }
}
