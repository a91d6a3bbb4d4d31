//! `linux.resources.memory` (`--memory`): a process that outgrows the limit is killed by the
//! OOM killer (exit 137) and `inspect` says OOMKilled, as with Docker. In a VM the limit is
//! also the guest's RAM; the kill comes from the guest kernel's cgroup.
use crate::support::*;

in_every_isolation!(outgrowing_the_limit_is_an_oom_kill);

fn outgrowing_the_limit_is_an_oom_kill(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    // A shell variable of 200 MB, in a container of 64 MiB.
    let hog = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}";
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
    // Within the limit nothing is killed and nothing is recorded.
    let small = "x=$(head -c 1000000 /dev/zero | tr '\\0' a); echo ${#x}";
    husk.ok(&[
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
