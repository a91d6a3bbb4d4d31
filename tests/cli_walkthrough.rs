//! Process tier: Docker's getting-started walkthrough, verbatim, through the husk binary with
//! `--isolation process`, on a local busybox image imported from the host's busybox-static.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::Husk;

fn ready() -> Option<Husk> {
    common::cli::process_husk(module_path!(), |_| {})
}

fn mounts_under(path: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(path.to_str().unwrap()))
        .count()
}

#[test]
fn docker_walkthrough_with_process_isolation() {
    let Some(husk) = ready() else { return };

    // `docker run busybox`: sh with no terminal and no stdin exits at once, printing nothing.
    let out = husk.run(&["run", "busybox"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());

    let out = husk.run(&["run", "busybox", "echo", "hello from busybox"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from busybox\n");

    // `ps` shows running containers only: none.
    let ps = husk.ok(&["ps"]);
    assert_eq!(ps.lines().count(), 1, "{ps}");
    assert!(ps.starts_with("CONTAINER ID   IMAGE"), "{ps}");
    for column in ["COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"] {
        assert!(ps.lines().next().unwrap().contains(column));
    }

    // `ps -a` shows both, newest first, exited with code 0.
    let ps = husk.ok(&["ps", "-a"]);
    let rows: Vec<&str> = ps.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{ps}");
    // Docker quotes an arg with spaces, joins with spaces and cuts at 20 characters
    // (tests/cli_docker_formats.rs checks this against dockerd itself).
    assert!(rows[0].contains("\"echo 'hello from bu…\""), "{ps}");
    assert!(rows[0].contains("Exited (0)"), "{ps}");
    assert!(rows[1].contains("\"sh\""), "{ps}");

    // `run -it busybox sh` through a pty: type a command, read its output, exit.
    let transcript = interactive_shell(&husk, b"echo $((6*7)); exit 3\n");
    assert!(transcript.output.contains("42"), "{}", transcript.output);
    assert_eq!(transcript.code, Some(3));

    // rm by ID prefix, then rm of all exited containers.
    let ids = husk.lines(&["ps", "-a", "-q"]);
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| id.len() == 12));
    husk.ok(&["rm", &ids[0][..6]]);
    let exited = husk.lines(&["ps", "-a", "-q", "-f", "status=exited"]);
    assert_eq!(exited.len(), 2);
    let mut args = vec!["rm"];
    args.extend(exited.iter().map(String::as_str));
    husk.ok(&args);
    assert!(husk.lines(&["ps", "-a", "-q"]).is_empty());
    assert_eq!(mounts_under(husk.root.path()), 0);

    // rmi busybox: untagged and deleted.
    let out = husk.ok(&["rmi", "busybox"]);
    assert!(out.contains("Untagged: busybox:latest"), "{out}");
    assert!(husk.ok(&["images", "-q"]).trim().is_empty());
}

struct Transcript {
    output: String,
    code: Option<i32>,
}

/// Drive `husk run -it busybox sh` through a real pty (via `script`, which gives husk a
/// terminal on stdin and stdout), type `input`, and collect the screen.
fn interactive_shell(husk: &Husk, input: &[u8]) -> Transcript {
    let command = format!(
        "{} --root {} run -it busybox sh",
        env!("CARGO_BIN_EXE_husk"),
        husk.root.path().display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("HUSK_ISOLATION", "process")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Give the shell time to start and print its prompt before typing, as a person would.
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(input).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "interactive shell did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    Transcript {
        output,
        code: status.code(),
    }
}

#[test]
fn exit_codes_follow_docker() {
    let Some(husk) = ready() else { return };
    let code = |args: &[&str]| husk.run(args).status.code();
    assert_eq!(
        code(&["run", "--rm", "busybox", "sh", "-c", "exit 3"]),
        Some(3)
    );
    assert_eq!(
        code(&["run", "--rm", "busybox", "no-such-command"]),
        Some(127)
    );
    assert_eq!(code(&["run", "--rm", "busybox", "/etc/passwd"]), Some(126));
    // Killed by a signal from outside: 128+9. (From inside, pid 1 ignores SIGKILL, as in Docker.)
    let id = husk.ok(&["run", "-d", "busybox", "sleep", "60"]);
    let id = id.trim();
    assert_eq!(id.len(), 64);
    husk.ok(&["kill", id]);
    assert_eq!(husk.ok(&["wait", id]).trim(), "137");
    husk.ok(&["rm", id]);
    assert_eq!(code(&["run", "--rm", "no-such-image"]), Some(125));
    assert!(
        husk.lines(&["ps", "-a", "-q"]).is_empty(),
        "--rm left records"
    );
}

#[test]
fn bad_input_gets_one_clear_line_and_leaves_nothing() {
    let Some(husk) = ready() else { return };
    let cases: &[(&[&str], &str)] = &[
        (&["run", "no-such-image"], "no-such-image"),
        (
            &["run", "--memory", "lots", "busybox", "true"],
            "invalid size",
        ),
        (
            &["run", "-u", "nobody-here", "busybox", "true"],
            "nobody-here",
        ),
        (
            // A missing workdir is made, as Docker does; a file is no workdir.
            &["run", "-w", "/etc/passwd", "busybox", "true"],
            "/etc/passwd",
        ),
        (
            &["run", "--cap-add", "NOT_A_CAP", "busybox", "true"],
            "NOT_A_CAP",
        ),
        // (Never a network that exists: these tests run in the machine's own namespace.)
        (
            &["run", "--network", "nosuch", "busybox", "true"],
            "network nosuch not found",
        ),
    ];
    for (args, needle) in cases {
        let out = husk.run(args);
        assert_ne!(out.status.code(), Some(0), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("husk:")).collect();
        assert_eq!(
            errors.len(),
            1,
            "{args:?} should fail with one line: {stderr}"
        );
        assert!(errors[0].contains(needle), "{args:?}: {stderr}");
    }
    // Failed runs leave created records as Docker does, but no mounts or cgroups.
    assert_eq!(mounts_under(husk.root.path()), 0);
    husk.ok(&["container", "prune", "-f"]);
    assert!(husk.lines(&["ps", "-a", "-q"]).is_empty());

    // A name in use.
    husk.ok(&["create", "--name", "taken", "busybox", "true"]);
    let out = husk.run(&["run", "--name", "taken", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already in use"));
}

#[test]
fn rm_of_a_running_container_needs_force() {
    let Some(husk) = ready() else { return };
    let mut child = husk
        .cmd()
        .args(["run", "--name", "sleeper", "busybox", "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while husk.lines(&["ps", "-q", "-f", "name=sleeper"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "container never showed as running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = husk.run(&["rm", "sleeper"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot remove a running container"));
    husk.ok(&["rm", "-f", "sleeper"]);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    assert!(husk.lines(&["ps", "-a", "-q"]).is_empty());
    assert_eq!(mounts_under(husk.root.path()), 0);
}

#[test]
fn killed_supervisor_leaves_a_truthful_removable_record() {
    let Some(husk) = ready() else { return };
    let mut child = husk
        .cmd()
        .args(["run", "--name", "orphan", "busybox", "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while husk.lines(&["ps", "-q", "-f", "name=orphan"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "container never showed as running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL to husk itself, mid-run
    child.wait().unwrap();
    let ps = husk.ok(&["ps", "-a", "-f", "name=orphan"]);
    assert!(ps.contains("Dead"), "{ps}");
    let id = husk
        .lines(&["ps", "-a", "-q", "--no-trunc", "-f", "name=orphan"])
        .remove(0);
    husk.ok(&["rm", "orphan"]);
    assert!(husk.lines(&["ps", "-a", "-q"]).is_empty());
    assert_eq!(mounts_under(husk.root.path()), 0);
    let leftover: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|hierarchy| hierarchy.path().join("husk").join(&id))
        .filter(|cgroup| cgroup.exists())
        .collect();
    assert!(leftover.is_empty(), "cgroups left: {leftover:?}");
}
