//! The client workers: threads, each a closed loop of blocking socket2
//! calls (a blocking connect() on loopback returns as soon as the
//! handshake is done, and is what a per-request client does).
//!
//! Every blocking call is bounded without a socket timeout: each worker
//! thread ticks (`sys::tick`), so a connect() or read() that waits returns
//! EINTR at least every [`TICK`], and the loop around it looks at the stop
//! flag and its own bound ([`WAIT`]). A worker's connection costs
//! socket(), connect(), close() and the reads the workload asks for, and
//! no setsockopt() unless the workload sets an option.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::server::{CLOSE, REPLY, REQUEST};
use super::stats::{Counters, Histogram, Step};
use super::workload::{Mode, Plan, PortChoice, Rate};
use crate::experiment::Side;

/// How often a worker's blocking calls are woken to look at the stop flag.
const TICK: Duration = crate::signal::CHECK_EVERY;
/// The longest one connect() or one wait for the server waits (loopback
/// answers at once; this only guards against a server that stopped
/// answering).
const WAIT: Duration = Duration::from_secs(5);

/// What the workers share.
pub(crate) struct Shared {
    pub plan: Plan,
    pub counters: Counters,
    pub start: Instant,
    pub deadline: Instant,
    /// Set when the run must end (count reached, first error, Ctrl-C).
    pub stop: AtomicBool,
    /// Tickets handed out against `stop.count`.
    claimed: AtomicU64,
}

impl Shared {
    pub fn new(plan: Plan) -> Shared {
        let start = Instant::now();
        Shared {
            deadline: start + plan.stop.duration,
            plan,
            counters: Counters::default(),
            start,
            stop: AtomicBool::new(false),
            claimed: AtomicU64::new(0),
        }
    }

    /// True once the run must end.
    pub fn should_stop(&self) -> bool {
        self.should_stop_at(Instant::now())
    }

    /// [`Self::should_stop`] with the time already read by the caller: the
    /// churn loop reads the clock twice per connection (connect()'s
    /// latency) and reuses the second reading here; a clock read is about
    /// 0.1 µs on a VM, a few per cent of a loopback connection all told.
    pub fn should_stop_at(&self, now: Instant) -> bool {
        if self.stop.load(Relaxed) || crate::interrupted() || now >= self.deadline {
            self.stop.store(true, Relaxed);
            return true;
        }
        false
    }

    /// Claim up to `n` connection uses against the count bound (and the
    /// number of held connections).
    fn claim(&self, n: u64) -> u64 {
        let held = match self.plan.workload.mode {
            Mode::Held { connections } => Some(connections as u64),
            Mode::Churn { .. } => None,
        };
        let limit = match (self.plan.stop.count, held) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(l) => l,
                None => return n,
            },
        };
        let got = self.claimed.fetch_add(n, Relaxed);
        limit.saturating_sub(got).min(n)
    }

    fn error(&self, step: Step, e: &std::io::Error) {
        self.counters.error(step, e, self.start.elapsed());
        if self.plan.stop.on_first_error {
            self.stop.store(true, Relaxed);
        }
    }
}

/// One worker: its index and its latency histogram.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    index: u64,
    /// connect() latencies.
    pub latency: Histogram,
    /// Connections opened so far (picks source and destination in turn).
    opened: u64,
    /// This worker's thread ticks (`sys::tick`): waits need no socket
    /// timeout.
    ticking: bool,
    /// When the last connect() returned, if one did since the loop last
    /// looked at the clock (a round served from the pool opens none).
    last_now: Option<Instant>,
}

/// Socket setup failed at `Step`.
struct Failed(Step, std::io::Error);

fn step(s: Step) -> impl Fn(std::io::Error) -> Failed {
    move |e| Failed(s, e)
}

impl Worker {
    pub fn new(shared: Arc<Shared>, index: u64) -> Worker {
        Worker {
            last_now: None,
            shared,
            index,
            latency: Histogram::default(),
            opened: 0,
            ticking: false,
        }
    }

    /// Run the workload to its end; every socket is closed on return.
    pub fn run(&mut self) {
        // Without a ticker (timer_create refused), each wait sets a socket
        // timeout instead.
        let tick = crate::sys::tick::Ticker::start(TICK).ok();
        self.ticking = tick.is_some();
        match self.shared.plan.workload.mode {
            Mode::Churn {
                concurrency,
                pool,
                requests,
            } => self.churn(concurrency, pool, requests),
            Mode::Held { .. } => self.held(),
        }
    }

    /// The `i`-th (source, destination) pair: sources vary fastest, so
    /// `sources × destinations` consecutive connections cover every pair.
    fn pair(&self, i: u64) -> (Option<Ipv4Addr>, SocketAddrV4) {
        let w = &self.shared.plan.workload;
        let ns = w.sources.len().max(1) as u64;
        let d = w.destinations[((i / ns) % w.destinations.len() as u64) as usize];
        (self.shared.plan.source(i), d)
    }

    fn pairs(&self) -> u64 {
        let w = &self.shared.plan.workload;
        (w.sources.len().max(1) * w.destinations.len()) as u64
    }

    /// Open one connection; count its failure.
    fn open(&mut self) -> Option<Socket> {
        let i = self.index + self.opened;
        self.opened += 1;
        match self.try_open(i) {
            Ok(s) => {
                self.shared.counters.connects.fetch_add(1, Relaxed);
                Some(s)
            }
            // Stopped while connect() waited: the run's end, not an error.
            Err(Failed(_, e)) if e.kind() == std::io::ErrorKind::Interrupted => None,
            Err(Failed(st, e)) => {
                self.shared.error(st, &e);
                None
            }
        }
    }

    fn try_open(&mut self, i: u64) -> Result<Socket, Failed> {
        let w = &self.shared.plan.workload;
        let (src, dst) = self.pair(i);
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .map_err(step(Step::Socket))?;
        if w.linger_zero {
            s.set_linger(Some(Duration::ZERO))
                .map_err(step(Step::SetOpt))?;
        }
        let local = |ip: Option<Ipv4Addr>| {
            SockAddr::from(SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), 0))
        };
        match w.port_choice {
            PortChoice::Kernel => {}
            PortChoice::Bind => s.bind(&local(src)).map_err(step(Step::Bind))?,
            PortChoice::BindNoPort => {
                crate::sys::load::set_bind_address_no_port(&s).map_err(step(Step::SetOpt))?;
                s.bind(&local(src)).map_err(step(Step::Bind))?;
            }
            PortChoice::SocketRange(r) => {
                crate::sys::load::set_local_port_range(&s, r.low, r.high)
                    .map_err(step(Step::SetOpt))?;
                if src.is_some() {
                    crate::sys::load::set_bind_address_no_port(&s).map_err(step(Step::SetOpt))?;
                    s.bind(&local(src)).map_err(step(Step::Bind))?;
                }
            }
        }
        let t0 = Instant::now();
        // Stopped (the run's end): EINTR, which `open` does not count.
        let r = crate::socket::connect_bounded(&s, &SockAddr::from(dst), t0, WAIT, TICK, || {
            self.shared.should_stop()
        });
        let now = Instant::now();
        self.last_now = Some(now);
        self.latency.record(now.saturating_duration_since(t0));
        r.map_err(step(Step::Connect))?;
        Ok(s)
    }

    /// Wait for the next use's turn under a target rate.
    fn pace(&self, done: u64) {
        let Rate::PerSecond(r) = self.shared.plan.workload.rate else {
            return;
        };
        let per_worker = r / self.shared.plan.workload.workers as f64;
        if per_worker <= 0.0 {
            return;
        }
        let due = self.shared.start + Duration::from_secs_f64(done as f64 / per_worker);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(
                (due - now).min(self.shared.deadline.saturating_duration_since(now)),
            );
        }
    }

    /// Rounds of `concurrency` uses: take idle connections from the pool,
    /// open the rest, exchange `requests`, keep `pool` of them, close the
    /// others.
    fn churn(&mut self, concurrency: u32, pool_size: u32, requests: u32) {
        let mut pool: Vec<Socket> = Vec::with_capacity(pool_size as usize);
        let mut in_use: Vec<Socket> = Vec::with_capacity(concurrency as usize);
        let mut done = 0u64;
        let closer = self.shared.plan.workload.closer;
        // Server closes at accept() when there is nothing to say first.
        let silent = requests == 0 && pool_size == 0;
        while !self
            .shared
            .should_stop_at(self.last_now.take().unwrap_or_else(Instant::now))
        {
            let n = self.shared.claim(concurrency as u64);
            if n == 0 {
                break;
            }
            self.pace(done);
            for _ in 0..n {
                if let Some(s) = pool.pop().or_else(|| self.open()) {
                    in_use.push(s);
                }
            }
            for mut s in in_use.drain(..) {
                match self.exchange(&mut s, requests) {
                    Ok(()) => {
                        self.shared.counters.uses.fetch_add(1, Relaxed);
                        if pool.len() < pool_size as usize {
                            pool.push(s);
                            continue;
                        }
                    }
                    // Stopped while waiting for the reply: the run's end,
                    // not the peer's fault (it was counted as an error
                    // without errno, printed "send/recv E0").
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => self.shared.error(Step::Io, &e),
                }
                self.close(s, closer, silent);
            }
            done += n;
        }
        for s in pool {
            self.close(s, closer, silent);
        }
    }

    /// Open connections and keep them until the run ends. A worker gives
    /// up opening after every (source, destination) pair ran out of ports
    /// in a row.
    fn held(&mut self) {
        let mut held = Vec::new();
        let mut exhausted_in_a_row = 0;
        let mut done = 0;
        while !self.shared.should_stop() && exhausted_in_a_row < self.pairs() {
            if self.shared.claim(1) == 0 {
                break;
            }
            self.pace(done);
            done += 1;
            let before = self.shared.counters.exhaustion.load(Relaxed);
            match self.open() {
                Some(s) => {
                    exhausted_in_a_row = 0;
                    self.shared.counters.uses.fetch_add(1, Relaxed);
                    held.push(s);
                }
                None if self.shared.counters.exhaustion.load(Relaxed) > before => {
                    exhausted_in_a_row += 1
                }
                None => {}
            }
        }
        // Hold until the run ends (bounded by its deadline).
        while !self.shared.should_stop() {
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(held);
    }
}

impl Worker {
    /// `requests` one-byte request/response exchanges, each reply waited
    /// for at most [`WAIT`].
    fn exchange(&self, s: &mut Socket, requests: u32) -> std::io::Result<()> {
        let mut b = [0u8; 1];
        for _ in 0..requests {
            s.write_all(&[REQUEST])?;
            match self.read_bounded(s, &mut b)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                _ if b[0] != REPLY => return Err(std::io::Error::other("unexpected reply")),
                _ => {}
            }
        }
        Ok(())
    }

    /// One read(), called again after each tick until data, EOF, an
    /// error, the run's stop (`Interrupted`: not an error of the
    /// workload) or [`WAIT`] (`TimedOut`).
    fn read_bounded(&self, s: &mut Socket, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.ticking {
            s.set_read_timeout(Some(WAIT))?;
        }
        // The clock is read only once a read was interrupted: WAIT counts
        // from the first tick, at most one tick late.
        let mut since: Option<Instant> = None;
        loop {
            match s.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    let now = Instant::now();
                    let t0 = *since.get_or_insert(now);
                    if self.shared.should_stop_at(now) {
                        return Err(std::io::ErrorKind::Interrupted.into());
                    }
                    if now - t0 >= WAIT {
                        return Err(std::io::ErrorKind::TimedOut.into());
                    }
                }
                r => return r,
            }
        }
    }

    /// Close as the workload says: the client first (its close() sends
    /// the FIN), or after the server (ask it with [`CLOSE`] unless it
    /// closes at accept(), then wait for its FIN, each read bounded).
    fn close(&self, mut s: Socket, closer: Side, silent: bool) {
        if closer == Side::Server && (silent || s.write_all(&[CLOSE]).is_ok()) {
            let mut buf = [0u8; 64];
            // Each read returns data, EOF, an error or gives up after
            // WAIT: at most a few.
            for _ in 0..64 {
                match self.read_bounded(&mut s, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        drop(s);
    }
}
