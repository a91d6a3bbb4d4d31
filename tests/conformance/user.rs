//! `process.user`: uid, gid and supplementary groups, by name (resolved in the image) or by
//! number.
use crate::support::*;

in_every_isolation!(a_named_user_gets_its_groups, numeric_uid_and_gid);

fn a_named_user_gets_its_groups(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let out = sh(&husk, iso, &["-u", "alice"], "id -u; id -g; id -G");
    assert_eq!(out, "1000\n1000\n1000 29 50\n");
}

fn numeric_uid_and_gid(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let out = sh(
        &husk,
        iso,
        &["-u", "4321:8765"],
        "id -u; id -g; touch /dev/shm/f; stat -c '%u %g' /dev/shm/f",
    );
    assert_eq!(out, "4321\n8765\n4321 8765\n");
}
