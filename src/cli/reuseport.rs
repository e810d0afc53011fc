//! `twlab reuseport`: a SO_REUSEPORT group's load distribution, and what a
//! listener that closes with connections queued does to them.

#[cfg(not(target_os = "linux"))]
pub use super::linux_only::{Args as ReuseportArgs, run};
#[cfg(target_os = "linux")]
pub use imp::{ReuseportArgs, run};

#[cfg(target_os = "linux")]
mod imp {

    use crate::outcome::Exit;
    use crate::pairs::group::{GroupPlan, run as run_group};
    use anyhow::Result;
    use std::io::Write;

    /// Arguments of `twlab reuseport`.
    #[derive(Debug, Clone, clap::Args)]
    #[command(after_help = "\
    Examples:
      twlab reuseport --listeners 4 --connections 200
      twlab reuseport --listeners 2 --connections 50 --drain            # queued connections reset
      twlab reuseport --listeners 2 --connections 50 --drain --migrate  # net.ipv4.tcp_migrate_req=1")]
    pub struct ReuseportArgs {
        /// Listeners in the group (1-64).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        pub listeners: u16,
        /// Connections to make (none accepted before counting; 1-20000:
        /// all to one 4-tuple's destination, so the namespace's 28,232
        /// ephemeral ports bound them).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=20000))]
        pub connections: u16,
        /// Close the first listener with its connections still queued, and
        /// count the clients that were reset.
        #[arg(long)]
        pub drain: bool,
        /// With --drain: set net.ipv4.tcp_migrate_req=1 in the namespace, so
        /// queued connections move to another listener instead.
        #[arg(long)]
        pub migrate: bool,
        /// One JSON object instead of text.
        #[arg(long)]
        pub json: bool,
    }

    /// Run it; exit 0.
    pub fn run(a: ReuseportArgs) -> Result<Exit> {
        if a.drain && a.listeners < 2 {
            return Err(crate::Error::Usage(
                "--drain needs at least 2 listeners (one closes, the others stay): add --listeners 2".into(),
            )
            .into());
        }
        let r = run_group(GroupPlan {
            listeners: usize::from(a.listeners),
            connections: usize::from(a.connections),
            drain: a.drain,
            migrate: a.migrate,
        })?;
        let mut out = std::io::stdout().lock();
        if a.json {
            writeln!(out, "{}", serde_json::to_string(&crate::json::doc(&r))?)?;
            return Ok(Exit::Done);
        }
        writeln!(
            out,
            "SO_REUSEPORT group: {} listeners on {}, {} connections (connect() ok for {}), hashed by 4-tuple (reuseport_select_sock()):",
            r.per_listener.len(),
            r.addr,
            a.connections,
            r.connected
        )?;
        for (i, n) in r.per_listener.iter().enumerate() {
            writeln!(out, "  listener {}: {n} queued", i + 1)?;
        }
        if let Some(d) = &r.drain {
            writeln!(
                out,
                "drain: listener 1 closed with {} connections queued → {} clients reset (ECONNRESET on read, although their connect() had returned ok){}; {} accepted by the other listeners",
                d.queued,
                d.clients_reset,
                if a.migrate {
                    ", tcp_migrate_req=1 moved the queue instead"
                } else {
                    " (inet_csk_listen_stop() → RST)"
                },
                d.accepted_by_others
            )?;
        }
        Ok(Exit::Done)
    }
}
