//! `twlab demo`: arguments (clap) → the library's plan
//! ([`crate::demo::DemoPlan`]).

use crate::demo::DemoPlan;
use crate::json::OutputFormat;
use crate::outcome::Exit;
use crate::socket::Family;

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

/// Run `twlab demo` and print it. On Linux it has disagreed (exit 3)
/// unless the model agreed with the kernel on every row; elsewhere it is
/// done, with each row that differs from the documented model saying so
/// (a finding about the documentation, not a failure of the run).
pub fn run(a: DemoArgs) -> anyhow::Result<Exit> {
    let plan = a.plan();
    let demo = crate::demo::run_demo(&plan)?;
    let text = if plan.output.is_json() {
        crate::json::pretty(&demo)?
    } else {
        crate::demo::table::demo_text(&demo, crate::layout::width())
    };
    super::out(format!("{text}\n"))?;
    Ok(Exit::disagreed_if(demo.model_disagreed()))
}
