//! The local store through the CLI and the library API: import, images, inspect, tag, rmi,
//! prune, save/load, corruption and concurrency. Archives come from GNU tar and skopeo where
//! possible, so the formats are checked against tools we did not write.

mod common;
mod image_support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use husk::image::{ImageError, Store};
use image_support::*;

/// A busybox rootfs tarball made by GNU tar, and its image ID after import as `name`.
fn import_busybox(root: &Path, work: &Path, name: &str, changes: &[&str]) -> String {
    let rootfs = work.join("rootfs");
    if !rootfs.exists() {
        common::make_busybox_rootfs(&rootfs).unwrap();
    }
    let tarball = work.join("rootfs.tar");
    if !tarball.exists() {
        let status = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut args = vec![
        "import".to_string(),
        tarball.display().to_string(),
        name.to_string(),
    ];
    for change in changes {
        args.push("--change".into());
        args.push(change.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(husk(root, &args));
    let id = stdout(&out).trim().to_string();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "import printed {id:?}"
    );
    id
}

macro_rules! need_busybox {
    () => {
        if common::host_busybox().is_none() {
            skip!("busybox-static is not installed (apt-get install busybox-static)");
        }
    };
}

#[test]
fn import_makes_a_runnable_looking_image_with_its_config() {
    need_busybox!();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let id = import_busybox(
        &root,
        work.path(),
        "busybox:latest",
        &[r#"CMD ["sh"]"#, "ENV GREETING=hi", "WORKDIR /tmp"],
    );

    let listing = stdout(&ok(husk(&root, &["images"])));
    let lines: Vec<&str> = listing.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY")
            && lines[0].contains("IMAGE ID")
            && lines[0].ends_with("SIZE")
    );
    assert!(
        lines[1].starts_with("busybox")
            && lines[1].contains("latest")
            && lines[1].contains(&id[7..19]),
        "{listing}"
    );
    assert_eq!(
        stdout(&ok(husk(&root, &["images", "-q"]))).trim(),
        &id[7..19]
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&ok(husk(&root, &["image", "inspect", "busybox"])))).unwrap();
    assert_eq!(inspect[0]["Id"], id);
    assert_eq!(
        inspect[0]["RepoTags"],
        serde_json::json!(["busybox:latest"])
    );
    assert_eq!(inspect[0]["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(inspect[0]["Config"]["WorkingDir"], "/tmp");
    assert_eq!(
        inspect[0]["Config"]["Env"],
        serde_json::json!(["GREETING=hi"])
    );
    let format = stdout(&ok(husk(
        &root,
        &[
            "image",
            "inspect",
            "-f",
            "{{.Id}} {{.Config.Cmd}}",
            "busybox",
        ],
    )));
    assert_eq!(format.trim(), format!("{id} [sh]"));

    // The API the container side uses: names, IDs and prefixes resolve; layers are ready.
    let store = Store::open(&root).unwrap();
    for reference in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        &id,
        &id[7..],
        &id[7..15],
    ] {
        assert_eq!(store.lookup(reference).unwrap().id, id, "{reference}");
    }
    let image = store.lookup("busybox").unwrap();
    assert_eq!(image.repo_tags, vec!["busybox:latest".to_string()]);
    // SIZE is file content, as Docker counts it: busybox plus /etc/passwd and /etc/group.
    let busybox_len = fs::metadata(common::host_busybox().unwrap()).unwrap().len();
    let etc_len = fs::metadata(work.path().join("rootfs/etc/passwd"))
        .unwrap()
        .len()
        + fs::metadata(work.path().join("rootfs/etc/group"))
            .unwrap()
            .len();
    assert_eq!(image.size, busybox_len + etc_len);
    assert_eq!(
        image
            .config
            .config()
            .as_ref()
            .unwrap()
            .cmd()
            .as_ref()
            .unwrap(),
        &vec!["sh".to_string()]
    );
    let dirs = store.layer_dirs(&image).unwrap();
    assert_eq!(dirs.len(), 1);
    let busybox = dirs[0].join("bin/busybox");
    assert_eq!(
        fs::read(&busybox).unwrap(),
        fs::read(common::host_busybox().unwrap()).unwrap()
    );
    assert!(fs::metadata(&busybox).unwrap().permissions().mode() & 0o111 != 0);
    assert_eq!(
        fs::read_link(dirs[0].join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
}

#[test]
fn import_from_stdin_compressed_and_untagged() {
    need_busybox!();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let tar = TarBuilder::new()
        .dir("bin/", 0o755)
        .file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
        .finish();
    let gz = compress(&tar, Comp::Gzip);
    let mut child = Command::new(env!("CARGO_BIN_EXE_husk"))
        .arg("--root")
        .arg(&root)
        .args(["import", "-", "-m", "from stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&gz).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let id = stdout(&out).trim().to_string();
    let listing = stdout(&ok(husk(&root, &["images"])));
    assert!(
        listing.lines().nth(1).unwrap().starts_with("<none>"),
        "{listing}"
    );
    let store = Store::open(&root).unwrap();
    let image = store.lookup(&id).unwrap();
    assert_eq!(image.layers[0].diff_id, sha256(&tar));
    assert_eq!(
        image.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
}

#[test]
fn hostile_import_fails_with_one_line_and_stores_nothing() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    for (name, tar) in [
        (
            "dotdot",
            TarBuilder::new().file("../../escape", b"x", 0o644).finish(),
        ),
        (
            "symlink-parent",
            TarBuilder::new()
                .symlink("l", "/tmp")
                .file("l/husk-escape", b"x", 0o644)
                .finish(),
        ),
        (
            "hardlink-out",
            TarBuilder::new()
                .hardlink("h", "../../../etc/passwd")
                .finish(),
        ),
    ] {
        let path = work.path().join(format!("{name}.tar"));
        fs::write(&path, tar).unwrap();
        let out = husk(&root, &["import", path.to_str().unwrap(), "evil:latest"]);
        assert_eq!(out.status.code(), Some(125), "{name}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(
            err.starts_with("husk: ") && err.contains("archive"),
            "{name}: {err}"
        );
        assert_store_empty(&root);
    }
    assert!(!Path::new("/tmp/husk-escape").exists());
    let out = husk(&root, &["import", "/nonexistent.tar"]);
    assert_eq!(out.status.code(), Some(125));
    let out = husk(&root, &["import", "-", "Bad:Name"]);
    assert!(
        stderr(&out).contains("invalid reference format"),
        "{}",
        stderr(&out)
    );
    let out = husk(
        &root,
        &["import", "/dev/null", "x", "--change", "RUN rm -rf /"],
    );
    assert!(
        stderr(&out).contains("RUN is not allowed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tag_and_rmi_untag_versus_delete_like_docker() {
    need_busybox!();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let id = import_busybox(&root, work.path(), "busybox:latest", &[]);
    ok(husk(
        &root,
        &["tag", "busybox", "127.0.0.1:5000/mirror/busybox:v1"],
    ));
    ok(husk(&root, &["image", "tag", &id[7..19], "other"]));
    let listing = stdout(&ok(husk(&root, &["images"])));
    assert_eq!(listing.lines().count(), 4, "{listing}");
    assert_eq!(
        stdout(&ok(husk(&root, &["images", "other"])))
            .lines()
            .count(),
        2
    );

    // By ID with several names: refused without -f.
    let out = husk(&root, &["rmi", &id[7..19]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("must be forced") && stderr(&out).contains("multiple repositories"),
        "{}",
        stderr(&out)
    );

    // By name while other names remain: untag only.
    let out = stdout(&ok(husk(&root, &["rmi", "other"])));
    assert_eq!(out.trim(), "Untagged: other:latest");
    assert!(Store::open(&root).unwrap().lookup(&id).is_ok());
    let out = stdout(&ok(husk(
        &root,
        &["image", "rm", "127.0.0.1:5000/mirror/busybox:v1"],
    )));
    assert_eq!(out.trim(), "Untagged: 127.0.0.1:5000/mirror/busybox:v1");

    // The last name: untag and delete, blobs and unpacked layer gone.
    let out = stdout(&ok(husk(&root, &["rmi", "busybox"])));
    assert!(
        out.contains("Untagged: busybox:latest") && out.contains(&format!("Deleted: {id}")),
        "{out}"
    );
    assert_store_empty(&root);
    let out = husk(&root, &["rmi", "busybox"]);
    assert!(
        stderr(&out).contains("No such image: busybox:latest"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rmi_refuses_an_image_a_container_uses_unless_forced() {
    need_busybox!();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let id = import_busybox(&root, work.path(), "busybox:latest", &[]);
    let record = root.join("containers/c0ffee");
    fs::create_dir_all(&record).unwrap();
    fs::write(
        record.join("record.json"),
        serde_json::json!({"image_id": id}).to_string(),
    )
    .unwrap();

    let out = husk(&root, &["rmi", "busybox"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("must force") && stderr(&out).contains(&id[7..19]),
        "{}",
        stderr(&out)
    );
    let out = husk(&root, &["rmi", &id]);
    assert!(
        stderr(&out).contains("being used by a container"),
        "{}",
        stderr(&out)
    );

    // -f untags but keeps the content the container needs (Docker's behaviour).
    let out = stdout(&ok(husk(&root, &["rmi", "-f", "busybox"])));
    assert!(
        out.contains("Untagged: busybox:latest") && !out.contains("Deleted"),
        "{out}"
    );
    let store = Store::open(&root).unwrap();
    let image = store.lookup(&id).unwrap();
    assert!(image.repo_tags.is_empty());
    assert!(store.layer_dirs(&image).unwrap()[0]
        .join("bin/busybox")
        .exists());
    ok(husk(&root, &["image", "prune", "-f"]));
    assert!(store.lookup(&id).is_ok(), "prune removed an image in use");

    fs::remove_dir_all(root.join("containers")).unwrap();
    let out = stdout(&ok(husk(&root, &["image", "prune", "-f"])));
    assert!(
        out.contains(&format!("deleted: {id}")) && out.contains("Total reclaimed space"),
        "{out}"
    );
    assert_store_empty(&root);
}

#[test]
fn prune_all_keeps_nothing_unused_and_cleans_temporaries() {
    need_busybox!();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    import_busybox(&root, work.path(), "busybox:latest", &[]);
    // Left behind by an interrupted husk: removed by the next garbage collection.
    fs::create_dir_all(root.join("images/tmp/layer-1-dead/bin")).unwrap();
    fs::write(root.join("images/tmp/blob-1-dead"), b"partial").unwrap();
    ok(husk(&root, &["image", "prune", "-f"]));
    assert!(
        Store::open(&root).unwrap().lookup("busybox").is_ok(),
        "prune without -a removed a tagged image"
    );
    assert!(tree(&root.join("images/tmp")).is_empty());
    ok(husk(&root, &["image", "prune", "-a", "-f"]));
    assert_store_empty(&root);
}

#[test]
fn not_found_and_malformed_references_read_like_docker() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let store = Store::open(&root).unwrap();
    let err = store.lookup("nope").unwrap_err();
    assert!(matches!(err, ImageError::NotFoundLocally(_)));
    assert_eq!(
        err.to_string(),
        "Unable to find image 'nope:latest' locally"
    );
    assert!(matches!(
        store.lookup("sha256:abcdef").unwrap_err(),
        ImageError::NoSuchImage(_)
    ));
    assert!(matches!(
        store.lookup("UPPER").unwrap_err(),
        ImageError::InvalidReference { .. }
    ));
    let out = husk(&root, &["image", "inspect", "nope"]);
    assert!(stderr(&out).contains("No such image: nope:latest"));
    let out = husk(&root, &["pull", "bad//name"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).starts_with("husk: invalid reference format"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn corrupt_files_in_the_store_are_detected_and_named() {
    need_busybox!();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let id = import_busybox(&root, work.path(), "busybox:latest", &[]);
    let store = Store::open(&root).unwrap();
    let image = store.lookup("busybox").unwrap();
    let layer_blob = store.blob_path(&image.layers[0].digest).unwrap();

    // A layer blob corrupted before it was unpacked: detected, removed, named.
    fs::remove_dir_all(store.layer_dir(&image.layers[0].diff_id).unwrap()).unwrap();
    let mut bytes = fs::read(&layer_blob).unwrap();
    bytes[600] ^= 0x55;
    fs::write(&layer_blob, &bytes).unwrap();
    let err = store.layer_dirs(&image).unwrap_err();
    assert!(matches!(err, ImageError::CorruptStore(_)), "{err}");
    assert!(err.to_string().contains(&image.layers[0].digest), "{err}");
    assert!(!layer_blob.exists(), "corrupt blob kept");
    assert!(
        tree(&root.join("images/layers")).is_empty() && tree(&root.join("images/tmp")).is_empty()
    );

    // A corrupt config: every command that reads it says so.
    let config = store.blob_path(&id).unwrap();
    fs::write(&config, b"{\"tampered\": true}").unwrap();
    let out = husk(&root, &["images"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("corrupt file in the image store") && stderr(&out).contains(&id),
        "{}",
        stderr(&out)
    );
    assert!(matches!(
        store.lookup("busybox").unwrap_err(),
        ImageError::CorruptStore(_)
    ));

    // A corrupt index.
    fs::write(root.join("images/index.json"), b"{not json").unwrap();
    let out = husk(&root, &["images"]);
    assert!(stderr(&out).contains("index.json"), "{}", stderr(&out));
}

#[test]
fn save_then_load_round_trips_and_skopeo_reads_the_archive() {
    need_busybox!();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let id = import_busybox(&root, work.path(), "busybox:latest", &[r#"CMD ["sh"]"#]);
    let archive = work.path().join("saved.tar");
    ok(husk(
        &root,
        &["save", "-o", archive.to_str().unwrap(), "busybox"],
    ));
    if have("skopeo") {
        // Both views of the archive are valid for a client we did not write.
        for transport in ["docker-archive", "oci-archive"] {
            let out = Command::new("skopeo")
                .args([
                    "--insecure-policy",
                    "inspect",
                    "--config",
                    &format!("{transport}:{}", archive.display()),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "skopeo {transport}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                config["config"]["Cmd"],
                serde_json::json!(["sh"]),
                "{transport}"
            );
        }
    } else {
        common::note_skip(module_path!(), "part of the test: skopeo is not installed");
    }
    // save to stdout | load from stdin, into another root.
    let piped = work.path().join("piped.tar");
    let status = Command::new(env!("CARGO_BIN_EXE_husk"))
        .arg("--root")
        .arg(&root)
        .args(["save", &id])
        .stdout(fs::File::create(&piped).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let other = work.path().join("other");
    let out = Command::new(env!("CARGO_BIN_EXE_husk"))
        .arg("--root")
        .arg(&other)
        .arg("load")
        .stdin(fs::File::open(&piped).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Loaded image: busybox:latest"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        Store::open(&other).unwrap().lookup("busybox").unwrap().id,
        id
    );

    ok(husk(&root, &["rmi", "busybox"]));
    assert_store_empty(&root);
    let out = stdout(&ok(husk(&root, &["load", "-i", archive.to_str().unwrap()])));
    assert_eq!(out.trim(), "Loaded image: busybox:latest");
    let store = Store::open(&root).unwrap();
    let image = store.lookup("busybox").unwrap();
    assert_eq!(image.id, id);
    assert!(store.layer_dirs(&image).unwrap()[0]
        .join("bin/busybox")
        .exists());
}

#[test]
fn load_docker_archive_and_oci_archive_made_by_skopeo() {
    need_busybox!();
    if !have("skopeo") {
        skip!("skopeo is not installed (apt-get install skopeo)");
    }
    let busybox = busybox_bytes().unwrap();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    // docker-archive cannot carry zstd layers: gzip everywhere here.
    let layers: Vec<_> = busybox_layers(&busybox)
        .into_iter()
        .map(|(tar, _)| (tar, Comp::Gzip))
        .collect();
    let built = build_image(&layers, &["sh"]);
    let layout = work.path().join("layout");
    write_oci_layout(&layout, &built, "1.0");
    for (transport, name) in [
        ("docker-archive", "busybox:from-docker-archive"),
        ("oci-archive", "busybox:from-oci-archive"),
    ] {
        let file = work.path().join(format!("{transport}.tar"));
        let dest = format!("{transport}:{}:{name}", file.display());
        let out = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                &format!("oci:{}:1.0", layout.display()),
                &dest,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = ok(husk(&root, &["load", "-i", file.to_str().unwrap()]));
        let loaded = stdout(&out);
        assert!(loaded.starts_with("Loaded image"), "{transport}: {loaded}");
        let store = Store::open(&root).unwrap();
        let image = if transport == "docker-archive" {
            store.lookup(name).unwrap()
        } else {
            // Named by ref.name ("busybox:from-oci-archive"), or by ID if it were a bare tag.
            let id = loaded.trim().rsplit(' ').next().unwrap().to_string();
            store.lookup(&id).unwrap()
        };
        assert_eq!(image.id, built.config_digest, "{transport}");
        let dirs = store.layer_dirs(&image).unwrap();
        assert_eq!(dirs.len(), 3);
        assert_eq!(
            fs::read(dirs[2].join("etc/hello")).unwrap(),
            b"hello from layer 3\n"
        );
    }
    // A damaged archive: one clear error, nothing kept.
    let root2 = work.path().join("root2");
    let good = fs::read(work.path().join("docker-archive.tar")).unwrap();
    let truncated = work.path().join("truncated.tar");
    fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let out = husk(&root2, &["load", "-i", truncated.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125), "{}", stdout(&out));
    assert!(stderr(&out).starts_with("husk: "), "{}", stderr(&out));
    assert_store_empty(&root2);
}

#[test]
fn concurrent_imports_on_one_root_all_land() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let children: Vec<_> = (0..4)
        .map(|i| {
            let tar = TarBuilder::new()
                .file(
                    &format!("file{i}"),
                    format!("content {i}").as_bytes(),
                    0o644,
                )
                .finish();
            let path = work.path().join(format!("{i}.tar"));
            fs::write(&path, tar).unwrap();
            Command::new(env!("CARGO_BIN_EXE_husk"))
                .arg("--root")
                .arg(&root)
                .args(["import", path.to_str().unwrap(), &format!("img{i}:v")])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let store = Store::open(&root).unwrap();
    for i in 0..4 {
        let image = store.lookup(&format!("img{i}:v")).unwrap();
        assert!(store.layer_dirs(&image).unwrap()[0]
            .join(format!("file{i}"))
            .exists());
    }
}

#[test]
fn load_a_legacy_docker_archive_with_a_symlinked_layer() {
    // The layout `docker save` wrote before Docker 25: <id>/layer.tar per layer, a repeated
    // layer stored once and symlinked, <config hex>.json, manifest.json and repositories.
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let shared = TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/shared", b"same in both\n", 0o644)
        .finish();
    let top = TarBuilder::new()
        .file("top", b"top layer\n", 0o600)
        .finish();
    let (shared_id, top_id) = (sha256(&shared), sha256(&top));
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2023-05-06T07:08:09Z",
        "config": {"Cmd": ["/top"]},
        "rootfs": {"type": "layers", "diff_ids": [shared_id, shared_id, top_id]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_hex = &sha256(&config)[7..];
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": ["legacy:1"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
    }]);
    let archive = TarBuilder::new()
        .dir("aaa/", 0o755)
        .file("aaa/VERSION", b"1.0", 0o644)
        .file("aaa/layer.tar", &shared, 0o644)
        .dir("bbb/", 0o755)
        .symlink("bbb/layer.tar", "../aaa/layer.tar")
        .dir("ccc/", 0o755)
        .file("ccc/layer.tar", &top, 0o644)
        .file(&format!("{config_hex}.json"), &config, 0o644)
        .file("repositories", br#"{"legacy":{"1":"ccc"}}"#, 0o644)
        .file(
            "manifest.json",
            &serde_json::to_vec(&manifest).unwrap(),
            0o644,
        )
        .finish();
    let path = work.path().join("legacy.tar.gz");
    fs::write(&path, compress(&archive, Comp::Gzip)).unwrap();
    let out = stdout(&ok(husk(&root, &["load", "-i", path.to_str().unwrap()])));
    assert_eq!(out.trim(), "Loaded image: legacy:1");
    let store = Store::open(&root).unwrap();
    let image = store.lookup("legacy:1").unwrap();
    assert_eq!(image.id, sha256(&config));
    let dirs = store.layer_dirs(&image).unwrap();
    assert_eq!(dirs.len(), 3);
    assert_eq!(dirs[0], dirs[1], "one directory per diff-id");
    assert_eq!(fs::read(dirs[2].join("top")).unwrap(), b"top layer\n");

    // A layer whose bytes do not match the config's diff-id: refused, nothing kept.
    let bad_config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [top_id]},
    }))
    .unwrap();
    let bad_manifest = serde_json::json!([{"Config": "c.json", "RepoTags": ["bad:1"], "Layers": ["aaa/layer.tar"]}]);
    let bad = TarBuilder::new()
        .file("aaa/layer.tar", &shared, 0o644)
        .file("c.json", &bad_config, 0o644)
        .file(
            "manifest.json",
            &serde_json::to_vec(&bad_manifest).unwrap(),
            0o644,
        )
        .finish();
    let bad_path = work.path().join("bad.tar");
    fs::write(&bad_path, bad).unwrap();
    let root2 = work.path().join("root2");
    let out = husk(&root2, &["load", "-i", bad_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("digest mismatch"), "{}", stderr(&out));
    assert_store_empty(&root2);
}
