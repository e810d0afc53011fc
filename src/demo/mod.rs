//! `twlab demo`: the lesson in one command. Runs the classic experiment in
//! five variants on loopback, in this process, and explains each outcome
//! with the kernel rule that decided it ([`crate::model`]). The variants are
//! the scenario files of `examples/scenarios/demo/`, embedded in the binary
//! (`twlab run` replays the same files in a namespace). [`table`] lays the
//! result out for people.

pub mod table;

use crate::check::{self, Checked};
use crate::diag::Side;
use crate::error::{Error, Result};
use crate::experiment::Experiment;
use crate::json::OutputFormat;
use crate::model::{self, DocumentedPrediction, KernelFacts};
use crate::outcome::Outcome;
use crate::scenario::Report;
use crate::scenario::file::{self, Scenario};
use crate::socket::Family;
use serde::Serialize;
use std::path::Path;
use std::sync::OnceLock;

/// What `twlab demo` runs and how it prints it (the command line's
/// arguments, parsed).
/// Built with [`DemoPlan::new`] outside this crate (it may grow fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DemoPlan {
    /// IPv4 (127.0.0.1) or IPv6 (::1) loopback.
    pub family: Family,
    /// Server port for every case; `None` picks a free one for each case.
    pub port: Option<u16>,
    /// Text (the table, the explanations under it, the host facts and
    /// other systems: `table::demo_text`) or JSON (one document, the
    /// [`Demo`] as serde writes it); other formats print the text.
    pub output: OutputFormat,
}

impl DemoPlan {
    /// The demo on `family`'s loopback, a free port per case, as text.
    pub fn new(family: Family) -> Self {
        DemoPlan {
            family,
            port: None,
            output: OutputFormat::Text,
        }
    }
}

/// One row of the lesson.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DemoRow {
    /// The case, in words.
    pub case: String,
    /// The end that closed first, with " (RST)" for an abortive close.
    pub closed_first: String,
    /// "client options / listener options".
    pub options: String,
    /// "ok", or the step that failed.
    pub step: String,
    /// The error, if a step failed: in JSON the errno object (name,
    /// number, Winsock twin), as every command writes one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<crate::outcome::SysError>,
    /// The old 4-tuple at the deciding moment, from both ends.
    pub old_tuple: String,
    /// Which end held TIME_WAIT, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_wait_held_by: Option<Side>,
    /// The rule of the model that decided it.
    pub rule: model::RuleId,
    /// The model's explanation, citing the kernel function or RFC.
    pub explanation: String,
    /// What would make a failed step succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// True when the model this row is checked against
    /// ([`DemoRow::checked_against`]) predicted what the system did.
    pub model_agrees: bool,
    /// The system the case ran on ("Linux", "Windows", "macOS/BSD").
    pub system: &'static str,
    /// The model the verdict compares with: the Linux rule model on Linux,
    /// elsewhere the documented model of the system it ran on (its
    /// `windows` or `bsd` column).
    pub checked_against: &'static str,
    /// Off Linux, where the outcome differs from the documented model: what
    /// that means (a finding to report; under Wine, the host's Linux TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_note: Option<String>,
    /// Runs needed: more than 1 when the old connection changed state
    /// during the step and the run was repeated (see [`crate::check`]).
    pub runs: u32,
    /// What Windows would do (documented; on Windows, beside what it did).
    pub windows: DocumentedPrediction,
    /// What BSD/macOS would do (documented; on macOS and FreeBSD, beside
    /// what they did).
    pub bsd: DocumentedPrediction,
    /// The run itself.
    pub report: Report,
}

/// The whole demo.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Demo {
    /// The system the cases ran on ("Linux", "Windows", "macOS/BSD").
    pub system: &'static str,
    /// Where the socket states came from.
    pub states_from: &'static str,
    /// Wine's version when the Windows build runs under Wine: its Winsock
    /// is the host's Linux TCP, so the outcomes are Linux's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wine: Option<String>,
    /// This kernel and the namespace's sysctls (off Linux: the default
    /// Linux the Linux model's column assumes).
    pub kernel: KernelFacts,
    /// One row per case, in order.
    pub rows: Vec<DemoRow>,
    /// Wall time of all the cases.
    pub elapsed_ms: f64,
}

impl Demo {
    /// On Linux, whether the rule model disagreed with the kernel on any
    /// row. Elsewhere never: a row that differs from the documented model
    /// says so itself, a finding about the documentation rather than a
    /// failure of the run.
    pub fn model_disagreed(&self) -> bool {
        Host::here() == Host::Linux && !self.rows.iter().all(|r| r.model_agrees)
    }
}

/// The demo's cases, in order: scenario files embedded at build time, so
/// that editing one changes the demo (path, text).
const CASE_FILES: [(&str, &str); 5] = [
    (
        "examples/scenarios/demo/1-reconnect-after-peer.toml",
        include_str!("../../examples/scenarios/demo/1-reconnect-after-peer.toml"),
    ),
    (
        "examples/scenarios/demo/2-reconnect-at-once.toml",
        include_str!("../../examples/scenarios/demo/2-reconnect-at-once.toml"),
    ),
    (
        "examples/scenarios/demo/3-server-closes-first.toml",
        include_str!("../../examples/scenarios/demo/3-server-closes-first.toml"),
    ),
    (
        "examples/scenarios/demo/4-client-rst.toml",
        include_str!("../../examples/scenarios/demo/4-client-rst.toml"),
    ),
    (
        "examples/scenarios/demo/5-no-reuseaddr.toml",
        include_str!("../../examples/scenarios/demo/5-no-reuseaddr.toml"),
    ),
];

/// One embedded case file → its description and experiment, or why it
/// cannot be a demo case (not an experiment, no description, sysctls the
/// demo could not apply: it runs in this process's namespace).
fn parse_case(path: &str, text: &str) -> std::result::Result<(String, Experiment), String> {
    match file::parse(Path::new(path), text).map_err(|e| e.to_string())? {
        Scenario::Experiment(f) => {
            if !f.sysctls.is_empty() {
                return Err(format!("{path}: a demo case cannot set sysctls"));
            }
            let d = f
                .description
                .ok_or_else(|| format!("{path}: a demo case needs a description"))?;
            Ok((d, f.experiment))
        }
        Scenario::Script(_) => Err(format!("{path}: a demo case needs an [experiment] table")),
    }
}

/// The embedded case files, parsed once.
fn case_files() -> &'static [(String, Experiment)] {
    static CASES: OnceLock<Vec<(String, Experiment)>> = OnceLock::new();
    CASES.get_or_init(|| {
        CASE_FILES
            .iter()
            .map(|(path, text)| {
                // The files are part of the binary and every test parses
                // them (`demo::tests`): a bad one is a build defect, not
                // an input error.
                parse_case(path, text).unwrap_or_else(|e| panic!("embedded demo case: {e}"))
            })
            .collect()
    })
}

/// The five cases of the lesson, from `examples/scenarios/demo/`, with the
/// command line's family and server port (`None`: a free one per case).
pub fn cases(family: Family, port: Option<u16>) -> Vec<(&'static str, Experiment)> {
    case_files()
        .iter()
        .map(|(case, x)| {
            let x = Experiment {
                family,
                server_port: port.unwrap_or(0),
                ..x.clone()
            };
            (case.as_str(), x)
        })
        .collect()
}

/// Which system ran the demo, and what its rows are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    Linux,
    Windows,
    Bsd,
}

impl Host {
    const fn here() -> Self {
        if cfg!(target_os = "linux") {
            Host::Linux
        } else if cfg!(windows) {
            Host::Windows
        } else {
            Host::Bsd
        }
    }
    fn checked_against(self) -> &'static str {
        match self {
            Host::Linux => "Linux rule model",
            Host::Windows => "documented Windows model",
            Host::Bsd => "documented BSD/macOS model",
        }
    }
    fn states_from(self) -> &'static str {
        match self {
            Host::Linux => "sock_diag (NETLINK_SOCK_DIAG), with TIME_WAIT timers",
            Host::Windows => {
                "GetExtendedTcpTable (states and owning pids; Windows' table has no timers)"
            }
            Host::Bsd => {
                if cfg!(target_os = "macos") {
                    "sysctl net.inet.tcp.pcblist_n (states; no timers read)"
                } else {
                    "sysctl net.inet.tcp.pcblist (states; no timers read)"
                }
            }
        }
    }
}

/// Wine's version, when the Windows build runs under it.
fn wine() -> Option<String> {
    #[cfg(windows)]
    {
        crate::sys::wine_version()
    }
    #[cfg(not(windows))]
    {
        None
    }
}

/// What a row off Linux says when this system did not do what its
/// documented model says.
fn host_note(host: Host, wine: Option<&str>) -> String {
    match (host, wine) {
        (Host::Windows, Some(v)) => format!(
            "under Wine {v}: Winsock runs on the host's Linux TCP, so this is Linux's outcome, not Windows'"
        ),
        (Host::Windows, None) => {
            "this Windows behaves differently from the documented model: please report it".into()
        }
        _ => format!(
            "this {} behaves differently from the documented model: please report it",
            crate::sys::OS_NAME
        ),
    }
}

fn row(case: &str, c: Checked, host: Host, wine: Option<&str>) -> DemoRow {
    let Checked {
        report: r,
        prediction: p,
        view,
        agrees,
        runs,
        raced: _,
        windows,
        bsd,
    } = c;
    let x = &r.experiment;
    // Off Linux the verdict is the documented model of the system it ran
    // on against what that system did.
    let model_agrees = match host {
        Host::Linux => agrees,
        Host::Windows => model::same_outcome(&windows.outcome, &r.outcome),
        Host::Bsd => model::same_outcome(&bsd.outcome, &r.outcome),
    };
    DemoRow {
        case: case.to_string(),
        closed_first: format!(
            "{}{}",
            x.close.side,
            if x.close.is_rst() { " (RST)" } else { "" }
        ),
        options: format!("{} / {}", x.client.label(), x.listener.label()),
        step: match &r.outcome {
            Outcome::Ok => "ok".into(),
            Outcome::Failed { step, .. } => format!("{step}()"),
        },
        errno: r.outcome.error().cloned(),
        old_tuple: view.describe(),
        time_wait_held_by: view.time_wait_holder(),
        rule: p.rule,
        explanation: p.explanation,
        fix: p.fix,
        model_agrees,
        system: crate::sys::OS_NAME,
        checked_against: host.checked_against(),
        host_note: (host != Host::Linux && !model_agrees).then(|| host_note(host, wine)),
        runs,
        windows,
        bsd,
        report: r,
    }
}

/// Run the demo and return its data.
pub fn run_demo(plan: &DemoPlan) -> Result<Demo> {
    let start = std::time::Instant::now();
    let host = Host::here();
    let wine = wine();
    // Off Linux there are no Linux sysctls: the Linux model's column
    // assumes a default Linux.
    let kernel = match host {
        Host::Linux => KernelFacts::read_current()?,
        _ => KernelFacts::linux_defaults(),
    };
    let mut rows = Vec::new();
    for (case, x) in cases(plan.family, plan.port) {
        if crate::interrupted() {
            return Err(Error::Interrupted);
        }
        // Each run picks fresh ports, so a re-run needs no preparation.
        let c = check::run_checked(&x, &kernel, 5, || Ok(()))?;
        rows.push(row(case, c, host, wine.as_deref()));
    }
    Ok(Demo {
        system: crate::sys::OS_NAME,
        states_from: host.states_from(),
        wine,
        kernel,
        rows,
        elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_case_parses() {
        for (path, text) in CASE_FILES {
            let (d, _) = parse_case(path, text).unwrap();
            assert!(!d.is_empty(), "{path}");
        }
        assert_eq!(cases(Family::V4, None).len(), CASE_FILES.len());
    }

    #[test]
    fn a_script_or_sysctls_cannot_be_a_demo_case() {
        let script = "[[socket]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";
        assert!(
            parse_case("s.toml", script)
                .unwrap_err()
                .contains("[experiment]")
        );
        let (_, text) = CASE_FILES[0];
        let with_sysctls = format!("sysctls = {{ \"net.ipv4.tcp_timestamps\" = \"0\" }}\n{text}");
        assert!(
            parse_case("x.toml", &with_sysctls)
                .unwrap_err()
                .contains("cannot set sysctls")
        );
    }
}
