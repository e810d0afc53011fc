//! Bound-only sockets (bind() without listen() or connect()): the kernel
//! dumps them only when `idiag_states` has bit 13 (TCP_BOUND_INACTIVE,
//! `inet_diag_dump_icsk()` walking the bind hash), which `diag::dump` does
//! not send today (the sock-diag crate's `StateFlags::from_bits_truncate`
//! drops the bit). A separate request, kept apart from `diag` until its
//! rewrite can ask for the bit itself; the entries are decoded by
//! `diag::parse_inet_diag_msg`, like every other.

use crate::diag::SockEntry;
use crate::{Error, Result};

/// TCPF_BOUND_INACTIVE (include/net/tcp_states.h).
const TCPF_BOUND_INACTIVE: u32 = 1 << 13;

/// Every bound-only TCP socket of the calling thread's namespace (Linux
/// 6.7+; older kernels return none).
#[cfg(target_os = "linux")]
pub(crate) fn dump_bound_only() -> Result<Vec<SockEntry>> {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage};
    use netlink_packet_sock_diag::{
        SockDiagMessage,
        constants::IPPROTO_TCP,
        inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    };
    use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};

    let err = |what: &str, e: std::io::Error| Error::Diag(format!("bound-only dump: {what}: {e}"));
    let mut out = Vec::new();
    for (family, socket_id) in [
        (libc::AF_INET as u8, SocketId::new_v4()),
        (libc::AF_INET6 as u8, SocketId::new_v6()),
    ] {
        let mut sock = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| err("socket", e))?;
        sock.bind_auto().map_err(|e| err("bind", e))?;
        sock.connect(&NlAddr::new(0, 0))
            .map_err(|e| err("connect", e))?;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut msg = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::from_bits_retain(TCPF_BOUND_INACTIVE),
                socket_id,
            })
            .into(),
        );
        msg.finalize();
        let mut req = vec![0u8; msg.header.length as usize];
        msg.serialize(&mut req[..]);
        sock.send(&req, 0).map_err(|e| err("send", e))?;
        read_dump(&sock, &mut out).map_err(|e| err("recv", e))?;
    }
    Ok(out)
}

/// Read one dump's answers until NLMSG_DONE (bounded).
#[cfg(target_os = "linux")]
fn read_dump(sock: &netlink_sys::Socket, out: &mut Vec<SockEntry>) -> std::io::Result<()> {
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded: a dump ends with NLMSG_DONE; 100k reads of 32 KiB is far
    // beyond any bind table.
    for _ in 0..100_000 {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        if n == 0 {
            return Ok(());
        }
        let mut off = 0;
        while off + 16 <= n {
            let b = &buf[off..n];
            let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let ty = u16::from_ne_bytes([b[4], b[5]]);
            if len < 16 || len > b.len() {
                return Ok(());
            }
            match ty {
                // An error (an old kernel refusing the bit) means: none.
                NLMSG_DONE | NLMSG_ERROR => return Ok(()),
                SOCK_DIAG_BY_FAMILY => out.extend(crate::diag::parse_inet_diag_msg(&b[16..len])),
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
    Ok(())
}

/// Other systems have no sock_diag.
#[cfg(not(target_os = "linux"))]
pub(crate) fn dump_bound_only() -> Result<Vec<SockEntry>> {
    let _ = TCPF_BOUND_INACTIVE;
    Ok(Vec::new())
}
