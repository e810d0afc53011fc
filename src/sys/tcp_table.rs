//! The TCP tables of Windows, macOS and FreeBSD, from the bytes their
//! system calls fill in to rows: pure, bounds-checked parsing (no pointer
//! casts), so it is unit-tested on every system with byte images built
//! here. The calls themselves live beside it (`windows.rs`,
//! `bsd_table.rs`).
//!
//! Layouts, each record's length checked before any field is read:
//! - Windows, `GetExtendedTcpTable(.., TCP_TABLE_OWNER_PID_ALL)`
//!   (iphlpapi, tcpmib.h): `MIB_TCPTABLE_OWNER_PID` = `dwNumEntries` then
//!   24-byte `MIB_TCPROW_OWNER_PID` rows (state, local addr, local port,
//!   remote addr, remote port, owning pid: six DWORDs; addresses and ports
//!   in network byte order); `MIB_TCP6TABLE_OWNER_PID` = `dwNumEntries`
//!   then 56-byte `MIB_TCP6ROW_OWNER_PID` rows (local addr[16], scope id,
//!   port, remote addr[16], scope id, port, state, pid). States are
//!   `MIB_TCP_STATE` (1 CLOSED … 11 TIME_WAIT, 12 DELETE_TCB).
//! - FreeBSD 12+, `net.inet.tcp.pcblist` (sys/netinet/in_pcb.h,
//!   sys/socketvar.h, sys/netinet/tcp_var.h): a `struct xinpgen` header,
//!   then one `struct xtcpcb` per socket, then an `xinpgen` trailer; every
//!   record starts with its own length (`ksize_t`, 8 bytes). Inside
//!   `xtcpcb`: `xt_len`, then `struct xinpcb` (`xi_len`, then `struct
//!   xsocket` whose first field `xso_len` gives its size, then `struct
//!   in_conninfo` with the ports and addresses, then `inp_gencnt`), then
//!   `xt_stack[32]`, `xt_logid[64]` and 64 bytes (`xt_cc[16]` +
//!   `spare64[6]` in 13+, `spare64[8]` in 12), then `t_state`. Sockets
//!   freed while the kernel copied the list (`inp_gencnt > xig_gen`) are
//!   skipped, as netstat does.
//! - macOS, `net.inet.tcp.pcblist_n` (XNU bsd/netinet/in_pcb.h,
//!   bsd/sys/socketvar.h, bsd/netinet/tcp_var.h): an `xinpgen` header,
//!   then for each socket several items, each `{u32 len, u32 kind, …}`
//!   padded to 8 bytes: `xsocket_n` (kind 0x1: `so_uid` at 64,
//!   `so_last_pid` at 68), `xinpcb_n` (0x10: ports at 16 and 18, `inp_vflag`
//!   at 48, foreign and local addresses at 52 and 68), `xtcpcb_n` (0x20:
//!   `t_state` at 36), and buffers and statistics that are skipped; an
//!   `xinpgen` trailer ends it.
//!
//! BSD states (netinet/tcp_fsm.h, both systems): 0 CLOSED, 1 LISTEN,
//! 2 SYN_SENT, 3 SYN_RECEIVED, 4 ESTABLISHED, 5 CLOSE_WAIT, 6 FIN_WAIT_1,
//! 7 CLOSING, 8 LAST_ACK, 9 FIN_WAIT_2, 10 TIME_WAIT.

// Each system calls only its own parser; all of them are unit-tested on
// every system.
#![cfg_attr(not(test), allow(dead_code))]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How a table numbers TCP states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// Windows' `MIB_TCP_STATE` (1 = CLOSED … 11 = TIME_WAIT).
    Mib,
    /// BSD's `TCPS_*` (0 = CLOSED … 10 = TIME_WAIT).
    Bsd,
}

/// One socket of a system's TCP table, as the table gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRow {
    /// Its own address.
    pub local: SocketAddr,
    /// The peer (unspecified, port 0, for a listener).
    pub peer: SocketAddr,
    /// The state number, in the table's [`Numbering`].
    pub state: u32,
    /// The owning process, if the table names it.
    pub pid: Option<u32>,
    /// The owner's uid, if the table names it.
    pub uid: Option<u32>,
}

/// A table as read: its rows and how they number states.
#[cfg_attr(target_os = "linux", allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// How `rows` number their states.
    pub numbering: Numbering,
    /// Every socket.
    pub rows: Vec<TableRow>,
}

/// Bounds-checked little readers over one record.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn get<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.0.get(at..at.checked_add(N)?)?.try_into().ok()
    }
    fn u16_be(&self, at: usize) -> Option<u16> {
        self.get::<2>(at).map(u16::from_be_bytes)
    }
    fn u32_ne(&self, at: usize) -> Option<u32> {
        self.get::<4>(at).map(u32::from_ne_bytes)
    }
    fn u64_ne(&self, at: usize) -> Option<u64> {
        self.get::<8>(at).map(u64::from_ne_bytes)
    }
    fn v4(&self, at: usize) -> Option<Ipv4Addr> {
        self.get::<4>(at).map(Ipv4Addr::from)
    }
    fn v6(&self, at: usize) -> Option<Ipv6Addr> {
        self.get::<16>(at).map(Ipv6Addr::from)
    }
}

fn short(what: &str, need: usize, have: usize) -> String {
    format!("{what}: {have} bytes where {need} are needed (an unknown layout)")
}

/// `dwNumEntries` rows of `row_len` bytes after a 4-byte count.
fn mib_rows<'a>(buf: &'a [u8], row_len: usize, what: &str) -> Result<Vec<&'a [u8]>, String> {
    let b = Bytes(buf);
    let n = b.u32_ne(0).ok_or_else(|| short(what, 4, buf.len()))? as usize;
    let need = n
        .checked_mul(row_len)
        .and_then(|x| x.checked_add(4))
        .ok_or_else(|| format!("{what}: {n} entries cannot fit in memory"))?;
    if buf.len() < need {
        return Err(short(what, need, buf.len()));
    }
    Ok(buf[4..need].chunks_exact(row_len).collect())
}

/// The DWORD port field of a MIB row: the port in network byte order in
/// its first two bytes.
fn mib_port(b: &Bytes, at: usize) -> Option<u16> {
    b.u16_be(at)
}

/// `MIB_TCPTABLE_OWNER_PID` (IPv4) → rows.
pub fn parse_mib_v4(buf: &[u8]) -> Result<Vec<TableRow>, String> {
    let what = "MIB_TCPTABLE_OWNER_PID";
    mib_rows(buf, 24, what)?
        .into_iter()
        .map(|r| {
            let b = Bytes(r);
            let row = || -> Option<TableRow> {
                Some(TableRow {
                    state: b.u32_ne(0)?,
                    local: SocketAddr::new(IpAddr::V4(b.v4(4)?), mib_port(&b, 8)?),
                    peer: SocketAddr::new(IpAddr::V4(b.v4(12)?), mib_port(&b, 16)?),
                    pid: Some(b.u32_ne(20)?),
                    uid: None,
                })
            };
            row().ok_or_else(|| short(what, 24, r.len()))
        })
        .collect()
}

/// `MIB_TCP6TABLE_OWNER_PID` (IPv6) → rows (scope ids dropped).
pub fn parse_mib_v6(buf: &[u8]) -> Result<Vec<TableRow>, String> {
    let what = "MIB_TCP6TABLE_OWNER_PID";
    mib_rows(buf, 56, what)?
        .into_iter()
        .map(|r| {
            let b = Bytes(r);
            let row = || -> Option<TableRow> {
                Some(TableRow {
                    local: SocketAddr::new(IpAddr::V6(b.v6(0)?), mib_port(&b, 20)?),
                    peer: SocketAddr::new(IpAddr::V6(b.v6(24)?), mib_port(&b, 44)?),
                    state: b.u32_ne(48)?,
                    pid: Some(b.u32_ne(52)?),
                    uid: None,
                })
            };
            row().ok_or_else(|| short(what, 56, r.len()))
        })
        .collect()
}

/// An `in_addr_4in6`/`in6_addr` union at `at`: the IPv4 address sits in
/// its last four bytes.
fn dep_addr(b: &Bytes, at: usize, v6: bool) -> Option<IpAddr> {
    Some(if v6 {
        IpAddr::V6(b.v6(at)?)
    } else {
        IpAddr::V4(b.v4(at + 12)?)
    })
}

/// FreeBSD's `net.inet.tcp.pcblist` → rows.
pub fn parse_freebsd_pcblist(buf: &[u8]) -> Result<Vec<TableRow>, String> {
    let what = "net.inet.tcp.pcblist";
    let head = Bytes(buf);
    // struct xinpgen: xig_len (ksize_t), xig_count (u32), spare, xig_gen.
    let gen_len = head.u64_ne(0).ok_or_else(|| short(what, 8, buf.len()))? as usize;
    let xig_gen = head.u64_ne(16).ok_or_else(|| short(what, 24, buf.len()))?;
    if gen_len < 24 || gen_len > buf.len() {
        return Err(format!(
            "{what}: header length {gen_len} (an unknown layout)"
        ));
    }
    let mut rows = Vec::new();
    let mut at = gen_len;
    // Bounded: every step moves forward by at least the header's length.
    while at < buf.len() {
        let rec = &buf[at..];
        let b = Bytes(rec);
        let len = b.u64_ne(0).ok_or_else(|| short(what, 8, rec.len()))? as usize;
        if len <= gen_len {
            // The trailing xinpgen.
            break;
        }
        if len > rec.len() {
            return Err(short("struct xtcpcb", len, rec.len()));
        }
        let r = Bytes(&rec[..len]);
        let row = || -> Option<Option<TableRow>> {
            let xi_len = r.u64_ne(8)? as usize;
            let xso_len = r.u64_ne(16)? as usize;
            // in_conninfo right after xsocket: inc_flags, inc_len,
            // inc_fibnum, then in_endpoints (fport, lport, faddr, laddr).
            let inc = 16usize.checked_add(xso_len)?;
            let v6 = r.get::<1>(inc)?[0] & 0x01 != 0; // INC_ISIPV6
            let fport = r.u16_be(inc + 4)?;
            let lport = r.u16_be(inc + 6)?;
            let faddr = dep_addr(&r, inc + 8, v6)?;
            let laddr = dep_addr(&r, inc + 24, v6)?;
            // in_conninfo is 44 bytes; inp_gencnt follows at 8-byte
            // alignment.
            let gencnt = r.u64_ne(inc + 48)?;
            let t_state = r.u32_ne(8usize.checked_add(xi_len)?.checked_add(160)?)?;
            // so_uid: xso_len, xso_so, so_pcb, so_oobmark, so_spare64[8]
            // (or so_splice_so and 7), protocol, family, qlen, incqlen,
            // qlimit, pgid, then uid.
            let uid = if xso_len >= 124 {
                r.u32_ne(16 + 120)
            } else {
                None
            };
            if gencnt > xig_gen {
                return Some(None);
            }
            Some(Some(TableRow {
                local: SocketAddr::new(laddr, lport),
                peer: SocketAddr::new(faddr, fport),
                state: t_state,
                pid: None,
                uid,
            }))
        };
        match row() {
            Some(Some(r)) => rows.push(r),
            Some(None) => {}
            None => return Err(short("struct xtcpcb", len + 1, len)),
        }
        at += len;
    }
    Ok(rows)
}

/// 8-byte rounding of a pcblist_n item (`ROUNDUP64` in netstat).
fn roundup64(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// macOS's `net.inet.tcp.pcblist_n` → rows.
pub fn parse_macos_pcblist_n(buf: &[u8]) -> Result<Vec<TableRow>, String> {
    const XSO_SOCKET: u32 = 0x001;
    const XSO_INPCB: u32 = 0x010;
    const XSO_TCPCB: u32 = 0x020;
    let what = "net.inet.tcp.pcblist_n";
    let head = Bytes(buf);
    // struct xinpgen on macOS: xig_len (u32), xig_count, xig_gen (u64), …
    let gen_len = head.u32_ne(0).ok_or_else(|| short(what, 4, buf.len()))? as usize;
    if gen_len < 8 || gen_len > buf.len() {
        return Err(format!(
            "{what}: header length {gen_len} (an unknown layout)"
        ));
    }
    #[derive(Default)]
    struct Pending {
        uid: Option<u32>,
        pid: Option<u32>,
        addrs: Option<(SocketAddr, SocketAddr)>,
        state: Option<u32>,
    }
    let mut rows = Vec::new();
    let mut cur = Pending::default();
    let mut at = roundup64(gen_len);
    while at < buf.len() {
        let item = &buf[at..];
        let b = Bytes(item);
        let len = b.u32_ne(0).ok_or_else(|| short(what, 4, item.len()))? as usize;
        if len <= gen_len {
            // The trailing xinpgen (every item is longer, as netstat
            // assumes).
            break;
        }
        if len > item.len() {
            return Err(short(what, len, item.len()));
        }
        let it = Bytes(&item[..len]);
        let kind = it.u32_ne(4).unwrap_or(0);
        match kind {
            XSO_SOCKET => {
                cur = Pending {
                    uid: it.u32_ne(64),
                    pid: it.u32_ne(68),
                    ..Pending::default()
                };
            }
            XSO_INPCB => {
                let parse = || -> Option<(SocketAddr, SocketAddr)> {
                    let fport = it.u16_be(16)?;
                    let lport = it.u16_be(18)?;
                    let vflag = it.get::<1>(48)?[0];
                    let v6 = vflag & 0x2 != 0 && vflag & 0x1 == 0; // INP_IPV6, not INP_IPV4
                    let faddr = dep_addr(&it, 52, v6)?;
                    let laddr = dep_addr(&it, 68, v6)?;
                    Some((SocketAddr::new(laddr, lport), SocketAddr::new(faddr, fport)))
                };
                cur.addrs = Some(parse().ok_or_else(|| short("struct xinpcb_n", 84, len))?);
            }
            XSO_TCPCB => {
                cur.state = Some(
                    it.u32_ne(36)
                        .ok_or_else(|| short("struct xtcpcb_n", 40, len))?,
                );
            }
            _ => {}
        }
        if let (Some((local, peer)), Some(state)) = (cur.addrs, cur.state) {
            rows.push(TableRow {
                local,
                peer,
                state,
                pid: cur.pid,
                uid: cur.uid,
            });
            cur = Pending::default();
        }
        at += roundup64(len);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn windows_v4_rows() {
        let mut buf = vec![0u8; 4 + 2 * 24];
        put(&mut buf, 0, &2u32.to_ne_bytes());
        // TIME_WAIT 127.0.0.1:23456 → 127.0.0.1:12345, pid 0.
        put(&mut buf, 4, &11u32.to_ne_bytes());
        put(&mut buf, 8, &[127, 0, 0, 1]);
        put(&mut buf, 12, &23456u16.to_be_bytes());
        put(&mut buf, 16, &[127, 0, 0, 1]);
        put(&mut buf, 20, &12345u16.to_be_bytes());
        // LISTEN 0.0.0.0:12345, pid 4242.
        put(&mut buf, 28, &2u32.to_ne_bytes());
        put(&mut buf, 36, &12345u16.to_be_bytes());
        put(&mut buf, 48, &4242u32.to_ne_bytes());
        let rows = parse_mib_v4(&buf).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].state, 11);
        assert_eq!(rows[0].local, "127.0.0.1:23456".parse().unwrap());
        assert_eq!(rows[0].peer, "127.0.0.1:12345".parse().unwrap());
        assert_eq!(rows[0].pid, Some(0));
        assert_eq!(rows[1].local, "0.0.0.0:12345".parse().unwrap());
        assert_eq!(rows[1].peer, "0.0.0.0:0".parse().unwrap());
        assert_eq!(rows[1].pid, Some(4242));
        // A count that the buffer cannot hold is an error, not a panic.
        put(&mut buf, 0, &3u32.to_ne_bytes());
        assert!(parse_mib_v4(&buf).unwrap_err().contains("unknown layout"));
        put(&mut buf, 0, &u32::MAX.to_ne_bytes());
        assert!(parse_mib_v4(&buf).is_err());
        assert!(parse_mib_v4(&[1, 2]).is_err());
    }

    #[test]
    fn windows_v6_rows() {
        let mut buf = vec![0u8; 4 + 56];
        put(&mut buf, 0, &1u32.to_ne_bytes());
        let lo = Ipv6Addr::LOCALHOST.octets();
        put(&mut buf, 4, &lo);
        put(&mut buf, 24, &8080u16.to_be_bytes());
        put(&mut buf, 28, &lo);
        put(&mut buf, 48, &50000u16.to_be_bytes());
        put(&mut buf, 52, &5u32.to_ne_bytes());
        put(&mut buf, 56, &77u32.to_ne_bytes());
        let rows = parse_mib_v6(&buf).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].local, "[::1]:8080".parse().unwrap());
        assert_eq!(rows[0].peer, "[::1]:50000".parse().unwrap());
        assert_eq!((rows[0].state, rows[0].pid), (5, Some(77)));
    }

    /// An xtcpcb as FreeBSD 13 lays it out, with an xsocket of `xso_len`.
    fn freebsd_record(xso_len: usize, v6: bool, state: u32, gencnt: u64) -> Vec<u8> {
        let xi_len = 8 + xso_len + 48 + 8 + 8 + 32 + 48;
        let len = 8 + xi_len + 160 + 4 + 100;
        let mut r = vec![0u8; len];
        put(&mut r, 0, &(len as u64).to_ne_bytes());
        put(&mut r, 8, &(xi_len as u64).to_ne_bytes());
        put(&mut r, 16, &(xso_len as u64).to_ne_bytes());
        put(&mut r, 16 + 120, &1001u32.to_ne_bytes());
        let inc = 16 + xso_len;
        r[inc] = u8::from(v6);
        put(&mut r, inc + 4, &12345u16.to_be_bytes());
        put(&mut r, inc + 6, &23456u16.to_be_bytes());
        if v6 {
            put(&mut r, inc + 8, &Ipv6Addr::LOCALHOST.octets());
            put(&mut r, inc + 24, &Ipv6Addr::LOCALHOST.octets());
        } else {
            put(&mut r, inc + 8 + 12, &[127, 0, 0, 1]);
            put(&mut r, inc + 24 + 12, &[127, 0, 0, 2]);
        }
        put(&mut r, inc + 48, &gencnt.to_ne_bytes());
        put(&mut r, 8 + xi_len + 160, &state.to_ne_bytes());
        r
    }

    fn freebsd_list(records: &[Vec<u8>]) -> Vec<u8> {
        let mut head = vec![0u8; 64];
        put(&mut head, 0, &64u64.to_ne_bytes());
        put(&mut head, 16, &100u64.to_ne_bytes());
        let mut buf = head.clone();
        for r in records {
            buf.extend_from_slice(r);
        }
        buf.extend_from_slice(&head);
        buf
    }

    #[test]
    fn freebsd_pcblist() {
        let buf = freebsd_list(&[
            freebsd_record(200, false, 10, 5),
            freebsd_record(200, true, 1, 6),
            // Freed while the kernel copied: skipped.
            freebsd_record(200, false, 4, 101),
        ]);
        let rows = parse_freebsd_pcblist(&buf).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].local, "127.0.0.2:23456".parse().unwrap());
        assert_eq!(rows[0].peer, "127.0.0.1:12345".parse().unwrap());
        assert_eq!((rows[0].state, rows[0].uid), (10, Some(1001)));
        assert_eq!(rows[1].local, "[::1]:23456".parse().unwrap());
        assert_eq!(rows[1].state, 1);
        // Cut short anywhere: an error, never a panic.
        for cut in [0, 7, 30, 64, 70, buf.len() - 70] {
            let _ = parse_freebsd_pcblist(&buf[..cut]);
        }
        assert!(parse_freebsd_pcblist(&buf[..100]).is_err());
    }

    fn item(kind: u32, len: usize, fill: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = vec![0u8; roundup64(len)];
        put(&mut v, 0, &(len as u32).to_ne_bytes());
        put(&mut v, 4, &kind.to_ne_bytes());
        fill(&mut v);
        v
    }

    #[test]
    fn macos_pcblist_n() {
        let mut head = vec![0u8; 24];
        put(&mut head, 0, &24u32.to_ne_bytes());
        let mut buf = head.clone();
        buf.extend(item(0x1, 96, |v| {
            put(v, 64, &501u32.to_ne_bytes());
            put(v, 68, &333u32.to_ne_bytes());
        }));
        buf.extend(item(0x2, 32, |_| {}));
        buf.extend(item(0x10, 100, |v| {
            put(v, 16, &12345u16.to_be_bytes());
            put(v, 18, &23456u16.to_be_bytes());
            v[48] = 0x1;
            put(v, 52 + 12, &[127, 0, 0, 1]);
            put(v, 68 + 12, &[127, 0, 0, 1]);
        }));
        buf.extend(item(0x20, 200, |v| put(v, 36, &10u32.to_ne_bytes())));
        buf.extend(item(0x8, 40, |_| {}));
        buf.extend_from_slice(&head);
        let rows = parse_macos_pcblist_n(&buf).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].local, "127.0.0.1:23456".parse().unwrap());
        assert_eq!(rows[0].peer, "127.0.0.1:12345".parse().unwrap());
        assert_eq!(
            (rows[0].state, rows[0].uid, rows[0].pid),
            (10, Some(501), Some(333))
        );
        for cut in [0, 3, 20, 30, 130, buf.len() - 30] {
            let _ = parse_macos_pcblist_n(&buf[..cut]);
        }
    }
}
