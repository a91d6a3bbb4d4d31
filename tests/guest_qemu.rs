//! T2: our guest kernel, our agent as /init and our disks under QEMU TCG (`-M microvm`,
//! virtio-mmio block and console devices), driven by husk's agent client. Proves the kernel
//! config, the agent's PID 1 path and the disk formats without hardware KVM.
//!
//! Needs qemu-system-x86_64, busybox-static, e2fsprogs (erofs-utils preferred) and the guest
//! kernel from guest-kernel/build.sh, which this test runs (the first run builds the kernel,
//! a few minutes on 2 cores; later runs hit the cache).

mod common;

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use husk::vm::qemu::{QemuConfig, QemuGuest};
use husk::vm::{connect_agent, image_disk, initramfs, writable_disk};
use rootfs_agent::client::{AgentClient, ProcessIo};
use rootfs_agent::protocol::{ProcessSpec, StartRequest};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Everything a boot needs, built once per test binary.
struct Assets {
    kernel: PathBuf,
    kernel_release: String,
    initrd: PathBuf,
    image: PathBuf,
    _root: tempfile::TempDir,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_script(script: &Path) -> Result<PathBuf, String> {
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let path = text.lines().last().unwrap_or("").trim();
    Ok(PathBuf::from(path))
}

fn build_assets() -> Result<Assets, String> {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)".into());
    }
    if common::host_busybox().is_none() {
        return Err("busybox-static is not installed".into());
    }
    let vmlinux = run_script(&repo().join("guest-kernel/build.sh"))
        .map_err(|e| format!("guest kernel unavailable: {e}"))?;
    // The ELF vmlinux boots directly through its PVH note: no decompression, half the time
    // of the bzImage under TCG.
    let kernel = vmlinux.clone();
    let kernel_release = std::fs::read_to_string(vmlinux.with_file_name("kernel.release"))
        .map_err(|e| format!("kernel.release next to {}: {e}", vmlinux.display()))?
        .trim()
        .to_string();
    let agent = run_script(&repo().join("rootfs-agent/build-static.sh"))
        .map_err(|e| format!("static agent build failed: {e}"))?;
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let initrd = initramfs(root.path(), &agent).map_err(|e| e.to_string())?;
    let layer = root.path().join("layer0");
    common::make_busybox_rootfs(&layer).map_err(|e| e.to_string())?;
    let image = image_disk(root.path(), "busybox-test", &[layer]).map_err(|e| e.to_string())?;
    Ok(Assets {
        kernel,
        kernel_release,
        initrd,
        image,
        _root: root,
    })
}

fn assets() -> Result<&'static Assets, &'static str> {
    static ASSETS: OnceLock<Result<Assets, String>> = OnceLock::new();
    ASSETS
        .get_or_init(build_assets)
        .as_ref()
        .map_err(|e| e.as_str())
}

/// A running QEMU guest and its agent session.
struct Guest {
    qemu: QemuGuest,
    client: AgentClient,
    _dir: tempfile::TempDir,
}

impl Guest {
    /// Boot with the image disk and the given writable disk (a fresh one if `None`), the agent
    /// on the named serial port.
    fn boot(assets: &Assets, rw: Option<&Path>) -> Guest {
        Guest::boot_with(assets, rw, false)
    }

    fn boot_with(assets: &Assets, rw: Option<&Path>, console_port: bool) -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let rw = match rw {
            Some(p) => p.to_path_buf(),
            None => writable_disk(dir.path(), 64 << 20).unwrap(),
        };
        let mut cfg = QemuConfig::new(&assets.kernel, &assets.initrd, &assets.image, dir.path());
        cfg.writable_disk = Some(rw);
        cfg.console_port = console_port;
        cfg.serial_log = Some(dir.path().join("serial.log"));
        let (qemu, conn) = QemuGuest::boot(&cfg).unwrap();
        // Bounds every wait on the guest: a hung boot fails the test instead of hanging CI.
        conn.set_read_timeout(Some(Duration::from_secs(90)))
            .unwrap();
        let client = match connect_agent(conn) {
            Ok(c) => c,
            Err(e) => {
                let serial =
                    std::fs::read_to_string(dir.path().join("serial.log")).unwrap_or_default();
                panic!("agent not ready: {e}\nserial console:\n{serial}");
            }
        };
        Guest {
            qemu,
            client,
            _dir: dir,
        }
    }

    fn run(
        &self,
        process: ProcessSpec,
        stdin: Option<Box<dyn Read + Send>>,
    ) -> (i32, String, String) {
        let (out, err) = (Capture::default(), Capture::default());
        let start = StartRequest {
            process,
            hostname: Some("husk-guest".into()),
            readonly_root: false,
            mounts: Vec::new(),
            ..Default::default()
        };
        let p = self
            .client
            .start(
                &start,
                ProcessIo {
                    stdin,
                    stdout: Box::new(out.clone()),
                    stderr: Box::new(err.clone()),
                },
            )
            .unwrap();
        let code = p.wait().unwrap();
        (code, out.text(), err.text())
    }

    /// After the container process exits the agent resets the VM and QEMU (-no-reboot) exits.
    fn expect_shutdown(mut self) {
        let status = self.qemu.wait_exit(Duration::from_secs(30)).unwrap();
        assert!(status.success(), "QEMU exited with {status}");
    }
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new(["/bin/sh", "-c", script])
}

macro_rules! need_assets {
    () => {
        match assets() {
            Ok(a) => a,
            Err(why) => skip!("{why}"),
        }
    };
}

#[test]
fn boots_to_agent_with_both_disks_and_console() {
    let assets = need_assets!();
    let guest = Guest::boot_with(assets, None, true);
    let ready = guest.client.ready().clone();
    assert_eq!(ready.kernel_release, assets.kernel_release);
    assert!(
        matches!(ready.image_fs.as_deref(), Some("erofs") | Some("ext4")),
        "{ready:?}"
    );
    assert!(ready.writable_disk, "{ready:?}");
    assert_eq!(ready.console, "/dev/hvc0");
    assert!(
        ready.init_started_ms > 0 && ready.ready_ms >= ready.init_started_ms,
        "{ready:?}"
    );
    // The root is the overlay of the two disks and the hostname was applied.
    let (code, out, err) = guest.run(
        sh("grep -E ' / | /sys/fs/cgroup ' /proc/mounts; hostname; ls /bin/busybox"),
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("overlay / overlay"), "{out}");
    assert!(out.contains("cgroup2 /sys/fs/cgroup cgroup2"), "{out}");
    assert!(out.contains("husk-guest\n"), "{out}");
    guest.expect_shutdown();
}

#[test]
fn agent_prefers_the_named_port() {
    let assets = need_assets!();
    let guest = Guest::boot(assets, None);
    let console = guest.client.ready().console.clone();
    assert!(console.starts_with("/dev/vport"), "{console}");
    let (code, out, _) = guest.run(sh("cat /sys/class/virtio-ports/*/name"), None);
    assert_eq!((code, out.as_str()), (0, "husk.agent\n"));
    guest.expect_shutdown();
}

#[test]
fn busybox_echo_hello() {
    let assets = need_assets!();
    let guest = Guest::boot(assets, None);
    let (code, out, _) = guest.run(ProcessSpec::new(["busybox", "echo", "hello"]), None);
    assert_eq!((code, out.as_str()), (0, "hello\n"));
    guest.expect_shutdown();
}

#[test]
fn exit_code_one_and_not_found() {
    let assets = need_assets!();
    let guest = Guest::boot(assets, None);
    assert_eq!(guest.run(sh("exit 1"), None).0, 1);
    guest.expect_shutdown();
    let guest = Guest::boot(assets, None);
    let (code, _, err) = guest.run(ProcessSpec::new(["no-such-command"]), None);
    assert_eq!(code, 127, "{err}");
    guest.expect_shutdown();
}

#[test]
fn stdin_is_piped_through() {
    let assets = need_assets!();
    let guest = Guest::boot(assets, None);
    let data: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    let stdin = Box::new(Cursor::new(data.clone().into_bytes()));
    let (code, out, _) = guest.run(sh("cat; echo done"), Some(stdin));
    assert_eq!(code, 0);
    assert_eq!(out, format!("{data}done\n"));
    guest.expect_shutdown();
}

#[test]
fn terminal_output() {
    let assets = need_assets!();
    let guest = Guest::boot(assets, None);
    let mut spec = sh("tty; stty size; echo out");
    spec.terminal = true;
    spec.console_size = Some((24, 80));
    let (code, out, _) = guest.run(spec, None);
    assert_eq!(code, 0);
    assert!(out.contains("/dev/pts/0\r\n"), "{out:?}");
    assert!(out.contains("24 80\r\n"), "{out:?}");
    assert!(out.contains("out\r\n"), "{out:?}");
    guest.expect_shutdown();
}

#[test]
fn second_boot_sees_the_first_runs_file() {
    let assets = need_assets!();
    let dir = tempfile::tempdir().unwrap();
    let rw = writable_disk(dir.path(), 64 << 20).unwrap();
    let guest = Guest::boot(assets, Some(&rw));
    let (code, _, err) = guest.run(sh("echo kept > /root/state.txt"), None);
    assert_eq!(code, 0, "{err}");
    guest.expect_shutdown();

    let guest = Guest::boot(assets, Some(&rw));
    let (code, out, err) = guest.run(sh("cat /root/state.txt"), None);
    assert_eq!((code, out.as_str()), (0, "kept\n"), "{err}");
    guest.expect_shutdown();
}

#[test]
fn exec_into_a_running_guest_and_kill() {
    let assets = need_assets!();
    let guest = Guest::boot(assets, None);
    let main_out = Capture::default();
    let main = guest
        .client
        .start(
            &StartRequest {
                process: sh("echo up; exec sleep 600"),
                hostname: None,
                readonly_root: false,
                mounts: Vec::new(),
                ..Default::default()
            },
            ProcessIo {
                stdin: None,
                stdout: Box::new(main_out.clone()),
                stderr: Box::new(std::io::sink()),
            },
        )
        .unwrap();
    main.pid().unwrap().expect("main process started");
    // "up" comes right before the shell execs sleep: wait for it, so that ps finds sleep.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while main_out.text() != "up\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "no \"up\" from the main process"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let exec = |spec: ProcessSpec| {
        let out = Capture::default();
        let p = guest
            .client
            .exec(
                &spec,
                ProcessIo {
                    stdin: None,
                    stdout: Box::new(out.clone()),
                    stderr: Box::new(std::io::sink()),
                },
            )
            .unwrap();
        (p.wait().unwrap(), out.text())
    };
    // exec sees the main process (same guest) and the shell's exit codes come through.
    let (code, out) = exec(sh("sleep 0.2; ps -o comm | grep -c sleep"));
    assert_eq!((code, out.as_str()), (0, "1\n"));
    assert_eq!(exec(sh("true")).0, 0);
    assert_eq!(exec(sh("exit 1")).0, 1);
    assert_eq!(exec(ProcessSpec::new(["missing-binary"])).0, 127);
    assert_eq!(exec(sh("kill -9 $$")).0, 137);

    // A background child keeps the exec's stdout open: its Exit must not wait for that. Once
    // orphaned the child belongs to the container's PID 1 (its own PID namespace), as with
    // Docker, not to the agent: here `sleep`, which never reaps it.
    assert_eq!(exec(sh("sleep 0.3 & exit 0")).0, 0);
    std::thread::sleep(Duration::from_millis(2500));
    let (_, zombie_parents) = exec(sh("grep -h ') Z ' /proc/[0-9]*/stat | cut -d' ' -f4"));
    assert_eq!(zombie_parents, "1\n");

    main.signal(9).unwrap();
    assert_eq!(main.wait().unwrap(), 137);
    assert_eq!(main_out.text(), "up\n");
    guest.expect_shutdown();
}

#[test]
fn process_spec_is_applied_in_the_guest() {
    let assets = need_assets!();
    let guest = Guest::boot(assets, None);
    let mut spec = sh("echo $GREETING; pwd; id -u; id -g; id -G; ulimit -n");
    spec.env.push("GREETING=from the host".into());
    spec.cwd = "/work/dir".into(); // missing from the image: created, as runc does
    spec.uid = 65534;
    spec.gid = 65534;
    spec.additional_gids = vec![65534, 10];
    spec.rlimits.push(rootfs_agent::protocol::Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 123,
        hard: 456,
    });
    let (code, out, err) = guest.run(spec, None);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "from the host",
            "/work/dir",
            "65534",
            "65534",
            "65534 10",
            "123"
        ],
        "{out}"
    );
    guest.expect_shutdown();
}
