//! AF_PACKET sockets: the raw calls behind `twlab trace`'s capture and its
//! delay box, which holds one frame back and sends it late (see
//! the `trace` module).
//!
//! A packet socket bound to one interface sees every frame the interface
//! sends or receives (`packet_rcv`, reached from `dev_queue_xmit_nit` for
//! sent frames and from `__netif_receive_skb_core` for received ones). On
//! `lo` a frame is both, so it is seen twice: once with `sll_pkttype` =
//! `PACKET_OUTGOING`, once as `PACKET_HOST`.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `sll_pkttype` of a frame the interface sent (linux/if_packet.h).
pub(crate) const PACKET_OUTGOING: u8 = 4;

/// One frame read from a packet socket.
pub(crate) struct Frame {
    /// The bytes, from the link-layer header on.
    pub(crate) data: Vec<u8>,
    /// `sll_pkttype`: [`PACKET_OUTGOING`] for a frame this host sent.
    pub(crate) pkttype: u8,
    /// When the kernel saw it: the skb's receive timestamp
    /// (SCM_TIMESTAMPNS, CLOCK_REALTIME, stamped by net_timestamp_check()
    /// as the frame entered the stack).
    pub(crate) wall: SystemTime,
}

/// A packet socket bound to one interface of the calling thread's network
/// namespace (the socket stays in that namespace whatever thread reads it).
pub(crate) struct PacketSocket {
    fd: OwnedFd,
    /// The bound interface, where send() puts frames.
    ifindex: i32,
}

fn ifindex(name: &str) -> io::Result<i32> {
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i as i32)
}

fn sockaddr_ll(ifindex: i32) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sa.sll_ifindex = ifindex;
    sa
}

impl PacketSocket {
    /// socket(AF_PACKET, SOCK_RAW, ETH_P_ALL) bound to `ifname`. Needs
    /// CAP_NET_RAW in the namespace's owning user namespace.
    pub(crate) fn open(ifname: &str) -> io::Result<Self> {
        let index = ifindex(ifname)?;
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain syscall; the result is checked.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Ask for receive timestamps in nanoseconds now, so every frame is
        // stamped when the stack sees it (net_timestamp_check()) and each
        // recvmsg() hands that stamp over as SCM_TIMESTAMPNS. (SIOCGSTAMP
        // is no substitute: with SO_TIMESTAMP* set, sock_recv_timestamp()
        // leaves sk_stamp alone, and the ioctl then reports a read time,
        // measured here up to 5 ms after the frame.)
        let on: libc::c_int = 1;
        // SAFETY: one c_int option value.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let sa = sockaddr_ll(index);
        // SAFETY: `sa` is a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex: index })
    }

    /// The next frame, or `None` if none came within `timeout`.
    pub(crate) fn recv(&self, timeout: Duration) -> io::Result<Option<Frame>> {
        if readable(&[self], timeout)?.is_empty() {
            return Ok(None);
        }
        self.recv_now()
    }

    /// The next frame if one is queued now, else `None`.
    pub(crate) fn recv_now(&self) -> io::Result<Option<Frame>> {
        let mut buf = vec![0u8; 65_536 + 64];
        // SAFETY: all-zero sockaddr_ll is valid; recvmsg fills it.
        let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
        // Room for one SCM_TIMESTAMPNS (a timespec), aligned for cmsghdr.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut sa as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 8]>() as _;
        // SAFETY: every pointer in `msg` is valid for the lengths given.
        let got = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if got < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        buf.truncate(got as usize);
        let mut wall = None;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel
        // filled, within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    wall = Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok(Some(Frame {
            data: buf,
            pkttype: sa.sll_pkttype,
            wall: wall.unwrap_or_else(SystemTime::now),
        }))
    }

    /// Send one whole frame (link-layer header included) out of the bound
    /// interface.
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<()> {
        let sa = sockaddr_ll(self.ifindex);
        // SAFETY: frame and address are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Which of `socks` have a frame to read, waiting at most `timeout` for
/// one (poll(2)); empty on timeout or EINTR.
pub(crate) fn readable(socks: &[&PacketSocket], timeout: Duration) -> io::Result<Vec<usize>> {
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a valid array of pollfd of the length given.
    let n = unsafe {
        libc::poll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            timeout.as_millis() as i32,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Vec::new())
        } else {
            Err(e)
        };
    }
    Ok(pfds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents & libc::POLLIN != 0)
        .map(|(i, _)| i)
        .collect())
}

/// ioctl: ethtool requests (linux/sockios.h).
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// ethtool command: set TX checksum offload (linux/ethtool.h).
const ETHTOOL_STXCSUM: u32 = 0x17;

/// Turn TX checksum offload off on `ifname` (what `ethtool -K IF tx off`
/// does), in the calling thread's namespace. A veth end offloads by
/// default: the TCP checksum of a sent frame is left to be completed later
/// (CHECKSUM_PARTIAL), so a packet socket reads it unfinished, and a frame
/// a user-space bridge sends on would be dropped as corrupt.
pub(crate) fn tx_checksum_off(ifname: &str) -> io::Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut v = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    // SAFETY: all-zero ifreq is valid.
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::other("interface name too long"));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut v as *mut EthtoolValue).cast();
    // SAFETY: plain syscall; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `ifr` points at `v`, both live across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
