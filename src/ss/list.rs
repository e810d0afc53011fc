//! The socket table: aligned text like `ss -tan` (formatted without
//! allocating per row) or one JSON document.

use super::{Filter, OutputFormat, Processes, io_err, json_err};
use crate::diag::owners::{ID_HEADER, Owner, owner_key};
use crate::diag::{self, SockEntry, TcpState, Timer, TimerKind};
use crate::error::Result;
use crate::outcome::Exit;
use crate::socket::Family;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

/// A small stack buffer that rows are formatted into.
pub(super) struct Field {
    /// Room for a JSON row's first part: two 55-byte IPv6 addresses and
    /// the keys around them.
    buf: [u8; 256],
    len: usize,
}

impl Field {
    pub(super) fn new() -> Self {
        Field {
            buf: [0; 256],
            len: 0,
        }
    }
    fn clear(&mut self) {
        self.len = 0;
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    fn push(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }
    fn push_u64(&mut self, n: u64) {
        self.push(crate::text::decimal(n, &mut [0u8; 20]));
    }
    /// `58.912s` from milliseconds.
    fn push_ms_as_secs(&mut self, ms: u32) {
        self.push_u64(u64::from(ms / 1000));
        let frac = ms % 1000;
        self.push(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
            b's',
        ]);
    }
    /// `127.0.0.1:80`, `[::1]:80`, `0.0.0.0:*` (port 0 as `*`, like ss).
    fn push_addr(&mut self, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(v) => {
                let o = v.octets();
                for (i, b) in o.iter().enumerate() {
                    if i > 0 {
                        self.push(b".");
                    }
                    self.push_u64(u64::from(*b));
                }
            }
            IpAddr::V6(v) => {
                self.push(b"[");
                let mut w = io::Cursor::new(&mut self.buf[self.len..]);
                // 39 bytes at most for an IPv6 address; the buffer has room.
                let _ = write!(w, "{v}");
                self.len += w.position() as usize;
                self.push(b"]");
            }
        }
        self.push(b":");
        if a.port() == 0 {
            self.push(b"*");
        } else {
            self.push_u64(u64::from(a.port()));
        }
    }
    /// `127.0.0.1:0`, `[::1]:80`: the address as `SocketAddr`'s
    /// `Display` writes it (what serde_json writes), port 0 included.
    fn push_addr_json(&mut self, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(v) => {
                for (i, b) in v.octets().iter().enumerate() {
                    if i > 0 {
                        self.push(b".");
                    }
                    self.push_u64(u64::from(*b));
                }
            }
            IpAddr::V6(_) => {
                let mut w = io::Cursor::new(&mut self.buf[self.len..]);
                // 55 bytes at most ([v6%scope]:port); the buffer has room.
                let _ = write!(w, "{a}");
                self.len += w.position() as usize;
                return;
            }
        }
        self.push(b":");
        self.push_u64(u64::from(a.port()));
    }

    fn push_timer(&mut self, e: &SockEntry) {
        match e.timer {
            Some(t) => {
                self.push(t.kind.ss_name().as_bytes());
                self.push(b" ");
                self.push_ms_as_secs(t.expires_ms);
                if t.kind == TimerKind::Retransmit && t.retrans > 0 {
                    self.push(b" x");
                    self.push_u64(u64::from(t.retrans));
                }
            }
            None => self.push(b"-"),
        }
    }
}

fn addr_len(a: &SocketAddr, f: &mut Field) -> usize {
    f.clear();
    f.push_addr(a);
    f.len
}

fn timer_len(e: &SockEntry, f: &mut Field) -> usize {
    f.clear();
    f.push_timer(e);
    f.len
}

const SPACES: [u8; 64] = [b' '; 64];

/// Pad a field of `used` bytes to `width`, always leaving one space so an
/// unusually wide value (a 7-digit queue, a 6-digit uid) never runs into
/// the next column.
fn pad(out: &mut impl Write, used: usize, width: usize) -> io::Result<()> {
    let mut n = width.saturating_sub(used).max(1);
    while n > 0 {
        let k = n.min(SPACES.len());
        out.write_all(&SPACES[..k])?;
        n -= k;
    }
    Ok(())
}

/// Column widths of the text table.
pub(super) struct Widths {
    local: usize,
    peer: usize,
    timer: usize,
}

impl Widths {
    /// The wider of two, column by column.
    pub(super) fn max(self, o: Widths) -> Widths {
        Widths {
            local: self.local.max(o.local),
            peer: self.peer.max(o.peer),
            timer: self.timer.max(o.timer),
        }
    }

    pub(super) fn of<'a>(entries: impl IntoIterator<Item = &'a SockEntry>) -> Widths {
        let mut m = WidthMeter::new();
        for e in entries {
            m.add(e);
        }
        m.w
    }
}

/// Column widths measured one row at a time, so a table can be measured
/// while it streams past.
pub(super) struct WidthMeter {
    w: Widths,
    /// An IPv4 row as wide as any can be was seen.
    v4_done: bool,
    f: Field,
}

impl WidthMeter {
    pub(super) fn new() -> Self {
        WidthMeter {
            w: Widths {
                local: "Local Address:Port".len(),
                peer: "Peer Address:Port".len(),
                timer: "Timer".len(),
            },
            v4_done: false,
            f: Field::new(),
        }
    }

    pub(super) fn add(&mut self, e: &SockEntry) {
        let (w, f) = (&mut self.w, &mut self.f);
        // Every IPv4 row fits in 21 columns; measure only until one needs
        // that much, and always measure IPv6 rows.
        if !(e.local.is_ipv4() && e.peer.is_ipv4() && self.v4_done) {
            w.local = w.local.max(addr_len(&e.local, f));
            w.peer = w.peer.max(addr_len(&e.peer, f));
            self.v4_done |= w.local >= 21 && w.peer >= 21;
        }
        w.timer = w.timer.max(timer_len(e, f));
    }
}

const STATE_W: usize = 11;

pub(super) fn write_header(
    out: &mut impl Write,
    w: &Widths,
    prefix: &str,
    procs: bool,
) -> io::Result<()> {
    out.write_all(prefix.as_bytes())?;
    out.write_all(b"State")?;
    pad(out, 5, STATE_W)?;
    out.write_all(b"Recv-Q Send-Q ")?;
    out.write_all(b"Local Address:Port")?;
    pad(out, 18, w.local + 1)?;
    out.write_all(b"Peer Address:Port")?;
    pad(out, 17, w.peer + 1)?;
    out.write_all(b"Timer")?;
    pad(out, 5, w.timer + 1)?;
    out.write_all(ID_HEADER.as_bytes())?;
    if procs {
        out.write_all(b"      Process")?;
    }
    out.write_all(b"\n")
}

pub(super) fn write_row(
    out: &mut impl Write,
    f: &mut Field,
    e: &SockEntry,
    w: &Widths,
    owners: Option<&Vec<Owner>>,
    procs: bool,
) -> io::Result<()> {
    let st = e.state.ss_column();
    out.write_all(st.as_bytes())?;
    pad(out, st.len(), STATE_W)?;
    f.clear();
    f.push_u64(u64::from(e.recv_q));
    out.write_all(f.as_bytes())?;
    pad(out, f.len, 7)?;
    f.clear();
    f.push_u64(u64::from(e.send_q));
    out.write_all(f.as_bytes())?;
    pad(out, f.len, 7)?;
    f.clear();
    f.push_addr(&e.local);
    out.write_all(f.as_bytes())?;
    pad(out, f.len, w.local + 1)?;
    f.clear();
    f.push_addr(&e.peer);
    out.write_all(f.as_bytes())?;
    pad(out, f.len, w.peer + 1)?;
    f.clear();
    f.push_timer(e);
    out.write_all(f.as_bytes())?;
    pad(out, f.len, w.timer + 1)?;
    if e.is_timewait_sock() {
        out.write_all(b"-     -")?;
    } else {
        f.clear();
        f.push_u64(u64::from(e.uid));
        out.write_all(f.as_bytes())?;
        pad(out, f.len, 6)?;
        f.clear();
        f.push_u64(u64::from(owner_key(e)));
        out.write_all(f.as_bytes())?;
    }
    if procs && let Some(os) = owners {
        pad(out, if e.is_timewait_sock() { 7 } else { 6 + f.len }, 17)?;
        for (i, o) in os.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            // A process may name itself anything (prctl(PR_SET_NAME),
            // /proc/PID/comm), escape sequences included.
            out.write_all(crate::text::escape_for_terminal(&o.name).as_bytes())?;
            f.clear();
            f.push(b"(pid=");
            f.push_u64(u64::from(o.pid));
            f.push(b")");
            out.write_all(f.as_bytes())?;
        }
    }
    out.write_all(b"\n")
}

/// `ss --json`: the document, as its schema describes it (the list is
/// written by hand, row by row, as `write_json_list` does).
#[derive(schemars::JsonSchema)]
#[allow(dead_code)] // Never built: the list is streamed row by row.
pub(crate) struct JsonList<'a> {
    /// Every socket that matched the filter.
    sockets: Vec<JsonSock<'a>>,
}

/// One socket in --json output.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct JsonSock<'a> {
    /// `ipv4` or `ipv6`.
    #[schemars(with = "Family")]
    family: &'static str,
    /// The state as every command names it in JSON (`time-wait`,
    /// `listening`, `new-syn-recv`), not iproute2's word (`syn-recv`),
    /// which the text keeps.
    state: TcpState,
    local: &'a SocketAddr,
    peer: &'a SocketAddr,
    /// The running timer as every command writes one (`{"kind":
    /// "retransmit", "expires_ms", "retrans"}`), not iproute2's `on`,
    /// which the text keeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    timer: Option<Timer>,
    recv_q: u32,
    send_q: u32,
    /// `None` for TIME_WAIT mini sockets, which have no owner.
    uid: Option<u32>,
    inode: Option<u32>,
    /// The owning pid, where the system's table names it (Windows, macOS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    processes: Option<&'a [Owner]>,
}

impl<'a> JsonSock<'a> {
    fn of(e: &'a SockEntry, owners: &'a HashMap<u32, Vec<Owner>>, procs: bool) -> Self {
        let tw = e.is_timewait_sock();
        JsonSock {
            family: match e.family {
                Family::V4 => "ipv4",
                Family::V6 => "ipv6",
            },
            state: e.state,
            local: &e.local,
            peer: &e.peer,
            timer: e.timer,
            recv_q: e.recv_q,
            send_q: e.send_q,
            uid: (!tw).then_some(e.uid),
            inode: (!tw).then_some(e.inode),
            pid: e.pid,
            processes: if procs && !tw {
                Some(
                    owners
                        .get(&owner_key(e))
                        .map(|v| v.as_slice())
                        .unwrap_or(&[]),
                )
            } else {
                None
            },
        }
    }
}

/// Rows buffered before the first is printed: a table that ends within
/// them gets columns as wide as its widest value; a bigger one gets the
/// widest any value can be ([`Widths::widest`]) and streams.
const FIRST_LOOK: usize = 512;

impl Widths {
    /// Columns that fit any value `query` can bring: an IPv4 address and
    /// port is at most 21 columns, an IPv6 one 47 (`[` 39 `]:` 5); a
    /// TIME_WAIT timer at most `timewait 60.000s`, any other
    /// `keepalive 4294967.295s`.
    pub(super) fn widest(query: &crate::diag::Query) -> Widths {
        use crate::diag::TcpState;
        let addr = if query.families.iter().all(|f| *f == Family::V4) {
            21
        } else {
            47
        };
        let only_tw = TcpState::ALL
            .iter()
            .all(|s| *s == TcpState::TimeWait || !query.states.contains(*s));
        Widths {
            local: addr,
            peer: addr,
            timer: if only_tw { 16 } else { 22 },
        }
    }
}

/// Write the filtered table to `out`, streaming: rows go out (through a
/// 128 KiB buffer) as the
/// kernel's one dump is decoded (both families in one walk where the
/// kernel allows, in its hash order, as `ss -tan` prints them; nothing is
/// sorted), so memory does not grow with the table.
///
/// Text needs its column widths before the first row: the first
/// [`FIRST_LOOK`] rows are held back to measure; past them the columns
/// take the widest value possible. `-p` reads every socket's owners from
/// /proc first, as `ss -p` does.
pub(super) fn run(
    filter: &Filter,
    format: OutputFormat,
    processes: Processes,
    out: &mut dyn Write,
) -> Result<Exit> {
    let procs = processes == Processes::Show;
    let owners = if procs {
        crate::diag::owners::all_socket_owners()
    } else {
        HashMap::new()
    };
    let mut out = io::BufWriter::with_capacity(128 * 1024, out);
    match format {
        OutputFormat::Json => write_json_list(&mut out, filter, &owners, procs)?,
        _ => write_text_list(&mut out, filter, &owners, procs)?,
    }
    out.flush().map_err(io_err)?;
    Ok(Exit::Done)
}

fn write_json_list(
    out: &mut impl Write,
    filter: &Filter,
    owners: &HashMap<u32, Vec<Owner>>,
    procs: bool,
) -> Result<()> {
    // As `crate::json::doc` would write it: the version first.
    write!(
        out,
        "{{\"schema_version\":{},\"sockets\":[",
        crate::json::SCHEMA_VERSION
    )
    .map_err(io_err)?;
    let mut first = true;
    let mut f = Field::new();
    diag::dump_each(&filter.query, |e| {
        crate::signal::check()?;
        if !filter.matches(&e) {
            return Ok(());
        }
        if !first {
            out.write_all(b",").map_err(io_err)?;
        }
        first = false;
        write_json_row(out, &mut f, &JsonSock::of(&e, owners, procs))
    })?;
    out.write_all(b"]}\n").map_err(io_err)
}

/// One socket as serde_json writes a [`JsonSock`] (same keys, same order,
/// same values), formatted in a stack buffer: serde's formatting of the
/// two addresses through `Display` was most of the cost of a row.
/// Process names, which need JSON escaping, still go through serde_json.
fn write_json_row(out: &mut impl Write, f: &mut Field, s: &JsonSock<'_>) -> Result<()> {
    f.clear();
    f.push(b"{\"family\":\"");
    f.push(s.family.as_bytes());
    f.push(b"\",\"state\":\"");
    f.push(s.state.json_name().as_bytes());
    f.push(b"\",\"local\":\"");
    f.push_addr_json(s.local);
    f.push(b"\",\"peer\":\"");
    f.push_addr_json(s.peer);
    f.push(b"\",");
    out.write_all(f.as_bytes()).map_err(io_err)?;
    f.clear();
    if let Some(t) = &s.timer {
        f.push(b"\"timer\":{\"kind\":\"");
        f.push(t.kind.json_name().as_bytes());
        f.push(b"\",\"expires_ms\":");
        f.push_u64(u64::from(t.expires_ms));
        f.push(b",\"retrans\":");
        f.push_u64(u64::from(t.retrans));
        f.push(b"},");
    }
    f.push(b"\"recv_q\":");
    f.push_u64(u64::from(s.recv_q));
    f.push(b",\"send_q\":");
    f.push_u64(u64::from(s.send_q));
    let opt = |f: &mut Field, v: Option<u32>| match v {
        Some(v) => f.push_u64(u64::from(v)),
        None => f.push(b"null"),
    };
    f.push(b",\"uid\":");
    opt(f, s.uid);
    f.push(b",\"inode\":");
    opt(f, s.inode);
    out.write_all(f.as_bytes()).map_err(io_err)?;
    if let Some(p) = s.processes {
        out.write_all(b",\"processes\":").map_err(io_err)?;
        serde_json::to_writer(&mut *out, p).map_err(json_err)?;
    }
    out.write_all(b"}").map_err(io_err)
}

fn write_text_list(
    out: &mut impl Write,
    filter: &Filter,
    owners: &HashMap<u32, Vec<Owner>>,
    procs: bool,
) -> Result<()> {
    let mut f = Field::new();
    let mut head: Vec<SockEntry> = Vec::new();
    let mut widths: Option<Widths> = None;
    diag::dump_each(&filter.query, |e| {
        crate::signal::check()?;
        if !filter.matches(&e) {
            return Ok(());
        }
        if let Some(w) = &widths {
            return write_row(out, &mut f, &e, w, owners.get(&owner_key(&e)), procs)
                .map_err(io_err);
        }
        head.push(e);
        if head.len() == FIRST_LOOK {
            let w = Widths::widest(&filter.query);
            write_header(out, &w, "", procs).map_err(io_err)?;
            for e in head.drain(..) {
                write_row(out, &mut f, &e, &w, owners.get(&owner_key(&e)), procs)
                    .map_err(io_err)?;
            }
            widths = Some(w);
        }
        Ok(())
    })?;
    if widths.is_none() {
        let w = Widths::of(&head);
        write_header(out, &w, "", procs).map_err(io_err)?;
        for e in &head {
            write_row(out, &mut f, e, &w, owners.get(&owner_key(e)), procs).map_err(io_err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rows_like_ss() {
        let mut f = Field::new();
        f.push_addr(&"127.0.0.1:0".parse().unwrap());
        assert_eq!(f.as_bytes(), b"127.0.0.1:*");
        f.clear();
        f.push_addr(&"[::1]:443".parse().unwrap());
        assert_eq!(f.as_bytes(), b"[::1]:443");
        f.clear();
        f.push_ms_as_secs(58_912);
        assert_eq!(f.as_bytes(), b"58.912s");
        f.clear();
        f.push_ms_as_secs(5);
        assert_eq!(f.as_bytes(), b"0.005s");
    }

    #[test]
    fn json_rows_are_what_serde_json_writes() {
        use crate::diag::{TcpState, Timer};
        let e = |state, local: &str, peer: &str, timer: Option<Timer>, inode| {
            let local: SocketAddr = local.parse().unwrap();
            SockEntry {
                family: Family::of(&local),
                state,
                local,
                peer: peer.parse().unwrap(),
                timer,
                recv_q: 3,
                send_q: 4_000_000,
                uid: 1000,
                inode,
                v6only: None,
                pid: None,
            }
        };
        let tw = Timer {
            kind: TimerKind::Timewait,
            expires_ms: 59_123,
            retrans: 0,
        };
        let rows = [
            e(
                TcpState::TimeWait,
                "127.0.0.1:40000",
                "127.0.0.1:5001",
                Some(tw),
                0,
            ),
            e(TcpState::Listen, "[::]:80", "[::]:0", None, 77),
            // A request socket with its SYN-ACK retransmission timer:
            // `new-syn-recv` and `retransmit` in JSON (iproute2's words,
            // `syn-recv` and `on`, are the text's).
            e(
                TcpState::NewSynRecv,
                "127.0.0.1:80",
                "127.0.0.1:40001",
                Some(Timer {
                    kind: TimerKind::Retransmit,
                    expires_ms: 812,
                    retrans: 1,
                }),
                0,
            ),
            e(
                TcpState::Established,
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65534",
                None,
                4_294_967_295,
            ),
        ];
        let mut owners = HashMap::new();
        owners.insert(
            77,
            vec![Owner {
                pid: 42,
                name: "a\"b\u{1b}".into(),
            }],
        );
        for procs in [false, true] {
            for r in &rows {
                let s = JsonSock::of(r, &owners, procs);
                let mut ours = Vec::new();
                write_json_row(&mut ours, &mut Field::new(), &s).unwrap();
                let theirs = serde_json::to_vec(&s).unwrap();
                let ours = String::from_utf8(ours).unwrap();
                assert_eq!(ours, String::from_utf8(theirs).unwrap());
                if r.state == TcpState::NewSynRecv {
                    assert!(
                        ours.contains(r#""state":"new-syn-recv""#)
                            && ours.contains(r#""kind":"retransmit""#),
                        "{ours}"
                    );
                }
            }
        }
    }
}
