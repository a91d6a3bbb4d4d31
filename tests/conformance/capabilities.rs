//! `process.capabilities`: Docker's default set in all five sets, `--cap-add`/`--cap-drop`, and
//! none left to a non-root user. Compared as the kernel reports them in /proc/self/status.
use crate::support::*;

/// Docker's default: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
/// NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
const DOCKER_DEFAULT: &str = "00000000a80425fb";

in_every_isolation!(
    root_gets_dockers_default_set,
    a_user_keeps_the_bounding_set_but_holds_nothing,
    cap_drop_and_cap_add_change_what_root_may_do,
);

fn sets(husk: &Husk, iso: &str, flags: &[&str]) -> [String; 5] {
    let status = sh(husk, iso, flags, "cat /proc/self/status");
    ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"].map(|f| status_field(&status, f))
}

fn root_gets_dockers_default_set(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let [inh, prm, eff, bnd, amb] = sets(&husk, iso, &[]);
    assert_eq!([prm, eff, bnd], [DOCKER_DEFAULT; 3].map(String::from));
    assert_eq!([inh, amb], ["0000000000000000"; 2].map(String::from));
}

fn a_user_keeps_the_bounding_set_but_holds_nothing(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let [inh, prm, eff, bnd, amb] = sets(&husk, iso, &["-u", "alice"]);
    assert_eq!(bnd, DOCKER_DEFAULT);
    for set in [inh, prm, eff, amb] {
        assert_eq!(set, "0000000000000000");
    }
}

fn cap_drop_and_cap_add_change_what_root_may_do(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let out = sh(
        &husk,
        iso,
        &["--cap-drop", "CHOWN", "--cap-add", "SYS_TIME"],
        "grep CapEff /proc/self/status; touch /tmp/f; chown 1 /tmp/f 2>&1; echo chown=$?",
    );
    // CHOWN (bit 0) gone, SYS_TIME (bit 25) added.
    assert!(out.contains("CapEff:\t00000000aa0425fa"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.ends_with("chown=1\n"), "{out}");
}
