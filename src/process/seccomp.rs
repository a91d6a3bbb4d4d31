//! The spec's OCI seccomp profile compiled to BPF with seccompiler, and installed without
//! installed by rootfs_agent::confine without forcing no_new_privs (seccompiler's installer
//! always sets it; Docker only does on request).

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use rootfs_agent::confine::BpfInstruction;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp is not supported by husk on {0}")]
    UnsupportedArch(&'static str),
    #[error("seccomp action {0:?} is not supported")]
    UnsupportedAction(LinuxSeccompAction),
    #[error("seccomp argument index {0} out of range (0-5)")]
    BadArgument(usize),
    #[error("compiling seccomp filter: {0}")]
    Compile(#[from] seccompiler::BackendError),
}

/// seccompiler's filter: one mismatch action, one match action, rules per syscall number.
struct FilterParts {
    mismatch: SeccompAction,
    matched: SeccompAction,
    rules: BTreeMap<i64, Vec<SeccompRule>>,
}

/// Compile `profile` into BPF programs, in the order they must be installed.
///
/// seccompiler filters have a single match action, so the profile becomes one filter per
/// action. The kernel runs every installed filter and keeps the most severe verdict, the
/// latest-installed filter winning ties: the default-action filter goes first (everything it
/// does not allow gets the default action), then one filter per other action that allows
/// whatever it does not match, so e.g. clone3's ENOSYS overrides the default EPERM.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = target_arch()?;
    if syscall_number("read").is_none() {
        // No name table for this architecture: an allowlist would block everything.
        return Err(SeccompError::UnsupportedArch(std::env::consts::ARCH));
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut filters: Vec<FilterParts> = vec![FilterParts {
        mismatch: default.clone(),
        matched: SeccompAction::Allow,
        rules: BTreeMap::new(),
    }];
    // What the default filter must let through because another filter decides it: the
    // syscall under that filter's conditions (only those: for other arguments the default
    // filter's own rules still apply).
    let mut decided_elsewhere: Vec<(i64, Vec<SeccompCondition>)> = Vec::new();

    for syscall in profile.syscalls().iter().flatten() {
        let wanted = action(syscall.action(), syscall.errno_ret())?;
        if wanted == default {
            continue;
        }
        let conditions = match syscall.args() {
            Some(args) => args
                .iter()
                .map(|a| condition(a.index(), a.value(), a.value_two(), a.op()))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let index = match filters.iter().position(|f| f.matched == wanted) {
            Some(index) => index,
            None => {
                filters.push(FilterParts {
                    mismatch: SeccompAction::Allow,
                    matched: wanted.clone(),
                    rules: BTreeMap::new(),
                });
                filters.len() - 1
            }
        };
        for name in syscall.names() {
            // Like libseccomp, names unknown on this architecture are skipped.
            let Some(nr) = syscall_number(name) else {
                continue;
            };
            if index != 0 {
                decided_elsewhere.push((nr, conditions.clone()));
            }
            add_rule(&mut filters[index].rules, nr, &conditions)?;
        }
    }
    if default != SeccompAction::Allow {
        for (nr, conditions) in decided_elsewhere {
            add_rule(&mut filters[0].rules, nr, &conditions)?;
        }
    }

    let mut programs = Vec::new();
    for parts in filters {
        if parts.mismatch == parts.matched {
            continue;
        }
        if parts.rules.is_empty() && parts.mismatch == SeccompAction::Allow {
            continue;
        }
        let filter = SeccompFilter::new(parts.rules, parts.mismatch, parts.matched, arch)?;
        programs.push(BpfProgram::try_from(filter)?);
    }
    Ok(programs)
}

/// An empty rule list in seccompiler means "match unconditionally", which must win over any
/// conditional rule for the same syscall.
fn add_rule(
    rules: &mut BTreeMap<i64, Vec<SeccompRule>>,
    nr: i64,
    conditions: &[SeccompCondition],
) -> Result<(), SeccompError> {
    if conditions.is_empty() {
        rules.insert(nr, Vec::new());
        return Ok(());
    }
    match rules.get_mut(&nr) {
        Some(existing) if existing.is_empty() => {}
        Some(existing) => existing.push(SeccompRule::new(conditions.to_vec())?),
        None => {
            rules.insert(nr, vec![SeccompRule::new(conditions.to_vec())?]);
        }
    }
    Ok(())
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        other @ LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::UnsupportedAction(other))
        }
    })
}

fn condition(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> Result<SeccompCondition, SeccompError> {
    let arg = u8::try_from(index)
        .ok()
        .filter(|i| *i <= 5)
        .ok_or(SeccompError::BadArgument(index))?;
    let (op, operand) = match op {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, value),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, value),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, value),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, value),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, value),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, value),
        // OCI/libseccomp: (arg & value) == valueTwo.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            (SeccompCmpOp::MaskedEq(value), value_two.unwrap_or(0))
        }
    };
    Ok(SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        op,
        operand,
    )?)
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::UnsupportedArch(std::env::consts::ARCH))
}

/// The compiled programs in the shape the shared confinement installs
/// (rootfs_agent::confine, used by husk's init and by the guest agent alike).
pub fn to_instructions(programs: &[BpfProgram]) -> Vec<Vec<BpfInstruction>> {
    programs
        .iter()
        .map(|program| {
            program
                .iter()
                .map(|i| BpfInstruction(i.code, i.jt, i.jf, i.k))
                .collect()
        })
        .collect()
}

/// The native number of a syscall by name. libc's constants make the table exact for the
/// architecture; names it lacks are reported as unknown (and skipped, as libseccomp does).
#[cfg(target_arch = "x86_64")]
pub fn syscall_number(name: &str) -> Option<i64> {
    let nr = match name {
        "_sysctl" => libc::SYS__sysctl,
        "accept" => libc::SYS_accept,
        "accept4" => libc::SYS_accept4,
        "access" => libc::SYS_access,
        "acct" => libc::SYS_acct,
        "add_key" => libc::SYS_add_key,
        "adjtimex" => libc::SYS_adjtimex,
        "alarm" => libc::SYS_alarm,
        "arch_prctl" => libc::SYS_arch_prctl,
        "bind" => libc::SYS_bind,
        "bpf" => libc::SYS_bpf,
        "brk" => libc::SYS_brk,
        "capget" => libc::SYS_capget,
        "capset" => libc::SYS_capset,
        "chdir" => libc::SYS_chdir,
        "chmod" => libc::SYS_chmod,
        "chown" => libc::SYS_chown,
        "chroot" => libc::SYS_chroot,
        "clock_adjtime" => libc::SYS_clock_adjtime,
        "clock_getres" => libc::SYS_clock_getres,
        "clock_gettime" => libc::SYS_clock_gettime,
        "clock_nanosleep" => libc::SYS_clock_nanosleep,
        "clock_settime" => libc::SYS_clock_settime,
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        "close" => libc::SYS_close,
        "close_range" => libc::SYS_close_range,
        "connect" => libc::SYS_connect,
        "copy_file_range" => libc::SYS_copy_file_range,
        "creat" => libc::SYS_creat,
        "delete_module" => libc::SYS_delete_module,
        "dup" => libc::SYS_dup,
        "dup2" => libc::SYS_dup2,
        "dup3" => libc::SYS_dup3,
        "epoll_create" => libc::SYS_epoll_create,
        "epoll_create1" => libc::SYS_epoll_create1,
        "epoll_ctl" => libc::SYS_epoll_ctl,
        "epoll_pwait" => libc::SYS_epoll_pwait,
        "epoll_pwait2" => libc::SYS_epoll_pwait2,
        "epoll_wait" => libc::SYS_epoll_wait,
        "eventfd" => libc::SYS_eventfd,
        "eventfd2" => libc::SYS_eventfd2,
        "execve" => libc::SYS_execve,
        "execveat" => libc::SYS_execveat,
        "exit" => libc::SYS_exit,
        "exit_group" => libc::SYS_exit_group,
        "faccessat" => libc::SYS_faccessat,
        "faccessat2" => libc::SYS_faccessat2,
        "fadvise64" => libc::SYS_fadvise64,
        "fallocate" => libc::SYS_fallocate,
        "fanotify_init" => libc::SYS_fanotify_init,
        "fanotify_mark" => libc::SYS_fanotify_mark,
        "fchdir" => libc::SYS_fchdir,
        "fchmod" => libc::SYS_fchmod,
        "fchmodat" => libc::SYS_fchmodat,
        "fchown" => libc::SYS_fchown,
        "fchownat" => libc::SYS_fchownat,
        "fcntl" => libc::SYS_fcntl,
        "fdatasync" => libc::SYS_fdatasync,
        "fgetxattr" => libc::SYS_fgetxattr,
        "finit_module" => libc::SYS_finit_module,
        "flistxattr" => libc::SYS_flistxattr,
        "flock" => libc::SYS_flock,
        "fork" => libc::SYS_fork,
        "fremovexattr" => libc::SYS_fremovexattr,
        "fsconfig" => libc::SYS_fsconfig,
        "fsetxattr" => libc::SYS_fsetxattr,
        "fsmount" => libc::SYS_fsmount,
        "fsopen" => libc::SYS_fsopen,
        "fspick" => libc::SYS_fspick,
        "fstat" => libc::SYS_fstat,
        "fstatfs" => libc::SYS_fstatfs,
        "fsync" => libc::SYS_fsync,
        "ftruncate" => libc::SYS_ftruncate,
        "futex" => libc::SYS_futex,
        "futimesat" => libc::SYS_futimesat,
        "get_mempolicy" => libc::SYS_get_mempolicy,
        "get_robust_list" => libc::SYS_get_robust_list,
        "get_thread_area" => libc::SYS_get_thread_area,
        "getcpu" => libc::SYS_getcpu,
        "getcwd" => libc::SYS_getcwd,
        "getdents" => libc::SYS_getdents,
        "getdents64" => libc::SYS_getdents64,
        "getegid" => libc::SYS_getegid,
        "geteuid" => libc::SYS_geteuid,
        "getgid" => libc::SYS_getgid,
        "getgroups" => libc::SYS_getgroups,
        "getitimer" => libc::SYS_getitimer,
        "getpeername" => libc::SYS_getpeername,
        "getpgid" => libc::SYS_getpgid,
        "getpgrp" => libc::SYS_getpgrp,
        "getpid" => libc::SYS_getpid,
        "getppid" => libc::SYS_getppid,
        "getpriority" => libc::SYS_getpriority,
        "getrandom" => libc::SYS_getrandom,
        "getresgid" => libc::SYS_getresgid,
        "getresuid" => libc::SYS_getresuid,
        "getrlimit" => libc::SYS_getrlimit,
        "getrusage" => libc::SYS_getrusage,
        "getsid" => libc::SYS_getsid,
        "getsockname" => libc::SYS_getsockname,
        "getsockopt" => libc::SYS_getsockopt,
        "gettid" => libc::SYS_gettid,
        "gettimeofday" => libc::SYS_gettimeofday,
        "getuid" => libc::SYS_getuid,
        "getxattr" => libc::SYS_getxattr,
        "init_module" => libc::SYS_init_module,
        "inotify_add_watch" => libc::SYS_inotify_add_watch,
        "inotify_init" => libc::SYS_inotify_init,
        "inotify_init1" => libc::SYS_inotify_init1,
        "inotify_rm_watch" => libc::SYS_inotify_rm_watch,
        "io_cancel" => libc::SYS_io_cancel,
        "io_destroy" => libc::SYS_io_destroy,
        "io_getevents" => libc::SYS_io_getevents,
        "io_setup" => libc::SYS_io_setup,
        "io_submit" => libc::SYS_io_submit,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "ioctl" => libc::SYS_ioctl,
        "ioperm" => libc::SYS_ioperm,
        "iopl" => libc::SYS_iopl,
        "ioprio_get" => libc::SYS_ioprio_get,
        "ioprio_set" => libc::SYS_ioprio_set,
        "kcmp" => libc::SYS_kcmp,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "kexec_load" => libc::SYS_kexec_load,
        "keyctl" => libc::SYS_keyctl,
        "kill" => libc::SYS_kill,
        "landlock_add_rule" => libc::SYS_landlock_add_rule,
        "landlock_create_ruleset" => libc::SYS_landlock_create_ruleset,
        "landlock_restrict_self" => libc::SYS_landlock_restrict_self,
        "lchown" => libc::SYS_lchown,
        "lgetxattr" => libc::SYS_lgetxattr,
        "link" => libc::SYS_link,
        "linkat" => libc::SYS_linkat,
        "listen" => libc::SYS_listen,
        "listxattr" => libc::SYS_listxattr,
        "llistxattr" => libc::SYS_llistxattr,
        "lookup_dcookie" => libc::SYS_lookup_dcookie,
        "lremovexattr" => libc::SYS_lremovexattr,
        "lseek" => libc::SYS_lseek,
        "lsetxattr" => libc::SYS_lsetxattr,
        "lstat" => libc::SYS_lstat,
        "madvise" => libc::SYS_madvise,
        "mbind" => libc::SYS_mbind,
        "membarrier" => libc::SYS_membarrier,
        "memfd_create" => libc::SYS_memfd_create,
        "memfd_secret" => libc::SYS_memfd_secret,
        "mincore" => libc::SYS_mincore,
        "mkdir" => libc::SYS_mkdir,
        "mkdirat" => libc::SYS_mkdirat,
        "mknod" => libc::SYS_mknod,
        "mknodat" => libc::SYS_mknodat,
        "mlock" => libc::SYS_mlock,
        "mlock2" => libc::SYS_mlock2,
        "mlockall" => libc::SYS_mlockall,
        "mmap" => libc::SYS_mmap,
        "modify_ldt" => libc::SYS_modify_ldt,
        "mount" => libc::SYS_mount,
        "mount_setattr" => libc::SYS_mount_setattr,
        "move_mount" => libc::SYS_move_mount,
        "mprotect" => libc::SYS_mprotect,
        "mq_getsetattr" => libc::SYS_mq_getsetattr,
        "mq_notify" => libc::SYS_mq_notify,
        "mq_open" => libc::SYS_mq_open,
        "mq_timedreceive" => libc::SYS_mq_timedreceive,
        "mq_timedsend" => libc::SYS_mq_timedsend,
        "mq_unlink" => libc::SYS_mq_unlink,
        "mremap" => libc::SYS_mremap,
        "msgctl" => libc::SYS_msgctl,
        "msgget" => libc::SYS_msgget,
        "msgrcv" => libc::SYS_msgrcv,
        "msgsnd" => libc::SYS_msgsnd,
        "msync" => libc::SYS_msync,
        "munlock" => libc::SYS_munlock,
        "munlockall" => libc::SYS_munlockall,
        "munmap" => libc::SYS_munmap,
        "name_to_handle_at" => libc::SYS_name_to_handle_at,
        "nanosleep" => libc::SYS_nanosleep,
        "newfstatat" => libc::SYS_newfstatat,
        "open" => libc::SYS_open,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "open_tree" => libc::SYS_open_tree,
        "openat" => libc::SYS_openat,
        "openat2" => libc::SYS_openat2,
        "pause" => libc::SYS_pause,
        "perf_event_open" => libc::SYS_perf_event_open,
        "personality" => libc::SYS_personality,
        "pidfd_getfd" => libc::SYS_pidfd_getfd,
        "pidfd_open" => libc::SYS_pidfd_open,
        "pidfd_send_signal" => libc::SYS_pidfd_send_signal,
        "pipe" => libc::SYS_pipe,
        "pipe2" => libc::SYS_pipe2,
        "pivot_root" => libc::SYS_pivot_root,
        "pkey_alloc" => libc::SYS_pkey_alloc,
        "pkey_free" => libc::SYS_pkey_free,
        "pkey_mprotect" => libc::SYS_pkey_mprotect,
        "poll" => libc::SYS_poll,
        "ppoll" => libc::SYS_ppoll,
        "prctl" => libc::SYS_prctl,
        "pread64" => libc::SYS_pread64,
        "preadv" => libc::SYS_preadv,
        "preadv2" => libc::SYS_preadv2,
        "prlimit64" => libc::SYS_prlimit64,
        "process_madvise" => libc::SYS_process_madvise,
        "process_mrelease" => libc::SYS_process_mrelease,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "pselect6" => libc::SYS_pselect6,
        "ptrace" => libc::SYS_ptrace,
        "pwrite64" => libc::SYS_pwrite64,
        "pwritev" => libc::SYS_pwritev,
        "pwritev2" => libc::SYS_pwritev2,
        "quotactl" => libc::SYS_quotactl,
        "read" => libc::SYS_read,
        "readahead" => libc::SYS_readahead,
        "readlink" => libc::SYS_readlink,
        "readlinkat" => libc::SYS_readlinkat,
        "readv" => libc::SYS_readv,
        "reboot" => libc::SYS_reboot,
        "recvfrom" => libc::SYS_recvfrom,
        "recvmmsg" => libc::SYS_recvmmsg,
        "recvmsg" => libc::SYS_recvmsg,
        "remap_file_pages" => libc::SYS_remap_file_pages,
        "removexattr" => libc::SYS_removexattr,
        "rename" => libc::SYS_rename,
        "renameat" => libc::SYS_renameat,
        "renameat2" => libc::SYS_renameat2,
        "request_key" => libc::SYS_request_key,
        "restart_syscall" => libc::SYS_restart_syscall,
        "rmdir" => libc::SYS_rmdir,
        "rseq" => libc::SYS_rseq,
        "rt_sigaction" => libc::SYS_rt_sigaction,
        "rt_sigpending" => libc::SYS_rt_sigpending,
        "rt_sigprocmask" => libc::SYS_rt_sigprocmask,
        "rt_sigqueueinfo" => libc::SYS_rt_sigqueueinfo,
        "rt_sigreturn" => libc::SYS_rt_sigreturn,
        "rt_sigsuspend" => libc::SYS_rt_sigsuspend,
        "rt_sigtimedwait" => libc::SYS_rt_sigtimedwait,
        "rt_tgsigqueueinfo" => libc::SYS_rt_tgsigqueueinfo,
        "sched_get_priority_max" => libc::SYS_sched_get_priority_max,
        "sched_get_priority_min" => libc::SYS_sched_get_priority_min,
        "sched_getaffinity" => libc::SYS_sched_getaffinity,
        "sched_getattr" => libc::SYS_sched_getattr,
        "sched_getparam" => libc::SYS_sched_getparam,
        "sched_getscheduler" => libc::SYS_sched_getscheduler,
        "sched_rr_get_interval" => libc::SYS_sched_rr_get_interval,
        "sched_setaffinity" => libc::SYS_sched_setaffinity,
        "sched_setattr" => libc::SYS_sched_setattr,
        "sched_setparam" => libc::SYS_sched_setparam,
        "sched_setscheduler" => libc::SYS_sched_setscheduler,
        "sched_yield" => libc::SYS_sched_yield,
        "seccomp" => libc::SYS_seccomp,
        "select" => libc::SYS_select,
        "semctl" => libc::SYS_semctl,
        "semget" => libc::SYS_semget,
        "semop" => libc::SYS_semop,
        "semtimedop" => libc::SYS_semtimedop,
        "sendfile" => libc::SYS_sendfile,
        "sendmmsg" => libc::SYS_sendmmsg,
        "sendmsg" => libc::SYS_sendmsg,
        "sendto" => libc::SYS_sendto,
        "set_mempolicy" => libc::SYS_set_mempolicy,
        "set_robust_list" => libc::SYS_set_robust_list,
        "set_thread_area" => libc::SYS_set_thread_area,
        "set_tid_address" => libc::SYS_set_tid_address,
        "setdomainname" => libc::SYS_setdomainname,
        "setfsgid" => libc::SYS_setfsgid,
        "setfsuid" => libc::SYS_setfsuid,
        "setgid" => libc::SYS_setgid,
        "setgroups" => libc::SYS_setgroups,
        "sethostname" => libc::SYS_sethostname,
        "setitimer" => libc::SYS_setitimer,
        "setns" => libc::SYS_setns,
        "setpgid" => libc::SYS_setpgid,
        "setpriority" => libc::SYS_setpriority,
        "setregid" => libc::SYS_setregid,
        "setresgid" => libc::SYS_setresgid,
        "setresuid" => libc::SYS_setresuid,
        "setreuid" => libc::SYS_setreuid,
        "setrlimit" => libc::SYS_setrlimit,
        "setsid" => libc::SYS_setsid,
        "setsockopt" => libc::SYS_setsockopt,
        "settimeofday" => libc::SYS_settimeofday,
        "setuid" => libc::SYS_setuid,
        "setxattr" => libc::SYS_setxattr,
        "shmat" => libc::SYS_shmat,
        "shmctl" => libc::SYS_shmctl,
        "shmdt" => libc::SYS_shmdt,
        "shmget" => libc::SYS_shmget,
        "shutdown" => libc::SYS_shutdown,
        "sigaltstack" => libc::SYS_sigaltstack,
        "signalfd" => libc::SYS_signalfd,
        "signalfd4" => libc::SYS_signalfd4,
        "socket" => libc::SYS_socket,
        "socketpair" => libc::SYS_socketpair,
        "splice" => libc::SYS_splice,
        "stat" => libc::SYS_stat,
        "statfs" => libc::SYS_statfs,
        "statx" => libc::SYS_statx,
        "swapoff" => libc::SYS_swapoff,
        "swapon" => libc::SYS_swapon,
        "symlink" => libc::SYS_symlink,
        "symlinkat" => libc::SYS_symlinkat,
        "sync" => libc::SYS_sync,
        "sync_file_range" => libc::SYS_sync_file_range,
        "syncfs" => libc::SYS_syncfs,
        "sysinfo" => libc::SYS_sysinfo,
        "syslog" => libc::SYS_syslog,
        "tee" => libc::SYS_tee,
        "tgkill" => libc::SYS_tgkill,
        "time" => libc::SYS_time,
        "timer_create" => libc::SYS_timer_create,
        "timer_delete" => libc::SYS_timer_delete,
        "timer_getoverrun" => libc::SYS_timer_getoverrun,
        "timer_gettime" => libc::SYS_timer_gettime,
        "timer_settime" => libc::SYS_timer_settime,
        "timerfd_create" => libc::SYS_timerfd_create,
        "timerfd_gettime" => libc::SYS_timerfd_gettime,
        "timerfd_settime" => libc::SYS_timerfd_settime,
        "times" => libc::SYS_times,
        "tkill" => libc::SYS_tkill,
        "truncate" => libc::SYS_truncate,
        "umask" => libc::SYS_umask,
        "umount2" => libc::SYS_umount2,
        "uname" => libc::SYS_uname,
        "unlink" => libc::SYS_unlink,
        "unlinkat" => libc::SYS_unlinkat,
        "unshare" => libc::SYS_unshare,
        "userfaultfd" => libc::SYS_userfaultfd,
        "ustat" => libc::SYS_ustat,
        "utime" => libc::SYS_utime,
        "utimensat" => libc::SYS_utimensat,
        "utimes" => libc::SYS_utimes,
        "vfork" => libc::SYS_vfork,
        "vhangup" => libc::SYS_vhangup,
        "vmsplice" => libc::SYS_vmsplice,
        "wait4" => libc::SYS_wait4,
        "waitid" => libc::SYS_waitid,
        "write" => libc::SYS_write,
        "writev" => libc::SYS_writev,
        // Newer than the libc crate's x86_64 table (numbers from the kernel's syscall_64.tbl).
        "cachestat" => 451,
        "fchmodat2" => 452,
        "futex_requeue" => 456,
        "futex_wait" => 455,
        "futex_waitv" => 449,
        "futex_wake" => 454,
        "io_pgetevents" => 333,
        "map_shadow_stack" => 453,
        "quotactl_fd" => 443,
        "set_mempolicy_home_node" => 450,
        _ => return None,
    };
    Some(nr)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn syscall_number(_name: &str) -> Option<i64> {
    None
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{Capability, LinuxSeccompBuilder, LinuxSyscallBuilder};

    use super::*;
    use crate::container::spec::default_seccomp;

    fn docker_default() -> LinuxSeccomp {
        let caps: Vec<Capability> = crate::container::spec::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| crate::container::spec::parse_capability(c).unwrap())
            .collect();
        default_seccomp(&caps).unwrap()
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_profile_syscall_name_is_known() {
        let all = crate::container::spec::all_capabilities();
        for syscall in default_seccomp(&all).unwrap().syscalls().iter().flatten() {
            for name in syscall.names() {
                assert!(
                    syscall_number(name).is_some(),
                    "{name} has no syscall number"
                );
            }
        }
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("clone3"), Some(435));
        assert_eq!(syscall_number("no_such_call"), None);
    }

    #[test]
    fn default_profile_compiles_to_ordered_filters() {
        let programs = compile(&docker_default()).unwrap();
        // The EPERM allowlist, then the ENOSYS filter for clone3.
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn notify_is_rejected() {
        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![LinuxSyscallBuilder::default()
                .names(vec!["mount".to_string()])
                .action(LinuxSeccompAction::ScmpActNotify)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        assert!(matches!(
            compile(&profile),
            Err(SeccompError::UnsupportedAction(_))
        ));
    }

    /// Installs the default profile in a forked child (no privileges needed: the child sets
    /// no_new_privs) and reports each probed syscall's errno through the exit status.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn default_profile_blocks_in_a_real_process() {
        let programs = compile(&docker_default()).unwrap();
        let confinement =
            rootfs_agent::confine::Confinement::new(None, None, true, to_instructions(&programs))
                .unwrap();
        let probe = |nr: libc::c_long, args: [libc::c_ulong; 2]| -> i32 {
            // SAFETY: the child only makes raw syscalls and _exits; it allocates nothing, so
            // forking a multithreaded test process is sound.
            match unsafe { libc::fork() } {
                0 => {
                    // SAFETY: the confinement's raw calls, the probed syscall (harmless or invalid arguments: the
                    // filter answers first, and a child it lets through exits at once) and
                    // _exit, in the freshly forked child.
                    unsafe {
                        if confinement.apply().is_err() {
                            libc::_exit(200);
                        }
                        let rc = libc::syscall(nr, args[0], args[1], 0, 0, 0);
                        let errno = *libc::__errno_location();
                        libc::_exit(if rc == -1 { errno } else { 0 });
                    }
                }
                pid => {
                    let mut status = 0;
                    // SAFETY: waiting for the child forked above.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    assert!(libc::WIFEXITED(status), "probe child died: {status:#x}");
                    libc::WEXITSTATUS(status)
                }
            }
        };
        let clone_newnet = libc::CLONE_NEWNET as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
        assert_eq!(
            probe(libc::SYS_unshare, [libc::CLONE_NEWUTS as libc::c_ulong, 0]),
            libc::EPERM
        );
        assert_eq!(probe(libc::SYS_mount, [0, 0]), libc::EPERM);
        assert_eq!(probe(libc::SYS_keyctl, [0, 0]), libc::EPERM);
        assert_eq!(probe(libc::SYS_clone3, [0, 0]), libc::ENOSYS);
        assert_eq!(probe(libc::SYS_clone, [clone_newnet, 0]), libc::EPERM);
        assert_eq!(probe(libc::SYS_getpid, [0, 0]), 0);
        // Docker parity: no io_uring, no vsock sockets, personality only as Docker allows.
        assert_eq!(probe(libc::SYS_io_uring_setup, [1, 0]), libc::EPERM);
        assert_eq!(probe(libc::SYS_io_uring_enter, [0, 0]), libc::EPERM);
        assert_eq!(probe(libc::SYS_io_uring_register, [0, 0]), libc::EPERM);
        let stream = libc::SOCK_STREAM as libc::c_ulong;
        assert_eq!(
            probe(libc::SYS_socket, [libc::AF_VSOCK as libc::c_ulong, stream]),
            libc::EPERM
        );
        assert_eq!(
            probe(libc::SYS_socket, [libc::AF_UNIX as libc::c_ulong, stream]),
            0
        );
        for allowed in [0, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(
                probe(libc::SYS_personality, [allowed, 0]),
                0,
                "{allowed:#x}"
            );
        }
        let addr_no_randomize = 0x0040000;
        assert_eq!(
            probe(libc::SYS_personality, [addr_no_randomize, 0]),
            libc::EPERM
        );
    }

    /// A syscall allowed for some arguments and given another action for others: the other
    /// action's filter must not turn the allowlist's condition into "always allowed".
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_conditional_allow_stays_conditional_when_another_action_shares_the_syscall() {
        use oci_spec::runtime::LinuxSeccompArgBuilder;
        let arg_is = |value: u64| {
            vec![LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(value)
                .op(LinuxSeccompOperator::ScmpCmpEq)
                .build()
                .unwrap()]
        };
        let rule = |names: &[&str], action, errno: Option<u32>, args| {
            let mut b = LinuxSyscallBuilder::default()
                .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .action(action);
            if let Some(errno) = errno {
                b = b.errno_ret(errno);
            }
            if let Some(args) = args {
                b = b.args(args);
            }
            b.build().unwrap()
        };
        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .default_errno_ret(libc::EPERM as u32)
            .syscalls(vec![
                rule(
                    &["exit_group", "exit", "prctl", "seccomp"],
                    LinuxSeccompAction::ScmpActAllow,
                    None,
                    None,
                ),
                rule(
                    &["personality"],
                    LinuxSeccompAction::ScmpActAllow,
                    None,
                    Some(arg_is(0xffff_ffff)),
                ),
                rule(
                    &["personality"],
                    LinuxSeccompAction::ScmpActErrno,
                    Some(libc::ENOSYS as u32),
                    Some(arg_is(0x8)),
                ),
            ])
            .build()
            .unwrap();
        let programs = compile(&profile).unwrap();
        let confinement =
            rootfs_agent::confine::Confinement::new(None, None, true, to_instructions(&programs))
                .unwrap();
        let probe = |persona: libc::c_ulong| -> i32 {
            // SAFETY: the child only makes raw syscalls and _exits (see above).
            match unsafe { libc::fork() } {
                0 => {
                    // SAFETY: the confinement's raw calls, personality and _exit in the freshly forked child.
                    unsafe {
                        if confinement.apply().is_err() {
                            libc::_exit(200);
                        }
                        let rc = libc::syscall(libc::SYS_personality, persona);
                        let errno = *libc::__errno_location();
                        libc::_exit(if rc == -1 { errno } else { 0 });
                    }
                }
                pid => {
                    let mut status = 0;
                    // SAFETY: waiting for the child forked above.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    assert!(libc::WIFEXITED(status), "probe child died: {status:#x}");
                    libc::WEXITSTATUS(status)
                }
            }
        };
        assert_eq!(probe(0xffff_ffff), 0);
        assert_eq!(probe(0x8), libc::ENOSYS);
        assert_eq!(probe(0x0040000), libc::EPERM, "allowed by neither rule");
    }
}
