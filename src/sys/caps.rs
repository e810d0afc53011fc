//! Capabilities of the calling thread: run a closure without
//! CAP_NET_BIND_SERVICE in the effective set ([`without_bind_service`]), so
//! root can make the calls an ordinary user would make.
//!
//! Why: bind() of a port below `net.ipv4.ip_unprivileged_port_start` is
//! refused with EACCES unless the caller has CAP_NET_BIND_SERVICE in its
//! network namespace's user namespace (`__inet_bind()` /
//! `__inet6_bind()` → `inet_port_requires_bind_service()` and
//! `ns_capable()`), which reads the *task's* effective set, not the
//! socket's owner. A changed fsuid alone does not drop it. capset(2) with
//! pid 0 acts on the calling thread only, and a capability left in the
//! permitted set can be raised again afterwards.

/// `_LINUX_CAPABILITY_VERSION_3` (two 32-bit words per set).
const VERSION_3: u32 = 0x2008_0522;
/// `CAP_NET_BIND_SERVICE` (bit 10 of the first word).
const NET_BIND_SERVICE: u32 = 10;

#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn get() -> std::io::Result<[Data; 2]> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: a version-3 header and two data structs, as capget(2) needs.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    if r == 0 {
        Ok(d)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn set(d: &[Data; 2]) -> std::io::Result<()> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: as in `get`; capset(2) only reads the structs.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Call `f` with CAP_NET_BIND_SERVICE off in the calling thread's effective
/// set, then restore the set. If the capability cannot be dropped (capget
/// or capset refused), `f` runs as is and the error comes back beside its
/// result.
pub fn without_bind_service<T>(f: impl FnOnce() -> T) -> (T, std::io::Result<()>) {
    let old = match get() {
        Ok(d) => d,
        Err(e) => return (f(), Err(e)),
    };
    let mut lowered = old;
    lowered[0].effective &= !(1 << NET_BIND_SERVICE);
    if let Err(e) = set(&lowered) {
        return (f(), Err(e));
    }
    let r = f();
    let restored = set(&old);
    (r, restored)
}
