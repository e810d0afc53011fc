//! The text ladder.

use super::Trace;
use super::annotate::{Moment, describe};
use super::decode::{EndStates, Segment};
use crate::diag::TcpState;

fn states(v: &[TcpState]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter()
            .map(|s| s.kernel_name())
            .collect::<Vec<_>>()
            .join("+")
    }
}

fn row(s: &Segment, absolute: bool) -> String {
    let w = &s.wire;
    let (seq, ack) = if absolute {
        (w.seq, w.ack)
    } else {
        (s.rel_seq, s.rel_ack)
    };
    let ts = match (w.tsval, w.tsecr) {
        (Some(v), Some(e)) => format!("{v}/{e}"),
        _ => "-".into(),
    };
    let st = match &s.states {
        Some(EndStates { client, server }) => format!("{} | {}", states(client), states(server)),
        None => String::new(),
    };
    format!(
        "{:>3} {:>9.3} c{} {} {:<11} {:>10} {:>10} {:>21} {:>6} {:>5}  {}{}",
        s.n,
        s.at_us as f64 / 1000.0,
        s.conn,
        s.dir.arrow(),
        w.flags.to_string(),
        seq,
        ack,
        ts,
        w.window,
        w.len,
        st,
        if s.delayed {
            "  ◀ the old segment, held by the delay box, arrives now"
        } else {
            ""
        }
    )
}

fn call_row(c: &super::StepState) -> String {
    format!(
        "    {:>9.3}    ── {} {} → {}   states after: {} | {}",
        c.at_us as f64 / 1000.0,
        c.actor,
        c.call,
        c.result,
        states(&c.states.client),
        states(&c.states.server)
    )
}

fn kernel_row(k: &super::KernelEvent) -> String {
    format!("    {:>9.3}    ◆ {}", k.at_us as f64 / 1000.0, k.text())
}

pub(crate) fn moment_row(m: &Moment) -> usize {
    match m {
        Moment::TimeWaitSyn { segment, .. }
        | Moment::Takeover { segment, .. }
        | Moment::Reset { segment, .. } => *segment,
        Moment::DelayedDuplicate(d) => d.segment,
    }
}

/// The ladder as text: one row per segment, each annotated moment under
/// its row, then the notes.
pub fn ladder_text(t: &Trace, absolute: bool) -> String {
    let mut out = vec![
        t.title.clone(),
        format!(
            "client {}  →  server {}   tcp_timestamps={}   {} frames read on {}, {} kept ({})",
            t.client,
            t.server,
            u8::from(t.timestamps),
            t.frames_seen,
            t.capture_on,
            t.segments.len(),
            if t.capture_on == "lo" {
                "loopback: each frame seen twice, the incoming copy kept"
            } else {
                "each frame seen once; TCP segments kept"
            }
        ),
        format!(
            "{:>3} {:>9} {:>2} {} {:<11} {:>10} {:>10} {:>21} {:>6} {:>5}",
            "#",
            "ms",
            "cn",
            " ",
            "flags",
            if absolute { "seq" } else { "seq(rel)" },
            if absolute { "ack" } else { "ack(rel)" },
            "TSval/TSecr",
            "win",
            "len"
        ),
    ];
    // Segments, socket calls and the kernel's events merged on one clock;
    // a call's row shows both ends' states right after it returned. A
    // kernel event stamped with a segment's very time comes after it (the
    // capture stamps a frame as it arrives, before TCP processes it).
    let mut calls = t.steps.iter().peekable();
    let mut kernel = t.kernel_events.iter().peekable();
    for s in &t.segments {
        loop {
            let c = calls.peek().filter(|c| c.at_us <= s.at_us).map(|c| c.at_us);
            let k = kernel.peek().filter(|k| k.at_us < s.at_us).map(|k| k.at_us);
            match (c, k) {
                (Some(ct), Some(kt)) if kt < ct => out.extend(kernel.next().map(kernel_row)),
                (Some(_), _) => out.extend(calls.next().map(call_row)),
                (None, Some(_)) => out.extend(kernel.next().map(kernel_row)),
                (None, None) => break,
            }
        }
        out.push(row(s, absolute));
        for m in t.moments.iter().filter(|m| moment_row(m) == s.n) {
            out.extend(describe(m).into_iter().map(|l| format!("      ▲ {l}")));
        }
        for c in t.cites.iter().filter(|c| c.segment == s.n) {
            out.extend(c.lines.iter().map(|l| format!("      ▲ {l}")));
        }
    }
    let mut rest: Vec<(u64, String)> = calls
        .map(|c| (c.at_us, call_row(c)))
        .chain(kernel.map(|k| (k.at_us, kernel_row(k))))
        .collect();
    rest.sort_by_key(|r| r.0);
    out.extend(rest.into_iter().map(|r| r.1));
    if t.states_source == super::EXACT_SOURCE {
        out.push(t.states_source.to_string());
    } else {
        out.push(format!("states: {}", t.states_source));
    }
    out.extend(t.notes.iter().cloned());
    out.join("\n")
}
