//! `process.args`: the command reaches the program word for word.
use crate::support::*;

in_every_isolation!(
    arguments_arrive_unchanged,
    the_image_cmd_runs_when_none_is_given
);

fn arguments_arrive_unchanged(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let out = run(
        &husk,
        iso,
        &[
            "busybox",
            "sh",
            "-c",
            "printf '[%s]' \"$@\"",
            "sh",
            "a b",
            "",
            "c\"d",
            "*",
        ],
    );
    assert_eq!(out, "[a b][][c\"d][*]");
}

fn the_image_cmd_runs_when_none_is_given(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    // The image's CMD is ["sh"]: with stdin closed it reads nothing and exits 0.
    let out = run_status(&husk, iso, &["busybox"]);
    assert_eq!(out.status.code(), Some(0));
}
