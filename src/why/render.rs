//! A diagnosis as text: the long form `twlab why` prints, and a short form
//! (a few lines) for a program that just got the errno.

use super::diagnosis::{Agreement, Asked, Blocking, Diagnosis, HolderReport, ReuseKnown};
use super::table::{Origin, Role};
use crate::model::range::RangeUse;
use crate::text::group;
use std::fmt::Write;

/// How many holder lines the long form prints before "… N more".
const MAX_HOLDER_LINES: usize = 20;

fn asked_line(d: &Diagnosis) -> String {
    match &d.asked {
        Asked::Bind { addr, opts, .. } => format!("bind {addr} (options: {})", opts.label()),
        Asked::Connect {
            dst,
            from,
            bind_no_port,
        } => format!(
            "connect {dst}{}{}",
            from.map(|f| format!(" from {f}")).unwrap_or_default(),
            if *bind_no_port {
                " with IP_BIND_ADDRESS_NO_PORT"
            } else {
                ""
            }
        ),
        Asked::Port { port } => format!("port {port}"),
    }
}

/// One holder: "TIME_WAIT 127.0.0.1:8080 → 127.0.0.1:40312, timewait 41.312 s, accepted (server side), no owner — blocks unless it has SO_REUSEADDR".
pub fn holder_line(h: &HolderReport) -> String {
    let mut s = format!("{:<11} {}", h.state.to_string(), h.local);
    if h.role != Role::Listener && h.role != Role::BoundOnly {
        let _ = write!(s, " → {}", h.peer);
    }
    if let Some(t) = h.timer {
        let _ = write!(
            s,
            ", {} {:.3} s",
            t.kind.ss_name(),
            f64::from(t.expires_ms) / 1000.0
        );
    }
    if h.timewait_sock && h.state != crate::diag::TcpState::TimeWait {
        s.push_str(" (timewait mini-socket)");
    }
    match h.origin {
        Origin::Incoming if h.role != Role::Listener => s.push_str(", accepted (server side)"),
        Origin::Outgoing => s.push_str(", outgoing (client side)"),
        _ => {}
    }
    if h.role == Role::BoundOnly {
        s.push_str(", bound only");
    }
    if h.local.is_ipv6() && h.local.ip().is_unspecified() {
        s.push_str(match h.v6only {
            Some(false) => ", dual-stack (V6ONLY off: it holds the IPv4 addresses too)",
            Some(true) => ", V6ONLY (no IPv4)",
            None => ", IPv6 wildcard (V6ONLY not in this dump)",
        });
    }
    if h.self_connected {
        s.push_str(", SELF-CONNECTED");
    }
    if h.timewait_sock {
        s.push_str(", no owner (TIME_WAIT)");
    } else if h.owners.is_empty() {
        let _ = write!(s, ", uid {}", h.uid.unwrap_or(0));
    } else {
        let who: Vec<String> = h
            .owners
            .iter()
            .map(|o| format!("{}/{}", o.name, o.pid))
            .collect();
        let _ = write!(s, ", {} (uid {})", who.join(" "), h.uid.unwrap_or(0));
    }
    let b = match &h.blocking {
        Blocking::NoOverlap => "does not overlap".to_string(),
        Blocking::Always => "blocks".to_string(),
        Blocking::Never => "shares".to_string(),
        Blocking::Unless { needs } => format!("blocks unless {needs}"),
        Blocking::HoldsTuple => "holds the 4-tuple".to_string(),
    };
    let _ = write!(s, " — {b}");
    if let ReuseKnown::Learned { .. } = &h.reuse {
        s.push_str(" (reuse options learned by --try, below)");
    }
    s
}

/// Where the holders not printed can be read: `--json` has every holder
/// the diagnosis kept; past [`super::diagnosis::HOLDERS_LISTED`] only
/// `twlab ss` lists them all.
fn all_of_them(d: &Diagnosis) -> String {
    match (&d.asked, d.holders_not_listed) {
        (_, 0) => "--json lists all".into(),
        (Asked::Connect { dst, .. }, n) => format!(
            "--json lists {} of them, {n} are counted only; `twlab ss --peer {dst}` lists all",
            d.holders.len()
        ),
        (_, n) => format!(
            "--json lists {} of them, {n} are counted only",
            d.holders.len()
        ),
    }
}

/// The long form.
// One section after the other, in the order a reader needs them.
pub fn long(d: &Diagnosis) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "twlab why {}", asked_line(d));
    let _ = writeln!(o, "\nLinux: {}", d.expect.describe());
    let _ = writeln!(o, "  rule: {} — {}", d.rule, d.kernel_fn);
    let _ = writeln!(o, "  {}", d.explanation);
    let title = match &d.asked {
        Asked::Connect { .. } => "Sockets that stand in the way",
        _ => "The port's bind bucket (every socket on the port)",
    };
    if d.holders.is_empty() {
        let _ = writeln!(o, "\n{title}: none");
    } else {
        let _ = writeln!(o, "\n{title}:");
        for h in d.holders.iter().take(MAX_HOLDER_LINES) {
            let _ = writeln!(o, "  {}", holder_line(h));
        }
        let total = d.holders.len() + d.holders_not_listed;
        if total > MAX_HOLDER_LINES {
            let _ = writeln!(
                o,
                "  … {} more ({})",
                total - MAX_HOLDER_LINES,
                all_of_them(d)
            );
        }
    }
    if let Some(n) = crate::model::kernel::version::bound_only_blind_spot() {
        let _ = writeln!(o, "  {n}");
    }
    if !d.variants.is_empty() {
        let _ = writeln!(o, "\nWith each option set on the new socket:");
        for v in &d.variants {
            let _ = writeln!(o, "  {:<20} {}", v.label, v.expect.describe());
        }
    }
    if let Some(c) = &d.capacity {
        let _ = writeln!(
            o,
            "\nEphemeral ports ({}-{}, {} ports):",
            c.range.low, c.range.high, c.range_ports
        );
        let _ = writeln!(
            o,
            "  reserved {}, owned by bind() {}, 4-tuple held {}, TIME_WAIT not reusable {}, TIME_WAIT reusable {}, free {}",
            c.reserved,
            c.bind_owned,
            c.tuple_busy,
            c.time_wait_blocking,
            c.time_wait_reusable,
            c.free
        );
        let _ = writeln!(o, "  usable now: {}", c.usable);
        let _ = writeln!(o, "  {}", c.time_wait_note);
        let _ = writeln!(o, "  {}", c.tuple_limit);
    }
    if !d.flags.is_empty() {
        let _ = writeln!(o, "\nFlags:");
        for f in &d.flags {
            let _ = writeln!(o, "  ! {}", f.describe());
        }
    }
    if !d.fixes.is_empty() {
        let _ = writeln!(o, "\nFixes, best first:");
        for (i, f) in d.fixes.iter().enumerate() {
            let _ = writeln!(o, "  {}. {} (cost: {})", i + 1, f.text, f.cost);
        }
    }
    if !d.unknowns.is_empty() {
        let _ = writeln!(o, "\nNot visible here:");
        for u in &d.unknowns {
            let _ = writeln!(o, "  - {u}");
        }
    }
    if !d.other_systems.is_empty() {
        let _ = writeln!(o, "\nElsewhere:");
        for s in &d.other_systems {
            let _ = writeln!(o, "  {} ({}): {}", s.system, s.label, s.outcome);
        }
    }
    if !d.tried.is_empty() {
        let _ = writeln!(o, "\n--try (the kernel's answer, socket closed at once):");
        for t in &d.tried {
            let got = match (&t.error, t.port) {
                (Some(e), _) => format!("failed with {}", e.name),
                (None, Some(p)) => format!("accepted (port {p})"),
                (None, None) => "accepted".into(),
            };
            let verdict = match t.agrees {
                Agreement::Agrees => "as predicted".to_string(),
                Agreement::Resolves => "resolves what the prediction left open".to_string(),
                Agreement::Mismatch => "MISMATCH with the prediction".to_string(),
            };
            let lesson = t
                .learned
                .as_ref()
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            let _ = writeln!(o, "  {:<20} {got} — {verdict}{lesson}", t.label);
            if let Some(h) = &t.handshake {
                let _ = writeln!(o, "  {:<20} handshake: {h}", "");
            }
            if let Some(v) = &t.kernel_verdict {
                let _ = writeln!(o, "  {:<20} why, in the kernel's words: {v}", "");
            }
            for l in &t.kernel_events {
                let _ = writeln!(o, "  {:<20} {l}", "");
            }
        }
    }
    o
}

/// How many holder lines the short form prints before "… N more".
const SHORT_HOLDER_LINES: usize = 3;

/// The short form: what fails, who holds it (the sockets that stand in the
/// way, at most three), the ephemeral range accounting when the question
/// has one, flags, and the top two fixes.
pub fn short(d: &Diagnosis) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "why: {} ({}: {})",
        d.expect.describe(),
        d.rule,
        d.kernel_fn
    );
    let _ = writeln!(o, "  {}", d.explanation);
    let in_way: Vec<&HolderReport> = d
        .holders
        .iter()
        .filter(|h| !matches!(h.blocking, Blocking::NoOverlap | Blocking::Never))
        .collect();
    for h in in_way.iter().take(SHORT_HOLDER_LINES) {
        let _ = writeln!(o, "  holder: {}", holder_line(h));
    }
    let in_way_total = in_way.len() + d.holders_not_listed;
    if in_way_total > SHORT_HOLDER_LINES {
        let _ = writeln!(
            o,
            "  … {} more holders (`twlab why {}` {})",
            in_way_total - SHORT_HOLDER_LINES,
            why_args(d),
            if d.holders_not_listed == 0 {
                "lists all"
            } else {
                "lists more"
            }
        );
    }
    if let Some(c) = &d.capacity {
        let _ = writeln!(
            o,
            "  ephemeral ports {}-{} ({}): reserved {}, owned by bind() {}, 4-tuple held {}, TIME_WAIT not reusable {}, TIME_WAIT reusable {}, free {}; usable now {}",
            c.range.low,
            c.range.high,
            c.range_ports,
            c.reserved,
            c.bind_owned,
            c.tuple_busy,
            c.time_wait_blocking,
            c.time_wait_reusable,
            c.free,
            c.usable
        );
    }
    for f in d.flags.iter().take(2) {
        let _ = writeln!(o, "  ! {}", f.describe());
    }
    for (i, f) in d.fixes.iter().take(2).enumerate() {
        let _ = writeln!(o, "  fix {}: {} (cost: {})", i + 1, f.text, f.cost);
    }
    o
}

/// The `twlab why` arguments that ask the same question.
pub fn why_args(d: &Diagnosis) -> String {
    match &d.asked {
        Asked::Bind { addr, opts, .. } => {
            let mut s = format!("bind {addr}");
            if opts.reuseaddr {
                s.push_str(" --reuseaddr");
            }
            if opts.reuseport {
                s.push_str(" --reuseport");
            }
            s
        }
        Asked::Connect {
            dst,
            from,
            bind_no_port,
        } => {
            let mut s = format!("connect {dst}");
            if let Some(f) = from {
                let _ = write!(s, " --from {f}");
            }
            if *bind_no_port {
                s.push_str(" --bind-no-port");
            }
            s
        }
        Asked::Port { port } => format!("port {port}"),
    }
}

/// Every occupant of the ephemeral range, then the pairs with the fewest
/// usable ports (`ss --summary`).
pub fn range_lines(u: &RangeUse) -> Vec<String> {
    let n = |v: u32| group(u64::from(v));
    let mut lines = vec![format!(
        "occupants: {} listening, {} bound only, {} held by connections, {} reserved, {} empty; connect() to a new peer can use {}",
        n(u.listeners),
        n(u.bound_only),
        n(u.connections),
        n(u.reserved),
        n(u.empty),
        n(u.usable_new_peer)
    )];
    for p in &u.peers {
        let c = &p.capacity;
        lines.push(format!(
            "{} -> {}: {} usable of {} ({} held by open connections, {} of them ESTABLISHED, {} TIME_WAIT not reusable, {} TIME_WAIT reusable)",
            p.local_addr,
            p.peer,
            n(c.usable),
            n(u.pickable()),
            n(c.tuple_busy),
            n(p.established.min(c.tuple_busy)),
            n(c.time_wait_blocking),
            n(c.time_wait_reusable)
        ));
    }
    lines
}
