//! Linux namespaces and the loopback interface: the raw calls behind
//! the `netns` module and the matrix's unprivileged worker.
//!
//! `unshare(2)` and `setns(2)` act on the calling *thread*
//! (kernel/fork.c, `ksys_unshare` → `switch_task_namespaces`), so each
//! worker thread can hold its own network namespace.

use nix::sched::{CloneFlags, setns, unshare};
use std::os::fd::{AsRawFd, OwnedFd};

/// Move the calling thread into a new, empty network namespace.
pub(crate) fn unshare_net() -> nix::Result<()> {
    unshare(CloneFlags::CLONE_NEWNET)
}

/// One line for a failed `unshare(flags)`, with what to do about it. The
/// errno decides (unshare(2)): EPERM is a missing privilege, ENOSPC a
/// namespace count limit reached (`inc_ucount` against
/// /proc/sys/user/max_net_namespaces or max_user_namespaces, which apply
/// to root too), EUSERS the nesting limit, ENOMEM memory.
pub(crate) fn unshare_error(flags: &str, e: nix::errno::Errno) -> String {
    let user = flags.contains("NEWUSER");
    let advice = match e {
        nix::errno::Errno::EPERM if user => {
            "user namespaces are not allowed for this user here (see /proc/sys/user/max_user_namespaces and kernel.unprivileged_userns_clone)".to_string()
        }
        nix::errno::Errno::EPERM => "run as root, or with CAP_SYS_ADMIN".to_string(),
        nix::errno::Errno::ENOSPC => {
            let limit = |n: &str| {
                let v = std::fs::read_to_string(format!("/proc/sys/user/{n}"));
                format!("user.{n} = {}", v.as_deref().map(str::trim).unwrap_or("?"))
            };
            format!(
                "too many namespaces: a namespace limit is reached ({}{}); raise it with sysctl, or end other namespaces",
                limit("max_net_namespaces"),
                if user {
                    format!(", {}", limit("max_user_namespaces"))
                } else {
                    String::new()
                }
            )
        }
        nix::errno::Errno::EUSERS => {
            "user namespaces are nested too deeply (32 levels at most)".to_string()
        }
        nix::errno::Errno::ENOMEM => "out of memory".to_string(),
        _ => "namespaces are not available here".to_string(),
    };
    format!(
        "unshare({flags}) failed: {} ({}); {advice}",
        super::errno_name(e as i32),
        e as i32
    )
}

/// Ask the kernel to kill the calling process with SIGKILL when its
/// parent exits (prctl(PR_SET_PDEATHSIG)), so a worker never outlives the
/// `twlab matrix` that started it. If the parent is already gone (the
/// process was reparented before the call), exit now.
pub(crate) fn die_with_parent() {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() == 1 {
        std::process::exit(1);
    }
}

/// Move the calling thread back into the network namespace `fd` refers to
/// (an open `/proc/thread-self/ns/net`).
pub(crate) fn enter_net(fd: &OwnedFd) -> nix::Result<()> {
    setns(fd, CloneFlags::CLONE_NEWNET)
}

/// Open the calling thread's network namespace, to come back to it later
/// with [`enter_net`].
pub(crate) fn open_own_net() -> std::io::Result<OwnedFd> {
    std::fs::File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
}

/// Make a new user namespace and a new network namespace owned by it, and
/// map the caller's uid and gid to root inside, so an unprivileged process
/// gets CAP_NET_ADMIN over its own network namespaces.
///
/// The process must be single-threaded: `unshare(CLONE_NEWUSER)` fails with
/// EINVAL otherwise (kernel/fork.c, `check_unshare_flags`). `setgroups` must
/// be denied before an unprivileged process may write its gid map
/// (kernel/user_namespace.c, `new_idmap_permitted`).
pub(crate) fn enter_user_and_net() -> Result<(), String> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
        .map_err(|e| unshare_error("CLONE_NEWUSER|CLONE_NEWNET", e))?;
    let w = |path: &str, s: String| std::fs::write(path, s).map_err(|e| format!("{path}: {e}"));
    w("/proc/self/setgroups", "deny".into())?;
    w("/proc/self/uid_map", format!("0 {uid} 1"))?;
    w("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

nix::ioctl_read_bad!(get_if_flags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(set_if_flags, libc::SIOCSIFFLAGS, libc::ifreq);

/// Bring `lo` of the calling thread's network namespace up: a new namespace
/// has it DOWN (`loopback_net_init` registers it without IFF_UP), and
/// nothing can connect to 127.0.0.1 until IFF_UP is set with SIOCSIFFLAGS
/// (`devinet_ioctl` → `dev_change_flags`).
pub(crate) fn loopback_up() -> Result<(), String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| format!("socket for ioctl: {e}"))?;
    // SAFETY: ifreq is plain data, all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name[0] = b'l' as libc::c_char;
    ifr.ifr_name[1] = b'o' as libc::c_char;
    // SAFETY: the name is NUL-terminated "lo"; the ioctl writes only the
    // ifreq we pass.
    unsafe { get_if_flags(s.as_raw_fd(), &mut ifr) }
        .map_err(|e| format!("SIOCGIFFLAGS lo: {e}"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; the ioctl reads only the ifreq we pass.
    unsafe { set_if_flags(s.as_raw_fd(), &ifr) }.map_err(|e| format!("SIOCSIFFLAGS lo up: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ENOSPC is a limit, not a missing privilege: root is not told to
    /// run as root.
    #[test]
    fn unshare_errors_name_the_cause() {
        let e = unshare_error("CLONE_NEWNET", nix::errno::Errno::ENOSPC);
        assert!(
            e.contains("ENOSPC") && e.contains("user.max_net_namespaces"),
            "{e}"
        );
        assert!(!e.contains("root"), "{e}");
        let e = unshare_error("CLONE_NEWNET", nix::errno::Errno::EPERM);
        assert!(e.contains("run as root"), "{e}");
        let e = unshare_error("CLONE_NEWUSER|CLONE_NEWNET", nix::errno::Errno::ENOSPC);
        assert!(e.contains("user.max_user_namespaces"), "{e}");
    }
}
