//! Wire tests on hand-made bytes laid out as the kernel lays them out.

use super::*;
use std::time::Duration;

/// An inet_diag_msg as inet_twsk_diag_fill() fills it for TIME_WAIT.
fn time_wait_msg() -> Vec<u8> {
    let mut p = vec![0u8; field::LEN];
    p[field::FAMILY] = AF_INET;
    p[field::STATE] = 6; // TIME_WAIT
    p[field::TIMER] = 3; // timewait timer
    p[field::SPORT].copy_from_slice(&23456u16.to_be_bytes());
    p[field::DPORT].copy_from_slice(&12345u16.to_be_bytes());
    p[field::SRC][..4].copy_from_slice(&[127, 0, 0, 1]);
    p[field::DST][..4].copy_from_slice(&[127, 0, 0, 2]);
    p[field::COOKIE].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    p[field::EXPIRES].copy_from_slice(&58_912u32.to_ne_bytes());
    p
}

/// A netlink message: 16-byte header (host order) and `payload`, padded to
/// NLMSG_ALIGN unless `pad` is false.
fn nlmsg(ty: u16, seq: u32, payload: &[u8], pad: bool) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut v = vec![0u8; if pad { (len + 3) & !3 } else { len }];
    let mut nl = NetlinkBuffer::new(&mut v[..]);
    nl.set_length(len as u32);
    nl.set_message_type(ty);
    nl.set_sequence_number(seq);
    v[16..len].copy_from_slice(payload);
    v
}

fn nlmsg_error(seq: u32, errno: i32) -> Vec<u8> {
    // struct nlmsgerr: int error; struct nlmsghdr msg (the request's header).
    let mut p = vec![0u8; 20];
    p[..4].copy_from_slice(&(-errno).to_ne_bytes());
    nlmsg(NLMSG_ERROR, seq, &p, true)
}

#[test]
fn decodes_a_time_wait_message() {
    let p = time_wait_msg();
    let m = InetDiagMsg::new_checked(&p[..]).unwrap();
    assert_eq!(m.cookie(), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(m.interface(), 0);
    let e = m.to_entry().unwrap();
    assert_eq!(e.state, TcpState::TimeWait);
    assert_eq!(e.local, "127.0.0.1:23456".parse().unwrap());
    assert_eq!(e.peer, "127.0.0.2:12345".parse().unwrap());
    assert_eq!(e.time_wait_left(), Some(Duration::from_millis(58_912)));
    assert_eq!(e.describe(), "TIME_WAIT, 58.9 s left");
}

#[test]
fn decodes_a_fin_wait2_mini_socket_and_a_full_one() {
    // tw_substate FIN_WAIT2: an orphaned FIN_WAIT2 socket turned into a
    // mini socket by tcp_time_wait().
    let mut p = time_wait_msg();
    p[field::STATE] = 5;
    p[field::EXPIRES].copy_from_slice(&59_812u32.to_ne_bytes());
    let e = InetDiagMsg::new_checked(&p[..])
        .unwrap()
        .to_entry()
        .unwrap();
    assert_eq!(e.state, TcpState::FinWait2);
    assert!(e.is_timewait_sock());
    assert_eq!(e.time_wait_left(), None);
    assert_eq!(
        e.describe(),
        "FIN_WAIT2 (orphaned, timewait timer 59.8 s left)"
    );
    p[field::TIMER] = 0;
    let e = InetDiagMsg::new_checked(&p[..])
        .unwrap()
        .to_entry()
        .unwrap();
    assert_eq!(e.describe(), "FIN_WAIT2");
}

#[test]
fn decodes_ipv6_with_linux_family_numbers() {
    let mut p = time_wait_msg();
    p[field::FAMILY] = AF_INET6;
    p[field::SRC].copy_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    let e = InetDiagMsg::new_checked(&p[..])
        .unwrap()
        .to_entry()
        .unwrap();
    assert_eq!(e.family, Family::V6);
    assert_eq!(e.local, "[::1]:23456".parse().unwrap());
    // 28 is AF_INET6 on FreeBSD, 30 on macOS, 23 on Windows: not Linux's.
    p[field::FAMILY] = 28;
    let m = InetDiagMsg::new_checked(&p[..]).unwrap();
    assert!(matches!(m.to_entry(), Err(DiagError::Family(28))));
    p[field::FAMILY] = AF_INET;
    p[field::STATE] = 14;
    let m = InetDiagMsg::new_checked(&p[..]).unwrap();
    assert!(matches!(m.to_entry(), Err(DiagError::State(14))));
}

#[test]
fn truncated_messages_are_errors_not_panics() {
    let p = time_wait_msg();
    for len in [0, 1, 52, field::LEN - 1] {
        let e = InetDiagMsg::new_checked(&p[..len]).unwrap_err();
        assert!(
            matches!(e, DiagError::Truncated { len: l, need: field::LEN, .. } if l == len),
            "{e:?}"
        );
    }
    // A netlink header cut short, and one whose length field runs past the
    // datagram.
    let whole = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &p, true);
    for cut in [3, 15, 40, whole.len() - 4] {
        let r: Vec<_> = messages(&whole[..cut]).collect();
        assert_eq!(r.len(), 1, "cut at {cut}");
        assert!(
            matches!(r[0], Err(DiagError::Malformed { .. })),
            "{:?}",
            r[0]
        );
    }
    // A SOCK_DIAG_BY_FAMILY message with a payload shorter than the struct.
    let short = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &p[..40], true);
    let r: Vec<_> = messages(&short).collect();
    let e = r[0].as_ref().unwrap_err();
    assert!(matches!(e, DiagError::Truncated { len: 40, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "inet_diag_msg of 40 bytes, shorter than {} bytes",
            field::LEN
        )
    );
}

#[test]
fn misaligned_messages_decode_the_same() {
    let p = time_wait_msg();
    let want = InetDiagMsg::new_checked(&p[..])
        .unwrap()
        .to_entry()
        .unwrap();
    for shift in 1..8 {
        let mut v = vec![0xaa; shift];
        v.extend_from_slice(&nlmsg(SOCK_DIAG_BY_FAMILY, 7, &p, true));
        let msgs: Vec<_> = messages(&v[shift..]).collect();
        match &msgs[..] {
            [
                Ok(Message {
                    seq: 7,
                    reply: Reply::Sock(m),
                    ..
                }),
            ] => assert_eq!(m.to_entry().unwrap(), want, "shift {shift}"),
            other => panic!("shift {shift}: {other:?}"),
        }
    }
}

#[test]
fn the_next_message_starts_at_nlmsg_align() {
    // A first message of 16 + 5 bytes (unpadded length 21) is followed by
    // padding to 24, then a TIME_WAIT entry, then NLMSG_DONE.
    let mut v = nlmsg(0x7fff, 1, &[9; 5], true);
    assert_eq!(v.len(), 24);
    v.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 1, &time_wait_msg(), true));
    v.extend(nlmsg(NLMSG_DONE, 1, &[0; 4], true));
    let kinds: Vec<String> = messages(&v)
        .map(|m| match m.unwrap().reply {
            Reply::Other(t) => format!("other {t}"),
            Reply::Sock(m) => format!("sock {}", m.to_entry().unwrap().state),
            Reply::Done => "done".into(),
            r => format!("{r:?}"),
        })
        .collect();
    assert_eq!(kinds, ["other 32767", "sock TIME_WAIT", "done"]);
}

#[test]
fn nlmsg_error_carries_the_errno() {
    let mut v = nlmsg_error(3, ENOENT);
    v.extend(nlmsg_error(4, 0));
    v.extend(nlmsg_error(5, 95)); // EOPNOTSUPP
    let r: Vec<(u32, String)> = messages(&v)
        .map(|m| {
            let m = m.unwrap();
            (m.seq, format!("{:?}", m.reply))
        })
        .collect();
    assert_eq!(
        r,
        [
            (3, "Error(2)".to_string()),
            (4, "Ack".to_string()),
            (5, "Error(95)".to_string())
        ]
    );
    // An NLMSG_ERROR too short for its code is a framing error.
    let bad = nlmsg(NLMSG_ERROR, 6, &[0; 2], true);
    assert!(matches!(
        messages(&bad).next(),
        Some(Err(DiagError::Malformed { .. }))
    ));
}

#[test]
fn exact_request_has_the_tuple_and_no_dump_flag() {
    let (l, p): (SocketAddr, SocketAddr) = (
        "127.0.0.1:23456".parse().unwrap(),
        "127.0.0.2:12345".parse().unwrap(),
    );
    let mut out = Vec::new();
    push_request(
        &mut out,
        9,
        Families::One(Family::V4),
        StateSet::all(),
        Ask::Exact(l, p),
    );
    push_request(
        &mut out,
        10,
        Families::One(Family::V6),
        StateSet::none().with_bound_inactive(),
        Ask::ALL,
    );
    // struct nlmsghdr (16) + struct inet_diag_req_v2 (56), twice.
    assert_eq!(out.len(), 2 * 72);
    let nl = NetlinkBuffer::new_checked(&out[..72]).unwrap();
    assert_eq!(nl.message_type(), SOCK_DIAG_BY_FAMILY);
    assert_eq!(nl.flags(), NLM_F_REQUEST);
    assert_eq!(nl.sequence_number(), 9);
    let r = nl.payload();
    // inet_diag_req_v2: family, protocol, ext, pad, states, then the id
    // at offset 8 laid out like inet_diag_msg's from offset 4.
    assert_eq!((r[0], r[1]), (AF_INET, 6));
    assert_eq!(&r[8..10], &23456u16.to_be_bytes());
    assert_eq!(&r[10..12], &12345u16.to_be_bytes());
    assert_eq!(&r[12..16], &[127, 0, 0, 1]);
    assert_eq!(&r[28..32], &[127, 0, 0, 2]);
    assert_eq!(&r[48..56], &[0xff; 8]);
    let nl = NetlinkBuffer::new_checked(&out[72..]).unwrap();
    assert_eq!(nl.flags(), NLM_F_REQUEST | NLM_F_DUMP);
    let r = nl.payload();
    assert_eq!(r[0], AF_INET6);
    assert_eq!(&r[4..8], &(1u32 << 13).to_ne_bytes());
}

#[test]
fn direct_exact_request_is_the_same_bytes_as_the_generic_one() {
    for (l, p) in [
        ("127.0.0.1:23456", "127.0.0.2:12345"),
        ("[::1]:40001", "[fe80::1:2]:80"),
        ("[::ffff:127.0.0.1]:1", "[::1]:65535"),
    ] {
        let (l, p): (SocketAddr, SocketAddr) = (l.parse().unwrap(), p.parse().unwrap());
        let mut generic = Vec::new();
        push_request(
            &mut generic,
            77,
            Families::One(Family::of(&l)),
            StateSet::all(),
            Ask::Exact(l, p),
        );
        let mut direct = Vec::new();
        push_exact_request(&mut direct, 77, l, p);
        assert_eq!(direct.len(), REQUEST_LEN);
        assert_eq!(direct, generic, "{l} → {p}");
    }
}

#[test]
fn either_port_bytecode_is_the_or_of_two_port_tests() {
    let mut out = Vec::new();
    push_request(
        &mut out,
        3,
        Families::One(Family::V4),
        StateSet::all(),
        Ask::Dump {
            peer_port: None,
            local_port: None,
            any_of: &[PortTest::Local(5001), PortTest::Peer(5001)],
        },
    );
    // The request, then one 24-byte attribute; the header counts both.
    assert_eq!(out.len(), 72 + 24);
    let nl = NetlinkBuffer::new_checked(&out[..]).unwrap();
    assert_eq!(nl.length() as usize, out.len());
    assert_eq!(nl.flags(), NLM_F_REQUEST | NLM_F_DUMP);
    let attr = &out[72..];
    assert_eq!(u16::from_ne_bytes([attr[0], attr[1]]), 24);
    assert_eq!(u16::from_ne_bytes([attr[2], attr[3]]), 1); // INET_DIAG_REQ_BYTECODE
    let ops: Vec<(u8, u8, u16)> = attr[4..]
        .chunks(4)
        .map(|c| (c[0], c[1], u16::from_ne_bytes([c[2], c[3]])))
        .collect();
    // S_EQ, its port; JMP; D_EQ, its port (linux/inet_diag.h: 11, 1, 12).
    assert_eq!(
        ops,
        [
            (11, 8, 12),
            (0, 0, 5001),
            (1, 4, 12),
            (12, 8, 12),
            (0, 0, 5001)
        ]
    );
    // Run it as inet_diag_bc_run() does, on own/peer ports.
    let run = |sport: u16, dport: u16| {
        let mut at = 0usize;
        let mut len = 20i32;
        while len > 0 {
            let (code, yes, no) = ops[at / 4];
            let hit = match code {
                11 => sport == ops[at / 4 + 1].2,
                12 => dport == ops[at / 4 + 1].2,
                _ => false, // JMP
            };
            let step = if hit { i32::from(yes) } else { i32::from(no) };
            len -= step;
            at += step as usize;
        }
        len == 0
    };
    assert!(run(5001, 40000));
    assert!(run(40000, 5001));
    assert!(run(5001, 5001));
    assert!(!run(40000, 40001));
    assert!(!run(5002, 0));
}

/// The kernel's two passes over filter bytecode: inet_diag_bc_audit()
/// (along the `yes` jumps the run must end exactly at the end; every jump
/// lands on an op or at most 4 bytes past the end) and inet_diag_bc_run().
fn audit_and_run(ops: &[(u8, u8, u16)], sport: u16, dport: u16, bound: bool) -> (bool, bool) {
    let total = 4 * ops.len() as i32;
    let (mut at, mut len) = (0usize, total);
    let mut audit = true;
    while len > 0 {
        let (code, yes, no) = ops[at / 4];
        let min = if matches!(code, 11 | 12) { 8 } else { 4 };
        audit &= i32::from(yes) >= min && i32::from(yes) <= len + 4 && yes % 4 == 0;
        audit &= i32::from(no) >= min && i32::from(no) <= len + 4 && no % 4 == 0;
        len -= i32::from(yes);
        at += usize::from(yes);
    }
    audit &= len == 0;
    let (mut at, mut len) = (0usize, total);
    while len > 0 {
        let (code, yes, no) = ops[at / 4];
        let hit = match code {
            6 => !bound, // AUTO: the kernel chose the port
            11 => sport == ops[at / 4 + 1].2,
            12 => dport == ops[at / 4 + 1].2,
            _ => false, // JMP
        };
        let step = if hit { i32::from(yes) } else { i32::from(no) };
        len -= step;
        at += step as usize;
    }
    (audit, len == 0)
}

#[test]
fn a_diagnosis_filter_keeps_its_ports_listeners_and_bound_ports() {
    let mut out = Vec::new();
    let tests = [
        PortTest::Local(23456),
        PortTest::Peer(5001),
        PortTest::Peer(0),
        PortTest::PortFromBind,
    ];
    push_request(
        &mut out,
        4,
        Families::Both,
        StateSet::all(),
        Ask::Dump {
            peer_port: None,
            local_port: None,
            any_of: &tests,
        },
    );
    assert_eq!(out.len(), COMPAT_REQUEST_LEN + 4 + 4 + 3 * 8 + 2 * 4);
    let nl = NetlinkBuffer::new_checked(&out[..]).unwrap();
    assert_eq!(nl.length() as usize, out.len());
    assert_eq!(nl.message_type(), TCPDIAG_GETSOCK);
    let ops: Vec<(u8, u8, u16)> = out[COMPAT_REQUEST_LEN + 4..]
        .chunks(4)
        .map(|c| (c[0], c[1], u16::from_ne_bytes([c[2], c[3]])))
        .collect();
    let run = |sport, dport, bound| {
        let (audit, accept) = audit_and_run(&ops, sport, dport, bound);
        assert!(audit, "the kernel would refuse {ops:?}");
        accept
    };
    assert!(run(40000, 5001, false)); // a connection to the port
    assert!(run(5001, 0, true)); // a listener
    assert!(run(40001, 0, false)); // a listener on a port listen() chose
    assert!(run(40002, 443, true)); // a socket bound before connect()
    assert!(run(23456, 80, false)); // the fixed port's bucket
    assert!(!run(40003, 5002, false)); // another peer: left in the kernel
    // Alone, the bind test adds nothing: every socket passes.
    let mut alone = Vec::new();
    push_any_of_bytecode(&mut alone, 0, &[PortTest::PortFromBind]);
    assert!(alone.is_empty());
}
