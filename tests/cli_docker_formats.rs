//! husk's output against Docker's own, for the same cases, where a Docker engine runs here
//! (scripts/test.sh starts one when Debian's docker.io is installed). Same image (one busybox
//! rootfs imported into both), same commands; compared: exit codes, `ps` columns and cells,
//! `images` columns and sizes, `inspect` state fields, and `logs`.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

const DOCKER: &str = "/usr/bin/docker";

fn docker_available() -> Result<(), String> {
    if !common::is_root() {
        return Err("needs root".into());
    }
    match Command::new(DOCKER)
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(_) => Err("no Docker engine answers (start one with: dockerd &)".into()),
        Err(_) => Err("Debian's docker.io is not installed".into()),
    }
}

struct Peers {
    root: tempfile::TempDir,
    image: String,
    /// Every Docker container of this test is named with it (tests run in parallel).
    prefix: String,
}

impl Peers {
    fn husk(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_husk"))
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .env("HUSK_ISOLATION", "process")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Run the same `run` in both, each with `--network none` (test.sh's dockerd has no
    /// bridge).
    fn run_both(&self, name: &str, cmd: &[&str]) -> (Output, Output) {
        let husk_name = format!("{}{name}-husk", self.prefix);
        let docker_name = format!("{}{name}-docker", self.prefix);
        let mut husk_args = vec![
            "run",
            "--network",
            "none",
            "--name",
            &husk_name,
            &self.image,
        ];
        husk_args.extend(cmd);
        let mut docker_args = vec![
            "run",
            "--network",
            "none",
            "--name",
            &docker_name,
            &self.image,
        ];
        docker_args.extend(cmd);
        (self.husk(&husk_args), self.docker(&docker_args))
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        let filter = format!("name={}", self.prefix);
        let out = self.docker(&["ps", "-a", "-q", "--filter", &filter]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        let _ = self.docker(&["rmi", "-f", &self.image]);
    }
}

fn setup(test: &str) -> Option<Peers> {
    if let Err(why) = docker_available() {
        common::note_skip(module_path!(), &why);
        return None;
    }
    if common::host_busybox().is_none() {
        common::note_skip(module_path!(), "busybox-static is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    common::make_busybox_rootfs(&rootfs).unwrap();
    let tar = dir.path().join("rootfs.tar");
    common::tar_dir(&rootfs, &tar);
    let peers = Peers {
        root: tempfile::tempdir().unwrap(),
        image: format!("hfmt-{test}-{}:latest", std::process::id()),
        prefix: format!("hfmt-{test}-{}-", std::process::id()),
    };
    let tar_arg = tar.to_str().unwrap();
    assert!(peers
        .husk(&["import", "--change", "CMD [\"sh\"]", tar_arg, &peers.image])
        .status
        .success());
    assert!(peers
        .docker(&["import", "--change", "CMD [\"sh\"]", tar_arg, &peers.image])
        .status
        .success());
    Some(peers)
}

/// Cells of a table line: columns are separated by at least 3 spaces (never inside a cell).
fn cells(line: &str) -> Vec<String> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn row_for<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_exit_codes_ps_inspect_and_logs_match_docker() {
    let Some(peers) = setup("run") else { return };
    let cases: &[(&str, &[&str])] = &[
        ("echo", &["echo", "hello from busybox"]),
        ("exit3", &["sh", "-c", "echo out; echo err >&2; exit 3"]),
        ("missing", &["no-such-command"]),
        ("notexec", &["/etc"]),
    ];
    for (name, cmd) in cases {
        let (husk, docker) = peers.run_both(name, cmd);
        assert_eq!(
            husk.status.code(),
            docker.status.code(),
            "exit code of {cmd:?}"
        );
        assert_eq!(text(&husk), text(&docker), "stdout of {cmd:?}");
        for field in [
            "{{.State.Status}}",
            "{{.State.ExitCode}}",
            "{{.State.Running}}",
            "{{.Path}}",
            "{{.Config.Cmd}}",
        ] {
            let h = text(&peers.husk(&[
                "inspect",
                "-f",
                field,
                &format!("{}{name}-husk", peers.prefix),
            ]));
            let d = text(&peers.docker(&[
                "inspect",
                "-f",
                field,
                &format!("{}{name}-docker", peers.prefix),
            ]));
            assert_eq!(h, d, "inspect {field} for {cmd:?}");
        }
    }
    // logs: the same lines on the same streams.
    let h = peers.husk(&["logs", &format!("{}exit3-husk", peers.prefix)]);
    let d = peers.docker(&["logs", &format!("{}exit3-docker", peers.prefix)]);
    assert_eq!(text(&h), text(&d));
    assert_eq!(h.stderr, d.stderr);

    // ps -a: Docker's columns in Docker's order (husk adds ISOLATION at the end), and the
    // same IMAGE, COMMAND and STATUS cells.
    let husk_ps = text(&peers.husk(&["ps", "-a"]));
    let filter = format!("name={}", peers.prefix);
    let docker_ps = text(&peers.docker(&["ps", "-a", "--filter", &filter]));
    let husk_header = cells(husk_ps.lines().next().unwrap());
    let docker_header = cells(docker_ps.lines().next().unwrap());
    assert_eq!(husk_header[..docker_header.len()], docker_header[..]);
    for (name, _) in cases {
        let h = cells(row_for(&husk_ps, &format!("{name}-husk")));
        let d = cells(row_for(&docker_ps, &format!("{name}-docker")));
        assert_eq!(h[1], d[1], "IMAGE in\n{husk_ps}\n{docker_ps}");
        assert_eq!(h[2], d[2], "COMMAND in\n{husk_ps}\n{docker_ps}");
        // STATUS: "Exited (3) 2 seconds ago" / "Created": compare up to the time.
        let status = |s: &str| {
            s.split(" (").next().unwrap().to_string()
                + &s.split_once(')')
                    .map(|(code, _)| code.to_string())
                    .unwrap_or_default()
        };
        assert_eq!(status(&h[4]), status(&d[4]), "STATUS of {name}");
    }
}

#[test]
fn images_columns_and_sizes_match_docker() {
    let Some(peers) = setup("images") else { return };
    let husk = text(&peers.husk(&["images"]));
    let docker = text(&peers.docker(&["images", &peers.image]));
    // The same columns in the same order; the header's spacing follows the widest cell, and
    // "Less than a second ago" against "1 second ago" is only a matter of when each ran.
    assert_eq!(
        cells(husk.lines().next().unwrap()),
        cells(docker.lines().next().unwrap()),
        "images header"
    );
    let repo = peers.image.split(':').next().unwrap();
    let h = cells(row_for(&husk, repo));
    let d = cells(row_for(&docker, repo));
    assert_eq!(h[0], d[0], "REPOSITORY");
    assert_eq!(h[1], d[1], "TAG");
    assert_eq!(h.last(), d.last(), "SIZE");
    assert!(Path::new(DOCKER).exists());
}
