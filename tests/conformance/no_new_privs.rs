//! `process.noNewPrivileges`: off by default, on with `--security-opt no-new-privileges`, and
//! it holds across exec: `setpriv` cannot turn it back off.
use crate::support::*;

in_every_isolation!(no_new_privileges_is_set_on_request_only);

fn no_new_privileges_is_set_on_request_only(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let status = sh(&husk, iso, &[], "cat /proc/self/status");
    assert_eq!(status_field(&status, "NoNewPrivs"), "0");
    let status = sh(
        &husk,
        iso,
        &["--security-opt", "no-new-privileges", "-u", "alice"],
        "cat /proc/self/status",
    );
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
}
