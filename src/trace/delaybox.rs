//! The delay box: a two-port bridge in user space, in the middle namespace.
//! It copies every frame from one of its veth ends to the other unchanged,
//! except one: the first client → server TCP segment with payload, which
//! is held back. That is a network delaying one segment: the client's TCP
//! sees no ACK, retransmits (tail loss probe or RTO), the copy gets
//! through, and the original arrives later, the same bytes as sent.
//!
//! Where the kernel has sch_netem, netem holds it: the box sets the netem
//! qdisc on its server-side end to [`NETEM_HOLD`], sends that one frame
//! into it and sets the delay back to 0 at once (`netem_change()` leaves a
//! queued packet its time to send, `tfifo_enqueue()` orders the queue by
//! it, so the later frames pass it). Without netem the box keeps the frame
//! itself until told to let it go, and says so in one line.

use super::decode::decode_frame;
use crate::error::{Error, NetnsError, Result};
use crate::sys::packet::{self, PACKET_OUTGOING, PacketSocket};
use crate::sys::rtnl::Rtnl;
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The box never runs longer than this.
const MAX_RUN: Duration = Duration::from_secs(60);

/// How long netem holds the segment: longer than the client's
/// retransmission, ACK, RST and reconnect take (a fraction of a second,
/// a few times that under an emulated CPU).
pub(crate) const NETEM_HOLD: Duration = Duration::from_secs(3);

/// The frame the box held, once released.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// Its bytes, as the client sent them.
    pub(crate) frame: Vec<u8>,
    /// How long it is held: until now (the box), or netem's delay.
    pub(crate) held_for: Duration,
    /// How long until it reaches the server's end (netem still holds it).
    pub(crate) due_in: Duration,
}

/// Who holds the segment.
pub(crate) enum Holder {
    /// The kernel's netem qdisc on the box's server-side end.
    Netem(Rtnl),
    /// The box itself; why netem could not.
    Box(String),
}

enum Cmd {
    /// Send the held frame on toward the server now; reply with it.
    Release(Sender<Option<Held>>),
    Stop,
}

/// A running delay box.
pub(crate) struct DelayBox {
    cmd: Sender<Cmd>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    /// `None`: netem holds the segment; else why the box does.
    pub(crate) no_netem: Option<String>,
}

impl DelayBox {
    /// Start bridging `client_if` ↔ `server_if` (both in the calling
    /// thread's namespace), holding the first segment with payload from
    /// `client` to `server`.
    pub(crate) fn start(
        client_if: &str,
        server_if: &str,
        client: SocketAddr,
        server: SocketAddr,
    ) -> Result<Self> {
        let open = |i: &str| {
            PacketSocket::open(i)
                .map_err(|err| Error::Netns(NetnsError::PacketSocket { dev: i.into(), err }))
        };
        let (a, b) = (open(client_if)?, open(server_if)?);
        let holder = netem_holder(server_if);
        let no_netem = match &holder {
            Holder::Netem(_) => None,
            Holder::Box(why) => Some(why.clone()),
        };
        let server_if = server_if.to_string();
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("twlab-delaybox".into())
            .spawn(move || {
                relay(
                    &a,
                    &b,
                    Flow {
                        client,
                        server,
                        server_if,
                    },
                    holder,
                    &rx,
                )
            })
            .map_err(|err| {
                Error::Netns(NetnsError::Io {
                    what: "spawn the delay box",
                    err,
                })
            })?;
        Ok(DelayBox {
            cmd: tx,
            thread: Some(thread),
            no_netem,
        })
    }

    /// Let the held frame go on to the server; `None` if none was held.
    pub(crate) fn release(&self) -> Option<Held> {
        let (tx, rx) = channel();
        self.cmd.send(Cmd::Release(tx)).ok()?;
        rx.recv_timeout(Duration::from_secs(5)).ok().flatten()
    }

    /// Stop the bridge.
    pub(crate) fn stop(mut self) -> Result<()> {
        let _ = self.cmd.send(Cmd::Stop);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r.map_err(|e| Error::sys("the delay box", &e)),
            Some(Err(_)) => Err(Error::Invalid("the delay box thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for DelayBox {
    fn drop(&mut self) {
        let _ = self.cmd.send(Cmd::Stop);
    }
}

/// netem with no delay on `dev` (calling thread's namespace), ready to
/// hold; or why not, in one line.
fn netem_holder(dev: &str) -> Holder {
    let try_netem = || {
        let mut nl = Rtnl::open()?;
        nl.netem(dev, Duration::ZERO, true)?;
        Ok::<_, crate::sys::rtnl::RtnlError>(nl)
    };
    match try_netem() {
        Ok(nl) => Holder::Netem(nl),
        // qdisc_create(): no "netem" ops and request_module() found none.
        Err(e) if e.errno == Some(libc::ENOENT) => Holder::Box(
            "this kernel has no sch_netem (CONFIG_NET_SCH_NETEM): the delay box holds the segment in user space".into(),
        ),
        Err(e) => Holder::Box(format!(
            "netem unavailable ({e}): the delay box holds the segment in user space"
        )),
    }
}

/// The connection whose first data segment is held, and the box's end
/// toward the server (where netem sits).
struct Flow {
    client: SocketAddr,
    server: SocketAddr,
    server_if: String,
}

/// Send `frame` into netem with [`NETEM_HOLD`], then set the delay back to
/// 0 for every later frame.
fn send_held(nl: &mut Rtnl, b: &PacketSocket, dev: &str, frame: &[u8]) -> std::io::Result<()> {
    let io = |e: crate::sys::rtnl::RtnlError| std::io::Error::other(e.to_string());
    nl.netem(dev, NETEM_HOLD, false).map_err(io)?;
    let sent = b.send(frame);
    nl.netem(dev, Duration::ZERO, false).map_err(io)?;
    sent.map(|_| ())
}

fn relay(
    a: &PacketSocket,
    b: &PacketSocket,
    flow: Flow,
    mut holder: Holder,
    cmd: &Receiver<Cmd>,
) -> std::io::Result<()> {
    let Flow {
        client,
        server,
        server_if,
    } = flow;
    let start = Instant::now();
    let mut held: Option<(Vec<u8>, Instant)> = None;
    let mut done_holding = false;
    // Bounded by MAX_RUN.
    while start.elapsed() < MAX_RUN {
        match cmd.try_recv() {
            Ok(Cmd::Stop) | Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            Ok(Cmd::Release(reply)) => {
                let out = held.take().map(|(frame, at)| match holder {
                    Holder::Netem(_) => Held {
                        frame,
                        held_for: NETEM_HOLD,
                        due_in: NETEM_HOLD.saturating_sub(at.elapsed()),
                    },
                    Holder::Box(_) => Held {
                        frame,
                        held_for: at.elapsed(),
                        due_in: Duration::ZERO,
                    },
                });
                if let (Some(h), Holder::Box(_)) = (&out, &holder) {
                    b.send(&h.frame)?;
                }
                let _ = reply.send(out);
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        for i in packet::readable(&[a, b], Duration::from_millis(2))? {
            let (from, to) = if i == 0 { (a, b) } else { (b, a) };
            // Bounded: a queue holds finitely many frames, and this loop
            // runs again only after the next poll().
            while let Some(f) = from.recv_now()? {
                // Our own sends show up as PACKET_OUTGOING: never relay
                // them back.
                if f.pkttype == PACKET_OUTGOING {
                    continue;
                }
                if i == 0
                    && !done_holding
                    && let Some(w) = decode_frame(&f.data)
                    && w.src == client
                    && w.dst == server
                    && w.len > 0
                {
                    if let Holder::Netem(nl) = &mut holder {
                        send_held(nl, b, &server_if, &f.data)?;
                    }
                    held = Some((f.data, Instant::now()));
                    done_holding = true;
                    continue;
                }
                to.send(&f.data)?;
            }
        }
    }
    Ok(())
}
