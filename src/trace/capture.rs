//! The capture thread: reads every frame of one interface of the calling
//! thread's namespace, keeps the TCP segments (one copy of each loopback
//! frame), and right after each one dumps the namespace's sockets with
//! sock_diag, best effort, so the ladder can show each end's state.

use super::decode::{Captured, decode_frame};
use crate::diag::{self, Query};
use crate::error::{Error, NetnsError, Result};
use crate::sys::packet::{PACKET_OUTGOING, PacketSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Most frames one trace keeps: a bound on memory and on the loop.
const MAX_FRAMES: usize = 10_000;
/// A capture never outlives this, whatever the experiment does.
const MAX_CAPTURE: Duration = Duration::from_secs(120);
/// With the stop flag set, the capture ends after this long without a frame.
const QUIET: Duration = Duration::from_millis(30);

/// Which copies of a frame to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// On `lo` each frame is seen leaving and arriving: keep the incoming
    /// copy. Its timestamp is the receive time (loopback_xmit() clears the
    /// sender's departure-time stamp, netif_rx() stamps it anew), while the
    /// PACKET_OUTGOING copy carries TCP's EDT stamp on another clock.
    IncomingOnly,
    /// On one end of a veth pair each frame is seen once, sent
    /// (PACKET_OUTGOING) or received: keep all.
    All,
}

/// A frame as the pcap gets it.
#[derive(Debug, Clone)]
pub(crate) struct RawFrame {
    pub(crate) wall: SystemTime,
    pub(crate) data: Vec<u8>,
}

/// What a capture collected so far.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) segments: Vec<Captured>,
    pub(crate) raw: Vec<RawFrame>,
    /// Every frame read, duplicates and non-TCP included.
    pub(crate) frames_seen: usize,
    /// Frames with `sll_pkttype` = PACKET_OUTGOING among them.
    pub(crate) frames_outgoing: usize,
}

/// A running capture.
pub(crate) struct Capture {
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Collected>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    /// Wall-clock start: segment and step times are relative to it.
    pub(crate) start: SystemTime,
}

/// The one-line error for a missing privilege.
pub(crate) fn needs_root(why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "twlab trace needs root or CAP_NET_RAW + namespaces: {why}"
    ))
}

impl Capture {
    /// Open a packet socket on `ifname` in the calling thread's namespace
    /// and start reading it on a thread of that namespace.
    pub(crate) fn start(ifname: &str, keep: Keep, dump_states: bool) -> Result<Self> {
        let sock = PacketSocket::open(ifname)
            .map_err(|e| needs_root(format!("AF_PACKET socket on {ifname}: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Collected::default()));
        let (s2, sh2) = (stop.clone(), shared.clone());
        let start = Instant::now();
        let start_wall = SystemTime::now();
        // A thread spawned from this one shares its network namespace
        // (clone() without CLONE_NEWNET keeps the creator's nsproxy), so its
        // sock_diag dumps see this namespace.
        let thread = std::thread::Builder::new()
            .name("twlab-capture".into())
            .spawn(move || read_loop(&sock, keep, dump_states, (start, start_wall), &s2, &sh2))
            .map_err(|err| {
                Error::Netns(NetnsError::Io {
                    what: "spawn capture thread",
                    err,
                })
            })?;
        Ok(Capture {
            stop,
            shared,
            thread: Some(thread),
            start: start_wall,
        })
    }

    /// A copy of the segments captured so far (for synchronising on them).
    pub(crate) fn segments(&self) -> Vec<Captured> {
        self.shared
            .lock()
            .map(|c| c.segments.clone())
            .unwrap_or_default()
    }

    /// Wait (bounded) until `pred` holds for the captured segments.
    pub(crate) fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Captured]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            if pred(&self.segments()) {
                return true;
            }
            // A signal ends the wait (the caller checks it next).
            if Instant::now() >= end || crate::interrupted() {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Stop after the frames already queued, and return everything.
    pub(crate) fn finish(mut self) -> Result<Collected> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| Error::Invalid("capture thread panicked".into()))?
                .map_err(|e| Error::sys("reading the capture socket", &e))?;
        }
        let mut c = self
            .shared
            .lock()
            .map_err(|_| Error::Invalid("capture lock".into()))?;
        Ok(std::mem::take(&mut *c))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn read_loop(
    sock: &PacketSocket,
    keep: Keep,
    dump_states: bool,
    (start, start_wall): (Instant, SystemTime),
    stop: &AtomicBool,
    shared: &Mutex<Collected>,
) -> std::io::Result<()> {
    let mut quiet_since: Option<Instant> = None;
    // Bounded by MAX_CAPTURE and MAX_FRAMES.
    while start.elapsed() < MAX_CAPTURE {
        let Some(f) = sock.recv(Duration::from_millis(5))? else {
            if stop.load(Ordering::SeqCst) {
                let q = *quiet_since.get_or_insert_with(Instant::now);
                if q.elapsed() >= QUIET {
                    break;
                }
            }
            continue;
        };
        quiet_since = None;
        let wall = f.wall;
        let at_us = since(start_wall, wall);
        let outgoing = f.pkttype == PACKET_OUTGOING;
        let mut c = shared.lock().map_err(|_| std::io::Error::other("lock"))?;
        c.frames_seen += 1;
        c.frames_outgoing += usize::from(outgoing);
        if keep == Keep::IncomingOnly && outgoing {
            continue;
        }
        let Some(wire) = decode_frame(&f.data) else {
            continue;
        };
        if c.segments.len() >= MAX_FRAMES {
            break;
        }
        drop(c);
        let states = dump_states.then(|| {
            diag::dump(&Query::default())
                .map(|v| v.into_iter().map(|e| (e.local, e.peer, e.state)).collect())
                .unwrap_or_default()
        });
        let mut c = shared.lock().map_err(|_| std::io::Error::other("lock"))?;
        c.segments.push(Captured {
            at_us,
            wire,
            states,
            delayed: false,
        });
        c.raw.push(RawFrame { wall, data: f.data });
    }
    Ok(())
}

/// Microseconds from `start` to `t` (0 if `t` is earlier).
pub(crate) fn since(start: SystemTime, t: SystemTime) -> u64 {
    t.duration_since(start).unwrap_or_default().as_micros() as u64
}
