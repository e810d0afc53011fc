//! `twlab load`: clap arguments → [`crate::load::Plan`].

#[cfg(not(target_os = "linux"))]
pub use super::linux_only::{Args as LoadArgs, run};
#[cfg(target_os = "linux")]
pub use imp::{LoadArgs, run};

#[cfg(target_os = "linux")]
mod imp {

    use crate::experiment::Side;
    use crate::load::{self, Mode, NsSettings, Plan, PortChoice, Rate, Stop, Target, Workload};
    use crate::outcome::Exit;
    use crate::sysctl::{PortRange, TwReuse};
    use anyhow::{Context, Result, bail};
    use clap::{Args, ValueEnum};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::sync::Arc;
    use std::time::Duration;

    /// Arguments of `twlab load`.
    #[derive(Args, Debug)]
    pub struct LoadArgs {
        /// Client threads, 1 to 1024, each a closed loop of its own
        /// connections (as matrix and pairs -j; --workers is the old
        /// spelling).
        #[arg(long, short = 'j', alias = "workers", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=1024))]
        jobs: u32,
        /// Connections in use at once per worker, each round.
        #[arg(long, default_value_t = 1)]
        concurrency: u32,
        /// Idle keep-alive connections kept per worker (0: connect per use).
        #[arg(long, default_value_t = 0)]
        pool: u32,
        /// One-byte request/response exchanges per use of a connection (0:
        /// connect and close without data; a pooled use then does nothing, so
        /// its uses/s would measure nothing).
        #[arg(long, default_value_t = 1)]
        requests: u32,
        /// Open N connections and hold them until the run ends (instead of churn).
        #[arg(long, value_name = "N")]
        held: Option<u32>,
        /// Target connection uses per second over all workers, 0.001 to
        /// 10000000 (default: as fast as possible).
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        /// Run time: 10s, 500ms, 2m (a bare number is seconds; at most 1 day).
        #[arg(long, default_value = "10s", value_name = "DURATION",
              value_parser = crate::cli::server::secs_parser("--duration", Duration::from_secs(86_400)))]
        duration: Duration,
        /// Stop after this many connection uses.
        #[arg(long)]
        count: Option<u64>,
        /// Stop at the first error.
        #[arg(long)]
        stop_on_error: bool,
        /// Who closes first: the client (it keeps the TIME_WAIT) or the server.
        #[arg(long, value_enum, default_value_t = CloserArg::Client)]
        closer: CloserArg,
        /// SO_LINGER 0 on the client: close() sends an RST, no TIME_WAIT.
        #[arg(long)]
        linger0: bool,
        /// Source addresses (127.0.0.x), used in turn; needs --client-port bind, bind-no-port or range.
        #[arg(long = "source", value_delimiter = ',')]
        sources: Vec<Ipv4Addr>,
        /// Destinations, ADDR:PORT or PORT (on 127.0.0.1), used in turn.
        #[arg(long = "dest", value_delimiter = ',', default_value = "127.0.0.1:5000")]
        dests: Vec<String>,
        /// How the client gets its port: kernel (connect() picks), bind
        /// (bind(ip, 0) first: a port free toward every destination, so
        /// the range runs out with EADDRINUSE at bind()), bind-no-port
        /// (IP_BIND_ADDRESS_NO_PORT), range:LOW-HIGH (IP_LOCAL_PORT_RANGE).
        /// (--port is the old spelling: elsewhere --port is a port number.)
        #[arg(
            long = "client-port",
            alias = "port",
            value_name = "HOW",
            default_value = "kernel"
        )]
        port: String,
        /// Use a server already listening at ADDR:PORT (loopback), in this namespace.
        #[arg(long)]
        target: Option<SocketAddrV4>,
        /// Namespace: ip_local_port_range, "LOW-HIGH".
        #[arg(long, default_value = "32768-60999")]
        port_range: String,
        /// Namespace: ip_local_reserved_ports ("" for none).
        #[arg(long, default_value = "")]
        reserved_ports: String,
        /// Namespace: tcp_tw_reuse (0, 1, 2).
        #[arg(long, default_value = "2")]
        tw_reuse: String,
        /// Namespace: tcp_tw_reuse_delay in ms (Linux 6.14+).
        #[arg(long)]
        tw_reuse_delay: Option<u32>,
        /// Namespace: tcp_timestamps (0 or 1).
        #[arg(long, default_value_t = 1)]
        timestamps: u8,
        /// Namespace: tcp_max_tw_buckets.
        #[arg(long)]
        max_tw_buckets: Option<u32>,
        /// Sample interval: 250ms, 1s (a bare number is milliseconds; 100ms to 1s).
        #[arg(long, default_value = "250ms", value_name = "DURATION",
              value_parser = crate::cli::server::millis_parser("--interval", Duration::from_secs(1)))]
        interval: Duration,
        /// JSON lines: one per sample, then the report.
        #[arg(long)]
        json: bool,
        /// Run the workload under each applicable mitigation, one namespace each.
        #[arg(long)]
        compare: bool,
        /// Exit 4 if any connection met an error (after the report), for
        /// scripts and CI that must notice exhaustion.
        #[arg(long)]
        fail_on_error: bool,
        /// Draw TIME_WAIT, conn/s and errors/s over time to this file, SVG
        /// or PNG by its extension (.svg, .png; any other is refused):
        /// a row of panels per run (per variant with --compare), the
        /// predicted limit dashed. Written through a temporary file; a
        /// symbolic link at the path is refused, a replaced file is said.
        #[arg(long, value_name = "FILE.svg|FILE.png", value_parser = load::plot::parse_path)]
        plot: Option<std::path::PathBuf>,
    }

    /// `--rate`, checked as it is parsed (exit 2): NaN, infinities and
    /// absurd rates would reach Duration::from_secs_f64 in the workers, a
    /// tiny one too (1e-300/s puts the second use 1e300 s away, past what
    /// a Duration holds).
    fn parse_rate(s: &str) -> std::result::Result<f64, String> {
        match s.parse::<f64>() {
            Ok(r) if (0.001..=10_000_000.0).contains(&r) => Ok(r),
            _ => Err(format!(
                "--rate '{}': give connections per second from 0.001 to 10000000",
                crate::text::echo(s)
            )),
        }
    }

    /// `--closer`.
    #[derive(ValueEnum, Clone, Copy, Debug)]
    enum CloserArg {
        /// The client's close() sends the first FIN.
        Client,
        /// The server closes first.
        Server,
    }

    impl From<CloserArg> for Side {
        fn from(c: CloserArg) -> Self {
            match c {
                CloserArg::Client => Side::Client,
                CloserArg::Server => Side::Server,
            }
        }
    }

    fn range(s: &str) -> Result<PortRange> {
        let (a, b) = s
            .split_once(['-', ' '])
            .with_context(|| format!("'{s}': expected LOW-HIGH"))?;
        let r = PortRange {
            low: a
                .trim()
                .parse()
                .with_context(|| format!("'{s}': bad low port"))?,
            high: b
                .trim()
                .parse()
                .with_context(|| format!("'{s}': bad high port"))?,
        };
        if r.is_empty() {
            bail!("'{s}': empty range");
        }
        Ok(r)
    }

    fn dest(s: &str) -> Result<SocketAddrV4> {
        if let Ok(p) = s.parse::<u16>() {
            return Ok(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p));
        }
        s.parse()
            .with_context(|| format!("--dest '{s}': expected ADDR:PORT or PORT"))
    }

    impl LoadArgs {
        fn plan(&self) -> Result<Plan> {
            let port_choice = match self.port.as_str() {
                "kernel" => PortChoice::Kernel,
                "bind" => PortChoice::Bind,
                "bind-no-port" => PortChoice::BindNoPort,
                r if r.starts_with("range:") => {
                    use crate::model::kernel::{KernelVersion, version::LOCAL_PORT_RANGE_OPTION};
                    if let Some(v) =
                        KernelVersion::running().filter(|v| !v.has(LOCAL_PORT_RANGE_OPTION))
                    {
                        bail!(
                            "--client-port {r}: Linux {v} has no IP_LOCAL_PORT_RANGE (it came in {}); use --port-range for the namespace's ip_local_port_range",
                            LOCAL_PORT_RANGE_OPTION.since
                        );
                    }
                    PortChoice::SocketRange(range(&r[6..])?)
                }
                o => bail!(
                    "--client-port '{o}': expected kernel, bind, bind-no-port or range:LOW-HIGH"
                ),
            };
            let mode = match self.held {
                Some(n) => Mode::Held { connections: n },
                None => Mode::Churn {
                    concurrency: self.concurrency,
                    pool: self.pool,
                    requests: self.requests,
                },
            };
            // Load goes only to this machine: a target or source outside
            // 127/8 is refused before any socket exists.
            if let Some(t) = self.target
                && !t.ip().is_loopback()
            {
                bail!("--target {t}: twlab load sends traffic only to loopback (127.0.0.0/8)");
            }
            if let Some(d) = self
                .dests
                .iter()
                .find(|d| dest(d).is_ok_and(|d| !d.ip().is_loopback()))
            {
                bail!("--dest {d}: twlab load sends traffic only to loopback (127.0.0.0/8)");
            }
            if let Some(s) = self.sources.iter().find(|s| !s.is_loopback()) {
                bail!("--source {s}: twlab load uses only loopback source addresses (127.0.0.0/8)");
            }
            let (target, destinations, netns) = match self.target {
                Some(t) => (Target::External, vec![t], None),
                None => {
                    let ns = NsSettings {
                        port_range: range(&self.port_range)?,
                        reserved_ports: self.reserved_ports.clone(),
                        tw_reuse: TwReuse::from_sysctl(&self.tw_reuse)
                            .context("--tw-reuse: expected 0, 1 or 2")?,
                        tw_reuse_delay_ms: self.tw_reuse_delay,
                        timestamps: self.timestamps != 0,
                        max_tw_buckets: self.max_tw_buckets,
                    };
                    let d = self.dests.iter().map(|d| dest(d)).collect::<Result<_>>()?;
                    (Target::InProcess, d, Some(ns))
                }
            };
            if self.interval < Duration::from_millis(100) {
                bail!(
                    "--interval {} ms: give 100ms to 1s (a sample reads the socket table: more often would measure twlab)",
                    self.interval.as_millis()
                );
            }
            Ok(Plan {
                workload: Workload {
                    workers: self.jobs,
                    mode,
                    rate: self.rate.map_or(Rate::Max, Rate::PerSecond),
                    closer: self.closer.into(),
                    linger_zero: self.linger0,
                    sources: self.sources.clone(),
                    destinations,
                    port_choice,
                },
                stop: Stop {
                    duration: self.duration,
                    count: self.count,
                    on_first_error: self.stop_on_error,
                },
                target,
                netns,
                sample_every: self.interval,
                count_free_ports: true,
            })
        }
    }

    /// A live line on a terminal (hidden when stderr is not one), or JSON lines.
    fn on_sample(json: bool, label: &str) -> (load::OnSample, Option<indicatif::ProgressBar>) {
        if json {
            let label = label.to_string();
            let f: load::OnSample = Arc::new(move |s: &load::Sample| {
                let line = load::SampleLine {
                    label: &label,
                    sample: s,
                };
                // A closed stdout ends the run's output, not the run:
                // the report's own write then exits quietly.
                if let Ok(text) = crate::json::compact_line("sample", &line) {
                    let _ = crate::cli::out(format!("{text}\n"));
                }
            });
            return (f, None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        let b = bar.clone();
        let label = label.to_string();
        let f: load::OnSample = Arc::new(move |s: &load::Sample| {
            b.set_message(format!(
                "[{label}] {:.1} s  {:.0} conn/s  {:.0} err/s  TIME_WAIT {}  free ports {}",
                s.t_s,
                s.conn_per_s,
                s.errors_per_s,
                s.time_wait,
                s.free_ports.map_or("?".into(), |f| f.to_string())
            ));
            b.tick();
        });
        (f, Some(bar))
    }

    /// Run `twlab load`; exit 0.
    pub fn run(a: LoadArgs) -> Result<Exit> {
        // Every error in building the plan is about the arguments: exit 2.
        let plan = a
            .plan()
            .map_err(|e| crate::Error::Usage(format!("{e:#}")))?;
        // A link or a directory at --plot is refused now, not after the run.
        if let Some(f) = &a.plot {
            crate::outfile::check_target(f)?;
        }
        let variants = if a.compare {
            load::compare::variants(&plan)?
        } else {
            vec![("as given".to_string(), plan)]
        };
        let mut reports = Vec::new();
        for (label, p) in variants {
            let (cb, bar) = on_sample(a.json, &label);
            let r = load::run(&p, &label, cb);
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let r = r?;
            if a.json {
                // The samples went out as lines already.
                let line = load::ReportLine {
                    report: &r,
                    ended_before_limit: r.ended_before_limit(),
                };
                crate::cli::out(format!("{}\n", crate::json::compact_line("report", &line)?))?;
            } else if !a.compare {
                crate::cli::out(r.text())?;
            }
            reports.push(r);
        }
        if a.compare && !a.json {
            crate::cli::out(load::compare::table(&reports))?;
        }
        if let Some(f) = &a.plot {
            let w = load::plot::write(&reports, f)?;
            // On stderr: with --json stdout holds only JSON.
            eprintln!("{}", w.note("plot"));
        }
        // --fail-on-error: a script's check that the run met no error.
        let errors: u64 = reports.iter().map(|r| r.errors).sum();
        if a.fail_on_error && errors > 0 {
            eprintln!("twlab load: {errors} error(s) (--fail-on-error): exit 4");
            return Ok(Exit::Failed);
        }
        Ok(Exit::Done)
    }
}
