//! Sockets as the experiment sees them: options chosen up front
//! ([`SocketOpts`]), and each socket call done as a separate, recorded step.
//!
//! socket2 gives the raw calls (bind, connect, listen, setsockopt) without
//! std's opinions: std's `TcpListener::bind` sets SO_REUSEADDR on its own on
//! Unix, which would hide exactly the rule twlab exists to show.

use crate::error::{Error, Result};
use crate::outcome::{Step, StepResult, SysError};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Parse `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
///
/// Names other than `localhost` are refused on purpose: twlab only talks to
/// loopback and to namespaces it made, and a DNS lookup would leave the host.
pub fn parse_endpoint(input: &str) -> Result<SocketAddr> {
    let bad = |why: &str| Error::BadAddress {
        input: input.to_string(),
        why: why.to_string(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = parse_port(port).map_err(|w| bad(&w))?;
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
    }
    // Give the most useful reason we can.
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => return Err(bad("the port is missing")),
        Ok(IpAddr::V6(_)) => {
            return Err(bad(
                "the port is missing (an IPv6 address with a port is written [ADDR]:PORT)",
            ));
        }
        Err(_) => {}
    }
    if s.starts_with(':') || s.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("the IP address is missing"));
    }
    if s.matches(':').count() > 1 && !s.starts_with('[') {
        return Err(bad("an IPv6 address needs brackets before the port"));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            if let Err(w) = parse_port(port) {
                return Err(bad(&w));
            }
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.parse::<IpAddr>().is_err() {
                return Err(bad(&format!("'{host}' is not an IP address")));
            }
            Err(bad("cannot parse"))
        }
        None => Err(bad("the port is missing")),
    }
}

fn parse_port(p: &str) -> std::result::Result<u16, String> {
    match p.parse::<u32>() {
        Ok(n) if n <= 65535 => Ok(n as u16),
        Ok(n) => Err(format!("port {n} is out of range 0-65535")),
        Err(_) => Err(format!("'{p}' is not a port number")),
    }
}

/// IP version of an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: &SocketAddr) -> Self {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    /// 127.0.0.1 or ::1.
    pub fn loopback(self) -> IpAddr {
        match self {
            Family::V4 => Ipv4Addr::LOCALHOST.into(),
            Family::V6 => Ipv6Addr::LOCALHOST.into(),
        }
    }
    /// socket2's domain for socket().
    pub fn domain(self) -> Domain {
        match self {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        }
    }
    /// "IPv4" / "IPv6".
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// IPV6_V6ONLY on an IPv6 socket: whether a socket on `::` also takes the
/// IPv4 addresses (dual-stack) of its port.
///
/// `System` leaves the kernel's default, which `inet6_create()` copies from
/// `net.ipv6.bindv6only` (0, dual-stack, on every default Linux; Windows
/// defaults to V6ONLY on). A specific non-mapped IPv6 address makes the
/// socket v6-only anyway (`__inet6_bind()` sets `sk_ipv6only`), and a
/// v4-mapped address on a v6-only socket is refused with EINVAL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum V6Only {
    /// Whatever `net.ipv6.bindv6only` says (what real programs get).
    #[default]
    System,
    /// IPV6_V6ONLY = 1: the socket never takes IPv4 traffic.
    On,
    /// IPV6_V6ONLY = 0: dual-stack, `::` also covers `0.0.0.0`.
    Off,
}

impl V6Only {
    /// The value the socket ends up with, `sysctl_bindv6only` being the
    /// namespace's `net.ipv6.bindv6only`.
    pub fn resolve(self, sysctl_bindv6only: bool) -> bool {
        match self {
            V6Only::System => sysctl_bindv6only,
            V6Only::On => true,
            V6Only::Off => false,
        }
    }

    /// The setsockopt value to apply, `None` for the system default.
    pub fn explicit(self) -> Option<bool> {
        match self {
            V6Only::System => None,
            V6Only::On => Some(true),
            V6Only::Off => Some(false),
        }
    }
}

/// "dual-stack" / "v6-only": what an IPv6 socket's IPV6_V6ONLY means.
pub fn v6only_word(v6only: bool) -> &'static str {
    if v6only { "v6-only" } else { "dual-stack" }
}

/// The socket options that decide address reuse. Options left out of a
/// scenario file are off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketOpts {
    /// SO_REUSEADDR.
    pub reuseaddr: bool,
    /// SO_REUSEPORT (Linux, BSD, macOS; absent on Windows).
    pub reuseport: bool,
    /// SO_LINGER {on, secs}; `Some(0)` makes close() send RST and skip
    /// TIME_WAIT (tcp_close → tcp_disconnect path, RFC 793 "ABORT").
    pub linger: Option<u32>,
    /// IP_BIND_ADDRESS_NO_PORT: with bind(addr, 0), defer the port choice to
    /// connect() so the 4-tuple can be checked as a whole (Linux 4.2+).
    pub bind_no_port: bool,
    /// IPV6_V6ONLY for IPv6 sockets (ignored for IPv4 ones).
    pub v6only: V6Only,
}

impl SocketOpts {
    /// "REUSEADDR+LINGER0", or "none".
    pub fn label(&self) -> String {
        let mut v = Vec::new();
        if self.reuseaddr {
            v.push("REUSEADDR".to_string());
        }
        if self.reuseport {
            v.push("REUSEPORT".to_string());
        }
        if let Some(s) = self.linger {
            v.push(format!("LINGER{s}"));
        }
        if self.bind_no_port {
            v.push("BIND_NO_PORT".to_string());
        }
        match self.v6only {
            V6Only::System => {}
            V6Only::On => v.push("V6ONLY".to_string()),
            V6Only::Off => v.push("V6ONLY=0".to_string()),
        }
        if v.is_empty() {
            "none".into()
        } else {
            v.join("+")
        }
    }
}

/// A TCP socket created with [`SocketOpts`], each call recorded as a step.
#[derive(Debug)]
pub struct TcpSock {
    /// The socket itself.
    pub sock: Socket,
    /// The options it was created with.
    pub opts: SocketOpts,
}

/// A failed step: which call, and the OS error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// The call that failed.
    pub step: Step,
    /// Its error, by name.
    pub error: SysError,
    /// std's classification of the error.
    pub io_kind: io::ErrorKind,
}

impl StepError {
    /// The error of `step` from an io error.
    pub fn from_io(step: Step, e: &io::Error) -> Self {
        Self::new(step, e)
    }

    fn new(step: Step, e: &io::Error) -> Self {
        StepError {
            step,
            error: SysError::from_io(e),
            io_kind: e.kind(),
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}() failed: {}", self.step, self.error)
    }
}

/// The result of one step.
pub type StepRes<T> = std::result::Result<T, StepError>;

impl TcpSock {
    /// socket() and the options, in the order a C program would set them.
    pub fn new(family: Family, opts: SocketOpts) -> StepRes<Self> {
        let sock = Socket::new(family.domain(), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| StepError::new(Step::Socket, &e))?;
        let set = |r: io::Result<()>| r.map_err(|e| StepError::new(Step::SetOpt, &e));
        // Off is every system's default: one system call saved per socket.
        if opts.reuseaddr {
            set(sock.set_reuse_address(true))?;
        }
        #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
        if opts.reuseport {
            set(sock.set_reuse_port(true))?;
        }
        #[cfg(not(unix))]
        if opts.reuseport {
            // Windows has no SO_REUSEPORT; say so instead of ignoring it.
            return Err(StepError {
                step: Step::SetOpt,
                error: SysError::from_code(crate::sys::err::NO_PROTO_OPT),
                io_kind: io::ErrorKind::Unsupported,
            });
        }
        if let Some(secs) = opts.linger {
            set(sock.set_linger(Some(Duration::from_secs(secs as u64))))?;
        }
        #[cfg(target_os = "linux")]
        if opts.bind_no_port {
            set(sys_set_bind_no_port(&sock))?;
        }
        if family == Family::V6 {
            // Like a C program: only touch IPV6_V6ONLY when asked, so the
            // default follows net.ipv6.bindv6only (inet6_create()).
            if let Some(on) = opts.v6only.explicit() {
                set(sock.set_only_v6(on))?;
            }
        }
        Ok(TcpSock { sock, opts })
    }

    /// IPV6_V6ONLY as the kernel has it (getsockopt), `None` for IPv4.
    pub fn v6only(&self) -> Option<bool> {
        // getsockname() tells the family even before bind().
        match self.sock.local_addr().ok().and_then(|a| a.as_socket()) {
            Some(SocketAddr::V6(_)) => self.sock.only_v6().ok(),
            _ => None,
        }
    }

    /// "dual-stack, REUSEADDR", "v6-only, none", or the options alone for
    /// IPv4: what the socket really is, read back from the kernel.
    pub fn label(&self) -> String {
        match self.v6only() {
            Some(v) => {
                let mut o = self.opts;
                o.v6only = V6Only::System;
                format!("{}, {}", v6only_word(v), o.label())
            }
            None => self.opts.label(),
        }
    }

    /// bind().
    pub fn bind(&self, addr: SocketAddr) -> StepRes<()> {
        self.sock
            .bind(&SockAddr::from(addr))
            .map_err(|e| StepError::new(Step::Bind, &e))
    }

    /// listen() with this queue length.
    pub fn listen(&self, backlog: i32) -> StepRes<()> {
        self.sock
            .listen(backlog)
            .map_err(|e| StepError::new(Step::Listen, &e))
    }

    /// Blocking connect with a timeout (loopback answers at once; the timeout
    /// only guards against a peer namespace that drops SYNs).
    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> StepRes<()> {
        #[cfg(target_os = "linux")]
        {
            // One blocking connect() bounded by SO_SNDTIMEO (Linux's
            // __inet_stream_connect() waits sk_sndtimeo), instead of
            // non-blocking connect + poll + two fcntl calls: the story's
            // loop pays this per attempt.
            let step = |e: &io::Error| StepError::new(Step::Connect, e);
            self.sock
                .set_write_timeout(Some(timeout))
                .map_err(|e| step(&e))?;
            match self.sock.connect(&SockAddr::from(addr)) {
                Ok(()) => Ok(()),
                // The timeout ran out with the handshake still under way.
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    Err(step(&io::Error::from_raw_os_error(libc::ETIMEDOUT)))
                }
                Err(e) => Err(step(&e)),
            }
        }
        #[cfg(not(target_os = "linux"))]
        self.sock
            .connect_timeout(&SockAddr::from(addr), timeout)
            .map_err(|e| StepError::new(Step::Connect, &e))
    }

    /// accept() with a timeout, so a lost SYN never hangs the experiment.
    pub fn accept(&self, timeout: Duration) -> StepRes<(TcpSock, SocketAddr)> {
        wait_readable(&self.sock, timeout).map_err(|e| StepError::new(Step::Accept, &e))?;
        self.accept_now()
    }

    /// How long [`Self::accept_timed`] waits. On Linux this is
    /// SO_RCVTIMEO, which bounds a blocking accept() (inet_csk_accept()
    /// waits sock_rcvtimeo); set it only when it changes, so a busy
    /// listener pays one accept() per connection, like C.
    pub fn set_accept_timeout(&self, timeout: Duration) -> StepRes<()> {
        #[cfg(target_os = "linux")]
        {
            self.sock
                .set_read_timeout(Some(timeout))
                .map_err(|e| StepError::new(Step::Accept, &e))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = timeout;
            Ok(())
        }
    }

    /// accept(), waiting at most `timeout`, which must be what
    /// [`Self::set_accept_timeout`] last set: `None` if no connection came
    /// (or a signal interrupted the wait).
    pub fn accept_timed(&self, timeout: Duration) -> StepRes<Option<(TcpSock, SocketAddr)>> {
        #[cfg(not(target_os = "linux"))]
        match wait_readable(&self.sock, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(None),
            Err(e) => return Err(StepError::new(Step::Accept, &e)),
        }
        #[cfg(target_os = "linux")]
        let _ = timeout;
        match self.accept_now() {
            Ok(c) => Ok(Some(c)),
            Err(e)
                if matches!(
                    e.io_kind,
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn accept_now(&self) -> StepRes<(TcpSock, SocketAddr)> {
        let (s, a) = self
            .sock
            .accept()
            .map_err(|e| StepError::new(Step::Accept, &e))?;
        let peer = a.as_socket().ok_or_else(|| StepError {
            step: Step::Accept,
            error: SysError::from_code(crate::sys::err::AF_NOT_SUPPORTED),
            io_kind: io::ErrorKind::Other,
        })?;
        Ok((
            TcpSock {
                sock: s,
                opts: self.opts,
            },
            peer,
        ))
    }

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
            let step =
                |code: i32| StepError::new(Step::Connect, &io::Error::from_raw_os_error(code));
            let start = std::time::Instant::now();
            let first = timeout.min(slice).max(Duration::from_millis(1));
            self.sock
                .set_write_timeout(Some(first))
                .map_err(|e| StepError::new(Step::Connect, &e))?;
            loop {
                // A blocking connect() on a socket still in SYN_SENT waits
                // again for SO_SNDTIMEO and says EALREADY if it runs out
                // (__inet_stream_connect(), case SS_CONNECTING), or 0 once
                // the handshake completed: the same call resumes the wait.
                match self.sock.connect(&SockAddr::from(addr)) {
                    Ok(()) => return Ok(()),
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EINPROGRESS | libc::EALREADY | libc::EINTR)
                        ) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EISCONN) => return Ok(()),
                    Err(e) => return Err(StepError::new(Step::Connect, &e)),
                }
                if stop() {
                    return Err(step(libc::EINTR));
                }
                if start.elapsed() >= timeout {
                    return Err(step(libc::ETIMEDOUT));
                }
            }
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
        self.sock
            .set_read_timeout(Some(timeout.min(slice).max(Duration::from_millis(1))))
            .map_err(|e| StepError::new(Step::Recv, &e))?;
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

    /// SO_EXCLUSIVEADDRUSE (Windows only): no other socket may bind this
    /// socket's address and port, whatever options it sets. Elsewhere the
    /// option does not exist: ENOPROTOOPT, as setsockopt() would say.
    pub fn set_exclusive_addr_use(&self) -> StepRes<()> {
        #[cfg(windows)]
        {
            crate::sys::set_exclusive_addr_use(&self.sock)
                .map_err(|e| StepError::new(Step::SetOpt, &e))
        }
        #[cfg(not(windows))]
        Err(StepError {
            step: Step::SetOpt,
            error: SysError::from_code(libc::ENOPROTOOPT),
            io_kind: io::ErrorKind::Unsupported,
        })
    }

    /// getsockname().
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.sock.local_addr().ok().and_then(|a| a.as_socket())
    }

    /// getpeername().
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.sock.peer_addr().ok().and_then(|a| a.as_socket())
    }

    /// close(): with SO_LINGER {on, 0} this sends RST.
    pub fn close(self) {
        drop(self.sock);
    }
}

/// IP_BIND_ADDRESS_NO_PORT (Linux 4.2+; socket2 has no setter for it).
#[cfg(target_os = "linux")]
fn sys_set_bind_no_port(sock: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Wait until `sock` is readable (a connection to accept, data or EOF),
/// at most `timeout` (then `TimedOut`). A signal cuts a wait short on
/// Unix; the wait goes on for what is left of `timeout`.
fn wait_readable(sock: &Socket, timeout: Duration) -> io::Result<()> {
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

/// Turn a failed step of a user-facing command into the one-line error the
/// CLI prints, recognising the common faults (port in use, privileged port,
/// connection refused).
pub fn explain_step_error(e: &StepError, addr: SocketAddr) -> Error {
    let err = e.error.clone();
    match (e.step, e.io_kind) {
        (Step::Bind, io::ErrorKind::AddrInUse) => Error::AddrInUse { addr, err },
        (Step::Bind, io::ErrorKind::PermissionDenied) => Error::PrivilegedPort { addr, err },
        (Step::Connect, io::ErrorKind::ConnectionRefused) => Error::Refused { addr, err },
        _ => Error::Sys {
            what: format!("{} {addr}", e.step),
            err,
        },
    }
}

/// Convert a step result for reports.
pub fn step_result<T>(r: &StepRes<T>) -> StepResult {
    match r {
        Ok(_) => StepResult::Ok,
        Err(e) => StepResult::Err {
            error: e.error.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            parse_endpoint("127.0.0.1:12345").unwrap(),
            "127.0.0.1:12345".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_endpoint("[::1]:80").unwrap(),
            "[::1]:80".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_endpoint(" localhost:23456 ").unwrap(),
            "127.0.0.1:23456".parse::<SocketAddr>().unwrap()
        );
    }

    fn why(input: &str) -> String {
        match parse_endpoint(input) {
            Err(Error::BadAddress { why, .. }) => why,
            other => panic!("{input}: expected BadAddress, got {other:?}"),
        }
    }

    #[test]
    fn malformed_endpoints_say_why() {
        assert_eq!(why(""), "empty");
        assert_eq!(why("127.0.0.1"), "the port is missing");
        assert_eq!(why("12345"), "the IP address is missing");
        assert_eq!(why(":12345"), "the IP address is missing");
        assert_eq!(why("127.0.0.1:70000"), "port 70000 is out of range 0-65535");
        assert_eq!(why("127.0.0.1:http"), "'http' is not a port number");
        assert_eq!(why("example.com:80"), "'example.com' is not an IP address");
        assert_eq!(
            why("::1:80"),
            "the port is missing (an IPv6 address with a port is written [ADDR]:PORT)"
        );
        assert_eq!(
            why("fe80::1::80"),
            "an IPv6 address needs brackets before the port"
        );
        assert_eq!(why("300.1.1.1:80"), "'300.1.1.1' is not an IP address");
    }

    #[test]
    fn option_labels() {
        assert_eq!(SocketOpts::default().label(), "none");
        let o = SocketOpts {
            reuseaddr: true,
            linger: Some(0),
            ..Default::default()
        };
        assert_eq!(o.label(), "REUSEADDR+LINGER0");
    }
}
