//! The image routes beyond list, inspect and pull: tag, delete, save (`get`), load and import
//! (`create?fromSrc=-`), each the same store operation as the CLI verb of that name. Archives
//! stream both ways: a request body is read as it arrives by the blocking loader, a saved
//! archive is written into the response as it is made.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use husk::image::archive::{self, ImportOptions};
use husk::image::store::not_found_as_no_such;
use husk::image::{Reference, Store};
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use super::{channel, empty, json, Body, Service, ServiceError};
use crate::commands::image::Removal;

fn store(service: &Service) -> Result<Store, ServiceError> {
    Ok(Store::open(&service.runtime.root)?)
}

fn image_error(err: husk::image::ImageError) -> ServiceError {
    match err {
        husk::image::ImageError::InvalidReference { .. } => {
            ServiceError::BadRequest(err.to_string())
        }
        other => ServiceError::from(not_found_as_no_such(other)),
    }
}

/// `POST /images/{name}/tag?repo=&tag=`.
pub fn tag(
    service: &Service,
    name: &str,
    repo: &str,
    tag: &str,
) -> Result<Response<Body>, ServiceError> {
    if repo.is_empty() {
        return Err(ServiceError::BadRequest("repo is required".into()));
    }
    let target = match tag {
        "" => repo.to_string(),
        tag => format!("{repo}:{tag}"),
    };
    store(service)?.tag(name, &target).map_err(image_error)?;
    Ok(empty(StatusCode::CREATED))
}

/// `DELETE /images/{name}?force=`: what was untagged and deleted, in Docker's order.
pub fn delete(service: &Service, name: &str, force: bool) -> Result<Response<Body>, ServiceError> {
    let removals = crate::commands::image::remove_one(&store(service)?, name, force)?;
    let items: Vec<_> = removals
        .into_iter()
        .map(|r| match r {
            Removal::Untagged(name) => json!({ "Untagged": name }),
            Removal::Deleted(id) => json!({ "Deleted": id }),
        })
        .collect();
    Ok(json(StatusCode::OK, &json!(items)))
}

/// Writes into a streaming response, from a blocking thread.
pub(super) struct ResponseWriter(pub(super) mpsc::Sender<Bytes>);

impl Write for ResponseWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /images/{name}/get` and `GET /images/get?names=...`: one docker-archive of them all.
/// Every name is looked up before the first byte goes out, so a missing one is a 404; a
/// failure after that ends the stream early, and the client's tar reader says so.
pub fn save(service: Arc<Service>, names: Vec<String>) -> Result<Response<Body>, ServiceError> {
    if names.is_empty() {
        return Err(ServiceError::BadRequest("no image names given".into()));
    }
    let store = store(&service)?;
    let mut images = Vec::new();
    for name in &names {
        let image = store.lookup(name).map_err(image_error)?;
        let named = Reference::parse(name)
            .ok()
            .filter(|r| r.digest.is_none() && image.repo_tags.contains(&r.familiar_tagged()));
        images.push((image, named));
    }
    let (response, tx) = channel(StatusCode::OK, "application/x-tar");
    tokio::task::spawn_blocking(move || {
        if let Err(err) = archive::save(&store, &images, ResponseWriter(tx)) {
            eprintln!("husk: saving {}: {err}", names.join(", "));
        }
    });
    Ok(response)
}

/// A request body as a blocking reader: the chunks arrive through a bounded channel from the
/// task that reads the connection, so an archive is never held whole in memory.
pub(super) struct BodyReader {
    chunks: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(message)) => {
                    return Err(std::io::Error::other(format!(
                        "reading the request body: {message}"
                    )))
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

pub(super) fn body_reader(body: Incoming) -> BodyReader {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let chunk = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => Ok(data),
                    Err(_) => continue, // trailers
                },
                Err(e) => Err(e.to_string()),
            };
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    BodyReader {
        chunks: rx,
        current: Bytes::new(),
    }
}

/// JSON lines, as the load and import answers are.
fn json_lines(lines: &[serde_json::Value]) -> Response<Body> {
    let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    let mut response = Response::new(http_body_util::Full::new(Bytes::from(text)).boxed());
    response.headers_mut().insert(
        "Content-Type",
        "application/json".parse().expect("a valid header"),
    );
    response
}

/// `POST /images/load`: a docker-archive or OCI archive in the body; nothing is kept when
/// any part of it is bad (the store's own rule).
pub async fn load(service: Arc<Service>, body: Incoming) -> Result<Response<Body>, ServiceError> {
    let reader = body_reader(body);
    let loaded = tokio::task::spawn_blocking(move || {
        let store = store(&service)?;
        archive::load(&store, reader).map_err(|e| ServiceError::BadRequest(e.to_string()))
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("the handler failed: {e}")))??;
    let mut lines = Vec::new();
    for item in loaded {
        if item.names.is_empty() {
            lines.push(json!({ "stream": format!("Loaded image ID: {}\n", item.image.id) }));
        }
        for name in item.names {
            lines.push(json!({ "stream": format!("Loaded image: {name}\n") }));
        }
    }
    Ok(json_lines(&lines))
}

/// `POST /images/create?fromSrc=-&repo=&tag=&changes=&message=`: a root filesystem tar in the
/// body becomes a one-layer image, as `husk import` makes it.
pub async fn import(
    service: Arc<Service>,
    query: Vec<(String, String)>,
    body: Incoming,
) -> Result<Response<Body>, ServiceError> {
    let get = |key: &str| {
        query
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    if get("fromSrc").as_deref() != Some("-") {
        return Err(ServiceError::BadRequest(
            "husk imports from the request body only (fromSrc=-), never from a URL".into(),
        ));
    }
    let reference = match (get("repo"), get("tag")) {
        (None, _) => None,
        (Some(repo), None) => Some(repo),
        (Some(repo), Some(tag)) => Some(format!("{repo}:{tag}")),
    };
    let reference = reference
        .as_deref()
        .map(Reference::parse)
        .transpose()
        .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
    if reference.as_ref().is_some_and(|r| r.digest.is_some()) {
        return Err(ServiceError::BadRequest(
            "invalid reference format: an imported image cannot be named by digest".into(),
        ));
    }
    let options = ImportOptions {
        changes: query
            .iter()
            .filter(|(k, v)| k == "changes" && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect(),
        message: get("message"),
    };
    let reader = body_reader(body);
    let image = tokio::task::spawn_blocking(move || {
        let store = store(&service)?;
        archive::import(&store, reader, reference.as_ref(), &options)
            .map_err(|e| ServiceError::BadRequest(e.to_string()))
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("the handler failed: {e}")))??;
    Ok(json_lines(&[json!({ "status": image.id })]))
}
