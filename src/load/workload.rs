//! What `twlab load` runs: the workload and where, as typed data.

use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use crate::experiment::Side;
use crate::sysctl::{PortRange, Sysctl, TwReuse};

/// How the client gets its local port. Written tagged with `kind`
/// (`{"kind": "socket-range", "low": 40000, "high": 40999}`), as every
/// tagged value in twlab's JSON, not with serde's external tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "PortChoiceOut")]
pub enum PortChoice {
    /// No bind: connect() picks source address and port per 4-tuple.
    Kernel,
    /// bind(source, 0): bind() picks a port free for *every* destination.
    Bind,
    /// bind(source, 0) with `IP_BIND_ADDRESS_NO_PORT`: the address is fixed,
    /// connect() picks the port per 4-tuple.
    BindNoPort,
    /// No bind, the socket's own `IP_LOCAL_PORT_RANGE` (Linux 6.3+).
    SocketRange(PortRange),
}

/// [`PortChoice`] as it is written.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum PortChoiceOut {
    /// No bind: connect() picks source address and port per 4-tuple.
    Kernel,
    /// bind(source, 0): bind() picks a port free for every destination.
    Bind,
    /// bind(source, 0) with `IP_BIND_ADDRESS_NO_PORT`.
    BindNoPort,
    /// No bind, the socket's own `IP_LOCAL_PORT_RANGE`.
    SocketRange {
        /// First port of the range.
        low: u16,
        /// Last port of the range (inclusive).
        high: u16,
    },
}

impl From<PortChoice> for PortChoiceOut {
    fn from(p: PortChoice) -> Self {
        match p {
            PortChoice::Kernel => PortChoiceOut::Kernel,
            PortChoice::Bind => PortChoiceOut::Bind,
            PortChoice::BindNoPort => PortChoiceOut::BindNoPort,
            PortChoice::SocketRange(r) => PortChoiceOut::SocketRange {
                low: r.low,
                high: r.high,
            },
        }
    }
}

impl schemars::JsonSchema for PortChoice {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PortChoice".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        PortChoiceOut::json_schema(generator)
    }
}

/// What each connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Mode {
    /// Use connections and close them (or keep up to `pool` idle per worker).
    Churn {
        /// Connections in use at once per worker, in each round.
        concurrency: u32,
        /// Idle keep-alive connections kept per worker between rounds; the
        /// extras are closed (a pool smaller than the concurrency churns).
        pool: u32,
        /// One-byte request/response exchanges per use of a connection.
        requests: u32,
    },
    /// Open connections and keep them open until the run ends.
    Held {
        /// How many to open in all.
        connections: u32,
    },
}

/// How fast. In JSON tagged with `kind`, as [`Mode`] is: `{"kind":
/// "max"}` or `{"kind": "per-second", "value": 100.0}` (not serde's
/// `{"per-second": 100.0}`, a Rust shape docs/json.md rules out).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(into = "RateJson")]
pub enum Rate {
    /// A closed loop: the next use starts when the last one ended.
    Max,
    /// Connection uses per second over all workers (paced per worker).
    PerSecond(f64),
}

/// [`Rate`] as JSON writes it.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
#[schemars(rename = "Rate")]
enum RateJson {
    /// A closed loop: the next use starts when the last one ended.
    Max,
    /// Connection uses per second over all workers (paced per worker).
    PerSecond {
        /// Uses per second.
        value: f64,
    },
}

impl From<Rate> for RateJson {
    fn from(r: Rate) -> Self {
        match r {
            Rate::Max => RateJson::Max,
            Rate::PerSecond(value) => RateJson::PerSecond { value },
        }
    }
}

/// When the run stops (whichever comes first; Ctrl-C always stops it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Stop {
    /// Wall-clock bound (in JSON `duration_ms`).
    #[serde(rename = "duration_ms", serialize_with = "crate::json::millis")]
    #[schemars(schema_with = "crate::json::schema_of::millis")]
    pub duration: Duration,
    /// Connection uses (churn) or connections (held) over all workers.
    pub count: Option<u64>,
    /// Stop at the first error of any kind.
    pub on_first_error: bool,
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// twlab's own server, in the same fresh namespace as the clients,
    /// listening on every destination.
    InProcess,
    /// A server already listening on every destination, in the caller's
    /// namespace (loopback), e.g. `loop server`.
    External,
}

/// The namespace settings of a run in its own namespace.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct NsSettings {
    /// `ip_local_port_range`.
    pub port_range: PortRange,
    /// `ip_local_reserved_ports` text ("" for none).
    pub reserved_ports: String,
    /// `tcp_tw_reuse`.
    pub tw_reuse: TwReuse,
    /// `tcp_tw_reuse_delay` in ms (Linux 6.14+; `None`: leave it).
    pub tw_reuse_delay_ms: Option<u32>,
    /// `tcp_timestamps`.
    pub timestamps: bool,
    /// `tcp_max_tw_buckets` (`None`: leave it).
    pub max_tw_buckets: Option<u32>,
}

impl Default for NsSettings {
    fn default() -> Self {
        NsSettings {
            port_range: PortRange {
                low: 32768,
                high: 60999,
            },
            reserved_ports: String::new(),
            tw_reuse: TwReuse::LoopbackOnly,
            tw_reuse_delay_ms: None,
            timestamps: true,
            max_tw_buckets: None,
        }
    }
}

impl NsSettings {
    /// The sysctls to write in the fresh namespace. `tcp_rfc1337` = 1 so no
    /// stray RST ends a TIME_WAIT early (`tcp_timewait_state_process`).
    pub fn sysctls(&self) -> Vec<Sysctl> {
        use crate::sysctl::*;
        let r = self.port_range;
        let mut v = vec![
            Sysctl::new(PORT_RANGE, format!("{} {}", r.low, r.high)),
            Sysctl::new(RESERVED_PORTS, self.reserved_ports.clone()),
            Sysctl::new(TW_REUSE, self.tw_reuse.value().to_string()),
            Sysctl::new(TIMESTAMPS, if self.timestamps { "1" } else { "0" }),
            Sysctl::new(RFC1337, "1"),
        ];
        if let Some(d) = self.tw_reuse_delay_ms {
            v.push(Sysctl::new(TW_REUSE_DELAY, d.to_string()));
        }
        if let Some(m) = self.max_tw_buckets {
            v.push(Sysctl::new(MAX_TW_BUCKETS, m.to_string()));
        }
        v
    }
}

/// The client side of a workload.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Workload {
    /// Client threads.
    pub workers: u32,
    /// Churn or held.
    pub mode: Mode,
    /// Pace.
    pub rate: Rate,
    // Who sends the first FIN, so who keeps the TIME_WAIT: the client on
    // its port, or the server (the client's port is then free once its own
    // FIN is acknowledged). The side of the experiment's `Close`; its how
    // is `linger_zero`, which applies to the client's sockets whoever
    // closes first.
    /// Who closes first.
    pub closer: Side,
    /// SO_LINGER 0: close() sends an RST and leaves no TIME_WAIT.
    pub linger_zero: bool,
    /// Source addresses, used in turn (empty: the kernel's choice).
    pub sources: Vec<Ipv4Addr>,
    /// Destinations, used in turn.
    pub destinations: Vec<SocketAddrV4>,
    /// How the client picks its port.
    pub port_choice: PortChoice,
}

/// A whole run.
// Outside this crate: built with `Plan::new` (it may grow fields). Not in
// the doc comment, which is also the JSON Schema's description.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Plan {
    /// The clients.
    pub workload: Workload,
    /// When to stop.
    pub stop: Stop,
    /// Which server.
    pub target: Target,
    /// The fresh namespace's sysctls; `None`: run in the caller's namespace
    /// (with an external target).
    pub netns: Option<NsSettings>,
    /// Time between samples of the time series (in JSON `sample_every_ms`).
    #[serde(rename = "sample_every_ms", serialize_with = "crate::json::millis")]
    #[schemars(schema_with = "crate::json::schema_of::millis")]
    pub sample_every: Duration,
    /// Count free ports per destination at each sample (a sock_diag dump
    /// of the namespace: costs CPU when it holds many TIME_WAITs).
    pub count_free_ports: bool,
}

/// A plan that cannot run, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

impl Plan {
    /// `workload` against `target` until `stop`, in a fresh namespace with
    /// `netns` (`None`: the caller's), sampled every 250 ms with free
    /// ports counted, as `twlab load` does by default.
    pub fn new(workload: Workload, stop: Stop, target: Target, netns: Option<NsSettings>) -> Self {
        Plan {
            workload,
            stop,
            target,
            netns,
            sample_every: Duration::from_millis(250),
            count_free_ports: true,
        }
    }

    /// Check the plan's parts fit together.
    pub fn validate(&self) -> Result<(), PlanError> {
        let w = &self.workload;
        let bad = |s: &str| Err(PlanError(s.into()));
        if w.workers == 0 || w.destinations.is_empty() {
            return bad("need at least one worker and one destination");
        }
        if !w.sources.is_empty() && matches!(w.port_choice, PortChoice::Kernel) {
            return bad("--source needs --client-port bind, bind-no-port or range:LOW-HIGH");
        }
        if let Mode::Churn { concurrency: 0, .. } = w.mode {
            return bad("--concurrency must be at least 1");
        }
        if self.netns.is_none() && self.target == Target::InProcess {
            return bad("the in-process server runs in its own namespace only");
        }
        if self.stop.duration.is_zero() {
            return bad("--duration must be positive");
        }
        Ok(())
    }

    /// The source address of the `i`-th connection (`None`: unbound).
    pub(crate) fn source(&self, i: u64) -> Option<Ipv4Addr> {
        let s = &self.workload.sources;
        (!s.is_empty()).then(|| s[(i % s.len() as u64) as usize])
    }
}
