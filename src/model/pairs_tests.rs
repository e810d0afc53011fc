//! The pair rules over plain data: no sockets (the real-socket checks are
//! in tests/it/pairs.rs and `twlab pairs`).

use super::*;

fn sock(addr: PairAddr, v6only: V6Only) -> PairSocket {
    PairSocket {
        addr,
        v6only,
        reuseaddr: false,
        reuseport: false,
        uid: Uid::Same,
    }
}

fn case(first: PairSocket, state: FirstState, second: PairSocket) -> PairCase {
    PairCase {
        first,
        state,
        second,
        bindv6only: false,
    }
}

fn second_bind(c: &PairCase) -> String {
    predict_pair(c).second_bind.short()
}

use FirstState::*;
use PairAddr::*;
use V6Only::{Off, On, System};

// ipv6_only_sock(): a dual-stack `::` holds 0.0.0.0 too, a V6ONLY one not.
#[test]
fn dual_stack_any_covers_ipv4_any_unless_v6only() {
    let c = case(sock(V6Any, System), Listening, sock(V4Any, System));
    assert_eq!(second_bind(&c), "EADDRINUSE");
    assert_eq!(predict_pair(&c).rule, RuleId::BindConflict);
    let c = case(sock(V6Any, On), Listening, sock(V4Any, System));
    assert_eq!(second_bind(&c), "ok");
    assert_eq!(predict_pair(&c).rule, RuleId::BindDisjoint);
    // The sysctl decides for `System`.
    let mut c = case(sock(V6Any, System), Listening, sock(V4Loopback, System));
    assert_eq!(second_bind(&c), "EADDRINUSE");
    c.bindv6only = true;
    assert_eq!(second_bind(&c), "ok");
}

// inet_bind2_bucket_match_addr_any(): a wildcard covers a specific address
// of its family; ::1 never meets IPv4.
#[test]
fn wildcard_covers_specific_of_its_family_only() {
    assert_eq!(
        second_bind(&case(
            sock(V4Any, System),
            Listening,
            sock(V4Loopback, System)
        )),
        "EADDRINUSE"
    );
    assert_eq!(
        second_bind(&case(
            sock(V4Any, System),
            Listening,
            sock(V6Loopback, System)
        )),
        "ok"
    );
    assert_eq!(
        second_bind(&case(sock(V6Any, On), Listening, sock(V4Mapped, System))),
        "ok"
    );
    assert_eq!(
        second_bind(&case(sock(V4Loopback, System), Bound, sock(V4Mapped, Off))),
        "EADDRINUSE"
    );
}

// __inet6_bind(): v4-mapped on a V6ONLY socket is EINVAL.
#[test]
fn mapped_on_v6only_is_einval() {
    let mut c = case(sock(V4Mapped, System), Bound, sock(V4Any, System));
    c.bindv6only = true;
    let p = predict_pair(&c);
    assert_eq!(p.first_bind.short(), "EINVAL");
    assert_eq!(p.second_bind, Call::NotRun);
    let c = case(sock(V4Any, System), Bound, sock(V4Mapped, On));
    assert_eq!(second_bind(&c), "EINVAL");
}

// inet_bind_conflict(): SO_REUSEADDR on both shares unless the first
// listens; the listen() re-check then refuses the second listener.
#[test]
fn reuseaddr_then_the_late_listen_fails() {
    let mut a = sock(V4Any, System);
    a.reuseaddr = true;
    let mut b = sock(V4Loopback, System);
    b.reuseaddr = true;
    let p = predict_pair(&case(a, Bound, b));
    assert_eq!(p.rule, RuleId::BindReuseaddr);
    assert_eq!(p.second_listen, Call::Ok);
    assert_eq!(p.first_listen.short(), "EADDRINUSE");
    assert_eq!(second_bind(&case(a, Listening, b)), "EADDRINUSE");
    assert_eq!(second_bind(&case(a, TimeWait, b)), "ok");
}

// The SO_REUSEPORT uid check: another uid is refused unless TIME_WAIT.
#[test]
fn reuseport_needs_the_same_uid_unless_timewait() {
    let mut a = sock(V6Any, Off);
    a.reuseport = true;
    let mut b = sock(V4Any, System);
    b.reuseport = true;
    assert_eq!(second_bind(&case(a, Listening, b)), "ok");
    b.uid = Uid::Other;
    let p = predict_pair(&case(a, Listening, b));
    assert_eq!(p.second_bind.short(), "EADDRINUSE");
    assert!(p.explanation.contains("uid"), "{}", p.explanation);
    assert_eq!(second_bind(&case(a, TimeWait, b)), "ok");
}

// connect() narrows a wildcard; a dual-stack `::` connected keeps
// LOOPBACK4_IPV6 that a later 0.0.0.0 still meets.
#[test]
fn connected_wildcards_narrow_to_the_source_address() {
    assert_eq!(
        second_bind(&case(sock(V4Any, System), Connected, sock(V4Any, System))),
        "EADDRINUSE"
    );
    assert_eq!(
        second_bind(&case(
            sock(V4Any, System),
            Connected,
            sock(V6Loopback, System)
        )),
        "ok"
    );
    assert_eq!(
        second_bind(&case(sock(V6Any, Off), Connected, sock(V4Any, System))),
        "EADDRINUSE"
    );
    assert_eq!(
        second_bind(&case(sock(V6Any, Off), Connected, sock(V4Loopback, System))),
        "ok"
    );
    assert_eq!(
        second_bind(&case(sock(V6Any, On), TimeWait, sock(V4Any, System))),
        "ok"
    );
}

#[test]
fn documented_columns_follow_their_sources() {
    use crate::model::pairs_documented::{predict_pair_bsd, predict_pair_windows};
    // Windows: V6ONLY by default, so [::] then 0.0.0.0 both bind.
    let c = case(sock(V6Any, System), Listening, sock(V4Any, System));
    assert_eq!(predict_pair_windows(&c).second_bind, "ok");
    // Windows: SO_REUSEADDR on the second steals even a listener's port.
    let mut b = sock(V4Any, System);
    b.reuseaddr = true;
    let c = case(sock(V4Any, System), Listening, b);
    assert_eq!(predict_pair_windows(&c).second_bind, "ok");
    // BSD: specific beside wildcard with SO_REUSEADDR, even a listener.
    let mut b = sock(V4Loopback, System);
    b.reuseaddr = true;
    let c = case(sock(V4Any, System), Listening, b);
    assert_eq!(predict_pair_bsd(&c).second_bind, "ok");
    assert_eq!(second_bind(&c), "EADDRINUSE");
    // BSD: full duplicates need SO_REUSEPORT.
    let c = case(sock(V4Loopback, System), Listening, b);
    assert_eq!(predict_pair_bsd(&c).second_bind, "EADDRINUSE");
}

// `--v6only system` and `off` are different rows on Windows and FreeBSD
// (V6ONLY by default there): their labels differ too.
#[test]
fn system_v6only_is_labelled_by_what_it_means() {
    let system = sock(PairAddr::V6Any, V6Only::System).label(false);
    let off = sock(PairAddr::V6Any, V6Only::Off).label(false);
    assert_ne!(system, off);
    assert_eq!(off, ":: dual-stack none");
    assert!(system.contains("default=dual-stack"), "{system}");
    assert!(system.contains("v6-only on Windows/FreeBSD"), "{system}");
    assert_eq!(
        sock(PairAddr::V6Any, V6Only::On).label(false),
        ":: v6-only none"
    );
}
