//! Linux.

pub use super::unix::errno_name;

/// Windows-only option; Linux has no equivalent.
pub const HAS_EXCLUSIVEADDRUSE: bool = false;

/// The OS name shown in reports.
pub const OS_NAME: &str = "Linux";
