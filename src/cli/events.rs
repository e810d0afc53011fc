//! `twlab events`: arguments (clap) → the library's [`EventsPlan`].

use crate::outcome::Exit;

const AFTER_HELP: &str = "\
What the kernel says, from its tracepoints (no polling):
  state          sock:inet_sock_set_state: OLD → NEW, and the process that
                 made it (a system call: close() → FIN_WAIT1, connect() →
                 SYN_SENT) or 'kernel (softirq)' when a segment or a timer
                 did it. FIN_WAIT2 → CLOSE is shown as TIME_WAIT: there the
                 kernel's tcp_time_wait() hands the 4-tuple to a timewait
                 socket and closes the full one.
  send-reset     tcp:tcp_send_reset: this kernel sent an RST, with its
                 reason (TCP_ABORT_ON_CLOSE: close() with unread data;
                 NO_SOCKET: nothing there for the segment; ...)
  receive-reset  tcp:tcp_receive_reset: an RST reached the socket
  drop           skb:kfree_skb: a packet dropped, with the kernel's reason
                 (TCP_RFC7323_PAWS, TCP_OLD_SEQUENCE, NO_SOCKET, ...)
  retransmit     tcp:tcp_retransmit_skb
  destroy        tcp:tcp_destroy_sock, with --freed: the socket's memory
                 freed (off by default: two more events per connection, and
                 each event costs the traced program time in the kernel)
  life           at each end's CLOSE: duration, who closed first (and
                 which process), and where the TIME_WAIT went
  tw             a TIME_WAIT taken over by a new connection on its 4-tuple

How (--via tracefs, the default): tracefs mounted in a private mount
namespace of twlab's own thread and detached at once, an instance under
instances/ (removed on exit, also on Ctrl-C; after a kill -9 the next
twlab removes it), events filtered by port in the kernel, read in binary
from each CPU's ring buffer. Its buffers take an event in every context
(system call, softirq, interrupt) even while another is being written on
that CPU, so none is lost but to a full buffer, which the summary counts.
--via bpf: for each tracepoint twlab assembles a small BPF program from
the tracepoint's own format file (no compiler, no object file) that
filters by port in the kernel and copies the record, with the time, the
CPU and the task's name, into a BPF ring buffer. It names each process as
the event fires and leaves nothing running if twlab is killed outright,
but the kernel skips a BPF program while another runs on that CPU: a
softirq's state change that interrupts the program of a system call's is
lost (about 0.2 % of the events of a tight connect/close loop; the
summary counts them). Both decode the same records with the same code;
on a tight loop tracefs cost the traced programs 3 % of their CPU and
BPF 3.5 % (cargo bench --bench events). The host's mounts and global
tracing are untouched either way.
Tracepoints see every network namespace: filter by port or address.
Needs root (CAP_SYS_ADMIN, CAP_BPF and CAP_PERFMON). Times are UTC on
CLOCK_REALTIME (CLOCK_TAI minus the TAI offset), the clock of packet
capture timestamps.

Examples:
  twlab events --port 12345               the story's server port, live
  twlab events --addr 127.0.0.1 --json    JSON lines, one per event
  twlab events --lives --duration 10      only each connection's life, 10 s
  twlab events --count 100                everything, the first 100 events";

/// The kernel's own TCP events, live: every state change with the process
/// that caused it, resets and drops with the kernel's reasons, and each
/// connection's life (who closed first, where the TIME_WAIT went).
///
/// For a port, an address, or everything; a summary on exit (Ctrl-C,
/// --duration or --count). Linux, root.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct EventsArgs {
    /// Only sockets with this port at either end (repeatable).
    #[arg(long, short = 'p', value_name = "PORT")]
    port: Vec<u16>,
    /// Only sockets with this address at either end (repeatable).
    #[arg(long, value_name = "IP")]
    addr: Vec<std::net::IpAddr>,
    /// JSON lines: {"type":"event"|"life"|"time-wait"|"summary", ...}.
    #[arg(long)]
    json: bool,
    /// Stop after this long: 10s, 500ms, 2m (a bare number is seconds).
    #[arg(long, value_name = "DURATION",
          value_parser = crate::cli::server::secs_parser("--duration", std::time::Duration::from_secs(30 * 86_400)))]
    duration: Option<std::time::Duration>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Print only each connection's life and the summary.
    #[arg(long)]
    lives: bool,
    /// Also show when each socket's memory is freed (tcp:tcp_destroy_sock).
    #[arg(long)]
    freed: bool,
    /// How the events reach twlab: a tracefs instance (lossless), or BPF
    /// programs (see below).
    #[arg(long, value_enum, default_value_t = ViaArg::Tracefs)]
    via: ViaArg,
}

/// `--via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ViaArg {
    /// BPF programs on the tracepoints, or an error saying why not.
    Bpf,
    /// A tracefs instance's ring buffers.
    Tracefs,
}

#[cfg(target_os = "linux")]
pub fn run(a: EventsArgs) -> anyhow::Result<Exit> {
    use crate::events::{Filter, live::EventsPlan};
    let duration = a.duration;
    let plan = EventsPlan {
        filter: Filter {
            ports: a.port,
            addrs: a.addr,
        },
        json: a.json,
        duration,
        count: a.count,
        lives_only: a.lives,
        freed: a.freed,
        via: match a.via {
            ViaArg::Bpf => crate::events::Via::Bpf,
            ViaArg::Tracefs => crate::events::Via::Tracefs,
        },
    };
    // Buffered: the watch flushes after each batch the kernel hands over,
    // not after every line (stdout alone is line-buffered, and a write(2)
    // per line was the reader's largest system cost).
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    Ok(crate::events::live::run(&plan, &mut out)?)
}
