//! Signals: `stop` sends SIGTERM and the container's handler runs; `kill -s` delivers the
//! signal asked for; `kill` (SIGKILL) ends it with 137.
use crate::support::*;

in_every_isolation!(stop_and_kill_deliver_their_signals);

const TRAPS: &str =
    "trap 'echo got USR2' USR2; trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done";

fn stop_and_kill_deliver_their_signals(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    detached(&husk, iso, "traps", &[], TRAPS);
    husk.wait_for("the traps to be set", || {
        husk.logs("traps").contains("ready")
    });
    husk.ok(&["kill", "-s", "USR2", "traps"]);
    husk.wait_for("USR2 to arrive", || husk.logs("traps").contains("got USR2"));
    husk.ok(&["stop", "-t", "20", "traps"]);
    assert!(husk.logs("traps").contains("got TERM"));
    assert_eq!(
        husk.ok(&["inspect", "-f", "{{.State.ExitCode}}", "traps"]),
        "7\n"
    );

    detached(&husk, iso, "victim", &[], TRAPS);
    husk.wait_for("the traps to be set", || {
        husk.logs("victim").contains("ready")
    });
    husk.ok(&["kill", "victim"]);
    husk.wait_for("the kill", || husk.status("victim") == "exited");
    assert_eq!(
        husk.ok(&["inspect", "-f", "{{.State.ExitCode}}", "victim"]),
        "137\n"
    );
}
