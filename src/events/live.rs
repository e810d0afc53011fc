//! `twlab events`: the kernel's TCP events as they happen, for a port, an
//! address or everything; each connection's life at its end; a summary on
//! exit. No socket table is polled: the reader sleeps in poll(2) on the
//! ring buffers until the kernel wakes it (or a stop signal is due).

use super::{Filter, Lives, Session, render};
use crate::error::{Error, Result};
use crate::outcome::Exit;
use crate::signal::{self, Deadline};
use serde::Serialize;
use std::io::Write;
use std::time::Duration;

/// What `twlab events` watches and how it prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsPlan {
    /// Which sockets.
    pub filter: Filter,
    /// JSON lines instead of text.
    pub json: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// Only the lives and the summary, not every event.
    pub lives_only: bool,
    /// Also when each socket's memory is freed (`tcp:tcp_destroy_sock`).
    pub freed: bool,
    /// BPF or tracefs.
    pub via: super::Via,
}

fn json<T: Serialize>(out: &mut dyn Write, kind: &'static str, v: &T) -> std::io::Result<()> {
    let s = crate::json::compact_line(kind, v).map_err(std::io::Error::other)?;
    writeln!(out, "{s}")
}

/// Run until Ctrl-C, `--duration` or `--count`, writing each event (and
/// each life as it ends) to `out` as it comes, flushed after every batch
/// the kernel hands over; then the summary. The command line hands its
/// stdout, locked. A write that fails (a closed pipe) ends the watch
/// quietly. Exit 0.
pub fn run(plan: &EventsPlan, out: &mut dyn Write) -> Result<Exit> {
    let mut session = Session::open_via(
        plan.filter.clone(),
        Some(super::BUFFER_KB),
        plan.freed,
        plan.via,
    )
    .map_err(|why| Error::Invalid(format!("twlab events: kernel events unavailable: {why}")))?;
    let what = if plan.filter.is_all() {
        "every TCP socket of every namespace".to_string()
    } else {
        let mut v: Vec<String> = plan.filter.ports.iter().map(|p| format!(":{p}")).collect();
        v.extend(plan.filter.addrs.iter().map(|a| a.to_string()));
        v.join(", ")
    };
    if !plan.json {
        let _ = writeln!(
            out,
            "kernel events for {what} ({}, clock {}, times UTC){}; Ctrl-C ends",
            session.source(),
            session.clock().name(),
            if session.missing().is_empty() {
                String::new()
            } else {
                format!("; this kernel lacks {}", session.missing().join(", "))
            }
        );
        let _ = out.flush();
    }
    let deadline = plan.duration.map_or(Deadline::never(), Deadline::after);
    let mut lives = Lives::default();
    let mut seen: u64 = 0;
    // Write one batch; false once the output is closed or the count is
    // reached.
    let mut show = |batch: &[super::Event], out: &mut dyn Write| -> bool {
        for e in batch {
            seen += 1;
            let fed = lives.feed(e);
            let (ended, tws) = (&fed.lives, &fed.takeovers);
            let r = if plan.json {
                (if plan.lives_only {
                    Ok(())
                } else {
                    json(out, "event", e)
                })
                .and_then(|_| ended.iter().try_for_each(|l| json(out, "life", l)))
                .and_then(|_| tws.iter().try_for_each(|t| json(out, "time-wait", t)))
            } else {
                (if plan.lives_only {
                    Ok(())
                } else {
                    match &fed.reading {
                        Some(r) => writeln!(out, "{}  {r}", render::Line(e)),
                        None => writeln!(out, "{}", render::Line(e)),
                    }
                })
                .and_then(|_| ended.iter().try_for_each(|l| writeln!(out, "{l}")))
                .and_then(|_| tws.iter().try_for_each(|t| writeln!(out, "{t}")))
            };
            // A closed pipe (`| head`) ends the run quietly.
            if r.is_err() || plan.count.is_some_and(|c| seen >= c) {
                return false;
            }
        }
        let _ = out.flush();
        true
    };
    // One buffer for every batch: its capacity stays at the largest batch.
    let mut batch = Vec::new();
    let mut going = true;
    // Bounded by the deadline, the count and the stop signal.
    while going && !deadline.passed() && !signal::interrupted() {
        session.wait_into(deadline.step(), &mut batch);
        going = show(&batch, out);
    }
    // What the buffers still hold, and what was held back for order.
    if going {
        session.drain_into(&mut batch);
        show(&batch, out);
    }
    let (lost, skipped, unsure) = (
        session.missed(),
        session.skipped(),
        session.unsure_context(),
    );
    drop(session);
    for l in lives.flush() {
        let _ = if plan.json {
            json(out, "life", &l)
        } else {
            writeln!(out, "{l}")
        };
    }
    let mut summary = lives.summary();
    summary.lost = lost;
    summary.skipped = skipped;
    summary.unsure_context = unsure;
    if plan.json {
        let _ = json(out, "summary", &summary);
    } else {
        for l in summary.lines() {
            let _ = writeln!(out, "{l}");
        }
    }
    let _ = out.flush();
    Ok(Exit::Done)
}
