//! What a diagnosis says: the holders, the deciding kernel rule, the
//! predicted outcome for each option variant, flags, the ephemeral capacity,
//! ranked fixes, what cannot be known, other systems, and `--try` evidence.

use super::fix::RankedFix;
use crate::diag::owners::Owner;
use crate::diag::{TcpState, Timer};
use crate::model::RuleId;
use crate::model::kernel::Fact;
use crate::outcome::{Step, SysError};
use crate::socket::{Family, SocketOpts};
use crate::sysctl::PortRange;
use serde::Serialize;

use std::net::SocketAddr;

/// The ephemeral capacity: the model's count of the range toward one
/// destination (its [`Capacity::expect`] is the diagnosis's).
pub use crate::model::range::Capacity;

/// The errors the rules predict. In JSON each is the errno object of
/// every command (docs/json.md): `{"name": "EADDRINUSE", "code": 98,
/// "wsa": {…}}`, numbered as Linux numbers it (the rules are Linux's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    /// bind(): the port is in use.
    EADDRINUSE,
    /// connect(): no usable port or the 4-tuple is taken.
    EADDRNOTAVAIL,
    /// bind(): a privileged port without CAP_NET_BIND_SERVICE.
    EACCES,
    /// bind(): a v4-mapped address on a V6ONLY socket.
    EINVAL,
}

impl Errno {
    /// The symbolic name.
    pub fn name(self) -> &'static str {
        match self {
            Errno::EADDRINUSE => "EADDRINUSE",
            Errno::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            Errno::EACCES => "EACCES",
            Errno::EINVAL => "EINVAL",
        }
    }

    /// The error as every command writes an errno: name, Linux's number,
    /// and the Winsock twin.
    pub fn sys_error(self) -> SysError {
        use crate::sys::linux_errno as e;
        SysError::linux(match self {
            Errno::EADDRINUSE => e::EADDRINUSE,
            Errno::EADDRNOTAVAIL => e::EADDRNOTAVAIL,
            Errno::EACCES => e::EACCES,
            Errno::EINVAL => e::EINVAL,
        })
    }
}

impl Serialize for Errno {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.sys_error().serialize(s)
    }
}

/// Described as what it serializes to: the errno object (one definition,
/// shared with every other errno of the output).
impl schemars::JsonSchema for Errno {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        SysError::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        SysError::schema_id()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        SysError::json_schema(g)
    }
}

/// The predicted Linux outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Expect {
    /// The call succeeds.
    Ok,
    /// The call fails whatever the holders' hidden options are.
    Fails {
        /// Which call fails.
        step: Step,
        /// With which error.
        errno: Errno,
    },
    /// The call fails unless the holders carry options sock_diag cannot show.
    Depends {
        /// Which call fails otherwise.
        step: Step,
        /// With which error.
        errno: Errno,
        /// What the holders would need for success.
        ok_if: String,
        /// If they have it, the next call still fails so (a fixed port's
        /// bind() may pass, and then its 4-tuple refuses connect()).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        then: Option<Failure>,
    },
}

/// A call that fails, and its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Failure {
    /// Which call.
    pub step: Step,
    /// With which error.
    pub errno: Errno,
    /// It may fail or succeed: the kernel's choice decides (which port of
    /// several bind(ip, 0) takes, from a random offset).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maybe: bool,
}

impl Failure {
    /// A call that surely fails so.
    pub fn sure(step: Step, errno: Errno) -> Self {
        Failure {
            step,
            errno,
            maybe: false,
        }
    }
}

// The model counts the range; what a count predicts is said here.
impl Capacity {
    /// What connect() with a kernel-chosen port does, by this accounting:
    /// succeeds if a port with no socket is left, fails with EADDRNOTAVAIL
    /// if no port is usable, and otherwise depends on where the
    /// connections' ports came from.
    pub fn expect(&self) -> Expect {
        connect_expect_seen(self.usable, self.surely_usable, self.bound_only_hidden)
    }
}

/// [`connect_expect`] where the dump may hide bound-only sockets
/// (`hidden`, Linux before 6.5): every port that looks usable may hold one,
/// so none is sure.
pub(crate) fn connect_expect_seen(usable: u32, surely_usable: u32, hidden: bool) -> Expect {
    if !hidden || usable == 0 {
        return connect_expect(usable, surely_usable);
    }
    let mut ok_if = crate::model::kernel::version::unseen_bound_only(&format!(
        "every one of the {usable} port(s) that look usable"
    ));
    if usable > surely_usable {
        ok_if.push_str(
            ", and the connections on them got their ports from connect(), not from bind(ip, 0)",
        );
    }
    Expect::Depends {
        step: Step::Connect,
        errno: Errno::EADDRNOTAVAIL,
        ok_if,
        then: None,
    }
}

/// [`Capacity::expect`] from the two counts.
pub(crate) fn connect_expect(usable: u32, surely_usable: u32) -> Expect {
    if surely_usable > 0 {
        Expect::Ok
    } else if usable == 0 {
        Expect::Fails {
            step: Step::Connect,
            errno: Errno::EADDRNOTAVAIL,
        }
    } else {
        Expect::Depends {
            step: Step::Connect,
            errno: Errno::EADDRNOTAVAIL,
            ok_if: format!(
                "the connections on the {usable} usable port(s) got their ports from connect(), not from bind(ip, 0) (a bind()-made bucket is skipped for every destination; sock_diag does not show which)"
            ),
            then: None,
        }
    }
}

impl Expect {
    /// Where the dump cannot show bound-only sockets (Linux before 6.5), a
    /// predicted success is only as sure as "none of them holds `what`":
    /// it becomes a "depends" on that, naming the call that would fail
    /// otherwise. Anything else stays as it is.
    pub(crate) fn unless_unseen(self, step: Step, errno: Errno, what: &str) -> Expect {
        match self {
            Expect::Ok => Expect::Depends {
                step,
                errno,
                ok_if: crate::model::kernel::version::unseen_bound_only(what),
                then: None,
            },
            e => e,
        }
    }

    /// "ok", "bind() fails with EADDRINUSE", "bind() fails with EADDRINUSE
    /// unless every holder has SO_REUSEADDR".
    pub fn describe(&self) -> String {
        match self {
            Expect::Ok => "succeeds".into(),
            Expect::Fails { step, errno } => format!("{step}() fails with {}", errno.name()),
            Expect::Depends {
                step,
                errno,
                ok_if,
                then,
            } => match then {
                None => format!("{step}() fails with {} unless {ok_if}", errno.name()),
                Some(f) => format!(
                    "{step}() fails with {} unless {ok_if}; then {}() {}fails with {}",
                    errno.name(),
                    f.step,
                    if f.maybe {
                        "may fail or succeed: it "
                    } else {
                        ""
                    },
                    f.errno.name()
                ),
            },
        }
    }
}

/// How the holder's SO_REUSEADDR/SO_REUSEPORT are known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ReuseKnown {
    /// Not visible: sock_diag has no attribute for `sk_reuse` or
    /// `sk_reuseport` (a TIME_WAIT keeps the old socket's, `inet_twsk_alloc()`).
    Unknown,
    /// Inferred from which `--try` variants the kernel accepted.
    Learned {
        /// What was learned.
        what: String,
    },
    /// Inferred from the table itself: two overlapping listeners on one
    /// port exist only as a SO_REUSEPORT group.
    Inferred {
        /// What the table shows.
        what: String,
        /// SO_REUSEPORT is on.
        reuseport: bool,
    },
}

/// What kind of holder a blocking socket is for the question asked: it
/// picks the fixes, and each fix's cost is what the kernel does there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HolderClass {
    /// An earlier connection (or its TIME_WAIT) from the same fixed source
    /// port: the story's client that binds its port again.
    OwnFixedPort,
    /// An accepted connection or a server-side TIME_WAIT on a server port.
    ServerSide,
    /// A listener (another program's, or an earlier instance).
    Listener,
    /// One of two or more listeners sharing the port: a SO_REUSEPORT group.
    ReuseportGroup,
    /// A socket covering the other address family through a dual-stack
    /// `[::]` (or the new socket is the dual-stack one).
    DualStack,
    /// A socket that bound and neither listens nor connected (bind(ip, 0)
    /// ones hold a port for every destination).
    BoundOnly,
    /// An outgoing connection whose port connect() chose from the range.
    Ephemeral,
    /// A socket connected to itself (local == peer).
    SelfConnect,
}

/// Whether one holder stands in the way of the asked call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Blocking {
    /// Its address does not overlap the asked one.
    NoOverlap,
    /// It conflicts whatever its hidden options.
    Always,
    /// It shares the port whatever its hidden options.
    Never,
    /// It conflicts unless it carries `needs`.
    Unless {
        /// "it has SO_REUSEADDR".
        needs: String,
    },
    /// It holds the asked 4-tuple.
    HoldsTuple,
}

/// One socket that holds the port or the 4-tuple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct HolderReport {
    /// IPv4 or IPv6.
    pub family: Family,
    /// The state the kernel shows.
    pub state: TcpState,
    /// A TIME_WAIT mini-socket (or orphaned FIN_WAIT2 kept as one).
    pub timewait_sock: bool,
    /// Local address.
    pub local: SocketAddr,
    /// Peer address (unspecified for listeners and bound-only sockets).
    pub peer: SocketAddr,
    /// The running timer and its time left, as `ss --json` shows a
    /// socket's (`{"kind", "expires_ms", "retrans"}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timer: Option<Timer>,
    /// Owner uid (none for TIME_WAIT, which has no owner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Processes holding it.
    pub owners: Vec<Owner>,
    /// What it does on the port.
    pub role: super::table::Role,
    /// Which end of its connection it is (guessed from the ports).
    pub origin: super::table::Origin,
    /// local == peer.
    pub self_connected: bool,
    /// IPV6_V6ONLY where the kernel reports it (IPv6 listeners and
    /// bound-only sockets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v6only: Option<bool>,
    /// What kind of holder it is for this question (blocking holders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<HolderClass>,
    /// Its SO_REUSEADDR/SO_REUSEPORT, and how they are known.
    pub reuse: ReuseKnown,
    /// Whether it blocks the asked call.
    pub blocking: Blocking,
}

/// The prediction for one set of options on the new socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Variant {
    /// The new socket's options.
    pub opts: SocketOpts,
    /// "none", "REUSEADDR", …
    pub label: String,
    /// The predicted outcome.
    pub expect: Expect,
}

/// Something worth knowing about the port or the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Flag {
    /// The port is inside `ip_local_port_range` and not reserved: connect()
    /// may take it for an outgoing connection at any time.
    InEphemeralRange {
        /// The port.
        port: u16,
        /// The range.
        range: PortRange,
    },
    /// The port is in the range but listed in `ip_local_reserved_ports`.
    Reserved {
        /// The port.
        port: u16,
    },
    /// A socket is connected to itself (local == peer, simultaneous open).
    SelfConnected {
        /// Its address.
        addr: SocketAddr,
    },
    /// Connecting to this local port may connect to itself: it is in the
    /// range and nothing listens on it.
    SelfConnectRisk {
        /// The destination.
        dst: SocketAddr,
    },
    /// Two or more listeners on one address:port: a SO_REUSEPORT group,
    /// and the kernel splits connections between them.
    ReuseportGroup {
        /// The address.
        addr: SocketAddr,
        /// How many listeners.
        listeners: u32,
        /// Their processes, "name/pid".
        owners: Vec<String>,
    },
}

impl Flag {
    /// One line of text.
    pub fn describe(&self) -> String {
        match self {
            Flag::InEphemeralRange { port, range } => format!(
                "port {port} is inside ip_local_port_range {}-{} and not reserved: any connect() may take it as its source port",
                range.low, range.high
            ),
            Flag::Reserved { port } => {
                format!("port {port} is in ip_local_reserved_ports: connect() never picks it")
            }
            Flag::SelfConnected { addr } => format!(
                "self-connect: a socket on {addr} is connected to itself (simultaneous open, local == peer); it holds the port like any connection"
            ),
            Flag::ReuseportGroup {
                addr,
                listeners,
                owners,
            } => format!(
                "{listeners} listeners share {addr} as one SO_REUSEPORT group{}: connections are split between them (reuseport_select_sock() hashes each new connection to one member); if a second process joined by accident, it is taking part of the traffic",
                if owners.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", owners.join(", "))
                }
            ),
            Flag::SelfConnectRisk { dst } => format!(
                "self-connect risk: {dst} is local, inside the ephemeral range and nothing listens there, so connect() can pick port {} as its source and connect to itself",
                dst.port()
            ),
        }
    }
}

/// What another system is documented to do in the same situation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OtherSystem {
    /// "Windows", "BSD/macOS".
    pub system: &'static str,
    /// The outcome, in words.
    pub outcome: String,
    /// Always "documented, not run".
    pub label: &'static str,
}

/// What `--try` did and whether it agrees with the prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Attempt {
    /// The variant tried.
    pub label: String,
    /// The options used.
    pub opts: SocketOpts,
    /// The kernel's error, as the errno object; none (`null`) when it
    /// accepted the call.
    pub error: Option<SysError>,
    /// The port the kernel gave (bind(addr, 0), connect()).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Agreement with the prediction.
    pub agrees: Agreement,
    /// What the result tells about the holders' hidden options, when the
    /// prediction depended on them: "all 3 holders have SO_REUSEADDR: no".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned: Option<String>,
    /// connect() only: what the handshake came to within
    /// 500 ms ("established", "refused: ECONNREFUSED", "no
    /// answer").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake: Option<String>,
    /// connect() only, Linux as root: the kernel's own reason from its
    /// events (a drop's `skb_drop_reason`, the RST's `sk_rst_reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_verdict: Option<String>,
    /// connect() only: the kernel's events for the attempt's 4-tuple
    /// (tracepoints), or one line saying why there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_events: Vec<String>,
}

/// How long `why connect --try` waits for the loopback handshake's result.
pub const HANDSHAKE_WAIT_MS: u64 = 500;

/// A `--try` result against the prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Agreement {
    /// The kernel did what was predicted.
    Agrees,
    /// The prediction depended on hidden options; the result tells them.
    Resolves,
    /// The kernel did something else: the model is wrong here.
    Mismatch,
}

/// The question asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Asked {
    /// `why bind ADDR:PORT`.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The new socket's options.
        opts: SocketOpts,
        /// IPV6_V6ONLY of the new socket (IPv6 only).
        v6only: bool,
    },
    /// `why connect DST`.
    Connect {
        /// The destination.
        dst: SocketAddr,
        /// `--from`.
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<SocketAddr>,
        /// IP_BIND_ADDRESS_NO_PORT.
        bind_no_port: bool,
    },
    /// `why port PORT`.
    Port {
        /// The port.
        port: u16,
    },
}

/// The most holder reports a range scan keeps (the text shows 20, the
/// short form 3); the rest are counted in `holders_not_listed`, and the
/// capacity counts every port. `twlab ss --peer DST` lists them all.
pub const HOLDERS_LISTED: usize = 500;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The full answer to a question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Diagnosis {
    /// The question.
    pub asked: Asked,
    /// The sockets that hold the port or the 4-tuple: all of them, or
    /// the first [`HOLDERS_LISTED`] where a range scan finds more (each
    /// counted in [`Capacity`], not kept: 31,000 TIME_WAIT toward one
    /// destination would cost more memory than the dump itself).
    pub holders: Vec<HolderReport>,
    /// Holders found but not listed (beyond [`HOLDERS_LISTED`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub holders_not_listed: usize,
    /// The deciding rule (the one identifier every command prints).
    pub rule: RuleId,
    /// The kernel function that applies it.
    pub kernel_fn: &'static str,
    /// One or two sentences.
    pub explanation: String,
    /// The predicted Linux outcome for the asked options.
    pub expect: Expect,
    /// The predictions for the other option variants (bind questions).
    pub variants: Vec<Variant>,
    /// Flags.
    pub flags: Vec<Flag>,
    /// Ephemeral capacity (connect questions, and ports in the range).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    /// Fixes, best first.
    pub fixes: Vec<RankedFix>,
    /// What sock_diag cannot show and what each value would mean.
    pub unknowns: Vec<String>,
    /// Windows and BSD/macOS, documented.
    pub other_systems: Vec<OtherSystem>,
    /// The facts the rule used (sysctls, states, ages).
    pub facts: Vec<Fact>,
    /// `--try` evidence (empty without `--try`).
    pub tried: Vec<Attempt>,
}

impl Diagnosis {
    /// The most urgent TIME_WAIT timer among blocking holders, if any:
    /// the longest, since all must be gone.
    pub fn blocking_wait_ms(&self) -> Option<u32> {
        self.holders
            .iter()
            .filter(|h| {
                h.timewait_sock && !matches!(h.blocking, Blocking::NoOverlap | Blocking::Never)
            })
            .filter_map(|h| h.timer.map(|t| t.expires_ms))
            .max()
    }
}
