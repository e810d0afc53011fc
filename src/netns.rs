//! Fresh Linux network namespaces, so experiments run in parallel with
//! their own loopback, their own port space and their own sysctls, and never
//! touch the host's.
//!
//! `unshare(CLONE_NEWNET)` acts on the calling *thread* (kernel/fork.c,
//! `ksys_unshare` → `switch_task_namespaces`), so each worker thread can hold
//! its own namespace. Files under /proc/sys/net are resolved against the
//! namespace of the thread that opens them, so sysctls written from that
//! thread change only its namespace.

use crate::error::{Error, Result};

pub use crate::sysctl::Sysctl;

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use crate::sys::ns;
    use crate::sysctl::write as write_sysctl;
    use std::cell::RefCell;
    use std::os::fd::OwnedFd;

    thread_local! {
        /// This thread's nursery namespace (see [`enter_fresh_private_ehash`]).
        static NURSERY: RefCell<Option<OwnedFd>> = const { RefCell::new(None) };
    }

    fn unshare_net() -> Result<()> {
        ns::unshare_net().map_err(|e| Error::Netns(ns::unshare_error("CLONE_NEWNET", e)))
    }

    /// Like [`enter_fresh`], but the new namespace gets a TCP established
    /// hash of its own with `buckets` buckets instead of sharing the host's.
    ///
    /// Why: by default (`tcp_child_ehash_entries` = 0) every namespace shares
    /// the initial namespace's ehash, which on a machine with a lot of memory
    /// has hundreds of thousands of buckets, and every sock_diag dump walks
    /// all of them (`inet_diag_dump_icsk`): about 1 ms per dump even in an
    /// empty namespace. The size of a new namespace's ehash is read from the
    /// *creating* namespace's `net.ipv4.tcp_child_ehash_entries`
    /// (`tcp_set_hashinfo`, Linux 6.1+). Setting it on the host would change
    /// the host, so each thread first makes a "nursery" namespace of its own
    /// (never used for sockets), sets the sysctl there, and creates every
    /// fresh namespace from it. Where the sysctl is missing or refused, the
    /// new namespace simply shares the global hash, as with `enter_fresh`.
    pub fn enter_fresh_private_ehash(sysctls: &[Sysctl], buckets: u32) -> Result<()> {
        NURSERY.with(|cell| -> Result<()> {
            let mut nursery = cell.borrow_mut();
            match nursery.as_ref() {
                Some(fd) => ns::enter_net(fd)
                    .map_err(|e| Error::Netns(format!("setns to the nursery namespace: {e}")))?,
                None => {
                    unshare_net()?;
                    // Best effort: kernels before 6.1 have no such sysctl.
                    let _ = write_sysctl(&Sysctl::new(
                        "net.ipv4.tcp_child_ehash_entries",
                        buckets.to_string(),
                    ));
                    let f = ns::open_own_net()
                        .map_err(|e| Error::Netns(format!("open the nursery namespace: {e}")))?;
                    *nursery = Some(f);
                }
            }
            Ok(())
        })?;
        enter_fresh(sysctls)
    }

    /// Move the calling thread into a new, empty network namespace, bring
    /// its `lo` up and apply `sysctls`.
    pub fn enter_fresh(sysctls: &[Sysctl]) -> Result<()> {
        unshare_net()?;
        ns::loopback_up().map_err(Error::Netns)?;
        for s in sysctls {
            write_sysctl(s)?;
        }
        Ok(())
    }

    /// Run `f` on a new thread that lives in a fresh namespace with
    /// `sysctls`. The namespace dies with the thread's last socket.
    pub fn run_in_fresh<T: Send + 'static>(
        sysctls: Vec<Sysctl>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        std::thread::Builder::new()
            .name("twlab-netns".into())
            .spawn(move || {
                enter_fresh(&sysctls)?;
                Ok(f())
            })
            .map_err(|e| Error::Netns(format!("spawn: {e}")))?
            .join()
            // A panic inside `f` is a bug of the caller (or a failed test
            // assertion): pass it on unchanged.
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Can this process make network namespaces per thread? Probed by doing
    /// it on a throwaway thread.
    pub fn can_unshare() -> std::result::Result<(), String> {
        std::thread::spawn(|| ns::unshare_net().map_err(|e| ns::unshare_error("CLONE_NEWNET", e)))
            .join()
            .unwrap_or_else(|_| Err("probe thread panicked".into()))
    }
}

/// For an ordinary user: move this process into a new user namespace with
/// its uid and gid mapped to root, and a network namespace it owns, so the
/// commands that make namespaces of their own (cells, veth pairs) may.
/// Must be called while the process has one thread (see
/// `sys::ns::enter_user_and_net`). What stays out of reach: the host's
/// sysctls, other uids, tracefs.
#[cfg(target_os = "linux")]
pub fn enter_unprivileged() -> std::result::Result<(), String> {
    crate::sys::ns::enter_user_and_net()
}

/// User namespaces are a Linux feature: an error.
#[cfg(not(target_os = "linux"))]
pub fn enter_unprivileged() -> std::result::Result<(), String> {
    Err("user namespaces are a Linux feature".into())
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    /// Network namespaces are a Linux feature: an error.
    pub fn enter_fresh_private_ehash(sysctls: &[Sysctl], _buckets: u32) -> Result<()> {
        enter_fresh(sysctls)
    }

    /// Network namespaces are a Linux feature: an error.
    pub fn enter_fresh(_sysctls: &[Sysctl]) -> Result<()> {
        Err(Error::Unsupported {
            os: crate::sys::OS_NAME,
            what: "network namespaces are a Linux feature".into(),
        })
    }

    /// Network namespaces are a Linux feature: an error.
    pub fn run_in_fresh<T: Send + 'static>(
        _sysctls: Vec<Sysctl>,
        _f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        enter_fresh(&[]).map(|_| unreachable!())
    }

    /// Network namespaces are a Linux feature: never.
    pub fn can_unshare() -> std::result::Result<(), String> {
        Err("network namespaces are a Linux feature".into())
    }
}

pub use imp::*;

// Namespaces exist on Linux only; elsewhere enter_fresh() is an error.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Straight to stderr: `eprintln!` is hidden for passing tests.
    fn skip(msg: &str) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped {msg}");
    }

    #[test]
    fn a_fresh_namespace_has_its_own_sysctls() {
        if let Err(why) = can_unshare() {
            skip(&format!(
                "a_fresh_namespace_has_its_own_sysctls: cannot create network namespaces ({why})"
            ));
            return;
        }
        let host = crate::sysctl::read("net.ipv4.tcp_timestamps").unwrap();
        let want = if host == "0" { "1" } else { "0" };
        let inside = run_in_fresh(vec![Sysctl::new("net.ipv4.tcp_timestamps", want)], || {
            crate::sysctl::read("net.ipv4.tcp_timestamps")
        })
        .unwrap();
        assert_eq!(inside.as_deref(), Some(want));
        assert_eq!(
            crate::sysctl::read("net.ipv4.tcp_timestamps").unwrap(),
            host
        );
        let missing = run_in_fresh(vec![Sysctl::new("net.ipv4.no_such_thing", "1")], || ());
        assert!(matches!(missing, Err(Error::Sysctl { .. })));
    }

    #[test]
    fn private_ehash_namespaces_get_their_own_small_hash() {
        if let Err(why) = can_unshare() {
            skip(&format!(
                "private_ehash_namespaces_get_their_own_small_hash: cannot create network namespaces ({why})"
            ));
            return;
        }
        if crate::sysctl::read("net.ipv4.tcp_child_ehash_entries").is_none() {
            skip(
                "private_ehash_namespaces_get_their_own_small_hash: this kernel has no net.ipv4.tcp_child_ehash_entries (before 6.1)",
            );
            return;
        }
        let host_child = crate::sysctl::read("net.ipv4.tcp_child_ehash_entries");
        let seen = std::thread::spawn(|| {
            let mut v = Vec::new();
            // Twice: the second namespace comes from the same nursery.
            for _ in 0..2 {
                enter_fresh_private_ehash(&[], 256).unwrap();
                // tcp_sk_init() sizes a namespace's default
                // tcp_max_tw_buckets to half its ehash: 128 proves the
                // private 256-bucket hash.
                v.push(crate::sysctl::read("net.ipv4.tcp_max_tw_buckets"));
            }
            v
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![Some("128".to_string()), Some("128".to_string())]);
        // The host's own setting is untouched.
        assert_eq!(
            crate::sysctl::read("net.ipv4.tcp_child_ehash_entries"),
            host_child
        );
    }

    /// As root, a bind() of port 80 in a fresh namespace fails with EACCES
    /// while the capability is dropped, and works again afterwards.
    #[test]
    fn dropping_bind_service_refuses_a_privileged_port() {
        if can_unshare().is_err() || !nix::unistd::geteuid().is_root() {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped dropping_bind_service_refuses_a_privileged_port: needs root and namespaces"
            );
            return;
        }
        let r = run_in_fresh(Vec::new(), || {
            let bind80 = || {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 80)).into())
                    .map_err(|e| e.raw_os_error())
            };
            let (dropped, restored) = crate::sys::caps::without_bind_service(bind80);
            (dropped, restored.is_ok(), bind80())
        })
        .unwrap();
        assert_eq!(r, (Err(Some(nix::libc::EACCES)), true, Ok(())));
    }
}
