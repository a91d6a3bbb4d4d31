//! `root.readonly` (`--read-only`): the root refuses writes; /dev/shm and tmpfs mounts do not.
use crate::support::*;

in_every_isolation!(a_read_only_root_refuses_writes_but_tmpfs_takes_them);

fn a_read_only_root_refuses_writes_but_tmpfs_takes_them(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let out = sh(
        &husk,
        iso,
        &["--read-only", "--tmpfs", "/scratch"],
        "touch /etc/x 2>&1; echo root=$?; touch /dev/shm/x /scratch/x && echo tmpfs-ok",
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.ends_with("root=1\ntmpfs-ok\n"), "{out}");
}
