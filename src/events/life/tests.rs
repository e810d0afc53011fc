//! The lives read from hand-made event sequences.

use super::*;

fn ev(at: u64, sock: u64, l: &str, p: &str, old: TcpState, new: TcpState, ctx: Context) -> Event {
    Event {
        at_ns: at,
        cpu: 0,
        pid: 7,
        comm: Some("x".into()),
        context: ctx,
        sock,
        local: Some(l.parse().unwrap()),
        peer: Some(p.parse().unwrap()),
        what: What::State { old, new },
    }
}

/// One connection of the story's loop, the client closing first:
/// the client end's (local, peer) and the server end's, as each
/// socket's events give them; the lives that ended.
fn story(l: &mut Lives, (c, s): (&str, &str), (sl, sp): (&str, &str)) -> Vec<Life> {
    use Context::*;
    use TcpState::*;
    let seq = [
        ev(0, 1, c, s, Closed, SynSent, Process),
        ev(1, 1, c, s, SynSent, Established, Softirq),
        ev(2, 2, sl, sp, Listen, SynRecv, Softirq),
        ev(3, 2, sl, sp, SynRecv, Established, Softirq),
        ev(4, 1, c, s, Established, FinWait1, Process),
        ev(5, 2, sl, sp, Established, CloseWait, Softirq),
        ev(6, 2, sl, sp, CloseWait, LastAck, Process),
        ev(7, 1, c, s, FinWait1, FinWait2, Softirq),
        ev(8, 1, c, s, FinWait2, Closed, Softirq),
        ev(9, 2, sl, sp, LastAck, Closed, Softirq),
    ];
    seq.iter().flat_map(|e| l.feed(e).lives).collect()
}

#[test]
fn the_client_closing_first_holds_the_time_wait() {
    use Context::*;
    use TcpState::*;
    let (c, s) = ("127.0.0.1:23456", "127.0.0.1:12345");
    let mut l = Lives::default();
    let lives = story(&mut l, (c, s), (s, c));
    assert_eq!(lives.len(), 2);
    assert_eq!(lives[0].role, Role::Client);
    assert_eq!(lives[0].ending, Ending::TimeWait);
    assert_eq!(
        lives[0].states,
        [
            TcpState::SynSent,
            TcpState::Established,
            TcpState::FinWait1,
            TcpState::FinWait2,
            TcpState::TimeWait
        ]
    );
    assert!(lives[0].closed_first);
    assert_eq!(lives[0].closer_pid, Some(7));
    assert_eq!(lives[1].ending, Ending::LastAck);
    assert!(!lives[1].closed_first);
    // The same 4-tuple again: the client's own TIME_WAIT is taken over.
    let tw = l.feed(&ev(20, 3, c, s, Closed, SynSent, Process)).takeovers;
    assert_eq!(tw.len(), 1);
    assert!(tw[0].by.contains("tcp_twsk_unique"));
    let summary = l.summary();
    let svc = &summary.services[s];
    assert_eq!((svc.client_closed_first, svc.tw_taken_over), (1, 1));
    assert_eq!(svc.closers.get("pid 7 x"), Some(&1));
    assert!(summary.lines()[1].contains("TIME_WAIT on the client side"));
}

/// A dual-stack server's accepted socket shows the client's IPv4
/// addresses mapped into IPv6: the two ends still meet, so the
/// client's FIN_WAIT2 → CLOSE after the server's FIN reads TIME_WAIT,
/// not a FIN_WAIT2 timewait socket waiting for a FIN that came.
#[test]
fn both_ends_meet_across_address_families() {
    let (c, s) = ("127.0.0.1:23456", "127.0.0.1:12345");
    let (c6, s6) = ("[::ffff:127.0.0.1]:23456", "[::ffff:127.0.0.1]:12345");
    let mut l = Lives::default();
    let lives = story(&mut l, (c, s), (s6, c6));
    assert_eq!(lives.len(), 2);
    assert_eq!(
        (lives[0].role, &lives[0].ending),
        (Role::Client, &Ending::TimeWait)
    );
    assert_eq!(lives[1].ending, Ending::LastAck);
    assert_eq!(
        l.time_wait(c6.parse().unwrap(), s6.parse().unwrap()),
        Some(8)
    );
}
