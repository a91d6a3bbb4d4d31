//! `process.rlimits`: Docker's open-file limit, 1048576 soft and hard. A host that holds husk
//! below it (no CAP_SYS_RESOURCE, a lower hard limit, as in some sandboxes) caps a process
//! container at husk's own hard limit; a VM's kernel is its own, so it gets the full limit.
use crate::support::*;

in_every_isolation!(open_files_limit_is_dockers);

const DOCKER_NOFILE: u64 = 1_048_576;

fn open_files_limit_is_dockers(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let want = match iso {
        "process" => DOCKER_NOFILE.min(own_hard_nofile()),
        _ => DOCKER_NOFILE,
    };
    let out = sh(&husk, iso, &["-u", "alice"], "ulimit -Sn; ulimit -Hn");
    assert_eq!(out, format!("{want}\n{want}\n"));
}

fn own_hard_nofile() -> u64 {
    // SAFETY: rlimit is plain data; all-zero is a valid value.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit fills in the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0);
    limit.rlim_max
}
