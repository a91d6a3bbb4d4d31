//! Process tier: real containers from a busybox rootfs through `process::spawn`. Needs root
//! and busybox-static; each test uses its own temp dirs and cgroup name and checks that no
//! mount or cgroup is left behind.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use husk::container::spec::{build_spec, SpecOptions};
use husk::process::{self, LaunchConfig, ProcessError, Root};
use oci_spec::image::{ConfigBuilder, ImageConfiguration, ImageConfigurationBuilder};
use oci_spec::runtime::Spec;

fn busybox_image() -> ImageConfiguration {
    let config = ConfigBuilder::default()
        .cmd(vec!["sh".to_string()])
        .env(vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string()])
        .build()
        .unwrap();
    ImageConfigurationBuilder::default()
        .config(config)
        .build()
        .unwrap()
}

/// One test's container: a busybox lower dir, a container dir and a unique cgroup name.
struct Fixture {
    _tmp: tempfile::TempDir,
    lower: Vec<PathBuf>,
    container_dir: PathBuf,
    id: String,
}

impl Fixture {
    fn new(test: &str) -> Option<Self> {
        if !common::is_root() || common::host_busybox().is_none() {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer");
        common::make_busybox_rootfs(&layer).unwrap();
        let container_dir = tmp.path().join("container");
        let id = format!("test-{}-{test}", std::process::id());
        Some(Self {
            lower: vec![layer],
            container_dir,
            id,
            _tmp: tmp,
        })
    }

    fn spec(&self, opts: SpecOptions) -> Spec {
        build_spec(&busybox_image(), &opts, &self.id).unwrap()
    }

    fn cgroup_name(&self) -> String {
        format!("husk/{}", self.id)
    }

    fn launch<'a>(
        &'a self,
        spec: &'a Spec,
        cgroup: &'a str,
        stdio: Option<[std::os::fd::BorrowedFd<'a>; 3]>,
    ) -> LaunchConfig<'a> {
        LaunchConfig {
            spec,
            root: Root::Layers {
                lower_dirs: &self.lower,
                container_dir: &self.container_dir,
            },
            cgroup_name: cgroup,
            stdio,
            network: None,
            netns: None,
            start_gate: None,
            hooks: None,
        }
    }

    /// Run to completion with piped stdio; returns (exit code, stdout, stderr).
    fn run(&self, opts: SpecOptions, input: &[u8]) -> Result<(i32, String, String), ProcessError> {
        let spec = self.spec(opts);
        let cgroup = self.cgroup_name();
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let container = process::spawn(&self.launch(
            &spec,
            &cgroup,
            Some([in_r.as_fd(), out_w.as_fd(), err_w.as_fd()]),
        ));
        drop((in_r, out_w, err_w));
        let container = container?;
        let mut stdin = std::fs::File::from(in_w);
        let _ = stdin.write_all(input);
        drop(stdin);
        let reader = |fd: OwnedFd| {
            std::thread::spawn(move || {
                let mut text = String::new();
                std::fs::File::from(fd).read_to_string(&mut text).unwrap();
                text
            })
        };
        let (out, err) = (reader(out_r), reader(err_r));
        let code = container.wait()?;
        Ok((code, out.join().unwrap(), err.join().unwrap()))
    }

    /// Nothing of this container may remain: no mount under its dir, no cgroup directory.
    fn assert_clean(&self) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.container_dir.to_string_lossy().into_owned();
        assert!(!mountinfo.contains(&dir), "mount left behind under {dir}");
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap() {
            let path = hierarchy.unwrap().path().join(self.cgroup_name());
            assert!(!path.exists(), "cgroup left behind: {}", path.display());
        }
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

fn cmd(args: &[&str]) -> SpecOptions {
    SpecOptions {
        cmd: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

macro_rules! fixture {
    ($name:expr) => {
        match Fixture::new($name) {
            Some(f) => f,
            None => skip!("needs root and busybox-static (apt install busybox-static)"),
        }
    };
}

#[test]
fn echo_output_hostname_and_exit_codes() {
    let f = fixture!("echo");
    let (code, out, _) = f.run(cmd(&["echo", "hello from busybox"]), b"").unwrap();
    assert_eq!((code, out.as_str()), (0, "hello from busybox\n"));

    let spec = f.spec(cmd(&["sh", "-c", "exit 3"]));
    let cgroup = f.cgroup_name();
    let container = process::spawn(&f.launch(&spec, &cgroup, None)).unwrap();
    let exit = container.wait_detailed().unwrap();
    assert_eq!(
        exit,
        process::ExitInfo {
            code: 3,
            oom_killed: false
        }
    );

    let opts = SpecOptions {
        hostname: Some("boxy".into()),
        ..cmd(&["sh", "-c", "hostname; cat /etc/hostname"])
    };
    let (_, out, _) = f.run(opts, b"").unwrap();
    assert_eq!(out, "boxy\nboxy\n");

    let err = f.run(cmd(&["no-such-command"]), b"").unwrap_err();
    assert_eq!(err.exit_code(), 127, "{err}");
    assert!(
        err.to_string().contains("executable file not found"),
        "{err}"
    );

    let err = f.run(cmd(&["/etc/passwd"]), b"").unwrap_err();
    assert_eq!(err.exit_code(), 126, "{err}");
    f.assert_clean();
}

#[test]
fn killed_container_reports_128_plus_signal() {
    let f = fixture!("kill");
    let spec = f.spec(cmd(&["sleep", "100"]));
    let cgroup = f.cgroup_name();
    let container = process::spawn(&f.launch(&spec, &cgroup, None)).unwrap();
    let stats = container.stats().unwrap();
    assert_eq!(stats.pids, 1, "{stats:?}");
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");
    container.signal(libc::SIGKILL).unwrap();
    assert_eq!(container.wait().unwrap(), 137);
    f.assert_clean();
}

/// What `rm -f` does when the process that spawned a container is gone: open its cgroup by
/// name, kill everything in it and remove it.
#[test]
fn orphaned_container_is_removed_through_its_cgroup() {
    let f = fixture!("orphan");
    let spec = f.spec(cmd(&["sleep", "100"]));
    let cgroup_name = f.cgroup_name();
    let container = process::spawn(&f.launch(&spec, &cgroup_name, None)).unwrap();
    let pid = container.pid();
    let layout = process::CgroupLayout::detect().unwrap();
    let cgroup = process::Cgroup::open(layout, &cgroup_name).unwrap();
    assert_eq!(cgroup.pids().unwrap(), [pid]);
    cgroup.destroy().unwrap();
    assert_eq!(
        container.wait().unwrap(),
        137,
        "destroy SIGKILLs the container"
    );
    f.assert_clean();
}

#[test]
fn stdin_reaches_the_container_only_with_interactive() {
    let f = fixture!("stdin");
    let opts = SpecOptions {
        interactive: true,
        ..cmd(&["cat"])
    };
    let (code, out, _) = f.run(opts, b"piped input\n").unwrap();
    assert_eq!((code, out.as_str()), (0, "piped input\n"));
    let (code, out, _) = f.run(cmd(&["cat"]), b"ignored\n").unwrap();
    assert_eq!(
        (code, out.as_str()),
        (0, ""),
        "without -i stdin is /dev/null"
    );
    f.assert_clean();
}

#[test]
fn pty_session_runs_commands_and_exits_with_their_code() {
    let f = fixture!("pty");
    let spec = f.spec(SpecOptions {
        tty: true,
        interactive: true,
        ..cmd(&["sh"])
    });
    let cgroup = f.cgroup_name();
    let container = process::spawn(&f.launch(&spec, &cgroup, None)).unwrap();
    let master = std::fs::File::from(container.pty_master().expect("terminal requested"));
    (&master)
        .write_all(b"tty; echo hi-$((6*7)); echo console-$((6*7)) > /dev/console; exit 7\n")
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the container side of the pty is gone.
        while let Ok(n) = (&master).read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let code = container.wait().unwrap();
    let output = reader.join().unwrap();
    assert_eq!(code, 7);
    // Computed values, so the terminal's echo of the typed line cannot satisfy these.
    assert!(output.contains("hi-42"), "pty output: {output:?}");
    assert!(
        output.contains("console-42"),
        "/dev/console is the pty: {output:?}"
    );
    assert!(
        output.contains("/dev/pts/0"),
        "the pty is the container's own: {output:?}"
    );
    f.assert_clean();
}

#[test]
fn writes_persist_in_the_upper_dir_across_starts() {
    let f = fixture!("persist");
    let (code, _, _) = f
        .run(cmd(&["sh", "-c", "echo kept > /data.txt"]), b"")
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read_to_string(f.container_dir.join("upper/data.txt")).unwrap(),
        "kept\n"
    );
    assert!(
        !f.lower[0].join("data.txt").exists(),
        "the image layer is untouched"
    );
    let (code, out, _) = f.run(cmd(&["cat", "/data.txt"]), b"").unwrap();
    assert_eq!((code, out.as_str()), (0, "kept\n"));
    f.assert_clean();
}

#[test]
fn container_sees_only_its_own_processes() {
    let f = fixture!("pidns");
    let (code, out, _) = f.run(cmd(&["ps", "-o", "pid,comm"]), b"").unwrap();
    assert_eq!(code, 0);
    let pids: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(pids, ["1"], "ps output: {out}");
    f.assert_clean();
}

#[test]
fn cannot_mount_write_proc_sys_unshare_or_load_modules() {
    let f = fixture!("security");
    let (code, _, err) = f
        .run(cmd(&["mount", "-t", "tmpfs", "none", "/tmp"]), b"")
        .unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("Operation not permitted") || err.to_lowercase().contains("permission denied"),
        "mount: {err}"
    );

    let (code, _, err) = f
        .run(
            cmd(&["sh", "-c", "echo evil > /proc/sys/kernel/hostname"]),
            b"",
        )
        .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "/proc/sys: {err}");

    let (code, _, err) = f.run(cmd(&["unshare", "-n", "true"]), b"").unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "unshare: {err}");

    let (code, _, err) = f
        .run(
            cmd(&[
                "sh",
                "-c",
                "echo notamodule > /tmp/m.ko && insmod /tmp/m.ko",
            ]),
            b"",
        )
        .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "insmod: {err}");

    // The masked paths show nothing of the host.
    let (_, out, _) = f
        .run(
            cmd(&[
                "sh",
                "-c",
                "cat /proc/kcore | wc -c; ls /sys/firmware | wc -l",
            ]),
            b"",
        )
        .unwrap();
    assert_eq!(out, "0\n0\n");
    f.assert_clean();
}

#[test]
fn memory_limit_oom_kills_inside_the_cgroup() {
    let f = fixture!("oom");
    let opts = SpecOptions {
        memory_bytes: Some(32 << 20),
        ..cmd(&["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"])
    };
    let spec = f.spec(opts);
    let cgroup = f.cgroup_name();
    let container = process::spawn(&f.launch(&spec, &cgroup, None)).unwrap();
    let exit = container.wait_detailed().unwrap();
    assert_eq!(
        exit,
        process::ExitInfo {
            code: 137,
            oom_killed: true
        }
    );
    // The host (this test process) is fine and can still allocate.
    let v = vec![1u8; 64 << 20];
    assert_eq!(v.iter().map(|b| *b as usize).sum::<usize>(), 64 << 20);
    f.assert_clean();
}

#[test]
fn pids_limit_stops_fork_bombs() {
    let f = fixture!("pids");
    let opts = SpecOptions {
        pids_limit: Some(4),
        ..cmd(&[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait",
        ])
    };
    let start = Instant::now();
    let (_, _, err) = f.run(opts, b"").unwrap();
    assert!(err.contains("can't fork"), "expected fork failures: {err}");
    assert!(start.elapsed() < Duration::from_secs(30));
    f.assert_clean();
}

#[test]
fn unknown_user_and_bad_workdir_fail_cleanly() {
    let f = fixture!("baduser");
    let err = f
        .run(
            SpecOptions {
                user: Some("ghost".into()),
                ..cmd(&["true"])
            },
            b"",
        )
        .unwrap_err();
    assert_eq!(err.exit_code(), 125);
    assert_eq!(
        err.to_string(),
        "unable to find user ghost: no matching entries in passwd file"
    );
    f.assert_clean();

    let err = f
        .run(
            SpecOptions {
                // A missing workdir is created (tests/conformance/cwd.rs); a file is not one.
                workdir: Some("/etc/passwd".into()),
                ..cmd(&["true"])
            },
            b"",
        )
        .unwrap_err();
    assert_eq!(err.exit_code(), 125);
    assert!(
        err.to_string().starts_with("bad workdir /etc/passwd"),
        "{err}"
    );
    f.assert_clean();

    let (code, out, _) = f
        .run(
            SpecOptions {
                user: Some("nobody".into()),
                ..cmd(&["id"])
            },
            b"",
        )
        .unwrap();
    assert_eq!(
        (code, out.trim()),
        (0, "uid=65534(nobody) gid=65534(nogroup)")
    );
    f.assert_clean();
}

#[test]
fn capabilities_seccomp_and_readonly_root_apply() {
    let f = fixture!("caps");
    let (_, out, _) = f
        .run(
            cmd(&[
                "sh",
                "-c",
                "grep -E '^Cap(Eff|Bnd)|^NoNewPrivs|^Seccomp:' /proc/self/status",
            ]),
            b"",
        )
        .unwrap();
    // Docker's 14 default capabilities are 0xa80425fb.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");

    let opts = SpecOptions {
        privileged: true,
        ..cmd(&[
            "sh",
            "-c",
            "grep -E '^Seccomp:' /proc/self/status; mount -t tmpfs none /tmp && echo mounted",
        ])
    };
    let (_, out, _) = f.run(opts, b"").unwrap();
    assert_eq!(out, "Seccomp:\t0\nmounted\n");

    let status = [
        "sh",
        "-c",
        "grep -E '^CapEff|^NoNewPrivs|^Seccomp:' /proc/self/status",
    ];
    let opts = SpecOptions {
        no_new_privileges: true,
        cap_drop: vec!["ALL".into()],
        ..cmd(&status)
    };
    let (_, out, _) = f.run(opts, b"").unwrap();
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(
        out.contains("NoNewPrivs:\t1") && out.contains("Seccomp:\t2"),
        "{out}"
    );

    let opts = SpecOptions {
        read_only: true,
        ..cmd(&[
            "sh",
            "-c",
            "touch /x 2>&1; touch /dev/shm/ok && echo shm-ok",
        ])
    };
    let (_, out, _) = f.run(opts, b"").unwrap();
    assert!(
        out.contains("Read-only file system") && out.contains("shm-ok"),
        "{out}"
    );
    f.assert_clean();
}

#[test]
fn host_network_shares_interfaces_and_resolv_conf() {
    let f = fixture!("hostnet");
    let opts = SpecOptions {
        network: husk::container::spec::NetworkMode::Host,
        ..cmd(&[
            "sh",
            "-c",
            "ls /sys/class/net; echo --; cat /etc/resolv.conf; echo --; umask",
        ])
    };
    let (code, out, _) = f.run(opts, b"").unwrap();
    assert_eq!(code, 0, "{out}");
    // The interfaces of this test's own network namespace: /proc/self/net follows it, where
    // this process's /sys may still be the machine's (cargo's runner enters a namespace of
    // its own with nsenter, which leaves /sys as it was).
    let mut host_ifaces: Vec<String> = std::fs::read_to_string("/proc/self/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|name| name.trim().to_string())
        .collect();
    host_ifaces.sort();
    let parts: Vec<&str> = out.split("--\n").collect();
    assert_eq!(parts[0].lines().collect::<Vec<_>>(), host_ifaces);
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(parts[1].trim_end(), host_resolv.trim_end());
    assert_eq!(parts[2].trim(), "0022");
    f.assert_clean();
}

#[test]
fn network_none_has_only_loopback() {
    let f = fixture!("net");
    let (code, out, _) = f.run(cmd(&["sh", "-c", "ls /sys/class/net; cat /etc/resolv.conf; ping -c1 -W1 127.0.0.1 >/dev/null && echo lo-up"]), b"").unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("lo\n"), "{out}");
    assert!(out.contains("lo-up"), "{out}");
    f.assert_clean();
}

/// A single-threaded caller (the CLI) skips the helper process and clones the init itself;
/// run that path in a forked, single-threaded copy of this test process.
#[test]
fn single_threaded_caller_clones_directly() {
    let f = fixture!("direct");
    let spec = f.spec(cmd(&["sh", "-c", "exit 9"]));
    let cgroup = f.cgroup_name();
    let cfg = f.launch(&spec, &cgroup, None);
    // SAFETY: the child runs only husk's spawn/wait (no locks of other test threads: glibc's
    // fork resets the allocator, and nothing here prints) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let threads = std::fs::read_dir("/proc/thread-self/..")
            .map(|d| d.count())
            .unwrap_or(0);
        let code = if threads != 1 {
            100
        } else {
            process::spawn(&cfg).and_then(|c| c.wait()).unwrap_or(101)
        };
        // SAFETY: leaving the forked child without running the test harness's exit path.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status));
    assert_eq!(
        libc::WEXITSTATUS(status),
        9,
        "100: not single-threaded, 101: spawn failed"
    );
    f.assert_clean();
}
