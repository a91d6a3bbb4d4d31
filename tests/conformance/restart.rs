//! `--restart on-failure:N`: a failing container is started again N times, then stays exited.
use crate::support::*;

in_every_isolation!(on_failure_restarts_up_to_the_count);

fn on_failure_restarts_up_to_the_count(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    husk.ok(&[
        "run",
        "-d",
        "--isolation",
        iso,
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo attempt; exit 3",
    ]);
    husk.wait_for("the last attempt", || {
        husk.ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            "flaky",
        ]) == "2 exited\n"
    });
    assert_eq!(husk.logs("flaky").matches("attempt").count(), 3);
    assert_eq!(
        husk.ok(&["inspect", "-f", "{{.State.ExitCode}}", "flaky"]),
        "3\n"
    );
}
