//! Fixes, each with what it costs. The rule code picks and orders them; the
//! wording lives here once.

use serde::Serialize;

/// A way out, with the numbers it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Fix {
    /// Wait until the old connection finishes closing: the peer closes too
    /// and the old socket becomes a TIME_WAIT, which a bound port with
    /// timestamps takes over.
    WaitPeerClose,
    /// Wait for the TIME_WAIT timer(s).
    Wait {
        /// Milliseconds until the last blocking TIME_WAIT is freed.
        ms: u32,
    },
    /// Retry connect() once a TIME_WAIT passes `tcp_tw_reuse_delay`.
    RetryAfter {
        /// Milliseconds until the first TIME_WAIT becomes reusable.
        ms: u32,
    },
    /// SO_REUSEADDR on the new socket and on the socket the holder was (a
    /// TIME_WAIT keeps its `sk_reuse`; accepted sockets inherit the
    /// listener's).
    ReuseaddrOnBoth,
    /// SO_REUSEADDR on both, for a client's own fixed source port: bind()
    /// passes, and connect() then meets the old 4-tuple.
    ReuseaddrForFixedPort,
    /// SO_REUSEPORT on both, same uid.
    ReuseportOnBoth {
        /// Both on the same address (a group that splits connections), or
        /// a wildcard beside a specific address (no sharing of load).
        same_address: bool,
    },
    /// IPV6_V6ONLY on the `[::]` socket (or `net.ipv6.bindv6only=1`).
    V6Only {
        /// The new socket is the dual-stack one.
        on_new: bool,
    },
    /// Clear IPV6_V6ONLY to bind a v4-mapped address.
    V6OnlyOff,
    /// A port below `ip_unprivileged_port_start`.
    PrivilegedPort {
        /// The port.
        port: u16,
    },
    /// Leave (or do not join) a SO_REUSEPORT group by accident.
    LeaveReuseportGroup,
    /// A self-connect: check local != peer after connect(), close, retry.
    SelfConnectRetry,
    /// Put the port in `ip_local_reserved_ports`.
    ReservePort {
        /// The port.
        port: u16,
    },
    /// Move the listening port outside `ip_local_port_range`.
    PortOutsideRange,
    /// IP_BIND_ADDRESS_NO_PORT before bind(addr, 0).
    BindAddressNoPort,
    /// Do not bind a fixed client port: let connect() choose.
    LetConnectChoose,
    /// More source addresses (each multiplies the 4-tuples).
    MoreSourceAddresses,
    /// Widen `ip_local_port_range`.
    WidenRange,
    /// Keep connections alive and reuse them (pooling).
    KeepAlive,
    /// Let the server close first, so the TIME_WAIT lands there.
    ServerClosesFirst,
    /// Let the client close first, so the TIME_WAIT lands on the client.
    ClientClosesFirst,
    /// `net.ipv4.tcp_tw_reuse=1`.
    TwReuse,
    /// SO_LINGER {on, 0} on the old socket.
    Linger0,
    /// Stop the process that holds the port, or use another port.
    StopHolder {
        /// "pid 1234 (nginx)".
        who: String,
    },
    /// Move listeners or bound sockets out of the ephemeral range.
    MoveBoundOutOfRange,
}

impl Fix {
    /// What to do.
    pub fn text(&self) -> String {
        match self {
            Fix::Wait { ms } => format!(
                "wait {:.1} s (the last blocking TIME_WAIT timer)",
                f64::from(*ms) / 1000.0
            ),
            Fix::RetryAfter { ms } => format!(
                "retry connect() after {:.1} s: a TIME_WAIT then passes tcp_tw_reuse_delay and connect() may take it over",
                f64::from(*ms) / 1000.0
            ),
            Fix::WaitPeerClose => "wait until the peer has closed too (recv() returns 0 on the old socket before close()): the old 4-tuple then becomes a TIME_WAIT, which a bound port takes over at once when both ends use TCP timestamps".into(),
            Fix::ReuseaddrOnBoth => "set SO_REUSEADDR on both sockets: the new one and the one that left the holder (a TIME_WAIT keeps the old socket's flag; accepted sockets inherit the listener's)".into(),
            Fix::ReuseaddrForFixedPort => "set SO_REUSEADDR on the client socket before bind(), in every run: the TIME_WAIT keeps the old socket's flag, and bind() shares the port only when both have it".into(),
            Fix::ReuseportOnBoth { .. } => "set SO_REUSEPORT on both sockets (same effective uid)".into(),
            Fix::V6Only { on_new: true } => "set IPV6_V6ONLY on the new [::] socket (or net.ipv6.bindv6only=1 before it is created): it then holds no IPv4 address and does not meet the IPv4 socket".into(),
            Fix::V6Only { on_new: false } => "set IPV6_V6ONLY on the [::] socket that holds the port (or net.ipv6.bindv6only=1 before it is created): it then holds no IPv4 address, and the IPv4 bind() passes".into(),
            Fix::V6OnlyOff => "clear IPV6_V6ONLY (setsockopt(IPV6_V6ONLY, 0)) before binding a v4-mapped address, or bind an IPv4 socket".into(),
            Fix::PrivilegedPort { port } => format!(
                "run with CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep, or systemd AmbientCapabilities), lower net.ipv4.ip_unprivileged_port_start to {port} or below, or use a port from 1024 up"
            ),
            Fix::LeaveReuseportGroup => "run one instance, or drop SO_REUSEPORT from the service so a second instance fails at bind() instead of silently joining the group".into(),
            Fix::SelfConnectRetry => "after connect() check getsockname() != getpeername(); if equal it connected to itself: close and retry (or connect to a port outside ip_local_port_range, where connect() never picks the source)".into(),
            Fix::ReservePort { port } => format!(
                "add {port} to net.ipv4.ip_local_reserved_ports so connect() never takes it"
            ),
            Fix::PortOutsideRange => "use a listening port outside net.ipv4.ip_local_port_range".into(),
            Fix::BindAddressNoPort => "set IP_BIND_ADDRESS_NO_PORT before bind(addr, 0): the port is chosen at connect(), per 4-tuple".into(),
            Fix::LetConnectChoose => "do not bind a fixed client port: bind port 0 (or not at all) and let connect() choose".into(),
            Fix::MoreSourceAddresses => "add source addresses and spread connections over them".into(),
            Fix::WidenRange => "widen net.ipv4.ip_local_port_range".into(),
            Fix::KeepAlive => "keep connections alive and reuse them instead of opening one per request".into(),
            Fix::ServerClosesFirst => "let the server close first, so the TIME_WAIT stays on the server side".into(),
            Fix::ClientClosesFirst => "let the clients close first, so the TIME_WAIT lands on their side".into(),
            Fix::TwReuse => "net.ipv4.tcp_tw_reuse=1 (outgoing connections only; both ends need TCP timestamps). Not tcp_tw_recycle: it was removed in Linux 4.12 because it dropped SYNs from clients behind NAT".into(),
            Fix::Linger0 => "SO_LINGER {on, 0} on the old socket is not a routine fix: close() then discards unsent data and the peer gets a reset instead of a FIN; it leaves no TIME_WAIT".into(),
            Fix::StopHolder { who } => format!("stop {who}, or use another port"),
            Fix::MoveBoundOutOfRange => "move listeners and bound sockets out of the ephemeral range (or reserve their ports)".into(),
        }
    }

    /// What it costs.
    pub fn cost(&self) -> &'static str {
        match self {
            Fix::Wait { .. } => "downtime until the timer fires",
            Fix::WaitPeerClose => "one round trip and the peer's close() per reconnect",
            Fix::RetryAfter { .. } => {
                "one port per tcp_tw_reuse_delay; needs the current tcp_tw_reuse and timestamps"
            }
            Fix::ReuseaddrOnBoth => "none for a server; it does not let two listeners share a port",
            Fix::ReuseaddrForFixedPort => {
                "bind() passes, but connect() to the same peer meets the old 4-tuple: Linux takes its TIME_WAIT over at once when TCP timestamps are on (EADDRNOTAVAIL without them, or while it is still FIN_WAIT/LAST_ACK); Windows fails with WSAEADDRINUSE until the TIME_WAIT ends"
            }
            Fix::ReuseportOnBoth { same_address: true } => {
                "the two sockets form one group: the kernel splits incoming connections between them"
            }
            Fix::ReuseportOnBoth {
                same_address: false,
            } => {
                "no load sharing: connections to the specific address go to the specific socket only (the most specific listener wins, __inet_lookup_listener()), the wildcard gets the rest"
            }
            Fix::V6Only { .. } => {
                "the [::] socket no longer accepts IPv4 connections: IPv4 clients need a 0.0.0.0 socket of their own"
            }
            Fix::V6OnlyOff => "the socket then also holds IPv4 addresses",
            Fix::PrivilegedPort { .. } => {
                "a capability or a host-wide sysctl (every user may then bind those ports)"
            }
            Fix::LeaveReuseportGroup => "no hot restart or load spreading across processes",
            Fix::SelfConnectRetry => "a retry loop in the client",
            Fix::ReservePort { .. } => {
                "one port fewer for outgoing connections; the current holder still has to go"
            }
            Fix::PortOutsideRange => "clients must learn the new port",
            Fix::BindAddressNoPort => "none (Linux 4.2+); the port is only known after connect()",
            Fix::LetConnectChoose => "the client port is no longer fixed",
            Fix::MoreSourceAddresses => "addresses to configure and route",
            Fix::WidenRange => "fewer ports left for listeners",
            Fix::KeepAlive => "application change",
            Fix::ServerClosesFirst => {
                "the server holds the TIME_WAITs (they do not block its port for clients)"
            }
            Fix::ClientClosesFirst => "application protocol change",
            Fix::TwReuse => {
                "host-wide; a port comes back only after tcp_tw_reuse_delay; not for incoming connections"
            }
            Fix::Linger0 => {
                "unsent data in the send buffer is lost and the peer's recv() gets ECONNRESET (see `twlab trace rst-unread`)"
            }
            Fix::StopHolder { .. } => "the holder's service stops",
            Fix::MoveBoundOutOfRange => "configuration of those services",
        }
    }

    /// With its text and cost.
    pub fn ranked(self) -> RankedFix {
        RankedFix {
            text: self.text(),
            cost: self.cost(),
            fix: self,
        }
    }
}

/// A fix with its wording, as renderers and JSON show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RankedFix {
    /// The fix.
    pub fix: Fix,
    /// What to do.
    pub text: String,
    /// What it costs.
    pub cost: &'static str,
}
