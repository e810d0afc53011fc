//! What the benches share: CPU placement and the median.
//!
//! On loopback a closed loop is a ping-pong between two processes, and
//! where the scheduler puts them (one CPU or two, which one wakes which)
//! moves a run by ±20 % on a small machine. The benches that compare
//! twlab with the C loop give both the same placement: the client on one
//! CPU, the server on another, when there are two.

#![allow(dead_code)]

pub mod timewait;

/// The CPUs the client and the server run on, if the machine has two.
pub fn cpus() -> Option<(usize, usize)> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n >= 2).then_some((0, 1))
}

/// The placement in words, for the benches' headers.
pub fn placement() -> String {
    match cpus() {
        Some((c, s)) => format!("client on CPU {c}, server on CPU {s}"),
        None => "one CPU".to_string(),
    }
}

/// Pin the calling thread (and the threads and processes it starts from
/// now on, which inherit its affinity) to `cpu`.
#[cfg(target_os = "linux")]
pub fn pin_thread(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Run `cmd`'s process on `cpu` only.
#[cfg(target_os = "linux")]
pub fn pin_command(cmd: &mut std::process::Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: sched_setaffinity is async-signal-safe (a system call), as
    // pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
}

/// The median (the mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
}

/// A distribution-free 95 % confidence interval of the median: the order
/// statistics k and n + 1 − k with k = ⌊n/2 − 0.98·√n⌋ (the normal
/// approximation to the binomial). None under 6 values.
pub fn median_ci95(v: &[f64]) -> Option<(f64, f64)> {
    let n = v.len();
    if n < 6 {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let k = ((n as f64) / 2.0 - 0.98 * (n as f64).sqrt())
        .floor()
        .max(1.0) as usize;
    Some((v[k - 1], v[n - k]))
}
