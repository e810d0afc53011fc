//! A tick for one thread: a POSIX timer (timer_create(2) with
//! SIGEV_THREAD_ID) that sends the calling thread a real-time signal every
//! `period`. The signal's handler does nothing and is installed without
//! SA_RESTART, so a blocking connect(), recv() or accept() in that thread
//! returns EINTR at least once per period (sock_intr_errno() gives
//! -ERESTARTSYS, which becomes EINTR when the handler has no SA_RESTART);
//! the loop around the call looks at the stop flag and its deadline, and
//! calls again.
//!
//! Why not SO_SNDTIMEO / SO_RCVTIMEO: the story's loop and the load
//! workers make a fresh socket for every connection, and a timeout is a
//! setsockopt(2) per socket and per wait. With the tick, bounding every
//! wait costs no system call per connection: the timer is armed once per
//! thread.
//!
//! The tick reaches only the thread that armed it, never the rest of the
//! process, and a thread notices a pending tick only in a call that
//! sleeps: a call that does not sleep (a port search in connect(), a
//! close()) finishes with its own result.

use std::cell::Cell;
use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

thread_local! {
    /// True while this thread has a [`Ticker`].
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
}

/// The real-time signal the timers send: one from the top of the range,
/// away from SIGRTMIN where C libraries and runtimes take theirs.
fn tick_signal() -> libc::c_int {
    libc::SIGRTMAX() - 2
}

extern "C" fn on_tick(_: libc::c_int) {}

/// Install the do-nothing handler, once per process, without SA_RESTART.
fn install_handler() -> io::Result<()> {
    static ONCE: Once = Once::new();
    static RESULT: AtomicI32 = AtomicI32::new(0);
    ONCE.call_once(|| {
        // SAFETY: an all-zero sigaction is valid; the handler is
        // async-signal-safe (it does nothing).
        let r = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_tick as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut act.sa_mask);
            act.sa_flags = 0;
            libc::sigaction(tick_signal(), &act, std::ptr::null_mut())
        };
        if r != 0 {
            let e = io::Error::last_os_error().raw_os_error();
            RESULT.store(e.unwrap_or(libc::EINVAL), Ordering::SeqCst);
        }
    });
    match RESULT.load(Ordering::SeqCst) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// The timer; dropping it deletes the timer and ends the ticks.
pub(crate) struct Ticker {
    timer: libc::timer_t,
    /// Not Send: the timer ticks the thread that made it.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Ticker {
    /// Tick the calling thread every `period` (at least 1 ms) until the
    /// `Ticker` is dropped.
    pub(crate) fn start(period: Duration) -> io::Result<Ticker> {
        install_handler()?;
        let period = period.max(Duration::from_millis(1));
        // SAFETY: plain C structs filled in before use; timer_create only
        // writes `timer`.
        unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = tick_signal();
            sev.sigev_notify_thread_id = libc::gettid();
            let mut timer: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) != 0 {
                return Err(io::Error::last_os_error());
            }
            let ts = libc::timespec {
                tv_sec: period.as_secs() as libc::time_t,
                tv_nsec: period.subsec_nanos() as libc::c_long,
            };
            let spec = libc::itimerspec {
                it_interval: ts,
                it_value: ts,
            };
            if libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) != 0 {
                let e = io::Error::last_os_error();
                libc::timer_delete(timer);
                return Err(e);
            }
            ACTIVE.with(|a| a.set(true));
            Ok(Ticker {
                timer,
                _thread: std::marker::PhantomData,
            })
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        // SAFETY: the timer was made by timer_create and is deleted once.
        // A tick still pending meets the do-nothing handler.
        unsafe {
            libc::timer_delete(self.timer);
        }
        ACTIVE.with(|a| a.set(false));
    }
}

/// True while the calling thread ticks: its blocking socket calls return
/// EINTR at least once per period, and need no socket timeout to stay
/// bounded.
pub(crate) fn active() -> bool {
    ACTIVE.with(|a| a.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    /// accept(2) with no timeout, as a raw call (std would retry EINTR).
    fn raw_accept(l: &std::net::TcpListener) -> (i32, Option<i32>) {
        // SAFETY: a valid listening fd, no address out.
        let r = unsafe { libc::accept(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
        (
            r,
            (r < 0).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0)),
        )
    }

    /// A blocking accept() with no timeout returns EINTR while the thread
    /// ticks; another thread blocked in accept() meanwhile is not woken by
    /// the ticks and accepts its connection.
    #[test]
    fn ticks_reach_only_the_ticking_thread() {
        let mine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let theirs = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let their_addr = theirs.local_addr().unwrap();
        let t = Ticker::start(Duration::from_millis(10)).unwrap();
        assert!(active());
        let other = std::thread::spawn(move || {
            assert!(!active());
            raw_accept(&theirs)
        });
        let start = Instant::now();
        let (r, err) = raw_accept(&mine);
        assert_eq!((r, err), (-1, Some(libc::EINTR)));
        assert!(start.elapsed() < Duration::from_secs(5));
        // A few more ticks of this thread while the other one waits.
        std::thread::sleep(Duration::from_millis(50));
        let _c = std::net::TcpStream::connect(their_addr).unwrap();
        let (r, err) = other.join().unwrap();
        assert!(r >= 0, "the other thread's accept() failed: errno {err:?}");
        // SAFETY: r is the accepted fd, closed once.
        unsafe { libc::close(r) };
        drop(t);
        assert!(!active());
    }
}
