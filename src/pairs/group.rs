//! A SO_REUSEPORT group on real sockets, in a fresh namespace: N listeners
//! on one address, M connections hashed across them (`reuseport_select_sock()`
//! picks a member by the 4-tuple's hash), counted per listener from each
//! listener's accept queue (sock_diag's recv-q of a LISTEN socket is its
//! accept backlog). Drain mode closes one listener with its connections
//! still queued: `inet_csk_listen_stop()` disconnects each queued child
//! (`inet_child_forget()` → `tcp_disconnect()`: RST) unless
//! `net.ipv4.tcp_migrate_req` = 1 moves it to another member
//! (`reuseport_migrate_sock()`). Each client's connect() had returned ok; a
//! non-blocking read then tells which ones were reset.

use crate::diag::{self, Query, StateSet, TcpState};
use crate::error::{Error, Result};
use crate::netns::{self, Sysctl};
use crate::outcome::SysError;
use crate::socket::{Family, SocketOpts, TcpSock};
use serde::Serialize;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// The experiment.
/// Built with [`GroupPlan::new`] outside this crate (it may grow fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupPlan {
    /// Listeners in the group (≥ 1).
    pub listeners: usize,
    /// Connections to make.
    pub connections: usize,
    /// Close listener 0 with its connections still queued.
    pub drain: bool,
    /// `net.ipv4.tcp_migrate_req` = 1: queued connections move to another
    /// listener instead of being reset.
    pub migrate: bool,
}

impl GroupPlan {
    /// `listeners` in one group taking `connections`, no listener closed
    /// early, `tcp_migrate_req` left at 0.
    pub fn new(listeners: usize, connections: usize) -> Self {
        GroupPlan {
            listeners,
            connections,
            drain: false,
            migrate: false,
        }
    }
}

/// What happened when listener 0 closed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Drain {
    /// Connections in its accept queue when it closed.
    pub queued: usize,
    /// Clients whose read then failed with ECONNRESET.
    pub clients_reset: usize,
    /// Connections the remaining listeners accepted.
    pub accepted_by_others: usize,
}

/// The result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct GroupReport {
    /// The group's address.
    pub addr: SocketAddr,
    /// Connections queued in each listener (before any accept).
    pub per_listener: Vec<usize>,
    /// Connections whose connect() returned ok.
    pub connected: usize,
    /// The drain, if asked.
    pub drain: Option<Drain>,
}

const TIMEOUT: Duration = Duration::from_secs(3);

fn sys(what: &str, e: crate::socket::StepError) -> Error {
    Error::Sys {
        what: format!("reuseport group: {what}"),
        err: e.error,
    }
}

/// Descriptors a run holds at most: one per client end (the server ends
/// wait in the accept queues, no descriptor until accept()), one per
/// listener, and a margin for the namespace, netlink and std streams.
fn descriptors_needed(plan: &GroupPlan) -> u64 {
    (plan.connections + plan.listeners) as u64 + 64
}

/// Run the plan in a fresh namespace.
pub fn run(plan: GroupPlan) -> Result<GroupReport> {
    crate::socket::ensure_descriptors(descriptors_needed(&plan), "make fewer --connections")?;
    let migrate = Sysctl::new(
        "net.ipv4.tcp_migrate_req",
        if plan.migrate { "1" } else { "0" },
    );
    // listen() caps the backlog at net.core.somaxconn (4096 by default,
    // per namespace: __sys_listen()); past it SYNs are dropped and
    // connect() times out, so the namespace's cap fits the plan.
    let somaxconn = Sysctl::new(
        "net.core.somaxconn",
        (plan.connections + 16).max(4096).to_string(),
    );
    netns::run_in_fresh(vec![migrate, somaxconn], move || run_here(plan))?
}

/// Each listener's accept-queue length, by socket inode, once the queues
/// hold `total` connections (bounded wait).
fn queued(inodes: &[u64], total: usize) -> Result<Vec<usize>> {
    let end = Instant::now() + TIMEOUT;
    loop {
        let l = diag::dump(&Query::states(StateSet::of(&[TcpState::Listen])))?;
        let v: Vec<usize> = inodes
            .iter()
            .map(|i| {
                l.iter()
                    .find(|e| u64::from(e.inode) == *i)
                    .map_or(0, |e| e.recv_q as usize)
            })
            .collect();
        if v.iter().sum::<usize>() >= total || Instant::now() > end {
            return Ok(v);
        }
        crate::signal::check()?;
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn run_here(plan: GroupPlan) -> Result<GroupReport> {
    let mut listeners = Vec::new();
    let mut clients = Vec::new();
    let r = experiment(plan, &mut listeners, &mut clients);
    teardown(listeners, clients);
    r
}

/// Close everything the run opened, also after an error or a stop signal,
/// the cheap way round: the listeners first, each on a thread of its own.
/// A listener's close() disconnects every child still in its accept queue
/// with an RST (inet_csk_listen_stop() → inet_child_forget() →
/// tcp_disconnect()), which on loopback resets the client end at once
/// (tcp_reset() → tcp_done()), so the clients' close() then has nothing to
/// send. Clients first would cost a FIN, its ACK and then that RST per
/// connection: measured here, 10,000 queued connections took 300–340 ms
/// to close clients first and 130–200 ms listeners first, and a Ctrl-C
/// 1 s into `reuseport --connections 20000` took 330–365 ms to exit.
fn teardown(listeners: Vec<TcpSock>, clients: Vec<TcpSock>) {
    close_in_parallel(listeners);
    // Each close() of a reset client still frees a socket (a few µs;
    // 19,000 of them were most of a stop): on every core too.
    close_in_parallel(clients);
}

/// Close `socks` on as many threads as there are cores, in even batches.
fn close_in_parallel(mut socks: Vec<TcpSock>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = socks.len().div_ceil(cores).max(1);
    std::thread::scope(|s| {
        while !socks.is_empty() {
            let rest = socks.split_off(per_thread.min(socks.len()));
            let batch = std::mem::replace(&mut socks, rest);
            // A thread that cannot start drops its closure, and with it
            // the batch, right here.
            let _ = std::thread::Builder::new()
                .name("twlab-close".into())
                .spawn_scoped(s, move || drop(batch));
        }
    });
}

/// The run itself; what it opened stays in `listeners` and `clients` for
/// [`teardown`].
fn experiment(
    plan: GroupPlan,
    listeners: &mut Vec<TcpSock>,
    clients: &mut Vec<TcpSock>,
) -> Result<GroupReport> {
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 8080);
    let opts = SocketOpts {
        reuseport: true,
        ..Default::default()
    };
    let backlog = i32::try_from(plan.connections + 16).unwrap_or(i32::MAX);
    for _ in 0..plan.listeners.max(1) {
        let l = TcpSock::new(Family::V4, opts).map_err(|e| sys("socket", e))?;
        l.bind(addr).map_err(|e| sys("bind", e))?;
        l.listen(backlog).map_err(|e| sys("listen", e))?;
        listeners.push(l);
    }
    let inodes: Vec<u64> = listeners
        .iter()
        .map(|l| crate::sys::fsuid::socket_inode(l.sock.as_fd()).unwrap_or(0))
        .collect();
    for _ in 0..plan.connections {
        // A stop signal ends the run within one connect() (loopback: µs),
        // not after the last of up to 100,000.
        crate::signal::check()?;
        let c = TcpSock::new(Family::V4, SocketOpts::default()).map_err(|e| sys("socket", e))?;
        c.connect(addr, TIMEOUT).map_err(|e| sys("connect", e))?;
        clients.push(c);
    }
    let per_listener = queued(&inodes, clients.len())?;
    let mut drain = None;
    if plan.drain && listeners.len() > 1 {
        let queued0 = per_listener[0];
        listeners.remove(0).close();
        let expect_reset = if plan.migrate { 0 } else { queued0 };
        let clients_reset = count_reset(clients, expect_reset)?;
        // Every connection not reset ends in another listener's queue:
        // wait for them (bounded), not only for those already there.
        let accepted_by_others = accept_all(listeners, clients.len() - clients_reset)?;
        drain = Some(Drain {
            queued: queued0,
            clients_reset,
            accepted_by_others,
        });
    }
    Ok(GroupReport {
        addr,
        per_listener,
        connected: clients.len(),
        drain,
    })
}

/// How many clients see ECONNRESET on a non-blocking read; waits (bounded)
/// until at least `expect` do, then counts once more.
fn count_reset(clients: &[TcpSock], expect: usize) -> Result<usize> {
    let end = Instant::now() + Duration::from_millis(500);
    for c in clients {
        c.sock.set_nonblocking(true).map_err(|e| Error::Sys {
            what: "reuseport group: nonblocking".into(),
            err: SysError::from_io(&e),
        })?;
    }
    // The first read after an RST returns ECONNRESET once (sk_err is
    // cleared), so remember who saw it.
    let mut reset = vec![false; clients.len()];
    loop {
        for (c, seen) in clients.iter().zip(reset.iter_mut()) {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
            if let Err(e) = c.sock.peek(&mut buf)
                && e.kind() == io::ErrorKind::ConnectionReset
            {
                *seen = true;
            }
        }
        let n = reset.iter().filter(|r| **r).count();
        if n >= expect || Instant::now() > end {
            return Ok(n);
        }
        crate::signal::check()?;
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Accept what `listeners` queue until `expect` came (or [`TIMEOUT`]):
/// under load a handshake that was still completing when the first
/// listener closed reaches its new queue a moment later
/// (inet_csk_reqsk_queue_drop_and_put → migration on the ACK), so one
/// non-blocking pass could miss it.
fn accept_all(listeners: &[TcpSock], expect: usize) -> Result<usize> {
    for l in listeners {
        l.sock.set_nonblocking(true).map_err(|e| Error::Sys {
            what: "reuseport group: nonblocking".into(),
            err: SysError::from_io(&e),
        })?;
    }
    let end = Instant::now() + TIMEOUT;
    let mut n = 0;
    loop {
        for l in listeners {
            while l.sock.accept().is_ok() {
                n += 1;
            }
        }
        if n >= expect || Instant::now() > end {
            return Ok(n);
        }
        crate::signal::check()?;
        std::thread::sleep(Duration::from_millis(2));
    }
}
