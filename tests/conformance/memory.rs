//! `linux.resources.memory` (`--memory`): a process that outgrows the limit is killed by the
//! OOM killer (exit 137) and `inspect` says OOMKilled, as with Docker. In a VM the guest's RAM
//! is the limit plus the guest's own overhead; the kill comes from the container's cgroup in
//! the guest kernel, never from the guest running out as a whole.
use crate::support::*;

in_every_isolation!(outgrowing_the_limit_is_an_oom_kill);

fn outgrowing_the_limit_is_an_oom_kill(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    // A shell variable doubled up to 1 GiB, in a container of 64 MiB. (Doubling copies
    // little: filling it through `tr` took emulated VMs a dozen seconds.)
    let hog = "x=a; i=0; while [ $i -lt 30 ]; do x=$x$x; i=$((i+1)); done; echo survived ${#x}";
    let out = husk.run(&[
        "run",
        "--isolation",
        iso,
        "--name",
        "hog",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        hog,
    ]);
    assert_eq!(out.status.code(), Some(137));
    assert_eq!(
        husk.ok(&[
            "inspect",
            "-f",
            "{{.State.ExitCode}} {{.State.OOMKilled}}",
            "hog"
        ]),
        "137 true\n"
    );
    // Within the limit nothing is killed and nothing is recorded, and the container has all
    // of its limit: 40 MiB of 64 touched at once (a guest whose RAM was only the limit ran
    // out at about 33).
    let small = "dd if=/dev/zero of=/dev/null bs=40M count=1 2>/dev/null && echo fits";
    let out = husk.ok(&[
        "run",
        "--isolation",
        iso,
        "--name",
        "fits",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        small,
    ]);
    assert_eq!(out, "fits\n");
    assert_eq!(
        husk.ok(&[
            "inspect",
            "-f",
            "{{.State.ExitCode}} {{.State.OOMKilled}}",
            "fits"
        ]),
        "0 false\n"
    );
}
