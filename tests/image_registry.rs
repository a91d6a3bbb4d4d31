//! Pull, push, login and logout against Debian's real `docker-registry` (the Distribution
//! registry) on a free loopback port, with images put there by skopeo.

mod common;
mod image_support;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::process::Command;

use husk::image::Store;
use image_support::*;

macro_rules! need_tools {
    () => {
        if !have("docker-registry") || !have("skopeo") {
            skip!("docker-registry and skopeo are needed (apt-get install docker-registry skopeo)");
        }
        if busybox_bytes().is_none() {
            skip!("busybox-static is not installed");
        }
    };
}

fn blob_gets(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
        .count()
}

#[test]
fn pull_a_multi_layer_image_then_a_second_pull_fetches_only_the_manifest() {
    need_tools!();
    let registry = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let built = build_image(&busybox_layers(&busybox_bytes().unwrap()), &["sh"]);
    write_oci_layout(&work.path().join("layout"), &built, "1.0");
    registry.skopeo_push(&work.path().join("layout"), "1.0", "busybox:1.0", None);
    let root = work.path().join("root");
    let name = format!("{}/busybox:1.0", registry.host());

    let before = blob_gets(&registry.log());
    let out = stdout(&ok(husk(&root, &["pull", &name])));
    assert!(
        out.contains("Pull complete") && out.contains("Downloaded newer image"),
        "{out}"
    );
    assert!(out.trim_end().ends_with(&name), "{out}");
    assert_eq!(blob_gets(&registry.log()) - before, 4, "config + 3 layers");

    let store = Store::open(&root).unwrap();
    let image = store.lookup(&name).unwrap();
    assert_eq!(image.id, built.config_digest);
    assert_eq!(image.repo_tags, vec![name.clone()]);
    assert_eq!(image.repo_digests.len(), 1);
    let dirs = store.layer_dirs(&image).unwrap();
    assert_eq!(dirs.len(), 3);
    assert_eq!(
        fs::read(dirs[0].join("bin/busybox")).unwrap(),
        busybox_bytes().unwrap()
    );
    assert_eq!(
        fs::read_link(dirs[1].join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    assert_eq!(
        fs::read(dirs[2].join("etc/hello")).unwrap(),
        b"hello from layer 3\n"
    );
    if common::is_root() {
        assert!(fs::symlink_metadata(dirs[2].join("etc/motd"))
            .unwrap()
            .file_type()
            .is_char_device());
    }

    let before = blob_gets(&registry.log());
    let out = stdout(&ok(husk(&root, &["pull", &name])));
    assert!(out.contains("Image is up to date"), "{out}");
    assert_eq!(
        blob_gets(&registry.log()),
        before,
        "second pull fetched blobs"
    );

    // By digest, quiet: prints only the name.
    let digest = image.repo_digests[0]
        .rsplit('@')
        .next()
        .unwrap()
        .to_string();
    let by_digest = format!("{}/busybox@{digest}", registry.host());
    let out = stdout(&ok(husk(&root, &["pull", "-q", &by_digest])));
    assert_eq!(out.trim(), by_digest);
    assert_eq!(store.lookup(&by_digest).unwrap().id, image.id);
}

#[test]
fn unknown_repository_or_tag_and_a_registry_that_is_down() {
    need_tools!();
    let registry = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    for name in [
        format!("{}/nosuchrepo:latest", registry.host()),
        format!("{}/busybox:nosuchtag", registry.host()),
    ] {
        let out = husk(&root, &["pull", &name]);
        assert_eq!(out.status.code(), Some(125));
        let err = stderr(&out);
        assert!(err.contains("not found: manifest unknown"), "{name}: {err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("husk:")).count(), 1);
        assert_store_empty(&root);
    }
    let down = format!("127.0.0.1:{}/busybox:1.0", free_port());
    let out = husk(&root, &["pull", &down]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("cannot reach registry"),
        "{}",
        stderr(&out)
    );
    assert_store_empty(&root);
}

#[test]
fn htpasswd_registry_login_pull_wrong_password_and_logout() {
    need_tools!();
    if !have("htpasswd") {
        skip!("htpasswd is not installed (apt-get install apache2-utils)");
    }
    let registry = Registry::start(Some(("alice", "s3cret")));
    let work = tempfile::tempdir().unwrap();
    let built = build_image(&busybox_layers(&busybox_bytes().unwrap()), &["sh"]);
    write_oci_layout(&work.path().join("layout"), &built, "1.0");
    registry.skopeo_push(
        &work.path().join("layout"),
        "1.0",
        "private/busybox:1.0",
        Some("alice:s3cret"),
    );
    let root = work.path().join("root");
    let config_dir = work.path().join("docker-config");
    let env = [("DOCKER_CONFIG", config_dir.to_str().unwrap())];
    let name = format!("{}/private/busybox:1.0", registry.host());

    let out = husk_env(&root, &["pull", &name], &env);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("pull access denied"),
        "{}",
        stderr(&out)
    );
    assert_store_empty(&root);

    let out = husk_env(
        &root,
        &["login", &registry.host(), "-u", "alice", "-p", "wrong"],
        &env,
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));
    assert!(
        !config_dir.join("config.json").exists(),
        "wrong credentials were saved"
    );

    let out = ok(husk_env(
        &root,
        &["login", &registry.host(), "-u", "alice", "-p", "s3cret"],
        &env,
    ));
    assert!(stdout(&out).contains("Login Succeeded"));
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(config_dir.join("config.json")).unwrap()).unwrap();
    assert!(
        config["auths"][registry.host()]["auth"].is_string(),
        "{config}"
    );

    ok(husk_env(&root, &["pull", &name], &env));
    assert_eq!(
        Store::open(&root).unwrap().lookup(&name).unwrap().id,
        built.config_digest
    );

    // Stored credentials that are wrong: a 401 that says so.
    let wrong = serde_json::json!({"auths": {registry.host(): {"auth": "YWxpY2U6bm9wZQ=="}}});
    fs::write(config_dir.join("config.json"), wrong.to_string()).unwrap();
    let root2 = work.path().join("root2");
    let out = husk_env(&root2, &["pull", &name], &env);
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));
    assert_store_empty(&root2);

    let out = ok(husk_env(&root, &["logout", &registry.host()], &env));
    assert!(stdout(&out).contains("Removing login credentials"));
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(config_dir.join("config.json")).unwrap()).unwrap();
    assert!(config["auths"].get(registry.host()).is_none());
}

#[test]
fn push_an_imported_image_and_read_it_back_with_skopeo_and_husk() {
    need_tools!();
    let registry = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let rootfs = work.path().join("rootfs");
    common::make_busybox_rootfs(&rootfs).unwrap();
    let tarball = work.path().join("rootfs.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-czf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let id = stdout(&ok(husk(
        &root,
        &[
            "import",
            tarball.to_str().unwrap(),
            "local:v1",
            "-c",
            "CMD [\"sh\"]",
        ],
    )))
    .trim()
    .to_string();
    let name = format!("{}/pushed/busybox:v1", registry.host());
    ok(husk(&root, &["tag", "local:v1", &name]));
    let out = stdout(&ok(husk(&root, &["push", &name])));
    assert!(
        out.contains("Pushed") && out.contains("v1: digest: sha256:"),
        "{out}"
    );

    let inspect = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "inspect",
            "--tls-verify=false",
            "--config",
            &format!("docker://{name}"),
        ])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));

    let out = stdout(&ok(husk(&root, &["push", &name])));
    assert!(out.contains("Layer already exists"), "{out}");

    let root2 = work.path().join("root2");
    ok(husk(&root2, &["pull", &name]));
    assert_eq!(Store::open(&root2).unwrap().lookup(&name).unwrap().id, id);
}
