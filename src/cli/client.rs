//! `twlab client`: arguments (clap) → the library's plan.

use super::server::{CloseArg, endpoint_parser, millis_parser, secs_parser};
use super::socket_flags::PeerSocketFlags;
use crate::json::OutputFormat;
use crate::outcome::Exit;
use crate::peer::client::{ClientPlan, Until, run as run_plan};
use crate::peer::{MAX_CLIENT_TIMEOUT, MAX_INTERVAL};
use anyhow::Result;
use std::net::SocketAddr;
use std::time::Duration;

/// `--until`, as clap spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UntilArg {
    /// Stop at the first failed attempt (the story's loop).
    FirstError,
    /// Retry a failing attempt until one succeeds, and report how long it
    /// took (e.g. until TIME_WAIT expired).
    FirstOk,
}

impl From<UntilArg> for Until {
    fn from(u: UntilArg) -> Self {
        match u {
            UntilArg::FirstError => Until::FirstError,
            UntilArg::FirstOk => Until::FirstOk,
        }
    }
}

/// Arguments of `twlab client`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  # The story: fixed local port, SO_REUSEADDR, close first, loop until an error
  twlab client --connect 127.0.0.1:12345 --bind 127.0.0.1:23456 --reuseaddr --close first
  # How long until the fixed port can reconnect?
  twlab client --connect 127.0.0.1:12345 --bind 127.0.0.1:23456 --reuseaddr --until first-ok
Start `twlab server` first. Exit code: 0 if the loop ended as asked, 1 on a fault,
2 on bad arguments, 4 if --until first-error saw an error.")]
pub struct ClientArgs {
    /// Server to connect to.
    #[arg(long, value_name = "ADDR:PORT", value_parser = endpoint_parser)]
    pub connect: SocketAddr,
    /// Bind this local address and port before connect() (the fixed client
    /// port of the story). Without it the kernel picks an ephemeral port.
    #[arg(long, value_name = "ADDR:PORT", value_parser = endpoint_parser)]
    pub bind: Option<SocketAddr>,
    #[command(flatten)]
    pub socket: PeerSocketFlags,
    /// `first`: close right after connecting (this end holds TIME_WAIT);
    /// `after-peer`: wait for the server's FIN (until --timeout), then
    /// close. With `server --close after-peer` (its default) both wait for
    /// the other: the server gives up after 30 s.
    #[arg(long, value_enum, default_value_t = CloseArg::First)]
    pub close: CloseArg,
    /// Number of attempts at most (retries of a failure under
    /// `--until first-ok` are bounded by --timeout instead).
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Pause between attempts, in milliseconds (0 = the tight loop; at
    /// most 3600000, 1 hour).
    #[arg(long, default_value = "0", value_name = "MS",
          value_parser = millis_parser("--interval", MAX_INTERVAL))]
    pub interval: Duration,
    /// When to stop.
    #[arg(long, value_enum, default_value_t = UntilArg::FirstError)]
    pub until: UntilArg,
    /// Give up after this many seconds in all (at most 86400, 1 day): it
    /// bounds every wait, connect() and the wait for the peer's FIN included.
    #[arg(long, default_value = "70", value_name = "SECS",
          value_parser = secs_parser("--timeout", MAX_CLIENT_TIMEOUT))]
    pub timeout: Duration,
    /// One JSON object per attempt (JSON Lines), then a summary object.
    #[arg(long)]
    pub json: bool,
}

impl ClientArgs {
    /// The typed plan, or the one-line reason the arguments are wrong.
    pub fn plan(&self) -> Result<ClientPlan> {
        let (opts, exclusive_addr_use) = self.socket.resolve()?;
        let plan = ClientPlan {
            connect: self.connect,
            bind: self.bind,
            opts,
            exclusive_addr_use,
            close: self.close.into(),
            count: self.count,
            interval: self.interval,
            until: self.until.into(),
            timeout: self.timeout,
            format: OutputFormat::json_if(self.json),
        };
        plan.check()?;
        Ok(plan)
    }
}

pub fn run(a: ClientArgs) -> Result<Exit> {
    let plan = match a.plan() {
        Ok(p) => p,
        Err(e) => {
            // Arguments that only make sense together (the two address
            // families) are checked after clap: still a usage error, so
            // the same one line as clap's and exit 2, as README promises.
            return Err(crate::Error::Usage(format!("{e} (see `twlab client --help`)")).into());
        }
    };
    // The loop buffers its lines itself (64 KiB, flushed every 100 ms).
    Ok(run_plan(&plan, std::io::stdout())?)
}
