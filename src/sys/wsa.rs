//! Winsock error names. Pure data, compiled on every platform so that the
//! Windows column of `demo` and `matrix` can name the error a Windows host
//! would give, and so the table is unit-tested here on Linux.
//!
//! Source: Microsoft, "Windows Sockets Error Codes" (winsock2.h values).

/// (code, name) for the Winsock errors that address reuse can produce.
pub const WSA_ERRORS: &[(i32, &str)] = &[
    (10004, "WSAEINTR"),
    (10009, "WSAEBADF"),
    (10013, "WSAEACCES"),
    (10014, "WSAEFAULT"),
    (10022, "WSAEINVAL"),
    (10024, "WSAEMFILE"),
    (10035, "WSAEWOULDBLOCK"),
    (10036, "WSAEINPROGRESS"),
    (10037, "WSAEALREADY"),
    (10038, "WSAENOTSOCK"),
    (10042, "WSAENOPROTOOPT"),
    (10047, "WSAEAFNOSUPPORT"),
    (10048, "WSAEADDRINUSE"),
    (10049, "WSAEADDRNOTAVAIL"),
    (10050, "WSAENETDOWN"),
    (10051, "WSAENETUNREACH"),
    (10053, "WSAECONNABORTED"),
    (10054, "WSAECONNRESET"),
    (10055, "WSAENOBUFS"),
    (10056, "WSAEISCONN"),
    (10057, "WSAENOTCONN"),
    (10060, "WSAETIMEDOUT"),
    (10061, "WSAECONNREFUSED"),
    (10065, "WSAEHOSTUNREACH"),
];

/// The Winsock name of a WSA error code, if it is one twlab knows.
pub fn wsa_name(code: i32) -> Option<&'static str> {
    WSA_ERRORS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
}

/// The Winsock error a Windows host reports where a POSIX host reports
/// `posix_name` (WSAE* = 10000 + the BSD errno number in winsock2.h).
pub fn wsa_equivalent(posix_name: &str) -> Option<(i32, &'static str)> {
    let wanted = format!("WSA{posix_name}");
    WSA_ERRORS
        .iter()
        .find(|(_, name)| *name == wanted)
        .map(|(c, n)| (*c, *n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_story_error() {
        assert_eq!(wsa_name(10048), Some("WSAEADDRINUSE"));
        assert_eq!(wsa_name(10049), Some("WSAEADDRNOTAVAIL"));
        assert_eq!(wsa_name(10061), Some("WSAECONNREFUSED"));
        assert_eq!(wsa_name(99), None);
    }

    #[test]
    fn posix_to_wsa() {
        assert_eq!(wsa_equivalent("EADDRINUSE"), Some((10048, "WSAEADDRINUSE")));
        assert_eq!(
            wsa_equivalent("EADDRNOTAVAIL"),
            Some((10049, "WSAEADDRNOTAVAIL"))
        );
        assert_eq!(wsa_equivalent("ENOENT"), None);
    }

    #[test]
    fn codes_are_unique_and_in_the_wsa_range() {
        for (i, (code, name)) in WSA_ERRORS.iter().enumerate() {
            assert!((10000..11000).contains(code), "{name}");
            assert!(name.starts_with("WSAE"), "{name}");
            assert!(WSA_ERRORS[i + 1..].iter().all(|(c, _)| c != code));
        }
    }
}
