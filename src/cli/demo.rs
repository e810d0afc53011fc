//! `twlab demo`: arguments (clap) → the library's plan
//! ([`twlab::demo::DemoPlan`]).

use twlab::demo::DemoPlan;
use twlab::json::OutputFormat;
use twlab::socket::Family;

/// Arguments of `twlab demo`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Runs in well under 2 seconds and never waits for TIME_WAIT to expire. Each
row is a real experiment on this machine's loopback; the explanation names
the kernel function or RFC section that decided it. Use `twlab matrix` for
every combination, each in its own network namespace.")]
pub struct DemoArgs {
    /// Server port to use; by default a free one is picked for each case.
    #[arg(long)]
    pub port: Option<u16>,
    /// Use IPv6 loopback (::1) instead of 127.0.0.1.
    #[arg(long)]
    pub ipv6: bool,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl DemoArgs {
    /// The typed plan the library runs.
    fn plan(&self) -> DemoPlan {
        DemoPlan {
            family: if self.ipv6 { Family::V6 } else { Family::V4 },
            port: self.port,
            output: OutputFormat::json_if(self.json),
        }
    }
}

/// Run `twlab demo`; the exit code is the library's (3: the model disagreed).
pub fn run(a: DemoArgs) -> anyhow::Result<u8> {
    Ok(twlab::demo::run(&a.plan())?)
}
