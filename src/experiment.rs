//! The experiment as pure data: one connection opened and closed, then one
//! next step whose outcome is the point of the experiment ([`Experiment`]:
//! who closes first and how, [`Close`]; when the next step happens,
//! [`When`]; what it is, [`NextStep`]; how the client gets its port,
//! [`ClientPort`]). No I/O: the rule model reads it, the scenario runner
//! performs it on real sockets, scenario files and matrix cells write it.

use crate::socket::{Family, SocketOpts};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// One end of a connection (the crate's one "side" type, from `diag`).
pub use crate::diag::Side;

/// How an end closed its side of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum How {
    /// An orderly close: FIN (RFC 793 §3.5).
    Fin,
    /// An abort: RST (SO_LINGER {on, 0}, or the peer's).
    Rst,
}

impl How {
    /// "FIN" or "RST", as reports and JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            How::Fin => "FIN",
            How::Rst => "RST",
        }
    }
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who closes a connection first, and how: the crate's one "who closes"
/// type. The experiment's first close, `load`'s closer (its side), the
/// peers' view of how each end closed (its [`How`]) are built on it; when
/// an end closes (first, or after the peer's FIN) is a separate matter
/// that the peers and `load` keep in types of their own.
///
/// Written and read (serde, the command line, scenario and matrix files)
/// as one name: `client`, `server`, `client-rst`, `server-rst`
/// ([`Close::name`], [`FromStr`](std::str::FromStr)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "CloseName", into = "CloseName")]
pub struct Close {
    /// The end that closes first.
    pub side: Side,
    /// FIN, or RST (SO_LINGER {on, 0}).
    pub how: How,
}

impl Close {
    /// The client calls close() first: FIN; the client will hold TIME_WAIT.
    pub const CLIENT: Close = Close::new(Side::Client, How::Fin);
    /// The server calls close() first: FIN; the server will hold TIME_WAIT.
    pub const SERVER: Close = Close::new(Side::Server, How::Fin);
    /// The client closes with SO_LINGER {on, 0}: RST, no TIME_WAIT anywhere.
    pub const CLIENT_RST: Close = Close::new(Side::Client, How::Rst);
    /// The server closes with SO_LINGER {on, 0}: RST, no TIME_WAIT anywhere.
    pub const SERVER_RST: Close = Close::new(Side::Server, How::Rst);
    /// Every way to close first, in the order tables list them.
    pub const ALL: [Close; 4] = [
        Close::CLIENT,
        Close::SERVER,
        Close::CLIENT_RST,
        Close::SERVER_RST,
    ];

    /// `side` closes first, with `how`.
    pub const fn new(side: Side, how: How) -> Self {
        Close { side, how }
    }
    /// The kebab-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        CloseName::from(self).name()
    }
    /// True for an abortive close (SO_LINGER {on, 0}: RST).
    pub fn is_rst(self) -> bool {
        self.how == How::Rst
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is none of [`Close`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownClose(pub String);

impl fmt::Display for UnknownClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown close '{}': one of client, server, client-rst, server-rst",
            crate::text::echo(&self.0)
        )
    }
}

impl std::error::Error for UnknownClose {}

impl std::str::FromStr for Close {
    type Err = UnknownClose;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Close::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownClose(s.to_string()))
    }
}

impl schemars::JsonSchema for Close {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Close".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        CloseName::json_schema(generator)
    }
}

// [`Close`] as it is written, one name: serde and the schema go through it
// (the doc comment below is the schema's description).
/// Which end closes the first connection first, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum CloseName {
    /// The client calls close() first: FIN; the client will hold TIME_WAIT.
    Client,
    /// The server calls close() first: FIN; the server will hold TIME_WAIT.
    Server,
    /// The client closes with SO_LINGER {on, 0}: RST, no TIME_WAIT anywhere.
    ClientRst,
    /// The server closes with SO_LINGER {on, 0}: RST, no TIME_WAIT anywhere.
    ServerRst,
}

impl CloseName {
    fn name(self) -> &'static str {
        match self {
            CloseName::Client => "client",
            CloseName::Server => "server",
            CloseName::ClientRst => "client-rst",
            CloseName::ServerRst => "server-rst",
        }
    }
}

impl From<Close> for CloseName {
    fn from(c: Close) -> Self {
        match (c.side, c.how) {
            (Side::Client, How::Fin) => CloseName::Client,
            (Side::Server, How::Fin) => CloseName::Server,
            (Side::Client, How::Rst) => CloseName::ClientRst,
            (Side::Server, How::Rst) => CloseName::ServerRst,
        }
    }
}

impl From<CloseName> for Close {
    fn from(c: CloseName) -> Self {
        match c {
            CloseName::Client => Close::CLIENT,
            CloseName::Server => Close::SERVER,
            CloseName::ClientRst => Close::CLIENT_RST,
            CloseName::ServerRst => Close::SERVER_RST,
        }
    }
}

/// When the next step happens, relative to the closes.
///
/// Written as an object tagged with `kind` (`{"kind": "at-once"}`,
/// `{"kind": "after-ms", "ms": 40}`), as every tagged value in twlab's JSON
/// (docs/json.md); read in that shape and in the shorter one scenario files
/// have always used (`when = "at-once"`, `when = { after-ms = 40 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "WhenOut")]
pub enum When {
    /// Right after the first close() returns, with no wait at all; the
    /// other end has not closed (the story's tight loop). After a FIN the
    /// closer is usually still FIN_WAIT1 here: the peer delays its ACK of a
    /// FIN (tcp_fin() enters pingpong mode, so the ACK waits for the
    /// delayed-ACK timer, about 40 ms, or for the peer's own FIN).
    AtOnce,
    /// After the first FIN was acknowledged (closer FIN_WAIT2, other end
    /// CLOSE_WAIT), the other end still open. On Linux the orphaned
    /// FIN_WAIT2 is a timewait mini-socket (tcp_close → tcp_time_wait(sk,
    /// TCP_FIN_WAIT2, ...)) when tcp_fin_timeout ≤ 60 s.
    AfterAck,
    /// After the other end saw EOF and closed too, and the kernel settled.
    AfterPeer,
    /// As `AfterPeer`, then a further wait of this many milliseconds.
    AfterMs(u64),
}

impl When {
    /// The kebab-case name used on the command line and in reports.
    pub fn name(self) -> String {
        match self {
            When::AtOnce => "at-once".into(),
            When::AfterAck => "after-ack".into(),
            When::AfterPeer => "after-peer".into(),
            When::AfterMs(ms) => format!("after-{ms}ms"),
        }
    }
}

/// What the experiment does after the first connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NextStep {
    /// A new client socket connects again from the same local port
    /// (for `ClientPort::Ephemeral`, from a kernel-chosen port).
    Reconnect,
    /// A new socket binds the old connection's client address:port.
    Rebind,
    /// The server closes its listener and a new one binds and listens on
    /// the same port.
    RestartListener,
}

impl NextStep {
    /// Every next step, in the order tables list them.
    pub const ALL: [NextStep; 3] = [
        NextStep::Reconnect,
        NextStep::Rebind,
        NextStep::RestartListener,
    ];
    /// The kebab-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            NextStep::Reconnect => "reconnect",
            NextStep::Rebind => "rebind",
            NextStep::RestartListener => "restart-listener",
        }
    }
}

/// How the client gets its local port.
///
/// Written as an object tagged with `kind` (`{"kind": "fixed", "port":
/// 23456}`, `{"kind": "ephemeral"}`), as every tagged value in twlab's JSON;
/// read in that shape and in the shorter one scenario files have always
/// used (`client_port = { fixed = 0 }`, `client_port = "ephemeral"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "ClientPortOut")]
pub enum ClientPort {
    /// bind(addr, port) before connect(); port 0 here means "pick a free
    /// port once, then bind it explicitly each time".
    Fixed(u16),
    /// No bind(): connect() picks the port from ip_local_port_range.
    Ephemeral,
    /// bind(addr, 0) with IP_BIND_ADDRESS_NO_PORT: the port is chosen at
    /// connect() time, with the whole 4-tuple known.
    BindNoPort,
}

impl ClientPort {
    /// One of each kind, in the order tables list them; `Fixed(0)` stands
    /// for "a fixed port, picked once".
    pub const ALL: [ClientPort; 3] = [
        ClientPort::Fixed(0),
        ClientPort::Ephemeral,
        ClientPort::BindNoPort,
    ];

    /// The kebab-case name of the kind ("fixed" whatever the port).
    pub fn name(self) -> &'static str {
        match self {
            ClientPort::Fixed(_) => "fixed",
            ClientPort::Ephemeral => "ephemeral",
            ClientPort::BindNoPort => "bind-no-port",
        }
    }

    /// The kind named `name` (as [`ClientPort::name`] spells it); "fixed"
    /// gives `Fixed(0)`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// True for `Fixed`: the port is bound explicitly before connect()
    /// (SOCK_BINDPORT_LOCK), not chosen by connect().
    pub fn is_fixed(self) -> bool {
        matches!(self, ClientPort::Fixed(_))
    }
}

// [`When`] and [`ClientPort`] as they are written: tagged with `kind`.
// Serde's default for an enum with data is an external tag
// (`{"after-ms": 40}`), a Rust shape the JSON contract leaves out.

#[derive(Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum WhenOut {
    /// Right after the first close() returns.
    AtOnce,
    /// After the first FIN was acknowledged, the other end still open.
    AfterAck,
    /// After the other end closed too and the kernel settled.
    AfterPeer,
    /// As `after-peer`, then a further wait.
    AfterMs {
        /// The further wait, in milliseconds.
        ms: u64,
    },
}

impl From<When> for WhenOut {
    fn from(w: When) -> Self {
        match w {
            When::AtOnce => WhenOut::AtOnce,
            When::AfterAck => WhenOut::AfterAck,
            When::AfterPeer => WhenOut::AfterPeer,
            When::AfterMs(ms) => WhenOut::AfterMs { ms },
        }
    }
}

impl schemars::JsonSchema for When {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "When".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        WhenOut::json_schema(generator)
    }
}

#[derive(Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum ClientPortOut {
    /// bind() to this port before connect() (0: one picked once).
    Fixed {
        /// The port.
        port: u16,
    },
    /// No bind(): connect() picks the port.
    Ephemeral,
    /// bind(addr, 0) with IP_BIND_ADDRESS_NO_PORT.
    BindNoPort,
}

impl From<ClientPort> for ClientPortOut {
    fn from(c: ClientPort) -> Self {
        match c {
            ClientPort::Fixed(port) => ClientPortOut::Fixed { port },
            ClientPort::Ephemeral => ClientPortOut::Ephemeral,
            ClientPort::BindNoPort => ClientPortOut::BindNoPort,
        }
    }
}

impl schemars::JsonSchema for ClientPort {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ClientPort".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        ClientPortOut::json_schema(generator)
    }
}

/// Read a value tagged with `kind` ([`WhenOut`], [`ClientPortOut`]) or in
/// the short form: a bare name (`"at-once"`), or one key naming the kind
/// with its number (`{ after-ms = 40 }`). `build(kind, number)` makes the
/// value; `number_key` is the field that holds the number in the tagged
/// form (`ms`, `port`).
struct Tagged<T> {
    expecting: &'static str,
    kinds: &'static [&'static str],
    number_key: &'static str,
    build: fn(&str, Option<u64>) -> Option<T>,
}

impl<'de, T> serde::de::Visitor<'de> for Tagged<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        (self.build)(v, None).ok_or_else(|| E::unknown_variant(v, self.kinds))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        use serde::de::Error;
        let mut kind: Option<String> = None;
        let mut number: Option<u64> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "kind" {
                kind = Some(map.next_value()?);
            } else if key == self.number_key {
                number = Some(map.next_value()?);
            } else if self.kinds.contains(&key.as_str()) && kind.is_none() {
                // The short form: `{ after-ms = 40 }`, `{ fixed = 0 }`.
                number = Some(map.next_value()?);
                kind = Some(key);
            } else {
                return Err(A::Error::custom(format!(
                    "unknown field `{key}`, expected `kind` or `{}`",
                    self.number_key
                )));
            }
        }
        let kind = kind.ok_or_else(|| A::Error::missing_field("kind"))?;
        let key = self.number_key;
        (self.build)(&kind, number).ok_or_else(|| {
            if !self.kinds.contains(&kind.as_str()) {
                A::Error::unknown_variant(&kind, self.kinds)
            } else if let Some(n) = number {
                if (self.build)(&kind, None).is_some() {
                    A::Error::custom(format!("{kind} takes no `{key}`"))
                } else {
                    A::Error::custom(format!("{kind}: `{key}` = {n} is out of range"))
                }
            } else {
                A::Error::custom(format!("{kind} needs `{key}`"))
            }
        })
    }
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Tagged {
            expecting: r#"when: "at-once", "after-ack", "after-peer", or {kind = "after-ms", ms = N}"#,
            kinds: &["at-once", "after-ack", "after-peer", "after-ms"],
            number_key: "ms",
            build: |kind, n| match (kind, n) {
                ("at-once", None) => Some(When::AtOnce),
                ("after-ack", None) => Some(When::AfterAck),
                ("after-peer", None) => Some(When::AfterPeer),
                ("after-ms", Some(ms)) => Some(When::AfterMs(ms)),
                _ => None,
            },
        })
    }
}

impl<'de> Deserialize<'de> for ClientPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Tagged {
            expecting: r#"client_port: "ephemeral", "bind-no-port", or {kind = "fixed", port = N}"#,
            kinds: &["fixed", "ephemeral", "bind-no-port"],
            number_key: "port",
            build: |kind, n| match (kind, n) {
                ("fixed", Some(p)) => u16::try_from(p).ok().map(ClientPort::Fixed),
                ("ephemeral", None) => Some(ClientPort::Ephemeral),
                ("bind-no-port", None) => Some(ClientPort::BindNoPort),
                _ => None,
            },
        })
    }
}

/// One experiment: everything that decides its outcome except the kernel
/// and its sysctls. In a scenario file it is the `[experiment]` table
/// (`scenario::file`); the socket options and the server port may be left out
/// (none, and 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// IPv4 or IPv6 loopback.
    pub family: Family,
    /// Server port; 0 picks a free one.
    #[serde(default)]
    pub server_port: u16,
    /// How the client gets its local port.
    pub client_port: ClientPort,
    /// Options of the first listener (accepted sockets inherit them).
    #[serde(default)]
    pub listener: SocketOpts,
    /// Options of the first client socket.
    #[serde(default)]
    pub client: SocketOpts,
    /// Which end closes first, and how.
    pub close: Close,
    /// When the next step happens, relative to the closes.
    pub when: When,
    /// What happens after the first connection closed.
    pub next: NextStep,
    /// Options of the socket the next step creates (a client socket for
    /// reconnect and rebind, the new listener for restart-listener).
    #[serde(default)]
    pub new_opts: SocketOpts,
    /// If the next step fails: keep retrying it (bounded backoff, at most
    /// 50 ms apart) up to this long, and report when it first succeeded.
    pub until_free: Option<Duration>,
}

impl Experiment {
    /// The story's experiment: SO_REUSEADDR on every socket, the client
    /// binds `client_port` (0: a free one), closes first, the server closes
    /// after it, then the client reconnects from the same port. Other cases
    /// are this with a field or two changed.
    pub fn story(family: Family, server_port: u16, client_port: u16) -> Self {
        let ra = SocketOpts {
            reuseaddr: true,
            ..Default::default()
        };
        Experiment {
            family,
            server_port,
            client_port: ClientPort::Fixed(client_port),
            listener: ra,
            client: ra,
            close: Close::CLIENT,
            when: When::AfterPeer,
            next: NextStep::Reconnect,
            new_opts: ra,
            until_free: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_round_trip_through_fromstr_and_serde() {
        let names = ["client", "server", "client-rst", "server-rst"];
        for (c, name) in Close::ALL.into_iter().zip(names) {
            assert_eq!(c.name(), name);
            assert_eq!(name.parse::<Close>(), Ok(c));
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<Close>(&format!("\"{name}\"")).unwrap(),
                c
            );
        }
        assert_eq!(Close::SERVER_RST.side, Side::Server);
        assert!(Close::CLIENT_RST.is_rst() && !Close::SERVER.is_rst());
        assert!("rst".parse::<Close>().is_err());
        let e = serde_json::from_str::<Close>("\"bogus\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant `bogus`"), "{e}");
    }

    /// Written tagged with `kind`; read in that shape and in the short
    /// one of older scenario files; a bad one named in the error.
    #[test]
    fn when_and_client_port_are_written_tagged_and_read_both_ways() {
        let j = |v: &dyn erased::Ser| v.json();
        assert_eq!(j(&When::AtOnce), r#"{"kind":"at-once"}"#);
        assert_eq!(j(&When::AfterMs(40)), r#"{"kind":"after-ms","ms":40}"#);
        assert_eq!(
            j(&ClientPort::Fixed(23456)),
            r#"{"kind":"fixed","port":23456}"#
        );
        assert_eq!(j(&ClientPort::BindNoPort), r#"{"kind":"bind-no-port"}"#);
        for w in [
            When::AtOnce,
            When::AfterAck,
            When::AfterPeer,
            When::AfterMs(7),
        ] {
            let back: When = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
            assert_eq!(back, w);
        }
        for c in [
            ClientPort::Fixed(0),
            ClientPort::Fixed(65535),
            ClientPort::Ephemeral,
            ClientPort::BindNoPort,
        ] {
            let back: ClientPort =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c);
        }
        #[derive(Deserialize)]
        struct F {
            when: When,
            client_port: ClientPort,
        }
        for (text, when, port) in [
            (
                "when = \"after-peer\"\nclient_port = \"ephemeral\"",
                When::AfterPeer,
                ClientPort::Ephemeral,
            ),
            (
                "when = { after-ms = 40 }\nclient_port = { fixed = 0 }",
                When::AfterMs(40),
                ClientPort::Fixed(0),
            ),
            (
                "when = { ms = 5, kind = \"after-ms\" }\nclient_port = { kind = \"fixed\", port = 9 }",
                When::AfterMs(5),
                ClientPort::Fixed(9),
            ),
            (
                "when = { kind = \"at-once\" }\nclient_port = { kind = \"bind-no-port\" }",
                When::AtOnce,
                ClientPort::BindNoPort,
            ),
        ] {
            let f: F = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((f.when, f.client_port), (when, port), "{text}");
        }
        for (text, says) in [
            ("when = \"at-onc\"\nclient_port = \"ephemeral\"", "at-onc"),
            (
                "when = { kind = \"after-ms\" }\nclient_port = \"ephemeral\"",
                "ms",
            ),
            (
                "when = { kind = \"at-once\", ms = 3 }\nclient_port = \"ephemeral\"",
                "ms",
            ),
            (
                "when = \"at-once\"\nclient_port = { fixed = 70000 }",
                "out of range",
            ),
            (
                "when = \"at-once\"\nclient_port = { kind = \"fixed\", colour = 1 }",
                "colour",
            ),
        ] {
            let e = toml::from_str::<F>(text)
                .err()
                .unwrap_or_else(|| panic!("{text} was read"));
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
    }

    /// Serialize to compact JSON through a trait object (the test's table
    /// holds values of two types).
    mod erased {
        pub trait Ser {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Ser for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }

    #[test]
    fn client_port_names_round_trip() {
        for c in ClientPort::ALL {
            assert_eq!(ClientPort::from_name(c.name()), Some(c));
        }
        assert_eq!(ClientPort::from_name("fixed"), Some(ClientPort::Fixed(0)));
        assert_eq!(
            ClientPort::from_name("bind-no-port"),
            Some(ClientPort::BindNoPort)
        );
        assert_eq!(ClientPort::from_name("random"), None);
        assert!(ClientPort::Fixed(23456).is_fixed());
        assert!(!ClientPort::Ephemeral.is_fixed());
        assert!(!ClientPort::BindNoPort.is_fixed());
    }
}
