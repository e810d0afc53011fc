//! The kernel's own words: TCP state changes, resets and drops from its
//! tracepoints (`sock:inet_sock_set_state`, `tcp:tcp_send_reset`,
//! `tcp:tcp_receive_reset`, `tcp:tcp_destroy_sock`,
//! `tcp:tcp_retransmit_skb`, `skb:kfree_skb`), through one of two
//! transports that hand over the same records, decoded by the same code
//! through the events' `format` files (no offset is hard-coded).
//!
//! First, tracefs is mounted in a private mount namespace and detached at
//! once (`sys::tracefs`), so the host's mounts and its global trace stay
//! untouched; the formats are read from its root.
//!
//! tracefs by default ([`Via::Tracefs`]): an instance under `instances/`
//! gets the events enabled with filters on their port fields; each CPU's
//! ring buffer is read in binary from `per_cpu/cpuN/trace_pipe_raw`. The
//! instance is removed when the [`Session`] drops: on every return, error and
//! unwinding panic; a stop signal only sets a flag (see `crate::signal`)
//! so the loops return and drop it; after a SIGKILL the next twlab removes
//! the leftover.
//!
//! BPF on request ([`Via::Bpf`]): programs twlab assembles from the
//! formats, on the tracepoints, each CPU's records in a BPF ring buffer
//! (see `bpf/mod.rs`). Nothing of it outlives the process, and each
//! process is named as its event fires; but the kernel skips a program
//! while another runs on that CPU, which tracefs's buffers never do (see
//! [`Via`]).
//!
//! Both on CLOCK_TAI made CLOCK_REALTIME, the clock of captured packets
//! ([`Clock`]). The tracepoints see every network namespace of the
//! machine: filters by port and address are how a session keeps to its own
//! sockets.

pub(crate) mod bpf;
mod clock;
mod event;
mod filter;
pub mod format;
pub mod hook;
pub mod life;
pub(crate) mod live;
mod names;
mod order;
pub mod render;
pub mod ring;
mod tracefs;

pub use clock::Clock;
pub use event::{Context, Event, FREED, TRACEPOINTS, What};
pub use filter::Filter;
pub use life::{Life, Lives, Reading, Summary};

use format::Format;
use ring::PageLayout;
use rustc_hash::FxHashMap as HashMap;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;
use tracefs::Instance;

/// A socket's own end and its peer's, as an event gave them.
type Ends = (Option<SocketAddr>, Option<SocketAddr>);

/// Why events are not available, in one line.
pub type Unavailable = String;

/// How the records reach twlab.
enum Transport {
    /// The instance's per-CPU ring buffers.
    Tracefs {
        /// (cpu, its trace_pipe_raw opened non-blocking). Closed before
        /// the instance is removed (an open reader keeps it busy).
        readers: Vec<(u32, File)>,
        layout: PageLayout,
        page: Vec<u8>,
        /// The instance's trace clock.
        clock: Clock,
    },
    /// Programs on the tracepoints and their ring buffer (`bpf`).
    Bpf(bpf::Source),
}

/// Which transport a session should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// A tracefs instance's ring buffers: the default. Its buffers take
    /// an event in each context (task, softirq, hardirq, NMI) even while
    /// another is being written on that CPU, so none is lost but to a
    /// full buffer.
    #[default]
    Tracefs,
    /// BPF programs: an error where they cannot be had. The kernel skips
    /// a program while another BPF program runs on that CPU
    /// (`trace_call_bpf()`), so a softirq's state change that interrupts
    /// the program of a system call's is lost (about 0.2 % of the story
    /// loop's events; counted, see [`Session::skipped`]).
    Bpf,
}

/// A live session with the events on, and its reader.
pub struct Session {
    transport: Transport,
    formats: HashMap<u16, Format>,
    filter: Filter,
    /// Sockets (skaddr) whose events passed the filter, with their ends:
    /// drops on them pass.
    known: HashMap<u64, Ends>,
    /// Packets answered with an RST that passed, with the RST's ends:
    /// their drops pass.
    reset_skbs: HashMap<u64, Ends>,
    /// The names of the processes that fired events.
    names: names::Names,
    /// Events the kernel reported lost in tracefs's pages (ring buffer
    /// overrun); the BPF transport counts its own, read when asked.
    missed: u64,
    /// Tracepoints this kernel lacks.
    missing: Vec<String>,
    /// (tracepoint, its filter as the kernel reads it back).
    filters: Vec<(String, String)>,
    /// The events of a read, per CPU (from index 1), in their buffers'
    /// order; at 0 the events the last read held back (see `order.rs`).
    runs: Vec<Vec<Event>>,
    /// An empty buffer for the next events held back.
    spare: Vec<Event>,
    /// Whether the last read left events in a buffer (a live reader
    /// takes a bounded share at a time): the next reads without waiting.
    more: bool,
    /// The time (on the session's clock) the previous read of tracefs
    /// began.
    read_before: Option<u64>,
    /// Events whose context the BPF program could not tell (read as the
    /// kernel's).
    unsure_context: u64,
    instance: Option<Instance>,
}

/// Sessions of one process that watch the same well-known ports must not
/// overlap (the tracepoints see every namespace): `twlab trace` takes this
/// while its events are on.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How full (percent of pages) a CPU's buffer gets before poll() wakes the
/// reader (`buffer_percent`, `ring_buffer_poll_wait()`): a reader that
/// waits at most [`crate::signal::CHECK_EVERY`] anyway need not wake for
/// every event; at the story loop's rate the 50 ms tick comes first, so
/// the reader runs about 20 times a second, whatever the event rate.
const WAKE_PERCENT: &str = "50";
/// The most pages one read of a CPU's buffer takes (a 2 MiB buffer holds
/// 512): a writer that outpaces the reader does not keep it there.
const MAX_PAGES: usize = 4096;
/// The most records one read of the BPF ring buffer takes (it holds
/// about 70,000).
const MAX_RECORDS: usize = 200_000;
/// What a live reader ([`Session::wait_into`]) takes from each CPU's
/// buffer at a time, tracefs pages and BPF records (about 2,000 events
/// either way), and reads again at once if a buffer had more: a batch of
/// a whole 50 ms at the story loop's rate was 3 MB of events, each moved
/// through memory three times, and the moves (not the decoding) were a
/// fifth of the reader's time.
const PAGES_PER_READ: usize = 64;
const RECORDS_PER_READ: usize = 2048;
/// Per-CPU buffer size: room for tens of thousands of events between two
/// reads.
pub(crate) const BUFFER_KB: &str = "2048";

impl Session {
    /// Mount tracefs privately, make an instance, enable the events with
    /// `filter`. `Err` is one line saying what is missing.
    pub fn open(filter: Filter) -> Result<Session, Unavailable> {
        Session::open_sized(filter, Some(BUFFER_KB))
    }

    /// [`Session::open`] with a per-CPU buffer of `buffer_kb` KiB, or the
    /// kernel's default (`None`: no resize, which costs ~15 ms).
    pub fn open_sized(filter: Filter, buffer_kb: Option<&str>) -> Result<Session, Unavailable> {
        Session::open_with(filter, buffer_kb, false)
    }

    /// [`Session::open_sized`], with `tcp:tcp_destroy_sock` ([`FREED`])
    /// too when `freed`.
    pub fn open_with(
        filter: Filter,
        buffer_kb: Option<&str>,
        freed: bool,
    ) -> Result<Session, Unavailable> {
        Session::open_via(filter, buffer_kb, freed, Via::default())
    }

    /// [`Session::open_with`] through the transport `via` asks for.
    pub fn open_via(
        filter: Filter,
        buffer_kb: Option<&str>,
        freed: bool,
        via: Via,
    ) -> Result<Session, Unavailable> {
        // The formats first, from the tracefs root: the BPF transport needs
        // no instance, and makes none (nothing of it outlives the process).
        let tracefs = Instance::root(crate::sys::tracefs::open_private()?);
        let mut found = Vec::new();
        let mut missing = Vec::new();
        let extra = freed.then_some(FREED);
        for (sys, name) in TRACEPOINTS.into_iter().chain(extra) {
            match tracefs
                .read_global(&format!("events/{sys}/{name}/format"))
                .ok()
                .and_then(|t| Format::parse(&t))
            {
                Some(f) => found.push((format!("{sys}:{name}"), f)),
                None => missing.push(format!("{sys}:{name}")),
            }
        }
        if !found.iter().any(|(_, f)| f.name == "inet_sock_set_state") {
            return Err("the kernel has no sock:inet_sock_set_state tracepoint".into());
        }
        if via == Via::Bpf {
            let source = bpf::Source::open(&found, &filter)?;
            let filters = source.filters().to_vec();
            return Ok(Session::new(
                Transport::Bpf(source),
                found,
                filter,
                missing,
                filters,
                tracefs,
            ));
        }
        let instance = tracefs.made()?;
        let clock = if instance.write("trace_clock", "tai").is_ok() {
            Clock::tai()
        } else {
            instance.write("trace_clock", "mono")?;
            Clock::mono()
        };
        if let Some(kb) = buffer_kb {
            let _ = instance.write("buffer_size_kb", kb);
        }
        let _ = instance.write("buffer_percent", WAKE_PERCENT);
        let layout = PageLayout::parse(
            &instance
                .read_global("events/header_page")
                .unwrap_or_default(),
        );
        let mut filters = Vec::new();
        let mut enabled = Vec::new();
        for (name, f) in found {
            let dir = format!("events/{}", name.replace(':', "/"));
            if let Some(expr) = filter.kernel_filter(&f) {
                // A filter the kernel refuses only costs speed: user space
                // filters every event again.
                let _ = instance.write(&format!("{dir}/filter"), &expr.to_string());
                // As the kernel holds it ("none" where it refused it).
                if let Ok(held) = instance.read(&format!("{dir}/filter")) {
                    filters.push((name.clone(), held.trim().to_string()));
                }
            }
            if instance.write(&format!("{dir}/enable"), "1").is_err() {
                missing.push(name);
                continue;
            }
            enabled.push((name, f));
        }
        let mut readers = Vec::new();
        for cpu in instance.cpus() {
            let path = instance.path(&format!("per_cpu/cpu{cpu}/trace_pipe_raw"));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags_nonblock()
                .open(&path)
                .map_err(|e| format!("open per_cpu/cpu{cpu}/trace_pipe_raw: {e}"))?;
            readers.push((cpu, f));
        }
        if readers.is_empty() {
            return Err("the tracefs instance has no per_cpu ring buffers".into());
        }
        let sub_kb: usize = instance
            .read("buffer_subbuf_size_kb")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4);
        let transport = Transport::Tracefs {
            readers,
            layout,
            page: vec![0; sub_kb.max(4) * 1024],
            clock,
        };
        Ok(Session::new(
            transport, enabled, filter, missing, filters, instance,
        ))
    }

    fn new(
        transport: Transport,
        formats: Vec<(String, Format)>,
        filter: Filter,
        missing: Vec<String>,
        filters: Vec<(String, String)>,
        instance: Instance,
    ) -> Session {
        Session {
            transport,
            formats: formats.into_iter().map(|(_, f)| (f.id, f)).collect(),
            filter,
            known: HashMap::default(),
            reset_skbs: HashMap::default(),
            names: names::Names::default(),
            missed: 0,
            missing,
            filters,
            runs: vec![Vec::new()],
            spare: Vec::new(),
            more: false,
            read_before: None,
            unsure_context: 0,
            instance: Some(instance),
        }
    }

    /// "bpf" or "tracefs": how the records reach twlab.
    pub fn transport(&self) -> &'static str {
        match self.transport {
            Transport::Bpf(_) => "bpf",
            Transport::Tracefs { .. } => "tracefs",
        }
    }

    /// Where the records come from, in words: "BPF programs on the
    /// tracepoints" or "tracefs instance twlab-4711-0".
    pub fn source(&self) -> String {
        match &self.transport {
            Transport::Bpf(_) => "BPF programs on the tracepoints".into(),
            Transport::Tracefs { .. } => format!("tracefs instance {}", self.instance_name()),
        }
    }

    /// Events whose context (system call or kernel) the BPF programs could
    /// not tell: 0 unless the kernel's per-CPU layout is not what
    /// the BPF transport's notes (`src/events/bpf/mod.rs`) say.
    pub fn unsure_context(&self) -> u64 {
        self.unsure_context
    }

    /// The clock the event times were taken on.
    pub fn clock(&self) -> Clock {
        match &self.transport {
            Transport::Tracefs { clock, .. } => *clock,
            Transport::Bpf(source) => source.clock(),
        }
    }

    /// Events the kernel reported lost so far (buffer overrun).
    pub fn missed(&self) -> u64 {
        match &self.transport {
            Transport::Tracefs { .. } => self.missed,
            Transport::Bpf(source) => source.lost(),
        }
    }

    /// Events the kernel did not hand to the BPF programs so far (another
    /// BPF program ran on that CPU then; see [`Summary::skipped`]). Read
    /// from the kernel when asked: a system call per program.
    pub fn skipped(&self) -> u64 {
        match &self.transport {
            Transport::Tracefs { .. } => 0,
            Transport::Bpf(source) => source.skipped(),
        }
    }

    /// Tracepoints this kernel lacks ("tcp:tcp_send_reset").
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// The filters the kernel applies before it records an event:
    /// ("skb:kfree_skb", the expression as the kernel reads it back).
    pub fn kernel_filters(&self) -> &[(String, String)] {
        &self.filters
    }

    /// The instance's name under `instances/` (empty for the BPF
    /// transport, which makes none).
    pub fn instance_name(&self) -> &str {
        self.instance.as_ref().map_or("", |i| i.name.as_str())
    }

    /// Everything recorded so far (without waiting), in time order.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut v = Vec::new();
        self.drain_into(&mut v);
        v
    }

    /// [`drain`](Self::drain) into `raw` (cleared first), whose capacity a
    /// long-running reader keeps from one batch to the next.
    pub fn drain_into(&mut self, raw: &mut Vec<Event>) {
        self.read_into(raw, false);
    }

    /// Read what the buffers hold into `raw`, with the events held back
    /// before, in time order. `ordered`: hand over only the events no
    /// later read can precede, and hold the rest back (see `order.rs`).
    fn read_into(&mut self, raw: &mut Vec<Event>, ordered: bool) {
        raw.clear();
        let (pages, records) = if ordered {
            (PAGES_PER_READ, RECORDS_PER_READ)
        } else {
            (MAX_PAGES, MAX_RECORDS)
        };
        let mut whole = true;
        let clock = self.clock();
        let now = clock.now();
        let formats = &self.formats;
        // runs[0]: the events the last read held back; then one per CPU.
        let runs = &mut self.runs;
        let until = match &mut self.transport {
            Transport::Tracefs {
                readers,
                layout,
                page,
                ..
            } => {
                if runs.len() <= readers.len() {
                    runs.resize_with(readers.len() + 1, Vec::new);
                }
                // Each reader: pages until EAGAIN, or until the read's
                // share (a writer that outpaces us does not keep us here).
                // tracefs stamps an event as it reserves its room and shows
                // it once committed, which the writer does with preemption
                // off (`trace_event_buffer_reserve()` …
                // `trace_event_buffer_commit()`): what was reserved before
                // the previous read began is readable now.
                let mut until = clock.to_realtime(self.read_before.replace(now).unwrap_or(0));
                for ((cpu, reader), run) in readers.iter_mut().zip(&mut runs[1..]) {
                    let (mut to_end, mut last) = (false, None);
                    for _ in 0..pages {
                        let Some(n) = read_page(reader, page) else {
                            to_end = true;
                            break;
                        };
                        let p = ring::parse_page(&page[..n], *layout);
                        if let Some(m) = p.missed {
                            self.missed += m.max(1);
                        }
                        last = p.records.last().map(|r| r.ts).or(last);
                        run.extend(p.records.iter().filter_map(|r| {
                            decode(formats, r.data, clock.to_realtime(r.ts), *cpu)
                        }));
                    }
                    // Cut off with pages left: its later events come next
                    // (and a page whose events were all left out still
                    // dates the cut).
                    if !to_end {
                        whole = false;
                        if let Some(ts) = last {
                            until = until.min(clock.to_realtime(ts));
                        }
                    }
                }
                until
            }
            Transport::Bpf(source) => {
                let (names, unsure) = (&mut self.names, &mut self.unsure_context);
                let drained = source.drain(records, now, |r| {
                    let Some(mut e) = decode(formats, r.data, clock.to_realtime(r.ts), r.cpu)
                    else {
                        return;
                    };
                    if r.data.get(3) == Some(&bpf::UNSURE) {
                        *unsure += 1;
                        e.context = Context::Softirq;
                    }
                    if e.context == Context::Process {
                        e.comm = Some(names.as_read(e.pid, r.comm));
                    }
                    let k = r.cpu as usize + 1;
                    if runs.len() <= k {
                        runs.resize_with(k + 1, Vec::new);
                    }
                    runs[k].push(e);
                });
                whole = drained.whole;
                clock.to_realtime(drained.until)
            }
        };
        self.more = !whole;
        let mut held = std::mem::take(&mut self.spare);
        order::merge(runs, ordered.then_some(until), raw, &mut held);
        // The emptied buffer of the old held events is the next spare.
        self.spare = std::mem::replace(&mut runs[0], held);
        self.names.new_batch();
        let named = matches!(self.transport, Transport::Bpf(_));
        // In place: each event moves once more at most.
        raw.retain_mut(|e| {
            if !self.keep(e) {
                return false;
            }
            // Only a system call's process is worth naming: in softirq
            // the pid is whoever happened to run. The BPF programs named
            // it as the event fired.
            if e.context == Context::Process && !named {
                e.comm = self.names.of_pid(e.pid, self.instance.as_ref());
            }
            true
        });
    }

    /// Wait up to `timeout` for the kernel to wake a reader (poll(2) on
    /// the ring buffers: no polling of socket tables), then
    /// [`drain`](Self::drain).
    pub fn wait(&mut self, timeout: Duration) -> Vec<Event> {
        let mut v = Vec::new();
        self.wait_into(timeout, &mut v);
        v
    }

    /// [`wait`](Self::wait) into `out` (cleared first). Unlike
    /// [`drain`](Self::drain), it holds back the events that a CPU's
    /// buffer may still precede (see `order.rs`): a reader that calls it
    /// again and again gets every event once, in time order across
    /// calls; [`drain`](Self::drain) hands over the rest.
    pub fn wait_into(&mut self, timeout: Duration, out: &mut Vec<Event>) {
        if !self.more {
            self.poll(timeout);
        }
        self.read_into(out, true);
    }

    /// Sleep in poll(2) until the kernel wakes the reader or `timeout`
    /// passes.
    fn poll(&self, timeout: Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let readers = match &self.transport {
            Transport::Tracefs { readers, .. } => readers,
            Transport::Bpf(source) => return source.poll(timeout),
        };
        let mut fds: Vec<PollFd> = readers
            .iter()
            .map(|(_, f)| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut fds, t);
    }

    /// The filter, and the drops of sockets that passed it (given their
    /// socket's ends: a drop event has no addresses of its own).
    fn keep(&mut self, e: &mut Event) -> bool {
        if let What::Drop { rx_sk, skb, .. } = &e.what {
            let ends = self
                .known
                .get(rx_sk)
                .filter(|_| *rx_sk != 0)
                .or_else(|| self.reset_skbs.get(skb));
            if let Some(&(l, p)) = ends {
                (e.local, e.peer) = (l, p);
                if e.sock == 0 {
                    e.sock = *rx_sk;
                }
                return true;
            }
            return self.filter.is_all();
        }
        if !self.filter.matches(e.local, e.peer) {
            return false;
        }
        if e.sock != 0 {
            self.known.insert(e.sock, (e.local, e.peer));
        }
        if let What::SendReset { skb, .. } = &e.what
            && *skb != 0
        {
            self.reset_skbs.insert(*skb, (e.local, e.peer));
        }
        // Bounded memory over a long `twlab events`.
        if self.known.len() > 100_000 {
            self.known.clear();
        }
        if self.reset_skbs.len() > 10_000 {
            self.reset_skbs.clear();
        }
        true
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Readers first: an open trace_pipe_raw keeps the instance busy.
        if let Transport::Tracefs { readers, .. } = &mut self.transport {
            readers.clear();
        }
        self.instance.take();
    }
}

/// A record from either transport (`common_type` first) as an event,
/// through its tracepoint's format; `None` for a tracepoint twlab did not
/// enable or a record it does not show.
fn decode(formats: &HashMap<u16, Format>, data: &[u8], at_ns: u64, cpu: u32) -> Option<Event> {
    let id = u16::from_ne_bytes(data.get(0..2)?.try_into().ok()?);
    event::decode(formats.get(&id)?, data, at_ns, cpu)
}

/// The next page of `reader` into `page`, its length; `None` when the
/// buffer has nothing more (EAGAIN: the readers do not block) or the read
/// fails.
fn read_page(reader: &mut File, page: &mut [u8]) -> Option<usize> {
    match reader.read(page) {
        Ok(n) if n > 0 => Some(n),
        _ => None,
    }
}

/// O_NONBLOCK for the readers.
trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

/// Can events be had here? `Err` says what is missing, in one line.
pub fn probe() -> Result<(), Unavailable> {
    Session::open(Filter::ports(&[1])).map(drop)
}

/// The names under the tracefs `instances/` directory now (from a private
/// mount of its own): how tests check that twlab left none behind.
pub fn instances() -> Result<Vec<String>, Unavailable> {
    let root = crate::sys::tracefs::open_private()?;
    let dir = std::path::PathBuf::from(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        root.as_raw_fd()
    }))
    .join("instances");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("read instances/: {e}"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}
