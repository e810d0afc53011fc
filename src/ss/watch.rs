//! `twlab ss --watch`: the filtered table redrawn in place, marking
//! sockets that appear (+), change state (*) and go away (-).

use super::list::{Field, Widths, write_header, write_row};
use super::{Filter, collect, io_err};
use crate::diag::{SockEntry, TcpState};
use crate::error::{Error, Result};
use crate::socket::Family;
#[cfg(unix)]
use crate::sys::term;
use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Upper bound on watch refreshes when no count is given.
pub const MAX_WATCH_FRAMES: u64 = 1_000_000;

/// Parse the refresh interval in milliseconds (10 to 3,600,000).
pub fn parse_watch_ms(s: &str) -> Result<Duration> {
    match s.trim().parse::<u64>() {
        Ok(ms) if (10..=3_600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(Error::Invalid(format!(
            "invalid --watch interval '{s}': give milliseconds from 10 to 3600000, e.g. --watch=500"
        ))),
    }
}

/// How long a gone socket stays on screen, marked '-'.
const GONE_FOR: Duration = Duration::from_secs(3);

type Key = (SocketAddr, SocketAddr);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Same,
    New,
    Changed,
    Gone,
}

impl Mark {
    fn prefix(self) -> &'static str {
        match self {
            Mark::Same => "  ",
            Mark::New => "+ ",
            Mark::Changed => "* ",
            Mark::Gone => "- ",
        }
    }
}

/// What changed since the last refresh, kept across refreshes.
#[derive(Default)]
struct Tracker {
    /// The state of each socket at the last refresh.
    prev: HashMap<Key, TcpState>,
    /// Sockets gone in the last [`GONE_FOR`], with when they went.
    gone: Vec<(SockEntry, Instant)>,
    /// True once one refresh has been seen (the first marks nothing).
    seen: bool,
}

/// The changes of one refresh: counts of new, changed and gone sockets.
#[derive(Debug, Clone, Copy, Default)]
struct Changes {
    new: usize,
    changed: usize,
    gone: usize,
}

impl Tracker {
    /// Mark each of `entries` (sorted) against the last refresh and update
    /// the list of gone sockets.
    fn update(&mut self, entries: &[SockEntry], now: Instant) -> (Vec<Mark>, Changes) {
        let mut cur: HashMap<Key, TcpState> = HashMap::with_capacity(entries.len());
        let mut marks = Vec::with_capacity(entries.len());
        let mut c = Changes::default();
        for e in entries {
            let k = (e.local, e.peer);
            cur.insert(k, e.state);
            let m = match self.prev.get(&k) {
                _ if !self.seen => Mark::Same,
                None => Mark::New,
                Some(s) if *s != e.state => Mark::Changed,
                Some(_) => Mark::Same,
            };
            c.new += usize::from(m == Mark::New);
            c.changed += usize::from(m == Mark::Changed);
            marks.push(m);
        }
        // Sockets that were here last time and are not now.
        self.gone.retain(|(e, t)| {
            now.duration_since(*t) < GONE_FOR && !cur.contains_key(&(e.local, e.peer))
        });
        // Keep the last seen addresses and state of each gone socket.
        for (k, st) in &self.prev {
            if !cur.contains_key(k) {
                self.gone.push((gone_entry(k, *st), now));
            }
        }
        c.gone = self.gone.iter().filter(|(_, t)| *t == now).count();
        self.prev = cur;
        self.seen = true;
        (marks, c)
    }
}

/// Redraw the filtered table every `every` until `frames` refreshes, q or
/// Ctrl-C.
pub(super) fn run(filter: &Filter, every: Duration, frames: u64) -> Result<u8> {
    let frames = frames.min(MAX_WATCH_FRAMES);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Fails when main already installed the process-wide handler;
        // wait_for_quit also checks crate::interrupted() for that case.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let tty = io::stdout().is_terminal();
    let _screen = Screen::enter(tty)?;
    let stdout = io::stdout();
    let mut tracker = Tracker::default();
    for frame in 0..frames {
        let now = Instant::now();
        let mut entries = collect(filter)?;
        entries.sort_by_key(|e| (e.local, e.peer));
        let (marks, changes) = tracker.update(&entries, now);
        let f = Frame {
            entries: &entries,
            marks: &marks,
            gone: &tracker.gone,
            tty,
            every,
            frame,
            changes,
        };
        let mut out = io::BufWriter::with_capacity(64 * 1024, stdout.lock());
        let r = render(&mut out, &f).and_then(|_| out.flush());
        drop(out);
        r.map_err(io_err)?;
        if frame + 1 == frames || wait_for_quit(every, &stop) {
            break;
        }
    }
    Ok(0)
}

/// The table keeps only states, so rebuild a minimal entry for a gone
/// socket: its addresses and last state.
fn gone_entry(k: &Key, st: TcpState) -> SockEntry {
    SockEntry {
        family: Family::of(&k.0),
        state: st,
        local: k.0,
        peer: k.1,
        timer: None,
        recv_q: 0,
        send_q: 0,
        uid: 0,
        inode: 0,
    }
}

/// One refresh to draw.
struct Frame<'a> {
    /// The sockets now, sorted.
    entries: &'a [SockEntry],
    /// One mark per entry.
    marks: &'a [Mark],
    /// Recently gone sockets.
    gone: &'a [(SockEntry, Instant)],
    /// Stdout is a terminal: redraw in place, fit its height.
    tty: bool,
    every: Duration,
    /// Refresh number, from 0.
    frame: u64,
    changes: Changes,
}

fn render(out: &mut impl Write, f: &Frame) -> io::Result<()> {
    let Frame {
        entries,
        marks,
        gone,
        tty,
        every,
        frame,
        changes,
    } = *f;
    let rows = if tty {
        term::rows().unwrap_or(24).max(6)
    } else {
        usize::MAX
    };
    if tty {
        // Home, then clear to the end of screen: redraws in place.
        out.write_all(b"\x1b[H\x1b[2J")?;
    } else if frame > 0 {
        out.write_all(b"\n")?;
    }
    let tw = entries.iter().filter(|e| e.is_timewait_sock()).count();
    writeln!(
        out,
        "twlab ss --watch: {} sockets, {} TIME_WAIT | +{} new, *{} changed, -{} gone | every {} ms, refresh {} | q or Ctrl-C quits",
        entries.len(),
        tw,
        changes.new,
        changes.changed,
        changes.gone,
        every.as_millis(),
        frame + 1
    )?;
    let w = Widths::of(entries.iter().chain(gone.iter().map(|(e, _)| e)));
    write_header(out, &w, "  ", false)?;
    let budget = rows.saturating_sub(3);
    let mut field = Field::new();
    let mut rows: Vec<(&SockEntry, Mark)> = entries
        .iter()
        .zip(marks.iter().copied())
        .chain(gone.iter().map(|(e, _)| (e, Mark::Gone)))
        .collect();
    if rows.len() > budget {
        // Not everything fits: show what moved first (stable order).
        rows.sort_by_key(|(_, m)| *m == Mark::Same);
    }
    let total = rows.len();
    for (shown, (e, m)) in rows.into_iter().enumerate() {
        if shown >= budget {
            writeln!(out, "  ... {} more", total - shown)?;
            break;
        }
        out.write_all(m.prefix().as_bytes())?;
        write_row(out, &mut field, e, &w, None, false)?;
    }
    Ok(())
}

/// The terminal while watching: stdin raw (so `q` arrives at once) and, on
/// a terminal stdout, the alternate screen with the cursor hidden. Both are
/// undone on drop, also when unwinding.
struct Screen {
    #[cfg(unix)]
    _raw: Option<term::RawStdin>,
    alt: bool,
}

impl Screen {
    fn enter(tty_out: bool) -> Result<Screen> {
        let mut s = Screen {
            #[cfg(unix)]
            _raw: if io::stdin().is_terminal() {
                term::RawStdin::enter()
            } else {
                None
            },
            alt: false,
        };
        if tty_out {
            // Alternate screen, hide the cursor.
            let mut o = io::stdout().lock();
            o.write_all(b"\x1b[?1049h\x1b[?25l").map_err(io_err)?;
            o.flush().map_err(io_err)?;
            s.alt = true;
        }
        Ok(s)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.alt {
            let mut o = io::stdout().lock();
            let _ = o.write_all(b"\x1b[?25h\x1b[?1049l");
            let _ = o.flush();
        }
    }
}

/// Wait up to `d`; true if the user asked to quit (q, Q, Ctrl-C).
fn wait_for_quit(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    let stdin_tty = cfg!(unix) && io::stdin().is_terminal();
    // Bounded: each pass waits at most 50 ms and the deadline is fixed.
    loop {
        // Ctrl-C: the process-wide handler (main) sets crate::interrupted.
        if stop.load(Ordering::SeqCst) || crate::interrupted() {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        let step = (end - now).min(Duration::from_millis(50));
        if stdin_tty && key_pressed_quit(step) {
            return true;
        } else if !stdin_tty {
            std::thread::sleep(step);
        }
    }
}

/// Wait up to `step` for keys on the terminal; true on q, Q or Ctrl-C
/// (a byte, 3, since raw mode turns ISIG off).
#[cfg(unix)]
fn key_pressed_quit(step: Duration) -> bool {
    let mut b = [0u8; 64];
    match term::read_stdin_within(step, &mut b) {
        term::StdinRead::Bytes(k) => b[..k].iter().any(|c| matches!(c, b'q' | b'Q' | 3)),
        term::StdinRead::Eof => {
            // Nothing more to read; sleep out the step instead.
            std::thread::sleep(step);
            false
        }
        term::StdinRead::Nothing => false,
    }
}

/// Other systems: `run` refuses before watching starts.
#[cfg(not(unix))]
fn key_pressed_quit(step: Duration) -> bool {
    std::thread::sleep(step);
    false
}

/// Other systems: `run` refuses before watching starts.
#[cfg(not(unix))]
mod term {
    pub(super) fn rows() -> Option<usize> {
        None
    }
}
