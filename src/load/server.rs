//! The in-process server: one thread, epoll over every destination's
//! listener and every accepted connection, so tens of thousands of held
//! connections cost nothing while they are idle.
//!
//! The protocol is one byte each way: `q` asks for a reply `r`; `c` asks
//! the server to close first (a "Connection: close"); EOF means the client
//! closed first, and the server closes after it.

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// A request byte.
pub(crate) const REQUEST: u8 = b'q';
/// The reply byte.
pub(crate) const REPLY: u8 = b'r';
/// "Close first, please."
pub(crate) const CLOSE: u8 = b'c';

/// When the server closes a connection on its own. Not a
/// [`Close`](crate::experiment::Close) (who closes first, and how): this is
/// *when* the server's end closes; the workload's `closer` decides who is
/// first, and `load`'s `server_close` picks this from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerClose {
    /// Right after accept(): connections without requests, server first.
    AtAccept,
    /// On a [`CLOSE`] byte, or after the client's FIN.
    OnRequest,
}

/// A running server; [`Server::stop`] (or drop) ends it and closes every
/// socket.
pub(crate) struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Listen on `addr` (backlog 4096; SO_REUSEADDR as every server, and
/// SO_REUSEPORT so each server thread has a listener of its own and the
/// kernel spreads the connections over them, `reuseport_select_sock`).
fn listen(addr: SocketAddrV4) -> Result<Socket> {
    let what = format!("load server: listen on {addr}");
    let err = |e: std::io::Error| Error::sys(what.clone(), &e);
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_reuse_port(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(4096).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    Ok(s)
}

/// One server thread's listeners, registered in its epoll.
fn listeners(addrs: &[SocketAddrV4]) -> Result<(Epoll, Vec<Socket>)> {
    let listeners = addrs
        .iter()
        .map(|a| listen(*a))
        .collect::<Result<Vec<_>>>()?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
        .map_err(|e| Error::sys("epoll_create", &e.into()))?;
    for l in &listeners {
        let ev = EpollEvent::new(EpollFlags::EPOLLIN, l.as_raw_fd() as u64);
        epoll
            .add(l, ev)
            .map_err(|e| Error::sys("epoll_ctl", &e.into()))?;
    }
    Ok((epoll, listeners))
}

impl Server {
    /// Start listening on `addrs` (before returning, so clients may connect
    /// at once) and serve on `threads` threads of the caller's namespace.
    pub fn start(addrs: &[SocketAddrV4], close: ServerClose, threads: usize) -> Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = Server {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for i in 0..threads.max(1) {
            // On error `server` is dropped: the threads started so far stop.
            let (epoll, listeners) = listeners(addrs)?;
            let flag = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("twlab-load-server-{i}"))
                .spawn(move || serve(epoll, listeners, close, &flag))
                .map_err(|e| Error::sys("spawn the load server", &e))?;
            server.threads.push(t);
        }
        Ok(server)
    }

    /// Stop serving and close every socket.
    pub fn stop(self) {
        drop(self)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What one readable connection asked for.
enum Next {
    Keep,
    Close,
}

/// Read what is there and answer it; `Close` on EOF, error or [`CLOSE`].
fn serve_conn(s: &mut Socket) -> Next {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Next::Close,
            Ok(n) => {
                let replies = buf[..n].iter().filter(|b| **b == REQUEST).count();
                if replies > 0 && s.write_all(&vec![REPLY; replies]).is_err() {
                    return Next::Close;
                }
                if buf[..n].contains(&CLOSE) {
                    return Next::Close;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Next::Close,
        }
    }
}

fn serve(epoll: Epoll, listeners: Vec<Socket>, close: ServerClose, stop: &AtomicBool) {
    let lfds: Vec<u64> = listeners.iter().map(|l| l.as_raw_fd() as u64).collect();
    let mut conns: HashMap<u64, Socket> = HashMap::new();
    let mut events = vec![EpollEvent::empty(); 256];
    // Bounded by the stop flag, checked every 20 ms at most.
    while !stop.load(Ordering::Relaxed) {
        let n = match epoll.wait(&mut events, EpollTimeout::from(20u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        };
        for ev in &events[..n] {
            let key = ev.data();
            if let Some(i) = lfds.iter().position(|l| *l == key) {
                accept_all(&epoll, &listeners[i], close, &mut conns);
            } else if let Some(s) = conns.get_mut(&key)
                && let Next::Close = serve_conn(s)
            {
                let s = conns.remove(&key).expect("present");
                let _ = epoll.delete(&s);
            }
        }
    }
}

/// Accept every pending connection (the listener is non-blocking).
fn accept_all(epoll: &Epoll, l: &Socket, close: ServerClose, conns: &mut HashMap<u64, Socket>) {
    // At most one backlog's worth per wake-up, so the loop is bounded.
    for _ in 0..4096 {
        let Ok((s, _)) = l.accept() else { return };
        if close == ServerClose::AtAccept {
            continue; // dropped: the server closes first
        }
        if s.set_nonblocking(true).is_err() {
            continue;
        }
        let key = s.as_raw_fd() as u64;
        let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, key);
        if epoll.add(&s, ev).is_ok() {
            conns.insert(key, s);
        }
    }
}
