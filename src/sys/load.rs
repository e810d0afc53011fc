//! Linux-only socket options and counters `twlab load` uses.

use std::os::fd::AsRawFd;

/// `IP_LOCAL_PORT_RANGE` (Linux 6.3+, include/uapi/linux/in.h): a
/// per-socket narrowing of `ip_local_port_range`, low port in the low 16
/// bits, high port in the high 16 bits. Not in the libc crate yet.
const IP_LOCAL_PORT_RANGE: libc::c_int = 51;

fn set_int(fd: &impl AsRawFd, name: libc::c_int, v: u32) -> std::io::Result<()> {
    let v = v as libc::c_int;
    // SAFETY: a valid fd, a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `IP_BIND_ADDRESS_NO_PORT`: bind(ip, 0) fixes the address only; the port
/// is picked at connect() time per 4-tuple (`__inet_hash_connect`), not by
/// bind() for every destination at once.
pub(crate) fn set_bind_address_no_port(fd: &impl AsRawFd) -> std::io::Result<()> {
    set_int(fd, libc::IP_BIND_ADDRESS_NO_PORT, 1)
}

/// `IP_LOCAL_PORT_RANGE` = `low..=high` for this socket.
pub(crate) fn set_local_port_range(fd: &impl AsRawFd, low: u16, high: u16) -> std::io::Result<()> {
    set_int(fd, IP_LOCAL_PORT_RANGE, (high as u32) << 16 | low as u32)
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (a process may, without
/// privilege: setrlimit(2)); returns the limit now in force. Tens of
/// thousands of held connections need as many descriptors (twice with the
/// in-process server), and a soft limit of 1,024 or 20,000 would end the
/// run in EMFILE instead of at the limit it measures.
pub(crate) fn raise_nofile() -> std::io::Result<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a pointer to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if l.rlim_cur < l.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: l.rlim_max,
            rlim_max: l.rlim_max,
        };
        // SAFETY: a pointer to a live rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(l.rlim_cur)
}
