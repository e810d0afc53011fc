//! The two programs of the story: a server that accepts and closes, and a
//! client with a fixed local port that connects and closes in a loop.
//!
//! Each takes a typed plan ([`server::ServerPlan`], [`client::ClientPlan`])
//! that the command line builds; both keep one sock_diag socket open and
//! ask the kernel about the exact 4-tuple (a hash lookup, ~µs) instead of
//! dumping the table, and write their lines through one buffer.

pub mod client;
mod line;
pub mod server;
pub mod why;

use crate::diag::{self, TcpState, TupleView};
use crate::json::OutputFormat;
use serde::{Deserialize, Serialize};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The longest `client --timeout`: one day. TIME_WAIT lasts 60 s on Linux
/// and 240 s by default on Windows, so a day covers every wait the story
/// needs; past it a typo (`1e20`) is refused instead of overflowing.
pub const MAX_CLIENT_TIMEOUT: Duration = Duration::from_secs(86_400);
/// The longest `server --idle-timeout`: one day.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(86_400);
/// The longest `client --interval`: one hour.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The longest `server --close-delay`: one hour.
pub const MAX_CLOSE_DELAY: Duration = Duration::from_secs(3600);
/// The longest `--linger`: one hour (Linux itself takes any value,
/// sock_setsockopt() caps it at MAX_SCHEDULE_TIMEOUT).
pub const MAX_LINGER: Duration = Duration::from_secs(3600);

/// Every wait of the two programs is cut into slices this long and stop
/// signals are checked between them (the shared [`crate::signal`] slice).
pub(crate) const WAIT_SLICE: Duration = crate::signal::CHECK_EVERY;

/// How long a wait for the peer's FIN runs before the program says what it
/// waits for: on loopback a FIN that was sent arrives within microseconds,
/// so a wait this long is a peer that has not closed, perhaps because it
/// waits too (both sides `--close after-peer`: neither sends the first FIN).
pub(crate) const FIN_WAIT_NOTICE_AFTER: Duration = Duration::from_millis(100);

/// Say (once per run, the caller keeps `said`) that this end is waiting
/// for the peer's FIN: a line of the output in text, after the lines
/// before it; on stderr under `--json`, where the output holds only JSON
/// (docs/json.md).
pub(crate) fn say_waiting<W: Write>(
    out: &mut Output<W>,
    format: OutputFormat,
    said: &mut bool,
    line: &str,
) {
    if std::mem::replace(said, true) {
        return;
    }
    // A closed output ends the program at its next line; nothing to do here.
    if format.is_json() {
        let _ = out.flush();
        eprintln!("twlab: {line}");
    } else {
        let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    }
}

/// When an end closes its connection, as the two programs see it: at once
/// or after the peer's FIN. Not a [`Close`](crate::experiment::Close)
/// (which end closes first, and with FIN or RST): each program is one end
/// and chooses only *when* it closes; the side is the program itself and
/// the how is its `--linger` (0: RST). Who ends up closing first follows
/// from both ends' choices.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CloseMode {
    /// Close as soon as the connection is up: this end sends the first FIN
    /// and will hold TIME_WAIT (RFC 793 §3.5).
    First,
    /// Wait for the peer's FIN (recv returns 0), then close: the peer holds
    /// TIME_WAIT.
    #[default]
    AfterPeer,
}

/// One line describing an end of a connection for a failure report, e.g.
/// "127.0.0.1:23456 → 127.0.0.1:12345 is TIME_WAIT, 58.9 s left".
pub fn describe_end(local: SocketAddr, peer: SocketAddr, e: &Option<diag::SockEntry>) -> String {
    match e {
        None => format!("{local} → {peer}: no socket (gone)"),
        Some(e) => {
            let why = match e.state {
                TcpState::FinWait2 if e.is_timewait_sock() => {
                    " (orphaned: closed here, the peer has not closed yet; kept as a timewait mini-socket)"
                }
                TcpState::FinWait2 | TcpState::FinWait1 => {
                    ": still closing, the peer has not closed yet"
                }
                TcpState::CloseWait => ": the peer closed, this end has not",
                TcpState::LastAck => ": closed after the peer, waiting for the last ACK",
                TcpState::TimeWait => " (this end closed first)",
                _ => "",
            };
            format!("{local} → {peer} is {}{why}", e.describe())
        }
    }
}

/// Both ends of a 4-tuple as lines, client end first.
pub fn describe_view(client: SocketAddr, server: SocketAddr, v: &TupleView) -> Vec<String> {
    vec![
        format!("client end: {}", describe_end(client, server, &v.client)),
        format!("server end: {}", describe_end(server, client, &v.server)),
    ]
}

/// The buffered output (the command line's stdout): a tight loop writes
/// into memory and flushes when the program waits, when
/// [`Output::flush_if_due`] finds the last flush older than 100 ms, and at
/// the end. Generic over the writer, so a line costs no dynamic call.
pub(crate) struct Output<W: Write> {
    w: BufWriter<W>,
    last_flush: Instant,
}

impl<W: Write> Output<W> {
    /// A 64 KiB buffer in front of `w`.
    pub(crate) fn new(w: W) -> Self {
        Output {
            w: BufWriter::with_capacity(64 * 1024, w),
            last_flush: Instant::now(),
        }
    }

    /// Flush if the last flush is more than 100 ms old, so a watcher sees
    /// lines while a long loop runs.
    pub(crate) fn flush_if_due(&mut self) -> io::Result<()> {
        self.flush_if_due_at(Instant::now())
    }

    /// [`Output::flush_if_due`] with the time already read by the caller
    /// (one clock read less per line of the tight loop).
    pub(crate) fn flush_if_due_at(&mut self, now: Instant) -> io::Result<()> {
        if now.saturating_duration_since(self.last_flush) >= Duration::from_millis(100) {
            self.flush()?;
        }
        Ok(())
    }
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        self.w.flush()
    }
}

/// Seconds with three decimals in eight columns, as `{:>8.3}` prints them,
/// but with integer formatting: float formatting was a visible share of
/// the tight loop's time.
pub(crate) struct Secs3(pub f64);

impl std::fmt::Display for Secs3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !(self.0.is_finite() && self.0 >= 0.0 && self.0 < 1e9) {
            return write!(f, "{:>8.3}", self.0);
        }
        let ms = (self.0 * 1000.0).round() as u64;
        write!(f, "{:>4}.{:03}", ms / 1000, ms % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::Secs3;

    #[test]
    fn secs3_prints_like_float_formatting() {
        for t in [0.0, 0.0004, 0.0006, 1.5, 12.3456, 9999.9994, 123_456.789] {
            assert_eq!(Secs3(t).to_string(), format!("{t:>8.3}"), "{t}");
        }
    }
}
