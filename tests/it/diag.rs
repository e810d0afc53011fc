//! Exact lookups (SOCK_DIAG_BY_FAMILY without NLM_F_DUMP) against this
//! kernel, in a fresh namespace: every state the story produces, each
//! cross-checked against a dump of the whole table.

use crate::common;

use common::*;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use twlab::diag::{self, DiagSocket, Query, SockEntry, StateSet, TcpState, TimerKind};

/// The socket with this (local, peer) in a dump of everything.
fn from_dump(local: SocketAddr, peer: SocketAddr) -> Option<SockEntry> {
    let q = Query::states(StateSet::all().with_bound_inactive());
    diag::dump(&q)
        .unwrap()
        .into_iter()
        .find(|e| e.local == local && e.peer == peer)
}

/// Look `local` → `peer` up, check the dump agrees, return the state.
fn lookup_agrees(nl: &mut DiagSocket, local: SocketAddr, peer: SocketAddr) -> Option<TcpState> {
    let got = nl.lookup(local, peer).unwrap();
    let want = from_dump(local, peer);
    match (&got, &want) {
        (Some(g), Some(w)) => {
            let key = |e: &SockEntry| (e.state, e.local, e.peer, e.timer.map(|t| t.kind), e.inode);
            assert_eq!(key(g), key(w), "lookup vs dump for {local} → {peer}");
            // The timer ran on between the two answers: within a second.
            if let (Some(a), Some(b)) = (g.timer, w.timer) {
                assert!(a.expires_ms.abs_diff(b.expires_ms) < 1000, "{a:?} vs {b:?}");
            }
        }
        (None, None) => {}
        _ => panic!("{local} → {peer}: lookup {got:?}, dump {want:?}"),
    }
    got.map(|e| e.state)
}

fn wait(c: SocketAddr, s: SocketAddr, what: &str, pred: impl Fn(&diag::TupleView) -> bool) {
    let (v, ok) = diag::wait_for(c, s, Duration::from_secs(10), pred).unwrap();
    assert!(ok, "{what} never came: {v:?}");
}

#[test]
fn lookup_finds_every_state_of_the_story_as_the_dump_does() {
    if !netns_or_skip("lookup_finds_every_state_of_the_story_as_the_dump_does") {
        return;
    }
    let found = in_netns(&[], || {
        let mut nl = DiagSocket::open().unwrap();
        let mut found = Vec::new();
        let s: SocketAddr = "127.0.0.1:12345".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let l = TcpListener::bind(s).unwrap();
        found.push(lookup_agrees(&mut nl, s, any));

        // ESTABLISHED at both ends.
        let c = TcpStream::connect(s).unwrap();
        let ca = c.local_addr().unwrap();
        let (a, _) = l.accept().unwrap();
        found.push(lookup_agrees(&mut nl, ca, s));
        found.push(lookup_agrees(&mut nl, s, ca));
        assert_eq!(
            nl.tuple_view(ca, s).unwrap(),
            diag::tuple_view(ca, s).unwrap()
        );

        // Half-closed: a full FIN_WAIT2 socket and CLOSE_WAIT.
        c.shutdown(Shutdown::Write).unwrap();
        wait(ca, s, "FIN_WAIT2/CLOSE_WAIT", |v| {
            v.client_state() == Some(TcpState::FinWait2)
                && v.server_state() == Some(TcpState::CloseWait)
        });
        found.push(lookup_agrees(&mut nl, ca, s));
        found.push(lookup_agrees(&mut nl, s, ca));

        // The server closes: the client end becomes TIME_WAIT, with its
        // time left; the server end is gone, and the lookup of its
        // 4-tuple must not answer with the listener on the same port.
        drop(a);
        wait(ca, s, "TIME_WAIT", |v| {
            v.client_state() == Some(TcpState::TimeWait) && v.server.is_none()
        });
        found.push(lookup_agrees(&mut nl, ca, s));
        let tw = nl.lookup(ca, s).unwrap().unwrap();
        assert!(
            tw.time_wait_left()
                .is_some_and(|d| d <= Duration::from_secs(60))
        );
        assert_eq!(lookup_agrees(&mut nl, s, ca), None);
        drop(c);

        // Orphaned FIN_WAIT2: the client closes, the server never does.
        let mut c2 = TcpStream::connect(s).unwrap();
        let c2a = c2.local_addr().unwrap();
        let (_a2, _) = l.accept().unwrap();
        c2.flush().unwrap();
        drop(c2);
        wait(c2a, s, "a FIN_WAIT2 timewait mini socket", |v| {
            v.client
                .as_ref()
                .is_some_and(|e| e.state == TcpState::FinWait2 && e.is_timewait_sock())
        });
        found.push(lookup_agrees(&mut nl, c2a, s));
        let mini = nl.lookup(c2a, s).unwrap().unwrap();
        assert_eq!(mini.timer.map(|t| t.kind), Some(TimerKind::Timewait));

        // Absent: NLMSG_ERROR -ENOENT, answered as None.
        let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(lookup_agrees(&mut nl, nowhere, s), None);

        // Bound only: not in any lookup hash; the dump's bind-hash walk
        // (bit 13, not bit 7) finds it, reported as CLOSE.
        let b = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let ba: SocketAddr = "127.0.0.1:23456".parse().unwrap();
        b.bind(&ba.into()).unwrap();
        let closed = |q: StateSet| {
            diag::dump(&Query::states(q))
                .unwrap()
                .into_iter()
                .any(|e| e.local == ba)
        };
        assert!(!closed(StateSet::of(&[TcpState::Closed])));
        assert!(closed(
            StateSet::of(&[TcpState::Closed]).with_bound_inactive()
        ));
        found.push(lookup_agrees(&mut nl, ba, any));
        assert!(
            nl.uses_exact_lookups(),
            "this kernel refused exact requests"
        );
        found
    });
    use TcpState::*;
    assert_eq!(
        found,
        [
            Some(Listen),
            Some(Established),
            Some(Established),
            Some(FinWait2),
            Some(CloseWait),
            Some(TimeWait),
            Some(FinWait2),
            Some(Closed)
        ]
    );
}

/// A dump filtered by peer port (`Query::peer_port`, the kernel's
/// `idiag_dport`) returns exactly the connections of an unfiltered dump
/// whose peer has that port: the client ends to that server, in every
/// state, TIME_WAIT included; none of the server's own ends. By own port
/// (`local_port`, `idiag_sport`): the listener and the server's ends. At
/// either end (`either_port`, filter bytecode): both, each once, nothing
/// else — not even the other listener.
#[test]
fn a_dump_filtered_by_port_is_the_unfiltered_dump_cut_to_that_port() {
    if !netns_or_skip("a_dump_filtered_by_port_is_the_unfiltered_dump_cut_to_that_port") {
        return;
    }
    let (filtered, cut) = in_netns(&[], || {
        let a = TcpListener::bind("127.0.0.1:5000").unwrap();
        let b = TcpListener::bind("127.0.0.1:5001").unwrap();
        let mut keep = Vec::new();
        for (n, to) in [(3, "127.0.0.1:5000"), (2, "127.0.0.1:5001")] {
            for _ in 0..n {
                let c = TcpStream::connect(to).unwrap();
                let s = if to.ends_with("5000") {
                    a.accept()
                } else {
                    b.accept()
                };
                keep.push((c, s.unwrap().0));
            }
        }
        // One client end to 5000 in TIME_WAIT: it closes first.
        let (c, s) = keep.remove(0);
        drop(c);
        drop(s);
        wait_until(Duration::from_secs(5), "a TIME_WAIT", || {
            (count(&[TcpState::TimeWait]) == 1).then_some(())
        });
        let key = |e: &SockEntry| (e.local, e.peer, e.state);
        let q = Query {
            peer_port: Some(5000),
            ..Query::states(StateSet::all())
        };
        let mut filtered: Vec<_> = diag::dump(&q)
            .unwrap()
            .iter()
            .filter(|e| e.state != TcpState::Listen)
            .map(key)
            .collect();
        let mut cut: Vec<_> = diag::dump(&Query::states(StateSet::all()))
            .unwrap()
            .iter()
            .filter(|e| e.state != TcpState::Listen && e.peer.port() == 5000)
            .map(key)
            .collect();
        filtered.sort();
        cut.sort();
        // And by own port: the server ends on 5001 (its listener too).
        let q = Query {
            local_port: Some(5001),
            ..Query::states(StateSet::all())
        };
        let mut own: Vec<_> = diag::dump(&q).unwrap().iter().map(key).collect();
        let mut own_cut: Vec<_> = diag::dump(&Query::states(StateSet::all()))
            .unwrap()
            .iter()
            .filter(|e| e.local.port() == 5001)
            .map(key)
            .collect();
        own.sort();
        own_cut.sort();
        assert_eq!(own, own_cut);
        assert_eq!(own.len(), 3, "listener and two server ends: {own:?}");
        // Either end, by filter bytecode: exactly those, each once.
        let q = Query {
            either_port: Some(5001),
            ..Query::states(StateSet::all())
        };
        let on_5001 = |e: &&SockEntry| e.local.port() == 5001 || e.peer.port() == 5001;
        let all = diag::dump(&Query::states(StateSet::all())).unwrap();
        let mut either: Vec<_> = diag::dump(&q).unwrap().iter().map(key).collect();
        let mut either_cut: Vec<_> = all.iter().filter(on_5001).map(key).collect();
        either.sort();
        either_cut.sort();
        assert_eq!(either, either_cut, "the kernel kept only these");
        assert_eq!(
            either.len(),
            5,
            "listener, two server ends, two client ends: {either:?}"
        );
        drop(keep);
        (filtered, cut)
    });
    assert_eq!(filtered, cut);
    assert_eq!(filtered.len(), 3, "{filtered:?}");
    assert!(
        filtered.iter().any(|(_, _, s)| *s == TcpState::TimeWait),
        "{filtered:?}"
    );
}
