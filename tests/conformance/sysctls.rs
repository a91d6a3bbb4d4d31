//! `sysctls`: `--sysctl` sets what the container's own namespaces scope (IPC: kernel.shm*,
//! kernel.msg*, kernel.sem, fs.mqueue.*; network: net.*), as Docker allows; anything that
//! would change the host is refused with one line before a container exists, in both
//! isolations. In a VM the value lands in the guest's own kernel, which is the container's.
use crate::support::*;

in_every_isolation!(
    namespaced_sysctls_are_set_in_the_container,
    host_wide_sysctls_are_refused_before_anything_is_created
);

fn namespaced_sysctls_are_set_in_the_container(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let host_shmmni = std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap();
    let out = sh(
        &husk,
        iso,
        &[
            "--sysctl",
            "kernel.shmmni=1234",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--sysctl",
            "fs.mqueue.msg_max=32",
        ],
        "cat /proc/sys/kernel/shmmni /proc/sys/net/ipv4/ip_forward /proc/sys/fs/mqueue/msg_max",
    );
    assert_eq!(out, "1234\n1\n32\n");
    // The host's own value is untouched: the write went to the container's namespace.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap(),
        host_shmmni
    );
    // The container's /proc/sys stays read-only for its process.
    let denied = run_status(
        &husk,
        iso,
        &["busybox", "sh", "-c", "echo 99 > /proc/sys/kernel/shmmni"],
    );
    assert!(!denied.status.success());
}

fn host_wide_sysctls_are_refused_before_anything_is_created(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    for (flags, says) in [
        (
            vec!["--sysctl", "kernel.panic=1"],
            "not a namespaced sysctl",
        ),
        (
            vec!["--sysctl", "vm.swappiness=1"],
            "not a namespaced sysctl",
        ),
        (vec!["--sysctl", "../../etc/x=1"], "not a sysctl name"),
        (vec!["--sysctl", "kernel.shmmni"], "expected K=V"),
        (
            vec!["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"],
            "not allowed with --network host",
        ),
    ] {
        let mut args = vec!["run", "--isolation", iso];
        args.extend(&flags);
        args.extend(["busybox", "true"]);
        let out = husk.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{flags:?}: {stderr}");
    }
    assert_eq!(husk.ok(&["ps", "-aq"]), "", "nothing was created");
}
