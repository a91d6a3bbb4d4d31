//! Confining a process between fork and exec: the bounding set, uid/gid/groups, the
//! effective, permitted, inheritable and ambient sets, no_new_privs and seccomp, in runc's
//! order. husk's process backend (its init on the host) and the guest agent both use it, so a
//! container is confined by the same code in either isolation.
//!
//! [`Confinement::new`] does everything that allocates or can fail ahead of time (capability
//! names to numbers, reading the held bounding set, checking filters); [`Confinement::apply`]
//! then makes only raw system calls on prepared data, which is what is allowed between fork
//! and exec.

use std::io;

use serde::{Deserialize, Serialize};

/// Most seccomp filters one process may carry (husk's compiler makes one per action).
pub const MAX_SECCOMP_FILTERS: usize = 16;
/// The kernel's limit on one classic BPF program (BPF_MAXINSNS).
pub const MAX_BPF_INSTRUCTIONS: usize = 4096;
/// Most names one capability set may list (Linux has 41 capabilities).
pub const MAX_CAPABILITY_NAMES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: io::Error,
    },
    #[error("seccomp filter {index} has {len} instructions (1 to {MAX_BPF_INSTRUCTIONS} allowed)")]
    BadFilter { index: usize, len: usize },
    #[error("{0} seccomp filters exceed the limit of {MAX_SECCOMP_FILTERS}")]
    TooManyFilters(usize),
    #[error("{0} names in one capability set exceed the limit of {MAX_CAPABILITY_NAMES}")]
    TooManyCapabilities(usize),
}

/// The five capability sets by OCI name ("CAP_NET_RAW"), as a runtime spec lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityNames {
    #[serde(default)]
    pub bounding: Vec<String>,
    #[serde(default)]
    pub effective: Vec<String>,
    #[serde(default)]
    pub permitted: Vec<String>,
    #[serde(default)]
    pub inheritable: Vec<String>,
    #[serde(default)]
    pub ambient: Vec<String>,
}

impl CapabilityNames {
    pub fn validate(&self) -> Result<(), ConfineError> {
        for set in self.sets() {
            if set.len() > MAX_CAPABILITY_NAMES {
                return Err(ConfineError::TooManyCapabilities(set.len()));
            }
        }
        Ok(())
    }

    fn sets(&self) -> [&Vec<String>; 5] {
        [
            &self.bounding,
            &self.effective,
            &self.permitted,
            &self.inheritable,
            &self.ambient,
        ]
    }
}

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter` (code, jt, jf,
/// k); on the wire a four-number array.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfInstruction(pub u16, pub u8, pub u8, pub u32);

/// Check filters the way the kernel will, so a bad one is a clear error before any fork.
pub fn validate_filters(filters: &[Vec<BpfInstruction>]) -> Result<(), ConfineError> {
    if filters.len() > MAX_SECCOMP_FILTERS {
        return Err(ConfineError::TooManyFilters(filters.len()));
    }
    for (index, filter) in filters.iter().enumerate() {
        if filter.is_empty() || filter.len() > MAX_BPF_INSTRUCTIONS {
            return Err(ConfineError::BadFilter {
                index,
                len: filter.len(),
            });
        }
    }
    Ok(())
}

/// Capability sets as bit masks, already limited to what the confining process holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CapabilityMasks {
    bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: u64,
}

/// The identity a process takes: uid, gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Everything [`Confinement::apply`] needs, prepared before the fork.
#[derive(Debug, Clone)]
pub struct Confinement {
    identity: Option<Identity>,
    capabilities: Option<CapabilityMasks>,
    /// The bounding set of the process that prepared this (inherited by its children).
    held_bounding: u64,
    no_new_privs: bool,
    seccomp: Vec<Vec<BpfInstruction>>,
}

impl Confinement {
    /// `identity: None` keeps the caller's own; `capabilities: None` leaves every set alone.
    /// A capability this kernel or this process does not have is left out, as runc does: a
    /// host (or sandbox) that withholds one from husk cannot grant it to a container.
    pub fn new(
        identity: Option<Identity>,
        capabilities: Option<&CapabilityNames>,
        no_new_privs: bool,
        seccomp: Vec<Vec<BpfInstruction>>,
    ) -> Result<Confinement, ConfineError> {
        validate_filters(&seccomp)?;
        let held_bounding = read_bounding_set();
        let capabilities = match capabilities {
            None => None,
            Some(names) => {
                names.validate()?;
                let mask = |set: &[String]| mask_of(set) & held_bounding;
                Some(CapabilityMasks {
                    bounding: mask(&names.bounding),
                    effective: mask(&names.effective),
                    permitted: mask(&names.permitted),
                    inheritable: mask(&names.inheritable),
                    ambient: mask(&names.ambient),
                })
            }
        };
        Ok(Confinement {
            identity,
            capabilities,
            held_bounding,
            no_new_privs,
            seccomp,
        })
    }

    /// Confine the calling process. Only raw system calls on data prepared by `new`: safe
    /// between fork and exec. Order as runc's: without no_new_privs the filter goes in first,
    /// while CAP_SYS_ADMIN is still held (it allows the calls that follow); then the bounding
    /// set, the identity (keeping capabilities across setuid), the other four sets, and with
    /// no_new_privs the flag and then the filter.
    pub fn apply(&self) -> Result<(), ConfineError> {
        if !self.no_new_privs {
            self.install_seccomp()?;
        }
        if let Some(caps) = &self.capabilities {
            for cap in 0..64u32 {
                let bit = 1u64 << cap;
                if self.held_bounding & bit != 0 && caps.bounding & bit == 0 {
                    prctl(
                        "dropping a capability from the bounding set",
                        libc::PR_CAPBSET_DROP,
                        cap.into(),
                    )?;
                }
            }
        }
        if let Some(identity) = &self.identity {
            prctl("keeping capabilities", libc::PR_SET_KEEPCAPS, 1)?;
            // SAFETY: setgroups reads `len` gids from a live Vec; the others take integers.
            let rc = unsafe { libc::setgroups(identity.groups.len(), identity.groups.as_ptr()) };
            check(rc, "setgroups")?;
            // SAFETY: integer arguments only.
            let rc = unsafe { libc::setresgid(identity.gid, identity.gid, identity.gid) };
            check(rc, "setgid")?;
            // SAFETY: integer arguments only.
            let rc = unsafe { libc::setresuid(identity.uid, identity.uid, identity.uid) };
            check(rc, "setuid")?;
            prctl("keeping capabilities", libc::PR_SET_KEEPCAPS, 0)?;
        }
        if let Some(caps) = &self.capabilities {
            set_capabilities(caps)?;
            prctl_ambient(libc::PR_CAP_AMBIENT_CLEAR_ALL, 0)?;
            for cap in 0..64u32 {
                if caps.ambient & (1u64 << cap) != 0 {
                    prctl_ambient(libc::PR_CAP_AMBIENT_RAISE, cap.into())?;
                }
            }
        }
        if self.no_new_privs {
            prctl("setting no_new_privs", libc::PR_SET_NO_NEW_PRIVS, 1)?;
            self.install_seccomp()?;
        }
        Ok(())
    }

    fn install_seccomp(&self) -> Result<(), ConfineError> {
        #[repr(C)]
        struct SockFprog {
            len: libc::c_ushort,
            filter: *const BpfInstruction,
        }
        for filter in &self.seccomp {
            let prog = SockFprog {
                // `new` checked every filter against MAX_BPF_INSTRUCTIONS, below u16::MAX.
                len: filter.len() as libc::c_ushort,
                filter: filter.as_ptr(),
            };
            // SAFETY: `prog` points at a live array of `len` sock_filter-shaped instructions;
            // the kernel copies it during the call and keeps no reference to our memory.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const SockFprog,
                )
            };
            check(rc as libc::c_int, "installing the seccomp filter")?;
        }
        Ok(())
    }
}

/// The bit mask of capability names; names this build does not know are left out.
fn mask_of(names: &[String]) -> u64 {
    names
        .iter()
        .filter_map(|name| name.parse::<caps::Capability>().ok())
        .map(|cap| 1u64 << cap.index())
        .fold(0, |acc, bit| acc | bit)
}

/// The calling process's bounding set, probed capability by capability.
fn read_bounding_set() -> u64 {
    (0..64u32)
        // SAFETY: prctl with integer arguments only; -1 (EINVAL) past the last capability.
        .filter(|&cap| unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) } == 1)
        .fold(0, |acc, cap| acc | (1u64 << cap))
}

/// Effective, permitted and inheritable in one capset (version 3: two 32-bit words per set).
fn set_capabilities(caps: &CapabilityMasks) -> Result<(), ConfineError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |mask: u64, high: bool| (if high { mask >> 32 } else { mask }) as u32;
    let data = [false, true].map(|high| Data {
        effective: word(caps.effective, high),
        permitted: word(caps.permitted, high),
        inheritable: word(caps.inheritable, high),
    });
    // SAFETY: capset reads one header and two data words from live stack values.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    check(rc as libc::c_int, "setting capabilities")
}

fn prctl(step: &'static str, option: libc::c_int, arg: libc::c_ulong) -> Result<(), ConfineError> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(option, arg, 0, 0, 0) }, step)
}

fn prctl_ambient(op: libc::c_int, cap: libc::c_ulong) -> Result<(), ConfineError> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, op as libc::c_ulong, cap, 0, 0) };
    check(rc, "setting ambient capabilities")
}

fn check(rc: libc::c_int, step: &'static str) -> Result<(), ConfineError> {
    if rc < 0 {
        return Err(ConfineError::Sys {
            step,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_bits_and_unknown_names_are_left_out() {
        let names = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_NOT_A_THING"].map(String::from);
        assert_eq!(mask_of(&names), (1 << 0) | (1 << 13));
    }

    #[test]
    fn filters_are_bounded_before_any_fork() {
        let ok = vec![vec![BpfInstruction(0x06, 0, 0, 0x7fff_0000)]];
        assert!(validate_filters(&ok).is_ok());
        assert!(matches!(
            validate_filters(&[Vec::new()]),
            Err(ConfineError::BadFilter { index: 0, len: 0 })
        ));
        let huge = vec![BpfInstruction(0x06, 0, 0, 0); MAX_BPF_INSTRUCTIONS + 1];
        assert!(validate_filters(&[huge]).is_err());
        let many = vec![ok[0].clone(); MAX_SECCOMP_FILTERS + 1];
        assert!(matches!(
            validate_filters(&many),
            Err(ConfineError::TooManyFilters(_))
        ));
    }

    #[test]
    fn the_wire_form_is_four_numbers() {
        let json = serde_json::to_string(&BpfInstruction(0x15, 1, 2, 59)).unwrap();
        assert_eq!(json, "[21,1,2,59]");
    }

    /// In a forked child: drop to an empty bounding set plus CAP_CHOWN, no_new_privs, and a
    /// filter that fails getppid with EPERM (errno 1); then look at what the child has.
    #[test]
    fn a_forked_child_is_confined() {
        // SECCOMP_RET_ERRNO | EPERM for getppid (110 on x86_64), allow everything else.
        const LD_NR: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET: u16 = 0x06; // BPF_RET | BPF_K
        let filter = vec![
            BpfInstruction(LD_NR, 0, 0, 0),
            BpfInstruction(JEQ, 0, 1, libc::SYS_getppid as u32),
            BpfInstruction(RET, 0, 0, 0x0005_0000 | 1),
            BpfInstruction(RET, 0, 0, 0x7fff_0000),
        ];
        let names = CapabilityNames {
            bounding: vec!["CAP_CHOWN".into()],
            ..Default::default()
        };
        let confinement = Confinement::new(None, Some(&names), true, vec![filter]).unwrap();
        // SAFETY: the child makes only raw system calls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = match confinement.apply() {
                Err(_) => 10,
                Ok(()) => {
                    // glibc's getppid() cannot fail and sets no errno: the raw call does.
                    // SAFETY: raw system calls only.
                    let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
                    let errno = io::Error::last_os_error().raw_os_error();
                    let bounding = read_bounding_set();
                    // SAFETY: integer arguments only.
                    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
                    let held_chown = bounding == confinement.held_bounding & 1;
                    if ppid != -1 || errno != Some(libc::EPERM) {
                        11
                    } else if !held_chown {
                        12
                    } else if nnp != 1 {
                        13
                    } else {
                        0
                    }
                }
            };
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child into a local.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "which check failed: see the codes"
        );
    }
}
