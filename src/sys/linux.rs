//! Linux.

pub use super::unix::errno_name;
pub(crate) use super::unix::{Ready, err, wait};

/// The OS name shown in reports.
pub const OS_NAME: &str = "Linux";
