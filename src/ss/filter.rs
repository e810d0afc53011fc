//! Which sockets `twlab ss` shows: state names and groups as `ss` spells
//! them, ports, address prefixes and families, parsed once into a
//! [`Filter`].

use crate::diag::{self, Query, SockEntry, StateSet, TcpState};
use crate::error::{Error, Result};
use crate::socket::Family;
use crate::text::echo;
use std::net::{IpAddr, SocketAddr};

/// The state names `ss` accepts, in its spelling, with their kernel states.
pub const STATE_NAMES: [(&str, TcpState); 11] = [
    ("established", TcpState::Established),
    ("syn-sent", TcpState::SynSent),
    ("syn-recv", TcpState::SynRecv),
    ("fin-wait-1", TcpState::FinWait1),
    ("fin-wait-2", TcpState::FinWait2),
    ("time-wait", TcpState::TimeWait),
    ("closed", TcpState::Closed),
    ("close-wait", TcpState::CloseWait),
    ("last-ack", TcpState::LastAck),
    ("listening", TcpState::Listen),
    ("closing", TcpState::Closing),
];

/// The state groups `ss` accepts (iproute2 misc/ss.c, `scan_state`).
pub const GROUP_NAMES: [&str; 5] = ["all", "connected", "synchronized", "bucket", "big"];

fn valid_states() -> String {
    let mut s: Vec<&str> = STATE_NAMES.iter().map(|(n, _)| *n).collect();
    s.extend(GROUP_NAMES);
    s.join(", ")
}

/// Parse one state name or group, as `ss state NAME` does. A set with
/// `closed` in it (`closed`, `all`, `big`) also asks for bound-only sockets
/// (`idiag_states` bit 13, TCP_BOUND_INACTIVE, what iproute2's `ss
/// --bound-inactive` requests): `inet_diag_dump_icsk()` walks the bind hash
/// for them only then, and reports them as CLOSE.
pub fn parse_state(name: &str) -> Result<StateSet> {
    parse_state_only(name).map(with_bound_only)
}

/// A set holding CLOSE asks for bound-only sockets too.
fn with_bound_only(set: StateSet) -> StateSet {
    if set.contains(TcpState::Closed) {
        set.with_bound_inactive()
    } else {
        set
    }
}

fn parse_state_only(name: &str) -> Result<StateSet> {
    let n = name.trim().to_ascii_lowercase().replace('_', "-");
    let all: Vec<TcpState> = STATE_NAMES.iter().map(|(_, s)| *s).collect();
    let except = |out: &[TcpState]| {
        StateSet::of(
            &all.iter()
                .copied()
                .filter(|s| !out.contains(s))
                .collect::<Vec<_>>(),
        )
    };
    use TcpState::*;
    let set = match n.as_str() {
        "all" => StateSet::of(&all),
        "connected" => except(&[Listen, Closed]),
        "synchronized" => except(&[Listen, Closed, SynSent]),
        "bucket" => StateSet::of(&[SynRecv, TimeWait]),
        "big" => except(&[SynRecv, TimeWait]),
        _ => match name.parse::<TcpState>() {
            Ok(s) => StateSet::of(&[s]),
            // "unknown TCP state 'timewait' (did you mean 'time-wait'?)".
            Err(e) => {
                return Err(Error::Usage(format!(
                    "{e}; valid states and groups: {}",
                    valid_states()
                )));
            }
        },
    };
    Ok(set)
}

/// Parse a list of state names and groups into one set (their union).
pub fn parse_states<S: AsRef<str>>(names: &[S]) -> Result<StateSet> {
    if names.is_empty() {
        return Ok(StateSet::all());
    }
    let mut mask = 0u32;
    for n in names {
        if n.as_ref().trim().is_empty() {
            return Err(Error::Usage(format!(
                "empty TCP state name in --state; valid states and groups: {}",
                valid_states()
            )));
        }
        mask |= parse_state(n.as_ref())?.mask();
    }
    let mut set = StateSet::none();
    for s in TcpState::ALL {
        if mask & (1 << (s as u32)) != 0 {
            set.insert(s);
        }
    }
    Ok(with_bound_only(set))
}

/// Parse a port number for --port.
pub fn parse_port_filter(s: &str) -> Result<u16> {
    let t = s.trim().trim_start_matches(':');
    match t.parse::<u32>() {
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(Error::Usage(format!(
            "invalid --port '{}': give a port number from 0 to 65535, e.g. --port 8080",
            echo(s)
        ))),
    }
}

/// Parse --family.
pub fn parse_family(s: &str) -> Result<Family> {
    match s.trim().to_ascii_lowercase().as_str() {
        "4" | "ipv4" | "inet" | "v4" => Ok(Family::V4),
        "6" | "ipv6" | "inet6" | "v6" => Ok(Family::V6),
        _ => Err(Error::Usage(format!(
            "invalid --family '{}': valid choices are 4 (IPv4) and 6 (IPv6)",
            echo(s)
        ))),
    }
}

/// An address filter: an address or prefix (or any), and an optional port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrMatch {
    /// Network address and prefix length; `None` matches any address.
    pub net: Option<(IpAddr, u8)>,
    /// `None` matches any port.
    pub port: Option<u16>,
}

impl AddrMatch {
    /// Parse `ADDR`, `ADDR:PORT`, `ADDR/LEN[:PORT]`, `[V6]`, `[V6]:PORT`,
    /// `[V6/LEN]:PORT`, bare IPv6 `::1`, or `*:PORT` / `:PORT`.
    pub fn parse(input: &str) -> Result<AddrMatch> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "malformed address filter '{}': {why}; expected ADDR, ADDR:PORT, ADDR/PREFIX[:PORT], [IPv6]:PORT or *:PORT, e.g. 127.0.0.1:8080",
                echo(input)
            ))
        };
        let s = input;
        if s.is_empty() {
            return Err(bad("empty"));
        }
        // As `parse_endpoint`: no blank or control character anywhere.
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            let c = crate::text::escape_for_terminal(&c.to_string()).into_owned();
            return Err(bad(&format!(
                "it contains a blank or control character ('{c}')"
            )));
        }
        // Split off the port.
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((h, after)) = rest.split_once(']') else {
                return Err(bad("'[' without a closing ']'"));
            };
            if after.is_empty() {
                (h, None)
            } else if let Some(p) = after.strip_prefix(':') {
                (h, Some(p))
            } else {
                return Err(bad("expected ':PORT' after ']'"));
            }
        } else if s.matches(':').count() > 1 {
            // Bare IPv6 without brackets: no port possible.
            (s, None)
        } else if let Some((h, p)) = s.rsplit_once(':') {
            (h, Some(p))
        } else {
            (s, None)
        };
        let port = match port {
            None | Some("*") => None,
            Some(p) => match p.parse::<u32>() {
                Ok(n) if n <= 65535 => Some(n as u16),
                Ok(n) => return Err(bad(&format!("port {n} is out of range 0-65535"))),
                Err(_) if p.chars().count() > 64 => return Err(bad("the port is not a number")),
                Err(_) => return Err(bad(&format!("'{}' is not a port number", echo(p)))),
            },
        };
        let net = if host.is_empty() || host == "*" {
            None
        } else {
            let (a, len) = match host.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (host, None),
            };
            let ip: IpAddr = a.parse().map_err(|_| {
                // An IP address is at most 45 characters: a longer piece
                // is not quoted again (the whole input is, cut).
                if a.chars().count() > 64 {
                    bad("the address part is not an IP address")
                } else {
                    bad(&format!("'{}' is not an IP address", echo(a)))
                }
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                None => max,
                Some(l) => match l.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(bad(&format!("prefix length '{}' is not 0-{max}", echo(l)))),
                },
            };
            Some((ip, len))
        };
        if net.is_none() && port.is_none() {
            return Err(bad("give an address, a port or both"));
        }
        Ok(AddrMatch { net, port })
    }

    /// True if `a` lies in the prefix and has the port (when given).
    pub fn matches(&self, a: &SocketAddr) -> bool {
        if let Some(p) = self.port
            && a.port() != p
        {
            return false;
        }
        match self.net {
            None => true,
            Some((net, len)) => prefix_match(net, len, a.ip()),
        }
    }
}

fn prefix_match(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    fn bits(a: &[u8], b: &[u8], len: u8) -> bool {
        let full = (len / 8) as usize;
        if a[..full] != b[..full] {
            return false;
        }
        let rem = len % 8;
        rem == 0 || {
            let mask = 0xffu8 << (8 - rem);
            a[full] & mask == b[full] & mask
        }
    }
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => bits(&n.octets(), &i.octets(), len),
        (IpAddr::V6(n), IpAddr::V6(i)) => bits(&n.octets(), &i.octets(), len),
        // An IPv4 filter matches IPv4-mapped IPv6 addresses, as the
        // kernel's bytecode does (inet_diag_bc_run: ::ffff:a.b.c.d).
        (IpAddr::V4(n), IpAddr::V6(i)) => match i.to_ipv4_mapped() {
            Some(v4) => bits(&n.octets(), &v4.octets(), len),
            None => false,
        },
        (IpAddr::V6(_), IpAddr::V4(_)) => false,
    }
}

/// All filters of one `twlab ss` call.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The families and states the kernel dumps.
    pub query: Query,
    /// Port at either end.
    pub port: Option<u16>,
    /// The local end.
    pub local: Option<AddrMatch>,
    /// The peer end.
    pub peer: Option<AddrMatch>,
}

impl Filter {
    /// The filters done here, after the kernel's state filter.
    pub fn matches(&self, e: &SockEntry) -> bool {
        if let Some(p) = self.port
            && e.local.port() != p
            && e.peer.port() != p
        {
            return false;
        }
        if let Some(m) = &self.local
            && !m.matches(&e.local)
        {
            return false;
        }
        if let Some(m) = &self.peer
            && !m.matches(&e.peer)
        {
            return false;
        }
        true
    }
}

/// Dump and filter into a vector.
pub fn collect(filter: &Filter) -> Result<Vec<SockEntry>> {
    let mut v = Vec::new();
    diag::dump_each(&filter.query, |e| {
        if filter.matches(&e) {
            v.push(e);
        }
        Ok(())
    })?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_and_groups() {
        assert_eq!(
            parse_state("time-wait").unwrap(),
            StateSet::of(&[TcpState::TimeWait])
        );
        assert_eq!(
            parse_state("TIME_WAIT").unwrap(),
            StateSet::of(&[TcpState::TimeWait])
        );
        assert_eq!(
            parse_state("listen").unwrap(),
            StateSet::of(&[TcpState::Listen])
        );
        let b = parse_state("bucket").unwrap();
        assert!(b.contains(TcpState::TimeWait) && b.contains(TcpState::SynRecv));
        assert!(b.contains(TcpState::NewSynRecv));
        assert!(!b.contains(TcpState::Established));
        let big = parse_state("big").unwrap();
        assert!(!big.contains(TcpState::TimeWait) && !big.contains(TcpState::SynRecv));
        assert!(big.contains(TcpState::Listen) && big.contains(TcpState::Established));
        let c = parse_state("connected").unwrap();
        assert!(!c.contains(TcpState::Listen) && !c.contains(TcpState::Closed));
        assert!(c.contains(TcpState::TimeWait) && c.contains(TcpState::SynSent));
        let s = parse_state("synchronized").unwrap();
        assert!(!s.contains(TcpState::SynSent) && s.contains(TcpState::Established));
        let all = parse_state("all").unwrap();
        for (_, st) in STATE_NAMES {
            assert!(all.contains(st));
        }
        let u = parse_states(&["time-wait", "fin-wait-2"]).unwrap();
        assert!(u.contains(TcpState::TimeWait) && u.contains(TcpState::FinWait2));
        assert!(!u.contains(TcpState::Established));
        assert_eq!(parse_states::<&str>(&[]).unwrap(), StateSet::all());
    }

    #[test]
    fn closed_asks_for_bound_only_sockets() {
        for names in [&["closed"][..], &["all"], &["big"], &["time-wait", "close"]] {
            let s = parse_states(names).unwrap();
            assert!(s.contains_bound_inactive(), "{names:?}");
            assert!(s.contains(TcpState::Closed), "{names:?}");
        }
        for names in [&["connected"][..], &["listening"], &["time-wait"]] {
            assert!(
                !parse_states(names).unwrap().contains_bound_inactive(),
                "{names:?}"
            );
        }
    }

    #[test]
    fn unknown_state_names_the_valid_ones() {
        let e = parse_state("timewait").unwrap_err().to_string();
        assert!(e.contains("'timewait'") && e.contains("time-wait") && e.contains("bucket"));
        assert!(!e.contains('\n'));
        assert!(parse_states(&["established", ""]).is_err());
    }

    #[test]
    fn address_filters() {
        let m = AddrMatch::parse("127.0.0.1:80").unwrap();
        assert!(m.matches(&"127.0.0.1:80".parse().unwrap()));
        assert!(!m.matches(&"127.0.0.1:81".parse().unwrap()));
        assert!(m.matches(&"[::ffff:127.0.0.1]:80".parse().unwrap()));
        let m = AddrMatch::parse("127.0.0.0/8").unwrap();
        assert!(m.matches(&"127.9.9.9:1".parse().unwrap()));
        assert!(!m.matches(&"10.0.0.1:1".parse().unwrap()));
        let m = AddrMatch::parse("[::1]:443").unwrap();
        assert!(m.matches(&"[::1]:443".parse().unwrap()));
        assert!(!m.matches(&"127.0.0.1:443".parse().unwrap()));
        let m = AddrMatch::parse("::1").unwrap();
        assert_eq!(m.port, None);
        let m = AddrMatch::parse("*:22").unwrap();
        assert_eq!(
            m,
            AddrMatch {
                net: None,
                port: Some(22)
            }
        );
        assert_eq!(AddrMatch::parse(":22").unwrap().port, Some(22));
        let m = AddrMatch::parse("[fe80::/10]:5").unwrap();
        assert!(m.matches(&"[fe80::1]:5".parse().unwrap()));
        for bad in [
            "",
            "1.2.3",
            "127.0.0.1:99999",
            "127.0.0.1:x",
            "[::1",
            "[::1]x",
            "10.0.0.0/33",
            "*",
            "host.example:80",
        ] {
            let e = AddrMatch::parse(bad);
            assert!(e.is_err(), "{bad} should be refused");
            assert!(!e.unwrap_err().to_string().contains('\n'));
        }
    }

    #[test]
    fn port_and_family() {
        assert_eq!(parse_port_filter("8080").unwrap(), 8080);
        assert_eq!(parse_port_filter(":22").unwrap(), 22);
        assert!(parse_port_filter("65536").is_err());
        assert!(parse_port_filter("http").is_err());
        assert_eq!(parse_family("4").unwrap(), Family::V4);
        assert_eq!(parse_family("6").unwrap(), Family::V6);
        let e = parse_family("5").unwrap_err().to_string();
        assert!(e.contains("4") && e.contains("6"));
    }

    #[test]
    fn port_filter_matches_either_end() {
        let f = Filter {
            port: Some(parse_port_filter("80").unwrap()),
            ..Default::default()
        };
        let mut e = SockEntry {
            family: Family::V4,
            state: TcpState::Established,
            local: "127.0.0.1:80".parse().unwrap(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            timer: None,
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode: 1,
            v6only: None,
            pid: None,
        };
        assert!(f.matches(&e));
        std::mem::swap(&mut e.local, &mut e.peer);
        assert!(f.matches(&e));
        e.peer = "127.0.0.1:81".parse().unwrap();
        assert!(!f.matches(&e));
    }
}
