//! Windows: Winsock error names, SO_EXCLUSIVEADDRUSE, and waits on a socket
//! with WSAPoll().

use socket2::Socket;
use std::io;
use std::os::windows::io::AsRawSocket;
use std::time::Duration;
use windows_sys::Win32::Networking::WinSock as ws;

/// Symbolic name of a Winsock error, e.g. `WSAEADDRINUSE` for 10048.
pub fn errno_name(code: i32) -> String {
    match super::wsa::wsa_name(code) {
        Some(name) => name.to_string(),
        None => format!("WSA{code}"),
    }
}

/// SO_EXCLUSIVEADDRUSE is `~SO_REUSEADDR` (-5) in winsock2.h.
pub const SO_EXCLUSIVEADDRUSE: i32 = ws::SO_EXCLUSIVEADDRUSE;

/// Windows has SO_EXCLUSIVEADDRUSE.
pub const HAS_EXCLUSIVEADDRUSE: bool = true;

/// The OS name shown in reports.
pub const OS_NAME: &str = "Windows";

/// Winsock's numbers for the errors twlab reports itself, so they print as
/// Windows names them (libc's EINTR is 4 here, which Winsock never says).
pub(crate) mod err {
    use windows_sys::Win32::Networking::WinSock as ws;
    /// Interrupted (Ctrl-C).
    pub(crate) const INTERRUPTED: i32 = ws::WSAEINTR;
    /// A wait ran out.
    pub(crate) const TIMED_OUT: i32 = ws::WSAETIMEDOUT;
    /// The peer reset the connection.
    pub(crate) const CONN_RESET: i32 = ws::WSAECONNRESET;
    /// accept() gave an address that is not IPv4 or IPv6.
    pub(crate) const AF_NOT_SUPPORTED: i32 = ws::WSAEAFNOSUPPORT;
    /// A non-blocking connect() started and goes on in the background.
    pub(crate) const CONNECT_STARTED: i32 = ws::WSAEWOULDBLOCK;
    /// A socket option this system does not have (SO_REUSEPORT).
    pub(crate) const NO_PROTO_OPT: i32 = ws::WSAENOPROTOOPT;
}

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// A connection to accept, data or EOF.
    Read,
    /// A connect() that finished, well or not.
    Connected,
}

/// Wait at most `timeout` until `sock` is ready: `Ok(false)` if the time
/// ran out. WSAPoll() reports a pending connection on a listening socket
/// as POLLRDNORM, so accept() after it does not block; a failed connect()
/// shows as POLLERR/POLLHUP (as socket2's connect_timeout reads it).
pub(crate) fn wait(sock: &Socket, ready: Ready, timeout: Duration) -> io::Result<bool> {
    // Round up: a wait of 0.5 ms must not become a busy poll of 0 ms.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    let events = match ready {
        Ready::Read => ws::POLLRDNORM,
        Ready::Connected => ws::POLLRDNORM | ws::POLLWRNORM,
    };
    let mut fd = ws::WSAPOLLFD {
        fd: sock.as_raw_socket() as ws::SOCKET,
        events,
        revents: 0,
    };
    // SAFETY: one valid WSAPOLLFD for an open socket, and its count.
    match unsafe { ws::WSAPoll(&mut fd, 1, ms) } {
        0 => Ok(false),
        // SAFETY: no arguments; reads this thread's last Winsock error.
        ws::SOCKET_ERROR => Err(io::Error::from_raw_os_error(unsafe {
            ws::WSAGetLastError()
        })),
        _ => Ok(true),
    }
}

/// Set SO_EXCLUSIVEADDRUSE: no other socket may bind this address and port,
/// not even one with SO_REUSEADDR (Microsoft, "Using SO_REUSEADDR and
/// SO_EXCLUSIVEADDRUSE").
pub(crate) fn set_exclusive_addr_use(sock: &Socket) -> io::Result<()> {
    let on: i32 = 1;
    // SAFETY: a valid socket and an int option value of the right size.
    let r = unsafe {
        ws::setsockopt(
            sock.as_raw_socket() as ws::SOCKET,
            ws::SOL_SOCKET,
            ws::SO_EXCLUSIVEADDRUSE,
            &on as *const i32 as *const u8,
            std::mem::size_of::<i32>() as i32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        // SAFETY: as above.
        Err(io::Error::from_raw_os_error(unsafe {
            ws::WSAGetLastError()
        }))
    }
}
