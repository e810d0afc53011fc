//! Which processes hold a socket (`twlab ss -p`). On Linux, found the way
//! `ss -p` finds them: the `socket:[INODE]` links in /proc/PID/fd. Where the
//! system's own table names the owning process (Windows, macOS), that pid
//! is the key, and only its name is looked up (Windows: a Toolhelp process
//! snapshot; macOS: none, shown as `?`).

use super::SockEntry;
use serde::Serialize;
use std::collections::HashMap;

/// The column that names a socket for [`socket_owners`]: its inode on
/// Linux, the owning pid where the table gives one.
pub const ID_HEADER: &str = if cfg!(target_os = "linux") {
    "Uid   Inode"
} else {
    "Uid   Pid  "
};

/// What [`socket_owners`] is asked about for `e`: the owning pid where the
/// table names it, else the socket inode (0: none, as for TIME_WAIT).
pub fn owner_key(e: &SockEntry) -> u32 {
    e.pid.unwrap_or(e.inode)
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Its command name (/proc/PID/comm, as the process set it: print it
    /// through [`crate::text::escape_for_terminal`]), `?` if unreadable.
    pub name: String,
}

/// Map socket inodes to the processes holding them, by reading the
/// `socket:[INODE]` links in /proc/PID/fd (what `ss -p` does). Only inodes
/// in `wanted` are kept; processes we may not read are skipped.
pub fn socket_owners(wanted: &[u32]) -> HashMap<u32, Vec<Owner>> {
    if !cfg!(target_os = "linux") {
        return owners_by_pid(wanted);
    }
    if wanted.is_empty() {
        return HashMap::new();
    }
    let mut want = wanted.to_vec();
    want.sort_unstable();
    scan(|ino| want.binary_search(&ino).is_ok())
}

/// The owners of every socket in /proc, for a list that prints rows as the
/// dump delivers them (no first pass to learn which inodes it shows).
pub fn all_socket_owners() -> HashMap<u32, Vec<Owner>> {
    if !cfg!(target_os = "linux") {
        return all_owners_by_pid();
    }
    scan(|_| true)
}

/// Where the keys are pids: every process this system names.
fn all_owners_by_pid() -> HashMap<u32, Vec<Owner>> {
    #[cfg(windows)]
    let names = crate::sys::process_names();
    #[cfg(not(windows))]
    let names: HashMap<u32, String> = HashMap::new();
    names
        .into_iter()
        .map(|(pid, name)| (pid, vec![Owner { pid, name }]))
        .collect()
}

fn scan(keep: impl Fn(u32) -> bool) -> HashMap<u32, Vec<Owner>> {
    let mut map: HashMap<u32, Vec<Owner>> = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return map;
    };
    // Bounded: /proc lists each process once.
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let mut name: Option<String> = None;
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(ino) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u32>().ok())
            else {
                continue;
            };
            if !keep(ino) {
                continue;
            }
            let name = name.get_or_insert_with(|| {
                // Any bytes (not only UTF-8): decode lossily, keep the name.
                std::fs::read(p.path().join("comm"))
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .trim_end_matches('\n')
                            .to_string()
                    })
                    .unwrap_or_else(|_| "?".into())
            });
            let owners = map.entry(ino).or_default();
            if !owners.iter().any(|o| o.pid == pid) {
                owners.push(Owner {
                    pid,
                    name: name.clone(),
                });
            }
        }
    }
    map
}

/// Where the keys are pids (Windows, macOS): each pid with its name.
fn owners_by_pid(pids: &[u32]) -> HashMap<u32, Vec<Owner>> {
    #[cfg(windows)]
    let names = crate::sys::process_names();
    #[cfg(not(windows))]
    let names: HashMap<u32, String> = HashMap::new();
    pids.iter()
        .filter(|p| **p != 0)
        .map(|&pid| {
            let name = names.get(&pid).cloned().unwrap_or_else(|| "?".into());
            (pid, vec![Owner { pid, name }])
        })
        .collect()
}
