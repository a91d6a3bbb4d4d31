//! Process tier: the cgroup module against the host's real cgroupfs (root needed). Limits and
//! accounting on v1/hybrid are covered through real containers in process_run.rs; here the
//! create/join/kill/remove cycle runs on every hierarchy the host has, including the v2 one a
//! hybrid host mounts without controllers.

mod common;

use std::path::PathBuf;
use std::process::Command;

use husk::process::{Cgroup, CgroupLayout};

fn unified_root() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mount_point = pre.split(' ').nth(4)?;
        post.starts_with("cgroup2 ")
            .then(|| PathBuf::from(mount_point))
    })
}

fn cycle(layout: CgroupLayout, name: &str) {
    let cgroup = Cgroup::create(layout, name, None).unwrap();
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    let pid = child.id() as i32;
    cgroup.add_process(pid).unwrap();
    assert_eq!(cgroup.pids().unwrap(), [pid]);
    for dir in cgroup.paths() {
        assert!(dir.is_dir(), "{} missing", dir.display());
    }
    cgroup.destroy().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    for dir in cgroup.paths() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn detected_layout_create_join_kill_remove() {
    if !common::is_root() {
        skip!("needs root to create cgroups");
    }
    let layout = CgroupLayout::detect().unwrap();
    cycle(layout, &format!("husk/cgtest-{}", std::process::id()));
}

#[test]
fn unified_hierarchy_create_join_kill_remove() {
    if !common::is_root() {
        skip!("needs root to create cgroups");
    }
    let Some(root) = unified_root() else {
        skip!("no cgroup2 hierarchy mounted on this host");
    };
    cycle(
        CgroupLayout::Unified(root),
        &format!("husk/cgtest2-{}", std::process::id()),
    );
}

/// The v2 device program (a BPF_PROG_TYPE_CGROUP_DEVICE program husk writes itself), attached
/// to a real cgroup2 directory: it holds on a hybrid host too, whose v2 hierarchy has no
/// controllers but runs device programs.
#[test]
fn unified_device_program_denies_what_the_rules_do_not_allow() {
    use std::io::Write;

    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResourcesBuilder};
    if !common::is_root() {
        skip!("needs root to create cgroups and load BPF programs");
    }
    let Some(root) = unified_root() else {
        skip!("no cgroup2 hierarchy mounted on this host");
    };
    let rule = |allow, typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let (Some(major), Some(minor)) = (major, minor) {
            b = b.major(major).minor(minor);
        }
        b.build().unwrap()
    };
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "rwm"),
        ])
        .build()
        .unwrap();
    let layout = CgroupLayout::Unified(root);
    let cgroup = Cgroup::create(
        layout,
        &format!("husk/devtest-{}", std::process::id()),
        Some(&resources),
    )
    .unwrap();
    // The shell waits for a line, by when it is in the cgroup, then opens /dev/null (c 1:3,
    // allowed) and /dev/zero (c 1:5, not).
    let mut child = Command::new("sh")
        .args([
            "-c",
            "read go; head -c 0 /dev/null && echo null-ok; head -c 1 /dev/zero || echo zero-denied",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cgroup.add_process(child.id() as i32).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    cgroup.destroy().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout, "null-ok\nzero-denied\n", "{stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
}
