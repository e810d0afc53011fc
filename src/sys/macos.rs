//! BSD / macOS: errno names from nix.

/// Symbolic name of an errno value.
pub fn errno_name(code: i32) -> String {
    let e = nix::errno::Errno::from_raw(code);
    if e == nix::errno::Errno::UnknownErrno {
        format!("E{code}")
    } else {
        format!("{e:?}")
    }
}

/// Windows-only option.
pub const HAS_EXCLUSIVEADDRUSE: bool = false;

/// The OS name shown in reports.
pub const OS_NAME: &str = "macOS/BSD";
