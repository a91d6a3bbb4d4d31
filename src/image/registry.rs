//! A blocking client for the OCI distribution API (ureq): pull and push with Docker's auth
//! flow (anonymous or basic credentials, bearer tokens from the WWW-Authenticate challenge)
//! and transport rule (plain HTTP only for loopback or explicitly insecure registries).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::archive::select_linux_amd64;
use super::auth::{self, Credentials};
use super::reference::Reference;
use super::store::{
    self, Fresh, Index, Manifest, Store, StoredImage, MAX_METADATA_BLOB, MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use super::{digest, ImageError};

const MEDIA_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";
/// Layers fetched (and unpacked) at once, as Docker's default.
const PARALLEL_LAYERS: usize = 3;
const ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Each step of the pull to this sink instead of lines or bars (the Engine API's
    /// progress stream).
    pub events: Option<PullEvents>,
    /// Print nothing (`husk pull -q` prints the image name itself).
    pub quiet: bool,
    /// Registries (host[:port]) to reach over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Where config.json with credentials lives (default $DOCKER_CONFIG or ~/.docker).
    pub docker_config_dir: Option<PathBuf>,
    /// Progress on stderr instead of stdout (as `husk run` does when it pulls).
    pub progress_to_stderr: bool,
}

/// One step of a pull, as Docker's progress stream tells it: `id` is the tag (for "Pulling
/// from") or a layer's short digest; `progress` is (bytes so far, size) while a layer
/// downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullEvent {
    pub id: Option<String>,
    pub status: String,
    pub progress: Option<(u64, u64)>,
}

/// Where a pull's events go; called from the pull's layer threads.
#[derive(Clone)]
pub struct PullEvents(pub Arc<dyn Fn(PullEvent) + Send + Sync>);

impl std::fmt::Debug for PullEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullEvents")
    }
}

/// How often a layer's download is told, at most: Docker's CLI redraws a bar per message.
const DOWNLOAD_EVENT_BYTES: u64 = 512 * 1024;

// ---- client ---------------------------------------------------------------------------

struct Client {
    agent: ureq::Agent,
    host: String,
    base: String,
    repo: String,
    scope: String,
    credentials: Option<Credentials>,
    authorization: Mutex<Option<String>>,
}

enum Body<'a> {
    Empty,
    Bytes(&'a [u8], &'a str),
    File(&'a std::path::Path, u64),
}

impl Client {
    fn new(reference: &Reference, opts: &PullOptions, push: bool) -> Result<Client, ImageError> {
        let host = reference.registry_host().to_string();
        let scheme = if is_insecure(&host, &opts.insecure_registries) {
            "http"
        } else {
            "https"
        };
        let dir = auth::config_dir(opts.docker_config_dir.as_deref());
        let credentials = auth::lookup(&dir, &host)?;
        Ok(Client {
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(15))
                .timeout_read(Duration::from_secs(60))
                .user_agent(concat!("husk/", env!("CARGO_PKG_VERSION")))
                // Registries redirect blob downloads to storage/CDN hosts that reject a
                // foreign Authorization header; keep it only for the registry itself.
                .redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost)
                .build(),
            base: format!("{scheme}://{host}"),
            host,
            repo: reference.path.clone(),
            scope: format!(
                "repository:{}:{}",
                reference.path,
                if push { "pull,push" } else { "pull" }
            ),
            credentials,
            authorization: Mutex::new(None),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repo)
    }

    /// Send a request, answering one 401 challenge by authenticating and retrying.
    fn send(
        &self,
        method: &str,
        url: &str,
        accept: &[&str],
        body: &Body<'_>,
    ) -> Result<ureq::Response, ImageError> {
        let mut challenged = false;
        loop {
            let mut request = self.agent.request(method, url);
            if !accept.is_empty() {
                request = request.set("Accept", &accept.join(", "));
            }
            if let Some(authorization) = self
                .authorization
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                request = request.set("Authorization", &authorization);
            }
            let result = match body {
                Body::Empty => request.call(),
                Body::Bytes(bytes, content_type) => {
                    request.set("Content-Type", content_type).send_bytes(bytes)
                }
                Body::File(path, size) => {
                    let file = File::open(path).map_err(ImageError::io("reading", *path))?;
                    request
                        .set("Content-Type", "application/octet-stream")
                        .set("Content-Length", &size.to_string())
                        .send(file)
                }
            };
            match result {
                Ok(response) => return Ok(response),
                Err(ureq::Error::Status(401, response)) if !challenged => {
                    challenged = true;
                    let challenge = response
                        .header("WWW-Authenticate")
                        .unwrap_or("")
                        .to_string();
                    self.authenticate(&challenge)?;
                }
                Err(ureq::Error::Status(401, _)) => {
                    return Err(if self.credentials.is_some() {
                        ImageError::Unauthorized(self.host.clone())
                    } else {
                        ImageError::AccessDenied(format!("{}/{}", self.host, self.repo))
                    })
                }
                Err(ureq::Error::Status(code, response)) => {
                    return Err(ImageError::Registry {
                        registry: self.host.clone(),
                        reason: status_reason(code, response),
                    })
                }
                Err(ureq::Error::Transport(transport)) => {
                    return Err(ImageError::RegistryUnreachable {
                        registry: self.host.clone(),
                        reason: transport.to_string(),
                    })
                }
            }
        }
    }

    fn authenticate(&self, challenge: &str) -> Result<(), ImageError> {
        let (scheme, params) = parse_challenge(challenge);
        let authorization = match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let creds = self.credentials.as_ref().ok_or_else(|| {
                    ImageError::AccessDenied(format!("{}/{}", self.host, self.repo))
                })?;
                format!("Basic {}", basic(creds))
            }
            "bearer" => {
                let realm = params
                    .iter()
                    .find(|(k, _)| k == "realm")
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| ImageError::Registry {
                        registry: self.host.clone(),
                        reason: "bearer challenge without realm".into(),
                    })?;
                let mut request = self.agent.get(&realm);
                if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
                    request = request.query("service", service);
                }
                if !self.repo.is_empty() {
                    request = request.query("scope", &self.scope);
                }
                if let Some(creds) = &self.credentials {
                    request = request.set("Authorization", &format!("Basic {}", basic(creds)));
                }
                let response = match request.call() {
                    Ok(r) => r,
                    Err(ureq::Error::Status(401 | 403, _)) => {
                        return Err(ImageError::Unauthorized(self.host.clone()))
                    }
                    Err(ureq::Error::Status(code, r)) => {
                        return Err(ImageError::Registry {
                            registry: self.host.clone(),
                            reason: format!("token server: {}", status_reason(code, r)),
                        })
                    }
                    Err(ureq::Error::Transport(t)) => {
                        return Err(ImageError::RegistryUnreachable {
                            registry: realm.clone(),
                            reason: t.to_string(),
                        })
                    }
                };
                let body =
                    read_limited(response.into_reader(), MAX_METADATA_BLOB).map_err(|e| {
                        ImageError::Registry {
                            registry: self.host.clone(),
                            reason: format!("token: {e}"),
                        }
                    })?;
                let value: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| ImageError::Registry {
                        registry: self.host.clone(),
                        reason: format!("token response: {e}"),
                    })?;
                let token = value
                    .get("token")
                    .or_else(|| value.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| ImageError::Registry {
                        registry: self.host.clone(),
                        reason: "token response without a token".into(),
                    })?;
                format!("Bearer {token}")
            }
            _ => {
                return Err(ImageError::Registry {
                    registry: self.host.clone(),
                    reason: format!("unsupported authentication challenge {challenge:?}"),
                })
            }
        };
        *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(authorization);
        Ok(())
    }

    /// Fetch a manifest: (bytes, media type, digest). Verified when `reference` is a digest.
    fn manifest(
        &self,
        reference: &str,
        shown: &str,
    ) -> Result<(Vec<u8>, String, String), ImageError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.manifest_once(reference, shown) {
                Err(ImageError::Registry { reason, .. })
                    if attempt < ATTEMPTS && reason.starts_with('5') =>
                {
                    std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                }
                other => return other,
            }
        }
    }

    fn manifest_once(
        &self,
        reference: &str,
        shown: &str,
    ) -> Result<(Vec<u8>, String, String), ImageError> {
        let accept = [
            MEDIA_OCI_INDEX,
            MEDIA_DOCKER_LIST,
            MEDIA_OCI_MANIFEST,
            MEDIA_DOCKER_MANIFEST,
        ];
        let response = self
            .send(
                "GET",
                &self.url(&format!("manifests/{reference}")),
                &accept,
                &Body::Empty,
            )
            .map_err(|e| match e {
                ImageError::Registry { ref reason, .. } if reason.starts_with("404") => {
                    ImageError::ManifestUnknown(shown.to_string())
                }
                other => other,
            })?;
        let content_type = response.content_type().to_string();
        let bytes = read_limited(response.into_reader(), MAX_METADATA_BLOB).map_err(|e| {
            ImageError::Registry {
                registry: self.host.clone(),
                reason: format!("manifest {shown}: {e}"),
            }
        })?;
        let digest = digest::of_bytes(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest {shown}"),
                expected: reference.into(),
                actual: digest,
            });
        }
        let media_type = match content_type.as_str() {
            "" | "application/json" | "text/plain" => {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| {
                        v.get("mediaType")
                            .and_then(|m| m.as_str())
                            .map(str::to_string)
                    })
                    .unwrap_or_default()
            }
            other => other.to_string(),
        };
        Ok((bytes, media_type, digest))
    }

    /// Download a blob into the store, verifying size and digest; retried on 5xx, transport
    /// errors and truncation.
    fn fetch_blob(
        &self,
        store: &Store,
        digest: &str,
        size: u64,
        progress: &dyn Fn(u64),
    ) -> Result<(), ImageError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .send(
                    "GET",
                    &self.url(&format!("blobs/{digest}")),
                    &[],
                    &Body::Empty,
                )
                .and_then(|response| {
                    let reader = ProgressReader {
                        inner: response.into_reader(),
                        progress,
                    };
                    store
                        .write_blob(reader, Some((digest, size)), &format!("blob {digest}"))
                        .map(|_| ())
                });
            match result {
                Ok(()) => return Ok(()),
                Err(e) if attempt < ATTEMPTS && is_retryable(&e) => {
                    std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_retryable(err: &ImageError) -> bool {
    match err {
        ImageError::Registry { reason, .. } => reason.starts_with('5'),
        ImageError::RegistryUnreachable { .. } | ImageError::BadArchive(_) => true,
        _ => false,
    }
}

struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a dyn Fn(u64),
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

fn basic(creds: &Credentials) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", creds.username, creds.password))
}

fn read_limited(reader: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "response too large",
        ));
    }
    Ok(bytes)
}

/// "404 Not Found: MANIFEST_UNKNOWN manifest unknown" from a status and the registry's
/// error body (bounded).
fn status_reason(code: u16, response: ureq::Response) -> String {
    let text = response.status_text().to_string();
    let body = read_limited(response.into_reader(), 64 * 1024).unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let errors = v.get("errors")?.as_array()?.clone();
            Some(
                errors
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e.get("code").and_then(|c| c.as_str()).unwrap_or(""),
                            e.get("message").and_then(|m| m.as_str()).unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
        .unwrap_or_default();
    if detail.is_empty() {
        format!("{code} {text}")
    } else {
        format!("{code} {text}: {detail}")
    }
}

/// Docker's rule: plain HTTP for localhost, 127.0.0.0/8 and ::1, or when configured.
pub fn is_insecure(host: &str, insecure: &[String]) -> bool {
    if insecure
        .iter()
        .any(|i| i == host || host.split(':').next() == Some(i.as_str()))
    {
        return true;
    }
    let name = if host.starts_with('[') {
        host.split(']')
            .next()
            .unwrap_or(host)
            .trim_start_matches('[')
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `Bearer realm="..",service="..",scope="repository:x:pull,push"` -> (scheme, params).
pub fn parse_challenge(header: &str) -> (String, Vec<(String, String)>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.push((key.to_ascii_lowercase(), value.trim().to_string()));
    }
    (scheme.to_string(), params)
}

// ---- progress -------------------------------------------------------------------------

/// Per-layer bars on a terminal, Docker-like plain lines otherwise, nothing when quiet, or
/// events for a caller that shows them itself.
struct Progress {
    quiet: bool,
    to_stderr: bool,
    bars: Option<MultiProgress>,
    events: Option<PullEvents>,
    lines: Mutex<()>,
}

impl Progress {
    fn silent() -> Progress {
        Progress {
            quiet: true,
            to_stderr: false,
            bars: None,
            events: None,
            lines: Mutex::new(()),
        }
    }

    fn new(opts: &PullOptions) -> Progress {
        let terminal = if opts.progress_to_stderr {
            io::stderr().is_terminal()
        } else {
            io::stdout().is_terminal()
        };
        let bars = (!opts.quiet && terminal && opts.events.is_none()).then(|| {
            MultiProgress::with_draw_target(if opts.progress_to_stderr {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::stdout()
            })
        });
        Progress {
            quiet: opts.quiet,
            to_stderr: opts.progress_to_stderr,
            bars,
            events: opts.events.clone(),
            lines: Mutex::new(()),
        }
    }

    /// A step about the whole pull; `id` (a tag) leads the line as "id: status".
    fn status(&self, id: Option<&str>, status: &str) {
        if let Some(events) = &self.events {
            (events.0)(PullEvent {
                id: id.map(String::from),
                status: status.to_string(),
                progress: None,
            });
            return;
        }
        match id {
            Some(id) => self.line(&format!("{id}: {status}")),
            None => self.line(status),
        }
    }

    /// What only husk's own CLI prints (the Docker CLI prints it itself after a pull).
    fn line(&self, text: &str) {
        if self.quiet || self.events.is_some() {
            return;
        }
        if let Some(bars) = &self.bars {
            let _ = bars.println(text);
            return;
        }
        let _guard = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if self.to_stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    fn layer(&self, digest: &str, size: u64) -> Option<ProgressBar> {
        let bars = self.bars.as_ref()?;
        let bar = bars.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix}: {msg:16} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(short(digest).to_string());
        bar.set_message("Downloading");
        Some(bar)
    }

    fn layer_status(&self, bar: Option<&ProgressBar>, digest: &str, status: &'static str) {
        match bar {
            Some(bar) => {
                if status == "Pull complete" || status == "Already exists" {
                    bar.finish_with_message(status);
                } else {
                    bar.set_message(status);
                }
            }
            None => self.status(Some(short(digest)), status),
        }
    }

    /// `n` more bytes of a layer's download: its bar moves, or an event goes out when another
    /// DOWNLOAD_EVENT_BYTES (or the whole layer) has come.
    fn downloaded(
        &self,
        bar: Option<&ProgressBar>,
        digest: &str,
        so_far: &AtomicU64,
        n: u64,
        size: u64,
    ) {
        if let Some(bar) = bar {
            bar.inc(n);
        }
        let Some(events) = &self.events else { return };
        let before = so_far.fetch_add(n, Ordering::Relaxed);
        let now = before + n;
        if now / DOWNLOAD_EVENT_BYTES != before / DOWNLOAD_EVENT_BYTES
            || (now >= size && before < size)
        {
            (events.0)(PullEvent {
                id: Some(short(digest).to_string()),
                status: "Downloading".into(),
                progress: Some((now, size)),
            });
        }
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

// ---- pull -----------------------------------------------------------------------------

/// Pull `reference` into the store (linux/amd64), unpacking its layers. Blobs already present
/// are not fetched again. On failure nothing of this pull stays in the store.
pub fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Result<StoredImage, ImageError> {
    let parsed = Reference::parse(reference)?;
    let progress = Progress::new(opts);
    let _writer = store.writer_lock()?;
    let client = Client::new(&parsed, opts, false)?;
    if parsed.tag.is_none() && parsed.digest.is_none() {
        progress.status(None, "Using default tag: latest");
    }
    // Docker names the repository path here ("library/busybox"), not the registry.
    progress.status(
        Some(parsed.manifest_reference()),
        &format!("Pulling from {}", parsed.path),
    );
    let shown = parsed.to_string();
    let (mut bytes, mut media_type, top_digest) =
        client.manifest(parsed.manifest_reference(), &shown)?;
    if media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST {
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::InvalidImage(format!("index of {shown}: {e}")))?;
        let chosen = select_linux_amd64(&index.manifests)
            .ok_or_else(|| ImageError::NoMatchingPlatform(shown.clone()))?;
        let (b, m, _) = client.manifest(&chosen.digest, &shown)?;
        bytes = b;
        media_type = if m.is_empty() {
            chosen.media_type.clone()
        } else {
            m
        };
    }
    if media_type.starts_with(MEDIA_DOCKER_SCHEMA1) {
        return Err(ImageError::InvalidImage(format!(
            "{shown} uses the deprecated Docker schema 1 manifest, which husk does not support"
        )));
    }
    if media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST {
        return Err(ImageError::InvalidImage(format!(
            "{shown}: nested image indexes are not supported"
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::InvalidImage(format!("manifest of {shown}: {e}")))?;
    let manifest_digest = digest::of_bytes(&bytes);
    let up_to_date = store.has_blob(&manifest_digest, bytes.len() as u64)
        && store
            .lookup(&parsed.to_string())
            .is_ok_and(|i| i.manifest_digest == manifest_digest);

    // An image already here is only checked: Docker names no layer for it.
    let silent = Progress::silent();
    let layer_progress = if up_to_date { &silent } else { &progress };
    let mut fresh = Fresh::default();
    let result =
        pull_content(store, &client, &manifest, layer_progress, &mut fresh).and_then(|()| {
            let manifest_digest = store.write_blob_bytes(&bytes)?;
            let media_type = if media_type.is_empty() {
                MEDIA_OCI_MANIFEST.to_string()
            } else {
                media_type.clone()
            };
            let tag = parsed
                .digest
                .is_none()
                .then(|| parsed.with_tag(parsed.tag_or_default()));
            let repo_digest = Reference {
                digest: Some(top_digest.clone()),
                tag: None,
                ..parsed.clone()
            };
            store.add_manifest(
                &manifest_digest,
                &media_type,
                bytes.len() as u64,
                tag.as_ref(),
                Some(&repo_digest),
            )?;
            store.image_by_manifest(&manifest_digest)
        });
    match result {
        Ok(image) => {
            progress.status(None, &format!("Digest: {top_digest}"));
            let status = if up_to_date {
                "Image is up to date for"
            } else {
                "Downloaded newer image for"
            };
            progress.status(None, &format!("Status: {status} {shown}"));
            progress.line(&if parsed.digest.is_some() {
                format!("{}@{top_digest}", parsed.full_name())
            } else {
                parsed.full_tagged()
            });
            Ok(image)
        }
        Err(e) => {
            store.discard(&fresh);
            Err(e)
        }
    }
}

/// What `husk run` and `create` do with an image argument: use the local image, or say it is
/// missing (on stderr, as Docker) and pull it with progress on stderr.
pub fn lookup_or_pull(
    store: &Store,
    reference: &str,
    opts: &PullOptions,
) -> Result<StoredImage, ImageError> {
    match store.lookup(reference) {
        Err(ImageError::NotFoundLocally(name)) => {
            eprintln!("Unable to find image '{name}' locally");
            let opts = PullOptions {
                progress_to_stderr: true,
                ..opts.clone()
            };
            pull(store, reference, &opts)
        }
        other => other,
    }
}

/// Config and layers: fetch what is missing (verified), unpack each layer as it arrives.
fn pull_content(
    store: &Store,
    client: &Client,
    manifest: &Manifest,
    progress: &Progress,
    fresh: &mut Fresh,
) -> Result<(), ImageError> {
    let config = &manifest.config;
    if config.size > MAX_METADATA_BLOB {
        return Err(ImageError::InvalidImage(format!(
            "config {} is implausibly large",
            config.digest
        )));
    }
    if !store.has_blob(&config.digest, config.size) {
        client.fetch_blob(store, &config.digest, config.size, &|_| {})?;
        fresh.blobs.push(config.digest.clone());
    }
    let config_bytes = store.read_blob_verified(&config.digest)?;
    let image_config = store::parse_config(&config_bytes).map_err(ImageError::InvalidImage)?;
    let diff_ids = image_config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::InvalidImage(format!(
            "manifest has {} layers but its config lists {} diff_ids",
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    let layers: Vec<store::LayerDescriptor> = manifest
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(l, d)| store::LayerDescriptor {
            digest: l.digest.clone(),
            diff_id: d.clone(),
            media_type: l.media_type.clone(),
            size: l.size,
        })
        .collect();
    for layer in &layers {
        digest::hex_of(&layer.digest)?;
        digest::hex_of(&layer.diff_id)?;
    }
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<ImageError>> = Mutex::new(None);
    let fetched: Mutex<Fresh> = Mutex::new(Fresh::default());
    let seen: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_LAYERS.min(layers.len()) {
            scope.spawn(|| loop {
                if first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some()
                {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(layer) = layers.get(i) else { return };
                // The same blob twice in one manifest is fetched once.
                if !seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(layer.digest.clone())
                {
                    continue;
                }
                let result = (|| {
                    let present = store.has_blob(&layer.digest, layer.size);
                    if present && store.layer_dir(&layer.diff_id)?.is_dir() {
                        progress.layer_status(None, &layer.digest, "Already exists");
                        return Ok(());
                    }
                    let bar = progress.layer(&layer.digest, layer.size);
                    if !present {
                        if bar.is_none() {
                            progress.status(Some(short(&layer.digest)), "Pulling fs layer");
                        }
                        let so_far = AtomicU64::new(0);
                        let inc = |n: u64| {
                            progress.downloaded(bar.as_ref(), &layer.digest, &so_far, n, layer.size)
                        };
                        client.fetch_blob(store, &layer.digest, layer.size, &inc)?;
                        fetched
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .blobs
                            .push(layer.digest.clone());
                        progress.layer_status(bar.as_ref(), &layer.digest, "Download complete");
                    }
                    progress.layer_status(bar.as_ref(), &layer.digest, "Extracting");
                    store.unpack_layer(layer)?;
                    fetched
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .layers
                        .push(layer.diff_id.clone());
                    progress.layer_status(bar.as_ref(), &layer.digest, "Pull complete");
                    Ok(())
                })();
                if let Err(e) = result {
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    return;
                }
            });
        }
    });
    let fetched = fetched.into_inner().unwrap_or_else(|p| p.into_inner());
    fresh.blobs.extend(fetched.blobs);
    fresh.layers.extend(fetched.layers);
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

// ---- push -----------------------------------------------------------------------------

/// Push a stored image to the registry its reference names.
pub fn push(store: &Store, reference: &str, opts: &PullOptions) -> Result<String, ImageError> {
    let parsed = Reference::parse(reference)?;
    let image = store
        .lookup(reference)
        .map_err(store::not_found_as_no_such)?;
    let progress = Progress {
        quiet: opts.quiet,
        ..Progress::silent()
    };
    let client = Client::new(&parsed, opts, true)?;
    progress.line(&format!(
        "The push refers to repository [{}]",
        parsed.familiar_name()
    ));
    let mut blobs: Vec<(String, u64)> = image
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .collect();
    let config_size = std::fs::metadata(store.blob_path(&image.id)?)
        .map_err(|_| ImageError::CorruptStore(format!("config {} is missing", image.id)))?
        .len();
    blobs.push((image.id.clone(), config_size));
    for (digest, size) in &blobs {
        let path = store.blob_path(digest)?;
        if !store.has_blob(digest, *size) {
            return Err(ImageError::CorruptStore(format!(
                "blob {digest} is missing or has the wrong size"
            )));
        }
        let exists = match client.send(
            "HEAD",
            &client.url(&format!("blobs/{digest}")),
            &[],
            &Body::Empty,
        ) {
            Ok(_) => true,
            Err(ImageError::Registry { reason, .. }) if reason.starts_with("404") => false,
            Err(e) => return Err(e),
        };
        if exists {
            progress.line(&format!("{}: Layer already exists", short(digest)));
            continue;
        }
        let started = client.send(
            "POST",
            &client.url("blobs/uploads/"),
            &[],
            &Body::Bytes(&[], "application/octet-stream"),
        )?;
        let location = started
            .header("Location")
            .ok_or_else(|| ImageError::Registry {
                registry: client.host.clone(),
                reason: "upload started without a Location".into(),
            })?;
        let location = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", client.base)
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let upload = format!("{location}{separator}digest={digest}");
        client.send("PUT", &upload, &[], &Body::File(&path, *size))?;
        progress.line(&format!("{}: Pushed", short(digest)));
    }
    let manifest_bytes = store.read_blob_verified(&image.manifest_digest)?;
    let media_type = if image.manifest_media_type.is_empty() {
        MEDIA_OCI_MANIFEST
    } else {
        &image.manifest_media_type
    };
    let tag = parsed.tag_or_default().to_string();
    client.send(
        "PUT",
        &client.url(&format!("manifests/{tag}")),
        &[],
        &Body::Bytes(&manifest_bytes, media_type),
    )?;
    let line = format!(
        "{tag}: digest: {} size: {}",
        image.manifest_digest,
        manifest_bytes.len()
    );
    progress.line(&line);
    let repo_digest = Reference {
        digest: Some(image.manifest_digest.clone()),
        tag: None,
        ..parsed.clone()
    };
    store.add_manifest(
        &image.manifest_digest,
        media_type,
        manifest_bytes.len() as u64,
        None,
        Some(&repo_digest),
    )?;
    Ok(image.manifest_digest)
}

// ---- login ----------------------------------------------------------------------------

/// Check credentials against `server`'s /v2/ endpoint, then store them in config.json.
pub fn login(
    server: &str,
    credentials: &Credentials,
    opts: &PullOptions,
) -> Result<(), ImageError> {
    let host = if server.is_empty() {
        "docker.io"
    } else {
        server
    };
    let host = host
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let host = host.split('/').next().unwrap_or(host);
    let reference = Reference {
        domain: host.to_string(),
        path: String::new(),
        tag: None,
        digest: None,
    };
    let mut client = Client::new(&reference, opts, false)?;
    client.credentials = Some(credentials.clone());
    let url = format!("{}/v2/", client.base);
    client
        .send("GET", &url, &[], &Body::Empty)
        .map_err(|e| match e {
            ImageError::AccessDenied(_) => ImageError::Unauthorized(client.host.clone()),
            other => other,
        })?;
    auth::store(
        &auth::config_dir(opts.docker_config_dir.as_deref()),
        host,
        credentials,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_with_commas_inside_quotes() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(params[1], ("service".into(), "registry.docker.io".into()));
        assert_eq!(
            params[2],
            (
                "scope".into(),
                "repository:library/busybox:pull,push".into()
            )
        );
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(
            params,
            vec![("realm".to_string(), "Registry Realm".to_string())]
        );
    }

    #[test]
    fn plain_http_only_for_loopback_or_configured() {
        assert!(is_insecure("localhost:5000", &[]));
        assert!(is_insecure("127.0.0.1:5000", &[]));
        assert!(is_insecure("127.1.2.3", &[]));
        assert!(is_insecure("[::1]:5000", &[]));
        assert!(!is_insecure("registry-1.docker.io", &[]));
        assert!(!is_insecure("10.0.0.1:5000", &[]));
        assert!(is_insecure("10.0.0.1:5000", &["10.0.0.1:5000".into()]));
        assert!(is_insecure("myreg:5000", &["myreg".into()]));
    }
}
