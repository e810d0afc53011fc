//! `twlab server`: the story's server. Accepts, then closes first or after
//! the peer, one event line per connection with the server end's state
//! right after close (one exact sock_diag lookup per connection).

use super::why::FailureWhy;
use super::{CloseMode, FIN_WAIT_NOTICE_AFTER, Output, OutputFormat, line, say_waiting};
use crate::diag::{self, DiagSocket, TcpState};
use crate::error::{Error, Result};
use crate::experiment::How;
use crate::outcome::Exit;
use crate::outcome::Outcome;
use crate::socket::{Family, SocketOpts, StepError, TcpSock, explain_step_error};
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The listen queue: as deep as the kernel allows (it caps the value at
/// net.core.somaxconn, 4096 by default since Linux 5.4), like the C
/// baseline. With 128, a client closing first in a tight loop overflowed
/// it (ListenOverflows), and each dropped SYN cost a 1 s retransmission.
const BACKLOG: i32 = 4096;

/// What `twlab server` does, parsed and checked.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// SO_REUSEADDR / SO_REUSEPORT on the listener (accepted sockets
    /// inherit them) and SO_LINGER on accepted sockets.
    pub opts: SocketOpts,
    /// SO_EXCLUSIVEADDRUSE on the listener (Windows only; elsewhere
    /// [`TcpSock::set_exclusive_addr_use`] fails).
    pub exclusive_addr_use: bool,
    /// Who closes first.
    pub close: CloseMode,
    /// With [`CloseMode::AfterPeer`]: the pause between the peer's FIN and
    /// this end's close (a slow server).
    pub close_delay: Duration,
    /// Stop after this many connections.
    pub count: u64,
    /// Stop when no connection arrives for this long.
    pub idle_timeout: Duration,
    /// Text lines or JSON Lines.
    pub format: OutputFormat,
}

/// One end of a connection, or both (who closed first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum End {
    /// The server's end.
    Server,
    /// The client's end.
    Client,
    /// Both at once: each end sent its FIN before it saw the other's
    /// (simultaneous close, RFC 793 §3.5 case 2: FIN_WAIT1 → CLOSING →
    /// TIME_WAIT on both ends).
    Both,
}

/// One connection as the server saw it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ServerEvent {
    /// Seconds since the server started (in JSON `t_s`).
    #[serde(rename = "t_s")]
    pub t: f64,
    /// The connection's number, from 1.
    pub n: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The server end's address.
    pub local: SocketAddr,
    /// Which end closed first, as this end saw it.
    pub closed_first: End,
    /// How the client closed, when the server saw it: its FIN (recv()
    /// returned 0) or its RST (ECONNRESET). `None`: the server closed
    /// without waiting and did not look.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_close: Option<How>,
    /// How the server closed: RST with SO_LINGER {on, 0}, FIN otherwise.
    pub server_close: How,
    /// "ok" or what waiting for the peer gave instead of its FIN.
    pub result: String,
    /// The server end's state right after close, from sock_diag: a state
    /// name as every command spells it ("last-ack", "fin-wait-1") or
    /// "gone". `closed_first` agrees with it (see `refine`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "state_or_gone_schema")]
    pub state_after_close: Option<String>,
    /// That end's timer, if it has one (TIME_WAIT's time left).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timer_after_close: Option<diag::Timer>,
    /// The same state as the text line says it ("TIME_WAIT, 59.9 s left").
    #[serde(skip)]
    pub state_text: Option<String>,
}

impl ServerEvent {
    fn write(&self, out: &mut impl Write, format: OutputFormat) -> std::io::Result<()> {
        if format == OutputFormat::Json {
            serde_json::to_writer(&mut *out, &crate::json::line("connection", self))?;
            return writeln!(out);
        }
        // As `"{Secs3}s #{n:<4} {peer} → {local}  "`, without the
        // formatter: one line per connection in the tight loop.
        line::put_secs3(out, self.t)?;
        out.write_all(b"s #")?;
        line::put_u64_left(out, self.n, 4)?;
        out.write_all(b" ")?;
        line::put_addr(out, &self.peer)?;
        out.write_all(" → ".as_bytes())?;
        line::put_addr(out, &self.local)?;
        out.write_all(b"  ")?;
        let server = self.server_close.name().as_bytes();
        let parts: [&[u8]; 5] = match (self.closed_first, self.client_close) {
            (End::Both, _) => [
                b"both closed at once (the FINs crossed: simultaneous close; the server's ",
                server,
                b")",
                b"",
                b"",
            ],
            (End::Client, None) => [
                b"client closed first (seen in the state after close), then the server (",
                server,
                b")",
                b"",
                b"",
            ],
            (End::Client, Some(c)) => [
                b"client closed first (",
                c.name().as_bytes(),
                b"), then the server (",
                server,
                b")",
            ],
            (End::Server, Some(c)) => [
                b"server closed first (",
                server,
                b"), then the client (",
                c.name().as_bytes(),
                b")",
            ],
            (End::Server, None) => [b"server closed first (", server, b")", b"", b""],
        };
        for p in parts {
            out.write_all(p)?;
        }
        out.write_all(b", ")?;
        out.write_all(self.result.as_bytes())?;
        if let Some(s) = &self.state_text {
            out.write_all(b"; server end now ")?;
            out.write_all(s.as_bytes())?;
        }
        writeln!(out)
    }
}

/// What waiting for a connection gave.
enum Next {
    Conn(TcpSock, SocketAddr),
    /// No connection for the idle timeout.
    Idle,
    /// The output is closed (e.g. stdout piped into head).
    OutputClosed,
}

/// While connections keep coming, accept() waits this long before the
/// server counts itself idle and flushes its output.
const BUSY_WAIT: Duration = Duration::from_millis(5);
/// Once idle, accept() waits in slices this long, so Ctrl-C is noticed
/// within 200 ms.
const IDLE_SLICE: Duration = super::WAIT_SLICE;

/// Accept the next connection. A busy server pays one accept() per
/// connection; output is flushed when it goes idle (no connection within
/// [`BUSY_WAIT`]) and every 100 ms, so lines appear as soon as the server
/// waits, and a burst of connections costs one write.
fn next_conn(
    l: &TcpSock,
    local: SocketAddr,
    idle: Duration,
    out: &mut Output<impl Write>,
) -> Result<Next> {
    // Read the clock only once the first wait ran out: a busy server
    // skips it.
    let mut t_wait = None;
    let mut wait = BUSY_WAIT;
    loop {
        if crate::interrupted() {
            return Err(Error::Interrupted);
        }
        match l.accept_timed(wait) {
            Ok(Some((c, peer))) => {
                if wait != BUSY_WAIT {
                    l.set_accept_timeout(BUSY_WAIT)
                        .map_err(|e| explain_step_error(&e, local))?;
                }
                return Ok(Next::Conn(c, peer));
            }
            Ok(None) => {}
            Err(e) => return Err(explain_step_error(&e, local)),
        }
        let t_wait = *t_wait.get_or_insert_with(|| {
            let now = Instant::now();
            now.checked_sub(BUSY_WAIT).unwrap_or(now)
        });
        if wait == BUSY_WAIT {
            if out.flush().is_err() {
                return Ok(Next::OutputClosed);
            }
            wait = IDLE_SLICE;
            l.set_accept_timeout(wait)
                .map_err(|e| explain_step_error(&e, local))?;
        }
        if t_wait.elapsed() >= idle {
            return Ok(Next::Idle);
        }
    }
}

/// How long the server waits for the client's FIN with `--close
/// after-peer` before closing first itself.
const PEER_FIN_WAIT: Duration = Duration::from_secs(30);

/// What waiting for the peer showed: who closed first, how the client
/// closed (if seen) and the result line.
struct Seen {
    closed_first: End,
    client_close: Option<How>,
    result: String,
}

/// The line the server says once its wait for the client's FIN lasts
/// [`FIN_WAIT_NOTICE_AFTER`]: with `client --close after-peer` too, both
/// wait for the other's FIN and neither sends one (a deadlock by
/// construction, ended only by this wait's bound).
fn waiting_line() -> String {
    format!(
        "waiting up to {} s for the client's FIN (server --close after-peer, the default), then closing first; if the client also waits for ours (client --close after-peer), neither closes until then: use --close first on one side",
        PEER_FIN_WAIT.as_secs()
    )
}

/// Wait for the peer's FIN as the plan says, saying so once per run
/// (`said`) when the wait lasts. Every wait is cut into slices and stops
/// at Ctrl-C (`Err(Interrupted)`).
fn finish(
    conn: &mut TcpSock,
    p: &ServerPlan,
    out: &mut Output<impl Write>,
    said: &mut bool,
) -> Result<Seen> {
    let seen = |closed_first, client_close, result: &str| Seen {
        closed_first,
        client_close,
        result: result.to_string(),
    };
    if p.close == CloseMode::First {
        return Ok(seen(End::Server, None, "ok"));
    }
    // The accepted socket waits in the listener's slices (BUSY_WAIT or
    // IDLE_SLICE, both under 200 ms): no setsockopt per connection. The
    // wait is cut in two: a short one, after which a wait that goes on is
    // said, then the rest.
    let start = Instant::now();
    let wait = |conn: &mut TcpSock, d| {
        conn.recv_until_eof_accepted(d, super::WAIT_SLICE, crate::interrupted)
    };
    let mut r = wait(conn, FIN_WAIT_NOTICE_AFTER);
    if matches!(&r, Err(e) if e.error.is("ETIMEDOUT")) {
        say_waiting(out, p.format, said, &waiting_line());
        r = wait(conn, PEER_FIN_WAIT.saturating_sub(start.elapsed()));
    }
    match r {
        Ok(_) => {
            if !p.close_delay.is_zero() {
                // The delay is the experiment's knob, not a
                // synchronisation; bounded by MAX_CLOSE_DELAY.
                crate::signal::sleep_interruptible(p.close_delay.min(super::MAX_CLOSE_DELAY))?;
            }
            Ok(seen(End::Client, Some(How::Fin), "ok"))
        }
        Err(e) if e.error.is("EINTR") => Err(Error::Interrupted),
        Err(e) if e.error.is("ECONNRESET") => {
            Ok(seen(End::Client, Some(How::Rst), "reset by the client"))
        }
        Err(e) if e.error.is("ETIMEDOUT") => Ok(seen(
            End::Server,
            None,
            &format!(
                "timed out: no FIN from the client within {} s",
                PEER_FIN_WAIT.as_secs()
            ),
        )),
        Err(e) => Ok(seen(End::Server, None, &format!("recv: {}", e.error))),
    }
}

/// Hold "the server closed first" (what the plan or a timed-out wait
/// claims) to the state the server end reached right after its close()
/// with a FIN (tcp_close_state(), RFC 793 §3.5):
/// - LAST_ACK: only reached from CLOSE_WAIT, so the client's FIN had come
///   in first;
/// - CLOSING: the client's FIN came in while ours was unacknowledged
///   (FIN_WAIT1): both closed at once;
/// - gone: LAST_ACK already ended by the client's ACK, or a reset. The
///   client end (`client_end`, looked up when the client is in this
///   namespace) tells them apart: still FIN_WAIT or TIME_WAIT means its FIN
///   came first; otherwise the states do not show the order (a reset, or
///   a client elsewhere) and the claim stands;
/// - TIME_WAIT: the server closed first, unless the client end (looked up
///   as for gone) is itself past its own FIN (FIN_WAIT1/2, CLOSING,
///   TIME_WAIT): it sent it before it saw ours, so they crossed (the
///   server went FIN_WAIT1 → CLOSING → TIME_WAIT): both;
/// - FIN_WAIT1, FIN_WAIT2: the server did close first (as far as the state
///   shows at that instant: a client FIN already sent but not yet
///   processed still makes it a simultaneous close later).
///
/// A close with RST leaves no state to check: what recv() saw stands.
fn refine(
    seen: &mut Seen,
    own: How,
    after: Option<&diag::SockEntry>,
    client_end: Option<Option<&diag::SockEntry>>,
) {
    if own != How::Fin || seen.closed_first != End::Server {
        return;
    }
    let corrected = match after.map(|e| e.state) {
        Some(TcpState::LastAck | TcpState::CloseWait) => Some(End::Client),
        Some(TcpState::Closing) => Some(End::Both),
        Some(TcpState::TimeWait) => match client_end {
            Some(Some(c))
                if matches!(
                    c.state,
                    TcpState::FinWait1
                        | TcpState::FinWait2
                        | TcpState::Closing
                        | TcpState::TimeWait
                ) =>
            {
                Some(End::Both)
            }
            _ => None,
        },
        None => match client_end {
            Some(Some(c))
                if matches!(
                    c.state,
                    TcpState::FinWait1 | TcpState::FinWait2 | TcpState::TimeWait
                ) =>
            {
                Some(End::Client)
            }
            _ => None,
        },
        Some(_) => None,
    };
    if let Some(first) = corrected {
        seen.closed_first = first;
        seen.client_close = Some(How::Fin);
        if seen.result.starts_with("timed out") {
            seen.result = format!(
                "the client's FIN came in as the {} s wait ran out",
                PEER_FIN_WAIT.as_secs()
            );
        }
    }
}

/// The server end's state right after close() (`None`: sock_diag failed;
/// `Some(None)`: gone), and, when it is gone or TIME_WAIT and `check` asks
/// for it, the client end's (looked up in this namespace; gone also when the client is
/// elsewhere).
///
/// An exact lookup can miss a socket that is just becoming a TIME_WAIT
/// mini socket: inet_twsk_hashdance2() hashes the mini socket and unhashes
/// the full one while a lockless __inet_lookup_established() may meet the
/// full socket with its refcount already at zero and give up. Seen here:
/// a server that closed first reported "gone" for 1 of 20 connections
/// whose server end then sat in TIME_WAIT. So "gone" is asked again, a
/// few times, before it is believed (each lookup is one netlink round
/// trip, a few µs).
fn after_close(
    nl: &mut DiagSocket,
    local: SocketAddr,
    peer: SocketAddr,
    check: bool,
) -> AfterClose {
    if !check {
        return (nl.lookup(local, peer).ok(), None);
    }
    let after = lookup_believed(nl, local, peer);
    // Gone, or TIME_WAIT already (reached from CLOSING too): the client
    // end tells.
    let client_end = match &after {
        Some(None) => lookup_believed(nl, peer, local),
        Some(Some(e)) if e.state == TcpState::TimeWait => lookup_believed(nl, peer, local),
        _ => None,
    };
    (after, client_end)
}

/// The server end and the client end, each as [`after_close`] gives it.
type AfterClose = (
    Option<Option<diag::SockEntry>>,
    Option<Option<diag::SockEntry>>,
);

/// An exact lookup whose "gone" is asked again a few times before it is
/// believed (see [`after_close`]), yielding the CPU in between.
fn lookup_believed(
    nl: &mut DiagSocket,
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<Option<diag::SockEntry>> {
    let mut r = nl.lookup(local, peer).ok();
    // Bounded: three more lookups at most.
    for _ in 0..3 {
        if !matches!(r, Some(None)) {
            break;
        }
        std::thread::yield_now();
        r = nl.lookup(local, peer).ok();
    }
    r
}

/// A failed bind() or listen() as `--json` prints it.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct PortFailure<'a> {
    /// The address the server wanted.
    listen: SocketAddr,
    /// The call that failed and its error.
    failed: Outcome,
    /// Who holds the port and what helps, from the live table.
    why: &'a FailureWhy,
}

/// A failed bind() or listen(): write the diagnosis of the live table to
/// the output (short form, or one JSON object; flushed), and return the
/// error line.
/// "another program listens there" is said only when a listener is what
/// the diagnosis found in the way.
fn port_failed(p: &ServerPlan, e: &StepError, out: &mut Output<impl Write>) -> Error {
    let addr = p.listen;
    let why = super::why::after_bind(addr, p.opts, crate::why::Asker::Server, &e.error);
    if let Some(w) = &why {
        let _ = match p.format {
            OutputFormat::Json => {
                let f = PortFailure {
                    listen: addr,
                    failed: Outcome::Failed {
                        step: e.step,
                        error: e.error.clone(),
                    },
                    why: w,
                };
                serde_json::to_writer(&mut *out, &crate::json::line("failure", &f))
                    .map_err(std::io::Error::from)
                    .and_then(|_| writeln!(out))
            }
            _ => write!(out, "{}", w.text()),
        };
        let _ = out.flush();
    } else if !p.format.is_json()
        && !cfg!(target_os = "linux")
        && let Some(lines) = port_holders(addr)
    {
        // No diagnosis off Linux (its rules are Linux's): the sockets on
        // the port as this system's table shows them, right after the
        // failure.
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
    }
    match &why {
        Some(w) if !w.blames_listener() => Error::Sys {
            what: format!("{} {addr}", e.step),
            err: e.error.clone(),
        },
        None if e.error.is("EADDRINUSE") => Error::Sys {
            what: format!("{} {addr}", e.step),
            err: e.error.clone(),
        },
        Some(w) => match (explain_step_error(e, addr), w.blocking_listener()) {
            (Error::AddrInUse { addr, err, .. }, Some(holder)) => Error::AddrInUse {
                addr,
                holder: Box::new(holder),
                err,
            },
            (other, _) => other,
        },
        None => explain_step_error(e, addr),
    }
}

/// The sockets on `addr`'s port, from the system's TCP table, as lines;
/// `None` if the table cannot be read or nothing is there.
fn port_holders(addr: SocketAddr) -> Option<Vec<String>> {
    let q = diag::Query {
        local_port: Some(addr.port()),
        ..diag::Query::default()
    };
    let socks = diag::dump(&q).ok()?;
    let mut lines = vec![format!(
        "right after the failure, port {} holds (the {} TCP table):",
        addr.port(),
        crate::sys::OS_NAME
    )];
    for e in socks.iter().filter(|e| e.local.port() == addr.port()) {
        let owner = e.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
        lines.push(format!(
            "  {} → {} is {}{owner}",
            e.local,
            e.peer,
            e.describe()
        ));
    }
    (lines.len() > 1).then_some(lines)
}

/// The listener's label as the first line names it (family, V6ONLY,
/// options), plus SO_EXCLUSIVEADDRUSE where it was set (Windows).
fn options_label(l: &TcpSock, exclusive_addr_use: bool) -> String {
    let label = l.label();
    match (exclusive_addr_use, label.strip_suffix("none")) {
        (false, _) => label,
        (true, Some(no_options)) => format!("{no_options}EXCLUSIVEADDRUSE"),
        (true, None) => format!("{label}+EXCLUSIVEADDRUSE"),
    }
}

/// Run the server until `count` connections, the idle timeout or Ctrl-C,
/// writing its lines (and a failed bind's diagnosis) to `out` through a
/// 64 KiB buffer flushed at least every 100 ms and whenever it waits; the
/// command line hands its stdout. A write that fails (a closed pipe) ends
/// the run quietly.
pub fn run<W: Write>(p: &ServerPlan, out: W) -> Result<Exit> {
    let mut out = Output::new(out);
    let addr = p.listen;
    let l = TcpSock::new(Family::of(&addr), p.opts).map_err(|e| explain_step_error(&e, addr))?;
    if p.exclusive_addr_use {
        l.set_exclusive_addr_use()
            .map_err(|e| explain_step_error(&e, addr))?;
    }
    l.bind(addr).map_err(|e| port_failed(p, &e, &mut out))?;
    // Before listen(): every accepted socket inherits this SO_RCVTIMEO
    // (see `finish`), so none waits for its peer without a slice.
    l.set_accept_timeout(BUSY_WAIT)
        .map_err(|e| explain_step_error(&e, addr))?;
    l.listen(BACKLOG)
        .map_err(|e| port_failed(p, &e, &mut out))?;
    let local = l.local_addr().unwrap_or(addr);
    let mut nl = DiagSocket::open().ok();
    let start = Instant::now();
    if !p.format.is_json() {
        let _ = writeln!(
            out,
            "listening on {local} ({}), closing {}; Ctrl-C to stop",
            options_label(&l, p.exclusive_addr_use),
            match p.close {
                CloseMode::First => "first",
                CloseMode::AfterPeer => "after the peer",
            }
        );
        let _ = out.flush();
    }
    // A wildcard listener's connections each have their own local address.
    let wildcard = local.ip().is_unspecified();
    let mut said_waiting = false;
    let mut n = 0;
    while n < p.count {
        let (mut conn, peer) = match next_conn(&l, local, p.idle_timeout, &mut out)? {
            Next::Conn(c, peer) => (c, peer),
            Next::Idle => {
                if !p.format.is_json() {
                    let _ = writeln!(
                        out,
                        "no connection for {:.0} s: stopping after {n} connections",
                        p.idle_timeout.as_secs_f64()
                    );
                }
                let _ = out.flush();
                return Ok(Exit::Done);
            }
            Next::OutputClosed => return Ok(Exit::Done),
        };
        n += 1;
        let conn_local = if wildcard {
            conn.local_addr().unwrap_or(local)
        } else {
            local
        };
        let mut seen = match finish(&mut conn, p, &mut out, &mut said_waiting) {
            Ok(s) => s,
            Err(e) => {
                let _ = out.flush();
                return Err(e);
            }
        };
        let server_close = if p.opts.linger == Some(0) {
            How::Rst
        } else {
            How::Fin
        };
        conn.close();
        // The server end of this 4-tuple, by exact lookup; the client end
        // too when the server end is gone and the claim is "the server
        // closed first" (see `refine`).
        let (after, client_end) = match nl.as_mut() {
            Some(nl) => after_close(nl, conn_local, peer, seen.closed_first == End::Server),
            None => (None, None),
        };
        if let Some(e) = &after {
            refine(
                &mut seen,
                server_close,
                e.as_ref(),
                client_end.as_ref().map(Option::as_ref),
            );
        }
        let state_after_close = after.as_ref().map(|e| match e {
            // The name TcpState serialises to everywhere else.
            Some(e) => e.state.ss_name().to_string(),
            None => "gone".into(),
        });
        let timer_after_close = after.as_ref().and_then(|e| e.as_ref()?.timer);
        let state_text = after.map(|e| e.map(|e| e.describe()).unwrap_or_else(|| "gone".into()));
        let now = Instant::now();
        let ev = ServerEvent {
            t: now.saturating_duration_since(start).as_secs_f64(),
            n,
            peer,
            local: conn_local,
            closed_first: seen.closed_first,
            client_close: seen.client_close,
            server_close,
            result: seen.result,
            state_after_close,
            timer_after_close,
            state_text,
        };
        if ev
            .write(&mut out, p.format)
            .and_then(|_| out.flush_if_due_at(now))
            .is_err()
        {
            return Ok(Exit::Done);
        }
    }
    let _ = out.flush();
    Ok(Exit::Done)
}

/// A TCP state as serde names it (`time-wait`), or `gone`: the schema of
/// `state_after_close` (for the JSON Schema of `server --json`).
fn state_or_gone_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let state = g.subschema_for::<TcpState>();
    schemars::json_schema!({"anyOf": [state, {"type": "string", "const": "gone"}]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SockEntry;

    fn entry(state: TcpState) -> SockEntry {
        let (s, c) = ("127.0.0.1:12345", "127.0.0.1:40000");
        SockEntry::full(state, s.parse().unwrap(), c.parse().unwrap(), 0)
    }

    fn claimed(result: &str) -> Seen {
        Seen {
            closed_first: End::Server,
            client_close: None,
            result: result.into(),
        }
    }

    /// "server closed first" against each state the server end can be in
    /// right after its close() with a FIN.
    #[test]
    fn who_closed_first_agrees_with_the_state_after_close() {
        use TcpState::*;
        for (state, first) in [
            (FinWait1, End::Server),
            (FinWait2, End::Server),
            (TimeWait, End::Server),
            (LastAck, End::Client),
            (Closing, End::Both),
        ] {
            let mut seen = claimed("ok");
            refine(&mut seen, How::Fin, Some(&entry(state)), None);
            assert_eq!(seen.closed_first, first, "{state:?}");
            let saw_fin = first != End::Server;
            assert_eq!(seen.client_close.is_some(), saw_fin, "{state:?}");
        }
    }

    #[test]
    fn a_time_wait_with_the_client_past_its_own_fin_is_a_simultaneous_close() {
        let tw = entry(TcpState::TimeWait);
        for (c, first) in [
            (Some(Some(entry(TcpState::TimeWait))), End::Both),
            (Some(Some(entry(TcpState::Closing))), End::Both),
            (Some(Some(entry(TcpState::LastAck))), End::Server),
            (Some(None), End::Server),
            (None, End::Server),
        ] {
            let mut seen = claimed("ok");
            refine(
                &mut seen,
                How::Fin,
                Some(&tw),
                c.as_ref().map(Option::as_ref),
            );
            assert_eq!(seen.closed_first, first, "{c:?}");
        }
    }

    #[test]
    fn a_gone_server_end_is_told_by_the_client_end() {
        // Gone, the client end still FIN_WAIT2/TIME_WAIT: its FIN came first
        // (the server end ran through LAST_ACK).
        for c in [TcpState::FinWait2, TcpState::TimeWait] {
            let mut seen = claimed("ok");
            refine(&mut seen, How::Fin, None, Some(Some(&entry(c))));
            assert_eq!(seen.closed_first, End::Client, "{c:?}");
            assert_eq!(seen.client_close, Some(How::Fin));
        }
        // Client end gone too, closing after ours, or not looked at: the
        // states do not show the order, the claim stands.
        for c in [None, Some(None), Some(Some(&entry(TcpState::LastAck)))] {
            let mut seen = claimed("ok");
            refine(&mut seen, How::Fin, None, c);
            assert_eq!((seen.closed_first, seen.client_close), (End::Server, None));
        }
    }

    #[test]
    fn a_timed_out_wait_that_the_state_contradicts_says_so() {
        let mut seen = claimed("timed out: no FIN from the client within 30 s");
        refine(&mut seen, How::Fin, Some(&entry(TcpState::LastAck)), None);
        assert_eq!(seen.closed_first, End::Client);
        assert!(!seen.result.contains("no FIN"), "{}", seen.result);
        // A close with RST leaves nothing to check.
        let mut seen = claimed("ok");
        refine(&mut seen, How::Rst, None, Some(None));
        assert_eq!((seen.closed_first, seen.client_close), (End::Server, None));
    }
}
