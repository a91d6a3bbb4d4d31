//! `linux.resources.pids` (`--pids-limit`): forks past the limit fail (in the VM, in a cgroup
//! of the guest's own kernel).
use crate::support::*;

in_every_isolation!(forks_beyond_the_limit_fail);

fn forks_beyond_the_limit_fail(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let script = "for i in 1 2 3 4 5 6 7 8; do sleep 30 & done; echo all-started";
    let out = run_status(
        &husk,
        iso,
        &["--pids-limit", "5", "busybox", "sh", "-c", script],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("can't fork"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("all-started"));
    // The same script with room for it.
    let out = sh(
        &husk,
        iso,
        &["--pids-limit", "20"],
        "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; echo all-started",
    );
    assert_eq!(out, "all-started\n");
}
