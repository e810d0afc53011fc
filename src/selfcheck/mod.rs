//! `twlab selfcheck`: the live diagnosis checked against the kernel at
//! scale. Random socket tables in fresh namespaces, random bind(),
//! listen() and connect() questions; for each, the prediction the
//! user-facing commands print (through the same code: `why`'s diagnosis
//! over the live table, `ss --summary`'s range accounting) beside what a
//! real socket gets from the kernel. Each disagreement is written as a
//! scenario file that `twlab run` replays.
//!
//! # Layout
//! - `rng`: the seeded generator (fixed forever, so seeds reproduce).
//! - [`generate`]: a [`generate::Situation`] from (seed, case): sysctls, the table's
//!   sockets and calls, the questions. Pure.
//! - `setup`: the table built on real sockets in the thread's namespace.
//! - [`ask`]: one question: prediction, real call, comparison.
//! - this file: the plan, the worker threads (one fresh namespace per
//!   situation, per thread), the tally and the files.

pub mod ask;
pub mod generate;
mod rng;
mod setup;

use crate::error::{Error, Result};
use crate::netns::{self, Sysctl};
use ask::{Asked, CheckKind, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Most scenario files written for one class of disagreement.
const FILES_PER_CLASS: usize = 3;
/// Most scenario files written in one run.
const MAX_FILES: usize = 200;
/// Buckets of each situation's private TCP established hash (see
/// [`netns::enter_fresh_private_ehash`]): a situation holds a few dozen
/// sockets, and a small hash makes each sock_diag dump cheap.
const EHASH_BUCKETS: u32 = 256;

/// What to run. Built with [`Plan::new`] outside this crate (it may grow
/// fields).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Plan {
    /// Situations.
    pub cases: u64,
    /// The seed: the same seed gives the same situations and questions.
    pub seed: u64,
    /// Worker threads, each in namespaces of its own.
    pub jobs: usize,
    /// Where disagreements are written (created when the first one is).
    pub out_dir: PathBuf,
}

impl Plan {
    /// `cases` situations from `seed` on `jobs` workers, disagreements
    /// written under `out_dir`.
    pub fn new(cases: u64, seed: u64, jobs: usize, out_dir: PathBuf) -> Self {
        Plan {
            cases,
            seed,
            jobs,
            out_dir,
        }
    }
}

/// Counts for one kind of check.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Counts {
    /// Comparisons made.
    pub checks: u64,
    /// The kernel did what was predicted.
    pub agreements: u64,
    /// Of the agreements, those whose prediction was `Depends`: the
    /// outcome hung on what sock_diag cannot show (a holder's
    /// SO_REUSEADDR/SO_REUSEPORT), and the kernel gave one of the two.
    pub depends: u64,
    /// The kernel did something else.
    pub disagreements: u64,
}

impl Counts {
    fn add(&mut self, v: Verdict) {
        self.checks += 1;
        match v {
            Verdict::Agrees => self.agreements += 1,
            Verdict::AgreesDepends => {
                self.agreements += 1;
                self.depends += 1;
            }
            Verdict::Disagrees => self.disagreements += 1,
        }
    }

    fn merge(&mut self, o: &Counts) {
        self.checks += o.checks;
        self.agreements += o.agreements;
        self.depends += o.depends;
        self.disagreements += o.disagreements;
    }
}

/// One class of disagreement: the same check, question shape, rule,
/// prediction and kernel outcome.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Class {
    /// The check ("why-bind").
    pub check: CheckKind,
    /// The question's shape ("bind(ip, 0)").
    pub shape: String,
    /// The rule that decided the prediction.
    pub rule: String,
    /// The prediction, short ("ok", "bind EADDRINUSE|ok").
    pub predicted: String,
    /// What the kernel did, short.
    pub kernel: String,
    /// How many times.
    pub count: u64,
    /// Scenario files written for it (at most 3).
    pub files: Vec<PathBuf>,
}

/// The run's outcome.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Situations asked for.
    pub cases: u64,
    /// Situations that ran.
    pub situations: u64,
    /// Situations whose namespace or table could not be set up.
    pub setup_errors: u64,
    /// The first few setup errors.
    pub setup_error_examples: Vec<String>,
    /// Questions asked.
    pub questions: u64,
    /// Questions that did not apply (their socket got no port, their
    /// listener did not listen).
    pub skipped_questions: u64,
    /// All checks.
    pub total: Counts,
    /// Per kind of check.
    pub by_check: BTreeMap<CheckKind, Counts>,
    /// Disagreements by class, most frequent first.
    pub classes: Vec<Class>,
    /// Where the files went.
    pub out_dir: PathBuf,
    /// Scenario files written.
    pub files_written: u64,
    /// Scenario files that could not be written, each with why (at most
    /// five; each also said on stderr when it happened).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub write_errors: Vec<String>,
    /// Seconds.
    pub elapsed_s: f64,
    /// Situations per second.
    pub situations_per_s: f64,
    /// Where the time went.
    pub phases: Phases,
    /// Stopped early by a signal.
    pub interrupted: bool,
}

impl Report {
    /// Any disagreement.
    pub fn disagrees(&self) -> bool {
        self.total.disagreements > 0
    }
}

/// A disagreement as a worker found it; written out by the caller.
struct Found {
    key: ClassKey,
    case: u64,
    question: usize,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ClassKey {
    check: CheckKind,
    shape: String,
    rule: String,
    predicted: String,
    kernel: String,
}

/// What one worker gathered.
#[derive(Default)]
struct Tally {
    situations: u64,
    setup_errors: Vec<String>,
    questions: u64,
    skipped: u64,
    by_check: BTreeMap<CheckKind, Counts>,
    found: Vec<Found>,
    time: Phases,
}

/// Where the time went, summed over the situations (seconds of wall time
/// on the worker threads).
#[derive(Debug, Clone, Copy, Default, Serialize, schemars::JsonSchema)]
pub struct Phases {
    /// Creating the fresh namespaces and writing their sysctls.
    pub namespace_s: f64,
    /// Building the socket tables (TIME_WAIT waits included).
    pub table_s: f64,
    /// Asking the questions (each: a sock_diag dump, the owners from /proc,
    /// the sysctls, the prediction, the real call).
    pub questions_s: f64,
    /// Closing the table's sockets.
    pub teardown_s: f64,
}

impl Phases {
    fn merge(&mut self, o: &Phases) {
        self.namespace_s += o.namespace_s;
        self.table_s += o.table_s;
        self.questions_s += o.questions_s;
        self.teardown_s += o.teardown_s;
    }
}

/// Can selfcheck run here? It needs root: network namespaces per thread,
/// another fsuid, and dropping CAP_NET_BIND_SERVICE.
pub fn can_run() -> std::result::Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "selfcheck needs root (network namespaces, sockets of another uid, dropping CAP_NET_BIND_SERVICE): run it with sudo".into(),
        );
    }
    netns::can_unshare().map_err(|e| e.to_string())
}

/// Run `plan`; `progress` is called once per situation done (from any
/// worker thread).
pub fn run(plan: &Plan, progress: &(dyn Fn() + Sync)) -> Result<Report> {
    if plan.jobs == 0 {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    let start = Instant::now();
    let next = AtomicU64::new(0);
    let tallies = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..plan.jobs {
            scope.spawn(|| {
                let mut t = Tally::default();
                // Bounded: each iteration takes a new case number < cases.
                loop {
                    let case = next.fetch_add(1, Ordering::Relaxed);
                    if case >= plan.cases || crate::interrupted() {
                        break;
                    }
                    situation(plan.seed, case, &mut t);
                    progress();
                }
                if let Ok(mut all) = tallies.lock() {
                    all.push(t);
                }
            });
        }
    });
    let tallies = tallies.into_inner().unwrap_or_default();
    let elapsed = start.elapsed().as_secs_f64();
    Ok(report(plan, tallies, elapsed))
}

/// Run situation `case` on the calling thread, in a fresh namespace.
fn situation(seed: u64, case: u64, t: &mut Tally) {
    let s = generate::situation(seed, case);
    let sysctls: Vec<Sysctl> = s.sysctls.iter().map(|(k, v)| Sysctl::new(k, v)).collect();
    let mut clock = Instant::now();
    let mut lap = |phase: &mut f64| {
        let now = Instant::now();
        *phase += (now - clock).as_secs_f64();
        clock = now;
    };
    let entered = netns::enter_fresh_private_ehash(&sysctls, EHASH_BUCKETS);
    lap(&mut t.time.namespace_s);
    if let Err(e) = entered {
        t.setup_errors.push(format!("case {case}: {e}"));
        return;
    }
    let built = setup::build(&s.sockets, &s.steps);
    lap(&mut t.time.table_s);
    let table = match built {
        Ok(table) => table,
        Err(e) => {
            t.setup_errors.push(format!("case {case}: {e}"));
            return;
        }
    };
    t.situations += 1;
    for (k, q) in s.questions.iter().enumerate() {
        let asked = match ask::ask(q, &table) {
            Ok(Some(a)) => a,
            Ok(None) => {
                t.skipped += 1;
                continue;
            }
            Err(e) => {
                t.setup_errors
                    .push(format!("case {case} question {k}: {e}"));
                continue;
            }
        };
        t.questions += 1;
        for c in &asked.checks {
            t.by_check.entry(c.kind).or_default().add(c.verdict);
            if c.verdict == Verdict::Disagrees {
                t.found.push(Found {
                    key: ClassKey {
                        check: c.kind,
                        shape: asked.shape.to_string(),
                        rule: c.rule.clone(),
                        predicted: c.predicted_short.clone(),
                        kernel: c.observed.short(),
                    },
                    case,
                    question: k,
                    text: scenario_text(seed, &s, &table, k, &asked, c),
                });
            }
        }
    }
    lap(&mut t.time.questions_s);
    drop(table);
    lap(&mut t.time.teardown_s);
}

/// The disagreement as a script `twlab run` plays: the table's sockets and
/// the calls that built it (each with what it got), then the question's
/// calls, the last one expecting what the kernel did.
fn scenario_text(
    seed: u64,
    s: &generate::Situation,
    table: &setup::Table,
    k: usize,
    asked: &Asked,
    c: &ask::Check,
) -> String {
    let mut sockets = table.used_specs();
    sockets.push(asked.socket.clone());
    let mut steps = table.ran.clone();
    steps.extend(asked.steps.iter().cloned());
    let source = match c.kind {
        CheckKind::SsSummary => "ss --summary",
        _ => "twlab why",
    };
    let comments = vec![
        format!(
            "twlab selfcheck --seed {seed}: situation {}, question {k} ({})",
            s.case,
            c.kind.name()
        ),
        format!("question: {}", asked.what),
        format!(
            "{source} predicted: {} [rule {}, {}]",
            c.predicted, c.rule, c.kernel_fn
        ),
        format!("because: {}", c.explanation),
        format!("the kernel: {}", c.observed.short()),
        "replay: twlab run THIS-FILE (ports the kernel picks may differ from run to run)".into(),
    ];
    let description = format!(
        "selfcheck disagreement: {} — {source} predicted {} (rule {}), the kernel: {}",
        asked.what,
        c.predicted_short,
        c.rule,
        c.observed.short()
    );
    crate::scenario::file::script_toml(&comments, &description, &s.sysctls, &sockets, &steps)
}

fn report(plan: &Plan, tallies: Vec<Tally>, elapsed: f64) -> Report {
    let mut by_check: BTreeMap<CheckKind, Counts> = BTreeMap::new();
    let mut total = Counts::default();
    let (mut situations, mut questions, mut skipped) = (0, 0, 0);
    let mut errors = Vec::new();
    let mut found = Vec::new();
    let mut phases = Phases::default();
    for t in tallies {
        phases.merge(&t.time);
        situations += t.situations;
        questions += t.questions;
        skipped += t.skipped;
        errors.extend(t.setup_errors);
        for (k, c) in &t.by_check {
            by_check.entry(*k).or_default().merge(c);
            total.merge(c);
        }
        found.extend(t.found);
    }
    // The same files whatever the thread interleaving: by case, question.
    found.sort_by_key(|f| (f.case, f.question, f.key.check));
    let mut classes: BTreeMap<ClassKey, Class> = BTreeMap::new();
    let mut written = 0u64;
    let mut attempts = 0u64;
    let mut replaced = 0u64;
    let mut write_errors: Vec<String> = Vec::new();
    for f in &found {
        let class = classes.entry(f.key.clone()).or_insert_with(|| Class {
            check: f.key.check,
            shape: f.key.shape.clone(),
            rule: f.key.rule.clone(),
            predicted: f.key.predicted.clone(),
            kernel: f.key.kernel.clone(),
            count: 0,
            files: Vec::new(),
        });
        class.count += 1;
        // Attempts bounded too: on a full disk every one fails.
        if class.files.len() < FILES_PER_CLASS && (attempts as usize) < MAX_FILES {
            attempts += 1;
            let name = format!(
                "seed{}-case{}-q{}-{}.toml",
                plan.seed,
                f.case,
                f.question,
                f.key.check.name()
            );
            match write_file(&plan.out_dir, &name, &f.text) {
                Ok(w) => {
                    replaced += u64::from(w.replaced);
                    class.files.push(w.path);
                    written += 1;
                }
                // Said, not swallowed: the disagreement stays in the
                // report, only its file is missing; the report and the
                // exit code (1) say it (cli/selfcheck.rs).
                Err(e) => {
                    if write_errors.len() < 5 {
                        write_errors.push(e);
                    }
                }
            }
        }
    }
    if replaced > 0 {
        // A re-run with the same seed writes the same names: said, as
        // every file twlab replaces is (crate::outfile).
        eprintln!(
            "selfcheck: replaced {replaced} existing scenario file{} in {}",
            if replaced == 1 { "" } else { "s" },
            crate::text::echo(&plan.out_dir.to_string_lossy())
        );
    }
    let mut classes: Vec<Class> = classes.into_values().collect();
    classes.sort_by_key(|c| std::cmp::Reverse(c.count));
    errors.sort();
    let setup_errors = errors.len() as u64;
    errors.truncate(5);
    Report {
        seed: plan.seed,
        cases: plan.cases,
        situations,
        setup_errors,
        setup_error_examples: errors,
        questions,
        skipped_questions: skipped,
        total,
        by_check,
        classes,
        out_dir: plan.out_dir.clone(),
        files_written: written,
        write_errors,
        elapsed_s: elapsed,
        situations_per_s: if elapsed > 0.0 {
            situations as f64 / elapsed
        } else {
            0.0
        },
        phases,
        interrupted: crate::interrupted(),
    }
}

/// One scenario file, whole or not at all ([`crate::outfile`]).
fn write_file(
    dir: &Path,
    name: &str,
    text: &str,
) -> std::result::Result<crate::outfile::Written, String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "creating the directory {} failed: {}",
            crate::text::echo(&dir.to_string_lossy()),
            crate::outcome::SysError::from_io(&e)
        )
    })?;
    crate::outfile::write_bytes(&dir.join(name), text.as_bytes()).map_err(|e| e.to_string())
}

/// Can scenario files go to `dir`? Checked before the run, so a long run
/// does not end with its files refused: a `dir` that exists must be a
/// directory (exit 2) where files can be created (exit 1); one that does
/// not is created when the first disagreement is written.
pub fn check_out_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            crate::outfile::check_target(&dir.join("selfcheck-probe.toml")).map(|_| ())
        }
        Ok(_) => Err(Error::Usage(format!(
            "--out {} is not a directory: give a directory for the scenario files",
            crate::text::echo(&dir.to_string_lossy())
        ))),
        Err(_) => Ok(()),
    }
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let pct = |n: u64, d: u64| {
        if d == 0 {
            0.0
        } else {
            100.0 * n as f64 / d as f64
        }
    };
    out.push_str(&format!(
        "selfcheck seed {}: {} situations{}, {} questions ({} did not apply), {} checks\n",
        r.seed,
        r.situations,
        if r.interrupted { " (interrupted)" } else { "" },
        r.questions,
        r.skipped_questions,
        r.total.checks
    ));
    out.push_str(&format!(
        "agreements {} ({:.1}%), of which {} through Depends (sock_diag cannot show what decides); disagreements {}\n",
        r.total.agreements,
        pct(r.total.agreements, r.total.checks),
        r.total.depends,
        r.total.disagreements
    ));
    for k in CheckKind::ALL {
        if let Some(c) = r.by_check.get(&k) {
            out.push_str(&format!(
                "  {:<12} {:>6} checks  {:>6} agree ({:>5} Depends)  {:>6} disagree\n",
                k.name(),
                c.checks,
                c.agreements,
                c.depends,
                c.disagreements
            ));
        }
    }
    if r.setup_errors > 0 {
        out.push_str(&format!("setup errors: {}\n", r.setup_errors));
        for e in &r.setup_error_examples {
            out.push_str(&format!("  {e}\n"));
        }
    }
    if !r.classes.is_empty() {
        out.push_str("disagreements by class (check, question, rule: predicted → kernel):\n");
        for c in &r.classes {
            out.push_str(&format!(
                "  {:>6}  {} {}, {}: {} → {}\n",
                c.count,
                c.check.name(),
                c.shape,
                c.rule,
                c.predicted,
                c.kernel
            ));
            if let Some(f) = c.files.first() {
                out.push_str(&format!("          e.g. {}\n", f.display()));
            }
        }
        out.push_str(&format!(
            "{} scenario files in {} (replay one with `twlab run FILE`)\n",
            r.files_written,
            r.out_dir.display()
        ));
        if let Some(first) = r.write_errors.first() {
            out.push_str(&format!("scenario files not written: {first}\n"));
        }
    }
    let per = |x: f64| 1e3 * x / r.situations.max(1) as f64;
    out.push_str(&format!(
        "elapsed {:.1} s, {:.1} situations/s; per situation on a worker: namespace {:.1} ms, table {:.1} ms, questions {:.1} ms, teardown {:.1} ms\n",
        r.elapsed_s,
        r.situations_per_s,
        per(r.phases.namespace_s),
        per(r.phases.table_s),
        per(r.phases.questions_s),
        per(r.phases.teardown_s)
    ));
    out
}

#[cfg(test)]
mod write_tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("twlab-sc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// The directory is made for the first file; the same name again is
    /// a replacement, reported as one.
    #[test]
    fn a_scenario_file_is_written_then_replaced() {
        let d = dir("files");
        let w = write_file(&d, "a.toml", "x = 1\n").unwrap();
        assert!(!w.replaced);
        assert_eq!(std::fs::read_to_string(&w.path).unwrap(), "x = 1\n");
        assert!(write_file(&d, "a.toml", "x = 2\n").unwrap().replaced);
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temporary left"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A failed write comes back as its line (it used to be dropped by
    /// `.ok()?`): here --out is a regular file, so no directory can be made.
    #[test]
    fn a_scenario_file_that_cannot_be_written_is_an_error_line() {
        let d = dir("notdir");
        std::fs::write(&d, b"a file").unwrap();
        let e = write_file(&d, "a.toml", "x = 1\n").unwrap_err();
        assert!(e.contains("creating the directory"), "{e}");
        assert!(e.contains("EEXIST") || e.contains("ENOTDIR"), "{e}");
        assert!(matches!(check_out_dir(&d), Err(Error::Usage(_))));
        let _ = std::fs::remove_file(&d);
    }

    /// --out is checked before the run: a missing directory is fine (made
    /// later), one where no file can be created is an error (exit 1).
    #[test]
    fn the_out_directory_is_checked_before_the_run() {
        assert!(check_out_dir(&dir("missing")).is_ok());
        let e = check_out_dir(Path::new("/proc")).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
    }
}
