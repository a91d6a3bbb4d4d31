//! The archive endpoints, `docker cp` through the API: HEAD and GET
//! /containers/{id}/archive?path= (the path's stat in the X-Docker-Container-Path-Stat header;
//! GET adds a tar of it) and PUT (a tar extracted into a directory of the container).
//!
//! Each runs `husk container-stat` and `husk cp` as children of the service, as its execs
//! are run, so a copy enters the container's view (or reaches its guest) in a process of its
//! own and never in the service's threads, with the same rules as the CLI's `cp`: symlinks
//! resolve inside the container, a guest's tar is bounded. The tars pass through a staging
//! directory under the root that goes with the request; a PUT body is bounded as a copy is
//! (HUSK_CP_MAX_BYTES) and nothing reaches the container unless all of it extracted well.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Output, Stdio};
use std::sync::Arc;

use base64::Engine;
use husk::runtime::archive::PathStat;
use hyper::body::Incoming;
use hyper::{Response, StatusCode};

use super::images::{body_reader, ResponseWriter};
use super::{channel, empty, Body, Service, ServiceError};

type Query = HashMap<String, String>;

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

fn path_of(query: &Query) -> Result<String, ServiceError> {
    match query.get("path").filter(|p| !p.is_empty()) {
        Some(path) if path == "/" || path.ends_with("/.") || path == "." => Err(
            ServiceError::BadRequest(format!(
                "copying {path} (a directory's contents as one archive) is not supported by husk; name the entries"
            )),
        ),
        Some(path) => Ok(path.clone()),
        None => Err(ServiceError::BadRequest("the path parameter is required".into())),
    }
}

/// A child that failed: its own message, with the status Docker gives such a failure.
fn child_error(out: &Output, what: &str) -> ServiceError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr
        .trim()
        .trim_start_matches("Error response from daemon: ")
        .trim_start_matches("husk: ")
        .to_string();
    if message.contains("is paused") || message.contains("not running") {
        ServiceError::Conflict(message)
    } else {
        ServiceError::Internal(format!("{what}: {message}"))
    }
}

fn run(service: &Service, args: &[&str], what: &str) -> Result<Output, ServiceError> {
    service
        .husk_command()?
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ServiceError::Internal(format!("running husk for {what}: {e}")))
}

fn stat(service: &Service, id: &str, path: &str) -> Result<PathStat, ServiceError> {
    let out = run(service, &["container-stat", id, path], "a stat")?;
    match out.status.code() {
        Some(0) => PathStat::decode(&String::from_utf8_lossy(&out.stdout))
            .map_err(|e| ServiceError::Internal(e.to_string())),
        Some(2) => Err(ServiceError::NotFound(format!(
            "Could not find the file {path} in container {id}"
        ))),
        _ => Err(child_error(&out, "stat")),
    }
}

/// Docker's header: base64 of the JSON stat, the mode in Go's os.FileMode bits.
fn stat_header(stat: &PathStat) -> Result<hyper::header::HeaderValue, ServiceError> {
    let mtime = chrono::DateTime::from_timestamp(stat.mtime, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let json = serde_json::json!({
        "name": stat.name,
        "size": stat.size,
        "mode": stat.go_file_mode(),
        "mtime": mtime,
        "linkTarget": stat.link_target,
    });
    base64::engine::general_purpose::STANDARD
        .encode(json.to_string())
        .parse()
        .map_err(|_| ServiceError::Internal("an unencodable stat header".into()))
}

/// A directory of the request's own under the root, removed with everything in it on drop.
struct Staging(std::path::PathBuf);

impl Staging {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Staging directories of services that are gone (killed mid-copy): their pid is in the name.
pub fn remove_stale_staging(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root.join("tmp")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("archive-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn staging(service: &Service) -> Result<Staging, ServiceError> {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "archive-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = service.runtime.root.join("tmp").join(name);
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| ServiceError::Internal(format!("making {}: {e}", parent.display())))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| ServiceError::Internal(format!("making {}: {e}", dir.display())))?;
    Ok(Staging(dir))
}

/// `HEAD /containers/{id}/archive?path=`: the stat alone.
pub fn head(service: &Service, key: &str, query: &Query) -> Result<Response<Body>, ServiceError> {
    let record = service.runtime.containers()?.find(key)?;
    let path = path_of(query)?;
    let stat = stat(service, &record.id, &path)?;
    let mut response = empty(StatusCode::OK);
    response
        .headers_mut()
        .insert(STAT_HEADER, stat_header(&stat)?);
    Ok(response)
}

/// `GET /containers/{id}/archive?path=`: the stat, and a tar whose one top-level entry is the
/// path under its own name, streamed from the staged copy.
pub fn get(
    service: Arc<Service>,
    key: &str,
    query: &Query,
) -> Result<Response<Body>, ServiceError> {
    let record = service.runtime.containers()?.find(key)?;
    let path = path_of(query)?;
    let stat = stat(&service, &record.id, &path)?;
    let staged = staging(&service)?;
    let dest = staged.path().display().to_string();
    let out = run(
        &service,
        &["cp", &format!("{}:{path}", record.id), &dest],
        "a copy",
    )?;
    if !out.status.success() {
        return Err(child_error(&out, "copying out of the container"));
    }
    let entry = staged.path().join(&stat.name);
    let (mut response, tx) = channel(StatusCode::OK, "application/x-tar");
    response
        .headers_mut()
        .insert(STAT_HEADER, stat_header(&stat)?);
    std::thread::spawn(move || {
        // A failure after the first byte ends the stream early; the client's tar reader
        // says so. The staging directory goes when the stream is done.
        if let Err(err) = husk::runtime::archive::send(&entry, ResponseWriter(tx)) {
            eprintln!("husk: sending {}: {err}", entry.display());
        }
        drop(staged);
    });
    Ok(response)
}

/// A reader that fails, rather than ends, past its bound: a cut archive must not pass for a
/// short one.
struct Bounded<R> {
    inner: R,
    room: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.room {
            return Err(std::io::Error::other(
                "the archive is larger than a copy may be (HUSK_CP_MAX_BYTES)",
            ));
        }
        self.room -= n as u64;
        Ok(n)
    }
}

/// `PUT /containers/{id}/archive?path=DIR`: the body's tar extracted into DIR, an existing
/// directory of the container. The whole tar is staged and extracted first; then each of
/// its top-level entries is copied in by `husk cp`.
pub async fn put(
    service: Arc<Service>,
    key: String,
    query: Query,
    body: Incoming,
) -> Result<Response<Body>, ServiceError> {
    let reader = body_reader(body);
    tokio::task::spawn_blocking(move || {
        let record = service.runtime.containers()?.find(&key)?;
        let path = path_of(&query)?;
        let stat = stat(&service, &record.id, &path)?;
        if stat.mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(ServiceError::BadRequest(format!(
                "extraction point is not a directory: {path}"
            )));
        }
        let staged = staging(&service)?;
        let bounded = Bounded {
            inner: reader,
            room: service.runtime.config.cp_max_bytes,
        };
        husk::runtime::archive::place(bounded, staged.path())
            .map_err(|e| ServiceError::BadRequest(format!("the archive: {e}")))?;
        let mut entries: Vec<_> = std::fs::read_dir(staged.path())
            .map_err(|e| ServiceError::Internal(format!("reading the staged archive: {e}")))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for entry in entries {
            let source = entry.display().to_string();
            let out = run(
                &service,
                &["cp", &source, &format!("{}:{path}", record.id)],
                "a copy",
            )?;
            if !out.status.success() {
                return Err(child_error(&out, "copying into the container"));
            }
        }
        Ok(empty(StatusCode::OK))
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("the handler failed: {e}")))?
}
