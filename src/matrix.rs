//! `twlab matrix`: factors × values → cells; each cell is one
//! [`Experiment`] run in its own fresh network namespace (own loopback, own
//! port space, own sysctls), in parallel; each shows the rule model's
//! prediction beside the observation, and any disagreement is loud.
//!
//! # Meaningful combinations (the default matrix)
//! The full product of every factor is mostly repetition, so by default:
//! - socket options vary on the side the next step touches: the client for
//!   `reconnect`/`rebind`, the listener for `restart-listener`. Five
//!   combinations: SO_REUSEADDR old × new (off/on each), plus SO_REUSEPORT on
//!   both with SO_REUSEADDR off. A reconnect from a kernel-chosen port binds
//!   no port, so there only "none" is run;
//! - `restart-listener` does not depend on how the client got its port, so
//!   it runs with a fixed client port only;
//! - `tcp_timestamps` (0, 1) and `tcp_tw_reuse` (0, 1, 2) are read by
//!   connect() only (`tcp_twsk_unique`), so they vary for `reconnect`; the
//!   other cells use the host's values.
//!
//! Naming a factor with `--factor` replaces its default values, and naming
//! any option factor switches the option defaults off: then the product of the
//! named option factors is run, unnamed ones off.
//!
//! # Isolation
//! As root, each cell runs on a worker thread that first moves into a fresh
//! network namespace with a TCP hash of its own
//! (`netns::enter_fresh_private_ehash`). As an ordinary user, twlab
//! re-executes itself as a hidden worker that unshares a user and a network
//! namespace before any thread exists (CLONE_NEWUSER needs a single-threaded
//! process), maps its uid to root there, and then does the same per thread;
//! cells travel as JSON on stdin, results come back as JSON lines on stdout.
//! When neither works, cells run in the host namespace on kernel-chosen free
//! ports, with the host's sysctls only; cells that need other sysctls are
//! skipped, and the output says so above the table.

use crate::check::Checked;
use crate::diag::{Side, TupleView};
use crate::error::{Error, Result};
use crate::model::{self, CellFacts, DocumentedPrediction, KernelFacts, Prediction};
use crate::netns::{self, Sysctl};
use crate::outcome::Outcome;
use crate::scenario::{self, ClientPort, CloseBy, Experiment, NextStep, Report, When};
use crate::socket::{Family, SocketOpts};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Server port inside a fresh namespace (the story's).
pub const SERVER_PORT: u16 = 12345;
/// Fixed client port inside a fresh namespace (the story's).
pub const CLIENT_PORT: u16 = 23456;
/// The one port of `port-range=one` for kernel-chosen client ports.
pub const ONE_PORT: u16 = 40000;
/// At most this many cells wait `after-<N>ms` at once (threads, each in its
/// own namespace).
const MAX_SLEEPERS: usize = 256;
/// `--until-free` gives up after this long.
pub const UNTIL_FREE_LIMIT: Duration = Duration::from_secs(70);

const TS: &str = "net.ipv4.tcp_timestamps";
const TW_REUSE: &str = "net.ipv4.tcp_tw_reuse";
const TW_DELAY: &str = "net.ipv4.tcp_tw_reuse_delay";
const RANGE: &str = "net.ipv4.ip_local_port_range";
const MAX_TW: &str = "net.ipv4.tcp_max_tw_buckets";
/// Copied from the host: it decides whether an orphaned FIN_WAIT2 becomes a
/// timewait mini-socket (≤ 60 s, `tcp_close`) or stays a full socket.
const FIN_TIMEOUT: &str = "net.ipv4.tcp_fin_timeout";

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Md,
    Csv,
}

/// Run the experiment over a matrix of factors, compare each cell with the
/// rule model, and show Windows and BSD/macOS expectations beside it.
///
/// Default: every meaningful combination of close × when × next × socket
/// options × client-port × family, with tcp_timestamps 0/1 and tcp_tw_reuse
/// 0/1/2 for reconnects. "Meaningful": options vary on the side the next step
/// touches (client for reconnect/rebind, listener for restart-listener):
/// SO_REUSEADDR old×new plus SO_REUSEPORT on both; a reconnect from a
/// kernel-chosen port binds nothing, so runs with no options;
/// restart-listener runs with a fixed client port only; the sysctls vary
/// only for reconnect (only connect() reads them). Naming a factor replaces
/// its defaults; naming any option factor runs the product of the named
/// option factors (unnamed ones off). See `--list-factors`.
///
/// Exit code 3 if any observation differs from the prediction.
#[derive(Debug, Clone, clap::Args)]
pub struct MatrixArgs {
    /// NAME=V1,V2,...: the values of one factor (repeatable).
    #[arg(long = "factor", short = 'f', value_name = "NAME=V1,V2")]
    pub factors: Vec<String>,
    /// List the factors, their values and defaults, and exit.
    #[arg(long)]
    pub list_factors: bool,
    /// For cells whose step failed, retry until it succeeds (≤ 50 ms
    /// resolution, give up after 70 s) and show how long that took.
    #[arg(long)]
    pub until_free: bool,
    /// Cells run at once (default: 4 × available cores). Cells that wait
    /// after-<N>ms (N ≥ 50) run afterwards, up to 256 at once, since they
    /// sleep; with --until-free the blocked cells are re-run all at once.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Internal: run cells read from stdin inside a user+network namespace.
    #[arg(long, hide = true)]
    pub internal_worker: bool,
    /// Internal/testing: do not create namespaces (host fallback).
    #[arg(long, hide = true)]
    pub host_netns: bool,
}

/// One factor the matrix can vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactorInfo {
    pub name: &'static str,
    pub values: &'static str,
    pub default: &'static str,
    pub what: &'static str,
}

pub const FACTORS: &[FactorInfo] = &[
    FactorInfo {
        name: "close",
        values: "client, server, client-rst, server-rst",
        default: "all",
        what: "who closes first, with FIN or RST (SO_LINGER 0)",
    },
    FactorInfo {
        name: "when",
        values: "at-once, after-ack, after-peer, after-<N>ms",
        default: "at-once, after-ack (FIN closes), after-peer",
        what: "right after close() (closer FIN_WAIT1), after the FIN's ACK (FIN_WAIT2/CLOSE_WAIT), or after both closed and settled (+N ms)",
    },
    FactorInfo {
        name: "next",
        values: "reconnect, rebind, restart-listener",
        default: "all",
        what: "the step whose outcome is observed",
    },
    FactorInfo {
        name: "old-client-reuseaddr",
        values: "off, on",
        default: "varied when the client side is touched",
        what: "SO_REUSEADDR on the first client socket",
    },
    FactorInfo {
        name: "old-listener-reuseaddr",
        values: "off, on",
        default: "varied for restart-listener",
        what: "SO_REUSEADDR on the first listener (accepted sockets inherit it)",
    },
    FactorInfo {
        name: "new-reuseaddr",
        values: "off, on",
        default: "off, on",
        what: "SO_REUSEADDR on the socket the next step creates",
    },
    FactorInfo {
        name: "old-client-reuseport",
        values: "off, on",
        default: "on together with new-reuseport, client side",
        what: "SO_REUSEPORT on the first client socket",
    },
    FactorInfo {
        name: "old-listener-reuseport",
        values: "off, on",
        default: "on together with new-reuseport, restart-listener",
        what: "SO_REUSEPORT on the first listener",
    },
    FactorInfo {
        name: "new-reuseport",
        values: "off, on",
        default: "see above",
        what: "SO_REUSEPORT on the new socket",
    },
    FactorInfo {
        name: "client-port",
        values: "fixed, ephemeral, bind-no-port",
        default: "all (fixed for restart-listener)",
        what: "bind(port) / no bind / bind(addr,0)+IP_BIND_ADDRESS_NO_PORT",
    },
    FactorInfo {
        name: "family",
        values: "ipv4, ipv6",
        default: "ipv4, ipv6",
        what: "127.0.0.1 or ::1",
    },
    FactorInfo {
        name: "tcp-timestamps",
        values: "0, 1",
        default: "0, 1 (reconnect); host (others)",
        what: "net.ipv4.tcp_timestamps in the cell's namespace",
    },
    FactorInfo {
        name: "tcp-tw-reuse",
        values: "0, 1, 2",
        default: "0, 1, 2 (reconnect); host (others)",
        what: "net.ipv4.tcp_tw_reuse",
    },
    FactorInfo {
        name: "tcp-tw-reuse-delay",
        values: "1..60000 (ms)",
        default: "host",
        what: "net.ipv4.tcp_tw_reuse_delay (Linux 6.14+)",
    },
    FactorInfo {
        name: "port-range",
        values: "host, one, LOW-HIGH",
        default: "host",
        what: "ip_local_port_range; 'one' = exactly the port the first connection uses",
    },
    FactorInfo {
        name: "tcp-max-tw-buckets",
        values: "N",
        default: "host",
        what: "net.ipv4.tcp_max_tw_buckets (0: no TIME_WAIT at all)",
    },
];

/// `--list-factors` text.
pub fn list_factors() -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec!["factor", "values", "default", "what"]);
    for f in FACTORS {
        t.add_row(vec![f.name, f.values, f.default, f.what]);
    }
    t.to_string()
}

/// A on/off factor value.
fn parse_onoff(v: &str) -> Option<bool> {
    match v {
        "on" | "1" | "true" => Some(true),
        "off" | "0" | "false" => Some(false),
        _ => None,
    }
}

fn parse_when(v: &str) -> Option<When> {
    match v {
        "at-once" => Some(When::AtOnce),
        "after-ack" => Some(When::AfterAck),
        "after-peer" => Some(When::AfterPeer),
        _ => v
            .strip_prefix("after-")
            .and_then(|r| r.strip_suffix("ms"))
            .and_then(|n| n.parse().ok())
            .map(When::AfterMs),
    }
}

/// The `ip_local_port_range` of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeChoice {
    Host,
    /// Exactly the port the first connection uses.
    One,
    Span(u16, u16),
}

/// The parsed `--factor` choices: `None` = default.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub close: Option<Vec<CloseBy>>,
    pub when: Option<Vec<When>>,
    pub next: Option<Vec<NextStep>>,
    pub old_client_reuseaddr: Option<Vec<bool>>,
    pub old_listener_reuseaddr: Option<Vec<bool>>,
    pub new_reuseaddr: Option<Vec<bool>>,
    pub old_client_reuseport: Option<Vec<bool>>,
    pub old_listener_reuseport: Option<Vec<bool>>,
    pub new_reuseport: Option<Vec<bool>>,
    pub client_port: Option<Vec<ClientPortKind>>,
    pub family: Option<Vec<Family>>,
    pub timestamps: Option<Vec<u8>>,
    pub tw_reuse: Option<Vec<u8>>,
    pub tw_reuse_delay: Option<Vec<u32>>,
    pub port_range: Option<Vec<RangeChoice>>,
    pub max_tw_buckets: Option<Vec<u32>>,
}

/// How the client gets its port (the factor; the port itself is chosen
/// per isolation mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClientPortKind {
    Fixed,
    Ephemeral,
    BindNoPort,
}

impl ClientPortKind {
    const ALL: [ClientPortKind; 3] = [
        ClientPortKind::Fixed,
        ClientPortKind::Ephemeral,
        ClientPortKind::BindNoPort,
    ];
    fn name(self) -> &'static str {
        match self {
            ClientPortKind::Fixed => "fixed",
            ClientPortKind::Ephemeral => "ephemeral",
            ClientPortKind::BindNoPort => "bind-no-port",
        }
    }
}

fn bad_value(factor: &str, v: &str, valid: &str) -> Error {
    Error::Invalid(format!(
        "factor '{factor}': unknown value '{v}'; valid values: {valid}"
    ))
}

impl Selection {
    /// Parse `--factor NAME=V1,V2` arguments.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut s = Selection::default();
        for a in args {
            let Some((name, vals)) = a.split_once('=') else {
                return Err(Error::Invalid(format!(
                    "--factor '{a}': expected NAME=V1,V2,... (see --list-factors)"
                )));
            };
            let name = name.trim();
            let info = FACTORS.iter().find(|f| f.name == name).ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown factor '{name}'; valid factors: {}",
                    FACTORS
                        .iter()
                        .map(|f| f.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            let vs: Vec<&str> = vals
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect();
            if vs.is_empty() {
                return Err(Error::Invalid(format!(
                    "factor '{name}' has no values; valid values: {}",
                    info.values
                )));
            }
            fn each<T>(
                vs: &[&str],
                f: impl Fn(&str) -> Option<T>,
                name: &str,
                valid: &str,
            ) -> Result<Vec<T>> {
                vs.iter()
                    .map(|v| f(v).ok_or_else(|| bad_value(name, v, valid)))
                    .collect()
            }
            let valid = info.values;
            match name {
                "close" => {
                    s.close = Some(each(
                        &vs,
                        |v| CloseBy::ALL.iter().copied().find(|c| c.name() == v),
                        name,
                        valid,
                    )?)
                }
                "when" => s.when = Some(each(&vs, parse_when, name, valid)?),
                "next" => {
                    s.next = Some(each(
                        &vs,
                        |v| NextStep::ALL.iter().copied().find(|c| c.name() == v),
                        name,
                        valid,
                    )?)
                }
                "old-client-reuseaddr" => {
                    s.old_client_reuseaddr = Some(each(&vs, parse_onoff, name, valid)?)
                }
                "old-listener-reuseaddr" => {
                    s.old_listener_reuseaddr = Some(each(&vs, parse_onoff, name, valid)?)
                }
                "new-reuseaddr" => s.new_reuseaddr = Some(each(&vs, parse_onoff, name, valid)?),
                "old-client-reuseport" => {
                    s.old_client_reuseport = Some(each(&vs, parse_onoff, name, valid)?)
                }
                "old-listener-reuseport" => {
                    s.old_listener_reuseport = Some(each(&vs, parse_onoff, name, valid)?)
                }
                "new-reuseport" => s.new_reuseport = Some(each(&vs, parse_onoff, name, valid)?),
                "client-port" => {
                    s.client_port = Some(each(
                        &vs,
                        |v| ClientPortKind::ALL.iter().copied().find(|c| c.name() == v),
                        name,
                        valid,
                    )?)
                }
                "family" => {
                    s.family = Some(each(
                        &vs,
                        |v| match v {
                            "ipv4" | "v4" | "4" => Some(Family::V4),
                            "ipv6" | "v6" | "6" => Some(Family::V6),
                            _ => None,
                        },
                        name,
                        valid,
                    )?)
                }
                "tcp-timestamps" => {
                    s.timestamps = Some(each(
                        &vs,
                        |v| v.parse::<u8>().ok().filter(|n| *n <= 1),
                        name,
                        valid,
                    )?)
                }
                "tcp-tw-reuse" => {
                    s.tw_reuse = Some(each(
                        &vs,
                        |v| v.parse::<u8>().ok().filter(|n| *n <= 2),
                        name,
                        valid,
                    )?)
                }
                "tcp-tw-reuse-delay" => {
                    s.tw_reuse_delay = Some(each(
                        &vs,
                        |v| v.parse::<u32>().ok().filter(|n| (1..=60_000).contains(n)),
                        name,
                        valid,
                    )?)
                }
                "port-range" => {
                    s.port_range = Some(each(
                        &vs,
                        |v| match v {
                            "host" => Some(RangeChoice::Host),
                            "one" => Some(RangeChoice::One),
                            _ => {
                                let (a, b) = v.split_once('-')?;
                                let (a, b) = (a.parse().ok()?, b.parse().ok()?);
                                (1024 <= a && a <= b).then_some(RangeChoice::Span(a, b))
                            }
                        },
                        name,
                        valid,
                    )?)
                }
                "tcp-max-tw-buckets" => {
                    s.max_tw_buckets = Some(each(&vs, |v| v.parse::<u32>().ok(), name, valid)?)
                }
                _ => unreachable!("every FACTORS entry is matched"),
            }
        }
        Ok(s)
    }

    fn any_opts(&self) -> bool {
        self.old_client_reuseaddr.is_some()
            || self.old_listener_reuseaddr.is_some()
            || self.new_reuseaddr.is_some()
            || self.old_client_reuseport.is_some()
            || self.old_listener_reuseport.is_some()
            || self.new_reuseport.is_some()
    }
}

/// The socket options of one cell: first client, first listener, new socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellOpts {
    pub client: SocketOpts,
    pub listener: SocketOpts,
    pub new: SocketOpts,
}

fn opts(reuseaddr: bool, reuseport: bool) -> SocketOpts {
    SocketOpts {
        reuseaddr,
        reuseport,
        ..Default::default()
    }
}

/// The option combinations of a cell (see the module doc).
fn opt_combos(sel: &Selection, next: NextStep, port: ClientPortKind) -> Vec<CellOpts> {
    if sel.any_opts() {
        let v = |o: &Option<Vec<bool>>| o.clone().unwrap_or_else(|| vec![false]);
        let mut out = Vec::new();
        for &ca in &v(&sel.old_client_reuseaddr) {
            for &cp in &v(&sel.old_client_reuseport) {
                for &la in &v(&sel.old_listener_reuseaddr) {
                    for &lp in &v(&sel.old_listener_reuseport) {
                        for &na in &v(&sel.new_reuseaddr) {
                            for &np in &v(&sel.new_reuseport) {
                                out.push(CellOpts {
                                    client: opts(ca, cp),
                                    listener: opts(la, lp),
                                    new: opts(na, np),
                                });
                            }
                        }
                    }
                }
            }
        }
        return out;
    }
    let none = SocketOpts::default();
    if next == NextStep::Reconnect && port != ClientPortKind::Fixed {
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

/// One cell: an experiment plus the sysctls of its namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    pub id: usize,
    pub experiment: Experiment,
    pub port_kind: ClientPortKind,
    pub range: RangeChoice,
    /// The sysctls written into the cell's namespace (host values unless a
    /// factor says otherwise).
    pub sysctls: Vec<Sysctl>,
    /// Values that differ from the host's, for display ("ts=0 reuse=1").
    pub sysctl_label: String,
}

/// The host's values of the sysctls the matrix sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSysctls {
    pub timestamps: String,
    pub tw_reuse: String,
    pub tw_reuse_delay: Option<String>,
    pub port_range: String,
    pub max_tw_buckets: String,
    pub fin_timeout: Option<String>,
}

impl HostSysctls {
    pub fn read() -> Result<Self> {
        let need = |n: &str| {
            crate::sysctl::read(n).ok_or_else(|| Error::Sysctl {
                name: n.into(),
                why: "cannot read it on this host".into(),
            })
        };
        Ok(HostSysctls {
            timestamps: need(TS)?,
            tw_reuse: need(TW_REUSE)?,
            tw_reuse_delay: crate::sysctl::read(TW_DELAY),
            port_range: need(RANGE)?,
            max_tw_buckets: need(MAX_TW)?,
            fin_timeout: crate::sysctl::read(FIN_TIMEOUT),
        })
    }
}

/// How cells are isolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// Root: one fresh network namespace per cell, per thread.
    Netns,
    /// Ordinary user: a re-executed worker in a user+network namespace.
    UserNs,
    /// Neither possible: the host namespace, host sysctls only.
    Host { why: String },
}

/// Build the cells of a selection.
pub fn build_cells(sel: &Selection, host: &HostSysctls, isolated: bool) -> Result<Vec<CellSpec>> {
    if sel.tw_reuse_delay.is_some() && host.tw_reuse_delay.is_none() {
        return Err(Error::Sysctl {
            name: TW_DELAY.into(),
            why: format!(
                "this kernel ({}) has no net.ipv4.tcp_tw_reuse_delay (added in Linux 6.14); drop the tcp-tw-reuse-delay factor",
                model::kernel_release()
            ),
        });
    }
    let closes = sel.close.clone().unwrap_or(CloseBy::ALL.to_vec());
    let whens_for = |close: CloseBy| match &sel.when {
        Some(w) => w.clone(),
        // After an RST there is no ACK to wait for: after-ack = at-once.
        None if close.is_rst() => vec![When::AtOnce, When::AfterPeer],
        None => vec![When::AtOnce, When::AfterAck, When::AfterPeer],
    };
    let nexts = sel.next.clone().unwrap_or(NextStep::ALL.to_vec());
    let fams = sel.family.clone().unwrap_or(vec![Family::V4, Family::V6]);
    let host_ts: u8 = host.timestamps.trim().parse().unwrap_or(1).min(1);
    let host_reuse: u8 = host.tw_reuse.trim().parse().unwrap_or(2);
    let mut cells = Vec::new();
    for &next in &nexts {
        let ports = match (&sel.client_port, next) {
            (Some(p), _) => p.clone(),
            (None, NextStep::RestartListener) => vec![ClientPortKind::Fixed],
            (None, _) => ClientPortKind::ALL.to_vec(),
        };
        let vary_sysctls = next == NextStep::Reconnect;
        let tss = sel.timestamps.clone().unwrap_or(if vary_sysctls {
            vec![0, 1]
        } else {
            vec![host_ts]
        });
        let reuses = sel.tw_reuse.clone().unwrap_or(if vary_sysctls {
            vec![0, 1, 2]
        } else {
            vec![host_reuse]
        });
        let delays: Vec<Option<u32>> = sel
            .tw_reuse_delay
            .clone()
            .map(|v| v.into_iter().map(Some).collect())
            .unwrap_or(vec![None]);
        let ranges = sel.port_range.clone().unwrap_or(vec![RangeChoice::Host]);
        let maxtws: Vec<Option<u32>> = sel
            .max_tw_buckets
            .clone()
            .map(|v| v.into_iter().map(Some).collect())
            .unwrap_or(vec![None]);
        for &close in &closes {
            for when in whens_for(close) {
                for &port in &ports {
                    for &fam in &fams {
                        for o in opt_combos(sel, next, port) {
                            for &ts in &tss {
                                for &reuse in &reuses {
                                    for &delay in &delays {
                                        for &range in &ranges {
                                            for &maxtw in &maxtws {
                                                let client_port = match (port, isolated) {
                                                    (ClientPortKind::Fixed, true) => {
                                                        ClientPort::Fixed(CLIENT_PORT)
                                                    }
                                                    (ClientPortKind::Fixed, false) => {
                                                        ClientPort::Fixed(0)
                                                    }
                                                    (ClientPortKind::Ephemeral, _) => {
                                                        ClientPort::Ephemeral
                                                    }
                                                    (ClientPortKind::BindNoPort, _) => {
                                                        ClientPort::BindNoPort
                                                    }
                                                };
                                                let experiment = Experiment {
                                                    family: fam,
                                                    server_port: if isolated {
                                                        SERVER_PORT
                                                    } else {
                                                        0
                                                    },
                                                    client_port,
                                                    listener: o.listener,
                                                    client: o.client,
                                                    close,
                                                    when,
                                                    next,
                                                    new_opts: o.new,
                                                    until_free: None,
                                                };
                                                let mut sysctls = vec![
                                                    Sysctl::new(TS, ts.to_string()),
                                                    Sysctl::new(TW_REUSE, reuse.to_string()),
                                                ];
                                                let mut label = Vec::new();
                                                if ts.to_string() != host.timestamps.trim() {
                                                    label.push(format!("ts={ts}"));
                                                }
                                                if reuse.to_string() != host.tw_reuse.trim() {
                                                    label.push(format!("tw_reuse={reuse}"));
                                                }
                                                if vary_sysctls
                                                    && sel.timestamps.is_none()
                                                    && sel.tw_reuse.is_none()
                                                {
                                                    // Always show the varied pair in the default matrix.
                                                    label =
                                                        vec![format!("ts={ts} tw_reuse={reuse}")];
                                                }
                                                match (delay, &host.tw_reuse_delay) {
                                                    (Some(d), _) => {
                                                        sysctls.push(Sysctl::new(
                                                            TW_DELAY,
                                                            d.to_string(),
                                                        ));
                                                        label.push(format!("tw_delay={d}"));
                                                    }
                                                    (None, Some(h)) => sysctls
                                                        .push(Sysctl::new(TW_DELAY, h.clone())),
                                                    (None, None) => {}
                                                }
                                                let range_value = match range {
                                                    RangeChoice::Host => host.port_range.clone(),
                                                    RangeChoice::One => {
                                                        let p = if port == ClientPortKind::Fixed {
                                                            CLIENT_PORT
                                                        } else {
                                                            ONE_PORT
                                                        };
                                                        label.push(format!("range={p}"));
                                                        format!("{p} {p}")
                                                    }
                                                    RangeChoice::Span(a, b) => {
                                                        label.push(format!("range={a}-{b}"));
                                                        format!("{a} {b}")
                                                    }
                                                };
                                                sysctls.push(Sysctl::new(RANGE, range_value));
                                                match maxtw {
                                                    Some(m) => {
                                                        sysctls.push(Sysctl::new(
                                                            MAX_TW,
                                                            m.to_string(),
                                                        ));
                                                        label.push(format!("max_tw={m}"));
                                                    }
                                                    None => sysctls.push(Sysctl::new(
                                                        MAX_TW,
                                                        host.max_tw_buckets.clone(),
                                                    )),
                                                }
                                                if let Some(f) = &host.fin_timeout {
                                                    sysctls
                                                        .push(Sysctl::new(FIN_TIMEOUT, f.clone()));
                                                }
                                                cells.push(CellSpec {
                                                    id: cells.len(),
                                                    experiment,
                                                    port_kind: port,
                                                    range,
                                                    sysctls,
                                                    sysctl_label: if label.is_empty() {
                                                        "host".into()
                                                    } else {
                                                        label.join(" ")
                                                    },
                                                });
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(cells)
}

/// A cell that ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RanCell {
    pub report: Report,
    /// The old 4-tuple the prediction was made from (see `check::Checked`).
    pub view: TupleView,
    pub kernel: KernelFacts,
    pub predicted: Prediction,
    pub windows: DocumentedPrediction,
    pub bsd: DocumentedPrediction,
    /// Observation equals prediction (step and errno name).
    pub matches: bool,
    /// Runs needed (more than 1 only after a race with a transient state).
    pub runs: u32,
    /// Every run disagreed while the old connection was in a transient
    /// state (FIN_WAIT1, LAST_ACK, ...): a race, not evidence either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raced: bool,
    /// `--until-free`: how long the failed step stayed blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_free: Option<FreeTiming>,
}

/// How long a blocked step stayed blocked (`--until-free`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FreeTiming {
    /// The step first succeeded this long after its first failure.
    FreedAfterMs(u64),
    /// Still blocked when twlab gave up.
    NotWithin { secs: u64 },
    /// The blocker is a socket whose descriptor stays open for the whole
    /// cell: waiting cannot free it.
    HeldByOpenSocket,
    /// The re-run's step succeeded at once (it raced a state change).
    OkOnRerun,
    /// The re-run itself failed.
    Error(String),
}

impl FreeTiming {
    pub fn label(&self) -> String {
        match self {
            FreeTiming::FreedAfterMs(ms) => format!("{:.2} s", *ms as f64 / 1000.0),
            FreeTiming::NotWithin { secs } => format!("not within {secs} s"),
            FreeTiming::HeldByOpenSocket => "never (open socket)".into(),
            FreeTiming::OkOnRerun => "ok on re-run".into(),
            FreeTiming::Error(e) => format!("error: {e}"),
        }
    }
}

/// What happened to a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum CellStatus {
    Ran(Box<RanCell>),
    Skipped { reason: String },
    Error { message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub spec: CellSpec,
    #[serde(flatten)]
    pub status: CellStatus,
}

/// Which end of the old connection the next step touches.
fn touched(next: NextStep) -> Side {
    match next {
        NextStep::RestartListener => Side::Server,
        _ => Side::Client,
    }
}

/// The touched end's descriptor stays open for the whole cell (the step
/// comes at once and that end did not close first): a failure there never
/// clears by waiting, so `--until-free` does not wait for it.
pub fn held_by_open_descriptor(x: &Experiment) -> bool {
    model::fd_open(x, touched(x.next))
}

/// Predict and compare for a finished run.
/// A cell's result from the checked run: the Linux prediction and its
/// verdict come from [`crate::check`] (computed once, from the view that
/// decided); the Windows and BSD columns are added here from the same view.
fn judge(c: Checked, kernel: KernelFacts) -> RanCell {
    let facts = CellFacts {
        experiment: &c.report.experiment,
        view: &c.view,
        client_addr: c.report.client_addr,
        kernel: &kernel,
    };
    let windows = model::predict_windows(&facts);
    let bsd = model::predict_bsd(&facts);
    RanCell {
        report: c.report,
        view: c.view,
        kernel,
        predicted: c.prediction,
        windows,
        bsd,
        matches: c.agrees,
        runs: c.runs,
        raced: c.raced,
        until_free: None,
    }
}

/// Run one cell on the calling thread (already in its namespace, or in the
/// host namespace when `host` is set).
fn run_cell(spec: &CellSpec, fresh_ns: bool, host: Option<&HostSysctls>) -> CellStatus {
    if let Some(h) = host {
        // Host fallback: only cells whose sysctls equal the host's.
        let host_value = |n: &str| match n {
            TS => Some(h.timestamps.clone()),
            TW_REUSE => Some(h.tw_reuse.clone()),
            TW_DELAY => h.tw_reuse_delay.clone(),
            RANGE => Some(h.port_range.clone()),
            MAX_TW => Some(h.max_tw_buckets.clone()),
            FIN_TIMEOUT => h.fin_timeout.clone(),
            _ => None,
        };
        for s in &spec.sysctls {
            let norm = |v: &str| v.split_whitespace().collect::<Vec<_>>().join(" ");
            if host_value(&s.name).map(|v| norm(&v)) != Some(norm(&s.value)) {
                return CellStatus::Skipped {
                    reason: format!(
                        "needs {}={} but runs in the host namespace (no namespaces available)",
                        s.name, s.value
                    ),
                };
            }
        }
    }
    if fresh_ns && let Err(e) = enter_cell_netns(&spec.sysctls) {
        return CellStatus::Error {
            message: e.to_string(),
        };
    }
    let kernel = match KernelFacts::read_current() {
        Ok(k) => k,
        Err(e) => {
            return CellStatus::Error {
                message: e.to_string(),
            };
        }
    };
    match checked_run(&spec.experiment, &kernel, &spec.sysctls, fresh_ns) {
        Ok(c) => CellStatus::Ran(Box::new(c)),
        Err(e) => CellStatus::Error {
            message: e.to_string(),
        },
    }
}

/// A cell's own namespace: fresh, `lo` up, the cell's sysctls, and a TCP
/// established hash of its own, so that each of the cell's sock_diag dumps
/// walks a few hundred buckets instead of the host's whole table (7× faster
/// cells; see `netns::enter_fresh_private_ehash`). A cell holds a handful of
/// sockets, and its tcp_max_tw_buckets is always set explicitly.
fn enter_cell_netns(sysctls: &[Sysctl]) -> Result<()> {
    netns::enter_fresh_private_ehash(sysctls, 256)
}

/// `--until-free` phase: run a blocked cell again, in a fresh namespace,
/// retrying the step until it succeeds; only the timing is kept (the
/// prediction was checked in the first phase, on a calmer machine: hundreds
/// of concurrently waiting cells would race with the FIN_WAIT1 → FIN_WAIT2
/// transition).
fn measure_until_free(spec: &CellSpec, fresh_ns: bool) -> std::result::Result<FreeTiming, String> {
    if fresh_ns {
        enter_cell_netns(&spec.sysctls).map_err(|e| e.to_string())?;
    }
    let mut x = spec.experiment.clone();
    x.until_free = Some(UNTIL_FREE_LIMIT);
    let r = scenario::run(&x).map_err(|e| e.to_string())?;
    Ok(match r.until_free {
        Some(u) => match u.freed_after_ms {
            Some(ms) => FreeTiming::FreedAfterMs(ms),
            None => FreeTiming::NotWithin {
                secs: UNTIL_FREE_LIMIT.as_secs(),
            },
        },
        None => FreeTiming::OkOnRerun,
    })
}

/// How many times a cell whose old connection was in a transient state
/// (FIN_WAIT1 waiting for a delayed ACK, LAST_ACK, ...) may run: such a run
/// is not evidence either way (`check::run_checked`).
const MAX_RUNS: u32 = 3;

/// Run a cell, re-running it in a fresh namespace (bounded) when a race with
/// a transient state spoiled it; stable-state mismatches are never retried.
fn checked_run(
    x: &Experiment,
    kernel: &KernelFacts,
    sysctls: &[Sysctl],
    fresh_ns: bool,
) -> Result<RanCell> {
    // In the host namespace a re-run would meet the first run's sockets.
    let max_runs = if fresh_ns { MAX_RUNS } else { 1 };
    let c = crate::check::run_checked(x, kernel, max_runs, || enter_cell_netns(sysctls))?;
    let mut r = judge(c, kernel.clone());
    r.raced &= fresh_ns;
    Ok(r)
}

/// Run `work` for each item on `jobs` worker threads, calling `done` as
/// each finishes.
fn run_pool<I: Sync, T>(
    items: &[I],
    jobs: usize,
    work: &(dyn Fn(&I) -> T + Sync),
    done: &(dyn Fn(usize, T) + Sync),
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let jobs = jobs.clamp(1, items.len().max(1));
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for i in 0..jobs {
            let h = std::thread::Builder::new()
                .name(format!("twlab-cell-{i}"))
                // Cells use little stack; keep hundreds of waiting
                // --until-free threads cheap.
                .stack_size(256 * 1024)
                .spawn_scoped(s, || {
                    loop {
                        if crate::interrupted() {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(item) = items.get(i) else { break };
                        done(i, work(item));
                    }
                })
                .map_err(|e| Error::Netns(format!("spawn worker: {e}")))?;
            handles.push(h);
        }
        for h in handles {
            h.join()
                .map_err(|_| Error::Netns("a cell worker panicked".into()))?;
        }
        Ok(())
    })?;
    if crate::interrupted() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// Run cells in the calling thread's process: first every cell, checked
/// against the model (`jobs` at once); then, with `until_free`, the cells
/// whose step failed are re-run all at once to time how long they stay
/// blocked, so the whole run takes about one TIME_WAIT period.
fn run_cells(
    cells: &[CellSpec],
    jobs: usize,
    until_free: bool,
    fresh_ns: bool,
    host: Option<&HostSysctls>,
    done: &(dyn Fn(CellResult) + Sync),
) -> Result<()> {
    let held: Mutex<Vec<CellResult>> = Mutex::new(Vec::new());
    // Cells that wait `after-<N>ms` spend that time asleep, not on a CPU: a
    // pool of `jobs` would make N ms of waiting cost N ms per `jobs` cells.
    // They run after the others, in a pool as wide as they are many (at
    // most MAX_SLEEPERS threads), so the waiting costs about N ms in all.
    let (sleepers, busy): (Vec<usize>, Vec<usize>) = (0..cells.len())
        .partition(|&i| matches!(cells[i].experiment.when, When::AfterMs(ms) if ms >= 50));
    let sleepers_width = sleepers.len().clamp(jobs, MAX_SLEEPERS.max(jobs));
    for (group, width) in [(busy, jobs), (sleepers, sleepers_width)] {
        run_pool(
            &group,
            width,
            &|&i| run_cell(&cells[i], fresh_ns, host),
            &|k, status| {
                let r = CellResult {
                    spec: cells[group[k]].clone(),
                    status,
                };
                let blocked = matches!(&r.status, CellStatus::Ran(c) if !c.report.outcome.is_ok());
                if until_free && blocked {
                    held.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                } else {
                    done(r);
                }
            },
        )?;
    }
    let mut held = held.into_inner().unwrap_or_else(|p| p.into_inner());
    let (open, wait): (Vec<_>, Vec<_>) = held
        .drain(..)
        .partition(|r| held_by_open_descriptor(&r.spec.experiment));
    for mut r in open {
        if let CellStatus::Ran(c) = &mut r.status {
            c.until_free = Some(FreeTiming::HeldByOpenSocket);
        }
        done(r);
    }
    let waiting: Vec<Mutex<Option<CellResult>>> =
        wait.into_iter().map(|r| Mutex::new(Some(r))).collect();
    run_pool(
        &waiting,
        waiting.len(),
        &|slot| {
            let spec = slot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|r| r.spec.clone());
            match spec {
                Some(spec) => measure_until_free(&spec, fresh_ns).unwrap_or_else(FreeTiming::Error),
                None => FreeTiming::Error("cell lost".into()),
            }
        },
        &|i, timing| {
            if let Some(mut r) = waiting[i].lock().unwrap_or_else(|p| p.into_inner()).take() {
                if let CellStatus::Ran(c) = &mut r.status {
                    c.until_free = Some(timing);
                }
                done(r);
            }
        },
    )
}

/// Default for `--jobs`: cells mostly wait on the kernel (sock_diag polls),
/// not on the CPU, so a few per core. (The `--until-free` phase runs every
/// blocked cell at once regardless.)
fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    cores * 4
}

/// Decide how to isolate cells.
pub fn choose_isolation(force_host: bool) -> Isolation {
    if force_host {
        return Isolation::Host {
            why: "--host-netns given".into(),
        };
    }
    match netns::can_unshare() {
        Ok(()) => Isolation::Netns,
        Err(why) => match userns_probe() {
            Ok(()) => Isolation::UserNs,
            Err(why2) => Isolation::Host {
                why: format!(
                    "cannot create network namespaces ({why}) nor user namespaces ({why2})"
                ),
            },
        },
    }
}

/// Can an unprivileged child make a user+network namespace? Probed with a
/// forked child (unshare(CLONE_NEWUSER) needs a single-threaded process).
fn userns_probe() -> std::result::Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(["matrix", "--internal-worker"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            // An empty cell list: the worker only sets up its namespaces.
            if let Some(mut i) = c.stdin.take() {
                let _ = i.write_all(b"[]");
            }
            c.wait_with_output()
        })
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The hidden worker: enter a user + network namespace while still
/// single-threaded, map our uid to root there, then run the cells from
/// stdin, one JSON line per result on stdout.
pub fn internal_worker(args: &MatrixArgs) -> Result<u8> {
    let entered = USERNS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(|| Err("the worker did not unshare before threads started".into()));
    entered.map_err(Error::Netns)?;
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .map_err(|e| Error::Invalid(format!("reading cells: {e}")))?;
    let cells: Vec<CellSpec> =
        serde_json::from_str(&input).map_err(|e| Error::Invalid(format!("bad cell list: {e}")))?;
    if cells.is_empty() {
        return Ok(0);
    }
    let jobs = args.jobs.unwrap_or_else(default_jobs);
    let out = Mutex::new(std::io::stdout());
    run_cells(&cells, jobs, args.until_free, true, None, &|r| {
        if let Ok(line) = serde_json::to_string(&r) {
            let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        }
    })?;
    Ok(0)
}

/// The result of the worker's early unshare (see [`before_threads`]).
static USERNS: Mutex<Option<std::result::Result<(), String>>> = Mutex::new(None);

/// Called by main before anything starts a thread (the Ctrl-C handler does):
/// the hidden worker enters its user + network namespace here, because
/// unshare(CLONE_NEWUSER) fails with EINVAL in a multi-threaded process.
pub fn before_threads(args: &MatrixArgs) {
    if args.internal_worker {
        let r = enter_userns().map_err(|e| e.to_string());
        *USERNS.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }
}

#[cfg(target_os = "linux")]
fn enter_userns() -> Result<()> {
    use nix::sched::{CloneFlags, unshare};
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).map_err(|e| {
        Error::Netns(format!(
            "unshare(CLONE_NEWUSER|CLONE_NEWNET) failed: {} ({}); user namespaces are disabled here (see /proc/sys/user/max_user_namespaces)",
            crate::sys::errno_name(e as i32),
            e as i32
        ))
    })?;
    let w = |path: &str, s: String| {
        std::fs::write(path, s).map_err(|e| Error::Netns(format!("{path}: {e}")))
    };
    w("/proc/self/setgroups", "deny".into())?;
    w("/proc/self/uid_map", format!("0 {uid} 1"))?;
    w("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn enter_userns() -> Result<()> {
    Err(Error::Unsupported {
        os: crate::sys::OS_NAME,
        what: "user namespaces are a Linux feature".into(),
    })
}

/// Run cells in a re-executed worker, reading results as they come.
fn run_via_worker(cells: &[CellSpec], args: &MatrixArgs, done: &dyn Fn(CellResult)) -> Result<()> {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().map_err(|e| Error::Netns(format!("current_exe: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(["matrix", "--internal-worker"]);
    if args.until_free {
        cmd.arg("--until-free");
    }
    if let Some(j) = args.jobs {
        cmd.args(["--jobs", &j.to_string()]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Netns(format!("starting the namespace worker: {e}")))?;
    let input = serde_json::to_vec(cells).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.map_err(|e| Error::Netns(format!("reading the worker: {e}")))?;
        let r: CellResult = serde_json::from_str(&line)
            .map_err(|e| Error::Netns(format!("bad worker output: {e}")))?;
        done(r);
    }
    let _ = writer.join();
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Netns(format!("waiting for the worker: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Netns(format!(
            "the namespace worker failed: {}",
            err.lines().last().unwrap_or("no message")
        )));
    }
    Ok(())
}

/// Everything a `matrix` run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixRun {
    pub kernel_release: String,
    /// The host's reuse sysctls (the cells' defaults), for bug reports.
    #[serde(default)]
    pub host_sysctls: Vec<Sysctl>,
    pub isolation: String,
    pub cells: Vec<CellResult>,
    pub elapsed_ms: u64,
}

impl MatrixRun {
    pub fn ran(&self) -> impl Iterator<Item = (&CellSpec, &RanCell)> {
        self.cells.iter().filter_map(|c| match &c.status {
            CellStatus::Ran(r) => Some((&c.spec, r.as_ref())),
            _ => None,
        })
    }
    /// Cells whose observation differs from the prediction (borderline
    /// timing cells are listed but do not count).
    pub fn mismatches(&self) -> Vec<(&CellSpec, &RanCell)> {
        self.ran()
            .filter(|(_, r)| !r.matches && !r.predicted.borderline && !r.raced)
            .collect()
    }
}

/// Run the cells of `args` and return everything (no printing).
pub fn execute(args: &MatrixArgs, progress: bool) -> Result<MatrixRun> {
    let sel = Selection::parse(&args.factors)?;
    let host = HostSysctls::read()?;
    let iso = choose_isolation(args.host_netns);
    let isolated = !matches!(iso, Isolation::Host { .. });
    let cells = build_cells(&sel, &host, isolated)?;
    if cells.is_empty() {
        return Err(Error::Invalid("the factors select no cells".into()));
    }
    let t0 = Instant::now();
    let bar = if progress {
        indicatif::ProgressBar::with_draw_target(
            Some(cells.len() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} cells {wide_bar} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let results = Mutex::new(Vec::with_capacity(cells.len()));
    let done = |r: CellResult| {
        bar.inc(1);
        results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
    };
    let jobs = args.jobs.unwrap_or_else(default_jobs);
    match &iso {
        Isolation::Netns => run_cells(&cells, jobs, args.until_free, true, None, &done)?,
        Isolation::UserNs => run_via_worker(&cells, args, &done)?,
        Isolation::Host { .. } => {
            run_cells(&cells, jobs, args.until_free, false, Some(&host), &done)?
        }
    }
    bar.finish_and_clear();
    let mut cells = results.into_inner().unwrap_or_else(|p| p.into_inner());
    cells.sort_by_key(|c| c.spec.id);
    Ok(MatrixRun {
        kernel_release: model::kernel_release(),
        host_sysctls: crate::sysctl::reuse_sysctls()
            .into_iter()
            .filter_map(|(n, v)| v.map(|v| Sysctl::new(n, v)))
            .collect(),
        isolation: match iso {
            Isolation::Netns => "one fresh network namespace per cell".into(),
            Isolation::UserNs => {
                "one fresh network namespace per cell, inside an unprivileged user namespace".into()
            }
            Isolation::Host { why } => format!(
                "HOST NAMESPACE: {why}; cells ran on free ports with the host's sysctls, cells needing other sysctls were skipped"
            ),
        },
        cells,
        elapsed_ms: t0.elapsed().as_millis() as u64,
    })
}

/// The CLI entry point: returns the exit code.
pub fn run(args: &MatrixArgs) -> Result<u8> {
    if args.internal_worker {
        return internal_worker(args);
    }
    if args.list_factors {
        println!("{}", list_factors());
        return Ok(0);
    }
    crate::install_interrupt_handler();
    let tty = std::io::stderr().is_terminal();
    let run = execute(args, tty)?;
    let color = std::io::stdout().is_terminal() && args.format == Format::Table;
    let text = match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&run).map_err(|e| Error::Invalid(e.to_string()))?
        }
        Format::Csv => render_csv(&run),
        Format::Md => render_md(&run),
        Format::Table => render_table(&run, color),
    };
    println!("{text}");
    Ok(exit_code(&run))
}

/// 3 if any cell's observation differs from the prediction, else 1 if a
/// cell could not run, else 0.
pub fn exit_code(run: &MatrixRun) -> u8 {
    let errors = run
        .cells
        .iter()
        .filter(|c| matches!(c.status, CellStatus::Error { .. }))
        .count();
    if !run.mismatches().is_empty() {
        3
    } else if errors > 0 {
        1
    } else {
        0
    }
}

fn opt_label(o: SocketOpts) -> String {
    match (o.reuseaddr, o.reuseport) {
        (false, false) => "-".into(),
        (true, false) => "RA".into(),
        (false, true) => "RP".into(),
        (true, true) => "RA+RP".into(),
    }
}

/// "old→new" socket options of the side the step touches.
fn opts_cell(x: &Experiment) -> String {
    let old = match x.next {
        NextStep::RestartListener => x.listener,
        _ => x.client,
    };
    let mut s = format!("{}→{}", opt_label(old), opt_label(x.new_opts));
    // Show the untouched side only when it is set.
    let other = match x.next {
        NextStep::RestartListener => x.client,
        _ => x.listener,
    };
    if other != SocketOpts::default() {
        s.push_str(&format!(" (other {})", opt_label(other)));
    }
    s
}

fn view_cell(v: &TupleView) -> String {
    let side = |e: &Option<crate::diag::SockEntry>| match e {
        Some(e) => {
            let mini = e.timer.map(|t| t.kind) == Some(crate::diag::TimerKind::Timewait)
                && e.state != crate::diag::TcpState::TimeWait;
            format!("{}{}", e.state, if mini { "(tw)" } else { "" })
        }
        None => "gone".into(),
    };
    format!("{} / {}", side(&v.client), side(&v.server))
}

fn outcome_cell(o: &Outcome) -> String {
    o.short()
}

/// The columns of one row, shared by every format.
fn row(spec: &CellSpec, status: &CellStatus, with_free: bool) -> Vec<String> {
    let x = &spec.experiment;
    let mut r = vec![
        spec.id.to_string(),
        x.next.name().into(),
        x.close.name().into(),
        x.when.name(),
        spec.port_kind.name().into(),
        match x.family {
            Family::V4 => "v4".into(),
            Family::V6 => "v6".into(),
        },
        opts_cell(x),
        spec.sysctl_label.clone(),
    ];
    match status {
        CellStatus::Ran(c) => {
            r.push(outcome_cell(&c.predicted.outcome));
            r.push(format!(
                "{}{}",
                outcome_cell(&c.report.outcome),
                if c.matches {
                    ""
                } else if c.predicted.borderline {
                    " (≠, borderline)"
                } else if c.raced {
                    " (≠, raced a transient state)"
                } else {
                    " ✗ MISMATCH"
                }
            ));
            r.push(view_cell(&c.view));
            if with_free {
                r.push(match &c.until_free {
                    Some(t) => t.label(),
                    None => "-".into(),
                });
            }
            r.push(c.windows.outcome.short());
            r.push(c.bsd.outcome.short());
            r.push(c.predicted.rule.name().into());
        }
        CellStatus::Skipped { reason } => {
            r.push("skipped".into());
            r.push(reason.clone());
            r.push(String::new());
            if with_free {
                r.push(String::new());
            }
            r.extend([String::new(), String::new(), String::new()]);
        }
        CellStatus::Error { message } => {
            r.push("error".into());
            r.push(message.clone());
            r.push(String::new());
            if with_free {
                r.push(String::new());
            }
            r.extend([String::new(), String::new(), String::new()]);
        }
    }
    r
}

fn header(with_free: bool) -> Vec<&'static str> {
    let mut h = vec![
        "#",
        "next",
        "close",
        "when",
        "client port",
        "fam",
        "opts old→new",
        "sysctls",
        "predicted (Linux)",
        "observed",
        "old 4-tuple client / server",
    ];
    if with_free {
        h.push("freed after");
    }
    h.extend([
        "Windows (documented, not run)",
        "BSD/macOS (documented, not run)",
        "rule",
    ]);
    h
}

fn with_free(run: &MatrixRun) -> bool {
    run.ran().any(|(_, c)| c.until_free.is_some())
}

fn summary(run: &MatrixRun) -> String {
    let ran = run.ran().count();
    let skipped = run
        .cells
        .iter()
        .filter(|c| matches!(c.status, CellStatus::Skipped { .. }))
        .count();
    let errors = run
        .cells
        .iter()
        .filter(|c| matches!(c.status, CellStatus::Error { .. }))
        .count();
    let mism = run.mismatches().len();
    let border = run
        .ran()
        .filter(|(_, r)| !r.matches && (r.predicted.borderline || r.raced))
        .count();
    format!(
        "{} cells: {ran} ran, {skipped} skipped, {errors} errors; {mism} mismatches{}; {:.2} s on kernel {}",
        run.cells.len(),
        if border > 0 {
            format!(" (+{border} borderline timing or raced)")
        } else {
            String::new()
        },
        run.elapsed_ms as f64 / 1000.0,
        run.kernel_release
    )
}

fn mismatch_text(run: &MatrixRun) -> String {
    let mut s = String::new();
    for (spec, c) in run.mismatches() {
        s.push_str(&format!(
            "MISMATCH cell {}: {} {} {} {} {} opts {} [{}]: predicted {}, observed {} (old 4-tuple {}); model said: {}\n",
            spec.id,
            spec.experiment.next.name(),
            spec.experiment.close.name(),
            spec.experiment.when.name(),
            spec.port_kind.name(),
            spec.experiment.family.name(),
            opts_cell(&spec.experiment),
            spec.sysctl_label,
            c.predicted.outcome.short(),
            c.report.outcome.short(),
            &c.view.describe(),
            c.predicted.explanation
        ));
    }
    for c in &run.cells {
        if let CellStatus::Error { message } = &c.status {
            s.push_str(&format!("ERROR cell {}: {message}\n", c.spec.id));
        }
    }
    s
}

/// The rules that decided the cells, once each, with their explanation.
fn rules_text(run: &MatrixRun) -> String {
    let mut seen = std::collections::BTreeMap::new();
    for (_, c) in run.ran() {
        seen.entry(c.predicted.rule.name())
            .or_insert_with(|| match &c.predicted.version_note {
                Some(v) => format!("{} [version: {v}]", c.predicted.explanation),
                None => c.predicted.explanation.clone(),
            });
    }
    seen.into_iter()
        .map(|(k, v)| format!("- {k}: {v}\n"))
        .collect()
}

pub fn render_table(run: &MatrixRun, color: bool) -> String {
    use comfy_table::{Cell, Color, Table};
    let wf = with_free(run);
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(header(wf));
    let mut last_group = None;
    for c in &run.cells {
        let group = (c.spec.experiment.next, c.spec.experiment.close);
        if last_group.is_some() && last_group != Some(group) {
            // A visual break between factor groups (next × close).
            t.add_row(vec![""; header(wf).len()]);
        }
        last_group = Some(group);
        let cells = row(&c.spec, &c.status, wf);
        let bad = matches!(&c.status, CellStatus::Ran(r) if !r.matches)
            || matches!(c.status, CellStatus::Error { .. });
        let row: Vec<Cell> = cells
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let mut cell = Cell::new(s);
                if color && i == 9 {
                    cell = cell.fg(if bad { Color::Red } else { Color::Green });
                }
                cell
            })
            .collect();
        t.add_row(row);
    }
    let mut s = format!("isolation: {}\n", run.isolation);
    s.push_str(&t.to_string());
    s.push('\n');
    s.push_str(&summary(run));
    s.push('\n');
    let m = mismatch_text(run);
    if !m.is_empty() {
        s.push_str(&m);
    }
    s.push_str("rules:\n");
    s.push_str(&rules_text(run));
    s
}

/// Markdown for a bug report: environment, table, mismatches, rules.
pub fn render_md(run: &MatrixRun) -> String {
    let wf = with_free(run);
    let esc = |s: &str| s.replace('|', "\\|");
    let mut s = format!(
        "### twlab matrix\n\n- kernel: `{}`\n- host sysctls (cell defaults): {}\n- isolation: {}\n- {}\n\n",
        run.kernel_release,
        run.host_sysctls
            .iter()
            .map(|s| format!("`{}={}`", s.name, s.value))
            .collect::<Vec<_>>()
            .join(", "),
        run.isolation,
        summary(run)
    );
    let h = header(wf);
    s.push_str(&format!("| {} |\n", h.join(" | ")));
    s.push_str(&format!("|{}\n", "---|".repeat(h.len())));
    for c in &run.cells {
        let r = row(&c.spec, &c.status, wf);
        s.push_str(&format!(
            "| {} |\n",
            r.iter().map(|x| esc(x)).collect::<Vec<_>>().join(" | ")
        ));
    }
    let m = mismatch_text(run);
    if !m.is_empty() {
        s.push_str("\n**Mismatches**\n\n```\n");
        s.push_str(&m);
        s.push_str("```\n");
    }
    s.push_str("\n**Rules**\n\n");
    s.push_str(&rules_text(run));
    s
}

pub fn render_csv(run: &MatrixRun) -> String {
    let wf = with_free(run);
    let q = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut s = header(wf)
        .iter()
        .map(|h| q(h))
        .collect::<Vec<_>>()
        .join(",");
    s.push('\n');
    for c in &run.cells {
        s.push_str(
            &row(&c.spec, &c.status, wf)
                .iter()
                .map(|x| q(x))
                .collect::<Vec<_>>()
                .join(","),
        );
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostSysctls {
        HostSysctls {
            timestamps: "1".into(),
            tw_reuse: "2".into(),
            tw_reuse_delay: Some("1000".into()),
            port_range: "32768 60999".into(),
            max_tw_buckets: "131072".into(),
            fin_timeout: Some("60".into()),
        }
    }

    #[test]
    fn default_matrix_size_follows_the_documented_pruning() {
        let cells = build_cells(&Selection::default(), &host(), true).unwrap();
        // reconnect: fixed 10×2 (close×when × fam) × 5 opts × 6 sysctls,
        // kernel-chosen 2 kinds × 10×2 × 1 × 6; rebind: 10×3×2 × 5;
        // restart-listener: 10×1×2 × 5.
        // when: 3 values for FIN closes, 2 for RST closes → 10 close×when.
        let want = 20 * 5 * 6 + 2 * 20 * 6 + 60 * 5 + 20 * 5;
        assert_eq!(cells.len(), want);
        assert!(cells.iter().enumerate().all(|(i, c)| c.id == i));
    }

    #[test]
    fn factors_parse_and_reject() {
        let s =
            Selection::parse(&["when=at-once,after-250ms".into(), "close=client".into()]).unwrap();
        assert_eq!(s.when, Some(vec![When::AtOnce, When::AfterMs(250)]));
        let e = Selection::parse(&["colse=client".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown factor 'colse'") && e.contains("close, when, next"),
            "{e}"
        );
        let e = Selection::parse(&["close=clinet".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown value 'clinet'") && e.contains("client-rst"),
            "{e}"
        );
        assert!(Selection::parse(&["tcp-tw-reuse=3".into()]).is_err());
        assert!(Selection::parse(&["close".into()]).is_err());
    }

    #[test]
    fn missing_delay_sysctl_is_a_clear_error() {
        let mut h = host();
        h.tw_reuse_delay = None;
        let s = Selection::parse(&["tcp-tw-reuse-delay=1".into()]).unwrap();
        let e = build_cells(&s, &h, true).unwrap_err().to_string();
        assert!(
            e.contains("this kernel") && e.contains("has no net.ipv4.tcp_tw_reuse_delay"),
            "{e}"
        );
    }

    #[test]
    fn port_range_one_uses_the_cells_client_port() {
        let s = Selection::parse(&[
            "port-range=one".into(),
            "next=reconnect".into(),
            "client-port=ephemeral,fixed".into(),
        ])
        .unwrap();
        let cells = build_cells(&s, &host(), true).unwrap();
        for c in cells {
            let r = c.sysctls.iter().find(|s| s.name == RANGE).unwrap();
            let p = if c.port_kind == ClientPortKind::Fixed {
                CLIENT_PORT
            } else {
                ONE_PORT
            };
            assert_eq!(r.value, format!("{p} {p}"));
        }
    }

    /// A cell whose observation differs from the prediction is loud: listed
    /// under the table, and exit code 3.
    #[test]
    fn a_mismatch_is_loud_and_exits_3() {
        let spec = build_cells(
            &Selection::parse(&[
                "next=rebind".into(),
                "close=client".into(),
                "when=after-peer".into(),
                "family=ipv4".into(),
                "client-port=fixed".into(),
                "old-client-reuseaddr=off".into(),
                "new-reuseaddr=off".into(),
            ])
            .unwrap(),
            &host(),
            true,
        )
        .unwrap()
        .remove(0);
        let addr = |s: &str| s.parse().unwrap();
        let report = Report {
            experiment: spec.experiment.clone(),
            client_addr: addr("127.0.0.1:23456"),
            server_addr: addr("127.0.0.1:12345"),
            before: TupleView {
                client: None,
                server: None,
            },
            // Nothing holds the port, so the model says ok; pretend the
            // kernel said otherwise.
            outcome: Outcome::Failed {
                step: crate::outcome::Step::Bind,
                error: crate::outcome::SysError::from_code(libc::EADDRINUSE),
            },
            at_failure: None,
            new_local: None,
            until_free: None,
            steps: Vec::new(),
            elapsed_us: 0,
        };
        let kernel = KernelFacts {
            release: "test".into(),
            timestamps: true,
            tw_reuse: model::TwReuse::LoopbackOnly,
            tw_reuse_delay_ms: Some(1000),
            port_range: model::PortRange {
                low: 32768,
                high: 60999,
            },
            max_tw_buckets: 1,
        };
        let view = report.before.clone();
        let prediction = model::predict_linux(&CellFacts {
            experiment: &report.experiment,
            view: &view,
            client_addr: report.client_addr,
            kernel: &kernel,
        });
        let agrees = model::same_outcome(&prediction.outcome, &report.outcome);
        let verdict = crate::check::Verdict {
            agrees,
            runs: 1,
            raced: false,
        };
        let checked = Checked::new(report, view, prediction, verdict, &kernel);
        let cell = judge(checked, kernel);
        assert!(!cell.matches);
        let run = MatrixRun {
            kernel_release: "test".into(),
            host_sysctls: Vec::new(),
            isolation: "test".into(),
            cells: vec![CellResult {
                spec,
                status: CellStatus::Ran(Box::new(cell)),
            }],
            elapsed_ms: 0,
        };
        assert_eq!(run.mismatches().len(), 1);
        assert_eq!(exit_code(&run), 3);
        let t = render_table(&run, false);
        assert!(
            t.contains("MISMATCH cell 0") && t.contains("predicted ok, observed bind: EADDRINUSE"),
            "{t}"
        );
        assert!(render_md(&run).contains("**Mismatches**"));
    }

    #[test]
    fn open_descriptor_holders() {
        let c = build_cells(
            &Selection::parse(&[
                "next=reconnect".into(),
                "close=server".into(),
                "when=at-once".into(),
            ])
            .unwrap(),
            &host(),
            true,
        )
        .unwrap();
        assert!(c.iter().all(|c| held_by_open_descriptor(&c.experiment)));
        let c = build_cells(
            &Selection::parse(&["next=reconnect".into(), "close=client".into()]).unwrap(),
            &host(),
            true,
        )
        .unwrap();
        assert!(c.iter().all(|c| !held_by_open_descriptor(&c.experiment)));
    }
}
