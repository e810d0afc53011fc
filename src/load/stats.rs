//! What a run counts: shared counters, connect() latency histograms, the
//! namespace's TCP counters and its TIME_WAIT count.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters every worker adds to (relaxed atomics: they are read by the
/// sampler and at the end, never used to synchronise).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Connection uses finished (churn) or connections open (held).
    pub uses: AtomicU64,
    /// connect() calls that succeeded.
    pub connects: AtomicU64,
    /// Failed calls of any kind.
    pub errors: AtomicU64,
    /// Failures that mean "no free port" (see [`is_exhaustion`]).
    pub exhaustion: AtomicU64,
    /// The first exhaustion: time since start, and connects before it.
    pub first_exhaustion: Mutex<Option<FirstExhaustion>>,
    /// Errors by "step errno" ("connect EADDRNOTAVAIL").
    pub by_kind: Mutex<BTreeMap<String, u64>>,
}

/// When the ports first ran out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct FirstExhaustion {
    /// Seconds since the run started.
    pub after_s: f64,
    /// Successful connects before it.
    pub after_connects: u64,
}

/// The call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Socket,
    SetOpt,
    Bind,
    Connect,
    Io,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Socket => "socket",
            Step::SetOpt => "setsockopt",
            Step::Bind => "bind",
            Step::Connect => "connect",
            Step::Io => "send/recv",
        }
    }
}

/// No free local port: connect() → EADDRNOTAVAIL (`__inet_hash_connect`
/// found no port) or bind(ip, 0) → EADDRINUSE (`inet_csk_get_port` →
/// `inet_csk_find_open_port` found none).
pub(crate) fn is_exhaustion(step: Step, errno: i32) -> bool {
    matches!(
        (step, errno),
        (Step::Connect, libc::EADDRNOTAVAIL) | (Step::Bind, libc::EADDRINUSE)
    )
}

/// An error's name in the report: the errno's name, or for an error
/// without one (errno 0, which the report used to print as "E0") what
/// it is: the peer's EOF, a timeout, a short write.
fn error_name(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.raw_os_error() {
        Some(n) if n != 0 => crate::sys::errno_name(n).to_string(),
        _ => match e.kind() {
            ErrorKind::UnexpectedEof => "peer closed (EOF before the reply)".into(),
            ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout (no reply in time)".into(),
            ErrorKind::WriteZero => "short write".into(),
            ErrorKind::ConnectionReset => "reset by the peer".into(),
            k => format!("{k} (no errno)"),
        },
    }
}

impl Counters {
    /// Count a failure; record the first exhaustion.
    pub fn error(&self, step: Step, e: &std::io::Error, since_start: Duration) {
        let errno = e.raw_os_error().unwrap_or(0);
        self.errors.fetch_add(1, Relaxed);
        if is_exhaustion(step, errno) {
            self.exhaustion.fetch_add(1, Relaxed);
            let mut first = self
                .first_exhaustion
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(FirstExhaustion {
                    after_s: since_start.as_secs_f64(),
                    after_connects: self.connects.load(Relaxed),
                });
            }
        }
        let kind = format!("{} {}", step.name(), error_name(e));
        *self
            .by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }
}

/// A log-linear latency histogram (16 sub-buckets per power of two, so a
/// value is known within 1/16 ≈ 6 %): bounded memory, merged across workers.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_ns: u64,
    /// Sum of every value (for the exact mean); u128 cannot overflow.
    sum_ns: u128,
}

const SUB: u32 = 16;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; (64 * SUB) as usize],
            count: 0,
            max_ns: 0,
            sum_ns: 0,
        }
    }
}

impl Histogram {
    fn index(ns: u64) -> usize {
        if ns < SUB as u64 {
            return ns as usize;
        }
        let msb = 63 - ns.leading_zeros();
        let sub = (ns >> (msb - 4)) as u32 & (SUB - 1);
        ((msb - 3) * SUB + sub) as usize
    }

    /// The lowest value of bucket `i` (inverse of `index`).
    fn low(i: usize) -> u64 {
        let i = i as u32;
        if i < SUB {
            return i as u64;
        }
        let msb = i / SUB + 3;
        let sub = (i % SUB) as u64;
        (1u64 << msb) | (sub << (msb - 4))
    }

    /// Add one value.
    pub fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.buckets[Self::index(ns)] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += u128::from(ns);
    }

    /// Add another histogram's values.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.count += o.count;
        self.max_ns = self.max_ns.max(o.max_ns);
        self.sum_ns += o.sum_ns;
    }

    /// The mean, exact; `None` if empty.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| {
            Duration::from_nanos(
                u64::try_from(self.sum_ns / u128::from(self.count)).unwrap_or(u64::MAX),
            )
        })
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (0..=1), as the low edge of its bucket; `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_nanos(Self::low(i).min(self.max_ns)));
            }
        }
        Some(Duration::from_nanos(self.max_ns))
    }

    /// The largest value, exact.
    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.max_ns))
    }
}

/// The TCP counters of /proc/net/netstat and /proc/net/snmp that explain
/// a load run.
pub const COUNTERS: [&str; 12] = [
    "TcpExt:TW",
    "TcpExt:TWRecycled",
    "TcpExt:TWKilled",
    "TcpExt:TCPTimeWaitOverflow",
    "TcpExt:ListenOverflows",
    "TcpExt:ListenDrops",
    "TcpExt:TCPAbortOnClose",
    "TcpExt:TCPAbortOnData",
    "Tcp:ActiveOpens",
    "Tcp:PassiveOpens",
    "Tcp:AttemptFails",
    "Tcp:OutRsts",
];

/// The calling thread's namespace's [`COUNTERS`], by name.
pub(crate) fn read_counters() -> BTreeMap<String, u64> {
    let mut all = crate::netstat::counters();
    all.retain(|k, _| COUNTERS.contains(&k.as_str()));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_without_an_errno_are_named_not_e0() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            error_name(&Error::from_raw_os_error(libc::EADDRNOTAVAIL)),
            "EADDRNOTAVAIL"
        );
        for (kind, want) in [
            (ErrorKind::UnexpectedEof, "peer closed"),
            (ErrorKind::TimedOut, "timeout"),
            (ErrorKind::WouldBlock, "timeout"),
            (ErrorKind::WriteZero, "short write"),
        ] {
            let n = error_name(&Error::from(kind));
            assert!(n.starts_with(want), "{kind:?} → {n}");
        }
        // errno 0 itself: what the kind says, never "E0".
        let n = error_name(&Error::from_raw_os_error(0));
        assert!(!n.starts_with("E0"), "{n}");
    }

    #[test]
    fn the_mean_is_exact_and_quantiles_cover_p90_and_p99_9() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.mean(), Some(Duration::from_nanos(500_500)));
        let q = |p: f64| h.quantile(p).unwrap().as_micros() as u64;
        // Within the buckets' 1/16.
        assert!((900 - 900 / 16..=900).contains(&q(0.9)), "{}", q(0.9));
        assert!((999 - 999 / 16..=999).contains(&q(0.999)), "{}", q(0.999));
        assert_eq!(Histogram::default().mean(), None);
    }

    #[test]
    fn histogram_buckets_round_trip_within_a_sixteenth() {
        for v in [0u64, 1, 15, 16, 17, 100, 1000, 12_345, 1 << 40] {
            let lo = Histogram::low(Histogram::index(v));
            assert!(lo <= v && v - lo <= v / 16, "{v} → {lo}");
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).unwrap().as_micros() as u64;
        assert!((47..=50).contains(&p50), "{p50}");
        assert_eq!(h.max(), Some(Duration::from_micros(100)));
        let p99 = h.quantile(0.99).unwrap().as_micros() as u64;
        assert!((93..=99).contains(&p99), "{p99}");
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
