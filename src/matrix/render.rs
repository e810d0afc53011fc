//! The run as text: a table for the terminal, Markdown for a bug report,
//! CSV, or JSON; every format shows the same columns.

use super::cells::CellSpec;
use super::results::{CellResult, CellStatus, MatrixRun, RanCell};
use crate::diag::{SockEntry, TupleView};
use crate::error::{Error, Result};
use crate::experiment::{Experiment, NextStep};
use crate::json::OutputFormat;
use crate::layout::{Column, Grid, Tone};
use crate::outcome::Outcome;
use crate::socket::{Family, SocketOpts};
use std::collections::HashMap;

/// How the terminal table is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLayout {
    /// Colour the observed column (green / red).
    pub color: bool,
    /// Columns of text (`crate::layout::width`).
    pub width: usize,
    /// Rows grouped by the rule that decided them (`--group-by rule`),
    /// instead of by the factors.
    pub by_rule: bool,
}

/// The run in `format`.
pub fn render(run: &MatrixRun, format: OutputFormat, layout: TableLayout) -> Result<String> {
    Ok(match format {
        OutputFormat::Json => {
            crate::json::pretty(run).map_err(|e| Error::Invalid(e.to_string()))?
        }
        OutputFormat::Csv => render_csv(run),
        OutputFormat::Md => render_md(run),
        OutputFormat::Text => render_table(run, layout),
    })
}

fn opt_label(o: SocketOpts) -> String {
    match (o.reuseaddr, o.reuseport) {
        (false, false) => "-".into(),
        (true, false) => "RA".into(),
        (false, true) => "RP".into(),
        (true, true) => "RA+RP".into(),
    }
}

/// "old→new" socket options of the side the step touches.
fn opts_cell(x: &Experiment) -> String {
    let old = match x.next {
        NextStep::RestartListener => x.listener,
        _ => x.client,
    };
    let mut s = format!("{}→{}", opt_label(old), opt_label(x.new_opts));
    // Show the untouched side only when it is set.
    let other = match x.next {
        NextStep::RestartListener => x.client,
        _ => x.listener,
    };
    if other != SocketOpts::default() {
        s.push_str(&format!(" (other {})", opt_label(other)));
    }
    s
}

/// "state / state" of the old 4-tuple's two ends; "(tw)" marks a timewait
/// mini-socket in another state (an orphaned FIN_WAIT2, `tcp_time_wait`).
fn view_cell(v: &TupleView) -> String {
    let side = |e: &Option<SockEntry>| match e {
        Some(e) => {
            let mini = e.is_timewait_sock() && e.state != crate::diag::TcpState::TimeWait;
            format!("{}{}", e.state, if mini { "(tw)" } else { "" })
        }
        None => "gone".into(),
    };
    format!("{} / {}", side(&v.client), side(&v.server))
}

fn outcome_cell(o: &Outcome) -> String {
    o.short()
}

/// The columns of one row, shared by every format.
/// `notes`: the run's numbered explanations, which the rule column points
/// at (table and Markdown); CSV has none (the rule id alone).
fn row(
    spec: &CellSpec,
    status: &CellStatus,
    with_free: bool,
    notes: Option<&Notes>,
) -> Vec<String> {
    let x = &spec.experiment;
    let mut r = vec![
        spec.id.to_string(),
        x.next.name().into(),
        x.close.name().into(),
        x.when.name(),
        x.client_port.name().into(),
        match x.family {
            Family::V4 => "v4".into(),
            Family::V6 => "v6".into(),
        },
        opts_cell(x),
        spec.sysctl_label.clone(),
    ];
    match status {
        CellStatus::Ran(c) => {
            r.push(outcome_cell(&c.predicted.outcome));
            r.push(format!(
                "{}{}",
                outcome_cell(&c.report.outcome),
                if c.matches {
                    ""
                } else if c.predicted.borderline {
                    " (≠, borderline)"
                } else if c.raced {
                    " (≠, raced a transient state)"
                } else {
                    " ✗ MISMATCH"
                }
            ));
            r.push(view_cell(&c.view));
            if with_free {
                r.push(match &c.until_free {
                    Some(t) => t.label(),
                    None => "-".into(),
                });
            }
            r.push(c.windows.outcome.short());
            r.push(c.bsd.outcome.short());
            r.push(match notes {
                Some(n) => format!("{} [{}]", c.predicted.rule.name(), n.number(spec)),
                None => c.predicted.rule.name().into(),
            });
        }
        CellStatus::Skipped { reason } => {
            r.push("skipped".into());
            r.push(reason.clone());
            r.push(String::new());
            if with_free {
                r.push(String::new());
            }
            r.extend([String::new(), String::new(), String::new()]);
        }
        CellStatus::Error { .. } | CellStatus::SysctlRefused { .. } => {
            r.push("error".into());
            r.push(status.error_message().unwrap_or_default());
            r.push(String::new());
            if with_free {
                r.push(String::new());
            }
            r.extend([String::new(), String::new(), String::new()]);
        }
    }
    r
}

fn header(with_free: bool) -> Vec<&'static str> {
    let mut h = vec![
        "#",
        "next",
        "close",
        "when",
        "client port",
        "fam",
        "opts old→new",
        "sysctls",
        "predicted (Linux)",
        "observed",
        "old 4-tuple client / server",
    ];
    if with_free {
        h.push("freed after");
    }
    h.extend([
        "Windows (documented, not run)",
        "BSD/macOS (documented, not run)",
        "rule",
    ]);
    h
}

/// The CSV header: the table's columns under plain snake_case names, for
/// scripts (`pandas.read_csv`, `csvkit`), in the table's order.
fn csv_header(with_free: bool) -> Vec<&'static str> {
    header(with_free)
        .into_iter()
        .map(|h| match h {
            "#" => "cell",
            "client port" => "client_port",
            "fam" => "family",
            "opts old→new" => "opts_old_new",
            "predicted (Linux)" => "predicted_linux",
            "old 4-tuple client / server" => "old_tuple_client_server",
            "freed after" => "freed_after",
            "Windows (documented, not run)" => "windows_documented",
            "BSD/macOS (documented, not run)" => "bsd_macos_documented",
            same => same,
        })
        .collect()
}

fn with_free(run: &MatrixRun) -> bool {
    run.ran().any(|(_, c)| c.until_free.is_some())
}

fn summary(run: &MatrixRun) -> String {
    let ran = run.ran().count();
    let skipped = run
        .cells
        .iter()
        .filter(|c| matches!(c.status, CellStatus::Skipped { .. }))
        .count();
    let errors = run.errors();
    let mism = run.mismatches().len();
    let border = run
        .ran()
        .filter(|(_, r)| !r.matches && (r.predicted.borderline || r.raced))
        .count();
    format!(
        "{} cells: {ran} ran, {skipped} skipped, {errors} errors; {mism} mismatches{}; {:.2} s on kernel {}",
        run.cells.len(),
        if border > 0 {
            format!(" (+{border} borderline timing or raced)")
        } else {
            String::new()
        },
        run.elapsed_ms as f64 / 1000.0,
        run.kernel_release
    )
}

fn mismatch_text(run: &MatrixRun) -> String {
    let mut s = String::new();
    for (spec, c) in run.mismatches() {
        s.push_str(&format!(
            "MISMATCH cell {}: {} {} {} {} {} opts {} [{}]: predicted {}, observed {} (old 4-tuple {}); model said: {}\n",
            spec.id,
            spec.experiment.next.name(),
            spec.experiment.close.name(),
            spec.experiment.when.name(),
            spec.experiment.client_port.name(),
            spec.experiment.family.name(),
            opts_cell(&spec.experiment),
            spec.sysctl_label,
            c.predicted.outcome.short(),
            c.report.outcome.short(),
            &c.view.describe(),
            c.predicted.explanation
        ));
    }
    for c in &run.cells {
        if let Some(message) = c.status.error_message() {
            s.push_str(&format!("ERROR cell {}: {message}\n", c.spec.id));
        }
    }
    s
}

/// The explanations of a run, each distinct text once, numbered in the
/// order cells first use them: rows sharing a rule id can have different
/// explanations and fixes (tw_reuse=0 vs tw_reuse_delay; FIN_WAIT1 vs
/// TIME_WAIT holders), so each row points at its own note.
struct Notes {
    /// (rule id, explanation text with its fix), note n at index n - 1.
    texts: Vec<(&'static str, String)>,
    /// Cell id → its note number.
    by_cell: HashMap<usize, usize>,
}

impl Notes {
    fn of(run: &MatrixRun) -> Self {
        let mut texts: Vec<(&'static str, String)> = Vec::new();
        let mut index: HashMap<(&'static str, String), usize> = HashMap::new();
        let mut by_cell = HashMap::new();
        for (spec, c) in run.ran() {
            let t = (c.predicted.rule.name(), note_text(c));
            let n = *index.entry(t.clone()).or_insert_with(|| {
                texts.push(t);
                texts.len()
            });
            by_cell.insert(spec.id, n);
        }
        Notes { texts, by_cell }
    }

    /// The note number of a cell's explanation.
    fn number(&self, spec: &CellSpec) -> usize {
        self.by_cell.get(&spec.id).copied().unwrap_or(0)
    }

    /// The "rules:" section: one line per note, with the cells it explains.
    fn text(&self, run: &MatrixRun) -> String {
        let mut cells: Vec<Vec<String>> = vec![Vec::new(); self.texts.len()];
        for (spec, _) in run.ran() {
            if let Some(v) = cells.get_mut(self.number(spec).wrapping_sub(1)) {
                v.push(spec.id.to_string());
            }
        }
        let mut s = String::new();
        for (i, (rule, text)) in self.texts.iter().enumerate() {
            s.push_str(&format!(
                "- [{}] {rule} (cells {}): {text}\n",
                i + 1,
                cells[i].join(", ")
            ));
        }
        s
    }
}

/// A cell's own explanation, version note and fix, as its note says them.
fn note_text(c: &RanCell) -> String {
    let p = &c.predicted;
    let mut t = p.explanation.clone();
    if let Some(v) = &p.version_note {
        t.push_str(&format!(" [version: {v}]"));
    }
    if let Some(f) = &p.fix {
        t.push_str(&format!(". Fix: {f}"));
    }
    t
}

/// The terminal table for `width` columns (`crate::layout::width`): the
/// summary and any mismatches first (a run of 1,240 cells should not hide
/// them under its table), then one row per cell, then the rules the rows
/// point at. Where the full table would not fit, a compact one (the cell's
/// factors in one column, predicted and observed in another).
pub fn render_table(run: &MatrixRun, layout: TableLayout) -> String {
    let TableLayout { color, width, .. } = layout;
    let notes = Notes::of(run);
    let mut s = String::new();
    crate::layout::wrap_into(&mut s, &summary(run), width, "", "  ");
    let m = mismatch_text(run);
    for line in m.lines() {
        crate::layout::wrap_into(&mut s, line, width, "", "  ");
    }
    crate::layout::wrap_into(
        &mut s,
        &format!("isolation: {}", run.isolation),
        width,
        "",
        "  ",
    );
    let order = ordered(run, layout.by_rule);
    let full = full_grid(run, &order, &notes);
    let grid = if full.fits(width) {
        full
    } else {
        compact_grid(&order, &notes)
    };
    s.push_str(&grid.render(width, color));
    s.push('\n');
    s.push_str("rules (the rule column's [n]):\n");
    for line in notes.text(run).lines() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        crate::layout::wrap_into(&mut s, body, width, indent, &format!("{indent}    "));
    }
    s
}

/// What rows are grouped by: the factors next × close, or the rule name
/// (cells that did not run last).
type GroupKey = String;

/// The cells in the order the table shows them, each with its group: by
/// the factors as the cells were built, or (`by_rule`) by the rule that
/// decided them, in the order rules first appear, cells in id order
/// within a rule.
fn ordered(run: &MatrixRun, by_rule: bool) -> Vec<(GroupKey, &CellResult)> {
    let mut v: Vec<(GroupKey, &CellResult)> = run
        .cells
        .iter()
        .map(|c| {
            let key = if by_rule {
                match &c.status {
                    CellStatus::Ran(r) => r.predicted.rule.name().to_string(),
                    _ => "~not run".to_string(),
                }
            } else {
                let x = &c.spec.experiment;
                format!("{} {}", x.next.name(), x.close.name())
            };
            (key, c)
        })
        .collect();
    if by_rule {
        let mut first: HashMap<GroupKey, usize> = HashMap::new();
        for (i, (k, _)) in v.iter().enumerate() {
            first.entry(k.clone()).or_insert(i);
        }
        // Stable: within a rule the cells keep their order.
        v.sort_by_key(|(k, _)| {
            if k.starts_with('~') {
                usize::MAX
            } else {
                first[k]
            }
        });
    }
    v
}

/// Did the cell go wrong (a mismatch or an error)? Its row reads red.
fn bad(c: &CellResult) -> bool {
    matches!(&c.status, CellStatus::Ran(r) if !r.matches) || c.status.error_message().is_some()
}

/// Every column; the documented systems, the old 4-tuple and the time
/// until free are left out first on a narrower terminal.
fn full_grid(run: &MatrixRun, order: &[(GroupKey, &CellResult)], notes: &Notes) -> Grid {
    let wf = with_free(run);
    let h = header(wf);
    let observed = h.iter().position(|t| *t == "observed");
    let columns = h
        .iter()
        .map(|t| match *t {
            "BSD/macOS (documented, not run)" => Column::optional(*t, 4),
            "Windows (documented, not run)" => Column::optional(*t, 3),
            "freed after" => Column::optional(*t, 2),
            "old 4-tuple client / server" => Column::optional(*t, 1),
            _ => Column::keep(*t),
        })
        .collect();
    let mut g = Grid::new(columns);
    let mut last_group = None;
    for (group, c) in order {
        if last_group.is_some() && last_group != Some(group) {
            // A visual break between groups (next × close, or rules).
            g.break_here();
        }
        last_group = Some(group);
        let tone = if bad(c) { Tone::Bad } else { Tone::Good };
        g.toned_row(
            row(&c.spec, &c.status, wf, Some(notes))
                .into_iter()
                .enumerate()
                .map(|(i, text)| {
                    (
                        text,
                        if Some(i) == observed {
                            tone
                        } else {
                            Tone::Plain
                        },
                    )
                })
                .collect(),
        );
    }
    g
}

/// Four columns for a narrow terminal: the cell number, its factors, the
/// Linux prediction beside what the kernel did, the rule.
fn compact_grid(order: &[(GroupKey, &CellResult)], notes: &Notes) -> Grid {
    let mut g = Grid::new(vec![
        Column::keep("#"),
        Column::keep("cell: next close when port fam opts sysctls"),
        Column::keep("predicted → observed"),
        Column::keep("rule"),
    ]);
    let mut last_group = None;
    for (group, c) in order {
        if last_group.is_some() && last_group != Some(group) {
            g.break_here();
        }
        last_group = Some(group);
        let full = row(&c.spec, &c.status, false, Some(notes));
        // The factor cells are the full row's columns 1..=7, the outcome
        // pair 8 and 9, the rule last.
        let factors = full[1..=7].join(" ");
        let outcome = match &c.status {
            CellStatus::Ran(_) => format!("{} → {}", full[8], full[9]),
            _ => format!("{}: {}", full[8], full[9]),
        };
        let tone = if bad(c) { Tone::Bad } else { Tone::Good };
        g.toned_row(vec![
            (full[0].clone(), Tone::Plain),
            (factors, Tone::Plain),
            (outcome, tone),
            (full.last().cloned().unwrap_or_default(), Tone::Plain),
        ]);
    }
    g
}

/// Markdown for a bug report: environment, table, mismatches, rules.
pub fn render_md(run: &MatrixRun) -> String {
    let wf = with_free(run);
    let notes = Notes::of(run);
    let esc = |s: &str| s.replace('|', "\\|");
    let mut s = format!(
        "### twlab matrix\n\n- kernel: `{}`\n- host sysctls (cell defaults): {}\n- isolation: {}\n- {}\n\n",
        run.kernel_release,
        run.host_sysctls
            .iter()
            .map(|s| format!("`{}={}`", s.name, s.value))
            .collect::<Vec<_>>()
            .join(", "),
        run.isolation,
        summary(run)
    );
    let h = header(wf);
    s.push_str(&format!("| {} |\n", h.join(" | ")));
    s.push_str(&format!("|{}\n", "---|".repeat(h.len())));
    for c in &run.cells {
        let r = row(&c.spec, &c.status, wf, Some(&notes));
        s.push_str(&format!(
            "| {} |\n",
            r.iter().map(|x| esc(x)).collect::<Vec<_>>().join(" | ")
        ));
    }
    let m = mismatch_text(run);
    if !m.is_empty() {
        s.push_str("\n**Mismatches**\n\n```\n");
        s.push_str(&m);
        s.push_str("```\n");
    }
    s.push_str("\n**Rules** (the rule column's [n])\n\n");
    s.push_str(&notes.text(run));
    s
}

/// CSV: a header line, then one line per cell.
pub fn render_csv(run: &MatrixRun) -> String {
    let wf = with_free(run);
    let q = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut s = csv_header(wf)
        .iter()
        .map(|h| q(h))
        .collect::<Vec<_>>()
        .join(",");
    s.push('\n');
    for c in &run.cells {
        s.push_str(
            &row(&c.spec, &c.status, wf, None)
                .iter()
                .map(|x| q(x))
                .collect::<Vec<_>>()
                .join(","),
        );
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_headers_are_plain_snake_case_one_per_column() {
        for wf in [false, true] {
            let (csv, table) = (csv_header(wf), header(wf));
            assert_eq!(csv.len(), table.len());
            for h in &csv {
                assert!(
                    h.starts_with(|c: char| c.is_ascii_lowercase())
                        && h.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "CSV header {h:?} is not snake_case"
                );
            }
            let mut uniq = csv.clone();
            uniq.sort_unstable();
            uniq.dedup();
            assert_eq!(uniq.len(), csv.len(), "duplicate CSV header in {csv:?}");
        }
    }
}
