//! The events through BPF (`--via bpf`): the same tracepoints and the
//! same records as through tracefs, at about the same cost to the traced
//! programs (3.4–3.7 % of the story loop's CPU, tracefs 2.9–3.0 %:
//! docs/benchmarks.md).
//!
//! Not the default, because of what the kernel skips: `trace_call_bpf()`
//! runs no program on a CPU where a BPF program already runs, so a
//! softirq's state change that interrupts the program of a system call's
//! state change is lost (about 0.2 % of the story loop's events, enough to
//! spoil 0.7 % of its lives). Kernels from 6.7 count these in each
//! program's `recursion_misses`, which the session reports
//! ([`Source::skipped`]). tracefs's buffers take an event in every
//! context even while another is being written.
//!
//! Why, when tracefs works: what a BPF session leaves behind and what it
//! knows. Its programs hang on perf events that close with the process,
//! so a reader killed outright (SIGKILL, OOM) leaves nothing recording,
//! where a tracefs instance stays on, tracepoints enabled, until the next
//! twlab removes it. Each record carries the task's name as the event
//! fired, where tracefs names a pid afterwards from /proc or from
//! `saved_cmdlines` (a process gone, or a pid reused, can read wrong
//! there). Most of the cost to the traced programs is the tracepoint's
//! own hit, which either way builds the record first.
//!
//! How: for each tracepoint twlab assembles a BPF_PROG_TYPE_TRACEPOINT
//! program from its `format` file. The kernel hands the program the
//! record it built for perf (`perf_trace_##call`, then
//! `perf_trace_run_bpf_submit()`); the program runs the session's
//! [`KernelFilter`] on the record's fields, then copies the record into a
//! BPF ring buffer behind a header of its own: the time on CLOCK_TAI
//! (`bpf_ktime_get_tai_ns()`, the clock the tracefs instance uses), the
//! CPU and the task's name (`bpf_get_current_comm()`, so a process that
//! has exited is still named). User space decodes the copy with the very
//! decoder it uses for tracefs pages ([`super::event::decode`]).
//!
//! The record's first 8 bytes (`common_type`, `common_flags`,
//! `common_preempt_count`, `common_pid`) are not the record's when a BPF
//! program runs: `perf_trace_run_bpf_submit()` stores the pt_regs pointer
//! there, and perf fills the common fields only later
//! (`perf_tp_event()`). The program writes them as tracefs would
//! (`tracing_gen_ctx()`): the type, the pid (`bpf_get_current_pid_tgid()`)
//! and the context flags, read from that very pointer.
//! `perf_trace_buf_alloc()` hands out `this_cpu_ptr(&__perf_regs[rctx])`
//! where rctx is `interrupt_context_level()`: 0 task, 1 softirq, 2
//! hardirq, 3 NMI, the levels tracefs writes as no flag,
//! TRACE_FLAG_SOFTIRQ, TRACE_FLAG_HARDIRQ and TRACE_FLAG_NMI. Per-CPU
//! offsets are whole pages (`pcpu_build_alloc_info()`), so the pointer's
//! offset in its page, less `__perf_regs`'s own (from the kernel's BTF),
//! is rctx × sizeof(struct pt_regs). A pointer that fits no level is
//! marked ([`UNSURE`]) and read as the kernel's, not a process's: twlab
//! never credits a process with what it cannot place. Where the BTF has
//! no `__perf_regs` (or the CPU is not x86-64, whose section layout this
//! relies on), this transport is not used and twlab reads tracefs.
//!
//! The reader wakes as tracefs's would with `buffer_percent` 50: a
//! program asks for a wakeup (BPF_RB_FORCE_WAKEUP) only once the buffer
//! is half full, otherwise none (BPF_RB_NO_WAKEUP); the reader looks
//! every [`crate::signal::CHECK_EVERY`] anyway. Records that find the
//! buffer full are counted in an array map and reported as missed.

pub(crate) mod asm;
pub(crate) mod btf;

use super::filter::{Filter, KernelFilter};
use super::format::Format;
use super::{Clock, Unavailable};
use asm::{Alu, Asm, Cond, Pseudo, R0, R1, R2, R3, R6, R7, R8, R10, Size};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// Helper ids (`enum bpf_func_id`, include/uapi/linux/bpf.h).
mod helper {
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const KTIME_GET_NS: i32 = 5;
    pub const GET_SMP_PROCESSOR_ID: i32 = 8;
    pub const GET_CURRENT_PID_TGID: i32 = 14;
    pub const GET_CURRENT_COMM: i32 = 16;
    pub const PROBE_READ_KERNEL: i32 = 113;
    pub const RINGBUF_RESERVE: i32 = 131;
    pub const RINGBUF_SUBMIT: i32 = 132;
    pub const RINGBUF_QUERY: i32 = 134;
    pub const KTIME_GET_TAI_NS: i32 = 208;
}

/// The header each program writes before the record: time (u64), perf's
/// registers pointer (u64), CPU (u32), 4 bytes of padding, the task's name
/// (16 bytes, TASK_COMM_LEN).
pub const HEADER: usize = 40;
const AT_TIME: usize = 0;
const AT_REGS: usize = 8;
const AT_CPU: usize = 16;
const AT_COMM: usize = 24;
/// `common_preempt_count` of a record whose context the program could not
/// tell (its registers were not where `__perf_regs` says).
pub const UNSURE: u8 = 0xff;
/// Each CPU's ring buffer, as tracefs's (`BUFFER_KB`): 2 MiB, about
/// 17,000 records (a state change is 120 bytes with both headers), twice
/// what the story's loop writes on one CPU between two of the reader's
/// ticks. One buffer per CPU, as tracefs has, so that CPUs never share a
/// lock or a cache line to write an event (`__bpf_ringbuf_reserve()`
/// takes the buffer's spinlock).
pub const RING_BYTES: u32 = 2 << 20;
/// `common_flags` bits (kernel/trace/trace.h).
const TRACE_FLAG_HARDIRQ: i32 = 0x08;
const TRACE_FLAG_SOFTIRQ: i32 = 0x10;
const TRACE_FLAG_NMI: i32 = 0x40;

/// What every program of a session shares.
#[derive(Debug, Clone, Copy)]
pub struct Shared {
    /// The map of the CPUs' ring buffers (BPF_MAP_TYPE_ARRAY_OF_MAPS,
    /// by CPU number).
    pub rings: i32,
    /// The lost-records counter map's descriptor.
    pub lost: i32,
    /// `__perf_regs`'s offset in the per-CPU section.
    pub perf_regs: u32,
    /// `sizeof(struct pt_regs)`: a quarter of `__perf_regs`.
    pub regs_size: u32,
    /// The time helper: CLOCK_TAI (true) or CLOCK_MONOTONIC.
    pub tai: bool,
}

/// The record's size as the program copies it: up to its last field,
/// in whole 8-byte words.
pub fn record_size(f: &Format) -> usize {
    let end = f
        .fields
        .iter()
        .map(|x| x.offset + x.size)
        .max()
        .unwrap_or(8);
    end.div_ceil(8) * 8
}

/// Code that jumps to `reject` unless the record at R6 passes `filter`;
/// `None` if a field is missing or cannot be read from the record as
/// the verifier allows (`tp_prog_is_valid_access()`: past the first 8
/// bytes, aligned to its size).
fn filter_code(a: &mut Asm, f: &Format, filter: &KernelFilter, reject: asm::Label) -> Option<()> {
    for any in &filter.all {
        let pass = a.label();
        for t in any {
            let field = f.field(t.field)?;
            let size = Size::of(field.size)?;
            if field.offset < 8 || field.offset % field.size != 0 {
                return None;
            }
            a.load(size, R2, R6, i16::try_from(field.offset).ok()?);
            let cond = if t.not { Cond::Ne } else { Cond::Eq };
            match i32::try_from(t.value) {
                Ok(imm) => a.jump_imm(cond, R2, imm, pass),
                Err(_) => {
                    a.ld_imm64(R3, None, t.value);
                    a.jump_reg(cond, R2, R3, pass);
                }
            }
        }
        a.goto(reject);
        a.bind(pass);
    }
    Some(())
}

/// Can `filter` run in the program of `f`? (Compiled apart: one that
/// cannot leaves no half-written code behind.)
pub fn compiles(f: &Format, filter: &KernelFilter) -> bool {
    let mut a = Asm::default();
    let reject = a.label();
    filter_code(&mut a, f, filter, reject).is_some()
}

/// The program for the tracepoint `f` (see the module's notes). Without
/// a kernel filter, or when the filter cannot be compiled, every record
/// goes to user space, which filters again anyway.
pub fn program(f: &Format, filter: Option<&KernelFilter>, s: Shared) -> Option<Vec<u64>> {
    let rec = record_size(f);
    let total = i32::try_from(HEADER + rec).ok()?;
    let mut a = Asm::default();
    let (reject, lost) = (a.label(), a.label());
    // R6: the record.
    a.alu_reg(Alu::Mov, R6, R1);
    if let Some(k) = filter.filter(|k| compiles(f, k)) {
        filter_code(&mut a, f, k, reject)?;
    }
    // R8: this CPU's ring buffer; R7: room in it, or count it lost.
    a.call(helper::GET_SMP_PROCESSOR_ID);
    a.store(Size::W, R10, -8, R0);
    a.ld_imm64(R1, Some(Pseudo::MapFd), s.rings as u64);
    a.alu_reg(Alu::Mov, R2, R10);
    a.alu_imm(Alu::Add, R2, -8);
    a.call(helper::MAP_LOOKUP_ELEM);
    a.jump_imm(Cond::Eq, R0, 0, lost);
    a.alu_reg(Alu::Mov, R8, R0);
    a.alu_reg(Alu::Mov, R1, R0);
    a.alu_imm(Alu::Mov, R2, total);
    a.alu_imm(Alu::Mov, R3, 0);
    a.call(helper::RINGBUF_RESERVE);
    a.jump_imm(Cond::Eq, R0, 0, lost);
    a.alu_reg(Alu::Mov, R7, R0);
    a.call(if s.tai {
        helper::KTIME_GET_TAI_NS
    } else {
        helper::KTIME_GET_NS
    });
    a.store(Size::DW, R7, AT_TIME as i16, R0);
    a.load(Size::W, R1, R10, -8);
    a.store(Size::W, R7, AT_CPU as i16, R1);
    // The record, whole.
    a.alu_reg(Alu::Mov, R1, R7);
    a.alu_imm(Alu::Add, R1, HEADER as i32);
    a.alu_imm(Alu::Mov, R2, rec as i32);
    a.alu_reg(Alu::Mov, R3, R6);
    a.call(helper::PROBE_READ_KERNEL);
    let common = HEADER as i16;
    // The context, from where perf put its registers: one `struct
    // pt_regs` per context level in the per-CPU `__perf_regs[4]`, at a
    // page-aligned per-CPU offset, so the pointer's offset in its page,
    // less the variable's, is level × sizeof(struct pt_regs).
    a.load(Size::DW, R1, R7, common);
    a.store(Size::DW, R7, AT_REGS as i16, R1);
    a.alu_imm(Alu::Add, R1, -(s.perf_regs as i32));
    a.alu_imm(Alu::And, R1, 4095);
    let known = a.label();
    a.alu_imm(Alu::Mov, R3, 0);
    for (level, flag) in [
        (0, 0),
        (1, TRACE_FLAG_SOFTIRQ),
        (2, TRACE_FLAG_HARDIRQ),
        (3, TRACE_FLAG_NMI),
    ] {
        a.alu_imm(Alu::Mov, R2, flag);
        a.jump_imm(Cond::Eq, R1, level * s.regs_size as i32, known);
    }
    a.alu_imm(Alu::Mov, R2, 0);
    a.alu_imm(Alu::Mov, R3, i32::from(UNSURE));
    a.bind(known);
    a.store(Size::B, R7, common + 2, R2);
    a.store(Size::B, R7, common + 3, R3);
    // The task's name, for an event of a system call only: elsewhere the
    // task is whoever happened to run, and nobody reads it.
    let unnamed = a.label();
    a.jump_imm(Cond::Ne, R2, 0, unnamed);
    a.jump_imm(Cond::Ne, R3, 0, unnamed);
    a.alu_reg(Alu::Mov, R1, R7);
    a.alu_imm(Alu::Add, R1, AT_COMM as i32);
    a.alu_imm(Alu::Mov, R2, 16);
    a.call(helper::GET_CURRENT_COMM);
    a.bind(unnamed);
    // The pid last: R0 is clobbered by the helper.
    a.call(helper::GET_CURRENT_PID_TGID);
    a.store(Size::W, R7, common + 4, R0);
    a.store_imm(Size::H, R7, common, i32::from(f.id));
    // Wake the reader once, with the record that takes the buffer past
    // half full (the unread bytes count this record's reservation): each
    // forced wakeup queues an irq_work, a self-interrupt on its CPU, and
    // one per record until the reader catches up cost the traced
    // programs far more than the records themselves.
    a.alu_reg(Alu::Mov, R1, R8);
    a.alu_imm(Alu::Mov, R2, 0); // BPF_RB_AVAIL_DATA
    a.call(helper::RINGBUF_QUERY);
    let quiet = a.label();
    a.alu_imm(Alu::Mov, R2, 1); // BPF_RB_NO_WAKEUP
    a.jump_imm(Cond::Lt, R0, (RING_BYTES / 2) as i32, quiet);
    a.jump_imm(
        Cond::Ge,
        R0,
        (RING_BYTES / 2) as i32 + crate::sys::bpf::reserved(total as usize) as i32,
        quiet,
    );
    a.alu_imm(Alu::Mov, R2, 2); // BPF_RB_FORCE_WAKEUP
    a.bind(quiet);
    a.alu_reg(Alu::Mov, R1, R7);
    a.call(helper::RINGBUF_SUBMIT);
    a.goto(reject);
    // No room: counted.
    a.bind(lost);
    a.store_imm(Size::W, R10, -4, 0);
    a.ld_imm64(R1, Some(Pseudo::MapFd), s.lost as u64);
    a.alu_reg(Alu::Mov, R2, R10);
    a.alu_imm(Alu::Add, R2, -4);
    a.call(helper::MAP_LOOKUP_ELEM);
    a.jump_imm(Cond::Eq, R0, 0, reject);
    a.alu_imm(Alu::Mov, R1, 1);
    a.atomic_add(R0, 0, R1);
    a.bind(reject);
    a.alu_imm(Alu::Mov, R0, 0);
    a.exit();
    a.finish()
}

/// One record as a program wrote it.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    /// On the session's clock (TAI or MONOTONIC).
    pub ts: u64,
    /// The CPU it fired on.
    pub cpu: u32,
    /// The task's name, NUL-padded.
    pub comm: &'a [u8],
    /// The record, from `common_type` on.
    pub data: &'a [u8],
}

impl<'a> Raw<'a> {
    /// A ring buffer record's bytes; `None` if too short for the header.
    pub fn parse(b: &'a [u8]) -> Option<Raw<'a>> {
        let ts = u64::from_ne_bytes(b.get(AT_TIME..AT_TIME + 8)?.try_into().ok()?);
        let cpu = u32::from_ne_bytes(b.get(AT_CPU..AT_CPU + 4)?.try_into().ok()?);
        let comm = b.get(AT_COMM..AT_COMM + 16)?;
        let comm = &comm[..comm.iter().position(|&c| c == 0).unwrap_or(16)];
        Some(Raw {
            ts,
            cpu,
            comm,
            data: b.get(HEADER..)?,
        })
    }
}

/// The programs on their tracepoints, and the ring buffer they write.
pub struct Source {
    /// Each CPU's ring buffer.
    rings: Vec<crate::sys::bpf::Ring>,
    /// The buffers, edge-triggered: a ring buffer polls readable while it
    /// holds any record (`ringbuf_map_poll_kern()`), so poll(2) on it
    /// returned at once as long as events came, and the reader ran
    /// without a pause, a batch of a few records at a time, beside the
    /// traced programs. With EPOLLET it wakes on a program's wakeup only.
    epoll: nix::sys::epoll::Epoll,
    /// The time of the last record read from each buffer.
    last_ts: Vec<u64>,
    lost: OwnedFd,
    /// The perf events that hold the programs on their tracepoints:
    /// closing them takes the programs off.
    _attached: Vec<OwnedFd>,
    /// The programs, for the kernel's count of the runs it skipped.
    progs: Vec<OwnedFd>,
    clock: Clock,
    /// (tracepoint, the filter its program runs).
    filters: Vec<(String, String)>,
}

impl Source {
    /// Load and attach a program for each format (`formats`: each with its
    /// tracepoint's "system:name").
    pub fn open(formats: &[(String, Format)], filter: &Filter) -> Result<Source, Unavailable> {
        use crate::sys::bpf;
        if !cfg!(target_arch = "x86_64") {
            return Err("the BPF transport reads x86-64's per-CPU layout".into());
        }
        let btf = bpf::vmlinux_btf().map_err(|e| format!("/sys/kernel/btf/vmlinux: {e}"))?;
        let (perf_regs, size) = btf::percpu_var(&btf, "__perf_regs")
            .ok_or("this kernel's BTF has no per-CPU __perf_regs")?;
        drop(btf);
        if size % 4 != 0 || size / 4 > 1000 {
            return Err(format!("__perf_regs is {size} bytes, not 4 struct pt_regs"));
        }
        let cpus =
            bpf::possible_cpus().map_err(|e| format!("/sys/devices/system/cpu/possible: {e}"))?;
        let mut ring_fds = Vec::new();
        for _ in 0..cpus {
            ring_fds.push(bpf::ringbuf(RING_BYTES).map_err(|e| format!("a BPF ring buffer: {e}"))?);
        }
        let outer = bpf::array_of_maps(&ring_fds[0], cpus)
            .map_err(|e| format!("a BPF map of ring buffers: {e}"))?;
        for (cpu, fd) in ring_fds.iter().enumerate() {
            bpf::set_map(&outer, cpu as u32, fd)
                .map_err(|e| format!("a BPF map of ring buffers: {e}"))?;
        }
        let lost = bpf::counters(1).map_err(|e| format!("a BPF array map: {e}"))?;
        let mut shared = Shared {
            rings: outer.as_raw_fd(),
            lost: lost.as_raw_fd(),
            perf_regs,
            regs_size: size / 4,
            tai: true,
        };
        let mut attached = Vec::new();
        let mut progs = Vec::new();
        let mut filters = Vec::new();
        for (name, f) in formats {
            let k = filter.kernel_filter(f);
            let load = |s: Shared| {
                let code =
                    program(f, k.as_ref(), s).ok_or_else(|| format!("{name}: no program"))?;
                bpf::load_tracepoint(&code, &f.name).map_err(|(e, log)| {
                    // The verifier says why in its last lines, before its
                    // statistics.
                    let last = log
                        .lines()
                        .rev()
                        .map(str::trim)
                        .find(|l| {
                            !l.is_empty()
                                && !l.starts_with("processed ")
                                && !l.starts_with("verification time")
                                && !l.starts_with("stack depth")
                        })
                        .unwrap_or("");
                    format!("loading the BPF program for {name}: {e} ({last})")
                })
            };
            // CLOCK_TAI's helper is new in 6.1: else CLOCK_MONOTONIC.
            let prog = match load(shared) {
                Ok(p) => p,
                Err(_) if shared.tai && attached.is_empty() => {
                    shared.tai = false;
                    load(shared)?
                }
                Err(e) => return Err(e),
            };
            attached.push(
                bpf::attach_tracepoint(u64::from(f.id), &prog)
                    .map_err(|e| format!("attaching the BPF program to {name}: {e}"))?,
            );
            progs.push(prog);
            if let Some(k) = k.filter(|k| compiles(f, k)) {
                filters.push((name.clone(), k.to_string()));
            }
        }
        let clock = if shared.tai {
            Clock::tai()
        } else {
            Clock::mono()
        };
        let rings = ring_fds
            .into_iter()
            .map(|fd| bpf::Ring::map(fd, RING_BYTES as usize))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("mapping a BPF ring buffer: {e}"))?;
        // The programs hold the map of maps, and it the buffers.
        drop(outer);
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| format!("epoll_create: {e}"))?;
        for (i, r) in rings.iter().enumerate() {
            epoll
                .add(
                    r.fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, i as u64),
                )
                .map_err(|e| format!("epoll_ctl on a BPF ring buffer: {e}"))?;
        }
        Ok(Source {
            last_ts: vec![0; rings.len()],
            rings,
            epoll,
            lost,
            _attached: attached,
            progs,
            clock,
            filters,
        })
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// (tracepoint, the filter its program runs, in the events' filter
    /// language).
    pub fn filters(&self) -> &[(String, String)] {
        &self.filters
    }

    /// Records that found the buffer full, so far.
    pub fn lost(&self) -> u64 {
        crate::sys::bpf::counter(&self.lost, 0).unwrap_or(0)
    }

    /// Events whose program the kernel skipped so far because another
    /// BPF program (one of these, say, in a system call when a softirq
    /// came) ran on that CPU then (`trace_call_bpf()`), where the kernel
    /// counts them.
    pub fn skipped(&self) -> u64 {
        self.progs
            .iter()
            .filter_map(crate::sys::bpf::recursion_misses)
            .sum()
    }

    /// Sleep until a program wakes the reader (a buffer crossed half
    /// full) or `timeout` passes.
    pub fn poll(&self, timeout: Duration) {
        use nix::sys::epoll::{EpollEvent, EpollTimeout};
        let mut ready = [EpollEvent::empty(); 8];
        let t = EpollTimeout::try_from(timeout).unwrap_or(EpollTimeout::MAX);
        let _ = self.epoll.wait(&mut ready, t);
    }

    /// Hand the records written so far to `f`, at most `max` from each
    /// buffer (see [`Drained`]).
    pub fn drain(&mut self, max: usize, now: u64, mut f: impl FnMut(Raw<'_>)) -> Drained {
        let mut d = Drained {
            until: now,
            whole: true,
        };
        for (ring, last) in self.rings.iter_mut().zip(&mut self.last_ts) {
            let read = ring.read(max, |b| {
                if let Some(r) = Raw::parse(b) {
                    *last = r.ts;
                    f(r);
                }
            });
            if !read.to_end {
                d.until = d.until.min(*last);
                d.whole = false;
            }
        }
        d
    }
}

/// What a [`Source::drain`] handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// The time (on the programs' clock) up to which every record has now
    /// been handed over: `now`, read before the drain, unless a buffer
    /// stopped at a record still being written (or at `max`); then the
    /// time of the last record read from that buffer. Each buffer is in
    /// time order (one CPU's; a program takes the time after it reserves,
    /// and none nests in another on one CPU: `trace_call_bpf()` skips a
    /// program while another runs there), so nothing older than that
    /// time can still come from it.
    pub until: u64,
    /// Whether every buffer was read to its end.
    pub whole: bool,
}

#[cfg(test)]
mod tests;
