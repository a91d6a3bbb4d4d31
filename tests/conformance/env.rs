//! `process.env`: the image's, then `-e`; HOME from passwd when nobody set it.
use crate::support::*;

in_every_isolation!(flags_override_the_image_and_home_comes_from_passwd);

fn flags_override_the_image_and_home_comes_from_passwd(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let out = sh(
        &husk,
        iso,
        &["-e", "GREETING=hi there", "-e", "PATH=/bin", "-u", "alice"],
        "echo \"$GREETING|$PATH|$HOME\"",
    );
    assert_eq!(out, "hi there|/bin|/home/alice\n");
    let out = sh(&husk, iso, &["-e", "HOME=/elsewhere"], "echo $HOME");
    assert_eq!(out, "/elsewhere\n");
}
