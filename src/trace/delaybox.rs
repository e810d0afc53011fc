//! The delay box: a two-port bridge in user space, in the middle namespace.
//! It copies every frame from one of its veth ends to the other unchanged,
//! except one: the first client → server TCP segment with payload, which
//! it holds until told to let it go. That is a network delaying one
//! segment, as netem would (this kernel has no sch_netem): the client's
//! TCP sees no ACK, retransmits (tail loss probe or RTO), the copy gets
//! through, and the original arrives later, the same bytes as sent.

use super::decode::decode_frame;
use crate::error::{Error, Result};
use crate::sys::packet::{self, PACKET_OUTGOING, PacketSocket};
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The box never runs longer than this.
const MAX_RUN: Duration = Duration::from_secs(60);

/// The frame the box held, once released.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// Its bytes, as the client sent them.
    pub(crate) frame: Vec<u8>,
    /// How long the box held it.
    pub(crate) held_for: Duration,
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
            PacketSocket::open(i).map_err(|e| Error::Netns(format!("packet socket on {i}: {e}")))
        };
        let (a, b) = (open(client_if)?, open(server_if)?);
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("twlab-delaybox".into())
            .spawn(move || relay(&a, &b, client, server, &rx))
            .map_err(|e| Error::Netns(format!("spawn the delay box: {e}")))?;
        Ok(DelayBox {
            cmd: tx,
            thread: Some(thread),
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

fn relay(
    a: &PacketSocket,
    b: &PacketSocket,
    client: SocketAddr,
    server: SocketAddr,
    cmd: &Receiver<Cmd>,
) -> std::io::Result<()> {
    let start = Instant::now();
    let mut held: Option<(Vec<u8>, Instant)> = None;
    let mut done_holding = false;
    // Bounded by MAX_RUN.
    while start.elapsed() < MAX_RUN {
        match cmd.try_recv() {
            Ok(Cmd::Stop) | Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            Ok(Cmd::Release(reply)) => {
                let out = held.take().map(|(frame, at)| Held {
                    frame,
                    held_for: at.elapsed(),
                });
                if let Some(h) = &out {
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
                if i == 0 && !done_holding {
                    if let Some(w) = decode_frame(&f.data) {
                        if w.src == client && w.dst == server && w.len > 0 {
                            held = Some((f.data, Instant::now()));
                            done_holding = true;
                            continue;
                        }
                    }
                }
                to.send(&f.data)?;
            }
        }
    }
    Ok(())
}
