//! Build a situation's socket table in the calling thread's (fresh)
//! namespace: perform its steps on real sockets, synchronising on the
//! kernel's states (sock_diag), never on sleeps, and record what each step
//! got, so the scenario file written for a disagreement says it.
//!
//! The steps mean what `twlab run` makes of them (`scenario::play`), so the
//! file replays the same table; a step on a socket whose earlier step
//! failed is left out (of the run and of the file).

use crate::diag::{DiagSocket, TcpState};
use crate::scenario::file::{Action, SocketSpec, StepSpec, parse_state};
use crate::socket::{Family, SocketOpts, TcpSock, parse_endpoint};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bound of every wait on the kernel: loopback settles in microseconds;
/// this only turns a stuck step into a recorded "timeout".
const SETTLE: Duration = Duration::from_secs(2);

/// One socket of the table as it lives.
pub struct Live {
    /// Its spec (an accepted socket: its listener's, renamed).
    pub spec: SocketSpec,
    /// The address its spec binds.
    pub addr: SocketAddr,
    /// The descriptor, until closed.
    pub sock: Option<TcpSock>,
    /// getsockname() after bind/connect/accept.
    pub local: Option<SocketAddr>,
    /// The peer after connect/accept.
    pub peer: Option<SocketAddr>,
    /// listen() succeeded.
    pub listening: bool,
    /// A step of it failed: later steps on it are skipped.
    pub failed: bool,
}

/// The table, built.
pub struct Table {
    /// Its sockets (the accepted ones appended).
    pub live: Vec<Live>,
    /// The steps that ran, each with what it got as `expect`.
    pub ran: Vec<StepSpec>,
    /// The destination of a connection the last connect() made, which a
    /// listener of the table has to accept: none when connect() failed, nor
    /// for a self-connect (local == peer, simultaneous open: no listener is
    /// involved).
    pending_accept: Option<SocketAddr>,
}

impl Table {
    /// The socket named `name`.
    pub fn get(&self, name: &str) -> Option<&Live> {
        self.live.iter().find(|l| l.spec.name == name)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.live.iter().position(|l| l.spec.name == name)
    }

    /// The sockets the file must define: those a step that ran uses.
    pub fn used_specs(&self) -> Vec<SocketSpec> {
        let used = |n: &str| self.ran.iter().any(|s| s.action.socket() == Some(n));
        self.live
            .iter()
            .filter(|l| used(&l.spec.name))
            .filter(|l| !is_accepted(&l.spec.name, &self.ran))
            .map(|l| l.spec.clone())
            .collect()
    }
}

/// An accepted socket is named by its accept step, not defined.
fn is_accepted(name: &str, ran: &[StepSpec]) -> bool {
    ran.iter()
        .any(|s| matches!(&s.action, Action::Accept { name: n, .. } if n == name))
}

/// Create a socket for `spec` with its owner's fsuid, as `scenario::play`
/// does.
pub fn open(spec: &SocketSpec, addr: SocketAddr) -> Result<TcpSock, String> {
    let opts = SocketOpts {
        reuseaddr: spec.reuseaddr,
        reuseport: spec.reuseport,
        linger: spec.linger,
        bind_no_port: spec.bind_address_no_port,
        v6only: spec.v6only,
    };
    crate::sys::fsuid::with_fsuid(spec.uid.unwrap_or(0), || {
        TcpSock::new(Family::of(&addr), opts)
    })
    .map_err(|e| e.error.name)
}

/// Build the table: every socket created up front (as `twlab run` does),
/// then the steps in order.
pub fn build(sockets: &[SocketSpec], steps: &[Action]) -> Result<Table, String> {
    let mut t = Table {
        live: Vec::new(),
        ran: Vec::new(),
        pending_accept: None,
    };
    for spec in sockets {
        let addr = parse_endpoint(&spec.address).map_err(|e| e.to_string())?;
        let sock = open(spec, addr).map_err(|e| format!("socket {}: {e}", spec.name))?;
        t.live.push(Live {
            spec: spec.clone(),
            addr,
            sock: Some(sock),
            local: None,
            peer: None,
            listening: false,
            failed: false,
        });
    }
    let mut diag = DiagSocket::open().map_err(|e| e.to_string())?;
    for a in steps {
        if let Some(outcome) = step(&mut t, a, &mut diag) {
            t.ran.push(StepSpec {
                action: outcome.0,
                expect: Some(outcome.1),
            });
        }
    }
    Ok(t)
}

fn name_of<T>(r: &Result<T, crate::socket::StepError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.error.name.clone(),
    }
}

/// Perform one step; `None` if it is skipped (its socket failed or is
/// gone), else the step as it ran (an accept names the listener that
/// really had the connection) and its outcome.
fn step(t: &mut Table, a: &Action, diag: &mut DiagSocket) -> Option<(Action, String)> {
    if let Action::Accept { name, .. } = a {
        // Whichever listener the connection reached, even when the one the
        // step names failed (another socket of the port may listen).
        let dst = t.pending_accept.take()?;
        return accept(t, dst, name);
    }
    let i = t.index(a.socket()?)?;
    if t.live[i].failed || (t.live[i].sock.is_none() && !matches!(a, Action::WaitForState { .. })) {
        return None;
    }
    let outcome = match a {
        Action::Bind { .. } => {
            let l = &mut t.live[i];
            let s = l.sock.as_ref()?;
            let r = s.bind(l.addr);
            l.local = s.local_addr();
            l.failed = r.is_err();
            name_of(&r)
        }
        Action::Listen { .. } => {
            let l = &mut t.live[i];
            let r = l.sock.as_ref()?.listen(16);
            l.listening = r.is_ok();
            l.failed = r.is_err();
            name_of(&r)
        }
        Action::Connect { to, .. } => {
            let to = parse_endpoint(to).ok()?;
            let l = &mut t.live[i];
            let s = l.sock.as_ref()?;
            let r = s.connect(to, SETTLE);
            if r.is_ok() {
                l.local = s.local_addr();
                l.peer = Some(to);
            }
            l.failed = r.is_err();
            t.pending_accept = (r.is_ok() && l.local != Some(to)).then_some(to);
            name_of(&r)
        }
        Action::Accept { .. } => return None,
        Action::Close { .. } | Action::CloseRst { .. } => {
            let s = t.live[i].sock.take()?;
            if matches!(a, Action::CloseRst { .. }) {
                let _ = s.sock.set_linger(Some(Duration::ZERO));
            }
            s.close();
            "ok".into()
        }
        Action::WaitForState { state, .. } => {
            let l = &t.live[i];
            let want = parse_state(state)?;
            let reached = wait_state(diag, l.local?, l.peer?, want);
            if reached { "ok" } else { "timeout" }.to_string()
        }
        Action::Send { .. } | Action::Recv { .. } | Action::Sleep { .. } => return None,
    };
    Some((a.clone(), outcome))
}

/// accept() the connection just made to `dst`. The listener that gets it
/// is the kernel's choice (the most specific address, or one of a
/// SO_REUSEPORT group: `inet_lhash2_lookup()`, `reuseport_select_sock()`),
/// so every listening socket of that port is tried, bounded by [`SETTLE`];
/// the step records the one that had it.
fn accept(t: &mut Table, dst: SocketAddr, name: &str) -> Option<(Action, String)> {
    let port = dst.port();
    let candidates: Vec<usize> = (0..t.live.len())
        .filter(|&j| {
            let l = &t.live[j];
            l.listening && l.sock.is_some() && l.local.map(|a| a.port()) == Some(port)
        })
        .collect();
    let end = Instant::now() + SETTLE;
    let mut pause = Duration::from_micros(100);
    // Bounded by the deadline.
    loop {
        for &j in &candidates {
            let s = t.live[j].sock.as_ref()?;
            if let Ok((c, peer)) = s.accept(Duration::ZERO) {
                let spec = SocketSpec {
                    name: name.to_string(),
                    ..t.live[j].spec.clone()
                };
                let action = Action::Accept {
                    socket: t.live[j].spec.name.clone(),
                    name: name.to_string(),
                };
                let local = c.local_addr();
                t.live.push(Live {
                    addr: local.unwrap_or(t.live[j].addr),
                    spec,
                    sock: Some(c),
                    local,
                    peer: Some(peer),
                    listening: false,
                    failed: false,
                });
                return Some((action, "ok".into()));
            }
        }
        if Instant::now() >= end {
            let listener = candidates.first().map(|&j| t.live[j].spec.name.clone())?;
            return Some((
                Action::Accept {
                    socket: listener,
                    name: name.to_string(),
                },
                "timeout".into(),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Wait (bounded) until the kernel shows `local` → `peer` in `want`, by
/// exact lookup (`inet_diag_find_one_icsk()`, TIME_WAIT included).
fn wait_state(diag: &mut DiagSocket, local: SocketAddr, peer: SocketAddr, want: TcpState) -> bool {
    let end = Instant::now() + SETTLE;
    let mut pause = Duration::from_micros(100);
    // Bounded by the deadline.
    loop {
        if let Ok(Some(e)) = diag.lookup(local, peer)
            && e.state == want
        {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}
