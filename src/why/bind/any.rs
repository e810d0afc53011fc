//! bind(addr, 0): which port the kernel would pick, from the table, with
//! the same holders and rules as a bind() to a named port.

use super::{BindQuestion, bind_diagnosis, holder_v6only, new_socket, port_holder, report, reuse};
use crate::model::RuleId;
use crate::model::kernel::Fact;
use crate::model::kernel::addr::Claims;
use crate::model::kernel::bind::{Autobind, autobind};
use crate::outcome::Step;
use crate::socket::SocketOpts;
use crate::sysctl::NetSysctls;
use crate::why::diagnosis::{Blocking, Capacity, Diagnosis, Errno, Expect};
use crate::why::fix::Fix;
use crate::why::table::{Occupant, Table};

/// bind(addr, 0): [`kernel::bind::autobind`] over the table, once for
/// holders without SO_REUSEADDR and once with it, since sock_diag cannot
/// show it and only `ip_autobind_reuse`'s relaxed pass looks at it.
pub(super) fn diagnose_bind_any(q: &BindQuestion, table: &Table, sys: &NetSysctls) -> Diagnosis {
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
