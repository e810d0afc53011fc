//! `twlab client`: arguments (clap) → the library's plan.

use super::server::{CloseArg, V6OnlyArg, positive_secs};
use anyhow::Result;
use std::time::Duration;
use twlab::peer::Format;
use twlab::peer::client::{ClientPlan, Until, run as run_plan};
use twlab::socket::{SocketOpts, parse_endpoint};

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
    #[arg(long, value_name = "ADDR:PORT")]
    pub connect: String,
    /// Bind this local address and port before connect() (the fixed client
    /// port of the story). Without it the kernel picks an ephemeral port.
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<String>,
    /// Set SO_REUSEADDR before bind(). On Linux it lets bind() share a port
    /// with TIME_WAIT sockets that also had it; connect() is a separate check.
    #[arg(long)]
    pub reuseaddr: bool,
    /// Set SO_REUSEPORT before bind().
    #[arg(long)]
    pub reuseport: bool,
    /// IPV6_V6ONLY for an IPv6 address: `system` follows
    /// net.ipv6.bindv6only (dual-stack by default: `[::]` then also holds
    /// `0.0.0.0` of the port), `on` keeps IPv4 out, `off` forces dual-stack.
    #[arg(long, value_enum, default_value_t = V6OnlyArg::System)]
    pub v6only: V6OnlyArg,
    /// SO_LINGER in seconds; 0 closes with RST (no TIME_WAIT).
    #[arg(long, value_name = "SECS")]
    pub linger: Option<u32>,
    /// `first`: close right after connecting (this end holds TIME_WAIT);
    /// `after-peer`: wait for the server's FIN, then close.
    #[arg(long, value_enum, default_value_t = CloseArg::First)]
    pub close: CloseArg,
    /// Number of attempts at most (retries of a failure under
    /// `--until first-ok` are bounded by --timeout instead).
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Pause between attempts, in milliseconds (0 = the tight loop).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub interval: u64,
    /// When to stop.
    #[arg(long, value_enum, default_value_t = UntilArg::FirstError)]
    pub until: UntilArg,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 70.0, value_name = "SECS")]
    pub timeout: f64,
    /// One JSON object per attempt (JSON Lines), then a summary object.
    #[arg(long)]
    pub json: bool,
}

impl ClientArgs {
    /// The typed plan, or the one-line reason the arguments are wrong.
    pub fn plan(&self) -> Result<ClientPlan> {
        let plan = ClientPlan {
            connect: parse_endpoint(&self.connect)?,
            bind: self.bind.as_deref().map(parse_endpoint).transpose()?,
            opts: SocketOpts {
                reuseaddr: self.reuseaddr,
                reuseport: self.reuseport,
                linger: self.linger,
                bind_no_port: false,
                v6only: self.v6only.into(),
            },
            close: self.close.into(),
            count: self.count,
            interval: Duration::from_millis(self.interval),
            until: self.until.into(),
            timeout: positive_secs("--timeout", self.timeout)?,
            format: if self.json {
                Format::Json
            } else {
                Format::Text
            },
        };
        plan.check()?;
        Ok(plan)
    }
}

pub fn run(a: ClientArgs) -> Result<u8> {
    Ok(run_plan(&a.plan()?)?)
}
