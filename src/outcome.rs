//! What happened at one step of an experiment: which syscall, and its result.
//!
//! Which syscall failed matters: EADDRINUSE at `bind()` comes from the bind
//! bucket rules (`inet_csk_get_port`), EADDRNOTAVAIL at `connect()` from the
//! established-hash check (`__inet_check_established`). So a result is always
//! kept together with its step.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One socket call of an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// socket().
    Socket,
    /// setsockopt().
    SetOpt,
    /// bind().
    Bind,
    /// listen().
    Listen,
    /// connect().
    Connect,
    /// accept().
    Accept,
    /// recv() until EOF.
    Recv,
    /// send() (the traces' scripted data).
    Send,
    /// close().
    Close,
}

impl Step {
    /// The syscall's name, as reports print it.
    pub fn name(self) -> &'static str {
        match self {
            Step::Socket => "socket",
            Step::SetOpt => "setsockopt",
            Step::Bind => "bind",
            Step::Listen => "listen",
            Step::Connect => "connect",
            Step::Accept => "accept",
            Step::Recv => "recv",
            Step::Send => "send",
            Step::Close => "close",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An OS error with its symbolic name, e.g. `EADDRNOTAVAIL (99)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SysError {
    /// Symbolic name as the OS spells it: `EADDRINUSE` on POSIX,
    /// `WSAEADDRINUSE` on Windows.
    pub name: String,
    /// The raw OS error number.
    pub code: i32,
    /// The Winsock name and number of the same condition, so that a reader
    /// coming from the Windows story can match them (`WSAEADDRINUSE 10048`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wsa: Option<WsaName>,
}

/// The Winsock name and code of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WsaName {
    /// E.g. `WSAEADDRINUSE`.
    pub name: String,
    /// E.g. 10048.
    pub code: i32,
}

impl SysError {
    /// Build from a raw OS error number.
    pub fn from_code(code: i32) -> Self {
        let name = crate::sys::errno_name(code);
        let wsa = if name.starts_with("WSA") {
            None
        } else {
            crate::sys::wsa::wsa_equivalent(&name).map(|(c, n)| WsaName {
                name: n.to_string(),
                code: c,
            })
        };
        SysError { name, code, wsa }
    }

    /// An error a Linux kernel gives, by Linux's number (see
    /// `crate::sys::linux_errno`), named the same on every host: the rule
    /// model's predictions are Linux's whatever system twlab runs on.
    pub fn linux(code: i32) -> Self {
        let name = crate::sys::linux_errno::name(code);
        let wsa = crate::sys::wsa::wsa_equivalent(&name).map(|(c, n)| WsaName {
            name: n.to_string(),
            code: c,
        });
        SysError { name, code, wsa }
    }

    /// Build from an `io::Error`; errors without an OS code (rare: a
    /// timeout twlab imposed itself) get code 0 and the kind as name.
    pub fn from_io(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) => Self::from_code(code),
            None if e.kind() == std::io::ErrorKind::TimedOut => SysError {
                name: "ETIMEDOUT".into(),
                code: 0,
                wsa: None,
            },
            None => SysError {
                name: format!("{:?}", e.kind()),
                code: 0,
                wsa: None,
            },
        }
    }

    /// True for the error `name` (e.g. "EADDRINUSE").
    pub fn is(&self, name: &str) -> bool {
        self.name == name || self.name == format!("WSA{name}")
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.code)
    }
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum StepResult {
    /// The call succeeded.
    Ok,
    /// The call failed: `"result": "failed"`, the one spelling of a failed
    /// call in every command (docs/json.md; `"err"` is still read).
    #[serde(rename = "failed", alias = "err")]
    Err {
        /// With this error.
        error: SysError,
    },
}

impl StepResult {
    /// The result of an `io::Result`.
    pub fn from_io<T>(r: &std::io::Result<T>) -> Self {
        match r {
            Ok(_) => StepResult::Ok,
            Err(e) => StepResult::Err {
                error: SysError::from_io(e),
            },
        }
    }
    /// True if the call succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, StepResult::Ok)
    }
    /// The error, if the call failed.
    pub fn error(&self) -> Option<&SysError> {
        match self {
            StepResult::Ok => None,
            StepResult::Err { error } => Some(error),
        }
    }
}

/// What an attempt came to: the first step that failed, or success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// Every step succeeded.
    Ok,
    /// `step` failed with `error`; later steps were not attempted.
    Failed {
        /// The step that failed.
        step: Step,
        /// Its error.
        error: SysError,
    },
}

impl Outcome {
    /// True if every step succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }
    /// "ok" or "connect: EADDRNOTAVAIL".
    pub fn short(&self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Failed { step, error } => format!("{step}: {}", error.name),
        }
    }
    /// The step that failed, if one did.
    pub fn failed_step(&self) -> Option<Step> {
        match self {
            Outcome::Ok => None,
            Outcome::Failed { step, .. } => Some(*step),
        }
    }
    /// The error of the step that failed, if one did.
    pub fn error(&self) -> Option<&SysError> {
        match self {
            Outcome::Ok => None,
            Outcome::Failed { error, .. } => Some(error),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Failed { step, error } => write!(f, "{step}() failed: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn names_posix_errors_with_their_wsa_twin() {
        let e = SysError::from_code(libc::EADDRINUSE);
        assert_eq!(e.name, "EADDRINUSE");
        assert_eq!(e.code, libc::EADDRINUSE);
        let wsa = e.wsa.expect("EADDRINUSE has a Winsock twin");
        assert_eq!((wsa.name.as_str(), wsa.code), ("WSAEADDRINUSE", 10048));

        let e = SysError::from_code(libc::EADDRNOTAVAIL);
        assert_eq!(e.name, "EADDRNOTAVAIL");
        assert_eq!(e.wsa.as_ref().unwrap().code, 10049);
        assert!(e.is("EADDRNOTAVAIL"));
        assert!(!e.is("EADDRINUSE"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_numbers() {
        // Linux's own numbering (asm-generic/errno.h), not BSD's.
        assert_eq!(SysError::from_code(98).name, "EADDRINUSE");
        assert_eq!(SysError::from_code(99).name, "EADDRNOTAVAIL");
        assert_eq!(SysError::from_code(111).name, "ECONNREFUSED");
        assert_eq!(SysError::from_code(99).to_string(), "EADDRNOTAVAIL (99)");
        assert_eq!(SysError::from_code(100_000).name, "E100000");
    }

    #[test]
    fn outcome_short_form() {
        let o = Outcome::Failed {
            step: Step::Connect,
            error: SysError {
                name: "EADDRNOTAVAIL".into(),
                code: 99,
                wsa: None,
            },
        };
        assert_eq!(o.short(), "connect: EADDRNOTAVAIL");
        assert_eq!(o.to_string(), "connect() failed: EADDRNOTAVAIL (99)");
        assert_eq!(Outcome::Ok.short(), "ok");
    }
}

/// How a command that ran to its end came out. Commands return it and the
/// command line maps it to the documented exit code in one place (errors
/// are the `Err` beside it: 1, or 2 for bad input; a stop signal is
/// 128 + its number whatever the command returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// It ran as asked, and every check it made held (exit 0).
    Done,
    /// It ran through, but some of its parts could not run or be kept (a
    /// matrix cell that failed to run, a selfcheck disagreement whose
    /// scenario file could not be written) (exit 1).
    Incomplete,
    /// A rule model disagreed with the kernel, or a scenario file's
    /// expectation was not met (exit 3).
    Disagreed,
    /// What the run watched for failed: a `client` loop that never got
    /// through, a `why` whose predicted failure came, `load
    /// --fail-on-error` that met an error (exit 4).
    Failed,
}

impl Exit {
    /// [`Exit::Disagreed`] if `disagreed`, else [`Exit::Done`].
    pub fn disagreed_if(disagreed: bool) -> Self {
        if disagreed {
            Exit::Disagreed
        } else {
            Exit::Done
        }
    }

    /// The documented exit code (docs/commands.md, "exit codes").
    pub fn exit_code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Incomplete => 1,
            Exit::Disagreed => 3,
            Exit::Failed => 4,
        }
    }
}
