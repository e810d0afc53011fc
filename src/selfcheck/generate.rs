//! A situation from a seed: the namespace's sysctls, a socket table built
//! by a script of socket calls (the scenario file's own [`SocketSpec`] and
//! [`Action`], so a disagreement is written out as it was run), and the
//! questions to ask about it.
//!
//! Everything here is pure: the same seed and case give the same
//! [`Situation`]. What only the kernel decides (ports it picks, steps that
//! fail) is referred to symbolically ([`PortChoice::LocalPortOf`]) and
//! resolved when the situation runs.

use super::rng::Rng;
use crate::scenario::file::{Action, SocketSpec};
use crate::socket::V6Only;
use crate::sysctl;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The uid of "another user's" sockets (nobody).
pub const OTHER_UID: u32 = 65534;

/// The fixed ports situations use, few so that sockets meet on them: a
/// privileged one, a service port, and two inside every range below.
pub const PORTS: [u16; 4] = [80, 8080, 40000, 40003];

/// The low end of the tiny and single-port ranges.
const RANGE_LOW: u16 = 40000;
/// The tiny range's size.
const TINY: u16 = 10;

/// What a situation contains; [`Situation::ingredients`] lists them so a
/// test can check that the generator covers each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Ingredient {
    /// `tcp_tw_reuse` = 0.
    TwReuse0,
    /// `tcp_tw_reuse` = 1.
    TwReuse1,
    /// `tcp_tw_reuse` = 2.
    TwReuse2,
    /// `tcp_timestamps` = 0.
    NoTimestamps,
    /// `tcp_timestamps` = 1.
    Timestamps,
    /// `net.ipv6.bindv6only` = 1.
    BindV6Only,
    /// The default `ip_local_port_range`.
    RangeNormal,
    /// A 10-port range.
    RangeTiny,
    /// A one-port range.
    RangeSingle,
    /// `ip_local_reserved_ports` set.
    ReservedPorts,
    /// `ip_unprivileged_port_start` other than 1024.
    UnprivilegedPortStart,
    /// `ip_autobind_reuse` = 1.
    AutobindReuse,
    /// A listener.
    Listener,
    /// A bound-only socket on a fixed port.
    BoundOnly,
    /// bind(ip, 0).
    BindPortZero,
    /// bind(ip, 0) with IP_BIND_ADDRESS_NO_PORT.
    BindNoPort,
    /// A connection kept ESTABLISHED at both ends.
    Established,
    /// A TIME_WAIT on the client side.
    TimeWaitClient,
    /// A TIME_WAIT on the server side.
    TimeWaitServer,
    /// A client with a fixed source port.
    FixedClientPort,
    /// A dual-stack `[::]` socket.
    DualStackAny,
    /// A V6ONLY `[::]` socket.
    V6OnlyAny,
    /// A v4-mapped address (`::ffff:a.b.c.d`).
    V4Mapped,
    /// SO_REUSEADDR on a socket of the table.
    ReuseAddr,
    /// SO_REUSEPORT on a socket of the table.
    ReusePort,
    /// A socket owned by another uid.
    OtherUid,
    /// The range filled with bind(ip, 0) sockets.
    RangeFilled,
    /// Question: bind() of a fixed port.
    AskBind,
    /// Question: bind(ip, 0).
    AskBindPortZero,
    /// Question: bind() then listen().
    AskListen,
    /// Question: connect() from a kernel-chosen port (and `ss --summary`).
    AskConnectEphemeral,
    /// Question: connect() from a fixed source port.
    AskConnectFixed,
    /// Question: connect() after bind(ip, 0).
    AskConnectPortZero,
    /// Question: connect() after bind(ip, 0) with IP_BIND_ADDRESS_NO_PORT.
    AskConnectNoPort,
    /// Question: a call made as an ordinary user (no CAP_NET_BIND_SERVICE).
    AskUnprivileged,
}

impl Ingredient {
    /// Every ingredient.
    pub const ALL: [Ingredient; 35] = [
        Ingredient::TwReuse0,
        Ingredient::TwReuse1,
        Ingredient::TwReuse2,
        Ingredient::NoTimestamps,
        Ingredient::Timestamps,
        Ingredient::BindV6Only,
        Ingredient::RangeNormal,
        Ingredient::RangeTiny,
        Ingredient::RangeSingle,
        Ingredient::ReservedPorts,
        Ingredient::UnprivilegedPortStart,
        Ingredient::AutobindReuse,
        Ingredient::Listener,
        Ingredient::BoundOnly,
        Ingredient::BindPortZero,
        Ingredient::BindNoPort,
        Ingredient::Established,
        Ingredient::TimeWaitClient,
        Ingredient::TimeWaitServer,
        Ingredient::FixedClientPort,
        Ingredient::DualStackAny,
        Ingredient::V6OnlyAny,
        Ingredient::V4Mapped,
        Ingredient::ReuseAddr,
        Ingredient::ReusePort,
        Ingredient::OtherUid,
        Ingredient::RangeFilled,
        Ingredient::AskBind,
        Ingredient::AskBindPortZero,
        Ingredient::AskListen,
        Ingredient::AskConnectEphemeral,
        Ingredient::AskConnectFixed,
        Ingredient::AskConnectPortZero,
        Ingredient::AskConnectNoPort,
        Ingredient::AskUnprivileged,
    ];
}

/// Who makes a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// The running user (root).
    Runner,
    /// [`OTHER_UID`]; for a question also without CAP_NET_BIND_SERVICE,
    /// as an ordinary user.
    Other,
}

impl Owner {
    /// The uid sockets get (the fsuid at socket()).
    pub fn uid(self) -> u32 {
        match self {
            Owner::Runner => 0,
            Owner::Other => OTHER_UID,
        }
    }
}

/// A port as a question names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PortChoice {
    /// This port.
    Fixed(u16),
    /// Port 0: the kernel picks.
    Zero,
    /// The local port a socket of the table got (it may have been chosen
    /// by the kernel); the question is skipped if it got none.
    LocalPortOf(String),
}

/// A bind() (and listen()) question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct BindAsk {
    /// The address.
    pub ip: IpAddr,
    /// The port.
    pub port: PortChoice,
    /// SO_REUSEADDR.
    pub reuseaddr: bool,
    /// SO_REUSEPORT.
    pub reuseport: bool,
    /// IPV6_V6ONLY (IPv6 only).
    pub v6only: V6Only,
    /// Who asks.
    pub owner: Owner,
    /// listen() after a successful bind().
    pub then: AfterBind,
}

/// What a bind question does after bind().
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AfterBind {
    /// Nothing: the socket stays bound.
    Nothing,
    /// listen(), which checks the port again (`inet_csk_listen_start()`).
    Listen,
}

/// Where a connect() question's source port comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// No bind(): `__inet_hash_connect()` picks the port.
    Kernel,
    /// bind(ip, port) first.
    Fixed {
        /// The source address.
        ip: IpAddr,
        /// The source port.
        port: PortChoice,
    },
    /// bind(ip, 0) first: `inet_csk_find_open_port()` picks the port.
    PortZero {
        /// The source address.
        ip: IpAddr,
    },
    /// bind(ip, 0) with IP_BIND_ADDRESS_NO_PORT: connect() picks the port.
    NoPort {
        /// The source address.
        ip: IpAddr,
    },
}

/// A connect() question (always to a listener of the table, on loopback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ConnectAsk {
    /// The listener (by socket name) that must be listening for the
    /// question to be asked.
    pub listener: String,
    /// The destination.
    pub dst: SocketAddr,
    /// The source.
    pub from: Source,
    /// SO_REUSEADDR on the connecting socket.
    pub reuseaddr: bool,
    /// Who asks.
    pub owner: Owner,
}

/// One question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Question {
    /// bind() (and listen()).
    Bind(BindAsk),
    /// connect().
    Connect(ConnectAsk),
}

/// One generated situation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Situation {
    /// Its number in the run.
    pub case: u64,
    /// The namespace's sysctls, in the order they are written.
    pub sysctls: Vec<(String, String)>,
    /// The table's sockets.
    pub sockets: Vec<SocketSpec>,
    /// The calls that build the table.
    pub steps: Vec<Action>,
    /// The questions.
    pub questions: Vec<Question>,
    /// What it contains.
    pub ingredients: BTreeSet<Ingredient>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeKind {
    Normal,
    Tiny,
    Single,
}

impl RangeKind {
    fn ports(self) -> u16 {
        match self {
            RangeKind::Normal => 28232,
            RangeKind::Tiny => TINY,
            RangeKind::Single => 1,
        }
    }
}

/// A listener of the table, for connections and connect questions.
#[derive(Debug, Clone)]
struct ListenerInfo {
    name: String,
    addr: SocketAddr,
    /// `[::]` without V6ONLY: IPv4 clients reach it too.
    dual_stack: bool,
}

/// A connection's client end, for "reconnect from the same port"
/// questions.
#[derive(Debug, Clone)]
struct ClientInfo {
    name: String,
    src: IpAddr,
    dst: SocketAddr,
    listener: String,
}

struct Gen {
    rng: Rng,
    bindv6only: bool,
    range: RangeKind,
    sockets: Vec<SocketSpec>,
    steps: Vec<Action>,
    listeners: Vec<ListenerInfo>,
    clients: Vec<ClientInfo>,
    /// Sockets that get a local port (for [`PortChoice::LocalPortOf`]).
    ported: Vec<String>,
    ingredients: BTreeSet<Ingredient>,
}

const LO2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Generate situation `case` of run `seed`.
pub fn situation(seed: u64, case: u64) -> Situation {
    let mut rng = Rng::for_case(seed, case);
    let mut ingredients = BTreeSet::new();
    let (sysctls, bindv6only, range) = sysctls(&mut rng, &mut ingredients);
    let mut g = Gen {
        rng,
        bindv6only,
        range,
        sockets: Vec::new(),
        steps: Vec::new(),
        listeners: Vec::new(),
        clients: Vec::new(),
        ported: Vec::new(),
        ingredients,
    };
    let items = 1 + g.rng.below(5);
    for _ in 0..items {
        g.item();
    }
    let asks = 2 + g.rng.below(4);
    let questions = (0..asks).map(|_| g.question()).collect();
    Situation {
        case,
        sysctls,
        sockets: g.sockets,
        steps: g.steps,
        questions,
        ingredients: g.ingredients,
    }
}

fn sysctls(
    rng: &mut Rng,
    ing: &mut BTreeSet<Ingredient>,
) -> (Vec<(String, String)>, bool, RangeKind) {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| out.push((k.to_string(), v));
    let tw = rng.below(3);
    ing.insert(
        [
            Ingredient::TwReuse0,
            Ingredient::TwReuse1,
            Ingredient::TwReuse2,
        ][tw],
    );
    set(sysctl::TW_REUSE, tw.to_string());
    let ts = rng.chance(70);
    ing.insert(if ts {
        Ingredient::Timestamps
    } else {
        Ingredient::NoTimestamps
    });
    set(sysctl::TIMESTAMPS, u8::from(ts).to_string());
    let v6only = rng.chance(25);
    if v6only {
        ing.insert(Ingredient::BindV6Only);
    }
    set(sysctl::BINDV6ONLY, u8::from(v6only).to_string());
    // ip_unprivileged_port_start first: the kernel refuses a port range
    // whose low end is below it (ipv4_local_port_range()), and every value
    // here is below every range's low end.
    let start = rng.weighted(&[(6, 1024u16), (2, 0), (2, 8081)]);
    if start != 1024 {
        ing.insert(Ingredient::UnprivilegedPortStart);
    }
    set(sysctl::UNPRIVILEGED_PORT_START, start.to_string());
    let range = rng.weighted(&[
        (3, RangeKind::Normal),
        (4, RangeKind::Tiny),
        (2, RangeKind::Single),
    ]);
    let (low, high, ingredient) = match range {
        RangeKind::Normal => (32768, 60999, Ingredient::RangeNormal),
        RangeKind::Tiny => (RANGE_LOW, RANGE_LOW + TINY - 1, Ingredient::RangeTiny),
        RangeKind::Single => (RANGE_LOW, RANGE_LOW, Ingredient::RangeSingle),
    };
    ing.insert(ingredient);
    set(sysctl::PORT_RANGE, format!("{low} {high}"));
    let reserved = rng.weighted(&[(5, ""), (2, "40003"), (1, "40000"), (2, "40000-40004")]);
    if !reserved.is_empty() {
        ing.insert(Ingredient::ReservedPorts);
        set(sysctl::RESERVED_PORTS, reserved.to_string());
    }
    let autobind = rng.chance(30);
    if autobind {
        ing.insert(Ingredient::AutobindReuse);
    }
    set(sysctl::AUTOBIND_REUSE, u8::from(autobind).to_string());
    (out, v6only, range)
}

impl Gen {
    fn add(&mut self, ing: Ingredient) {
        self.ingredients.insert(ing);
    }

    /// A local address for a listener, a bound socket or a bind question,
    /// with the IPV6_V6ONLY it asks for.
    fn local_ip(&mut self) -> (IpAddr, V6Only) {
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let ip = self.rng.weighted(&[
            (3, IpAddr::V4(Ipv4Addr::LOCALHOST)),
            (2, IpAddr::V4(LO2)),
            (3, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            (3, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            (2, IpAddr::V6(Ipv6Addr::LOCALHOST)),
            (1, mapped),
        ]);
        let v6only = match ip {
            IpAddr::V4(_) => V6Only::System,
            // A V6ONLY socket cannot bind a v4-mapped address (EINVAL in
            // __inet6_bind()): a mistake, not a port question.
            _ if ip == mapped => {
                self.add(Ingredient::V4Mapped);
                if self.bindv6only {
                    V6Only::Off
                } else {
                    self.rng.pick(&[V6Only::System, V6Only::Off])
                }
            }
            _ => self.rng.pick(&[V6Only::System, V6Only::On, V6Only::Off]),
        };
        if ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
            self.add(if v6only.resolve(self.bindv6only) {
                Ingredient::V6OnlyAny
            } else {
                Ingredient::DualStackAny
            });
        }
        (ip, v6only)
    }

    fn owner(&mut self, percent: u32) -> Owner {
        if self.rng.chance(percent) {
            self.add(Ingredient::OtherUid);
            Owner::Other
        } else {
            Owner::Runner
        }
    }

    fn reuse(&mut self, percent: u32) -> bool {
        self.rng.chance(percent)
    }

    /// A socket of the table; its name is returned.
    fn socket(&mut self, prefix: &str, addr: SocketAddr, opts: SpecOpts) -> String {
        let name = format!("{prefix}{}", self.sockets.len());
        if opts.reuseaddr {
            self.add(Ingredient::ReuseAddr);
        }
        if opts.reuseport {
            self.add(Ingredient::ReusePort);
        }
        self.sockets.push(SocketSpec {
            name: name.clone(),
            address: addr.to_string(),
            reuseaddr: opts.reuseaddr,
            reuseport: opts.reuseport,
            v6only: opts.v6only,
            linger: None,
            bind_address_no_port: opts.bind_no_port,
            uid: (opts.owner == Owner::Other).then_some(OTHER_UID),
            unprivileged: false,
            port_from: None,
        });
        name
    }

    fn item(&mut self) {
        let filling = self.range != RangeKind::Normal;
        let kind = self.rng.weighted(&[
            (25, Item::Listener),
            (20, Item::Bound),
            (40, Item::Connection),
            (if filling { 15 } else { 0 }, Item::Fill),
        ]);
        match kind {
            Item::Listener => {
                self.listener();
            }
            Item::Bound => self.bound(),
            Item::Connection => self.connection(),
            Item::Fill => self.fill(),
        }
    }

    fn listener(&mut self) -> ListenerInfo {
        self.add(Ingredient::Listener);
        let (ip, v6only) = self.local_ip();
        let port = self.rng.pick(&PORTS);
        let opts = SpecOpts {
            reuseaddr: self.reuse(30),
            reuseport: self.reuse(30),
            v6only,
            bind_no_port: false,
            owner: self.owner(15),
        };
        let addr = SocketAddr::new(ip, port);
        let name = self.socket("l", addr, opts);
        self.steps.push(Action::Bind {
            socket: name.clone(),
        });
        self.steps.push(Action::Listen {
            socket: name.clone(),
            backlog: None,
        });
        self.ported.push(name.clone());
        let info = ListenerInfo {
            name,
            addr,
            dual_stack: ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && !v6only.resolve(self.bindv6only),
        };
        self.listeners.push(info.clone());
        info
    }

    fn bound(&mut self) {
        let (ip, v6only) = self.local_ip();
        let zero = self.rng.chance(40);
        let no_port = zero && self.rng.chance(40);
        self.add(match (zero, no_port) {
            (false, _) => Ingredient::BoundOnly,
            (true, false) => Ingredient::BindPortZero,
            (true, true) => Ingredient::BindNoPort,
        });
        let port = if zero { 0 } else { self.rng.pick(&PORTS) };
        let opts = SpecOpts {
            reuseaddr: self.reuse(35),
            reuseport: self.reuse(30),
            v6only,
            bind_no_port: no_port,
            owner: self.owner(15),
        };
        let name = self.socket("b", SocketAddr::new(ip, port), opts);
        self.steps.push(Action::Bind {
            socket: name.clone(),
        });
        if !no_port {
            self.ported.push(name);
        }
    }

    /// Fill the small range with bind(ip, 0) sockets, one more than it
    /// has ports (that one is refused when the range is full).
    fn fill(&mut self) {
        self.add(Ingredient::RangeFilled);
        let ip = self.rng.pick(&[
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(LO2),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ]);
        let reuseaddr = self.reuse(30);
        for _ in 0..=self.range.ports() {
            let opts = SpecOpts {
                reuseaddr,
                reuseport: false,
                v6only: V6Only::System,
                bind_no_port: false,
                owner: Owner::Runner,
            };
            let name = self.socket("f", SocketAddr::new(ip, 0), opts);
            self.steps.push(Action::Bind {
                socket: name.clone(),
            });
            self.ported.push(name);
        }
    }

    /// A loopback destination that reaches `l`.
    fn dst_of(&mut self, l: &ListenerInfo) -> SocketAddr {
        let ip = match l.addr.ip() {
            IpAddr::V4(a) if a.is_unspecified() => self
                .rng
                .pick(&[IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(LO2)]),
            IpAddr::V6(a) if a.is_unspecified() && l.dual_stack => self.rng.pick(&[
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            ]),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(a),
            },
            ip => ip,
        };
        SocketAddr::new(ip, l.addr.port())
    }

    fn source_ip(&mut self, dst: SocketAddr) -> IpAddr {
        match dst {
            SocketAddr::V4(_) => self
                .rng
                .weighted(&[(7, IpAddr::V4(Ipv4Addr::LOCALHOST)), (3, IpAddr::V4(LO2))]),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }

    fn connection(&mut self) {
        let l = if self.listeners.is_empty() || self.rng.chance(25) {
            self.listener()
        } else {
            let i = self.rng.below(self.listeners.len());
            self.listeners[i].clone()
        };
        let dst = self.dst_of(&l);
        let src = self.source_ip(dst);
        let mode = self.rng.weighted(&[
            (35, ClientPort::Kernel),
            (25, ClientPort::Fixed),
            (20, ClientPort::PortZero),
            (20, ClientPort::NoPort),
        ]);
        let port = match mode {
            ClientPort::Fixed => {
                self.add(Ingredient::FixedClientPort);
                self.rng.pick(&[40000, 40003, 40005, 45000])
            }
            ClientPort::PortZero => {
                self.add(Ingredient::BindPortZero);
                0
            }
            ClientPort::NoPort => {
                self.add(Ingredient::BindNoPort);
                0
            }
            ClientPort::Kernel => 0,
        };
        let opts = SpecOpts {
            reuseaddr: self.reuse(40),
            reuseport: self.reuse(10),
            v6only: V6Only::System,
            bind_no_port: mode == ClientPort::NoPort,
            owner: self.owner(10),
        };
        let c = self.socket("c", SocketAddr::new(src, port), opts);
        if mode != ClientPort::Kernel {
            self.steps.push(Action::Bind { socket: c.clone() });
        }
        self.steps.push(Action::Connect {
            socket: c.clone(),
            to: dst.to_string(),
        });
        let s = format!("{c}s");
        self.steps.push(Action::Accept {
            socket: l.name.clone(),
            name: s.clone(),
        });
        self.ported.push(c.clone());
        self.clients.push(ClientInfo {
            name: c.clone(),
            src,
            dst,
            listener: l.name.clone(),
        });
        let end = self.rng.weighted(&[
            (4, Ingredient::Established),
            (3, Ingredient::TimeWaitClient),
            (3, Ingredient::TimeWaitServer),
        ]);
        self.add(end);
        let (first, second) = match end {
            Ingredient::TimeWaitClient => (c, s),
            Ingredient::TimeWaitServer => (s, c),
            _ => return,
        };
        // The first closer's FIN, acknowledged once the other end shows
        // CLOSE_WAIT; then the other end's FIN puts the first closer in
        // TIME_WAIT (tcp_fin() / tcp_time_wait()). Waiting for CLOSE_WAIT
        // first keeps both ends from closing at once (both would end in
        // TIME_WAIT through CLOSING).
        let wait = |socket: &str, state: &str| Action::WaitForState {
            socket: socket.to_string(),
            state: state.to_string(),
            timeout_ms: None,
        };
        self.steps.push(Action::Close {
            socket: first.clone(),
        });
        self.steps.push(wait(&second, "CLOSE-WAIT"));
        self.steps.push(Action::Close {
            socket: second.clone(),
        });
        self.steps.push(wait(&first, "TIME-WAIT"));
    }

    fn port_choice(&mut self) -> PortChoice {
        let known = !self.ported.is_empty();
        match self
            .rng
            .weighted(&[(45, 0), (20, 1), (if known { 35 } else { 0 }, 2)])
        {
            0 => PortChoice::Fixed(self.rng.pick(&PORTS)),
            1 => PortChoice::Zero,
            _ => PortChoice::LocalPortOf(self.rng.pick(&self.ported)),
        }
    }

    fn asker(&mut self, percent: u32) -> Owner {
        let o = self.owner(percent);
        if o == Owner::Other {
            self.add(Ingredient::AskUnprivileged);
        }
        o
    }

    fn question(&mut self) -> Question {
        let connect = !self.listeners.is_empty() && self.rng.chance(50);
        if connect {
            return Question::Connect(self.connect_question());
        }
        let listen = self.rng.chance(30);
        let (ip, v6only) = self.local_ip();
        let port = self.port_choice();
        self.add(match (listen, &port) {
            (true, _) => Ingredient::AskListen,
            (false, PortChoice::Zero) => Ingredient::AskBindPortZero,
            (false, _) => Ingredient::AskBind,
        });
        Question::Bind(BindAsk {
            ip,
            port,
            reuseaddr: self.reuse(50),
            reuseport: self.reuse(40),
            v6only,
            owner: self.asker(25),
            then: if listen {
                AfterBind::Listen
            } else {
                AfterBind::Nothing
            },
        })
    }

    fn connect_question(&mut self) -> ConnectAsk {
        // Half of the fixed-port questions are the story's reconnect: the
        // same source port to the same destination as a connection of the
        // table (ESTABLISHED or TIME_WAIT).
        let again = !self.clients.is_empty() && self.rng.chance(25);
        let (listener, dst, from) = if again {
            let c = self.rng.pick(&self.clients);
            let from = Source::Fixed {
                ip: c.src,
                port: PortChoice::LocalPortOf(c.name.clone()),
            };
            (c.listener, c.dst, from)
        } else {
            let i = self.rng.below(self.listeners.len());
            let l = self.listeners[i].clone();
            let dst = self.dst_of(&l);
            let ip = self.source_ip(dst);
            let port = PortChoice::Fixed(self.rng.pick(&[40000, 40003, 40005, 8080]));
            let from = self.rng.weighted(&[
                (35, Source::Kernel),
                (15, Source::Fixed { ip, port }),
                (25, Source::PortZero { ip }),
                (25, Source::NoPort { ip }),
            ]);
            (l.name, dst, from)
        };
        self.add(match from {
            Source::Kernel => Ingredient::AskConnectEphemeral,
            Source::Fixed { .. } => Ingredient::AskConnectFixed,
            Source::PortZero { .. } => Ingredient::AskConnectPortZero,
            Source::NoPort { .. } => Ingredient::AskConnectNoPort,
        });
        ConnectAsk {
            listener,
            dst,
            from,
            reuseaddr: self.reuse(50),
            owner: self.asker(20),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Listener,
    Bound,
    Connection,
    Fill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPort {
    Kernel,
    Fixed,
    PortZero,
    NoPort,
}

/// The options of one socket of the table.
#[derive(Debug, Clone, Copy)]
struct SpecOpts {
    reuseaddr: bool,
    reuseport: bool,
    v6only: V6Only,
    bind_no_port: bool,
    owner: Owner,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_situation() {
        for case in 0..50 {
            assert_eq!(situation(1, case), situation(1, case));
        }
        assert_ne!(situation(1, 0), situation(2, 0));
        assert_ne!(situation(1, 0), situation(1, 1));
    }

    /// Over 500 situations every ingredient appears, and every step names
    /// a socket the situation defines (or an accepted one defined before).
    #[test]
    fn five_hundred_situations_cover_every_ingredient() {
        let mut seen = BTreeSet::new();
        for case in 0..500 {
            let s = situation(42, case);
            seen.extend(s.ingredients.iter().copied());
            let mut names: Vec<String> = s.sockets.iter().map(|k| k.name.clone()).collect();
            for a in &s.steps {
                if let Action::Accept { name, .. } = a {
                    names.push(name.clone());
                }
                let used = a.socket().unwrap();
                assert!(names.iter().any(|n| n == used), "case {case}: {used}");
            }
            assert!((2..=5).contains(&s.questions.len()));
            assert!(s.steps.len() <= 5 * 12, "case {case}: bounded table");
        }
        let missing: Vec<_> = Ingredient::ALL
            .iter()
            .filter(|i| !seen.contains(i))
            .collect();
        assert!(missing.is_empty(), "never generated: {missing:?}");
    }

    /// The written sockets and steps form a script the loader accepts.
    #[test]
    fn a_situation_is_a_loadable_script() {
        let s = situation(7, 3);
        let steps: Vec<crate::scenario::file::StepSpec> = s
            .steps
            .iter()
            .map(|a| crate::scenario::file::StepSpec {
                action: a.clone(),
                expect: None,
            })
            .collect();
        let text = crate::scenario::file::script_toml(&[], "x", &s.sysctls, &s.sockets, &steps);
        crate::scenario::file::parse(std::path::Path::new("x.toml"), &text).unwrap();
    }
}
