//! BSD / macOS.

pub use super::unix::errno_name;

/// Windows-only option.
pub const HAS_EXCLUSIVEADDRUSE: bool = false;

/// The OS name shown in reports.
pub const OS_NAME: &str = "macOS/BSD";
