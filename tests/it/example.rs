//! `examples/predict.rs` exercises the library's model API without sockets;
//! this runs its cases and checks the answers against the kernel rules
//! (not against the example's own output).

#[allow(dead_code)]
#[path = "../../examples/predict.rs"]
mod predict;

use twlab::model::RuleId;

#[test]
fn the_example_predicts_the_rules() {
    let got: Vec<(String, RuleId, String, String)> = predict::cases()
        .iter()
        .map(|c| {
            let (linux, windows, bsd) = predict::predict(c);
            assert!(!linux.explanation.is_empty());
            (
                linux.outcome.short(),
                linux.rule,
                windows.outcome.short(),
                bsd.outcome.short(),
            )
        })
        .collect();
    let s = |v: &str| v.to_string();
    assert_eq!(
        got,
        vec![
            // tcp_twsk_unique() with twp == NULL: timestamps let a bound
            // port take its TIME_WAIT over.
            (
                s("ok"),
                RuleId::TwTakeoverTimestamps,
                s("connect: WSAEADDRINUSE"),
                s("connect: EADDRINUSE")
            ),
            // No timestamps: no PAWS, no takeover.
            (
                s("connect: EADDRNOTAVAIL"),
                RuleId::TwNoTimestamps,
                s("connect: WSAEADDRINUSE"),
                s("connect: EADDRINUSE")
            ),
            // The only port in the range, tcp_tw_reuse=1, older than the
            // 1000 ms delay: taken over. Elsewhere no TIME_WAIT is reused
            // early, so the range is exhausted: Windows WSAEADDRINUSE, BSD
            // EADDRNOTAVAIL (in_pcb_lport_dest).
            (
                s("ok"),
                RuleId::EphemeralTwReuse,
                s("connect: WSAEADDRINUSE"),
                s("connect: EADDRNOTAVAIL")
            ),
        ]
    );
}

#[cfg(target_os = "linux")]
use crate::common;

/// `NetSysctls::linux_defaults()` says it is a fresh namespace's values:
/// held to one, field by field. Two are the machine's, not the kernel's
/// defaults, and are taken from the namespace: `tcp_max_tw_buckets`
/// (sized from the ehash by tcp_sk_init()), and `tcp_tw_reuse_delay`,
/// which kernels before 6.14 do not have.
#[cfg(target_os = "linux")]
#[test]
fn linux_defaults_are_what_a_fresh_namespace_has() {
    use twlab::sysctl::NetSysctls;
    if !common::netns_or_skip("linux_defaults_are_what_a_fresh_namespace_has") {
        return;
    }
    // Not common::in_netns, which turns tcp_rfc1337 on.
    let live = twlab::netns::run_in_fresh(Vec::new(), NetSysctls::read)
        .expect("fresh namespace")
        .expect("its sysctls");
    let defaults = NetSysctls::linux_defaults();
    assert_eq!(
        NetSysctls {
            max_tw_buckets: live.max_tw_buckets,
            tw_reuse_delay_ms: live.tw_reuse_delay_ms.and(defaults.tw_reuse_delay_ms),
            ..defaults
        },
        live
    );
}
