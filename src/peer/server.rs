//! `twlab server`: the story's server. Accepts, then closes first or after
//! the peer, one event line per connection.

use super::CloseMode;
use crate::diag;
use crate::error::{Error, Result};
use crate::outcome::Step;
use crate::socket::{Family, SocketOpts, TcpSock, explain_step_error, parse_endpoint};
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Arguments of `twlab server`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  twlab server                                  # 127.0.0.1:12345, closes after the peer
  twlab server --reuseaddr --close first        # this end holds TIME_WAIT
  twlab server --linger 0 --close first         # abort with RST: no TIME_WAIT anywhere
Pair it with `twlab client --connect 127.0.0.1:12345 --bind 127.0.0.1:23456 --reuseaddr`.")]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:12345", value_name = "ADDR:PORT")]
    pub listen: String,
    /// Set SO_REUSEADDR on the listener (accepted sockets inherit it). Without
    /// it, restarting the server while its old connections sit in TIME_WAIT
    /// fails with EADDRINUSE.
    #[arg(long)]
    pub reuseaddr: bool,
    /// Set SO_REUSEPORT on the listener.
    #[arg(long)]
    pub reuseport: bool,
    /// Who closes first: `after-peer` waits for the client's FIN (the client
    /// holds TIME_WAIT); `first` closes at once (the server holds it).
    #[arg(long, value_enum, default_value_t = CloseMode::AfterPeer)]
    pub close: CloseMode,
    /// With `--close after-peer`: wait this many milliseconds after the
    /// peer's FIN before closing (a slow server). Meanwhile the client's old
    /// socket stays FIN_WAIT2 and this end CLOSE_WAIT.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub close_delay: u64,
    /// SO_LINGER on accepted sockets, in seconds; 0 closes with RST.
    #[arg(long, value_name = "SECS")]
    pub linger: Option<u32>,
    /// Stop after this many connections.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Stop when no connection arrives for this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub idle_timeout: f64,
    /// One JSON object per event (JSON Lines) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One connection as the server saw it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerEvent {
    /// Seconds since the server started.
    pub t: f64,
    pub n: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// "server" or "client".
    pub closed_first: &'static str,
    /// "FIN" or "RST".
    pub close_kind: &'static str,
    /// "ok" or the error seen while waiting for the peer (ECONNRESET).
    pub result: String,
    /// The server end's state right after close, from sock_diag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_after_close: Option<String>,
}

/// Run the server until `count` connections, the idle timeout or Ctrl-C.
pub fn run(a: &ServerArgs) -> Result<u8> {
    let addr = parse_endpoint(&a.listen)?;
    if a.idle_timeout.is_nan() || a.idle_timeout <= 0.0 {
        return Err(Error::Invalid(
            "--idle-timeout must be a positive number of seconds".into(),
        ));
    }
    let opts = SocketOpts {
        reuseaddr: a.reuseaddr,
        reuseport: a.reuseport,
        linger: a.linger,
        bind_no_port: false,
    };
    let l = TcpSock::new(Family::of(&addr), opts).map_err(|e| explain_step_error(&e, addr))?;
    l.bind(addr).map_err(|e| explain_step_error(&e, addr))?;
    l.listen(128).map_err(|e| explain_step_error(&e, addr))?;
    let local = l.local_addr().unwrap_or(addr);
    let start = Instant::now();
    let out = std::io::stdout();
    let mut out = out.lock();
    if !a.json {
        let _ = writeln!(
            out,
            "listening on {local} ({}), closing {}; Ctrl-C to stop",
            opts.label(),
            match a.close {
                CloseMode::First => "first",
                CloseMode::AfterPeer => "after the peer",
            }
        );
        let _ = out.flush();
    }
    let idle = Duration::from_secs_f64(a.idle_timeout);
    let mut n = 0;
    while n < a.count {
        // Accept in short slices so Ctrl-C is noticed within 200 ms.
        let t_wait = Instant::now();
        let (mut conn, peer) = loop {
            if crate::interrupted() {
                return Err(Error::Interrupted);
            }
            match l.accept(Duration::from_millis(200)) {
                Ok(c) => break c,
                Err(e) if e.io_kind == std::io::ErrorKind::TimedOut => {
                    if t_wait.elapsed() >= idle {
                        if !a.json {
                            let _ = writeln!(
                                out,
                                "no connection for {:.0} s: stopping after {n} connections",
                                idle.as_secs_f64()
                            );
                        }
                        return Ok(0);
                    }
                }
                Err(e) => return Err(explain_step_error(&e, local)),
            }
        };
        n += 1;
        let conn_local = conn.local_addr().unwrap_or(local);
        let (closed_first, result) = match a.close {
            CloseMode::First => ("server", "ok".to_string()),
            CloseMode::AfterPeer => match conn.recv_until_eof(Duration::from_secs(30)) {
                Ok(_) => {
                    if a.close_delay > 0 {
                        // The delay is the experiment's knob, not a
                        // synchronisation; bounded by an hour.
                        std::thread::sleep(Duration::from_millis(a.close_delay.min(3_600_000)));
                    }
                    ("client", "ok".to_string())
                }
                Err(e) if e.step == Step::Recv && e.error.is("ECONNRESET") => {
                    ("client", format!("recv: {}", e.error))
                }
                Err(e) => ("server", format!("recv: {}", e.error)),
            },
        };
        let close_kind = if a.linger == Some(0) { "RST" } else { "FIN" };
        conn.close();
        let state_after_close = diag::tuple_view(peer, conn_local).ok().map(|v| {
            v.server
                .map(|e| e.describe())
                .unwrap_or_else(|| "gone".into())
        });
        let ev = ServerEvent {
            t: start.elapsed().as_secs_f64(),
            n,
            peer,
            local: conn_local,
            closed_first,
            close_kind,
            result,
            state_after_close,
        };
        let r = if a.json {
            writeln!(out, "{}", serde_json::to_string(&ev).unwrap_or_default())
        } else {
            writeln!(
                out,
                "{:>8.3}s #{:<4} {} → {}  {} closed first ({}), {}{}",
                ev.t,
                ev.n,
                ev.peer,
                ev.local,
                ev.closed_first,
                ev.close_kind,
                ev.result,
                ev.state_after_close
                    .as_ref()
                    .map(|s| format!("; server end now {s}"))
                    .unwrap_or_default()
            )
        };
        if r.and_then(|_| out.flush()).is_err() {
            // stdout closed (e.g. piped into head): stop quietly.
            return Ok(0);
        }
    }
    Ok(0)
}
