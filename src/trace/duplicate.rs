//! `twlab trace delayed-duplicate`: what TIME_WAIT protects against.
//!
//! Client and server sit in two namespaces joined through a third that
//! holds the delay box (see [`super::delaybox`]). The client sends a few
//! bytes; the box holds that segment; the client's retransmission gets the
//! bytes through. The client then closes with SO_LINGER 0 (RST, no
//! TIME_WAIT) and at once connects again from the same port: the same
//! 4-tuple. Only then does the box let the old segment go. With
//! timestamps, PAWS drops it (PAWSEstab + 1); without, only its sequence
//! number decides, and the capture and the server's recv() show what the
//! new connection did with it.

use super::annotate::{self, DuplicateFacts};
use super::capture::{Capture, Keep};
use super::delaybox::DelayBox;
use super::veth::{self, Place, Topology};
use super::{STATES_SOURCE, Trace, TracePlan, decode};
use crate::diag::{self, TcpState, TupleView};
use crate::error::{Error, NetnsError, Result};
use crate::netns::Sysctl;
use crate::outcome::{Step, StepResult, SysError};
use crate::scenario::StepRecord;
use crate::socket::{Family, SocketOpts, TcpSock};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// The old connection's bytes.
pub const OLD_PAYLOAD: &[u8] = b"old connection's bytes";
const SETTLE: Duration = Duration::from_secs(10);

/// The PAWSEstab counter (TcpExt in /proc/net/netstat) of the calling
/// thread's namespace: segments of established connections dropped by PAWS
/// (LINUX_MIB_PAWSESTABREJECTED).
fn paws_estab() -> Option<u64> {
    crate::netstat::counter("TcpExt:PAWSEstab")
}

fn step_err(what: &str) -> impl Fn(crate::socket::StepError) -> Error + '_ {
    move |e| Error::Sys {
        what: what.into(),
        err: e.error,
    }
}

/// Read exactly `buf.len()` bytes within [`SETTLE`], in slices of
/// [`crate::signal::CHECK_EVERY`] with a signal check between them: the
/// bytes come with the retransmission of the held segment, a whole RTO
/// (~200 ms) later, and one blocking read that long let a Ctrl-C wait for
/// it (264 ms measured).
fn read_exact_interruptible(sock: &socket2::Socket, buf: &mut [u8]) -> Result<()> {
    let what = "server recv of the retransmitted bytes";
    let deadline = crate::signal::Deadline::after(SETTLE);
    let mut got = 0;
    while got < buf.len() {
        sock.set_read_timeout(Some(deadline.step().max(Duration::from_millis(1))))
            .map_err(|e| Error::sys("SO_RCVTIMEO", &e))?;
        match (&*sock).read(&mut buf[got..]) {
            Ok(0) => {
                let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Err(Error::sys(what, &eof));
            }
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) && !deadline.passed() =>
            {
                crate::signal::check()?;
            }
            Err(e) => return Err(Error::sys(what, &e)),
        }
    }
    Ok(())
}

fn wait(c: SocketAddr, s: SocketAddr, what: &str, pred: impl Fn(&TupleView) -> bool) -> Result<()> {
    crate::signal::check()?;
    let (v, ok) = diag::wait_for(c, s, SETTLE, pred)?;
    if ok {
        Ok(())
    } else {
        Err(Error::Timeout {
            secs: SETTLE.as_secs_f64(),
            what: format!("{what} (kernel shows {})", v.describe()),
        })
    }
}

/// Steps with both ends' states: one sock_diag dump in each namespace.
struct Steps<'a> {
    topo: &'a Topology,
    start: Instant,
    v: Vec<super::Snap>,
}

impl Steps<'_> {
    /// Record a step; leaves the thread in `back`. Stops the story if a
    /// signal arrived: the scenario checks between its steps (and every
    /// wait does), so Ctrl-C ends a run within a step, not at the end of
    /// the story (~0.4 s measured before).
    fn push(
        &mut self,
        actor: &str,
        step: Step,
        result: StepResult,
        note: &str,
        back: Place,
    ) -> Result<()> {
        let at = SystemTime::now();
        let mut socks = Vec::new();
        for p in [Place::Client, Place::Server] {
            if self.topo.enter(p).is_ok() {
                socks.extend(
                    diag::dump(&diag::Query::default())
                        .map(|v| v.into_iter().map(|e| (e.local, e.peer, e.state)).collect())
                        .unwrap_or_else(|_| Vec::<(SocketAddr, SocketAddr, TcpState)>::new()),
                );
            }
        }
        let _ = self.topo.enter(back);
        let rec = StepRecord {
            actor: actor.into(),
            step,
            result,
            at_us: self.start.elapsed().as_micros() as u64,
            note: (!note.is_empty()).then(|| note.to_string()),
        };
        self.v.push((at, rec, socks));
        Ok(crate::signal::check()?)
    }
}

/// What the run gathered, before numbering.
struct Run {
    steps: Vec<super::Snap>,
    collected: super::capture::Collected,
    start: SystemTime,
    held_ms: f64,
    held_frame: Vec<u8>,
    paws_delta: Option<u64>,
    app_recv: String,
    timestamps: bool,
    /// Who held the segment (netem, or the box and why).
    holder_note: String,
}

/// The scenario; the calling thread moves between the namespaces. Longer
/// than 80 lines on purpose: it is one story told in order (old connection,
/// held segment, RST, reconnect, release, verdict), and splitting it would
/// scatter the sockets it threads through.
fn scenario(topo: &Topology, client: SocketAddr, server: SocketAddr) -> Result<Run> {
    let ra = SocketOpts {
        reuseaddr: true,
        ..Default::default()
    };
    crate::signal::check()?;
    topo.enter(Place::Server)?;
    let timestamps = crate::sysctl::read(crate::sysctl::TIMESTAMPS).is_some_and(|v| v != "0");
    let l = TcpSock::new(Family::V4, ra).map_err(step_err("socket"))?;
    l.bind(server).map_err(step_err("bind"))?;
    l.listen(4).map_err(step_err("listen"))?;
    let cap = Capture::start(veth::SERVER_IF, Keep::All, false)?;
    let start = cap.start;
    let paws_before = paws_estab();
    crate::signal::check()?;
    topo.enter(Place::Box)?;
    let dbox = DelayBox::start(veth::BOX_CLIENT_IF, veth::BOX_SERVER_IF, client, server)?;
    let mut st = Steps {
        topo,
        start: Instant::now(),
        v: Vec::new(),
    };
    topo.enter(Place::Client)?;
    let c1 = TcpSock::new(Family::V4, ra).map_err(step_err("socket"))?;
    c1.bind(client).map_err(step_err("bind"))?;
    c1.connect(server, SETTLE).map_err(step_err("connect"))?;
    st.push("client", Step::Connect, StepResult::Ok, "", Place::Client)?;
    let (a1, _) = l.accept(SETTLE).map_err(step_err("accept"))?;
    (&c1.sock)
        .write_all(OLD_PAYLOAD)
        .map_err(|e| Error::sys("client send", &e))?;
    let note = format!("{} bytes: the box holds the segment", OLD_PAYLOAD.len());
    st.push("client", Step::Send, StepResult::Ok, &note, Place::Client)?;
    // The retransmission gets through: the server reads the bytes.
    let mut buf = vec![0u8; OLD_PAYLOAD.len()];
    read_exact_interruptible(&a1.sock, &mut buf)?;
    st.push(
        "server",
        Step::Recv,
        StepResult::Ok,
        "the retransmitted bytes",
        Place::Client,
    )?;
    wait(client, server, "the client's bytes to be ACKed", |v| {
        v.client.as_ref().is_some_and(|e| e.send_q == 0)
    })?;
    c1.sock
        .set_linger(Some(Duration::ZERO))
        .map_err(|e| Error::sys("SO_LINGER", &e))?;
    c1.close();
    st.push(
        "client",
        Step::Close,
        StepResult::Ok,
        "SO_LINGER 0: RST",
        Place::Server,
    )?;
    wait(client, server, "the RST to reach the server", |v| {
        v.server.is_none()
    })?;
    topo.enter(Place::Client)?;
    let c2 = TcpSock::new(Family::V4, ra).map_err(step_err("socket"))?;
    c2.bind(client)
        .map_err(step_err("bind the same port again"))?;
    c2.connect(server, SETTLE)
        .map_err(step_err("connect on the same 4-tuple"))?;
    st.push(
        "client#2",
        Step::Connect,
        StepResult::Ok,
        "the same 4-tuple",
        Place::Client,
    )?;
    let (a2, _) = l.accept(SETTLE).map_err(step_err("accept"))?;
    let is_old = |c: &super::Captured| c.wire.src == client && c.wire.len > 0;
    let seen_before = cap.segments().iter().filter(|c| is_old(c)).count();
    let held = dbox
        .release()
        .ok_or_else(|| Error::Invalid("the delay box held no segment".into()))?;
    if held.due_in.is_zero() && dbox.no_netem.is_none() {
        return Err(Error::Invalid(format!(
            "netem let the held segment go before the new connection was up (held {} ms): this machine was too slow for the trace",
            super::delaybox::NETEM_HOLD.as_millis()
        )));
    }
    let holder_note = match &dbox.no_netem {
        None => format!(
            "the kernel's netem qdisc on the box's end toward the server ({}) held the client's first data segment {} ms",
            veth::BOX_SERVER_IF,
            super::delaybox::NETEM_HOLD.as_millis()
        ),
        Some(why) => why.clone(),
    };
    // Synchronise on the wire: the old segment, then the server's answer.
    // netem may hold it a while longer; the box has sent it now.
    crate::signal::check()?;
    let replied = cap.wait_for(held.due_in + Duration::from_secs(3), |segs| {
        let arrived = segs.iter().filter(|c| is_old(c)).count() > seen_before;
        let last = segs.iter().rposition(is_old);
        arrived && last.is_some_and(|i| segs[i + 1..].iter().any(|c| c.wire.src == server))
    });
    crate::signal::check()?;
    topo.enter(Place::Server)?;
    let paws_after = paws_estab();
    a2.sock
        .set_nonblocking(true)
        .map_err(|e| Error::sys("O_NONBLOCK", &e))?;
    let mut buf = [0u8; 256];
    let (app_recv, result) = match (&a2.sock).read(&mut buf) {
        Ok(n) => (
            format!("{n} bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
            StepResult::Ok,
        ),
        Err(e) => {
            let err = SysError::from_io(&e);
            (format!("{err}: no data"), StepResult::Err { error: err })
        }
    };
    let note = if replied {
        "after the old segment and the server's reply"
    } else {
        "after the old segment (no reply captured within 3 s)"
    };
    st.push("server#2", Step::Recv, result, note, Place::Server)?;
    let collected = cap.finish()?;
    dbox.stop()?;
    drop((c2, a1, a2, l));
    Ok(Run {
        steps: st.v,
        collected,
        start,
        held_ms: held.held_for.as_secs_f64() * 1000.0,
        held_frame: held.frame,
        paws_delta: paws_before
            .zip(paws_after)
            .map(|(b, a)| a.saturating_sub(b)),
        app_recv,
        timestamps,
        holder_note,
    })
}

/// Run `delayed-duplicate` in three fresh namespaces under capture.
pub(crate) fn run(plan: &TracePlan) -> Result<Trace> {
    veth::probe()
        .map_err(|e| Error::Invalid(format!("the delayed-duplicate case needs veth pairs: {e}")))?;
    let (client, server) = veth::addrs(super::CLIENT_PORT, super::SERVER_PORT);
    let mut sysctls = Vec::new();
    if let Some(ts) = plan.timestamps {
        sysctls.push(Sysctl::new(
            crate::sysctl::TIMESTAMPS,
            if ts { "1" } else { "0" },
        ));
    }
    let mut r = std::thread::Builder::new()
        .name("twlab-veth".into())
        .spawn(move || -> Result<Run> {
            let topo = Topology::build(&sysctls)?;
            scenario(&topo, client, server)
        })
        .map_err(|err| Error::Netns(NetnsError::Io { what: "spawn", err }))?
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
    // The late arrival: the last frame with the held bytes (a retransmission
    // with identical bytes, if any, came earlier).
    let mut late = r.collected.raw.iter().rposition(|f| f.data == r.held_frame);
    if let Some(i) = late.take() {
        r.collected.segments[i].delayed = true;
    }
    let segments = decode::number(&r.collected.segments, server);
    let facts = DuplicateFacts {
        held_ms: r.held_ms,
        paws_estab_delta: r.paws_delta,
        app_recv: r.app_recv,
    };
    let moments = annotate::delayed_duplicate(&segments, 1, 2, facts)
        .into_iter()
        .chain(annotate::reset(&segments, 1, None, None))
        .collect();
    Ok(Trace {
        title: "delayed-duplicate: an old segment, held back in the network, reaches a new connection on the same 4-tuple (client closed with SO_LINGER 0 and reconnected at once)".into(),
        timestamps: r.timestamps,
        client,
        server,
        frames_seen: r.collected.frames_seen,
        frames_outgoing: r.collected.frames_outgoing,
        capture_on: format!("{} (the server's veth end)", veth::SERVER_IF),
        states_source: STATES_SOURCE,
        segments,
        moments,
        steps: super::step_states(r.steps, r.start, client, server),
        notes: vec![
            "path: client 192.0.2.1 ─veth─ delay box (a user-space bridge in its own namespace) ─veth─ server 192.0.2.2; the client's first data segment was held back until after the new connection was established".into(),
            format!("held by: {}", r.holder_note),
        ],
        report: None,
        kernel_events: Vec::new(),
        cites: Vec::new(),
        raw: r.collected.raw,
        start: r.start,
    })
}
