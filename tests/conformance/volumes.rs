//! `volumes`: volumes, binds and tmpfs mounts, the same observable result in every isolation
//! (a VM's through virtio-fs from virtiofsd). A named volume is also shared between the two
//! isolations, and a killed VM monitor or supervisor leaves no daemon behind.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::cli::Husk;
use crate::support::run;

/// A husk root whose image has content under /srv/www and /etc/marker, able to run both
/// isolations; None (the reason noted) when this host cannot run `isolation`.
fn husk(test: &str, isolation: &str) -> Option<Husk> {
    if !common::is_root() {
        common::note_skip(test, "volume cases need root");
        return None;
    }
    let mut env = Vec::new();
    match common::guest_assets() {
        Ok((kernel, agent)) => {
            env.push(("HUSK_KERNEL", kernel.clone().into_os_string()));
            env.push(("HUSK_AGENT", agent.clone().into_os_string()));
            env.push(("HUSK_VMM", common::vm_monitor().into()));
        }
        Err(why) if isolation == "vm" => {
            common::note_skip(test, &why);
            return None;
        }
        Err(_) => {}
    }
    let husk = Husk::new(env);
    husk.import_busybox(|rootfs| {
        std::fs::create_dir_all(rootfs.join("srv/www")).unwrap();
        std::fs::write(rootfs.join("srv/www/index.html"), "from the image\n").unwrap();
        std::fs::write(rootfs.join("etc/marker"), "the container's own /etc\n").unwrap();
    });
    Some(husk)
}

fn volume_dir(husk: &Husk, name: &str) -> PathBuf {
    let path = husk.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", name]);
    PathBuf::from(path.trim())
}

in_every_isolation!(
    named_volume_is_filled_from_the_image_and_outlives_the_container,
    bind_mount_keeps_owners_and_modes_both_ways,
    read_only_mounts_refuse_writes_through_any_path,
    tmpfs_and_volumes_on_a_read_only_root,
    symlinks_made_in_a_volume_resolve_inside_the_container,
    volume_in_use_is_refused_and_rm_v_removes_anonymous_ones,
);

fn named_volume_is_filled_from_the_image_and_outlives_the_container(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let out = run(
        &husk,
        iso,
        &[
            "-v",
            "site:/srv/www",
            "busybox",
            "sh",
            "-c",
            "cat /srv/www/index.html && echo kept > /srv/www/new && sync",
        ],
    );
    assert_eq!(out, "from the image\n");
    assert_eq!(
        std::fs::read_to_string(volume_dir(&husk, "site").join("new")).unwrap(),
        "kept\n"
    );
    let out = run(
        &husk,
        iso,
        &[
            "--mount",
            "type=volume,source=site,target=/data",
            "busybox",
            "cat",
            "/data/new",
            "/data/index.html",
        ],
    );
    assert_eq!(out, "kept\nfrom the image\n");
}

fn bind_mount_keeps_owners_and_modes_both_ways(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("f");
    std::fs::write(&file, "host file\n").unwrap();
    std::os::unix::fs::chown(&file, Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let bind = format!("{}:/h", host.path().display());
    let script = "stat -c '%u:%g %a' /h/f && cat /h/f && \
                  echo made > /h/made && chown 4321:8765 /h/made && chmod 604 /h/made && \
                  mkdir -m 0750 /h/dir && sync";
    let out = run(&husk, iso, &["-v", &bind, "busybox", "sh", "-c", script]);
    assert_eq!(out, "1234:5678 640\nhost file\n");
    let made = std::fs::metadata(host.path().join("made")).unwrap();
    assert_eq!(
        (made.uid(), made.gid(), made.mode() & 0o7777),
        (4321, 8765, 0o604)
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("made")).unwrap(),
        "made\n"
    );
    let dir = std::fs::metadata(host.path().join("dir")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(dir.mode() & 0o7777, 0o750);
}

fn read_only_mounts_refuse_writes_through_any_path(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "untouched\n").unwrap();
    let bind = format!("{}:/ro:ro", host.path().display());
    // The write, then a remount read-write (refused in a process container, which lacks
    // CAP_SYS_ADMIN; allowed in a guest, whose kernel is the container's own, but the daemon
    // serving the share refuses the write), then the write again.
    let script = "echo x > /ro/f; echo first=$?; \
                  mount -o remount,rw /ro 2>/dev/null; \
                  echo y > /ro/f; echo again=$?; touch /ro/new; echo new=$?; cat /ro/f";
    let out = run(&husk, iso, &["-v", &bind, "busybox", "sh", "-c", script]);
    assert_eq!(out, "first=1\nagain=1\nnew=1\nuntouched\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("f")).unwrap(),
        "untouched\n"
    );
    assert!(!host.path().join("new").exists());
    // --mount's readonly, the same.
    let mount = format!(
        "type=bind,source={},target=/ro,readonly",
        host.path().display()
    );
    let out = run(
        &husk,
        iso,
        &[
            "--mount",
            &mount,
            "busybox",
            "sh",
            "-c",
            "touch /ro/new; echo new=$?",
        ],
    );
    assert_eq!(out, "new=1\n");
    // A named volume mounted :ro, the same.
    run(&husk, iso, &["-v", "data:/d", "busybox", "touch", "/d/w"]);
    let out = husk.run(&[
        "run",
        "--rm",
        "--isolation",
        iso,
        "-v",
        "data:/d:ro",
        "busybox",
        "rm",
        "/d/w",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
    assert!(volume_dir(&husk, "data").join("w").exists());
}

fn tmpfs_and_volumes_on_a_read_only_root(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    let script = "echo a > /data/a && echo b > /scratch/b && cat /scratch/b && \
                  grep ' /scratch ' /proc/mounts | cut -d' ' -f3 && \
                  if touch /x 2>/dev/null; then echo root-writable; fi";
    let out = run(
        &husk,
        iso,
        &[
            "--read-only",
            "--tmpfs",
            "/scratch",
            "-v",
            "data:/data",
            "busybox",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(out, "b\ntmpfs\n");
    assert_eq!(
        std::fs::read_to_string(volume_dir(&husk, "data").join("a")).unwrap(),
        "a\n"
    );
}

fn symlinks_made_in_a_volume_resolve_inside_the_container(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    // A file next to the volume on the host, at a path the container would need to escape to.
    husk.ok(&["volume", "create", "links"]);
    let volume = volume_dir(&husk, "links");
    let secret = volume.parent().unwrap().join("host-secret");
    std::fs::write(&secret, "host only\n").unwrap();
    let script = format!(
        "ln -s / /data/root && ln -s ../../../../../../../.. /data/up && ln -s {secret} /data/abs && \
         cat /data/root/etc/marker && cat /data/up/etc/marker && \
         if cat /data/abs 2>/dev/null; then echo escaped; fi; \
         if cat /data/../host-secret 2>/dev/null; then echo escaped; fi",
        secret = secret.display()
    );
    let out = run(
        &husk,
        iso,
        &["-v", "links:/data", "busybox", "sh", "-c", &script],
    );
    assert_eq!(
        out, "the container's own /etc\nthe container's own /etc\n",
        "a link in the volume reached outside the container"
    );
    // The links stay links on the host; following them there is the host's business.
    assert_eq!(
        std::fs::read_link(volume.join("root")).unwrap(),
        Path::new("/")
    );
}

fn volume_in_use_is_refused_and_rm_v_removes_anonymous_ones(iso: &str) {
    let Some(husk) = husk(module_path!(), iso) else {
        return;
    };
    husk.ok(&[
        "run",
        "-d",
        "--isolation",
        iso,
        "--name",
        "user",
        "-v",
        "busy:/d",
        "busybox",
        "sh",
        "-c",
        "echo up > /d/up; sleep 600",
    ]);
    let up = volume_dir(&husk, "busy").join("up");
    husk.wait_for("the container to write its volume", || up.exists());
    let out = husk.run(&["volume", "rm", "busy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("volume is in use"));
    let mounts: serde_json::Value =
        serde_json::from_str(&husk.ok(&["inspect", "-f", "{{json .Mounts}}", "user"])).unwrap();
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Name"], "busy");
    assert_eq!(mounts[0]["Destination"], "/d");
    assert_eq!(mounts[0]["RW"], true);
    husk.ok(&["rm", "-f", "user"]);
    husk.ok(&["volume", "rm", "busy"]);

    husk.ok(&[
        "run",
        "--isolation",
        iso,
        "--name",
        "anon",
        "-v",
        "/cache",
        "busybox",
        "touch",
        "/cache/x",
    ]);
    assert_eq!(husk.ok(&["volume", "ls", "-q"]).lines().count(), 1);
    husk.ok(&["rm", "-v", "anon"]);
    assert_eq!(husk.ok(&["volume", "ls", "-q"]).lines().count(), 0);
}

/// The same named volume, written by a VM container and read by a process container, and back.
#[test]
fn a_named_volume_is_shared_between_the_isolations() {
    let Some(husk) = husk(module_path!(), "vm") else {
        return;
    };
    run(
        &husk,
        "vm",
        &[
            "-v",
            "shared:/s",
            "busybox",
            "sh",
            "-c",
            "echo from the vm > /s/f",
        ],
    );
    let out = run(
        &husk,
        "process",
        &[
            "-v",
            "shared:/s",
            "busybox",
            "sh",
            "-c",
            "cat /s/f; echo from a process > /s/g",
        ],
    );
    assert_eq!(out, "from the vm\n");
    assert_eq!(
        run(&husk, "vm", &["-v", "shared:/s", "busybox", "cat", "/s/g"]),
        "from a process\n"
    );
}

/// A VM container holding the volume `held`, once its guest has written to it; the pid of
/// its supervisor.
fn start_holder(husk: &Husk, name: &str) -> i32 {
    let up = volume_dir(husk, "held").join("up");
    let _ = std::fs::remove_file(&up);
    let id = husk.ok(&[
        "run",
        "-d",
        "--isolation",
        "vm",
        "--name",
        name,
        "-v",
        "held:/d",
        "busybox",
        "sh",
        "-c",
        "echo up > /d/up; sleep 600",
    ]);
    let record = husk
        .root
        .path()
        .join("containers")
        .join(id.trim())
        .join("record.json");
    husk.wait_for("the guest to write its volume", || {
        husk.status(name) == "running" && up.exists()
    });
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    record["state"]["supervisor"]["pid"].as_i64().unwrap() as i32
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Wait until `left` finds no process (a zombie left for init to reap counts as gone).
fn wait_until_gone(what: &str, mut left: impl FnMut() -> Vec<i32>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let alive: Vec<i32> = left().into_iter().filter(|&pid| !is_zombie(pid)).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} outlived its VM: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The virtio-fs daemon runs sandboxed; it goes when the monitor is killed, and when the
/// supervisor is killed (which takes the monitor with it); `rm -f` cleans the rest.
#[test]
fn a_killed_vm_monitor_or_supervisor_leaves_no_daemon_behind() {
    let Some(husk) = husk(module_path!(), "vm") else {
        return;
    };
    husk.ok(&["volume", "create", "held"]);
    let volume = volume_dir(&husk, "held");
    let daemons = || daemons_serving(&volume);

    let supervisor = start_holder(&husk, "by-monitor");
    // virtiofsd's namespace sandbox is a child it waits for: two processes, one daemon.
    let serving = daemons();
    assert!(!serving.is_empty(), "no virtiofsd serves the volume");
    let own_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert!(
        serving.iter().any(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|ns| ns != own_mnt)
                && status.lines().any(|l| l == "Seccomp:\t2")
        }),
        "no virtiofsd runs in a mount namespace of its own under a seccomp filter"
    );
    let monitor = children_of(supervisor)
        .into_iter()
        .find(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.starts_with("husk-vmm") || comm.starts_with("qemu-system")
        })
        .expect("the VM's monitor process");
    kill9(monitor);
    wait_until_gone("virtiofsd", daemons);
    husk.wait_for("the container to exit", || {
        husk.status("by-monitor") == "exited"
    });
    // Its process went with the VM, as with SIGKILL.
    assert_eq!(
        husk.ok(&["inspect", "-f", "{{.State.ExitCode}}", "by-monitor"])
            .trim(),
        "137"
    );
    husk.ok(&["rm", "by-monitor"]);

    let supervisor = start_holder(&husk, "by-supervisor");
    let monitor = children_of(supervisor);
    assert!(!daemons().is_empty());
    kill9(supervisor);
    wait_until_gone("virtiofsd", daemons);
    wait_until_gone("the monitor", || {
        monitor
            .iter()
            .copied()
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
            .collect()
    });
    husk.ok(&["rm", "-f", "by-supervisor"]);
    husk.ok(&["volume", "rm", "held"]);
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

fn is_zombie(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state == "Z"))
}

/// The pids whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&child| {
            stat_fields(child)
                .and_then(|f| f.get(1)?.parse::<i32>().ok())
                .is_some_and(|ppid| ppid == pid)
        })
        .collect()
}

/// Pids of virtiofsd processes sharing `dir`.
fn daemons_serving(dir: &Path) -> Vec<i32> {
    let want = dir.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_daemon = args.first().is_some_and(|a| a.ends_with(b"virtiofsd"));
        if is_daemon && args.contains(&want) {
            pids.push(pid);
        }
    }
    pids
}
