//! Process tier: `process::run_foreground` as `husk run` uses it, driven from outside. The
//! tests re-execute this test binary to run the ignored `foreground_helper` entry point as a
//! separate process, so that signals and the controlling terminal belong to it alone.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use husk::container::spec::{build_spec, SpecOptions};
use husk::process::{run_foreground, LaunchConfig, Root};
use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

const MODE_ENV: &str = "HUSK_FOREGROUND_MODE";
const DIR_ENV: &str = "HUSK_FOREGROUND_DIR";

/// Entry point for the re-executed helper: runs one container in the foreground and exits
/// with its code. Not a test by itself.
#[test]
#[ignore = "entry point re-executed by the other tests in this file"]
fn foreground_helper() {
    let mode = std::env::var(MODE_ENV).expect("run by the foreground tests");
    let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
    let opts = match mode.as_str() {
        "signal" => SpecOptions {
            cmd: [
                "sh",
                "-c",
                // Bounded, so a lost signal fails the test instead of hanging it.
                "trap 'echo got-term; exit 42' TERM; echo ready; i=0; \
                 while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            ..Default::default()
        },
        "tty" => SpecOptions {
            cmd: vec!["sh".into()],
            tty: true,
            interactive: true,
            ..Default::default()
        },
        other => panic!("unknown mode {other}"),
    };
    let config = ConfigBuilder::default()
        .env(vec!["PATH=/bin".to_string()])
        .build()
        .unwrap();
    let image = ImageConfigurationBuilder::default()
        .config(config)
        .build()
        .unwrap();
    let id = format!("fg-{}-{mode}", std::process::id());
    let spec = build_spec(&image, &opts, &id).unwrap();
    let lower = [dir.join("layer")];
    let cgroup = format!("husk/{id}");
    let cfg = LaunchConfig {
        spec: &spec,
        root: Root::Layers {
            lower_dirs: &lower,
            container_dir: &dir.join("container"),
        },
        cgroup_name: &cgroup,
        stdio: None,
        network: None,
        netns: None,
        start_gate: None,
        hooks: None,
    };
    let exit = run_foreground(&cfg, |_| {}).unwrap();
    std::process::exit(exit.code);
}

fn helper(mode: &str, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "foreground_helper",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(MODE_ENV, mode)
    .env(DIR_ENV, dir);
    cmd
}

fn prepare() -> Option<tempfile::TempDir> {
    if !common::is_root() || common::host_busybox().is_none() {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    common::make_busybox_rootfs(&tmp.path().join("layer")).unwrap();
    Some(tmp)
}

/// Threads of `pid` (the helper is multithreaded: libtest runs the test on its own thread).
fn threads(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn signals_sent_to_husk_reach_the_container() {
    let Some(tmp) = prepare() else {
        skip!("needs root and busybox-static")
    };
    let mut child = helper("signal", tmp.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // libtest prints "test foreground_helper ... " without a newline before the container does.
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.trim_end().ends_with("ready"));
    assert!(ready, "the container never started");
    // The thread running run_foreground blocks the forwarded signals; a process-directed
    // SIGTERM could land on libtest's main thread instead, so aim it at the blocking thread
    // the way the kernel would for single-threaded husk.
    let pid = child.id();
    for tid in threads(pid) {
        let mask = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        let blocked = mask
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:\t"))
            .unwrap_or("0");
        if u64::from_str_radix(blocked.trim(), 16).unwrap_or(0) & (1 << (libc::SIGTERM - 1)) != 0 {
            // SAFETY: tgkill with plain integers; the thread belongs to our child.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGTERM) };
        }
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42), "output after ready: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("got-term")), "{rest:?}");
}

#[test]
fn terminal_session_through_husks_own_tty() {
    let Some(tmp) = prepare() else {
        skip!("needs root and busybox-static")
    };
    let pty = nix::pty::openpty(None, None).unwrap();
    let (master, slave): (OwnedFd, OwnedFd) = (pty.master, pty.slave);
    let before = nix::sys::termios::tcgetattr(&slave).unwrap();
    // husk's terminal size must reach the container's pty.
    let size = libc::winsize {
        ws_row: 33,
        ws_col: 111,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we own from a pty we hold.
    let set = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(set, 0);
    let mut child = helper("tty", tmp.path())
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()))
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(master);
    master
        .write_all(b"echo sum-$((40+2)); echo size-$(stty size | tr ' ' x); exit 5\n")
        .unwrap();

    let reader_fd = master.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = reader_fd;
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the terminal session did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(100));
    let output: Vec<u8> = rx.try_iter().flatten().collect();
    let output = String::from_utf8_lossy(&output);
    assert_eq!(status.code(), Some(5), "output: {output:?}");
    assert!(output.contains("sum-42"), "output: {output:?}");
    assert!(output.contains("size-33x111"), "output: {output:?}");
    let after = nix::sys::termios::tcgetattr(&slave).unwrap();
    assert_eq!(
        before.local_flags, after.local_flags,
        "raw mode was not undone"
    );
}
