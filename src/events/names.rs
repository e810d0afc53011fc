//! Who fired an event: the names of the processes whose system calls
//! made them, read once per process (an `Arc`: every event of the loop's
//! process shares it instead of copying it).
//!
//! Only a system call's process is worth naming: in softirq the pid is
//! whoever happened to run. The BPF transport hands over the name the
//! task had as the event fired (`bpf_get_current_comm()`); tracefs gives
//! a pid only, named afterwards from /proc/PID/comm while the process
//! lives, else from the kernel's own record of the names of the tasks
//! that fired events (`saved_cmdlines`, which `trace_save_cmdline()`
//! fills as they fire): the story's client has often exited before its
//! events are read, and "closed first by pid 4711" is worth less than "by
//! pid 4711 client".

use super::tracefs::Instance;
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

/// At most this many names kept; then the cache starts over.
const MAX_NAMES: usize = 10_000;

/// The names seen so far.
#[derive(Default)]
pub(super) struct Names {
    /// By pid, for tracefs (None: no name to be had).
    by_pid: HashMap<i32, Option<Arc<str>>>,
    /// By pid, as the BPF programs read them: the name's bytes and the
    /// name, made again when a process renames itself (as exec does).
    read: HashMap<i32, ([u8; 16], Arc<str>)>,
    /// `saved_cmdlines` as read in this batch (None: not read yet).
    saved: Option<HashMap<i32, Arc<str>>>,
}

/// The name of pid 0 and of whatever runs without a task of its own.
fn swapper(pid: i32) -> Option<Arc<str>> {
    (pid <= 0).then(|| "swapper".into())
}

impl Names {
    /// A new batch of events: names the kernel saved since are read again.
    pub(super) fn new_batch(&mut self) {
        self.saved = None;
    }

    /// `pid`'s name from /proc, else from `saved_cmdlines` in `tracefs`.
    pub(super) fn of_pid(&mut self, pid: i32, tracefs: Option<&Instance>) -> Option<Arc<str>> {
        if let Some(s) = swapper(pid) {
            return Some(s);
        }
        if self.by_pid.len() > MAX_NAMES {
            self.by_pid.clear();
        }
        if let Some(c) = self.by_pid.get(&pid) {
            return c.clone();
        }
        let c = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| crate::text::escape_for_terminal(s.trim_end()).into())
            .or_else(|| self.saved_cmdline(pid, tracefs));
        self.by_pid.insert(pid, c.clone());
        c
    }

    /// The name a BPF program read for `pid` (`raw`: up to 16 bytes).
    pub(super) fn as_read(&mut self, pid: i32, raw: &[u8]) -> Arc<str> {
        if let Some(s) = swapper(pid) {
            return s;
        }
        let mut key = [0u8; 16];
        let n = raw.len().min(16);
        key[..n].copy_from_slice(&raw[..n]);
        if let Some((k, name)) = self.read.get(&pid)
            && *k == key
        {
            return name.clone();
        }
        if self.read.len() > MAX_NAMES {
            self.read.clear();
        }
        let name: Arc<str> =
            crate::text::escape_for_terminal(&String::from_utf8_lossy(&raw[..n])).into();
        self.read.insert(pid, (key, name.clone()));
        name
    }

    /// `pid`'s name in the tracefs file `saved_cmdlines` ("PID NAME" a
    /// line), read at most once per batch of events.
    fn saved_cmdline(&mut self, pid: i32, tracefs: Option<&Instance>) -> Option<Arc<str>> {
        if self.saved.is_none() {
            let text = tracefs
                .and_then(|i| i.read_global("saved_cmdlines").ok())
                .unwrap_or_default();
            self.saved = Some(parse_saved_cmdlines(&text));
        }
        self.saved.as_ref()?.get(&pid).cloned()
    }
}

/// `saved_cmdlines`: "4711 client" a line; "<...>" is the kernel's word
/// for a name it no longer has.
fn parse_saved_cmdlines(text: &str) -> HashMap<i32, Arc<str>> {
    text.lines()
        .filter_map(|l| {
            let (pid, name) = l.split_once(' ')?;
            let name = name.trim_end();
            if name.is_empty() || name == "<...>" {
                return None;
            }
            Some((
                pid.parse().ok()?,
                crate::text::escape_for_terminal(name).into(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "PID NAME" lines, "<...>" for a name the kernel lost.
    #[test]
    fn saved_cmdlines_give_names_by_pid() {
        let m = parse_saved_cmdlines(
            "26078 twlab-netns\n34 kworker/u8:1\n77 <...>\nx y\n4711 my prog\n",
        );
        assert_eq!(m.get(&26078).map(|s| &**s), Some("twlab-netns"));
        assert_eq!(m.get(&4711).map(|s| &**s), Some("my prog"));
        assert_eq!(m.len(), 3, "{m:?}");
    }
}
