//! Run a closure with another filesystem uid on the calling thread: a
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

/// Elsewhere: no fsuid, `f` runs as is.
#[cfg(not(target_os = "linux"))]
pub fn with_fsuid<T>(_uid: u32, f: impl FnOnce() -> T) -> T {
    f()
}
