//! Ports for cells in the host fallback (`--host-netns`, or no namespaces).
//!
//! There every cell shares one port space: a fixed client port picked from
//! the ephemeral range (bind to port 0) can be taken a moment later by
//! another cell's kernel-chosen connect(), and a rebind then fails with
//! EADDRINUSE although nothing of the cell holds the port, a false
//! mismatch. So each run of a cell gets a server port and a client port of
//! its own, outside `ip_local_port_range` (no kernel-chosen port lands
//! there), never handed to another run of this process, and free of any
//! socket (TIME_WAIT of an earlier run included) when handed out.

use crate::error::{Error, Result};
use crate::experiment::{ClientPort, Experiment};
use crate::socket::Family;
use crate::sysctl::NetSysctls;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

/// The next candidate, counted from the start of the band; shared by every
/// cell thread so no two runs get the same ports.
static NEXT: AtomicU32 = AtomicU32::new(0);
/// How many candidates one assignment tries before giving up.
const TRIES: u32 = 2_000;
/// The lowest port used: unprivileged.
const LOWEST: u16 = 1024;

/// The band of ports outside `ip_local_port_range`: below it if at least
/// 256 ports fit there, else above it. `None` if neither side has room.
fn band(low: u16, high: u16) -> Option<(u16, u16)> {
    if low.saturating_sub(LOWEST) >= 256 {
        Some((LOWEST, low - 1))
    } else if u16::MAX - high >= 256 {
        Some((high + 1, u16::MAX))
    } else {
        None
    }
}

/// True if nothing holds `port` on `family`'s loopback: a bind() without
/// SO_REUSEADDR fails on any socket using the port, TIME_WAIT included
/// (`inet_csk_bind_conflict`). The probe never connects, so it leaves
/// nothing behind.
fn is_free(family: Family, port: u16) -> bool {
    let domain = match family {
        Family::V4 => socket2::Domain::IPV4,
        Family::V6 => socket2::Domain::IPV6,
    };
    socket2::Socket::new(domain, socket2::Type::STREAM, None)
        .and_then(|s| s.bind(&SocketAddr::new(family.loopback(), port).into()))
        .is_ok()
}

/// `x` with ports of its own: the server port, and the client port if the
/// cell binds a fixed one.
pub(crate) fn assign(x: &Experiment) -> Result<Experiment> {
    let range = NetSysctls::read()?.port_range;
    let (first, last) = band(range.low, range.high).ok_or_else(|| {
        Error::Invalid(format!(
            "ip_local_port_range {}-{} leaves no room for the host fallback's fixed ports",
            range.low, range.high
        ))
    })?;
    let width = u32::from(last - first) + 1;
    let fixed = matches!(x.client_port, ClientPort::Fixed(_));
    let take = || -> Option<u16> {
        (0..TRIES).find_map(|_| {
            let k = NEXT.fetch_add(1, Ordering::SeqCst) % width;
            let port = first + k as u16;
            is_free(x.family, port).then_some(port)
        })
    };
    let none_free = || {
        Error::Invalid(format!(
            "no free port between {first} and {last} for the host fallback"
        ))
    };
    let mut y = x.clone();
    y.server_port = take().ok_or_else(none_free)?;
    if fixed {
        y.client_port = ClientPort::Fixed(take().ok_or_else(none_free)?);
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_band_avoids_the_ephemeral_range() {
        assert_eq!(band(32768, 60999), Some((1024, 32767)));
        assert_eq!(band(1024, 60999), Some((61000, 65535)));
        assert_eq!(band(1100, 65500), None);
    }
}
