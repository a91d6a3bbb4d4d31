//! Device rules on cgroup v2, which has no devices controller: a BPF_PROG_TYPE_CGROUP_DEVICE
//! program built from the spec's rules and attached to the container's cgroup, as runc's
//! libcontainer/cgroups/devices does. The kernel runs it for every open and mknod of a device
//! node in the cgroup; it returns 1 to allow, 0 to deny (EPERM).
//!
//! Semantics match v1's devices.allow/devices.deny applied in order: the last rule that
//! matches a request decides. An allow rule matches when the requested access is within its
//! access; a deny rule when any requested access is in its access.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

#[derive(Debug, thiserror::Error)]
pub enum DeviceFilterError {
    #[error("opening cgroup {path} for its device program: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the cgroup device program: {0} (kernel log: {1})")]
    Load(#[source] std::io::Error, String),
    #[error("attaching the device program to cgroup {path}: {source}")]
    Attach {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One eBPF instruction (struct bpf_insn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// Opcodes (linux/bpf.h, linux/bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const JMP_EXIT: u8 = 0x95;

// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, access_type being
// (access << 16) | type.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

// Registers: r1 context, r2 access, r3 type, r4 major, r5 minor, r0 scratch and result.
const PROLOGUE: [Insn; 6] = [
    insn(LDX_MEM_W, 2, 1, 0, 0),
    insn(ALU64_MOV_X, 3, 2, 0, 0),
    insn(ALU64_AND_K, 3, 0, 0, 0xffff),
    insn(ALU64_RSH_K, 2, 0, 0, 16),
    insn(LDX_MEM_W, 4, 1, 4, 0),
    insn(LDX_MEM_W, 5, 1, 8, 0),
];

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |bits, c| match c {
        'm' => bits | ACC_MKNOD,
        'r' => bits | ACC_READ,
        'w' => bits | ACC_WRITE,
        _ => bits,
    })
}

/// The program for `rules`; a request no rule matches is denied.
pub fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut prog = PROLOGUE.to_vec();
    // Last match wins: test the rules from the last one back, the first hit decides.
    for rule in rules.iter().rev() {
        let access = access_bits(rule.access().as_deref().unwrap_or("rwm"));
        let mut checks: Vec<(u8, u8, i32)> = Vec::new(); // (jump-if-no-match opcode, reg, imm)
        match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::B => checks.push((JMP_JNE_K, 3, DEV_BLOCK)),
            LinuxDeviceType::C | LinuxDeviceType::U => checks.push((JMP_JNE_K, 3, DEV_CHAR)),
            // Pipes (p) are never device nodes; a rule for them matches nothing.
            LinuxDeviceType::P => continue,
            LinuxDeviceType::A => {}
        }
        let mut block = Vec::new();
        let mut jumps = Vec::new();
        for (op, reg, imm) in checks {
            jumps.push(block.len());
            block.push(insn(op, reg, 0, 0, imm));
        }
        block.push(insn(ALU64_MOV_X, 0, 2, 0, 0));
        if rule.allow() {
            // Any requested bit outside the rule's access: no match.
            block.push(insn(ALU64_AND_K, 0, 0, 0, 7 & !access));
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 0, 0, 0, 0));
        } else {
            block.push(insn(ALU64_AND_K, 0, 0, 0, access));
            jumps.push(block.len());
            block.push(insn(JMP_JEQ_K, 0, 0, 0, 0));
        }
        for (reg, value) in [(4, rule.major()), (5, rule.minor())] {
            if let Some(value) = value.filter(|v| *v >= 0) {
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, reg, 0, 0, value as i32));
            }
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow())));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let end = block.len();
        for at in jumps {
            // Offsets count from the instruction after the jump.
            block[at].off = (end - at - 1) as i16;
        }
        prog.extend(block);
    }
    prog.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

/// What a program returns for one request, computed by running it: the same instructions the
/// kernel gets, so unit tests check the program rather than a second model of the rules.
pub fn evaluate(prog: &[Insn], typ: i32, access: i32, major: u32, minor: u32) -> Option<u64> {
    let ctx = [((access as u32) << 16) | typ as u32, major, minor];
    let mut regs = [0u64; 11];
    let mut pc = 0usize;
    for _ in 0..prog.len() {
        let i = prog.get(pc)?;
        let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
        let imm = i.imm as i64 as u64;
        pc += 1;
        match i.code {
            LDX_MEM_W if src == 1 => regs[dst] = u64::from(*ctx.get(i.off as usize / 4)?),
            ALU64_MOV_X => regs[dst] = regs[src],
            ALU64_MOV_K => regs[dst] = imm,
            ALU64_AND_K => regs[dst] &= imm,
            ALU64_RSH_K => regs[dst] >>= imm,
            JMP_JNE_K if regs[dst] != imm => pc += i.off as usize,
            JMP_JEQ_K if regs[dst] == imm => pc += i.off as usize,
            JMP_JNE_K | JMP_JEQ_K => {}
            JMP_EXIT => return Some(regs[0]),
            _ => return None,
        }
    }
    None
}

/// union bpf_attr for BPF_PROG_LOAD, up to the fields husk sets.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// union bpf_attr for BPF_PROG_ATTACH.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn load(prog: &[Insn]) -> Result<OwnedFd, DeviceFilterError> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 16 * 1024];
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"husk_devices");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
    };
    // SAFETY: bpf(BPF_PROG_LOAD) reads the attr and the instruction, license and log buffers
    // it points to, all alive for the call, and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
        return Err(DeviceFilterError::Load(err, text));
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Load the program for `rules` and attach it to the cgroup directory `dir`. The attachment
/// holds the program; it goes with the cgroup.
pub fn attach(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), DeviceFilterError> {
    let cgroup = std::fs::File::open(dir).map_err(|source| DeviceFilterError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    let prog = load(&program(rules))?;
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: bpf(BPF_PROG_ATTACH) reads the attr, which names two descriptors we hold.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc != 0 {
        return Err(DeviceFilterError::Attach {
            path: dir.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    use super::*;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(major) = major {
            b = b.major(major).minor(3);
        }
        b.build().unwrap()
    }

    #[test]
    fn last_matching_rule_decides() {
        let rules = [
            rule(false, LinuxDeviceType::A, None, "rwm"),
            rule(true, LinuxDeviceType::C, None, "m"),
            rule(true, LinuxDeviceType::C, Some(1), "rw"),
        ];
        let prog = program(&rules);
        let run = |typ, access, major, minor| evaluate(&prog, typ, access, major, minor);
        // c 1:3 rw allowed, not mknod by that rule, but `c *:* m` allows mknod.
        assert_eq!(run(DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), Some(1));
        assert_eq!(run(DEV_CHAR, ACC_MKNOD, 1, 3), Some(1));
        assert_eq!(run(DEV_CHAR, ACC_MKNOD, 240, 0), Some(1));
        // Everything else is denied.
        assert_eq!(run(DEV_CHAR, ACC_READ, 1, 4), Some(0));
        assert_eq!(run(DEV_CHAR, ACC_READ, 240, 0), Some(0));
        assert_eq!(run(DEV_BLOCK, ACC_MKNOD, 8, 0), Some(0));
        assert_eq!(run(DEV_BLOCK, ACC_READ, 1, 3), Some(0));
    }

    #[test]
    fn a_later_deny_overrides_an_allow() {
        let rules = [
            rule(true, LinuxDeviceType::A, None, "rwm"),
            rule(false, LinuxDeviceType::B, None, "w"),
        ];
        let prog = program(&rules);
        assert_eq!(evaluate(&prog, DEV_BLOCK, ACC_WRITE, 8, 0), Some(0));
        assert_eq!(evaluate(&prog, DEV_BLOCK, ACC_READ, 8, 0), Some(1));
        assert_eq!(evaluate(&prog, DEV_CHAR, ACC_WRITE, 8, 0), Some(1));
    }
}
