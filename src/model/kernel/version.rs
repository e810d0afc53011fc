//! The kernel version a rule is for. A few of the rules twlab predicts
//! changed between the kernels people run (Debian 12: 6.1, Ubuntu 22.04 /
//! 24.04: 5.15 / 6.8, RHEL 9: 5.14, current: 6.18); each such fact is one
//! constant here, with the commit that made it, and the rules ask
//! [`KernelVersion::has`] instead of assuming the newest kernel.
//!
//! Stable kernels carry backports, so a version is what the mainline
//! release that introduced a change says; `scripts/kernels` checks the
//! model against Debian 12's 6.1 and the host kernel.

use serde::Serialize;
use std::sync::OnceLock;

/// A kernel's `major.minor` (the stable `.patch` level is not needed by
/// any rule).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
pub struct KernelVersion {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
}

/// One rule that differs by kernel version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionFact {
    /// The first mainline release with the newer behaviour.
    pub since: KernelVersion,
    /// What changed, for "Linux ≥ 6.11: …" in explanations.
    pub what: &'static str,
}

/// `tcp_twsk_unique()` sets `reuse = 0` for a timewait socket in the
/// FIN_WAIT2 substate, so a kernel-chosen port does not take it over
/// (commit "tcp: avoid reusing FIN_WAIT2 when trying to find port in
/// connect() process", Linux 6.11). Before, it was reused like a TIME_WAIT.
pub const FIN_WAIT2_NOT_REUSED: VersionFact = VersionFact {
    since: KernelVersion::new(6, 11),
    what: "a FIN_WAIT2-substate timewait socket is not reused for kernel-chosen ports",
};

/// `net.ipv4.tcp_tw_reuse_delay` (Linux 6.14, with the millisecond test
/// `time_after32(tcp_clock_ms(), tw_entry_stamp + delay)`). Before,
/// `tcp_twsk_unique()` tested `time_after32(ktime_get_seconds(),
/// tw_ts_recent_stamp)`: reuse once the seconds clock has ticked past the
/// second of the last timestamped segment, 0 to 1 s after it.
pub const TW_REUSE_DELAY_SYSCTL: VersionFact = VersionFact {
    since: KernelVersion::new(6, 14),
    what: "tcp_tw_reuse_delay (ms, from TIME_WAIT entry) replaces the fixed second on a seconds clock",
};

/// The bhash2 table (commit 28044fc1d495 "net: Add a bhash2 table hashed
/// by port and address", Linux 6.1): bind() looks a port's sockets up by
/// (port, address) as well as by port.
pub const BHASH2: VersionFact = VersionFact {
    since: KernelVersion::new(6, 1),
    what: "bind() conflicts are looked up in the bhash2 table (port, address)",
};

/// The bhash2 wildcard check (`inet_bhash2_addr_any_conflict()`) finds a
/// socket bound to `::ffff:0.0.0.0` for a later bind of a v4-mapped
/// non-wildcard address: the bhash2 fixes of Linux 6.9, which came with
/// the v4-mapped-wildcard cases of the kernel selftest `bind_wildcard.c`.
/// From 6.1 to 6.8 the two never met, and the bind succeeded: seen in all
/// 18 such steps of those selftest cases on Debian 12's 6.1.0-57
/// (`scripts/kernels`). Stable kernels that took the fix behave as 6.9.
pub const V4MAPPED_ANY_IN_BHASH2: VersionFact = VersionFact {
    since: KernelVersion::new(6, 9),
    what: "a socket bound to ::ffff:0.0.0.0 conflicts with a later v4-mapped non-wildcard bind",
};

/// sock_diag dumps bound-only sockets (`idiag_states` bit 13,
/// TCP_BOUND_INACTIVE; commit "tcp: Dump bound-only sockets in
/// inet_diag.", Linux 6.5: `inet_diag_dump_icsk()` walks the bhash2 table).
/// Before, a socket that bound and neither listens nor connected is
/// invisible to every sock_diag user, twlab and iproute2 alike.
pub const BOUND_ONLY_DUMPED: VersionFact = VersionFact {
    since: KernelVersion::new(6, 5),
    what: "sock_diag dumps bound-only sockets (idiag_states bit 13)",
};

/// The IP_LOCAL_PORT_RANGE socket option (commit "inet: Add
/// IP_LOCAL_PORT_RANGE socket option", Linux 6.3): a per-socket narrowing
/// of `ip_local_port_range`; older kernels answer setsockopt() ENOPROTOOPT.
pub const LOCAL_PORT_RANGE_OPTION: VersionFact = VersionFact {
    since: KernelVersion::new(6, 3),
    what: "the IP_LOCAL_PORT_RANGE socket option",
};

impl KernelVersion {
    /// `major.minor`.
    pub const fn new(major: u16, minor: u16) -> Self {
        KernelVersion { major, minor }
    }

    /// The version in a release string (`uname -r`): "6.1.0-57-cloud-amd64"
    /// → 6.1, "6.18.44-fc-v1147" → 6.18. `None` if it does not start with
    /// two dot-separated numbers.
    pub fn parse(release: &str) -> Option<Self> {
        let mut it = release.split(['.', '-', '+', '_']);
        let major = it.next()?.parse().ok()?;
        let minor_text: String = it
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let minor = minor_text.parse().ok()?;
        Some(KernelVersion { major, minor })
    }

    /// The running kernel's version, read once
    /// ([`crate::model::kernel_release`]); `None` if it cannot be read.
    pub fn running() -> Option<Self> {
        static V: OnceLock<Option<KernelVersion>> = OnceLock::new();
        *V.get_or_init(|| Self::parse(&crate::model::kernel_release()))
    }

    /// Does this kernel have `fact`'s newer behaviour?
    pub fn has(self, fact: VersionFact) -> bool {
        self >= fact.since
    }

    /// Does the kernel a release string names have `fact`? An unknown
    /// version is taken as the newest (the rules' default).
    pub fn release_has(release: &str, fact: VersionFact) -> bool {
        Self::parse(release).is_none_or(|v| v.has(fact))
    }

    /// Does the running kernel have `fact`? Unknown: yes.
    pub fn running_has(fact: VersionFact) -> bool {
        Self::running().is_none_or(|v| v.has(fact))
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl VersionFact {
    /// The variant that applies on a kernel with (`true`) or without the
    /// change, for explanations: "Linux ≥ 6.11" / "Linux < 6.11".
    pub fn variant(self, has: bool) -> String {
        format!("Linux {} {}", if has { "≥" } else { "<" }, self.since)
    }
}

/// Does the running kernel's sock_diag dump bound-only sockets? (Unknown
/// kernels: assumed so, as the table would be on this host.)
pub fn bound_only_visible() -> bool {
    KernelVersion::running().is_none_or(|v| v.has(BOUND_ONLY_DUMPED))
}

/// What a prediction of success depends on where bound-only sockets cannot
/// be seen: "no socket that is only bound holds port 8080 (Linux 6.1 < 6.5:
/// sock_diag does not dump them)".
pub fn unseen_bound_only(what: &str) -> String {
    let v = KernelVersion::running()
        .map(|v| format!("Linux {v} < {}", BOUND_ONLY_DUMPED.since))
        .unwrap_or_else(|| format!("before Linux {}", BOUND_ONLY_DUMPED.since));
    format!(
        "no socket that is only bound (bind() without listen() or connect()) holds {what} ({v}: sock_diag does not dump such sockets)"
    )
}

/// One line for tables built from sock_diag dumps on a kernel that cannot
/// show bound-only sockets (before 6.5), or `None` where it can: the one
/// helper the `ss` and `why` renderings call, so an incomplete table is
/// never shown as complete.
pub fn bound_only_blind_spot() -> Option<String> {
    let v = KernelVersion::running()?;
    (!v.has(BOUND_ONLY_DUMPED)).then(|| {
        format!(
            "note: Linux {v} < {}: sock_diag does not dump bound-only sockets (bound, neither listening nor connected; idiag_states bit 13 came in 6.5), so this table cannot show them, and a port they hold looks free",
            BOUND_ONLY_DUMPED.since
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_distribution_releases() {
        let p = KernelVersion::parse;
        assert_eq!(p("6.1.0-57-cloud-amd64"), Some(KernelVersion::new(6, 1)));
        assert_eq!(p("6.18.44-fc-v1147"), Some(KernelVersion::new(6, 18)));
        assert_eq!(p("5.15.0-91-generic"), Some(KernelVersion::new(5, 15)));
        assert_eq!(
            p("5.14.0-362.8.1.el9_3.x86_64"),
            Some(KernelVersion::new(5, 14))
        );
        assert_eq!(p("6.8.0"), Some(KernelVersion::new(6, 8)));
        assert_eq!(p("6.10-rc1"), Some(KernelVersion::new(6, 10)));
        assert_eq!(p("unknown"), None);
        assert_eq!(p(""), None);
    }

    #[test]
    fn facts_split_the_kernels_people_run() {
        let v61 = KernelVersion::new(6, 1);
        let v618 = KernelVersion::new(6, 18);
        for f in [
            FIN_WAIT2_NOT_REUSED,
            TW_REUSE_DELAY_SYSCTL,
            BOUND_ONLY_DUMPED,
            LOCAL_PORT_RANGE_OPTION,
        ] {
            assert!(!v61.has(f) && v618.has(f), "{}", f.what);
        }
        assert!(KernelVersion::new(6, 11).has(FIN_WAIT2_NOT_REUSED));
        assert!(!KernelVersion::new(6, 10).has(FIN_WAIT2_NOT_REUSED));
        assert!(KernelVersion::release_has("garbage", FIN_WAIT2_NOT_REUSED));
        assert_eq!(FIN_WAIT2_NOT_REUSED.variant(true), "Linux ≥ 6.11");
        assert_eq!(FIN_WAIT2_NOT_REUSED.variant(false), "Linux < 6.11");
    }
}
