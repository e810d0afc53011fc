//! What the model is told: the kernel and its namespace's sysctls
//! ([`KernelFacts`]), and one experiment at the moment of its step
//! ([`CellFacts`]).

use crate::diag::TupleView;
use crate::experiment::Experiment;
use crate::sysctl::{NetSysctls, PortRange, TwReuse};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// What the model needs to know about the kernel and the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// `net.ipv4.tcp_timestamps` != 0.
    pub timestamps: bool,
    /// `net.ipv4.tcp_tw_reuse`.
    pub tw_reuse: TwReuse,
    /// `net.ipv4.tcp_tw_reuse_delay` (ms); `None` on kernels without it
    /// (before 6.14), where the delay is a hard-coded second.
    pub tw_reuse_delay_ms: Option<u32>,
    /// `net.ipv4.ip_local_port_range`.
    pub port_range: PortRange,
    /// `net.ipv4.tcp_max_tw_buckets`.
    pub max_tw_buckets: u32,
}

impl KernelFacts {
    /// Read the calling thread's network namespace sysctls (through
    /// [`NetSysctls`], the one reader of them) and the kernel release.
    pub fn read_current() -> crate::Result<Self> {
        Ok(Self::from_sysctls(&NetSysctls::read()?))
    }

    /// Off Linux, for the Linux rule model's column (not run there): a
    /// default Linux — tcp_timestamps 1, tcp_tw_reuse 2 (loopback only),
    /// tcp_tw_reuse_delay 1000 ms, ip_local_port_range 32768-60999,
    /// tcp_max_tw_buckets 262144 — labelled as such in `release`.
    pub fn linux_defaults() -> Self {
        KernelFacts {
            release: "(not run here: a default Linux assumed)".into(),
            timestamps: true,
            tw_reuse: TwReuse::LoopbackOnly,
            tw_reuse_delay_ms: Some(1000),
            port_range: PortRange {
                low: 32768,
                high: 60999,
            },
            max_tw_buckets: 262_144,
        }
    }

    /// The facts for a namespace whose sysctls are `s`, on the running
    /// kernel.
    pub fn from_sysctls(s: &NetSysctls) -> Self {
        KernelFacts {
            release: kernel_release(),
            timestamps: s.timestamps,
            tw_reuse: s.tw_reuse,
            tw_reuse_delay_ms: s.tw_reuse_delay_ms,
            port_range: s.port_range,
            max_tw_buckets: s.max_tw_buckets,
        }
    }
}

/// The running kernel's release (`uname -r`), from `kernel.osrelease`: a
/// UTS value, not a per-network-namespace sysctl, so it is read here and not
/// through [`crate::sysctl`]. "unknown" if it cannot be read.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Everything a prediction is made from.
#[derive(Debug, Clone, Copy)]
pub struct CellFacts<'a> {
    /// The experiment's factors.
    pub experiment: &'a Experiment,
    /// The old 4-tuple from both ends at the moment of the step (the
    /// report's `before`, or `at_failure`).
    pub view: &'a TupleView,
    /// The first connection's client end (the port a rebind or a fixed
    /// reconnect uses).
    pub client_addr: SocketAddr,
    /// The kernel and the namespace's sysctls.
    pub kernel: &'a KernelFacts,
}
