//! Socket ownership and identity. Run a closure with another filesystem
//! uid on the calling thread ([`with_fsuid`]): a
//! socket's owner for the SO_REUSEPORT uid check is `sk_uid`, taken from the
//! fsuid at socket() (`sock_alloc()`: `inode->i_uid = current_fsuid()`), and
//! setfsuid(2) changes only the calling thread, so root can make another
//! user's socket without a child process.

/// Call `f` with fsuid `uid`, then restore the previous fsuid.
#[cfg(target_os = "linux")]
pub fn with_fsuid<T>(uid: u32, f: impl FnOnce() -> T) -> T {
    // SAFETY: setfsuid has no memory effects; it returns the previous fsuid.
    let old = unsafe { libc::setfsuid(uid) };
    let r = f();
    // SAFETY: as above.
    unsafe { libc::setfsuid(old as u32) };
    r
}

/// Can this thread take fsuid `uid`? Root can, outside a user namespace
/// or inside one where `uid` is mapped; setfsuid(2) does not report a
/// refusal, it just keeps the old fsuid, so ask it back (`setfsuid(-1)`
/// changes nothing and returns the current value).
#[cfg(target_os = "linux")]
pub fn can_act_as(uid: u32) -> bool {
    with_fsuid(uid, || {
        // SAFETY: as above; -1 is never a valid fsuid, so nothing changes.
        let now = unsafe { libc::setfsuid(u32::MAX) };
        now as u32 == uid
    })
}

/// Elsewhere: only the running uid.
#[cfg(not(target_os = "linux"))]
pub fn can_act_as(uid: u32) -> bool {
    uid == running_uid()
}

/// Elsewhere: no fsuid, `f` runs as is.
#[cfg(not(target_os = "linux"))]
pub fn with_fsuid<T>(_uid: u32, f: impl FnOnce() -> T) -> T {
    f()
}

/// The uid that owns this process's new sockets (its fsuid, which follows
/// the effective uid).
#[cfg(unix)]
pub fn running_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Elsewhere: 0.
#[cfg(not(unix))]
pub fn running_uid() -> u32 {
    0
}

/// Whether this process holds CAP_NET_BIND_SERVICE (bit 10 of `CapEff` in
/// /proc/self/status): what lets bind() take a port below
/// `ip_unprivileged_port_start`. Where that cannot be read: root or not.
#[cfg(target_os = "linux")]
pub fn has_cap_net_bind_service() -> bool {
    const CAP_NET_BIND_SERVICE: u32 = 10;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .map_or(running_uid() == 0, |caps| {
            caps & (1 << CAP_NET_BIND_SERVICE) != 0
        })
}

/// Elsewhere: no capabilities to ask about; root or not.
#[cfg(not(target_os = "linux"))]
pub fn has_cap_net_bind_service() -> bool {
    running_uid() == 0
}

/// The inode number of a socket (what sock_diag reports as its inode),
/// to tell apart sockets that share an address, such as the members of a
/// SO_REUSEPORT group (`reuseport`, a Linux command).
#[cfg(target_os = "linux")]
// st_ino is u64 on Linux but not on every unix.
#[allow(clippy::unnecessary_cast)]
pub fn socket_inode(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    nix::sys::stat::fstat(fd).ok().map(|s| s.st_ino as u64)
}
