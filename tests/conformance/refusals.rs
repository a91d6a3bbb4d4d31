//! `refusals`: what a sandbox cannot honour is refused before anything is created, with one
//! line naming the flag, never silently dropped. `-p` with `--network none` in both
//! isolations; `--network host` and `--device` only in a VM, whose guest has its
//! own kernel, network stack and devices (the deliberate difference), while a process
//! container honours them.
use crate::support::*;

in_every_isolation!(flags_a_sandbox_cannot_honour_are_refused_with_one_line);

fn flags_a_sandbox_cannot_honour_are_refused_with_one_line(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let mut refused: Vec<(Vec<&str>, &str)> = vec![(
        vec!["--network", "none", "-p", "8080:80"],
        "conflicting options: port publishing",
    )];
    let vm_only: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--network", "host"], "--network host"),
        (vec!["--device", "/dev/null:/dev/extra-null"], "--device"),
    ];
    if iso == "vm" {
        refused.extend(vm_only.iter().cloned());
    } else {
        for (flags, _) in &vm_only {
            let mut args = flags.clone();
            args.extend(["busybox", "true"]);
            run(&husk, iso, &args);
        }
    }
    for (flags, says) in &refused {
        let mut args = vec!["run", "--isolation", iso];
        args.extend(flags);
        args.extend(["busybox", "true"]);
        let out = husk.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
    assert_eq!(husk.ok(&["ps", "-aq"]), "", "nothing was created");
}
