//! `top`: the container's processes, in Docker's columns.
use crate::support::*;

in_every_isolation!(top_lists_the_containers_processes);

fn top_lists_the_containers_processes(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    detached(&husk, iso, "box", &[], "sleep 600 & sleep 700");
    husk.wait_for("both sleeps", || {
        let top = husk.ok(&["top", "box"]);
        top.contains("sleep 600") && top.contains("sleep 700")
    });
    let top = husk.ok(&["top", "box"]);
    assert!(top.lines().next().unwrap().contains("PID"), "{top}");
}
