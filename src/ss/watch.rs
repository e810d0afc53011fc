//! `twlab ss --watch`: the filtered table redrawn in place, marking
//! sockets that appear (+), change state (*) and go away (-).

use super::list::{Field, Widths, write_header, write_row};
use super::{Filter, OutputFormat, collect, io_err};
use crate::diag::SockEntry;
use crate::error::{Error, Result};
use crate::outcome::Exit;
#[cfg(unix)]
use crate::sys::term;
use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Upper bound on watch refreshes when no count is given.
pub const MAX_WATCH_FRAMES: u64 = 1_000_000;

/// Parse the refresh interval in milliseconds (10 to 3,600,000).
pub fn parse_watch_ms(s: &str) -> Result<Duration> {
    // A bare number is milliseconds (as before); else a unit: 500ms, 2s.
    let d = match s.trim().parse::<u64>() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => humantime::parse_duration(s.trim()).ok(),
    };
    match d {
        Some(d) if (Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&d) => Ok(d),
        _ => Err(Error::Usage(format!(
            "invalid --watch interval '{}': give 10ms to 1h, e.g. --watch=500ms or --watch=2s (a bare number is milliseconds)",
            crate::text::echo(s)
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
    /// Each socket as the last refresh saw it: a socket that goes keeps
    /// these last values (state, timer, queues, owner) on screen.
    prev: HashMap<Key, SockEntry>,
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
        let mut cur: HashMap<Key, SockEntry> = HashMap::with_capacity(entries.len());
        let mut marks = Vec::with_capacity(entries.len());
        let mut c = Changes::default();
        for e in entries {
            let k = (e.local, e.peer);
            cur.insert(k, e.clone());
            let m = match self.prev.get(&k) {
                _ if !self.seen => Mark::Same,
                None => Mark::New,
                Some(last) if last.state != e.state => Mark::Changed,
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
        // Keep each gone socket as it was last seen.
        for (k, last) in &self.prev {
            if !cur.contains_key(k) {
                self.gone.push((last.clone(), now));
            }
        }
        c.gone = self.gone.iter().filter(|(_, t)| *t == now).count();
        self.prev = cur;
        self.seen = true;
        (marks, c)
    }
}

/// Redraw the filtered table every `every` until `frames` refreshes, q,
/// Ctrl-C or a stop signal (SIGTERM, SIGHUP, SIGQUIT: the terminal is
/// restored, then the CLI exits 128 + the signal's number). Each refresh
/// goes to `out` through a buffer flushed once per refresh; the terminal
/// checks and the alternate screen stay the real stdout's (the command
/// line hands its stdout as `out`).
pub(super) fn run(
    filter: &Filter,
    every: Duration,
    frames: u64,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<Exit> {
    let frames = frames.min(MAX_WATCH_FRAMES);
    if format == OutputFormat::Json {
        return run_json(filter, every, frames, out);
    }
    // The terminal must be restored whatever stops the watch: catch the
    // stop signals (idempotent; the CLI has done it already).
    crate::signal::install();
    let tty = io::stdout().is_terminal();
    let _screen = Screen::enter(tty)?;
    let mut tracker = Tracker::default();
    // Column widths of a non-terminal watch only ever grow, so the change
    // lines of later refreshes line up with the first table.
    let mut widths: Option<Widths> = None;
    for frame in 0..frames {
        let now = Instant::now();
        let mut entries = collect(filter)?;
        entries.sort_by_key(|e| (e.local, e.peer));
        let (marks, changes) = tracker.update(&entries, now);
        let w = Widths::of(entries.iter().chain(tracker.gone.iter().map(|(e, _)| e)));
        let w = match widths.take() {
            Some(old) if !tty => old.max(w),
            _ => w,
        };
        let f = Frame {
            entries: &entries,
            marks: &marks,
            gone: &tracker.gone,
            now,
            widths: &w,
            tty,
            keys: tty && cfg!(unix) && io::stdin().is_terminal(),
            every,
            frame,
            changes,
        };
        let mut buf = io::BufWriter::with_capacity(64 * 1024, &mut *out);
        let r = render(&mut buf, &f).and_then(|_| buf.flush());
        drop(buf);
        r.map_err(io_err)?;
        widths = Some(w);
        if frame + 1 == frames || wait_for_quit(every) {
            break;
        }
    }
    Ok(Exit::Done)
}

/// One refresh as a JSON line (docs/json.md): the first lists every
/// socket (`sockets`), later ones what changed since the last (`new`,
/// `changed`: as they are now; `gone`: as they were last seen), with the
/// counts. Sockets as `ss --json` shows them (`SockEntry`: state
/// `time-wait`, timer `{kind, expires_ms, retrans}`).
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct JsonRefresh<'a> {
    n: u64,
    /// Since the watch started.
    at_ms: u64,
    sockets_total: usize,
    time_wait: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    sockets: Option<&'a [SockEntry]>,
    new: Vec<&'a SockEntry>,
    changed: Vec<&'a SockEntry>,
    gone: Vec<&'a SockEntry>,
}

/// `--watch --json`: one line per refresh, no screen, no keys; stops on
/// `frames`, Ctrl-C or a stop signal (checked in the waits). Each line
/// goes to `out`, flushed at once.
fn run_json(filter: &Filter, every: Duration, frames: u64, out: &mut dyn Write) -> Result<Exit> {
    let start = Instant::now();
    let mut tracker = Tracker::default();
    for frame in 0..frames {
        let now = Instant::now();
        let mut entries = collect(filter)?;
        entries.sort_by_key(|e| (e.local, e.peer));
        let (marks, _) = tracker.update(&entries, now);
        let pick = |m: Mark| {
            entries
                .iter()
                .zip(&marks)
                .filter(move |(_, k)| **k == m)
                .map(|(e, _)| e)
                .collect::<Vec<_>>()
        };
        let line = JsonRefresh {
            n: frame,
            at_ms: u64::try_from(now.duration_since(start).as_millis()).unwrap_or(u64::MAX),
            sockets_total: entries.len(),
            time_wait: entries.iter().filter(|e| e.is_timewait_sock()).count(),
            sockets: (frame == 0).then_some(entries.as_slice()),
            new: pick(Mark::New),
            changed: pick(Mark::Changed),
            gone: tracker
                .gone
                .iter()
                .filter(|(_, t)| *t == now)
                .map(|(e, _)| e)
                .collect(),
        };
        let text = crate::json::compact_line("refresh", &line)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        writeln!(out, "{text}")
            .and_then(|_| out.flush())
            .map_err(io_err)?;
        if frame + 1 == frames {
            break;
        }
        crate::signal::sleep_interruptible(every)?;
    }
    Ok(Exit::Done)
}

/// One refresh to draw.
struct Frame<'a> {
    /// The sockets now, sorted.
    entries: &'a [SockEntry],
    /// One mark per entry.
    marks: &'a [Mark],
    /// Recently gone sockets.
    gone: &'a [(SockEntry, Instant)],
    /// When this refresh was taken (sockets gone at `now` went in it).
    now: Instant,
    /// Column widths.
    widths: &'a Widths,
    /// Stdout is a terminal: redraw in place, fit its height. Otherwise
    /// the first refresh is printed whole and later ones print only what
    /// changed, so a log of a long watch grows with the changes, not with
    /// the table.
    tty: bool,
    /// Stdin is a terminal too: q quits.
    keys: bool,
    every: Duration,
    /// Refresh number, from 0.
    frame: u64,
    changes: Changes,
}

fn render(out: &mut impl Write, f: &Frame) -> io::Result<()> {
    if f.tty {
        // Home, then clear to the end of screen: redraws in place.
        out.write_all(b"\x1b[H\x1b[2J")?;
    } else if f.frame > 0 {
        out.write_all(b"\n")?;
    }
    let tw = f.entries.iter().filter(|e| e.is_timewait_sock()).count();
    writeln!(
        out,
        "twlab ss --watch: {} sockets, {} TIME_WAIT | +{} new, *{} changed, -{} gone | every {} ms, refresh {}{}",
        f.entries.len(),
        tw,
        f.changes.new,
        f.changes.changed,
        f.changes.gone,
        f.every.as_millis(),
        f.frame + 1,
        // q is read from a terminal's stdin only; off a terminal nobody
        // is there to press it.
        if f.tty && f.keys {
            " | q or Ctrl-C quits"
        } else if f.tty {
            " | Ctrl-C quits"
        } else {
            ""
        }
    )?;
    if f.tty {
        render_screen(out, f)
    } else if f.frame == 0 {
        write_header(out, f.widths, "  ", false)?;
        write_rows(out, f.widths, f.entries.iter().map(|e| (e, Mark::Same)))
    } else {
        // Only what changed in this refresh: new and changed sockets, and
        // those gone since the last one.
        let moved = f
            .entries
            .iter()
            .zip(f.marks.iter().copied())
            .filter(|(_, m)| *m != Mark::Same);
        let gone = f
            .gone
            .iter()
            .filter(|(_, t)| *t == f.now)
            .map(|(e, _)| (e, Mark::Gone));
        write_rows(out, f.widths, moved.chain(gone))
    }
}

fn write_rows<'a>(
    out: &mut impl Write,
    w: &Widths,
    rows: impl Iterator<Item = (&'a SockEntry, Mark)>,
) -> io::Result<()> {
    let mut field = Field::new();
    for (e, m) in rows {
        out.write_all(m.prefix().as_bytes())?;
        write_row(out, &mut field, e, w, None, false)?;
    }
    Ok(())
}

/// The table on a terminal: as many rows as fit, what moved first.
fn render_screen(out: &mut impl Write, f: &Frame) -> io::Result<()> {
    let rows = term::rows().unwrap_or(24).max(6);
    write_header(out, f.widths, "  ", false)?;
    let budget = rows.saturating_sub(3);
    let mut rows: Vec<(&SockEntry, Mark)> = f
        .entries
        .iter()
        .zip(f.marks.iter().copied())
        .chain(f.gone.iter().map(|(e, _)| (e, Mark::Gone)))
        .collect();
    if rows.len() > budget {
        // Not everything fits: show what moved first (stable order).
        rows.sort_by_key(|(_, m)| *m == Mark::Same);
    }
    let total = rows.len();
    let more = total.saturating_sub(budget);
    rows.truncate(budget);
    write_rows(out, f.widths, rows.into_iter())?;
    if more > 0 {
        writeln!(out, "  ... {more} more")?;
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

/// Wait up to `d`; true if the user asked to quit (q, Q, the Ctrl-C byte)
/// or a stop signal arrived (noticed within [`crate::signal::CHECK_EVERY`]).
fn wait_for_quit(d: Duration) -> bool {
    let end = crate::signal::Deadline::after(d);
    let stdin_tty = cfg!(unix) && io::stdin().is_terminal();
    // Bounded: each pass waits at most CHECK_EVERY and the deadline is fixed.
    loop {
        if crate::signal::interrupted() {
            return true;
        }
        if end.passed() {
            return false;
        }
        let step = end.step();
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
