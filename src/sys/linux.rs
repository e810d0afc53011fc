//! Linux: errno names from nix (its `Errno` Debug form is the symbolic name).

/// Symbolic name of an errno value, e.g. `EADDRNOTAVAIL` for 99.
pub fn errno_name(code: i32) -> String {
    let e = nix::errno::Errno::from_raw(code);
    if e == nix::errno::Errno::UnknownErrno {
        format!("E{code}")
    } else {
        format!("{e:?}")
    }
}

/// Windows-only option; Linux has no equivalent.
pub const HAS_EXCLUSIVEADDRUSE: bool = false;

/// The OS name shown in reports.
pub const OS_NAME: &str = "Linux";
