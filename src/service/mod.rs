//! `husk system service`: Docker's Engine API on a Unix socket, so that the docker CLI,
//! docker-compose and the SDKs drive husk unchanged, as `podman system service` does for
//! Podman. Daemonless stays the default: the service is one more client of the runtime
//! layer the CLI uses (runtime::container), and the containers it starts are supervised by
//! husk's own detached monitors, so they outlive it.
//!
//! HTTP is hyper's (HTTP/1.1 with connection upgrades for attach); each handler runs the
//! blocking runtime layer on tokio's blocking pool. Requests are bounded (1 MiB bodies,
//! hyper's header limits); every error is Docker's `{"message": ...}` with Docker's status.

mod archive;
mod create;
mod exec;
mod images;
mod networks;
mod observe;
mod routes;
mod volumes;

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::Args;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use husk::runtime::{Runtime, RuntimeError};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};

/// The API version served: Debian's docker.io 20.10 speaks it, newer clients negotiate down.
pub const API_VERSION: &str = "1.41";
pub const MIN_API_VERSION: &str = "1.24";

/// The largest request body taken (a create's JSON is a few KiB).
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Where to listen: unix:///PATH (a Unix socket only; never TCP).
    #[arg(long, default_value = "unix:///run/husk/docker.sock")]
    pub socket: String,
    /// Exit after this many seconds without a connection (0: never).
    #[arg(short, long, default_value_t = 0)]
    pub time: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotModified(String),
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    fn status(&self) -> StatusCode {
        match self {
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
            ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServiceError::NotModified(_) => StatusCode::NOT_MODIFIED,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<RuntimeError> for ServiceError {
    fn from(err: RuntimeError) -> Self {
        use husk::container::volume::VolumeError;
        use husk::container::RecordError;
        use husk::image::ImageError;
        let text = err.to_string();
        match err {
            RuntimeError::Record(RecordError::NotFound(_))
            | RuntimeError::Volume(VolumeError::NotFound(_))
            | RuntimeError::Image(ImageError::NoSuchImage(_) | ImageError::NotFoundLocally(_)) => {
                ServiceError::NotFound(text)
            }
            RuntimeError::Record(RecordError::NameInUse { .. })
            | RuntimeError::Volume(VolumeError::InUse { .. })
            | RuntimeError::Image(ImageError::Conflict(_))
            | RuntimeError::State(_) => ServiceError::Conflict(text),
            RuntimeError::Volume(VolumeError::InvalidName(_))
            | RuntimeError::Refused(_)
            | RuntimeError::Spec(_)
            | RuntimeError::Record(
                RecordError::InvalidName(_)
                | RecordError::InvalidRestartPolicy(_)
                | RecordError::Ambiguous(_),
            ) => ServiceError::BadRequest(text),
            _ => ServiceError::Internal(text),
        }
    }
}

impl From<husk::container::RecordError> for ServiceError {
    fn from(err: husk::container::RecordError) -> Self {
        RuntimeError::from(err).into()
    }
}

impl From<husk::container::volume::VolumeError> for ServiceError {
    fn from(err: husk::container::volume::VolumeError) -> Self {
        RuntimeError::from(err).into()
    }
}

impl From<husk::image::ImageError> for ServiceError {
    fn from(err: husk::image::ImageError) -> Self {
        RuntimeError::from(err).into()
    }
}

pub type Body = BoxBody<Bytes, Infallible>;

/// A body fed by a blocking producer: a log follower, a wait, a pull's progress.
pub struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// A streaming response and the sender its producer writes to (blocking_send).
pub fn channel(
    status: StatusCode,
    content_type: &str,
) -> (Response<Body>, tokio::sync::mpsc::Sender<Bytes>) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut response = Response::new(ChannelBody(rx).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        "Content-Type",
        content_type.parse().expect("a valid header"),
    );
    (response, tx)
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        "Content-Type",
        "application/json".parse().expect("a valid header"),
    );
    response
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = status;
    response
}

pub fn error(err: &ServiceError) -> Response<Body> {
    if let ServiceError::NotModified(_) = err {
        return empty(StatusCode::NOT_MODIFIED);
    }
    json(
        err.status(),
        &serde_json::json!({ "message": err.to_string() }),
    )
}

/// The request body, at most [`MAX_BODY`] bytes.
pub async fn read_body(body: Incoming) -> Result<Bytes, ServiceError> {
    http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ServiceError::BadRequest(format!("reading the request body: {e}")))
}

/// Shared by every connection.
pub struct Service {
    pub runtime: Runtime,
    /// Open connections, for `--time`.
    connections: AtomicUsize,
    /// Exec instances, created and started by id.
    execs: exec::Execs,
}

impl Service {
    /// husk itself on this service's root: the verbs the service runs as children (an exec, a
    /// copy, a network connect), each in a process of its own rather than in its threads.
    pub fn husk_command(&self) -> Result<std::process::Command, ServiceError> {
        let exe = std::env::current_exe()
            .map_err(|e| ServiceError::Internal(format!("locating the husk binary: {e}")))?;
        let mut command = std::process::Command::new(exe);
        command.arg("--root").arg(&self.runtime.root);
        Ok(command)
    }
}

fn socket_path(uri: &str) -> Result<PathBuf> {
    match uri.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        _ => bail!("--socket {uri}: give unix:///PATH (husk serves a Unix socket only, never TCP)"),
    }
}

/// Bind the socket: mode 0660, group `husk` when the host has one. A live service on the path
/// is refused; a stale socket file (its service gone) is replaced.
fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!("{}: another service is listening there", path.display());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        Ok(_) => bail!("{}: exists and is not a socket", path.display()),
        Err(_) => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("husk") {
        nix::unistd::chown(path, None, Some(group.gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    listener.set_nonblocking(true)?;
    Ok(tokio::net::UnixListener::from_std(listener)?)
}

pub fn serve(runtime: Runtime, args: ServiceArgs) -> Result<i32> {
    let path = socket_path(&args.socket)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the service's runtime")?;
    let service = Arc::new(Service {
        runtime,
        connections: AtomicUsize::new(0),
        execs: exec::Execs::default(),
    });
    archive::remove_stale_staging(&service.runtime.root);
    tokio.block_on(async move {
        let listener = bind(&path)?;
        eprintln!(
            "husk: serving the Docker Engine API {API_VERSION} on unix://{}",
            path.display()
        );
        let idle = (args.time > 0).then(|| Duration::from_secs(args.time));
        loop {
            let accepted = match idle {
                Some(idle) => match tokio::time::timeout(idle, listener.accept()).await {
                    Ok(accepted) => accepted,
                    Err(_) if service.connections.load(Ordering::SeqCst) == 0 => break,
                    Err(_) => continue,
                },
                None => listener.accept().await,
            };
            let (stream, _) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    eprintln!("husk: accepting a connection: {err}");
                    continue;
                }
            };
            let service = Arc::clone(&service);
            service.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let handler = {
                    let service = Arc::clone(&service);
                    hyper::service::service_fn(move |request: Request<Incoming>| {
                        let service = Arc::clone(&service);
                        async move { Ok::<_, Infallible>(routes::handle(service, request).await) }
                    })
                };
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                    .with_upgrades();
                let _ = connection.await;
                service.connections.fetch_sub(1, Ordering::SeqCst);
            });
        }
        let _ = std::fs::remove_file(&path);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}
