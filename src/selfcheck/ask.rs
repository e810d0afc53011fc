//! Ask one question: the prediction through the code the user-facing
//! commands use (`twlab why`'s [`why::diagnose_bind`] /
//! [`why::diagnose_connect`] over [`why::live::read_table`] and
//! [`NetSysctls::read`] of this namespace, `ss --summary`'s
//! [`why::range_use`]), then the real call on a real socket, and the two
//! compared.

use super::generate::{AfterBind, BindAsk, ConnectAsk, Owner, PortChoice, Question, Source};
use super::setup::{self, Table};
use crate::outcome::Step;
use crate::scenario::file::{Action, SocketSpec, StepSpec};
use crate::socket::{SocketOpts, StepError, TcpSock, V6Only};
use crate::sysctl::NetSysctls;
use crate::why::{self, BindQuestion, ConnectQuestion, Diagnosis, Errno, Expect};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The name of the question's socket in a written scenario.
pub const QUESTION_SOCKET: &str = "q";

/// What the kernel did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Observed {
    /// Every call succeeded (a non-blocking connect() that started counts).
    Ok,
    /// A call failed.
    Failed {
        /// Which.
        step: Step,
        /// With which errno (the contract's errno object: name, number,
        /// Winsock twin).
        errno: crate::outcome::SysError,
    },
}

impl Observed {
    /// "ok", "bind EADDRINUSE".
    pub fn short(&self) -> String {
        match self {
            Observed::Ok => "ok".into(),
            Observed::Failed { step, errno } => format!("{step} {}", errno.name),
        }
    }

    fn of(e: &StepError) -> Self {
        Observed::Failed {
            step: e.step,
            errno: e.error.clone(),
        }
    }
}

/// Which user-facing prediction a check compares.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// `twlab why bind` (and `server`'s diagnosis of a failed bind()).
    WhyBind,
    /// The same diagnosis for a bind() then listen() (what `twlab server`
    /// does).
    WhyListen,
    /// `twlab why connect` (and `client`'s diagnosis of a failed connect()).
    WhyConnect,
    /// `ss --summary`'s "connect() to a new peer can use N" and the
    /// per-peer usable count, for a connect() from a kernel-chosen port.
    SsSummary,
}

impl CheckKind {
    /// Every kind, in report order.
    pub const ALL: [CheckKind; 4] = [
        CheckKind::WhyBind,
        CheckKind::WhyListen,
        CheckKind::WhyConnect,
        CheckKind::SsSummary,
    ];

    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::WhyBind => "why-bind",
            CheckKind::WhyListen => "why-listen",
            CheckKind::WhyConnect => "why-connect",
            CheckKind::SsSummary => "ss-summary",
        }
    }
}

/// A prediction against the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The kernel did what was predicted.
    Agrees,
    /// The prediction was `Depends` (sock_diag cannot show what decides)
    /// and the kernel gave one of its two outcomes.
    AgreesDepends,
    /// The kernel did something else.
    Disagrees,
}

/// One prediction compared with the kernel.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Check {
    /// Which prediction.
    pub kind: CheckKind,
    /// The deciding rule (`why`'s rule name, or `range-use` for `ss`).
    pub rule: String,
    /// Its kernel function, as `why` names it.
    pub kernel_fn: String,
    /// The predicted outcome in words.
    pub predicted: String,
    /// The prediction, short: "ok", "bind EADDRINUSE", "bind EADDRINUSE|ok".
    pub predicted_short: String,
    /// Why, as `why` explains it.
    pub explanation: String,
    /// What the kernel did.
    pub observed: Observed,
    /// The comparison.
    pub verdict: Verdict,
}

/// A question as it was asked.
pub struct Asked {
    /// The question in words: "bind 127.0.0.1:80 (REUSEADDR) as uid 65534".
    pub what: String,
    /// The question in the words of its kind, for grouping disagreements:
    /// "bind(ip, 0)", "connect() after bind(ip, 0) with NO_PORT".
    pub shape: &'static str,
    /// The comparisons it made.
    pub checks: Vec<Check>,
    /// The question's socket for a scenario file.
    pub socket: SocketSpec,
    /// The question's calls for a scenario file, each with what it got.
    pub steps: Vec<StepSpec>,
}

/// Compare `expect` with what the kernel did: the step and the errno must
/// both match.
pub fn judge(expect: &Expect, obs: &Observed) -> Verdict {
    let same = |step: &Step, errno: &Errno| matches!(obs, Observed::Failed { step: s, errno: e } if s == step && e.name == errno.name());
    match expect {
        Expect::Ok if *obs == Observed::Ok => Verdict::Agrees,
        Expect::Fails { step, errno } if same(step, errno) => Verdict::Agrees,
        Expect::Depends {
            step, errno, then, ..
        } if same(step, errno)
            || then.is_none_or(|f| f.maybe) && *obs == Observed::Ok
            || then.is_some_and(|f| same(&f.step, &f.errno)) =>
        {
            Verdict::AgreesDepends
        }
        _ => Verdict::Disagrees,
    }
}

fn expect_short(e: &Expect) -> String {
    match e {
        Expect::Ok => "ok".into(),
        Expect::Fails { step, errno } => format!("{step} {}", errno.name()),
        Expect::Depends {
            step,
            errno,
            then: None,
            ..
        } => format!("{step} {}|ok", errno.name()),
        Expect::Depends {
            step,
            errno,
            then: Some(f),
            ..
        } => format!("{step} {}|{} {}", errno.name(), f.step, f.errno.name()),
    }
}

fn check_of(kind: CheckKind, d: &Diagnosis, observed: &Observed) -> Check {
    Check {
        kind,
        rule: d.rule.name().to_string(),
        kernel_fn: d.kernel_fn.to_string(),
        predicted: d.expect.describe(),
        predicted_short: expect_short(&d.expect),
        explanation: d.explanation.clone(),
        observed: observed.clone(),
        verdict: judge(&d.expect, observed),
    }
}

/// The port a question names, `None` if the socket it refers to got none.
fn port_of(p: &PortChoice, t: &Table) -> Option<u16> {
    match p {
        PortChoice::Fixed(p) => Some(*p),
        PortChoice::Zero => Some(0),
        PortChoice::LocalPortOf(n) => t.get(n)?.local.map(|a| a.port()).filter(|&p| p != 0),
    }
}

/// Run the calls of a question the way its owner would: another user's
/// without CAP_NET_BIND_SERVICE (see [`crate::sys::caps`]).
fn as_owner<T>(owner: Owner, f: impl FnOnce() -> T) -> Result<T, String> {
    match owner {
        Owner::Runner => Ok(f()),
        Owner::Other => {
            let (r, dropped) = crate::sys::caps::without_bind_service(f);
            dropped
                .map(|()| r)
                .map_err(|e| format!("cannot drop CAP_NET_BIND_SERVICE: {e}"))
        }
    }
}

fn spec(name: &str, addr: SocketAddr, opts: SocketOpts, owner: Owner) -> SocketSpec {
    SocketSpec {
        name: name.to_string(),
        address: addr.to_string(),
        reuseaddr: opts.reuseaddr,
        reuseport: opts.reuseport,
        v6only: opts.v6only,
        linger: opts.linger,
        bind_address_no_port: opts.bind_no_port,
        uid: (owner == Owner::Other).then_some(owner.uid()),
        unprivileged: owner == Owner::Other,
        port_from: None,
    }
}

/// `s` binding the port socket `from` holds (`port_from`), if any: its
/// address then says port 0, since the kernel's pick differs per replay.
fn taking_port(mut s: SocketSpec, from: Option<String>) -> SocketSpec {
    if let Some(from) = from {
        if let Ok(mut a) = s.address.parse::<SocketAddr>() {
            a.set_port(0);
            s.address = a.to_string();
        }
        s.port_from = Some(from);
    }
    s
}

/// The socket a port choice takes its port from, for the file.
fn port_source(p: &PortChoice) -> Option<String> {
    match p {
        PortChoice::LocalPortOf(n) => Some(n.clone()),
        _ => None,
    }
}

fn step(action: Action, r: &Observed) -> StepSpec {
    StepSpec {
        action,
        expect: Some(match r {
            Observed::Ok => "ok".into(),
            Observed::Failed { errno, .. } => errno.name.clone(),
        }),
    }
}

/// Ask `q` in the calling thread's namespace, whose table is `t`; `None`
/// when the question does not apply (the socket it names got no port, the
/// listener it connects to is not listening).
pub fn ask(q: &Question, t: &Table) -> Result<Option<Asked>, String> {
    match q {
        Question::Bind(b) => bind(b, t),
        Question::Connect(c) => connect(c, t),
    }
}

fn read_live() -> Result<(why::Table, NetSysctls), String> {
    let table = why::live::read_table().map_err(|e| e.to_string())?;
    let sys = NetSysctls::read().map_err(|e| e.to_string())?;
    Ok((table, sys))
}

fn bind(b: &BindAsk, t: &Table) -> Result<Option<Asked>, String> {
    let Some(port) = port_of(&b.port, t) else {
        return Ok(None);
    };
    let addr = SocketAddr::new(b.ip, port);
    let (table, sys) = read_live()?;
    let opts = SocketOpts {
        reuseaddr: b.reuseaddr,
        reuseport: b.reuseport,
        v6only: b.v6only,
        ..SocketOpts::default()
    };
    // As `twlab why bind` resolves it: the option if given, else the
    // namespace's net.ipv6.bindv6only.
    let q = BindQuestion {
        addr,
        opts: SocketOpts {
            v6only: V6Only::System,
            ..opts
        },
        v6only: b.v6only.resolve(sys.bindv6only.unwrap_or(false)),
        uid: b.owner.uid(),
        // The other owner asks as an ordinary user would.
        cap_net_bind_service: b.owner == Owner::Runner,
        asker: why::Asker::Unknown,
    };
    let d = why::diagnose_bind(&q, &table, &sys);
    let sock_spec = taking_port(
        spec(QUESTION_SOCKET, addr, opts, b.owner),
        port_source(&b.port),
    );
    let sock = setup::open(&sock_spec, addr)?;
    let listen = b.then == AfterBind::Listen;
    let (bound, listened) = as_owner(b.owner, || {
        let bound = sock.bind(addr).map_err(|e| Observed::of(&e));
        let listened = match (&bound, listen) {
            (Ok(()), true) => Some(sock.listen(16).map_err(|e| Observed::of(&e))),
            _ => None,
        };
        (bound, listened)
    })?;
    drop(sock);
    let obs = |r: &Result<(), Observed>| r.as_ref().err().cloned().unwrap_or(Observed::Ok);
    let mut steps = vec![step(
        Action::Bind {
            socket: QUESTION_SOCKET.into(),
        },
        &obs(&bound),
    )];
    let observed = match &listened {
        Some(l) => {
            steps.push(step(
                Action::Listen {
                    socket: QUESTION_SOCKET.into(),
                    backlog: None,
                },
                &obs(l),
            ));
            obs(l)
        }
        None => obs(&bound),
    };
    let kind = if listen {
        CheckKind::WhyListen
    } else {
        CheckKind::WhyBind
    };
    let shape = match (listen, port) {
        (true, 0) => "bind(ip, 0) + listen()",
        (true, _) => "bind() + listen()",
        (false, 0) => "bind(ip, 0)",
        (false, _) => "bind()",
    };
    Ok(Some(Asked {
        what: format!(
            "{}bind {addr} ({}{}){}",
            if listen { "listen after " } else { "" },
            opts.label(),
            v6_word(addr.ip(), q.v6only),
            owner_word(b.owner)
        ),
        shape,
        checks: vec![check_of(kind, &d, &observed)],
        socket: sock_spec,
        steps,
    }))
}

fn v6_word(ip: IpAddr, v6only: bool) -> &'static str {
    match (ip, v6only) {
        (IpAddr::V4(_), _) => "",
        (IpAddr::V6(_), true) => ", V6ONLY",
        (IpAddr::V6(_), false) => ", dual-stack",
    }
}

fn owner_word(o: Owner) -> String {
    match o {
        Owner::Runner => String::new(),
        Owner::Other => format!(
            " as uid {} without CAP_NET_BIND_SERVICE",
            Owner::Other.uid()
        ),
    }
}

/// The source address connect() uses toward a loopback `dst` without a
/// bind(): `ip route get 127.0.0.x` on `lo` says `src 127.0.0.1`.
fn kernel_source(dst: SocketAddr) -> IpAddr {
    match dst {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

fn connect(c: &ConnectAsk, t: &Table) -> Result<Option<Asked>, String> {
    if !t
        .get(&c.listener)
        .is_some_and(|l| l.listening && l.sock.is_some())
    {
        return Ok(None);
    }
    let (from, bind_no_port, shape) = match &c.from {
        Source::Kernel => (None, false, "connect() from a kernel-chosen port"),
        Source::Fixed { ip, port } => {
            let Some(p) = port_of(port, t) else {
                return Ok(None);
            };
            (
                Some(SocketAddr::new(*ip, p)),
                false,
                "connect() from a fixed port",
            )
        }
        Source::PortZero { ip } => (
            Some(SocketAddr::new(*ip, 0)),
            false,
            "connect() after bind(ip, 0)",
        ),
        Source::NoPort { ip } => (
            Some(SocketAddr::new(*ip, 0)),
            true,
            "connect() after bind(ip, 0) with IP_BIND_ADDRESS_NO_PORT",
        ),
    };
    let (table, sys) = read_live()?;
    let q = ConnectQuestion {
        dst: c.dst,
        from,
        bind_no_port,
        opts: SocketOpts {
            reuseaddr: c.reuseaddr,
            ..SocketOpts::default()
        },
        uid: c.owner.uid(),
        cap_net_bind_service: c.owner == Owner::Runner,
    };
    let d = why::diagnose_connect(&q, &table, &sys);
    let summary = from.is_none().then(|| {
        let entries: Vec<_> = table.sockets.iter().map(|o| o.entry.clone()).collect();
        let u = why::range_use(&entries, &sys, usize::MAX);
        let src = kernel_source(c.dst);
        u.peers
            .iter()
            .find(|p| p.peer == c.dst && p.local_addr == src)
            .map_or((u.usable_new_peer, u.expect_new_peer()), |p| {
                (p.capacity.usable, p.capacity.expect())
            })
    });
    // The socket `why connect --try` makes (`why::live::try_connect`):
    // IPV6_V6ONLY on an IPv6 one, SO_LINGER {on, 0} so closing it leaves
    // no TIME_WAIT behind.
    let opts = SocketOpts {
        reuseaddr: c.reuseaddr,
        linger: Some(0),
        bind_no_port,
        v6only: if c.dst.is_ipv6() {
            V6Only::On
        } else {
            V6Only::System
        },
        ..SocketOpts::default()
    };
    let local = from.unwrap_or_else(|| SocketAddr::new(unspecified(c.dst), 0));
    let sock_spec = taking_port(
        spec(QUESTION_SOCKET, local, opts, c.owner),
        match &c.from {
            Source::Fixed { port, .. } => port_source(port),
            _ => None,
        },
    );
    let sock = setup::open(&sock_spec, c.dst)?;
    let (bound, connected) = as_owner(c.owner, || {
        let bound = from.map(|f| sock.bind(f).map_err(|e| Observed::of(&e)));
        let connected = match bound {
            Some(Err(_)) => None,
            _ => Some(connect_started(&sock, c.dst)),
        };
        (bound, connected)
    })?;
    drop(sock);
    let mut steps = Vec::new();
    if let Some(b) = &bound {
        let o = b.as_ref().err().cloned().unwrap_or(Observed::Ok);
        steps.push(step(
            Action::Bind {
                socket: QUESTION_SOCKET.into(),
            },
            &o,
        ));
    }
    let observed = match (&bound, &connected) {
        (Some(Err(e)), _) => e.clone(),
        (_, Some(r)) => {
            steps.push(step(
                Action::Connect {
                    socket: QUESTION_SOCKET.into(),
                    to: c.dst.to_string(),
                },
                r,
            ));
            r.clone()
        }
        _ => Observed::Ok,
    };
    let mut checks = vec![check_of(CheckKind::WhyConnect, &d, &observed)];
    if let Some(usable) = summary {
        checks.push(summary_check(usable, c.dst, &observed));
    }
    Ok(Some(Asked {
        what: format!(
            "connect {}{} ({}){}",
            c.dst,
            match (from, bind_no_port) {
                (None, _) => String::new(),
                (Some(f), false) => format!(" from bind({f})"),
                (Some(f), true) => format!(" from bind({f}) with IP_BIND_ADDRESS_NO_PORT"),
            },
            q.opts.label(),
            owner_word(c.owner)
        ),
        shape,
        checks,
        socket: sock_spec,
        steps,
    }))
}

fn unspecified(dst: SocketAddr) -> IpAddr {
    match dst {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// A non-blocking connect(): the source port is chosen (or refused) inside
/// the call (`tcp_v4_connect()` → `__inet_hash_connect()`), so EINPROGRESS
/// is success here, as for `why connect --try`.
fn connect_started(sock: &TcpSock, dst: SocketAddr) -> Observed {
    if let Err(e) = sock.sock.set_nonblocking(true) {
        return Observed::of(&StepError::from_io(Step::SetOpt, &e));
    }
    match sock.sock.connect(&dst.into()) {
        Ok(()) => Observed::Ok,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Observed::Ok,
        Err(e) => Observed::of(&StepError::from_io(Step::Connect, &e)),
    }
}

/// `ss --summary`'s count against the kernel: 0 usable ports must mean
/// EADDRNOTAVAIL at connect(), more must mean success.
/// `ss --summary`'s prediction for a new connection to `dst`: the range
/// accounting's own ([`why::Capacity::expect`]).
fn summary_check((usable, expect): (u32, Expect), dst: SocketAddr, observed: &Observed) -> Check {
    Check {
        kind: CheckKind::SsSummary,
        rule: "range-use".into(),
        kernel_fn: "__inet_hash_connect()".into(),
        predicted: format!(
            "{} (a new connection to {dst} can use {usable} ports)",
            expect.describe()
        ),
        predicted_short: expect_short(&expect),
        explanation: format!(
            "ss --summary: connect() to {dst} can use {usable} ports of the range"
        ),
        observed: observed.clone(),
        verdict: judge(&expect, observed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_agrees_with_either_outcome_and_steps_must_match() {
        let fails = |step| Observed::Failed {
            step,
            errno: crate::outcome::SysError::linux(libc::EADDRINUSE),
        };
        let depends = Expect::Depends {
            step: Step::Bind,
            errno: Errno::EADDRINUSE,
            ok_if: "x".into(),
            then: None,
        };
        assert_eq!(judge(&depends, &Observed::Ok), Verdict::AgreesDepends);
        assert_eq!(judge(&depends, &fails(Step::Bind)), Verdict::AgreesDepends);
        assert_eq!(judge(&depends, &fails(Step::Listen)), Verdict::Disagrees);
        let f = Expect::Fails {
            step: Step::Bind,
            errno: Errno::EADDRINUSE,
        };
        assert_eq!(judge(&f, &fails(Step::Bind)), Verdict::Agrees);
        assert_eq!(judge(&f, &Observed::Ok), Verdict::Disagrees);
        assert_eq!(judge(&Expect::Ok, &fails(Step::Bind)), Verdict::Disagrees);
    }
}
