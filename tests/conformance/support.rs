//! What every conformance case needs: a husk root with a busybox image for the isolation under
//! test, and `run` helpers.

use std::process::Output;

pub use crate::common::cli::Husk;

/// A husk root whose busybox image also has a user `alice` (uid 1000, in groups staff and
/// audio) and a file that is not executable; None (the reason noted) when this host cannot
/// run `isolation`.
pub fn husk(test: &str, isolation: &str) -> Option<Husk> {
    if !crate::common::is_root() {
        crate::common::note_skip(test, "conformance cases need root");
        return None;
    }
    if crate::common::host_busybox().is_none() {
        crate::common::note_skip(test, "busybox-static is not installed");
        return None;
    }
    let mut env = Vec::new();
    match crate::common::guest_assets() {
        Ok((kernel, agent)) => {
            env.push(("HUSK_KERNEL", kernel.clone().into_os_string()));
            env.push(("HUSK_AGENT", agent.clone().into_os_string()));
            env.push(("HUSK_VMM", crate::common::vm_monitor().into()));
        }
        Err(why) if isolation == "vm" => {
            crate::common::note_skip(test, &why);
            return None;
        }
        Err(_) => {}
    }
    let husk = Husk::new(env);
    husk.import_busybox(|rootfs| {
        let append = |file: &str, text: &str| {
            let path = rootfs.join(file);
            let mut content = std::fs::read_to_string(&path).unwrap_or_default();
            content.push_str(text);
            std::fs::write(path, content).unwrap();
        };
        append(
            "etc/passwd",
            "alice:x:1000:1000:alice:/home/alice:/bin/sh\n",
        );
        append(
            "etc/group",
            "alice:x:1000:\nstaff:x:50:alice\naudio:x:29:nobody,alice\n",
        );
        std::fs::create_dir_all(rootfs.join("home/alice")).unwrap();
        std::fs::write(rootfs.join("bin/not-executable"), "#!/bin/sh\necho ran\n").unwrap();
    });
    Some(husk)
}

/// `husk run --rm --isolation ISO ARGS...`, required to succeed; its stdout.
pub fn run(husk: &Husk, isolation: &str, args: &[&str]) -> String {
    let out = run_status(husk, isolation, args);
    assert!(out.status.success(), "husk run {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// `husk run --rm --isolation ISO ARGS...`, whatever it exits with.
pub fn run_status(husk: &Husk, isolation: &str, args: &[&str]) -> Output {
    let mut full = vec!["run", "--rm", "--isolation", isolation];
    full.extend_from_slice(args);
    husk.run(&full)
}

/// `sh -c SCRIPT` in a fresh busybox container with `flags` before the image.
pub fn sh(husk: &Husk, isolation: &str, flags: &[&str], script: &str) -> String {
    let mut args = flags.to_vec();
    args.extend(["busybox", "sh", "-c", script]);
    run(husk, isolation, &args)
}

/// The value of `field` ("CapEff") in /proc/self/status text.
pub fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// Start a detached container `name` running `script`; returns once it runs.
pub fn detached(husk: &Husk, isolation: &str, name: &str, flags: &[&str], script: &str) {
    let mut args = vec!["run", "-d", "--isolation", isolation, "--name", name];
    args.extend_from_slice(flags);
    args.extend(["busybox", "sh", "-c", script]);
    husk.ok(&args);
    husk.wait_for("the container to run", || husk.status(name) == "running");
}
