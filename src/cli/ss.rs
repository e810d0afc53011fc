//! `twlab ss`: arguments (clap) → the library's [`Plan`], parsed here at
//! the edge so the library sees states, ports, addresses and families as
//! types, never strings.

use crate::diag::Query;
use crate::json::OutputFormat;
use crate::outcome::Exit;
use crate::socket::Family;
use crate::ss::{
    AddrMatch, Filter, MAX_WATCH_FRAMES, Plan, Processes, View, parse_family, parse_port_filter,
    parse_states, parse_watch_ms,
};

const AFTER_HELP: &str = "\
TCP states (RFC 793 names; the kernel's TIME_WAIT is ss's time-wait):
  listening     a listener waiting for SYNs
  syn-sent      connect() sent a SYN, no answer yet
  syn-recv      a SYN arrived at a listener, handshake not finished
  established   open in both directions
  fin-wait-1    we closed first, our FIN is not yet acknowledged
  fin-wait-2    our FIN is acknowledged, waiting for the peer's FIN
  close-wait    the peer closed first; we have not closed yet
  last-ack      we closed after the peer, waiting for the ACK of our FIN
  closing       both closed at once
  time-wait     we closed first and the peer closed too: the 4-tuple is
                held for 60 s (TCP_TIMEWAIT_LEN) so stray segments of the
                old connection die out (RFC 793, RFC 1122 4.2.2.13)
  closed        bound but neither listening nor connected (Linux 6.5+: idiag_states bit 13)
Groups: all; connected (all but listening and closed); synchronized
  (connected minus syn-sent); bucket (time-wait and syn-recv: the mini
  sockets); big (all but bucket). Names are case-insensitive; '_' may be
  used for '-', 'listen' for 'listening', 'estab' for 'established'.

A TIME_WAIT mini socket may also show up as fin-wait-2 with a timewait
timer: an orphaned FIN_WAIT2 socket the kernel shrank to a mini socket
(tcp_time_wait(sk, TCP_FIN_WAIT2, tmo)).

Filters combine with AND. --port P matches either end, like ss's
'( sport = :P or dport = :P )'. --local/--peer take ADDR, ADDR:PORT,
ADDR/PREFIX[:PORT], [IPv6]:PORT or *:PORT; an IPv4 filter also matches
IPv4-mapped IPv6 addresses (::ffff:a.b.c.d), as the kernel's filter does.

Columns: Timer is the running timer and the time left on it (timewait,
on = retransmit, keepalive, persist). Uid and Inode belong to full
sockets; TIME_WAIT has none (the socket file is gone), shown as '-'.
With -p, the owning processes are found by scanning /proc/*/fd for
socket:[INODE] links (only those you may read; root sees all); this scan
is skipped unless asked, and never done for TIME_WAIT sockets.

Examples:
  twlab ss --state time-wait              every TIME_WAIT, with ms left
  twlab ss --state bucket --port 8080     mini sockets on port 8080
  twlab ss --peer 127.0.0.1:12345 --json  one peer, as JSON
  twlab ss --state listening -p           listeners and their processes
  twlab ss --summary --top 5              where the port space went
  twlab ss --watch=250 --state time-wait  watch TIME_WAIT count down";

/// Show TCP sockets (IPv4 and IPv6) from the kernel, with TIME_WAIT timers.
///
/// Reads the socket table through NETLINK_SOCK_DIAG (as `ss` does), with the
/// state filter done by the kernel. Default: every state, like `ss -tan`.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(after_long_help = AFTER_HELP)]
pub struct SsArgs {
    /// Only these states or groups, comma-separated or repeated
    /// (e.g. time-wait,fin-wait-2). See --help for the list.
    #[arg(long, value_name = "STATE[,STATE...]", value_delimiter = ',')]
    pub state: Vec<String>,

    /// Only sockets with port P at either end (local or peer).
    #[arg(long, value_name = "P")]
    pub port: Option<String>,

    /// Only sockets whose local end matches ADDR[:PORT] (ADDR may be a
    /// prefix such as 127.0.0.0/8, or * for any).
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub local: Option<String>,

    /// Only sockets whose peer end matches ADDR[:PORT].
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub peer: Option<String>,

    /// Only IPv4 (4) or IPv6 (6) sockets; one netlink dump instead of two.
    #[arg(long, value_name = "4|6")]
    pub family: Option<String>,

    /// One JSON document on stdout: {"sockets": [...]} (or the summary);
    /// with --watch one JSON line per refresh (every socket first, then
    /// new, changed and gone ones).
    #[arg(long)]
    pub json: bool,

    /// Show owning processes (pid and name) of full sockets, found by
    /// scanning /proc/*/fd; off by default because it is slow on busy hosts.
    #[arg(short = 'p', long)]
    pub processes: bool,

    /// Counts per state, TIME_WAIT per peer and local port, ephemeral port
    /// use per peer and the tcp_max_tw_buckets headroom.
    #[arg(long, conflicts_with = "watch")]
    pub summary: bool,

    /// How many rows the --summary top lists show.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// Live view refreshed every INTERVAL (--watch=500ms, --watch=2s; a bare
    /// number is milliseconds; default 500ms); marks new (+), changed (*)
    /// and gone (-) sockets. Quit with q or Ctrl-C.
    #[arg(
        long,
        value_name = "INTERVAL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "500"
    )]
    pub watch: Option<String>,

    /// With --watch: stop after N refreshes, 1 to 1,000,000 (default:
    /// until q or Ctrl-C, at most 1,000,000).
    #[arg(long, value_name = "N", requires = "watch",
          value_parser = clap::value_parser!(u64).range(1..=MAX_WATCH_FRAMES))]
    pub iterations: Option<u64>,
}

impl SsArgs {
    /// Parse every argument into the library's plan, in the order the
    /// errors used to be reported: states, family, port, local, peer, then
    /// the watch interval.
    pub fn plan(&self) -> crate::Result<Plan> {
        let states = parse_states(&self.state)?;
        let families = match &self.family {
            None => vec![Family::V4, Family::V6],
            Some(f) => vec![parse_family(f)?],
        };
        let port = self.port.as_deref().map(parse_port_filter).transpose()?;
        let local = self.local.as_deref().map(AddrMatch::parse).transpose()?;
        let peer = self.peer.as_deref().map(AddrMatch::parse).transpose()?;
        let filter = Filter {
            // A port in --local or --peer is also given to the kernel, so a
            // big table is walked, not copied; the filter here still
            // decides (the kernel does not filter bound-only sockets).
            query: Query {
                families,
                states,
                peer_port: peer.and_then(|m| m.port),
                local_port: local.and_then(|m| m.port),
                either_port: port,
                any_of: Vec::new(),
            },
            port,
            local,
            peer,
        };
        let format = OutputFormat::json_if(self.json);
        let view = match &self.watch {
            Some(ms) => View::Watch {
                every: parse_watch_ms(ms)?,
                frames: self.iterations.unwrap_or(MAX_WATCH_FRAMES),
                format,
            },
            None if self.summary => View::Summary {
                format,
                top: self.top,
            },
            None => View::List {
                format,
                processes: if self.processes {
                    Processes::Show
                } else {
                    Processes::Hide
                },
            },
        };
        Ok(Plan { filter, view })
    }
}

/// Parse, then run `twlab ss` on stdout; returns how it ended.
pub fn run(a: SsArgs) -> anyhow::Result<Exit> {
    let plan = a.plan()?;
    Ok(crate::ss::run(&plan, &mut std::io::stdout().lock())?)
}
