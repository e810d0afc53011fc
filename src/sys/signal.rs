//! Catching the signals that ask twlab to stop (SIGINT, SIGTERM, SIGHUP,
//! SIGQUIT) with sigaction(2). The handler only records the signal (an
//! atomic store, async-signal-safe); the program notices it at its next
//! check (the `signal` module) and cleans up. A second such signal while the
//! first is being handled takes the default action at once (the handler
//! resets it to SIG_DFL and raises it again, both async-signal-safe), so a
//! program stuck somewhere can still be stopped from the keyboard.

#[cfg(unix)]
use nix::libc;
#[cfg(unix)]
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal as NixSignal, sigaction};
use std::sync::atomic::{AtomicI32, Ordering};

/// The number of the first signal received, 0 before any.
pub(crate) static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Called from the signal handler: record `sig` unless one is recorded
/// already. Returns true if this was the first. Async-signal-safe (one
/// atomic compare-exchange).
pub(crate) fn record(sig: i32) -> bool {
    RECEIVED
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
}

/// The signals caught, as (number, name). The numbers are POSIX's and the
/// same on every Unix twlab runs on.
#[cfg(unix)]
pub(crate) const CAUGHT: [(i32, &str); 4] = [
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGQUIT, "SIGQUIT"),
];

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    if !record(sig) {
        // Already stopping: take the default action (terminate) now.
        // SAFETY: signal(2) and raise(3) are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Install the handler for every signal in [`CAUGHT`]. SA_RESTART keeps
/// blocking calls elsewhere from failing with EINTR (as the ctrlc crate
/// did); loops notice the flag at their next check instead.
#[cfg(unix)]
pub(crate) fn install() -> std::io::Result<()> {
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for (n, _) in CAUGHT {
        let sig = NixSignal::try_from(n).map_err(std::io::Error::from)?;
        // SAFETY: the handler only touches an atomic and calls
        // async-signal-safe functions.
        unsafe { sigaction(sig, &act) }.map_err(std::io::Error::from)?;
    }
    Ok(())
}
