//! Just enough of BTF (Documentation/bpf/btf.rst) to find a kernel
//! variable's type id by name: what `ld_imm64 BPF_PSEUDO_BTF_ID` takes to
//! reach a per-CPU variable of the running kernel from a program.
//!
//! The type section is a run of `struct btf_type` (name_off, info, size
//! or type: 12 bytes) each followed by data whose length its kind and
//! `vlen` (info bits 0–15) fix; type ids count from 1 in that order.

/// `BTF_KIND_VAR`, `BTF_KIND_DATASEC`.
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const MAGIC: u16 = 0xeb9f;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Bytes that follow a type of `kind` with `vlen` members
/// (`btf_type_size()` in tools/lib/bpf/btf.c); `None` for a kind this
/// reader does not know (it cannot walk past it).
fn extra(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT,
        // TYPE_TAG.
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        // INT (encoding), VAR (linkage), DECL_TAG (component_idx).
        1 | 14 | 17 => 4,
        // ARRAY.
        3 => 12,
        // STRUCT, UNION (btf_member), DATASEC (btf_var_secinfo), ENUM64.
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM (btf_enum), FUNC_PROTO (btf_param).
        6 | 13 => 8 * vlen,
        _ => return None,
    })
}

/// Where the per-CPU variable `name` lies in the kernel's per-CPU section
/// and its size: (offset, size), from the `.data..percpu` DATASEC's
/// `btf_var_secinfo` of its VAR. On x86-64 the section starts at 0, so
/// the offset is the variable's address before a CPU's
/// `__per_cpu_offset` is added (`this_cpu_ptr()`).
pub fn percpu_var(b: &[u8], name: &str) -> Option<(u32, u32)> {
    let id = var_id(b, name)?;
    let mut found = None;
    walk(b, |kind, name_of, vlen, extra| {
        if kind == KIND_DATASEC && name_of == b".data..percpu" {
            found = (0..vlen).find_map(|j| {
                let at = 12 * j;
                if u32_at(extra, at)? != id {
                    return None;
                }
                Some((u32_at(extra, at + 4)?, u32_at(extra, at + 8)?))
            });
        }
        found.is_some()
    });
    found
}

/// The type id of the variable `name` in the BTF blob `b`.
pub fn var_id(b: &[u8], name: &str) -> Option<u32> {
    let mut id = 0;
    let mut found = false;
    walk(b, |kind, name_of, _, _| {
        id += 1;
        found = kind == KIND_VAR && name_of == name.as_bytes();
        found
    });
    found.then_some(id)
}

/// Call `f(kind, name, vlen, the bytes after the type)` on each type in
/// id order until it returns true.
fn walk(b: &[u8], mut f: impl FnMut(u32, &[u8], usize, &[u8]) -> bool) -> Option<()> {
    if u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?) != MAGIC {
        return None;
    }
    let hdr_len = u32_at(b, 4)? as usize;
    let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
    let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
    let types = b.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
    let strings = b.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
    let name_at = |off: usize| -> Option<&[u8]> {
        let s = strings.get(off..)?;
        Some(&s[..s.iter().position(|&c| c == 0)?])
    };
    let mut at = 0usize;
    while at + 12 <= types.len() {
        let info = u32_at(types, at + 4)?;
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let len = extra(kind, vlen)?;
        let name_of = name_at(u32_at(types, at)? as usize)?;
        if f(kind, name_of, vlen, types.get(at + 12..at + 12 + len)?) {
            return Some(());
        }
        at += 12 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob of three types (an INT, a STRUCT with two members, a VAR),
    /// laid out as the kernel lays them.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0__perf_regs\0.data..percpu\0";
        let mut t = Vec::new();
        let mut ty = |name: u32, kind: u32, vlen: u32, size: u32, extra: &[u32]| {
            for w in [name, kind << 24 | vlen, size].iter().chain(extra) {
                t.extend_from_slice(&w.to_ne_bytes());
            }
        };
        ty(1, 1, 0, 4, &[32]); // [1] int
        ty(5, 4, 2, 8, &[7, 1, 0, 9, 1, 32]); // [2] struct s { int a; int b; }
        ty(11, 14, 0, 1, &[1]); // [3] var __perf_regs: int
        ty(23, 15, 2, 0, &[1, 0, 4, 3, 0xab20, 672]); // [4] datasec
        let mut b = Vec::new();
        for w in [u32::from(MAGIC) | 1 << 16, 24, 0, t.len() as u32] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b.extend_from_slice(&(t.len() as u32).to_ne_bytes());
        b.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
        b.extend_from_slice(&t);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn a_variable_is_found_past_types_with_members() {
        let b = blob();
        assert_eq!(var_id(&b, "__perf_regs"), Some(3));
        assert_eq!(percpu_var(&b, "__perf_regs"), Some((0xab20, 672)));
        // Names of other kinds are not variables.
        assert_eq!(var_id(&b, "int"), None);
        assert_eq!(var_id(&b, "s"), None);
        // Not BTF at all.
        assert_eq!(var_id(&b[4..], "__perf_regs"), None);
        // Cut short: no panic, no answer.
        assert_eq!(var_id(&b[..40], "__perf_regs"), None);
        assert_eq!(percpu_var(&b[..b.len() - 20], "__perf_regs"), None);
    }

    /// The running kernel's BTF, where there is one: perf's per-CPU
    /// registers, one `struct pt_regs` for each of the four contexts
    /// (`__perf_regs[4]`, kernel/events/core.c), 168 bytes each on x86-64.
    #[test]
    fn the_running_kernel_places_its_per_cpu_variables() {
        let Ok(b) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux");
            return;
        };
        let (_, size) = percpu_var(&b, "__perf_regs").expect("__perf_regs in this kernel's BTF");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(size, 4 * 168);
        }
    }
}
