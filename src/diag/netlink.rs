//! The NETLINK_SOCK_DIAG socket: sending requests built by [`super::wire`]
//! and reading the kernel's answers, for dumps and for exact lookups.

use super::wire::{self, ENOENT, Families, Reply};
use super::{PortTest, Query, SockEntry, StateSet, TupleView};
use crate::error::{DiagError, Error, Result};
use crate::socket::Family;
use crate::sys::netlink_batch::{self, MAX_BATCH};
use netlink_packet_core::NLM_F_DUMP_INTR;
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};
use std::net::SocketAddr;

/// The kernel never puts more than 32 KiB in one dump skb (netlink_dump
/// caps at max_recvmsg_len); a larger buffer is wasted.
const RECV_BUF: usize = 64 * 1024;
/// Datagrams read for one request at most: a dump ends with NLMSG_DONE;
/// 1M reads of 32 KiB would be ~30 GB of socket table.
const MAX_READS: usize = 1_000_000;

/// Whether this kernel answers exact requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exact {
    /// Yes, or not asked yet.
    Works,
    /// It answered an exact request with an error other than ENOENT (a
    /// kernel without `inet_diag_cmd_exact()` for TCP): filtered dumps
    /// from now on.
    Unavailable,
}

/// An open NETLINK_SOCK_DIAG socket in the calling thread's network
/// namespace, with its buffers: open it once and reuse it for many queries
/// (the peer programs ask once per connection).
pub struct DiagSocket {
    sock: Socket,
    buf: Vec<u8>,
    req: Vec<u8>,
    seq: u32,
    exact: Exact,
    /// False once the kernel refused a dump of both families in one
    /// request: one request per family from then on.
    compat: bool,
}

impl std::fmt::Debug for DiagSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiagSocket")
            .field("exact", &self.exact)
            .finish_non_exhaustive()
    }
}

/// A failed call on the socket.
fn diag_err(call: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |err| Error::Diag(DiagError::Socket { call, err })
}

impl DiagSocket {
    /// Open a NETLINK_SOCK_DIAG socket.
    pub fn open() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_SOCK_DIAG).map_err(|err| DiagError::Open { err })?;
        sock.bind_auto().map_err(diag_err("bind"))?;
        sock.connect(&NlAddr::new(0, 0))
            .map_err(diag_err("connect"))?;
        // A bigger receive queue lets the kernel fill the next skb while
        // we decode this one.
        let _ = sock.set_rx_buf_sz(1 << 20);
        Ok(DiagSocket {
            sock,
            buf: vec![0u8; RECV_BUF],
            req: Vec::with_capacity(256),
            seq: 0,
            exact: Exact::Works,
            compat: true,
        })
    }

    /// False once the kernel refused an exact request and lookups went to
    /// filtered dumps instead.
    pub fn uses_exact_lookups(&self) -> bool {
        self.exact == Exact::Works
    }

    fn send_req(&mut self) -> Result<()> {
        loop {
            // EINTR comes only before anything was sent (a wait for send
            // buffer space, sock_alloc_send_pskb()): send again.
            match self.sock.send(&self.req, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(diag_err("send")(e)),
            }
        }
    }

    fn recv(&mut self) -> Result<usize> {
        loop {
            match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(0) => return Err(DiagError::Closed.into()),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(diag_err("recv")(e)),
            }
        }
    }

    /// The answers to `pending` exact lookups, read without a wait and in
    /// one call (they are queued before the send returns), or, should none
    /// be there yet, one blocking read: each datagram's length, in slots of
    /// `self.buf` of `self.buf.len() / pending.clamp(1, MAX_BATCH)` bytes.
    fn recv_answers(&mut self, pending: usize) -> Result<([usize; MAX_BATCH], usize)> {
        use std::os::fd::AsRawFd;
        let want = pending.clamp(1, MAX_BATCH);
        match netlink_batch::recv_dontwait(self.sock.as_raw_fd(), &mut self.buf, want) {
            Ok((_, 0)) => Err(DiagError::EmptyRead.into()),
            Ok(r) => Ok(r),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let n = self.recv()?;
                let mut lens = [0; MAX_BATCH];
                lens[0] = n;
                Ok((lens, 1))
            }
            Err(e) => Err(diag_err("recv")(e)),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// The socket whose own end is `local` and whose peer is `peer`, if
    /// the kernel has one: one exact request, answered from the hash tables
    /// (`inet_diag_find_one_icsk()` → `inet_lookup()`), TIME_WAIT and
    /// request sockets included.
    pub fn lookup(&mut self, local: SocketAddr, peer: SocketAddr) -> Result<Option<SockEntry>> {
        let mut out = [None];
        self.lookup_many(&[(local, peer)], &mut out)?;
        let [e] = out;
        Ok(e)
    }

    /// Both ends of `client` ↔ `server`: two exact requests in one send.
    pub fn tuple_view(&mut self, client: SocketAddr, server: SocketAddr) -> Result<TupleView> {
        let mut out = [None, None];
        self.lookup_many(&[(client, server), (server, client)], &mut out)?;
        let [client, server] = out;
        Ok(TupleView { client, server })
    }

    /// Exact lookups for several (local, peer) pairs, batched in one
    /// datagram (netlink_rcv_skb() handles each message in turn); each
    /// answer is one SOCK_DIAG_BY_FAMILY message or an NLMSG_ERROR.
    fn lookup_many(
        &mut self,
        tuples: &[(SocketAddr, SocketAddr)],
        out: &mut [Option<SockEntry>],
    ) -> Result<()> {
        if self.exact == Exact::Unavailable {
            return self.lookup_by_dump(tuples, out, StateSet::all());
        }
        self.req.clear();
        let first = self.seq.wrapping_add(1);
        let mut pending = 0usize;
        for &(local, peer) in tuples {
            let seq = self.next_seq();
            if local.is_ipv4() != peer.is_ipv4() {
                continue; // no socket has ends of two families
            }
            wire::push_exact_request(&mut self.req, seq, local, peer);
            pending += 1;
        }
        if pending == 0 {
            return Ok(());
        }
        self.send_req()?;
        let mut refused = None;
        for _ in 0..MAX_READS {
            let (lens, count) = self.recv_answers(pending)?;
            let slot = self.buf.len() / pending.clamp(1, MAX_BATCH);
            for (k, len) in lens.iter().take(count).enumerate() {
                let datagram = &self.buf[k * slot..k * slot + len];
                for m in wire::messages(datagram) {
                    let m = m?;
                    let i = m.seq.wrapping_sub(first) as usize;
                    if i >= tuples.len() {
                        continue; // an answer to an earlier, abandoned request
                    }
                    let (local, peer) = tuples[i];
                    match m.reply {
                        Reply::Sock(msg) => {
                            // Without an established socket, inet_lookup()
                            // falls back to the listener on `local`: that is
                            // not this 4-tuple.
                            let e = msg.to_entry().ok();
                            out[i] = e.filter(|e| e.local == local && e.peer == peer);
                            pending -= 1;
                        }
                        Reply::Error(ENOENT) => pending -= 1,
                        Reply::Error(code) => {
                            refused.get_or_insert(code);
                            pending -= 1;
                        }
                        Reply::Ack | Reply::Done | Reply::Other(_) => {}
                    }
                }
            }
            if pending == 0 {
                break;
            }
        }
        if pending != 0 {
            return Err(DiagError::Unanswered.into());
        }
        if refused.is_some() {
            self.exact = Exact::Unavailable;
            out.iter_mut().for_each(|o| *o = None);
            return self.lookup_by_dump(tuples, out, StateSet::all());
        }
        self.find_bound_only(tuples, out)
    }

    /// A bound-only socket (bind() without listen or connect) is in
    /// neither the established nor the listening hash, so the lookup
    /// misses it; the bind-hash walk of a dump finds it.
    fn find_bound_only(
        &mut self,
        tuples: &[(SocketAddr, SocketAddr)],
        out: &mut [Option<SockEntry>],
    ) -> Result<()> {
        let unconnected = tuples
            .iter()
            .zip(out.iter())
            .any(|((_, p), o)| p.port() == 0 && o.is_none());
        if unconnected {
            let states = StateSet::of(&[super::TcpState::Listen]).with_bound_inactive();
            let mut found = vec![None; tuples.len()];
            self.lookup_by_dump(tuples, &mut found, states)?;
            for (o, f) in out.iter_mut().zip(found) {
                if o.is_none() {
                    *o = f;
                }
            }
        }
        Ok(())
    }

    /// The fallback of [`Self::lookup_many`]: dump each family once
    /// (sockets in `states`) and keep those whose (local, peer) match.
    fn lookup_by_dump(
        &mut self,
        tuples: &[(SocketAddr, SocketAddr)],
        out: &mut [Option<SockEntry>],
        states: StateSet,
    ) -> Result<()> {
        for fam in [Family::V4, Family::V6] {
            if !tuples.iter().any(|(l, _)| Family::of(l) == fam) {
                continue;
            }
            self.dump_family(Families::One(fam), states, wire::Ask::ALL, &mut |e| {
                if let Some(i) = tuples
                    .iter()
                    .position(|&(l, p)| e.local == l && e.peer == p)
                {
                    out[i] = Some(e);
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Dump the TCP sockets matching `q`; see [`super::dump_each`].
    pub fn dump_each(
        &mut self,
        q: &Query,
        mut f: impl FnMut(SockEntry) -> Result<()>,
    ) -> Result<()> {
        if q.states.is_empty() {
            return Ok(());
        }
        let either = q
            .either_port
            .map(|p| [PortTest::Local(p), PortTest::Peer(p)]);
        let any_of: &[PortTest] = match (q.peer_port, q.local_port, &either) {
            _ if !q.any_of.is_empty() => &q.any_of,
            (None, None, Some(e)) => e,
            _ => &[], // the narrower filter is enough
        };
        let ask = wire::Ask::Dump {
            peer_port: q.peer_port,
            local_port: q.local_port,
            any_of,
        };
        // Both families in one walk where the kernel takes the older
        // request (see wire::Families::Both), else one request each.
        let both = q.families.contains(&Family::V4) && q.families.contains(&Family::V6);
        let mut targets: Vec<Families> = if both && self.compat {
            vec![Families::Both]
        } else {
            q.families.iter().map(|f| Families::One(*f)).collect()
        };
        let mut k = 0;
        while k < targets.len() {
            let target = targets[k];
            // Whether any socket was delivered: a kernel refuses a request
            // it does not take before the first one.
            let mut delivered = false;
            let first = self.dump_family(target, q.states, ask, &mut |e| {
                delivered = true;
                f(e)
            });
            // A kernel refuses a request it does not take (the older
            // request, the bytecode) before any socket: fall back.
            let first = match first {
                Err(Error::Diag(_)) if target == Families::Both && !delivered => {
                    self.compat = false;
                    targets.splice(k..=k, q.families.iter().map(|f| Families::One(*f)));
                    continue;
                }
                Err(Error::Diag(_)) if !any_of.is_empty() && !delivered => {
                    let plain = wire::Ask::Dump {
                        peer_port: q.peer_port,
                        local_port: q.local_port,
                        any_of: &[],
                    };
                    self.dump_family(target, q.states, plain, &mut f)
                }
                r => r,
            };
            // inet_diag does not flag dumps (it never calls
            // nl_dump_check_consistent()), but the netlink contract allows
            // it. Sockets already passed on cannot be taken back, and
            // remembering every one to skip it in a second dump cost 8
            // bytes per socket (2 MB at 250,000) for a case no kernel
            // produces: say so instead of answering from a torn table.
            if first? {
                return Err(DiagError::DumpInterrupted.into());
            }
            k += 1;
        }
        Ok(())
    }

    /// One dump of one family or both. Returns true if the kernel flagged
    /// the dump as interrupted (NLM_F_DUMP_INTR).
    fn dump_family(
        &mut self,
        fam: Families,
        states: StateSet,
        ask: wire::Ask<'_>,
        f: &mut dyn FnMut(SockEntry) -> Result<()>,
    ) -> Result<bool> {
        self.req.clear();
        let seq = self.next_seq();
        wire::push_request(&mut self.req, seq, fam, states, ask);
        self.send_req()?;
        let mut interrupted = false;
        for _ in 0..MAX_READS {
            let n = self.recv()?;
            for m in wire::messages(&self.buf[..n]) {
                let m = m?;
                if m.seq != seq {
                    continue; // a late answer to an earlier request
                }
                if m.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match m.reply {
                    Reply::Done | Reply::Ack => return Ok(interrupted),
                    Reply::Error(code) => {
                        return Err(DiagError::Refused {
                            err: crate::outcome::SysError::from_code(code),
                        }
                        .into());
                    }
                    // Sockets that vanish mid-dump are simply not in it;
                    // entries of an unknown state are skipped.
                    Reply::Sock(msg) => {
                        if let Ok(e) = msg.to_entry() {
                            f(e)?;
                        }
                    }
                    Reply::Other(_) => {}
                }
            }
        }
        Err(DiagError::Endless.into())
    }
}
