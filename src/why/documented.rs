//! The same situation on Windows and BSD/macOS, from their documentation
//! (Winsock's SO_REUSEADDR and SO_EXCLUSIVEADDRUSE pages; FreeBSD
//! `in_pcbbind_setup()` and `in_pcbconnect()`), labelled "documented, not
//! run" — consistent with [`crate::model::predict_windows`] and
//! [`crate::model::predict_bsd`].

use super::bind::BindQuestion;
use super::connect::ConnectQuestion;
use super::diagnosis::{Blocking, Diagnosis, Expect, HolderReport, OtherSystem, ReuseKnown};
use super::table::Role;
use crate::model::RuleId as Rule;

const LABEL: &str = "documented, not run";

fn sys(system: &'static str, outcome: String) -> OtherSystem {
    OtherSystem {
        system,
        outcome,
        label: LABEL,
    }
}

/// Does `h` sit on the same address family as the asked one? (Windows and
/// FreeBSD make IPv6 sockets V6ONLY by default, so an IPv6 `[::]` does not
/// claim IPv4 addresses there.)
fn same_family(q: &BindQuestion, h: &HolderReport) -> bool {
    q.addr.is_ipv4() == h.local.is_ipv4()
}

/// Did the table show the holder's SO_REUSEPORT (a SO_REUSEPORT group of
/// listeners)? `None`: not visible.
fn holder_reuseport(h: &HolderReport) -> Option<bool> {
    match &h.reuse {
        ReuseKnown::Inferred { reuseport, .. } => Some(*reuseport),
        _ => None,
    }
}

/// Windows. Sources: Microsoft Learn, "Using SO_REUSEADDR and
/// SO_EXCLUSIVEADDRUSE" (SO_REUSEADDR on the new socket alone shares a port
/// in use, unless the holder set SO_EXCLUSIVEADDRUSE; no SO_REUSEPORT) and
/// "IPPROTO_IPV6 socket options" (IPV6_V6ONLY on by default); bind() does
/// not look at TIME_WAIT sockets (curl KNOWN_BUGS, "--local-port on
/// Windows"; see `model::predict_windows`).
fn bind_windows(q: &BindQuestion, held: &[&HolderReport]) -> String {
    if q.opts.reuseport {
        return "setsockopt(SO_REUSEPORT) fails with WSAENOPROTOOPT: Windows has no SO_REUSEPORT"
            .into();
    }
    let same = held.iter().any(|h| same_family(q, h));
    let active = held
        .iter()
        .any(|h| same_family(q, h) && h.role != Role::TimeWait);
    if held.is_empty() {
        "bind() succeeds: nothing uses the port".into()
    } else if !same {
        "bind() succeeds: the holders are of the other address family, and Windows makes IPv6 sockets V6ONLY by default, so `[::]` and `0.0.0.0` do not overlap".into()
    } else if !active {
        "bind() succeeds: Windows bind() does not look at TIME_WAIT sockets; but a connect() to the same peer then fails with WSAEADDRINUSE (10048) while that 4-tuple is in TIME_WAIT (240 s by default), so a loop retrying bind() over ports never moves on (curl's known bug with --local-port)".into()
    } else if q.opts.reuseaddr {
        "bind() succeeds: SO_REUSEADDR on the new socket alone shares the port, even with a listener, unless the holder set SO_EXCLUSIVEADDRUSE".into()
    } else {
        "bind() fails with WSAEADDRINUSE (10048): the port is in use and the new socket has no SO_REUSEADDR".into()
    }
}

/// FreeBSD and macOS, from sys/netinet/in_pcb.c `in_pcbbind_setup()` (XNU
/// bsd/netinet/in_pcb.c `in_pcbbind()`, the same code): without
/// SO_REUSEADDR/SO_REUSEPORT the port is looked up with INPLOOKUP_WILDCARD
/// (any socket on it, connected and TIME_WAIT included, refuses); with
/// either, only an exact lookup is made, which matches unconnected sockets
/// on the very same address (`inp_faddr == INADDR_ANY`), and those share
/// only with SO_REUSEPORT on both (`reuseport & inp_so_options(t)`).
/// IPv6: FreeBSD's `net.inet6.ip6.v6only` = 1 by default (`in6_pcbbind()`
/// then ignores IPv4 sockets); macOS is dual-stack by default.
fn bind_bsd(q: &BindQuestion, held: &[&HolderReport]) -> String {
    if held.is_empty() {
        return "bind() succeeds: nothing uses the port".into();
    }
    if held.iter().all(|h| !same_family(q, h)) {
        return if q.opts.reuseaddr || q.opts.reuseport {
            "bind() succeeds: on FreeBSD because IPv6 sockets are V6ONLY by default (net.inet6.ip6.v6only = 1, so `[::]` does not claim 0.0.0.0); on macOS (dual-stack by default) because SO_REUSEADDR on the new socket allows a wildcard beside a socket of the other family".into()
        } else {
            "FreeBSD: bind() succeeds because IPv6 sockets are V6ONLY by default (net.inet6.ip6.v6only = 1, so `[::]` and `0.0.0.0` do not overlap); macOS (dual-stack by default): EADDRINUSE, the other family's socket holds the port and the new socket has no SO_REUSEADDR".into()
        };
    }
    // Unconnected sockets on the very same address: only SO_REUSEPORT on
    // both shares the address (in_pcbbind_setup()'s exact lookup).
    let exact: Vec<&&HolderReport> = held
        .iter()
        .filter(|h| {
            matches!(h.role, Role::Listener | Role::BoundOnly) && h.local.ip() == q.addr.ip()
        })
        .collect();
    if !exact.is_empty() {
        let what = if exact.iter().any(|h| h.role == Role::Listener) {
            "a listener"
        } else {
            "a bound socket"
        };
        if !q.opts.reuseport {
            return format!(
                "bind() fails with EADDRINUSE: {what} has the same address and port, and only SO_REUSEPORT on both sockets shares it (SO_REUSEADDR does not)"
            );
        }
        return match exact
            .iter()
            .map(|h| holder_reuseport(h))
            .collect::<Option<Vec<bool>>>()
        {
            Some(v) if v.iter().all(|r| *r) => format!(
                "bind() succeeds: SO_REUSEPORT on both sockets shares the same address and port ({what} in a SO_REUSEPORT group); macOS does not balance connections between them, FreeBSD only with SO_REUSEPORT_LB"
            ),
            Some(_) => format!(
                "bind() fails with EADDRINUSE: {what} has the same address and port without SO_REUSEPORT; SO_REUSEPORT must be on both sockets"
            ),
            None => format!(
                "bind() succeeds only if {what} on the same address set SO_REUSEPORT too (not visible here): the same address and port needs SO_REUSEPORT on both sockets"
            ),
        };
    }
    if q.opts.reuseaddr || q.opts.reuseport {
        "bind() succeeds: with SO_REUSEADDR (or SO_REUSEPORT) on the new socket only an exact lookup is made, and it skips connected and TIME_WAIT sockets and a wildcard beside a specific address".into()
    } else {
        "bind() fails with EADDRINUSE: the port is held and the new socket has neither SO_REUSEADDR nor SO_REUSEPORT (any socket on the port refuses the wildcard lookup)".into()
    }
}

/// bind() of the same address with the same holders.
pub(crate) fn bind_elsewhere(q: &BindQuestion, holders: &[HolderReport]) -> Vec<OtherSystem> {
    // Overlap as Linux sees it, plus the other family's sockets (V6ONLY
    // defaults decide those per system).
    let held: Vec<&HolderReport> = holders
        .iter()
        .filter(|h| h.blocking != Blocking::NoOverlap || !same_family(q, h))
        .collect();
    vec![
        sys("Windows", bind_windows(q, &held)),
        sys("BSD/macOS", bind_bsd(q, &held)),
    ]
}

/// connect() toward the same destination.
pub(crate) fn connect_elsewhere(q: &ConnectQuestion, d: &Diagnosis) -> Vec<OtherSystem> {
    let fixed = q.from.is_some_and(|f| f.port() != 0);
    let (windows, bsd) = match (d.rule, &d.expect) {
        (Rule::BindConflict, _) => return d.other_systems.clone(),
        (Rule::TupleBusy | Rule::TwTakeoverTimestamps | Rule::TwNoTimestamps, _) if fixed => (
            "connect() fails with WSAEADDRINUSE while the old socket holds the 4-tuple (TIME_WAIT lasts 240 s by default, TcpTimedWaitDelay)".to_string(),
            "connect() fails with EADDRINUSE while the 4-tuple is in use (in_pcbconnect()); a TIME_WAIT lasts 2×MSL".to_string(),
        ),
        (Rule::EphemeralExhausted | Rule::BindAutoExhausted, _) => (
            "connect() fails with WSAENOBUFS/WSAEADDRINUSE once the dynamic range (49152-65535 by default) has no free port toward the destination".to_string(),
            "connect() fails with EADDRNOTAVAIL when no port in net.inet.ip.portrange.first-last is free for the 4-tuple".to_string(),
        ),
        (_, Expect::Ok) => (
            "connect() succeeds: a free port or 4-tuple is available".to_string(),
            "connect() succeeds: a free port or 4-tuple is available".to_string(),
        ),
        _ => (
            "same failure expected: the port or 4-tuple is in use".to_string(),
            "same failure expected: the port or 4-tuple is in use".to_string(),
        ),
    };
    vec![sys("Windows", windows), sys("BSD/macOS", bsd)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{SockEntry, TcpState};
    use crate::socket::{Family, SocketOpts};
    use crate::sysctl::NetSysctls;
    use crate::why::{Asker, Table, diagnose_bind};
    use std::net::SocketAddr;

    fn sysctls() -> NetSysctls {
        NetSysctls::from_lookup(|n| {
            Some(
                match n {
                    "net.ipv4.tcp_timestamps" => "1",
                    "net.ipv4.tcp_tw_reuse" => "2",
                    "net.ipv4.ip_local_port_range" => "32768 60999",
                    "net.ipv4.ip_local_reserved_ports" => "",
                    "net.ipv4.tcp_max_tw_buckets" => "262144",
                    "net.ipv6.bindv6only" => "0",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .unwrap()
    }

    fn sock(state: TcpState, local: &str, peer: &str) -> SockEntry {
        let local: SocketAddr = local.parse().unwrap();
        SockEntry {
            family: Family::of(&local),
            state,
            local,
            peer: peer.parse().unwrap(),
            timer: None,
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode: 1,
            v6only: None,
            pid: None,
        }
    }

    /// The documented answers for a bind() of `addr` with `opts` over `entries`.
    fn elsewhere(addr: &str, opts: SocketOpts, entries: Vec<SockEntry>) -> (String, String) {
        let q = BindQuestion {
            addr: addr.parse().unwrap(),
            opts,
            v6only: false,
            uid: 0,
            cap_net_bind_service: true,
            asker: Asker::Unknown,
        };
        let d = diagnose_bind(&q, &Table::from_entries(entries), &sysctls());
        let get = |name: &str| {
            d.other_systems
                .iter()
                .find(|o| o.system == name)
                .map(|o| o.outcome.clone())
                .unwrap()
        };
        (get("Windows"), get("BSD/macOS"))
    }

    fn opts(reuseaddr: bool, reuseport: bool) -> SocketOpts {
        SocketOpts {
            reuseaddr,
            reuseport,
            ..SocketOpts::default()
        }
    }

    #[test]
    fn windows_bind_ignores_time_wait() {
        let tw = sock(TcpState::TimeWait, "127.0.0.1:23456", "127.0.0.1:12345");
        let (w, b) = elsewhere("127.0.0.1:23456", opts(false, false), vec![tw]);
        assert!(
            w.starts_with("bind() succeeds: Windows bind() does not look at TIME_WAIT"),
            "{w}"
        );
        assert!(
            w.contains("WSAEADDRINUSE") && w.contains("--local-port"),
            "{w}"
        );
        assert!(b.starts_with("bind() fails with EADDRINUSE"), "{b}");
    }

    #[test]
    fn bsd_names_reuseport_on_both_for_the_same_address() {
        let l = sock(TcpState::Listen, "127.0.0.1:8080", "0.0.0.0:0");
        let (_, b) = elsewhere("127.0.0.1:8080", opts(false, true), vec![l.clone()]);
        assert!(b.contains("SO_REUSEPORT on both"), "{b}");
        assert!(!b.contains("SO_REUSEADDR on the new socket allows"), "{b}");
        let (_, b) = elsewhere("127.0.0.1:8080", opts(true, false), vec![l]);
        assert!(b.starts_with("bind() fails with EADDRINUSE"), "{b}");
        assert!(b.contains("only SO_REUSEPORT on both"), "{b}");
    }

    #[test]
    fn bsd_names_freebsd_v6only_for_v6_wildcard_beside_v4() {
        let l = sock(TcpState::Listen, "0.0.0.0:8080", "0.0.0.0:0");
        let (w, b) = elsewhere("[::]:8080", opts(false, false), vec![l]);
        assert!(b.contains("V6ONLY by default"), "{b}");
        assert!(b.contains("FreeBSD: bind() succeeds"), "{b}");
        assert!(w.contains("V6ONLY by default"), "{w}");
    }
}
