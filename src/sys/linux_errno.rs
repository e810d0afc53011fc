//! Linux's errno numbers and names (include/uapi/asm-generic/errno-base.h
//! and errno.h), compiled on every platform: the rule model predicts what a
//! Linux kernel answers, so its errors are Linux's whatever the host. The
//! host's libc would give other numbers (on Windows `libc::EADDRINUSE` is
//! 100, which Winsock would print as "WSA100"; on macOS it is 48).

/// Interrupted system call.
pub const EINTR: i32 = 4;
/// Permission denied.
pub const EACCES: i32 = 13;
/// Invalid argument.
pub const EINVAL: i32 = 22;
/// Protocol not available (an unknown socket option).
pub const ENOPROTOOPT: i32 = 92;
/// Address family not supported by protocol.
pub const EAFNOSUPPORT: i32 = 97;
/// Address already in use.
pub const EADDRINUSE: i32 = 98;
/// Cannot assign requested address.
pub const EADDRNOTAVAIL: i32 = 99;
/// Connection reset by peer.
pub const ECONNRESET: i32 = 104;
/// Transport endpoint is already connected.
pub const EISCONN: i32 = 106;
/// Connection timed out.
pub const ETIMEDOUT: i32 = 110;
/// Connection refused.
pub const ECONNREFUSED: i32 = 111;
/// Operation already in progress.
pub const EALREADY: i32 = 114;
/// Operation now in progress.
pub const EINPROGRESS: i32 = 115;

/// (number, name) of the Linux errors above.
const NAMES: &[(i32, &str)] = &[
    (EINTR, "EINTR"),
    (EACCES, "EACCES"),
    (EINVAL, "EINVAL"),
    (ENOPROTOOPT, "ENOPROTOOPT"),
    (EAFNOSUPPORT, "EAFNOSUPPORT"),
    (EADDRINUSE, "EADDRINUSE"),
    (EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (ECONNRESET, "ECONNRESET"),
    (EISCONN, "EISCONN"),
    (ETIMEDOUT, "ETIMEDOUT"),
    (ECONNREFUSED, "ECONNREFUSED"),
    (EALREADY, "EALREADY"),
    (EINPROGRESS, "EINPROGRESS"),
];

/// Linux's name for `code`, e.g. `EADDRNOTAVAIL` for 99; `E<code>` for a
/// number not in the table.
pub fn name(code: i32) -> String {
    match NAMES.iter().find(|(c, _)| *c == code) {
        Some((_, n)) => (*n).to_string(),
        None => format!("E{code}"),
    }
}

/// Linux's number for the error `name` (`98` for `EADDRINUSE`), for the
/// names [`name`] gives: one of the table, or `E<code>`.
pub fn code(name: &str) -> Option<i32> {
    NAMES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(c, _)| *c)
        .or_else(|| name.strip_prefix('E')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_linux_numbers_on_every_host() {
        assert_eq!(name(98), "EADDRINUSE");
        assert_eq!(name(99), "EADDRNOTAVAIL");
        assert_eq!(name(111), "ECONNREFUSED");
        assert_eq!(name(100_000), "E100000");
        assert_eq!(code("EADDRINUSE"), Some(98));
        assert_eq!(code(&name(100_000)), Some(100_000));
        assert_eq!(code("timeout"), None);
    }

    /// The table is Linux's own numbering: on Linux, the host's libc agrees
    /// with every entry.
    #[cfg(target_os = "linux")]
    #[test]
    fn matches_linux_libc() {
        let libc_values = [
            libc::EINTR,
            libc::EACCES,
            libc::EINVAL,
            libc::ENOPROTOOPT,
            libc::EAFNOSUPPORT,
            libc::EADDRINUSE,
            libc::EADDRNOTAVAIL,
            libc::ECONNRESET,
            libc::EISCONN,
            libc::ETIMEDOUT,
            libc::ECONNREFUSED,
            libc::EALREADY,
            libc::EINPROGRESS,
        ];
        assert_eq!(libc_values.len(), NAMES.len());
        for ((code, n), l) in NAMES.iter().zip(libc_values) {
            assert_eq!(*code, l, "{n}");
            assert_eq!(super::super::errno_name(*code), *n);
        }
    }
}
