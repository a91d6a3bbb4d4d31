//! `linux.seccomp`: Docker's default profile, the same compiled filters in both isolations,
//! denying what it denies; `--security-opt seccomp=unconfined` installs none.
use crate::support::*;

in_every_isolation!(
    the_default_profile_is_installed_and_denies,
    unconfined_installs_no_filter
);

fn the_default_profile_is_installed_and_denies(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let out = sh(
        &husk,
        iso,
        // The profile allows unshare only to holders of CAP_SYS_ADMIN: EPERM.
        &[],
        "grep Seccomp /proc/self/status; unshare -m true 2>&1; echo unshare=$?",
    );
    assert!(out.contains("Seccomp:\t2\n"), "{out}");
    // husk compiles the profile to one filter per action (see src/process/seccomp.rs).
    assert!(out.contains("Seccomp_filters:\t2\n"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.ends_with("unshare=1\n"), "{out}");
}

fn unconfined_installs_no_filter(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let status = sh(
        &husk,
        iso,
        &["--security-opt", "seccomp=unconfined"],
        "cat /proc/self/status",
    );
    assert_eq!(status_field(&status, "Seccomp"), "0");
}
