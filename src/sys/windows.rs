//! Windows: Winsock error names, SO_EXCLUSIVEADDRUSE.

/// Symbolic name of a Winsock error, e.g. `WSAEADDRINUSE` for 10048.
pub fn errno_name(code: i32) -> String {
    match super::wsa::wsa_name(code) {
        Some(name) => name.to_string(),
        None => format!("WSA{code}"),
    }
}

/// SO_EXCLUSIVEADDRUSE is `~SO_REUSEADDR` (-5) in winsock2.h.
pub const SO_EXCLUSIVEADDRUSE: i32 = windows_sys::Win32::Networking::WinSock::SO_EXCLUSIVEADDRUSE;

/// Windows has SO_EXCLUSIVEADDRUSE.
pub const HAS_EXCLUSIVEADDRUSE: bool = true;

/// The OS name shown in reports.
pub const OS_NAME: &str = "Windows";
