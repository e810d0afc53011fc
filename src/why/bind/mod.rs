//! bind(): who is in the port's bind bucket and whether each one lets the
//! new socket share the port. The rules are the kernel layer's
//! ([`crate::model::kernel::bind`]): this module gathers the facts from the
//! table (each holder's addresses, V6ONLY where sock_diag shows it, uid,
//! state), asks the layer once per value the holder's hidden
//! SO_REUSEADDR/SO_REUSEPORT may have, and words the answer.

mod any;
mod words;

use any::diagnose_bind_any;
use words::{bind_explanation, bind_fixes, port_flags, reuse_unknown_note, reuseport_groups};

use super::diagnosis::{
    Asked, Blocking, Diagnosis, Errno, Expect, Flag, HolderClass, HolderReport, ReuseKnown, Variant,
};
use super::documented::bind_elsewhere;
use super::fix::Fix;
use super::table::{Occupant, Origin, Role, Table, origin, role, self_connected};
use crate::diag::{SockEntry, TcpState};
use crate::model::RuleId;
use crate::model::kernel::addr::{Claims, v6only_after_bind};
use crate::model::kernel::bind::{Check, HolderKind, NewSocket, PortHolder, conflict, precheck};
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
