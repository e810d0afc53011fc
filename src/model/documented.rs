//! What Windows and BSD/macOS would do, from their documentation and
//! source rather than a run here: the same holders as on Linux (they follow
//! from the TCP state machine, RFC 793), their own bind and connect rules,
//! and no timestamp-based early reuse of a TIME_WAIT. Every prediction is
//! labelled "documented, not run".

use super::facts::CellFacts;
use super::holder::{Holder, holder, holder_state_name};
use super::rules::DocumentedPrediction;
use crate::diag::{Side, TcpState, TupleView};
use crate::experiment::{Experiment, NextStep};
use crate::outcome::{Outcome, Step, SysError};

const DOCUMENTED: &str = "documented, not run";

/// WSAENOPROTOOPT.
const WSAENOPROTOOPT: i32 = 10042;
/// WSAEADDRINUSE.
const WSAEADDRINUSE: i32 = 10048;
/// EADDRINUSE on FreeBSD and macOS (sys/errno.h).
const BSD_EADDRINUSE: i32 = 48;
/// EADDRNOTAVAIL on FreeBSD and macOS (sys/errno.h).
const BSD_EADDRNOTAVAIL: i32 = 49;

/// True if the cell's kernel-chosen reconnect finds its ephemeral range
/// exhausted on any OS: the range holds only the first connection's port,
/// and a socket still holds it (those systems have no timestamp-based
/// early reuse of a TIME_WAIT, so TIME_WAIT counts as held).
fn range_exhausted(cell: &CellFacts, client: Option<Holder>) -> bool {
    !cell.experiment.client_port.is_fixed()
        && cell.kernel.port_range.is_only(cell.client_addr.port())
        && client.is_some_and(|h| h.hashed)
}

fn documented(outcome: Outcome, explanation: &str) -> DocumentedPrediction {
    DocumentedPrediction {
        outcome,
        explanation: explanation.to_string(),
        label: DOCUMENTED.into(),
    }
}

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

/// BSD's EADDRINUSE, named portably (its number differs from Linux's).
fn bsd_inuse(step: Step) -> Outcome {
    Outcome::Failed {
        step,
        error: SysError {
            name: "EADDRINUSE".into(),
            code: BSD_EADDRINUSE,
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

/// Windows. Sources, each rule beside the code that applies it:
/// - Microsoft Learn, "Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE"
///   (learn.microsoft.com/windows/win32/winsock/using-so-reuseaddr-and-so-exclusiveaddruse):
///   SO_REUSEADDR on the *new* socket lets it bind a port in active use
///   unless the holder set SO_EXCLUSIVEADDRUSE; there is no SO_REUSEPORT.
/// - The same page and "Sharing Transport Addresses": SO_REUSEADDR is
///   about bind(); a 4-tuple in TIME_WAIT (2×MSL, 240 s by default,
///   TcpTimedWaitDelay) makes connect() fail with WSAEADDRINUSE (10048),
///   SO_REUSEADDR or not (the story this tool started from).
/// - bind() does not look at TIME_WAIT sockets: a socket without
///   SO_REUSEADDR binds a port whose only holders are in TIME_WAIT, and the
///   clash comes at connect(). Field evidence: curl's KNOWN_BUGS, "--local-port
///   on Windows" — its loop that retries bind() over a range of local ports
///   never moves past a port whose connection is in TIME_WAIT, because
///   bind() succeeds and connect() then fails with WSAEADDRINUSE.
///
/// Parts of Microsoft's tables were found wrong by trio's notes-to-self
/// experiments, so this is a documented expectation; `twlab demo` on
/// Windows runs the same cases and says where a system differs.
pub fn predict_windows(cell: &CellFacts) -> DocumentedPrediction {
    let x = cell.experiment;
    let (client, server) = other_holders(x, cell.view);
    if x.client.reuseport || x.listener.reuseport || x.new_opts.reuseport {
        // twlab's socket layer refuses it on Windows the same way.
        return documented(
            wsa(Step::SetOpt, WSAENOPROTOOPT),
            "setsockopt(SO_REUSEPORT): Windows has no SO_REUSEPORT (WSAENOPROTOOPT); the nearest is SO_REUSEADDR, and SO_EXCLUSIVEADDRUSE forbids sharing",
        );
    }
    // bind() ignores TIME_WAIT holders (curl KNOWN_BUGS, see above); any
    // other holder blocks a socket without SO_REUSEADDR ("Using SO_REUSEADDR
    // and SO_EXCLUSIVEADDRUSE").
    let bind_blocked = |h: Option<Holder>| {
        h.is_some_and(|h| h.state != TcpState::TimeWait) && !x.new_opts.reuseaddr
    };
    match x.next {
        NextStep::Rebind if bind_blocked(client) => documented(
            wsa(Step::Bind, WSAEADDRINUSE),
            "bind(): the client's old socket is still active on the port and the new socket has no SO_REUSEADDR (SO_REUSEPORT does not exist on Windows)",
        ),
        NextStep::Rebind if !x.new_opts.reuseaddr && client.is_some() => documented(
            Outcome::Ok,
            "bind(): Windows bind() does not look at TIME_WAIT sockets, so the port is free to bind without SO_REUSEADDR",
        ),
        NextStep::Rebind => documented(
            Outcome::Ok,
            "bind(): SO_REUSEADDR on the new socket alone allows sharing the port unless the holder set SO_EXCLUSIVEADDRUSE",
        ),
        NextStep::RestartListener if bind_blocked(server) => documented(
            wsa(Step::Bind, WSAEADDRINUSE),
            "bind(): connections on the server port are still active and the new listener has no SO_REUSEADDR",
        ),
        NextStep::RestartListener => documented(
            Outcome::Ok,
            "bind()/listen(): the server port is free, held only by TIME_WAIT (which bind() does not look at), or SO_REUSEADDR on the new listener shares it (SO_EXCLUSIVEADDRUSE on the old one would forbid it)",
        ),
        // Users report connect() failing with WSAEADDRINUSE (10048), not
        // WSAEADDRNOTAVAIL (10049), once the dynamic range is used up.
        NextStep::Reconnect if range_exhausted(cell, client) => documented(
            wsa(Step::Connect, WSAEADDRINUSE),
            "connect(): no ephemeral port is free (the dynamic range, 49152-65535 by default and at least 255 ports, cut here to the one port the old socket still holds; TIME_WAIT lasts 240 s by default, TcpTimedWaitDelay): Windows reports WSAEADDRINUSE (10048), where Linux says EADDRNOTAVAIL",
        ),
        NextStep::Reconnect if !x.client_port.is_fixed() => documented(
            Outcome::Ok,
            "connect(): Windows picks another ephemeral port",
        ),
        NextStep::Reconnect if bind_blocked(client) => documented(
            wsa(Step::Bind, WSAEADDRINUSE),
            "bind(): the client's old socket is still active on the port (not yet TIME_WAIT) and the new socket has no SO_REUSEADDR",
        ),
        NextStep::Reconnect => windows_connect(client, server, x.new_opts.reuseaddr),
    }
}

/// Windows connect() from a bound port: any socket still on the 4-tuple,
/// TIME_WAIT included, refuses it ("Using SO_REUSEADDR and
/// SO_EXCLUSIVEADDRUSE": SO_REUSEADDR does not apply to connect()).
/// `reuseaddr`: the new socket's SO_REUSEADDR (without it, bind() got
/// through only because it ignores TIME_WAIT: the curl --local-port trap).
fn windows_connect(
    client: Option<Holder>,
    server: Option<Holder>,
    reuseaddr: bool,
) -> DocumentedPrediction {
    match client.filter(|h| h.hashed) {
        Some(h) if h.state == TcpState::TimeWait && !reuseaddr => documented(
            wsa(Step::Connect, WSAEADDRINUSE),
            "bind() succeeds without SO_REUSEADDR (Windows bind() does not look at TIME_WAIT sockets), then connect() fails with WSAEADDRINUSE (10048): the client's old socket holds the 4-tuple in TIME_WAIT for 2×MSL (240 s by default). The trap: a loop that retries bind() over local ports on failure never moves on, since bind() never fails (curl's known bug with --local-port)",
        ),
        Some(h) => documented(
            wsa(Step::Connect, WSAEADDRINUSE),
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
        None => documented(
            Outcome::Ok,
            &free_tuple_text(
                server,
                "a SYN newer than the server's TIME_WAIT is accepted (RFC 1122 §4.2.2.13)",
            ),
        ),
    }
}

/// BSD/macOS. Sources: FreeBSD sys/netinet/in_pcb.c and XNU
/// bsd/netinet/in_pcb.c (the same code):
/// - `in_pcbbind_setup()`: without SO_REUSEADDR/SO_REUSEPORT the port is
///   looked up with INPLOOKUP_WILDCARD, so any socket on it (connected or
///   TIME_WAIT included) refuses the bind; with SO_REUSEADDR only an exact
///   lookup is made, and `in_pcblookup_local(.., wild = 0)` matches only
///   unconnected sockets (`inp_faddr == INADDR_ANY`): a port held by
///   connected or TIME_WAIT sockets binds, a listener or bound socket on the
///   very same address needs SO_REUSEPORT on both (`reuseport &
///   inp_so_options(t)`).
/// - `in_pcbconnect()` → `in_pcblookup_hash()` (XNU `tcp_connect()`): a
///   4-tuple still present, TIME_WAIT included, makes connect() fail with
///   EADDRINUSE — no timestamp-based early reuse.
pub fn predict_bsd(cell: &CellFacts) -> DocumentedPrediction {
    let x = cell.experiment;
    let (client, server) = other_holders(x, cell.view);
    let blocked = |h: Option<Holder>| match h {
        // A reset socket is removed from the PCB hash (in_pcbdrop).
        Some(h) if h.hashed => {
            let shares = x.new_opts.reuseaddr || (x.new_opts.reuseport && h.opts.reuseport);
            !shares
        }
        _ => false,
    };
    match x.next {
        NextStep::Rebind if blocked(client) => documented(
            bsd_inuse(Step::Bind),
            "bind(): the port is held and the new socket has neither SO_REUSEADDR nor a shared SO_REUSEPORT",
        ),
        NextStep::Rebind => documented(
            Outcome::Ok,
            "bind(): free, or SO_REUSEADDR on the new socket allows a port held by connected/TIME_WAIT sockets",
        ),
        NextStep::RestartListener if blocked(server) => documented(
            bsd_inuse(Step::Bind),
            "bind(): accepted connections still hold the server port and the new listener has no SO_REUSEADDR",
        ),
        NextStep::RestartListener => documented(
            Outcome::Ok,
            "bind()/listen(): free, or SO_REUSEADDR on the new listener (the classic server-restart use)",
        ),
        NextStep::Reconnect if range_exhausted(cell, client) => documented(
            Outcome::Failed {
                step: Step::Connect,
                error: SysError {
                    name: "EADDRNOTAVAIL".into(),
                    code: BSD_EADDRNOTAVAIL,
                    wsa: None,
                },
            },
            "connect(): no ephemeral port is free (net.inet.ip.portrange.first..last cut here to the one port the old socket still holds, TIME_WAIT included): FreeBSD in_pcb_lport_dest() (XNU in_pcbbind()) runs out of candidates and returns EADDRNOTAVAIL",
        ),
        NextStep::Reconnect if !x.client_port.is_fixed() => {
            documented(Outcome::Ok, "connect(): another ephemeral port is chosen")
        }
        NextStep::Reconnect if blocked(client) => documented(
            bsd_inuse(Step::Bind),
            "bind(): the client port is held and the new socket has no SO_REUSEADDR",
        ),
        NextStep::Reconnect => bsd_connect(client, server),
    }
}

/// BSD connect() from a bound port: `in_pcblookup_hash()` finds any socket
/// still on the 4-tuple, TIME_WAIT included.
fn bsd_connect(client: Option<Holder>, server: Option<Holder>) -> DocumentedPrediction {
    match client.filter(|h| h.hashed) {
        Some(h) => documented(
            bsd_inuse(Step::Connect),
            &format!(
                "connect(): in_pcbconnect/in_pcblookup_hash finds the 4-tuple held by the client's old socket ({}) → EADDRINUSE; no timestamp-based early reuse",
                holder_state_name(&h)
            ),
        ),
        None => documented(
            Outcome::Ok,
            &free_tuple_text(
                server,
                "a SYN with SEQ > RCV.NXT closes the server's TIME_WAIT and is processed",
            ),
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SockEntry;
    use crate::experiment::{ClientPort, Close, When};
    use crate::model::{KernelFacts, PortRange, TwReuse};
    use crate::socket::{Family, SocketOpts};
    use std::time::Duration;

    const C: &str = "127.0.0.1:40000";
    const S: &str = "127.0.0.1:12345";

    fn kernel(low: u16, high: u16) -> KernelFacts {
        KernelFacts {
            release: "6.18.0".into(),
            timestamps: true,
            tw_reuse: TwReuse::Off,
            tw_reuse_delay_ms: Some(1000),
            port_range: PortRange { low, high },
            max_tw_buckets: 131072,
        }
    }

    fn client_time_wait() -> TupleView {
        TupleView {
            client: Some(SockEntry::time_wait(
                C.parse().unwrap(),
                S.parse().unwrap(),
                Duration::from_secs(59),
            )),
            server: None,
        }
    }

    fn reconnect(port: ClientPort) -> Experiment {
        Experiment {
            family: Family::V4,
            server_port: 12345,
            client_port: port,
            listener: SocketOpts::default(),
            client: SocketOpts::default(),
            close: Close::CLIENT,
            when: When::AfterPeer,
            next: NextStep::Reconnect,
            new_opts: SocketOpts::default(),
            until_free: None,
        }
    }

    fn both(x: &Experiment, k: &KernelFacts) -> (DocumentedPrediction, DocumentedPrediction) {
        let v = client_time_wait();
        let cell = CellFacts {
            experiment: x,
            view: &v,
            client_addr: C.parse().unwrap(),
            kernel: k,
        };
        (predict_windows(&cell), predict_bsd(&cell))
    }

    /// The range holds only the port a TIME_WAIT still holds: Windows
    /// fails with WSAEADDRINUSE (10048), never WSAEADDRNOTAVAIL (10049);
    /// BSD's port search runs out with EADDRNOTAVAIL (49).
    #[test]
    fn an_exhausted_range_fails_on_windows_and_bsd_too() {
        for port in [ClientPort::Ephemeral, ClientPort::BindNoPort] {
            let (w, b) = both(&reconnect(port), &kernel(40000, 40000));
            let Outcome::Failed { step, error } = &w.outcome else {
                panic!("windows: {w:?}")
            };
            assert_eq!(*step, Step::Connect);
            assert_eq!((error.name.as_str(), error.code), ("WSAEADDRINUSE", 10048));
            assert!(w.explanation.contains("49152-65535"), "{}", w.explanation);
            assert!(w.explanation.contains("240 s"), "{}", w.explanation);
            let Outcome::Failed { step, error } = &b.outcome else {
                panic!("bsd: {b:?}")
            };
            assert_eq!(*step, Step::Connect);
            assert_eq!((error.name.as_str(), error.code), ("EADDRNOTAVAIL", 49));
            assert!(
                b.explanation.contains("in_pcb_lport_dest"),
                "{}",
                b.explanation
            );
        }
    }

    /// Demo case 5 (no SO_REUSEADDR, the client's own TIME_WAIT on the
    /// fixed port): Windows bind() does not look at TIME_WAIT, so bind()
    /// passes and connect() meets the 4-tuple (WSAEADDRINUSE, 10048), the
    /// curl --local-port trap; BSD refuses at bind() (no SO_REUSEADDR:
    /// the wildcard lookup of in_pcbbind_setup() sees the TIME_WAIT).
    #[test]
    fn windows_binds_over_time_wait_and_fails_at_connect() {
        let (w, b) = both(&reconnect(ClientPort::Fixed(40000)), &kernel(32768, 60999));
        let Outcome::Failed { step, error } = &w.outcome else {
            panic!("windows: {w:?}")
        };
        assert_eq!((*step, error.code), (Step::Connect, 10048));
        assert!(
            w.explanation.contains("bind() succeeds"),
            "{}",
            w.explanation
        );
        assert!(w.explanation.contains("--local-port"), "{}", w.explanation);
        assert_eq!(b.outcome.short(), "bind: EADDRINUSE");
        // With SO_REUSEADDR on the new socket the connect() fails the same.
        let mut x = reconnect(ClientPort::Fixed(40000));
        x.new_opts.reuseaddr = true;
        let (w, _) = both(&x, &kernel(32768, 60999));
        assert_eq!(w.outcome.short(), "connect: WSAEADDRINUSE");
        // A rebind alone: bind() passes on Windows, not on BSD.
        let mut x = reconnect(ClientPort::Fixed(40000));
        x.next = NextStep::Rebind;
        let (w, b) = both(&x, &kernel(32768, 60999));
        assert_eq!(w.outcome, Outcome::Ok, "{}", w.explanation);
        assert_eq!(b.outcome.short(), "bind: EADDRINUSE");
    }

    /// A wide range: another ephemeral port, on every system.
    #[test]
    fn a_wide_range_picks_another_port() {
        let (w, b) = both(&reconnect(ClientPort::Ephemeral), &kernel(32768, 60999));
        assert_eq!(w.outcome, Outcome::Ok);
        assert_eq!(b.outcome, Outcome::Ok);
    }
}
