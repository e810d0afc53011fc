//! `twlab trace rst-unread`: what SO_LINGER 0 costs. The server sends a few
//! bytes; the client's kernel ACKs them but the application never reads
//! them; the client closes with SO_LINGER {on, 0}: tcp_close() discards the
//! unread bytes and sends RST (tcp_disconnect()), and the server's next
//! call fails with ECONNRESET (tcp_reset()).

use super::capture::{Capture, Keep};
use super::{STATES_SOURCE, Trace, TracePlan, annotate, decode};
use crate::diag::{self, TupleView};
use crate::error::{Error, Result};
use crate::netns::{self, Sysctl};
use crate::outcome::{Step, StepResult, SysError};
use crate::scenario::StepRecord;
use crate::socket::{Family, SocketOpts, TcpSock};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PAYLOAD: &[u8] = b"unread!";
const SETTLE: Duration = Duration::from_secs(10);

fn wait(c: SocketAddr, s: SocketAddr, what: &str, pred: impl Fn(&TupleView) -> bool) -> Result<()> {
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

fn step_err(what: &str) -> impl Fn(crate::socket::StepError) -> Error + '_ {
    move |e| Error::Sys {
        what: what.into(),
        err: e.error,
    }
}

struct Steps {
    start: Instant,
    v: Vec<super::Snap>,
}

impl Steps {
    fn push(&mut self, actor: &str, step: Step, result: StepResult, note: &str) {
        self.v.push(super::snap(&StepRecord {
            actor: actor.into(),
            step,
            result,
            at_us: self.start.elapsed().as_micros() as u64,
            note: (!note.is_empty()).then(|| note.to_string()),
        }));
    }
}

/// The scenario, on sockets of the calling thread's namespace. Returns the
/// steps, the unread byte count and the server's error after the RST.
fn scenario(server: SocketAddr, client: SocketAddr) -> Result<(Vec<super::Snap>, u32, String)> {
    let mut st = Steps {
        start: Instant::now(),
        v: Vec::new(),
    };
    let ra = SocketOpts {
        reuseaddr: true,
        ..Default::default()
    };
    let l = TcpSock::new(Family::V4, ra).map_err(step_err("socket"))?;
    l.bind(server).map_err(step_err("bind"))?;
    l.listen(4).map_err(step_err("listen"))?;
    let c = TcpSock::new(Family::V4, ra).map_err(step_err("socket"))?;
    c.bind(client).map_err(step_err("bind"))?;
    c.connect(server, SETTLE).map_err(step_err("connect"))?;
    st.push("client", Step::Connect, StepResult::Ok, "");
    let (a, _) = l.accept(SETTLE).map_err(step_err("accept"))?;
    (&a.sock)
        .write_all(PAYLOAD)
        .map_err(|e| Error::sys("server send", &e))?;
    st.push("server", Step::Send, StepResult::Ok, "7 bytes");
    // Delivered and ACKed, never read: client Recv-Q = 7, server Send-Q = 0.
    wait(
        client,
        server,
        "the bytes to be ACKed and queued unread",
        |v| {
            v.client
                .as_ref()
                .is_some_and(|e| e.recv_q == PAYLOAD.len() as u32)
                && v.server.as_ref().is_some_and(|e| e.send_q == 0)
        },
    )?;
    c.sock
        .set_linger(Some(Duration::ZERO))
        .map_err(|e| Error::sys("SO_LINGER", &e))?;
    st.push("client", Step::SetOpt, StepResult::Ok, "SO_LINGER {on, 0}");
    c.close();
    st.push("client", Step::Close, StepResult::Ok, "RST, 7 bytes unread");
    wait(client, server, "the RST to reach the server", |v| {
        v.server.is_none()
    })?;
    let mut buf = [0u8; 64];
    let r = (&a.sock).read(&mut buf);
    let err = match &r {
        Ok(n) => format!("{n} bytes"),
        Err(e) => SysError::from_io(e).to_string(),
    };
    let result = match r {
        Ok(_) => StepResult::Ok,
        Err(e) => StepResult::Err {
            error: SysError::from_io(&e),
        },
    };
    st.push("server", Step::Recv, result, "");
    Ok((st.v, PAYLOAD.len() as u32, format!("{err} from recv()")))
}

/// Run `rst-unread` in a fresh namespace under capture.
pub(crate) fn run(plan: &TracePlan) -> Result<Trace> {
    let server: SocketAddr = ([127, 0, 0, 1], super::SERVER_PORT).into();
    let client: SocketAddr = ([127, 0, 0, 1], super::CLIENT_PORT).into();
    let mut sysctls = Vec::new();
    if let Some(ts) = plan.timestamps {
        sysctls.push(Sysctl::new(
            crate::sysctl::TIMESTAMPS,
            if ts { "1" } else { "0" },
        ));
    }
    let (steps, lost, peer, collected, ts, start) =
        netns::run_in_fresh(sysctls, move || -> Result<_> {
            let cap = Capture::start("lo", Keep::IncomingOnly, false)?;
            let start = cap.start;
            let r = scenario(server, client);
            let collected = cap.finish()?;
            let ts = crate::sysctl::read(crate::sysctl::TIMESTAMPS).is_some_and(|v| v != "0");
            let (steps, lost, peer) = r?;
            Ok((steps, lost, peer, collected, ts, start))
        })??;
    let segments = decode::number(&collected.segments, server);
    let moments = annotate::reset(&segments, 1, Some(lost), Some(peer))
        .into_iter()
        .collect();
    Ok(Trace {
        title: "rst-unread: the client closes with SO_LINGER 0 while 7 bytes from the server sit unread".into(),
        timestamps: ts,
        client,
        server,
        capture_on: "lo".into(),
        frames_seen: collected.frames_seen,
        frames_outgoing: collected.frames_outgoing,
        states_source: STATES_SOURCE,
        segments,
        moments,
        steps: super::step_states(steps, start, client, server),
        notes: Vec::new(),
        report: None,
        kernel_events: Vec::new(),
        cites: Vec::new(),
        raw: collected.raw,
        start,
    })
}
