//! The live part: read the calling thread's namespace (sock_diag, sysctls,
//! /proc owners) and, with `--try`, ask the kernel itself.
//!
//! `--try` performs bind() with each SO_REUSEADDR/SO_REUSEPORT variant in
//! the same namespace and closes the socket at once; it never calls
//! listen(). A connect() is tried only toward a loopback destination, on a
//! non-blocking socket with SO_LINGER {on, 0} so closing it leaves no
//! TIME_WAIT behind; twlab never connects to another host.

use super::bind::{BindQuestion, REUSE_VARIANTS, diagnose_bind};
use super::connect::{ConnectQuestion, diagnose_connect};
use super::diagnosis::{
    Agreement, Attempt, Blocking, Diagnosis, Expect, HANDSHAKE_WAIT_MS, ReuseKnown,
};
use super::table::{Occupant, Table, is_loopback};
use crate::diag::{self, Query, TcpState};
use crate::outcome::SysError;
use crate::socket::SocketOpts;
use crate::sysctl::NetSysctls;
use crate::{Error, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashSet;
use std::net::SocketAddr;

/// The namespace's whole TCP table, every state, bound-only sockets
/// included, with owners.
pub fn read_table() -> Result<Table> {
    let mut table = read_scope(Scope::All)?;
    let inodes: Vec<u32> = table
        .sockets
        .iter()
        .filter(|o| o.entry.inode != 0 && !o.entry.is_timewait_sock())
        .map(|o| o.entry.inode)
        .collect();
    set_owners(&mut table, &inodes);
    Ok(table)
}

/// The sockets a question needs, so the kernel copies out those and not
/// the whole table (every dump still walks the kernel's hash tables once).
/// The rules answer from any table that holds at least these sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything: bind(addr, 0) looks at every port of the range.
    All,
    /// The port's bind bucket: every socket whose own port it is
    /// (`idiag_sport`; the kernel adds every bound-only socket, which it
    /// does not filter by port). Its listeners are in it, which is all
    /// the holders' [`super::Origin`] needs.
    Port(u16),
    /// connect() to a destination port, from a fixed port if any: the
    /// connections to that port (the 4-tuples the range is counted
    /// toward, and self-connected sockets on it), every listener and
    /// bound-only socket (peer port 0: they make a port of the range
    /// bind-owned, and tell which sockets were accepted), every socket
    /// whose port came from bind() (a reset socket that keeps its bound
    /// port is dumped as bound-only with its old peer), and the fixed
    /// port's whole bucket.
    Connect {
        /// The destination's port.
        dst: u16,
        /// The port bind() takes before connect(), if fixed.
        from: Option<u16>,
    },
}

impl Scope {
    /// What `bind(q.addr)` needs.
    pub fn of_bind(q: &BindQuestion) -> Scope {
        match q.addr.port() {
            0 => Scope::All,
            p => Scope::Port(p),
        }
    }

    /// What `connect(q.dst)` needs.
    pub fn of_connect(q: &ConnectQuestion) -> Scope {
        match q.from {
            Some(f) if f.port() != 0 => Scope::Connect {
                dst: q.dst.port(),
                from: Some(f.port()),
            },
            // bind(addr, 0) first: every port of the range.
            Some(_) if !q.bind_no_port => Scope::All,
            _ => Scope::Connect {
                dst: q.dst.port(),
                from: None,
            },
        }
    }

    fn query(self) -> Query {
        use crate::diag::PortTest;
        match self {
            Scope::All => Query::default(),
            Scope::Port(p) => Query {
                local_port: Some(p),
                ..Query::default()
            },
            Scope::Connect { dst, from } => Query {
                any_of: from
                    .map(PortTest::Local)
                    .into_iter()
                    .chain([
                        PortTest::Peer(dst),
                        PortTest::Peer(0),
                        PortTest::PortFromBind,
                    ])
                    .collect(),
                ..Query::default()
            },
        }
    }
}

/// The sockets `scope` needs, without owners: one dump (both families in
/// one walk where the kernel allows). `StateSet::all()` carries
/// idiag_states bit 13 (TCP_BOUND_INACTIVE), so bound-only sockets come
/// in the same dump.
pub fn read_scope(scope: Scope) -> Result<Table> {
    let mut sockets = Vec::new();
    diag::dump_each(&scope.query(), |entry| {
        sockets.push(Occupant {
            entry,
            owners: Vec::new(),
        });
        Ok(())
    })?;
    let mut table = Table::new(sockets);
    table.bound_only_hidden = !crate::model::kernel::version::bound_only_visible();
    Ok(table)
}

/// Give the table's sockets with these inodes their owners, from one scan
/// of /proc/*/fd.
fn set_owners(table: &mut Table, inodes: &[u32]) {
    let owners = crate::diag::owners::socket_owners(inodes);
    for o in table.sockets.iter_mut() {
        if let Some(v) = owners.get(&o.entry.inode) {
            o.owners = v.clone();
        }
    }
}

/// Answer with `diagnose` over the sockets `scope` needs. Owners are read
/// from /proc only for the sockets the answer names (a scan of every
/// process's descriptors costs more than the dump on a busy host, and
/// TIME_WAIT holders have none): the first answer tells which, the
/// second is made with their owners, which only the holder lines, the
/// fixes that name a process and the SO_REUSEPORT group flag print.
pub fn answer(scope: Scope, diagnose: impl Fn(&Table) -> Diagnosis) -> Result<Diagnosis> {
    let mut table = read_scope(scope)?;
    let d = diagnose(&table);
    let named: HashSet<(SocketAddr, SocketAddr, TcpState)> = d
        .holders
        .iter()
        .filter(|h| !h.timewait_sock)
        .map(|h| (h.local, h.peer, h.state))
        .collect();
    if named.is_empty() {
        return Ok(d);
    }
    // The second answer replaces the first: one set of holder reports at
    // a time.
    drop(d);
    let inodes: Vec<u32> = table
        .sockets
        .iter()
        .filter(|o| o.entry.inode != 0 && !o.entry.is_timewait_sock())
        .filter(|o| named.contains(&(o.entry.local, o.entry.peer, o.entry.state)))
        .map(|o| o.entry.inode)
        .collect();
    if !inodes.is_empty() {
        set_owners(&mut table, &inodes);
    }
    Ok(diagnose(&table))
}

/// The effective uid of this process (SO_REUSEPORT compares uids).
pub fn euid() -> u32 {
    #[cfg(unix)]
    {
        nix::unistd::geteuid().as_raw()
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// `twlab why bind`: diagnose on the live namespace, then try if asked.
pub fn bind(q: &BindQuestion, try_it: bool) -> Result<Diagnosis> {
    let sys = NetSysctls::read()?;
    let mut d = answer(Scope::of_bind(q), |t| diagnose_bind(q, t, &sys))?;
    if try_it {
        try_bind(q, &mut d);
    }
    Ok(d)
}

/// `twlab why connect`.
pub fn connect(q: &ConnectQuestion, try_it: bool) -> Result<Diagnosis> {
    let sys = NetSysctls::read()?;
    let mut d = answer(Scope::of_connect(q), |t| diagnose_connect(q, t, &sys))?;
    if try_it {
        try_connect(q, &mut d)?;
    }
    Ok(d)
}

/// `twlab why port`.
pub fn port(port: u16, try_it: bool) -> Result<Diagnosis> {
    let sys = NetSysctls::read()?;
    let scope = match port {
        0 => Scope::All,
        p => Scope::Port(p),
    };
    let uid = euid();
    let mut d = answer(scope, |t| super::diagnose_port(port, t, &sys, uid))?;
    if try_it {
        let q = BindQuestion {
            addr: SocketAddr::from(([0, 0, 0, 0], port)),
            opts: SocketOpts::default(),
            v6only: false,
            uid: euid(),
            cap_net_bind_service: true,
            asker: super::Asker::Unknown,
        };
        try_bind(&q, &mut d);
    }
    Ok(d)
}

fn new_socket(addr: &SocketAddr, opts: SocketOpts, v6only: bool) -> std::io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    s.set_reuse_address(opts.reuseaddr)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    s.set_reuse_port(opts.reuseport)?;
    if addr.is_ipv6() {
        s.set_only_v6(v6only)?;
    }
    #[cfg(target_os = "linux")]
    if opts.bind_no_port {
        use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
        setsockopt(&s, IpBindAddressNoPort, &true).map_err(std::io::Error::from)?;
    }
    Ok(s)
}

/// One bind() in this namespace; the socket is closed on return.
fn bind_once(q: &BindQuestion, opts: SocketOpts) -> std::result::Result<Option<u16>, SysError> {
    let s = new_socket(&q.addr, opts, q.v6only).map_err(|e| SysError::from_io(&e))?;
    s.bind(&SockAddr::from(q.addr))
        .map_err(|e| SysError::from_io(&e))?;
    Ok(s.local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port()))
}

/// Compare a tried result with a prediction.
pub fn agreement(expect: &Expect, error: Option<&str>) -> Agreement {
    match (expect, error) {
        (Expect::Ok, None) => Agreement::Agrees,
        (Expect::Fails { errno, .. }, Some(e)) if e == errno.name() => Agreement::Agrees,
        (Expect::Depends { then: None, .. }, None) => Agreement::Resolves,
        (Expect::Depends { then: Some(f), .. }, None) if f.maybe => Agreement::Resolves,
        (Expect::Depends { errno, .. }, Some(e)) if e == errno.name() => Agreement::Resolves,
        (Expect::Depends { then: Some(f), .. }, Some(e)) if e == f.errno.name() => {
            Agreement::Resolves
        }
        _ => Agreement::Mismatch,
    }
}

/// bind() with every option variant (or once, for port 0), record the
/// kernel's answers, and mark what they teach about the holders.
pub fn try_bind(q: &BindQuestion, d: &mut Diagnosis) {
    if q.addr.port() == 0 {
        let r = bind_once(q, q.opts);
        let error = r.as_ref().err().cloned();
        d.tried.push(Attempt {
            label: q.opts.label(),
            opts: q.opts,
            agrees: agreement(&d.expect, error.as_ref().map(|e| e.name.as_str())),
            port: r.ok().flatten(),
            error,
            learned: None,
            handshake: None,
            kernel_verdict: None,
            kernel_events: Vec::new(),
        });
        return;
    }
    let mut learned = Vec::new();
    for opts in REUSE_VARIANTS {
        let expect = d
            .variants
            .iter()
            .find(|v| v.opts == opts)
            .map(|v| v.expect.clone())
            .unwrap_or(Expect::Ok);
        let r = bind_once(q, opts);
        let error = r.as_ref().err().cloned();
        let agrees = agreement(&expect, error.as_ref().map(|e| e.name.as_str()));
        let lesson = match (agrees, &expect) {
            (Agreement::Resolves, Expect::Depends { ok_if, .. }) => Some(format!(
                "{ok_if}: {}",
                if error.is_none() { "yes" } else { "no" }
            )),
            _ => None,
        };
        learned.extend(lesson.clone());
        d.tried.push(Attempt {
            label: opts.label(),
            opts,
            error,
            port: None,
            agrees,
            learned: lesson,
            handshake: None,
            kernel_verdict: None,
            kernel_events: Vec::new(),
        });
    }
    settle(d, |t| {
        t.opts.reuseaddr == q.opts.reuseaddr && t.opts.reuseport == q.opts.reuseport
    });
    if !learned.is_empty() {
        let what = format!("--try: {}", learned.join("; "));
        for h in d
            .holders
            .iter_mut()
            .filter(|h| !matches!(h.blocking, Blocking::NoOverlap | Blocking::Never))
        {
            h.reuse = ReuseKnown::Learned { what: what.clone() };
        }
    }
}

/// connect() once, toward loopback only, then abort (SO_LINGER 0).
pub fn try_connect(q: &ConnectQuestion, d: &mut Diagnosis) -> Result<()> {
    if !is_loopback(q.dst.ip()) {
        return Err(Error::Usage(format!(
            "--try connects only to loopback destinations; {} is not one (twlab never connects to another host)",
            q.dst
        )));
    }
    let opts = SocketOpts {
        bind_no_port: q.bind_no_port,
        ..q.opts
    };
    // The kernel's events for the destination port, recorded from before
    // the call (Linux as root; otherwise one line says why not).
    let mut witness = KernelWitness::open(q.dst.port());
    let r = connect_once(q, opts, &mut witness);
    let witness_off: Vec<String> = witness.off_line().into_iter().collect();
    let error = r.as_ref().err().cloned();
    d.tried.push(Attempt {
        label: opts.label(),
        opts,
        agrees: agreement(&d.expect, error.as_ref().map(|e| e.name.as_str())),
        port: r.as_ref().ok().map(|t| t.port),
        error,
        learned: None,
        handshake: r.as_ref().ok().and_then(|t| t.handshake.clone()),
        kernel_verdict: r.as_ref().ok().and_then(|t| t.verdict.clone()),
        kernel_events: r.as_ref().map(|t| t.events.clone()).unwrap_or(witness_off),
    });
    settle(d, |_| true);
    Ok(())
}

/// When `--try` of the asked options settled a prediction that depended on
/// the holders' hidden options, say what the kernel did in the answer
/// itself, so no line after the attempt still reads "only if".
fn settle(d: &mut Diagnosis, asked: impl Fn(&Attempt) -> bool) {
    let Some(t) = d
        .tried
        .iter()
        .find(|t| asked(t) && t.agrees == Agreement::Resolves)
    else {
        return;
    };
    let Expect::Depends {
        step,
        errno,
        ok_if,
        then,
    } = d.expect.clone()
    else {
        return;
    };
    let (outcome, verdict) = match (&t.error, then) {
        (None, _) => (Expect::Ok, "yes"),
        (Some(e), Some(f)) if e.name == f.errno.name() => (
            Expect::Fails {
                step: f.step,
                errno: f.errno,
            },
            "yes",
        ),
        (Some(_), _) => (Expect::Fails { step, errno }, "no"),
    };
    d.explanation.push_str(&format!(
        "; --try settled it: {} ({ok_if}: {verdict})",
        match &t.error {
            None => "the kernel accepted the call".to_string(),
            Some(e) => format!("the kernel refused it with {}", e.name),
        }
    ));
    d.expect = outcome;
}

/// What one tried connect() did.
struct Tried {
    /// The local port connect() took.
    port: u16,
    /// What the handshake came to.
    handshake: Option<String>,
    /// The kernel's reason, from its events.
    verdict: Option<String>,
    /// The kernel's events for the 4-tuple.
    events: Vec<String>,
}

/// The kernel's events while `--try` runs: a tracefs session on one port
/// (Linux as root), or why there is none.
struct KernelWitness {
    #[cfg(target_os = "linux")]
    session: std::result::Result<crate::events::Session, String>,
}

impl KernelWitness {
    fn open(port: u16) -> KernelWitness {
        #[cfg(not(target_os = "linux"))]
        let _ = port;
        KernelWitness {
            // The kernel's default buffer: one attempt's events.
            #[cfg(target_os = "linux")]
            session: crate::events::Session::open_sized(
                crate::events::Filter::ports(&[port]),
                None,
            )
            .map_err(|e| e.to_string()),
        }
    }

    /// One line when there are no events to show.
    fn off_line(&self) -> Option<String> {
        #[cfg(target_os = "linux")]
        return self
            .session
            .as_ref()
            .err()
            .map(|why| format!("kernel events: off ({why})"));
        #[cfg(not(target_os = "linux"))]
        Some("kernel events: Linux only (tracefs)".into())
    }

    /// (The kernel's reason, the lines) for `local` ⇄ `peer`.
    fn read(&mut self, local: SocketAddr, peer: SocketAddr) -> (Option<String>, Vec<String>) {
        #[cfg(target_os = "linux")]
        if let Ok(s) = &mut self.session {
            let events = s.drain();
            let mut lines = crate::events::hook::tuple_lines(&events, Some(local), peer);
            if lines.is_empty() {
                lines.push("kernel events: none for this 4-tuple".into());
            }
            return (crate::events::hook::verdict(&events, local, peer), lines);
        }
        let _ = (local, peer);
        (None, self.off_line().into_iter().collect())
    }
}

/// connect() toward loopback, non-blocking; then up to
/// [`HANDSHAKE_WAIT_MS`] for the handshake's result and the kernel's
/// events about it; the socket is aborted on return (SO_LINGER 0).
fn connect_once(
    q: &ConnectQuestion,
    opts: SocketOpts,
    witness: &mut KernelWitness,
) -> std::result::Result<Tried, SysError> {
    let name = |e: std::io::Error| SysError::from_io(&e);
    let s = new_socket(&q.dst, opts, true).map_err(name)?;
    s.set_linger(Some(std::time::Duration::ZERO))
        .map_err(name)?;
    if let Some(from) = q.from {
        s.bind(&SockAddr::from(from)).map_err(name)?;
    }
    s.set_nonblocking(true).map_err(name)?;
    match s.connect(&SockAddr::from(q.dst)) {
        Ok(()) => {}
        Err(e) if in_progress(&e) => {}
        Err(e) => return Err(name(e)),
    }
    // connect() itself took the port: that is what the diagnosis is
    // about. The handshake's result is told beside it.
    let local = s.local_addr().ok().and_then(|a| a.as_socket());
    let handshake = handshake_result(&s);
    let (verdict, events) = match local {
        Some(l) => witness.read(l, q.dst),
        None => (None, Vec::new()),
    };
    Ok(Tried {
        port: local.map_or(0, |a| a.port()),
        handshake: Some(handshake),
        verdict,
        events,
    })
}

/// Wait (bounded) until the non-blocking connect() is writable, then read
/// its SO_ERROR: "established", "refused: ECONNREFUSED", or no answer.
fn handshake_result(s: &Socket) -> String {
    let start = std::time::Instant::now();
    let wait = std::time::Duration::from_millis(HANDSHAKE_WAIT_MS);
    // Bounded by `wait`; each turn sleeps at most 10 ms in poll.
    loop {
        match s.take_error() {
            Ok(Some(e)) => return format!("refused: {}", SysError::from_io(&e).name),
            Err(e) => return format!("unknown: {}", SysError::from_io(&e).name),
            Ok(None) => {}
        }
        if s.peer_addr().is_ok() {
            return "established".into();
        }
        if start.elapsed() >= wait {
            return format!("no answer within {HANDSHAKE_WAIT_MS} ms (the SYN got no SYN-ACK)");
        }
        let _ = crate::sys::wait(
            s,
            crate::sys::Ready::Connected,
            std::time::Duration::from_millis(10),
        );
    }
}

/// A non-blocking connect() that started (EINPROGRESS; WSAEWOULDBLOCK).
fn in_progress(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(crate::sys::err::CONNECT_STARTED)
}
