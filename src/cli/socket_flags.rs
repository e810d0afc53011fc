//! The socket flags, declared once: [`SocketFlags`] (`--reuseaddr`,
//! `--reuseport`, `--v6only`) is flattened into `client`, `server` and `why
//! bind`; [`PeerSocketFlags`] adds what the story's two programs also take
//! (`--linger`, and on Windows `--exclusiveaddruse`). [`SocketFlags::opts`]
//! is the one mapping to the library's [`SocketOpts`].

use crate::peer::MAX_LINGER;
use crate::socket::{SocketOpts, V6Only};

/// `--v6only`, as clap spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum V6OnlyArg {
    /// Follow net.ipv6.bindv6only (dual-stack on a default Linux).
    System,
    /// IPV6_V6ONLY = 1: an IPv6 socket never takes IPv4 traffic.
    On,
    /// IPV6_V6ONLY = 0: `[::]` also covers `0.0.0.0` (dual-stack).
    Off,
}

impl From<V6OnlyArg> for V6Only {
    fn from(v: V6OnlyArg) -> Self {
        match v {
            V6OnlyArg::System => V6Only::System,
            V6OnlyArg::On => V6Only::On,
            V6OnlyArg::Off => V6Only::Off,
        }
    }
}

/// The socket options of every command that makes a socket and binds it.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketFlags {
    /// Set SO_REUSEADDR before bind() (a listener's accepted sockets
    /// inherit it). On Linux it lets bind() share a port with TIME_WAIT
    /// sockets that also had it (without it, restarting a server while its
    /// old connections sit in TIME_WAIT fails with EADDRINUSE); connect()
    /// is a separate check.
    #[arg(long)]
    pub reuseaddr: bool,
    /// Set SO_REUSEPORT before bind() (Linux, BSD, macOS: Windows has no
    /// SO_REUSEPORT and refuses this flag).
    #[arg(long)]
    pub reuseport: bool,
    /// IPV6_V6ONLY for an IPv6 address: `system` follows
    /// net.ipv6.bindv6only (dual-stack by default: `[::]` then also holds
    /// `0.0.0.0` of the port), `on` keeps IPv4 out, `off` forces dual-stack.
    #[arg(long, value_enum, default_value_t = V6OnlyArg::System)]
    pub v6only: V6OnlyArg,
}

impl SocketFlags {
    /// The library's options for these flags and `linger` (the flags
    /// without one: `None`).
    pub fn opts(&self, linger: Option<u32>) -> SocketOpts {
        SocketOpts {
            reuseaddr: self.reuseaddr,
            reuseport: self.reuseport,
            linger,
            bind_no_port: false,
            v6only: self.v6only.into(),
        }
    }
}

/// The socket flags of `server` and `client`: [`SocketFlags`], SO_LINGER,
/// and SO_EXCLUSIVEADDRUSE on Windows.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerSocketFlags {
    #[command(flatten)]
    pub socket: SocketFlags,
    /// Set SO_EXCLUSIVEADDRUSE before bind(): no other socket may bind the
    /// same address and port, even with SO_REUSEADDR (Windows only).
    #[cfg(windows)]
    #[arg(long)]
    pub exclusiveaddruse: bool,
    /// SO_LINGER in seconds (at most 3600; the server sets it on accepted
    /// sockets); 0 closes with RST (no TIME_WAIT).
    #[arg(long, value_name = "SECS", value_parser = linger_parser)]
    pub linger: Option<u32>,
}

impl PeerSocketFlags {
    /// The options and SO_EXCLUSIVEADDRUSE, or the usage error for
    /// `--reuseport` where the system has none.
    pub fn resolve(&self) -> anyhow::Result<(SocketOpts, bool)> {
        super::refuse_reuseport_here(self.socket.reuseport)?;
        // The flag exists on Windows only.
        #[cfg(windows)]
        let exclusive_addr_use = self.exclusiveaddruse;
        #[cfg(not(windows))]
        let exclusive_addr_use = false;
        Ok((self.socket.opts(self.linger), exclusive_addr_use))
    }
}

/// A clap value parser for `--linger`: whole seconds up to
/// [`MAX_LINGER`].
pub fn linger_parser(s: &str) -> Result<u32, String> {
    let why = || {
        format!(
            "--linger must be a whole number of seconds from 0 to {}",
            MAX_LINGER.as_secs()
        )
    };
    let secs: u32 = s.trim().parse().map_err(|_| why())?;
    if u64::from(secs) > MAX_LINGER.as_secs() {
        return Err(why());
    }
    Ok(secs)
}
