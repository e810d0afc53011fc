//! Rendering for people: the demo's table and notes. (JSON comes straight
//! from the serde types.)

use super::Demo;
use crate::layout::{Column, Grid, wrap_into};
use crate::model::KernelFacts;
use std::fmt::Write;

/// The demo as a table, the explanations under it, then the host facts and
/// what other systems would do, laid out for `width` columns
/// (`crate::layout::width`).
pub fn demo_text(d: &Demo, width: usize) -> String {
    let mut head = String::new();
    let _ = writeln!(
        head,
        "twlab demo: a client with a fixed local port reconnects; {} cases run on this machine's loopback ({:.0} ms)",
        d.rows.len(),
        d.elapsed_ms
    );
    let wine = d
        .wine
        .as_ref()
        .map(|v| format!(", under Wine {v} (Winsock on the host's Linux TCP: Linux's outcomes)"))
        .unwrap_or_default();
    let _ = writeln!(
        head,
        "system: {}{wine}; socket states from {}",
        d.system, d.states_from
    );
    let mut s = String::new();
    for line in head.lines() {
        wrap_into(&mut s, line, width, "", "  ");
    }
    let _ = writeln!(s, "\n{}\n", demo_table(d).render(width, false));
    let mut notes = String::new();
    if on_linux(d) {
        why(&mut notes, d);
        host_facts(&mut notes, &d.kernel);
    } else {
        why_elsewhere(&mut notes, d);
    }
    other_systems(&mut notes, d);
    // The explanations wrap at word boundaries, each continuation line
    // under the start of its item's text.
    for line in notes.lines() {
        if line.is_empty() {
            s.push('\n');
            continue;
        }
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let hang = match body.split_once(". ") {
            Some((n, _)) if n.chars().all(|c| c.is_ascii_digit()) => n.len() + 2,
            _ => 0,
        };
        let rest = " ".repeat(indent.len() + hang);
        wrap_into(&mut s, body, width, indent, &rest);
    }
    s
}

/// Did the demo run on Linux (its rows checked against the Linux model)?
fn on_linux(d: &Demo) -> bool {
    d.system == "Linux"
}

/// One row per case: what happened and the rule that decided it. At a
/// narrow width the options, the TIME_WAIT's owner and the moment's
/// states go first (the explanations below say them too).
fn demo_table(d: &Demo) -> Grid {
    let mut t = Grid::new(vec![
        Column::keep("#"),
        Column::keep("case"),
        Column::optional("closed first", 2),
        Column::optional("options client / server", 3),
        Column::keep("result"),
        Column::optional("old 4-tuple at that moment", 1),
        Column::optional("TIME_WAIT held by", 4),
        Column::keep(if on_linux(d) {
            "rule (why: below)"
        } else {
            "documented model here (why: below)"
        }),
    ]);
    for (i, r) in d.rows.iter().enumerate() {
        let result = match &r.errno {
            Some(e) => format!("{} failed: {e}", r.step),
            None => "ok".into(),
        };
        t.row(vec![
            (i + 1).to_string(),
            r.case.clone(),
            r.closed_first.clone(),
            r.options.clone(),
            result,
            r.old_tuple.clone(),
            r.time_wait_held_by
                .map(|s| s.to_string())
                .unwrap_or_else(|| "nobody".into()),
            if on_linux(d) {
                r.rule.to_string()
            } else {
                let doc = if d.system == "Windows" {
                    &r.windows
                } else {
                    &r.bsd
                };
                let verdict = if r.model_agrees { "same" } else { "DIFFERS" };
                format!("{}: {verdict}", doc.outcome.short())
            },
        ]);
    }
    t
}

/// The model's explanation (and fix) for each row.
fn why(s: &mut String, d: &Demo) {
    let _ = writeln!(
        s,
        "Why (Linux rule model; every row checked against what the kernel did):"
    );
    for (i, r) in d.rows.iter().enumerate() {
        let agree = if r.model_agrees {
            ""
        } else {
            "  [MODEL DISAGREES WITH THE KERNEL: please report]"
        };
        let _ = writeln!(s, "  {}. {}{agree}", i + 1, r.explanation);
        if let Some(fix) = &r.fix {
            let _ = writeln!(s, "     fix: {fix}");
        }
    }
}

/// The kernel release and the sysctls the rules read.
fn host_facts(s: &mut String, k: &KernelFacts) {
    let _ = writeln!(s, "\nThis host: Linux {}", k.release);
    // One sysctl a line: a narrow terminal wraps none of them.
    let _ = writeln!(s, "  net.ipv4.tcp_timestamps = {}", u8::from(k.timestamps));
    let _ = writeln!(s, "  net.ipv4.tcp_tw_reuse = {}", k.tw_reuse.value());
    let _ = writeln!(
        s,
        "  net.ipv4.tcp_tw_reuse_delay = {}",
        k.tw_reuse_delay_ms
            .map(|v| format!("{v} ms"))
            .unwrap_or_else(|| "(not in this kernel: 1 s fixed)".into())
    );
    let _ = writeln!(
        s,
        "  net.ipv4.ip_local_port_range = {} {}",
        k.port_range.low, k.port_range.high
    );
    let _ = writeln!(s, "  net.ipv4.tcp_max_tw_buckets = {}", k.max_tw_buckets);
}

/// Off Linux: each row's documented model for this system beside what it
/// did, then what the Linux rule model says (not run here).
fn why_elsewhere(s: &mut String, d: &Demo) {
    let _ = writeln!(
        s,
        "Why (the documented {} model, beside what this system did):",
        d.system
    );
    for (i, r) in d.rows.iter().enumerate() {
        let doc = if d.system == "Windows" {
            &r.windows
        } else {
            &r.bsd
        };
        let _ = writeln!(
            s,
            "  {}. documented: {} — {}",
            i + 1,
            doc.outcome.short(),
            doc.explanation
        );
        if let Some(note) = &r.host_note {
            let observed = match &r.errno {
                Some(e) => format!("{} failed: {e}", r.step),
                None => "ok".into(),
            };
            let _ = writeln!(s, "     observed: {observed} — {note}");
        }
    }
    let _ = writeln!(
        s,
        "\nLinux (the rule model for a default Linux, not run here; timestamps on, tcp_tw_reuse 2):"
    );
    for (i, r) in d.rows.iter().enumerate() {
        let _ = writeln!(s, "  {}. {}", i + 1, r.explanation);
    }
    if d.system == "Windows" {
        let _ = writeln!(
            s,
            "\nOn Windows a TIME_WAIT lasts 2×MSL, 240 s by default (TcpTimedWaitDelay); its table shows states and owning pids, no timers."
        );
    }
}

/// What the systems not run here would do for each row (documented).
fn other_systems(s: &mut String, d: &Demo) {
    let show_windows = d.system != "Windows";
    let show_bsd = d.system != "macOS/BSD";
    let _ = writeln!(s, "\nOther systems (documented, not run here):");
    for (i, r) in d.rows.iter().enumerate() {
        let mut lines = Vec::new();
        if show_windows {
            lines.push(format!(
                "Windows: {} — {}",
                r.windows.outcome.short(),
                r.windows.explanation
            ));
        }
        if show_bsd {
            lines.push(format!(
                "BSD/macOS: {} — {}",
                r.bsd.outcome.short(),
                r.bsd.explanation
            ));
        }
        let _ = writeln!(s, "  {}. {}", i + 1, lines.join("\n     "));
    }
}
