//! Pause: `pause` freezes every process of the container (under VM isolation the whole
//! guest) where it is and `unpause` lets it go on. While paused the container is Docker's
//! `paused` in inspect, ps and its filter; exec and start are refused with Docker's lines; a
//! signal (kill, stop, rm -f) is delivered and leaves it running, as dockerd does. One
//! deliberate difference: a paused VM's guest cannot answer `top` or `cp`, so those are
//! refused there, where process isolation serves them from the host.
use std::time::Duration;

use crate::support::*;

in_every_isolation!(
    pause_freezes_the_container_until_unpause,
    a_paused_container_refuses_exec_and_start_but_takes_signals
);

const TICKER: &str = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done";
const TRAPS: &str =
    "trap 'echo got USR2' USR2; trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done";

fn ticks(husk: &Husk, name: &str) -> usize {
    husk.logs(name)
        .lines()
        .filter(|l| l.starts_with("tick "))
        .count()
}

fn stderr_of(husk: &Husk, args: &[&str]) -> (Option<i32>, String) {
    let out = husk.run(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pause_freezes_the_container_until_unpause(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    detached(&husk, iso, "ticker", &[], TICKER);
    husk.wait_for("the first ticks", || ticks(&husk, "ticker") >= 3);
    assert_eq!(husk.ok(&["pause", "ticker"]), "ticker\n");
    assert_eq!(
        husk.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}} {{.State.Running}}",
            "ticker"
        ]),
        "paused true true\n"
    );
    let ps = husk.ok(&["ps", "--format", "{{.Names}} {{.State}} {{.Status}}"]);
    assert!(
        ps.starts_with("ticker paused Up ") && ps.trim_end().ends_with("(Paused)"),
        "{ps}"
    );
    assert_eq!(husk.lines(&["ps", "-q", "-f", "status=paused"]).len(), 1);
    assert!(husk.lines(&["ps", "-q", "-f", "status=running"]).is_empty());

    // Frozen: once what was written before the pause has reached the log, nothing more is.
    std::thread::sleep(Duration::from_millis(500));
    let frozen_at = ticks(&husk, "ticker");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ticks(&husk, "ticker"), frozen_at, "ticks while paused");
    let (code, err) = stderr_of(&husk, &["pause", "ticker"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is already paused"), "{err}");

    assert_eq!(husk.ok(&["unpause", "ticker"]), "ticker\n");
    husk.wait_for("ticks after unpause", || {
        ticks(&husk, "ticker") > frozen_at + 2
    });
    assert_eq!(
        husk.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}}",
            "ticker"
        ]),
        "running false\n"
    );
    let (code, err) = stderr_of(&husk, &["unpause", "ticker"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not paused"), "{err}");

    husk.ok(&["kill", "ticker"]);
    husk.wait_for("the kill", || husk.status("ticker") == "exited");
    let (code, err) = stderr_of(&husk, &["pause", "ticker"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not running"), "{err}");
}

fn a_paused_container_refuses_exec_and_start_but_takes_signals(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    detached(&husk, iso, "traps", &[], TRAPS);
    husk.wait_for("the traps to be set", || {
        husk.logs("traps").contains("ready")
    });
    husk.ok(&["pause", "traps"]);
    let (code, err) = stderr_of(&husk, &["exec", "traps", "true"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("Container traps is paused, unpause the container before exec"),
        "{err}"
    );
    let (code, err) = stderr_of(&husk, &["start", "traps"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot start a paused container, try unpause instead"),
        "{err}"
    );
    let top = husk.run(&["top", "traps"]);
    let cp_dest = tempfile::tempdir().unwrap();
    let cp = husk.run(&[
        "cp",
        "traps:/etc/hostname",
        cp_dest.path().to_str().unwrap(),
    ]);
    if iso == "vm" {
        for out in [&top, &cp] {
            assert!(!out.status.success());
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("is paused, unpause the container"),
                "{out:?}"
            );
        }
    } else {
        assert!(
            String::from_utf8_lossy(&top.stdout).contains("sleep"),
            "{top:?}"
        );
        assert!(cp.status.success(), "{cp:?}");
    }

    // A signal reaches the paused container, which goes on running (it is thawed).
    husk.ok(&["kill", "-s", "USR2", "traps"]);
    husk.wait_for("USR2 to arrive", || husk.logs("traps").contains("got USR2"));
    assert_eq!(husk.status("traps"), "running");

    // stop of a paused container: its TERM handler runs.
    husk.ok(&["pause", "traps"]);
    husk.ok(&["stop", "-t", "20", "traps"]);
    assert!(husk.logs("traps").contains("got TERM"));
    assert_eq!(
        husk.ok(&["inspect", "-f", "{{.State.ExitCode}}", "traps"]),
        "7\n"
    );

    // rm -f of a paused container removes it (its cgroup too: the suite checks for leftovers).
    detached(&husk, iso, "frozen", &[], TRAPS);
    husk.ok(&["pause", "frozen"]);
    husk.ok(&["rm", "-f", "frozen"]);
    assert!(husk.ok(&["ps", "-aq", "-f", "name=frozen"]).is_empty());
}
