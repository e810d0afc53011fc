//! Platform code, chosen at compile time as socket2 does with its `sys/`.
//!
//! Everything outside this folder is platform-neutral: it asks `sys` for the
//! symbolic name of an OS error code and for the few options that exist on
//! one platform only.

pub mod linux_errno;
pub mod wsa;

pub mod fsuid;

// The TCP tables of the systems without sock_diag: parsed on every system
// in tests, read on Windows, macOS and FreeBSD.
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
mod bsd_table;
#[cfg(any(test, windows, target_os = "macos", target_os = "freebsd"))]
pub(crate) mod tcp_table;
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
pub(crate) use bsd_table::{port_range, tcp_table};

#[cfg(unix)]
mod unix;

#[cfg(unix)]
pub(crate) mod term;

pub(crate) mod signal;

#[cfg(target_os = "linux")]
pub mod caps;
/// Elsewhere there is no capability set to lower: the closure runs as is.
#[cfg(not(target_os = "linux"))]
pub mod caps {
    /// Call `f` as is; the error says nothing was dropped.
    pub fn without_bind_service<T>(f: impl FnOnce() -> T) -> (T, std::io::Result<()>) {
        (f(), Err(std::io::ErrorKind::Unsupported.into()))
    }
}
#[cfg(target_os = "linux")]
pub(crate) mod bpf;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) mod load;
#[cfg(target_os = "linux")]
pub(crate) mod netlink_batch;
#[cfg(target_os = "linux")]
pub(crate) mod ns;
#[cfg(target_os = "linux")]
pub(crate) mod packet;
#[cfg(target_os = "linux")]
pub(crate) mod rtnl;
#[cfg(target_os = "linux")]
pub(crate) mod tick;
#[cfg(target_os = "linux")]
pub(crate) mod tracefs;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(all(unix, not(target_os = "linux")))]
mod macos;
#[cfg(all(unix, not(target_os = "linux")))]
pub use macos::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
