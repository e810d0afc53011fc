//! Fresh Linux network namespaces, so experiments run in parallel with
//! their own loopback, their own port space and their own sysctls, and never
//! touch the host's.
//!
//! `unshare(CLONE_NEWNET)` acts on the calling *thread* (kernel/fork.c,
//! `ksys_unshare` → `switch_task_namespaces`), so each worker thread can hold
//! its own namespace. Files under /proc/sys/net are resolved against the
//! namespace of the thread that opens them, so sysctls written from that
//! thread change only its namespace.

use crate::error::{NetnsError, Result};

pub use crate::sysctl::Sysctl;

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use crate::error::NsLimit;
    use crate::outcome::SysError;
    use crate::sys::ns;
    use crate::sysctl::write as write_sysctl;
    use std::cell::RefCell;
    use std::os::fd::OwnedFd;

    thread_local! {
        /// This thread's nursery namespace (see [`enter_fresh_private_ehash`]).
        static NURSERY: RefCell<Option<OwnedFd>> = const { RefCell::new(None) };
    }

    /// The error of a failed `unshare(flags)`. For ENOSPC (a namespace
    /// count limit reached, `inc_ucount` against /proc/sys/user/
    /// max_net_namespaces or max_user_namespaces, which apply to root too)
    /// the limits are read now, for the message.
    pub(crate) fn unshare_error(flags: &'static str, e: nix::errno::Errno) -> NetnsError {
        let limits = if e == nix::errno::Errno::ENOSPC {
            let mut names = vec!["user.max_net_namespaces"];
            if flags.contains("NEWUSER") {
                names.push("user.max_user_namespaces");
            }
            (names.into_iter())
                .map(|name| NsLimit {
                    name,
                    value: crate::sysctl::read(name),
                })
                .collect()
        } else {
            Vec::new()
        };
        NetnsError::Unshare {
            flags,
            err: SysError::from_code(e as i32),
            limits,
        }
    }

    /// Move the calling thread into a new, empty network namespace.
    pub(crate) fn unshare_net() -> std::result::Result<(), NetnsError> {
        ns::unshare_net().map_err(|e| unshare_error("CLONE_NEWNET", e))
    }

    /// Bring `lo` of the calling thread's namespace up.
    pub(crate) fn loopback_up() -> std::result::Result<(), NetnsError> {
        ns::loopback_up().map_err(|(step, e)| NetnsError::LoopbackUp {
            step,
            err: SysError::from_io(&e),
        })
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
                Some(fd) => ns::enter_net(fd).map_err(|e| NetnsError::Setns {
                    what: "setns to the nursery namespace",
                    err: SysError::from_code(e as i32),
                })?,
                None => {
                    unshare_net()?;
                    // Best effort: kernels before 6.1 have no such sysctl.
                    let _ = write_sysctl(&Sysctl::new(
                        "net.ipv4.tcp_child_ehash_entries",
                        buckets.to_string(),
                    ));
                    let f = ns::open_own_net().map_err(|err| NetnsError::Io {
                        what: "open the nursery namespace",
                        err,
                    })?;
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
        loopback_up()?;
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
            .map_err(|err| NetnsError::Io { what: "spawn", err })?
            .join()
            // A panic inside `f` is a bug of the caller (or a failed test
            // assertion): pass it on unchanged.
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Can this process make network namespaces per thread? Probed by doing
    /// it on a throwaway thread.
    pub fn can_unshare() -> std::result::Result<(), NetnsError> {
        std::thread::spawn(unshare_net)
            .join()
            .unwrap_or(Err(NetnsError::Panicked {
                what: "probe thread",
            }))
    }
}

/// For an ordinary user: move this process into a new user namespace with
/// its uid and gid mapped to root, and a network namespace it owns, so the
/// commands that make namespaces of their own (cells, veth pairs) may
/// (CAP_NET_ADMIN over them). What stays out of reach: the host's sysctls,
/// other uids, tracefs.
///
/// Must be called while the process has one thread:
/// `unshare(CLONE_NEWUSER)` fails with EINVAL otherwise (kernel/fork.c,
/// `check_unshare_flags`). `setgroups` must be denied before an
/// unprivileged process may write its gid map (kernel/user_namespace.c,
/// `new_idmap_permitted`).
#[cfg(target_os = "linux")]
pub fn enter_unprivileged() -> std::result::Result<(), NetnsError> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    crate::sys::ns::unshare_user_and_net()
        .map_err(|e| unshare_error("CLONE_NEWUSER|CLONE_NEWNET", e))?;
    let w = |path: &'static str, s: String| {
        std::fs::write(path, s).map_err(|err| NetnsError::IdMap { path, err })
    };
    w("/proc/self/setgroups", "deny".into())?;
    w("/proc/self/uid_map", format!("0 {uid} 1"))?;
    w("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// User namespaces are a Linux feature: an error.
#[cfg(not(target_os = "linux"))]
pub fn enter_unprivileged() -> std::result::Result<(), NetnsError> {
    Err(NetnsError::NotLinux {
        what: "user namespaces",
    })
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;
    use crate::error::Error;

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
    pub fn can_unshare() -> std::result::Result<(), NetnsError> {
        Err(NetnsError::NotLinux {
            what: "network namespaces",
        })
    }
}

pub use imp::*;

// Namespaces exist on Linux only; elsewhere enter_fresh() is an error.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::error::Error;

    /// ENOSPC is a limit, not a missing privilege: root is not told to
    /// run as root. The message is the one line the CLI prints.
    #[test]
    fn unshare_errors_name_the_cause() {
        use nix::errno::Errno;
        let e = unshare_error("CLONE_NEWNET", Errno::ENOSPC).to_string();
        assert!(
            e.starts_with("unshare(CLONE_NEWNET) failed: ENOSPC (28); too many namespaces")
                && e.contains("user.max_net_namespaces = ")
                && !e.contains("max_user_namespaces"),
            "{e}"
        );
        assert!(!e.contains("root"), "{e}");
        let e = unshare_error("CLONE_NEWNET", Errno::EPERM);
        assert!(
            matches!(&e, NetnsError::Unshare { err, limits, .. } if err.is("EPERM") && limits.is_empty())
        );
        assert_eq!(
            Error::Netns(e).to_string(),
            "network namespace: unshare(CLONE_NEWNET) failed: EPERM (1); run as root, or with CAP_SYS_ADMIN"
        );
        let e = unshare_error("CLONE_NEWUSER|CLONE_NEWNET", Errno::ENOSPC).to_string();
        assert!(e.contains("user.max_user_namespaces"), "{e}");
    }

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
