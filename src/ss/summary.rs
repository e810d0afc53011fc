//! `twlab ss --summary`: where the sockets and the ephemeral ports went.
//!
//! One unfiltered dump of the namespace feeds both the filtered counts and
//! the `tcp_max_tw_buckets` headroom, which the kernel counts over every
//! TIME_WAIT mini socket (`inet_twsk_alloc()`), whatever the filter.

use super::{Filter, OutputFormat, io_err, json_err};
use crate::diag::{self, Query, SockEntry, StateSet, TcpState};
use crate::error::Result;
use crate::outcome::Exit;
use crate::sysctl::{self, NetSysctls, PortRange, ReservedPorts};
use crate::text::group;
use crate::why::{self, RangeUse};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

/// The `ip_local_port_range` share one (local address, peer) pair holds.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PortUse {
    /// The local address of the pair.
    pub local_addr: IpAddr,
    /// The peer of the pair.
    pub peer: SocketAddr,
    /// TIME_WAIT sockets of this pair whose local port connect() could
    /// pick: in the ephemeral range and not reserved.
    pub time_wait: u32,
    /// Of those, the ones connect() may take over now (`tcp_tw_reuse` 1,
    /// or 2 on loopback, timestamps on, older than `tcp_tw_reuse_delay`:
    /// `tcp_twsk_unique()`), so they do not block the port.
    pub time_wait_reusable: u32,
    /// Other sockets of this pair with a local port in the range (they
    /// hold their port too).
    pub other_states: u32,
    /// Ports connect() may pick for this pair: the range minus
    /// `ip_local_reserved_ports`.
    pub ephemeral_ports: u32,
    /// `time_wait` as a share of `ephemeral_ports`.
    pub percent_time_wait: f64,
    /// `time_wait + other_states` as a share of `ephemeral_ports`.
    pub percent_held: f64,
    /// The ports connect() cannot pick for this pair now (`time_wait -
    /// time_wait_reusable + other_states`) as a share of `ephemeral_ports`;
    /// the exhaustion warning looks at this.
    pub percent_blocked: f64,
}

/// How many sockets have `key`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Count<K> {
    /// A state name, peer or port.
    pub key: K,
    /// Sockets with it.
    pub count: u32,
}

/// TIME_WAIT mini sockets against `tcp_max_tw_buckets`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TwBuckets {
    /// `net.ipv4.tcp_max_tw_buckets` of this network namespace.
    pub limit: Option<u64>,
    /// TIME_WAIT mini sockets in the namespace, including orphaned
    /// FIN_WAIT2 ones (both families, unfiltered: `inet_twsk_alloc()`
    /// counts them all against the limit).
    pub in_use: u64,
    /// `in_use` as a share of `limit` (none for an unknown or zero limit).
    pub percent: Option<f64>,
}

/// Everything `--summary` prints (and `--summary --json` serialises).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Summary {
    /// Sockets that pass the filter.
    pub total: u64,
    /// Counts per state (text: `ss -tan`'s column names; JSON: the state as everywhere, `time-wait`).
    pub states: Vec<Count<TcpState>>,
    /// Sockets in TIME_WAIT proper.
    pub time_wait_total: u64,
    /// Orphaned FIN_WAIT2 sockets kept as mini sockets (they also hold
    /// their 4-tuple and count against tcp_max_tw_buckets).
    pub fin_wait2_mini: u64,
    /// Peers with the most TIME_WAIT sockets (both sides).
    pub time_wait_by_peer: Vec<Count<SocketAddr>>,
    /// TIME_WAIT sockets of accepted connections (server side: a listener
    /// is on their local port, or the port is outside the ephemeral range
    /// and the peer's inside).
    pub time_wait_server_side: u64,
    /// Server-side TIME_WAIT grouped by the local (listening) port, not by
    /// each client's port.
    pub time_wait_server_side_by_port: Vec<Count<u16>>,
    /// Peers with the most TIME_WAIT sockets that are not server side.
    pub time_wait_client_side_by_peer: Vec<Count<SocketAddr>>,
    /// Local ports with the most TIME_WAIT sockets.
    pub time_wait_by_local_port: Vec<Count<u16>>,
    /// `net.ipv4.ip_local_port_range` (low, high).
    pub ip_local_port_range: Option<(u16, u16)>,
    /// Ports of `ip_local_reserved_ports` inside that range.
    pub reserved_in_range: u32,
    /// (local address, peer) pairs holding the most ephemeral ports.
    pub port_use: Vec<PortUse>,
    /// Every occupant of the ephemeral range (listeners, bound-only
    /// sockets, connections per peer, TIME_WAIT reusable or not, reserved
    /// ports), accounted with `twlab why`'s rules; the range warnings come
    /// from it. Unfiltered: the range belongs to the whole namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_use: Option<RangeUse>,
    /// The `tcp_max_tw_buckets` headroom.
    pub tw_buckets: TwBuckets,
    /// `net.ipv4.tcp_tw_reuse` as the sysctl says it.
    pub tcp_tw_reuse: Option<String>,
    /// `net.ipv4.tcp_timestamps` as the sysctl says it.
    pub tcp_timestamps: Option<String>,
    /// Exhaustion warnings, one line each.
    pub warnings: Vec<String>,
    /// Limits only some programs meet (bind(addr, 0) before connect()).
    pub notes: Vec<String>,
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

/// Counts gathered from one pass over the namespace's sockets.
#[derive(Default)]
struct Tally {
    /// Every TIME_WAIT mini socket, unfiltered.
    in_use: u64,
    total: u64,
    tw_total: u64,
    fw2_mini: u64,
    per_state: [u32; 13],
    by_peer: HashMap<SocketAddr, u32>,
    /// TIME_WAIT per local port, by port number (up to 65,536 ports: an
    /// array is smaller than a map of them).
    by_lport: Vec<u32>,
    /// Sockets per (local address, peer) holding a local port connect()
    /// could pick.
    pairs: HashMap<(IpAddr, SocketAddr), PairCount>,
}

/// The sockets of one (local address, peer) pair holding a port of the
/// ephemeral range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PairCount {
    time_wait: u32,
    /// TIME_WAIT that connect() may take over now.
    reusable: u32,
    other: u32,
}

/// What decides which ports connect() can pick: the range less the
/// reserved ports, and whether it may take over a TIME_WAIT.
struct Ports {
    range: PortRange,
    reserved: ReservedPorts,
    /// For `why::time_wait_reusable()`, the one TIME_WAIT reuse rule.
    sys: NetSysctls,
}

impl Ports {
    /// A port connect() may pick by itself (`inet_is_local_reserved_port()`
    /// excludes the reserved ones in `__inet_hash_connect()`).
    fn pickable(&self, port: u16) -> bool {
        self.range.contains(port) && !self.reserved.contains(port)
    }
}

impl Tally {
    fn add(&mut self, e: &SockEntry, filter: &Filter, ports: Option<&Ports>) {
        let mini = e.is_timewait_sock();
        if mini {
            self.in_use += 1;
        }
        if !filter.query.families.contains(&e.family)
            || !filter.query.states.contains(e.state)
            || !filter.matches(e)
        {
            return;
        }
        self.total += 1;
        let st = match e.state {
            TcpState::NewSynRecv => TcpState::SynRecv,
            s => s,
        };
        self.per_state[st as usize] += 1;
        let tw = e.state == TcpState::TimeWait;
        self.fw2_mini += u64::from(mini && !tw);
        if tw {
            self.tw_total += 1;
            *self.by_peer.entry(e.peer).or_default() += 1;
            if self.by_lport.is_empty() {
                self.by_lport = vec![0; 1 << 16];
            }
            self.by_lport[usize::from(e.local.port())] += 1;
        }
        if let Some(ports) = ports {
            let p = e.local.port();
            if e.state != TcpState::Listen && ports.pickable(p) && e.peer.port() != 0 {
                let c = self.pairs.entry((e.local.ip(), e.peer)).or_default();
                if tw {
                    c.time_wait += 1;
                    c.reusable += u32::from(why::time_wait_reusable(e, &ports.sys));
                } else {
                    c.other += 1;
                }
            }
        }
    }

    fn states(&self) -> Vec<Count<TcpState>> {
        TcpState::ALL
            .iter()
            .filter(|s| **s != TcpState::NewSynRecv && self.per_state[**s as usize] > 0)
            .map(|s| Count {
                key: *s,
                count: self.per_state[*s as usize],
            })
            .collect()
    }
}

/// The `top_n` pairs with TIME_WAIT holding the most ports of the range
/// (the warnings come from [`RangeUse::advice`]).
fn port_use(
    pairs: HashMap<(IpAddr, SocketAddr), PairCount>,
    avail: u32,
    top_n: usize,
) -> Vec<PortUse> {
    let avail = avail.max(1);
    // Only pickable ports are counted, each at most once per pair (the
    // 4-tuple is unique), so shares stay within 100 %; min() is a guard.
    let share = |n: u32| (100.0 * f64::from(n) / f64::from(avail)).min(100.0);
    let mut port_use: Vec<PortUse> = pairs
        .into_iter()
        .filter(|(_, c)| c.time_wait > 0)
        .map(|((local_addr, peer), c)| PortUse {
            local_addr,
            peer,
            time_wait: c.time_wait,
            time_wait_reusable: c.reusable,
            other_states: c.other,
            ephemeral_ports: avail,
            percent_time_wait: share(c.time_wait),
            percent_held: share(c.time_wait + c.other),
            percent_blocked: share(c.time_wait - c.reusable + c.other),
        })
        .collect();
    port_use.sort_by(|a, b| {
        (b.time_wait + b.other_states)
            .cmp(&(a.time_wait + a.other_states))
            .then(a.peer.cmp(&b.peer))
            .then(a.local_addr.cmp(&b.local_addr))
    });
    port_use.truncate(top_n);
    port_use
}

/// The headroom below `tcp_max_tw_buckets`, and a warning at 90 % or more.
fn tw_buckets(limit: Option<u64>, in_use: u64, warnings: &mut Vec<String>) -> TwBuckets {
    let percent = limit
        .filter(|l| *l > 0)
        .map(|l| 100.0 * in_use as f64 / l as f64);
    if let (Some(l), Some(p)) = (limit, percent)
        && p >= 90.0
    {
        warnings.push(format!(
                "TIME_WAIT sockets at {p:.1}% of tcp_max_tw_buckets ({l}): beyond it the kernel closes connections without TIME_WAIT (TCPTIMEWAITOVERFLOW in nstat)"
            ));
    }
    TwBuckets {
        limit,
        in_use,
        percent,
    }
}

/// Build the summary from one unfiltered dump of the namespace.
pub fn build_summary(filter: &Filter, top_n: usize) -> Result<Summary> {
    let all = Query::default();
    // None when the namespace's sysctls cannot be read: the summary then
    // says the range and the limit are unknown.
    let sys = NetSysctls::read().ok();
    let range = sys.as_ref().map(|s| s.port_range).filter(|r| !r.is_empty());
    // Off Linux: the system's own range, and a note saying where it came from.
    let elsewhere = diag::port_range_elsewhere().filter(|_| sys.is_none());
    let range = range.or(elsewhere.as_ref().map(|(r, _)| *r));
    let reserved = match (&sys, range) {
        (Some(s), Some(r)) => s.reserved_ports.count_in(r),
        _ => 0,
    };
    let ports = match (&sys, range) {
        (Some(s), Some(range)) => Some(Ports {
            range,
            reserved: s.reserved_ports.clone(),
            sys: s.clone(),
        }),
        _ => None,
    };
    // The listening ports first (a dump of the listening hash alone, no
    // walk of the established one), so every TIME_WAIT is put on its side
    // as the main dump streams past: nothing of the table is kept but
    // counts and the range's compact index.
    let mut listening: HashSet<u16> = HashSet::new();
    diag::dump_each(&Query::states(StateSet::of(&[TcpState::Listen])), |e| {
        listening.insert(e.local.port());
        Ok(())
    })?;
    let mut t = Tally::default();
    let mut index = match (&sys, range) {
        (Some(_), Some(r)) => Some(why::RangeIndex::new(r)),
        _ => None,
    };
    let mut sides = why::TimeWaitSides::default();
    diag::dump_each(&all, |e| {
        if e.state == TcpState::Listen {
            // One that started listening after the first dump.
            listening.insert(e.local.port());
        }
        // connect() never picks a port whose bucket a listener made
        // (`__inet_hash_connect()` skips `tb->fastreuse >= 0`), and the
        // range accounting counts such a port as the listener's whatever
        // else is on it: the sockets accepted there (often most of a
        // server's table) are counted, not indexed one by one. (A
        // listener that closed between the two dumps leaves its port's
        // sockets out of the index: both dumps are a moment apart.)
        let on_listener_port = e.state != TcpState::Listen && listening.contains(&e.local.port());
        t.add(&e, filter, ports.as_ref().filter(|_| !on_listener_port));
        if let Some(ix) = index.as_mut().filter(|_| !on_listener_port) {
            ix.add(&e);
        }
        if filter.query.families.contains(&e.family)
            && filter.query.states.contains(e.state)
            && filter.matches(&e)
        {
            sides.add(&e, &listening, range);
        }
        Ok(())
    })?;
    let states = t.states();
    let server: u32 = sides.server_by_port.values().sum();
    let (server_side, server_by_port, client_by_peer) = (
        u64::from(server),
        top(sides.server_by_port, top_n),
        top(sides.others_by_peer, top_n),
    );
    let port_use = match range {
        Some(r) => port_use(
            std::mem::take(&mut t.pairs),
            r.len().saturating_sub(reserved),
            top_n,
        ),
        None => Vec::new(),
    };
    let range_use = match (&sys, index) {
        (Some(s), Some(ix)) => Some(ix.finish(s, top_n)),
        _ => None,
    };
    let advice = match (&sys, &range_use) {
        (Some(s), Some(u)) => u.advice(s),
        _ => why::RangeAdvice::default(),
    };
    let mut warnings = advice.warnings;
    let limit = sys.as_ref().map(|s| u64::from(s.max_tw_buckets));
    let tw_buckets = tw_buckets(limit, t.in_use, &mut warnings);
    Ok(Summary {
        total: t.total,
        states,
        time_wait_total: t.tw_total,
        fin_wait2_mini: t.fw2_mini,
        time_wait_by_peer: top(t.by_peer, top_n),
        time_wait_server_side: server_side,
        time_wait_server_side_by_port: server_by_port,
        time_wait_client_side_by_peer: client_by_peer,
        time_wait_by_local_port: top(
            t.by_lport
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(p, n)| (p as u16, *n))
                .collect(),
            top_n,
        ),
        ip_local_port_range: range.map(|r| (r.low, r.high)),
        reserved_in_range: reserved,
        port_use,
        range_use,
        tw_buckets,
        tcp_tw_reuse: sys.as_ref().map(|s| s.tw_reuse.value().to_string()),
        tcp_timestamps: sysctl::read(sysctl::TIMESTAMPS),
        warnings,
        notes: advice
            .notes
            .into_iter()
            .chain(elsewhere.map(|(_, n)| n))
            .collect(),
    })
}

/// Write the summary to `out` (buffered, flushed at the end).
pub(super) fn run(
    filter: &Filter,
    format: OutputFormat,
    top_n: usize,
    out: &mut dyn Write,
) -> Result<Exit> {
    let s = build_summary(filter, top_n)?;
    let mut out = io::BufWriter::new(out);
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &crate::json::doc(&s)).map_err(json_err)?;
            out.write_all(b"\n").map_err(io_err)?;
        }
        _ => write_summary(&mut out, &s).map_err(io_err)?,
    }
    out.flush().map_err(io_err)?;
    Ok(Exit::Done)
}

fn write_summary(out: &mut impl Write, s: &Summary) -> io::Result<()> {
    write_counts(out, s)?;
    writeln!(out)?;
    write_port_use(out, s)?;
    writeln!(out)?;
    write_limits(out, s)
}

/// Counts per state and the TIME_WAIT top lists.
fn write_counts(out: &mut impl Write, s: &Summary) -> io::Result<()> {
    writeln!(out, "TCP sockets: {}", group(s.total))?;
    for c in &s.states {
        writeln!(
            out,
            "  {:<11} {:>9}",
            c.key.ss_column(),
            group(u64::from(c.count))
        )?;
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
    if !s.time_wait_server_side_by_port.is_empty() {
        writeln!(
            out,
            "  server side (accepted connections), by local listening port: {}",
            group(s.time_wait_server_side)
        )?;
        for c in &s.time_wait_server_side_by_port {
            writeln!(out, "    {:<47} {:>9}", c.key, group(u64::from(c.count)))?;
        }
    }
    if !s.time_wait_client_side_by_peer.is_empty() {
        writeln!(
            out,
            "  client side, top peers (peer address:port, TIME_WAIT count):"
        )?;
        for c in &s.time_wait_client_side_by_peer {
            writeln!(
                out,
                "    {:<47} {:>9}",
                c.key.to_string(),
                group(u64::from(c.count))
            )?;
        }
    }
    Ok(())
}

/// The ephemeral port range and the pairs that use it most.
fn write_port_use(out: &mut impl Write, s: &Summary) -> io::Result<()> {
    match s.ip_local_port_range {
        Some((lo, hi)) => {
            write!(out, "Ephemeral ports ({} {lo}-{hi}", diag::PORT_RANGE_NAME)?;
            if s.reserved_in_range > 0 {
                write!(out, ", {} reserved", s.reserved_in_range)?;
            }
            writeln!(
                out,
                "): connect() without bind() needs a local port free for its (local address, peer) pair"
            )?;
            if let Some(u) = &s.range_use {
                for line in why::render::range_lines(u) {
                    writeln!(out, "  {line}")?;
                }
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
                if u.time_wait_reusable > 0 {
                    write!(
                        out,
                        ", {} of them reusable by connect() now (tcp_tw_reuse)",
                        group(u64::from(u.time_wait_reusable))
                    )?;
                }
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
    Ok(())
}

/// The tcp_max_tw_buckets headroom, tcp_tw_reuse, and the warnings.
fn write_limits(out: &mut impl Write, s: &Summary) -> io::Result<()> {
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
    }
    for n in &s.notes {
        writeln!(out, "note: {n}")?;
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

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
