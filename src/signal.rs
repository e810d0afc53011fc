//! Signals that ask twlab to stop, and waits that notice them.
//!
//! [`install`] catches SIGINT (Ctrl-C), SIGTERM, SIGHUP and SIGQUIT; each
//! only records which signal arrived. Every long loop and every wait checks
//! [`interrupted`] (or uses [`sleep_interruptible`] / [`Deadline`], which check it at
//! least every [`CHECK_EVERY`]), closes what it opened and returns
//! [`crate::Error::Interrupted`]; the CLI then prints one line and exits
//! 128 + the signal's number (130 for SIGINT, 143 for SIGTERM, 129 for
//! SIGHUP, 131 for SIGQUIT), as shells report a process killed by it.
//! A second signal while stopping takes the default action at once.

use crate::sys::signal::RECEIVED;
use std::sync::Once;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A signal that asks twlab to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGINT (2): Ctrl-C.
    Interrupt,
    /// SIGTERM (15): `kill`, service managers.
    Terminate,
    /// SIGHUP (1): the terminal went away.
    Hangup,
    /// SIGQUIT (3): Ctrl-\.
    Quit,
}

impl Signal {
    /// The POSIX signal number (the same on Linux, the BSDs and macOS).
    pub fn number(self) -> i32 {
        match self {
            Signal::Hangup => 1,
            Signal::Interrupt => 2,
            Signal::Quit => 3,
            Signal::Terminate => 15,
        }
    }

    /// From a signal number; `None` for signals twlab does not catch.
    pub fn from_number(n: i32) -> Option<Signal> {
        [
            Signal::Hangup,
            Signal::Interrupt,
            Signal::Quit,
            Signal::Terminate,
        ]
        .into_iter()
        .find(|s| s.number() == n)
    }

    /// `SIGINT`, `SIGTERM`, ...
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Interrupt => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The exit code after stopping on this signal: 128 + its number.
    pub fn exit_code(self) -> u8 {
        // Numbers are 1..=15: no overflow.
        128 + self.number() as u8
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signal::Interrupt => f.write_str("SIGINT (Ctrl-C)"),
            s => f.write_str(s.name()),
        }
    }
}

/// A wait or loop stopped because a signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {signal}")]
pub struct Interrupted {
    /// The first signal that arrived.
    pub signal: Signal,
}

impl From<Interrupted> for crate::Error {
    fn from(_: Interrupted) -> Self {
        crate::Error::Interrupted
    }
}

/// Catch SIGINT, SIGTERM, SIGHUP and SIGQUIT from now on (idempotent).
/// Installs no thread, so a process may still unshare(CLONE_NEWUSER)
/// afterwards. Failing to install is not fatal: the signals then keep
/// their default action.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(unix)]
        let _ = crate::sys::signal::install();
        #[cfg(not(unix))]
        let _ = ctrlc::set_handler(|| {
            crate::sys::signal::record(Signal::Interrupt.number());
        });
    });
}

/// The first stop signal received, if any.
pub fn received() -> Option<Signal> {
    Signal::from_number(RECEIVED.load(Ordering::SeqCst))
}

/// True once a stop signal arrived.
pub fn interrupted() -> bool {
    RECEIVED.load(Ordering::SeqCst) != 0
}

/// `Err` once a stop signal arrived: `signal::check()?` in loops.
pub fn check() -> Result<(), Interrupted> {
    match received() {
        Some(signal) => Err(Interrupted { signal }),
        None => Ok(()),
    }
}

/// How often waits look at the flag: a signal is noticed within this
/// (plus the time one step of work takes).
pub const CHECK_EVERY: Duration = Duration::from_millis(50);

/// Sleep for `d`, or until a stop signal arrives (noticed within
/// [`CHECK_EVERY`]). Any `d` is fine, also [`Duration::MAX`].
pub fn sleep_interruptible(d: Duration) -> Result<(), Interrupted> {
    Deadline::after(d).sleep_until()
}

/// A point in time to wait until; "never" for durations past what
/// [`Instant`] can represent, so huge timeouts cannot overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// `None`: never.
    at: Option<Instant>,
}

impl Deadline {
    /// `d` from now (never, if that is not representable).
    pub fn after(d: Duration) -> Deadline {
        Deadline {
            at: Instant::now().checked_add(d),
        }
    }

    /// A deadline that never passes (`events` without `--duration`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub fn never() -> Deadline {
        Deadline { at: None }
    }

    /// The time left, zero once passed; `None` for never.
    pub fn remaining(&self) -> Option<Duration> {
        self.at.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// True once the deadline has passed.
    pub fn passed(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// How long one blocking step may wait: the time left, at most
    /// [`CHECK_EVERY`], so the caller checks for signals in between.
    pub fn step(&self) -> Duration {
        self.remaining().unwrap_or(CHECK_EVERY).min(CHECK_EVERY)
    }

    /// Sleep until the deadline, or until a stop signal arrives.
    pub fn sleep_until(&self) -> Result<(), Interrupted> {
        // Bounded for a finite deadline; a "never" deadline ends only on a
        // signal, which is what the caller asked for.
        loop {
            check()?;
            if self.passed() {
                return Ok(());
            }
            std::thread::sleep(self.step());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_128_plus_the_number() {
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::Terminate.exit_code(), 143);
        assert_eq!(Signal::Hangup.exit_code(), 129);
        assert_eq!(Signal::Quit.exit_code(), 131);
        for s in [
            Signal::Interrupt,
            Signal::Terminate,
            Signal::Hangup,
            Signal::Quit,
        ] {
            assert_eq!(Signal::from_number(s.number()), Some(s));
        }
        #[cfg(unix)]
        for (n, name) in crate::sys::signal::CAUGHT {
            assert_eq!(Signal::from_number(n).map(Signal::name), Some(name));
        }
    }

    #[test]
    fn deadlines_never_overflow() {
        let d = Deadline::after(Duration::MAX);
        assert_eq!(d, Deadline::never());
        assert_eq!(d.remaining(), None);
        assert_eq!(d.step(), CHECK_EVERY);
        let d = Deadline::after(Duration::from_millis(10));
        assert!(d.step() <= Duration::from_millis(10));
        let t = Instant::now();
        // No signal in unit tests: this sleeps out the deadline.
        if !interrupted() {
            d.sleep_until().unwrap();
            assert!(t.elapsed() >= Duration::from_millis(10));
            assert!(d.passed());
        }
    }
}
