//! VM isolation through the husk CLI, end to end: our guest kernel, our agent in the
//! initramfs, the image as an erofs disk and a per-container ext4 disk.
//!
//! Every case runs twice in CI: in the main suite on the host, where KVM is PVM and a stock
//! guest cannot boot on it, under QEMU TCG with `HUSK_VMM=qemu` (tier T2); and in the nested
//! tier (scripts/test-nested.sh), inside an L1 Linux with emulated SVM, on husk's own monitor
//! (T3). On hardware KVM the main suite uses husk's monitor directly.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cli::Husk;

/// VM isolation with a busybox image on the monitor of `common::vm_monitor`.
fn ready() -> Option<Husk> {
    let (kernel, agent) = match common::guest_assets() {
        Ok(assets) => assets.clone(),
        Err(why) => {
            common::note_skip(module_path!(), &why);
            return None;
        }
    };
    let env = vec![
        ("HUSK_ISOLATION", "vm".into()),
        ("HUSK_KERNEL", kernel.into_os_string()),
        ("HUSK_AGENT", agent.into_os_string()),
        ("HUSK_VMM", common::vm_monitor().into()),
    ];
    let husk = Husk::new(env);
    husk.import_busybox(|_| {});
    Some(husk)
}

#[test]
fn runs_commands_with_docker_exit_codes() {
    let Some(husk) = ready() else { return };
    let out = husk.run(&["run", "--rm", "busybox", "echo", "hello"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");

    // The guest runs its own kernel, not the host's.
    let guest_kernel = husk.ok(&["run", "--rm", "busybox", "uname", "-r"]);
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(guest_kernel.trim(), host_kernel.trim());

    let code = |args: &[&str]| husk.run(args).status.code();
    assert_eq!(
        code(&["run", "--rm", "busybox", "sh", "-c", "exit 1"]),
        Some(1)
    );
    assert_eq!(
        code(&["run", "--rm", "busybox", "no-such-command"]),
        Some(127)
    );
    assert!(husk.ok(&["ps", "-a", "-q"]).is_empty(), "--rm left records");
    // The journal has each run's exit, as `husk events` shows it (the same as for a process).
    let events = husk.ok(&["events", "--since", "10m", "--until", "0s"]);
    let dies: Vec<&str> = events.lines().filter(|l| l.contains(" die ")).collect();
    assert_eq!(dies.len(), 4, "{events}");
    assert!(dies[2].contains("(exitCode=1, image=busybox, "), "{events}");
    assert!(dies[3].contains("(exitCode=127, "), "{events}");
    assert_eq!(events.matches(" destroy ").count(), 4, "{events}");
}

#[test]
fn stdin_terminal_and_stderr() {
    let Some(husk) = ready() else { return };
    let mut child = husk
        .cmd()
        .args([
            "run",
            "--rm",
            "-i",
            "busybox",
            "sh",
            "-c",
            "tr a-z A-Z; echo oops >&2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped through\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "PIPED THROUGH\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));

    // -t: the process gets a terminal in the guest.
    let out = husk.run(&["run", "--rm", "-t", "busybox", "tty"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"));
}

#[test]
fn writable_disk_survives_a_restart_and_kill_gives_137() {
    let Some(husk) = ready() else { return };
    husk.ok(&[
        "create",
        "--name",
        "keeper",
        "busybox",
        "sh",
        "-c",
        "echo run >> /data.log; cat /data.log",
    ]);
    assert_eq!(husk.ok(&["start", "-a", "keeper"]), "run\n");
    assert_eq!(husk.ok(&["start", "-a", "keeper"]), "run\nrun\n");
    let ps = husk.ok(&["ps", "-a", "-f", "name=keeper"]);
    assert!(ps.contains(" vm"), "{ps}");

    let id = husk.ok(&["run", "-d", "busybox", "sleep", "600"]);
    let id = id.trim();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !husk
        .ok(&["inspect", "-f", "{{.State.Status}}", id])
        .contains("running")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    husk.ok(&["kill", id]);
    assert_eq!(husk.ok(&["wait", id]).trim(), "137");
    assert_eq!(
        husk.ok(&["inspect", "-f", "{{.HostConfig.Isolation}}", id])
            .trim(),
        "vm"
    );
}

#[test]
fn volumes_without_virtiofsd_fail_with_one_line_and_leave_nothing() {
    let Some(husk) = ready() else { return };
    let out = husk
        .cmd()
        .args(["run", "--rm", "-v", "/tmp:/data", "busybox", "true"])
        .env("HUSK_VIRTIOFSD", "/nonexistent/virtiofsd")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("virtiofsd"), "{stderr}");
    assert_eq!(husk.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn exec_runs_in_the_running_guest() {
    let Some(husk) = ready() else { return };
    husk.ok(&["run", "-d", "--name", "guest", "busybox", "sleep", "600"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !husk
        .ok(&["inspect", "-f", "{{.State.Status}}", "guest"])
        .contains("running")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The command is PID 1 of the container's namespace in the guest, as in a process
    // container; the kernel is the guest's own.
    let ps = husk.ok(&["exec", "guest", "ps"]);
    assert!(
        ps.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("sleep 600")),
        "{ps}"
    );
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(husk.ok(&["exec", "guest", "uname", "-r"]), host_release);
    let out = husk.run(&[
        "exec",
        "guest",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 6",
    ]);
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(
        husk.ok(&["exec", "-u", "nobody", "guest", "id", "-u"]),
        "65534\n"
    );
    let mut child = husk
        .cmd()
        .args(["exec", "-i", "guest", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through the agent\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through the agent\n");
    assert_eq!(
        husk.run(&["exec", "guest", "no-such"]).status.code(),
        Some(127)
    );

    // top asks the guest's own ps; cp goes through the guest's tar, both ways.
    assert!(husk.ok(&["top", "guest"]).contains("sleep 600"));
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("note");
    std::fs::write(&file, "from the host\n").unwrap();
    husk.ok(&["cp", file.to_str().unwrap(), "guest:/root/"]);
    husk.ok(&["cp", file.to_str().unwrap(), "guest:/root/renamed"]);
    assert_eq!(
        husk.ok(&["exec", "guest", "cat", "/root/note", "/root/renamed"]),
        "from the host\nfrom the host\n"
    );
    let back = host.path().join("back");
    husk.ok(&["cp", "guest:/root/note", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(back).unwrap(), "from the host\n");
}

/// `husk exec -it` in a VM: when the window of husk's terminal changes, the guest's pty
/// follows while the process runs (SIGWINCH becomes a resize request to the supervisor).
#[test]
fn exec_it_follows_the_window_of_its_terminal() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let Some(husk) = ready() else { return };
    husk.ok(&["run", "-d", "--name", "winch", "busybox", "sleep", "600"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !husk
        .ok(&["inspect", "-f", "{{.State.Status}}", "winch"])
        .contains("running")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let size = |rows, cols| libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size(24, 80)), None).unwrap();
    let slave = pty.slave;
    let mut command = husk.cmd();
    command
        .args(["exec", "-it", "winch", "sh", "-c"])
        .arg("stty size; while read line; do stty size; done")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: between fork and exec only async-signal-safe calls: husk gets a session of
    // its own whose controlling terminal is the pty, as a shell would give it, so the
    // kernel sends it SIGWINCH when the window changes.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    drop(slave);
    let master = std::fs::File::from(pty.master);
    let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = std::sync::Arc::clone(&output);
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            seen.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait_for = |what: &str, mut poke: Box<dyn FnMut() + '_>| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !output.lock().unwrap().contains(what) {
            assert!(
                Instant::now() < deadline,
                "no {what:?} in {:?}",
                output.lock().unwrap()
            );
            poke();
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for("24 80", Box::new(|| {}));
    let new_size = size(50, 132);
    // SAFETY: TIOCSWINSZ reads the winsize we own, on a pty master we hold.
    let resized = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &new_size) };
    assert_eq!(resized, 0);
    // Each line makes the shell print its size again; the resize travels apart from the
    // input, so ask until it has arrived.
    let mut writer = &master;
    wait_for(
        "50 132",
        Box::new(|| {
            let _ = writer.write_all(b"\n");
        }),
    );
    let _ = child.kill();
    let _ = child.wait();
    husk.ok(&["rm", "-f", "winch"]);
}

#[test]
fn attach_feeds_a_detached_guest() {
    let Some(husk) = ready() else { return };
    husk.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "reader",
        "busybox",
        "sh",
        "-c",
        "read l; echo \"got $l\"; exit 4",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !husk
        .ok(&["inspect", "-f", "{{.State.Status}}", "reader"])
        .contains("running")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut child = husk
        .cmd()
        .args(["attach", "reader"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"line\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got line\n");
    assert_eq!(out.status.code(), Some(4));
}

/// `--read-only` as with process isolation: the guest's root refuses writes, /dev/shm takes
/// them, and without the flag the root is writable.
#[test]
fn read_only_root_refuses_writes_in_the_guest() {
    let Some(husk) = ready() else { return };
    let out = husk
        .cmd()
        .args(["run", "--rm", "--read-only", "busybox", "touch", "/x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    let shm = "echo ok > /dev/shm/f && cat /dev/shm/f";
    assert_eq!(
        husk.ok(&["run", "--rm", "--read-only", "busybox", "sh", "-c", shm]),
        "ok\n"
    );
    husk.ok(&["run", "--rm", "busybox", "touch", "/x"]);
}

/// A hostile guest whose `tar` never ends: `cp` out of it stops at the bound with one line,
/// writes nothing at the destination and leaves no staging file.
#[test]
fn cp_from_a_guest_whose_tar_never_ends_stops_at_the_bound() {
    let Some(husk) = ready() else { return };
    husk.ok(&["run", "-d", "--name", "flood", "busybox", "sleep", "600"]);
    husk.wait_for("the guest to run", || husk.status("flood") == "running");
    husk.ok(&[
        "exec",
        "flood",
        "sh",
        "-c",
        "rm /bin/tar && printf '#!/bin/sh\\nexec cat /dev/zero\\n' > /bin/tar && chmod 755 /bin/tar",
    ]);
    let host = tempfile::tempdir().unwrap();
    let dest = host.path().join("passwd");
    let out = husk
        .cmd()
        .env("HUSK_CP_MAX_BYTES", "1048576")
        .args(["cp", "flood:/etc/passwd", dest.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("1048576 bytes"), "{stderr}");
    assert!(!dest.exists());
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
    // The guest is still there and still answers, and the runaway tar is gone with the copy.
    assert_eq!(husk.ok(&["exec", "flood", "echo", "alive"]), "alive\n");
    husk.wait_for("the runaway tar to be killed", || {
        !husk.ok(&["exec", "flood", "ps"]).contains("/dev/zero")
    });
}

/// The VM's monitor is confined, whichever it is. husk's own: a process of its own (not a
/// thread of the supervisor) whose every thread is under seccomp and runs as the jail's uid,
/// without capabilities, in namespaces of its own with an empty root. QEMU (T2): its own
/// seccomp sandbox on every thread and, once it has opened what it needs, the `nobody` user.
#[test]
fn the_monitor_runs_confined_every_thread_filtered_and_unprivileged() {
    let Some(husk) = ready() else { return };
    husk.ok(&["run", "-d", "--name", "jailed", "busybox", "sleep", "600"]);
    husk.wait_for("the guest to run", || husk.status("jailed") == "running");
    // The container's pid, for the host, is the process that holds its VM: the monitor, a
    // child of the container's supervisor (not a thread of it).
    let monitor: u32 = husk
        .ok(&["inspect", "-f", "{{.State.Pid}}", "jailed"])
        .trim()
        .parse()
        .unwrap();
    let expected_name = match common::vm_monitor().as_str() {
        "qemu" => "qemu-system",
        _ => "husk-vmm",
    };
    let status = std::fs::read_to_string(format!("/proc/{monitor}/status")).unwrap();
    let name = status
        .lines()
        .find_map(|l| l.strip_prefix("Name:"))
        .unwrap();
    assert!(name.trim().starts_with(expected_name), "{status}");
    let parent = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap();
    assert_ne!(parent.trim(), "1", "the monitor is its supervisor's child");
    let uid = match common::vm_monitor().as_str() {
        "qemu" => "65534".to_string(),
        _ => (0x7000_0000u32 + monitor).to_string(),
    };
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{monitor}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // a thread that has just ended
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(field("Seccomp:"), ["2"], "{status}");
        assert!(field("Uid:").iter().all(|u| *u == uid), "{status}");
        assert!(field("Gid:").iter().all(|g| g != "0"), "{status}");
        assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
        threads += 1;
    }
    // main, devices, one vCPU at least.
    assert!(threads >= 3, "{threads} threads");
    if common::vm_monitor() == "husk" {
        for ns in ["mnt", "net"] {
            let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            let its = std::fs::read_link(format!("/proc/{monitor}/ns/{ns}")).unwrap();
            assert_ne!(ours, its, "the monitor shares the host's {ns} namespace");
        }
        let root = std::fs::read_dir(format!("/proc/{monitor}/root"))
            .unwrap()
            .count();
        assert_eq!(root, 0, "the monitor's root is not empty");
    }
    assert_eq!(husk.ok(&["exec", "jailed", "echo", "ok"]), "ok\n");
}
