//! Reads and waits that end on time and on a stop signal: the peer's FIN
//! (with or without SO_RCVTIMEO slices), an interruptible connect(), and
//! readiness through `crate::sys::wait` (poll on Unix, WSAPoll on Windows).

use super::{StepError, StepRes, TcpSock};
use crate::outcome::Step;
use socket2::{SockAddr, Socket};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Duration;

/// A blocking connect() on `sock`, bounded by `timeout` from `start` (the
/// caller's clock reading, so a loop that times its connect() reads the
/// clock once) and cut into waits of at most `slice`, calling `stop`
/// between them: EINTR once `stop` says so, ETIMEDOUT when `timeout` runs
/// out. A thread that ticks
/// (`sys::tick`) is woken by EINTR at least once per slice, so it needs no
/// SO_SNDTIMEO and pays no setsockopt; otherwise SO_SNDTIMEO cuts the
/// waits. Loopback answers within the first wait. Used by
/// [`TcpSock::connect_interruptible`] and by the load workers.
#[cfg(target_os = "linux")]
pub(crate) fn connect_bounded(
    sock: &Socket,
    addr: &SockAddr,
    start: std::time::Instant,
    timeout: Duration,
    slice: Duration,
    stop: impl Fn() -> bool,
) -> io::Result<()> {
    if !crate::sys::tick::active() {
        sock.set_write_timeout(Some(timeout.min(slice).max(Duration::from_millis(1))))?;
    }
    loop {
        // A blocking connect() on a socket still in SYN_SENT waits again
        // (for SO_SNDTIMEO, or until the next tick) and says EALREADY,
        // EINPROGRESS or EINTR if that runs out (__inet_stream_connect(),
        // case SS_CONNECTING), or 0 once the handshake completed: the same
        // call resumes the wait.
        match sock.connect(addr) {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINPROGRESS | libc::EALREADY | libc::EINTR)
                ) => {}
            Err(e) if e.raw_os_error() == Some(libc::EISCONN) => return Ok(()),
            Err(e) => return Err(e),
        }
        if stop() {
            return Err(io::Error::from_raw_os_error(libc::EINTR));
        }
        if start.elapsed() >= timeout {
            return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
        }
    }
}

impl TcpSock {
    /// Read until EOF (the peer's FIN) or an error such as ECONNRESET.
    /// Returns the number of bytes read before EOF.
    pub fn recv_until_eof(&mut self, timeout: Duration) -> StepRes<usize> {
        self.sock
            .set_read_timeout(Some(timeout))
            .map_err(|e| StepError::new(Step::Recv, &e))?;
        let mut buf = [0u8; 1024];
        let mut total = 0;
        loop {
            match (&self.sock).read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StepError::new(Step::Recv, &e)),
            }
        }
    }

    /// connect() bounded by `timeout` and cut into waits of at most
    /// `slice`, calling `stop` between them: `Err` with EINTR once `stop`
    /// says so, ETIMEDOUT when `timeout` runs out. Loopback answers within
    /// the first wait, so the fast path costs what [`Self::connect`] costs
    /// (one setsockopt, one connect).
    pub fn connect_interruptible(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        slice: Duration,
        stop: impl Fn() -> bool,
    ) -> StepRes<()> {
        #[cfg(target_os = "linux")]
        {
            let start = std::time::Instant::now();
            connect_bounded(
                &self.sock,
                &SockAddr::from(addr),
                start,
                timeout,
                slice,
                stop,
            )
            .map_err(|e| StepError::new(Step::Connect, &e))
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.connect_polled(addr, timeout, slice, stop)
        }
    }

    /// [`Self::connect_interruptible`] where a blocking connect() has no
    /// timeout to resume (Windows, BSD, macOS): a non-blocking connect(),
    /// then waits of at most `slice` for its end (as socket2's
    /// connect_timeout does, cut into slices).
    #[cfg(not(target_os = "linux"))]
    fn connect_polled(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        slice: Duration,
        stop: impl Fn() -> bool,
    ) -> StepRes<()> {
        use crate::sys::{Ready, err};
        let fail = |e: &io::Error| StepError::new(Step::Connect, e);
        let code = |c: i32| fail(&io::Error::from_raw_os_error(c));
        let start = std::time::Instant::now();
        self.sock.set_nonblocking(true).map_err(|e| fail(&e))?;
        let r = self.sock.connect(&SockAddr::from(addr));
        self.sock.set_nonblocking(false).map_err(|e| fail(&e))?;
        match r {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(err::CONNECT_STARTED) => {}
            Err(e) => return Err(fail(&e)),
        }
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(code(err::TIMED_OUT));
            }
            if crate::sys::wait(&self.sock, Ready::Connected, left.min(slice))
                .map_err(|e| fail(&e))?
            {
                return match self.sock.take_error() {
                    Ok(None) => Ok(()),
                    Ok(Some(e)) | Err(e) => Err(fail(&e)),
                };
            }
            if stop() {
                return Err(code(err::INTERRUPTED));
            }
        }
    }

    /// Read until EOF (the peer's FIN), an error such as ECONNRESET, or
    /// `timeout` (ETIMEDOUT), waiting in slices of at most `slice` and
    /// calling `stop` between them (EINTR once it says so). One
    /// setsockopt and the reads, like [`Self::recv_until_eof`].
    pub fn recv_until_eof_interruptible(
        &mut self,
        timeout: Duration,
        slice: Duration,
        stop: impl Fn() -> bool,
    ) -> StepRes<usize> {
        #[cfg(windows)]
        {
            self.recv_until_eof_polled(timeout, slice, stop)
        }
        #[cfg(not(windows))]
        self.recv_until_eof_timed(timeout, slice, stop)
    }

    /// [`Self::recv_until_eof_interruptible`] with SO_RCVTIMEO bounding
    /// each read (Unix: a timed-out read leaves the socket as it was).
    #[cfg(not(windows))]
    fn recv_until_eof_timed(
        &mut self,
        timeout: Duration,
        slice: Duration,
        stop: impl Fn() -> bool,
    ) -> StepRes<usize> {
        // As in connect_interruptible: a ticking thread needs no
        // SO_RCVTIMEO, its blocking recv() returns EINTR once per tick.
        #[cfg(target_os = "linux")]
        let ticking = crate::sys::tick::active();
        #[cfg(not(target_os = "linux"))]
        let ticking = false;
        if !ticking {
            self.sock
                .set_read_timeout(Some(timeout.min(slice).max(Duration::from_millis(1))))
                .map_err(|e| StepError::new(Step::Recv, &e))?;
        }
        self.recv_until_eof_sliced(timeout, stop)
    }

    /// [`Self::recv_until_eof_interruptible`] for a socket from
    /// [`Self::accept_timed`] on a listener whose
    /// [`Self::set_accept_timeout`] was set before listen(): on Linux the
    /// accepted socket already waits in slices that short, as it inherits
    /// the listener's SO_RCVTIMEO (sk_clone_lock() copies `sk_rcvtimeo`
    /// into the child), so a busy server pays no setsockopt per connection.
    pub fn recv_until_eof_accepted(
        &mut self,
        timeout: Duration,
        slice: Duration,
        stop: impl Fn() -> bool,
    ) -> StepRes<usize> {
        #[cfg(target_os = "linux")]
        {
            let _ = slice;
            self.recv_until_eof_sliced(timeout, stop)
        }
        #[cfg(not(target_os = "linux"))]
        self.recv_until_eof_interruptible(timeout, slice, stop)
    }

    /// The reads of [`Self::recv_until_eof_interruptible`], with SO_RCVTIMEO
    /// already set to the slice.
    #[cfg(not(windows))]
    fn recv_until_eof_sliced(
        &mut self,
        timeout: Duration,
        stop: impl Fn() -> bool,
    ) -> StepRes<usize> {
        use crate::sys::err;
        let step = |code: i32| StepError::new(Step::Recv, &io::Error::from_raw_os_error(code));
        let start = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        let mut total = 0;
        loop {
            match (&self.sock).read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop() {
                        return Err(step(err::INTERRUPTED));
                    }
                    if start.elapsed() >= timeout {
                        return Err(step(err::TIMED_OUT));
                    }
                }
                Err(e) => return Err(StepError::new(Step::Recv, &e)),
            }
        }
    }

    /// [`Self::recv_until_eof_interruptible`] on Windows: a read that ran
    /// into SO_RCVTIMEO leaves a Winsock socket "in an indeterminate state"
    /// (Microsoft's SO_RCVTIMEO documentation), so wait for data with
    /// WSAPoll() in slices and read only when there is something to read.
    #[cfg(windows)]
    fn recv_until_eof_polled(
        &mut self,
        timeout: Duration,
        slice: Duration,
        stop: impl Fn() -> bool,
    ) -> StepRes<usize> {
        use crate::sys::{Ready, err};
        let step = |code: i32| StepError::new(Step::Recv, &io::Error::from_raw_os_error(code));
        let start = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        let mut total = 0;
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(step(err::TIMED_OUT));
            }
            let ready = crate::sys::wait(&self.sock, Ready::Read, left.min(slice))
                .map_err(|e| StepError::new(Step::Recv, &e))?;
            if ready {
                match (&self.sock).read(&mut buf) {
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(StepError::new(Step::Recv, &e)),
                }
            } else if stop() {
                return Err(step(err::INTERRUPTED));
            }
        }
    }
}

/// Wait until `sock` is readable (a connection to accept, data or EOF),
/// at most `timeout` (then `TimedOut`). A signal cuts a wait short on
/// Unix; the wait goes on for what is left of `timeout`.
pub(super) fn wait_readable(sock: &Socket, timeout: Duration) -> io::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if crate::sys::wait(sock, crate::sys::Ready::Read, left)? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
    }
}
