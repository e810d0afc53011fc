//! `twlab ss`: the kernel's TCP socket table, TIME_WAIT timers first.
//!
//! Everything comes from NETLINK_SOCK_DIAG through [`crate::diag`]: one dump
//! per address family, with the state filter applied by the kernel
//! (`inet_diag_dump_icsk` skips hash chains of unwanted states), never
//! /proc/net/tcp. Port and address filters are applied here, on the decoded
//! entries.
//!
//! The command line (clap, behind the `cli` feature) is turned into a [`Plan`]: the
//! [`Filter`] and one [`View`]. Three views share the filters:
//! - the list (default, [`list`]): aligned text or JSON, streamed through
//!   one buffered writer, no allocation per row;
//! - the summary ([`summary`]): counts per state, TIME_WAIT per peer and per
//!   local port, how much of `ip_local_port_range` TIME_WAIT holds per
//!   (local address, peer), and the distance to `tcp_max_tw_buckets`;
//! - watch ([`watch`]): a live view that marks sockets appearing, changing
//!   state and going away.
//!
//! Every view writes to the writer the command line hands [`run`] (its
//! stdout, locked); only the terminal handling of watch (is stdout a
//! terminal, the alternate screen) reads and writes the real stdout.

pub mod filter;
pub mod list;
pub mod summary;
pub mod watch;

pub use filter::{AddrMatch, Filter, collect, parse_family, parse_port_filter, parse_states};
pub use watch::{MAX_WATCH_FRAMES, parse_watch_ms};

use crate::error::{Error, Result};
use crate::json::OutputFormat;
use crate::outcome::Exit;
use std::io;
use std::time::Duration;

/// Whether the list names the processes holding each socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Processes {
    /// No /proc scan (the default: it is slow on busy hosts).
    #[default]
    Hide,
    /// Scan /proc/*/fd for the owners of full sockets.
    Show,
}

/// What `twlab ss` shows of the filtered sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// The socket table.
    List {
        /// Text or JSON.
        format: OutputFormat,
        /// With owning processes or not.
        processes: Processes,
    },
    /// Counts, TIME_WAIT per peer and port, ephemeral port use.
    Summary {
        /// Text or JSON.
        format: OutputFormat,
        /// Rows of each top list.
        top: usize,
    },
    /// A live view on the terminal (or, `OutputFormat::Json`, one JSON line
    /// per refresh: the sockets first, then what changed).
    Watch {
        /// Time between refreshes.
        every: Duration,
        /// Refreshes before it stops by itself (at most
        /// [`MAX_WATCH_FRAMES`]).
        frames: u64,
        /// Text or JSON lines.
        format: OutputFormat,
    },
}

/// One `twlab ss` call, fully parsed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Which sockets.
    pub filter: Filter,
    /// How to show them.
    pub view: View,
}

/// Run `twlab ss`, writing the view to `out`. Returns how it ended; a
/// write that fails because the reader went away (EPIPE: `twlab ss |
/// head`) is a normal end.
pub fn run(plan: &Plan, out: &mut dyn io::Write) -> Result<Exit> {
    // Windows, macOS and FreeBSD answer from their own tables (see
    // `diag`): states and owners, no timers.
    if !cfg!(any(
        target_os = "linux",
        windows,
        target_os = "macos",
        target_os = "freebsd"
    )) {
        return Err(Error::Unsupported {
            os: crate::sys::OS_NAME,
            what: "`twlab ss` reads Linux sock_diag, or the TCP table of Windows, macOS or FreeBSD"
                .into(),
        });
    }
    let filter = &plan.filter;
    // A kernel before 6.5 cannot dump bound-only sockets: say so (on
    // stderr, the JSON stays whole) rather than show the table as complete.
    if (matches!(plan.view, View::Summary { .. }) || filter.query.states.contains_bound_inactive())
        && let Some(n) = crate::model::kernel::version::bound_only_blind_spot()
    {
        eprintln!("{n}");
    }
    let r = match plan.view {
        View::List { format, processes } => list::run(filter, format, processes, out),
        View::Summary { format, top } => summary::run(filter, format, top, out),
        View::Watch {
            every,
            frames,
            format,
        } => watch::run(filter, every, frames, format, out),
    };
    match r {
        Ok(code) => Ok(code),
        // `twlab ss | head`: the reader went away; that is not an error.
        Err(Error::Sys { what, .. }) if what == PIPE_CLOSED => Ok(Exit::Done),
        Err(e) => Err(e),
    }
}

/// Marks a write that failed because the output's reader went away
/// (EPIPE; Rust ignores SIGPIPE, so the write returns the error). The
/// words say stdout: the command line hands its stdout.
const PIPE_CLOSED: &str = "writing to stdout (closed pipe)";

fn io_err(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Error::sys(PIPE_CLOSED, &e)
    } else {
        Error::sys("writing to stdout", &e)
    }
}

fn json_err(e: serde_json::Error) -> Error {
    match e.io_error_kind() {
        Some(kind) => io_err(io::Error::from(kind)),
        None => Error::Invalid(format!("JSON encoding failed: {e}")),
    }
}

// Linux: the list is read from sock_diag there.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The list goes to the writer it is given: a listener of this test,
    /// on a port of its own, is a row of what `run` wrote into a Vec.
    #[test]
    fn the_list_is_written_to_the_given_writer() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let plan = Plan {
            filter: Filter {
                query: crate::diag::Query {
                    local_port: Some(port),
                    ..Default::default()
                },
                port: Some(port),
                ..Default::default()
            },
            view: View::List {
                format: OutputFormat::Text,
                processes: Processes::Hide,
            },
        };
        let mut out = Vec::new();
        assert_eq!(run(&plan, &mut out).unwrap(), Exit::Done);
        let text = String::from_utf8(out).unwrap();
        let me = format!(" 127.0.0.1:{port} ");
        assert!(text.starts_with("State"), "{text}");
        assert!(
            text.lines()
                .any(|line| line.starts_with("LISTEN") && line.contains(&me)),
            "no LISTEN row for 127.0.0.1:{port} in:\n{text}"
        );
        drop(l);
    }
}
