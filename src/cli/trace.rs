//! `twlab trace`: arguments (clap) → the library's [`TracePlan`].

use crate::outcome::Exit;

/// Run one experiment in a fresh namespace while capturing every TCP
/// segment, and show the ladder with each end's state and the moment that
/// explains the outcome.
///
/// CASE: a demo case number (1-5) or a word of its name, `rst-unread`
/// (SO_LINGER 0 with unread bytes), or `delayed-duplicate` (alias
/// `old-duplicate`): what TIME_WAIT protects against. Client and server in
/// two namespaces joined through a third holding a delay box (a user-space
/// bridge; the kernel's netem qdisc holds the client's first data segment
/// where it has one, the box itself where not); the client closes with SO_LINGER 0 and reconnects on the same
/// 4-tuple, then the box lets the old segment go. With --timestamps 1 PAWS
/// drops it (the server namespace's PAWSEstab counter); with 0 the ladder
/// shows what the new connection did with it.
/// Default: demo case 3, the server closes first and the client reconnects
/// at once. With `-f NAME=VALUE` (as `twlab matrix`), the one matrix cell
/// the factors select. Needs root (CAP_NET_RAW and namespaces).
///
/// Beside the segments (rows marked ◆): the kernel's own events from its
/// tracepoints, as in `twlab events`: every state change of both ends
/// (exact, with the process that made it), every RST with the kernel's
/// reason, every drop with its reason (TCP_RFC7323_PAWS for the delayed
/// duplicate), on the segments' clock; the annotated moment cites them.
/// Where tracefs cannot be had, one note says why and the ladder goes on.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Demo case number or name word, rst-unread, or delayed-duplicate.
    case: Option<String>,
    /// NAME=VALUE: select a matrix cell instead of a demo case (repeatable).
    #[arg(long = "factor", short = 'f', value_name = "NAME=VALUE")]
    factors: Vec<String>,
    /// net.ipv4.tcp_timestamps in the namespace (0 or 1).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    timestamps: Option<u8>,
    /// Absolute sequence numbers.
    #[arg(long)]
    absolute: bool,
    /// Also write the frames to FILE: FILE.pcapng keeps the explanations
    /// and the kernel's events as packet comments (Wireshark: pkt_comment);
    /// any other name is a classic pcap, without them. Written through a
    /// temporary file; a symbolic link at the path is refused, a replaced
    /// file is said.
    #[arg(long, value_name = "FILE")]
    pcap: Option<std::path::PathBuf>,
    /// Leave the kernel's events (tracepoints) out.
    #[arg(long)]
    no_events: bool,
    /// One JSON document instead of the ladder.
    #[arg(long)]
    json: bool,
}

#[cfg(target_os = "linux")]
pub fn run(a: TraceArgs) -> anyhow::Result<Exit> {
    use crate::trace::{DEFAULT_CASE, Target, TracePlan};
    let target = match (&a.case, a.factors.is_empty()) {
        (Some(_), false) => anyhow::bail!("give either a CASE or -f factors, not both"),
        (None, false) => Target::Cell(a.factors.clone()),
        (Some(c), true) => Target::parse(c)?,
        (None, true) => Target::Demo(DEFAULT_CASE),
    };
    let plan = TracePlan {
        target,
        timestamps: a.timestamps.map(|t| t == 1),
        absolute: a.absolute,
        pcap: a.pcap,
        json: a.json,
        events: !a.no_events,
    };
    // A link or a directory at --pcap is refused before the run, not after.
    if let Some(path) = &plan.pcap {
        crate::outfile::check_target(path)?;
    }
    let t = crate::trace::run_trace(&plan)?;
    // Stopped during the run: no file, no ladder, just the stop.
    crate::signal::check()?;
    if let Some(path) = &plan.pcap {
        let w = crate::trace::pcap::write(path, &t)?;
        // On stderr, a replaced file said as such (see the outfile module).
        eprintln!("{}", w.note("pcap"));
    }
    let text = if plan.json {
        crate::json::pretty(&t)?
    } else {
        crate::trace::ladder_text(&t, plan.absolute)
    };
    super::out(format!("{text}\n"))?;
    Ok(Exit::Done)
}

#[cfg(not(target_os = "linux"))]
pub fn run(_a: TraceArgs) -> anyhow::Result<Exit> {
    anyhow::bail!("twlab trace needs Linux (AF_PACKET capture in network namespaces)")
}
