//! Two sockets on one port on Windows and BSD/macOS: what their
//! documentation and source say the second bind() does, for the same cells
//! as the Linux family. Not run here: every answer is labelled
//! "documented, not run".
//!
//! Sources:
//! - Windows: Microsoft Learn, "Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE"
//!   (learn.microsoft.com/windows/win32/winsock/using-so-reuseaddr-and-so-exclusiveaddruse):
//!   SO_REUSEADDR on the second socket lets it bind a port in use, even by a
//!   listener ("port stealing"); SO_EXCLUSIVEADDRUSE on the first forbids
//!   it; since Windows Server 2003 the *first* socket must have set
//!   SO_REUSEADDR too unless both are the same user (Anthony Jones, "Changes
//!   in Socket Bind", Windows networking blog, 2005). The same blog: a
//!   specific address beside a wildcard needs no option at all (same user).
//!   "IPPROTO_IPV6 socket options": IPV6_V6ONLY is on by default. No
//!   SO_REUSEPORT (setsockopt fails, WSAENOPROTOOPT).
//! - FreeBSD: `in_pcbbind_setup()` (sys/netinet/in_pcb.c) and
//!   `in6_pcbbind()`: a specific address beside a wildcard needs
//!   SO_REUSEADDR on the new socket; the same address twice needs
//!   SO_REUSEPORT on both (or a TIME_WAIT holder and SO_REUSEADDR);
//!   `net.inet6.ip6.v6only` = 1 by default (V6ONLY). listen() does not
//!   check the port again.
//! - macOS (XNU, same BSD code): `net.inet6.ip6.v6only` = 0 (dual-stack)
//!   by default; SO_REUSEPORT allows duplicates but does not balance load:
//!   field reports say the last socket bound gets the connections
//!   (FreeBSD 12+ balances only with SO_REUSEPORT_LB).
//!
//! Where they disagree: the Learn page describes the second socket's
//! SO_REUSEADDR as enough to steal a port, the 2005 blog says the first must
//! have opted in since Server 2003 (the Learn page's tables agree with the
//! blog); the uid rules of FreeBSD (`priv_check_cred(.., PRIV_NETINET_REUSEPORT)`)
//! exempt root, which is how the Linux family runs, so they are not modelled.

use super::kernel::addr::Claims;
use super::pairs::{FirstState, PairAddr, PairCase, PairSocket, claims, overlap};
use crate::outcome::{StepResult, SysError, WsaName};
use serde::{Deserialize, Serialize};

/// What another system would do with the second bind().
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DocumentedPair {
    /// "ok", "WSAEADDRINUSE", "EADDRINUSE", "WSAENOPROTOOPT". In JSON as
    /// every call's outcome is (docs/json.md): `{"result": "ok"}` or
    /// `{"result": "failed", "error": ERRNO}`, the errno object with the
    /// number that system uses ([`documented_error`]).
    #[serde(serialize_with = "documented_call")]
    #[schemars(with = "crate::outcome::StepResult")]
    pub second_bind: String,
    /// Why, in one sentence.
    pub explanation: String,
    /// Always "documented, not run".
    pub label: String,
}

fn documented_call<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    let r = match v {
        "ok" => StepResult::Ok,
        name => StepResult::Err {
            error: documented_error(name),
        },
    };
    r.serialize(s)
}

/// The errno object of an error another system documents, by its name
/// there: a Winsock name has its Winsock number; a BSD/macOS name the BSD
/// number, which is the Winsock twin's minus 10000 (winsock2.h defines
/// WSAE* as 10000 + the BSD errno), with that twin. A name twlab has no
/// number for keeps code 0 (a unit test holds the documented ones).
pub fn documented_error(name: &str) -> SysError {
    use crate::sys::wsa::{WSA_ERRORS, wsa_equivalent};
    if let Some((code, _)) = WSA_ERRORS.iter().find(|(_, n)| *n == name) {
        return SysError {
            name: name.to_string(),
            code: *code,
            wsa: None,
        };
    }
    match wsa_equivalent(name) {
        Some((code, wsa)) => SysError {
            name: name.to_string(),
            code: code - 10000,
            wsa: Some(WsaName {
                name: wsa.to_string(),
                code,
            }),
        },
        None => SysError {
            name: name.to_string(),
            code: 0,
            wsa: None,
        },
    }
}

fn doc(second_bind: &str, explanation: impl Into<String>) -> DocumentedPair {
    DocumentedPair {
        second_bind: second_bind.into(),
        explanation: explanation.into(),
        label: "documented, not run".into(),
    }
}

/// The claims of a socket where IPv6 sockets are V6ONLY unless told Off
/// (`system_v6only` is the platform's default).
fn claims_on(s: &PairSocket, system_v6only: bool) -> Claims {
    let v6only = match s.addr {
        PairAddr::V6Any | PairAddr::V4Mapped => s.v6only.resolve(system_v6only),
        PairAddr::V6Loopback => true,
        _ => false,
    };
    claims(s.addr, v6only)
}

fn is_wildcard(a: PairAddr) -> bool {
    matches!(a, PairAddr::V4Any | PairAddr::V6Any)
}

/// The first socket's address once connected (the wildcard narrows).
fn first_addr(c: &PairCase) -> PairAddr {
    match (c.state, c.first.addr) {
        (FirstState::Connected | FirstState::TimeWait, PairAddr::V4Any) => PairAddr::V4Loopback,
        (FirstState::Connected | FirstState::TimeWait, PairAddr::V6Any) => PairAddr::V6Loopback,
        (_, a) => a,
    }
}

/// Windows: IPv6 sockets V6ONLY by default; no SO_REUSEPORT.
pub fn predict_pair_windows(c: &PairCase) -> DocumentedPair {
    if c.first.reuseport || c.second.reuseport {
        return doc(
            "WSAENOPROTOOPT",
            "Windows has no SO_REUSEPORT: setsockopt fails before bind()",
        );
    }
    let mut first = c.first;
    first.addr = first_addr(c);
    if !overlap(claims_on(&c.second, true), claims_on(&first, true)) {
        return doc(
            "ok",
            "the addresses do not overlap (IPv6 sockets are V6ONLY by default on Windows)",
        );
    }
    if is_wildcard(first.addr) && !is_wildcard(c.second.addr) && c.second.uid == c.first.uid {
        return doc(
            "ok",
            "a specific address beside a wildcard binds without options for the same user (\"Changes in Socket Bind\", 2005)",
        );
    }
    match (c.first.reuseaddr, c.second.reuseaddr) {
        (_, true) if c.first.reuseaddr || c.second.uid == c.first.uid => doc(
            "ok",
            "SO_REUSEADDR on the second socket lets it bind a port in use, even a listener's (port stealing); SO_EXCLUSIVEADDRUSE on the first would forbid it",
        ),
        (false, true) => doc(
            "WSAEADDRINUSE",
            "since Windows Server 2003 another user's second socket needs SO_REUSEADDR on the first too",
        ),
        _ => doc(
            "WSAEADDRINUSE",
            "the port is in use and the second socket has no SO_REUSEADDR",
        ),
    }
}

/// FreeBSD `in_pcbbind_setup()`; macOS differs in the IPv6 default.
pub fn predict_pair_bsd(c: &PairCase) -> DocumentedPair {
    let mut first = c.first;
    first.addr = first_addr(c);
    let v6note = if [c.first.addr, c.second.addr].contains(&PairAddr::V6Any) {
        " (FreeBSD's default net.inet6.ip6.v6only = 1; on macOS, dual-stack by default, `::` overlaps IPv4 as on Linux)"
    } else {
        ""
    };
    if !overlap(claims_on(&c.second, true), claims_on(&first, true)) {
        return doc("ok", format!("the addresses do not overlap{v6note}"));
    }
    let same_addr = claims_on(&c.second, true) == claims_on(&first, true);
    let ok = if same_addr {
        (c.first.reuseport && c.second.reuseport)
            || (c.state == FirstState::TimeWait && c.second.reuseaddr)
    } else {
        c.second.reuseaddr || c.second.reuseport
    };
    let why = if same_addr {
        "the same address twice needs SO_REUSEPORT on both, or a TIME_WAIT holder and SO_REUSEADDR (in_pcbbind_setup()); macOS does not balance load between SO_REUSEPORT listeners"
    } else {
        "a specific address beside a wildcard needs SO_REUSEADDR (or SO_REUSEPORT) on the new socket, even next to a listener (in_pcbbind_setup())"
    };
    doc(
        if ok { "ok" } else { "EADDRINUSE" },
        format!("{why}{v6note}"),
    )
}
