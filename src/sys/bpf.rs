//! The bpf(2) and perf_event_open(2) calls the events' BPF transport needs,
//! and the reader of a BPF ring buffer map (`kernel/bpf/ringbuf.c`).
//!
//! Raw system calls, not a crate: the programs are assembled by twlab at
//! run time from the tracepoints' `format` files (`events::bpf`), and the
//! crates that load BPF (aya, libbpf-rs) take compiled ELF objects, which
//! would need a BPF compiler on every machine that builds twlab.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `_IOW('$', 8, __u32)` and `_IO('$', 0)` (include/uapi/linux/perf_event.h).
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `BPF_RINGBUF_BUSY_BIT`, `BPF_RINGBUF_DISCARD_BIT`, `BPF_RINGBUF_HDR_SZ`.
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HDR: usize = 8;

/// The bytes a record of `len` takes in a ring buffer: its header, and
/// the record rounded up to 8 (`__bpf_ringbuf_reserve()`).
pub(crate) const fn reserved(len: usize) -> usize {
    (len + HDR + 7) & !7
}

/// `union bpf_attr`, as 8-byte words: every command's fields are at fixed
/// offsets from its start, and the rest must be zero.
type Attr = [u64; 16];

/// bpf(2) with `attr`: its return value (a new descriptor, or 0).
fn sys_bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a zeroed bpf_attr of the size passed; the pointers
    // inside it point at live buffers of the caller's for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// bpf(2) for a command that returns a new descriptor.
fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<OwnedFd> {
    let fd = sys_bpf(cmd, attr)?;
    // SAFETY: a new descriptor the kernel just returned, owned by no one.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn words(a: u32, b: u32) -> u64 {
    u64::from(a) | u64::from(b) << 32
}

/// A BPF_MAP_TYPE_RINGBUF of `size` bytes (a power of 2, whole pages).
pub(crate) fn ringbuf(size: u32) -> io::Result<OwnedFd> {
    let mut a: Attr = [0; 16];
    // map_type, key_size, value_size, max_entries.
    a[0] = words(BPF_MAP_TYPE_RINGBUF, 0);
    a[1] = words(0, size);
    bpf(BPF_MAP_CREATE, &mut a)
}

/// A BPF_MAP_TYPE_ARRAY_OF_MAPS of `n` maps like `inner`.
pub(crate) fn array_of_maps(inner: &OwnedFd, n: u32) -> io::Result<OwnedFd> {
    let mut a: Attr = [0; 16];
    // map_type, key_size, value_size, max_entries, map_flags, inner_map_fd.
    a[0] = words(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4);
    a[1] = words(4, n);
    a[2] = words(0, inner.as_raw_fd() as u32);
    bpf(BPF_MAP_CREATE, &mut a)
}

/// Put the map `value` at `key` of the map of maps `map`.
pub(crate) fn set_map(map: &OwnedFd, key: u32, value: &OwnedFd) -> io::Result<()> {
    let fd = value.as_raw_fd() as u32;
    let mut a: Attr = [0; 16];
    // map_fd, key, value, flags (BPF_ANY).
    a[0] = words(map.as_raw_fd() as u32, 0);
    a[1] = &key as *const u32 as u64;
    a[2] = &fd as *const u32 as u64;
    // key and fd outlive the call.
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(drop)
}

/// A BPF_MAP_TYPE_ARRAY of `n` u64 counters.
pub(crate) fn counters(n: u32) -> io::Result<OwnedFd> {
    let mut a: Attr = [0; 16];
    a[0] = words(BPF_MAP_TYPE_ARRAY, 4);
    a[1] = words(8, n);
    bpf(BPF_MAP_CREATE, &mut a)
}

/// Counter `key` of a [`counters`] map.
pub(crate) fn counter(map: &OwnedFd, key: u32) -> io::Result<u64> {
    let mut value = 0u64;
    let mut a: Attr = [0; 16];
    a[0] = words(map.as_raw_fd() as u32, 0);
    a[1] = &key as *const u32 as u64;
    a[2] = &mut value as *mut u64 as u64;
    // key and value outlive the call, which returns 0.
    sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut a)?;
    Ok(value)
}

/// How often the kernel skipped the program `prog` because another BPF
/// program ran on that CPU then (`struct bpf_prog_info`'s
/// `recursion_misses`, at byte 208: counted by `trace_call_bpf()` since
/// Linux 6.7); `None` where the kernel does not say.
pub(crate) fn recursion_misses(prog: &OwnedFd) -> Option<u64> {
    const AT: usize = 208;
    let mut info = [0u64; 29];
    let mut a: Attr = [0; 16];
    // info.bpf_fd, info.info_len, info.info.
    a[0] = words(prog.as_raw_fd() as u32, std::mem::size_of_val(&info) as u32);
    a[1] = info.as_mut_ptr() as u64;
    // info outlives the call; the kernel writes back how much it filled.
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a).ok()?;
    let filled = (a[0] >> 32) as usize;
    (filled >= AT + 8).then(|| info[AT / 8])
}

/// Load a BPF_PROG_TYPE_TRACEPOINT program (`insns`: 8-byte instructions
/// as the kernel reads them). `Err`: the error and the verifier's log.
pub(crate) fn load_tracepoint(insns: &[u64], name: &str) -> Result<OwnedFd, (io::Error, String)> {
    // GPL-compatible ("Dual MIT/GPL", license_is_gpl_compatible()): the
    // program calls GPL-only helpers (bpf_probe_read_kernel).
    const LICENSE: &[u8] = b"Dual MIT/GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = if s.is_ascii_alphanumeric() { s } else { b'_' };
    }
    let load = |log: &mut Vec<u8>, level: u32| {
        let mut a: Attr = [0; 16];
        // prog_type, insn_cnt, insns, license, log_level, log_size,
        // log_buf, kern_version, prog_flags, prog_name[16].
        a[0] = words(BPF_PROG_TYPE_TRACEPOINT, insns.len() as u32);
        a[1] = insns.as_ptr() as u64;
        a[2] = LICENSE.as_ptr() as u64;
        a[3] = words(level, if level > 0 { log.len() as u32 } else { 0 });
        a[4] = if level > 0 {
            log.as_mut_ptr() as u64
        } else {
            0
        };
        a[6] = u64::from_ne_bytes(prog_name[..8].try_into().unwrap_or_default());
        a[7] = u64::from_ne_bytes(prog_name[8..].try_into().unwrap_or_default());
        bpf(BPF_PROG_LOAD, &mut a)
    };
    // Without a log first (the kernel verifies faster); again with one to
    // say why it was refused.
    load(&mut log, 0).map_err(|e| {
        let _ = load(&mut log, 1);
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        (e, String::from_utf8_lossy(&log[..end]).into_owned())
    })
}

/// `struct perf_event_attr` up to `config1` (PERF_ATTR_SIZE_VER0, 64
/// bytes): the kernel takes a smaller size and zeroes the rest.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// Run `prog` on every hit of the tracepoint `id` (its `events/*/*/id`),
/// on every CPU: the program goes into the tracepoint's own program array
/// (`perf_event_attach_bpf_prog()`), which `perf_trace_run_bpf_submit()`
/// runs wherever the tracepoint fires; one perf event, on CPU 0, holds
/// it there. Until the returned descriptor closes.
pub(crate) fn attach_tracepoint(id: u64, prog: &OwnedFd) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        ..Default::default()
    };
    // SAFETY: attr is a valid perf_event_attr of the size it says.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor.
    let event = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: ioctls on our own perf event with an int argument.
    if unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(event)
}

/// What one [`Ring::read`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Read {
    /// Records handed over.
    pub records: usize,
    /// Whether it reached the producer's position: false when a record
    /// still being written (or the `max`) stopped it, so the buffer may
    /// hold records older than others read now.
    pub to_end: bool,
}

/// A BPF ring buffer map, mapped for reading (`ringbuf_map_mmap_kern()`):
/// the consumer page, writable; then the producer page and the data twice
/// over, read-only, so a record that wraps reads as one slice.
pub(crate) struct Ring {
    fd: OwnedFd,
    consumer: *mut u8,
    producer: *mut u8,
    page: usize,
    size: usize,
}

// SAFETY: the mappings belong to this value alone; the kernel is the only
// other party and the positions are read and written atomically.
unsafe impl Send for Ring {}

impl Ring {
    /// Map `fd`, a [`ringbuf`] of `size` bytes.
    pub(crate) fn map(fd: OwnedFd, size: usize) -> io::Result<Ring> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: new shared mappings of the map's pages, at the offsets
        // and sizes the kernel documents; checked for MAP_FAILED.
        let consumer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if consumer == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let producer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page + 2 * size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                page as libc::off_t,
            )
        };
        if producer == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: the mapping made above.
            unsafe { libc::munmap(consumer, page) };
            return Err(e);
        }
        Ok(Ring {
            fd,
            consumer: consumer.cast(),
            producer: producer.cast(),
            page,
            size,
        })
    }

    /// The map's descriptor: poll(2) on it wakes when the programs say so.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Hand every committed record to `f`, oldest first, at most `max`.
    /// A record still being written ends the batch.
    pub(crate) fn read(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Read {
        // SAFETY: both positions are u64s at the start of their pages,
        // which stay mapped while self lives; the kernel writes producer_pos
        // with release order and reads consumer_pos with acquire.
        let cons_pos = unsafe { &*(self.consumer as *const AtomicU64) };
        let prod_pos = unsafe { &*(self.producer as *const AtomicU64) };
        let data = self.producer.wrapping_add(self.page);
        let mask = self.size as u64 - 1;
        let mut cons = cons_pos.load(Ordering::Acquire);
        // Handed over, and looked at (discarded ones too: the bound).
        let (mut n, mut seen) = (0, 0);
        loop {
            let prod = prod_pos.load(Ordering::Acquire);
            if cons >= prod {
                return Read {
                    records: n,
                    to_end: true,
                };
            }
            if seen >= max {
                break;
            }
            seen += 1;
            let at = (cons & mask) as usize;
            // SAFETY: at < size; the header is a u32 in the data area,
            // whose BUSY bit the kernel clears with release order.
            let hdr = unsafe { &*(data.add(at) as *const AtomicU32) }.load(Ordering::Acquire);
            if hdr & BUSY != 0 {
                break;
            }
            let len = (hdr & !(BUSY | DISCARD)) as usize;
            if hdr & DISCARD == 0 && len <= self.size - HDR {
                // SAFETY: at + 8 + len lies within the double mapping.
                f(unsafe { std::slice::from_raw_parts(data.add(at + HDR), len) });
                n += 1;
            }
            cons += reserved(len) as u64;
            cons_pos.store(cons, Ordering::Release);
        }
        Read {
            records: n,
            to_end: false,
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the two mappings made in `map`, unmapped once.
        unsafe {
            libc::munmap(self.consumer.cast(), self.page);
            libc::munmap(self.producer.cast(), self.page + 2 * self.size);
        }
    }
}

/// How many CPUs the kernel can have (`/sys/devices/system/cpu/possible`,
/// "0-N"): the numbers `bpf_get_smp_processor_id()` can return.
pub(crate) fn possible_cpus() -> io::Result<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let last = text
        .trim()
        .split(',')
        .filter_map(|part| part.rsplit('-').next()?.parse::<u32>().ok())
        .max()
        .ok_or_else(|| io::Error::other(format!("cannot read {text:?}")))?;
    Ok(last + 1)
}

/// The running kernel's BTF (`/sys/kernel/btf/vmlinux`).
pub(crate) fn vmlinux_btf() -> io::Result<Vec<u8>> {
    std::fs::read("/sys/kernel/btf/vmlinux")
}
