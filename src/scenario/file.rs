//! Scenario files: one TOML format for two kinds of [`Scenario`]. A bad file
//! gives one [`LoadError`] naming the file, the line and what is wrong.
//!
//! A **script** ([`Script`]): named sockets (address, options, owner) and
//! ordered steps, each with the outcome its author expects, if any:
//!
//! ```toml
//! description = "[::] then 0.0.0.0 on one port"
//! sysctls = { "net.ipv6.bindv6only" = "0" }
//!
//! [[socket]]
//! name = "v6"
//! address = "[::]:8080"
//!
//! [[step]]
//! do = "bind"
//! socket = "v6"
//! expect = "ok"
//! ```
//!
//! A socket has a `name`, an `address` (`IP:PORT`, `[IPv6]:PORT`; port 0:
//! the kernel picks) and optionally `reuseaddr`, `reuseport`, `v6only`
//! ("system", "on", "off"), `linger`, `bind_address_no_port`, `uid` (the
//! owner, needs root) and `port_from = "other"`: bind to the port socket
//! `other` holds by then, as the kernel selftests do with getsockname()
//! after a bind to port 0 (the address then says port 0). A step has `do`
//! (bind, listen, connect, accept, send, recv, close, close-rst,
//! wait-for-state, sleep), the socket and the verb's fields, and an
//! optional `expect`. Sockets and steps may also be written one per line,
//! as arrays of inline tables (`examples/scenarios/selftests/`):
//!
//! ```toml
//! socket = [
//!   { name = "s0", address = "0.0.0.0:0" },
//!   { name = "s1", address = "[::]:0", port_from = "s0" },
//! ]
//! step = [
//!   { do = "bind", socket = "s0", expect = "ok" },
//!   { do = "bind", socket = "s1", expect = "EADDRINUSE" },
//! ]
//! ```
//!
//! An **experiment** ([`ExperimentFile`]): the classic TIME_WAIT experiment
//! as an `[experiment]` table that deserializes into
//! [`Experiment`], the type `demo` cases and `matrix`
//! cells are made of, with an optional `[expect]` table:
//!
//! ```toml
//! description = "client closes first; reconnect before the peer closed"
//!
//! [experiment]
//! family = "v4"
//! client_port = { fixed = 0 }
//! client = { reuseaddr = true }
//! listener = { reuseaddr = true }
//! new_opts = { reuseaddr = true }
//! close = "client"
//! when = "at-once"
//! next = "reconnect"
//!
//! [expect]
//! outcome = "connect EADDRNOTAVAIL"
//! rule = "tuple-busy"
//! ```
//!
//! [`load`] reads only a regular file (a FIFO, a device or a directory is
//! refused before a read could block or run on) of at most
//! [`MAX_FILE_BYTES`]; a script has at most [`MAX_SOCKETS`] sockets and
//! [`MAX_STEPS`] steps, and waits at most [`MAX_STEP_WAIT_MS`] per step and
//! [`MAX_TOTAL_WAIT_MS`] in all; an experiment at most
//! [`MAX_EXPERIMENT_WAIT`]. Past a limit, [`parse`] names the line.

use crate::experiment::Experiment;
use crate::model::RuleId;
use crate::outcome::{Outcome, Step};
use crate::socket::{SocketOpts, V6Only, parse_endpoint};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A scenario file that could not be loaded: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {what}", file.display())]
pub struct LoadError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (1 when the file could not be read at all).
    pub line: usize,
    /// What is wrong, in one line.
    pub what: String,
    /// True when the system could not read it (open() or read() failed);
    /// false when it was read and is not a scenario twlab takes (bad
    /// input: `twlab run` exits 2).
    pub unreadable: bool,
}

/// The largest scenario file read, in bytes (1 MiB; the examples are a
/// few KiB): a file is read whole before it is parsed.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most sockets of a script, the `[[socket]]`s and the sockets its
/// accepts name together (each is a descriptor, and the rule model looks
/// at every pair).
pub const MAX_SOCKETS: usize = 256;
/// Most steps of a script.
pub const MAX_STEPS: usize = 1024;
/// Longest `sleep` or `wait-for-state` timeout of one step, in ms.
pub const MAX_STEP_WAIT_MS: u64 = 60_000;
/// Longest total of a script's sleeps and wait-for-state timeouts (the
/// timeout 2000 where none is given), in ms: what a file can make `run`
/// wait, whatever the kernel does.
pub const MAX_TOTAL_WAIT_MS: u64 = 600_000;
/// Longest wait an experiment file may ask for: `when = { after-ms = N }`
/// and `until_free`, each (as `matrix`'s `when=after-<N>ms`).
pub const MAX_EXPERIMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// One socket of a scenario, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SocketSpec {
    /// Its name, used by the steps.
    pub name: String,
    /// `IP:PORT` or `[IPv6]:PORT` it binds (port 0: the kernel picks);
    /// its family decides the socket's.
    pub address: String,
    /// SO_REUSEADDR.
    #[serde(default)]
    pub reuseaddr: bool,
    /// SO_REUSEPORT.
    #[serde(default)]
    pub reuseport: bool,
    /// IPV6_V6ONLY: "system" (default), "on", "off".
    #[serde(default)]
    pub v6only: V6Only,
    /// SO_LINGER seconds (0: close() sends RST).
    #[serde(default)]
    pub linger: Option<u32>,
    /// IP_BIND_ADDRESS_NO_PORT.
    #[serde(default)]
    pub bind_address_no_port: bool,
    /// The uid that owns it (the fsuid at socket(); needs root). Default:
    /// the running user.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Bind to the port another socket of the file holds when this one
    /// binds (the kernel selftests' `getsockname()` of a socket bound to
    /// port 0, then `addr[i].sin_port = addr[0].sin_port`); `address` then
    /// says port 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_from: Option<String>,
    /// Call bind(), listen() and connect() without CAP_NET_BIND_SERVICE
    /// (dropped from the thread's effective set, needs root), as an
    /// ordinary user would: ports below `net.ipv4.ip_unprivileged_port_start`
    /// then fail with EACCES. Default: the running user's capabilities.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unprivileged: bool,
}

/// What one step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    /// bind() the socket to its address.
    Bind {
        /// The socket.
        socket: String,
    },
    /// listen().
    Listen {
        /// The socket.
        socket: String,
        /// The accept queue length (default 16).
        #[serde(default)]
        backlog: Option<i32>,
    },
    /// connect() to `to` (`IP:PORT`).
    Connect {
        /// The socket.
        socket: String,
        /// Where to.
        to: String,
    },
    /// accept() one connection; the new socket gets the name `as`.
    Accept {
        /// The listener.
        socket: String,
        /// The accepted socket's name.
        #[serde(rename = "as")]
        name: String,
    },
    /// send() some bytes.
    Send {
        /// The socket.
        socket: String,
        /// What to send (default "x").
        #[serde(default)]
        data: Option<String>,
    },
    /// Read until EOF: "ok" at EOF, or the error (ECONNRESET for an RST).
    Recv {
        /// The socket.
        socket: String,
    },
    /// close(): FIN (or RST with SO_LINGER 0).
    Close {
        /// The socket.
        socket: String,
    },
    /// close() with SO_LINGER {on, 0}: RST, no TIME_WAIT.
    CloseRst {
        /// The socket.
        socket: String,
    },
    /// Wait until the kernel shows a socket on the named socket's local
    /// address (and peer, if it had one) in `state` ("TIME-WAIT", ...).
    WaitForState {
        /// The socket whose addresses to look for.
        socket: String,
        /// The state, as `ss` spells it.
        state: String,
        /// Give up after this many ms (default 2000): outcome "timeout".
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Sleep.
    Sleep {
        /// Milliseconds.
        ms: u64,
    },
}

impl Action {
    /// The socket the step acts on, if any.
    pub fn socket(&self) -> Option<&str> {
        match self {
            Action::Bind { socket }
            | Action::Listen { socket, .. }
            | Action::Connect { socket, .. }
            | Action::Accept { socket, .. }
            | Action::Send { socket, .. }
            | Action::Recv { socket }
            | Action::Close { socket }
            | Action::CloseRst { socket }
            | Action::WaitForState { socket, .. } => Some(socket),
            Action::Sleep { .. } => None,
        }
    }

    /// "bind", "close-rst", ...
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Bind { .. } => "bind",
            Action::Listen { .. } => "listen",
            Action::Connect { .. } => "connect",
            Action::Accept { .. } => "accept",
            Action::Send { .. } => "send",
            Action::Recv { .. } => "recv",
            Action::Close { .. } => "close",
            Action::CloseRst { .. } => "close-rst",
            Action::WaitForState { .. } => "wait-for-state",
            Action::Sleep { .. } => "sleep",
        }
    }
}

/// One step: the action, and the outcome the author expects ("ok",
/// "EADDRINUSE", "timeout", ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepSpec {
    /// What it does.
    #[serde(flatten)]
    pub action: Action,
    /// The expected outcome.
    #[serde(default)]
    pub expect: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    min_kernel: Option<Spanned<String>>,
    #[serde(default)]
    sysctls: BTreeMap<String, toml::Value>,
    #[serde(default)]
    socket: Vec<Spanned<SocketSpec>>,
    #[serde(default)]
    step: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    experiment: Option<Spanned<Experiment>>,
    #[serde(default)]
    expect: Option<Spanned<Expect>>,
}

/// What the author of an experiment file expects of its next step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// "ok", an errno name ("EADDRINUSE"), or the step and the errno
    /// ("connect EADDRNOTAVAIL").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The rule of the model that decides it ("tuple-busy").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleId>,
}

/// The steps an experiment's outcome can name.
const OUTCOME_STEPS: [Step; 3] = [Step::Bind, Step::Listen, Step::Connect];

impl Expect {
    /// Whether `outcome` (if given) is a well-formed expectation; else why not.
    fn check(&self) -> Result<(), String> {
        let Some(o) = &self.outcome else {
            return Ok(());
        };
        let errno_like = |e: &str| {
            e.starts_with('E')
                && e.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        };
        let ok = match o.split_once(' ') {
            None => o == "ok" || errno_like(o),
            Some((step, e)) => OUTCOME_STEPS.iter().any(|s| s.name() == step) && errno_like(e),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "expect: outcome '{o}' is not \"ok\", an errno name (\"EADDRINUSE\") or a step and an errno (\"connect EADDRNOTAVAIL\")"
            ))
        }
    }

    /// Whether `outcome` is what the author expects (true when the file
    /// says nothing about the outcome).
    pub fn outcome_matches(&self, outcome: &Outcome) -> bool {
        let Some(want) = &self.outcome else {
            return true;
        };
        match (outcome, want.split_once(' ')) {
            (Outcome::Ok, _) => want == "ok",
            (Outcome::Failed { error, .. }, None) => *want == error.name,
            (Outcome::Failed { step, error }, Some((s, e))) => step.name() == s && error.name == e,
        }
    }

    /// Whether `rule` is the rule the author expects (true when the file
    /// names none).
    pub fn rule_matches(&self, rule: RuleId) -> bool {
        self.rule.is_none_or(|r| r == rule)
    }
}

/// A loaded experiment file: the classic experiment, its namespace's
/// sysctls, and what its author expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ExperimentFile {
    /// The file it came from.
    pub file: PathBuf,
    /// What it shows.
    pub description: Option<String>,
    /// Sysctls of its namespace, name → value.
    pub sysctls: Vec<(String, String)>,
    /// The experiment.
    pub experiment: Experiment,
    /// What its author expects, if anything.
    pub expect: Option<Expect>,
}

/// A loaded scenario file: a script of sockets and steps, or the classic
/// experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// `[[socket]]`s and `[[step]]`s.
    Script(Script),
    /// An `[experiment]` table.
    Experiment(ExperimentFile),
}

impl Scenario {
    /// The file it came from.
    pub fn file(&self) -> &Path {
        match self {
            Scenario::Script(s) => &s.file,
            Scenario::Experiment(x) => &x.file,
        }
    }

    /// What it shows.
    pub fn description(&self) -> Option<&str> {
        match self {
            Scenario::Script(s) => s.description.as_deref(),
            Scenario::Experiment(x) => x.description.as_deref(),
        }
    }
}

/// A loaded scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Script {
    /// The file it came from.
    pub file: PathBuf,
    /// What it shows.
    pub description: Option<String>,
    /// `min_kernel = "6.9"`: the oldest kernel its expectations are for
    /// (a kernel selftest's release). On an older kernel `twlab run`
    /// reports its disagreements as that kernel's difference, apart.
    pub min_kernel: Option<crate::model::kernel::KernelVersion>,
    /// Sysctls of its namespace, name → value.
    pub sysctls: Vec<(String, String)>,
    /// The sockets, with their parsed addresses.
    pub sockets: Vec<(SocketSpec, SocketAddr)>,
    /// The steps, with their line in the file.
    pub steps: Vec<(usize, StepSpec)>,
}

impl SocketSpec {
    /// The socket options it asks for.
    pub fn opts(&self) -> SocketOpts {
        SocketOpts {
            reuseaddr: self.reuseaddr,
            reuseport: self.reuseport,
            linger: self.linger,
            bind_no_port: self.bind_address_no_port,
            v6only: self.v6only,
        }
    }
}

/// A TCP state by any of its names ("TIME-WAIT", "TIME_WAIT", "time-wait"):
/// [`TcpState`](crate::diag::TcpState)'s `FromStr`.
pub fn parse_state(s: &str) -> Option<crate::diag::TcpState> {
    s.parse().ok()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The `sysctls` table as name → value strings (`1` and `"1"` alike).
fn sysctl_pairs(t: &BTreeMap<String, toml::Value>) -> Vec<(String, String)> {
    t.iter()
        .map(|(k, v)| {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// The rest of [`parse`] for a file with an `[experiment]` table: no
/// sockets or steps beside it, a well-formed `[expect]`.
fn parse_experiment(file: &Path, text: &str, raw: Raw) -> Result<ExperimentFile, LoadError> {
    let err = |line: usize, what: String| LoadError {
        file: file.to_path_buf(),
        line,
        what,
        unreadable: false,
    };
    let Some(x) = raw.experiment else {
        return Err(err(1, "no [experiment] table".into()));
    };
    let line = line_of(text, x.span().start);
    let stray = (raw.socket.first().map(|s| ("[[socket]]", s.span())))
        .or_else(|| raw.step.first().map(|s| ("[[step]]", s.span())));
    if let Some((what, span)) = stray {
        return Err(err(
            line_of(text, span.start),
            format!(
                "{what} beside [experiment] (line {line}): a file is either a script or an experiment"
            ),
        ));
    }
    let limit = |what: &str, d: std::time::Duration| {
        if d > MAX_EXPERIMENT_WAIT {
            Err(err(
                line,
                format!(
                    "{what} of {} ms: an experiment waits at most {} ms",
                    d.as_millis(),
                    MAX_EXPERIMENT_WAIT.as_millis()
                ),
            ))
        } else {
            Ok(())
        }
    };
    if let crate::experiment::When::AfterMs(ms) = x.get_ref().when {
        limit("when = after-ms", std::time::Duration::from_millis(ms))?;
    }
    if let Some(d) = x.get_ref().until_free {
        limit("until_free", d)?;
    }
    let expect = match raw.expect {
        Some(e) => {
            let line = line_of(text, e.span().start);
            let e = e.into_inner();
            e.check().map_err(|what| err(line, what))?;
            Some(e)
        }
        None => None,
    };
    Ok(ExperimentFile {
        file: file.to_path_buf(),
        description: raw.description,
        sysctls: sysctl_pairs(&raw.sysctls),
        experiment: x.into_inner(),
        expect,
    })
}

/// Parse a scenario from `text` (`file` only names it in errors).
pub fn parse(file: &Path, text: &str) -> Result<Scenario, LoadError> {
    let err = |line: usize, what: String| LoadError {
        file: file.to_path_buf(),
        line,
        what,
        unreadable: false,
    };
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        err(line, e.message().replace('\n', " ").trim().to_string())
    })?;
    let min_kernel = match &raw.min_kernel {
        Some(m) => Some(
            crate::model::kernel::KernelVersion::parse(m.get_ref()).ok_or_else(|| {
                err(
                    line_of(text, m.span().start),
                    format!(
                        "min_kernel = {:?}: not a kernel version (like \"6.9\")",
                        m.get_ref()
                    ),
                )
            })?,
        ),
        None => None,
    };
    if raw.experiment.is_some() {
        if let Some(m) = &raw.min_kernel {
            return Err(err(
                line_of(text, m.span().start),
                "min_kernel is for scripts ([[socket]], [[step]]), not experiment files".into(),
            ));
        }
        return parse_experiment(file, text, raw).map(Scenario::Experiment);
    }
    let sysctls = sysctl_pairs(&raw.sysctls);
    if let Some(e) = &raw.expect {
        return Err(err(
            line_of(text, e.span().start),
            "[expect] without [experiment]: a script's steps say `expect = ...` each".into(),
        ));
    }
    if let Some(s) = raw.socket.get(MAX_SOCKETS) {
        return Err(err(
            line_of(text, s.span().start),
            format!(
                "{} sockets: a script has at most {MAX_SOCKETS}",
                raw.socket.len()
            ),
        ));
    }
    if let Some(t) = raw.step.get(MAX_STEPS) {
        return Err(err(
            line_of(text, t.span().start),
            format!("{} steps: a script has at most {MAX_STEPS}", raw.step.len()),
        ));
    }
    let mut sockets: Vec<(SocketSpec, SocketAddr)> = Vec::new();
    for s in &raw.socket {
        let line = line_of(text, s.span().start);
        let spec = s.get_ref().clone();
        if sockets.iter().any(|(o, _)| o.name == spec.name) {
            return Err(err(
                line,
                format!("socket '{}' is defined twice", spec.name),
            ));
        }
        let addr = parse_endpoint(&spec.address)
            .map_err(|e| err(line, format!("socket '{}': {e}", spec.name)))?;
        if let Some(from) = &spec.port_from {
            if addr.port() != 0 {
                return Err(err(
                    line,
                    format!(
                        "socket '{}': port_from = '{from}' takes that socket's port; the address says port {}, not 0",
                        spec.name,
                        addr.port()
                    ),
                ));
            }
            if *from == spec.name || !raw.socket.iter().any(|s| s.get_ref().name == *from) {
                return Err(err(
                    line,
                    format!(
                        "socket '{}': port_from names no other socket of the file: '{from}'",
                        spec.name
                    ),
                ));
            }
        }
        sockets.push((spec, addr));
    }
    let mut names: Vec<String> = sockets.iter().map(|(s, _)| s.name.clone()).collect();
    let mut steps = Vec::new();
    // Sleeps and wait-for-state timeouts so far, in ms.
    let mut waits: u64 = 0;
    for t in &raw.step {
        let line = line_of(text, t.span().start);
        let step: StepSpec = toml::Value::Table(t.get_ref().clone())
            .try_into()
            .map_err(|e: toml::de::Error| err(line, format!("step: {}", e.message().trim())))?;
        if let Some(name) = step.action.socket()
            && !names.iter().any(|n| n == name)
        {
            return Err(err(line, format!("step uses an unknown socket '{name}'")));
        }
        let wait = match &step.action {
            Action::Sleep { ms } => Some(*ms),
            Action::WaitForState { timeout_ms, .. } => Some(timeout_ms.unwrap_or(2000)),
            _ => None,
        };
        if let Some(ms) = wait {
            if ms > MAX_STEP_WAIT_MS {
                return Err(err(
                    line,
                    format!(
                        "{}: {ms} ms; a step waits at most {MAX_STEP_WAIT_MS} ms",
                        step.action.verb()
                    ),
                ));
            }
            waits += ms;
            if waits > MAX_TOTAL_WAIT_MS {
                return Err(err(
                    line,
                    format!(
                        "the sleeps and wait-for-state timeouts add up to more than {MAX_TOTAL_WAIT_MS} ms by this step (the most a script may wait)"
                    ),
                ));
            }
        }
        match &step.action {
            Action::Accept { name, .. } => {
                if names.len() >= MAX_SOCKETS {
                    return Err(err(
                        line,
                        format!(
                            "accept makes socket number {}: a script has at most {MAX_SOCKETS} sockets, accepted ones included",
                            names.len() + 1
                        ),
                    ));
                }
                names.push(name.clone())
            }
            Action::Connect { to, .. } => {
                parse_endpoint(to).map_err(|e| err(line, format!("connect: {e}")))?;
            }
            Action::WaitForState { state, .. } if parse_state(state).is_none() => {
                return Err(err(line, format!("unknown TCP state '{state}'")));
            }
            _ => {}
        }
        steps.push((line, step));
    }
    Ok(Scenario::Script(Script {
        file: file.to_path_buf(),
        description: raw.description,
        min_kernel,
        sysctls,
        sockets,
        steps,
    }))
}

/// Read and parse a scenario file: a regular file of at most
/// [`MAX_FILE_BYTES`] of UTF-8 text.
pub fn load(file: &Path) -> Result<Scenario, LoadError> {
    let text = read_text(file, MAX_FILE_BYTES).map_err(|(what, unreadable)| LoadError {
        file: file.to_path_buf(),
        line: 1,
        what,
        unreadable,
    })?;
    parse(file, &text)
}

/// The text of `file`, refused unless it is a regular file of at most
/// `max` bytes of UTF-8. Err: what is wrong, and whether the system could
/// not read it (else the file is not what twlab takes).
///
/// A FIFO, a device or a directory never reaches read(): the file is
/// opened with O_NONBLOCK, because a FIFO's open() for reading otherwise
/// waits for a writer (fifo_open() in fs/pipe.c) and no signal ends that
/// wait here, then fstat()ed. `/dev/zero` would be read forever, a FIFO
/// or a terminal block; the size check and the capped read end a file
/// that grows while it is read.
fn read_text(file: &Path, max: u64) -> Result<String, (String, bool)> {
    use std::io::Read;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts
        .open(file)
        .map_err(|e| (format!("cannot read: {e}"), true))?;
    let meta = f
        .metadata()
        .map_err(|e| (format!("cannot read: {e}"), true))?;
    if !meta.is_file() {
        return Err((
            format!(
                "not a regular file ({}): scenarios are read from regular files (save a pipe's output to one first)",
                kind_of(&meta.file_type())
            ),
            false,
        ));
    }
    let too_big = || {
        let size = if max.is_multiple_of(1 << 20) {
            format!("{} MiB", max >> 20)
        } else {
            format!("{max} bytes")
        };
        format!("larger than {size}, the most a scenario file may have")
    };
    if meta.len() > max {
        return Err((too_big(), false));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| (format!("cannot read: {e}"), true))?;
    if bytes.len() as u64 > max {
        return Err((too_big(), false));
    }
    String::from_utf8(bytes).map_err(|e| {
        (
            format!(
                "not UTF-8 text (an invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            false,
        )
    })
}

/// What a file that is not a regular file is, in words.
fn kind_of(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// `v` as an inline TOML value (`"…"`, `{ fixed = 23456 }`).
fn inline(v: toml::Value) -> String {
    v.to_string()
}

/// `v`'s fields as a TOML table. Plain data of strings, integers,
/// booleans and tables is always representable in TOML.
fn table<T: Serialize>(v: &T) -> toml::Table {
    match toml::Value::try_from(v) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

/// A socket-options table without the options that are off (the default
/// when reading a file back); `None` when nothing is left.
fn set_options(v: toml::Value) -> Option<toml::Value> {
    let toml::Value::Table(t) = v else {
        return Some(v);
    };
    let t: toml::Table = t
        .into_iter()
        .filter(|(k, v)| {
            !(matches!(v, toml::Value::Boolean(false))
                || (k == "v6only" && v.as_str() == Some("system")))
        })
        .collect();
    (!t.is_empty()).then_some(toml::Value::Table(t))
}

/// `x` written as an experiment file that [`parse`] reads back into the same
/// [`Experiment`] (`twlab matrix --emit-cell`): one line per field, socket
/// options that are off left out.
pub fn experiment_toml(
    description: &str,
    sysctls: &[(String, String)],
    x: &Experiment,
    expect: Option<&Expect>,
) -> String {
    let quoted = |s: &str| inline(toml::Value::String(s.into()));
    let mut out = format!("description = {}\n", quoted(description));
    if !sysctls.is_empty() {
        out.push_str("\n[sysctls]\n");
        for (k, v) in sysctls {
            out.push_str(&format!("{} = {}\n", quoted(k), quoted(v)));
        }
    }
    out.push_str("\n[experiment]\n");
    for (k, v) in table(x) {
        let v = match k.as_str() {
            "listener" | "client" | "new_opts" => set_options(v),
            _ => Some(v),
        };
        if let Some(v) = v {
            out.push_str(&format!("{k} = {}\n", inline(v)));
        }
    }
    if let Some(e) = expect {
        out.push_str("\n[expect]\n");
        for (k, v) in table(e) {
            out.push_str(&format!("{k} = {}\n", inline(v)));
        }
    }
    out
}

/// A script written as a file that [`parse`] reads back into the same
/// sockets and steps (`twlab selfcheck` writes each disagreement so, for
/// `twlab run`): socket options that are off left out, one `[[socket]]`
/// and one `[[step]]` table each, in order. `comments` go on top, one
/// `#` line each.
pub fn script_toml(
    comments: &[String],
    description: &str,
    sysctls: &[(String, String)],
    sockets: &[SocketSpec],
    steps: &[StepSpec],
) -> String {
    let quoted = |s: &str| inline(toml::Value::String(s.into()));
    let mut out = String::new();
    for c in comments {
        for line in c.lines() {
            out.push_str(&format!("# {line}\n"));
        }
    }
    out.push_str(&format!("description = {}\n", quoted(description)));
    if !sysctls.is_empty() {
        out.push_str("\n[sysctls]\n");
        for (k, v) in sysctls {
            out.push_str(&format!("{} = {}\n", quoted(k), quoted(v)));
        }
    }
    for s in sockets {
        out.push_str("\n[[socket]]\n");
        // name and address first, as a person writes them.
        out.push_str(&format!(
            "name = {}\naddress = {}\n",
            quoted(&s.name),
            quoted(&s.address)
        ));
        let rest = set_options(toml::Value::Table(table(s)));
        if let Some(toml::Value::Table(t)) = rest {
            for (k, v) in t.into_iter().filter(|(k, _)| k != "name" && k != "address") {
                out.push_str(&format!("{k} = {}\n", inline(v)));
            }
        }
    }
    for st in steps {
        out.push_str("\n[[step]]\n");
        let mut t = table(st);
        if let Some(v) = t.remove("do") {
            out.push_str(&format!("do = {}\n", inline(v)));
        }
        for (k, v) in t {
            out.push_str(&format!("{k} = {}\n", inline(v)));
        }
    }
    out
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
