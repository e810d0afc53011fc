//! The network namespace's `net.*` sysctls: the one place that reads and
//! writes them, and [`NetSysctls`], their typed values.
//!
//! Files under /proc/sys/net resolve against the network namespace of the
//! thread that opens them (`net_ctl_header_lookup` → `current->nsproxy`), so
//! a thread that entered a cell's namespace reads and writes that
//! namespace's values, never the host's.

use crate::error::{Error, Result, SysctlError};
use serde::{Deserialize, Serialize};

/// `net.ipv4.tcp_timestamps`.
pub const TIMESTAMPS: &str = "net.ipv4.tcp_timestamps";
/// `net.ipv4.tcp_tw_reuse`.
pub const TW_REUSE: &str = "net.ipv4.tcp_tw_reuse";
/// `net.ipv4.tcp_tw_reuse_delay` (ms; Linux 6.14+).
pub const TW_REUSE_DELAY: &str = "net.ipv4.tcp_tw_reuse_delay";
/// `net.ipv4.ip_local_port_range`.
pub const PORT_RANGE: &str = "net.ipv4.ip_local_port_range";
/// `net.ipv4.ip_local_reserved_ports`.
pub const RESERVED_PORTS: &str = "net.ipv4.ip_local_reserved_ports";
/// `net.ipv4.tcp_max_tw_buckets`.
pub const MAX_TW_BUCKETS: &str = "net.ipv4.tcp_max_tw_buckets";
/// `net.ipv4.tcp_fin_timeout` (s).
pub const FIN_TIMEOUT: &str = "net.ipv4.tcp_fin_timeout";
/// `net.ipv4.tcp_rfc1337`.
pub const RFC1337: &str = "net.ipv4.tcp_rfc1337";
/// `net.ipv6.bindv6only`.
pub const BINDV6ONLY: &str = "net.ipv6.bindv6only";
/// `net.ipv4.ip_unprivileged_port_start`: ports below it need
/// CAP_NET_BIND_SERVICE (`inet_port_requires_bind_service()`).
pub const UNPRIVILEGED_PORT_START: &str = "net.ipv4.ip_unprivileged_port_start";
/// `net.ipv4.ip_autobind_reuse`: bind(ip, 0) may share a port of an
/// exhausted range (`inet_csk_find_open_port()`, relax = true).
pub const AUTOBIND_REUSE: &str = "net.ipv4.ip_autobind_reuse";

/// The sysctls that decide address reuse, in the order reports list them.
pub const REUSE_SYSCTLS: [&str; 6] = [
    TIMESTAMPS,
    TW_REUSE,
    TW_REUSE_DELAY,
    PORT_RANGE,
    MAX_TW_BUCKETS,
    FIN_TIMEOUT,
];

/// One `net.*` sysctl setting, e.g. `net.ipv4.tcp_timestamps = 0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Sysctl {
    /// Dotted name, `net.ipv4.tcp_timestamps`.
    pub name: String,
    /// The value as written to /proc/sys (`"32768 60999"` for a range).
    pub value: String,
}

impl Sysctl {
    /// A setting of `name` to `value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Sysctl {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// `net.ipv4.tcp_timestamps` → `/proc/sys/net/ipv4/tcp_timestamps`.
pub fn path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// Read a sysctl of the calling thread's namespace, whitespace normalised
/// (`"32768\t60999\n"` → `"32768 60999"`); `None` if this kernel has no such
/// sysctl or it cannot be read. Always `None` off Linux: under Wine the
/// path `/proc/sys/...` would reach the *host's* Linux sysctls through
/// Wine's Z: drive, which are not the system the program asks about.
pub fn read(name: &str) -> Option<String> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    std::fs::read_to_string(path(name))
        .ok()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Write a sysctl of the calling thread's namespace.
pub fn write(s: &Sysctl) -> Result<()> {
    let p = path(&s.name);
    if !std::path::Path::new(&p).exists() {
        return Err(Error::Sysctl {
            name: s.name.clone(),
            why: SysctlError::Missing,
        });
    }
    std::fs::write(&p, format!("{}\n", s.value)).map_err(|err| {
        let value = s.value.clone();
        Error::Sysctl {
            name: s.name.clone(),
            why: if err.kind() == std::io::ErrorKind::PermissionDenied {
                SysctlError::PermissionDenied { value, err }
            } else {
                SysctlError::Write { value, err }
            },
        }
    })
}

/// The host values of [`REUSE_SYSCTLS`], for reports (`None`: not on this
/// kernel).
pub fn reuse_sysctls() -> Vec<(String, Option<String>)> {
    REUSE_SYSCTLS
        .iter()
        .map(|n| (n.to_string(), read(n)))
        .collect()
}

/// `net.ipv4.tcp_tw_reuse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TwReuse {
    /// 0: never for kernel-chosen ports.
    Off,
    /// 1: for any address.
    On,
    /// 2 (default since 5.x): only if the TIME_WAIT's address is loopback
    /// or it is bound to `lo` (`tcp_twsk_unique`).
    LoopbackOnly,
}

impl TwReuse {
    /// Parse the sysctl's text ("0", "1", "2").
    pub fn from_sysctl(v: &str) -> Option<Self> {
        match v.trim() {
            "0" => Some(TwReuse::Off),
            "1" => Some(TwReuse::On),
            "2" => Some(TwReuse::LoopbackOnly),
            _ => None,
        }
    }
    /// The sysctl's number.
    pub fn value(self) -> u8 {
        match self {
            TwReuse::Off => 0,
            TwReuse::On => 1,
            TwReuse::LoopbackOnly => 2,
        }
    }
}

/// `net.ipv4.ip_local_port_range`, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PortRange {
    /// First port of the range.
    pub low: u16,
    /// Last port of the range (inclusive).
    pub high: u16,
}

impl PortRange {
    /// Parse the sysctl's text, "32768 60999".
    pub fn parse(v: &str) -> Option<Self> {
        let mut it = v.split_whitespace().map(|p| p.parse::<u16>());
        match (it.next(), it.next(), it.next()) {
            (Some(Ok(low)), Some(Ok(high)), None) => Some(PortRange { low, high }),
            _ => None,
        }
    }
    /// Number of ports in the range.
    pub fn len(&self) -> u32 {
        (self.high as u32 + 1).saturating_sub(self.low as u32)
    }
    /// True for a range with no ports (low > high).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True if `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.low <= port && port <= self.high
    }
    /// True if `port` is the only port the range allows.
    pub fn is_only(&self, port: u16) -> bool {
        self.low == port && self.high == port
    }
}

/// `net.ipv4.ip_local_reserved_ports`: ports connect() and bind(port 0)
/// never pick (`inet_is_local_reserved_port()`), as inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReservedPorts(pub Vec<PortRange>);

impl ReservedPorts {
    /// Parse the sysctl's text ("8080,9000-9010"; empty for none).
    pub fn parse(v: &str) -> Option<Self> {
        let mut out = Vec::new();
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
                None => {
                    let p = part.parse::<u16>().ok()?;
                    (p, p)
                }
            };
            out.push(PortRange { low: a, high: b });
        }
        Some(ReservedPorts(out))
    }
    /// True if `port` is reserved.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(port))
    }
    /// How many reserved ports lie inside `range` (overlapping entries are
    /// counted once).
    pub fn count_in(&self, range: PortRange) -> u32 {
        if range.is_empty() {
            return 0;
        }
        (range.low..=range.high)
            .filter(|p| self.contains(*p))
            .count() as u32
    }
}

/// The typed values of the sysctls twlab's rules read, from one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NetSysctls {
    /// `net.ipv4.tcp_timestamps` != 0.
    pub timestamps: bool,
    /// `net.ipv4.tcp_tw_reuse`.
    pub tw_reuse: TwReuse,
    /// `net.ipv4.tcp_tw_reuse_delay` (ms); `None` on kernels without it
    /// (before 6.14), where the delay is a hard-coded second.
    pub tw_reuse_delay_ms: Option<u32>,
    /// `net.ipv4.ip_local_port_range`.
    pub port_range: PortRange,
    /// `net.ipv4.ip_local_reserved_ports`.
    pub reserved_ports: ReservedPorts,
    /// `net.ipv4.tcp_max_tw_buckets`.
    pub max_tw_buckets: u32,
    /// `net.ipv4.tcp_fin_timeout` (s), `None` if unreadable.
    pub fin_timeout_s: Option<u32>,
    /// `net.ipv4.tcp_rfc1337` != 0, `None` if unreadable.
    pub rfc1337: Option<bool>,
    /// `net.ipv6.bindv6only` != 0, `None` without IPv6.
    pub bindv6only: Option<bool>,
    /// `net.ipv4.ip_unprivileged_port_start`, `None` if unreadable (the
    /// kernel default is 1024).
    #[serde(default)]
    pub unprivileged_port_start: Option<u16>,
    /// `net.ipv4.ip_autobind_reuse` != 0, `None` if unreadable (default 0).
    #[serde(default)]
    pub autobind_reuse: Option<bool>,
}

impl NetSysctls {
    /// Read the calling thread's network namespace.
    pub fn read() -> Result<Self> {
        Self::from_lookup(read)
    }

    /// Build from any source of sysctl text (the live namespace, or a
    /// cell's planned settings), so the parsing is the same everywhere.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let need = |name: &str| {
            get(name).ok_or_else(|| Error::Sysctl {
                name: name.into(),
                why: SysctlError::Unreadable,
            })
        };
        let bad = |name: &str, v: &str| Error::Sysctl {
            name: name.into(),
            why: SysctlError::Unexpected { value: v.into() },
        };
        let flag = |v: String| v.trim() != "0";
        let ts = need(TIMESTAMPS)?;
        let reuse = need(TW_REUSE)?;
        let range = need(PORT_RANGE)?;
        let maxtw = need(MAX_TW_BUCKETS)?;
        let reserved = get(RESERVED_PORTS).unwrap_or_default();
        Ok(NetSysctls {
            timestamps: flag(ts),
            tw_reuse: TwReuse::from_sysctl(&reuse).ok_or_else(|| bad(TW_REUSE, &reuse))?,
            tw_reuse_delay_ms: get(TW_REUSE_DELAY).and_then(|v| v.trim().parse().ok()),
            port_range: PortRange::parse(&range).ok_or_else(|| bad(PORT_RANGE, &range))?,
            reserved_ports: ReservedPorts::parse(&reserved)
                .ok_or_else(|| bad(RESERVED_PORTS, &reserved))?,
            max_tw_buckets: maxtw
                .trim()
                .parse()
                .map_err(|_| bad(MAX_TW_BUCKETS, &maxtw))?,
            fin_timeout_s: get(FIN_TIMEOUT).and_then(|v| v.trim().parse().ok()),
            rfc1337: get(RFC1337).map(flag),
            bindv6only: get(BINDV6ONLY).map(flag),
            unprivileged_port_start: get(UNPRIVILEGED_PORT_START)
                .and_then(|v| v.trim().parse::<u32>().ok())
                .map(|v| v.min(65535) as u16),
            autobind_reuse: get(AUTOBIND_REUSE).map(flag),
        })
    }

    /// A fresh network namespace's values on a current kernel (6.x), as
    /// `sysctl` shows them in one: timestamps on, `tcp_tw_reuse = 2`
    /// (loopback only), a 1 s reuse delay, ports 32768-60999, none
    /// reserved, 131,072 TIME_WAIT buckets (the host's share of a small
    /// machine; `tcp_sk_init()` sizes it from the ehash), FIN timeout 60 s,
    /// RFC 1337 off, `bindv6only = 0`, unprivileged ports from 1024,
    /// `ip_autobind_reuse = 0`. A base for a library user's "what if":
    ///
    /// ```
    /// use twlab::sysctl::{NetSysctls, PortRange};
    /// let s = NetSysctls::linux_defaults()
    ///     .with_timestamps(false)
    ///     .with_port_range(40000, 40009);
    /// assert_eq!(s.ephemeral_ports(), 10);
    /// assert!(!s.timestamps);
    /// assert_eq!(s.port_range, PortRange { low: 40000, high: 40009 });
    /// ```
    pub fn linux_defaults() -> Self {
        NetSysctls {
            timestamps: true,
            tw_reuse: TwReuse::LoopbackOnly,
            tw_reuse_delay_ms: Some(1000),
            port_range: PortRange {
                low: 32768,
                high: 60999,
            },
            reserved_ports: ReservedPorts::default(),
            max_tw_buckets: 131_072,
            fin_timeout_s: Some(60),
            rfc1337: Some(false),
            bindv6only: Some(false),
            unprivileged_port_start: Some(1024),
            autobind_reuse: Some(false),
        }
    }

    /// The same with `net.ipv4.tcp_timestamps` on or off.
    pub fn with_timestamps(self, on: bool) -> Self {
        NetSysctls {
            timestamps: on,
            ..self
        }
    }

    /// The same with `net.ipv4.tcp_tw_reuse`.
    pub fn with_tw_reuse(self, tw_reuse: TwReuse) -> Self {
        NetSysctls { tw_reuse, ..self }
    }

    /// The same with `net.ipv4.ip_local_port_range = low high`.
    pub fn with_port_range(self, low: u16, high: u16) -> Self {
        NetSysctls {
            port_range: PortRange { low, high },
            ..self
        }
    }

    /// Ports connect() can pick from: the range less the reserved ports in it.
    pub fn ephemeral_ports(&self) -> u32 {
        self.port_range.len() - self.reserved_ports.count_in(self.port_range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(path(TIMESTAMPS), "/proc/sys/net/ipv4/tcp_timestamps");
    }

    #[test]
    fn port_range_parses_and_counts() {
        let r = PortRange::parse("32768 60999").unwrap();
        assert_eq!(r.len(), 28_232);
        assert!(r.contains(32768) && r.contains(60999) && !r.contains(61000));
        assert!(PortRange::parse("1").is_none());
        assert!(PortRange::parse("1 2 3").is_none());
        assert!(PortRange::parse("x 2").is_none());
    }

    #[test]
    fn reserved_ports_parse_and_count_inside_the_range() {
        let r = ReservedPorts::parse("8080, 9000-9010,40000").unwrap();
        assert!(r.contains(8080) && r.contains(9005) && !r.contains(9011));
        let range = PortRange {
            low: 9005,
            high: 40000,
        };
        assert_eq!(r.count_in(range), 6 + 1);
        assert_eq!(ReservedPorts::parse("").unwrap(), ReservedPorts::default());
        assert!(ReservedPorts::parse("80-x").is_none());
        // Overlaps count once.
        let o = ReservedPorts::parse("10-20,15-25").unwrap();
        assert_eq!(o.count_in(PortRange { low: 0, high: 100 }), 16);
    }

    #[test]
    fn typed_values_from_a_lookup() {
        let get = |n: &str| {
            Some(
                match n {
                    TIMESTAMPS => "0",
                    TW_REUSE => "2",
                    PORT_RANGE => "1000 1099",
                    RESERVED_PORTS => "1000-1009",
                    MAX_TW_BUCKETS => "262144",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let s = NetSysctls::from_lookup(get).unwrap();
        assert!(!s.timestamps);
        assert_eq!(s.tw_reuse, TwReuse::LoopbackOnly);
        assert_eq!(s.tw_reuse_delay_ms, None);
        assert_eq!(s.ephemeral_ports(), 90);
        assert_eq!(s.bindv6only, None);
        let bad = NetSysctls::from_lookup(|n| {
            if n == TW_REUSE {
                Some("7".into())
            } else {
                get(n)
            }
        });
        assert!(bad.unwrap_err().to_string().contains("tcp_tw_reuse"));
    }
}
