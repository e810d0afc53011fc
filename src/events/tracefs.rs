//! twlab's own tracefs instance: a directory under `instances/` made with
//! mkdir (the kernel's `instance_mkdir()` → `trace_array_create()`: a ring
//! buffer, a trace clock and event switches of its own, apart from the
//! global trace that other tools use) and removed with rmdir
//! (`instance_rmdir()` → `__remove_instance()`, which turns its events off
//! and frees its buffer). The tracefs mount itself is private to twlab
//! (see [`crate::sys::tracefs`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

/// Instances are named `twlab-PID-N`; a leftover of a process that is gone
/// (killed with SIGKILL) is removed by the next twlab that starts one.
const PREFIX: &str = "twlab-";

/// How often rmdir is tried while the kernel still holds the instance
/// busy (a reader closing on another thread), and the pause between.
const RMDIR_TRIES: u32 = 50;
const RMDIR_PAUSE: Duration = Duration::from_millis(10);

/// An instance, removed on drop.
pub(crate) struct Instance {
    /// The tracefs root, reachable only through this descriptor.
    root: OwnedFd,
    /// "twlab-4711-0".
    pub(crate) name: String,
}

impl Instance {
    /// The tracefs whose root is `root`, with no instance made yet: what
    /// reading the events' formats needs (they are the same in every
    /// instance). Dropping it removes nothing.
    pub(crate) fn root(root: OwnedFd) -> Instance {
        Instance {
            root,
            name: String::new(),
        }
    }

    /// Remove leftovers of dead twlab processes, then make a new instance
    /// in the tracefs of this [`Instance::root`].
    pub(crate) fn made(self) -> Result<Instance, String> {
        let mut inst = self;
        inst.remove_leftovers();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("{PREFIX}{}-{n}", std::process::id());
        std::fs::create_dir(inst.top().join("instances").join(&name))
            .map_err(|e| format!("mkdir instances/{name} in tracefs: {e}"))?;
        inst.name = name;
        Ok(inst)
    }

    /// The tracefs root as a path (the descriptor's /proc link: it reaches
    /// the mount that no namespace shows).
    fn top(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.root.as_raw_fd()))
    }

    /// A path inside the instance.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.top().join("instances").join(&self.name).join(rel)
    }

    /// A path from the tracefs root (`events/*/*/format` are the same for
    /// every instance).
    pub(crate) fn global(&self, rel: &str) -> PathBuf {
        self.top().join(rel)
    }

    /// Write `text` to the instance's file `rel`.
    pub(crate) fn write(&self, rel: &str, text: &str) -> Result<(), String> {
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path(rel))
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("write {text:?} to {rel}: {e}"))
    }

    /// Read a text file from the tracefs root.
    pub(crate) fn read_global(&self, rel: &str) -> Result<String, String> {
        let mut s = String::new();
        File::open(self.global(rel))
            .and_then(|mut f| f.read_to_string(&mut s))
            .map_err(|e| format!("read {rel}: {e}"))?;
        Ok(s)
    }

    /// Read a text file of the instance.
    pub(crate) fn read(&self, rel: &str) -> Result<String, String> {
        let mut s = String::new();
        File::open(self.path(rel))
            .and_then(|mut f| f.read_to_string(&mut s))
            .map_err(|e| format!("read {rel}: {e}"))?;
        Ok(s)
    }

    /// The CPUs that have a ring buffer: `per_cpu/cpuN`.
    pub(crate) fn cpus(&self) -> Vec<u32> {
        let mut v: Vec<u32> = std::fs::read_dir(self.path("per_cpu"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    fn remove_leftovers(&self) {
        let Ok(dir) = std::fs::read_dir(self.top().join("instances")) else {
            return;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(pid) = name
                .strip_prefix(PREFIX)
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            // A live process keeps its readers open: rmdir would fail with
            // EBUSY anyway; only dead owners' instances are removed.
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        // Events off first (a no-op if rmdir follows; keeps the instance
        // quiet if rmdir keeps failing), then the directory.
        let _ = self.write("events/enable", "0");
        let _ = self.write("tracing_on", "0");
        let dir = self.top().join("instances").join(&self.name);
        for _ in 0..RMDIR_TRIES {
            match std::fs::remove_dir(&dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(RMDIR_PAUSE),
                _ => return,
            }
        }
    }
}
