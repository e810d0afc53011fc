//! `twlab trace`: the decoder on frames built with etherparse, the loopback
//! dedup, the annotated SYN with and without timestamps (checked against
//! numbers computed here from the captured segments), and the pcap read
//! back by tshark, and the delayed duplicate through a veth delay box (PAWS
//! with timestamps, the sequence number without).

use crate::common;

use etherparse::{PacketBuilder, TcpOptionElement};
use std::net::SocketAddr;
use twlab::diag::TcpState;
use twlab::trace::{
    Captured, Direction, Fate, Moment, Segment, Target, Trace, TracePlan, decode_frame, number,
    run_trace,
};

const C: &str = "127.0.0.1:23456";
const S: &str = "127.0.0.1:12345";

/// A frame as lo carries it (zero MACs), built by etherparse.
fn frame(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    ts: Option<(u32, u32)>,
    payload: &[u8],
) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        unreachable!()
    };
    let mut b = PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4(s.ip().octets(), d.ip().octets(), 64)
        .tcp(s.port(), d.port(), seq, 65495);
    if syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    if let Some((v, e)) = ts {
        b = b
            .options(&[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(v, e),
            ])
            .unwrap();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn cap(bytes: &[u8]) -> Captured {
    Captured {
        at_us: 0,
        wire: decode_frame(bytes).expect("a TCP frame"),
        states: None,
        delayed: false,
    }
}

#[test]
fn the_decoder_reads_what_etherparse_built() {
    let (c, s): (SocketAddr, SocketAddr) = (C.parse().unwrap(), S.parse().unwrap());
    let syn = frame(c, s, 1000, None, true, Some((77, 0)), b"");
    let w = decode_frame(&syn).unwrap();
    assert_eq!((w.src, w.dst, w.seq, w.ack), (c, s, 1000, 0));
    assert!(w.flags.syn && !w.flags.ack && !w.flags.fin && !w.flags.rst);
    assert_eq!(
        (w.tsval, w.tsecr, w.window, w.len),
        (Some(77), Some(0), 65495, 0)
    );
    assert_eq!(w.end_seq(), 1001);
    assert_eq!(w.flags.bits(), 0x02);
    let synack = frame(s, c, 5000, Some(1001), true, None, b"");
    let data = frame(c, s, 1001, Some(5001), false, Some((78, 99)), b"hello");
    let d = decode_frame(&data).unwrap();
    assert_eq!((d.len, d.end_seq(), d.tsecr), (5, 1006, Some(99)));
    assert_eq!(d.flags.bits(), 0x10);
    // Relative numbers per direction, from each side's ISN.
    let segs = number(&[cap(&syn), cap(&synack), cap(&data)], s);
    let rel: Vec<(Direction, u32, u32)> =
        segs.iter().map(|g| (g.dir, g.rel_seq, g.rel_ack)).collect();
    assert_eq!(
        rel,
        vec![
            (Direction::ToServer, 0, 0),
            (Direction::ToClient, 0, 1),
            (Direction::ToServer, 1, 1)
        ]
    );
    // A new SYN with a new ISN on the same 4-tuple opens connection 2.
    let syn2 = frame(c, s, 9000, None, true, None, b"");
    let segs = number(&[cap(&syn), cap(&synack), cap(&syn2)], s);
    assert_eq!(
        segs.iter().map(|g| g.conn).collect::<Vec<_>>(),
        vec![1, 1, 2]
    );
    // Not TCP: no segment.
    assert!(decode_frame(&[0u8; 20]).is_none());
}

fn trace(target: Target, timestamps: Option<bool>) -> Trace {
    let mut plan = TracePlan::new(target);
    plan.timestamps = timestamps;
    run_trace(&plan).expect("trace runs")
}

fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// What a TIME_WAIT remembers of conn 1, computed here from the segments.
fn old_client_end(segs: &[Segment]) -> (u32, Option<u32>) {
    let old: Vec<&Segment> = segs
        .iter()
        .filter(|s| s.conn == 1 && s.dir == Direction::ToServer && !s.wire.flags.rst)
        .collect();
    let last = old.last().expect("old client segments");
    (
        last.wire.seq + u32::from(last.wire.flags.fin) + last.wire.len,
        last.wire.tsval,
    )
}

fn new_syn(segs: &[Segment]) -> &Segment {
    segs.iter()
        .find(|s| s.conn == 2 && s.wire.flags.syn && !s.wire.flags.ack)
        .expect("the new SYN")
}

#[test]
fn loopback_frames_are_kept_once() {
    if !common::netns_or_skip("loopback_frames_are_kept_once") {
        return;
    }
    let t = trace(Target::Demo(3), None);
    assert_eq!(
        t.frames_seen,
        2 * t.frames_outgoing,
        "lo shows each frame twice"
    );
    assert_eq!(t.segments.len(), t.frames_outgoing, "one copy of each kept");
    let mut keys: Vec<(u32, u32, u8, u32)> = t
        .segments
        .iter()
        .map(|s| (s.conn, s.wire.seq, s.wire.flags.bits(), s.wire.ack))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), t.segments.len(), "no segment twice");
}

#[test]
fn the_new_syn_is_newer_than_the_server_time_wait() {
    if !common::netns_or_skip("the_new_syn_is_newer_than_the_server_time_wait") {
        return;
    }
    for ts in [true, false] {
        let t = trace(Target::Demo(3), Some(ts));
        assert_eq!(t.timestamps, ts);
        let (rcv_nxt, ts_recent) = old_client_end(&t.segments);
        let syn = new_syn(&t.segments);
        if ts {
            let (v, r) = (syn.wire.tsval.unwrap(), ts_recent.unwrap());
            assert!(
                (r.wrapping_sub(v) as i32) < 0,
                "TSval {v} newer than ts_recent {r}"
            );
        } else {
            assert!(syn.wire.tsval.is_none() && ts_recent.is_none());
            assert!(
                after(syn.wire.seq, rcv_nxt),
                "ISN {} after rcv_nxt {rcv_nxt}",
                syn.wire.seq
            );
        }
        let text = twlab::trace::ladder_text(&t, false);
        assert!(text.contains("TCP_TW_SYN"), "{text}");
        let want = if ts { "RFC 6191" } else { "RFC 1122" };
        assert!(text.contains(want), "{text}");
    }
}

#[test]
fn the_takeover_isn_is_old_snd_nxt_plus_65537() {
    if !common::netns_or_skip("the_takeover_isn_is_old_snd_nxt_plus_65537") {
        return;
    }
    let t = trace(Target::Demo(1), Some(true));
    let (snd_nxt, _) = old_client_end(&t.segments);
    assert_eq!(new_syn(&t.segments).wire.seq, snd_nxt.wrapping_add(65_537));
}

#[test]
fn rst_with_unread_data_resets_the_peer() {
    if !common::netns_or_skip("rst_with_unread_data_resets_the_peer") {
        return;
    }
    let t = trace(Target::RstUnread, None);
    let rst = t
        .segments
        .iter()
        .find(|s| s.wire.flags.rst)
        .expect("an RST");
    assert_eq!(rst.dir, Direction::ToServer);
    // The server's send() is a step of its own, named as the ladder prints
    // it, and both ends were still ESTABLISHED right after it.
    let send = t
        .steps
        .iter()
        .find(|s| s.call.starts_with("send()"))
        .expect("the server's send() step");
    assert_eq!(
        (
            send.actor.as_str(),
            send.call.as_str(),
            send.result.as_str()
        ),
        ("server", "send() 7 bytes", "ok")
    );
    assert_eq!(send.states.client, [TcpState::Established], "{send:?}");
    assert_eq!(send.states.server, [TcpState::Established], "{send:?}");
    let last = t.steps.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.result.starts_with("ECONNRESET")),
        ("server", true),
        "{last:?}"
    );
}

/// Install tshark (as root, from the distribution) if it is missing.
fn tshark() -> bool {
    let has = || {
        std::process::Command::new("tshark")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has() {
        return true;
    }
    let _ = std::process::Command::new("apt-get")
        .args(["install", "-y", "-q", "tshark"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    has()
}

#[test]
fn tshark_reads_the_same_segments_from_the_pcap() {
    if !common::netns_or_skip("tshark_reads_the_same_segments_from_the_pcap") {
        return;
    }
    if !tshark() {
        common::skip(
            "tshark_reads_the_same_segments_from_the_pcap: tshark is not installed and apt-get could not install it",
        );
        return;
    }
    let path = std::env::temp_dir().join(format!("twlab-trace-{}.pcap", std::process::id()));
    let o = common::run(&["trace", "--json", "--pcap", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ours: Vec<String> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let f = &s["flags"];
            let bit = |n: &str, b: u8| if f[n].as_bool().unwrap() { b } else { 0 };
            let bits =
                bit("fin", 1) | bit("syn", 2) | bit("rst", 4) | bit("psh", 8) | bit("ack", 16);
            format!("0x{bits:04x} {}", s["seq"])
        })
        .collect();
    let t = std::process::Command::new("tshark")
        .args([
            "-r",
            path.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "tcp.flags",
            "-e",
            "tcp.seq_raw",
        ])
        .output()
        .expect("tshark runs");
    let _ = std::fs::remove_file(&path);
    let theirs: Vec<String> = String::from_utf8_lossy(&t.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(!ours.is_empty());
    assert_eq!(
        theirs,
        ours,
        "tshark stderr: {}",
        String::from_utf8_lossy(&t.stderr)
    );
}

/// The delayed-duplicate case, or `None` (with a printed line) where veth
/// pairs cannot be made.
fn delayed(name: &str, timestamps: bool) -> Option<Trace> {
    if !common::netns_or_skip(name) {
        return None;
    }
    let mut plan = TracePlan::new(Target::DelayedDuplicate);
    plan.timestamps = Some(timestamps);
    match run_trace(&plan) {
        Ok(t) => Some(t),
        Err(e) if e.to_string().contains("needs veth pairs") => {
            common::skip(&format!("{name}: {e}"));
            None
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

/// What the captured segments themselves say about the old segment's
/// arrival: it, the new connection's rcv_nxt then, and the server's reply.
struct Arrival<'a> {
    old: &'a Segment,
    new_syn: &'a Segment,
    rcv_nxt: u32,
    reply: &'a Segment,
}

fn arrival(t: &Trace) -> Arrival<'_> {
    let segs = &t.segments;
    let old: Vec<&Segment> = segs.iter().filter(|s| s.delayed).collect();
    assert_eq!(old.len(), 1, "one delayed segment");
    let old = old[0];
    assert_eq!(old.dir, Direction::ToServer);
    assert_eq!(old.wire.len, twlab::trace::OLD_PAYLOAD.len() as u32);
    assert_eq!(old.conn, 1, "numbered as the old connection's");
    // The old connection ended with the client's RST, and a new SYN on the
    // same 4-tuple came after it and before the old segment.
    let rst = segs
        .iter()
        .position(|s| s.wire.flags.rst && s.dir == Direction::ToServer)
        .expect("the client's RST");
    let syn2 = segs
        .iter()
        .position(|s| s.conn == 2 && s.wire.flags.syn && !s.wire.flags.ack)
        .expect("the new SYN");
    assert!(rst < syn2 && syn2 < old.n - 1);
    let new_syn = &segs[syn2];
    assert_eq!(new_syn.wire.src, old.wire.src, "the same 4-tuple");
    // The bytes went through once already, retransmitted, on connection 1.
    assert!(segs[..rst].iter().any(|s| s.conn == 1
        && s.wire.seq == old.wire.seq
        && s.wire.len == old.wire.len
        && !s.delayed));
    let rcv_nxt = segs[..old.n - 1]
        .iter()
        .filter(|s| s.conn == 2 && s.dir == Direction::ToServer)
        .map(|s| s.wire.end_seq())
        .fold(
            new_syn.wire.end_seq(),
            |a, b| if after(b, a) { b } else { a },
        );
    let reply = segs[old.n..]
        .iter()
        .find(|s| s.dir == Direction::ToClient)
        .expect("the server answers the old segment");
    Arrival {
        old,
        new_syn,
        rcv_nxt,
        reply,
    }
}

fn duplicate_moment(t: &Trace) -> &twlab::trace::Duplicate {
    t.moments
        .iter()
        .find_map(|m| match m {
            Moment::DelayedDuplicate(d) => Some(&**d),
            _ => None,
        })
        .expect("the delayed-duplicate moment")
}

#[test]
fn paws_drops_the_delayed_old_segment() {
    let Some(t) = delayed("paws_drops_the_delayed_old_segment", true) else {
        return;
    };
    assert!(t.timestamps);
    let a = arrival(&t);
    let (old_ts, new_ts) = (a.old.wire.tsval.unwrap(), a.new_syn.wire.tsval.unwrap());
    assert!(
        (new_ts.wrapping_sub(old_ts) as i32) > 1,
        "the old TSval {old_ts} is older than the new connection's {new_ts}"
    );
    // Dropped: the server's answer is a duplicate ACK of rcv_nxt.
    assert!(!a.reply.wire.flags.syn && a.reply.wire.flags.ack && a.reply.wire.len == 0);
    assert_eq!(a.reply.wire.ack, a.rcv_nxt);
    let d = duplicate_moment(&t);
    assert_eq!(d.paws_estab_delta, Some(1), "PAWSEstab + 1");
    assert_eq!(d.fate, Fate::PawsDropped);
    assert_eq!((d.rcv_nxt, d.reply_ack), (a.rcv_nxt, Some(a.rcv_nxt)));
    assert!(d.app_recv.starts_with("EAGAIN"), "{}", d.app_recv);
}

#[test]
fn without_timestamps_the_sequence_number_decides() {
    let Some(t) = delayed("without_timestamps_the_sequence_number_decides", false) else {
        return;
    };
    assert!(!t.timestamps);
    let a = arrival(&t);
    assert_eq!((a.old.wire.tsval, a.new_syn.wire.tsval), (None, None));
    let d = duplicate_moment(&t);
    assert_eq!(d.paws_estab_delta, Some(0), "no PAWS without timestamps");
    // tcp_sequence(): a segment that ends before rcv_nxt is out of window.
    if after(a.rcv_nxt, a.old.wire.end_seq()) {
        assert_eq!(a.reply.wire.ack, a.rcv_nxt, "duplicate ACK");
        assert_eq!(d.fate, Fate::OutOfWindowDropped);
        assert!(d.app_recv.starts_with("EAGAIN"), "{}", d.app_recv);
    } else {
        assert!(after(a.reply.wire.ack, a.rcv_nxt), "the old bytes taken");
        assert_eq!(d.fate, Fate::Accepted);
        assert!(d.app_recv.contains("old connection"), "{}", d.app_recv);
    }
}

// --- `--pcap FILE`: written whole through a temporary in the same
// directory and a rename (src/outfile.rs), or not at all.

/// True if `b` starts with the classic pcap magic (microseconds), in
/// either byte order (the writer picks one).
fn is_pcap(b: &[u8]) -> bool {
    b.len() >= 24
        && [u32::from_be_bytes, u32::from_le_bytes]
            .iter()
            .any(|f| f([b[0], b[1], b[2], b[3]]) == 0xa1b2_c3d4)
}

/// Names in `d` other than `keep`: a temporary left behind shows here.
fn other_names(d: &std::path::Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

/// `twlab trace --pcap PATH`, stdout discarded into the Output.
fn trace_pcap(path: &std::path::Path) -> std::process::Output {
    std::process::Command::new(common::bin())
        .args(["trace", "--pcap"])
        .arg(path)
        .output()
        .expect("run twlab")
}

netns_test! {
    /// A file at the --pcap path is replaced by the capture, and stderr
    /// says so (it used to be replaced without a word); no temporary is
    /// left beside it.
    fn pcap_replacing_a_file_says_so() {
        let d = common::fresh_dir("pcap-replace");
        let p = d.join("t.pcap");
        std::fs::write(&p, b"an older file").unwrap();
        let o = trace_pcap(&p);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(
            err.lines().any(|l| l.contains("replaced") && l.contains(p.to_str().unwrap())),
            "not said: {err}"
        );
        let bytes = std::fs::read(&p).unwrap();
        assert!(is_pcap(&bytes), "the capture is there: {:02x?}", &bytes[..bytes.len().min(8)]);
        assert!(other_names(&d, &["t.pcap"]).is_empty());
        // A new name is said as written, not as replaced.
        let q = d.join("new.pcap");
        let o = trace_pcap(&q);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(!err.contains("replaced"), "{err}");
        assert!(q.exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}

netns_test! {
    /// A symbolic link at the --pcap path is refused before the run (exit
    /// 2, one line): the capture used to land in the link's target. The
    /// target keeps its bytes, and so does a dangling link's (nothing is
    /// created where it points).
    fn pcap_at_a_symbolic_link_is_refused_and_its_target_untouched() {
        let d = common::fresh_dir("pcap-link");
        let target = d.join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.join("t.pcap");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let o = trace_pcap(&link);
        let line = common::one_line_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{line}");
        assert!(line.contains("symbolic link"), "{line}");
        assert!(o.stdout.is_empty(), "refused before the run");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let dangling = d.join("d.pcap");
        std::os::unix::fs::symlink(d.join("nowhere"), &dangling).unwrap();
        let o = trace_pcap(&dangling);
        assert_eq!(o.status.code(), Some(2), "{}", common::one_line_failure(&o));
        assert!(!d.join("nowhere").exists());
        assert!(other_names(&d, &["target", "t.pcap", "d.pcap"]).is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}

netns_test! {
    /// A --pcap path under a directory that does not exist is bad input:
    /// exit 2, one line, before the run, and no directory is made.
    fn pcap_under_a_missing_directory_exits_2() {
        let d = common::fresh_dir("pcap-nodir");
        let p = d.join("no-such-dir").join("t.pcap");
        let o = trace_pcap(&p);
        let line = common::one_line_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{line}");
        assert!(line.contains("does not exist"), "{line}");
        assert!(o.stdout.is_empty(), "refused before the run");
        assert!(other_names(&d, &[]).is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}

netns_test! {
    /// On a full file system `trace --pcap` exited 0 leaving a 0-byte file.
    /// Now: exit 1, one line naming ENOSPC, and at the path what was there
    /// before: nothing for a new name, the old bytes for an existing file;
    /// no temporary left. A tmpfs of 64 KiB filled to the last block, in
    /// a mount namespace of this test's own.
    fn pcap_on_a_full_file_system_exits_1_and_leaves_no_file() {
        let test = "pcap_on_a_full_file_system_exits_1_and_leaves_no_file";
        let Some(d) = common::tmpfs_dir(test, "size=64k,mode=0755") else {
            return;
        };
        std::fs::write(d.join("old.pcap"), b"old").unwrap();
        // Fill it: 4 KiB at a time, bounded (64 KiB is 16 blocks).
        {
            use std::io::Write;
            let mut f = std::fs::File::create(d.join("filler")).unwrap();
            let block = [0u8; 4096];
            let full = (0..64).any(|_| f.write_all(&block).and_then(|_| f.sync_all()).is_err());
            assert!(full, "a 64 KiB tmpfs took 256 KiB");
        }
        for (name, before) in [("new.pcap", None), ("old.pcap", Some(&b"old"[..]))] {
            let p = d.join(name);
            let o = trace_pcap(&p);
            let line = common::one_line_failure(&o);
            assert_eq!(o.status.code(), Some(1), "{name}: {line}");
            assert!(line.contains("ENOSPC"), "{name}: {line}");
            match before {
                None => assert!(!p.exists(), "{name}: a file was left"),
                Some(b) => assert_eq!(std::fs::read(&p).unwrap(), b, "{name}"),
            }
        }
        assert!(other_names(&d, &["old.pcap", "filler"]).is_empty());
        common::unmount_and_remove(&d);
    }
}

netns_test! {
    /// A directory where no file can be created (a read-only file system)
    /// is found before the run: exit 1, one line naming EROFS, nothing
    /// printed on stdout, nothing written.
    fn pcap_on_a_read_only_file_system_exits_1_before_the_run() {
        let test = "pcap_on_a_read_only_file_system_exits_1_before_the_run";
        let Some(d) = common::tmpfs_dir(test, "size=64k,mode=0755") else {
            return;
        };
        common::remount_read_only(&d);
        let p = d.join("t.pcap");
        let o = trace_pcap(&p);
        let line = common::one_line_failure(&o);
        assert_eq!(o.status.code(), Some(1), "{line}");
        assert!(line.contains("EROFS"), "{line}");
        assert!(o.stdout.is_empty(), "refused before the run");
        assert!(!p.exists());
        common::unmount_and_remove(&d);
    }
}

netns_test! {
    /// A file mounted over the --pcap path (a bind mount) cannot be
    /// replaced by rename(2) (EBUSY; EXDEV across file systems): exit 1,
    /// one line saying it was the rename and why, the mounted file and the
    /// one under it untouched, no temporary left.
    fn pcap_on_a_mounted_file_fails_at_the_rename_and_says_why() {
        let test = "pcap_on_a_mounted_file_fails_at_the_rename_and_says_why";
        let Some(d) = common::tmpfs_dir(test, "size=1m,mode=0755") else {
            return;
        };
        use nix::mount::{MsFlags, mount};
        let src = d.join("src");
        let p = d.join("t.pcap");
        std::fs::write(&src, b"mounted").unwrap();
        std::fs::write(&p, b"under").unwrap();
        mount(
            Some(&src),
            &p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind mount a file");
        let o = trace_pcap(&p);
        let line = common::one_line_failure(&o);
        assert_eq!(o.status.code(), Some(1), "{line}");
        assert!(line.contains("rename"), "{line}");
        assert!(line.contains("EBUSY") || line.contains("EXDEV"), "{line}");
        assert!(line.contains("mount point"), "{line}");
        assert_eq!(std::fs::read(&p).unwrap(), b"mounted");
        assert_eq!(std::fs::read(&src).unwrap(), b"mounted");
        assert!(other_names(&d, &["src", "t.pcap"]).is_empty());
        common::unmount_and_remove(&d);
    }
}
