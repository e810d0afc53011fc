//! The factors a matrix can vary: each descriptor carries its name, its
//! help text and the parser of its values; [`Selection`] holds the values
//! chosen with `--factor NAME=V1,V2`.

use crate::error::{Error, Result};
use crate::experiment::{ClientPort, Close, NextStep, When};
use crate::socket::Family;
use serde::{Deserialize, Serialize};

/// One factor the matrix can vary.
#[derive(Debug, Clone, Copy)]
pub struct Factor {
    /// The name used with `--factor`.
    pub name: &'static str,
    /// The values it accepts, as shown to the user.
    pub values: &'static str,
    /// Which values run when it is not named.
    pub default: &'static str,
    /// What it changes.
    pub what: &'static str,
    /// Parses the values and stores them in the selection.
    set: fn(&Factor, &[&str], &mut Selection) -> Result<()>,
}

impl Factor {
    /// Parse every value with `parse`; the first unknown one is an error
    /// that lists the valid values, and so is a value given twice, also
    /// in another spelling (`on,1`): it would run every cell twice.
    fn each<T: PartialEq>(&self, vs: &[&str], parse: fn(&str) -> Option<T>) -> Result<Vec<T>> {
        let mut out: Vec<T> = Vec::with_capacity(vs.len());
        for (i, v) in vs.iter().enumerate() {
            let t = parse(v).ok_or_else(|| {
                Error::Usage(format!(
                    "factor '{}': unknown value '{}'; valid values: {}",
                    self.name,
                    crate::text::echo(v),
                    self.values
                ))
            })?;
            if let Some(j) = out.iter().position(|o| *o == t) {
                let same = if vs[j] == *v {
                    format!("'{}' is given twice", crate::text::echo(v))
                } else {
                    format!(
                        "'{}' and '{}' are the same value",
                        crate::text::echo(vs[j]),
                        crate::text::echo(v)
                    )
                };
                return Err(Error::Usage(format!(
                    "factor '{}': {same} (values {} and {}); give each value once",
                    self.name,
                    j + 1,
                    i + 1
                )));
            }
            out.push(t);
        }
        Ok(out)
    }
}

/// Every factor, in the order `--list-factors` shows them.
pub const FACTORS: &[Factor] = &[
    Factor {
        name: "close",
        values: "client, server, client-rst, server-rst",
        default: "all",
        what: "who closes first, with FIN or RST (SO_LINGER 0)",
        set: |f, vs, s| {
            s.close = Some(f.each(vs, parse_close)?);
            Ok(())
        },
    },
    Factor {
        name: "when",
        values: "at-once, after-ack, after-peer, after-<N>ms (N ≤ 600000)",
        default: "at-once, after-ack (FIN closes), after-peer",
        what: "right after close() (closer FIN_WAIT1), after the FIN's ACK (FIN_WAIT2/CLOSE_WAIT), or after both closed and settled (+N ms)",
        set: |f, vs, s| {
            s.when = Some(f.each(vs, parse_when)?);
            Ok(())
        },
    },
    Factor {
        name: "next",
        values: "reconnect, rebind, restart-listener",
        default: "all",
        what: "the step whose outcome is observed",
        set: |f, vs, s| {
            s.next = Some(f.each(vs, parse_next)?);
            Ok(())
        },
    },
    Factor {
        name: "old-client-reuseaddr",
        values: "off, on",
        default: "varied when the client side is touched",
        what: "SO_REUSEADDR on the first client socket",
        set: |f, vs, s| {
            s.old_client_reuseaddr = Some(f.each(vs, parse_onoff)?);
            Ok(())
        },
    },
    Factor {
        name: "old-listener-reuseaddr",
        values: "off, on",
        default: "varied for restart-listener",
        what: "SO_REUSEADDR on the first listener (accepted sockets inherit it)",
        set: |f, vs, s| {
            s.old_listener_reuseaddr = Some(f.each(vs, parse_onoff)?);
            Ok(())
        },
    },
    Factor {
        name: "new-reuseaddr",
        values: "off, on",
        default: "off, on",
        what: "SO_REUSEADDR on the socket the next step creates",
        set: |f, vs, s| {
            s.new_reuseaddr = Some(f.each(vs, parse_onoff)?);
            Ok(())
        },
    },
    Factor {
        name: "old-client-reuseport",
        values: "off, on",
        default: "on together with new-reuseport, client side",
        what: "SO_REUSEPORT on the first client socket",
        set: |f, vs, s| {
            s.old_client_reuseport = Some(f.each(vs, parse_onoff)?);
            Ok(())
        },
    },
    Factor {
        name: "old-listener-reuseport",
        values: "off, on",
        default: "on together with new-reuseport, restart-listener",
        what: "SO_REUSEPORT on the first listener",
        set: |f, vs, s| {
            s.old_listener_reuseport = Some(f.each(vs, parse_onoff)?);
            Ok(())
        },
    },
    Factor {
        name: "new-reuseport",
        values: "off, on",
        default: "see above",
        what: "SO_REUSEPORT on the new socket",
        set: |f, vs, s| {
            s.new_reuseport = Some(f.each(vs, parse_onoff)?);
            Ok(())
        },
    },
    Factor {
        name: "client-port",
        values: "fixed, ephemeral, bind-no-port",
        default: "all (fixed for restart-listener)",
        what: "bind(port) / no bind / bind(addr,0)+IP_BIND_ADDRESS_NO_PORT",
        set: |f, vs, s| {
            s.client_port = Some(f.each(vs, parse_client_port)?);
            Ok(())
        },
    },
    Factor {
        name: "family",
        values: "ipv4, ipv6",
        default: "ipv4, ipv6",
        what: "127.0.0.1 or ::1",
        set: |f, vs, s| {
            s.family = Some(f.each(vs, parse_family)?);
            Ok(())
        },
    },
    Factor {
        name: "tcp-timestamps",
        values: "0, 1",
        default: "0, 1 (reconnect); host (others)",
        what: "net.ipv4.tcp_timestamps in the cell's namespace",
        set: |f, vs, s| {
            s.timestamps = Some(f.each(vs, |v| v.parse::<u8>().ok().filter(|n| *n <= 1))?);
            Ok(())
        },
    },
    Factor {
        name: "tcp-tw-reuse",
        values: "0, 1, 2",
        default: "0, 1, 2 (reconnect); host (others)",
        what: "net.ipv4.tcp_tw_reuse",
        set: |f, vs, s| {
            s.tw_reuse = Some(f.each(vs, |v| v.parse::<u8>().ok().filter(|n| *n <= 2))?);
            Ok(())
        },
    },
    Factor {
        name: "tcp-tw-reuse-delay",
        values: "1..60000 (ms)",
        default: "host",
        what: "net.ipv4.tcp_tw_reuse_delay (Linux 6.14+)",
        set: |f, vs, s| {
            s.tw_reuse_delay = Some(f.each(vs, |v| {
                v.parse::<u32>().ok().filter(|n| (1..=60_000).contains(n))
            })?);
            Ok(())
        },
    },
    Factor {
        name: "port-range",
        values: "host, one, LOW-HIGH",
        default: "host",
        what: "ip_local_port_range; 'one' = exactly the port the first connection uses",
        set: |f, vs, s| {
            s.port_range = Some(f.each(vs, parse_range)?);
            Ok(())
        },
    },
    Factor {
        name: "tcp-max-tw-buckets",
        values: "N",
        default: "host",
        what: "net.ipv4.tcp_max_tw_buckets (0: no TIME_WAIT at all)",
        set: |f, vs, s| {
            s.max_tw_buckets = Some(f.each(vs, |v| v.parse::<u32>().ok())?);
            Ok(())
        },
    },
];

/// `--list-factors` text, laid out for the terminal
/// (`crate::layout::width`).
pub fn list_factors() -> String {
    use crate::layout::{Column, Grid};
    let mut t = Grid::new(vec![
        Column::keep("factor"),
        Column::keep("values"),
        Column::keep("default"),
        Column::keep("what"),
    ]);
    for f in FACTORS {
        t.row(vec![
            f.name.into(),
            f.values.into(),
            f.default.into(),
            f.what.into(),
        ]);
    }
    t.render(crate::layout::width(), false)
}

fn parse_close(v: &str) -> Option<Close> {
    v.parse().ok()
}

fn parse_next(v: &str) -> Option<NextStep> {
    NextStep::ALL.iter().copied().find(|c| c.name() == v)
}

/// An on/off factor value.
fn parse_onoff(v: &str) -> Option<bool> {
    match v {
        "on" | "1" | "true" => Some(true),
        "off" | "0" | "false" => Some(false),
        _ => None,
    }
}

/// The longest `after-<N>ms` wait: ten minutes, far beyond any TIME_WAIT
/// (60 s on Linux, 240 s by default on Windows).
pub const MAX_AFTER_MS: u64 = 600_000;

fn parse_when(v: &str) -> Option<When> {
    match v {
        "at-once" => Some(When::AtOnce),
        "after-ack" => Some(When::AfterAck),
        "after-peer" => Some(When::AfterPeer),
        _ => v
            .strip_prefix("after-")
            .and_then(|r| r.strip_suffix("ms"))
            .and_then(|n| n.parse().ok())
            .filter(|n| *n <= MAX_AFTER_MS)
            .map(When::AfterMs),
    }
}

/// The client-port factor: `fixed` is [`ClientPort::Fixed`]`(0)`, a fixed
/// port chosen when the cell is built (the story's port in a namespace of
/// its own, a free one picked at run time in the host's).
fn parse_client_port(v: &str) -> Option<ClientPort> {
    match v {
        "fixed" => Some(ClientPort::Fixed(0)),
        "ephemeral" => Some(ClientPort::Ephemeral),
        "bind-no-port" => Some(ClientPort::BindNoPort),
        _ => None,
    }
}

fn parse_family(v: &str) -> Option<Family> {
    match v {
        "ipv4" | "v4" | "4" => Some(Family::V4),
        "ipv6" | "v6" | "6" => Some(Family::V6),
        _ => None,
    }
}

fn parse_range(v: &str) -> Option<RangeChoice> {
    match v {
        "host" => Some(RangeChoice::Host),
        "one" => Some(RangeChoice::One),
        _ => {
            let (a, b) = v.split_once('-')?;
            let (a, b) = (a.parse().ok()?, b.parse().ok()?);
            (1024 <= a && a <= b).then_some(RangeChoice::Span(a, b))
        }
    }
}

/// The `ip_local_port_range` of a cell. In JSON as the user spells it
/// (`"host"`, `"one"`, `"1024-1030"`), not as a Rust enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(into = "String", try_from = "String")]
pub enum RangeChoice {
    /// The host's range.
    Host,
    /// Exactly the port the first connection uses.
    One,
    /// `LOW-HIGH`, inclusive.
    Span(u16, u16),
}

impl std::fmt::Display for RangeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RangeChoice::Host => f.write_str("host"),
            RangeChoice::One => f.write_str("one"),
            RangeChoice::Span(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

impl From<RangeChoice> for String {
    fn from(r: RangeChoice) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for RangeChoice {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        parse_range(&s).ok_or_else(|| format!("not a port-range choice: {s:?}"))
    }
}

/// The parsed `--factor` choices: `None` = the factor's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// `close`.
    pub close: Option<Vec<Close>>,
    /// `when`.
    pub when: Option<Vec<When>>,
    /// `next`.
    pub next: Option<Vec<NextStep>>,
    /// `old-client-reuseaddr`.
    pub old_client_reuseaddr: Option<Vec<bool>>,
    /// `old-listener-reuseaddr`.
    pub old_listener_reuseaddr: Option<Vec<bool>>,
    /// `new-reuseaddr`.
    pub new_reuseaddr: Option<Vec<bool>>,
    /// `old-client-reuseport`.
    pub old_client_reuseport: Option<Vec<bool>>,
    /// `old-listener-reuseport`.
    pub old_listener_reuseport: Option<Vec<bool>>,
    /// `new-reuseport`.
    pub new_reuseport: Option<Vec<bool>>,
    /// `client-port`; a fixed port is `ClientPort::Fixed(0)` here (the port
    /// itself is chosen per isolation mode when the cells are built).
    pub client_port: Option<Vec<ClientPort>>,
    /// `family`.
    pub family: Option<Vec<Family>>,
    /// `tcp-timestamps`.
    pub timestamps: Option<Vec<u8>>,
    /// `tcp-tw-reuse`.
    pub tw_reuse: Option<Vec<u8>>,
    /// `tcp-tw-reuse-delay` (ms).
    pub tw_reuse_delay: Option<Vec<u32>>,
    /// `port-range`.
    pub port_range: Option<Vec<RangeChoice>>,
    /// `tcp-max-tw-buckets`.
    pub max_tw_buckets: Option<Vec<u32>>,
}

impl Selection {
    /// Parse `--factor NAME=V1,V2` arguments. Blanks around a name or a
    /// value are allowed; a control character (`client-port=fixed\n`
    /// from a script), an empty value (`reconnect,,rebind`), a value given
    /// twice or a factor named twice is refused: each would run other
    /// cells than the ones written.
    pub fn parse(args: &[String]) -> Result<Self> {
        use crate::text::echo;
        let mut s = Selection::default();
        let mut named: Vec<&str> = Vec::new();
        for a in args {
            if let Some(c) = a.chars().find(|c| c.is_control()) {
                return Err(Error::Usage(format!(
                    "--factor '{}': contains a control character ('{}'); write NAME=V1,V2,... (see --list-factors)",
                    echo(a),
                    echo(&c.to_string())
                )));
            }
            let Some((name, vals)) = a.split_once('=') else {
                return Err(Error::Usage(format!(
                    "--factor '{}': expected NAME=V1,V2,... (see --list-factors)",
                    echo(a)
                )));
            };
            let name = name.trim();
            let factor = FACTORS.iter().find(|f| f.name == name).ok_or_else(|| {
                Error::Usage(format!(
                    "unknown factor '{}'; valid factors: {}",
                    echo(name),
                    FACTORS
                        .iter()
                        .map(|f| f.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if named.contains(&factor.name) {
                return Err(Error::Usage(format!(
                    "factor '{name}' is named twice; give all its values in one --factor {name}=V1,V2,..."
                )));
            }
            named.push(factor.name);
            let vs: Vec<&str> = vals.split(',').map(str::trim).collect();
            if vs.iter().all(|v| v.is_empty()) {
                return Err(Error::Usage(format!(
                    "factor '{name}' has no values; valid values: {}",
                    factor.values
                )));
            }
            if let Some(i) = vs.iter().position(|v| v.is_empty()) {
                return Err(Error::Usage(format!(
                    "factor '{name}': value {} of {} is empty (two commas in a row, or one at an end); valid values: {}",
                    i + 1,
                    vs.len(),
                    factor.values
                )));
            }
            (factor.set)(factor, &vs, &mut s)?;
        }
        Ok(s)
    }

    /// True if any socket-option factor was named (then the product of the
    /// named option factors runs, see the module doc).
    pub(crate) fn any_opts(&self) -> bool {
        self.old_client_reuseaddr.is_some()
            || self.old_listener_reuseaddr.is_some()
            || self.new_reuseaddr.is_some()
            || self.old_client_reuseport.is_some()
            || self.old_listener_reuseport.is_some()
            || self.new_reuseport.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Selection> {
        Selection::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn factors_parse_and_reject() {
        let s = parse(&["when=at-once,after-250ms", "close=client"]).unwrap();
        assert_eq!(s.when, Some(vec![When::AtOnce, When::AfterMs(250)]));
        assert_eq!(s.close, Some(vec![Close::CLIENT]));
        let e = parse(&["colse=client"]).unwrap_err().to_string();
        assert!(
            e.contains("unknown factor 'colse'") && e.contains("close, when, next"),
            "{e}"
        );
        let e = parse(&["close=clinet"]).unwrap_err().to_string();
        assert!(
            e.contains("unknown value 'clinet'") && e.contains("client-rst"),
            "{e}"
        );
        assert!(parse(&["tcp-tw-reuse=3"]).is_err());
        assert!(parse(&["close"]).is_err());
        assert!(parse(&["close="]).is_err());
        // Blanks around names and values are fine.
        let s = parse(&[" close = client , server "]).unwrap();
        assert_eq!(s.close, Some(vec![Close::CLIENT, Close::SERVER]));
    }

    /// What would run other cells than the ones written is refused, with
    /// what is wrong named: a value twice (also spelt another way), an
    /// empty value, a control character, a factor named twice.
    #[test]
    fn duplicate_empty_and_control_values_are_refused() {
        for (args, want) in [
            (
                &["close=client,client,client"][..],
                "'client' is given twice (values 1 and 2)",
            ),
            (
                &["new-reuseaddr=on,1"][..],
                "'on' and '1' are the same value",
            ),
            (
                &["family=ipv4,v6,4"][..],
                "'ipv4' and '4' are the same value (values 1 and 3)",
            ),
            (&["when=after-0100ms,after-100ms"][..], "are the same value"),
            (&["next=reconnect,,rebind"][..], "value 2 of 3 is empty"),
            (&["next=reconnect,"][..], "value 2 of 2 is empty"),
            (&["next=,reconnect"][..], "value 1 of 2 is empty"),
            (&["next=,"][..], "has no values"),
            (
                &["client-port=fixed\n"][..],
                "contains a control character ('\\n')",
            ),
            (&["close=cli\u{1b}[2Jent"][..], "('\\u001b')"),
            (
                &["close=client", "close=server"][..],
                "factor 'close' is named twice",
            ),
            (
                &["close=client", " close =server"][..],
                "factor 'close' is named twice",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{args:?}: {e:?}");
            let e = e.to_string();
            assert!(e.contains(want), "{args:?}: want {want:?} in {e}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
    }

    /// Every descriptor stores into its own field: naming one factor sets
    /// exactly one field of the selection.
    #[test]
    fn each_factor_sets_its_own_field() {
        let one_value = |f: &Factor| match f.name {
            "when" => "at-once",
            "close" => "server",
            "next" => "rebind",
            "client-port" => "bind-no-port",
            "family" => "ipv6",
            "tcp-tw-reuse-delay" => "5",
            "port-range" => "2000-3000",
            _ => "1",
        };
        let mut seen = Vec::new();
        for f in FACTORS {
            let s = parse(&[&format!("{}={}", f.name, one_value(f))]).unwrap();
            assert_ne!(s, Selection::default(), "{}", f.name);
            assert!(!seen.contains(&s), "{} sets another factor's field", f.name);
            seen.push(s);
        }
        let s = parse(&["client-port=fixed,ephemeral", "port-range=one,1024-1030"]).unwrap();
        assert_eq!(
            s.client_port,
            Some(vec![ClientPort::Fixed(0), ClientPort::Ephemeral])
        );
        assert_eq!(
            s.port_range,
            Some(vec![RangeChoice::One, RangeChoice::Span(1024, 1030)])
        );
        assert!(parse(&["port-range=80-90"]).is_err());
    }
}
