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

fn moment_row(m: &Moment) -> usize {
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
    // Segments and socket calls merged on one clock; a call's row shows
    // both ends' states right after it returned.
    let mut calls = t.steps.iter().peekable();
    for s in &t.segments {
        while let Some(c) = calls.next_if(|c| c.at_us <= s.at_us) {
            out.push(call_row(c));
        }
        out.push(row(s, absolute));
        for m in t.moments.iter().filter(|m| moment_row(m) == s.n) {
            out.extend(describe(m).into_iter().map(|l| format!("      ▲ {l}")));
        }
    }
    out.extend(calls.map(call_row));
    out.push(format!("states: {}", t.states_source));
    out.extend(t.notes.iter().cloned());
    out.join("\n")
}
