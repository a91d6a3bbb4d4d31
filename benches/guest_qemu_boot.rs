//! Guest-side phase timings for `--isolation vm`, measured under QEMU TCG (this is what a host
//! without hardware KVM can measure; TCG boot times are an upper bound, not the KVM target).
//!
//! Phases: image disk build (flatten + mkfs, uncached), writable disk (truncate + mkfs.ext4),
//! initramfs build, QEMU start to agent Ready (kernel boot + agent setup), Start to Started
//! (process spawn in the guest), Started to Exit (`busybox true`), Exit to VM gone (agent sync +
//! reset). Run: scripts/bench-guest-qemu.sh [ROUNDS]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use husk::vm::qemu::{QemuConfig, QemuGuest};
use husk::vm::{connect_agent, image_disk, initramfs, writable_disk, DEFAULT_WRITABLE_DISK_BYTES};
use rootfs_agent::client::ProcessIo;
use rootfs_agent::protocol::{ProcessSpec, StartRequest};

fn script_output(script: &Path) -> PathBuf {
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run build script");
    assert!(out.status.success(), "{} failed", script.display());
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .trim(),
    )
}

fn busybox_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| std::env::var("ROUNDS").ok()?.parse().ok())
        .unwrap_or(5);
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP guest_qemu_boot: qemu-system-x86_64 is not installed");
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let vmlinux = script_output(&repo.join("guest-kernel/build.sh"));
    // vmlinux boots through its PVH note (no decompression); BENCH_KERNEL=bzImage compares.
    let kernel = match std::env::var("BENCH_KERNEL").as_deref() {
        Ok("bzImage") => vmlinux.with_file_name("bzImage"),
        _ => vmlinux.clone(),
    };
    let agent = script_output(&repo.join("rootfs-agent/build-static.sh"));

    let mut phases: Vec<(&str, Vec<f64>)> = [
        "image disk build (uncached)",
        "writable disk create (1 GiB)",
        "initramfs build (uncached)",
        "qemu start -> agent ready",
        "  of which guest kernel boot",
        "  of which agent setup",
        "start -> process started",
        "process started -> exit",
        "exit -> VM gone",
        "total boot+run+teardown",
    ]
    .into_iter()
    .map(|n| (n, Vec::new()))
    .collect();

    for round in 0..rounds {
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer");
        busybox_rootfs(&layer);

        let t = Instant::now();
        let image = image_disk(tmp.path(), &format!("bench{round}"), &[layer]).unwrap();
        phases[0].1.push(ms(t.elapsed()));

        let t = Instant::now();
        let rw = writable_disk(tmp.path(), DEFAULT_WRITABLE_DISK_BYTES).unwrap();
        phases[1].1.push(ms(t.elapsed()));

        let t = Instant::now();
        let initrd = initramfs(tmp.path(), &agent).unwrap();
        phases[2].1.push(ms(t.elapsed()));

        let mut cfg = QemuConfig::new(&kernel, &initrd, &image, tmp.path());
        cfg.writable_disk = Some(rw);
        let t_boot = Instant::now();
        let (mut qemu, conn) = QemuGuest::boot(&cfg).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let client = connect_agent(conn).unwrap();
        phases[3].1.push(ms(t_boot.elapsed()));
        let ready = client.ready();
        phases[4].1.push(ready.init_started_ms as f64);
        phases[5]
            .1
            .push(ready.ready_ms.saturating_sub(ready.init_started_ms) as f64);

        let t = Instant::now();
        let start = StartRequest {
            process: ProcessSpec::new(["/bin/true"]),
            ..Default::default()
        };
        let io = ProcessIo {
            stdin: None,
            stdout: Box::new(std::io::sink()),
            stderr: Box::new(std::io::sink()),
        };
        let p = client.start(&start, io).unwrap();
        p.pid().unwrap().expect("started");
        phases[6].1.push(ms(t.elapsed()));
        let t = Instant::now();
        assert_eq!(p.wait().unwrap(), 0);
        phases[7].1.push(ms(t.elapsed()));
        let t = Instant::now();
        let status = qemu.wait_exit(Duration::from_secs(30)).unwrap();
        assert!(status.success(), "QEMU exited with {status}");
        phases[8].1.push(ms(t.elapsed()));
        phases[9].1.push(ms(t_boot.elapsed()));
        eprint!(".");
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    println!("guest phases under QEMU TCG, {rounds} rounds (ms): median / min / max");
    for (name, mut v) in phases {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  {name:<32} {:>8.1} {:>8.1} {:>8.1}",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        );
    }
}
