//! The kernel's TCP socket table, read through NETLINK_SOCK_DIAG.
//!
//! One dump per address family, with the state filter applied by the kernel
//! (`inet_diag_dump_icsk` walks only the hash tables the state mask needs).
//! The request is built with netlink-packet-sock-diag; replies are decoded
//! in place from the receive buffer: the crate's `InetResponseHeader` parser
//! gives the socket id, and `idiag_expires` — which the crate drops for
//! TIME_WAIT sockets (it maps `idiag_timer == 3` to a bare `Timer::TimeWait`)
//! — is read from its fixed offset in `struct inet_diag_msg`
//! (include/uapi/linux/inet_diag.h: 4 bytes of family/state/timer/retrans,
//! the 48-byte `inet_diag_sockid`, then `__u32 idiag_expires` at offset 52).
//! For TIME_WAIT the kernel fills it in `inet_twsk_diag_fill()` as the time
//! left on `tw_timer`, in milliseconds.

use crate::error::{Error, Result};
use crate::socket::Family;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// TCP states, numbered as in include/net/tcp_states.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    // Serialised with ss's state names (`ss state fin-wait-1`).
    #[serde(rename = "fin-wait-1")]
    FinWait1 = 4,
    #[serde(rename = "fin-wait-2")]
    FinWait2 = 5,
    TimeWait = 6,
    Closed = 7,
    CloseWait = 8,
    LastAck = 9,
    #[serde(rename = "listening")]
    Listen = 10,
    Closing = 11,
    /// A request socket (mini socket for a SYN received on a listener);
    /// `ss` shows it as SYN-RECV.
    NewSynRecv = 12,
}

impl TcpState {
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Closed,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    pub fn from_kernel(n: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| *s as u8 == n)
    }

    /// The name in the kernel's and RFC 793's spelling: TIME_WAIT.
    pub fn kernel_name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv | TcpState::NewSynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Closed => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }

    /// The name `ss` uses in its filter syntax: time-wait.
    pub fn ss_name(self) -> &'static str {
        match self {
            TcpState::Established => "established",
            TcpState::SynSent => "syn-sent",
            TcpState::SynRecv | TcpState::NewSynRecv => "syn-recv",
            TcpState::FinWait1 => "fin-wait-1",
            TcpState::FinWait2 => "fin-wait-2",
            TcpState::TimeWait => "time-wait",
            TcpState::Closed => "closed",
            TcpState::CloseWait => "close-wait",
            TcpState::LastAck => "last-ack",
            TcpState::Listen => "listening",
            TcpState::Closing => "closing",
        }
    }

    /// The column `ss -tan` prints: TIME-WAIT, ESTAB, LISTEN...
    pub fn ss_column(self) -> &'static str {
        match self {
            TcpState::Established => "ESTAB",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynRecv | TcpState::NewSynRecv => "SYN-RECV",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::TimeWait => "TIME-WAIT",
            TcpState::Closed => "UNCONN",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::LastAck => "LAST-ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kernel_name())
    }
}

/// A set of TCP states, as the kernel's `idiag_states` bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateSet(u32);

impl StateSet {
    pub const fn all() -> Self {
        StateSet(0xffff_fffe)
    }
    pub const fn none() -> Self {
        StateSet(0)
    }
    pub fn of(states: &[TcpState]) -> Self {
        let mut s = StateSet(0);
        for st in states {
            s.insert(*st);
        }
        s
    }
    pub fn insert(&mut self, s: TcpState) {
        self.0 |= s.bit();
        // The kernel reports request sockets under SYN_RECV
        // (inet_diag_dump_icsk: TCPF_SYN_RECV implies TCPF_NEW_SYN_RECV).
        if s == TcpState::SynRecv {
            self.0 |= TcpState::NewSynRecv.bit();
        }
    }
    pub fn contains(&self, s: TcpState) -> bool {
        self.0 & s.bit() != 0
    }
    pub fn mask(&self) -> u32 {
        self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

/// Which timer runs on a socket (`idiag_timer`), with ss's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimerKind {
    /// Retransmission timer ("on" in ss).
    Retransmit,
    Keepalive,
    /// The TIME_WAIT timer (`tw_timer`, TCP_TIMEWAIT_LEN = 60 s on Linux).
    Timewait,
    /// Zero window probe timer ("persist" in ss).
    Persist,
}

impl TimerKind {
    pub fn ss_name(self) -> &'static str {
        match self {
            TimerKind::Retransmit => "on",
            TimerKind::Keepalive => "keepalive",
            TimerKind::Timewait => "timewait",
            TimerKind::Persist => "persist",
        }
    }
}

/// A running timer and the time left on it when the kernel answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub kind: TimerKind,
    /// Milliseconds left (`idiag_expires`).
    pub expires_ms: u32,
    pub retrans: u8,
}

/// One TCP socket as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SockEntry {
    pub family: Family,
    pub state: TcpState,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timer: Option<Timer>,
    pub recv_q: u32,
    pub send_q: u32,
    /// Owner uid; 0 for TIME_WAIT, which has no owner (inet_twsk_diag_fill).
    pub uid: u32,
    /// Socket inode; 0 for TIME_WAIT (the socket file is gone).
    pub inode: u32,
}

impl SockEntry {
    /// For TIME_WAIT: the time left before the kernel frees the 4-tuple.
    pub fn time_wait_left(&self) -> Option<Duration> {
        match (self.state, self.timer) {
            (TcpState::TimeWait, Some(t)) => Some(Duration::from_millis(t.expires_ms as u64)),
            _ => None,
        }
    }

    /// Is this a TIME_WAIT mini socket (`struct inet_timewait_sock`)? Only
    /// `inet_twsk_diag_fill()` reports `idiag_timer == 3`; such a socket
    /// reports its `tw_substate` as state: TIME_WAIT, or FIN_WAIT2 for an
    /// orphaned FIN_WAIT2 socket that `tcp_time_wait(sk, TCP_FIN_WAIT2, tmo)`
    /// turned into a mini socket (tcp_close / tcp_rcv_state_process).
    pub fn is_timewait_sock(&self) -> bool {
        matches!(self.timer, Some(t) if t.kind == TimerKind::Timewait)
    }

    /// Time left on whatever timer runs on the socket, if any.
    pub fn timer_left(&self) -> Option<Duration> {
        self.timer
            .map(|t| Duration::from_millis(u64::from(t.expires_ms)))
    }

    /// "TIME_WAIT, 58.9 s left" / "FIN_WAIT2 (orphaned, timewait timer
    /// 59.8 s left)" / "ESTABLISHED".
    pub fn describe(&self) -> String {
        if let Some(left) = self.time_wait_left() {
            return format!("{}, {:.1} s left", self.state, left.as_secs_f64());
        }
        match (self.is_timewait_sock(), self.timer_left()) {
            (true, Some(left)) => format!(
                "{} (orphaned, timewait timer {:.1} s left)",
                self.state,
                left.as_secs_f64()
            ),
            _ => self.state.to_string(),
        }
    }
}

/// What to dump.
#[derive(Debug, Clone)]
pub struct Query {
    pub families: Vec<Family>,
    pub states: StateSet,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            families: vec![Family::V4, Family::V6],
            states: StateSet::all(),
        }
    }
}

impl Query {
    pub fn states(states: StateSet) -> Self {
        Query {
            states,
            ..Default::default()
        }
    }
}

/// Dump the TCP sockets matching `q` into a vector.
pub fn dump(q: &Query) -> Result<Vec<SockEntry>> {
    let mut v = Vec::new();
    dump_each(q, |e| {
        v.push(e);
        Ok(())
    })?;
    Ok(v)
}

/// Dump the TCP sockets matching `q`, calling `f` for each as it is decoded
/// (no intermediate vector, so a 30,000-socket table streams straight out).
///
/// A dump is never an atomic snapshot: `inet_diag_dump_icsk()` walks the
/// hash buckets one lock at a time, so sockets that appear or vanish while
/// it runs may or may not be in it, exactly as with `ss`. If the kernel
/// flags the dump as interrupted (NLM_F_DUMP_INTR; inet_diag does not call
/// `nl_dump_check_consistent()` today, but the netlink contract allows it),
/// the family is dumped again, bounded, and only sockets not delivered yet
/// are passed on: each socket is delivered at most once.
#[cfg(target_os = "linux")]
pub fn dump_each(q: &Query, mut f: impl FnMut(SockEntry) -> Result<()>) -> Result<()> {
    if q.states.is_empty() {
        return Ok(());
    }
    let nl = linux::DiagSocket::open()?;
    for fam in &q.families {
        // Keys of delivered sockets: 8 bytes each, so the fast path costs
        // one small vector, not a copy of the table.
        let mut seen: Vec<u64> = Vec::new();
        let mut interrupted = nl.dump(*fam, q.states, &mut |e| {
            seen.push(entry_key(&e));
            f(e)
        })?;
        let mut tries = 1;
        while interrupted && tries < 5 {
            tries += 1;
            seen.sort_unstable();
            let mut fresh = Vec::new();
            interrupted = nl.dump(*fam, q.states, &mut |e| {
                let k = entry_key(&e);
                if seen.binary_search(&k).is_err() {
                    fresh.push(k);
                    f(e)?;
                }
                Ok(())
            })?;
            seen.extend(fresh);
        }
    }
    Ok(())
}

/// A 64-bit key for a socket's 4-tuple and state (FNV-1a), used only to
/// avoid delivering a socket twice when a dump is retried.
#[cfg(target_os = "linux")]
fn entry_key(e: &SockEntry) -> u64 {
    fn eat(h: &mut u64, bytes: &[u8]) {
        for b in bytes {
            *h ^= u64::from(*b);
            *h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn addr(h: &mut u64, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(v) => eat(h, &v.octets()),
            IpAddr::V6(v) => eat(h, &v.octets()),
        }
        eat(h, &a.port().to_be_bytes());
    }
    let mut h = 0xcbf2_9ce4_8422_2325;
    addr(&mut h, &e.local);
    addr(&mut h, &e.peer);
    eat(&mut h, &[e.state as u8]);
    h
}

#[cfg(not(target_os = "linux"))]
pub fn dump_each(_q: &Query, _f: impl FnMut(SockEntry) -> Result<()>) -> Result<()> {
    Err(Error::Unsupported {
        os: crate::sys::OS_NAME,
        what: "reading the TCP socket table with timers needs Linux sock_diag".into(),
    })
}

/// The kernel's view of one connection's 4-tuple, from both ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TupleView {
    /// The client's end: local = client address, peer = server address.
    pub client: Option<SockEntry>,
    /// The server's end: local = server address, peer = client address.
    pub server: Option<SockEntry>,
}

impl TupleView {
    pub fn client_state(&self) -> Option<TcpState> {
        self.client.as_ref().map(|e| e.state)
    }
    pub fn server_state(&self) -> Option<TcpState> {
        self.server.as_ref().map(|e| e.state)
    }

    /// "client TIME_WAIT (58.9 s left), server gone".
    pub fn describe(&self) -> String {
        let side = |e: &Option<SockEntry>| match e {
            Some(e) => e.describe(),
            None => "gone".to_string(),
        };
        format!(
            "client {}; server {}",
            side(&self.client),
            side(&self.server)
        )
    }

    /// Which side holds TIME_WAIT, if any.
    pub fn time_wait_holder(&self) -> Option<Side> {
        if self.client_state() == Some(TcpState::TimeWait) {
            Some(Side::Client)
        } else if self.server_state() == Some(TcpState::TimeWait) {
            Some(Side::Server)
        } else {
            None
        }
    }
}

/// One end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Client,
    Server,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
        })
    }
}

/// Look up the connection `client` ↔ `server` from both ends.
pub fn tuple_view(client: SocketAddr, server: SocketAddr) -> Result<TupleView> {
    let q = Query {
        families: vec![Family::of(&client)],
        states: StateSet::all(),
    };
    let mut view = TupleView {
        client: None,
        server: None,
    };
    dump_each(&q, |e| {
        if e.local == client && e.peer == server {
            view.client = Some(e);
        } else if e.local == server && e.peer == client {
            view.server = Some(e);
        }
        Ok(())
    })?;
    Ok(view)
}

/// Poll the kernel, bounded by `timeout`, until `pred` holds for the view of
/// `client` ↔ `server`. Returns the last view and whether `pred` held.
///
/// This is how experiments synchronise: on the kernel's state, not on
/// sleeps. Polls start at 200 µs and back off to 5 ms.
pub fn wait_for(
    client: SocketAddr,
    server: SocketAddr,
    timeout: Duration,
    pred: impl Fn(&TupleView) -> bool,
) -> Result<(TupleView, bool)> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let v = tuple_view(client, server)?;
        if pred(&v) {
            return Ok((v, true));
        }
        if start.elapsed() >= timeout {
            return Ok((v, false));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Decode the address in an `inet_diag_sockid` field (16 bytes, network
/// order; IPv4 uses the first 4).
pub(crate) fn ip_from(family: u8, b: &[u8]) -> IpAddr {
    if family as i32 == libc::AF_INET {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

/// Decode one `struct inet_diag_msg` (at least 72 bytes).
pub(crate) fn parse_inet_diag_msg(p: &[u8]) -> Option<SockEntry> {
    if p.len() < 72 {
        return None;
    }
    let family = p[0];
    let fam = match family as i32 {
        libc::AF_INET => Family::V4,
        libc::AF_INET6 => Family::V6,
        _ => return None,
    };
    let state = TcpState::from_kernel(p[1])?;
    let timer_kind = match p[2] {
        1 => Some(TimerKind::Retransmit),
        2 => Some(TimerKind::Keepalive),
        3 => Some(TimerKind::Timewait),
        4 => Some(TimerKind::Persist),
        _ => None,
    };
    let retrans = p[3];
    let sport = u16::from_be_bytes([p[4], p[5]]);
    let dport = u16::from_be_bytes([p[6], p[7]]);
    let src = ip_from(family, &p[8..24]);
    let dst = ip_from(family, &p[24..40]);
    let u32_at = |o: usize| u32::from_ne_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]]);
    let expires = u32_at(52);
    Some(SockEntry {
        family: fam,
        state,
        local: SocketAddr::new(src, sport),
        peer: SocketAddr::new(dst, dport),
        timer: timer_kind.map(|kind| Timer {
            kind,
            expires_ms: expires,
            retrans,
        }),
        recv_q: u32_at(56),
        send_q: u32_at(60),
        uid: u32_at(64),
        inode: u32_at(68),
    })
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use netlink_packet_core::{
        NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    };
    use netlink_packet_sock_diag::{
        SockDiagMessage,
        constants::IPPROTO_TCP,
        inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    };
    use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};

    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    /// The kernel never puts more than 32 KiB in one dump skb
    /// (netlink_dump caps at max_recvmsg_len); a larger buffer is wasted.
    const RECV_BUF: usize = 64 * 1024;

    pub(super) struct DiagSocket {
        sock: Socket,
        buf: std::cell::RefCell<Vec<u8>>,
    }

    impl DiagSocket {
        pub(super) fn open() -> Result<Self> {
            let mut sock = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| {
                Error::Diag(format!(
                    "cannot open a NETLINK_SOCK_DIAG socket ({e}); is the inet_diag/tcp_diag module available?"
                ))
            })?;
            sock.bind_auto()
                .map_err(|e| Error::Diag(format!("bind: {e}")))?;
            sock.connect(&NlAddr::new(0, 0))
                .map_err(|e| Error::Diag(format!("connect: {e}")))?;
            // A bigger receive queue lets the kernel fill the next skb while
            // we decode this one.
            let _ = sock.set_rx_buf_sz(1 << 20);
            Ok(DiagSocket {
                sock,
                buf: std::cell::RefCell::new(vec![0u8; RECV_BUF]),
            })
        }

        /// One dump for one family. Returns true if the kernel flagged the
        /// dump as interrupted (NLM_F_DUMP_INTR).
        pub(super) fn dump(
            &self,
            fam: Family,
            states: StateSet,
            f: &mut dyn FnMut(SockEntry) -> Result<()>,
        ) -> Result<bool> {
            let (family, socket_id) = match fam {
                Family::V4 => (libc::AF_INET as u8, SocketId::new_v4()),
                Family::V6 => (libc::AF_INET6 as u8, SocketId::new_v6()),
            };
            let mut hdr = NetlinkHeader::default();
            hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let mut msg = NetlinkMessage::new(
                hdr,
                SockDiagMessage::InetRequest(InetRequest {
                    family,
                    protocol: IPPROTO_TCP,
                    extensions: ExtensionFlags::empty(),
                    states: StateFlags::from_bits_truncate(states.mask()),
                    socket_id,
                })
                .into(),
            );
            msg.finalize();
            let mut req = vec![0u8; msg.header.length as usize];
            msg.serialize(&mut req[..]);
            self.sock
                .send(&req, 0)
                .map_err(|e| Error::Diag(format!("send: {e}")))?;

            let mut interrupted = false;
            let mut buf = self.buf.borrow_mut();
            // Bounded: a dump ends with NLMSG_DONE; 1M reads of 32 KiB
            // would be ~30 GB of socket table.
            for _ in 0..1_000_000 {
                let n = loop {
                    match self.sock.recv(&mut &mut buf[..], 0) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Error::Diag(format!("recv: {e}"))),
                    }
                };
                if n == 0 {
                    return Err(Error::Diag("the kernel closed the dump early".into()));
                }
                let mut off = 0;
                while off + 16 <= n {
                    let b = &buf[off..n];
                    let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                    let ty = u16::from_ne_bytes([b[4], b[5]]);
                    let flags = u16::from_ne_bytes([b[6], b[7]]);
                    if len < 16 || len > b.len() {
                        return Err(Error::Diag(format!(
                            "malformed netlink message (len {len})"
                        )));
                    }
                    if flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    let payload = &b[16..len];
                    match ty {
                        NLMSG_DONE => return Ok(interrupted),
                        NLMSG_ERROR => {
                            let code = if payload.len() >= 4 {
                                -i32::from_ne_bytes([
                                    payload[0], payload[1], payload[2], payload[3],
                                ])
                            } else {
                                0
                            };
                            if code == 0 {
                                return Ok(interrupted);
                            }
                            return Err(Error::Diag(format!(
                                "the kernel refused the dump: {}",
                                crate::outcome::SysError::from_code(code)
                            )));
                        }
                        SOCK_DIAG_BY_FAMILY => {
                            // Sockets that vanish mid-dump are simply not in it;
                            // entries of an unknown state are skipped.
                            if let Some(e) = parse_inet_diag_msg(payload) {
                                f(e)?;
                            }
                        }
                        _ => {}
                    }
                    // NLMSG_ALIGN(len)
                    off += (len + 3) & !3;
                }
            }
            Err(Error::Diag("dump did not end".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_numbers_match_the_kernel() {
        assert_eq!(TcpState::from_kernel(6), Some(TcpState::TimeWait));
        assert_eq!(TcpState::from_kernel(5), Some(TcpState::FinWait2));
        assert_eq!(TcpState::from_kernel(10), Some(TcpState::Listen));
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(13), None);
    }

    #[test]
    fn syn_recv_includes_request_sockets() {
        let s = StateSet::of(&[TcpState::SynRecv]);
        assert!(s.contains(TcpState::NewSynRecv));
        assert!(!s.contains(TcpState::Established));
        assert_eq!(StateSet::of(&[TcpState::TimeWait]).mask(), 1 << 6);
    }

    #[test]
    fn decodes_a_time_wait_message() {
        // A hand-made inet_diag_msg as inet_twsk_diag_fill() lays it out.
        let mut p = vec![0u8; 72];
        p[0] = libc::AF_INET as u8;
        p[1] = 6; // TIME_WAIT
        p[2] = 3; // timewait timer
        p[4..6].copy_from_slice(&23456u16.to_be_bytes());
        p[6..8].copy_from_slice(&12345u16.to_be_bytes());
        p[8..12].copy_from_slice(&[127, 0, 0, 1]);
        p[24..28].copy_from_slice(&[127, 0, 0, 2]);
        p[52..56].copy_from_slice(&58_912u32.to_ne_bytes());
        let e = parse_inet_diag_msg(&p).unwrap();
        assert_eq!(e.state, TcpState::TimeWait);
        assert_eq!(e.local, "127.0.0.1:23456".parse().unwrap());
        assert_eq!(e.peer, "127.0.0.2:12345".parse().unwrap());
        assert_eq!(e.time_wait_left(), Some(Duration::from_millis(58_912)));
        assert_eq!(e.describe(), "TIME_WAIT, 58.9 s left");
        assert!(parse_inet_diag_msg(&p[..71]).is_none());

        // The same mini socket with tw_substate FIN_WAIT2 (an orphaned
        // FIN_WAIT2 socket turned into a mini socket by tcp_time_wait).
        p[1] = 5;
        p[52..56].copy_from_slice(&59_812u32.to_ne_bytes());
        let e = parse_inet_diag_msg(&p).unwrap();
        assert_eq!(e.state, TcpState::FinWait2);
        assert!(e.is_timewait_sock());
        assert_eq!(e.time_wait_left(), None);
        assert_eq!(
            e.describe(),
            "FIN_WAIT2 (orphaned, timewait timer 59.8 s left)"
        );
        // A full socket in FIN_WAIT2 (timer 0) is just FIN_WAIT2.
        p[2] = 0;
        assert_eq!(parse_inet_diag_msg(&p).unwrap().describe(), "FIN_WAIT2");
    }
}
