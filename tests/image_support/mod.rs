//! Fixtures for the image tests: running husk, building OCI layouts and layer tarballs from
//! the host's busybox-static, a real `docker-registry` on a free loopback port, and a small
//! fault-injecting registry (std::net) for the cases a real registry will not produce.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub fn husk(root: &Path, args: &[&str]) -> Output {
    husk_env(root, args, &[])
}

pub fn husk_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_husk"));
    cmd.arg("--root").arg(root).args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running husk")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panic with husk's output unless it succeeded.
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "husk failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

// ---- layers -------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub fn compress(tar: &[u8], comp: Comp) -> Vec<u8> {
    match comp {
        Comp::None => tar.to_vec(),
        Comp::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(tar).unwrap();
            enc.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

pub fn media_type(comp: Comp) -> &'static str {
    match comp {
        Comp::None => "application/vnd.oci.image.layer.v1.tar",
        Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// A tar built entry by entry, with raw names so hostile paths can be written.
pub struct TarBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// Write the name bytes straight into the header (tar::Builder refuses `..`).
    fn raw_name(h: &mut tar::Header, name: &str) {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name = [0; 100];
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
    }

    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        Self::raw_name(&mut h, name);
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn file(self, name: &str, data: &[u8], mode: u32) -> Self {
        self.file_owned(name, data, mode, 0, 0)
    }

    pub fn file_owned(mut self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        Self::raw_name(&mut h, name);
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name(target).unwrap();
        Self::raw_name(&mut h, name);
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.linkname = [0; 100];
        gnu.linkname[..target.len()].copy_from_slice(target.as_bytes());
        Self::raw_name(&mut h, name);
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn device(mut self, name: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = Self::header(kind, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        Self::raw_name(&mut h, name);
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    /// A regular file carrying a PAX xattr record.
    pub fn file_with_xattr(mut self, name: &str, data: &[u8], key: &str, value: &[u8]) -> Self {
        let record_key = format!("SCHILY.xattr.{key}");
        self.builder
            .append_pax_extensions([(record_key.as_str(), value)])
            .unwrap();
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        Self::raw_name(&mut h, name);
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

pub fn busybox_bytes() -> Option<Vec<u8>> {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find(|p| Path::new(p).exists())?;
    std::fs::read(path).ok()
}

/// Three layers: busybox + dirs (gzip), applet links + /etc (plain), and a zstd layer that
/// adds a file and whites out /etc/motd from the layer below.
pub fn busybox_layers(busybox: &[u8]) -> Vec<(Vec<u8>, Comp)> {
    let base = TarBuilder::new()
        .dir("bin/", 0o755)
        .dir("tmp/", 0o1777)
        .dir("etc/", 0o755)
        .file("bin/busybox", busybox, 0o755)
        .finish();
    let mut links = TarBuilder::new();
    for applet in ["sh", "ls", "cat", "echo", "true", "id"] {
        links = links.symlink(&format!("bin/{applet}"), "busybox");
    }
    let links = links
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/motd", b"hello from layer 2\n", 0o644)
        .finish();
    let top = TarBuilder::new()
        .file("etc/hello", b"hello from layer 3\n", 0o644)
        .file("etc/.wh.motd", b"", 0o644)
        .finish();
    vec![(base, Comp::Gzip), (links, Comp::None), (top, Comp::Zstd)]
}

/// An image's content as blobs, ready for an OCI layout or a fake registry.
pub struct BuiltImage {
    pub blobs: HashMap<String, Vec<u8>>,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
}

pub fn build_image(layers: &[(Vec<u8>, Comp)], cmd: &[&str]) -> BuiltImage {
    let mut blobs = HashMap::new();
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_digests = Vec::new();
    for (tar, comp) in layers {
        let blob = compress(tar, *comp);
        let digest = sha256(&blob);
        diff_ids.push(sha256(tar));
        layer_descs.push(serde_json::json!({"mediaType": media_type(*comp), "digest": digest, "size": blob.len()}));
        layer_digests.push(digest.clone());
        blobs.insert(digest, blob);
    }
    let config = serde_json::json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = sha256(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layer_descs,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = sha256(&manifest);
    blobs.insert(config_digest.clone(), config);
    blobs.insert(manifest_digest.clone(), manifest.clone());
    BuiltImage {
        blobs,
        manifest,
        manifest_digest,
        config_digest,
        layer_digests,
        diff_ids,
    }
}

/// Write `image` as an OCI layout at `dir` tagged `tag` (what skopeo's `oci:DIR:TAG` reads).
pub fn write_oci_layout(dir: &Path, image: &BuiltImage, tag: &str) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for (digest, bytes) in &image.blobs {
        std::fs::write(dir.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

// ---- the real registry -----------------------------------------------------------------

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Debian's `docker-registry` serving a temp storage dir on a free loopback port; killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// `htpasswd`: Some((user, password)) turns on basic auth.
    pub fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let auth = match htpasswd {
            Some((user, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd");
                std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: husk-test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, port, dir }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Copy an OCI layout into the registry with skopeo (a client we did not write).
    pub fn skopeo_push(&self, layout: &Path, tag: &str, repo_tag: &str, creds: Option<&str>) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if let Some(creds) = creds {
            cmd.args(["--dest-creds", creds]);
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .output()
            .expect("running skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the fault-injecting registry ------------------------------------------------------

#[derive(Clone, Default)]
pub struct Faults {
    /// Require `Authorization: Bearer <token>`; the token endpoint hands it out for these
    /// basic credentials (or to anyone when None).
    pub bearer: Option<Option<(String, String)>>,
    /// Blob digest -> what to do when serving it.
    pub blob_faults: HashMap<String, BlobFault>,
    /// Answer this many manifest requests with 503 before serving them.
    pub manifest_503s: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Clone, Copy, Debug)]
pub enum BlobFault {
    /// Send the headers and half the bytes, then close (mid-layer failure).
    DieMidway,
    /// Answer 500 every time.
    ServerError,
    /// Serve bytes that do not hash to the digest (same length).
    Corrupt,
    /// Send half the bytes, then stall for a minute (for killing the client mid-pull).
    Stall,
    /// 307 to /storage/<digest> on the same host (behind the same auth), as registries
    /// with separate blob storage do.
    Redirect,
}

/// A registry in a thread serving manifests and blobs from memory; records every request.
pub struct FakeRegistry {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

pub const TOKEN: &str = "husk-test-token";

impl FakeRegistry {
    /// `manifests`: reference (tag or digest) -> (media type, bytes); `blobs`: digest -> bytes.
    pub fn start(
        repo: &str,
        manifests: HashMap<String, (String, Vec<u8>)>,
        blobs: HashMap<String, Vec<u8>>,
        faults: Faults,
    ) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new((repo.to_string(), manifests, blobs, faults, port));
        {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let state = state.clone();
                            let requests = requests.clone();
                            std::thread::spawn(move || {
                                let _ = serve(stream, &state, &requests);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        FakeRegistry {
            port,
            requests,
            stop,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

type State = (
    String,
    HashMap<String, (String, Vec<u8>)>,
    HashMap<String, Vec<u8>>,
    Faults,
    u16,
);

fn serve(stream: TcpStream, state: &State, requests: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let (repo, manifests, blobs, faults, port) = state;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        if let Some(len) = headers
            .get("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
        }
        requests.lock().unwrap().push(format!("{method} {target}"));
        let respond = |w: &mut TcpStream,
                       status: &str,
                       headers: &[(&str, String)],
                       body: &[u8]|
         -> std::io::Result<()> {
            let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            w.write_all(head.as_bytes())?;
            if method != "HEAD" {
                w.write_all(body)?;
            }
            w.flush()
        };
        let path = target.split('?').next().unwrap_or("");
        if path == "/token" {
            let allowed = match &faults.bearer {
                Some(Some((user, password))) => {
                    let expected = format!(
                        "Basic {}",
                        base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            format!("{user}:{password}")
                        )
                    );
                    headers.get("authorization") == Some(&expected)
                }
                _ => true,
            };
            if allowed {
                respond(
                    &mut writer,
                    "200 OK",
                    &[("Content-Type", "application/json".into())],
                    format!("{{\"token\":\"{TOKEN}\"}}").as_bytes(),
                )?;
            } else {
                respond(
                    &mut writer,
                    "401 Unauthorized",
                    &[],
                    b"{\"details\":\"bad credentials\"}",
                )?;
            }
            continue;
        }
        if faults.bearer.is_some()
            && headers.get("authorization") != Some(&format!("Bearer {TOKEN}"))
        {
            let challenge = format!(
                "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:{repo}:pull\""
            );
            respond(
                &mut writer,
                "401 Unauthorized",
                &[("WWW-Authenticate", challenge)],
                b"{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}",
            )?;
            continue;
        }
        if path == "/v2/" {
            respond(&mut writer, "200 OK", &[], b"{}")?;
            continue;
        }
        let manifest_prefix = format!("/v2/{repo}/manifests/");
        let blob_prefix = format!("/v2/{repo}/blobs/");
        if let Some(reference) = path.strip_prefix(&manifest_prefix) {
            let unavailable = faults
                .manifest_503s
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if unavailable {
                respond(&mut writer, "503 Service Unavailable", &[], b"")?;
                continue;
            }
            match manifests.get(reference) {
                Some((media_type, bytes)) => respond(
                    &mut writer,
                    "200 OK",
                    &[("Content-Type", media_type.clone()), ("Docker-Content-Digest", sha256(bytes))],
                    bytes,
                )?,
                None => respond(
                    &mut writer,
                    "404 Not Found",
                    &[("Content-Type", "application/json".into())],
                    b"{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\"}]}",
                )?,
            }
            continue;
        }
        if let Some(digest) = path.strip_prefix("/storage/") {
            match blobs.get(digest) {
                Some(bytes) => respond(&mut writer, "200 OK", &[], bytes)?,
                None => respond(&mut writer, "404 Not Found", &[], b"")?,
            }
            continue;
        }
        if let Some(digest) = path.strip_prefix(&blob_prefix) {
            let Some(bytes) = blobs.get(digest) else {
                respond(
                    &mut writer,
                    "404 Not Found",
                    &[],
                    b"{\"errors\":[{\"code\":\"BLOB_UNKNOWN\"}]}",
                )?;
                continue;
            };
            match faults.blob_faults.get(digest) {
                Some(BlobFault::ServerError) => respond(
                    &mut writer,
                    "500 Internal Server Error",
                    &[],
                    b"{\"errors\":[{\"code\":\"UNKNOWN\"}]}",
                )?,
                Some(BlobFault::DieMidway) => {
                    let head =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", bytes.len());
                    writer.write_all(head.as_bytes())?;
                    writer.write_all(&bytes[..bytes.len() / 2])?;
                    writer.flush()?;
                    return Ok(()); // drop the connection mid-body
                }
                Some(BlobFault::Stall) => {
                    let head =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", bytes.len());
                    writer.write_all(head.as_bytes())?;
                    writer.write_all(&bytes[..bytes.len() / 2])?;
                    writer.flush()?;
                    std::thread::sleep(Duration::from_secs(60));
                    return Ok(());
                }
                Some(BlobFault::Redirect) => {
                    let location = format!("http://127.0.0.1:{port}/storage/{digest}");
                    respond(
                        &mut writer,
                        "307 Temporary Redirect",
                        &[("Location", location)],
                        b"",
                    )?
                }
                Some(BlobFault::Corrupt) => {
                    let mut wrong = bytes.clone();
                    let last = wrong.len() - 1;
                    wrong[last] ^= 0xff;
                    respond(&mut writer, "200 OK", &[], &wrong)?
                }
                None => respond(&mut writer, "200 OK", &[], bytes)?,
            }
            continue;
        }
        respond(&mut writer, "404 Not Found", &[], b"{}")?;
    }
}

/// Every file under `dir` relative to it, for "nothing was left behind" checks.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Image-store entries that must be empty after a failed operation on a fresh store:
/// blobs, unpacked layers, temporaries, and index entries.
pub fn assert_store_empty(root: &Path) {
    let images = root.join("images");
    for sub in ["blobs/sha256", "layers", "layer-sizes", "tmp"] {
        let left = tree(&images.join(sub));
        assert!(left.is_empty(), "{sub} not empty after failure: {left:?}");
    }
    if let Ok(index) = std::fs::read(images.join("index.json")) {
        let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
        assert_eq!(
            index["manifests"].as_array().map_or(0, Vec::len),
            0,
            "index not empty: {index}"
        );
    }
}
