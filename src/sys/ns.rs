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

/// Make a new user namespace and a new network namespace owned by it.
/// The caller then maps its uid and gid to root inside (see the `netns`
/// module's `enter_unprivileged`), so an unprivileged process gets
/// CAP_NET_ADMIN over its own network namespaces.
///
/// The process must be single-threaded: `unshare(CLONE_NEWUSER)` fails with
/// EINVAL otherwise (kernel/fork.c, `check_unshare_flags`).
pub(crate) fn unshare_user_and_net() -> nix::Result<()> {
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
}

nix::ioctl_read_bad!(get_if_flags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(set_if_flags, libc::SIOCSIFFLAGS, libc::ifreq);

/// Bring `lo` of the calling thread's network namespace up: a new namespace
/// has it DOWN (`loopback_net_init` registers it without IFF_UP), and
/// nothing can connect to 127.0.0.1 until IFF_UP is set with SIOCSIFFLAGS
/// (`devinet_ioctl` → `dev_change_flags`). An error names the step that
/// failed: `socket for ioctl`, `SIOCGIFFLAGS lo` or `SIOCSIFFLAGS lo up`.
pub(crate) fn loopback_up() -> Result<(), (&'static str, std::io::Error)> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| ("socket for ioctl", e))?;
    // SAFETY: ifreq is plain data, all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name[0] = b'l' as libc::c_char;
    ifr.ifr_name[1] = b'o' as libc::c_char;
    // SAFETY: the name is NUL-terminated "lo"; the ioctl writes only the
    // ifreq we pass.
    unsafe { get_if_flags(s.as_raw_fd(), &mut ifr) }.map_err(|e| ("SIOCGIFFLAGS lo", e.into()))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; the ioctl reads only the ifreq we pass.
    unsafe { set_if_flags(s.as_raw_fd(), &ifr) }.map_err(|e| ("SIOCSIFFLAGS lo up", e.into()))?;
    Ok(())
}
