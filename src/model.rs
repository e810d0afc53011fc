//! The Linux rule model: predict the outcome of an experiment's next step
//! from its factors, the kernel's view of the old 4-tuple, and the
//! namespace's sysctls — without running anything — and explain it in one
//! sentence that names the kernel function or RFC section that decides it.
//!
//! The rules were read from the kernel source (net/ipv4/inet_connection_sock.c,
//! net/ipv4/inet_hashtables.c, net/ipv4/tcp_ipv4.c, net/ipv4/tcp_minisocks.c,
//! net/ipv4/tcp.c, net/ipv4/tcp_input.c); DESIGN.md §2b lists them. One
//! correction to §2b found while reading: `tcp_twsk_unique()` does not refuse
//! a FIN_WAIT2-substate timewait socket outright, it sets `reuse = 0`
//! (commit "tcp: avoid reusing FIN_WAIT2 when trying to find port in connect()
//! process", 6.11). That matters only for kernel-chosen ports (`twp != NULL`);
//! a socket that bound its port explicitly takes the FIN_WAIT2 mini-socket
//! over just like a TIME_WAIT one, as long as timestamps were seen.
//!
//! IPv6 follows the same rules: `inet6_hash_connect()` is
//! `__inet_hash_connect()` with `__inet6_check_established()`, TCPv6 uses the
//! same `tcp_twsk_unique()` and `inet_csk_get_port()`. IP_BIND_ADDRESS_NO_PORT
//! with bind(addr, 0) skips `inet_csk_get_port()` in `__inet_bind()`, so the
//! port is chosen in `__inet_hash_connect()` exactly as for a socket that never
//! bound (no SOCK_BINDPORT_LOCK either).
//!
//! Windows and BSD/macOS predictions come from their documentation (DESIGN.md
//! §3) and are labelled "documented, not run".

use crate::diag::{Side, SockEntry, TcpState, TimerKind, TupleView};
use crate::outcome::{Outcome, Step, SysError};
use crate::scenario::{ClientPort, Experiment, NextStep, When};
use crate::socket::SocketOpts;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// TCP_TIMEWAIT_LEN (include/net/tcp.h): 60 s, not a sysctl.
pub const TIMEWAIT_LEN_MS: u32 = 60_000;

/// How close (ms) a TIME_WAIT's age may come to `tcp_tw_reuse_delay` before
/// the prediction is called borderline: diag reports the timer at jiffy
/// resolution (up to 4 ms at HZ=250) and some milliseconds pass between the
/// dump and the connect().
pub const BORDER_MS: u32 = 30;

pub use crate::sysctl::{PortRange, TwReuse};

/// What the model needs to know about the kernel and the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// `net.ipv4.tcp_timestamps` != 0.
    pub timestamps: bool,
    pub tw_reuse: TwReuse,
    /// `net.ipv4.tcp_tw_reuse_delay` (ms); `None` on kernels without it
    /// (before 6.14), where the delay is a hard-coded second.
    pub tw_reuse_delay_ms: Option<u32>,
    pub port_range: PortRange,
    pub max_tw_buckets: u32,
}

impl KernelFacts {
    /// Read the calling thread's network namespace sysctls and the kernel
    /// release.
    pub fn read_current() -> crate::Result<Self> {
        Ok(Self::from_sysctls(&crate::sysctl::NetSysctls::read()?))
    }

    /// The facts for a namespace whose sysctls are `s`.
    pub fn from_sysctls(s: &crate::sysctl::NetSysctls) -> Self {
        KernelFacts {
            release: kernel_release(),
            timestamps: s.timestamps,
            tw_reuse: s.tw_reuse,
            tw_reuse_delay_ms: s.tw_reuse_delay_ms,
            port_range: s.port_range,
            max_tw_buckets: s.max_tw_buckets,
        }
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Everything a prediction is made from.
#[derive(Debug, Clone, Copy)]
pub struct CellFacts<'a> {
    pub experiment: &'a Experiment,
    /// The old 4-tuple from both ends at the moment of the step (the
    /// report's `before`, or `at_failure`).
    pub view: &'a TupleView,
    /// The first connection's client end (the port a rebind or a fixed
    /// reconnect uses).
    pub client_addr: SocketAddr,
    pub kernel: &'a KernelFacts,
}

/// Which rule decided a prediction (DESIGN.md §2b numbering in the docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleId {
    /// §2b.2: a socket still in the port's bind bucket conflicts.
    BindConflict,
    /// §2b.2: both sockets have SO_REUSEADDR and the holder is not listening.
    BindReuseaddr,
    /// §2b.2: both sockets have SO_REUSEPORT (same uid, or holder TIME_WAIT).
    BindReuseport,
    /// Nothing holds the port any more.
    BindFree,
    /// §2b.4: the 4-tuple is held by a full socket (not TIME_WAIT).
    TupleBusy,
    /// §2b.5: bound port, TIME_WAIT with timestamps → taken over (twp NULL).
    TwTakeoverTimestamps,
    /// §2b.5: the TIME_WAIT saw no timestamps → never reused.
    TwNoTimestamps,
    /// §2b.3: connect() chose another free port.
    EphemeralOtherPort,
    /// §2b.5: kernel-chosen port, tcp_tw_reuse allows taking the TIME_WAIT.
    EphemeralTwReuse,
    /// §2b.5: kernel-chosen port, TIME_WAIT not reusable (tw_reuse off,
    /// delay not over, FIN_WAIT2 substate, no timestamps) and no other port.
    EphemeralExhausted,
    /// §2b.6: the 4-tuple is free here; the server's TIME_WAIT accepts the
    /// new SYN (tcp_timewait_state_process → TCP_TW_SYN).
    SynIntoTimeWait,
    /// The 4-tuple is free on both ends.
    TupleFree,
    /// The full socket at the server end answers the SYN with a challenge
    /// ACK; the client's RST kills it and the SYN retransmit succeeds.
    ChallengeAckThenRetry,
}

impl RuleId {
    pub fn name(self) -> &'static str {
        match self {
            RuleId::BindConflict => "bind-conflict",
            RuleId::BindReuseaddr => "bind-reuseaddr",
            RuleId::BindReuseport => "bind-reuseport",
            RuleId::BindFree => "bind-free",
            RuleId::TupleBusy => "tuple-busy",
            RuleId::TwTakeoverTimestamps => "tw-takeover-timestamps",
            RuleId::TwNoTimestamps => "tw-no-timestamps",
            RuleId::EphemeralOtherPort => "ephemeral-other-port",
            RuleId::EphemeralTwReuse => "ephemeral-tw-reuse",
            RuleId::EphemeralExhausted => "ephemeral-exhausted",
            RuleId::SynIntoTimeWait => "syn-into-time-wait",
            RuleId::TupleFree => "tuple-free",
            RuleId::ChallengeAckThenRetry => "challenge-ack-then-retry",
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A predicted outcome with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    pub outcome: Outcome,
    pub rule: RuleId,
    /// One sentence, citing the kernel function or RFC section.
    pub explanation: String,
    /// What would make the step succeed, if it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Which part of the rule depends on the kernel version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_note: Option<String>,
    /// The prediction hangs on a timing comparison closer than
    /// [`BORDER_MS`] (TIME_WAIT age vs tcp_tw_reuse_delay).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub borderline: bool,
}

/// A prediction for a system twlab cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentedPrediction {
    pub outcome: Outcome,
    pub explanation: String,
    /// Always "documented, not run".
    pub label: String,
}

fn ok(rule: RuleId, explanation: String) -> Prediction {
    Prediction {
        outcome: Outcome::Ok,
        rule,
        explanation,
        fix: None,
        version_note: None,
        borderline: false,
    }
}

fn err(step: Step, code: i32) -> Outcome {
    Outcome::Failed {
        step,
        error: SysError::from_code(code),
    }
}

/// What holds a port's bind bucket or a 4-tuple, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    /// The state the kernel shows; `Closed` for a socket that got an RST and
    /// left the established hash but whose descriptor, still open, keeps its
    /// explicitly bound port (SOCK_BINDPORT_LOCK: `tcp_set_state(TCP_CLOSE)`
    /// skips `inet_put_port`).
    state: TcpState,
    /// A timewait mini-socket (`inet_timewait_sock`): TIME_WAIT, or an
    /// orphaned FIN_WAIT2 kept as one (`tcp_time_wait(sk, TCP_FIN_WAIT2, ..)`
    /// from `tcp_close`/`tcp_rcv_state_process`). diag shows the substate
    /// with the timewait timer (`inet_twsk_diag_fill`).
    mini: bool,
    /// Still in the established hash (so it blocks the 4-tuple).
    hashed: bool,
    /// Timewait age in ms (TCP_TIMEWAIT_LEN minus the time left), for a
    /// real TIME_WAIT substate.
    tw_age_ms: Option<u32>,
    /// The socket options it carries (a TIME_WAIT keeps `sk_reuse` and
    /// `sk_reuseport`, `inet_twsk_alloc`; accepted sockets inherit the
    /// listener's, `sk_clone_lock`).
    opts: SocketOpts,
}

fn holder_from_entry(e: &SockEntry, opts: SocketOpts) -> Holder {
    let mini =
        e.state == TcpState::TimeWait || e.timer.map(|t| t.kind) == Some(TimerKind::Timewait);
    let tw_age_ms = match (e.state, e.timer) {
        (TcpState::TimeWait, Some(t)) => Some(TIMEWAIT_LEN_MS.saturating_sub(t.expires_ms)),
        _ => None,
    };
    Holder {
        state: e.state,
        mini,
        hashed: true,
        tw_age_ms,
        opts,
    }
}

/// Is a side's descriptor still open at the step? Only the end that did not
/// close first, and only when the step comes before that end closed
/// (`When::AtOnce`, `When::AfterAck`).
pub fn fd_open(x: &Experiment, side: Side) -> bool {
    matches!(x.when, When::AtOnce | When::AfterAck) && x.close.first() != side
}

/// The holder of one end of the old connection.
fn holder(x: &Experiment, view: &TupleView, side: Side) -> Option<Holder> {
    let (entry, opts, port_locked) = match side {
        // A fixed client port was bound explicitly (SOCK_BINDPORT_LOCK);
        // ephemeral and bind-no-port ports were chosen by connect() and are
        // released at TCP_CLOSE.
        Side::Client => (
            view.client.as_ref(),
            x.client,
            matches!(x.client_port, ClientPort::Fixed(_)),
        ),
        // Accepted sockets do NOT inherit the listener's bind lock:
        // sk_clone_lock() sets `sk_userlocks & ~SOCK_BINDPORT_LOCK`, so a
        // reset child leaves the port at TCP_CLOSE even with its descriptor
        // open (first found by a matrix mismatch, then read in the source).
        Side::Server => (view.server.as_ref(), x.listener, false),
    };
    match entry {
        Some(e) => Some(holder_from_entry(e, opts)),
        None if fd_open(x, side) && port_locked => Some(Holder {
            state: TcpState::Closed,
            mini: false,
            hashed: false,
            tw_age_ms: None,
            opts,
        }),
        None => None,
    }
}

fn describe_holder(side: Side, h: &Holder) -> String {
    if !h.hashed {
        format!("the {side}'s reset socket (CLOSE, descriptor still open)")
    } else if h.mini && h.state == TcpState::FinWait2 {
        format!("the {side}'s orphaned FIN_WAIT2 (a timewait mini-socket)")
    } else {
        format!("the {side}'s {}", h.state)
    }
}

/// `inet_bind_conflict()` with relax = true and reuseport_ok = true, as
/// `inet_csk_get_port()` calls it for bind() and, through
/// `inet_csk_listen_start()`, again for listen(). Returns the rule that lets
/// the new socket share the port, or `None` on a conflict.
fn bind_shares(new: SocketOpts, h: &Holder) -> Option<RuleId> {
    if new.reuseaddr && h.opts.reuseaddr && h.state != TcpState::Listen {
        Some(RuleId::BindReuseaddr)
    } else if new.reuseport && h.opts.reuseport {
        // Same uid always holds here (one process), and a TIME_WAIT holder
        // is accepted whatever its uid.
        Some(RuleId::BindReuseport)
    } else {
        None
    }
}

/// Bind the port held by `h` (if anything holds it).
fn predict_bind(
    step_name: &str,
    side: Side,
    new: SocketOpts,
    h: Option<Holder>,
    step: Step,
) -> std::result::Result<Option<RuleId>, Box<Prediction>> {
    let Some(h) = h else {
        return Ok(None);
    };
    match bind_shares(new, &h) {
        Some(rule) => Ok(Some(rule)),
        None => {
            let fix = if h.opts.reuseaddr && !new.reuseaddr {
                "set SO_REUSEADDR on the new socket too"
            } else if !h.opts.reuseaddr && new.reuseaddr {
                "set SO_REUSEADDR on the old socket too (the kernel checks both)"
            } else {
                "set SO_REUSEADDR on both sockets"
            };
            Err(Box::new(Prediction {
                outcome: err(step, libc::EADDRINUSE),
                rule: RuleId::BindConflict,
                explanation: format!(
                    "{step_name}: {} still sits in the port's bind bucket and SO_REUSEADDR is not set on both sockets (old {}, new {}), so inet_csk_get_port() → inet_bind_conflict() refuses it",
                    describe_holder(side, &h),
                    h.opts.label(),
                    new.label()
                ),
                fix: Some(fix.into()),
                version_note: Some(
                    "5.x: inet_csk_bind_conflict(); 6.x split into inet_bind_conflict()/inet_bhash2_conflict(), same rule".into(),
                ),
                borderline: false,
            }))
        }
    }
}

/// `tcp_twsk_unique()`'s loopback test for tcp_tw_reuse=2: a loopback
/// address at either end, IPv4-mapped IPv6 loopback included
/// (`ipv6_addr_v4mapped_loopback`).
fn is_loopback(view: &TupleView, client_addr: SocketAddr) -> bool {
    let lo = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => a.is_loopback(),
        std::net::IpAddr::V6(a) => {
            a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback())
        }
    };
    match &view.client {
        Some(e) => lo(e.local.ip()) || lo(e.peer.ip()),
        None => lo(client_addr.ip()),
    }
}

/// Predict the Linux outcome of the cell's next step.
pub fn predict_linux(cell: &CellFacts) -> Prediction {
    let x = cell.experiment;
    let client = holder(x, cell.view, Side::Client);
    let server = holder(x, cell.view, Side::Server);
    match x.next {
        NextStep::Rebind => {
            match predict_bind("bind()", Side::Client, x.new_opts, client, Step::Bind) {
                Err(p) => *p,
                Ok(Some(rule)) => ok(
                    rule,
                    format!(
                        "bind(): {} holds the port but {}, so inet_bind_conflict() lets them share it",
                        describe_holder(Side::Client, &client.expect("holder")),
                        share_reason(rule)
                    ),
                ),
                Ok(None) => ok(
                    RuleId::BindFree,
                    "bind(): no socket is left in the port's bind bucket (RST close, or the connect()-chosen port was released at TCP_CLOSE), so inet_csk_get_port() finds it free".into(),
                ),
            }
        }
        NextStep::RestartListener => {
            let why = match predict_bind(
                "bind() of the new listener",
                Side::Server,
                x.new_opts,
                server,
                Step::Bind,
            ) {
                Err(p) => return *p,
                Ok(Some(rule)) => (
                    rule,
                    format!(
                        "{} holds the server port but {}, so inet_bind_conflict() passes at bind() and again at listen() (inet_csk_listen_start() → get_port(), relax = true, the holder is not LISTEN)",
                        describe_holder(Side::Server, &server.expect("holder")),
                        share_reason(rule)
                    ),
                ),
                Ok(None) => (
                    RuleId::BindFree,
                    "the old listener is closed and no accepted socket holds the server port (a reset one released it at TCP_CLOSE even with its descriptor open, since sk_clone_lock() clears SOCK_BINDPORT_LOCK), so bind() and listen() (inet_csk_listen_start() → get_port()) find it free".into(),
                ),
            };
            ok(why.0, why.1)
        }
        NextStep::Reconnect => predict_reconnect(cell, client, server),
    }
}

fn share_reason(rule: RuleId) -> &'static str {
    match rule {
        RuleId::BindReuseaddr => "both sockets have SO_REUSEADDR and it is not listening",
        RuleId::BindReuseport => "both sockets have SO_REUSEPORT (same uid)",
        _ => "nothing conflicts",
    }
}

fn predict_reconnect(
    cell: &CellFacts,
    client: Option<Holder>,
    server: Option<Holder>,
) -> Prediction {
    let x = cell.experiment;
    let k = cell.kernel;
    let fixed = matches!(x.client_port, ClientPort::Fixed(_));
    let mut bind_rule = None;
    if fixed {
        match predict_bind("bind()", Side::Client, x.new_opts, client, Step::Bind) {
            Err(p) => return *p,
            Ok(r) => bind_rule = r,
        }
    }
    let no_ts_fix = "enable net.ipv4.tcp_timestamps (both ends), or wait out TIME_WAIT (60 s)";
    // The 4-tuple at the client end.
    let tuple = client.filter(|h| h.hashed);
    if fixed {
        // __inet_hash_connect(): the port is already bound →
        // check_established(.., twp = NULL).
        match tuple {
            Some(h) if !h.mini => {
                return Prediction {
                    outcome: err(Step::Connect, libc::EADDRNOTAVAIL),
                    rule: RuleId::TupleBusy,
                    explanation: format!(
                        "connect(): {} still owns the 4-tuple in the established hash, and __inet_check_established() reuses only TIME_WAIT entries{}",
                        describe_holder(Side::Client, &h),
                        if bind_rule.is_some() { " (bind() passed: the bind bucket rules allow sharing the port, not the 4-tuple)" } else { "" }
                    ),
                    fix: Some("wait until the old connection is fully closed (the peer closes too), or use a kernel-chosen port".into()),
                    version_note: None,
                    borderline: false,
                };
            }
            Some(h) => {
                // tcp_twsk_unique(): with twp == NULL only ts_recent_stamp
                // counts; tcp_tw_reuse, its delay and the FIN_WAIT2 substate
                // do not.
                if !k.timestamps {
                    return Prediction {
                        outcome: err(Step::Connect, libc::EADDRNOTAVAIL),
                        rule: RuleId::TwNoTimestamps,
                        explanation: format!(
                            "connect(): {} holds the 4-tuple and saw no TCP timestamps (tcp_timestamps=0), so tcp_twsk_unique() cannot prove the new connection safe (no PAWS, RFC 7323 §5) and __inet_check_established() refuses it",
                            describe_holder(Side::Client, &h)
                        ),
                        fix: Some(no_ts_fix.into()),
                        version_note: None,
                        borderline: false,
                    };
                }
                let mut p = ok(
                    RuleId::TwTakeoverTimestamps,
                    format!(
                        "connect(): {} holds the 4-tuple, but the port was bound before connect() (twp = NULL) and the connection used timestamps, so tcp_twsk_unique() lets the new socket take it over whatever tcp_tw_reuse says (ISN = tw_snd_nxt + 65537, PAWS protects it)",
                        describe_holder(Side::Client, &h)
                    ),
                );
                if h.state == TcpState::FinWait2 {
                    p.explanation.push_str("; the peer, still in CLOSE_WAIT, answers the SYN with a challenge ACK (RFC 5961 §4), the client answers that ACK with an RST that kills it, and tcp_rcv_synsent_state_process() re-arms the SYN timer at TCP_TIMEOUT_MIN so the retransmitted SYN connects within milliseconds");
                    p.rule = RuleId::ChallengeAckThenRetry;
                    p.version_note = Some("6.11+ sets reuse = 0 for a FIN_WAIT2 substate, which only matters for kernel-chosen ports".into());
                }
                return p;
            }
            None => {}
        }
        return free_tuple(cell, server);
    }
    // Kernel-chosen port (ephemeral, or bind(addr, 0) with
    // IP_BIND_ADDRESS_NO_PORT): __inet_hash_connect() scans
    // ip_local_port_range calling check_established(.., &tw).
    let old_port = cell.client_addr.port();
    if !k.port_range.is_only(old_port) {
        return ok(
            RuleId::EphemeralOtherPort,
            format!(
                "connect(): __inet_hash_connect() picks another free port from ip_local_port_range {}-{}, so the old 4-tuple does not matter",
                k.port_range.low, k.port_range.high
            ),
        );
    }
    let exhausted = |why: String, fix: &str, borderline: bool, version_note: Option<String>| {
        Prediction {
            outcome: err(Step::Connect, libc::EADDRNOTAVAIL),
            rule: RuleId::EphemeralExhausted,
            explanation: format!(
                "connect(): ip_local_port_range holds only port {old_port} and {why}, so __inet_hash_connect() finds no port and returns EADDRNOTAVAIL"
            ),
            fix: Some(fix.into()),
            version_note,
            borderline,
        }
    };
    match tuple {
        None => free_tuple(cell, server),
        Some(h) if !h.mini => exhausted(
            format!(
                "{} still owns its 4-tuple (__inet_check_established())",
                describe_holder(Side::Client, &h)
            ),
            "widen ip_local_port_range, or wait until the old connection is fully closed",
            false,
            None,
        ),
        Some(h) => {
            let loopback = is_loopback(cell.view, cell.client_addr);
            let reuse = match k.tw_reuse {
                TwReuse::Off => false,
                TwReuse::On => true,
                TwReuse::LoopbackOnly => loopback,
            };
            let version_delay = if k.tw_reuse_delay_ms.is_some() {
                None
            } else {
                Some("this kernel has no tcp_tw_reuse_delay (added in 6.14): the delay is 1 s on a seconds clock, so reuse comes 1–2 s after TIME_WAIT began".to_string())
            };
            if h.state == TcpState::FinWait2 {
                return exhausted(
                    format!(
                        "{} is not reused for kernel-chosen ports (tcp_twsk_unique() sets reuse = 0 for the FIN_WAIT2 substate)",
                        describe_holder(Side::Client, &h)
                    ),
                    "wait until the peer closes (TIME_WAIT), or bind the port explicitly",
                    false,
                    Some(
                        "before 6.11 tcp_twsk_unique() did not look at the FIN_WAIT2 substate"
                            .into(),
                    ),
                );
            }
            if !k.timestamps {
                return exhausted(
                    "its TIME_WAIT saw no timestamps, so tcp_twsk_unique() refuses it".into(),
                    no_ts_fix,
                    false,
                    None,
                );
            }
            if !reuse {
                let why = match k.tw_reuse {
                    TwReuse::Off => "tcp_tw_reuse=0".to_string(),
                    _ => "tcp_tw_reuse=2 applies to loopback only and this is not loopback"
                        .to_string(),
                };
                return exhausted(
                    format!("{why} forbids tcp_twsk_unique() to take its TIME_WAIT over"),
                    "set net.ipv4.tcp_tw_reuse=1 (or 2 on loopback), or widen ip_local_port_range",
                    false,
                    Some("tcp_tw_reuse=2 (loopback only) is the default since 4.x".into()),
                );
            }
            let delay = k.tw_reuse_delay_ms.unwrap_or(1000);
            let age = h.tw_age_ms.unwrap_or(0);
            let (lo, hi) = if k.tw_reuse_delay_ms.is_some() {
                (delay.saturating_sub(BORDER_MS), delay + BORDER_MS)
            } else {
                (delay.saturating_sub(BORDER_MS), 2 * delay + BORDER_MS)
            };
            let borderline = age >= lo && age <= hi;
            if age
                > delay
                    + if k.tw_reuse_delay_ms.is_some() {
                        0
                    } else {
                        delay
                    }
            {
                let mut p = ok(
                    RuleId::EphemeralTwReuse,
                    format!(
                        "connect(): the only port {old_port} is held by a TIME_WAIT {age} ms old, and tcp_tw_reuse={} with timestamps lets tcp_twsk_unique() take it over once tw_entry_stamp + tcp_tw_reuse_delay ({delay} ms) has passed",
                        k.tw_reuse.value()
                    ),
                );
                p.borderline = borderline;
                p.version_note = version_delay;
                p
            } else {
                exhausted(
                    format!(
                        "its TIME_WAIT is only {age} ms old, younger than tcp_tw_reuse_delay ({delay} ms) that tcp_twsk_unique() requires"
                    ),
                    "retry after tcp_tw_reuse_delay, lower net.ipv4.tcp_tw_reuse_delay, or widen ip_local_port_range",
                    borderline,
                    version_delay,
                )
            }
        }
    }
}

/// The client's 4-tuple is free: what does the server end say?
fn free_tuple(cell: &CellFacts, server: Option<Holder>) -> Prediction {
    match server.filter(|h| h.hashed) {
        Some(h) if h.state == TcpState::TimeWait => ok(
            RuleId::SynIntoTimeWait,
            if cell.kernel.timestamps {
                "connect(): the 4-tuple is free at the client; the server's TIME_WAIT accepts the new SYN because its timestamp is newer than tw_ts_recent (tcp_timewait_state_process() → TCP_TW_SYN, RFC 6191)".into()
            } else {
                "connect(): the 4-tuple is free at the client; the server's TIME_WAIT accepts the new SYN because its sequence number is above tw_rcv_nxt (tcp_timewait_state_process() → TCP_TW_SYN, RFC 1122 §4.2.2.13)".into()
            },
        ),
        Some(h) => ok(
            RuleId::ChallengeAckThenRetry,
            format!(
                "connect(): the 4-tuple is free at the client; {} answers the SYN with a challenge ACK (tcp_validate_incoming(), RFC 5961 §4), the client's RST kills it and the SYN, retransmitted after TCP_TIMEOUT_MIN (tcp_rcv_synsent_state_process()), connects",
                describe_holder(Side::Server, &h)
            ),
        ),
        None => {
            let x = cell.experiment;
            // Say which of the ways to free a 4-tuple applied here.
            let why = if x.close.is_rst() {
                "the SO_LINGER 0 close sent an RST, which leaves no TIME_WAIT at either end (tcp_disconnect(), RFC 793 ABORT)"
            } else if cell.kernel.max_tw_buckets == 0 {
                "tcp_max_tw_buckets = 0, so the first closer got no TIME_WAIT (inet_twsk_alloc() refused) and was destroyed"
            } else {
                "both ends finished closing and no TIME_WAIT is left"
            };
            ok(
                RuleId::TupleFree,
                format!(
                    "connect(): neither end holds the old 4-tuple any more: {why}; __inet_check_established() finds it free"
                ),
            )
        }
    }
}

const DOCUMENTED: &str = "documented, not run";

fn wsa(step: Step, code: i32) -> Outcome {
    let name = crate::sys::wsa::wsa_name(code)
        .unwrap_or("WSA?")
        .to_string();
    Outcome::Failed {
        step,
        error: SysError {
            name,
            code,
            wsa: None,
        },
    }
}

/// Who would hold the port/4-tuple on another OS: the same states as on
/// Linux, since they follow from the TCP state machine (RFC 793), except
/// that there is no timestamp-based early reuse.
fn other_holders(x: &Experiment, view: &TupleView) -> (Option<Holder>, Option<Holder>) {
    (holder(x, view, Side::Client), holder(x, view, Side::Server))
}

/// Windows, from Microsoft's "Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE" and
/// the Winsock connect() documentation: a 4-tuple in TIME_WAIT (2×MSL,
/// 240 s by default) makes connect() fail with WSAEADDRINUSE even with
/// SO_REUSEADDR; SO_REUSEADDR on the *new* socket alone lets bind() share a
/// port unless the holder used SO_EXCLUSIVEADDRUSE; there is no SO_REUSEPORT.
/// Parts of Microsoft's tables were found wrong by trio's notes-to-self
/// experiments, so this is a documented expectation, not a measurement.
pub fn predict_windows(cell: &CellFacts) -> DocumentedPrediction {
    let x = cell.experiment;
    let (client, server) = other_holders(x, cell.view);
    let d = |outcome, explanation: &str| DocumentedPrediction {
        outcome,
        explanation: explanation.to_string(),
        label: DOCUMENTED.into(),
    };
    if x.client.reuseport || x.listener.reuseport || x.new_opts.reuseport {
        // twlab's socket layer refuses it on Windows the same way.
        return d(
            wsa(Step::SetOpt, 10042),
            "setsockopt(SO_REUSEPORT): Windows has no SO_REUSEPORT (WSAENOPROTOOPT); the nearest is SO_REUSEADDR, and SO_EXCLUSIVEADDRUSE forbids sharing",
        );
    }
    let bind_blocked = |h: Option<Holder>| h.is_some() && !x.new_opts.reuseaddr;
    match x.next {
        NextStep::Rebind => {
            if bind_blocked(client) {
                d(
                    wsa(Step::Bind, 10048),
                    "bind(): the address is still in use and the new socket has no SO_REUSEADDR (SO_REUSEPORT does not exist on Windows)",
                )
            } else {
                d(
                    Outcome::Ok,
                    "bind(): SO_REUSEADDR on the new socket alone allows sharing the port unless the holder set SO_EXCLUSIVEADDRUSE",
                )
            }
        }
        NextStep::RestartListener => {
            if bind_blocked(server) {
                d(
                    wsa(Step::Bind, 10048),
                    "bind(): connections on the server port still use it and the new listener has no SO_REUSEADDR",
                )
            } else {
                d(
                    Outcome::Ok,
                    "bind()/listen(): the server port is free, or SO_REUSEADDR on the new listener shares it (SO_EXCLUSIVEADDRUSE on the old one would forbid it)",
                )
            }
        }
        NextStep::Reconnect => {
            if !matches!(x.client_port, ClientPort::Fixed(_)) {
                return d(
                    Outcome::Ok,
                    "connect(): Windows picks another ephemeral port",
                );
            }
            if bind_blocked(client) {
                return d(
                    wsa(Step::Bind, 10048),
                    "bind(): the client port is still in use and the new socket has no SO_REUSEADDR",
                );
            }
            match client.filter(|h| h.hashed) {
                Some(h) => d(
                    wsa(Step::Connect, 10048),
                    &format!(
                        "connect(): the client's old socket ({}) still holds the 4-tuple{}; SO_REUSEADDR does not help at connect()",
                        holder_state_name(&h),
                        if h.state == TcpState::TimeWait {
                            " for 2×MSL (240 s by default)"
                        } else {
                            ", and TIME_WAIT (240 s by default) follows"
                        }
                    ),
                ),
                None => d(
                    Outcome::Ok,
                    &free_tuple_text(
                        server,
                        "a SYN newer than the server's TIME_WAIT is accepted (RFC 1122 §4.2.2.13)",
                    ),
                ),
            }
        }
    }
}

/// BSD/macOS, from FreeBSD `in_pcbbind_setup`/`in_pcbconnect` and XNU
/// `tcp_connect` → `in_pcblookup_hash`: SO_REUSEADDR on the new socket alone
/// allows binding a port held only by connected or TIME_WAIT sockets; a
/// 4-tuple still present (TIME_WAIT included) makes connect() fail with
/// EADDRINUSE — no timestamp-based early reuse.
pub fn predict_bsd(cell: &CellFacts) -> DocumentedPrediction {
    let x = cell.experiment;
    let (client, server) = other_holders(x, cell.view);
    let d = |outcome, explanation: &str| DocumentedPrediction {
        outcome,
        explanation: explanation.to_string(),
        label: DOCUMENTED.into(),
    };
    // BSD's EADDRINUSE is 48; name it portably.
    let inuse = |step| Outcome::Failed {
        step,
        error: SysError {
            name: "EADDRINUSE".into(),
            code: 48,
            wsa: None,
        },
    };
    let blocked = |h: Option<Holder>| match h {
        // A reset socket is removed from the PCB hash (in_pcbdrop).
        Some(h) if h.hashed => {
            let shares = x.new_opts.reuseaddr || (x.new_opts.reuseport && h.opts.reuseport);
            !shares
        }
        _ => false,
    };
    match x.next {
        NextStep::Rebind => {
            if blocked(client) {
                d(
                    inuse(Step::Bind),
                    "bind(): the port is held and the new socket has neither SO_REUSEADDR nor a shared SO_REUSEPORT",
                )
            } else {
                d(
                    Outcome::Ok,
                    "bind(): free, or SO_REUSEADDR on the new socket allows a port held by connected/TIME_WAIT sockets",
                )
            }
        }
        NextStep::RestartListener => {
            if blocked(server) {
                d(
                    inuse(Step::Bind),
                    "bind(): accepted connections still hold the server port and the new listener has no SO_REUSEADDR",
                )
            } else {
                d(
                    Outcome::Ok,
                    "bind()/listen(): free, or SO_REUSEADDR on the new listener (the classic server-restart use)",
                )
            }
        }
        NextStep::Reconnect => {
            if !matches!(x.client_port, ClientPort::Fixed(_)) {
                return d(Outcome::Ok, "connect(): another ephemeral port is chosen");
            }
            if blocked(client) {
                return d(
                    inuse(Step::Bind),
                    "bind(): the client port is held and the new socket has no SO_REUSEADDR",
                );
            }
            match client.filter(|h| h.hashed) {
                Some(h) => d(
                    inuse(Step::Connect),
                    &format!(
                        "connect(): in_pcbconnect/in_pcblookup_hash finds the 4-tuple held by the client's old socket ({}) → EADDRINUSE; no timestamp-based early reuse",
                        holder_state_name(&h)
                    ),
                ),
                None => d(
                    Outcome::Ok,
                    &free_tuple_text(
                        server,
                        "a SYN with SEQ > RCV.NXT closes the server's TIME_WAIT and is processed",
                    ),
                ),
            }
        }
    }
}

/// "TIME_WAIT", "FIN_WAIT2 (timewait mini-socket)".
fn holder_state_name(h: &Holder) -> String {
    if h.mini && h.state != TcpState::TimeWait {
        format!("{} (timewait mini-socket)", h.state)
    } else {
        h.state.to_string()
    }
}

/// Why a reconnect from a fixed port succeeds when the client end is free:
/// the server's TIME_WAIT (if any) takes the SYN per `tw_rule`.
fn free_tuple_text(server: Option<Holder>, tw_rule: &str) -> String {
    match server.filter(|h| h.hashed) {
        Some(h) if h.state == TcpState::TimeWait => {
            format!("connect(): the 4-tuple is free at the client; {tw_rule}")
        }
        Some(h) => format!(
            "connect(): the 4-tuple is free at the client; the server's old socket ({}) answers the SYN with an ACK, the client resets it and its retransmitted SYN connects (RFC 793 §3.4, RFC 5961 §4)",
            holder_state_name(&h)
        ),
        None => "connect(): neither end holds the old 4-tuple any more".to_string(),
    }
}

/// True if two outcomes agree on the step and the error name.
pub fn same_outcome(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Ok, Outcome::Ok) => true,
        (
            Outcome::Failed {
                step: s1,
                error: e1,
            },
            Outcome::Failed {
                step: s2,
                error: e2,
            },
        ) => s1 == s2 && e1.name == e2.name,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    //! Expected values come from the kernel rules cited in each test, not
    //! from running anything.
    use super::*;
    use crate::diag::Timer;
    use crate::scenario::CloseBy;
    use crate::socket::Family;

    const C: &str = "127.0.0.1:23456";
    const S: &str = "127.0.0.1:12345";

    fn facts() -> KernelFacts {
        KernelFacts {
            release: "6.18.0".into(),
            timestamps: true,
            tw_reuse: TwReuse::LoopbackOnly,
            tw_reuse_delay_ms: Some(1000),
            port_range: PortRange {
                low: 32768,
                high: 60999,
            },
            max_tw_buckets: 131072,
        }
    }

    fn ra() -> SocketOpts {
        SocketOpts {
            reuseaddr: true,
            ..Default::default()
        }
    }
    fn rp() -> SocketOpts {
        SocketOpts {
            reuseport: true,
            ..Default::default()
        }
    }

    fn exp(close: CloseBy, when: When, next: NextStep, port: ClientPort) -> Experiment {
        Experiment {
            family: Family::V4,
            server_port: 12345,
            client_port: port,
            listener: SocketOpts::default(),
            client: ra(),
            close,
            when,
            next,
            new_opts: ra(),
            until_free: None,
        }
    }

    /// A diag entry; `tw_left` gives a timewait timer (mini-socket).
    fn entry(local: &str, peer: &str, state: TcpState, tw_left: Option<u32>) -> SockEntry {
        SockEntry {
            family: Family::V4,
            state,
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            timer: tw_left.map(|ms| Timer {
                kind: TimerKind::Timewait,
                expires_ms: ms,
                retrans: 0,
            }),
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode: 0,
        }
    }
    fn cli(state: TcpState, tw_left: Option<u32>) -> Option<SockEntry> {
        Some(entry(C, S, state, tw_left))
    }
    fn srv(state: TcpState, tw_left: Option<u32>) -> Option<SockEntry> {
        Some(entry(S, C, state, tw_left))
    }
    fn view(client: Option<SockEntry>, server: Option<SockEntry>) -> TupleView {
        TupleView { client, server }
    }

    fn predict(x: &Experiment, v: &TupleView, k: &KernelFacts) -> Prediction {
        predict_linux(&CellFacts {
            experiment: x,
            view: v,
            client_addr: C.parse().unwrap(),
            kernel: k,
        })
    }
    fn short(p: &Prediction) -> String {
        p.outcome.short()
    }

    // §2 row 1 / §2b.5: bound port, TIME_WAIT with timestamps → takeover
    // (twp == NULL), whatever tcp_tw_reuse is.
    #[test]
    fn fixed_port_time_wait_with_timestamps_is_taken_over_for_any_tw_reuse() {
        let x = exp(
            CloseBy::Client,
            When::AfterPeer,
            NextStep::Reconnect,
            ClientPort::Fixed(23456),
        );
        let v = view(cli(TcpState::TimeWait, Some(59_990)), None);
        for r in [TwReuse::Off, TwReuse::On, TwReuse::LoopbackOnly] {
            let k = KernelFacts {
                tw_reuse: r,
                ..facts()
            };
            let p = predict(&x, &v, &k);
            assert_eq!(short(&p), "ok", "{r:?}");
            assert_eq!(p.rule, RuleId::TwTakeoverTimestamps);
        }
    }

    // §2 row 2: timestamps off → tw_ts_recent_stamp == 0 → no reuse.
    #[test]
    fn fixed_port_time_wait_without_timestamps_is_eaddrnotavail() {
        let x = exp(
            CloseBy::Client,
            When::AfterPeer,
            NextStep::Reconnect,
            ClientPort::Fixed(23456),
        );
        let v = view(cli(TcpState::TimeWait, Some(59_990)), None);
        let k = KernelFacts {
            timestamps: false,
            ..facts()
        };
        let p = predict(&x, &v, &k);
        assert_eq!(short(&p), "connect: EADDRNOTAVAIL");
        assert_eq!(p.rule, RuleId::TwNoTimestamps);
    }

    // Bind rule: TIME_WAIT keeps sk_reuse; both need SO_REUSEADDR.
    #[test]
    fn bind_needs_reuseaddr_on_both() {
        let v = view(cli(TcpState::TimeWait, Some(59_990)), None);
        for (old, new, want) in [
            (false, false, "bind: EADDRINUSE"),
            (true, false, "bind: EADDRINUSE"),
            (false, true, "bind: EADDRINUSE"),
            (true, true, "ok"),
        ] {
            let mut x = exp(
                CloseBy::Client,
                When::AfterPeer,
                NextStep::Rebind,
                ClientPort::Fixed(23456),
            );
            x.client.reuseaddr = old;
            x.new_opts.reuseaddr = new;
            assert_eq!(
                short(&predict(&x, &v, &facts())),
                want,
                "old {old} new {new}"
            );
        }
    }

    // Bind rule: SO_REUSEPORT on both shares the port even with a live
    // (non-TIME_WAIT) holder of the same uid.
    #[test]
    fn reuseport_on_both_shares_even_a_live_port() {
        let mut x = exp(
            CloseBy::Server,
            When::AtOnce,
            NextStep::Rebind,
            ClientPort::Fixed(23456),
        );
        x.client = rp();
        x.new_opts = rp();
        let v = view(
            cli(TcpState::CloseWait, None),
            srv(TcpState::FinWait2, Some(59_000)),
        );
        let p = predict(&x, &v, &facts());
        assert_eq!(short(&p), "ok");
        assert_eq!(p.rule, RuleId::BindReuseport);
        x.new_opts = SocketOpts::default();
        assert_eq!(short(&predict(&x, &v, &facts())), "bind: EADDRINUSE");
    }

    // Timing: CLOSE_WAIT (server closed first, client has not) → bind can
    // pass with REUSEADDR, connect hits a full socket → EADDRNOTAVAIL.
    #[test]
    fn close_wait_blocks_the_tuple() {
        let x = exp(
            CloseBy::Server,
            When::AtOnce,
            NextStep::Reconnect,
            ClientPort::Fixed(23456),
        );
        let v = view(
            cli(TcpState::CloseWait, None),
            srv(TcpState::FinWait2, Some(59_000)),
        );
        let p = predict(&x, &v, &facts());
        assert_eq!(short(&p), "connect: EADDRNOTAVAIL");
        assert_eq!(p.rule, RuleId::TupleBusy);
    }

    // Timing: LAST_ACK (the §2 tight loop after ~88 rounds).
    #[test]
    fn last_ack_blocks_the_tuple() {
        let x = exp(
            CloseBy::Server,
            When::AfterPeer,
            NextStep::Reconnect,
            ClientPort::Fixed(23456),
        );
        let v = view(
            cli(TcpState::LastAck, None),
            srv(TcpState::TimeWait, Some(59_000)),
        );
        assert_eq!(short(&predict(&x, &v, &facts())), "connect: EADDRNOTAVAIL");
    }

    // Timing: a full-socket FIN_WAIT2 (no timewait timer) blocks; an orphaned
    // FIN_WAIT2 mini-socket is taken over by a bound port with timestamps
    // (tcp_twsk_unique: reuse = 0 only matters when twp != NULL), but never
    // for a kernel-chosen port.
    #[test]
    fn fin_wait2_full_socket_vs_mini_socket() {
        let x = exp(
            CloseBy::Client,
            When::AtOnce,
            NextStep::Reconnect,
            ClientPort::Fixed(23456),
        );
        let full = view(
            cli(TcpState::FinWait2, None),
            srv(TcpState::CloseWait, None),
        );
        assert_eq!(
            short(&predict(&x, &full, &facts())),
            "connect: EADDRNOTAVAIL"
        );
        let mini = view(
            cli(TcpState::FinWait2, Some(59_000)),
            srv(TcpState::CloseWait, None),
        );
        let p = predict(&x, &mini, &facts());
        assert_eq!(short(&p), "ok");
        assert_eq!(p.rule, RuleId::ChallengeAckThenRetry);
        let k = KernelFacts {
            timestamps: false,
            ..facts()
        };
        assert_eq!(short(&predict(&x, &mini, &k)), "connect: EADDRNOTAVAIL");

        let x = exp(
            CloseBy::Client,
            When::AtOnce,
            NextStep::Reconnect,
            ClientPort::Ephemeral,
        );
        let k = KernelFacts {
            tw_reuse: TwReuse::On,
            port_range: PortRange {
                low: 23456,
                high: 23456,
            },
            ..facts()
        };
        let p = predict(&x, &mini, &k);
        assert_eq!(short(&p), "connect: EADDRNOTAVAIL");
        assert_eq!(p.rule, RuleId::EphemeralExhausted);
    }

    // Server closed first, after peer: client gone, server TIME_WAIT →
    // SYN accepted into TIME_WAIT with or without timestamps.
    #[test]
    fn server_time_wait_accepts_a_new_syn() {
        let x = exp(
            CloseBy::Server,
            When::AfterPeer,
            NextStep::Reconnect,
            ClientPort::Fixed(23456),
        );
        let v = view(None, srv(TcpState::TimeWait, Some(59_990)));
        for ts in [true, false] {
            let k = KernelFacts {
                timestamps: ts,
                ..facts()
            };
            let p = predict(&x, &v, &k);
            assert_eq!(short(&p), "ok");
            assert_eq!(p.rule, RuleId::SynIntoTimeWait);
        }
    }

    // Ephemeral with the full range: another port, always ok.
    #[test]
    fn ephemeral_with_a_wide_range_picks_another_port() {
        let x = exp(
            CloseBy::Client,
            When::AfterPeer,
            NextStep::Reconnect,
            ClientPort::Ephemeral,
        );
        let v = view(cli(TcpState::TimeWait, Some(59_990)), None);
        for r in [TwReuse::Off, TwReuse::On, TwReuse::LoopbackOnly] {
            let k = KernelFacts {
                tw_reuse: r,
                timestamps: false,
                ..facts()
            };
            assert_eq!(predict(&x, &v, &k).rule, RuleId::EphemeralOtherPort);
        }
    }

    // Ephemeral with the range narrowed to the one port: tcp_tw_reuse 0/1/2,
    // the delay, and timestamps decide (tcp_twsk_unique with twp != NULL).
    #[test]
    fn ephemeral_one_port_tw_reuse_cases() {
        let x = exp(
            CloseBy::Client,
            When::AfterMs(1500),
            NextStep::Reconnect,
            ClientPort::BindNoPort,
        );
        let one = PortRange {
            low: 23456,
            high: 23456,
        };
        // TIME_WAIT 1500 ms old.
        let old = view(cli(TcpState::TimeWait, Some(58_500)), None);
        // TIME_WAIT 10 ms old.
        let young = view(cli(TcpState::TimeWait, Some(59_990)), None);
        let k = |r, ts| KernelFacts {
            tw_reuse: r,
            timestamps: ts,
            port_range: one,
            ..facts()
        };
        let cases = [
            (TwReuse::Off, true, &old, "connect: EADDRNOTAVAIL"),
            (TwReuse::On, true, &old, "ok"),
            (TwReuse::LoopbackOnly, true, &old, "ok"),
            (TwReuse::On, false, &old, "connect: EADDRNOTAVAIL"),
            (TwReuse::On, true, &young, "connect: EADDRNOTAVAIL"),
        ];
        for (r, ts, v, want) in cases {
            assert_eq!(short(&predict(&x, v, &k(r, ts))), want, "{r:?} ts {ts}");
        }
        // A shorter delay lets the young one go.
        let short_delay = KernelFacts {
            tw_reuse_delay_ms: Some(1),
            ..k(TwReuse::On, true)
        };
        assert_eq!(short(&predict(&x, &young, &short_delay)), "ok");
        // Without the sysctl (pre-6.14): 1 s on a seconds clock, with a note.
        let old_kernel = KernelFacts {
            tw_reuse_delay_ms: None,
            ..k(TwReuse::On, true)
        };
        let p = predict(&x, &old, &old_kernel);
        assert!(p.borderline, "1.5 s is inside the 1–2 s window");
        assert!(p.version_note.unwrap().contains("tcp_tw_reuse_delay"));
    }

    // tcp_tw_reuse=2 is loopback only: a non-loopback TIME_WAIT is not reused.
    #[test]
    fn tw_reuse_2_is_loopback_only() {
        let x = exp(
            CloseBy::Client,
            When::AfterMs(1500),
            NextStep::Reconnect,
            ClientPort::Ephemeral,
        );
        let mut e = entry(
            "10.0.0.1:40000",
            "10.0.0.2:12345",
            TcpState::TimeWait,
            Some(58_000),
        );
        e.family = Family::V4;
        let v = view(Some(e), None);
        let k = KernelFacts {
            port_range: PortRange {
                low: 40000,
                high: 40000,
            },
            ..facts()
        };
        let p = predict_linux(&CellFacts {
            experiment: &x,
            view: &v,
            client_addr: "10.0.0.1:40000".parse().unwrap(),
            kernel: &k,
        });
        assert_eq!(p.outcome.short(), "connect: EADDRNOTAVAIL");
        let k1 = KernelFacts {
            tw_reuse: TwReuse::On,
            ..k
        };
        let p = predict_linux(&CellFacts {
            experiment: &x,
            view: &v,
            client_addr: "10.0.0.1:40000".parse().unwrap(),
            kernel: &k1,
        });
        assert_eq!(p.outcome.short(), "ok");
    }

    // tcp_max_tw_buckets = 0: no TIME_WAIT is created (inet_twsk_alloc
    // returns NULL), the closer's entry is gone: nothing blocks.
    #[test]
    fn no_time_wait_buckets_means_nothing_blocks() {
        let mut x = exp(
            CloseBy::Client,
            When::AfterPeer,
            NextStep::Reconnect,
            ClientPort::Fixed(23456),
        );
        x.client = SocketOpts::default();
        x.new_opts = SocketOpts::default();
        let v = view(None, None);
        let k = KernelFacts {
            max_tw_buckets: 0,
            timestamps: false,
            ..facts()
        };
        let p = predict(&x, &v, &k);
        assert_eq!(short(&p), "ok");
        assert_eq!(p.rule, RuleId::TupleFree);
    }

    // RST close at once: the peer's descriptor is still open, its socket is
    // out of the established hash but keeps an explicitly bound port.
    #[test]
    fn rst_peer_with_open_descriptor_keeps_a_bound_port() {
        let mut x = exp(
            CloseBy::ServerRst,
            When::AtOnce,
            NextStep::Reconnect,
            ClientPort::Fixed(23456),
        );
        x.client = SocketOpts::default();
        let v = view(None, None);
        assert_eq!(short(&predict(&x, &v, &facts())), "bind: EADDRINUSE");
        x.client = ra();
        assert_eq!(short(&predict(&x, &v, &facts())), "ok");
        // A connect()-chosen port is released at TCP_CLOSE.
        let mut x = exp(
            CloseBy::ServerRst,
            When::AtOnce,
            NextStep::Rebind,
            ClientPort::Ephemeral,
        );
        x.client = SocketOpts::default();
        x.new_opts = SocketOpts::default();
        assert_eq!(short(&predict(&x, &v, &facts())), "ok");
        // An accepted socket's bind lock is cleared by sk_clone_lock(), so
        // a reset child with an open descriptor does not keep the port.
        let mut x = exp(
            CloseBy::ClientRst,
            When::AtOnce,
            NextStep::RestartListener,
            ClientPort::Fixed(23456),
        );
        x.new_opts = SocketOpts::default();
        assert_eq!(short(&predict(&x, &v, &facts())), "ok");
        // After the peer closed too, nothing holds anything.
        let mut x = exp(
            CloseBy::ClientRst,
            When::AfterPeer,
            NextStep::RestartListener,
            ClientPort::Fixed(23456),
        );
        x.new_opts = SocketOpts::default();
        assert_eq!(short(&predict(&x, &v, &facts())), "ok");
    }

    // Restart-listener: accepted sockets carry the listener's SO_REUSEADDR.
    #[test]
    fn restart_listener_rules() {
        let v = view(None, srv(TcpState::TimeWait, Some(59_990)));
        for (old, new, want) in [
            (false, false, "bind: EADDRINUSE"),
            (false, true, "bind: EADDRINUSE"),
            (true, false, "bind: EADDRINUSE"),
            (true, true, "ok"),
        ] {
            let mut x = exp(
                CloseBy::Server,
                When::AfterPeer,
                NextStep::RestartListener,
                ClientPort::Fixed(23456),
            );
            x.listener.reuseaddr = old;
            x.new_opts = SocketOpts {
                reuseaddr: new,
                ..Default::default()
            };
            assert_eq!(
                short(&predict(&x, &v, &facts())),
                want,
                "old {old} new {new}"
            );
        }
        // Client closed first, at once: the server's CLOSE_WAIT holds the port.
        let mut x = exp(
            CloseBy::Client,
            When::AtOnce,
            NextStep::RestartListener,
            ClientPort::Fixed(23456),
        );
        x.listener = ra();
        let v = view(
            cli(TcpState::FinWait2, Some(59_000)),
            srv(TcpState::CloseWait, None),
        );
        assert_eq!(short(&predict(&x, &v, &facts())), "ok");
        x.listener = SocketOpts::default();
        assert_eq!(short(&predict(&x, &v, &facts())), "bind: EADDRINUSE");
    }

    #[test]
    fn other_systems_are_labelled_and_differ_where_documented() {
        let x = exp(
            CloseBy::Client,
            When::AfterPeer,
            NextStep::Reconnect,
            ClientPort::Fixed(23456),
        );
        let v = view(cli(TcpState::TimeWait, Some(59_990)), None);
        let cell = CellFacts {
            experiment: &x,
            view: &v,
            client_addr: C.parse().unwrap(),
            kernel: &facts(),
        };
        let w = predict_windows(&cell);
        assert_eq!(w.label, "documented, not run");
        assert_eq!(w.outcome.short(), "connect: WSAEADDRINUSE");
        assert_eq!(w.outcome.error().unwrap().code, 10048);
        let b = predict_bsd(&cell);
        assert_eq!(b.outcome.short(), "connect: EADDRINUSE");
        // No SO_REUSEPORT on Windows at all.
        let mut x = x.clone();
        x.new_opts = rp();
        let cell = CellFacts {
            experiment: &x,
            ..cell
        };
        assert_eq!(
            predict_windows(&cell).outcome.short(),
            "setsockopt: WSAENOPROTOOPT"
        );
    }

    // after-ack: the other end's descriptor is still open, as at once; an
    // RST peer that keeps an explicitly bound port blocks a rebind.
    #[test]
    fn after_ack_keeps_the_peer_descriptor_open() {
        let mut x = exp(
            CloseBy::ServerRst,
            When::AfterAck,
            NextStep::Rebind,
            ClientPort::Fixed(23456),
        );
        x.client = SocketOpts::default();
        let v = view(None, None);
        assert_eq!(short(&predict(&x, &v, &facts())), "bind: EADDRINUSE");
        x.when = When::AfterPeer;
        assert_eq!(short(&predict(&x, &v, &facts())), "ok");
    }

    #[test]
    fn port_range_helpers() {
        let r = PortRange {
            low: 40000,
            high: 40000,
        };
        assert_eq!(r.len(), 1);
        assert!(r.is_only(40000));
        assert!(!PortRange { low: 1, high: 2 }.is_only(1));
        assert_eq!(TwReuse::from_sysctl("2"), Some(TwReuse::LoopbackOnly));
        assert_eq!(TwReuse::from_sysctl("3"), None);
    }
}
