//! Process tier: what a Docker user does with a container after `run`: detached containers
//! under their monitor, logs, stop/kill/wait, restart policies, exec, inspect, top, stats,
//! rename, volumes, and the faults the monitor must survive.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cli::Husk;

/// Process isolation with a busybox image that also has /srv/www/index.html.
fn ready() -> Option<Husk> {
    common::cli::process_husk(module_path!(), |rootfs| {
        std::fs::create_dir_all(rootfs.join("srv/www")).unwrap();
        std::fs::write(rootfs.join("srv/www/index.html"), "from the image\n").unwrap();
    })
}

#[test]
fn detached_containers_log_stop_and_wait() {
    let Some(husk) = ready() else { return };
    let id = husk.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo out; echo err >&2; while true; do sleep 0.1; done",
    ]);
    assert_eq!(id.trim().len(), 64, "run -d prints the full ID");
    husk.wait_for("output", || husk.logs("ticker").contains("out"));
    let out = husk.run(&["logs", "ticker"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // json-file on disk, Docker's format.
    let log = std::fs::read_to_string(
        husk.root
            .path()
            .join("containers")
            .join(id.trim())
            .join("container.log"),
    )
    .unwrap();
    // stdout and stderr are separate pipes: their order in the log is not fixed.
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(entries
        .iter()
        .any(|e| e["stream"] == "stdout" && e["log"] == "out\n"));
    assert!(entries
        .iter()
        .any(|e| e["stream"] == "stderr" && e["log"] == "err\n"));
    assert_eq!(husk.status("ticker"), "running");
    assert!(husk.ok(&["ps"]).contains("Up "));

    // The trap runs: a graceful stop, exit 0, and the monitor recorded it.
    husk.ok(&["stop", "ticker"]);
    assert_eq!(husk.status("ticker"), "exited");
    assert_eq!(husk.ok(&["wait", "ticker"]).trim(), "0");
    assert!(husk.logs("ticker").contains("bye"));
    let tail = husk.ok(&["logs", "--tail", "1", "ticker"]);
    assert_eq!(tail, "bye\n");

    // start again keeps the same container and writable layer.
    husk.ok(&["start", "ticker"]);
    husk.wait_for("restart", || husk.status("ticker") == "running");
    // restart: a graceful stop (the trap says bye again) and a new run of the same container.
    let before = husk.ok(&["inspect", "-f", "{{.State.StartedAt}}", "ticker"]);
    husk.ok(&["restart", "ticker"]);
    husk.wait_for("running again", || husk.status("ticker") == "running");
    assert_ne!(
        husk.ok(&["inspect", "-f", "{{.State.StartedAt}}", "ticker"]),
        before
    );
    assert_eq!(husk.logs("ticker").matches("bye").count(), 2);
    husk.ok(&["kill", "ticker"]);
    assert_eq!(husk.ok(&["wait", "ticker"]).trim(), "137");
}

#[test]
fn restart_policy_on_failure_retries_then_gives_up() {
    let Some(husk) = ready() else { return };
    husk.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo attempt; exit 3",
    ]);
    // One read of both fields: between two reads a restart could begin.
    husk.wait_for("the retries", || {
        husk.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.RestartCount}}",
            "flaky",
        ])
        .trim()
            == "exited 2"
    });
    assert_eq!(husk.logs("flaky").matches("attempt").count(), 3);
    assert_eq!(
        husk.ok(&["inspect", "-f", "{{.State.ExitCode}}", "flaky"])
            .trim(),
        "3"
    );

    let out = husk.run(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--restart and --rm"));
}

#[test]
fn exec_inspect_top_stats_rename() {
    let Some(husk) = ready() else { return };
    husk.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "-e",
        "GREETING=hi",
        "--memory",
        "64m",
        "busybox",
        "sleep",
        "300",
    ]);
    husk.wait_for("running", || husk.status("box") == "running");

    // exec sees the container's processes, environment and security settings.
    let ps = husk.ok(&["exec", "box", "ps"]);
    assert!(ps.contains("sleep 300") && !ps.contains("cargo"), "{ps}");
    assert_eq!(
        husk.ok(&["exec", "box", "sh", "-c", "echo $GREETING"]),
        "hi\n"
    );
    assert_eq!(
        husk.ok(&["exec", "-u", "nobody", "box", "id", "-u"]),
        "65534\n"
    );
    assert_eq!(husk.ok(&["exec", "-w", "/tmp", "box", "pwd"]), "/tmp\n");
    assert_eq!(
        husk.run(&["exec", "box", "sh", "-c", "exit 5"])
            .status
            .code(),
        Some(5)
    );
    assert_eq!(
        husk.run(&["exec", "box", "no-such"]).status.code(),
        Some(127)
    );
    assert_ne!(
        husk.run(&["exec", "box", "mount", "-t", "tmpfs", "x", "/mnt"])
            .status
            .code(),
        Some(0)
    );

    let inspect: serde_json::Value = serde_json::from_str(&husk.ok(&["inspect", "box"])).unwrap();
    let c = &inspect[0];
    assert_eq!(c["Name"], "/box");
    assert_eq!(c["State"]["Running"], true);
    assert!(c["State"]["Pid"].as_i64().unwrap() > 0);
    assert_eq!(c["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(c["HostConfig"]["Isolation"], "process");
    assert_eq!(c["Config"]["Cmd"], serde_json::json!(["sleep", "300"]));
    assert!(c["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GREETING=hi"));

    let top = husk.ok(&["top", "box"]);
    assert!(top.contains("sleep 300"), "{top}");
    let stats = husk.ok(&["stats", "--no-stream", "box"]);
    assert!(stats.contains("64MiB"), "{stats}");

    husk.ok(&["rename", "box", "crate"]);
    assert_eq!(husk.status("crate"), "running");
    assert!(husk.run(&["inspect", "box"]).status.code() != Some(0));
}

#[test]
fn volumes_persist_are_filled_from_the_image_and_refuse_removal_in_use() {
    let Some(husk) = ready() else { return };
    // A named volume over an image path starts with the image's content.
    let out = husk.ok(&[
        "run",
        "--rm",
        "-v",
        "site:/srv/www",
        "busybox",
        "cat",
        "/srv/www/index.html",
    ]);
    assert_eq!(out, "from the image\n");
    husk.ok(&[
        "run",
        "--rm",
        "-v",
        "site:/srv/www",
        "busybox",
        "sh",
        "-c",
        "echo kept > /srv/www/new",
    ]);
    assert_eq!(
        husk.ok(&[
            "run",
            "--rm",
            "-v",
            "site:/data:ro",
            "busybox",
            "cat",
            "/data/new"
        ]),
        "kept\n"
    );
    assert_ne!(
        husk.run(&[
            "run",
            "--rm",
            "-v",
            "site:/data:ro",
            "busybox",
            "touch",
            "/data/x"
        ])
        .status
        .code(),
        Some(0)
    );
    // Bind mounts and tmpfs.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "host file\n").unwrap();
    let bind = format!("{}:/h", host.path().display());
    assert_eq!(
        husk.ok(&["run", "--rm", "-v", &bind, "busybox", "cat", "/h/f"]),
        "host file\n"
    );
    assert!(husk
        .ok(&["run", "--rm", "--tmpfs", "/scratch", "busybox", "mount"])
        .contains("/scratch"));

    // In use (even by a stopped container): refused with one line; after rm it goes.
    husk.ok(&[
        "create",
        "--name",
        "user",
        "-v",
        "site:/data:ro",
        "busybox",
        "true",
    ]);
    let mounts: serde_json::Value =
        serde_json::from_str(&husk.ok(&["inspect", "-f", "{{json .Mounts}}", "user"])).unwrap();
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Name"], "site");
    assert_eq!(mounts[0]["Destination"], "/data");
    assert_eq!(mounts[0]["RW"], false);
    assert_eq!(
        husk.ok(&["inspect", "-f", "{{json .HostConfig.Binds}}", "user"])
            .trim(),
        "[\"site:/data:ro\"]"
    );
    let out = husk.run(&["volume", "rm", "site"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("volume is in use"));
    husk.ok(&["rm", "user"]);
    husk.ok(&["volume", "rm", "site"]);
    assert!(!husk.ok(&["volume", "ls", "-q"]).contains("site"));

    // Anonymous volumes go with `rm -v`.
    husk.ok(&["run", "--name", "anon", "-v", "/cache", "busybox", "true"]);
    assert_eq!(husk.ok(&["volume", "ls", "-q"]).lines().count(), 1);
    husk.ok(&["rm", "-v", "anon"]);
    assert_eq!(husk.ok(&["volume", "ls", "-q"]).lines().count(), 0);
}

#[test]
fn killed_monitor_leaves_a_truthful_record_that_rm_f_cleans() {
    let Some(husk) = ready() else { return };
    let id = husk.ok(&["run", "-d", "--name", "orphan", "busybox", "sleep", "300"]);
    let id = id.trim().to_string();
    husk.wait_for("running", || husk.status("orphan") == "running");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            husk.root
                .path()
                .join("containers")
                .join(&id)
                .join("record.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let monitor = record["state"]["supervisor"]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    husk.wait_for("dead", || husk.status("orphan") == "dead");
    assert!(husk.ok(&["ps", "-a"]).contains("Dead"));
    husk.ok(&["rm", "-f", "orphan"]);
    assert!(husk.ok(&["ps", "-a", "-q"]).is_empty());
    let leftover: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join("husk").join(&id))
        .filter(|p| p.exists())
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
}

#[test]
fn fifty_detached_containers_start_and_stop_cleanly() {
    let Some(husk) = ready() else { return };
    let children: Vec<_> = (0..50)
        .map(|i| {
            husk.cmd()
                .args([
                    "run",
                    "-d",
                    "--name",
                    &format!("many{i}"),
                    "busybox",
                    "sleep",
                    "300",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    husk.wait_for("50 running", || {
        husk.ok(&["ps", "-q"]).lines().count() == 50
    });
    let ids: Vec<String> = husk.ok(&["ps", "-q"]).lines().map(str::to_string).collect();
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    husk.ok(&args);
    assert!(husk.ok(&["ps", "-a", "-q"]).is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(husk.root.path().to_str().unwrap()));
}

/// The root on a small tmpfs: a container that prints more than the disk holds keeps running,
/// and its exit is still recorded (the log leaves a reserve for the record).
#[test]
fn full_disk_while_logging_keeps_the_container_and_its_exit_status() {
    let Some(_) = ready() else { return };
    let mount_dir = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=16m",
            "husk-test-full",
            mount_dir.path().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount_dir.path().to_path_buf());
    let root = mount_dir.path().join("root");
    let husk_on_tmpfs = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_husk"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // Only busybox itself: the smallest image that fits.
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs/bin");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy(common::host_busybox().unwrap(), rootfs.join("busybox")).unwrap();
    for applet in ["sh", "yes", "head", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join(applet)).unwrap();
    }
    let tar = dir.path().join("rootfs.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(dir.path().join("rootfs"))
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap()
        .success());
    assert!(husk_on_tmpfs(&["import", tar.to_str().unwrap(), "tiny"])
        .status
        .success());
    let out = husk_on_tmpfs(&[
        "run",
        "-d",
        "--name",
        "chatty",
        "tiny",
        "sh",
        "-c",
        "yes husk-fills-the-disk | head -c 40000000; echo done; exit 4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = husk_on_tmpfs(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "chatty",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if text == "exited 4" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recorded the exit: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The log holds what fitted, and reading it still works.
    let logs = husk_on_tmpfs(&["logs", "--tail", "1", "chatty"]);
    assert!(logs.status.success());
    assert!(husk_on_tmpfs(&["rm", "chatty"]).status.success());
}

#[test]
fn logs_follow_across_a_restart() {
    let Some(husk) = ready() else { return };
    husk.ok(&[
        "run",
        "-d",
        "--name",
        "phoenix",
        "--restart",
        "on-failure:1",
        "busybox",
        "sh",
        "-c",
        "echo life; sleep 0.3; exit 1",
    ]);
    // Follows until the container stops for good: both lives are in one stream.
    let out = husk.ok(&["logs", "-f", "phoenix"]);
    assert_eq!(out, "life\nlife\n");
    assert_eq!(husk.status("phoenix"), "exited");
}

#[test]
fn attach_sends_input_and_follows_output_until_exit() {
    let Some(husk) = ready() else { return };
    husk.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "echoer",
        "busybox",
        "sh",
        "-c",
        "read line; echo \"got $line\"; exit 6",
    ]);
    husk.wait_for("running", || husk.status("echoer") == "running");
    let mut child = husk
        .cmd()
        .args(["attach", "echoer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello\n");
}

#[test]
fn cp_copies_both_ways_running_or_stopped_without_following_container_symlinks() {
    let Some(husk) = ready() else { return };
    husk.ok(&[
        "run",
        "-d",
        "--name",
        "files",
        "busybox",
        "sh",
        "-c",
        "echo inside > /tmp/f; ln -s /etc/shadow /tmp/evil; sleep 300",
    ]);
    husk.wait_for("the file", || {
        husk.run(&["exec", "files", "test", "-L", "/tmp/evil"])
            .status
            .success()
    });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("f");
    husk.ok(&["cp", "files:/tmp/f", dest.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "inside\n");
    // A symlink in the container is copied as a symlink, never resolved on the host.
    let evil = out.path().join("evil");
    husk.ok(&["cp", "files:/tmp/evil", evil.to_str().unwrap()]);
    assert!(evil.symlink_metadata().unwrap().file_type().is_symlink());

    let host_file = out.path().join("from-host");
    std::fs::write(&host_file, "host\n").unwrap();
    husk.ok(&["cp", host_file.to_str().unwrap(), "files:/root/"]);
    assert_eq!(
        husk.ok(&["exec", "files", "cat", "/root/from-host"]),
        "host\n"
    );

    husk.ok(&["stop", "-t", "0", "files"]);
    let back = out.path().join("back");
    husk.ok(&["cp", "files:/root/from-host", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "host\n");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(husk.root.path().to_str().unwrap()));
}

#[test]
fn memory_limit_oom_kill_is_recorded() {
    let Some(husk) = ready() else { return };
    husk.ok(&[
        "run",
        "-d",
        "--name",
        "hog",
        "--memory",
        "8m",
        "busybox",
        "sh",
        "-c",
        "x=a; while true; do x=\"$x$x\"; done",
    ]);
    assert_eq!(husk.ok(&["wait", "hog"]).trim(), "137");
    assert_eq!(
        husk.ok(&["inspect", "-f", "{{.State.OOMKilled}}", "hog"])
            .trim(),
        "true"
    );
}

/// `husk events`: what happened to the containers, in Docker's line format, from the
/// journal every husk process appends to (the CLI, the detached monitor, `--rm`'s removal);
/// past events with --since/--until, and new ones streamed as they happen.
#[test]
fn events_tell_what_happened_to_each_container() {
    let Some(husk) = ready() else { return };
    let mut stream = husk
        .cmd()
        .args(["events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let streamed = stream.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(streamed)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });

    let id = husk.ok(&["run", "-d", "--name", "ev", "busybox", "sh", "-c", "exit 3"]);
    let id = id.trim();
    husk.wait_for("the exit", || husk.status("ev") == "exited");
    husk.ok(&["rm", "ev"]);
    husk.ok(&["run", "--rm", "--name", "gone", "busybox", "true"]);

    let past = husk.ok(&["events", "--since", "5m", "--until", "0s"]);
    let of_ev: Vec<&str> = past.lines().filter(|l| l.contains(id)).collect();
    assert_eq!(of_ev.len(), 4, "{past}");
    for (line, action) in of_ev.iter().zip(["create", "start", "die", "destroy"]) {
        assert!(
            line.contains(&format!(" container {action} {id} (")),
            "{line}"
        );
        assert!(line.ends_with("image=busybox, name=ev)"), "{line}");
    }
    assert!(of_ev[2].contains("(exitCode=3, "), "{}", of_ev[2]);
    let gone: Vec<&str> = past.lines().filter(|l| l.ends_with("name=gone)")).collect();
    assert!(gone[gone.len() - 2].contains(" die ") && gone[gone.len() - 2].contains("exitCode=0"));
    assert!(gone[gone.len() - 1].contains(" destroy "), "{past}");
    let later = husk.ok(&["events", "--since", "2030-01-01T00:00:00Z", "--until", "0s"]);
    assert!(later.is_empty(), "{later}");
    assert!(!husk
        .run(&["events", "--since", "yesterday"])
        .status
        .success());

    // The stream saw the same, as it happened.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen
        .iter()
        .any(|l: &String| l.contains(" destroy ") && l.ends_with("name=gone)"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the stream stopped at {seen:?}"),
        }
    }
    let _ = stream.kill();
    let _ = stream.wait();
    let streamed_ev: Vec<&String> = seen.iter().filter(|l| l.contains(id)).collect();
    assert_eq!(streamed_ev.len(), 4, "{seen:?}");
}

#[test]
fn labels_are_kept_shown_and_filtered_on() {
    let Some(husk) = ready() else { return };
    husk.ok(&[
        "create", "--name", "web", "--label", "role=web", "-l", "tier", "busybox", "true",
    ]);
    husk.ok(&[
        "create", "--name", "db", "--label", "role=db", "busybox", "true",
    ]);
    let with = |filters: &[&str]| {
        let mut args = vec!["ps", "-a", "--format", "{{.Names}}"];
        for f in filters {
            args.extend(["-f", f]);
        }
        husk.ok(&args).lines().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(with(&["label=role=web"]), ["web"]);
    assert_eq!(with(&["label=tier"]), ["web"]);
    assert_eq!(with(&["label=role"]).len(), 2);
    // Every label filter must hold, as in Docker.
    assert!(with(&["label=role=db", "label=tier"]).is_empty());
    assert_eq!(
        husk.ok(&["inspect", "-f", "{{json .Config.Labels}}", "web"])
            .trim(),
        r#"{"role":"web","tier":""}"#
    );
    husk.ok(&["rm", "web", "db"]);
}
