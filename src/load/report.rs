//! The predicted limit of a workload (from the namespace's sysctls and the
//! kernel's rules) and the end report beside it.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::stats::FirstExhaustion;
use super::workload::{Mode, Plan, PortChoice};
use crate::experiment::Side;
use crate::sysctl::{NetSysctls, PortRange};

/// `TCP_TIMEWAIT_LEN` (include/net/tcp.h): 60 s, not a sysctl.
pub const TIMEWAIT_LEN_S: f64 = 60.0;

/// What the rules say the workload can sustain.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Limit {
    /// New connections per second, once every port is in TIME_WAIT.
    Rate {
        /// Connections per second.
        per_s: f64,
        /// Connections before the first failure (a run shorter than one
        /// TIME_WAIT period).
        first_failure_after: u64,
        /// The rule, in words.
        rule: String,
    },
    /// Connections open at once.
    Held {
        /// The most connections.
        connections: u64,
        /// The rule, in words.
        rule: String,
    },
    /// Nothing runs out.
    Unbounded {
        /// Why.
        rule: String,
    },
}

/// Ports connect() may pick for the plan: the namespace's range (or the
/// socket's own `IP_LOCAL_PORT_RANGE` inside it) less the reserved ports.
pub fn usable_ports(plan: &Plan, s: &NetSysctls) -> u64 {
    let range = match plan.workload.port_choice {
        PortChoice::SocketRange(r) => PortRange {
            low: r.low.max(s.port_range.low),
            high: r.high.min(s.port_range.high),
        },
        _ => s.port_range,
    };
    (range.len() - s.reserved_ports.count_in(range)) as u64
}

/// How many (local address, port) → destination pairs exist: bind(ip, 0)
/// picks a port free for every destination (`inet_csk_find_open_port`),
/// the others pick per 4-tuple at connect() (`__inet_hash_connect`).
fn port_pairs(plan: &Plan, s: &NetSysctls) -> (u64, String) {
    let w = &plan.workload;
    let ports = usable_ports(plan, s);
    let src = w.sources.len().max(1) as u64;
    let dst = w.destinations.len() as u64;
    if w.port_choice == PortChoice::Bind {
        (
            ports * src,
            format!(
                "{ports} ports × {src} source address(es), shared by all destinations (bind(ip, 0))"
            ),
        )
    } else {
        (
            ports * src * dst,
            format!("{ports} ports × {src} source address(es) × {dst} destination(s)"),
        )
    }
}

/// Does `tcp_twsk_unique()` let connect() take over a TIME_WAIT's port?
/// It needs timestamps, and tcp_tw_reuse 1, or 2 with a loopback TIME_WAIT
/// (every destination here is 127/8). bind(ip, 0) never picks a port that
/// has a TIME_WAIT, so reuse does not help it.
fn tw_reuse_applies(plan: &Plan, s: &NetSysctls) -> bool {
    let loopback = plan
        .workload
        .destinations
        .iter()
        .all(|d| d.ip().is_loopback());
    s.timestamps
        && plan.workload.port_choice != PortChoice::Bind
        && crate::model::kernel::connect::tw_reuse_applies(s.tw_reuse, loopback)
}

/// The predicted limit of `plan` under the sysctls `s`.
pub fn predict(plan: &Plan, s: &NetSysctls) -> Limit {
    let w = &plan.workload;
    let (pairs, pairs_rule) = port_pairs(plan, s);
    let (pool, concurrency) = match w.mode {
        Mode::Held { .. } => {
            return Limit::Held {
                connections: pairs,
                rule: format!("held connections ≤ {pairs_rule} = {pairs}"),
            };
        }
        Mode::Churn {
            pool, concurrency, ..
        } => (pool, concurrency),
    };
    let unbounded = |rule: &str| Limit::Unbounded { rule: rule.into() };
    if pool >= concurrency {
        return unbounded("keep-alive pool ≥ concurrency: connections are reused, none is closed");
    }
    if w.linger_zero {
        return unbounded(
            "SO_LINGER 0: close() sends an RST and leaves no TIME_WAIT (at the cost of an abort)",
        );
    }
    if w.closer == Side::Server {
        return unbounded(
            "the server closes first: the TIME_WAIT is on the server's side, the client's port is free at once",
        );
    }
    if (s.max_tw_buckets as u64) < pairs {
        return unbounded(&format!(
            "tcp_max_tw_buckets = {} < {pairs} ports: extra TIME_WAITs are not kept (TCPTimeWaitOverflow)",
            s.max_tw_buckets
        ));
    }
    let (secs, why) = if tw_reuse_applies(plan, s) {
        let ms = crate::model::kernel::connect::tw_reuse_delay_ms(&s.into());
        (
            ms as f64 / 1000.0,
            format!(
                "tcp_tw_reuse_delay {ms} ms (tcp_tw_reuse {} with timestamps)",
                s.tw_reuse.value()
            ),
        )
    } else {
        (TIMEWAIT_LEN_S, "TCP_TIMEWAIT_LEN 60 s".to_string())
    };
    Limit::Rate {
        per_s: pairs as f64 / secs,
        first_failure_after: pairs,
        rule: format!("({pairs_rule}) ÷ {why}"),
    }
}

/// connect() latency over every call, failed ones included (near
/// exhaustion a call scans the whole range in `__inet_hash_connect()`),
/// in µs; quantiles within ≈6 % (the histogram's buckets), mean and max
/// exact.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p99_9_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// How the first failure the model predicts shows itself: which call,
/// which errno, and the kernel rule (from the kernel-rule layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PredictedFailure {
    /// "bind" or "connect".
    pub call: &'static str,
    /// EADDRINUSE or EADDRNOTAVAIL, as every errno is in JSON
    /// (`{"name", "code", "wsa"}`).
    pub errno: crate::outcome::SysError,
    /// The rule that decides it.
    pub rule: crate::model::RuleId,
}

/// The failure ports running out brings for `plan`'s way of getting a
/// port: bind(ip, 0) finds none → EADDRINUSE at bind()
/// (`Autobind::Exhausted`: inet_csk_get_port() → __inet_bind()); every
/// other way leaves the port to connect(), whose scan finds none →
/// EADDRNOTAVAIL (`__inet_hash_connect()`).
pub fn predicted_failure(plan: &Plan) -> PredictedFailure {
    use crate::model::kernel::{bind::Autobind, connect::scan_rule};
    match plan.workload.port_choice {
        PortChoice::Bind => PredictedFailure {
            call: "bind",
            errno: crate::outcome::SysError::from_code(libc::EADDRINUSE),
            rule: Autobind::Exhausted.rule(),
        },
        _ => PredictedFailure {
            call: "connect",
            errno: crate::outcome::SysError::from_code(libc::EADDRNOTAVAIL),
            rule: scan_rule(0, 0),
        },
    }
}

/// One point of the time series.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Sample {
    /// Seconds since the start.
    pub t_s: f64,
    /// Connection uses (churn) or connections open (held) so far.
    pub uses: u64,
    /// Successful connects so far.
    pub connects: u64,
    /// Errors so far.
    pub errors: u64,
    /// New connections per second since the last sample.
    pub conn_per_s: f64,
    /// Errors per second since the last sample.
    pub errors_per_s: f64,
    /// TIME_WAIT sockets in the namespace (/proc/net/sockstat "tw").
    pub time_wait: u64,
    /// Free ephemeral ports to the fullest destination (sock_diag count);
    /// `None` if not counted.
    pub free_ports: Option<u64>,
}

/// The end report of one run.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LoadReport {
    /// A short name (the variant in `--compare`).
    pub label: String,
    /// The plan.
    pub plan: Plan,
    /// The namespace's sysctls as read at the start.
    pub sysctls: NetSysctls,
    /// What the rules predict.
    pub predicted: Limit,
    /// How the predicted limit shows itself when reached.
    pub predicted_failure: PredictedFailure,
    /// Seconds the run took.
    pub elapsed_s: f64,
    /// Connection uses (or held connections).
    pub uses: u64,
    /// Successful connects.
    pub connects: u64,
    /// Errors in all.
    pub errors: u64,
    /// Errors that mean "no free port".
    pub exhaustion_errors: u64,
    /// Errors by call and errno.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// When ports first ran out.
    pub first_exhaustion: Option<FirstExhaustion>,
    /// New connections per second over the run.
    pub conn_per_s: f64,
    /// New connections per second after the first exhaustion.
    pub conn_per_s_after_exhaustion: Option<f64>,
    /// Most TIME_WAIT sockets seen (sampled from /proc/net/sockstat).
    pub peak_time_wait: u64,
    /// Changes of the namespace's TCP counters.
    pub counters: BTreeMap<String, u64>,
    /// connect() latency (`None` before any call).
    pub connect_us: Option<Latency>,
    /// The time series (in JSON as `sample` lines while the run goes,
    /// not again in the report).
    #[serde(skip_serializing)]
    pub samples: Vec<Sample>,
}

fn limit_text(l: &Limit, f: &PredictedFailure) -> String {
    match l {
        Limit::Rate {
            per_s,
            first_failure_after,
            rule,
        } => format!(
            "≤ {per_s:.1} new conn/s sustained; first {} at {}() after {first_failure_after} connections ({})\n  rule: {rule}",
            f.errno.name, f.call, f.rule
        ),
        Limit::Held { connections, rule } => {
            format!("≤ {connections} held connections\n  rule: {rule}")
        }
        Limit::Unbounded { rule } => format!("no port limit\n  rule: {rule}"),
    }
}

impl LoadReport {
    /// A run that stopped (its --duration or --count) before the limit the
    /// model predicts: said, so "no exhaustion" is not read as "none
    /// would come". `None` when the limit was reached or there is none.
    pub fn ended_before_limit(&self) -> Option<String> {
        match (&self.predicted, &self.first_exhaustion) {
            (
                Limit::Rate {
                    first_failure_after,
                    ..
                },
                None,
            ) if self.connects < *first_failure_after => Some(format!(
                "the run ended after {} connections, before the predicted first {} at {} connections: run longer (--duration) to reach it",
                self.connects, self.predicted_failure.errno.name, first_failure_after
            )),
            (Limit::Held { connections, .. }, None) if self.uses < *connections => Some(format!(
                "{} connections held; the predicted limit of {connections} was not reached (ask for more with --held)",
                self.uses
            )),
            _ => None,
        }
    }

    /// The report as text.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "twlab load [{}]: {:.2} s, {} uses, {} connects, {} errors",
            self.label, self.elapsed_s, self.uses, self.connects, self.errors
        );
        let s = &self.sysctls;
        let _ = writeln!(
            o,
            "  namespace: ip_local_port_range {} {}, tcp_tw_reuse {}, tcp_timestamps {}, tcp_tw_reuse_delay {}, tcp_max_tw_buckets {}",
            s.port_range.low,
            s.port_range.high,
            s.tw_reuse.value(),
            s.timestamps as u8,
            s.tw_reuse_delay_ms
                .map_or("(none)".into(), |d| format!("{d} ms")),
            s.max_tw_buckets
        );
        let _ = writeln!(
            o,
            "predicted: {}",
            limit_text(&self.predicted, &self.predicted_failure)
        );
        match &self.first_exhaustion {
            Some(f) => {
                let _ = writeln!(
                    o,
                    "first port exhaustion: after {:.3} s and {} connections",
                    f.after_s, f.after_connects
                );
            }
            None => {
                let _ = writeln!(o, "first port exhaustion: none");
            }
        }
        if let Some(n) = self.ended_before_limit() {
            let _ = writeln!(o, "note: {n}");
        }
        if matches!(self.plan.workload.mode, super::workload::Mode::Held { .. }) {
            // Held connections are a count, not a rate over the run.
            let _ = writeln!(
                o,
                "held: {} connections open at the end, after {:.2} s ({} connects)",
                self.uses, self.elapsed_s, self.connects
            );
        } else {
            let _ = write!(
                o,
                "sustained: {:.1} new conn/s over the run",
                self.conn_per_s
            );
            if let Some(r) = self.conn_per_s_after_exhaustion {
                let _ = write!(o, ", {r:.1} after the first exhaustion");
            }
            let _ = writeln!(o);
        }
        let _ = writeln!(
            o,
            "peak TIME_WAIT: {} (sampled from /proc/net/sockstat \"tw\")",
            self.peak_time_wait
        );
        if !self.errors_by_kind.is_empty() {
            let e: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect();
            let _ = writeln!(o, "errors: {}", e.join(", "));
        }
        if let Some(l) = self.connect_us {
            let _ = writeln!(
                o,
                "connect() (every call, failed ones included: near exhaustion they scan the whole range): p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, mean {:.0} µs, max {:.0} µs",
                l.p50_us, l.p90_us, l.p99_us, l.p99_9_us, l.mean_us, l.max_us
            );
        }
        let c: Vec<String> = self
            .counters
            .iter()
            .map(|(k, v)| format!("{k} +{v}"))
            .collect();
        let _ = writeln!(
            o,
            "counters: {}",
            if c.is_empty() {
                "(no change)".into()
            } else {
                c.join(", ")
            }
        );
        o
    }
}

/// A `sample` line of `load --json`: the variant's label and the sample.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SampleLine<'a> {
    /// The variant (`as given`, or its name under `--compare`).
    pub label: &'a str,
    /// The sample's fields.
    #[serde(flatten)]
    pub sample: &'a Sample,
}

/// The `report` line of `load --json`: the report, and whether the run
/// ended before the predicted limit.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ReportLine<'a> {
    /// The report's fields.
    #[serde(flatten)]
    pub report: &'a LoadReport,
    /// [`LoadReport::ended_before_limit`].
    pub ended_before_limit: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::workload::{NsSettings, Rate, Stop, Target, Workload};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Duration;

    fn sysctls(tw_reuse: &str, delay: Option<&str>) -> NetSysctls {
        NetSysctls::from_lookup(|n| {
            Some(
                match n {
                    crate::sysctl::TIMESTAMPS => "1",
                    crate::sysctl::TW_REUSE => tw_reuse,
                    crate::sysctl::TW_REUSE_DELAY => return delay.map(String::from),
                    crate::sysctl::PORT_RANGE => "1000 1099",
                    crate::sysctl::RESERVED_PORTS => "1000-1009",
                    crate::sysctl::MAX_TW_BUCKETS => "262144",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .unwrap()
    }

    fn plan(mode: Mode, choice: PortChoice, dests: u16) -> Plan {
        Plan {
            workload: Workload {
                workers: 1,
                mode,
                rate: Rate::Max,
                closer: Side::Client,
                linger_zero: false,
                sources: vec![],
                destinations: (0..dests)
                    .map(|i| SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000 + i))
                    .collect(),
                port_choice: choice,
            },
            stop: Stop {
                duration: Duration::from_secs(1),
                count: None,
                on_first_error: false,
            },
            target: Target::InProcess,
            netns: Some(NsSettings::default()),
            sample_every: Duration::from_millis(100),
            count_free_ports: false,
        }
    }

    const CHURN: Mode = Mode::Churn {
        concurrency: 2,
        pool: 1,
        requests: 0,
    };

    #[test]
    fn bind_runs_out_at_bind_with_eaddrinuse_others_at_connect() {
        // bind(ip, 0) exhausts in inet_csk_get_port() → EADDRINUSE (the
        // README's lesson), not connect()'s EADDRNOTAVAIL.
        let f = predicted_failure(&plan(CHURN, PortChoice::Bind, 3));
        assert_eq!((f.call, f.errno.name.as_str()), ("bind", "EADDRINUSE"));
        assert_eq!(f.rule, crate::model::RuleId::BindAutoExhausted);
        for c in [PortChoice::Kernel, PortChoice::BindNoPort] {
            let f = predicted_failure(&plan(CHURN, c, 3));
            assert_eq!(
                (f.call, f.errno.name.as_str()),
                ("connect", "EADDRNOTAVAIL")
            );
        }
        let l = predict(&plan(CHURN, PortChoice::Bind, 3), &sysctls("0", None));
        let text = limit_text(&l, &predicted_failure(&plan(CHURN, PortChoice::Bind, 3)));
        assert!(text.contains("first EADDRINUSE at bind()"), "{text}");
    }

    #[test]
    fn a_held_plan_counts_both_ends_descriptors() {
        let p = plan(
            Mode::Held {
                connections: 30_000,
            },
            PortChoice::Kernel,
            1,
        );
        // Client and in-process server end per connection.
        assert_eq!(crate::load::descriptors_needed(&p), 60_256);
        let mut ext = p.clone();
        ext.target = Target::External;
        assert_eq!(crate::load::descriptors_needed(&ext), 30_256);
    }

    #[test]
    fn no_reuse_is_ports_times_destinations_over_60_s() {
        // 100 ports less 10 reserved = 90, × 3 destinations.
        let p = plan(CHURN, PortChoice::Kernel, 3);
        match predict(&p, &sysctls("0", None)) {
            Limit::Rate {
                per_s,
                first_failure_after,
                ..
            } => {
                assert_eq!(first_failure_after, 270);
                assert_eq!(per_s, 270.0 / 60.0);
            }
            l => panic!("{l:?}"),
        }
        // bind(ip, 0) shares the ports across destinations.
        let b = plan(CHURN, PortChoice::Bind, 3);
        assert!(matches!(predict(&b, &sysctls("1", None)),
            Limit::Rate { first_failure_after: 90, per_s, .. } if per_s == 1.5));
    }

    #[test]
    fn tw_reuse_divides_by_its_delay() {
        let p = plan(CHURN, PortChoice::Kernel, 1);
        // Before 6.14 the delay is one second; loopback counts for 2.
        assert!(matches!(predict(&p, &sysctls("2", None)),
            Limit::Rate { per_s, .. } if per_s == 90.0));
        assert!(matches!(predict(&p, &sysctls("1", Some("250"))),
            Limit::Rate { per_s, .. } if per_s == 360.0));
    }

    #[test]
    fn mitigations_remove_the_limit_and_held_counts_pairs() {
        let s = sysctls("0", None);
        let mut p = plan(CHURN, PortChoice::Kernel, 1);
        p.workload.closer = Side::Server;
        assert!(matches!(predict(&p, &s), Limit::Unbounded { .. }));
        let mut p = plan(CHURN, PortChoice::Kernel, 1);
        p.workload.linger_zero = true;
        assert!(matches!(predict(&p, &s), Limit::Unbounded { .. }));
        let pooled = Mode::Churn {
            concurrency: 2,
            pool: 2,
            requests: 1,
        };
        assert!(matches!(
            predict(&plan(pooled, PortChoice::Kernel, 1), &s),
            Limit::Unbounded { .. }
        ));
        let mut held = plan(Mode::Held { connections: 1 }, PortChoice::BindNoPort, 2);
        held.workload.sources = vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
        assert!(matches!(
            predict(&held, &s),
            Limit::Held {
                connections: 360,
                ..
            }
        ));
        let narrow = PortChoice::SocketRange(PortRange {
            low: 1090,
            high: 1200,
        });
        assert_eq!(usable_ports(&plan(CHURN, narrow, 1), &s), 10);
    }
}
