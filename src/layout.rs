//! Tables for people that fit the terminal: never a word split inside a
//! cell, fewer columns when the full table would not fit, and one block
//! per row when even the essential columns would not.
//!
//! The width is `COLUMNS` when set (as a shell exports it, or as a user
//! sets it for a pipe), else the terminal's, else [`PIPE_WIDTH`]; colour
//! only on a terminal and never with `NO_COLOR` set (no-color.org).

use comfy_table::{
    Cell, Color, ColumnConstraint, ContentArrangement, Table, Width, presets::UTF8_FULL_CONDENSED,
};
use std::fmt::Write as _;
use std::io::IsTerminal;

/// Width of output that goes to a file or a pipe without `COLUMNS`: wide
/// enough for every table's full layout in a log, still bounded.
pub const PIPE_WIDTH: usize = 160;

/// Narrowest width twlab lays out for; a smaller `COLUMNS` is taken as this.
pub const MIN_WIDTH: usize = 40;

/// The width to lay out for: `COLUMNS` (if a number), the terminal's width
/// (stdout), or [`PIPE_WIDTH`].
pub fn width() -> usize {
    width_from(std::env::var("COLUMNS").ok().as_deref(), terminal_width())
}

/// [`width`] from its inputs (the environment's `COLUMNS`, the terminal's
/// width if stdout is one).
pub fn width_from(columns: Option<&str>, terminal: Option<usize>) -> usize {
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .or(terminal)
        .unwrap_or(PIPE_WIDTH)
        .max(MIN_WIDTH)
}

/// Stdout's terminal width, if it is a terminal (comfy-table asks the same
/// ioctl).
fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    Table::new().width().map(usize::from)
}

/// Colour is for a terminal, and never when `NO_COLOR` is set to anything
/// but the empty string (no-color.org).
pub fn color() -> bool {
    color_from(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stdout().is_terminal(),
    )
}

/// [`color`] from its inputs.
pub fn color_from(no_color: Option<&std::ffi::OsStr>, tty: bool) -> bool {
    tty && no_color.is_none_or(|v| v.is_empty())
}

/// How a cell reads at a glance (green / red on a colour terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// The terminal's own colour.
    Plain,
    /// As expected (green).
    Good,
    /// Wrong or failed (red).
    Bad,
}

/// One column: its title and how readily it is left out when the table
/// is too wide (0: never; higher: sooner).
#[derive(Debug, Clone)]
pub struct Column {
    /// The header.
    pub title: String,
    /// 0: always shown; otherwise left out when too wide, highest first.
    pub drop_order: u8,
}

impl Column {
    /// A column that is always shown.
    pub fn keep(title: impl Into<String>) -> Column {
        Column {
            title: title.into(),
            drop_order: 0,
        }
    }

    /// A column left out, in `order` (1 first), when the table is too wide.
    pub fn optional(title: impl Into<String>, order: u8) -> Column {
        Column {
            title: title.into(),
            drop_order: order,
        }
    }
}

/// A table as data, laid out at [`Grid::render`] time for a width.
#[derive(Debug, Clone, Default)]
pub struct Grid {
    columns: Vec<Column>,
    rows: Vec<Vec<(String, Tone)>>,
    /// Row indices a visual break (an empty row) goes before.
    breaks: Vec<usize>,
}

/// Characters a cell's text needs so that no word is split: its longest
/// word (words are separated by spaces; a line break inside a cell counts
/// as one).
fn longest_word(s: &str) -> usize {
    s.split_whitespace()
        .map(|w| w.chars().count())
        .max()
        .unwrap_or(0)
}

/// Characters the cell's longest line takes unwrapped.
fn natural(s: &str) -> usize {
    s.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

/// A column is not squeezed narrower than this (or its natural width, if
/// less) even where its longest word would allow: a column of one word
/// per line reads worse than the block layout.
const COMFORT: usize = 10;

impl Grid {
    /// An empty table with these columns.
    pub fn new(columns: Vec<Column>) -> Grid {
        Grid {
            columns,
            ..Grid::default()
        }
    }

    /// Add a row of plain cells (as many as columns).
    pub fn row(&mut self, cells: Vec<String>) {
        self.toned_row(cells.into_iter().map(|c| (c, Tone::Plain)).collect());
    }

    /// Add a row whose cells carry a tone.
    pub fn toned_row(&mut self, cells: Vec<(String, Tone)>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    /// A visual break before the next row added.
    pub fn break_here(&mut self) {
        if !self.rows.is_empty() {
            self.breaks.push(self.rows.len());
        }
    }

    /// Do the essential columns fit `width` without splitting a word (so
    /// that [`Grid::render`] draws a table, not blocks)?
    pub fn fits(&self, width: usize) -> bool {
        self.fitting_columns(width.max(MIN_WIDTH)).is_some()
    }

    /// The narrowest a column may be (content, without padding).
    fn min_width(&self, i: usize) -> usize {
        let cells = self.rows.iter().map(|r| r[i].0.as_str());
        let title = self.columns[i].title.as_str();
        let word = cells
            .clone()
            .chain([title])
            .map(longest_word)
            .max()
            .unwrap_or(0);
        let nat = cells.chain([title]).map(natural).max().unwrap_or(0);
        word.max(nat.min(COMFORT))
    }

    /// Characters a table of `cols` takes at its narrowest: each column's
    /// minimum plus one space of padding on each side, and the borders.
    fn min_total(&self, cols: &[usize]) -> usize {
        cols.iter().map(|&i| self.min_width(i) + 2).sum::<usize>() + cols.len() + 1
    }

    /// The columns shown at `width`: all, or without the optional ones
    /// (highest drop order first) until the rest fits; `None` when even
    /// the essential columns cannot fit without splitting a word.
    fn fitting_columns(&self, width: usize) -> Option<Vec<usize>> {
        let mut shown: Vec<usize> = (0..self.columns.len()).collect();
        loop {
            if self.min_total(&shown) <= width {
                return Some(shown);
            }
            let drop = shown
                .iter()
                .copied()
                .filter(|&i| self.columns[i].drop_order > 0)
                .max_by_key(|&i| (self.columns[i].drop_order, i))?;
            shown.retain(|&i| i != drop);
        }
    }

    /// The table laid out for `width` columns of text, coloured if
    /// `color`. A note under it names the columns left out, if any.
    pub fn render(&self, width: usize, color: bool) -> String {
        let width = width.max(MIN_WIDTH);
        match self.fitting_columns(width) {
            Some(cols) => self.table(&cols, width, color),
            None => self.blocks(width, color),
        }
    }

    fn table(&self, cols: &[usize], width: usize, color: bool) -> String {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(u16::try_from(width).unwrap_or(u16::MAX));
        t.set_header(cols.iter().map(|&i| self.columns[i].title.as_str()));
        for (n, r) in self.rows.iter().enumerate() {
            if self.breaks.contains(&n) {
                t.add_row(vec![""; cols.len()]);
            }
            t.add_row(cols.iter().map(|&i| {
                let (text, tone) = &r[i];
                let cell = Cell::new(text);
                match (color, tone) {
                    (true, Tone::Good) => cell.fg(Color::Green),
                    (true, Tone::Bad) => cell.fg(Color::Red),
                    _ => cell,
                }
            }));
        }
        // No word split: each column at least as wide as its longest word
        // (comfy-table's fixed widths include the cell's padding).
        t.set_constraints(cols.iter().map(|&i| {
            ColumnConstraint::LowerBoundary(Width::Fixed(
                u16::try_from(self.min_width(i) + 2).unwrap_or(u16::MAX),
            ))
        }));
        let mut s = t.to_string();
        let left_out: Vec<&str> = (0..self.columns.len())
            .filter(|i| !cols.contains(i))
            .map(|i| self.columns[i].title.as_str())
            .collect();
        if !left_out.is_empty() {
            s.push('\n');
            wrap_into(
                &mut s,
                &format!(
                    "(left out at {width} columns: {}; a wider terminal or COLUMNS=300 shows them)",
                    left_out.join(", ")
                ),
                width,
                "",
                " ",
            );
            s.pop();
        }
        s
    }

    /// One block per row: the first column as its heading, then each other
    /// column as "title: value", wrapped at word boundaries.
    fn blocks(&self, width: usize, color: bool) -> String {
        let mut s = String::new();
        for (n, r) in self.rows.iter().enumerate() {
            if n > 0 {
                s.push('\n');
            }
            let _ = writeln!(s, "{} {}", self.columns[0].title, r[0].0);
            for (c, (text, tone)) in self.columns.iter().zip(r).skip(1) {
                let text = match (color, tone) {
                    (true, Tone::Good) => format!("\x1b[32m{text}\x1b[0m"),
                    (true, Tone::Bad) => format!("\x1b[31m{text}\x1b[0m"),
                    _ => text.clone(),
                };
                wrap_into(
                    &mut s,
                    &format!("{}: {text}", c.title),
                    width,
                    "  ",
                    "      ",
                );
            }
        }
        s.truncate(s.trim_end().len());
        s
    }
}

/// Append `text` wrapped at word boundaries to `width`: the first line
/// after `first`, the others after `rest`. A word longer than the line is
/// put on a line of its own, whole.
pub fn wrap_into(out: &mut String, text: &str, width: usize, first: &str, rest: &str) {
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        let len = line.chars().count();
        if !empty && len + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(rest);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_like() -> Grid {
        let mut g = Grid::new(vec![
            Column::keep("#"),
            Column::keep("case"),
            Column::optional("options client / server", 2),
            Column::keep("result"),
            Column::optional("old 4-tuple at that moment", 1),
        ]);
        g.row(vec![
            "2".into(),
            "client closes first; reconnect before the peer closed".into(),
            "REUSEADDR / REUSEADDR".into(),
            "connect() failed: EADDRNOTAVAIL (99)".into(),
            "client FIN_WAIT1; server CLOSE_WAIT".into(),
        ]);
        g
    }

    /// Every word of every shown cell appears whole in the output: none
    /// was cut by a wrap inside it.
    fn no_word_split(g: &Grid, width: usize, out: &str) {
        let tokens: std::collections::HashSet<&str> = out
            .split(|c: char| c.is_whitespace() || c == '│' || c == '┆')
            .collect();
        let shown = g
            .fitting_columns(width)
            .unwrap_or_else(|| (0..g.columns.len()).collect());
        for r in &g.rows {
            for &i in &shown {
                for w in r[i].0.split_whitespace() {
                    assert!(tokens.contains(w), "{w:?} split at {width}:\n{out}");
                }
            }
        }
    }

    #[test]
    fn every_line_fits_and_no_word_is_split() {
        let g = demo_like();
        for width in [40, 60, 80, 100, 120, 160] {
            let out = g.render(width, false);
            for l in out.lines() {
                assert!(l.chars().count() <= width, "{width}: {l:?}\n{out}");
            }
            // The result's longest word shows whole at every width.
            assert!(out.contains("EADDRNOTAVAIL"), "{width}:\n{out}");
            no_word_split(&g, width, &out);
        }
    }

    #[test]
    fn narrow_widths_leave_out_optional_columns_first_then_use_blocks() {
        let g = demo_like();
        let wide = g.render(160, false);
        assert!(
            wide.contains("old 4-tuple") && !wide.contains("left out"),
            "{wide}"
        );
        // Drop order 2 goes before drop order 1.
        assert_eq!(g.fitting_columns(55).unwrap(), [0, 1, 3, 4]);
        assert_eq!(g.fitting_columns(45).unwrap(), [0, 1, 3]);
        let narrow = g.render(55, false);
        assert!(
            narrow.contains("left out at 55 columns: options client / server"),
            "{narrow}"
        );
        // A word wider than the screen in an essential column: one block
        // per row, the word whole on a line of its own.
        let mut b = Grid::new(vec![Column::keep("#"), Column::keep("rule")]);
        b.row(vec![
            "1".into(),
            "see __inet_check_established()/tcp_twsk_unique()".into(),
        ]);
        assert!(b.fitting_columns(40).is_none());
        let blocks = b.render(40, false);
        assert_eq!(
            blocks,
            "# 1\n  rule: see\n      __inet_check_established()/tcp_twsk_unique()"
        );
    }

    #[test]
    fn width_and_color_inputs() {
        assert_eq!(width_from(Some("80"), Some(200)), 80);
        assert_eq!(width_from(Some("junk"), Some(120)), 120);
        assert_eq!(width_from(None, None), PIPE_WIDTH);
        assert_eq!(width_from(Some("5"), None), MIN_WIDTH);
        assert!(color_from(None, true));
        assert!(color_from(Some("".as_ref()), true));
        assert!(!color_from(Some("1".as_ref()), true));
        assert!(!color_from(None, false));
    }

    #[test]
    fn wrap_keeps_long_words_whole() {
        let mut s = String::new();
        wrap_into(&mut s, "a tw-takeover-timestamps b", 10, "", "  ");
        assert_eq!(s, "a\n  tw-takeover-timestamps\n  b\n");
    }
}
