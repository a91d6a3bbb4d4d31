//! Process tier: the cgroup module against the host's real cgroupfs (root needed). Limits and
//! accounting on v1/hybrid are covered through real containers in process_run.rs; here the
//! create/join/kill/remove cycle runs on every hierarchy the host has, including the v2 one a
//! hybrid host mounts without controllers.

mod common;

use std::path::PathBuf;
use std::process::Command;

use husk::process::{Cgroup, CgroupLayout};

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
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(root) = mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mount_point = pre.split(' ').nth(4)?;
        post.starts_with("cgroup2 ")
            .then(|| PathBuf::from(mount_point))
    }) else {
        skip!("no cgroup2 hierarchy mounted on this host");
    };
    cycle(
        CgroupLayout::Unified(root),
        &format!("husk/cgtest2-{}", std::process::id()),
    );
}
