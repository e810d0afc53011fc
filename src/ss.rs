//! `twlab ss`: the kernel's TCP socket table, TIME_WAIT timers first.
//!
//! Everything comes from NETLINK_SOCK_DIAG through [`crate::diag`]: one dump
//! per address family, with the state filter applied by the kernel
//! (`inet_diag_dump_icsk` skips hash chains of unwanted states), never
//! /proc/net/tcp. Port and address filters are applied here, on the decoded
//! entries.
//!
//! Three views share the filters:
//! - the list (default): aligned text or `--json`, streamed with one lock of
//!   stdout and one buffered writer, no allocation per row;
//! - `--summary`: counts per state, TIME_WAIT per peer and per local port,
//!   how much of `ip_local_port_range` TIME_WAIT holds per (local address,
//!   peer), and the distance to `tcp_max_tw_buckets`;
//! - `--watch`: a live view that marks sockets appearing, changing state and
//!   going away.

use crate::diag::{self, Query, SockEntry, StateSet, TcpState, TimerKind};
use crate::error::{Error, Result};
use crate::socket::Family;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

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
  closed        a socket that is bound or created but not connected
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

    /// One JSON document on stdout: {"sockets": [...]} (or the summary).
    #[arg(long, conflicts_with = "watch")]
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

    /// Live view refreshed every MS milliseconds (default 500); marks new
    /// (+), changed (*) and gone (-) sockets. Quit with q or Ctrl-C.
    #[arg(
        long,
        value_name = "MS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "500"
    )]
    pub watch: Option<String>,

    /// With --watch: stop after N refreshes (default: until q or Ctrl-C,
    /// at most 1,000,000).
    #[arg(long, value_name = "N", requires = "watch")]
    pub iterations: Option<u64>,
}

/// Upper bound on watch refreshes when --iterations is not given.
const MAX_WATCH_FRAMES: u64 = 1_000_000;

/// Run `twlab ss`. Returns the exit code.
pub fn run(args: SsArgs) -> Result<u8> {
    let filter = Filter::from_args(&args)?;
    let watch_ms = match &args.watch {
        None => None,
        Some(s) => Some(parse_watch_ms(s)?),
    };
    if !cfg!(target_os = "linux") {
        return Err(Error::Unsupported {
            os: crate::sys::OS_NAME,
            what: "`twlab ss` reads the socket table through Linux sock_diag netlink".into(),
        });
    }
    let r = if let Some(ms) = watch_ms {
        watch::run(&filter, &args, ms)
    } else if args.summary {
        summary(&filter, &args)
    } else {
        list(&filter, &args)
    };
    match r {
        Ok(code) => Ok(code),
        // `twlab ss | head`: the reader went away; that is not an error.
        Err(Error::Sys { what, .. }) if what == PIPE_CLOSED => Ok(0),
        Err(e) => Err(e),
    }
}

fn parse_watch_ms(s: &str) -> Result<u64> {
    match s.trim().parse::<u64>() {
        Ok(ms) if (10..=3_600_000).contains(&ms) => Ok(ms),
        _ => Err(Error::Invalid(format!(
            "invalid --watch interval '{s}': give milliseconds from 10 to 3600000, e.g. --watch=500"
        ))),
    }
}

/// Marks a write that failed because stdout's reader went away (EPIPE;
/// Rust ignores SIGPIPE, so the write returns the error).
const PIPE_CLOSED: &str = "writing to stdout (closed pipe)";

fn io_err(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Error::sys(PIPE_CLOSED, &e)
    } else {
        Error::sys("writing to stdout", &e)
    }
}

// ---------------------------------------------------------------------------
// Filters

/// The state names `ss` accepts, in its spelling, with their kernel states.
pub const STATE_NAMES: [(&str, TcpState); 11] = [
    ("established", TcpState::Established),
    ("syn-sent", TcpState::SynSent),
    ("syn-recv", TcpState::SynRecv),
    ("fin-wait-1", TcpState::FinWait1),
    ("fin-wait-2", TcpState::FinWait2),
    ("time-wait", TcpState::TimeWait),
    ("closed", TcpState::Closed),
    ("close-wait", TcpState::CloseWait),
    ("last-ack", TcpState::LastAck),
    ("listening", TcpState::Listen),
    ("closing", TcpState::Closing),
];

/// The state groups `ss` accepts (iproute2 misc/ss.c, `scan_state`).
pub const GROUP_NAMES: [&str; 5] = ["all", "connected", "synchronized", "bucket", "big"];

fn valid_states() -> String {
    let mut s: Vec<&str> = STATE_NAMES.iter().map(|(n, _)| *n).collect();
    s.extend(GROUP_NAMES);
    s.join(", ")
}

/// Parse one state name or group, as `ss state NAME` does.
pub fn parse_state(name: &str) -> Result<StateSet> {
    let n = name.trim().to_ascii_lowercase().replace('_', "-");
    let all: Vec<TcpState> = STATE_NAMES.iter().map(|(_, s)| *s).collect();
    let except = |out: &[TcpState]| {
        StateSet::of(
            &all.iter()
                .copied()
                .filter(|s| !out.contains(s))
                .collect::<Vec<_>>(),
        )
    };
    use TcpState::*;
    let set = match n.as_str() {
        "all" => StateSet::of(&all),
        "connected" => except(&[Listen, Closed]),
        "synchronized" => except(&[Listen, Closed, SynSent]),
        "bucket" => StateSet::of(&[SynRecv, TimeWait]),
        "big" => except(&[SynRecv, TimeWait]),
        "listen" => StateSet::of(&[Listen]),
        "estab" => StateSet::of(&[Established]),
        "close" | "unconnected" => StateSet::of(&[Closed]),
        "syn-rcv" => StateSet::of(&[SynRecv]),
        "fin-wait1" => StateSet::of(&[FinWait1]),
        "fin-wait2" => StateSet::of(&[FinWait2]),
        other => match STATE_NAMES.iter().find(|(k, _)| *k == other) {
            Some((_, s)) => StateSet::of(&[*s]),
            None => {
                return Err(Error::Invalid(format!(
                    "unknown TCP state '{name}'; valid states and groups: {}",
                    valid_states()
                )));
            }
        },
    };
    Ok(set)
}

/// Parse a list of state names and groups into one set (their union).
pub fn parse_states<S: AsRef<str>>(names: &[S]) -> Result<StateSet> {
    if names.is_empty() {
        return Ok(StateSet::all());
    }
    let mut mask = 0u32;
    for n in names {
        if n.as_ref().trim().is_empty() {
            return Err(Error::Invalid(format!(
                "empty TCP state name in --state; valid states and groups: {}",
                valid_states()
            )));
        }
        mask |= parse_state(n.as_ref())?.mask();
    }
    let mut set = StateSet::none();
    for s in TcpState::ALL {
        if mask & (1 << (s as u32)) != 0 {
            set.insert(s);
        }
    }
    Ok(set)
}

/// Parse a port number for --port.
pub fn parse_port_filter(s: &str) -> Result<u16> {
    let t = s.trim().trim_start_matches(':');
    match t.parse::<u32>() {
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(Error::Invalid(format!(
            "invalid --port '{s}': give a port number from 0 to 65535, e.g. --port 8080"
        ))),
    }
}

/// Parse --family.
pub fn parse_family(s: &str) -> Result<Family> {
    match s.trim().to_ascii_lowercase().as_str() {
        "4" | "ipv4" | "inet" | "v4" => Ok(Family::V4),
        "6" | "ipv6" | "inet6" | "v6" => Ok(Family::V6),
        _ => Err(Error::Invalid(format!(
            "invalid --family '{s}': valid choices are 4 (IPv4) and 6 (IPv6)"
        ))),
    }
}

/// An address filter: an address or prefix (or any), and an optional port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrMatch {
    /// Network address and prefix length; `None` matches any address.
    pub net: Option<(IpAddr, u8)>,
    /// `None` matches any port.
    pub port: Option<u16>,
}

impl AddrMatch {
    /// Parse `ADDR`, `ADDR:PORT`, `ADDR/LEN[:PORT]`, `[V6]`, `[V6]:PORT`,
    /// `[V6/LEN]:PORT`, bare IPv6 `::1`, or `*:PORT` / `:PORT`.
    pub fn parse(input: &str) -> Result<AddrMatch> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "malformed address filter '{input}': {why}; expected ADDR, ADDR:PORT, ADDR/PREFIX[:PORT], [IPv6]:PORT or *:PORT, e.g. 127.0.0.1:8080"
            ))
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        // Split off the port.
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((h, after)) = rest.split_once(']') else {
                return Err(bad("'[' without a closing ']'"));
            };
            if after.is_empty() {
                (h, None)
            } else if let Some(p) = after.strip_prefix(':') {
                (h, Some(p))
            } else {
                return Err(bad("expected ':PORT' after ']'"));
            }
        } else if s.matches(':').count() > 1 {
            // Bare IPv6 without brackets: no port possible.
            (s, None)
        } else if let Some((h, p)) = s.rsplit_once(':') {
            (h, Some(p))
        } else {
            (s, None)
        };
        let port = match port {
            None | Some("*") => None,
            Some(p) => match p.parse::<u32>() {
                Ok(n) if n <= 65535 => Some(n as u16),
                Ok(n) => return Err(bad(&format!("port {n} is out of range 0-65535"))),
                Err(_) => return Err(bad(&format!("'{p}' is not a port number"))),
            },
        };
        let net = if host.is_empty() || host == "*" {
            None
        } else {
            let (a, len) = match host.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (host, None),
            };
            let ip: IpAddr = a
                .parse()
                .map_err(|_| bad(&format!("'{a}' is not an IP address")))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                None => max,
                Some(l) => match l.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(bad(&format!("prefix length '{l}' is not 0-{max}"))),
                },
            };
            Some((ip, len))
        };
        if net.is_none() && port.is_none() {
            return Err(bad("give an address, a port or both"));
        }
        Ok(AddrMatch { net, port })
    }

    pub fn matches(&self, a: &SocketAddr) -> bool {
        if let Some(p) = self.port {
            if a.port() != p {
                return false;
            }
        }
        match self.net {
            None => true,
            Some((net, len)) => prefix_match(net, len, a.ip()),
        }
    }
}

fn prefix_match(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    fn bits(a: &[u8], b: &[u8], len: u8) -> bool {
        let full = (len / 8) as usize;
        if a[..full] != b[..full] {
            return false;
        }
        let rem = len % 8;
        rem == 0 || {
            let mask = 0xffu8 << (8 - rem);
            a[full] & mask == b[full] & mask
        }
    }
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => bits(&n.octets(), &i.octets(), len),
        (IpAddr::V6(n), IpAddr::V6(i)) => bits(&n.octets(), &i.octets(), len),
        // An IPv4 filter matches IPv4-mapped IPv6 addresses, as the
        // kernel's bytecode does (inet_diag_bc_run: ::ffff:a.b.c.d).
        (IpAddr::V4(n), IpAddr::V6(i)) => match i.to_ipv4_mapped() {
            Some(v4) => bits(&n.octets(), &v4.octets(), len),
            None => false,
        },
        (IpAddr::V6(_), IpAddr::V4(_)) => false,
    }
}

/// All filters of one `twlab ss` call.
#[derive(Debug, Clone)]
pub struct Filter {
    pub query: Query,
    pub port: Option<u16>,
    pub local: Option<AddrMatch>,
    pub peer: Option<AddrMatch>,
}

impl Filter {
    pub fn from_args(a: &SsArgs) -> Result<Filter> {
        let states = parse_states(&a.state)?;
        let families = match &a.family {
            None => vec![Family::V4, Family::V6],
            Some(f) => vec![parse_family(f)?],
        };
        let port = a.port.as_deref().map(parse_port_filter).transpose()?;
        let local = a.local.as_deref().map(AddrMatch::parse).transpose()?;
        let peer = a.peer.as_deref().map(AddrMatch::parse).transpose()?;
        Ok(Filter {
            query: Query { families, states },
            port,
            local,
            peer,
        })
    }

    /// The filters done here, after the kernel's state filter.
    pub fn matches(&self, e: &SockEntry) -> bool {
        if let Some(p) = self.port {
            if e.local.port() != p && e.peer.port() != p {
                return false;
            }
        }
        if let Some(m) = &self.local {
            if !m.matches(&e.local) {
                return false;
            }
        }
        if let Some(m) = &self.peer {
            if !m.matches(&e.peer) {
                return false;
            }
        }
        true
    }
}

/// Dump and filter into a vector.
pub fn collect(filter: &Filter) -> Result<Vec<SockEntry>> {
    let mut v = Vec::new();
    diag::dump_each(&filter.query, |e| {
        if filter.matches(&e) {
            v.push(e);
        }
        Ok(())
    })?;
    Ok(v)
}

// ---------------------------------------------------------------------------
// Processes

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    pub name: String,
}

/// Map socket inodes to the processes holding them, by reading the
/// `socket:[INODE]` links in /proc/PID/fd (what `ss -p` does). Only inodes
/// in `wanted` are kept; processes we may not read are skipped.
pub fn socket_owners(wanted: &[u32]) -> HashMap<u32, Vec<Owner>> {
    let mut map: HashMap<u32, Vec<Owner>> = HashMap::new();
    if wanted.is_empty() {
        return map;
    }
    let mut want = wanted.to_vec();
    want.sort_unstable();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return map;
    };
    // Bounded: /proc lists each process once.
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let mut name: Option<String> = None;
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(ino) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u32>().ok())
            else {
                continue;
            };
            if want.binary_search(&ino).is_err() {
                continue;
            }
            let name = name.get_or_insert_with(|| {
                std::fs::read_to_string(p.path().join("comm"))
                    .map(|s| s.trim_end().to_string())
                    .unwrap_or_else(|_| "?".into())
            });
            let owners = map.entry(ino).or_default();
            if !owners.iter().any(|o| o.pid == pid) {
                owners.push(Owner {
                    pid,
                    name: name.clone(),
                });
            }
        }
    }
    map
}

fn owners_for(entries: &[SockEntry], args: &SsArgs) -> HashMap<u32, Vec<Owner>> {
    if !args.processes {
        return HashMap::new();
    }
    // TIME_WAIT mini sockets have no inode and no owner: skip them.
    let inodes: Vec<u32> = entries
        .iter()
        .filter(|e| e.inode != 0 && !e.is_timewait_sock())
        .map(|e| e.inode)
        .collect();
    socket_owners(&inodes)
}

// ---------------------------------------------------------------------------
// Text formatting without per-row allocation

/// A small stack buffer that rows are formatted into.
struct Field {
    buf: [u8; 96],
    len: usize,
}

impl Field {
    fn new() -> Self {
        Field {
            buf: [0; 96],
            len: 0,
        }
    }
    fn clear(&mut self) {
        self.len = 0;
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    fn push(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }
    fn push_u64(&mut self, mut n: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&tmp[i..]);
    }
    /// `58.912s` from milliseconds.
    fn push_ms_as_secs(&mut self, ms: u32) {
        self.push_u64(u64::from(ms / 1000));
        let frac = ms % 1000;
        self.push(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
            b's',
        ]);
    }
    /// `127.0.0.1:80`, `[::1]:80`, `0.0.0.0:*` (port 0 as `*`, like ss).
    fn push_addr(&mut self, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(v) => {
                let o = v.octets();
                for (i, b) in o.iter().enumerate() {
                    if i > 0 {
                        self.push(b".");
                    }
                    self.push_u64(u64::from(*b));
                }
            }
            IpAddr::V6(v) => {
                self.push(b"[");
                let mut w = io::Cursor::new(&mut self.buf[self.len..]);
                // 39 bytes at most for an IPv6 address; the buffer has room.
                let _ = write!(w, "{v}");
                self.len += w.position() as usize;
                self.push(b"]");
            }
        }
        self.push(b":");
        if a.port() == 0 {
            self.push(b"*");
        } else {
            self.push_u64(u64::from(a.port()));
        }
    }
    fn push_timer(&mut self, e: &SockEntry) {
        match e.timer {
            Some(t) => {
                self.push(t.kind.ss_name().as_bytes());
                self.push(b" ");
                self.push_ms_as_secs(t.expires_ms);
                if t.kind == TimerKind::Retransmit && t.retrans > 0 {
                    self.push(b" x");
                    self.push_u64(u64::from(t.retrans));
                }
            }
            None => self.push(b"-"),
        }
    }
}

fn addr_len(a: &SocketAddr, f: &mut Field) -> usize {
    f.clear();
    f.push_addr(a);
    f.len
}

fn timer_len(e: &SockEntry, f: &mut Field) -> usize {
    f.clear();
    f.push_timer(e);
    f.len
}

const SPACES: [u8; 64] = [b' '; 64];

/// Pad a field of `used` bytes to `width`, always leaving one space so an
/// unusually wide value (a 7-digit queue, a 6-digit uid) never runs into
/// the next column.
fn pad(out: &mut impl Write, used: usize, width: usize) -> io::Result<()> {
    let mut n = width.saturating_sub(used).max(1);
    while n > 0 {
        let k = n.min(SPACES.len());
        out.write_all(&SPACES[..k])?;
        n -= k;
    }
    Ok(())
}

/// Column widths of the text table.
struct Widths {
    local: usize,
    peer: usize,
    timer: usize,
}

impl Widths {
    fn of<'a>(entries: impl IntoIterator<Item = &'a SockEntry>) -> Widths {
        let mut f = Field::new();
        let mut w = Widths {
            local: "Local Address:Port".len(),
            peer: "Peer Address:Port".len(),
            timer: "Timer".len(),
        };
        let mut v4_done = false;
        for e in entries {
            // Every IPv4 row fits in 21 columns; measure only until one
            // needs that much, and always measure IPv6 rows.
            if e.local.is_ipv4() && e.peer.is_ipv4() && v4_done {
                w.timer = w.timer.max(timer_len(e, &mut f));
                continue;
            }
            let (l, p) = (addr_len(&e.local, &mut f), addr_len(&e.peer, &mut f));
            w.local = w.local.max(l);
            w.peer = w.peer.max(p);
            v4_done |= w.local >= 21 && w.peer >= 21;
            w.timer = w.timer.max(timer_len(e, &mut f));
        }
        w
    }
}

const STATE_W: usize = 11;

fn write_header(out: &mut impl Write, w: &Widths, prefix: &str, procs: bool) -> io::Result<()> {
    out.write_all(prefix.as_bytes())?;
    out.write_all(b"State")?;
    pad(out, 5, STATE_W)?;
    out.write_all(b"Recv-Q Send-Q ")?;
    out.write_all(b"Local Address:Port")?;
    pad(out, 18, w.local + 1)?;
    out.write_all(b"Peer Address:Port")?;
    pad(out, 17, w.peer + 1)?;
    out.write_all(b"Timer")?;
    pad(out, 5, w.timer + 1)?;
    out.write_all(b"Uid   Inode")?;
    if procs {
        out.write_all(b"      Process")?;
    }
    out.write_all(b"\n")
}

fn write_row(
    out: &mut impl Write,
    f: &mut Field,
    e: &SockEntry,
    w: &Widths,
    owners: Option<&Vec<Owner>>,
    procs: bool,
) -> io::Result<()> {
    let st = e.state.ss_column();
    out.write_all(st.as_bytes())?;
    pad(out, st.len(), STATE_W)?;
    f.clear();
    f.push_u64(u64::from(e.recv_q));
    out.write_all(f.as_bytes())?;
    pad(out, f.len, 7)?;
    f.clear();
    f.push_u64(u64::from(e.send_q));
    out.write_all(f.as_bytes())?;
    pad(out, f.len, 7)?;
    f.clear();
    f.push_addr(&e.local);
    out.write_all(f.as_bytes())?;
    pad(out, f.len, w.local + 1)?;
    f.clear();
    f.push_addr(&e.peer);
    out.write_all(f.as_bytes())?;
    pad(out, f.len, w.peer + 1)?;
    f.clear();
    f.push_timer(e);
    out.write_all(f.as_bytes())?;
    pad(out, f.len, w.timer + 1)?;
    if e.is_timewait_sock() {
        out.write_all(b"-     -")?;
    } else {
        f.clear();
        f.push_u64(u64::from(e.uid));
        out.write_all(f.as_bytes())?;
        pad(out, f.len, 6)?;
        f.clear();
        f.push_u64(u64::from(e.inode));
        out.write_all(f.as_bytes())?;
    }
    if procs {
        if let Some(os) = owners {
            pad(out, if e.is_timewait_sock() { 7 } else { 6 + f.len }, 17)?;
            for (i, o) in os.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(o.name.as_bytes())?;
                f.clear();
                f.push(b"(pid=");
                f.push_u64(u64::from(o.pid));
                f.push(b")");
                out.write_all(f.as_bytes())?;
            }
        }
    }
    out.write_all(b"\n")
}

/// One socket in --json output.
#[derive(Serialize)]
struct JsonSock<'a> {
    family: &'static str,
    state: &'static str,
    local: &'a SocketAddr,
    peer: &'a SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    timer: Option<JsonTimer>,
    recv_q: u32,
    send_q: u32,
    /// `None` for TIME_WAIT mini sockets, which have no owner.
    uid: Option<u32>,
    inode: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    processes: Option<&'a [Owner]>,
}

#[derive(Serialize)]
struct JsonTimer {
    kind: &'static str,
    expires_ms: u32,
    retrans: u8,
}

impl<'a> JsonSock<'a> {
    fn of(e: &'a SockEntry, owners: &'a HashMap<u32, Vec<Owner>>, procs: bool) -> Self {
        let tw = e.is_timewait_sock();
        JsonSock {
            family: match e.family {
                Family::V4 => "ipv4",
                Family::V6 => "ipv6",
            },
            state: e.state.ss_name(),
            local: &e.local,
            peer: &e.peer,
            timer: e.timer.map(|t| JsonTimer {
                kind: t.kind.ss_name(),
                expires_ms: t.expires_ms,
                retrans: t.retrans,
            }),
            recv_q: e.recv_q,
            send_q: e.send_q,
            uid: (!tw).then_some(e.uid),
            inode: (!tw).then_some(e.inode),
            processes: if procs && !tw {
                Some(owners.get(&e.inode).map(|v| v.as_slice()).unwrap_or(&[]))
            } else {
                None
            },
        }
    }
}

fn list(filter: &Filter, args: &SsArgs) -> Result<u8> {
    let entries = collect(filter)?;
    let owners = owners_for(&entries, args);
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(128 * 1024, stdout.lock());
    if args.json {
        write_json_list(&mut out, &entries, &owners, args.processes)?;
    } else {
        write_text_list(&mut out, &entries, &owners, args.processes).map_err(io_err)?;
    }
    out.flush().map_err(io_err)?;
    Ok(0)
}

fn write_json_list(
    out: &mut impl Write,
    entries: &[SockEntry],
    owners: &HashMap<u32, Vec<Owner>>,
    procs: bool,
) -> Result<()> {
    out.write_all(b"{\"sockets\":[").map_err(io_err)?;
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.write_all(b",").map_err(io_err)?;
        }
        serde_json::to_writer(&mut *out, &JsonSock::of(e, owners, procs)).map_err(json_err)?;
    }
    out.write_all(b"]}\n").map_err(io_err)
}

fn json_err(e: serde_json::Error) -> Error {
    match e.io_error_kind() {
        Some(kind) => io_err(io::Error::from(kind)),
        None => Error::Invalid(format!("JSON encoding failed: {e}")),
    }
}

fn write_text_list(
    out: &mut impl Write,
    entries: &[SockEntry],
    owners: &HashMap<u32, Vec<Owner>>,
    procs: bool,
) -> io::Result<()> {
    let w = Widths::of(entries);
    write_header(out, &w, "", procs)?;
    let mut f = Field::new();
    for e in entries {
        write_row(out, &mut f, e, &w, owners.get(&e.inode), procs)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Summary

/// The `ip_local_port_range` share one (local address, peer) pair holds.
#[derive(Debug, Clone, Serialize)]
pub struct PortUse {
    pub local_addr: IpAddr,
    pub peer: SocketAddr,
    /// TIME_WAIT sockets of this pair whose local port lies in the
    /// ephemeral range.
    pub time_wait: u32,
    /// Other sockets of this pair with a local port in the range (they
    /// hold their port too).
    pub other_states: u32,
    /// Ports connect() may pick for this pair: the range minus
    /// `ip_local_reserved_ports`.
    pub ephemeral_ports: u32,
    pub percent_time_wait: f64,
    pub percent_held: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Count<K> {
    pub key: K,
    pub count: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TwBuckets {
    /// `net.ipv4.tcp_max_tw_buckets` of this network namespace.
    pub limit: Option<u64>,
    /// TIME_WAIT mini sockets in the namespace, including orphaned
    /// FIN_WAIT2 ones (both families, unfiltered: `inet_twsk_alloc()`
    /// counts them all against the limit).
    pub in_use: u64,
    pub percent: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub total: u64,
    /// Counts per state, in `ss -tan`'s column names.
    pub states: Vec<Count<&'static str>>,
    /// Sockets in TIME_WAIT proper.
    pub time_wait_total: u64,
    /// Orphaned FIN_WAIT2 sockets kept as mini sockets (they also hold
    /// their 4-tuple and count against tcp_max_tw_buckets).
    pub fin_wait2_mini: u64,
    pub time_wait_by_peer: Vec<Count<SocketAddr>>,
    pub time_wait_by_local_port: Vec<Count<u16>>,
    pub ip_local_port_range: Option<(u16, u16)>,
    pub reserved_in_range: u32,
    pub port_use: Vec<PortUse>,
    pub tw_buckets: TwBuckets,
    pub tcp_tw_reuse: Option<String>,
    pub tcp_timestamps: Option<String>,
    pub warnings: Vec<String>,
}

fn parse_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace();
    let lo = it.next()?.parse().ok()?;
    let hi = it.next()?.parse().ok()?;
    (lo <= hi).then_some((lo, hi))
}

/// Count the ports of `ip_local_reserved_ports` ("8080,9000-9010") that lie
/// in [lo, hi].
fn reserved_in(list: &str, lo: u16, hi: u16) -> u32 {
    let mut n = 0u32;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u16>(), b.trim().parse::<u16>()),
            None => (part.parse::<u16>(), part.parse::<u16>()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            let (a, b) = (a.max(lo), b.min(hi));
            if a <= b {
                n += u32::from(b - a) + 1;
            }
        }
    }
    n
}

fn top<K: Ord + Copy + std::hash::Hash>(m: HashMap<K, u32>, n: usize) -> Vec<Count<K>> {
    let mut v: Vec<Count<K>> = m
        .into_iter()
        .map(|(key, count)| Count { key, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
    v.truncate(n);
    v
}

/// Build the summary from one unfiltered dump of the namespace.
pub fn build_summary(filter: &Filter, top_n: usize) -> Result<Summary> {
    let all = Query {
        families: vec![Family::V4, Family::V6],
        states: StateSet::all(),
    };
    let range = crate::sysctl::read("net.ipv4.ip_local_port_range")
        .as_deref()
        .and_then(parse_range);
    let reserved = match (
        range,
        crate::sysctl::read("net.ipv4.ip_local_reserved_ports"),
    ) {
        (Some((lo, hi)), Some(list)) => reserved_in(&list, lo, hi),
        _ => 0,
    };
    let mut in_use = 0u64;
    let mut total = 0u64;
    let mut tw_total = 0u64;
    let mut fw2_mini = 0u64;
    let mut per_state = [0u32; 13];
    let mut by_peer: HashMap<SocketAddr, u32> = HashMap::new();
    let mut by_lport: HashMap<u16, u32> = HashMap::new();
    let mut pairs: HashMap<(IpAddr, SocketAddr), (u32, u32)> = HashMap::new();
    diag::dump_each(&all, |e| {
        let mini = e.is_timewait_sock();
        if mini {
            in_use += 1;
        }
        if !filter.query.families.contains(&e.family)
            || !filter.query.states.contains(e.state)
            || !filter.matches(&e)
        {
            return Ok(());
        }
        total += 1;
        let st = match e.state {
            TcpState::NewSynRecv => TcpState::SynRecv,
            s => s,
        };
        per_state[st as usize] += 1;
        let tw = e.state == TcpState::TimeWait;
        fw2_mini += u64::from(mini && !tw);
        if tw {
            tw_total += 1;
            *by_peer.entry(e.peer).or_default() += 1;
            *by_lport.entry(e.local.port()).or_default() += 1;
        }
        if let Some((lo, hi)) = range {
            let p = e.local.port();
            if e.state != TcpState::Listen && (lo..=hi).contains(&p) && e.peer.port() != 0 {
                let c = pairs.entry((e.local.ip(), e.peer)).or_default();
                if tw {
                    c.0 += 1;
                } else {
                    c.1 += 1;
                }
            }
        }
        Ok(())
    })?;

    let states = TcpState::ALL
        .iter()
        .filter(|s| **s != TcpState::NewSynRecv && per_state[**s as usize] > 0)
        .map(|s| Count {
            key: s.ss_column(),
            count: per_state[*s as usize],
        })
        .collect();

    let mut warnings = Vec::new();
    let mut port_use = Vec::new();
    if let Some((lo, hi)) = range {
        let avail = (u32::from(hi - lo) + 1).saturating_sub(reserved).max(1);
        for ((local_addr, peer), (tw, other)) in pairs {
            if tw == 0 {
                continue;
            }
            port_use.push(PortUse {
                local_addr,
                peer,
                time_wait: tw,
                other_states: other,
                ephemeral_ports: avail,
                percent_time_wait: 100.0 * f64::from(tw) / f64::from(avail),
                percent_held: 100.0 * f64::from(tw + other) / f64::from(avail),
            });
        }
        port_use.sort_by(|a, b| {
            (b.time_wait + b.other_states)
                .cmp(&(a.time_wait + a.other_states))
                .then(a.peer.cmp(&b.peer))
                .then(a.local_addr.cmp(&b.local_addr))
        });
        port_use.truncate(top_n);
        for u in &port_use {
            if u.percent_held >= 90.0 {
                let free = u
                    .ephemeral_ports
                    .saturating_sub(u.time_wait + u.other_states);
                warnings.push(format!(
                    "{} -> {}: ephemeral ports nearly exhausted ({} free of {}); connect() without an explicit bind() fails with EADDRNOTAVAIL once none is free (__inet_hash_connect)",
                    u.local_addr,
                    u.peer,
                    group(u64::from(free)),
                    group(u64::from(u.ephemeral_ports))
                ));
            }
        }
    }
    let limit = crate::sysctl::read("net.ipv4.tcp_max_tw_buckets")
        .and_then(|s| s.trim().parse::<u64>().ok());
    let percent = limit
        .filter(|l| *l > 0)
        .map(|l| 100.0 * in_use as f64 / l as f64);
    if let (Some(l), Some(p)) = (limit, percent) {
        if p >= 90.0 {
            warnings.push(format!(
                "TIME_WAIT sockets at {p:.1}% of tcp_max_tw_buckets ({l}): beyond it the kernel closes connections without TIME_WAIT (TCPTIMEWAITOVERFLOW in nstat)"
            ));
        }
    }
    Ok(Summary {
        total,
        states,
        time_wait_total: tw_total,
        fin_wait2_mini: fw2_mini,
        time_wait_by_peer: top(by_peer, top_n),
        time_wait_by_local_port: top(by_lport, top_n),
        ip_local_port_range: range,
        reserved_in_range: reserved,
        port_use,
        tw_buckets: TwBuckets {
            limit,
            in_use,
            percent,
        },
        tcp_tw_reuse: crate::sysctl::read("net.ipv4.tcp_tw_reuse"),
        tcp_timestamps: crate::sysctl::read("net.ipv4.tcp_timestamps"),
        warnings,
    })
}

/// 28001 → "28,001".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn summary(filter: &Filter, args: &SsArgs) -> Result<u8> {
    let s = build_summary(filter, args.top)?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &s).map_err(json_err)?;
        out.write_all(b"\n").map_err(io_err)?;
    } else {
        write_summary(&mut out, &s).map_err(io_err)?;
    }
    out.flush().map_err(io_err)?;
    Ok(0)
}

fn write_summary(out: &mut impl Write, s: &Summary) -> io::Result<()> {
    writeln!(out, "TCP sockets: {}", group(s.total))?;
    for c in &s.states {
        writeln!(out, "  {:<11} {:>9}", c.key, group(u64::from(c.count)))?;
    }
    writeln!(out)?;
    write!(
        out,
        "TIME_WAIT: {} (each holds its 4-tuple for up to 60 s)",
        group(s.time_wait_total)
    )?;
    if s.fin_wait2_mini > 0 {
        write!(
            out,
            "; plus {} orphaned FIN-WAIT-2 mini sockets (tcp_fin_timeout)",
            group(s.fin_wait2_mini)
        )?;
    }
    writeln!(out)?;
    if !s.time_wait_by_peer.is_empty() {
        writeln!(out, "  top peers (peer address:port, TIME_WAIT count):")?;
        for c in &s.time_wait_by_peer {
            writeln!(
                out,
                "    {:<47} {:>9}",
                c.key.to_string(),
                group(u64::from(c.count))
            )?;
        }
        writeln!(out, "  top local ports:")?;
        for c in &s.time_wait_by_local_port {
            writeln!(out, "    {:<47} {:>9}", c.key, group(u64::from(c.count)))?;
        }
    }
    writeln!(out)?;
    match s.ip_local_port_range {
        Some((lo, hi)) => {
            write!(out, "Ephemeral ports (ip_local_port_range {lo}-{hi}")?;
            if s.reserved_in_range > 0 {
                write!(out, ", {} reserved", s.reserved_in_range)?;
            }
            writeln!(
                out,
                "): connect() without bind() needs a local port free for its (local address, peer) pair"
            )?;
            if s.port_use.is_empty() {
                writeln!(out, "  no TIME_WAIT holds an ephemeral port")?;
            }
            for u in &s.port_use {
                write!(
                    out,
                    "  {} -> {}: {} of {} ephemeral ports ({:.1}%) in TIME_WAIT",
                    u.local_addr,
                    u.peer,
                    group(u64::from(u.time_wait)),
                    group(u64::from(u.ephemeral_ports)),
                    u.percent_time_wait
                )?;
                if u.other_states > 0 {
                    write!(
                        out,
                        ", {} more in other states ({:.1}% held)",
                        group(u64::from(u.other_states)),
                        u.percent_held
                    )?;
                }
                writeln!(out)?;
            }
        }
        None => writeln!(
            out,
            "Ephemeral ports: cannot read net.ipv4.ip_local_port_range"
        )?,
    }
    writeln!(out)?;
    match (s.tw_buckets.limit, s.tw_buckets.percent) {
        (Some(l), Some(p)) => writeln!(
            out,
            "tcp_max_tw_buckets: {} of {} in use ({p:.1}%)",
            group(s.tw_buckets.in_use),
            group(l)
        )?,
        _ => writeln!(
            out,
            "tcp_max_tw_buckets: unknown; {} TIME_WAIT mini sockets",
            group(s.tw_buckets.in_use)
        )?,
    }
    if let (Some(r), Some(ts)) = (&s.tcp_tw_reuse, &s.tcp_timestamps) {
        writeln!(
            out,
            "tcp_tw_reuse = {r}, tcp_timestamps = {ts}: {}",
            tw_reuse_note(r, ts)
        )?;
    }
    if !s.warnings.is_empty() {
        writeln!(out)?;
        for w in &s.warnings {
            writeln!(out, "WARNING: {w}")?;
        }
        if s.port_use.iter().any(|u| u.percent_held >= 90.0) {
            writeln!(
                out,
                "  what helps: let the server close first (it then holds TIME_WAIT), reuse connections, spread over more peer ports or local addresses, widen net.ipv4.ip_local_port_range, or tcp_tw_reuse (needs timestamps)"
            )?;
        }
    }
    Ok(())
}

fn tw_reuse_note(reuse: &str, ts: &str) -> &'static str {
    // tcp_twsk_unique(): reuse of a TIME_WAIT port by connect() needs the
    // TIME_WAIT to have seen timestamps (ts_recent_stamp), and tcp_tw_reuse
    // 1, or 2 on loopback, after tcp_tw_reuse_delay ms.
    match (reuse, ts) {
        (_, "0") => "connect() cannot take over a TIME_WAIT port (no timestamps)",
        ("1", _) => {
            "connect() may take over a TIME_WAIT port once it is older than tcp_tw_reuse_delay"
        }
        ("2", _) => {
            "connect() may take over a TIME_WAIT port on loopback only, once older than tcp_tw_reuse_delay"
        }
        _ => {
            "connect() cannot take over a TIME_WAIT port: each one blocks its port until it expires"
        }
    }
}

// ---------------------------------------------------------------------------
// Watch

mod watch {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// How long a gone socket stays on screen, marked '-'.
    const GONE_FOR: Duration = Duration::from_secs(3);

    type Key = (SocketAddr, SocketAddr);

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mark {
        Same,
        New,
        Changed,
        Gone,
    }

    impl Mark {
        fn prefix(self) -> &'static str {
            match self {
                Mark::Same => "  ",
                Mark::New => "+ ",
                Mark::Changed => "* ",
                Mark::Gone => "- ",
            }
        }
    }

    pub(super) fn run(filter: &Filter, args: &SsArgs, ms: u64) -> Result<u8> {
        let frames = args
            .iterations
            .unwrap_or(MAX_WATCH_FRAMES)
            .min(MAX_WATCH_FRAMES);
        let stop = Arc::new(AtomicBool::new(false));
        {
            let stop = stop.clone();
            // Fails when main already installed the process-wide handler;
            // wait_for_quit also checks crate::interrupted() for that case.
            let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
        }
        let tty_out = term::is_tty(1);
        let _guard = term::Guard::enter(tty_out)?;
        let stdout = io::stdout();
        let mut prev: HashMap<Key, TcpState> = HashMap::new();
        let mut gone: Vec<(SockEntry, Instant)> = Vec::new();
        let mut first = true;
        for frame in 0..frames {
            let now = Instant::now();
            let mut entries = collect(filter)?;
            entries.sort_by_key(|e| (e.local, e.peer));
            let mut cur: HashMap<Key, TcpState> = HashMap::with_capacity(entries.len());
            let mut marks = Vec::with_capacity(entries.len());
            let (mut n_new, mut n_changed) = (0, 0);
            for e in &entries {
                let k = (e.local, e.peer);
                cur.insert(k, e.state);
                let m = match prev.get(&k) {
                    _ if first => Mark::Same,
                    None => Mark::New,
                    Some(s) if *s != e.state => Mark::Changed,
                    Some(_) => Mark::Same,
                };
                n_new += usize::from(m == Mark::New);
                n_changed += usize::from(m == Mark::Changed);
                marks.push(m);
            }
            // Sockets that were here last time and are not now.
            gone.retain(|(e, t)| {
                now.duration_since(*t) < GONE_FOR && !cur.contains_key(&(e.local, e.peer))
            });
            // Keep the last seen addresses and state of each gone socket.
            for (k, st) in &prev {
                if !cur.contains_key(k) {
                    gone.push((gone_entry(k, *st), now));
                }
            }
            let n_gone_now = gone.iter().filter(|(_, t)| *t == now).count();
            let mut out = io::BufWriter::with_capacity(64 * 1024, stdout.lock());
            let r = render(
                &mut out,
                &entries,
                &marks,
                &gone,
                tty_out,
                ms,
                frame,
                (n_new, n_changed, n_gone_now),
            )
            .and_then(|_| out.flush());
            drop(out);
            r.map_err(io_err)?;
            prev = cur;
            first = false;
            if frame + 1 == frames {
                break;
            }
            if term::wait_for_quit(Duration::from_millis(ms), &stop) {
                break;
            }
        }
        Ok(0)
    }

    /// The table keeps only states, so rebuild a minimal entry for a gone
    /// socket: its addresses and last state.
    fn gone_entry(k: &Key, st: TcpState) -> SockEntry {
        SockEntry {
            family: Family::of(&k.0),
            state: st,
            local: k.0,
            peer: k.1,
            timer: None,
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn render(
        out: &mut impl Write,
        entries: &[SockEntry],
        marks: &[Mark],
        gone: &[(SockEntry, Instant)],
        tty: bool,
        ms: u64,
        frame: u64,
        (n_new, n_changed, n_gone): (usize, usize, usize),
    ) -> io::Result<()> {
        let rows = if tty { term::rows().max(6) } else { usize::MAX };
        if tty {
            // Home, then clear to the end of screen: redraws in place.
            out.write_all(b"\x1b[H\x1b[2J")?;
        } else if frame > 0 {
            out.write_all(b"\n")?;
        }
        let tw = entries.iter().filter(|e| e.is_timewait_sock()).count();
        writeln!(
            out,
            "twlab ss --watch: {} sockets, {} TIME_WAIT | +{} new, *{} changed, -{} gone | every {} ms, refresh {} | q or Ctrl-C quits",
            entries.len(),
            tw,
            n_new,
            n_changed,
            n_gone,
            ms,
            frame + 1
        )?;
        let w = Widths::of(entries.iter().chain(gone.iter().map(|(e, _)| e)));
        write_header(out, &w, "  ", false)?;
        let budget = rows.saturating_sub(3);
        let mut f = Field::new();
        let mut rows: Vec<(&SockEntry, Mark)> = entries
            .iter()
            .zip(marks.iter().copied())
            .chain(gone.iter().map(|(e, _)| (e, Mark::Gone)))
            .collect();
        if rows.len() > budget {
            // Not everything fits: show what moved first (stable order).
            rows.sort_by_key(|(_, m)| *m == Mark::Same);
        }
        let total = rows.len();
        for (shown, (e, m)) in rows.into_iter().enumerate() {
            if shown >= budget {
                writeln!(out, "  ... {} more", total - shown)?;
                break;
            }
            out.write_all(m.prefix().as_bytes())?;
            write_row(out, &mut f, e, &w, None, false)?;
        }
        Ok(())
    }
}

/// Terminal handling for --watch: alternate screen, raw stdin for `q`.
#[cfg(target_os = "linux")]
mod term {
    use super::*;
    use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicBool, Ordering};

    pub fn is_tty(fd: i32) -> bool {
        // SAFETY: isatty only inspects the descriptor.
        unsafe { libc::isatty(fd) == 1 }
    }

    pub fn rows() -> usize {
        // SAFETY: TIOCGWINSZ fills the winsize we pass.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0 {
                ws.ws_row as usize
            } else {
                24
            }
        }
    }

    /// Restores the terminal on drop, also when unwinding.
    pub struct Guard {
        saved: Option<Termios>,
        alt: bool,
    }

    impl Guard {
        pub fn enter(tty_out: bool) -> Result<Guard> {
            let mut g = Guard {
                saved: None,
                alt: false,
            };
            if is_tty(0) {
                let stdin = io::stdin();
                if let Ok(t) = termios::tcgetattr(stdin.as_fd()) {
                    let mut raw = t.clone();
                    // No line buffering, no echo, and Ctrl-C as a byte
                    // (ISIG off) so we can restore the screen ourselves.
                    raw.local_flags
                        .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
                    if termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_ok() {
                        g.saved = Some(t);
                    }
                }
            }
            if tty_out {
                // Alternate screen, hide the cursor.
                let mut o = io::stdout().lock();
                o.write_all(b"\x1b[?1049h\x1b[?25l").map_err(io_err)?;
                o.flush().map_err(io_err)?;
                g.alt = true;
            }
            Ok(g)
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if self.alt {
                let mut o = io::stdout().lock();
                let _ = o.write_all(b"\x1b[?25h\x1b[?1049l");
                let _ = o.flush();
            }
            if let Some(t) = &self.saved {
                let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, t);
            }
        }
    }

    /// Wait up to `d`; true if the user asked to quit (q, Q, Ctrl-C).
    pub fn wait_for_quit(d: Duration, stop: &AtomicBool) -> bool {
        let end = Instant::now() + d;
        let stdin_tty = is_tty(0);
        // Bounded: each pass waits at most 50 ms and the deadline is fixed.
        loop {
            // Ctrl-C: the process-wide handler (main) sets crate::interrupted.
            if stop.load(Ordering::SeqCst) || crate::interrupted() {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            let step = (end - now).min(Duration::from_millis(50));
            if stdin_tty {
                let mut pfd = libc::pollfd {
                    fd: 0,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, step.as_millis() as i32) };
                if n > 0 && pfd.revents & libc::POLLIN != 0 {
                    let mut b = [0u8; 64];
                    // SAFETY: reading into our own buffer.
                    let k = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
                    if k > 0 && b[..k as usize].iter().any(|c| matches!(c, b'q' | b'Q' | 3)) {
                        return true;
                    }
                    if k == 0 {
                        // EOF on the terminal: nothing more to read; sleep.
                        std::thread::sleep(step);
                    }
                }
            } else {
                std::thread::sleep(step);
            }
        }
    }
}

/// Other systems: `run` refuses before any of this is reached.
#[cfg(not(target_os = "linux"))]
mod term {
    use super::*;
    use std::sync::atomic::AtomicBool;
    pub fn is_tty(_fd: i32) -> bool {
        false
    }
    pub fn rows() -> usize {
        24
    }
    pub struct Guard;
    impl Guard {
        pub fn enter(_tty_out: bool) -> Result<Guard> {
            Ok(Guard)
        }
    }
    pub fn wait_for_quit(d: Duration, _stop: &AtomicBool) -> bool {
        std::thread::sleep(d);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_and_groups() {
        assert_eq!(
            parse_state("time-wait").unwrap(),
            StateSet::of(&[TcpState::TimeWait])
        );
        assert_eq!(
            parse_state("TIME_WAIT").unwrap(),
            StateSet::of(&[TcpState::TimeWait])
        );
        assert_eq!(
            parse_state("listen").unwrap(),
            StateSet::of(&[TcpState::Listen])
        );
        let b = parse_state("bucket").unwrap();
        assert!(b.contains(TcpState::TimeWait) && b.contains(TcpState::SynRecv));
        assert!(b.contains(TcpState::NewSynRecv));
        assert!(!b.contains(TcpState::Established));
        let big = parse_state("big").unwrap();
        assert!(!big.contains(TcpState::TimeWait) && !big.contains(TcpState::SynRecv));
        assert!(big.contains(TcpState::Listen) && big.contains(TcpState::Established));
        let c = parse_state("connected").unwrap();
        assert!(!c.contains(TcpState::Listen) && !c.contains(TcpState::Closed));
        assert!(c.contains(TcpState::TimeWait) && c.contains(TcpState::SynSent));
        let s = parse_state("synchronized").unwrap();
        assert!(!s.contains(TcpState::SynSent) && s.contains(TcpState::Established));
        let all = parse_state("all").unwrap();
        for (_, st) in STATE_NAMES {
            assert!(all.contains(st));
        }
        let u = parse_states(&["time-wait", "fin-wait-2"]).unwrap();
        assert!(u.contains(TcpState::TimeWait) && u.contains(TcpState::FinWait2));
        assert!(!u.contains(TcpState::Established));
        assert_eq!(parse_states::<&str>(&[]).unwrap(), StateSet::all());
    }

    #[test]
    fn unknown_state_names_the_valid_ones() {
        let e = parse_state("timewait").unwrap_err().to_string();
        assert!(e.contains("'timewait'") && e.contains("time-wait") && e.contains("bucket"));
        assert!(!e.contains('\n'));
        assert!(parse_states(&["established", ""]).is_err());
    }

    #[test]
    fn address_filters() {
        let m = AddrMatch::parse("127.0.0.1:80").unwrap();
        assert!(m.matches(&"127.0.0.1:80".parse().unwrap()));
        assert!(!m.matches(&"127.0.0.1:81".parse().unwrap()));
        assert!(m.matches(&"[::ffff:127.0.0.1]:80".parse().unwrap()));
        let m = AddrMatch::parse("127.0.0.0/8").unwrap();
        assert!(m.matches(&"127.9.9.9:1".parse().unwrap()));
        assert!(!m.matches(&"10.0.0.1:1".parse().unwrap()));
        let m = AddrMatch::parse("[::1]:443").unwrap();
        assert!(m.matches(&"[::1]:443".parse().unwrap()));
        assert!(!m.matches(&"127.0.0.1:443".parse().unwrap()));
        let m = AddrMatch::parse("::1").unwrap();
        assert_eq!(m.port, None);
        let m = AddrMatch::parse("*:22").unwrap();
        assert_eq!(
            m,
            AddrMatch {
                net: None,
                port: Some(22)
            }
        );
        assert_eq!(AddrMatch::parse(":22").unwrap().port, Some(22));
        let m = AddrMatch::parse("[fe80::/10]:5").unwrap();
        assert!(m.matches(&"[fe80::1]:5".parse().unwrap()));
        for bad in [
            "",
            "1.2.3",
            "127.0.0.1:99999",
            "127.0.0.1:x",
            "[::1",
            "[::1]x",
            "10.0.0.0/33",
            "*",
            "host.example:80",
        ] {
            let e = AddrMatch::parse(bad);
            assert!(e.is_err(), "{bad} should be refused");
            assert!(!e.unwrap_err().to_string().contains('\n'));
        }
    }

    #[test]
    fn port_and_family() {
        assert_eq!(parse_port_filter("8080").unwrap(), 8080);
        assert_eq!(parse_port_filter(":22").unwrap(), 22);
        assert!(parse_port_filter("65536").is_err());
        assert!(parse_port_filter("http").is_err());
        assert_eq!(parse_family("4").unwrap(), Family::V4);
        assert_eq!(parse_family("6").unwrap(), Family::V6);
        let e = parse_family("5").unwrap_err().to_string();
        assert!(e.contains("4") && e.contains("6"));
    }

    #[test]
    fn port_filter_matches_either_end() {
        let a = SsArgs {
            port: Some("80".into()),
            ..Default::default()
        };
        let f = Filter::from_args(&a).unwrap();
        let mut e = SockEntry {
            family: Family::V4,
            state: TcpState::Established,
            local: "127.0.0.1:80".parse().unwrap(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            timer: None,
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode: 1,
        };
        assert!(f.matches(&e));
        std::mem::swap(&mut e.local, &mut e.peer);
        assert!(f.matches(&e));
        e.peer = "127.0.0.1:81".parse().unwrap();
        assert!(!f.matches(&e));
    }

    #[test]
    fn formats_rows_like_ss() {
        let mut f = Field::new();
        f.push_addr(&"127.0.0.1:0".parse().unwrap());
        assert_eq!(f.as_bytes(), b"127.0.0.1:*");
        f.clear();
        f.push_addr(&"[::1]:443".parse().unwrap());
        assert_eq!(f.as_bytes(), b"[::1]:443");
        f.clear();
        f.push_ms_as_secs(58_912);
        assert_eq!(f.as_bytes(), b"58.912s");
        f.clear();
        f.push_ms_as_secs(5);
        assert_eq!(f.as_bytes(), b"0.005s");
        assert_eq!(group(28001), "28,001");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000_000), "1,000,000");
    }

    #[test]
    fn ranges_and_reserved_ports() {
        assert_eq!(parse_range("32768\t60999"), Some((32768, 60999)));
        assert_eq!(parse_range("5 1"), None);
        assert_eq!(reserved_in("8080,40000-40009, 70", 32768, 60999), 10);
        assert_eq!(reserved_in("", 1, 2), 0);
    }
}
