//! seccomp filters for the monitor's threads. Each vCPU thread and the device event loop
//! install their filter before touching guest-controlled data, so a device-emulation bug cannot
//! be turned into arbitrary host syscalls.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `_IO(KVMIO, 0x80)`: the ioctl a vCPU thread issues after setup.
pub const KVM_RUN: u64 = 0xae80;
/// `_IOR(KVMIO, 0x81, struct kvm_regs)` and `_IOR(KVMIO, 0x83, struct kvm_sregs)`: read once,
/// when the vCPU stops the VM, to say where it stopped.
pub const KVM_GET_REGS: u64 = ior(0x81, std::mem::size_of::<kvm_bindings::kvm_regs>());
pub const KVM_GET_SREGS: u64 = ior(0x83, std::mem::size_of::<kvm_bindings::kvm_sregs>());

/// Linux's `_IOR(KVMIO, nr, size)`.
const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (0xae << 8) | nr
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("installing the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
}

/// Which monitor thread a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadRole {
    Vcpu,
    EventLoop,
    /// The thread that built the VM, in a jailed monitor process: it only waits for the
    /// others, knocks the vCPUs out of KVM_RUN, reads the exit statistics and reports.
    Main,
}

/// Syscalls every role needs: memory allocation, locks, eventfd/socket/file I/O on
/// already-open descriptors, epoll, time, signal return (the vCPU kick) and thread exit.
/// `mmap`, `mprotect`, `tgkill` and `fcntl` are not here: they are allowed with their
/// arguments checked (see `build_filter`).
const COMMON_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_futex,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
    libc::SYS_rseq,
];

/// One condition on argument `arg`.
fn arg(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    Ok(SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        op,
        value,
    )?)
}

/// A rule allowing `request` as an ioctl's second argument.
fn ioctl_request(request: u64) -> Result<SeccompRule, SeccompError> {
    Ok(SeccompRule::new(vec![SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        request,
    )?])?)
}

/// The allow-list filter for `role`; anything else gets `mismatch`. Besides the syscall
/// numbers, arguments are checked where a syscall's power lies in them (Firecracker's filters
/// do the same): no memory can be made executable, signals reach only this process's threads,
/// `fcntl` only reads descriptor flags, and each role has its own short list of ioctls.
pub fn build_filter(role: ThreadRole, mismatch: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        COMMON_SYSCALLS.iter().map(|&nr| (nr, vec![])).collect();
    // Rust's debug builds check a descriptor with F_GETFD before closing it.
    rules.insert(
        libc::SYS_fcntl,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            libc::F_GETFD as u64,
        )?])?],
    );
    // Allocation maps and protects memory, never as code: a device bug cannot stage shellcode.
    let not_executable = |prot_arg: u8| -> Result<Vec<SeccompRule>, SeccompError> {
        Ok(vec![SeccompRule::new(vec![arg(
            prot_arg,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )?])?])
    };
    rules.insert(libc::SYS_mmap, not_executable(2)?);
    rules.insert(libc::SYS_mprotect, not_executable(2)?);
    // The vCPU kick, and a thread's own panic (abort), signal this process only.
    rules.insert(
        libc::SYS_tgkill,
        vec![SeccompRule::new(vec![arg(
            0,
            SeccompCmpOp::Eq,
            u64::from(std::process::id()),
        )?])?],
    );
    match role {
        ThreadRole::Vcpu => {
            let ioctls = [KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS]
                .into_iter()
                .map(ioctl_request)
                .collect::<Result<_, _>>()?;
            rules.insert(libc::SYS_ioctl, ioctls);
        }
        ThreadRole::Main => {
            // `husk vm boot --debug` puts its terminal back as it found it.
            let terminal = [libc::TCGETS, libc::TCSETS]
                .into_iter()
                .map(|request| {
                    Ok(SeccompRule::new(vec![
                        arg(0, SeccompCmpOp::Eq, libc::STDIN_FILENO as u64)?,
                        SeccompCondition::new(
                            1,
                            SeccompCmpArgLen::Dword,
                            SeccompCmpOp::Eq,
                            request,
                        )?,
                    ])?)
                })
                .collect::<Result<_, SeccompError>>()?;
            rules.insert(libc::SYS_ioctl, terminal);
            // Putting SIGTERM's and SIGINT's dispositions back as the run found them.
            rules.insert(libc::SYS_rt_sigaction, vec![]);
        }
        ThreadRole::EventLoop => {}
    }
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)?;
    Ok(filter.try_into()?)
}

/// Install the filter on the calling thread (irreversible for that thread).
pub fn apply(role: ThreadRole, mismatch: SeccompAction) -> Result<(), SeccompError> {
    let prog = build_filter(role, mismatch)?;
    seccompiler::apply_filter(&prog)?;
    Ok(())
}
