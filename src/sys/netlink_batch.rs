//! Reading several netlink datagrams with one system call (recvmmsg(2)),
//! without waiting: the sock_diag answers to exact lookups are queued on
//! the socket before the send that asked for them returns (the kernel
//! handles a request to NETLINK_SOCK_DIAG in the sender's context,
//! netlink_unicast_kernel() → sock_diag_rcv()), so one non-blocking read
//! takes them all.

use std::io;
use std::os::fd::RawFd;

/// The most datagrams one call reads.
pub(crate) const MAX_BATCH: usize = 4;

/// Read up to `want` (≤ [`MAX_BATCH`]) datagrams from `fd` into
/// consecutive slots of `buf`, each `buf.len() / want` bytes long, without
/// blocking (MSG_DONTWAIT). Returns each datagram's length; `WouldBlock`
/// if none is queued. A datagram longer than its slot is an error
/// (MSG_TRUNC), never silently cut.
pub(crate) fn recv_dontwait(
    fd: RawFd,
    buf: &mut [u8],
    want: usize,
) -> io::Result<([usize; MAX_BATCH], usize)> {
    let want = want.clamp(1, MAX_BATCH);
    let slot = buf.len() / want;
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut iov: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let base = buf.as_mut_ptr();
    for i in 0..want {
        // SAFETY: i * slot + slot <= buf.len(), so the slot is inside buf.
        iov[i].iov_base = unsafe { base.add(i * slot) }.cast();
        iov[i].iov_len = slot;
        hdrs[i].msg_hdr.msg_iov = &mut iov[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    let n = loop {
        // SAFETY: `hdrs[..want]` point at disjoint slots of `buf`, which
        // outlives the call; no address or control buffers are passed.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut lens = [0usize; MAX_BATCH];
    for i in 0..n {
        if hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(io::Error::other(format!(
                "a netlink answer longer than {slot} bytes was cut"
            )));
        }
        lens[i] = hdrs[i].msg_len as usize;
    }
    Ok((lens, n))
}
