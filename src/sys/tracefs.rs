//! tracefs of twlab's own, reachable only through one open directory.
//!
//! The mount is made on a thread of its own that first leaves the host's
//! mount namespace (unshare(CLONE_NEWNS): `ksys_unshare` →
//! `unshare_nsproxy_namespaces` → `copy_mnt_ns`, which also gives the thread
//! an fs_struct of its own), marks every mount there private so nothing
//! propagates back to the host's peers (`change_mnt_propagation`, what
//! `mount --make-rprivate /` does), mounts tracefs, opens its root, and
//! then detaches the mount again (umount2(MNT_DETACH): `umount_tree`). From
//! then on the tracefs mount is in no namespace at all: only the returned
//! descriptor reaches it, every file is opened relative to it (openat,
//! mkdirat, unlinkat), and it disappears when the last descriptor closes.
//! The host's mount table and its global tracing settings are never
//! touched.

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;
use std::os::fd::OwnedFd;

/// Directories to mount over, in the private namespace only: the usual
/// tracefs mount point (an empty directory of sysfs when the kernel has
/// tracing), then any directory that exists everywhere.
const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/tmp"];

/// Mount a tracefs and return a descriptor of its root directory (see the
/// module's notes). Needs CAP_SYS_ADMIN; the error says which call failed.
pub(crate) fn open_private() -> Result<OwnedFd, String> {
    std::thread::Builder::new()
        .name("twlab-tracefs".into())
        .spawn(mount_here)
        .map_err(|e| format!("spawn: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the tracefs thread panicked".into()))
}

/// On the calling thread, which then belongs to a mount namespace of its
/// own: call it on a thread that ends afterwards.
fn mount_here() -> Result<OwnedFd, String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| {
        format!(
            "unshare(CLONE_NEWNS) failed: {} ({}); run as root (CAP_SYS_ADMIN)",
            super::errno_name(e as i32),
            e as i32
        )
    })?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making the private mount namespace private: {e}"))?;
    let mut last = String::new();
    let mut refused = false;
    for dir in MOUNT_POINTS {
        match mount(
            Some("nodev"),
            dir,
            Some("tracefs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        ) {
            Ok(()) => {
                let fd = open(
                    dir,
                    OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                );
                // Detach at once, whether the open worked or not.
                let _ = umount2(dir, MntFlags::MNT_DETACH);
                return fd.map_err(|e| format!("open the tracefs root: {e}"));
            }
            Err(e) => {
                refused |= e == nix::errno::Errno::EPERM;
                last = format!("mount -t tracefs on {dir}: {e}");
            }
        }
    }
    // EPERM: tracefs is not FS_USERNS_MOUNT, so only root in the initial
    // user namespace may mount it (an ordinary user's commands run in a
    // user namespace of their own); anything else: no tracefs here.
    Err(if refused {
        format!(
            "{last}: tracefs needs root (CAP_SYS_ADMIN outside any user namespace); run as root for the kernel's events"
        )
    } else {
        format!("{last} (the kernel needs CONFIG_TRACING and tracefs)")
    })
}

pub(crate) fn now_ns(clock: libc::clockid_t) -> Option<i64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    (r == 0).then(|| ts.tv_sec * 1_000_000_000 + ts.tv_nsec)
}

/// CLOCK_TAI minus CLOCK_REALTIME in nanoseconds: the kernel's TAI offset
/// (whole seconds; 0 unless something set it with adjtimex(ADJ_TAI)).
pub(crate) fn tai_offset_ns() -> i64 {
    match (now_ns(libc::CLOCK_TAI), now_ns(libc::CLOCK_REALTIME)) {
        // Whole seconds: round the few ns between the two reads away.
        (Some(t), Some(r)) => ((t - r) as f64 / 1e9).round() as i64 * 1_000_000_000,
        _ => 0,
    }
}

/// CLOCK_MONOTONIC minus CLOCK_REALTIME in nanoseconds, now.
pub(crate) fn mono_offset_ns() -> i64 {
    match (now_ns(libc::CLOCK_MONOTONIC), now_ns(libc::CLOCK_REALTIME)) {
        (Some(m), Some(r)) => m - r,
        _ => 0,
    }
}
