//! Two live sockets on one port: the Linux rules for a second socket's
//! bind() and listen() next to a first one, over plain data ([`PairCase`]).
//!
//! Read from the kernel source (6.x, checked on 6.18):
//! - Who overlaps whom. A wildcard socket (`::`, `0.0.0.0`) is checked
//!   against every owner of the port by `inet_csk_bind_conflict()` with
//!   `inet_rcv_saddr_equal(sk, sk2, true)`; a specific one only against the
//!   owners of its own address (`inet_bhash2_conflict()`) and the wildcard
//!   owners (`inet_bhash2_addr_any_conflict()` →
//!   `inet_bind2_bucket_match_addr_any()`). `ipv6_only_sock()` keeps a
//!   V6ONLY `::` out of the IPv4 space (`__inet_bhash2_conflict()`,
//!   `ipv6_rcv_saddr_equal()`), and `::ffff:a.b.c.d` is IPv4 for all of it.
//!   Both paths come to one relation: each socket claims part of the IPv4
//!   and of the IPv6 address space (`claims`) and two sockets overlap when
//!   a claim meets.
//! - Whether overlapping sockets may share: `inet_bind_conflict()` with
//!   relax = true and reuseport_ok = true: both SO_REUSEADDR and the other
//!   not TCP_LISTEN; or both SO_REUSEPORT and the other TIME_WAIT or of
//!   the same uid (`sk_uid()`, the fsuid at socket(), `sock_alloc()`). The
//!   fast paths of `inet_csk_get_port()` (`tb->fastreuse`,
//!   `sk_reuseport_match()`) only skip the check where it would pass.
//! - listen() checks again: `inet_csk_listen_start()` sets TCP_LISTEN and
//!   calls `inet_csk_get_port()`; the check looks at the *other* socket's
//!   state, so of two bound SO_REUSEADDR sockets the first to listen wins
//!   and the other's listen() fails with EADDRINUSE.
//! - `__inet6_bind()`: a v4-mapped address on a V6ONLY socket is EINVAL; a
//!   specific IPv6 address makes the socket V6ONLY; a socket on a specific
//!   IPv6 address keeps `inet_rcv_saddr = LOOPBACK4_IPV6` (127.0.0.6), which
//!   only an IPv4 wildcard's `ipv4_rcv_saddr_equal()` sees, when the socket
//!   is not V6ONLY (a dual-stack `::` that connected, `tcp_v6_connect()`).
//! - connect() narrows a wildcard to the source address
//!   (`inet_bhash2_update_saddr()`), and TIME_WAIT keeps it
//!   (`inet_twsk_alloc()`: `tw_ipv6only`, `tw_rcv_saddr`, `tw_reuse`,
//!   `tw_reuseport`).

use super::RuleId;
use super::kernel::{
    self,
    addr::Claims,
    bind::{Check, HolderKind, NewSocket, PortHolder, Refusal, Share},
};
use crate::outcome::SysError;
use crate::socket::{Family, SocketOpts, V6Only, v6only_word};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where a socket binds, as the pair rules tell addresses apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PairAddr {
    /// `0.0.0.0`.
    V4Any,
    /// `127.0.0.1`.
    V4Loopback,
    /// `::`.
    V6Any,
    /// `::1`.
    V6Loopback,
    /// `::ffff:127.0.0.1` (an IPv4 address on an IPv6 socket).
    V4Mapped,
}

impl PairAddr {
    /// Every address, in table order.
    pub const ALL: [PairAddr; 5] = [
        PairAddr::V4Any,
        PairAddr::V4Loopback,
        PairAddr::V6Any,
        PairAddr::V6Loopback,
        PairAddr::V4Mapped,
    ];

    /// The IP address.
    pub fn ip(self) -> IpAddr {
        match self {
            PairAddr::V4Any => Ipv4Addr::UNSPECIFIED.into(),
            PairAddr::V4Loopback => Ipv4Addr::LOCALHOST.into(),
            PairAddr::V6Any => Ipv6Addr::UNSPECIFIED.into(),
            PairAddr::V6Loopback => Ipv6Addr::LOCALHOST.into(),
            PairAddr::V4Mapped => Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
        }
    }

    /// The socket's family (a v4-mapped address is on an IPv6 socket).
    pub fn family(self) -> Family {
        match self {
            PairAddr::V4Any | PairAddr::V4Loopback => Family::V4,
            _ => Family::V6,
        }
    }

    /// The address of `ip`, if the pair rules know it.
    pub fn of(ip: IpAddr) -> Option<PairAddr> {
        PairAddr::ALL.into_iter().find(|a| a.ip() == ip)
    }

    /// Where a connected socket bound here ends up: connect() to loopback
    /// narrows a wildcard to the loopback address of its family.
    fn after_connect(self) -> PairAddr {
        match self {
            PairAddr::V4Any => PairAddr::V4Loopback,
            PairAddr::V6Any => PairAddr::V6Loopback,
            a => a,
        }
    }
}

impl fmt::Display for PairAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.ip())
    }
}

/// Whose socket it is, as the SO_REUSEPORT uid check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Uid {
    /// The same effective uid as the other socket.
    Same,
    /// Another uid (the experiment runs as root and changes its fsuid).
    Other,
}

/// One socket of a pair: its address and the options that decide sharing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PairSocket {
    /// The address it binds (the port is the pair's).
    pub addr: PairAddr,
    /// IPV6_V6ONLY (IPv6 sockets only).
    pub v6only: V6Only,
    /// SO_REUSEADDR.
    pub reuseaddr: bool,
    /// SO_REUSEPORT.
    pub reuseport: bool,
    /// Its owner relative to the first socket's.
    pub uid: Uid,
}

impl PairSocket {
    /// The socket options to create it with.
    pub fn opts(&self) -> SocketOpts {
        SocketOpts {
            reuseaddr: self.reuseaddr,
            reuseport: self.reuseport,
            v6only: if self.addr.family() == Family::V6 {
                self.v6only
            } else {
                V6Only::System
            },
            ..Default::default()
        }
    }

    /// IPV6_V6ONLY as the kernel holds it after bind(): the choice (or the
    /// sysctl), forced on by a specific IPv6 address (`__inet6_bind()`).
    pub fn v6only_after_bind(&self, bindv6only: bool) -> bool {
        match self.addr {
            PairAddr::V4Any | PairAddr::V4Loopback => false,
            PairAddr::V6Loopback => true,
            PairAddr::V6Any | PairAddr::V4Mapped => self.v6only.resolve(bindv6only),
        }
    }

    /// `"[::] dual-stack REUSEADDR"`, `"127.0.0.1 none"`. A `[::]` left to
    /// the system default is labelled as such, with what the default means
    /// here and on the documented systems (`"[::] default=dual-stack
    /// (v6-only on Windows/FreeBSD) none"`): Windows and FreeBSD make IPv6
    /// sockets V6ONLY, so it is not the same row as an explicit `off`.
    pub fn label(&self, bindv6only: bool) -> String {
        let mut o = self.opts();
        o.v6only = V6Only::System;
        let mut s = self.addr.to_string();
        if self.addr == PairAddr::V6Any {
            s.push(' ');
            let word = v6only_word(self.v6only_after_bind(bindv6only));
            if self.v6only == V6Only::System {
                s.push_str("default=");
                s.push_str(word);
                s.push_str(" (v6-only on Windows/FreeBSD)");
            } else {
                s.push_str(word);
            }
        }
        s.push(' ');
        s.push_str(&o.label());
        if self.uid == Uid::Other {
            s.push_str(" other-uid");
        }
        s
    }
}

/// What the first socket is doing when the second one binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FirstState {
    /// bind() only; it calls listen() after the second socket is done.
    Bound,
    /// Listening.
    Listening,
    /// Connected from its bound address to a listener on another port.
    Connected,
    /// Closed first after connecting: TIME_WAIT.
    TimeWait,
}

impl FirstState {
    /// Every state, in table order.
    pub const ALL: [FirstState; 4] = [
        FirstState::Bound,
        FirstState::Listening,
        FirstState::Connected,
        FirstState::TimeWait,
    ];

    /// "bound", "listening", "connected", "time-wait".
    pub fn name(self) -> &'static str {
        match self {
            FirstState::Bound => "bound",
            FirstState::Listening => "listening",
            FirstState::Connected => "connected",
            FirstState::TimeWait => "time-wait",
        }
    }
}

/// One cell of the family: two sockets, the first one's state, and the
/// namespace's `net.ipv6.bindv6only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PairCase {
    /// The socket that was there first.
    pub first: PairSocket,
    /// What it is doing.
    pub state: FirstState,
    /// The socket that binds next, then listens.
    pub second: PairSocket,
    /// `net.ipv6.bindv6only` of the namespace.
    pub bindv6only: bool,
}

/// The outcome of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Call {
    /// It succeeded.
    Ok,
    /// It failed with this error.
    Failed {
        /// The error.
        error: SysError,
    },
    /// Not called (an earlier step failed, or the state has no such step).
    NotRun,
}

impl Call {
    fn err(code: i32) -> Call {
        Call::Failed {
            error: SysError::from_code(code),
        }
    }

    /// "ok", "EADDRINUSE", "-".
    pub fn short(&self) -> String {
        match self {
            Call::Ok => "ok".into(),
            Call::Failed { error } => error.name.clone(),
            Call::NotRun => "-".into(),
        }
    }

    /// True for a successful call.
    pub fn is_ok(&self) -> bool {
        matches!(self, Call::Ok)
    }
}

/// What the model says the four calls of a cell do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PairPrediction {
    /// The first socket's bind() (alone on the port).
    pub first_bind: Call,
    /// The second socket's bind().
    pub second_bind: Call,
    /// The second socket's listen() (after a successful bind).
    pub second_listen: Call,
    /// The first socket's listen() at the end, for [`FirstState::Bound`].
    pub first_listen: Call,
    /// The rule behind the second bind().
    pub rule: RuleId,
    /// One sentence naming the kernel functions that decide.
    pub explanation: String,
}

/// The (IPv4, IPv6) address space a socket on `addr` holds on its port:
/// [`Claims::of`], the kernel layer's one relation.
pub(crate) fn claims(addr: PairAddr, v6only: bool) -> Claims {
    Claims::of(addr.ip(), v6only)
}

/// Do two sockets' claims meet ([`Claims::overlap`])?
pub(crate) fn overlap(a: Claims, b: Claims) -> bool {
    a.overlap(b)
}

/// The uid number the rule layer compares: the first socket's is 0.
fn uid_number(u: Uid) -> u32 {
    match u {
        Uid::Same => 0,
        Uid::Other => 1,
    }
}

/// A pair's socket as the socket that binds ([`NewSocket`]).
fn new_socket(s: &PairSocket, bindv6only: bool) -> NewSocket {
    NewSocket {
        ip: s.addr.ip(),
        v6only: s.addr.family() == Family::V6 && s.v6only.resolve(bindv6only),
        reuseaddr: s.reuseaddr,
        reuseport: s.reuseport,
        uid: uid_number(s.uid),
        cap_net_bind_service: true,
    }
}

/// `inet_bind_conflict(sk = new, sk2 = old, relax = true, reuseport_ok =
/// true)`, from the kernel layer.
fn shares(new: &NewSocket, old: &PortHolder) -> Result<Share, Refusal> {
    kernel::bind::conflict(new, old, Check::Bind)
}

/// The first socket after it reached its state.
fn first_held(c: &PairCase) -> PortHolder {
    let v6only = c.first.v6only_after_bind(c.bindv6only);
    let addr = match c.state {
        FirstState::Connected | FirstState::TimeWait => c.first.addr.after_connect(),
        _ => c.first.addr,
    };
    // A dual-stack `::` stays not-V6ONLY after connect(): only bind() to a
    // specific address sets sk_ipv6only.
    let v6only = if addr == PairAddr::V6Loopback && c.first.addr == PairAddr::V6Any {
        v6only
    } else {
        v6only || addr == PairAddr::V6Loopback
    };
    PortHolder {
        // The pairs' v4-mapped address is ::ffff:127.0.0.1, never the
        // v4-mapped wildcard.
        v4_mapped_any: false,
        claims: claims(addr, v6only),
        reuseaddr: c.first.reuseaddr,
        reuseport: c.first.reuseport,
        uid: uid_number(Uid::Same),
        kind: match c.state {
            FirstState::Bound => HolderKind::Bound,
            FirstState::Listening => HolderKind::Listen,
            FirstState::Connected => HolderKind::Connected,
            FirstState::TimeWait => HolderKind::TimeWait,
        },
    }
}

fn mapped_on_v6only(s: &PairSocket, bindv6only: bool) -> bool {
    s.addr == PairAddr::V4Mapped && s.v6only.resolve(bindv6only)
}

/// Predict the cell: the first bind, the second bind and listen, and the
/// first socket's late listen() when it was only bound.
pub fn predict_pair(c: &PairCase) -> PairPrediction {
    let einval = || Call::err(libc::EINVAL);
    if mapped_on_v6only(&c.first, c.bindv6only) {
        return PairPrediction {
            first_bind: einval(),
            second_bind: Call::NotRun,
            second_listen: Call::NotRun,
            first_listen: Call::NotRun,
            rule: RuleId::BindMappedOnV6only,
            explanation: "the first socket is V6ONLY and cannot bind a v4-mapped address (__inet6_bind(): EINVAL)".into(),
        };
    }
    let first_listen_ok = if c.state == FirstState::Bound {
        Call::Ok
    } else {
        Call::NotRun
    };
    if mapped_on_v6only(&c.second, c.bindv6only) {
        return PairPrediction {
            first_bind: Call::Ok,
            second_bind: einval(),
            second_listen: Call::NotRun,
            first_listen: first_listen_ok,
            rule: RuleId::BindMappedOnV6only,
            explanation: "the second socket is V6ONLY and cannot bind a v4-mapped address (__inet6_bind(): EINVAL)".into(),
        };
    }
    let old = first_held(c);
    let new_v6only = c.second.v6only_after_bind(c.bindv6only);
    let second = new_socket(&c.second, c.bindv6only);
    let new_claims = second.claims();
    let (rule, explanation) = match shares(&second, &old) {
        Ok(Share::Disjoint) => (RuleId::BindDisjoint, disjoint_reason(c, new_v6only)),
        Ok(Share::Reuseaddr) => (
            RuleId::BindReuseaddr,
            share_reason(RuleId::BindReuseaddr, c),
        ),
        Ok(Share::Reuseport) => (
            RuleId::BindReuseport,
            share_reason(RuleId::BindReuseport, c),
        ),
        Err(why) => (RuleId::BindConflict, conflict_reason(c, why)),
    };
    let bound = rule != RuleId::BindConflict;
    let second_bind = if bound {
        Call::Ok
    } else {
        Call::err(libc::EADDRINUSE)
    };
    // listen() of the second: the same check against the same first
    // socket (its state did not change), so the same verdict.
    let second_listen = if bound { Call::Ok } else { Call::NotRun };
    let first_listen = late_listen(c, bound, new_claims);
    PairPrediction {
        first_bind: Call::Ok,
        second_bind,
        second_listen,
        first_listen,
        rule,
        explanation,
    }
}

/// The first socket's listen() after the second one listens (only for
/// [`FirstState::Bound`]): `inet_csk_listen_start()` → `inet_csk_get_port()`
/// checks it against the now listening second socket.
fn late_listen(c: &PairCase, second_listens: bool, new_claims: Claims) -> Call {
    if c.state != FirstState::Bound || !second_listens {
        return if c.state == FirstState::Bound {
            Call::Ok
        } else {
            Call::NotRun
        };
    }
    let second = PortHolder {
        v4_mapped_any: false,
        claims: new_claims,
        reuseaddr: c.second.reuseaddr,
        reuseport: c.second.reuseport,
        uid: uid_number(c.second.uid),
        kind: HolderKind::Listen,
    };
    // listen() re-checks the first socket against the listening second one
    // (inet_csk_listen_start() → inet_csk_get_port()).
    match shares(&new_socket(&c.first, c.bindv6only), &second) {
        Ok(_) => Call::Ok,
        Err(_) => Call::err(libc::EADDRINUSE),
    }
}

fn disjoint_reason(c: &PairCase, new_v6only: bool) -> String {
    let v6only_any = |a: PairAddr, v6| a == PairAddr::V6Any && v6;
    let first_v6only = c.first.v6only_after_bind(c.bindv6only);
    if v6only_any(c.second.addr, new_v6only) || v6only_any(c.first.addr, first_v6only) {
        "the `::` socket is V6ONLY (ipv6_only_sock()), so it holds no IPv4 address and the two do not overlap (__inet_bhash2_conflict(), ipv6_rcv_saddr_equal())".into()
    } else {
        format!(
            "{} and {} are different addresses and neither is a wildcard covering the other (inet_bind2_bucket_match_addr_any(), inet_rcv_saddr_equal())",
            c.first.addr, c.second.addr
        )
    }
}

fn share_reason(rule: RuleId, c: &PairCase) -> String {
    match rule {
        RuleId::BindReuseaddr => format!(
            "the addresses overlap, but both sockets have SO_REUSEADDR and the first is {} (not LISTEN), so inet_bind_conflict() lets them share",
            c.state.name()
        ),
        _ => format!(
            "the addresses overlap, but both sockets have SO_REUSEPORT and {}, so inet_bind_conflict() lets them share",
            if c.state == FirstState::TimeWait {
                "the first is TIME_WAIT (no uid check)"
            } else {
                "the same uid (uid_eq(uid, sk_uid(sk2)))"
            }
        ),
    }
}

fn conflict_reason(c: &PairCase, why: Refusal) -> String {
    let why = match why {
        Refusal::OtherUid => {
            "both have SO_REUSEPORT but another uid owns the first (the uid check of inet_bind_conflict(), sk_reuseport_match())"
        }
        Refusal::HolderListens => "SO_REUSEADDR on both does not help against a LISTEN socket",
        _ => {
            "neither SO_REUSEADDR on both (first not listening) nor SO_REUSEPORT on both (same uid) holds"
        }
    };
    let how = if c.second.addr == PairAddr::V6Any && !c.second.v6only_after_bind(c.bindv6only)
        || c.first.addr == PairAddr::V6Any && !c.first.v6only_after_bind(c.bindv6only)
    {
        " (a dual-stack `::` also holds the IPv4 addresses)"
    } else {
        ""
    };
    format!(
        "{} overlaps the first socket's {}{how}; {why}: inet_csk_get_port() → inet_bind_conflict() refuses (EADDRINUSE)",
        c.second.addr, c.first.addr
    )
}

#[cfg(test)]
#[path = "pairs_tests.rs"]
mod tests;
