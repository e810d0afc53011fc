//! Platform code, chosen at compile time as socket2 does with its `sys/`.
//!
//! Everything outside this folder is platform-neutral: it asks `sys` for the
//! symbolic name of an OS error code and for the few options that exist on
//! one platform only.

pub mod linux_errno;
pub mod wsa;

pub mod fsuid;

#[cfg(unix)]
mod unix;

#[cfg(unix)]
pub(crate) mod term;

#[cfg(unix)]
pub(crate) mod signal;

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
pub use linux::*;

#[cfg(all(unix, not(target_os = "linux")))]
mod macos;
#[cfg(all(unix, not(target_os = "linux")))]
pub use macos::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
