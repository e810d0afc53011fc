//! bind() and listen(): who may share a port with whom.
//!
//! - [`conflict`]: `inet_bind_conflict()` for one pair of sockets, in the
//!   three ways the kernel calls it: from bind() of a port and again from
//!   listen() (`inet_csk_get_port()` → `inet_csk_bind_conflict(.., relax =
//!   true, reuseport_ok = true)`), and from the two passes of bind(ip, 0)
//!   (`inet_csk_find_open_port()`: relax = false, then, with
//!   `ip_autobind_reuse`, relax = true; reuseport_ok = false in both).
//! - [`precheck`]: what `__inet_bind()` / `__inet6_bind()` refuse before
//!   any port is looked at: a privileged port without CAP_NET_BIND_SERVICE
//!   (EACCES), a v4-mapped address on a V6ONLY socket (EINVAL).
//! - [`bind_port`]: bind() of a given port against the sockets on it.
//! - [`autobind`]: bind(ip, 0).

use super::Fact;
use super::addr::Claims;
use crate::model::RuleId;
use crate::sys::linux_errno;
use crate::sysctl::NetSysctls;
use serde::Serialize;
use std::net::IpAddr;

/// What a socket already on the port is doing, as `inet_bind_conflict()`
/// tests `sk2->sk_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HolderKind {
    /// bind() only (TCP_CLOSE, or a reset socket whose open descriptor
    /// keeps an explicitly bound port).
    Bound,
    /// TCP_LISTEN: SO_REUSEADDR never shares with it.
    Listen,
    /// A connection in a full socket, any state.
    Connected,
    /// A timewait mini-socket: TIME_WAIT, or an orphaned FIN_WAIT2 kept as
    /// one — `sk_state` is TCP_TIME_WAIT for both, so the SO_REUSEPORT uid
    /// check is skipped.
    TimeWait,
}

/// A socket already in the port's bind bucket (`sk2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PortHolder {
    /// The addresses it holds.
    pub claims: Claims,
    /// `sk_reuse` (a TIME_WAIT keeps its socket's, `inet_twsk_alloc()`;
    /// accepted sockets inherit the listener's, `sk_clone_lock()`).
    pub reuseaddr: bool,
    /// `sk_reuseport`, kept and inherited the same way.
    pub reuseport: bool,
    /// Its owner's uid (`sock_i_uid()`); not looked at for TIME_WAIT.
    pub uid: u32,
    /// What it is doing.
    pub kind: HolderKind,
    /// Bound to `::ffff:0.0.0.0` on an IPv6 socket ([`super::addr::is_v4_mapped_any`]).
    pub v4_mapped_any: bool,
}

/// The socket that binds (`sk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NewSocket {
    /// The address it binds.
    pub ip: IpAddr,
    /// IPV6_V6ONLY as set before bind() (or the `bindv6only` default).
    pub v6only: bool,
    /// SO_REUSEADDR.
    pub reuseaddr: bool,
    /// SO_REUSEPORT.
    pub reuseport: bool,
    /// Its uid (the fsuid at socket()).
    pub uid: u32,
    /// The caller has CAP_NET_BIND_SERVICE in the namespace's user
    /// namespace (root has).
    pub cap_net_bind_service: bool,
}

impl NewSocket {
    /// The addresses it will hold once bound.
    pub fn claims(&self) -> Claims {
        Claims::of(
            self.ip,
            super::addr::v6only_after_bind(self.ip, self.v6only),
        )
    }
}

/// How the kernel calls `inet_bind_conflict()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// bind() of a port, and listen() (relax = true, reuseport_ok = true).
    Bind,
    /// bind(ip, 0), first pass (relax = false, reuseport_ok = false): any
    /// overlapping socket conflicts.
    AutobindStrict,
    /// bind(ip, 0) once the range is exhausted, with `ip_autobind_reuse`
    /// (relax = true, reuseport_ok = false).
    AutobindRelaxed,
}

/// Why two overlapping sockets may share the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Share {
    /// Their addresses do not overlap: they never meet.
    Disjoint,
    /// Both have SO_REUSEADDR and the holder is not listening.
    Reuseaddr,
    /// Both have SO_REUSEPORT and the holder is TIME_WAIT or of the same uid.
    Reuseport,
}

impl Share {
    /// The rule identifier.
    pub fn rule(self) -> RuleId {
        match self {
            Share::Disjoint => RuleId::BindDisjoint,
            Share::Reuseaddr => RuleId::BindReuseaddr,
            Share::Reuseport => RuleId::BindReuseport,
        }
    }
}

/// Why `inet_bind_conflict()` refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// Neither SO_REUSEADDR on both nor SO_REUSEPORT on both.
    NoReuseOnBoth,
    /// SO_REUSEADDR on both, but the holder listens (and no SO_REUSEPORT
    /// on both).
    HolderListens,
    /// SO_REUSEPORT on both, but another uid owns the holder.
    OtherUid,
    /// bind(ip, 0)'s first pass: any overlapping socket conflicts.
    AutobindStrict,
    /// bind(ip, 0)'s relaxed pass refuses a holder without SO_REUSEADDR on
    /// both, a listener, or one that SO_REUSEPORT on both with the same
    /// uid could share (that one is left to an explicit bind()).
    AutobindRelaxed,
}

/// `inet_bind_conflict(sk = new, sk2 = old, relax, reuseport_ok)` for two
/// sockets on one port: how they share it, or why not. The device check
/// (`sk_bound_dev_if`) is not modelled: twlab's sockets bind no device.
pub fn conflict(new: &NewSocket, old: &PortHolder, check: Check) -> Result<Share, Refusal> {
    conflict_on(new, old, check, super::version::KernelVersion::running())
}

/// [`conflict`] on kernel `kernel` (`None`: unknown, the newest rules).
pub fn conflict_on(
    new: &NewSocket,
    old: &PortHolder,
    check: Check,
    kernel: Option<super::version::KernelVersion>,
) -> Result<Share, Refusal> {
    if !new.claims().overlap(old.claims) {
        return Ok(Share::Disjoint);
    }
    // Linux 6.1 to 6.8: a socket on `::ffff:0.0.0.0` is not found by the
    // bhash2 checks of a later v4-mapped non-wildcard bind (see
    // V4MAPPED_ANY_IN_BHASH2), so the two share the port whatever their
    // options.
    if old.v4_mapped_any
        && super::addr::is_v4_mapped_specific(new.ip)
        && kernel.is_some_and(|v| {
            v.has(super::version::BHASH2) && !v.has(super::version::V4MAPPED_ANY_IN_BHASH2)
        })
    {
        return Ok(Share::Disjoint);
    }
    let reuseaddr_both = new.reuseaddr && old.reuseaddr && old.kind != HolderKind::Listen;
    let reuseport_both =
        new.reuseport && old.reuseport && (old.kind == HolderKind::TimeWait || new.uid == old.uid);
    match check {
        Check::Bind if reuseaddr_both => Ok(Share::Reuseaddr),
        Check::Bind if reuseport_both => Ok(Share::Reuseport),
        Check::Bind if new.reuseport && old.reuseport => Err(Refusal::OtherUid),
        Check::Bind if new.reuseaddr && old.reuseaddr => Err(Refusal::HolderListens),
        Check::Bind => Err(Refusal::NoReuseOnBoth),
        Check::AutobindStrict => Err(Refusal::AutobindStrict),
        // `if (!relax || (!reuseport_ok && sk->sk_reuseport &&
        // sk2->sk_reuseport && (TIME_WAIT || uid_eq)))` conflicts.
        Check::AutobindRelaxed if reuseaddr_both && !reuseport_both => Ok(Share::Reuseaddr),
        Check::AutobindRelaxed => Err(Refusal::AutobindRelaxed),
    }
}

/// A refused call: the errno and the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Refused {
    /// The errno (Linux numbering).
    pub errno: i32,
    /// The rule.
    pub rule: RuleId,
    /// The facts it used.
    pub facts: Vec<Fact>,
}

/// What `__inet_bind()` / `__inet6_bind()` refuse before looking at the
/// port's owners: `snum && inet_port_requires_bind_service(net, snum) &&
/// !ns_capable(net->user_ns, CAP_NET_BIND_SERVICE)` → EACCES (checked
/// first), then a v4-mapped address on a V6ONLY socket → EINVAL.
pub fn precheck(new: &NewSocket, port: u16, sys: &NetSysctls) -> Option<Refused> {
    let start = unprivileged_port_start(sys);
    if port != 0 && port < start && !new.cap_net_bind_service {
        return Some(Refused {
            errno: linux_errno::EACCES,
            rule: RuleId::BindPrivileged,
            facts: vec![
                Fact::new("port", port),
                Fact::new("ip_unprivileged_port_start", start),
                Fact::new("cap_net_bind_service", false),
            ],
        });
    }
    let mapped = matches!(new.ip, IpAddr::V6(a) if a.to_ipv4_mapped().is_some());
    if mapped && new.v6only {
        return Some(Refused {
            errno: linux_errno::EINVAL,
            rule: RuleId::BindMappedOnV6only,
            facts: vec![Fact::new("v6only", true), Fact::new("address", new.ip)],
        });
    }
    None
}

/// `net.ipv4.ip_unprivileged_port_start`, 1024 where it cannot be read
/// (the kernel's default, `inet_init_net()`).
pub fn unprivileged_port_start(sys: &NetSysctls) -> u16 {
    sys.unprivileged_port_start.unwrap_or(1024)
}

/// bind() of `port` (not 0) against every socket on it: the first holder
/// that refuses, or the way each shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub enum PortVerdict {
    /// No socket on the port overlaps: `inet_csk_get_port()` gives it.
    Free,
    /// Every overlapping holder shares (the rule of the first one), or the
    /// port's sockets are all on addresses that do not overlap
    /// ([`Share::Disjoint`]).
    Shared(Share),
    /// Holder `index` refuses: EADDRINUSE.
    Conflict {
        /// Index into the holders given.
        index: usize,
        /// Why.
        why: Refusal,
    },
}

/// `inet_csk_get_port()` for an explicit port (bind(), and listen()'s
/// re-check with the listening socket's own entry left out by the caller).
pub fn bind_port(new: &NewSocket, holders: &[PortHolder]) -> PortVerdict {
    bind_port_on(new, holders, super::version::KernelVersion::running())
}

/// Linux 6.1 to 6.8, a v4-mapped non-wildcard bind on a port whose first
/// IPv4-wildcard socket (in bind order, `holders`' order) is on
/// `::ffff:0.0.0.0`: the bhash2 wildcard check stops at the first wildcard
/// bucket it meets (the traversal `break`s in
/// `inet_bhash2_addr_any_conflict()`; fixed with the 6.9 bhash2 fixes),
/// finds no conflict there, and so meets neither that socket nor a
/// `0.0.0.0` bound after it. When `0.0.0.0` was bound first, it is met and
/// refuses as usual. Both orders seen on Debian 12's 6.1.0-57 in the
/// `bind_wildcard.c` cases (`scripts/kernels`); the order dependence is
/// read off those runs, not off the 6.1 source.
fn v4_wildcards_missed(
    new: &NewSocket,
    holders: &[PortHolder],
    kernel: Option<super::version::KernelVersion>,
) -> bool {
    let ipv4_any = Claims::of(std::net::Ipv4Addr::UNSPECIFIED.into(), false);
    super::addr::is_v4_mapped_specific(new.ip)
        && holders
            .iter()
            .find(|h| h.claims == ipv4_any)
            .is_some_and(|h| h.v4_mapped_any)
        && kernel.is_some_and(|v| {
            v.has(super::version::BHASH2) && !v.has(super::version::V4MAPPED_ANY_IN_BHASH2)
        })
}

/// [`bind_port`] on kernel `kernel`.
pub fn bind_port_on(
    new: &NewSocket,
    holders: &[PortHolder],
    kernel: Option<super::version::KernelVersion>,
) -> PortVerdict {
    let missed = v4_wildcards_missed(new, holders, kernel);
    let ipv4_any = Claims::of(std::net::Ipv4Addr::UNSPECIFIED.into(), false);
    let mut shared = None;
    for (index, h) in holders.iter().enumerate() {
        if missed && h.claims == ipv4_any {
            continue;
        }
        match conflict_on(new, h, Check::Bind, kernel) {
            Ok(Share::Disjoint) => {}
            Ok(s) => {
                shared.get_or_insert(s);
            }
            Err(why) => return PortVerdict::Conflict { index, why },
        }
    }
    match shared {
        Some(s) => PortVerdict::Shared(s),
        None if holders.is_empty() => PortVerdict::Free,
        // Sockets on the port, none on an overlapping address.
        None => PortVerdict::Shared(Share::Disjoint),
    }
}

/// The answer of bind(ip, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Autobind {
    /// A port no overlapping socket holds (the kernel's pick starts at a
    /// random offset; `port` is one such port, not the one it will take).
    Free {
        /// A free port.
        port: u16,
        /// How many such ports the range has.
        free_ports: u32,
    },
    /// The range is exhausted, but `ip_autobind_reuse` lets the socket
    /// share a port with SO_REUSEADDR holders (the relaxed pass).
    Shared {
        /// A port it can share.
        port: u16,
    },
    /// No port: bind() fails with EADDRINUSE (`inet_csk_get_port()`
    /// returns 1, `__inet_bind()` maps it to -EADDRINUSE).
    Exhausted,
}

impl Autobind {
    /// The rule identifier.
    pub fn rule(self) -> RuleId {
        match self {
            Autobind::Free { .. } => RuleId::BindAutoFree,
            Autobind::Shared { .. } => RuleId::BindAutoShared,
            Autobind::Exhausted => RuleId::BindAutoExhausted,
        }
    }
}

/// bind(ip, 0): `inet_csk_find_open_port()`. Scans `ip_local_port_range`
/// (skipping `ip_local_reserved_ports`; with SO_REUSEADDR the lower half
/// first, then the upper, which covers the same ports) for a port where no
/// socket overlaps (relax = false). With none and `ip_autobind_reuse` set,
/// scans again with relax = true: a port whose every overlapping holder
/// has SO_REUSEADDR, is not listening, and is not one SO_REUSEPORT on both
/// (same uid) could share. `holders_of(port)` lists the sockets on a port.
pub fn autobind<I>(new: &NewSocket, sys: &NetSysctls, holders_of: impl Fn(u16) -> I) -> Autobind
where
    I: IntoIterator<Item = PortHolder>,
{
    let range = sys.port_range;
    let ports = || (range.low..=range.high).filter(|p| !sys.reserved_ports.contains(*p));
    let mut first = None;
    let mut free_ports = 0;
    for port in ports() {
        let claims = new.claims();
        if holders_of(port)
            .into_iter()
            .all(|h| !claims.overlap(h.claims))
        {
            first.get_or_insert(port);
            free_ports += 1;
        }
    }
    if let Some(port) = first {
        return Autobind::Free { port, free_ports };
    }
    if sys.autobind_reuse.unwrap_or(false)
        && let Some(port) = shareable_ports(new, sys, holders_of).next()
    {
        return Autobind::Shared { port };
    }
    Autobind::Exhausted
}

/// The ports `inet_csk_find_open_port()`'s relaxed pass may share (with
/// `ip_autobind_reuse`, once no port is free): every holder lets the new
/// socket in under relax = true, reuseport_ok = false. Which one it takes
/// depends on its random starting offset.
pub fn shareable_ports<I>(
    new: &NewSocket,
    sys: &NetSysctls,
    holders_of: impl Fn(u16) -> I,
) -> impl Iterator<Item = u16>
where
    I: IntoIterator<Item = PortHolder>,
{
    let range = sys.port_range;
    (range.low..=range.high)
        .filter(|p| !sys.reserved_ports.contains(*p))
        .filter(move |port| {
            holders_of(*port)
                .into_iter()
                .all(|h| conflict(new, &h, Check::AutobindRelaxed).is_ok())
        })
}
