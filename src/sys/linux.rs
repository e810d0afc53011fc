//! Linux.

pub use super::unix::errno_name;
pub(crate) use super::unix::{Ready, err, wait};

/// Windows-only option; Linux has no equivalent.
pub const HAS_EXCLUSIVEADDRUSE: bool = false;

/// The OS name shown in reports.
pub const OS_NAME: &str = "Linux";
