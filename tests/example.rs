//! `examples/predict.rs` exercises the library's model API without sockets;
//! this runs its cases and checks the answers against the kernel rules
//! (not against the example's own output).

#[allow(dead_code)]
#[path = "../examples/predict.rs"]
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
