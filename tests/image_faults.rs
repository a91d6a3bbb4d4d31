//! Registry faults from a small fault-injecting registry (std::net on 127.0.0.1): the bearer
//! token flow, 5xx and dropped connections mid-layer, digest mismatches, truncated layers and
//! indexes without linux/amd64. After every failure nothing of the image is stored.

mod common;
mod image_support;

use std::collections::HashMap;

use husk::image::{ImageError, PullOptions, Store};
use image_support::*;

const REPO: &str = "test/busybox";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A small three-layer image (no busybox needed: these tests are about transport).
fn small_image() -> BuiltImage {
    let layers = vec![
        (
            TarBuilder::new()
                .dir("bin/", 0o755)
                .file("bin/tool", &vec![1u8; 300_000], 0o755)
                .finish(),
            Comp::Gzip,
        ),
        (
            TarBuilder::new()
                .dir("etc/", 0o755)
                .file("etc/os-release", b"ID=husk\n", 0o644)
                .finish(),
            Comp::None,
        ),
        (
            TarBuilder::new().file("etc/hello", b"hi\n", 0o644).finish(),
            Comp::Zstd,
        ),
    ];
    build_image(&layers, &["/bin/tool"])
}

fn manifests_for(image: &BuiltImage) -> HashMap<String, (String, Vec<u8>)> {
    let entry = (OCI_MANIFEST.to_string(), image.manifest.clone());
    HashMap::from([
        ("1.0".to_string(), entry.clone()),
        (image.manifest_digest.clone(), entry),
    ])
}

fn pull(
    root: &std::path::Path,
    registry: &FakeRegistry,
    tag: &str,
    config_dir: Option<&std::path::Path>,
) -> Result<husk::image::StoredImage, ImageError> {
    let store = Store::open(root).unwrap();
    let opts = PullOptions {
        quiet: true,
        docker_config_dir: config_dir.map(Into::into),
        ..Default::default()
    };
    husk::image::pull(&store, &format!("{}/{REPO}:{tag}", registry.host()), &opts)
}

#[test]
fn anonymous_bearer_token_flow() {
    let image = small_image();
    let faults = Faults {
        bearer: Some(None),
        ..Default::default()
    };
    let registry = FakeRegistry::start(REPO, manifests_for(&image), image.blobs.clone(), faults);
    let work = tempfile::tempdir().unwrap();
    let pulled = pull(work.path(), &registry, "1.0", None).unwrap();
    assert_eq!(pulled.id, image.config_digest);
    let requests = registry.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /token?")
            && r.contains("scope=repository%3Atest%2Fbusybox%3Apull")),
        "{requests:?}"
    );
    // One challenge, then the token is reused for every blob.
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.starts_with("GET /token"))
            .count(),
        1,
        "{requests:?}"
    );
}

#[test]
fn bearer_token_with_credentials_and_wrong_credentials() {
    let image = small_image();
    let faults = Faults {
        bearer: Some(Some(("bob".into(), "hunter2".into()))),
        ..Default::default()
    };
    let registry = FakeRegistry::start(REPO, manifests_for(&image), image.blobs.clone(), faults);
    let work = tempfile::tempdir().unwrap();
    let config_dir = work.path().join("docker");
    let creds = |password: &str| husk::image::auth::Credentials {
        username: "bob".into(),
        password: password.into(),
    };

    husk::image::auth::store(&config_dir, &registry.host(), &creds("wrong")).unwrap();
    let root = work.path().join("bad");
    let err = pull(&root, &registry, "1.0", Some(&config_dir)).unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized(_)), "{err}");
    assert!(
        err.to_string().contains("wrong username or password"),
        "{err}"
    );
    assert_store_empty(&root);

    husk::image::auth::store(&config_dir, &registry.host(), &creds("hunter2")).unwrap();
    let root = work.path().join("good");
    assert_eq!(
        pull(&root, &registry, "1.0", Some(&config_dir)).unwrap().id,
        image.config_digest
    );
}

#[test]
fn a_second_pull_fetches_only_the_manifest() {
    let image = small_image();
    let registry = FakeRegistry::start(
        REPO,
        manifests_for(&image),
        image.blobs.clone(),
        Faults::default(),
    );
    let work = tempfile::tempdir().unwrap();
    pull(work.path(), &registry, "1.0", None).unwrap();
    let first = registry.requests().len();
    pull(work.path(), &registry, "1.0", None).unwrap();
    let second: Vec<String> = registry.requests()[first..].to_vec();
    assert_eq!(second, vec![format!("GET /v2/{REPO}/manifests/1.0")]);
}

fn assert_fails_cleanly(fault: BlobFault, layer: usize, expect: &str) -> Vec<String> {
    let image = small_image();
    let target = image.layer_digests[layer].clone();
    let faults = Faults {
        blob_faults: HashMap::from([(target.clone(), fault)]),
        ..Default::default()
    };
    let registry = FakeRegistry::start(REPO, manifests_for(&image), image.blobs.clone(), faults);
    let work = tempfile::tempdir().unwrap();
    let err = pull(work.path(), &registry, "1.0", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains(expect), "{fault:?}: {err}");
    assert_store_empty(work.path());
    registry
        .requests()
        .into_iter()
        .filter(|r| r.contains(&target))
        .collect()
}

#[test]
fn server_error_in_the_middle_of_a_layer() {
    let tries = assert_fails_cleanly(BlobFault::ServerError, 1, "500");
    assert_eq!(tries.len(), 3, "5xx is retried, then reported: {tries:?}");
}

#[test]
fn connection_dropped_in_the_middle_of_a_layer() {
    let tries = assert_fails_cleanly(BlobFault::DieMidway, 0, "blob");
    assert_eq!(tries.len(), 3, "{tries:?}");
}

#[test]
fn blob_bytes_that_do_not_match_their_digest() {
    assert_fails_cleanly(BlobFault::Corrupt, 2, "digest mismatch");
}

#[test]
fn a_truncated_layer_with_a_matching_digest_fails_at_unpack() {
    let mut image = small_image();
    // The registry serves exactly what the manifest says; the layer itself is cut short.
    let layer = image.layer_digests[0].clone();
    let truncated = image.blobs[&layer][..image.blobs[&layer].len() / 3].to_vec();
    let manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    let mut manifest = manifest;
    let new_digest = sha256(&truncated);
    manifest["layers"][0]["digest"] = serde_json::json!(new_digest);
    manifest["layers"][0]["size"] = serde_json::json!(truncated.len());
    image.manifest = serde_json::to_vec(&manifest).unwrap();
    image.manifest_digest = sha256(&image.manifest);
    image.blobs.insert(new_digest, truncated);
    let registry = FakeRegistry::start(
        REPO,
        manifests_for(&image),
        image.blobs.clone(),
        Faults::default(),
    );
    let work = tempfile::tempdir().unwrap();
    let err = pull(work.path(), &registry, "1.0", None).unwrap_err();
    assert!(matches!(err, ImageError::BadArchive(_)), "{err}");
    assert_store_empty(work.path());
}

fn index(entries: &[(&str, &BuiltImage)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(arch, image)| {
            serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": image.manifest.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    )
    .unwrap()
}

#[test]
fn an_index_resolves_to_linux_amd64_or_fails_without_it() {
    let amd64 = small_image();
    let arm64 = build_image(
        &[(
            TarBuilder::new().file("arm", b"arm64", 0o644).finish(),
            Comp::Gzip,
        )],
        &["/arm"],
    );
    let mut blobs = amd64.blobs.clone();
    blobs.extend(arm64.blobs.clone());
    let multi = index(&[("arm64", &arm64), ("amd64", &amd64)]);
    let arm_only = index(&[("arm64", &arm64)]);
    let mut manifests = HashMap::new();
    manifests.insert("multi".to_string(), (OCI_INDEX.to_string(), multi.clone()));
    manifests.insert("armonly".to_string(), (OCI_INDEX.to_string(), arm_only));
    for image in [&amd64, &arm64] {
        manifests.insert(
            image.manifest_digest.clone(),
            (OCI_MANIFEST.to_string(), image.manifest.clone()),
        );
    }
    let registry = FakeRegistry::start(REPO, manifests, blobs, Faults::default());

    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("a");
    let err = pull(&root, &registry, "armonly", None).unwrap_err();
    assert!(matches!(err, ImageError::NoMatchingPlatform(_)), "{err}");
    assert!(err.to_string().contains("linux/amd64"));
    assert_store_empty(&root);

    let root = work.path().join("b");
    let image = pull(&root, &registry, "multi", None).unwrap();
    assert_eq!(image.id, amd64.config_digest);
    assert_eq!(image.manifest_digest, amd64.manifest_digest);
    // Docker records the index digest as the repo digest.
    assert!(
        image.repo_digests[0].ends_with(&sha256(&multi)),
        "{:?}",
        image.repo_digests
    );
}

#[test]
fn unknown_tag_from_the_fake_registry() {
    let image = small_image();
    let registry = FakeRegistry::start(
        REPO,
        manifests_for(&image),
        image.blobs.clone(),
        Faults::default(),
    );
    let work = tempfile::tempdir().unwrap();
    let err = pull(work.path(), &registry, "nope", None).unwrap_err();
    assert!(matches!(err, ImageError::ManifestUnknown(_)), "{err}");
    assert_store_empty(work.path());
}

#[test]
fn a_pull_killed_midway_leaves_no_image_and_the_next_pull_completes_it() {
    let image = small_image();
    let stalled = image.layer_digests[0].clone();
    let faults = Faults {
        blob_faults: HashMap::from([(stalled.clone(), BlobFault::Stall)]),
        ..Default::default()
    };
    let registry = FakeRegistry::start(REPO, manifests_for(&image), image.blobs.clone(), faults);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let name = format!("{}/{REPO}:1.0", registry.host());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_husk"))
        .arg("--root")
        .arg(&root)
        .args(["pull", "-q", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !registry.requests().iter().any(|r| r.contains(&stalled)) {
        assert!(
            std::time::Instant::now() < deadline,
            "husk never asked for the stalled layer"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();

    let store = Store::open(&root).unwrap();
    assert!(
        store.images().unwrap().is_empty(),
        "a killed pull left an image"
    );
    assert!(matches!(
        store.lookup(&name).unwrap_err(),
        ImageError::NotFoundLocally(_)
    ));

    // The same image from a registry that behaves: the pull completes.
    let healthy = FakeRegistry::start(
        REPO,
        manifests_for(&image),
        image.blobs.clone(),
        Faults::default(),
    );
    let healthy_name = format!("{}/{REPO}:1.0", healthy.host());
    let out = husk(&root, &["pull", "-q", &healthy_name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pulled = store.lookup(&healthy_name).unwrap();
    assert_eq!(pulled.id, image.config_digest);
    assert_eq!(store.layer_dirs(&pulled).unwrap().len(), 3);
    // What the killed process left in tmp goes with the next garbage collection.
    ok(husk(&root, &["image", "prune", "-f"]));
    assert!(tree(&root.join("images/tmp")).is_empty());
    assert!(store.lookup(&healthy_name).is_ok());
}

#[test]
fn docker_schema2_manifest_inside_a_docker_manifest_list() {
    const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    let image = small_image();
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["mediaType"] = serde_json::json!(DOCKER_MANIFEST);
    manifest["config"]["mediaType"] =
        serde_json::json!("application/vnd.docker.container.image.v1+json");
    for layer in manifest["layers"].as_array_mut().unwrap() {
        layer["mediaType"] = serde_json::json!("application/vnd.docker.image.rootfs.diff.tar.gzip");
    }
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": sha256(b"not here"), "size": 8,
             "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
            {"mediaType": DOCKER_MANIFEST, "digest": sha256(&manifest), "size": manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let manifests = HashMap::from([
        ("1.0".to_string(), (DOCKER_LIST.to_string(), list)),
        (
            sha256(&manifest),
            (DOCKER_MANIFEST.to_string(), manifest.clone()),
        ),
    ]);
    let registry = FakeRegistry::start(REPO, manifests, image.blobs.clone(), Faults::default());
    let work = tempfile::tempdir().unwrap();
    let pulled = pull(work.path(), &registry, "1.0", None).unwrap();
    assert_eq!(pulled.id, image.config_digest);
    assert_eq!(pulled.manifest_media_type, DOCKER_MANIFEST);
    // zstd and plain layers labelled gzip by the registry still unpack: compression is sniffed.
    let store = Store::open(work.path()).unwrap();
    let dirs = store.layer_dirs(&pulled).unwrap();
    assert_eq!(std::fs::read(dirs[2].join("etc/hello")).unwrap(), b"hi\n");
}

#[test]
fn credentials_from_a_docker_credential_helper() {
    let image = small_image();
    let faults = Faults {
        bearer: Some(Some(("carol".into(), "from-helper".into()))),
        ..Default::default()
    };
    let registry = FakeRegistry::start(REPO, manifests_for(&image), image.blobs.clone(), faults);
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-husktest");
    // Answers only for the registry it is asked about, as real helpers do.
    let script = format!(
        "#!/bin/sh\nread server\nif [ \"$1\" = get ] && [ \"$server\" = {} ]; then\n  echo '{{\"ServerURL\":\"x\",\"Username\":\"carol\",\"Secret\":\"from-helper\"}}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
        registry.host()
    );
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config_dir = work.path().join("docker");
    std::fs::create_dir(&config_dir).unwrap();
    let config = serde_json::json!({"credHelpers": {registry.host(): "husktest"}});
    std::fs::write(config_dir.join("config.json"), config.to_string()).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let root = work.path().join("root");
    let name = format!("{}/{REPO}:1.0", registry.host());
    let out = husk_env(
        &root,
        &["pull", "-q", &name],
        &[
            ("DOCKER_CONFIG", config_dir.to_str().unwrap()),
            ("PATH", &path),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        Store::open(&root).unwrap().lookup(&name).unwrap().id,
        image.config_digest
    );
}

#[test]
fn lookup_or_pull_uses_the_local_image_and_pulls_only_when_missing() {
    let image = small_image();
    let registry = FakeRegistry::start(
        REPO,
        manifests_for(&image),
        image.blobs.clone(),
        Faults::default(),
    );
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path()).unwrap();
    let name = format!("{}/{REPO}:1.0", registry.host());
    let opts = PullOptions {
        quiet: true,
        ..Default::default()
    };
    let first = husk::image::lookup_or_pull(&store, &name, &opts).unwrap();
    assert_eq!(first.id, image.config_digest);
    let seen = registry.requests().len();
    let second = husk::image::lookup_or_pull(&store, &name, &opts).unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(
        registry.requests().len(),
        seen,
        "a local image went to the registry"
    );
    let missing = format!("{}/{REPO}:missing", registry.host());
    assert!(matches!(
        husk::image::lookup_or_pull(&store, &missing, &opts).unwrap_err(),
        ImageError::ManifestUnknown(_)
    ));
}

#[test]
fn concurrent_pulls_of_one_image_on_one_root() {
    let image = small_image();
    let registry = FakeRegistry::start(
        REPO,
        manifests_for(&image),
        image.blobs.clone(),
        Faults::default(),
    );
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let name = format!("{}/{REPO}:1.0", registry.host());
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_husk"))
                .arg("--root")
                .arg(&root)
                .args(["pull", "-q", &name])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let store = Store::open(&root).unwrap();
    assert_eq!(store.images().unwrap().len(), 1);
    let pulled = store.lookup(&name).unwrap();
    assert_eq!(store.layer_dirs(&pulled).unwrap().len(), 3);
    assert_eq!(
        tree(&root.join("images/layers"))
            .iter()
            .filter(|p| p.components().count() == 1)
            .count(),
        3
    );
}

#[test]
fn blob_redirects_on_the_same_host_keep_the_token() {
    let image = small_image();
    let blob_faults = image
        .layer_digests
        .iter()
        .map(|d| (d.clone(), BlobFault::Redirect))
        .collect();
    let faults = Faults {
        bearer: Some(None),
        blob_faults,
        ..Default::default()
    };
    let registry = FakeRegistry::start(REPO, manifests_for(&image), image.blobs.clone(), faults);
    let work = tempfile::tempdir().unwrap();
    let pulled = pull(work.path(), &registry, "1.0", None).unwrap();
    assert_eq!(pulled.id, image.config_digest);
    let storage_gets = registry
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /storage/"))
        .count();
    assert_eq!(storage_gets, 3, "{:?}", registry.requests());
}

#[test]
fn a_manifest_503_is_retried_then_reported() {
    let image = small_image();
    let faults = Faults {
        manifest_503s: std::sync::Arc::new(2.into()),
        ..Default::default()
    };
    let registry = FakeRegistry::start(REPO, manifests_for(&image), image.blobs.clone(), faults);
    let work = tempfile::tempdir().unwrap();
    assert_eq!(
        pull(&work.path().join("a"), &registry, "1.0", None)
            .unwrap()
            .id,
        image.config_digest
    );

    let faults = Faults {
        manifest_503s: std::sync::Arc::new(100.into()),
        ..Default::default()
    };
    let registry = FakeRegistry::start(REPO, manifests_for(&image), image.blobs.clone(), faults);
    let err = pull(&work.path().join("b"), &registry, "1.0", None).unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(registry.requests().len(), 3, "{:?}", registry.requests());
    assert_store_empty(&work.path().join("b"));
}
