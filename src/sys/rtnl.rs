//! A synchronous rtnetlink client (NETLINK_ROUTE, netlink-packet-route's
//! messages over a netlink-sys socket): veth pairs, links up, IPv4
//! addresses and the netem qdisc, in the calling thread's network
//! namespace, so twlab needs no iproute2 at run time.
//!
//! Each request carries NLM_F_ACK and waits for its NLMSG_ERROR answer
//! (`netlink_ack()`, net/netlink/af_netlink.c), under SO_RCVTIMEO; a NACK
//! becomes the errno the kernel returned.

use netlink_packet_core::DefaultNla;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use netlink_sys::{Socket, SocketAddr as NlAddr, constants::NETLINK_ROUTE};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

/// How long one request may wait for its answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// Datagrams read while waiting for one answer (other answers, if any,
/// are skipped): a bound, not an expected count.
const MAX_READS: usize = 64;
/// TCA_OPTIONS (include/uapi/linux/rtnetlink.h).
const TCA_OPTIONS: u16 = 2;

/// An rtnetlink request that failed.
#[derive(Debug)]
pub(crate) struct RtnlError {
    /// What was asked, in iproute2's words (`link add m0 type veth`).
    pub(crate) what: String,
    /// The errno, when the kernel answered with one.
    pub(crate) errno: Option<i32>,
    /// The text.
    pub(crate) detail: String,
}

impl std::fmt::Display for RtnlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rtnetlink `{}`: {}", self.what, self.detail)
    }
}

/// One NETLINK_ROUTE socket in the namespace of the thread that opened it
/// (a socket belongs to its creator's namespace, `__netlink_create()` →
/// `sock_net_set(sk, net)`, whatever thread uses it later).
pub(crate) struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn io_err(what: &str, e: std::io::Error) -> RtnlError {
    RtnlError {
        what: what.into(),
        errno: e.raw_os_error(),
        detail: e.to_string(),
    }
}

impl Rtnl {
    /// Open a NETLINK_ROUTE socket in the calling thread's namespace.
    pub(crate) fn open() -> Result<Self, RtnlError> {
        let mut sock =
            Socket::new(NETLINK_ROUTE).map_err(|e| io_err("socket(NETLINK_ROUTE)", e))?;
        sock.bind_auto().map_err(|e| io_err("bind", e))?;
        sock.connect(&NlAddr::new(0, 0))
            .map_err(|e| io_err("connect", e))?;
        let tv = nix::sys::time::TimeVal::new(ANSWER_WAIT.as_secs() as i64, 0);
        // SAFETY: the descriptor is the socket's own, open while `sock` is.
        let fd = unsafe { BorrowedFd::borrow_raw(sock.as_raw_fd()) };
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| io_err("SO_RCVTIMEO", e.into()))?;
        Ok(Rtnl {
            sock,
            seq: 0,
            buf: vec![0u8; 16 * 1024],
        })
    }

    /// Send `msg` with NLM_F_REQUEST | NLM_F_ACK | `flags` and wait for the
    /// kernel's answer to it.
    fn request(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        hdr.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(hdr, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.header.length as usize];
        nl.serialize(&mut out);
        self.sock.send(&out, 0).map_err(|e| io_err(what, e))?;
        for _ in 0..MAX_READS {
            let n = match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(RtnlError {
                        what: what.into(),
                        errno: None,
                        detail: format!("no answer within {} s", ANSWER_WAIT.as_secs()),
                    });
                }
                Err(e) => return Err(io_err(what, e)),
            };
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| RtnlError {
                        what: what.into(),
                        errno: None,
                        detail: format!("undecodable answer: {e}"),
                    })?;
                let len = (m.header.length as usize).max(16);
                off += (len + 3) & !3;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                if let NetlinkPayload::Error(e) = m.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(c) => {
                            let io = std::io::Error::from_raw_os_error(-c.get());
                            Err(RtnlError {
                                what: what.into(),
                                errno: Some(-c.get()),
                                detail: format!("{} ({io})", super::errno_name(-c.get())),
                            })
                        }
                    };
                }
            }
        }
        Err(RtnlError {
            what: what.into(),
            errno: None,
            detail: format!("no answer in {MAX_READS} datagrams"),
        })
    }

    /// `ip link add NAME type veth peer name PEER netns PEER_NS`: the
    /// peer end is made directly in the namespace `peer_ns` refers to
    /// (`veth_newlink()` → `rtnl_link_get_net()` on IFLA_NET_NS_FD).
    pub(crate) fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_ns: Option<BorrowedFd<'_>>,
    ) -> Result<(), RtnlError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.into()));
        if let Some(fd) = peer_ns {
            peer_msg
                .attributes
                .push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            &format!("link add {name} type veth peer name {peer}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `ip link set NAME up` (and `promisc on`): IFF_UP and IFF_PROMISC
    /// through ifi_flags/ifi_change (`do_setlink()` → `dev_change_flags()`).
    pub(crate) fn set_up(&mut self, name: &str, promisc: bool) -> Result<(), RtnlError> {
        let what = format!(
            "link set {name}{} up",
            if promisc { " promisc on" } else { "" }
        );
        let index = index_of(name).map_err(|e| io_err(&what, e))?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let mut flags = LinkFlags::Up;
        if promisc {
            flags |= LinkFlags::Promisc;
        }
        msg.header.flags = flags;
        msg.header.change_mask = flags;
        self.request(&what, RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// `ip addr add IP/PREFIX dev NAME` (the prefix route comes with it,
    /// `fib_add_ifaddr()`, once the link is up).
    pub(crate) fn add_addr(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), RtnlError> {
        let what = format!("addr add {ip}/{prefix} dev {name}");
        let index = index_of(name).map_err(|e| io_err(&what, e))?;
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(ip)));
        self.request(
            &what,
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `tc qdisc add dev NAME root handle 1: netem delay D` (`create`), or
    /// `tc qdisc change …` (`!create`): `netem_change()` sets the new
    /// latency for packets enqueued from now on and leaves the queued ones
    /// with the time to send they were given (`tfifo_enqueue()`).
    /// ENOENT: the kernel has no sch_netem (`qdisc_lookup_ops()` found no
    /// "netem", and `request_module()` could not load it).
    pub(crate) fn netem(
        &mut self,
        name: &str,
        delay: Duration,
        create: bool,
    ) -> Result<(), RtnlError> {
        let what = format!(
            "qdisc {} dev {name} root netem delay {}ms",
            if create { "add" } else { "change" },
            delay.as_millis()
        );
        let index = index_of(name).map_err(|e| io_err(&what, e))?;
        let mut msg = TcMessage::default();
        msg.header.family = AddressFamily::Unspec;
        msg.header.index = index as i32;
        msg.header.parent = TcHandle::ROOT;
        msg.header.handle = TcHandle { major: 1, minor: 0 };
        msg.attributes.push(TcAttribute::Kind("netem".into()));
        msg.attributes.push(TcAttribute::Other(DefaultNla::new(
            TCA_OPTIONS,
            netem_qopt(delay),
        )));
        let flags = if create { NLM_F_CREATE | NLM_F_EXCL } else { 0 };
        self.request(&what, RouteNetlinkMessage::NewQueueDiscipline(msg), flags)
    }
}

impl AsFd for Rtnl {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// `struct tc_netem_qopt` (include/uapi/linux/pkt_sched.h): latency in
/// psched ticks of 64 ns (`PSCHED_TICKS2NS()`, `netem_change()`), a
/// 1000-packet limit as iproute2 sets, no loss, gap, duplication or
/// jitter.
fn netem_qopt(delay: Duration) -> Vec<u8> {
    let ticks = u32::try_from(delay.as_nanos() >> 6).unwrap_or(u32::MAX);
    let mut v = Vec::with_capacity(24);
    for x in [ticks, 1000, 0, 0, 0, 0] {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    v
}

/// The index of interface `name` in the calling thread's namespace
/// (if_nametoindex(3), an ioctl on a socket made in that namespace).
fn index_of(name: &str) -> std::io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netem_latency_is_in_64_ns_ticks() {
        let q = netem_qopt(Duration::from_secs(2));
        assert_eq!(q.len(), 24);
        assert_eq!(u32::from_ne_bytes([q[0], q[1], q[2], q[3]]), 31_250_000);
        assert_eq!(u32::from_ne_bytes([q[4], q[5], q[6], q[7]]), 1000);
    }
}
