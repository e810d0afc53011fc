//! Running cells: a pool of worker threads, each cell in a fresh namespace
//! of its own (or in the host's), then the `--until-free` phase.

use super::cells::CellSpec;
use super::results::{CellResult, CellStatus, FreeTiming, RanCell, held_by_open_descriptor, judge};
use crate::error::{Error, NetnsError, Result};
use crate::experiment::{Experiment, When};
use crate::model::KernelFacts;
use crate::netns;
use crate::scenario;
use crate::sysctl::Sysctl;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// At most this many cells wait `after-<N>ms` at once (threads, each in its
/// own namespace).
const MAX_SLEEPERS: usize = 256;
/// `--until-free` gives up after this long.
pub const UNTIL_FREE_LIMIT: Duration = Duration::from_secs(70);
/// How many times a cell whose old connection was in a transient state
/// (FIN_WAIT1 waiting for a delayed ACK, LAST_ACK, ...) may run: such a run
/// is not evidence either way (`check::run_checked`).
const MAX_RUNS: u32 = 3;

/// How cells run, wherever they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunOptions {
    /// Cells run at once; `None`: [`default_jobs`].
    pub jobs: Option<usize>,
    /// For cells whose step failed, re-run them retrying the step until it
    /// succeeds, and report how long that took.
    pub until_free: bool,
}

impl RunOptions {
    fn jobs(&self) -> usize {
        self.jobs.unwrap_or_else(default_jobs)
    }
}

/// Default for `--jobs`: cells mostly wait on the kernel (sock_diag polls),
/// not on the CPU, so a few per core. (The `--until-free` phase runs every
/// blocked cell at once regardless.)
pub fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    cores * 4
}

/// Where the pool's threads run cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Each cell in a fresh network namespace of its own.
    FreshNetns,
    /// In the calling thread's namespace, with its sysctls only.
    Host,
}

/// Run one cell on the calling thread.
fn run_cell(spec: &CellSpec, place: Place) -> CellStatus {
    if place == Place::Host
        && let Some(reason) = host_lacks(spec)
    {
        return CellStatus::Skipped { reason };
    }
    if place == Place::FreshNetns
        && let Err(e) = enter_cell_netns(&spec.sysctls)
    {
        return setup_failure(spec, e);
    }
    let kernel = match KernelFacts::read_current() {
        Ok(k) => k,
        Err(e) => {
            return CellStatus::Error {
                message: e.to_string(),
            };
        }
    };
    match checked_run(&spec.experiment, &kernel, &spec.sysctls, place) {
        Ok(c) => CellStatus::Ran(Box::new(c)),
        Err(e) => CellStatus::Error {
            message: e.to_string(),
        },
    }
}

/// A cell whose namespace could not be set up: a sysctl value the kernel
/// refused is told apart from other failures (it is a bad factor value).
fn setup_failure(spec: &CellSpec, e: Error) -> CellStatus {
    if let Error::Sysctl { name, why } = &e
        && let Some(s) = spec.sysctls.iter().find(|s| &s.name == name)
    {
        return CellStatus::SysctlRefused {
            sysctl: s.clone(),
            why: why.to_string(),
        };
    }
    CellStatus::Error {
        message: e.to_string(),
    }
}

/// Host fallback: a cell runs only if every sysctl it needs already has its
/// value in the calling thread's namespace; else why not.
fn host_lacks(spec: &CellSpec) -> Option<String> {
    let norm = |v: &str| v.split_whitespace().collect::<Vec<_>>().join(" ");
    spec.sysctls
        .iter()
        .find(|s| crate::sysctl::read(&s.name) != Some(norm(&s.value)))
        .map(|s| {
            format!(
                "needs {}={} but runs in the host namespace (no namespaces available)",
                s.name, s.value
            )
        })
}

/// A cell's own namespace: fresh, `lo` up, the cell's sysctls, and a TCP
/// established hash of its own, so that each of the cell's sock_diag dumps
/// walks a few hundred buckets instead of the host's whole table (7× faster
/// cells; see `netns::enter_fresh_private_ehash`). A cell holds a handful of
/// sockets, and its tcp_max_tw_buckets is always set explicitly.
fn enter_cell_netns(sysctls: &[Sysctl]) -> Result<()> {
    netns::enter_fresh_private_ehash(sysctls, 256)
}

/// `--until-free` phase: run a blocked cell again, in a fresh namespace,
/// retrying the step until it succeeds; only the timing is kept (the
/// prediction was checked in the first phase, on a calmer machine: hundreds
/// of concurrently waiting cells would race with the FIN_WAIT1 → FIN_WAIT2
/// transition).
fn measure_until_free(spec: &CellSpec, place: Place) -> std::result::Result<FreeTiming, String> {
    let mut x = spec.experiment.clone();
    match place {
        Place::FreshNetns => enter_cell_netns(&spec.sysctls).map_err(|e| e.to_string())?,
        Place::Host => x = super::host_ports::assign(&x).map_err(|e| e.to_string())?,
    }
    x.until_free = Some(UNTIL_FREE_LIMIT);
    let r = scenario::run(&x).map_err(|e| e.to_string())?;
    Ok(match r.until_free {
        Some(u) => match u.freed_after_ms {
            Some(ms) => FreeTiming::FreedAfterMs(ms),
            None => FreeTiming::NotWithin {
                secs: UNTIL_FREE_LIMIT.as_secs(),
            },
        },
        None => FreeTiming::OkOnRerun,
    })
}

/// Run a cell, re-running it in a fresh namespace (bounded) when a race with
/// a transient state spoiled it; stable-state mismatches are never retried.
fn checked_run(
    x: &Experiment,
    kernel: &KernelFacts,
    sysctls: &[Sysctl],
    place: Place,
) -> Result<RanCell> {
    if place == Place::Host {
        return checked_run_on_host(x, kernel);
    }
    let c = crate::check::run_checked(x, kernel, MAX_RUNS, || enter_cell_netns(sysctls))?;
    Ok(judge(c, kernel.clone()))
}

/// The host fallback's [`checked_run`]: every cell shares the host's port
/// space, so each run gets ports of its own ([`super::host_ports`]). A
/// kernel-chosen port (the one a bind-no-port or ephemeral client rebinds)
/// can still be taken by another cell between the close and the step, so
/// any disagreement is re-run on new ports, up to [`MAX_RUNS`] times: a
/// wrong model disagrees every time, a stolen port does not.
fn checked_run_on_host(x: &Experiment, kernel: &KernelFacts) -> Result<RanCell> {
    let mut run = 0;
    loop {
        run += 1;
        let x = super::host_ports::assign(x)?;
        let c = crate::check::run_checked(&x, kernel, 1, || Ok(()))?;
        let mut r = judge(c, kernel.clone());
        r.runs = run;
        if r.matches || run >= MAX_RUNS {
            return Ok(r);
        }
    }
}

/// Run `work` for each item on `jobs` worker threads, calling `done` as
/// each finishes.
fn run_pool<I: Sync, T>(
    items: &[I],
    jobs: usize,
    work: &(dyn Fn(&I) -> T + Sync),
    done: &(dyn Fn(usize, T) + Sync),
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let jobs = jobs.clamp(1, items.len().max(1));
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for i in 0..jobs {
            let h = std::thread::Builder::new()
                .name(format!("twlab-cell-{i}"))
                // Cells use little stack; keep hundreds of waiting
                // --until-free threads cheap.
                .stack_size(256 * 1024)
                .spawn_scoped(s, || {
                    loop {
                        if crate::interrupted() {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(item) = items.get(i) else { break };
                        done(i, work(item));
                    }
                })
                .map_err(|err| NetnsError::Io {
                    what: "spawn worker",
                    err,
                })?;
            handles.push(h);
        }
        for h in handles {
            h.join().map_err(|_| NetnsError::Panicked {
                what: "a cell worker",
            })?;
        }
        Ok(())
    })?;
    if crate::interrupted() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// Run cells in this process: first every cell, checked against the model
/// (`jobs` at once); then, with `until_free`, the cells whose step failed
/// are re-run all at once to time how long they stay blocked, so the whole
/// run takes about one TIME_WAIT period.
pub(crate) fn run_cells(
    cells: &[CellSpec],
    opts: RunOptions,
    place: Place,
    done: &(dyn Fn(CellResult) + Sync),
) -> Result<()> {
    let jobs = opts.jobs();
    let held: Mutex<Vec<CellResult>> = Mutex::new(Vec::new());
    // Cells that wait `after-<N>ms` spend that time asleep, not on a CPU: a
    // pool of `jobs` would make N ms of waiting cost N ms per `jobs` cells.
    // They run after the others, in a pool as wide as they are many (at
    // most MAX_SLEEPERS threads), so the waiting costs about N ms in all.
    let (sleepers, busy): (Vec<usize>, Vec<usize>) = (0..cells.len())
        .partition(|&i| matches!(cells[i].experiment.when, When::AfterMs(ms) if ms >= 50));
    let sleepers_width = sleepers.len().clamp(jobs, MAX_SLEEPERS.max(jobs));
    for (group, width) in [(busy, jobs), (sleepers, sleepers_width)] {
        run_pool(
            &group,
            width,
            &|&i| run_cell(&cells[i], place),
            &|k, status| {
                let r = CellResult {
                    spec: cells[group[k]].clone(),
                    status,
                };
                let blocked = matches!(&r.status, CellStatus::Ran(c) if !c.report.outcome.is_ok());
                if opts.until_free && blocked {
                    held.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                } else {
                    done(r);
                }
            },
        )?;
    }
    let held = held.into_inner().unwrap_or_else(|p| p.into_inner());
    until_free_phase(held, place, done)
}

/// Time how long each blocked cell stays blocked, all at once; cells held by
/// a descriptor that stays open are reported without waiting.
fn until_free_phase(
    held: Vec<CellResult>,
    place: Place,
    done: &(dyn Fn(CellResult) + Sync),
) -> Result<()> {
    let (open, wait): (Vec<_>, Vec<_>) = held
        .into_iter()
        .partition(|r| held_by_open_descriptor(&r.spec.experiment));
    for mut r in open {
        if let CellStatus::Ran(c) = &mut r.status {
            c.until_free = Some(FreeTiming::HeldByOpenSocket);
        }
        done(r);
    }
    let waiting: Vec<Mutex<Option<CellResult>>> =
        wait.into_iter().map(|r| Mutex::new(Some(r))).collect();
    run_pool(
        &waiting,
        waiting.len(),
        &|slot| {
            let spec = slot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|r| r.spec.clone());
            match spec {
                Some(spec) => measure_until_free(&spec, place).unwrap_or_else(FreeTiming::Error),
                None => FreeTiming::Error("cell lost".into()),
            }
        },
        &|i, timing| {
            if let Some(mut r) = waiting[i].lock().unwrap_or_else(|p| p.into_inner()).take() {
                if let CellStatus::Ran(c) = &mut r.status {
                    c.until_free = Some(timing);
                }
                done(r);
            }
        },
    )
}
