//! bind(): who is in the port's bind bucket and whether each one lets the
//! new socket share the port. The rules are the kernel layer's
//! ([`crate::model::kernel::bind`]): this module gathers the facts from the
//! table (each holder's addresses, V6ONLY where sock_diag shows it, uid,
//! state), asks the layer once per value the holder's hidden
//! SO_REUSEADDR/SO_REUSEPORT may have, and words the answer.

use super::diagnosis::{
    Asked, Blocking, Capacity, Diagnosis, Errno, Expect, Flag, HolderClass, HolderReport,
    ReuseKnown, Variant,
};
use super::documented::bind_elsewhere;
use super::fix::Fix;
use super::table::{Occupant, Origin, Role, Table, origin, role, self_connected};
use crate::diag::{SockEntry, TcpState};
use crate::model::RuleId;
use crate::model::kernel::addr::{Claims, v6only_after_bind};
use crate::model::kernel::bind::{
    Autobind, Check, HolderKind, NewSocket, PortHolder, autobind, conflict, precheck,
};
use crate::model::kernel::{self, Fact};
use crate::outcome::Step;
use crate::socket::SocketOpts;
use crate::sysctl::NetSysctls;
use serde::Serialize;
use std::net::SocketAddr;

/// Who asks: a server about to listen, a client binding its source port,
/// or not known (`twlab why bind`). Only picks the fixes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Asker {
    /// Not known.
    #[default]
    Unknown,
    /// A server binding its listening port.
    Server,
    /// A client binding its own (fixed) source port before connect().
    Client,
}

/// A bind() to diagnose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindQuestion {
    /// The address and port (port 0: the kernel picks one).
    pub addr: SocketAddr,
    /// SO_REUSEADDR / SO_REUSEPORT of the new socket (and
    /// IP_BIND_ADDRESS_NO_PORT for port 0).
    pub opts: SocketOpts,
    /// IPV6_V6ONLY of the new socket as set before bind() (ignored for
    /// IPv4; a specific IPv6 address makes it V6ONLY anyway).
    pub v6only: bool,
    /// The new socket's effective uid (SO_REUSEPORT needs the same uid).
    pub uid: u32,
    /// The caller has CAP_NET_BIND_SERVICE (ports below
    /// `ip_unprivileged_port_start` need it).
    pub cap_net_bind_service: bool,
    /// Who asks (picks the fixes).
    pub asker: Asker,
}

/// The four values a socket's SO_REUSEADDR/SO_REUSEPORT can take: what a
/// holder might carry (sock_diag cannot show it) and the `--try` variants.
pub const REUSE_VARIANTS: [SocketOpts; 4] = [
    reuse(false, false),
    reuse(true, false),
    reuse(false, true),
    reuse(true, true),
];

const fn reuse(reuseaddr: bool, reuseport: bool) -> SocketOpts {
    SocketOpts {
        reuseaddr,
        reuseport,
        linger: None,
        bind_no_port: false,
        v6only: crate::socket::V6Only::System,
    }
}

/// The new socket as the kernel layer sees it.
pub(crate) fn new_socket(q: &BindQuestion, opts: SocketOpts) -> NewSocket {
    NewSocket {
        ip: q.addr.ip(),
        v6only: q.addr.is_ipv6() && q.v6only,
        reuseaddr: opts.reuseaddr,
        reuseport: opts.reuseport,
        uid: q.uid,
        cap_net_bind_service: q.cap_net_bind_service,
    }
}

/// IPV6_V6ONLY of a holder: what sock_diag says (listeners and bound-only
/// sockets, `INET_DIAG_SKV6ONLY`); else, for an IPv6 socket, `assume`
/// (the kernel does not report it for connections and TIME_WAIT: a socket
/// that connected from `::` or without bind() keeps the option it had at
/// socket(), and `tcp_v6_connect()` / `tcp_v6_syn_recv_sock()` give it
/// `inet_rcv_saddr = LOOPBACK4_IPV6`, which an IPv4 wildcard meets; one
/// that bound a specific IPv6 address is V6ONLY). False for IPv4.
pub(crate) fn holder_v6only(e: &SockEntry, assume: bool) -> bool {
    e.v6only.unwrap_or_else(|| match e.local.ip() {
        std::net::IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => assume,
        ip => v6only_after_bind(ip, assume),
    })
}

/// Does a holder's unknown IPV6_V6ONLY change what it holds? An IPv6
/// socket on a non-mapped address the dump gives no V6ONLY for.
pub(crate) fn v6only_unknown(e: &SockEntry) -> bool {
    e.v6only.is_none()
        && matches!(e.local.ip(), std::net::IpAddr::V6(a) if a.to_ipv4_mapped().is_none())
}

/// `inet_bind_conflict()`'s `sk2->sk_state`, from the table's state.
pub(crate) fn holder_kind(e: &SockEntry) -> HolderKind {
    match role(e) {
        Role::Listener => HolderKind::Listen,
        Role::TimeWait => HolderKind::TimeWait,
        Role::BoundOnly => HolderKind::Bound,
        Role::Connected => HolderKind::Connected,
    }
}

/// A table entry as the kernel layer's `sk2`, carrying `theirs`.
pub(crate) fn port_holder(e: &SockEntry, theirs: SocketOpts, default_v6only: bool) -> PortHolder {
    PortHolder {
        claims: Claims::of(e.local.ip(), holder_v6only(e, default_v6only)),
        reuseaddr: theirs.reuseaddr,
        reuseport: theirs.reuseport,
        uid: e.uid,
        kind: holder_kind(e),
        v4_mapped_any: crate::model::kernel::addr::is_v4_mapped_any(e.local.ip()),
    }
}

/// Does the new socket share the port with `e` if `e` carries `theirs`?
/// [`kernel::bind::conflict`] as bind() and listen() call it.
pub fn shares(q: &BindQuestion, e: &SockEntry, theirs: SocketOpts, default_v6only: bool) -> bool {
    conflict(
        &new_socket(q, q.opts),
        &port_holder(e, theirs, default_v6only),
        Check::Bind,
    )
    .is_ok()
}

/// The values of a holder's SO_REUSEADDR/SO_REUSEPORT the table allows.
/// Two overlapping listeners on one port prove a SO_REUSEPORT group (the
/// second bind() or listen() passed only with SO_REUSEPORT on both, same
/// uid; SO_REUSEADDR never shares with a listener), so each has it.
pub(crate) fn possible_reuse(
    o: &Occupant,
    bucket: &[&Occupant],
    default_v6only: bool,
) -> ReuseKnown {
    if o.entry.state != TcpState::Listen {
        return ReuseKnown::Unknown;
    }
    let mine = Claims::of(o.entry.local.ip(), holder_v6only(&o.entry, default_v6only));
    let others = bucket
        .iter()
        .filter(|p| !std::ptr::eq(**p, o) && p.entry.state == TcpState::Listen)
        .filter(|p| {
            mine.overlap(Claims::of(
                p.entry.local.ip(),
                holder_v6only(&p.entry, default_v6only),
            ))
        })
        .count();
    if others > 0 {
        ReuseKnown::Inferred {
            what: format!(
                "SO_REUSEPORT: {} listener(s) overlap it on this port, which only a SO_REUSEPORT group (same uid) allows",
                others
            ),
            reuseport: true,
        }
    } else {
        ReuseKnown::Unknown
    }
}

fn variants_of(known: &ReuseKnown) -> Vec<SocketOpts> {
    match known {
        ReuseKnown::Inferred {
            reuseport: true, ..
        } => REUSE_VARIANTS.into_iter().filter(|v| v.reuseport).collect(),
        _ => REUSE_VARIANTS.to_vec(),
    }
}

/// Whether `o` blocks the bind in `q`, over the values its hidden options
/// may take (`known`); `default_v6only` stands in for a holder's
/// IPV6_V6ONLY where the dump does not carry it.
pub fn blocking(
    q: &BindQuestion,
    o: &SockEntry,
    known: &ReuseKnown,
    default_v6only: bool,
) -> Blocking {
    if !v6only_unknown(o) {
        return blocking_with(q, o, known, default_v6only);
    }
    // Both values of the hidden IPV6_V6ONLY: V6ONLY holds no IPv4 address.
    match (
        blocking_with(q, o, known, true),
        blocking_with(q, o, known, false),
    ) {
        (a, b) if a == b => a,
        (Blocking::NoOverlap | Blocking::Never, Blocking::Always) => unless(V6ONLY_NEEDS),
        (Blocking::NoOverlap | Blocking::Never, Blocking::Unless { needs }) => Blocking::Unless {
            needs: format!("{V6ONLY_NEEDS}, or {needs}"),
        },
        (Blocking::NoOverlap, Blocking::Never) => Blocking::Never,
        (_, b) => b,
    }
}

/// What a holder with hidden IPV6_V6ONLY needs to let an IPv4 bind pass.
const V6ONLY_NEEDS: &str = "it is V6ONLY (bound to a specific IPv6 address, or IPV6_V6ONLY set; sock_diag does not show it for connections)";

fn blocking_with(
    q: &BindQuestion,
    o: &SockEntry,
    known: &ReuseKnown,
    default_v6only: bool,
) -> Blocking {
    let b = blocking_by_rule(q, o, known, default_v6only);
    // SO_REUSEPORT on both and another uid: the full check refuses, but
    // `inet_csk_get_port()` skips it when the bucket's fast path matches
    // (`sk_reuseport_match()`: tb->fastuid and its address), and that fast
    // path outlives the socket that set it. A bucket's history is not in
    // any dump: say so instead of predicting a refusal the kernel may skip.
    let other_uid = q.opts.reuseport
        && o.uid != q.uid
        && holder_kind(o) != HolderKind::TimeWait
        && variants_of(known).iter().any(|v| v.reuseport)
        && !matches!(b, Blocking::NoOverlap | Blocking::Never);
    match b {
        Blocking::Always if other_uid => unless(FAST_PATH_NEEDS),
        Blocking::Unless { needs } if other_uid => Blocking::Unless {
            needs: format!("{needs}, or {FAST_PATH_NEEDS}"),
        },
        b => b,
    }
}

/// What lets a SO_REUSEPORT bind past another uid's holder.
const FAST_PATH_NEEDS: &str = "it has SO_REUSEPORT and the port's bind bucket still carries the SO_REUSEPORT fast path of an earlier socket of your uid (sk_reuseport_match(): tb->fastuid outlives the socket that set it; no dump shows it)";

fn blocking_by_rule(
    q: &BindQuestion,
    o: &SockEntry,
    known: &ReuseKnown,
    default_v6only: bool,
) -> Blocking {
    let new = new_socket(q, q.opts);
    let probe = port_holder(o, SocketOpts::default(), default_v6only);
    if !new.claims().overlap(probe.claims) {
        return Blocking::NoOverlap;
    }
    let vs = variants_of(known);
    let s: Vec<(SocketOpts, bool)> = vs
        .iter()
        .map(|v| (*v, shares(q, o, *v, default_v6only)))
        .collect();
    if s.iter().all(|(_, ok)| *ok) {
        return Blocking::Never;
    }
    if s.iter().all(|(_, ok)| !*ok) {
        return Blocking::Always;
    }
    let ok = |f: fn(&SocketOpts) -> bool| s.iter().all(|(v, shares)| *shares == f(v));
    if ok(|v| v.reuseaddr) {
        unless("it has SO_REUSEADDR")
    } else if ok(|v| v.reuseport) {
        unless("it has SO_REUSEPORT")
    } else if ok(|v| v.reuseaddr || v.reuseport) {
        unless("it has SO_REUSEADDR or SO_REUSEPORT")
    } else if ok(|v| v.reuseaddr && v.reuseport) {
        unless("it has SO_REUSEADDR and SO_REUSEPORT")
    } else {
        unless("its reuse options allow it")
    }
}

fn unless(needs: &str) -> Blocking {
    Blocking::Unless {
        needs: needs.into(),
    }
}

/// The expected outcome of bind() given each holder's blocking.
pub fn expect_of(blocks: &[Blocking]) -> Expect {
    if blocks.iter().any(|b| matches!(b, Blocking::Always)) {
        return Expect::Fails {
            step: Step::Bind,
            errno: Errno::EADDRINUSE,
        };
    }
    let mut needs: Vec<&str> = blocks
        .iter()
        .filter_map(|b| match b {
            Blocking::Unless { needs } => Some(needs.as_str()),
            _ => None,
        })
        .collect();
    if needs.is_empty() {
        return Expect::Ok;
    }
    let n = needs.len();
    needs.sort_unstable();
    needs.dedup();
    let ok_if = if needs.len() == 1 {
        let what = needs[0].strip_prefix("it ").unwrap_or(needs[0]);
        if n == 1 {
            format!("the holder {what}")
        } else if let Some(has) = what.strip_prefix("has ") {
            format!("all {n} holders have {has}")
        } else {
            format!("each of the {n} holders {what}")
        }
    } else {
        format!("each holder has what it needs ({})", needs.join("; "))
    };
    Expect::Depends {
        step: Step::Bind,
        errno: Errno::EADDRINUSE,
        ok_if,
        then: None,
    }
}

/// What kind of holder this is for the question: it picks the fixes.
fn classify(
    q: &BindQuestion,
    o: &Occupant,
    known: &ReuseKnown,
    table: &Table,
    sys: &NetSysctls,
) -> HolderClass {
    let e = &o.entry;
    let default_v6only = sys.bindv6only.unwrap_or(false);
    let theirs = Claims::of(e.local.ip(), holder_v6only(e, default_v6only));
    let ours = new_socket(q, q.opts).claims();
    // One side covers the other family through a dual-stack `::`.
    let cross_family = (theirs.dual_stack_any() && q.addr.is_ipv4())
        || (ours.dual_stack_any() && e.local.is_ipv4());
    if self_connected(e) {
        return HolderClass::SelfConnect;
    }
    match role(e) {
        Role::Listener if matches!(known, ReuseKnown::Inferred { .. }) => {
            HolderClass::ReuseportGroup
        }
        Role::Listener | Role::BoundOnly if cross_family => HolderClass::DualStack,
        Role::Listener => HolderClass::Listener,
        Role::BoundOnly => HolderClass::BoundOnly,
        Role::Connected | Role::TimeWait => match origin(e, table, sys.port_range) {
            Origin::Incoming => HolderClass::ServerSide,
            _ if q.asker == Asker::Client => HolderClass::OwnFixedPort,
            // In the range, connect() may have chosen it; outside, only a
            // bind() of a fixed source port puts a connection there.
            _ if sys.port_range.contains(e.local.port()) => HolderClass::Ephemeral,
            _ => HolderClass::OwnFixedPort,
        },
    }
}

/// One socket of the bucket as a report line.
pub(crate) fn report(
    o: &Occupant,
    blocking: Blocking,
    table: &Table,
    sys: &NetSysctls,
) -> HolderReport {
    let e = &o.entry;
    let tw = e.is_timewait_sock() || e.state == TcpState::TimeWait;
    HolderReport {
        family: e.family,
        state: e.state,
        timewait_sock: tw,
        local: e.local,
        peer: e.peer,
        timer: e.timer,
        uid: (!tw).then_some(e.uid),
        owners: o.owners.clone(),
        role: role(e),
        origin: origin(e, table, sys.port_range),
        self_connected: self_connected(e),
        v6only: e.v6only,
        reuse: ReuseKnown::Unknown,
        class: None,
        blocking,
    }
}

/// Diagnose `bind(q.addr)` against the live (or given) table. Where the
/// table cannot show bound-only sockets (Linux before 6.5), a predicted
/// success becomes a "depends" on none of them holding the port.
pub fn diagnose_bind(q: &BindQuestion, table: &Table, sys: &NetSysctls) -> Diagnosis {
    let mut d = diagnose_bind_seen(q, table, sys);
    if table.bound_only_hidden {
        let what = if q.addr.port() == 0 {
            "every port of the range that looks free".to_string()
        } else {
            format!("port {}", q.addr.port())
        };
        let unseen = |e: Expect| e.unless_unseen(Step::Bind, Errno::EADDRINUSE, &what);
        d.expect = unseen(std::mem::replace(&mut d.expect, Expect::Ok));
        for v in &mut d.variants {
            v.expect = unseen(std::mem::replace(&mut v.expect, Expect::Ok));
        }
    }
    d
}

/// [`diagnose_bind`] over what the table shows.
fn diagnose_bind_seen(q: &BindQuestion, table: &Table, sys: &NetSysctls) -> Diagnosis {
    if let Some(refused) = precheck(&new_socket(q, q.opts), q.addr.port(), sys) {
        return refused_early(q, refused, sys);
    }
    if q.addr.port() == 0 {
        return diagnose_bind_any(q, table, sys);
    }
    let port = q.addr.port();
    let default_v6only = sys.bindv6only.unwrap_or(false);
    let bucket: Vec<&Occupant> = table.bucket(port).collect();
    let known: Vec<ReuseKnown> = bucket
        .iter()
        .map(|o| possible_reuse(o, &bucket, default_v6only))
        .collect();
    let blocks: Vec<Blocking> = bucket
        .iter()
        .zip(&known)
        .map(|(o, k)| blocking(q, &o.entry, k, default_v6only))
        .collect();
    let holders: Vec<HolderReport> = bucket
        .iter()
        .zip(&blocks)
        .zip(&known)
        .map(|((o, b), k)| {
            let mut h = report(o, b.clone(), table, sys);
            h.reuse = k.clone();
            if !matches!(b, Blocking::NoOverlap | Blocking::Never) {
                h.class = Some(classify(q, o, k, table, sys));
            }
            h
        })
        .collect();
    let expect = expect_of(&blocks);
    let variants = REUSE_VARIANTS
        .iter()
        .map(|opts| {
            let vq = BindQuestion {
                opts: *opts,
                ..q.clone()
            };
            let b: Vec<Blocking> = bucket
                .iter()
                .zip(&known)
                .map(|(o, k)| blocking(&vq, &o.entry, k, default_v6only))
                .collect();
            Variant {
                opts: *opts,
                label: opts.label(),
                expect: expect_of(&b),
            }
        })
        .collect();
    let (rule, explanation) = bind_explanation(q, &holders, &expect);
    let mut flags = port_flags(port, sys);
    flags.extend(
        holders
            .iter()
            .filter(|h| h.self_connected)
            .map(|h| Flag::SelfConnected { addr: h.local }),
    );
    flags.extend(reuseport_groups(&holders));
    let fixes = if expect == Expect::Ok {
        Vec::new()
    } else {
        bind_fixes(q, &holders, sys)
    };
    let mut unknowns = Vec::new();
    if holders
        .iter()
        .any(|h| matches!(h.blocking, Blocking::Unless { .. }))
    {
        unknowns.push(reuse_unknown_note());
    }
    if holders.iter().any(|h| {
        matches!(h.local, SocketAddr::V6(a) if a.ip().is_unspecified())
            && h.v6only.is_none()
            && q.addr.is_ipv4()
    }) {
        unknowns.push(format!(
            "IPV6_V6ONLY of a [::]:{port} socket is not in this dump (the kernel reports it for listeners and bound-only sockets): taken as net.ipv6.bindv6only={} ({}); with the other value the answer for IPv4 flips",
            u8::from(default_v6only),
            if default_v6only { "v6-only, no IPv4" } else { "dual-stack: it covers every IPv4 address" }
        ));
    }
    let mut facts = vec![
        Fact::new("port", port),
        Fact::new("holders_in_bucket", holders.len()),
        Fact::new(
            "overlapping_holders",
            holders
                .iter()
                .filter(|h| h.blocking != Blocking::NoOverlap)
                .count(),
        ),
        Fact::new("new_reuseaddr", q.opts.reuseaddr),
        Fact::new("new_reuseport", q.opts.reuseport),
    ];
    if q.addr.is_ipv6() {
        facts.push(Fact::new(
            "new_v6only",
            v6only_after_bind(q.addr.ip(), q.v6only),
        ));
    }
    Diagnosis {
        other_systems: bind_elsewhere(q, &holders),
        variants,
        flags,
        fixes,
        unknowns,
        facts,
        ..bind_diagnosis(q, rule, explanation, expect, holders)
    }
}

/// EACCES or EINVAL before any port is looked at.
fn refused_early(q: &BindQuestion, r: kernel::bind::Refused, sys: &NetSysctls) -> Diagnosis {
    let (errno, explanation, fixes) = if r.rule == RuleId::BindPrivileged {
        (
            Errno::EACCES,
            format!(
                "port {} is below net.ipv4.ip_unprivileged_port_start ({}) and the caller lacks CAP_NET_BIND_SERVICE, so __inet_bind() refuses it with EACCES before looking at the port's sockets",
                q.addr.port(),
                kernel::bind::unprivileged_port_start(sys)
            ),
            vec![Fix::PrivilegedPort {
                port: q.addr.port(),
            }],
        )
    } else {
        (
            Errno::EINVAL,
            "a v4-mapped address on a V6ONLY socket: __inet6_bind() refuses it with EINVAL".into(),
            vec![Fix::V6OnlyOff],
        )
    };
    let expect = Expect::Fails {
        step: Step::Bind,
        errno,
    };
    Diagnosis {
        fixes: fixes.into_iter().map(Fix::ranked).collect(),
        facts: r.facts,
        ..bind_diagnosis(q, r.rule, explanation, expect, Vec::new())
    }
}

/// The answer to a bind() question with what every bind diagnosis says
/// alike filled in (the question, the rule and its kernel function, the
/// holders) and the rest empty, for the caller to complete.
fn bind_diagnosis(
    q: &BindQuestion,
    rule: RuleId,
    explanation: String,
    expect: Expect,
    holders: Vec<HolderReport>,
) -> Diagnosis {
    Diagnosis {
        asked: Asked::Bind {
            addr: q.addr,
            opts: q.opts,
            v6only: q.v6only,
        },
        kernel_fn: rule.kernel_fn(),
        rule,
        explanation,
        other_systems: bind_elsewhere(q, &[]),
        expect,
        variants: Vec::new(),
        flags: Vec::new(),
        capacity: None,
        fixes: Vec::new(),
        unknowns: Vec::new(),
        facts: Vec::new(),
        holders,
        holders_not_listed: 0,
        tried: Vec::new(),
    }
}

/// The sentence for sock_diag's blind spot.
pub(crate) fn reuse_unknown_note() -> String {
    "SO_REUSEADDR/SO_REUSEPORT of the holders cannot be read: sock_diag has no attribute for sk_reuse/sk_reuseport, and a TIME_WAIT keeps the flags of the socket it came from (inet_twsk_alloc()), accepted sockets those of their listener. If a holder has SO_REUSEADDR and is not listening, a new socket with SO_REUSEADDR shares the port; if it has SO_REUSEPORT (same uid, or it is TIME_WAIT), a new socket with SO_REUSEPORT does; without either it blocks. --try asks the kernel.".into()
}

fn bind_explanation(
    q: &BindQuestion,
    holders: &[HolderReport],
    expect: &Expect,
) -> (RuleId, String) {
    let overlapping: Vec<&HolderReport> = holders
        .iter()
        .filter(|h| h.blocking != Blocking::NoOverlap)
        .collect();
    let port = q.addr.port();
    if overlapping.is_empty() {
        return if holders.is_empty() {
            (
                RuleId::BindFree,
                "the port's bind bucket is empty, so inet_csk_get_port() gives the port".into(),
            )
        } else {
            (
                RuleId::BindDisjoint,
                format!(
                    "the {} socket(s) in port {port}'s bind bucket are on addresses that do not overlap {}{}, so inet_csk_get_port() gives the port",
                    holders.len(),
                    q.addr.ip(),
                    if q.addr.is_ipv6() && q.addr.ip().is_unspecified() && q.v6only {
                        " (V6ONLY: no IPv4 address)"
                    } else {
                        ""
                    }
                ),
            )
        };
    }
    let summary = summarize(&overlapping);
    match expect {
        Expect::Ok => {
            let rule = if q.opts.reuseport
                && overlapping
                    .iter()
                    .any(|h| h.role == Role::Listener || !q.opts.reuseaddr)
            {
                RuleId::BindReuseport
            } else {
                RuleId::BindReuseaddr
            };
            (
                rule,
                format!(
                    "port {port} is held by {summary}, but each lets the new socket ({}) share it (inet_bind_conflict())",
                    q.opts.label()
                ),
            )
        }
        Expect::Fails { .. } => {
            let first = overlapping
                .iter()
                .find(|h| h.blocking == Blocking::Always)
                .unwrap_or(&overlapping[0]);
            (
                RuleId::BindConflict,
                format!(
                    "port {port}'s bind bucket holds {summary}; {} on {}{} refuses to share with a new socket with {}: {} (inet_bind_conflict()), so bind() fails with EADDRINUSE — the whole port counts, not one 4-tuple",
                    state_name(first),
                    first.local,
                    match first.class {
                        Some(HolderClass::DualStack) if first.local.is_ipv6() => {
                            " (dual-stack: it also holds every IPv4 address)"
                        }
                        Some(HolderClass::DualStack) => {
                            " (the new [::] socket is dual-stack: it claims every IPv4 address too)"
                        }
                        _ => "",
                    },
                    q.opts.label(),
                    why_refuses(q.opts, first)
                ),
            )
        }
        Expect::Depends { ok_if, .. } => (
            RuleId::BindConflict,
            format!(
                "port {port}'s bind bucket holds {summary}; with {} on the new socket inet_bind_conflict() lets it in only if {ok_if}, which sock_diag cannot show",
                q.opts.label()
            ),
        ),
    }
}

fn state_name(h: &HolderReport) -> String {
    if h.timewait_sock && h.state != TcpState::TimeWait {
        format!("the {} timewait mini-socket", h.state)
    } else {
        format!("the {}", h.state)
    }
}

fn why_refuses(new: SocketOpts, h: &HolderReport) -> &'static str {
    if !new.reuseaddr && !new.reuseport {
        "the new socket has neither SO_REUSEADDR nor SO_REUSEPORT"
    } else if h.role == Role::Listener && !new.reuseport {
        "SO_REUSEADDR never shares with a listener"
    } else if h.role == Role::Listener && h.reuse != ReuseKnown::Unknown {
        "the SO_REUSEPORT group belongs to another uid"
    } else if new.reuseport && !new.reuseaddr {
        "SO_REUSEPORT shares only with SO_REUSEPORT sockets of the same uid"
    } else {
        "the SO_REUSEPORT owners have different uids"
    }
}

/// "3 TIME_WAIT (server side), 1 LISTEN". Each socket is counted once.
pub(crate) fn summarize(hs: &[&HolderReport]) -> String {
    let mut parts: Vec<(String, usize)> = Vec::new();
    for h in hs {
        let side = match h.origin {
            _ if h.role == Role::BoundOnly => " (bound only)",
            Origin::Incoming if h.role != Role::Listener => " (accepted, server side)",
            Origin::Outgoing => " (outgoing, client side)",
            _ => "",
        };
        let name = format!("{}{side}", h.state);
        match parts.iter_mut().find(|(n, _)| *n == name) {
            Some(p) => p.1 += 1,
            None => parts.push((name, 1)),
        }
    }
    parts
        .iter()
        .map(|(n, c)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Flags about the port itself.
pub(crate) fn port_flags(port: u16, sys: &NetSysctls) -> Vec<Flag> {
    if !sys.port_range.contains(port) {
        Vec::new()
    } else if sys.reserved_ports.contains(port) {
        vec![Flag::Reserved { port }]
    } else {
        vec![Flag::InEphemeralRange {
            port,
            range: sys.port_range,
        }]
    }
}

/// Overlapping listeners on one address:port: a SO_REUSEPORT group, and
/// connections are split between its members.
fn reuseport_groups(holders: &[HolderReport]) -> Vec<Flag> {
    let mut flags: Vec<Flag> = Vec::new();
    for h in holders.iter().filter(|h| {
        h.class == Some(HolderClass::ReuseportGroup)
            || matches!(h.reuse, ReuseKnown::Inferred { .. })
    }) {
        let members: Vec<&HolderReport> = holders
            .iter()
            .filter(|o| o.role == Role::Listener && o.local == h.local)
            .collect();
        if members.len() < 2
            || flags
                .iter()
                .any(|f| matches!(f, Flag::ReuseportGroup { addr, .. } if *addr == h.local))
        {
            continue;
        }
        let mut owners: Vec<String> = members
            .iter()
            .flat_map(|m| m.owners.iter().map(|o| format!("{}/{}", o.name, o.pid)))
            .collect();
        owners.dedup();
        flags.push(Flag::ReuseportGroup {
            addr: h.local,
            listeners: members.len() as u32,
            owners,
        });
    }
    flags
}

/// Fixes for a refused bind(), best first, chosen by what holds the port.
fn bind_fixes(
    q: &BindQuestion,
    holders: &[HolderReport],
    sys: &NetSysctls,
) -> Vec<super::fix::RankedFix> {
    let port = q.addr.port();
    let blockers: Vec<&HolderReport> = holders
        .iter()
        .filter(|h| matches!(h.blocking, Blocking::Always | Blocking::Unless { .. }))
        .collect();
    let mut fixes: Vec<Fix> = Vec::new();
    let push = |fixes: &mut Vec<Fix>, f: Fix| {
        if !fixes.contains(&f) {
            fixes.push(f);
        }
    };
    let tw_wait = blockers
        .iter()
        .filter(|h| h.timewait_sock)
        .filter_map(|h| h.timer.map(|t| t.expires_ms))
        .max();
    let who = |h: &HolderReport| {
        h.owners
            .first()
            .map(|o| format!("pid {} ({})", o.pid, o.name))
            .unwrap_or_else(|| format!("the {} socket on {}", h.state, h.local))
    };
    for h in &blockers {
        let same_address = h.local.ip() == q.addr.ip();
        match h.class.unwrap_or(HolderClass::Listener) {
            HolderClass::OwnFixedPort => {
                push(&mut fixes, Fix::ReuseaddrForFixedPort);
                push(&mut fixes, Fix::LetConnectChoose);
                if let Some(ms) = tw_wait {
                    push(&mut fixes, Fix::Wait { ms });
                }
                if h.timewait_sock {
                    push(&mut fixes, Fix::ServerClosesFirst);
                    push(&mut fixes, Fix::Linger0);
                }
            }
            HolderClass::ServerSide => {
                push(&mut fixes, Fix::ReuseaddrOnBoth);
                if let Some(ms) = tw_wait {
                    push(&mut fixes, Fix::Wait { ms });
                }
                if h.timewait_sock {
                    push(&mut fixes, Fix::ClientClosesFirst);
                    push(&mut fixes, Fix::Linger0);
                }
            }
            HolderClass::Listener => {
                push(&mut fixes, Fix::StopHolder { who: who(h) });
                push(&mut fixes, Fix::ReuseportOnBoth { same_address });
            }
            HolderClass::ReuseportGroup => {
                push(&mut fixes, Fix::StopHolder { who: who(h) });
                push(&mut fixes, Fix::LeaveReuseportGroup);
            }
            HolderClass::DualStack => {
                push(
                    &mut fixes,
                    Fix::V6Only {
                        on_new: q.addr.is_ipv6(),
                    },
                );
                push(&mut fixes, Fix::StopHolder { who: who(h) });
            }
            HolderClass::BoundOnly => {
                push(&mut fixes, Fix::StopHolder { who: who(h) });
                push(&mut fixes, Fix::ReuseaddrOnBoth);
                if sys.port_range.contains(h.local.port()) {
                    push(&mut fixes, Fix::BindAddressNoPort);
                }
            }
            HolderClass::Ephemeral => {
                if !sys.reserved_ports.contains(port) {
                    push(&mut fixes, Fix::ReservePort { port });
                }
                push(&mut fixes, Fix::PortOutsideRange);
                if let Some(ms) = tw_wait {
                    push(&mut fixes, Fix::Wait { ms });
                }
            }
            HolderClass::SelfConnect => {
                push(&mut fixes, Fix::SelfConnectRetry);
                if !sys.reserved_ports.contains(port) {
                    push(&mut fixes, Fix::ReservePort { port });
                }
                push(&mut fixes, Fix::PortOutsideRange);
            }
        }
    }
    fixes.into_iter().map(Fix::ranked).collect()
}

/// bind(addr, 0): [`kernel::bind::autobind`] over the table, once for
/// holders without SO_REUSEADDR and once with it, since sock_diag cannot
/// show it and only `ip_autobind_reuse`'s relaxed pass looks at it.
fn diagnose_bind_any(q: &BindQuestion, table: &Table, sys: &NetSysctls) -> Diagnosis {
    let range = sys.port_range;
    let default_v6only = sys.bindv6only.unwrap_or(false);
    let new = new_socket(q, q.opts);
    let ours = new.claims();
    if q.opts.bind_no_port {
        let explanation = "IP_BIND_ADDRESS_NO_PORT with port 0: __inet_bind() skips inet_csk_get_port() and leaves the port to connect()".to_string();
        return bind_diagnosis(q, RuleId::BindAutoFree, explanation, Expect::Ok, Vec::new());
    }
    // The holders' hidden options, at their worst and best for the new
    // socket: no SO_REUSEADDR and not V6ONLY (where sock_diag does not say),
    // or SO_REUSEADDR and V6ONLY.
    let as_if = |theirs: SocketOpts, v6only: bool| {
        autobind(&new, sys, |port| {
            table
                .bucket(port)
                .map(|o| port_holder(&o.entry, theirs, v6only))
                .collect::<Vec<_>>()
        })
    };
    let without = as_if(reuse(false, false), false);
    let with = as_if(reuse(true, false), true);
    let (mut reserved, mut used, mut free) = (0u32, 0u32, 0u32);
    let mut holders = Vec::new();
    for port in range.low..=range.high {
        if sys.reserved_ports.contains(port) {
            reserved += 1;
            continue;
        }
        let over: Vec<&Occupant> = table
            .bucket(port)
            .filter(|o| {
                ours.overlap(Claims::of(
                    o.entry.local.ip(),
                    holder_v6only(&o.entry, default_v6only),
                ))
            })
            .collect();
        if over.is_empty() {
            free += 1;
        } else {
            used += 1;
            holders.extend(over.iter().map(|o| report(o, Blocking::Always, table, sys)));
        }
    }
    let capacity = Capacity {
        range,
        range_ports: range.len(),
        reserved,
        bind_owned: used,
        tuple_busy: 0,
        time_wait_blocking: 0,
        time_wait_reusable: 0,
        free,
        usable: free,
        surely_usable: free,
        soonest_time_wait_ms: None,
        time_wait_reusable_in_ms: None,
        time_wait_note: "bind(addr, 0) never takes a TIME_WAIT's port over".into(),
        tuple_limit: format!("{free} more sockets can bind {} with port 0", q.addr.ip()),
        taken_per_min: None,
        rate_window_ms: None,
        back_per_min: None,
        bound_only_hidden: table.bound_only_hidden,
    };
    let autobind_reuse = sys.autobind_reuse.unwrap_or(false);
    let inuse = || Expect::Fails {
        step: Step::Bind,
        errno: Errno::EADDRINUSE,
    };
    let exhausted_text = format!(
        "bind({}, 0) takes a port of its own whatever the destination: every one of the {} unreserved ports in {}-{} already has a socket on an overlapping address, and inet_csk_find_open_port()'s first pass shares none (relax = false)",
        q.addr.ip(),
        range.len() - reserved,
        range.low,
        range.high
    );
    let (rule, expect, explanation) = match (without, with) {
        (Autobind::Free { free_ports, .. }, _) => (
            RuleId::BindAutoFree,
            Expect::Ok,
            format!(
                "inet_csk_find_open_port() finds {free_ports} port(s) in {}-{} with no socket on an overlapping address",
                range.low, range.high
            ),
        ),
        (Autobind::Shared { port }, _) => (
            RuleId::BindAutoShared,
            Expect::Ok,
            format!(
                "{exhausted_text}; ip_autobind_reuse=1 lets it share port {port}, whose holders cannot refuse whatever their options"
            ),
        ),
        (Autobind::Exhausted, Autobind::Free { port, .. }) => (
            RuleId::BindAutoFree,
            Expect::Depends {
                step: Step::Bind,
                errno: Errno::EADDRINUSE,
                ok_if: format!(
                    "the IPv6 connections on some port (e.g. {port}) are V6ONLY (sock_diag does not show it for connections: one that connected from `::` or without bind() also holds 127.0.0.6, LOOPBACK4_IPV6, in the IPv4 space)"
                ),
                then: None,
            },
            format!(
                "{exhausted_text} if the IPv6 connections in the range are dual-stack; V6ONLY ones leave their ports to IPv4"
            ),
        ),
        (Autobind::Exhausted, Autobind::Shared { port }) => (
            RuleId::BindAutoShared,
            Expect::Depends {
                step: Step::Bind,
                errno: Errno::EADDRINUSE,
                ok_if: format!(
                    "the holders of some port (e.g. {port}) all have SO_REUSEADDR, are not listening, and do not share SO_REUSEPORT with it"
                ),
                then: None,
            },
            format!(
                "{exhausted_text}; with ip_autobind_reuse=1 a second pass (relax = true) may share a port with SO_REUSEADDR holders, which sock_diag cannot show"
            ),
        ),
        (Autobind::Exhausted, _) => (
            RuleId::BindAutoExhausted,
            inuse(),
            format!(
                "{exhausted_text}{}, so bind() fails with EADDRINUSE",
                if autobind_reuse {
                    ", and the relaxed pass of ip_autobind_reuse=1 finds no port to share either (it needs SO_REUSEADDR on both and no listener)"
                } else {
                    " (ip_autobind_reuse=0: no second pass)"
                }
            ),
        ),
    };
    let fixes = if expect == Expect::Ok {
        Vec::new()
    } else {
        [
            Fix::BindAddressNoPort,
            Fix::MoreSourceAddresses,
            Fix::WidenRange,
        ]
        .into_iter()
        .map(Fix::ranked)
        .collect()
    };
    let facts = vec![
        Fact::new("range", format!("{}-{}", range.low, range.high)),
        Fact::new("free_ports", free),
        Fact::new("ports_with_overlapping_sockets", used),
        Fact::new("reserved_ports", reserved),
        Fact::new("ip_autobind_reuse", u8::from(autobind_reuse)),
        Fact::new("new_reuseaddr", q.opts.reuseaddr),
    ];
    Diagnosis {
        capacity: Some(capacity),
        fixes,
        facts,
        ..bind_diagnosis(q, rule, explanation, expect, holders)
    }
}
