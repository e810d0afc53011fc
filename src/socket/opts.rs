//! What a socket is before it exists: its address family, its options
//! ([`SocketOpts`]), IPV6_V6ONLY, and the `IP:PORT` the user typed.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use socket2::Domain;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Parse `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
///
/// Names other than `localhost` are refused on purpose: twlab only talks to
/// loopback and to namespaces it made, and a DNS lookup would leave the host.
pub fn parse_endpoint(input: &str) -> Result<SocketAddr> {
    let bad = |why: &str| Error::BadAddress {
        input: crate::text::echo(input),
        why: why.to_string(),
    };
    let s = input;
    if s.is_empty() {
        return Err(bad("empty"));
    }
    // `'127.0.0.1:80\n'` (a line read with its newline) is not an
    // address: no blank or control character anywhere, not even at the
    // ends.
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        let c = crate::text::escape_for_terminal(&c.to_string()).into_owned();
        return Err(bad(&format!(
            "it contains a blank or control character ('{c}')"
        )));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = parse_port(port).map_err(|w| bad(&w))?;
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
    }
    // Give the most useful reason we can.
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => return Err(bad("the port is missing")),
        Ok(IpAddr::V6(_)) => {
            return Err(bad(
                "the port is missing (an IPv6 address with a port is written [ADDR]:PORT)",
            ));
        }
        Err(_) => {}
    }
    if s.starts_with(':') || s.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("the IP address is missing"));
    }
    if s.matches(':').count() > 1 && !s.starts_with('[') {
        return Err(bad("an IPv6 address needs brackets before the port"));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            if let Err(w) = parse_port(port) {
                return Err(bad(&w));
            }
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.parse::<IpAddr>().is_err() {
                // An IP address is at most 45 characters: a longer piece
                // is not quoted again (the whole input is, cut).
                if host.chars().count() > 64 {
                    return Err(bad("the part before the port is not an IP address"));
                }
                return Err(bad(&format!("'{host}' is not an IP address")));
            }
            Err(bad("cannot parse"))
        }
        None => Err(bad("the port is missing")),
    }
}

fn parse_port(p: &str) -> std::result::Result<u16, String> {
    match p.parse::<u32>() {
        Ok(n) if n <= 65535 => Ok(n as u16),
        Ok(n) => Err(format!("port {n} is out of range 0-65535")),
        // A longer piece than any port is not quoted again (the whole
        // input is, cut).
        Err(_) if p.chars().count() > 64 => Err("the port is not a number".into()),
        Err(_) => Err(format!("'{}' is not a port number", crate::text::echo(p))),
    }
}

/// IP version of an experiment. In JSON `"ipv4"`/`"ipv6"`, as `ss --json`
/// writes a socket's family (one shape per concept, docs/json.md); files
/// may also say `"v4"`/`"v6"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Family {
    /// IPv4.
    #[serde(rename = "ipv4", alias = "v4")]
    V4,
    /// IPv6.
    #[serde(rename = "ipv6", alias = "v6")]
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: &SocketAddr) -> Self {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    /// 127.0.0.1 or ::1.
    pub fn loopback(self) -> IpAddr {
        match self {
            Family::V4 => Ipv4Addr::LOCALHOST.into(),
            Family::V6 => Ipv6Addr::LOCALHOST.into(),
        }
    }
    /// socket2's domain for socket().
    pub fn domain(self) -> Domain {
        match self {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        }
    }
    /// "IPv4" / "IPv6".
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// IPV6_V6ONLY on an IPv6 socket: whether a socket on `::` also takes the
/// IPv4 addresses (dual-stack) of its port.
///
/// `System` leaves the kernel's default, which `inet6_create()` copies from
/// `net.ipv6.bindv6only` (0, dual-stack, on every default Linux; Windows
/// defaults to V6ONLY on). A specific non-mapped IPv6 address makes the
/// socket v6-only anyway (`__inet6_bind()` sets `sk_ipv6only`), and a
/// v4-mapped address on a v6-only socket is refused with EINVAL.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum V6Only {
    /// Whatever `net.ipv6.bindv6only` says (what real programs get).
    #[default]
    System,
    /// IPV6_V6ONLY = 1: the socket never takes IPv4 traffic.
    On,
    /// IPV6_V6ONLY = 0: dual-stack, `::` also covers `0.0.0.0`.
    Off,
}

impl V6Only {
    /// The value the socket ends up with, `sysctl_bindv6only` being the
    /// namespace's `net.ipv6.bindv6only`.
    pub fn resolve(self, sysctl_bindv6only: bool) -> bool {
        match self {
            V6Only::System => sysctl_bindv6only,
            V6Only::On => true,
            V6Only::Off => false,
        }
    }

    /// The setsockopt value to apply, `None` for the system default.
    pub fn explicit(self) -> Option<bool> {
        match self {
            V6Only::System => None,
            V6Only::On => Some(true),
            V6Only::Off => Some(false),
        }
    }
}

/// "dual-stack" / "v6-only": what an IPv6 socket's IPV6_V6ONLY means.
pub fn v6only_word(v6only: bool) -> &'static str {
    if v6only { "v6-only" } else { "dual-stack" }
}

/// The socket options that decide address reuse. Options left out of a
/// scenario file are off.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(default, deny_unknown_fields)]
pub struct SocketOpts {
    /// SO_REUSEADDR.
    pub reuseaddr: bool,
    /// SO_REUSEPORT (Linux, BSD, macOS; absent on Windows).
    pub reuseport: bool,
    /// SO_LINGER {on, secs}; `Some(0)` makes close() send RST and skip
    /// TIME_WAIT (tcp_close → tcp_disconnect path, RFC 793 "ABORT").
    pub linger: Option<u32>,
    /// IP_BIND_ADDRESS_NO_PORT: with bind(addr, 0), defer the port choice to
    /// connect() so the 4-tuple can be checked as a whole (Linux 4.2+).
    pub bind_no_port: bool,
    /// IPV6_V6ONLY for IPv6 sockets (ignored for IPv4 ones).
    pub v6only: V6Only,
}

impl SocketOpts {
    /// "REUSEADDR+LINGER0", or "none".
    pub fn label(&self) -> String {
        let mut v = Vec::new();
        if self.reuseaddr {
            v.push("REUSEADDR".to_string());
        }
        if self.reuseport {
            v.push("REUSEPORT".to_string());
        }
        if let Some(s) = self.linger {
            v.push(format!("LINGER{s}"));
        }
        if self.bind_no_port {
            v.push("BIND_NO_PORT".to_string());
        }
        match self.v6only {
            V6Only::System => {}
            V6Only::On => v.push("V6ONLY".to_string()),
            V6Only::Off => v.push("V6ONLY=0".to_string()),
        }
        if v.is_empty() {
            "none".into()
        } else {
            v.join("+")
        }
    }
}
