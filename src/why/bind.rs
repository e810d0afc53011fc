//! bind(): who is in the port's bind bucket and whether each one lets the
//! new socket share the port (`inet_csk_get_port()` →
//! `inet_csk_bind_conflict()` → `inet_bind_conflict()` /
//! `inet_bhash2_conflict()`), with the reuse rule itself taken from
//! [`crate::model`] so it is written once.

use super::diagnosis::{
    Asked, Blocking, Capacity, Diagnosis, Errno, Expect, Flag, HolderReport, ReuseKnown, Rule,
    Variant,
};
use super::documented::bind_elsewhere;
use super::fix::Fix;
use super::table::{Cover, Occupant, Origin, Role, Table, origin, role, self_connected};
use crate::diag::{SockEntry, TcpState};
use crate::model::{Holder, RuleId, bind_shares};
use crate::outcome::Step;
use crate::socket::SocketOpts;
use crate::sysctl::NetSysctls;
use std::net::SocketAddr;

/// A bind() to diagnose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindQuestion {
    /// The address and port (port 0: the kernel picks one).
    pub addr: SocketAddr,
    /// SO_REUSEADDR / SO_REUSEPORT of the new socket.
    pub opts: SocketOpts,
    /// IPV6_V6ONLY of the new socket (ignored for IPv4).
    pub v6only: bool,
    /// The new socket's effective uid (SO_REUSEPORT needs the same uid).
    pub uid: u32,
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

/// Does the new socket share the port with `e` if `e` carries `theirs`?
/// `inet_bind_conflict()` with relax and reuseport_ok set, as bind() and
/// listen() call it; the SO_REUSEPORT branch needs the same uid unless the
/// holder is TIME_WAIT.
pub fn shares(q: &BindQuestion, e: &SockEntry, theirs: SocketOpts) -> bool {
    let mini = e.is_timewait_sock() || e.state == TcpState::TimeWait;
    let h = Holder {
        // A timewait mini-socket is TCP_TIME_WAIT to inet_bind_conflict()
        // whatever its substate.
        state: if mini { TcpState::TimeWait } else { e.state },
        mini,
        hashed: true,
        tw_age_ms: None,
        opts: theirs,
    };
    match bind_shares(q.opts, &h) {
        Some(RuleId::BindReuseport) => mini || e.uid == q.uid,
        Some(_) => true,
        None => false,
    }
}

/// Whether `o` blocks the bind in `q`; `default_v6only` stands in for a
/// holder's IPV6_V6ONLY, which this dump does not carry.
pub fn blocking(q: &BindQuestion, o: &SockEntry, default_v6only: bool) -> Blocking {
    let ours = Cover::of(q.addr.ip(), q.v6only);
    let theirs = Cover::of(o.local.ip(), default_v6only);
    if !ours.overlaps(theirs) {
        return Blocking::NoOverlap;
    }
    let s = REUSE_VARIANTS.map(|h| shares(q, o, h));
    match s {
        [true, true, true, true] => Blocking::Never,
        [false, false, false, false] => Blocking::Always,
        [false, true, false, true] => unless("it has SO_REUSEADDR"),
        [false, false, true, true] => unless("it has SO_REUSEPORT"),
        [false, true, true, true] => unless("it has SO_REUSEADDR or SO_REUSEPORT"),
        [false, false, false, true] => unless("it has SO_REUSEADDR and SO_REUSEPORT"),
        _ => unless("its reuse options allow it"),
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
        let what = needs[0].trim_start_matches("it has ");
        if n == 1 {
            format!("the holder has {what}")
        } else {
            format!("all {n} holders have {what}")
        }
    } else {
        format!("each holder has what it needs ({})", needs.join("; "))
    };
    Expect::Depends {
        step: Step::Bind,
        errno: Errno::EADDRINUSE,
        ok_if,
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
        timer: e.timer.map(|t| (t.kind, t.expires_ms)),
        uid: (!tw).then_some(e.uid),
        owners: o.owners.clone(),
        role: role(e),
        origin: origin(e, table, sys.port_range),
        self_connected: self_connected(e),
        reuse: ReuseKnown::Unknown,
        blocking,
    }
}

/// Diagnose `bind(q.addr)` against the live (or given) table.
// Long only because of the Diagnosis literal; the steps are named calls.
pub fn diagnose_bind(q: &BindQuestion, table: &Table, sys: &NetSysctls) -> Diagnosis {
    if q.addr.port() == 0 {
        return diagnose_bind_any(q, table, sys);
    }
    let port = q.addr.port();
    let v6only_default = sys.bindv6only.unwrap_or(false);
    let bucket: Vec<&Occupant> = table.bucket(port).collect();
    let blocks: Vec<Blocking> = bucket
        .iter()
        .map(|o| blocking(q, &o.entry, v6only_default))
        .collect();
    let holders: Vec<HolderReport> = bucket
        .iter()
        .zip(&blocks)
        .map(|(o, b)| report(o, b.clone(), table, sys))
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
                .map(|o| blocking(&vq, &o.entry, v6only_default))
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
    let fixes = if expect == Expect::Ok {
        Vec::new()
    } else {
        bind_fixes(port, &holders, sys)
    };
    let mut unknowns = Vec::new();
    if holders.iter().any(|h| h.blocking != Blocking::NoOverlap) {
        unknowns.push(reuse_unknown_note());
    }
    if holders.iter().any(|h| {
        matches!(h.local, SocketAddr::V6(a) if a.ip().is_unspecified()) && q.addr.is_ipv4()
    }) {
        unknowns.push(format!(
            "IPV6_V6ONLY of the [::]:{port} sockets is not in this dump: taken as net.ipv6.bindv6only={} ({}); with the other value the answer for IPv4 flips",
            u8::from(v6only_default),
            if v6only_default { "v6-only, no IPv4" } else { "dual-stack: it covers every IPv4 address" }
        ));
    }
    Diagnosis {
        other_systems: bind_elsewhere(q, &holders),
        variants,
        flags,
        fixes,
        unknowns,
        ..bind_diagnosis(q, rule, explanation, expect, holders)
    }
}

/// The answer to a bind() question with what every bind diagnosis says
/// alike filled in (the question, the rule and its kernel function, the
/// holders) and the rest empty, for the caller to complete.
fn bind_diagnosis(
    q: &BindQuestion,
    rule: Rule,
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
        holders,
        tried: Vec::new(),
    }
}

/// The sentence for sock_diag's blind spot.
pub(crate) fn reuse_unknown_note() -> String {
    "SO_REUSEADDR/SO_REUSEPORT of the holders cannot be read: sock_diag has no attribute for sk_reuse/sk_reuseport, and a TIME_WAIT keeps the flags of the socket it came from (inet_twsk_alloc()), accepted sockets those of their listener. If a holder has SO_REUSEADDR and is not listening, a new socket with SO_REUSEADDR shares the port; if it has SO_REUSEPORT (same uid, or it is TIME_WAIT), a new socket with SO_REUSEPORT does; without either it blocks. --try asks the kernel.".into()
}

fn bind_explanation(q: &BindQuestion, holders: &[HolderReport], expect: &Expect) -> (Rule, String) {
    let overlapping: Vec<&HolderReport> = holders
        .iter()
        .filter(|h| h.blocking != Blocking::NoOverlap)
        .collect();
    let port = q.addr.port();
    if overlapping.is_empty() {
        let others = if holders.is_empty() {
            "the port's bind bucket is empty".to_string()
        } else {
            format!(
                "the {} socket(s) in port {port}'s bind bucket are on addresses that do not overlap {}",
                holders.len(),
                q.addr.ip()
            )
        };
        return (
            Rule::BindFree,
            format!("{others}, so inet_csk_get_port() gives the port"),
        );
    }
    let summary = summarize(&overlapping);
    match expect {
        Expect::Ok => (
            Rule::BindShared,
            format!(
                "port {port} is held by {summary}, but each lets the new socket ({}) share it (inet_bind_conflict())",
                q.opts.label()
            ),
        ),
        Expect::Fails { .. } => {
            let first = overlapping
                .iter()
                .find(|h| h.blocking == Blocking::Always)
                .unwrap_or(&overlapping[0]);
            (
                Rule::BindConflict,
                format!(
                    "port {port}'s bind bucket holds {summary}; {} on {} refuses to share with a new socket with {}: {} (inet_bind_conflict()), so bind() fails with EADDRINUSE — the whole port counts, not one 4-tuple",
                    state_name(first),
                    first.local,
                    q.opts.label(),
                    why_refuses(q.opts, first)
                ),
            )
        }
        Expect::Depends { ok_if, .. } => (
            Rule::BindConflict,
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
    } else {
        "the SO_REUSEPORT owners have different uids"
    }
}

/// "3 TIME_WAIT (server side), 1 LISTEN".
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

/// Fixes for a refused bind(), best first.
fn bind_fixes(port: u16, holders: &[HolderReport], sys: &NetSysctls) -> Vec<super::fix::RankedFix> {
    let blockers: Vec<&HolderReport> = holders
        .iter()
        .filter(|h| matches!(h.blocking, Blocking::Always | Blocking::Unless { .. }))
        .collect();
    let in_range = sys.port_range.contains(port) && !sys.reserved_ports.contains(port);
    let mut fixes: Vec<Fix> = Vec::new();
    let push = |fixes: &mut Vec<Fix>, f: Fix| {
        if !fixes.contains(&f) {
            fixes.push(f);
        }
    };
    if in_range
        && blockers
            .iter()
            .any(|h| h.origin == Origin::Outgoing || h.self_connected)
    {
        push(&mut fixes, Fix::ReservePort { port });
        push(&mut fixes, Fix::PortOutsideRange);
    }
    for h in blockers
        .iter()
        .filter(|h| h.role == Role::Listener || h.role == Role::BoundOnly)
    {
        let who = h
            .owners
            .first()
            .map(|o| format!("pid {} ({})", o.pid, o.name))
            .unwrap_or_else(|| format!("the {} socket on {}", h.state, h.local));
        push(&mut fixes, Fix::StopHolder { who });
        // SO_REUSEADDR never shares with a listener (inet_bind_conflict()
        // checks sk2->sk_state != TCP_LISTEN); with a bound-only socket it does.
        push(
            &mut fixes,
            if h.role == Role::Listener {
                Fix::ReuseportOnBoth
            } else {
                Fix::ReuseaddrOnBoth
            },
        );
    }
    let tws: Vec<&&HolderReport> = blockers.iter().filter(|h| h.timewait_sock).collect();
    if !tws.is_empty() {
        push(&mut fixes, Fix::ReuseaddrOnBoth);
        let ms = tws
            .iter()
            .filter_map(|h| h.timer.map(|t| t.1))
            .max()
            .unwrap_or(0);
        push(&mut fixes, Fix::Wait { ms });
        if tws.iter().any(|h| h.origin == Origin::Incoming) {
            push(&mut fixes, Fix::ClientClosesFirst);
        }
        if tws.iter().any(|h| h.origin == Origin::Outgoing) {
            push(&mut fixes, Fix::ServerClosesFirst);
        }
        push(&mut fixes, Fix::Linger0);
    }
    if blockers.iter().any(|h| h.role == Role::Connected) {
        push(&mut fixes, Fix::ReuseaddrOnBoth);
    }
    if in_range {
        push(&mut fixes, Fix::ReservePort { port });
    }
    fixes.into_iter().map(Fix::ranked).collect()
}

/// bind(addr, 0): `inet_csk_find_open_port()` wants a port in the range with
/// no overlapping socket at all (it calls the conflict check with relax =
/// false, so SO_REUSEADDR does not help), skipping reserved ports.
// Long only because of the Diagnosis literal and its texts; one pass.
fn diagnose_bind_any(q: &BindQuestion, table: &Table, sys: &NetSysctls) -> Diagnosis {
    let range = sys.port_range;
    let v6 = sys.bindv6only.unwrap_or(false);
    let ours = Cover::of(q.addr.ip(), q.v6only);
    let (mut reserved, mut used, mut free) = (0u32, 0u32, 0u32);
    let mut holders = Vec::new();
    for port in range.low..=range.high {
        if sys.reserved_ports.contains(port) {
            reserved += 1;
            continue;
        }
        let over: Vec<&Occupant> = table
            .bucket(port)
            .filter(|o| ours.overlaps(Cover::of(o.entry.local.ip(), v6)))
            .collect();
        if over.is_empty() {
            free += 1;
        } else {
            used += 1;
            holders.extend(over.iter().map(|o| report(o, Blocking::Always, table, sys)));
        }
    }
    let exhausted = free == 0;
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
        soonest_time_wait_ms: None,
        time_wait_reusable_in_ms: None,
        time_wait_note: "bind(addr, 0) never takes a TIME_WAIT's port over".into(),
        tuple_limit: format!("{free} more sockets can bind {} with port 0", q.addr.ip()),
    };
    let (rule, expect, explanation) = if exhausted {
        (
            Rule::BindAutoExhausted,
            Expect::Fails {
                step: Step::Bind,
                errno: Errno::EADDRINUSE,
            },
            format!(
                "bind({}, 0) takes a port of its own whatever the destination: every one of the {} unreserved ports in {}-{} already has a socket on an overlapping address, and inet_csk_find_open_port() shares none (relax = false), so bind() fails with EADDRINUSE",
                q.addr.ip(),
                range.len() - reserved,
                range.low,
                range.high
            ),
        )
    } else {
        (
            Rule::BindFree,
            Expect::Ok,
            format!(
                "inet_csk_find_open_port() finds {free} port(s) in {}-{} with no socket on an overlapping address",
                range.low, range.high
            ),
        )
    };
    let fixes = if exhausted {
        [
            Fix::BindAddressNoPort,
            Fix::MoreSourceAddresses,
            Fix::WidenRange,
            Fix::KeepAlive,
        ]
        .into_iter()
        .map(Fix::ranked)
        .collect()
    } else {
        Vec::new()
    };
    Diagnosis {
        capacity: Some(capacity),
        fixes,
        ..bind_diagnosis(q, rule, explanation, expect, holders)
    }
}
