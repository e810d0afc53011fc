//! Cells: the product of the selected factor values, pruned to the
//! meaningful combinations (see the [module doc](super)), each an
//! [`Experiment`] plus the sysctls of its namespace.

use super::factors::{RangeChoice, Selection};
use crate::error::{Error, Result, SysctlError};
use crate::experiment::{ClientPort, Close, Experiment, NextStep, When};
use crate::model;
use crate::socket::{Family, SocketOpts};
use crate::sysctl::{
    FIN_TIMEOUT, MAX_TW_BUCKETS, NetSysctls, PORT_RANGE, Sysctl, TIMESTAMPS, TW_REUSE,
    TW_REUSE_DELAY,
};
use serde::{Deserialize, Serialize};

/// Server port inside a fresh namespace (the story's).
pub const SERVER_PORT: u16 = 12345;
/// Fixed client port inside a fresh namespace (the story's).
pub const CLIENT_PORT: u16 = 23456;
/// The one port of `port-range=one` for kernel-chosen client ports.
pub const ONE_PORT: u16 = 40000;

/// The socket options of one cell: first client, first listener, new socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CellOpts {
    /// The first client socket.
    pub client: SocketOpts,
    /// The first listener (accepted sockets inherit its options).
    pub listener: SocketOpts,
    /// The socket the next step creates.
    pub new: SocketOpts,
}

/// One cell: an experiment plus the sysctls of its namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CellSpec {
    /// Position in the matrix, from 0.
    pub id: usize,
    /// What runs.
    pub experiment: Experiment,
    /// The `port-range` factor's value.
    pub range: RangeChoice,
    /// The sysctls written into the cell's namespace (host values unless a
    /// factor says otherwise).
    pub sysctls: Vec<Sysctl>,
    /// Values that differ from the host's, for display ("ts=0 reuse=1").
    pub sysctl_label: String,
}

fn opts(reuseaddr: bool, reuseport: bool) -> SocketOpts {
    SocketOpts {
        reuseaddr,
        reuseport,
        ..Default::default()
    }
}

/// The option combinations of a cell (see the module doc).
fn opt_combos(sel: &Selection, next: NextStep, port: ClientPort) -> Vec<CellOpts> {
    if sel.any_opts() {
        let v = |o: &Option<Vec<bool>>| o.clone().unwrap_or_else(|| vec![false]);
        // The product of the named option factors, unnamed ones off, in the
        // order client RA, client RP, listener RA, listener RP, new RA, new RP.
        let axes = [
            v(&sel.old_client_reuseaddr),
            v(&sel.old_client_reuseport),
            v(&sel.old_listener_reuseaddr),
            v(&sel.old_listener_reuseport),
            v(&sel.new_reuseaddr),
            v(&sel.new_reuseport),
        ];
        let combos = axes.iter().fold(vec![Vec::new()], |points, axis| {
            (points.iter())
                .flat_map(|p: &Vec<bool>| axis.iter().map(move |&x| [p.as_slice(), &[x]].concat()))
                .collect()
        });
        return combos
            .into_iter()
            .map(|o| CellOpts {
                client: opts(o[0], o[1]),
                listener: opts(o[2], o[3]),
                new: opts(o[4], o[5]),
            })
            .collect();
    }
    let none = SocketOpts::default();
    if next == NextStep::Reconnect && !matches!(port, ClientPort::Fixed(_)) {
        return vec![CellOpts {
            client: none,
            listener: none,
            new: none,
        }];
    }
    let mut combos: Vec<(SocketOpts, SocketOpts)> = Vec::new();
    for old in [false, true] {
        for new in [false, true] {
            combos.push((opts(old, false), opts(new, false)));
        }
    }
    combos.push((opts(false, true), opts(false, true)));
    combos
        .into_iter()
        .map(|(old, new)| match next {
            NextStep::RestartListener => CellOpts {
                client: none,
                listener: old,
                new,
            },
            _ => CellOpts {
                client: old,
                listener: none,
                new,
            },
        })
        .collect()
}

/// One point of the matrix: a value of every cell-level factor.
#[derive(Debug, Clone, Copy)]
struct Point {
    next: NextStep,
    close: Close,
    when: When,
    port: ClientPort,
    family: Family,
    opts: CellOpts,
    ts: u8,
    reuse: u8,
    delay: Option<u32>,
    range: RangeChoice,
    max_tw: Option<u32>,
}

/// What the value lists of the axes depend on besides the earlier axes.
struct Defaults<'a> {
    sel: &'a Selection,
    host_ts: u8,
    host_reuse: u8,
}

/// An axis of the product: the values one factor takes at a point, given
/// the values the earlier axes chose (`when` depends on `close`, options
/// and sysctls on `next` ...), each returned as the extended point.
type Axis = fn(&Defaults, &Point) -> Vec<Point>;

fn each<V: Copy>(values: Vec<V>, p: &Point, set: fn(&mut Point, V)) -> Vec<Point> {
    values
        .into_iter()
        .map(|v| {
            let mut q = *p;
            set(&mut q, v);
            q
        })
        .collect()
}

/// The axes in nesting order, each named after its factor ("options" is
/// the six socket-option factors, pruned together by `opt_combos`); this
/// order is the order of the cells.
const AXES: [(&str, Axis); 11] = [
    ("next", |d, p| {
        each(
            d.sel.next.clone().unwrap_or(NextStep::ALL.to_vec()),
            p,
            |q, v| q.next = v,
        )
    }),
    ("close", |d, p| {
        each(
            d.sel.close.clone().unwrap_or(Close::ALL.to_vec()),
            p,
            |q, v| q.close = v,
        )
    }),
    ("when", |d, p| {
        let whens = match &d.sel.when {
            Some(w) => w.clone(),
            // After an RST there is no ACK to wait for: after-ack = at-once.
            None if p.close.is_rst() => vec![When::AtOnce, When::AfterPeer],
            None => vec![When::AtOnce, When::AfterAck, When::AfterPeer],
        };
        each(whens, p, |q, v| q.when = v)
    }),
    ("client-port", |d, p| {
        let ports = match (&d.sel.client_port, p.next) {
            (Some(ports), _) => ports.clone(),
            (None, NextStep::RestartListener) => vec![ClientPort::Fixed(0)],
            (None, _) => vec![
                ClientPort::Fixed(0),
                ClientPort::Ephemeral,
                ClientPort::BindNoPort,
            ],
        };
        each(ports, p, |q, v| q.port = v)
    }),
    ("family", |d, p| {
        let fams = d.sel.family.clone().unwrap_or(vec![Family::V4, Family::V6]);
        each(fams, p, |q, v| q.family = v)
    }),
    ("options", |d, p| {
        each(opt_combos(d.sel, p.next, p.port), p, |q, v| q.opts = v)
    }),
    ("tcp-timestamps", |d, p| {
        let vary = p.next == NextStep::Reconnect;
        let tss =
            (d.sel.timestamps.clone()).unwrap_or(if vary { vec![0, 1] } else { vec![d.host_ts] });
        each(tss, p, |q, v| q.ts = v)
    }),
    ("tcp-tw-reuse", |d, p| {
        let vary = p.next == NextStep::Reconnect;
        let reuses = (d.sel.tw_reuse.clone()).unwrap_or(if vary {
            vec![0, 1, 2]
        } else {
            vec![d.host_reuse]
        });
        each(reuses, p, |q, v| q.reuse = v)
    }),
    ("tcp-tw-reuse-delay", |d, p| {
        each(optional(&d.sel.tw_reuse_delay), p, |q, v| q.delay = v)
    }),
    ("port-range", |d, p| {
        let ranges = d.sel.port_range.clone().unwrap_or(vec![RangeChoice::Host]);
        each(ranges, p, |q, v| q.range = v)
    }),
    ("tcp-max-tw-buckets", |d, p| {
        each(optional(&d.sel.max_tw_buckets), p, |q, v| q.max_tw = v)
    }),
];

/// A factor whose default is "the host's value" (`None`).
fn optional(v: &Option<Vec<u32>>) -> Vec<Option<u32>> {
    match v {
        Some(v) => v.iter().copied().map(Some).collect(),
        None => vec![None],
    }
}

/// The most cells a matrix may have unless the plan raises the limit
/// (`--max-cells`): 100,000 cells take about a gigabyte of results and
/// minutes of runs.
pub const MAX_CELLS: usize = 100_000;

/// How many cells `sel` selects, counting no further than `limit + 1`: a
/// depth-first walk of the axes that keeps one point per axis, so a
/// selection of millions of cells is refused at once without allocating
/// them.
pub fn count_cells(sel: &Selection, host: &NetSysctls, limit: usize) -> usize {
    fn walk(d: &Defaults, p: &Point, depth: usize, limit: usize, n: &mut usize) {
        let Some((_, axis)) = AXES.get(depth) else {
            *n += 1;
            return;
        };
        for q in axis(d, p) {
            if *n > limit {
                return;
            }
            walk(d, &q, depth + 1, limit, n);
        }
    }
    let d = defaults(sel, host);
    let mut n = 0;
    walk(&d, &start(), 0, limit, &mut n);
    n
}

/// Refuse a selection of more than `limit` cells, before building them.
pub fn check_size(sel: &Selection, host: &NetSysctls, limit: usize) -> Result<()> {
    let n = count_cells(sel, host, limit);
    if n > limit {
        return Err(Error::Usage(format!(
            "the factors select more than {limit} cells; name fewer values, or raise the limit with --max-cells N"
        )));
    }
    Ok(())
}

fn defaults<'a>(sel: &'a Selection, host: &NetSysctls) -> Defaults<'a> {
    Defaults {
        sel,
        host_ts: u8::from(host.timestamps),
        host_reuse: host.tw_reuse.value(),
    }
}

/// Every axis overwrites its field before any cell is made: the start
/// point's values are never seen.
fn start() -> Point {
    Point {
        next: NextStep::Reconnect,
        close: Close::CLIENT,
        when: When::AtOnce,
        port: ClientPort::Ephemeral,
        family: Family::V4,
        opts: CellOpts {
            client: SocketOpts::default(),
            listener: SocketOpts::default(),
            new: SocketOpts::default(),
        },
        ts: 0,
        reuse: 0,
        delay: None,
        range: RangeChoice::Host,
        max_tw: None,
    }
}

/// Build the cells of a selection. `host` supplies the values of the sysctls
/// no factor sets; `isolated` says whether cells get a namespace of their own
/// (then the story's fixed ports, else free ports picked at run time).
pub fn build_cells(sel: &Selection, host: &NetSysctls, isolated: bool) -> Result<Vec<CellSpec>> {
    if sel.tw_reuse_delay.is_some() && host.tw_reuse_delay_ms.is_none() {
        return Err(Error::Sysctl {
            name: TW_REUSE_DELAY.into(),
            why: SysctlError::TooNew {
                release: model::kernel_release(),
                sysctl: TW_REUSE_DELAY,
                since: "6.14",
                factor: "tcp-tw-reuse-delay",
            },
        });
    }
    let d = defaults(sel, host);
    let start = start();
    // The cartesian product of the axes, the first varying slowest (as
    // nested loops would): each point so far is extended by every value the
    // next axis takes there.
    let points = AXES.iter().fold(vec![start], |points, (_, axis)| {
        points.iter().flat_map(|p| axis(&d, p)).collect()
    });
    Ok(points
        .iter()
        .enumerate()
        .map(|(id, p)| cell(id, p, &d, host, isolated))
        .collect())
}

/// The cell at one point.
fn cell(id: usize, p: &Point, d: &Defaults, host: &NetSysctls, isolated: bool) -> CellSpec {
    let client_port = match (p.port, isolated) {
        (ClientPort::Fixed(_), true) => ClientPort::Fixed(CLIENT_PORT),
        // Picked at run time among the host's free ports.
        (ClientPort::Fixed(_), false) => ClientPort::Fixed(0),
        (other, _) => other,
    };
    let experiment = Experiment {
        family: p.family,
        server_port: if isolated { SERVER_PORT } else { 0 },
        client_port,
        listener: p.opts.listener,
        client: p.opts.client,
        close: p.close,
        when: p.when,
        next: p.next,
        new_opts: p.opts.new,
        until_free: None,
    };
    let (sysctls, label) = namespace_sysctls(p, d, host);
    CellSpec {
        id,
        experiment,
        range: p.range,
        sysctls,
        sysctl_label: if label.is_empty() {
            "host".into()
        } else {
            label.join(" ")
        },
    }
}

/// The sysctls of the cell at `p` (its factors' values, else the host's),
/// and the labels of the values no default chose.
fn namespace_sysctls(p: &Point, d: &Defaults, host: &NetSysctls) -> (Vec<Sysctl>, Vec<String>) {
    let (ts, reuse) = (p.ts, p.reuse);
    let mut sysctls = vec![
        Sysctl::new(TIMESTAMPS, ts.to_string()),
        Sysctl::new(TW_REUSE, reuse.to_string()),
    ];
    let mut label = Vec::new();
    if ts != d.host_ts {
        label.push(format!("ts={ts}"));
    }
    if reuse != d.host_reuse {
        label.push(format!("tw_reuse={reuse}"));
    }
    if p.next == NextStep::Reconnect && d.sel.timestamps.is_none() && d.sel.tw_reuse.is_none() {
        // Always show the varied pair in the default matrix.
        label = vec![format!("ts={ts} tw_reuse={reuse}")];
    }
    match (p.delay, host.tw_reuse_delay_ms) {
        (Some(ms), _) => {
            sysctls.push(Sysctl::new(TW_REUSE_DELAY, ms.to_string()));
            label.push(format!("tw_delay={ms}"));
        }
        (None, Some(h)) => sysctls.push(Sysctl::new(TW_REUSE_DELAY, h.to_string())),
        (None, None) => {}
    }
    let range_value = match p.range {
        RangeChoice::Host => format!("{} {}", host.port_range.low, host.port_range.high),
        RangeChoice::One => {
            let one = if matches!(p.port, ClientPort::Fixed(_)) {
                CLIENT_PORT
            } else {
                ONE_PORT
            };
            label.push(format!("range={one}"));
            format!("{one} {one}")
        }
        RangeChoice::Span(a, b) => {
            label.push(format!("range={a}-{b}"));
            format!("{a} {b}")
        }
    };
    sysctls.push(Sysctl::new(PORT_RANGE, range_value));
    let max_tw = match p.max_tw {
        Some(m) => {
            label.push(format!("max_tw={m}"));
            m
        }
        None => host.max_tw_buckets,
    };
    sysctls.push(Sysctl::new(MAX_TW_BUCKETS, max_tw.to_string()));
    // Copied from the host: it decides whether an orphaned FIN_WAIT2 becomes
    // a timewait mini-socket (≤ 60 s, `tcp_close`) or stays a full socket.
    if let Some(f) = host.fin_timeout_s {
        sysctls.push(Sysctl::new(FIN_TIMEOUT, f.to_string()));
    }
    (sysctls, label)
}

/// The only sysctls a cell may set: the ones `namespace_sysctls` writes.
/// The unprivileged worker reads its cells from a pipe and, as root inside
/// its user namespace, could write any /proc/sys file it is given; it
/// refuses every other name ([`check_sysctl_names`]).
pub const CELL_SYSCTLS: [&str; 6] = [
    TIMESTAMPS,
    TW_REUSE,
    TW_REUSE_DELAY,
    PORT_RANGE,
    MAX_TW_BUCKETS,
    FIN_TIMEOUT,
];

/// Refuse cells that would set a sysctl outside [`CELL_SYSCTLS`].
pub fn check_sysctl_names(cells: &[CellSpec]) -> Result<()> {
    let bad = cells
        .iter()
        .flat_map(|c| &c.sysctls)
        .find(|s| !CELL_SYSCTLS.contains(&s.name.as_str()));
    match bad {
        Some(s) => Err(Error::Usage(format!(
            "refusing to set sysctl '{}': a matrix cell sets only {}",
            s.name.escape_debug(),
            CELL_SYSCTLS.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The host sysctls the unit tests build cells against.
#[cfg(test)]
pub(super) fn test_host() -> NetSysctls {
    NetSysctls {
        timestamps: true,
        tw_reuse: crate::sysctl::TwReuse::LoopbackOnly,
        tw_reuse_delay_ms: Some(1000),
        port_range: crate::sysctl::PortRange {
            low: 32768,
            high: 60999,
        },
        reserved_ports: Default::default(),
        max_tw_buckets: 131072,
        fin_timeout_s: Some(60),
        rfc1337: None,
        bindv6only: None,
        unprivileged_port_start: Some(1024),
        autobind_reuse: Some(false),
    }
}

#[cfg(test)]
#[path = "cells_tests.rs"]
mod tests;
