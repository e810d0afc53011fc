//! The sock_diag wire format, in the smoltcp style: a checked view over the
//! bytes ([`InetDiagMsg`], fields named by their byte ranges) kept apart from
//! the decoded [`SockEntry`], and the netlink framing around it read through
//! netlink-packet-core's checked [`NetlinkBuffer`].
//!
//! Everything here is plain byte handling: every multi-byte field is read
//! with `from_ne_bytes`/`from_be_bytes` from a slice, never through a
//! pointer cast, so a message at any offset of a receive buffer decodes
//! the same (netlink only promises 4-byte alignment, NLMSG_ALIGN).
//!
//! Values come from Linux, so they use Linux's numbers (AF_INET = 2,
//! AF_INET6 = 10), never the host libc's.

use super::{PortTest, SockEntry, StateSet, TcpState, Timer, TimerKind};
use crate::error::DiagError;
use crate::socket::Family;
use netlink_packet_core::{
    ErrorBuffer, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ALIGNTO, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{IPPROTO_TCP, SOCK_DIAG_BY_FAMILY},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Linux's AF_INET (include/linux/socket.h), whatever the host's libc says.
pub(crate) const AF_INET: u8 = 2;
/// Linux's AF_INET6 (include/linux/socket.h).
pub(crate) const AF_INET6: u8 = 10;
/// Linux's ENOENT: what `inet_diag_find_one_icsk()` answers for a 4-tuple
/// with no socket.
pub(crate) const ENOENT: i32 = 2;
/// `INET_DIAG_NOCOOKIE`: a cookie of all ones matches any socket
/// (`sock_diag_check_cookie()`).
const NOCOOKIE: [u8; 8] = [0xff; 8];

/// Byte ranges of `struct inet_diag_msg` (include/uapi/linux/inet_diag.h):
/// four one-byte fields, the 48-byte `struct inet_diag_sockid`, then five
/// `__u32`s. Ports and addresses are in network order, the rest in host
/// order.
pub(crate) mod field {
    use std::ops::Range;
    pub const FAMILY: usize = 0;
    pub const STATE: usize = 1;
    pub const TIMER: usize = 2;
    pub const RETRANS: usize = 3;
    // struct inet_diag_sockid
    pub const SPORT: Range<usize> = 4..6;
    pub const DPORT: Range<usize> = 6..8;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
    #[allow(dead_code)]
    pub const IF: Range<usize> = 40..44;
    #[allow(dead_code)]
    pub const COOKIE: Range<usize> = 44..52;
    // After the socket id.
    pub const EXPIRES: Range<usize> = 52..56;
    pub const RQUEUE: Range<usize> = 56..60;
    pub const WQUEUE: Range<usize> = 60..64;
    pub const UID: Range<usize> = 64..68;
    pub const INODE: Range<usize> = 68..72;
    /// `sizeof(struct inet_diag_msg)`; attributes may follow.
    pub const LEN: usize = INODE.end;
}

/// A checked view over one `struct inet_diag_msg`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InetDiagMsg<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> InetDiagMsg<T> {
    /// Check that the fixed part is all there; every accessor is then in
    /// bounds.
    pub(crate) fn new_checked(buf: T) -> Result<Self, DiagError> {
        let len = buf.as_ref().len();
        if len < field::LEN {
            return Err(DiagError::Truncated {
                what: "inet_diag_msg",
                len,
                need: field::LEN,
            });
        }
        Ok(InetDiagMsg { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    fn u32_at(&self, r: std::ops::Range<usize>) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.b()[r]);
        u32::from_ne_bytes(a)
    }
    fn port_at(&self, r: std::ops::Range<usize>) -> u16 {
        let mut a = [0u8; 2];
        a.copy_from_slice(&self.b()[r]);
        u16::from_be_bytes(a)
    }
    fn ip_at(&self, r: std::ops::Range<usize>) -> Result<IpAddr, DiagError> {
        let b = &self.b()[r];
        match self.family() {
            AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            AF_INET6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                Ok(IpAddr::V6(Ipv6Addr::from(a)))
            }
            f => Err(DiagError::Family(f)),
        }
    }

    /// `idiag_family`.
    pub(crate) fn family(&self) -> u8 {
        self.b()[field::FAMILY]
    }
    /// `idiag_state`.
    pub(crate) fn state(&self) -> u8 {
        self.b()[field::STATE]
    }
    /// `idiag_timer`: 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 probe.
    pub(crate) fn timer(&self) -> u8 {
        self.b()[field::TIMER]
    }
    /// `idiag_retrans`.
    pub(crate) fn retrans(&self) -> u8 {
        self.b()[field::RETRANS]
    }
    /// `id.idiag_src` : `id.idiag_sport`, the socket's own end.
    pub(crate) fn local(&self) -> Result<SocketAddr, DiagError> {
        Ok(SocketAddr::new(
            self.ip_at(field::SRC)?,
            self.port_at(field::SPORT),
        ))
    }
    /// `id.idiag_dst` : `id.idiag_dport`, the peer's end.
    pub(crate) fn peer(&self) -> Result<SocketAddr, DiagError> {
        Ok(SocketAddr::new(
            self.ip_at(field::DST)?,
            self.port_at(field::DPORT),
        ))
    }
    /// `id.idiag_if`.
    #[allow(dead_code)] // decoded for completeness; the tests read it
    pub(crate) fn interface(&self) -> u32 {
        self.u32_at(field::IF)
    }
    /// `id.idiag_cookie`, the socket's identity for exact requests.
    #[allow(dead_code)] // decoded for completeness; the tests read it
    pub(crate) fn cookie(&self) -> [u8; 8] {
        let mut c = [0u8; 8];
        c.copy_from_slice(&self.b()[field::COOKIE]);
        c
    }
    /// `idiag_expires`: milliseconds left on the timer. For TIME_WAIT
    /// `inet_twsk_diag_fill()` fills it from `tw_timer`.
    pub(crate) fn expires(&self) -> u32 {
        self.u32_at(field::EXPIRES)
    }
    /// `idiag_rqueue`.
    pub(crate) fn rqueue(&self) -> u32 {
        self.u32_at(field::RQUEUE)
    }
    /// `idiag_wqueue`.
    pub(crate) fn wqueue(&self) -> u32 {
        self.u32_at(field::WQUEUE)
    }
    /// `idiag_uid`.
    pub(crate) fn uid(&self) -> u32 {
        self.u32_at(field::UID)
    }
    /// `idiag_inode`.
    pub(crate) fn inode(&self) -> u32 {
        self.u32_at(field::INODE)
    }

    /// Decode into the library's [`SockEntry`].
    pub(crate) fn to_entry(&self) -> Result<SockEntry, DiagError> {
        let family = match self.family() {
            AF_INET => Family::V4,
            AF_INET6 => Family::V6,
            f => return Err(DiagError::Family(f)),
        };
        let state = TcpState::from_kernel(self.state()).ok_or(DiagError::State(self.state()))?;
        let kind = match self.timer() {
            1 => Some(TimerKind::Retransmit),
            2 => Some(TimerKind::Keepalive),
            3 => Some(TimerKind::Timewait),
            4 => Some(TimerKind::Persist),
            _ => None,
        };
        Ok(SockEntry {
            family,
            state,
            local: self.local()?,
            peer: self.peer()?,
            timer: kind.map(|kind| Timer {
                kind,
                expires_ms: self.expires(),
                retrans: self.retrans(),
            }),
            recv_q: self.rqueue(),
            send_q: self.wqueue(),
            uid: self.uid(),
            inode: self.inode(),
            v6only: self.v6only(),
            pid: None,
        })
    }

    /// `INET_DIAG_SKV6ONLY`: `ipv6_only_sock()` of an AF_INET6 socket.
    /// `inet_diag_msg_attrs_fill()` adds it for LISTEN and CLOSE (bound-only)
    /// sockets only — the wildcard holders whose V6ONLY decides a bind().
    /// `None` when absent (IPv4, other states, TIME_WAIT).
    pub(crate) fn v6only(&self) -> Option<bool> {
        self.attributes()
            .find(|(kind, _)| *kind == INET_DIAG_SKV6ONLY)
            .and_then(|(_, v)| v.first().map(|b| *b != 0))
    }

    /// The netlink attributes after the fixed part (`struct nlattr`: u16
    /// length with the header, u16 type, payload, 4-byte aligned). A
    /// malformed one ends the walk; the fixed part is still good.
    pub(crate) fn attributes(&self) -> impl Iterator<Item = (u16, &[u8])> {
        let b = self.b();
        let mut at = field::LEN;
        std::iter::from_fn(move || {
            let hdr = b.get(at..at + 4)?;
            let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
            let kind = u16::from_ne_bytes([hdr[2], hdr[3]]) & 0x3fff;
            let payload = b.get(at + 4..at.checked_add(len)?).filter(|_| len >= 4)?;
            at += (len + 3) & !3;
            Some((kind, payload))
        })
    }
}

/// `INET_DIAG_SKV6ONLY` (enum in linux/inet_diag.h).
const INET_DIAG_SKV6ONLY: u16 = 11;

/// One netlink message of a sock_diag reply, classified.
#[derive(Debug)]
pub(crate) enum Reply<'a> {
    /// A `SOCK_DIAG_BY_FAMILY` message: one socket.
    Sock(InetDiagMsg<&'a [u8]>),
    /// NLMSG_DONE: the end of a dump.
    Done,
    /// NLMSG_ERROR with code 0 (an ACK).
    Ack,
    /// NLMSG_ERROR with a code: the positive errno (ENOENT = no socket).
    Error(i32),
    /// Any other type (NLMSG_NOOP...), skipped.
    Other(#[allow(dead_code)] u16),
}

/// One message of a receive buffer: its header fields and the reply.
#[derive(Debug)]
pub(crate) struct Message<'a> {
    /// `nlmsg_seq`: which request this answers.
    pub seq: u32,
    /// `nlmsg_flags` (NLM_F_DUMP_INTR, NLM_F_MULTI).
    pub flags: u16,
    pub reply: Reply<'a>,
}

/// The messages in `buf` (one datagram from the kernel), each framed by
/// netlink-packet-core's checked buffer; the next starts at
/// NLMSG_ALIGN(nlmsg_len) (include/uapi/linux/netlink.h).
pub(crate) fn messages(buf: &[u8]) -> impl Iterator<Item = Result<Message<'_>, DiagError>> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off >= buf.len() {
            return None;
        }
        let rest = &buf[off..];
        let nl = match NetlinkBuffer::new_checked(rest) {
            Ok(nl) => nl,
            Err(e) => {
                off = buf.len();
                return Some(Err(DiagError::Malformed { why: e.to_string() }));
            }
        };
        let len = nl.length() as usize;
        let align = usize::from(NLMSG_ALIGNTO);
        off += (len + align - 1) & !(align - 1);
        Some(classify(&nl).map(|reply| Message {
            seq: nl.sequence_number(),
            flags: nl.flags(),
            reply,
        }))
    })
}

fn classify<'a>(nl: &NetlinkBuffer<&'a [u8]>) -> Result<Reply<'a>, DiagError> {
    let payload = nl.payload();
    Ok(match nl.message_type() {
        NLMSG_DONE => Reply::Done,
        NLMSG_ERROR => {
            let e = ErrorBuffer::new_checked(payload)
                .map_err(|e| DiagError::Malformed { why: e.to_string() })?;
            match e.code() {
                None => Reply::Ack,
                // The kernel sends -errno (netlink_ack()).
                Some(c) => Reply::Error(c.get().saturating_neg()),
            }
        }
        // The answers to a TCPDIAG_GETSOCK dump carry its type.
        SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => Reply::Sock(InetDiagMsg::new_checked(payload)?),
        t => Reply::Other(t),
    })
}

fn family_byte(f: Family) -> u8 {
    match f {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    }
}

/// What one request asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ask<'a> {
    /// A dump (`NLM_F_DUMP`), of the sockets whose peer and own ports are
    /// the given ones if any (`idiag_dport` and `idiag_sport`, see
    /// [`super::Query::peer_port`]).
    Dump {
        peer_port: Option<u16>,
        local_port: Option<u16>,
        /// Sockets that pass any of these tests: filter bytecode
        /// ([`push_any_of_bytecode`]); none: no bytecode.
        any_of: &'a [PortTest],
    },
    /// The one socket whose own end is `.0` and peer `.1` (no NLM_F_DUMP:
    /// `inet_diag_cmd_exact()` → `inet_diag_find_one_icsk()`, a hash
    /// lookup that finds TIME_WAIT and request sockets too). The peer
    /// programs write these bytes with [`push_exact_request`], which the
    /// tests hold to this form.
    #[cfg_attr(not(test), allow(dead_code))]
    Exact(SocketAddr, SocketAddr),
}

impl Ask<'_> {
    /// A dump of every socket (in the states asked).
    pub(crate) const ALL: Ask<'static> = Ask::Dump {
        peer_port: None,
        local_port: None,
        any_of: &[],
    };
}

/// Which address families one request covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Families {
    /// One family: a `SOCK_DIAG_BY_FAMILY` request (`inet_diag_req_v2`).
    One(Family),
    /// Both, in one walk of the kernel's hash tables: the older
    /// `TCPDIAG_GETSOCK` request (`struct inet_diag_req`), which
    /// `inet_diag_dump_compat()` runs with `sdiag_family = AF_UNSPEC`, so
    /// `tcp_diag_dump()` keeps the sockets of every family. Each walk of
    /// the established hash visits every bucket of the whole host's table
    /// (it is shared by the namespaces) and yields the CPU after each busy
    /// one: one walk instead of two is most of what a dump costs.
    Both,
}

/// Append one request to `out`: for `families`, sockets in `states`, as
/// `ask` says.
pub(crate) fn push_request(
    out: &mut Vec<u8>,
    seq: u32,
    families: Families,
    states: StateSet,
    ask: Ask<'_>,
) {
    let family = match families {
        Families::One(f) => f,
        Families::Both => {
            push_compat_dump(out, seq, states, ask);
            return;
        }
    };
    let mut socket_id = match family {
        Family::V4 => SocketId::new_v4(),
        Family::V6 => SocketId::new_v6(),
    };
    let mut hdr = NetlinkHeader::default();
    hdr.sequence_number = seq;
    hdr.flags = NLM_F_REQUEST;
    let mut tests: &[PortTest] = &[];
    match ask {
        Ask::Exact(local, peer) => {
            socket_id.source_address = local.ip();
            socket_id.source_port = local.port();
            socket_id.destination_address = peer.ip();
            socket_id.destination_port = peer.port();
            socket_id.cookie = NOCOOKIE;
        }
        Ask::Dump {
            peer_port,
            local_port,
            any_of,
        } => {
            hdr.flags |= NLM_F_DUMP;
            tests = any_of;
            // 0: no filter (tcp_diag_dump() tests `r->id.idiag_dport &&`).
            socket_id.destination_port = peer_port.unwrap_or(0);
            socket_id.source_port = local_port.unwrap_or(0);
        }
    }
    let mut msg = NetlinkMessage::new(
        hdr,
        SockDiagMessage::InetRequest(InetRequest {
            family: family_byte(family),
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            // from_bits_retain: the crate's flags stop at CLOSING, but the
            // kernel also reads bit 12 (NEW_SYN_RECV) and bit 13
            // (TCP_BOUND_INACTIVE).
            states: StateFlags::from_bits_retain(states.mask()),
            socket_id,
        })
        .into(),
    );
    msg.finalize();
    let start = out.len();
    out.resize(start + msg.header.length as usize, 0);
    msg.serialize(&mut out[start..]);
    push_any_of_bytecode(out, start, tests);
}

/// `TCPDIAG_GETSOCK` (linux/inet_diag.h): the request type of
/// `struct inet_diag_req`, and the type of its answers.
pub(crate) const TCPDIAG_GETSOCK: u16 = 18;
/// `sizeof(struct nlmsghdr) + sizeof(struct inet_diag_req)`: family,
/// src_len, dst_len, ext, the 48-byte `inet_diag_sockid`, states, dbs.
pub(crate) const COMPAT_REQUEST_LEN: usize = 16 + 60;

/// Append a dump request of both families in one walk ([`Families::Both`]):
/// written byte by byte, as netlink-packet has no type for the older
/// request. The kernel ignores its family field (AF_UNSPEC); ports and
/// bytecode filter as in the newer request.
fn push_compat_dump(out: &mut Vec<u8>, seq: u32, states: StateSet, ask: Ask<'_>) {
    let (peer_port, local_port, tests) = match ask {
        Ask::Dump {
            peer_port,
            local_port,
            any_of,
        } => (peer_port, local_port, any_of),
        // Exact lookups name one family; never sent this way.
        Ask::Exact(..) => (None, None, &[][..]),
    };
    let start = out.len();
    let mut r = [0u8; COMPAT_REQUEST_LEN];
    r[0..4].copy_from_slice(&(COMPAT_REQUEST_LEN as u32).to_ne_bytes());
    r[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    r[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    r[8..12].copy_from_slice(&seq.to_ne_bytes());
    let q = &mut r[16..];
    // struct inet_diag_sockid from offset 4: sport, dport (network order).
    q[4..6].copy_from_slice(&local_port.unwrap_or(0).to_be_bytes());
    q[6..8].copy_from_slice(&peer_port.unwrap_or(0).to_be_bytes());
    q[44..52].copy_from_slice(&NOCOOKIE);
    q[52..56].copy_from_slice(&states.mask().to_ne_bytes());
    out.extend_from_slice(&r);
    push_any_of_bytecode(out, start, tests);
}

/// `INET_DIAG_REQ_BYTECODE`: the request attribute holding filter
/// bytecode, run by the kernel on every socket before it fills a message
/// (`inet_diag_bc_sk()`), in every table it walks.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// Bytecode operations (`enum` in linux/inet_diag.h).
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_AUTO: u8 = 6;
const INET_DIAG_BC_S_EQ: u8 = 11;
const INET_DIAG_BC_D_EQ: u8 = 12;

/// Append to the request that starts at `start` in `out` the bytecode for
/// "any of `tests`" (nothing for none), as iproute2's ss builds
/// `sport = :P or dport = :P` (ssfilter_bytecode(), SSF_OR), and grow the
/// request's length to cover it. Each `struct inet_diag_bc_op` is
/// {code, yes, no}: the run goes on by `yes` bytes when the test holds, by
/// `no` when not; ending exactly at the end accepts, jumping past it
/// rejects (inet_diag_bc_run()). A port test is followed by an op whose
/// `no` is the port (host order); every test but the last by a JMP to the
/// end. For "own port = P or peer port = P":
///
/// ```text
///  0  S_EQ yes 8 no 12 ─┐ port   own port = P: on to the JMP, else to 12
///  8  JMP  yes 4 no 12   │       always `no`: 8 + 12 = 20, the end: accept
/// 12  D_EQ yes 8 no 12 ◄─┘ port  peer port = P: 20, accept; else 24: reject
/// ```
///
/// [`PortTest::PortFromBind`] is AUTO, put first: `no` (the port came from
/// bind()) jumps to the end, `yes` goes on to the port tests. The kernel
/// checks the bytecode along the `yes` jumps, which must end exactly at
/// the end (inet_diag_bc_audit()), so AUTO cannot be the last test, nor
/// the only one: alone, it adds no bytecode (every socket passes).
pub(crate) fn push_any_of_bytecode(out: &mut Vec<u8>, start: usize, tests: &[PortTest]) {
    let ports: Vec<(u8, u16)> = tests
        .iter()
        .filter_map(|t| match t {
            PortTest::Local(p) => Some((INET_DIAG_BC_S_EQ, *p)),
            PortTest::Peer(p) => Some((INET_DIAG_BC_D_EQ, *p)),
            PortTest::PortFromBind => None,
        })
        .collect();
    if ports.is_empty() {
        return;
    }
    let from_bind = tests.contains(&PortTest::PortFromBind);
    let op = |code: u8, yes: u8, no: u16| {
        let n = no.to_ne_bytes();
        [code, yes, n[0], n[1]]
    };
    let total = 4 * u16::from(from_bind) + 8 * ports.len() as u16 + 4 * (ports.len() as u16 - 1);
    let mut bc = Vec::with_capacity(usize::from(total));
    if from_bind {
        bc.extend(op(INET_DIAG_BC_AUTO, 4, total));
    }
    for (i, (code, port)) in ports.iter().enumerate() {
        // Holds: to the JMP after it (or the end); fails: past the JMP to
        // the next test (or past the end).
        bc.extend(op(*code, 8, 12));
        bc.extend(op(0, 0, *port));
        if i + 1 < ports.len() {
            let at = bc.len() as u16;
            bc.extend(op(INET_DIAG_BC_JMP, 4, total - at));
        }
    }
    // struct nlattr: len (header included), type; 4-byte aligned.
    let attr_len = 4 + bc.len() as u16;
    out.extend(attr_len.to_ne_bytes());
    out.extend(INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    out.extend(&bc);
    let total = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&total.to_ne_bytes());
}

/// `sizeof(struct nlmsghdr) + sizeof(struct inet_diag_req_v2)`: one
/// request.
pub(crate) const REQUEST_LEN: usize = 16 + 56;

/// Append the exact request of [`push_request`] (all states, no
/// extensions) for the socket whose own end is `local` and peer `peer`,
/// both of one family, writing the bytes straight: the peer programs send
/// one per connection, and going through netlink-packet's message types
/// was a visible share of their user time. Byte for byte the same as
/// `push_request(out, seq, Families::One(family), StateSet::all(), Ask::Exact(local, peer))`
/// (a test checks it).
pub(crate) fn push_exact_request(out: &mut Vec<u8>, seq: u32, local: SocketAddr, peer: SocketAddr) {
    let mut r = [0u8; REQUEST_LEN];
    // struct nlmsghdr: len, type, flags, seq, pid (0: the kernel fills it).
    r[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    r[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    r[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    r[8..12].copy_from_slice(&seq.to_ne_bytes());
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, then
    // struct inet_diag_sockid laid out as in inet_diag_msg from offset 4.
    let q = &mut r[16..];
    q[0] = family_byte(Family::of(&local));
    q[1] = IPPROTO_TCP;
    q[4..8].copy_from_slice(&StateSet::all().mask().to_ne_bytes());
    let id = &mut q[8..];
    id[0..2].copy_from_slice(&local.port().to_be_bytes());
    id[2..4].copy_from_slice(&peer.port().to_be_bytes());
    let put = |b: &mut [u8], ip: IpAddr| match ip {
        IpAddr::V4(v) => b[..4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => b.copy_from_slice(&v.octets()),
    };
    put(&mut id[4..20], local.ip());
    put(&mut id[20..36], peer.ip());
    id[40..48].copy_from_slice(&NOCOOKIE);
    out.extend_from_slice(&r);
}

#[cfg(test)]
mod tests;
