//! macOS and FreeBSD: the TCP table through sysctl, as netstat reads it
//! (`net.inet.tcp.pcblist_n` on macOS, `net.inet.tcp.pcblist` on FreeBSD),
//! parsed by [`super::tcp_table`]. No timers are read.

use super::tcp_table::{Numbering, Table};
use std::io;

#[cfg(target_os = "macos")]
const NAME: &std::ffi::CStr = c"net.inet.tcp.pcblist_n";
#[cfg(target_os = "freebsd")]
const NAME: &std::ffi::CStr = c"net.inet.tcp.pcblist";

/// The sysctl's bytes. The list can grow between the call that sizes it and
/// the call that fills it (ENOMEM): retried with room to spare, bounded.
fn read_sysctl() -> io::Result<Vec<u8>> {
    for _ in 0..8 {
        let mut len: libc::size_t = 0;
        // SAFETY: a NUL-terminated name; a NULL buffer asks for the size.
        let r = unsafe {
            libc::sysctlbyname(
                NAME.as_ptr(),
                std::ptr::null_mut(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        len = len.saturating_add(len / 4).saturating_add(4096);
        // u64 storage: the records hold 8-byte fields.
        let mut buf: Vec<u64> = vec![0; len.div_ceil(8)];
        let mut got: libc::size_t = buf.len() * 8;
        // SAFETY: `buf` is writable for `got` bytes; the call writes at most
        // that and sets `got` to what it wrote.
        let r = unsafe {
            libc::sysctlbyname(
                NAME.as_ptr(),
                buf.as_mut_ptr().cast(),
                &mut got,
                std::ptr::null_mut(),
                0,
            )
        };
        if r == 0 {
            let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
            return Ok(bytes[..got.min(bytes.len())].to_vec());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOMEM) {
            return Err(e);
        }
    }
    Err(io::Error::other(format!(
        "{}: the table kept growing",
        NAME.to_string_lossy()
    )))
}

/// Every TCP socket of this system, with its state (BSD numbering).
pub(crate) fn tcp_table() -> io::Result<Table> {
    let bytes = read_sysctl()?;
    #[cfg(target_os = "macos")]
    let rows = super::tcp_table::parse_macos_pcblist_n(&bytes);
    #[cfg(target_os = "freebsd")]
    let rows = super::tcp_table::parse_freebsd_pcblist(&bytes);
    Ok(Table {
        numbering: Numbering::Bsd,
        rows: rows.map_err(io::Error::other)?,
    })
}

/// One int sysctl by name.
fn int_sysctl(name: &std::ffi::CStr) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len: libc::size_t = std::mem::size_of::<libc::c_int>();
    // SAFETY: a NUL-terminated name and an int-sized buffer with its size.
    let r = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// The ephemeral port range, `net.inet.ip.portrange.first` and `.last`.
pub(crate) fn port_range() -> io::Result<(u16, u16)> {
    let first = int_sysctl(c"net.inet.ip.portrange.first")?;
    let last = int_sysctl(c"net.inet.ip.portrange.last")?;
    let port = |v: i32| u16::try_from(v).map_err(|_| io::Error::other(format!("port {v}")));
    let (a, b) = (port(first)?, port(last)?);
    Ok((a.min(b), a.max(b)))
}
