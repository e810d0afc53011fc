//! BSD / macOS: the errno names and numbers are the BSD ones
//! (`EADDRINUSE` is 48 here, 98 on Linux), from this system's libc.

pub use super::unix::errno_name;
pub(crate) use super::unix::{Ready, err, wait};

/// The OS name shown in reports.
pub const OS_NAME: &str = "macOS/BSD";
