//! BPF instructions as the kernel reads them (include/uapi/linux/bpf.h,
//! Documentation/bpf/standardization/instruction-set.rst): 8 bytes each,
//! `code`, `dst_reg:4 src_reg:4`, `off: i16`, `imm: i32`; and a small
//! assembler with labels for forward jumps.

/// A register: R0 return value, R1–R5 arguments (clobbered by calls),
/// R6–R9 kept across calls, R10 the frame pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(pub u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R10: Reg = Reg(10);

/// Access sizes (`BPF_W`, `BPF_H`, `BPF_B`, `BPF_DW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    /// For a field of `bytes` bytes.
    pub fn of(bytes: usize) -> Option<Size> {
        Some(match bytes {
            1 => Size::B,
            2 => Size::H,
            4 => Size::W,
            8 => Size::DW,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
const K: u8 = 0x00;
const X: u8 = 0x08;
const MEM: u8 = 0x60;
const IMM: u8 = 0x00;
const ATOMIC: u8 = 0xc0;

/// ALU operations.
#[derive(Debug, Clone, Copy)]
pub enum Alu {
    Add = 0x00,
    And = 0x50,
    Mov = 0xb0,
}

/// Conditional jumps (unsigned comparisons).
#[derive(Debug, Clone, Copy)]
pub enum Cond {
    Eq = 0x10,
    Ne = 0x50,
    Ge = 0x30,
    Lt = 0xa0,
}

/// `ld_imm64` sources (`BPF_PSEUDO_MAP_FD`).
#[derive(Debug, Clone, Copy)]
pub enum Pseudo {
    MapFd = 1,
}

fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst.0 & 0xf | (src.0 & 0xf) << 4) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// A place in the program a jump goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Instructions, with jumps to labels patched when the labels are bound.
#[derive(Debug, Default)]
pub struct Asm {
    code: Vec<u64>,
    /// (instruction index, label) of each jump to patch.
    jumps: Vec<(usize, Label)>,
    /// Where each label is, once bound.
    labels: Vec<Option<usize>>,
}

impl Asm {
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// The label is here: the next instruction.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.code.len());
    }

    pub fn alu_imm(&mut self, op: Alu, dst: Reg, imm: i32) {
        self.code.push(insn(ALU64 | K | op as u8, dst, R0, 0, imm));
    }

    pub fn alu_reg(&mut self, op: Alu, dst: Reg, src: Reg) {
        self.code.push(insn(ALU64 | X | op as u8, dst, src, 0, 0));
    }

    /// dst = *(size *)(src + off).
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.code
            .push(insn(LDX | MEM | size.bits(), dst, src, off, 0));
    }

    /// *(size *)(dst + off) = src.
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) {
        self.code
            .push(insn(STX | MEM | size.bits(), dst, src, off, 0));
    }

    /// *(size *)(dst + off) = imm.
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) {
        self.code
            .push(insn(ST | MEM | size.bits(), dst, R0, off, imm));
    }

    /// Atomically *(u64 *)(dst + off) += src.
    pub fn atomic_add(&mut self, dst: Reg, off: i16, src: Reg) {
        self.code
            .push(insn(STX | ATOMIC | Size::DW.bits(), dst, src, off, 0));
    }

    /// dst = a 64-bit constant, or what `pseudo` makes of it (a map's
    /// address from its descriptor).
    pub fn ld_imm64(&mut self, dst: Reg, pseudo: Option<Pseudo>, imm: u64) {
        let src = Reg(pseudo.map_or(0, |p| p as u8));
        self.code.push(insn(
            LD | IMM | Size::DW.bits(),
            dst,
            src,
            0,
            imm as u32 as i32,
        ));
        self.code
            .push(insn(0, R0, R0, 0, (imm >> 32) as u32 as i32));
    }

    /// if dst `cond` imm goto l.
    pub fn jump_imm(&mut self, cond: Cond, dst: Reg, imm: i32, l: Label) {
        self.jumps.push((self.code.len(), l));
        self.code.push(insn(JMP | K | cond as u8, dst, R0, 0, imm));
    }

    /// if dst `cond` src goto l.
    pub fn jump_reg(&mut self, cond: Cond, dst: Reg, src: Reg, l: Label) {
        self.jumps.push((self.code.len(), l));
        self.code.push(insn(JMP | X | cond as u8, dst, src, 0, 0));
    }

    /// goto l.
    pub fn goto(&mut self, l: Label) {
        self.jumps.push((self.code.len(), l));
        self.code.push(insn(JMP, R0, R0, 0, 0));
    }

    /// Call helper number `id` (`enum bpf_func_id`).
    pub fn call(&mut self, id: i32) {
        self.code.push(insn(JMP | 0x80, R0, R0, 0, id));
    }

    pub fn exit(&mut self) {
        self.code.push(insn(JMP | 0x90, R0, R0, 0, 0));
    }

    /// The program; `None` if a label was never bound or a jump is too
    /// long for its 16-bit offset.
    pub fn finish(mut self) -> Option<Vec<u64>> {
        for &(at, l) in &self.jumps {
            let to = self.labels[l.0]?;
            let off = i16::try_from(to as i64 - at as i64 - 1).ok()?;
            let i = &mut self.code[at];
            *i = *i & !(0xffff << 16) | u64::from(off as u16) << 16;
        }
        Some(self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodings checked against the kernel's own macros
    /// (include/linux/filter.h): BPF_MOV64_IMM(R0, 0) is b7 00 0000
    /// 00000000, BPF_EXIT_INSN() is 95, BPF_LDX_MEM(BPF_H, R2, R6, 26) is
    /// 69 62 1a00, BPF_JMP_IMM(BPF_JEQ, R2, 80, +1) is 15 02 0100 50000000,
    /// BPF_LD_MAP_FD(R1, 7) is 18 11 0000 07000000 + a zero word,
    /// BPF_JMP_IMM(BPF_JGE, R0, 4096, +0) is 35 00 0000 00100000.
    #[test]
    fn instructions_encode_as_the_kernel_macros_do() {
        let mut a = Asm::default();
        let l = a.label();
        a.alu_imm(Alu::Mov, R0, 0);
        a.load(Size::H, R2, R6, 26);
        a.jump_imm(Cond::Eq, R2, 80, l);
        a.ld_imm64(R1, Some(Pseudo::MapFd), 7);
        let next = a.label();
        a.jump_imm(Cond::Ge, R0, 4096, next);
        a.bind(next);
        a.bind(l);
        a.exit();
        let p = a.finish().expect("bound");
        let hex: Vec<String> = p
            .iter()
            .map(|w| w.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        assert_eq!(
            hex,
            [
                "b700000000000000",
                "69621a0000000000",
                // Over the two slots of ld_imm64 and the JGE: +3.
                "1502030050000000",
                "1811000007000000",
                "0000000000000000",
                "3500000000100000",
                "9500000000000000",
            ]
        );
        let mut b = Asm::default();
        let never = b.label();
        b.goto(never);
        assert!(b.finish().is_none(), "a label never bound");
    }
}
