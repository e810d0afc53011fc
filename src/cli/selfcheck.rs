//! `twlab selfcheck`: clap arguments → [`crate::selfcheck::Plan`].

#[cfg(not(target_os = "linux"))]
pub use super::linux_only::{Args as SelfcheckArgs, run};
#[cfg(target_os = "linux")]
pub use imp::{SelfcheckArgs, run};

#[cfg(target_os = "linux")]
mod imp {
    use crate::outcome::Exit;
    use crate::selfcheck::{self, Plan};
    use clap::Args;
    use std::io::IsTerminal;
    use std::path::PathBuf;

    const AFTER_HELP: &str = "\
Each situation is a fresh network namespace (root only) with random
sysctls (tcp_tw_reuse 0/1/2, tcp_timestamps, net.ipv6.bindv6only,
ip_local_port_range normal, 10 ports or 1, ip_local_reserved_ports,
ip_unprivileged_port_start, ip_autobind_reuse) and a random socket table
built with real calls on loopback: listeners, bound-only sockets,
bind(ip, 0) with and without IP_BIND_ADDRESS_NO_PORT, ranges filled by
them, connections held ESTABLISHED or left in TIME_WAIT on either side,
dual-stack [::] and V6ONLY, v4-mapped addresses, SO_REUSEADDR/SO_REUSEPORT,
sockets of another uid. Then random questions: bind() of a port or of
port 0, bind() then listen(), connect() from a kernel-chosen port, a fixed
port, bind(ip, 0) or IP_BIND_ADDRESS_NO_PORT, some as an ordinary user
(uid 65534 without CAP_NET_BIND_SERVICE).

For each question the prediction comes from the code the other commands
print it with (`twlab why`, the diagnosis `server`/`client` print on a
failure, `ss --summary`'s usable port count), over the table read in the
namespace; then the real call is made and the kernel's answer compared.
A prediction that depends on what sock_diag cannot show (a holder's
SO_REUSEADDR/SO_REUSEPORT) agrees with either outcome and is counted apart.
Each disagreement is written to --out as a scenario file: replay it with
`twlab run FILE`. The same --seed gives the same situations and questions.

Examples:
  sudo twlab selfcheck --cases 2000 --seed 1
  sudo twlab selfcheck --cases 200 --seed 7 --json --out /tmp/sc

Exit status: 0 if every prediction agreed, 3 if any disagreed, 1 if a
scenario file could not be written (said in one line), 2 for a bad
argument or when it cannot run here (not root, no namespaces).";

    /// Check twlab's live diagnosis against the kernel on random situations.
    #[derive(Args, Debug)]
    #[command(after_help = AFTER_HELP)]
    pub struct SelfcheckArgs {
        /// Situations to run (each a fresh namespace).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        cases: u64,
        /// Seed of the random situations.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Worker threads, each in namespaces of its own.
        #[arg(long, short = 'j', default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
        jobs: u32,
        /// Directory for the scenario files of disagreements (made when
        /// the first is written; files of the same name are replaced, and
        /// that is said).
        #[arg(long, default_value = "selfcheck-failures")]
        out: PathBuf,
        /// Print one JSON object on stdout instead of the summary.
        #[arg(long)]
        json: bool,
    }

    /// Run `twlab selfcheck`.
    pub fn run(a: SelfcheckArgs) -> anyhow::Result<Exit> {
        if let Err(why) = selfcheck::can_run() {
            return Err(crate::Error::Usage(format!("selfcheck cannot run here: {why}")).into());
        }
        // An --out that cannot take the files is said now, not after the run.
        selfcheck::check_out_dir(&a.out)?;
        let plan = Plan {
            cases: a.cases,
            seed: a.seed,
            jobs: a.jobs as usize,
            out_dir: a.out,
        };
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::with_draw_target(
                Some(plan.cases),
                indicatif::ProgressDrawTarget::stderr(),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} situations {wide_bar} {elapsed} ({per_sec})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let r = selfcheck::run(&plan, &|| bar.inc(1))?;
        bar.finish_and_clear();
        if a.json {
            crate::cli::out(format!(
                "{}\n",
                serde_json::to_string(&crate::json::doc(&r))?
            ))?;
        } else {
            crate::cli::out(selfcheck::render(&r))?;
        }
        // A disagreement whose file is missing cannot be replayed: an
        // error (1) rather than the plain disagreement (3).
        if let Some(first) = r.write_errors.first() {
            eprintln!("twlab: selfcheck: scenario files not written: {first}");
            return Ok(Exit::Incomplete);
        }
        Ok(Exit::disagreed_if(r.disagrees()))
    }
}
