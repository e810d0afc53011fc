//! Windows, macOS and FreeBSD: the same API as sock_diag, answered from the
//! system's own TCP table (`GetExtendedTcpTable` on Windows,
//! `net.inet.tcp.pcblist_n` / `net.inet.tcp.pcblist` on macOS / FreeBSD,
//! read in [`crate::sys`]). Every question reads the whole table and
//! filters it here: those systems have no exact lookup. The tables carry
//! no timers, so no entry has one; Windows has no uid, FreeBSD no owning
//! pid.

#[cfg(not(target_os = "linux"))]
use super::TupleView;
use super::{Query, SockEntry, TcpState};
#[cfg(not(target_os = "linux"))]
use crate::error::{Error, Result};
use crate::socket::Family;
use crate::sys::tcp_table::{Numbering, TableRow};
use std::net::{IpAddr, SocketAddr};

/// A handle on the system's TCP table (nothing stays open: each question
/// reads the table anew).
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub struct DiagSocket {
    _private: (),
}

/// The state for a table's number.
fn state(numbering: Numbering, n: u32) -> Option<TcpState> {
    use TcpState::*;
    Some(match (numbering, n) {
        // MIB_TCP_STATE (tcpmib.h); 12 = DELETE_TCB, a socket being freed.
        (Numbering::Mib, 1) => Closed,
        (Numbering::Mib, 2) => Listen,
        (Numbering::Mib, 3) => SynSent,
        (Numbering::Mib, 4) => SynRecv,
        (Numbering::Mib, 5) => Established,
        (Numbering::Mib, 6) => FinWait1,
        (Numbering::Mib, 7) => FinWait2,
        (Numbering::Mib, 8) => CloseWait,
        (Numbering::Mib, 9) => Closing,
        (Numbering::Mib, 10) => LastAck,
        (Numbering::Mib, 11) => TimeWait,
        // TCPS_* (netinet/tcp_fsm.h).
        (Numbering::Bsd, 0) => Closed,
        (Numbering::Bsd, 1) => Listen,
        (Numbering::Bsd, 2) => SynSent,
        (Numbering::Bsd, 3) => SynRecv,
        (Numbering::Bsd, 4) => Established,
        (Numbering::Bsd, 5) => CloseWait,
        (Numbering::Bsd, 6) => FinWait1,
        (Numbering::Bsd, 7) => Closing,
        (Numbering::Bsd, 8) => LastAck,
        (Numbering::Bsd, 9) => FinWait2,
        (Numbering::Bsd, 10) => TimeWait,
        _ => return None,
    })
}

/// A table row as an entry; rows in states twlab does not know are left out.
fn entry(numbering: Numbering, r: TableRow) -> Option<SockEntry> {
    let st = state(numbering, r.state)?;
    Some(SockEntry {
        family: match r.local.ip() {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        },
        state: st,
        local: r.local,
        peer: r.peer,
        timer: None,
        recv_q: 0,
        send_q: 0,
        uid: r.uid.unwrap_or(0),
        inode: 0,
        v6only: None,
        pid: r.pid,
    })
}

/// Every entry of the table.
#[cfg(not(target_os = "linux"))]
fn read_all() -> Result<Vec<SockEntry>> {
    let t = crate::sys::tcp_table().map_err(|e| Error::sys("reading the TCP table", &e))?;
    let numbering = t.numbering;
    Ok(t.rows
        .into_iter()
        .filter_map(|r| entry(numbering, r))
        .collect())
}

/// Does `e` pass the query's family, state and port filters (as the kernel
/// applies them for a sock_diag dump)?
pub(crate) fn matches(q: &Query, e: &SockEntry) -> bool {
    if !q.families.contains(&e.family) || !q.states.contains(e.state) {
        return false;
    }
    let listening = matches!(e.state, TcpState::Listen | TcpState::Closed);
    if let Some(p) = q.local_port
        && !listening
        && e.local.port() != p
    {
        return false;
    }
    if let Some(p) = q.peer_port
        && !listening
        && e.peer.port() != p
    {
        return false;
    }
    if q.local_port.is_none()
        && q.peer_port.is_none()
        && let Some(p) = q.either_port
        && e.local.port() != p
        && e.peer.port() != p
    {
        return false;
    }
    true
}

/// The entry whose ends are exactly `local` and `peer`.
fn find(all: &[SockEntry], local: SocketAddr, peer: SocketAddr) -> Option<SockEntry> {
    all.iter()
        .find(|e| e.local == local && e.peer == peer)
        .cloned()
}

#[cfg(not(target_os = "linux"))]
impl DiagSocket {
    /// Ready at once: the table is read per question.
    pub fn open() -> Result<Self> {
        Ok(DiagSocket { _private: () })
    }
    /// False: every question reads the whole table.
    pub fn uses_exact_lookups(&self) -> bool {
        false
    }
    /// The socket whose own end is `local` and whose peer is `peer` (a
    /// listener: `peer` unspecified, port 0).
    pub fn lookup(&mut self, local: SocketAddr, peer: SocketAddr) -> Result<Option<SockEntry>> {
        Ok(find(&read_all()?, local, peer))
    }
    /// Both ends of `client` ↔ `server`, from one read of the table.
    pub fn tuple_view(&mut self, client: SocketAddr, server: SocketAddr) -> Result<TupleView> {
        let all = read_all()?;
        Ok(TupleView {
            client: find(&all, client, server),
            server: find(&all, server, client),
        })
    }
    /// Every socket matching `q`, in the table's order.
    pub fn dump_each(
        &mut self,
        q: &Query,
        mut f: impl FnMut(SockEntry) -> Result<()>,
    ) -> Result<()> {
        for e in read_all()? {
            if matches(q, &e) {
                f(e)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::StateSet;

    fn row(state: u32, local: &str, peer: &str) -> TableRow {
        TableRow {
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            state,
            pid: Some(7),
            uid: None,
        }
    }

    #[test]
    fn both_numberings_name_time_wait_and_listen() {
        assert_eq!(state(Numbering::Mib, 11), Some(TcpState::TimeWait));
        assert_eq!(state(Numbering::Bsd, 10), Some(TcpState::TimeWait));
        assert_eq!(state(Numbering::Mib, 2), Some(TcpState::Listen));
        assert_eq!(state(Numbering::Bsd, 1), Some(TcpState::Listen));
        assert_eq!(state(Numbering::Bsd, 9), Some(TcpState::FinWait2));
        assert_eq!(state(Numbering::Mib, 12), None);
        assert_eq!(state(Numbering::Bsd, 11), None);
    }

    #[test]
    fn filters_as_a_dump_does() {
        let tw = entry(
            Numbering::Mib,
            row(11, "127.0.0.1:23456", "127.0.0.1:12345"),
        )
        .unwrap();
        let l = entry(Numbering::Mib, row(2, "0.0.0.0:12345", "0.0.0.0:0")).unwrap();
        assert_eq!((tw.pid, tw.timer, tw.family), (Some(7), None, Family::V4));
        let mut q = Query::states(StateSet::of(&[TcpState::TimeWait]));
        assert!(matches(&q, &tw) && !matches(&q, &l));
        q = Query {
            either_port: Some(12345),
            ..Query::default()
        };
        assert!(matches(&q, &tw) && matches(&q, &l));
        q.either_port = Some(1);
        assert!(!matches(&q, &tw));
        q = Query {
            families: vec![Family::V6],
            ..Query::default()
        };
        assert!(!matches(&q, &tw));
        let all = vec![tw.clone(), l];
        let c = "127.0.0.1:23456".parse().unwrap();
        let s = "127.0.0.1:12345".parse().unwrap();
        assert_eq!(find(&all, c, s), Some(tw));
        assert_eq!(find(&all, s, c), None);
    }
}
