//! `logs`: both streams of a detached container, `--tail`.
use crate::support::*;

in_every_isolation!(logs_keep_both_streams);

fn logs_keep_both_streams(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    husk.ok(&[
        "run",
        "-d",
        "--isolation",
        iso,
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        // The streams are two pipes: "three" comes a second later so that it is the last line.
        "echo one; echo two >&2; sleep 1; echo three",
    ]);
    husk.wait_for("the exit", || husk.status("talker") == "exited");
    let out = husk.run(&["logs", "talker"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\nthree\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "two\n");
    let out = husk.run(&["logs", "--tail", "1", "talker"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "three\n");
}
