//! Exit codes as Docker reports them: the program's own, 126 (not executable), 127 (not
//! found), 128+N for a process killed by signal N; and the command is PID 1 of the container.
use crate::support::*;

in_every_isolation!(exit_codes_are_dockers, the_containers_process_is_pid_1);

fn exit_codes_are_dockers(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let code = |args: &[&str]| run_status(&husk, iso, args).status.code();
    assert_eq!(code(&["busybox", "true"]), Some(0));
    assert_eq!(code(&["busybox", "sh", "-c", "exit 42"]), Some(42));
    assert_eq!(code(&["busybox", "/bin/not-executable"]), Some(126));
    assert_eq!(code(&["busybox", "no-such-program"]), Some(127));
    // The inner shell is not PID 1 (the `exit` keeps the outer from exec'ing it): USR1 kills
    // it, and the outer reports 128+10.
    let killed = "sh -c 'kill -USR1 $$'; exit $?";
    assert_eq!(code(&["busybox", "sh", "-c", killed]), Some(128 + 10));
}

/// As in Docker: the command is PID 1 of the container, which the kernel spares any signal it
/// has no handler for, so `kill -USR1 $$` does not end it; its /proc shows only the container.
fn the_containers_process_is_pid_1(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let out = sh(
        &husk,
        iso,
        &[],
        "echo $$; kill -USR1 $$; echo survived; echo /proc/[0-9]*",
    );
    // The shell's own glob, so that no other process of the container exists meanwhile (an
    // `ls /proc | grep` counted 2 or 3, as the shell had forked grep yet or not).
    assert_eq!(out, "1\nsurvived\n/proc/1\n");
}
