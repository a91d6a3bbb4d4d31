//! The exec trampoline: a tiny static program, held in a sealed memfd, that a container's init
//! and every `exec`'d process execve into right before the container command.
//!
//! Why: those processes are clones of husk until execve, so `/proc/self/exe` names the host's
//! husk binary. A container command that is a `#!/proc/self/exe` script is exec'd by the kernel
//! with that interpreter resolved in the exec'ing process: it would run (and, with CVE-2019-5736
//! tricks, could rewrite) the host binary. Going through the trampoline makes the process that
//! exec's the command one whose executable is this sealed memfd: nothing in it can be written,
//! and run as an interpreter (its argv[0] is then the `#!` path, never the marker below, which
//! holds a space no `#!` line can carry) it refuses with exit code 126. runc answers the same
//! attack with a sealed copy of itself (libcontainer/dmz, cloned_binary.go); copying husk
//! (megabytes) on every start would cost far more than this 300-byte program.
//!
//! Protocol: argv = [MARKER, path, argv0, argv1, ...], the environment as given, and husk's
//! error pipe on descriptor 3 without close-on-exec. The trampoline marks 3 close-on-exec and
//! calls execve(path, &argv[2..], envp). If that fails it writes [CODE_EXEC_ERRNO, errno as 4
//! little-endian bytes] to descriptor 3 and exits 127, so husk reports the failure exactly as
//! if it had exec'd the command itself.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the exec trampoline is x86-64 machine code: add the target's version");

/// argv[0] the trampoline requires: a `#!` interpreter path cannot contain a space.
pub const MARKER: &str = "husk dmz";

/// The first byte of the trampoline's report when execve of the command failed.
pub const CODE_EXEC_ERRNO: u8 = 1;

/// The descriptor the trampoline reports on.
pub const REPORT_FD: RawFd = 3;

/// The program's code, loaded at [`BASE`] + [`CODE_OFFSET`]. Assembled from (Intel syntax):
/// ```text
///     mov  rcx, [rsp]              ; argc
///     cmp  rcx, 3
///     jb   refuse
///     mov  rdi, [rsp+8]            ; argv[0] must be "husk dmz\0"
///     movabs rax, 0x7a6d64206b737568
///     cmp  [rdi], rax
///     jne  refuse
///     cmp  byte ptr [rdi+8], 0
///     jne  refuse
///     mov  eax, 72                 ; fcntl(3, F_SETFD, FD_CLOEXEC)
///     mov  edi, 3
///     mov  esi, 2
///     mov  edx, 1
///     syscall
///     mov  rdi, [rsp+16]           ; execve(argv[1], &argv[2], envp)
///     lea  rsi, [rsp+24]
///     mov  rcx, [rsp]
///     lea  rdx, [rsp+rcx*8+16]     ; envp = &argv[argc + 1]
///     mov  eax, 59
///     syscall
///     neg  eax                     ; failed: report [1, errno] on fd 3
///     sub  rsp, 8
///     mov  byte ptr [rsp], 1
///     mov  [rsp+1], eax
///     mov  eax, 1                  ; write(3, rsp, 5)
///     mov  edi, 3
///     mov  rsi, rsp
///     mov  edx, 5
///     syscall
///     mov  eax, 231                ; exit_group(127)
///     mov  edi, 127
///     syscall
/// refuse:
///     mov  eax, 1                  ; write(2, message, len)
///     mov  edi, 2
///     lea  rsi, [rip+message]
///     mov  edx, message_end - message
///     syscall
///     mov  eax, 231                ; exit_group(126)
///     mov  edi, 126
///     syscall
/// message: .ascii "husk: the exec trampoline is not a program to run\n"
/// ```
const CODE: [u8; 216] = [
    0x48, 0x8b, 0x0c, 0x24, 0x48, 0x83, 0xf9, 0x03, 0x72, 0x78, 0x48, 0x8b, 0x7c, 0x24, 0x08, 0x48,
    0xb8, 0x68, 0x75, 0x73, 0x6b, 0x20, 0x64, 0x6d, 0x7a, 0x48, 0x39, 0x07, 0x75, 0x64, 0x80, 0x7f,
    0x08, 0x00, 0x75, 0x5e, 0xb8, 0x48, 0x00, 0x00, 0x00, 0xbf, 0x03, 0x00, 0x00, 0x00, 0xbe, 0x02,
    0x00, 0x00, 0x00, 0xba, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x8b, 0x7c, 0x24, 0x10, 0x48,
    0x8d, 0x74, 0x24, 0x18, 0x48, 0x8b, 0x0c, 0x24, 0x48, 0x8d, 0x54, 0xcc, 0x10, 0xb8, 0x3b, 0x00,
    0x00, 0x00, 0x0f, 0x05, 0xf7, 0xd8, 0x48, 0x83, 0xec, 0x08, 0xc6, 0x04, 0x24, 0x01, 0x89, 0x44,
    0x24, 0x01, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xbf, 0x03, 0x00, 0x00, 0x00, 0x48, 0x89, 0xe6, 0xba,
    0x05, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0xbf, 0x7f, 0x00, 0x00, 0x00,
    0x0f, 0x05, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xbf, 0x02, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x35, 0x13,
    0x00, 0x00, 0x00, 0xba, 0x32, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0xbf,
    0x7e, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x68, 0x75, 0x73, 0x6b, 0x3a, 0x20, 0x74, 0x68, 0x65, 0x20,
    0x65, 0x78, 0x65, 0x63, 0x20, 0x74, 0x72, 0x61, 0x6d, 0x70, 0x6f, 0x6c, 0x69, 0x6e, 0x65, 0x20,
    0x69, 0x73, 0x20, 0x6e, 0x6f, 0x74, 0x20, 0x61, 0x20, 0x70, 0x72, 0x6f, 0x67, 0x72, 0x61, 0x6d,
    0x20, 0x74, 0x6f, 0x20, 0x72, 0x75, 0x6e, 0x0a,
];

/// Where the one loadable segment (the whole file) is mapped.
const BASE: u64 = 0x40_0000;
const ELF_HEADER_SIZE: usize = 64;
const PROGRAM_HEADER_SIZE: usize = 56;
/// A PT_LOAD for the file and a PT_GNU_STACK for a non-executable stack.
const PROGRAM_HEADERS: usize = 2;
const CODE_OFFSET: usize = ELF_HEADER_SIZE + PROGRAM_HEADERS * PROGRAM_HEADER_SIZE;

#[derive(Debug, thiserror::Error)]
pub enum TrampolineError {
    #[error("{op} the exec trampoline: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> TrampolineError {
    move |source| TrampolineError::Io { op, source }
}

/// The trampoline as a static ELF64 executable.
fn elf_image() -> Vec<u8> {
    let size = (CODE_OFFSET + CODE.len()) as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    elf.extend_from_slice(&(BASE + CODE_OFFSET as u64).to_le_bytes()); // e_entry
    elf.extend_from_slice(&(ELF_HEADER_SIZE as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&(ELF_HEADER_SIZE as u16).to_le_bytes());
    elf.extend_from_slice(&(PROGRAM_HEADER_SIZE as u16).to_le_bytes());
    elf.extend_from_slice(&(PROGRAM_HEADERS as u16).to_le_bytes());
    elf.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
                                    // PT_LOAD, read + execute, the whole file at BASE.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes());
    elf.extend_from_slice(&BASE.to_le_bytes());
    elf.extend_from_slice(&BASE.to_le_bytes());
    elf.extend_from_slice(&size.to_le_bytes());
    elf.extend_from_slice(&size.to_le_bytes());
    elf.extend_from_slice(&0x1000u64.to_le_bytes());
    // PT_GNU_STACK, read + write.
    elf.extend_from_slice(&0x6474_e551u32.to_le_bytes());
    elf.extend_from_slice(&6u32.to_le_bytes());
    elf.extend_from_slice(&[0; 40]);
    elf.extend_from_slice(&0x10u64.to_le_bytes());
    debug_assert_eq!(elf.len(), CODE_OFFSET);
    elf.extend_from_slice(&CODE);
    elf
}

/// The sealed memfd holding the trampoline, made once per husk process (close-on-exec, so
/// it reaches no program husk runs; the seals make sharing it between containers safe).
pub fn shared() -> Result<RawFd, TrampolineError> {
    static TRAMPOLINE: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = TRAMPOLINE.get() {
        return Ok(fd.as_raw_fd());
    }
    let fd = create()?;
    Ok(TRAMPOLINE.get_or_init(|| fd).as_raw_fd())
}

fn create() -> Result<OwnedFd, TrampolineError> {
    let name = c"husk-exec-trampoline";
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor or -1.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(io("creating")(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut file = std::fs::File::from(fd);
    file.write_all(&elf_image()).map_err(io("writing"))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS on a memfd we own, with an integer argument.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io("sealing")(std::io::Error::last_os_error()));
    }
    Ok(file.into())
}

/// Exec `path` with `args` and `env` through the trampoline whose memfd is `trampoline`,
/// reporting a failed execve of the command on `errors`. Returns only if the trampoline
/// itself could not be exec'd.
pub fn exec(
    trampoline: RawFd,
    errors: RawFd,
    path: &CString,
    args: &[CString],
    env: &[CString],
) -> nix::Error {
    // Move the trampoline off the report descriptor before taking that number.
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we hold onto a free number >= 4.
    let trampoline = unsafe { libc::fcntl(trampoline, libc::F_DUPFD_CLOEXEC, REPORT_FD + 1) };
    if trampoline < 0 {
        return nix::Error::last();
    }
    let handed_over = if errors == REPORT_FD {
        // SAFETY: clears close-on-exec on the error pipe we hold.
        unsafe { libc::fcntl(REPORT_FD, libc::F_SETFD, 0) }
    } else {
        // SAFETY: dup2 onto descriptor 3, which holds nothing we still use (every
        // descriptor from 3 up is close-on-exec by now); the copy is not close-on-exec.
        unsafe { libc::dup2(errors, REPORT_FD) }
    };
    if handed_over < 0 {
        return nix::Error::last();
    }
    let marker = CString::new(MARKER).expect("the marker has no NUL");
    let mut argv: Vec<*const libc::c_char> = Vec::with_capacity(args.len() + 3);
    argv.push(marker.as_ptr());
    argv.push(path.as_ptr());
    argv.extend(args.iter().map(|a| a.as_ptr()));
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: execveat with AT_EMPTY_PATH runs the memfd itself; argv and envp are
    // NULL-terminated arrays of pointers into CStrings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            trampoline,
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    nix::Error::last()
}

/// The errno of a failed command execve from the trampoline's report.
pub fn reported_errno(report: &[u8]) -> Option<nix::Error> {
    match report {
        [CODE_EXEC_ERRNO, a, b, c, d] => {
            Some(nix::Error::from_raw(i32::from_le_bytes([*a, *b, *c, *d])))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Run the trampoline as a program through /proc/self/fd, as a `#!` line would.
    fn run_trampoline(args: &[&str], report_to: Option<RawFd>) -> std::process::Output {
        // Off descriptor 3, which the child may take for the report.
        // SAFETY: F_DUPFD_CLOEXEC duplicates the shared memfd onto a free number >= 10.
        let fd = unsafe { libc::fcntl(shared().unwrap(), libc::F_DUPFD_CLOEXEC, 10) };
        assert!(fd >= 10);
        // SAFETY: the duplicate is ours alone; the OwnedFd closes it after the run.
        let _copy = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut cmd = Command::new(format!("/proc/self/fd/{fd}"));
        use std::os::unix::process::CommandExt;
        cmd.arg0(args[0]).args(&args[1..]);
        if let Some(report) = report_to {
            // SAFETY: dup2 in the forked child before exec, async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::dup2(report, REPORT_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.output().unwrap()
    }

    #[test]
    fn runs_the_command_given_after_the_marker() {
        let script = "echo $0-$1";
        let out = run_trampoline(
            &[MARKER, "/bin/sh", "sh", "-c", script, "zero", "one"],
            None,
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "zero-one\n");
        assert!(out.status.success());
    }

    #[test]
    fn refuses_to_run_as_an_interpreter() {
        let out = run_trampoline(&["/proc/self/exe", "/e", "more"], None);
        assert_eq!(out.status.code(), Some(126));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "husk: the exec trampoline is not a program to run\n"
        );
    }

    #[test]
    fn reports_a_failed_execve_on_descriptor_3() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let out = run_trampoline(
            &[MARKER, "/nonexistent/program", "program"],
            Some(write.as_raw_fd()),
        );
        drop(write);
        assert_eq!(out.status.code(), Some(127));
        let mut report = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(read), &mut report).unwrap();
        assert_eq!(reported_errno(&report), Some(nix::Error::ENOENT));
    }

    #[test]
    fn the_memfd_is_sealed_against_writes() {
        let fd = shared().unwrap();
        // SAFETY: F_GET_SEALS on our memfd, no pointer arguments.
        let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
        let wanted =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(seals & wanted, wanted);
        let writable = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{fd}"));
        let write = writable.and_then(|mut f| f.write_all(b"x"));
        assert!(write.is_err(), "the sealed trampoline took a write");
    }
}
