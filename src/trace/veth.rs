//! Three fresh network namespaces in a row, for the delayed-duplicate case:
//! client ─veth─ box ─veth─ server. The box namespace routes nothing itself
//! (no addresses, no forwarding); the delay box thread copies frames
//! between its two interfaces in user space.
//!
//! The namespaces are made with unshare(CLONE_NEWNET) on the calling
//! thread and kept alive by open descriptors only (no names under
//! /run/netns), so they vanish with the process on every exit path, Ctrl-C
//! and panics included. The veth pairs, links and addresses are made over
//! rtnetlink ([`crate::sys::rtnl`]), the peer end directly in its namespace
//! through IFLA_NET_NS_FD, the descriptor held: no iproute2 at run time.

use crate::error::{Error, NetnsError, Result};
use crate::netns::{self, Sysctl};
use crate::outcome::SysError;
use crate::sys::ns;
use crate::sys::rtnl::{Rtnl, RtnlError};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};

/// The client's address (TEST-NET-1, RFC 5737, only inside the namespaces).
pub(crate) const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The server's address.
pub(crate) const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The client's veth end (in the client namespace).
const CLIENT_IF: &str = "c0";
/// The box's end toward the client.
pub(crate) const BOX_CLIENT_IF: &str = "m0";
/// The box's end toward the server.
pub(crate) const BOX_SERVER_IF: &str = "m1";
/// The server's veth end, where the capture runs.
pub(crate) const SERVER_IF: &str = "s0";

/// Which namespace of the three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Holds the client socket.
    Client,
    /// Holds the delay box.
    Box,
    /// Holds the listener and the capture.
    Server,
}

/// The three namespaces, alive while this value is.
pub(crate) struct Topology {
    client: OwnedFd,
    middle: OwnedFd,
    server: OwnedFd,
}

fn rtnl_err(e: RtnlError) -> Error {
    Error::Netns(NetnsError::Rtnl {
        what: e.what,
        err: e.errno.map(SysError::from_code),
        detail: e.detail,
    })
}

/// The frames the box relays must carry finished checksums.
fn checksum_off(dev: &str) -> Result<()> {
    crate::sys::packet::tx_checksum_off(dev).map_err(|err| {
        Error::Netns(NetnsError::ChecksumOffload {
            dev: dev.into(),
            err,
        })
    })
}

/// Make a fresh namespace, enter it, bring `lo` up, apply `sysctls`.
fn fresh(sysctls: &[Sysctl]) -> Result<OwnedFd> {
    netns::unshare_net()?;
    netns::loopback_up()?;
    for s in sysctls {
        crate::sysctl::write(s)?;
    }
    ns::open_own_net().map_err(|e| Error::sys("open the new namespace", &e))
}

impl Topology {
    /// Build the three namespaces and the two veth pairs, addresses up.
    /// `end_sysctls` go to the client and server namespaces. Leaves the
    /// calling thread in the server namespace; call it on a thread of its
    /// own (it moves between namespaces).
    pub(crate) fn build(end_sysctls: &[Sysctl]) -> Result<Self> {
        // The box must not answer or route: no addresses, and IPv6 off so
        // its own stack stays quiet.
        let middle = fresh(&[Sysctl::new("net.ipv6.conf.all.disable_ipv6", "1")])?;
        let mut quiet = end_sysctls.to_vec();
        quiet.push(Sysctl::new("net.ipv6.conf.all.disable_ipv6", "1"));
        quiet.push(Sysctl::new("net.ipv6.conf.default.disable_ipv6", "1"));
        let client = fresh(&quiet)?;
        let server = fresh(&quiet)?;
        let t = Topology {
            client,
            middle,
            server,
        };
        t.enter(Place::Box)?;
        let mut nl = Rtnl::open().map_err(rtnl_err)?;
        nl.add_veth(BOX_CLIENT_IF, CLIENT_IF, Some(t.client.as_fd()))
            .map_err(rtnl_err)?;
        nl.add_veth(BOX_SERVER_IF, SERVER_IF, Some(t.server.as_fd()))
            .map_err(rtnl_err)?;
        for dev in [BOX_CLIENT_IF, BOX_SERVER_IF] {
            nl.set_up(dev, true).map_err(rtnl_err)?;
        }
        for (place, dev, ip) in [
            (Place::Client, CLIENT_IF, CLIENT_IP),
            (Place::Server, SERVER_IF, SERVER_IP),
        ] {
            t.enter(place)?;
            let mut nl = Rtnl::open().map_err(rtnl_err)?;
            nl.add_addr(dev, ip, 24).map_err(rtnl_err)?;
            nl.set_up(dev, false).map_err(rtnl_err)?;
            checksum_off(dev)?;
        }
        Ok(t)
    }

    /// Move the calling thread into one of the three namespaces: sockets
    /// and threads it makes afterwards belong there.
    pub(crate) fn enter(&self, p: Place) -> Result<()> {
        let fd = match p {
            Place::Client => &self.client,
            Place::Box => &self.middle,
            Place::Server => &self.server,
        };
        ns::enter_net(fd).map_err(|e| {
            Error::Netns(NetnsError::Setns {
                what: "setns",
                err: SysError::from_code(e as i32),
            })
        })
    }
}

/// Can this machine make veth pairs? Tried in a throwaway namespace on a
/// throwaway thread; `Err` says why not.
pub(crate) fn probe() -> std::result::Result<(), String> {
    std::thread::spawn(|| -> std::result::Result<(), String> {
        fresh(&[]).map_err(|e| e.to_string())?;
        let mut nl = Rtnl::open().map_err(|e| e.to_string())?;
        nl.add_veth("p0", "p1", None).map_err(|e| match e.errno {
            // rtnl_newlink(): no "veth" link ops and request_module() found none.
            Some(libc::EOPNOTSUPP) => "this kernel has no veth driver (CONFIG_VETH)".to_string(),
            _ => e.to_string(),
        })
    })
    .join()
    .unwrap_or_else(|_| Err("probe thread panicked".into()))
}

/// The server's and the client's socket addresses.
pub(crate) fn addrs(client_port: u16, server_port: u16) -> (SocketAddr, SocketAddr) {
    (
        (CLIENT_IP, client_port).into(),
        (SERVER_IP, server_port).into(),
    )
}
