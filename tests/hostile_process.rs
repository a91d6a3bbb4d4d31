//! Process tier, hostile inputs: images and containers that try to escape. Each test is one
//! attack from issue 10 and asserts that it fails (and that the legitimate use next to it
//! still works).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::cli::{process_husk, Husk};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn replace_with_symlink(rootfs: &Path, name: &str, target: &str) {
    let path = rootfs.join(name);
    let _ = std::fs::remove_dir_all(&path);
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// The issue's attack: `proc -> /dev/x`, `dev/x -> /procx` with an empty /procx made procfs
/// land at /procx, where no mask or read-only path covered it.
#[test]
fn symlinked_proc_cannot_move_procfs_past_the_masks() {
    let Some(husk) = process_husk(module_path!(), |rootfs| {
        replace_with_symlink(rootfs, "proc", "/dev/x");
        std::os::unix::fs::symlink("/procx", rootfs.join("dev/x")).unwrap();
        std::fs::create_dir(rootfs.join("procx")).unwrap();
    }) else {
        return;
    };
    let out = husk.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "head -c 20 /procx/timer_list && echo unmasked",
    ]);
    assert!(
        !stdout_of(&out).contains("unmasked"),
        "procfs was mounted at /procx, unmasked"
    );
    assert_eq!(out.status.code(), Some(125));
    let err = stderr_of(&out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("/proc") && err.contains("symlink"), "{err}");
}

/// sys and dev are mount targets too: as symlinks they would put sysfs or the device tmpfs
/// wherever the image says.
#[test]
fn symlinked_sys_or_dev_fails_the_start_naming_the_path() {
    for name in ["sys", "dev"] {
        let Some(husk) = process_husk(module_path!(), |rootfs| {
            std::fs::create_dir(rootfs.join("elsewhere")).unwrap();
            replace_with_symlink(rootfs, name, "/elsewhere");
        }) else {
            return;
        };
        let out = husk.run(&["run", "--rm", "busybox", "ls", "/elsewhere"]);
        assert_eq!(out.status.code(), Some(125), "{name} as a symlink");
        let err = stderr_of(&out);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(&format!("/{name}")), "{err}");
    }
}

/// A symlinked /etc/hosts or user-mount destination is followed only inside the rootfs: the
/// mount lands on the rootfs's own path, never on the host's.
#[test]
fn absolute_symlinks_in_mount_targets_stay_inside_the_rootfs() {
    let host_dir = tempfile::tempdir().unwrap();
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("marker");
    let Some(husk) = process_husk(module_path!(), |rootfs| {
        // Absolute targets that, followed on the host, name host paths.
        std::os::unix::fs::symlink(&marker, rootfs.join("etc/hostname")).unwrap();
        std::os::unix::fs::symlink(host_dir.path(), rootfs.join("data")).unwrap();
    }) else {
        return;
    };
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("file"), "from the volume\n").unwrap();
    let volume = format!("{}:/data", source.path().display());
    let inside = format!("{}", host_dir.path().display());
    let out = husk.run(&[
        "run",
        "--rm",
        "--hostname",
        "inside",
        "-v",
        &volume,
        "busybox",
        "sh",
        "-c",
        &format!("cat /etc/hostname {inside}/file"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "inside\nfrom the volume\n");
    assert!(
        !marker.exists(),
        "husk created a file through the image's link"
    );
    assert!(
        !host_dir.path().join("file").exists(),
        "the volume was mounted on the host path"
    );
}

/// The host libraries the husk binary needs, so that an image can run it (what an image with
/// glibc has anyway).
fn copy_husk_libraries(rootfs: &Path) {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_husk"))
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|word| word.starts_with('/'))
            .map(PathBuf::from);
        let Some(path) = path else { continue };
        let dest = rootfs.join(path.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&path, &dest).unwrap();
    }
}

const PROC_SELF_EXE_SCRIPT: &str = "#!/proc/self/exe\n";

fn proc_self_exe_image() -> Option<Husk> {
    process_husk(module_path!(), |rootfs| {
        copy_husk_libraries(rootfs);
        let script = rootfs.join("e");
        std::fs::write(&script, PROC_SELF_EXE_SCRIPT).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    })
}

fn assert_husk_did_not_run(out: &std::process::Output) {
    let text = format!("{}{}", stdout_of(out), stderr_of(out));
    assert!(
        !text.contains("Usage:") && !text.contains("husk [OPTIONS]"),
        "the host's husk binary ran inside the container: {text}"
    );
    assert_ne!(out.status.code(), Some(0));
}

/// CVE-2019-5736 class: the init is husk until execve, so a `#!/proc/self/exe` entrypoint ran
/// the host's husk binary inside the container.
#[test]
fn proc_self_exe_entrypoint_does_not_run_husk() {
    let Some(husk) = proc_self_exe_image() else {
        return;
    };
    let out = husk.run(&["run", "--rm", "busybox", "/e"]);
    assert_husk_did_not_run(&out);
    // The same image still runs ordinary commands.
    assert_eq!(
        husk.ok(&["run", "--rm", "busybox", "echo", "fine"]),
        "fine\n"
    );
}

#[test]
fn proc_self_exe_through_exec_does_not_run_husk() {
    let Some(husk) = proc_self_exe_image() else {
        return;
    };
    husk.ok(&["run", "-d", "--name", "c", "busybox", "sleep", "30"]);
    let out = husk.run(&["exec", "c", "/e"]);
    assert_husk_did_not_run(&out);
    assert_eq!(husk.ok(&["exec", "c", "echo", "fine"]), "fine\n");
}

/// CVE-2021-41091 class: a setuid-root file made in a container must not be runnable by an
/// unprivileged host user through husk's root (and an existing world-readable root is fixed).
#[test]
fn setuid_file_made_in_a_container_is_out_of_reach_of_host_users() {
    let Some(husk) = process_husk(module_path!(), |_| {}) else {
        return;
    };
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip!("setpriv (util-linux) is not installed");
    }
    // As if created by an older husk (or by `mkdir -p` with umask 022).
    std::fs::set_permissions(husk.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = husk.ok(&[
        "run",
        "--name",
        "maker",
        "busybox",
        "sh",
        "-c",
        "cp /bin/busybox /x && chmod 4755 /x",
    ]);
    assert!(id.is_empty());
    let id = husk
        .ok(&["inspect", "-f", "{{.Id}}", "maker"])
        .trim()
        .to_string();
    let planted = husk
        .root
        .path()
        .join("containers")
        .join(&id)
        .join("upper/x");
    assert!(planted.exists(), "the container's file is in its upper dir");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        // busybox picks its applet from argv[0].
        .args(["bash", "-c", "exec -a true \"$0\""])
        .arg(&planted)
        .output()
        .unwrap();
    eprintln!(
        "setpriv {} -> {:?} {}",
        planted.display(),
        out.status.code(),
        stderr_of(&out)
    );
    assert!(
        !out.status.success(),
        "an unprivileged host user ran a setuid file made in a container"
    );
    assert!(stderr_of(&out).contains("Permission denied"));
    for dir in [
        husk.root.path().to_path_buf(),
        husk.root.path().join("containers"),
        husk.root.path().join("containers").join(&id),
    ] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "{} is {mode:o}", dir.display());
    }
}

/// The container's v1 devices cgroup, when the host has the controller.
fn devices_list(husk: &Husk, name: &str) -> Option<String> {
    let id = husk
        .ok(&["inspect", "-f", "{{.Id}}", name])
        .trim()
        .to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split(' ');
        let fstype = post.next()?;
        let options = post.nth(1)?;
        (fstype == "cgroup" && options.split(',').any(|o| o == "devices"))
            .then(|| pre.split(' ').nth(4).unwrap().to_string())
    })?;
    let path = Path::new(&mount)
        .join("husk")
        .join(&id)
        .join("devices.list");
    Some(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Docker's device rules: container root may mknod any node but open only the allow list.
#[test]
fn device_cgroup_allows_only_dockers_default_devices() {
    let Some(husk) = process_husk(module_path!(), |_| {}) else {
        return;
    };
    husk.ok(&["run", "-d", "--name", "c", "busybox", "sleep", "30"]);
    match devices_list(&husk, "c") {
        Some(list) => {
            let rules: Vec<&str> = list.lines().collect();
            assert!(
                !rules.contains(&"a *:* rwm"),
                "every device allowed: {list}"
            );
            for rule in [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
            ] {
                assert!(rules.contains(&rule), "missing {rule:?} in {list}");
            }
        }
        None => common::note_skip(
            module_path!(),
            "no v1 devices controller: the rule list is not readable here",
        ),
    }
    // A char device outside the list (the tun device, and a made-up one): mknod works (c *:*
    // m), open is refused; /dev/null and /dev/zero still work.
    let out = husk.run(&[
        "exec",
        "c",
        "sh",
        "-c",
        "mknod /tmp/tun c 10 200 && mknod /tmp/made-up c 240 0 && \
         (head -c 1 /tmp/tun; head -c 1 /tmp/made-up; echo x > /dev/null; \
          head -c 1 /dev/zero | wc -c)",
    ]);
    let err = stderr_of(&out);
    assert!(err.contains("/tmp/tun: Operation not permitted"), "{err}");
    assert!(
        err.contains("/tmp/made-up: Operation not permitted"),
        "{err}"
    );
    assert_eq!(stdout_of(&out).trim(), "1");
}

/// `--privileged` lifts the device rules; `--device` passes one device through.
#[test]
fn privileged_and_device_flags_open_the_device_cgroup() {
    let Some(husk) = process_husk(module_path!(), |_| {}) else {
        return;
    };
    // Privileged: the made-up node opens as far as the kernel's driver lookup (ENXIO).
    let out = husk.run(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "sh",
        "-c",
        "mknod /tmp/made-up c 240 0 && head -c 1 /tmp/made-up",
    ]);
    let err = stderr_of(&out);
    assert!(!err.contains("Operation not permitted"), "{err}");
    assert!(err.contains("No such device"), "{err}");

    if !Path::new("/dev/net/tun").exists() {
        skip!("/dev/net/tun does not exist on this host");
    }
    husk.ok(&[
        "run",
        "-d",
        "--name",
        "t",
        "--device",
        "/dev/net/tun:/dev/tun0:rw",
        "busybox",
        "sleep",
        "30",
    ]);
    if let Some(list) = devices_list(&husk, "t") {
        assert!(list.lines().any(|l| l == "c 10:200 rw"), "{list}");
    }
    let out = husk.run(&[
        "exec",
        "t",
        "sh",
        "-c",
        "ls -l /dev/tun0 && head -c 1 /dev/tun0",
    ]);
    let err = stderr_of(&out);
    assert!(stdout_of(&out).contains("10,"), "{}", stdout_of(&out));
    // tun answers a plain read without TUNSETIFF with EBADFD: the open itself was allowed.
    assert!(!err.contains("Operation not permitted"), "{err}");
}

/// A descriptor the caller left open without close-on-exec does not reach the container.
#[test]
fn descriptors_inherited_by_husk_do_not_leak_into_the_container() {
    let Some(husk) = process_husk(module_path!(), |_| {}) else {
        return;
    };
    let leaked = std::fs::File::open("/etc/hostname").unwrap();
    let mut cmd = husk.cmd();
    cmd.args(["run", "--rm", "busybox", "ls", "/proc/self/fd"]);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    // SAFETY: dup2 in the forked child before exec; only async-signal-safe calls.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let fds: Vec<String> = stdout_of(&out)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    // 0, 1, 2 and the directory ls is reading.
    assert_eq!(fds.len(), 4, "descriptors in the container: {fds:?}");
    assert!(!fds.contains(&"7".to_string()), "{fds:?}");
}

/// `exec -t` gets a terminal of the container's own devpts, which `tty` names.
#[test]
fn exec_tty_is_a_pty_of_the_container() {
    let Some(husk) = process_husk(module_path!(), |_| {}) else {
        return;
    };
    husk.ok(&["run", "-d", "--name", "c", "busybox", "sleep", "30"]);
    let out = husk.run(&["exec", "-t", "c", "sh", "-c", "tty; ls /dev/pts"]);
    let text = stdout_of(&out).replace('\r', "");
    let mut lines = text.lines();
    let tty = lines.next().unwrap_or_default().to_string();
    let pty_number = tty
        .strip_prefix("/dev/pts/")
        .unwrap_or_else(|| panic!("tty said {tty:?}"));
    let listed: Vec<&str> = lines.flat_map(str::split_whitespace).collect();
    assert!(listed.contains(&pty_number), "{tty} not in {listed:?}");
}

/// An exec'd process gets the container's rlimits and umask, not those of the husk that
/// started it.
#[test]
fn exec_applies_the_containers_rlimits_and_umask() {
    let Some(husk) = process_husk(module_path!(), |_| {}) else {
        return;
    };
    husk.ok(&["run", "-d", "--name", "c", "busybox", "sleep", "30"]);
    let init = husk.ok(&["exec", "c", "cat", "/proc/1/limits"]);
    let mut cmd = husk.cmd();
    cmd.args(["exec", "c", "sh", "-c", "umask; cat /proc/self/limits"]);
    // SAFETY: umask and setrlimit in the forked child before exec; both async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::umask(0o077);
            let mut limit: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = 64;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let exec = stdout_of(&out);
    let open_files = |limits: &str| {
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .map(str::to_string)
    };
    assert_eq!(exec.lines().next(), Some("0022"), "{exec}");
    assert!(open_files(&init).is_some());
    assert_eq!(open_files(&exec), open_files(&init));
}

const SECCOMP_PROBE: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *what, long rc) {
    printf("%s: %s\n", what, rc < 0 ? strerror(errno) : "ok");
}

int main(void) {
    char params[120] = {0};
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, params));
    report("socket(AF_VSOCK)", socket(40, SOCK_STREAM, 0));
    report("socket(AF_UNIX)", socket(AF_UNIX, SOCK_STREAM, 0));
    report("personality(ADDR_NO_RANDOMIZE)", syscall(SYS_personality, 0x0040000));
    report("personality(query)", syscall(SYS_personality, 0xffffffffUL));
    return 0;
}
"#;

/// `source` (C) built as a static program `name` in `dir`, or None when this host has no cc
/// with a static libc.
fn static_probe(dir: &tempfile::TempDir, name: &str, source: &str) -> Option<std::path::PathBuf> {
    let c = dir.path().join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let out = dir.path().join(name);
    let compiled = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&out)
        .arg(&c)
        .status();
    compiled.is_ok_and(|s| s.success()).then_some(out)
}

/// Docker's default profile blocks io_uring, vsock sockets and unusual personalities; a
/// static probe built here makes the calls from inside a container.
#[test]
fn seccomp_blocks_io_uring_vsock_and_personality_like_docker() {
    let build = tempfile::tempdir().unwrap();
    let Some(probe) = static_probe(&build, "probe", SECCOMP_PROBE) else {
        skip!("cannot build a static probe: cc with libc6-dev is needed");
    };
    let Some(husk) = process_husk(module_path!(), |rootfs| {
        std::fs::copy(&probe, rootfs.join("bin/probe")).unwrap();
    }) else {
        return;
    };
    let out = husk.ok(&["run", "--rm", "busybox", "/bin/probe"]);
    assert_eq!(
        out,
        "io_uring_setup: Operation not permitted\n\
         socket(AF_VSOCK): Operation not permitted\n\
         socket(AF_UNIX): ok\n\
         personality(ADDR_NO_RANDOMIZE): Operation not permitted\n\
         personality(query): ok\n"
    );
}

/// `exec` joins the namespaces of the recorded init only while that pid still names the same
/// process (start time as recorded): a recycled pid must not put the command into whatever
/// process holds it now.
#[test]
fn exec_refuses_a_pid_whose_start_time_changed() {
    let Some(husk) = process_husk(module_path!(), |_| {}) else {
        return;
    };
    husk.ok(&["run", "-d", "--name", "c", "busybox", "sleep", "30"]);
    let id = husk
        .ok(&["inspect", "-f", "{{.Id}}", "c"])
        .trim()
        .to_string();
    let path = husk
        .root
        .path()
        .join("containers")
        .join(&id)
        .join("record.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let start = record["state"]["init"]["start_time"].as_u64().unwrap();
    // As if the container's init had died and its pid had gone to a younger process.
    record["state"]["init"]["start_time"] = (start + 1).into();
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    let out = husk.run(&["exec", "c", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr_of(&out).contains("is gone"), "{}", stderr_of(&out));
}

/// CVE-2021-30465 class: a container that shares a volume swaps a directory in it for a
/// symlink pointing outside, hoping another container's bind mount inside that volume follows
/// it on the host. Resolved inside the rootfs and mounted through the descriptor, the mount
/// lands in the second container's own tree, whichever state it sees.
#[test]
fn symlink_swapped_into_a_shared_volume_cannot_redirect_a_bind_mount() {
    let Some(husk) = process_husk(module_path!(), |_| {}) else {
        return;
    };
    let outside = std::env::temp_dir().join(format!("husk-hostile-{}-outside", std::process::id()));
    let _ = std::fs::remove_dir_all(&outside);
    let outside = outside.to_str().unwrap().to_string();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("marker"), "from the bind source\n").unwrap();
    let bind = format!("{}:/data/x", source.path().display());
    let reader = format!("cat /data/x/marker 2>/dev/null || cat {outside}/marker");

    // The plain case: the symlink is already there when the second container starts.
    husk.ok(&[
        "run",
        "--rm",
        "-v",
        "shared:/shared",
        "busybox",
        "ln",
        "-s",
        &outside,
        "/shared/x",
    ]);
    let out = husk.run(&[
        "run",
        "--rm",
        "-v",
        "shared:/data",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        &reader,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "from the bind source\n");
    assert!(
        !Path::new(&outside).exists(),
        "a mount point was made on the host"
    );

    // The race: another container swaps the directory and the symlink without pause.
    husk.ok(&[
        "run",
        "-d",
        "--name",
        "swapper",
        "-v",
        "shared:/shared",
        "busybox",
        "sh",
        "-c",
        &format!(
            "while true; do rm -rf /shared/x; mkdir /shared/x; rm -rf /shared/x; \
             ln -s {outside} /shared/x; done"
        ),
    ]);
    for _ in 0..10 {
        let out = husk.run(&[
            "run",
            "--rm",
            "-v",
            "shared:/data",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            &reader,
        ]);
        // 0: the marker was found; 1: the swapper removed the mount point after the mount
        // (which detaches it); 125: it removed the resolved directory before the mount, which
        // then fails on the deleted directory rather than following anything. Never the
        // host's path.
        let code = out.status.code();
        let vanished =
            code == Some(125) && stderr_of(&out).contains("bind-mounting onto /data/x: ENOENT");
        assert!(
            matches!(code, Some(0) | Some(1)) || vanished,
            "{code:?}: {}",
            stderr_of(&out)
        );
        assert!(
            !Path::new(&outside).exists(),
            "a mount point was made on the host"
        );
    }
}

/// The masks and read-only paths, now mounted through descriptors, still cover what they name
/// in an ordinary container.
#[test]
fn masks_and_read_only_paths_cover_procfs() {
    let Some(husk) = process_husk(module_path!(), |_| {}) else {
        return;
    };
    let out = husk.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "wc -c < /proc/timer_list; ls -A /proc/scsi | wc -l; \
         echo 1 > /proc/sysrq-trigger || echo sysrq-refused; \
         echo x > /proc/sys/kernel/core_pattern || echo core-pattern-refused",
    ]);
    let lines: Vec<String> = stdout_of(&out)
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(
        lines,
        ["0", "0", "sysrq-refused", "core-pattern-refused"],
        "{}",
        stderr_of(&out)
    );
    assert!(stderr_of(&out).contains("Read-only file system"));
}

const EXE_WATCHER: &str = r#"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* For argv[1] seconds, read /proc/PID/exe of every other process, as fast as it can; print
   each distinct target once. */
int main(int argc, char **argv) {
    time_t end = time(NULL) + atoi(argv[1]);
    char seen[64][256];
    int nseen = 0;
    pid_t self = getpid();
    while (time(NULL) < end) {
        DIR *proc = opendir("/proc");
        struct dirent *e;
        while (proc && (e = readdir(proc))) {
            int pid = atoi(e->d_name);
            if (pid <= 0 || pid == self) continue;
            char link[64], target[256];
            snprintf(link, sizeof link, "/proc/%d/exe", pid);
            ssize_t n = readlink(link, target, sizeof target - 1);
            if (n <= 0) continue;
            target[n] = 0;
            int known = 0;
            for (int i = 0; i < nseen; i++) known |= !strcmp(seen[i], target);
            if (!known && nseen < 64) {
                strcpy(seen[nseen++], target);
                printf("%s\n", target);
                fflush(stdout);
            }
        }
        if (proc) closedir(proc);
    }
    return 0;
}
"#;

/// CVE-2019-5736's other half: while `exec` sets a command up it is a clone of husk inside
/// the container's pid namespace, where container root could open its /proc/PID/exe (the
/// host binary). Non-dumpable until the trampoline's execve, its exe link cannot be read.
#[test]
fn container_processes_never_see_the_host_binary_through_proc() {
    let build = tempfile::tempdir().unwrap();
    let Some(watcher) = static_probe(&build, "watcher", EXE_WATCHER) else {
        skip!("cannot build a static probe: cc with libc6-dev is needed");
    };
    let Some(husk) = process_husk(module_path!(), |rootfs| {
        std::fs::copy(&watcher, rootfs.join("bin/watcher")).unwrap();
    }) else {
        return;
    };
    husk.ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "busybox",
        "sh",
        "-c",
        "watcher 4 > /tmp/seen; sleep 30",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let mut execs = 0;
    while std::time::Instant::now() < deadline {
        husk.ok(&["exec", "c", "true"]);
        execs += 1;
    }
    husk.wait_for("the watcher", || {
        husk.ok(&["exec", "c", "sh", "-c", "pidof watcher || echo done"])
            .contains("done")
    });
    let seen = husk.ok(&["exec", "c", "cat", "/tmp/seen"]);
    eprintln!("{execs} execs; exe links seen: {seen}");
    let host_binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_husk")).unwrap();
    assert!(
        !seen.lines().any(|l| Path::new(l) == host_binary),
        "a container process read the host binary's path from /proc: {seen}"
    );
}

/// husk as on a kernel from before openat2, close_range, open_tree and mount_setattr (5.4 and
/// older): a seccomp filter on husk answers them with ENOSYS, so the fallbacks run, the
/// component walk, the /proc/self/fd walk and bind + remount, and must hold the same lines.
#[test]
fn fallbacks_for_older_kernels_hold_the_same_lines() {
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
    let host_dir = tempfile::tempdir().unwrap();
    let Some(husk) = process_husk(module_path!(), |rootfs| {
        std::os::unix::fs::symlink(host_dir.path(), rootfs.join("data")).unwrap();
    }) else {
        return;
    };
    let newer_calls = [
        libc::SYS_openat2,
        libc::SYS_close_range,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_move_mount,
    ];
    let filter = SeccompFilter::new(
        newer_calls.iter().map(|nr| (*nr, Vec::new())).collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .unwrap();
    let program: seccompiler::BpfProgram = filter.try_into().unwrap();

    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("file"), "from the volume\n").unwrap();
    let volume = format!("{}:/data:ro", source.path().display());
    let inside = host_dir.path().display().to_string();
    let leaked = std::fs::File::open("/etc/hostname").unwrap();
    let leaked_fd = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    let mut cmd = husk.cmd();
    cmd.args([
        "run",
        "--rm",
        "-v",
        &volume,
        "busybox",
        "sh",
        "-c",
        &format!(
            "cat {inside}/file; touch {inside}/new || echo volume-read-only; \
             echo x > /proc/sys/kernel/core_pattern || echo proc-sys-read-only; \
             wc -c < /proc/timer_list; ls /proc/self/fd | wc -l"
        ),
    ]);
    // SAFETY: dup2 and the filter's prctl + seccomp in the forked child before exec; the
    // program was built before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::dup2(leaked_fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            seccompiler::apply_filter(&program).map_err(std::io::Error::other)
        });
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let lines: Vec<String> = stdout_of(&out)
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "from the volume",
            "volume-read-only",
            "proc-sys-read-only",
            "0",
            // 0, 1, 2 and the directory ls reads (busybox ls counts it).
            "4",
        ],
        "{}",
        stderr_of(&out)
    );
    assert!(!host_dir.path().join("file").exists());
}
