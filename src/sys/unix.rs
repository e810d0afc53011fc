//! Shared by every Unix: errno names from nix (its `Errno` Debug form is the
//! symbolic name, e.g. `EADDRNOTAVAIL`; the numbers differ per OS).

/// Symbolic name of an errno value, e.g. `EADDRNOTAVAIL` for 99 on Linux.
pub fn errno_name(code: i32) -> String {
    let e = nix::errno::Errno::from_raw(code);
    if e == nix::errno::Errno::UnknownErrno {
        format!("E{code}")
    } else {
        format!("{e:?}")
    }
}
