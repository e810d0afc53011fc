//! Which addresses of its port a socket holds, and whether two sockets'
//! holdings meet — the address half of every bind() check.
//!
//! Read from the kernel source (6.x, checked on 6.18 by `pairs` and
//! `selfcheck`): a wildcard socket (`::`, `0.0.0.0`) is checked against
//! every owner of the port by `inet_csk_bind_conflict()` with
//! `inet_rcv_saddr_equal(sk, sk2, true)`; a specific one against the owners
//! of its own address (`inet_bhash2_conflict()`) and the wildcard owners
//! (`inet_bhash2_addr_any_conflict()` → `inet_bind2_bucket_match_addr_any()`).
//! `ipv6_only_sock()` keeps a V6ONLY `::` out of the IPv4 space, and
//! `::ffff:a.b.c.d` is IPv4 for all of it (`__inet6_bind()` stores the
//! IPv4 address in `inet_rcv_saddr`). Both paths come to one relation: each
//! socket claims part of the IPv4 and of the IPv6 address space
//! ([`Claims`]) and two sockets overlap when a claim meets.

use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `LOOPBACK4_IPV6` (include/net/ipv6.h): the IPv4 address
/// `__inet6_bind()` stores in `inet_rcv_saddr` for a socket on a specific
/// (not v4-mapped) IPv6 address.
pub const LOOPBACK4_IPV6: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// A share of one family's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "addr")]
pub enum Claim {
    /// Nothing of this family.
    None,
    /// The whole family (a wildcard).
    Any,
    /// One address.
    Addr(IpAddr),
}

impl Claim {
    /// Do two claims on the same family meet?
    pub fn meets(self, other: Claim) -> bool {
        match (self, other) {
            (Claim::None, _) | (_, Claim::None) => false,
            (Claim::Any, _) | (_, Claim::Any) => true,
            (Claim::Addr(a), Claim::Addr(b)) => a == b,
        }
    }
}

/// What a socket holds of its port: part of the IPv4 space and part of
/// the IPv6 space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Claims {
    /// Its IPv4 share (`inet_rcv_saddr`, seen by `ipv4_rcv_saddr_equal()`).
    pub v4: Claim,
    /// Its IPv6 share (`sk_v6_rcv_saddr`).
    pub v6: Claim,
}

/// An IPv6 socket's bind to `::ffff:0.0.0.0`, the v4-mapped IPv4 wildcard
/// (it holds every IPv4 address, like `0.0.0.0`, but bhash2 keys it under
/// its own address: see [`super::version::V4MAPPED_ANY_IN_BHASH2`]).
pub fn is_v4_mapped_any(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.to_ipv4_mapped().is_some_and(|m| m.is_unspecified()))
}

/// An IPv6 socket's bind to a v4-mapped address other than the wildcard
/// (`::ffff:127.0.0.1`).
pub fn is_v4_mapped_specific(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.to_ipv4_mapped().is_some_and(|m| !m.is_unspecified()))
}

impl Claims {
    /// What a socket bound to `ip` holds, with its IPV6_V6ONLY as the kernel
    /// has it after bind() ([`v6only_after_bind`]).
    ///
    /// - `0.0.0.0`: every IPv4 address; `a.b.c.d`: that one.
    /// - `::ffff:a.b.c.d` (any socket): the IPv4 address `a.b.c.d`
    ///   (`::ffff:0.0.0.0` is the IPv4 wildcard).
    /// - `::` V6ONLY: every IPv6 address; `::` dual-stack: both families.
    /// - a specific IPv6 address: that address, plus `LOOPBACK4_IPV6` in
    ///   the IPv4 space when the socket is not V6ONLY — which only a
    ///   dual-stack `::` that connected can be (`tcp_v6_connect()` keeps
    ///   `sk_ipv6only` as bind() left it).
    pub fn of(ip: IpAddr, v6only: bool) -> Claims {
        let v4 = |a: Ipv4Addr| {
            if a.is_unspecified() {
                Claim::Any
            } else {
                Claim::Addr(a.into())
            }
        };
        match ip {
            IpAddr::V4(a) => Claims {
                v4: v4(a),
                v6: Claim::None,
            },
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => Claims {
                    v4: v4(m),
                    v6: Claim::None,
                },
                None if a.is_unspecified() => Claims {
                    v4: if v6only { Claim::None } else { Claim::Any },
                    v6: Claim::Any,
                },
                None => Claims {
                    v4: if v6only {
                        Claim::None
                    } else {
                        Claim::Addr(LOOPBACK4_IPV6.into())
                    },
                    v6: Claim::Addr(a.into()),
                },
            },
        }
    }

    /// Do two sockets' holdings meet (`inet_rcv_saddr_equal(.., true)`,
    /// `inet_bind2_bucket_match_addr_any()`, `ipv6_only_sock()`)?
    pub fn overlap(self, other: Claims) -> bool {
        self.v4.meets(other.v4) || self.v6.meets(other.v6)
    }

    /// Does this socket hold IPv4 addresses through an IPv6 wildcard (a
    /// dual-stack `::`)?
    pub fn dual_stack_any(self) -> bool {
        self.v4 == Claim::Any && self.v6 == Claim::Any
    }
}

/// IPV6_V6ONLY as the kernel holds it after bind() to `ip`: the socket's
/// option (`chosen`, itself defaulting to `net.ipv6.bindv6only` at
/// socket()), forced on by a specific non-mapped IPv6 address
/// (`__inet6_bind()`: `if (addr_type != IPV6_ADDR_MAPPED) sk->sk_ipv6only
/// = 1` for any address but `::`). Always false for IPv4.
pub fn v6only_after_bind(ip: IpAddr, chosen: bool) -> bool {
    match ip {
        IpAddr::V4(_) => false,
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => chosen,
        IpAddr::V6(a) if a == Ipv6Addr::UNSPECIFIED => chosen,
        IpAddr::V6(_) => true,
    }
}

/// Is `ip` a loopback address (`ipv4_is_loopback()`, `ipv6_addr_loopback()`,
/// `ipv6_addr_v4mapped_loopback()`)?
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    }
}
