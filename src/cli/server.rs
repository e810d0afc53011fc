//! `twlab server`: arguments (clap) → the library's plan.

use super::socket_flags::PeerSocketFlags;
use crate::json::OutputFormat;
use crate::outcome::Exit;
use crate::peer::server::{ServerPlan, run as run_plan};
use crate::peer::{CloseMode, MAX_CLOSE_DELAY, MAX_IDLE_TIMEOUT};
use crate::socket::parse_endpoint;
use anyhow::Result;
use std::net::SocketAddr;
use std::time::Duration;

/// `--close` of `server` and `client`, as clap spells it: when this end
/// closes, mapped to the library's [`CloseMode`] here only (the `From`
/// below). Who closes first and how is `crate::experiment::Close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloseArg {
    /// Close as soon as the connection is up: this end sends the first FIN
    /// and will hold TIME_WAIT (RFC 793 §3.5).
    First,
    /// Wait for the peer's FIN (recv returns 0), then close: the peer holds
    /// TIME_WAIT.
    AfterPeer,
}

impl From<CloseArg> for CloseMode {
    fn from(c: CloseArg) -> Self {
        match c {
            CloseArg::First => CloseMode::First,
            CloseArg::AfterPeer => CloseMode::AfterPeer,
        }
    }
}

/// A duration as the user wrote it: with a unit (`3s`, `250ms`, `1m`,
/// `1h 30m`: humantime's grammar) or a bare number in the flag's own unit
/// (`bare_ms`: milliseconds, else seconds), as earlier twlab versions took
/// it. `None` when it is neither.
fn parse_duration(s: &str, bare_ms: bool) -> Option<Duration> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        if !n.is_finite() || n < 0.0 {
            return None;
        }
        return Duration::try_from_secs_f64(if bare_ms { n / 1000.0 } else { n }).ok();
    }
    humantime::parse_duration(s).ok()
}

/// Seconds or milliseconds, written for a person.
fn show(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A clap value parser for a duration flag: a unit (`30s`, `250ms`, `2m`)
/// or a bare number of seconds; more than 0 and at most `max` (so `inf`,
/// `1e20` and `18446744073709551615` are one-line usage errors, exit 2,
/// instead of a panic in `Duration`).
pub fn secs_parser(
    flag: &'static str,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let why = || {
            format!(
                "{flag} '{}': give a duration such as 30s, 250ms or 2m (a bare number is seconds), more than 0 and at most {}",
                crate::text::echo(s),
                show(max)
            )
        };
        match parse_duration(s, false) {
            Some(d) if !d.is_zero() && d <= max => Ok(d),
            _ => Err(why()),
        }
    }
}

/// [`secs_parser`] for a flag whose bare numbers are milliseconds; 0 is
/// allowed (no pause).
pub fn millis_parser(
    flag: &'static str,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let why = || {
            format!(
                "{flag} '{}': give a duration such as 250ms, 2s or 1m (a bare number is milliseconds), from 0 to {}",
                crate::text::echo(s),
                show(max)
            )
        };
        match parse_duration(s, true) {
            Some(d) if d <= max => Ok(d),
            _ => Err(why()),
        }
    }
}

/// A clap value parser for an `IP:PORT` endpoint: a malformed address or a
/// port past 65535 is a usage error (exit 2).
pub fn endpoint_parser(s: &str) -> Result<SocketAddr, String> {
    parse_endpoint(s).map_err(|e| e.to_string())
}

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
    #[arg(long, default_value = "127.0.0.1:12345", value_name = "ADDR:PORT",
          value_parser = endpoint_parser)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub socket: PeerSocketFlags,
    /// Who closes first: `after-peer` waits up to 30 s for the client's FIN
    /// (the client holds TIME_WAIT), then closes first; `first` closes at
    /// once (the server holds it). With `client --close after-peer` both
    /// wait for the other: use `first` on one side.
    #[arg(long, value_enum, default_value_t = CloseArg::AfterPeer)]
    pub close: CloseArg,
    /// With `--close after-peer`: wait this many milliseconds after the
    /// peer's FIN before closing (a slow server). Meanwhile the client's old
    /// socket stays FIN_WAIT2 and this end CLOSE_WAIT (at most 3600000,
    /// 1 hour).
    #[arg(long, default_value = "0", value_name = "MS",
          value_parser = millis_parser("--close-delay", MAX_CLOSE_DELAY))]
    pub close_delay: Duration,
    /// Stop after this many connections.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Stop when no connection arrives for this many seconds (at most
    /// 86400, 1 day).
    #[arg(long, default_value = "60", value_name = "SECS",
          value_parser = secs_parser("--idle-timeout", MAX_IDLE_TIMEOUT))]
    pub idle_timeout: Duration,
    /// One JSON object per event (JSON Lines) instead of text.
    #[arg(long)]
    pub json: bool,
}

impl ServerArgs {
    /// The typed plan, or the one-line reason the arguments are wrong.
    pub fn plan(&self) -> Result<ServerPlan> {
        let (opts, exclusive_addr_use) = self.socket.resolve()?;
        Ok(ServerPlan {
            listen: self.listen,
            opts,
            exclusive_addr_use,
            close: self.close.into(),
            close_delay: self.close_delay,
            count: self.count,
            idle_timeout: self.idle_timeout,
            format: OutputFormat::json_if(self.json),
        })
    }
}

pub fn run(a: ServerArgs) -> Result<Exit> {
    // The server buffers its lines itself (64 KiB, flushed every 100 ms).
    Ok(run_plan(&a.plan()?, std::io::stdout())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_numbers_in_the_flags_unit() {
        let ms = Duration::from_millis;
        for (text, bare_ms, want) in [
            ("3s", false, Some(ms(3_000))),
            ("250ms", false, Some(ms(250))),
            ("1m", true, Some(ms(60_000))),
            ("1h 30m", false, Some(ms(5_400_000))),
            ("1.5", false, Some(ms(1_500))),
            ("2", true, Some(ms(2))),
            (" 7 ", false, Some(ms(7_000))),
            ("3x", false, None),
            ("-1", false, None),
            ("inf", false, None),
            ("NaN", true, None),
            ("", false, None),
        ] {
            assert_eq!(parse_duration(text, bare_ms), want, "{text:?}");
        }
        let p = secs_parser("--duration", Duration::from_secs(10));
        assert_eq!(p("10s"), Ok(Duration::from_secs(10)));
        assert!(p("11s").unwrap_err().contains("at most 10 s"));
        assert!(p("0").is_err(), "zero is not a run time");
        let p = millis_parser("--interval", Duration::from_secs(1));
        assert_eq!(p("0"), Ok(Duration::ZERO));
        assert_eq!(p("1s"), Ok(Duration::from_secs(1)));
        assert!(p("1001").unwrap_err().contains("from 0 to 1 s"));
    }
}
