//! The events' clock: the tracefs instance's `trace_clock`, or the time
//! helper of the BPF programs, and how its times become CLOCK_REALTIME.
//!
//! CLOCK_TAI is the same timekeeper as CLOCK_REALTIME plus the TAI offset:
//! each time is turned into CLOCK_REALTIME by subtracting that offset, the
//! clock of the packet socket's timestamps (`skb->tstamp` from
//! `ktime_get_real()`, SIOCGSTAMP), so events and captured segments sort
//! on one time line. Where CLOCK_TAI is missing, CLOCK_MONOTONIC with the
//! REALTIME − MONOTONIC offset read at the start.

/// The instance's trace clock and how its times become CLOCK_REALTIME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// `tai`: realtime = tai − offset (whole seconds).
    Tai {
        /// CLOCK_TAI − CLOCK_REALTIME in ns.
        offset_ns: i64,
    },
    /// `mono`: realtime = mono − offset, the offset read at the start.
    Mono {
        /// CLOCK_MONOTONIC − CLOCK_REALTIME in ns.
        offset_ns: i64,
    },
}

impl Clock {
    /// CLOCK_TAI, with the TAI offset read now.
    pub(crate) fn tai() -> Clock {
        Clock::Tai {
            offset_ns: crate::sys::tracefs::tai_offset_ns(),
        }
    }

    /// CLOCK_MONOTONIC, with the REALTIME − MONOTONIC offset read now.
    pub(crate) fn mono() -> Clock {
        Clock::Mono {
            offset_ns: crate::sys::tracefs::mono_offset_ns(),
        }
    }

    /// Now, on this clock (the events' own time, before
    /// [`to_realtime`](Self::to_realtime)).
    pub(crate) fn now(self) -> u64 {
        let id = match self {
            Clock::Tai { .. } => libc::CLOCK_TAI,
            Clock::Mono { .. } => libc::CLOCK_MONOTONIC,
        };
        crate::sys::tracefs::now_ns(id).map_or(0, |t| t.max(0) as u64)
    }

    /// The `trace_clock` name.
    pub fn name(self) -> &'static str {
        match self {
            Clock::Tai { .. } => "tai",
            Clock::Mono { .. } => "mono",
        }
    }

    /// A trace time as nanoseconds since the Unix epoch.
    pub fn to_realtime(self, ts: u64) -> u64 {
        let off = match self {
            Clock::Tai { offset_ns } | Clock::Mono { offset_ns } => offset_ns,
        };
        (ts as i64 - off).max(0) as u64
    }

    /// In words, for notes under a ladder.
    pub fn describe(self) -> String {
        match self {
            Clock::Tai { offset_ns } => format!(
                "trace_clock tai − {} s = CLOCK_REALTIME, the clock of the packet timestamps",
                offset_ns / 1_000_000_000
            ),
            Clock::Mono { .. } => {
                "trace_clock mono + the REALTIME − MONOTONIC offset at the start = CLOCK_REALTIME, the clock of the packet timestamps".into()
            }
        }
    }
}
