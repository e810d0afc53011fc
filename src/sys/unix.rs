//! Shared by every Unix: errno names from nix (its `Errno` Debug form is the
//! symbolic name, e.g. `EADDRNOTAVAIL`; the numbers differ per OS), and
//! waits on a socket with poll(2).

use socket2::Socket;
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

/// Symbolic name of an errno value, e.g. `EADDRNOTAVAIL` for 99 on Linux.
pub fn errno_name(code: i32) -> String {
    let e = nix::errno::Errno::from_raw(code);
    if e == nix::errno::Errno::UnknownErrno {
        format!("E{code}")
    } else {
        format!("{e:?}")
    }
}

/// This system's numbers for the errors twlab reports itself (a wait it
/// cut short, a timeout it imposed), so they print as this system names them.
pub(crate) mod err {
    /// Interrupted (a stop signal).
    pub(crate) const INTERRUPTED: i32 = libc::EINTR;
    /// A wait ran out.
    pub(crate) const TIMED_OUT: i32 = libc::ETIMEDOUT;
    /// A socket that is closed already (a scenario step on a closed socket).
    pub(crate) const BAD_FD: i32 = libc::EBADF;
    /// The peer reset the connection.
    pub(crate) const CONN_RESET: i32 = libc::ECONNRESET;
    /// accept() gave an address that is not IPv4 or IPv6.
    pub(crate) const AF_NOT_SUPPORTED: i32 = libc::EAFNOSUPPORT;
    /// A non-blocking connect() started and goes on in the background.
    pub(crate) const CONNECT_STARTED: i32 = libc::EINPROGRESS;
}

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// A connection to accept, data or EOF.
    Read,
    /// A connect() that finished, well or not. (Linux connects with
    /// SO_SNDTIMEO instead: see `TcpSock::connect_interruptible`.)
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    Connected,
}

/// Wait at most `timeout` until `sock` is ready: `Ok(false)` if the time
/// ran out (or a signal interrupted the wait: the caller checks for stop
/// requests between waits).
pub(crate) fn wait(sock: &Socket, ready: Ready, timeout: Duration) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // Round up: a wait of 0.5 ms must not become a busy poll of 0 ms.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    let flags = match ready {
        Ready::Read => PollFlags::POLLIN,
        Ready::Connected => PollFlags::POLLOUT,
    };
    let mut fds = [PollFd::new(sock.as_fd(), flags)];
    match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

#[cfg(test)]
mod tests {
    use super::errno_name;

    /// Each Unix names its own numbers: the story's errors are 98/99/111 on
    /// Linux (asm-generic/errno.h) and 48/49/61 on macOS and FreeBSD
    /// (sys/errno.h), the BSD numbers Winsock's WSAE* codes add 10000 to.
    #[test]
    fn names_this_systems_numbers() {
        #[cfg(target_os = "linux")]
        let story = [
            (98, "EADDRINUSE"),
            (99, "EADDRNOTAVAIL"),
            (111, "ECONNREFUSED"),
        ];
        #[cfg(not(target_os = "linux"))]
        let story = [
            (48, "EADDRINUSE"),
            (49, "EADDRNOTAVAIL"),
            (61, "ECONNREFUSED"),
        ];
        for (code, name) in story {
            assert_eq!(errno_name(code), name);
        }
        assert_eq!(errno_name(100_000), "E100000");
    }
}
