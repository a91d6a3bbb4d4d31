//! `process.cwd`: `-w` is where the program starts; a missing one is created (as Docker does)
//! for the container's process, and an `exec` into a missing one fails.
use crate::support::*;

in_every_isolation!(a_missing_workdir_is_created_for_run_not_for_exec);

fn a_missing_workdir_is_created_for_run_not_for_exec(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let out = sh(
        &husk,
        iso,
        &["-w", "/made/on/demand", "-u", "alice"],
        "pwd; stat -c %u /made/on/demand",
    );
    // Made before the identity switch: root owns it, as with Docker.
    assert_eq!(out, "/made/on/demand\n0\n");
    detached(&husk, iso, "cwd", &[], "sleep 600");
    let out = husk.run(&["exec", "-w", "/not/there", "cwd", "pwd"]);
    assert!(!out.status.success(), "exec into a missing workdir ran");
    assert_eq!(husk.ok(&["exec", "-w", "/tmp", "cwd", "pwd"]), "/tmp\n");
}
