//! Rendering for people: the demo's table and notes. (JSON comes straight
//! from the serde types.)

use crate::demo::Demo;
use crate::model::KernelFacts;
use comfy_table::{
    ColumnConstraint, ContentArrangement, Table, Width, presets::UTF8_FULL_CONDENSED,
};
use std::fmt::Write;

/// A table that wraps to the terminal, or to 160 columns when not a tty.
pub fn new_table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if t.width().is_none() {
        t.set_width(160);
    }
    t
}

/// The demo as a table, the explanations under it, then the host facts and
/// what other systems would do.
pub fn demo_text(d: &Demo) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "twlab demo: a client with a fixed local port reconnects; {} cases run on this machine's loopback ({:.0} ms)\n",
        d.rows.len(),
        d.elapsed_ms
    );
    let _ = writeln!(s, "{}\n", demo_table(d));
    why(&mut s, d);
    host_facts(&mut s, &d.kernel);
    other_systems(&mut s, d);
    s
}

/// One row per case: what happened and the rule that decided it.
fn demo_table(d: &Demo) -> Table {
    let mut t = new_table();
    t.set_header(vec![
        "#",
        "case",
        "closed first",
        "options client / server",
        "result",
        "old 4-tuple at that moment",
        "TIME_WAIT held by",
        "rule (why: below)",
    ]);
    for (i, r) in d.rows.iter().enumerate() {
        let result = match &r.errno {
            Some(e) => format!("{} failed: {e}", r.step),
            None => "ok".into(),
        };
        t.add_row(vec![
            (i + 1).to_string(),
            r.case.clone(),
            r.closed_first.clone(),
            r.options.clone(),
            result,
            r.old_tuple.clone(),
            r.time_wait_held_by
                .map(|s| s.to_string())
                .unwrap_or_else(|| "nobody".into()),
            r.rule.to_string(),
        ]);
    }
    // Keep the rule names whole; the case column wraps instead.
    if let Some(c) = t.column_mut(7) {
        c.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(24)));
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
    let _ = writeln!(
        s,
        "  net.ipv4.tcp_timestamps = {}   net.ipv4.tcp_tw_reuse = {}   net.ipv4.tcp_tw_reuse_delay = {}",
        u8::from(k.timestamps),
        k.tw_reuse.value(),
        k.tw_reuse_delay_ms
            .map(|v| format!("{v} ms"))
            .unwrap_or_else(|| "(not in this kernel: 1 s fixed)".into())
    );
    let _ = writeln!(
        s,
        "  net.ipv4.ip_local_port_range = {} {}   net.ipv4.tcp_max_tw_buckets = {}",
        k.port_range.low, k.port_range.high, k.max_tw_buckets
    );
}

/// What Windows and BSD/macOS would do for each row (documented, not run).
fn other_systems(s: &mut String, d: &Demo) {
    let _ = writeln!(s, "\nOther systems (documented, not run here):");
    for (i, r) in d.rows.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {}. Windows: {} — {}\n     BSD/macOS: {} — {}",
            i + 1,
            r.windows.outcome.short(),
            r.windows.explanation,
            r.bsd.outcome.short(),
            r.bsd.explanation
        );
    }
}
