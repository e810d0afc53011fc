//! How cells are kept apart: a fresh network namespace per cell (root), the
//! same inside an unprivileged user namespace made by a re-executed worker
//! (ordinary user), or the host namespace as a last resort.
//!
//! # The worker protocol
//! The front end starts `<this exe> matrix --internal-worker [--until-free]
//! [--jobs N]` (`worker_args`); the binary must accept those arguments and,
//! before it starts any thread, call `before_worker_threads`, then
//! `run_worker`. The worker reads the cells as one JSON array on stdin and
//! writes one JSON [`CellResult`] per line on stdout as each finishes; an
//! empty array only sets up the namespaces (the probe).

use super::cells::CellSpec;
use super::pool::{Place, RunOptions, run_cells};
use super::results::CellResult;
use crate::error::{Error, NetnsError, Result};
use crate::netns;
use crate::outcome::Exit;
use std::io::{BufRead, Write};
use std::sync::Mutex;

/// How the plan asks for cells to be isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationChoice {
    /// The best available: namespaces as root, else a user namespace, else
    /// the host namespace.
    #[default]
    Auto,
    /// The host namespace (testing the fallback).
    Host,
}

/// How cells are isolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// Root: one fresh network namespace per cell, per thread.
    Netns,
    /// Ordinary user: a re-executed worker in a user+network namespace.
    UserNs,
    /// Neither possible: the host namespace, host sysctls only.
    Host {
        /// Why neither namespace kind was possible.
        why: String,
    },
}

impl Isolation {
    /// True if each cell gets a network namespace of its own.
    pub fn is_isolated(&self) -> bool {
        !matches!(self, Isolation::Host { .. })
    }

    /// The report's "isolation:" line.
    pub fn describe(&self) -> String {
        match self {
            Isolation::Netns => "one fresh network namespace per cell".into(),
            Isolation::UserNs => {
                "one fresh network namespace per cell, inside an unprivileged user namespace".into()
            }
            Isolation::Host { why } => format!(
                "HOST NAMESPACE: {why}; cells ran on free ports with the host's sysctls, cells needing other sysctls were skipped"
            ),
        }
    }

    /// Run `cells` isolated this way, calling `done` as each finishes.
    pub(crate) fn run(
        &self,
        cells: &[CellSpec],
        opts: RunOptions,
        done: &(dyn Fn(CellResult) + Sync),
    ) -> Result<()> {
        match self {
            Isolation::Netns => run_cells(cells, opts, Place::FreshNetns, done),
            Isolation::UserNs => run_via_worker(cells, opts, done),
            Isolation::Host { .. } => run_cells(cells, opts, Place::Host, done),
        }
    }
}

/// Decide how to isolate cells.
pub(crate) fn choose_isolation(choice: IsolationChoice) -> Isolation {
    if choice == IsolationChoice::Host {
        return Isolation::Host {
            why: "--host-netns given".into(),
        };
    }
    match netns::can_unshare() {
        Ok(()) => Isolation::Netns,
        Err(why) => match userns_probe() {
            Ok(()) => Isolation::UserNs,
            Err(why2) => Isolation::Host {
                why: format!(
                    "cannot create network namespaces ({why}) nor user namespaces ({why2})"
                ),
            },
        },
    }
}

/// The arguments that start this executable as the hidden worker.
pub(crate) fn worker_args(opts: RunOptions) -> Vec<String> {
    let mut a: Vec<String> = vec!["matrix".into(), "--internal-worker".into()];
    if opts.until_free {
        a.push("--until-free".into());
    }
    if let Some(j) = opts.jobs {
        a.extend(["--jobs".into(), j.to_string()]);
    }
    a
}

/// Can an unprivileged child make a user+network namespace? Probed with a
/// re-executed worker (unshare(CLONE_NEWUSER) needs a single-threaded
/// process) given no cells.
fn userns_probe() -> std::result::Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(worker_args(RunOptions::default()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            // An empty cell list: the worker only sets up its namespaces.
            if let Some(mut i) = c.stdin.take() {
                let _ = i.write_all(b"[]");
            }
            c.wait_with_output()
        })
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("no message").trim();
        Err(last
            .strip_prefix("twlab: error: ")
            .unwrap_or(last)
            .to_string())
    }
}

/// The result of the worker's early unshare (see [`before_worker_threads`]).
static USERNS: Mutex<Option<std::result::Result<(), NetnsError>>> = Mutex::new(None);

/// The worker calls this before anything starts a thread (the Ctrl-C
/// handler does): it enters its user + network namespace here, because
/// unshare(CLONE_NEWUSER) fails with EINVAL in a multi-threaded process.
pub(crate) fn before_worker_threads() {
    #[cfg(target_os = "linux")]
    crate::sys::ns::die_with_parent();
    let r = netns::enter_unprivileged();
    *USERNS.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
}

/// The hidden worker: having entered a user + network namespace while still
/// single-threaded (its uid mapped to root there), run the cells from stdin,
/// one JSON line per result on stdout.
pub(crate) fn run_worker(opts: RunOptions) -> Result<Exit> {
    let entered = USERNS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or(Err(NetnsError::NotUnshared));
    entered?;
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .map_err(|e| Error::Invalid(format!("reading cells: {e}")))?;
    let cells: Vec<CellSpec> =
        serde_json::from_str(&input).map_err(|e| Error::Invalid(format!("bad cell list: {e}")))?;
    // Root in its namespace, the worker writes each cell's sysctls: only
    // the matrix's own names pass.
    super::cells::check_sysctl_names(&cells)?;
    if cells.is_empty() {
        return Ok(Exit::Done);
    }
    let out = Mutex::new(std::io::stdout());
    run_cells(&cells, opts, Place::FreshNetns, &|r| {
        if let Ok(line) = serde_json::to_string(&r) {
            let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        }
    })?;
    Ok(Exit::Done)
}

/// Run cells in a re-executed worker, reading results as they come. On
/// Ctrl-C (or any signal the interrupt flag stands for) the worker is
/// stopped, not left behind: it gets SIGINT, then SIGKILL if it has not
/// exited within a second (and PR_SET_PDEATHSIG kills it if this process
/// dies first).
fn run_via_worker(cells: &[CellSpec], opts: RunOptions, done: &dyn Fn(CellResult)) -> Result<()> {
    use std::process::{Command, Stdio};
    use std::sync::mpsc::{RecvTimeoutError, channel};
    let exe = std::env::current_exe().map_err(|err| NetnsError::Io {
        what: "current_exe",
        err,
    })?;
    let mut child = Command::new(exe)
        .args(worker_args(opts))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| NetnsError::Io {
            what: "starting the namespace worker",
            err,
        })?;
    let input = serde_json::to_vec(cells).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let got = loop {
        if crate::interrupted() {
            break Err(Error::Interrupted);
        }
        match rx.recv_timeout(POLL) {
            Ok(Ok(line)) => match serde_json::from_str::<CellResult>(&line) {
                Ok(r) => done(r),
                Err(err) => break Err(NetnsError::WorkerOutput { err }.into()),
            },
            Ok(Err(err)) => {
                break Err(NetnsError::Io {
                    what: "reading the worker",
                    err,
                }
                .into());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
        }
    };
    if got.is_err() {
        stop_worker(&mut child);
    }
    let _ = writer.join();
    let _ = reader.join();
    let out = child.wait_with_output().map_err(|err| NetnsError::Io {
        what: "waiting for the worker",
        err,
    })?;
    got?;
    worker_status(&out)
}

/// How often the front end looks at the interrupt flag while it waits for
/// the worker.
const POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Stop the worker: SIGINT (it exits 130 after its cells' threads stop),
/// then SIGKILL after a second.
fn stop_worker(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
    }
    for _ in 0..20 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
}

/// The error a failed worker stands for, in one line: its own last line
/// without its "twlab: error: " prefix, so nothing is nested; exit 130
/// (Ctrl-C to the process group reached the worker first) is
/// [`Error::Interrupted`], exit 2 a bad argument.
fn worker_status(out: &std::process::Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("no message");
    let last = last
        .strip_prefix("twlab: error: ")
        .unwrap_or(last)
        .to_string();
    #[cfg(unix)]
    let signalled = std::os::unix::process::ExitStatusExt::signal(&out.status).is_some();
    #[cfg(not(unix))]
    let signalled = false;
    match out.status.code() {
        Some(130) => Err(Error::Interrupted),
        _ if signalled && crate::interrupted() => Err(Error::Interrupted),
        Some(2) => Err(Error::Usage(last)),
        _ => Err(NetnsError::WorkerFailed { last }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_args_carry_the_run_options() {
        assert_eq!(
            worker_args(RunOptions::default()),
            ["matrix", "--internal-worker"]
        );
        let a = worker_args(RunOptions {
            jobs: Some(3),
            until_free: true,
        });
        assert_eq!(
            a,
            ["matrix", "--internal-worker", "--until-free", "--jobs", "3"]
        );
    }
}
