//! `twlab load`: a connection workload (workers, rate, requests per
//! connection, keep-alive pool, held connections, who closes first, port
//! choice, source and destination addresses) run in a fresh network
//! namespace with its own sysctls, measured against the limit the kernel's
//! rules predict, and compared across mitigations.
//!
//! - [`workload`]: the typed [`Plan`].
//! - `engine`: the client worker threads; `server`: the in-process server.
//! - [`stats`]: counters, latency histogram, namespace counters.
//! - [`report`]: the prediction and the end report.
//! - [`compare`]: the same workload under each mitigation.
//! - [`plot`]: the time series as SVG.

pub mod compare;
mod engine;
pub mod plot;
pub mod report;
mod server;
pub mod stats;
pub mod workload;

pub use report::{Limit, LoadReport, ReportLine, Sample, SampleLine, predict};
pub use workload::{Mode, NsSettings, Plan, PortChoice, Rate, Stop, Target, Workload};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::diag::{self, Query};
use crate::error::{Error, Result};
use crate::experiment::Side;
use crate::sysctl::NetSysctls;
use engine::{Shared, Worker};
use server::{Server, ServerClose};

/// Called with every sample while the run goes on (from the sampler thread).
pub type OnSample = Arc<dyn Fn(&Sample) + Send + Sync>;

/// Run `plan` (in its own fresh namespace if it has one) and report.
pub fn run(plan: &Plan, label: &str, on_sample: OnSample) -> Result<LoadReport> {
    plan.validate().map_err(|e| Error::Usage(e.0))?;
    check_descriptors(plan)?;
    let plan2 = plan.clone();
    let label = label.to_string();
    match &plan.netns {
        Some(ns) => {
            crate::netns::run_in_fresh(ns.sysctls(), move || run_here(plan2, label, on_sample))?
        }
        None => run_here(plan2, label, on_sample),
    }
}

/// Descriptors the plan holds at most: one per client connection open at
/// once (the held ones, or each worker's in-flight and pooled ones), one
/// more per connection when twlab's own server accepts it, plus a margin
/// for listeners, netlink and the process itself.
pub fn descriptors_needed(plan: &Plan) -> u64 {
    let w = &plan.workload;
    let open = match w.mode {
        Mode::Held { connections } => u64::from(connections),
        Mode::Churn {
            concurrency, pool, ..
        } => u64::from(w.workers) * u64::from(concurrency.max(pool)),
    };
    let per_conn = if plan.target == Target::InProcess {
        2
    } else {
        1
    };
    open * per_conn + 256
}

/// Raise RLIMIT_NOFILE to its hard limit, and refuse (exit 2) a plan that
/// needs more descriptors than that: it would end in EMFILE, measuring
/// the limit on descriptors instead of the one on ports (the issue's
/// `--held 30000` ended in "socket EMFILE ×19963" and exit 0).
fn check_descriptors(plan: &Plan) -> Result<()> {
    crate::socket::ensure_descriptors(descriptors_needed(plan), "hold fewer connections")
}

/// Run in the calling thread's namespace.
fn run_here(plan: Plan, label: String, on_sample: OnSample) -> Result<LoadReport> {
    let sysctls = NetSysctls::read()?;
    let server = match plan.target {
        Target::InProcess => {
            // As many server threads as client workers, up to the cores.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let threads = (plan.workload.workers as usize).min(cores);
            let close = server_close(&plan);
            Some(Server::start(&plan.workload.destinations, close, threads)?)
        }
        Target::External => None,
    };
    let before = stats::read_counters();
    let shared = Arc::new(Shared::new(plan.clone()));
    let usable = report::usable_ports(&plan, &sysctls);
    let sampler = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("twlab-load-sampler".into())
            .spawn(move || sample_loop(&shared, usable, &on_sample))
            .map_err(|e| Error::sys("spawn the sampler", &e))?
    };
    let latency = run_workers(&shared);
    let elapsed = shared.start.elapsed();
    shared.stop.store(true, Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let counters = crate::netstat::deltas(&before, &stats::read_counters());
    if let Some(s) = server {
        s.stop();
    }
    if crate::interrupted() {
        return Err(Error::Interrupted);
    }
    let mut r = summarise(&shared, latency?, elapsed, label, sysctls);
    // Held connections are closed when the run ends, before the last
    // sample: their TIME_WAITs are not the workload's.
    let during = match plan.workload.mode {
        Mode::Held { .. } => &samples[..samples.len().saturating_sub(1)],
        Mode::Churn { .. } => &samples[..],
    };
    r.peak_time_wait = during.iter().map(|s| s.time_wait).max().unwrap_or(0);
    r.samples = samples;
    r.counters = counters;
    Ok(r)
}

/// Server closes at accept() when the client neither sends nor keeps.
fn server_close(plan: &Plan) -> ServerClose {
    match (plan.workload.closer, plan.workload.mode) {
        (
            Side::Server,
            Mode::Churn {
                pool: 0,
                requests: 0,
                ..
            },
        ) => ServerClose::AtAccept,
        _ => ServerClose::OnRequest,
    }
}

/// Start the workers, wait for them, merge their latency histograms.
fn run_workers(shared: &Arc<Shared>) -> Result<stats::Histogram> {
    let workers: Vec<_> = (0..shared.plan.workload.workers as u64)
        .map(|i| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("twlab-load-{i}"))
                .spawn(move || {
                    let mut w = Worker::new(shared, i);
                    w.run();
                    w.latency
                })
        })
        .collect::<std::io::Result<_>>()
        .map_err(|e| {
            // Stop the workers already started before reporting.
            shared.stop.store(true, Relaxed);
            Error::sys("spawn a worker", &e)
        })?;
    let mut latency = stats::Histogram::default();
    for w in workers {
        latency.merge(&w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
    }
    Ok(latency)
}

/// The report from the counters (samples and namespace counters are
/// filled in by the caller).
fn summarise(
    shared: &Shared,
    latency: stats::Histogram,
    elapsed: std::time::Duration,
    label: String,
    sysctls: NetSysctls,
) -> LoadReport {
    let c = &shared.counters;
    let first = *c.first_exhaustion.lock().unwrap_or_else(|p| p.into_inner());
    let connects = c.connects.load(Relaxed);
    let after = first.and_then(|f| {
        let dt = elapsed.as_secs_f64() - f.after_s;
        let churn = matches!(shared.plan.workload.mode, Mode::Churn { .. });
        (churn && dt > 0.05).then(|| (connects - f.after_connects) as f64 / dt)
    });
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    let q = |p: f64| latency.quantile(p).map(us);
    let connect_us = match (
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        latency.mean(),
        latency.max(),
    ) {
        (Some(p50), Some(p90), Some(p99), Some(p99_9), Some(mean), Some(max)) => {
            Some(report::Latency {
                p50_us: p50,
                p90_us: p90,
                p99_us: p99,
                p99_9_us: p99_9,
                mean_us: us(mean),
                max_us: us(max),
            })
        }
        _ => None,
    };
    LoadReport {
        label,
        predicted: predict(&shared.plan, &sysctls),
        predicted_failure: report::predicted_failure(&shared.plan),
        sysctls,
        elapsed_s: elapsed.as_secs_f64(),
        uses: c.uses.load(Relaxed),
        connects,
        errors: c.errors.load(Relaxed),
        exhaustion_errors: c.exhaustion.load(Relaxed),
        errors_by_kind: c.by_kind.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        first_exhaustion: first,
        conn_per_s: connects as f64 / elapsed.as_secs_f64().max(1e-9),
        conn_per_s_after_exhaustion: after,
        peak_time_wait: 0,
        counters: Default::default(),
        connect_us,
        samples: Vec::new(),
        plan: shared.plan.clone(),
    }
}

/// Sample every `plan.sample_every` until the run stops, plus once at the
/// end. The series is bounded by duration ÷ interval.
/// The longest the sampler sleeps before it looks at `stop` again.
const SAMPLER_SLICE: std::time::Duration = std::time::Duration::from_millis(10);

fn sample_loop(shared: &Shared, usable: u64, on_sample: &OnSample) -> Vec<Sample> {
    let mut out: Vec<Sample> = Vec::new();
    let every = shared.plan.sample_every;
    let mut next = Instant::now() + every;
    loop {
        let done = shared.stop.load(Relaxed);
        let now = Instant::now();
        if !done && now < next {
            // In slices: the run's end (and with it a signal, which
            // stops the workers first) is noticed within SAMPLER_SLICE,
            // not a whole --sample-every later (250 ms measured at Ctrl-C).
            std::thread::sleep((next - now).min(SAMPLER_SLICE));
            continue;
        }
        next += every;
        let s = take_sample(shared, usable, out.last());
        on_sample(&s);
        out.push(s);
        if done {
            return out;
        }
    }
}

fn take_sample(shared: &Shared, usable: u64, last: Option<&Sample>) -> Sample {
    let c = &shared.counters;
    let t_s = shared.start.elapsed().as_secs_f64();
    let connects = c.connects.load(Relaxed);
    let errors = c.errors.load(Relaxed);
    let (t0, c0, e0) = last.map_or((0.0, 0, 0), |l| (l.t_s, l.connects, l.errors));
    let dt = (t_s - t0).max(1e-6);
    Sample {
        t_s,
        uses: c.uses.load(Relaxed),
        connects,
        errors,
        conn_per_s: (connects - c0) as f64 / dt,
        errors_per_s: (errors - e0) as f64 / dt,
        time_wait: crate::netstat::time_wait_count().unwrap_or(0),
        free_ports: shared
            .plan
            .count_free_ports
            .then(|| free_ports(&shared.plan, usable))
            .flatten(),
    }
}

/// Free ephemeral ports to the fullest destination: the usable pairs less
/// the client sockets (any state, TIME_WAIT included) that hold one, from
/// sock_diag dumps of the namespace, one per destination port, filtered by
/// the kernel on that peer port ([`Query::peer_port`]): the server's own
/// ends and its TIME_WAITs, often most of the table, are walked but not
/// copied, so sampling does not slow the workload it samples.
fn free_ports(plan: &Plan, usable: u64) -> Option<u64> {
    let w = &plan.workload;
    let per_dest = usable * w.sources.len().max(1) as u64;
    let mut used: HashMap<std::net::SocketAddr, u64> = HashMap::new();
    let mut any = 0u64;
    let dests: Vec<std::net::SocketAddr> = w.destinations.iter().map(|d| (*d).into()).collect();
    let mut ports: Vec<u16> = dests.iter().map(|d| d.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    for port in ports {
        let q = Query {
            peer_port: Some(port),
            ..Query::default()
        };
        diag::dump_each(&q, |e| {
            if dests.contains(&e.peer) {
                *used.entry(e.peer).or_default() += 1;
                any += 1;
            }
            Ok(())
        })
        .ok()?;
    }
    let worst = if w.port_choice == PortChoice::Bind {
        any
    } else {
        used.values().copied().max().unwrap_or(0)
    };
    Some(per_dest.saturating_sub(worst))
}
