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
    /// A socket that is closed already (a scenario step on a closed socket).
    pub(crate) const BAD_FD: i32 = ws::WSAEBADF;
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

/// The whole TCP table, IPv4 then IPv6, with each socket's state and owning
/// process: `GetExtendedTcpTable(.., TCP_TABLE_OWNER_PID_ALL)` (iphlpapi),
/// what `netstat -ano` shows. No timers: Windows' table has none. Under
/// Wine the same call answers from the host's /proc/net/tcp (nsiproxy), so
/// this path runs there with Linux's states.
pub(crate) fn tcp_table() -> io::Result<super::tcp_table::Table> {
    let mut rows = read_tcp_table(ws::AF_INET)
        .and_then(|b| super::tcp_table::parse_mib_v4(&b).map_err(io::Error::other))?;
    rows.extend(
        read_tcp_table(ws::AF_INET6)
            .and_then(|b| super::tcp_table::parse_mib_v6(&b).map_err(io::Error::other))?,
    );
    Ok(super::tcp_table::Table {
        numbering: super::tcp_table::Numbering::Mib,
        rows,
    })
}

/// One family's `MIB_TCP[6]TABLE_OWNER_PID`, as bytes. The table can grow
/// between the call that sizes it and the call that fills it: retried,
/// bounded.
fn read_tcp_table(family: ws::ADDRESS_FAMILY) -> io::Result<Vec<u8>> {
    use windows_sys::Win32::Foundation::{ERROR_INSUFFICIENT_BUFFER, NO_ERROR};
    use windows_sys::Win32::NetworkManagement::IpHelper::{
        GetExtendedTcpTable, TCP_TABLE_OWNER_PID_ALL,
    };
    let mut size: u32 = 0;
    for _ in 0..8 {
        // u32 storage: the rows are DWORDs, so the buffer is aligned for them.
        let mut buf: Vec<u32> = vec![0; (size as usize).div_ceil(4).max(1)];
        let mut len = (buf.len() * 4) as u32;
        // SAFETY: `buf` is writable for `len` bytes; the call writes at
        // most `len` bytes, or sets `len` to the size it needs and returns
        // ERROR_INSUFFICIENT_BUFFER.
        let r = unsafe {
            GetExtendedTcpTable(
                buf.as_mut_ptr().cast(),
                &mut len,
                0,
                u32::from(family),
                TCP_TABLE_OWNER_PID_ALL,
                0,
            )
        };
        if r == NO_ERROR {
            let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
            let n = (len as usize).min(bytes.len());
            return Ok(bytes[..n].to_vec());
        }
        if r != ERROR_INSUFFICIENT_BUFFER {
            return Err(io::Error::from_raw_os_error(r as i32));
        }
        // Room for the rows that appear before the next call.
        size = len.saturating_add(4096);
    }
    Err(io::Error::other(
        "GetExtendedTcpTable: the table kept growing",
    ))
}

/// The executable names of running processes by pid (a Toolhelp process
/// snapshot, as Task Manager lists them), for `twlab ss -p`. Empty if the
/// snapshot cannot be taken.
pub(crate) fn process_names() -> std::collections::HashMap<u32, String> {
    use windows_sys::Win32::Foundation::{CloseHandle, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW,
        TH32CS_SNAPPROCESS,
    };
    let mut names = std::collections::HashMap::new();
    // SAFETY: no pointers; returns a handle or INVALID_HANDLE_VALUE.
    let snap = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    if snap == INVALID_HANDLE_VALUE || snap.is_null() {
        return names;
    }
    let mut e = PROCESSENTRY32W {
        dwSize: std::mem::size_of::<PROCESSENTRY32W>() as u32,
        ..Default::default()
    };
    // SAFETY: a valid snapshot handle and an entry whose dwSize is set.
    let mut more = unsafe { Process32FirstW(snap, &mut e) } != 0;
    // Bounded: a snapshot lists each process once.
    while more {
        let end = e
            .szExeFile
            .iter()
            .position(|c| *c == 0)
            .unwrap_or(e.szExeFile.len());
        names.insert(
            e.th32ProcessID,
            String::from_utf16_lossy(&e.szExeFile[..end]),
        );
        // SAFETY: as above.
        more = unsafe { Process32NextW(snap, &mut e) } != 0;
    }
    // SAFETY: the handle is ours and closed once.
    unsafe { CloseHandle(snap) };
    names
}

/// Wine's version when this process runs under Wine (ntdll exports
/// `wine_get_version`), `None` on Windows itself. Under Wine, Winsock is the
/// host's Linux TCP: the outcomes are Linux's.
pub fn wine_version() -> Option<String> {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    // SAFETY: NUL-terminated names; ntdll is always loaded.
    let ntdll = unsafe { GetModuleHandleA(c"ntdll.dll".as_ptr().cast()) };
    if ntdll.is_null() {
        return None;
    }
    // SAFETY: a valid module handle and a NUL-terminated name.
    let f = unsafe { GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()) }?;
    // SAFETY: Wine's `const char *wine_get_version(void)`, returning a
    // static NUL-terminated string.
    let get: unsafe extern "C" fn() -> *const std::ffi::c_char = unsafe { std::mem::transmute(f) };
    // SAFETY: see above; checked for NULL before reading.
    let p = unsafe { get() };
    if p.is_null() {
        return Some("?".into());
    }
    // SAFETY: a NUL-terminated static string.
    Some(
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned(),
    )
}
