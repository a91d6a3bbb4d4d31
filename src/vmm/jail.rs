//! The monitor's jail, entered once everything the VM needs is open (KVM, guest memory, the
//! kernel and initramfs already loaded, disks, the serial log, the console socket) and before
//! any thread touches guest-controlled data. Firecracker's jailer is the anchor; husk's
//! differs in one respect: the monitor opens its files first and then gives up the filesystem
//! entirely, so its mount namespace holds nothing at all (an empty read-only tmpfs), not hard
//! links of its files.
//!
//! After [`enter`] the monitor process:
//! - has its own mount, network, IPC, UTS and cgroup namespaces: an empty read-only root, no
//!   network interfaces, none of the host's SysV IPC;
//! - runs as an unprivileged uid and gid of its own, `JAIL_ID_BASE + its pid` (unique among
//!   living monitors, as pids are, and owning nothing on the host), with no supplementary
//!   groups and therefore no capabilities;
//! - is not dumpable (no ptrace, no /proc/<pid>/mem from the host's same-uid processes) and has
//!   no_new_privs set, ready for the seccomp filter every thread installs next. A parent-death
//!   signal the process had (its supervisor's) is armed again after the uid change, which
//!   clears it.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, pivot_root, setgroups, setresgid, setresuid, Gid, Uid};

/// First uid/gid of the range the jailed monitors run as: systemd's "unused" range above the
/// container ranges (docs/UIDS-GIDS), far from login users, subuid ranges and `nobody`. With
/// Linux's pid_max at most 2^22 the range ends below 0x7040_0000.
pub const JAIL_ID_BASE: u32 = 0x7000_0000;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("the monitor jail needs root (it unshares namespaces and changes uid)")]
    NotRoot,
    #[error("monitor jail: {step}: {source}")]
    Step {
        step: &'static str,
        source: nix::Error,
    },
}

fn step(step: &'static str) -> impl FnOnce(nix::Error) -> JailError {
    move |source| JailError::Step { step, source }
}

/// The uid and gid a jailed monitor with pid `pid` runs as.
pub fn jail_id(pid: u32) -> u32 {
    JAIL_ID_BASE + pid
}

/// Jail the calling process (see the module documentation). Irreversible.
pub fn enter() -> Result<(), JailError> {
    if !Uid::effective().is_root() {
        return Err(JailError::NotRoot);
    }
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(step("unshare"))?;
    // Nothing done below propagates back to the host's mounts.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step("making / private"))?;
    // The new root: an empty tmpfs over a directory every Linux has. Mounted over it inside
    // this namespace only; the host's directory is untouched.
    let base = ["/tmp", "/run", "/mnt"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .unwrap_or("/tmp");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        base,
        Some("tmpfs"),
        flags,
        Some("size=4k,nr_inodes=2,mode=0555"),
    )
    .map_err(step("mounting the empty root"))?;
    chdir(base).map_err(step("entering the empty root"))?;
    // pivot_root(".", "."): the old root ends up stacked on the new one, then detached.
    pivot_root(".", ".").map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detaching the host's root"))?;
    chdir("/").map_err(step("chdir /"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
        None::<&str>,
    )
    .map_err(step("making the root read-only"))?;
    // The hostname of its own UTS namespace says what the process is.
    nix::unistd::sethostname("husk-monitor").map_err(step("sethostname"))?;

    // Changing credentials clears the parent-death signal (the supervisor's SIGKILL, which
    // must still end a monitor whose supervisor dies): note it, and arm it again below.
    let death_signal = nix::sys::prctl::get_pdeathsig().map_err(step("PR_GET_PDEATHSIG"))?;
    let parent = nix::unistd::getppid();
    let id = jail_id(std::process::id());
    setgroups(&[]).map_err(step("setgroups"))?;
    setresgid(Gid::from_raw(id), Gid::from_raw(id), Gid::from_raw(id))
        .map_err(step("setresgid"))?;
    // From root to a uid with no zero among real, effective and saved: every capability goes.
    setresuid(Uid::from_raw(id), Uid::from_raw(id), Uid::from_raw(id))
        .map_err(step("setresuid"))?;
    if let Some(signal) = death_signal {
        nix::sys::prctl::set_pdeathsig(signal).map_err(step("PR_SET_PDEATHSIG"))?;
        // A parent that died while the signal was not armed: the signal now, as it would have
        // come.
        if nix::unistd::getppid() != parent {
            nix::sys::signal::raise(signal).map_err(step("raising the parent-death signal"))?;
        }
    }
    nix::sys::prctl::set_dumpable(false).map_err(step("PR_SET_DUMPABLE"))?;
    nix::sys::prctl::set_no_new_privs().map_err(step("PR_SET_NO_NEW_PRIVS"))?;
    Ok(())
}
