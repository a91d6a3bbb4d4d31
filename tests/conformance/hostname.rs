//! `hostname`: `--hostname`, else the container's short id, as Docker does.
use crate::support::*;

in_every_isolation!(hostname_is_the_flag_or_the_short_id);

fn hostname_is_the_flag_or_the_short_id(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    assert_eq!(
        sh(&husk, iso, &["--hostname", "box-1"], "hostname"),
        "box-1\n"
    );
    husk.ok(&[
        "run",
        "--isolation",
        iso,
        "--name",
        "named",
        "busybox",
        "hostname",
    ]);
    let id = husk.ok(&["inspect", "-f", "{{.Id}}", "named"]);
    assert_eq!(husk.logs("named").trim(), &id.trim()[..12]);
}
