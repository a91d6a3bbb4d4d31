//! `exec`: the new process runs in the container with the container's confinement (the same
//! capabilities, seccomp filters, no_new_privs and cgroup), as the user asked for.
use crate::support::*;

in_every_isolation!(an_exec_is_confined_like_the_container);

fn an_exec_is_confined_like_the_container(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    detached(
        &husk,
        iso,
        "box",
        &[
            "--cap-drop",
            "NET_RAW",
            "--security-opt",
            "no-new-privileges",
        ],
        "cat /proc/self/status > /tmp/status; cat /proc/self/cgroup > /tmp/cgroup; sleep 600",
    );
    husk.wait_for("the container's own status", || {
        husk.run(&["exec", "box", "test", "-s", "/tmp/cgroup"])
            .status
            .success()
    });
    let own = husk.ok(&["exec", "box", "cat", "/tmp/status"]);
    let exec = husk.ok(&["exec", "box", "cat", "/proc/self/status"]);
    for field in [
        "CapPrm",
        "CapEff",
        "CapBnd",
        "NoNewPrivs",
        "Seccomp",
        "Seccomp_filters",
    ] {
        assert_eq!(
            status_field(&exec, field),
            status_field(&own, field),
            "{field}"
        );
    }
    assert_eq!(status_field(&exec, "CapEff"), "00000000a80405fb");
    let same = husk.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "cmp /proc/self/cgroup /tmp/cgroup && echo same",
    ]);
    assert_eq!(same, "same\n");
    assert_eq!(
        husk.ok(&["exec", "-u", "alice", "box", "id", "-u"]),
        "1000\n"
    );
    let code = husk
        .run(&["exec", "box", "sh", "-c", "exit 9"])
        .status
        .code();
    assert_eq!(code, Some(9));
}
