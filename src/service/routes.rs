//! The Engine API's routes: each one a thin call into the runtime layer, in Docker's JSON.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use husk::container::events::Action;
use husk::container::logs::{self, ReadOptions, Stream};
use husk::container::{Containers, Record, Status};
use husk::image::{registry, PullEvent, PullEvents, PullOptions, Store};
use husk::runtime::container::{delete, kill, start};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc::Sender;

use super::{channel, empty, error, json, read_body, Body, Service, ServiceError, API_VERSION};

type Query = HashMap<String, String>;

fn truthy(query: &Query, key: &str) -> bool {
    matches!(
        query.get(key).map(String::as_str),
        Some("1" | "true" | "True")
    )
}

pub async fn handle(service: Arc<Service>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    // Every pair, for the keys Docker repeats (names, changes); the map for the rest.
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let query: Query = pairs.iter().cloned().collect();
    // "/v1.41/containers/json" and "/containers/json" are the same route.
    let route = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest
            .find('/')
            .map(|i| rest[i..].to_string())
            .unwrap_or_default(),
        _ => path.clone(),
    };
    let parts: Vec<&str> = route.trim_matches('/').split('/').collect();
    let mut response = match (&method, parts.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => {
            let mut r = Response::new(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                Bytes::from_static(b"OK"),
            )));
            r.headers_mut()
                .insert("Content-Type", "text/plain; charset=utf-8".parse().unwrap());
            Ok(r)
        }
        (&Method::GET, ["version"]) => Ok(json(StatusCode::OK, &version())),
        (&Method::GET, ["info"]) => blocking(move || info(&service)).await,
        (&Method::GET, ["images", "json"]) => blocking(move || images(&service)).await,
        (&Method::POST, ["images", "create"]) if query.contains_key("fromSrc") => {
            super::images::import(service, pairs, request.into_body()).await
        }
        (&Method::POST, ["images", "create"]) => pull(service, query),
        (&Method::POST, ["images", "load"]) => {
            super::images::load(service, request.into_body()).await
        }
        (&Method::GET, ["images", "get"]) => {
            let names = pairs
                .into_iter()
                .filter(|(k, _)| k == "names")
                .map(|(_, v)| v)
                .collect();
            blocking(move || super::images::save(service, names)).await
        }
        (&Method::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
            let names = vec![name.join("/")];
            blocking(move || super::images::save(service, names)).await
        }
        (&Method::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
            let name = name.join("/");
            let repo = query.get("repo").cloned().unwrap_or_default();
            let tag = query.get("tag").cloned().unwrap_or_default();
            blocking(move || super::images::tag(&service, &name, &repo, &tag)).await
        }
        (&Method::DELETE, ["images", name @ ..]) if !name.is_empty() => {
            let name = name.join("/");
            let force = truthy(&query, "force");
            blocking(move || super::images::delete(&service, &name, force)).await
        }
        (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            let name = name.join("/");
            blocking(move || image_inspect(&service, &name)).await
        }
        (&Method::GET, ["containers", "json"]) => {
            blocking(move || containers(&service, &query)).await
        }
        (&Method::POST, ["containers", "create"]) => {
            with_body(request, move |body| create(&service, &query, &body)).await
        }
        (&Method::GET, ["containers", id, "json"]) => {
            let id = id.to_string();
            blocking(move || inspect(&service, &id)).await
        }
        (&Method::POST, ["containers", id, "start"]) => {
            let id = id.to_string();
            blocking(move || start_container(&service, &id)).await
        }
        (&Method::POST, ["containers", id, "wait"]) => wait_container(service, id, &query),
        (&Method::GET, ["containers", id, "logs"]) => {
            let id = id.to_string();
            logs_of(service, &id, &query).await
        }
        (&Method::POST, ["containers", id, "attach"]) => {
            let id = id.to_string();
            attach(service, &id, &query, request).await
        }
        (&Method::POST, ["containers", id, "stop"]) => {
            let id = id.to_string();
            blocking(move || stop(&service, &id, &query)).await
        }
        (&Method::POST, ["containers", id, "restart"]) => {
            let id = id.to_string();
            blocking(move || restart(&service, &id, &query)).await
        }
        (&Method::POST, ["containers", id, "kill"]) => {
            let id = id.to_string();
            blocking(move || kill_container(&service, &id, &query)).await
        }
        (&Method::HEAD, ["containers", id, "archive"]) => {
            let id = id.to_string();
            blocking(move || super::archive::head(&service, &id, &query)).await
        }
        (&Method::GET, ["containers", id, "archive"]) => {
            let id = id.to_string();
            blocking(move || super::archive::get(service, &id, &query)).await
        }
        (&Method::PUT, ["containers", id, "archive"]) => {
            super::archive::put(service, id.to_string(), query, request.into_body()).await
        }
        (&Method::POST, ["containers", id, "resize"]) => {
            let id = id.to_string();
            let size = |key: &str| query.get(key).and_then(|v| v.parse::<u16>().ok());
            let (rows, cols) = (size("h"), size("w"));
            blocking(move || {
                let (Some(rows), Some(cols)) = (rows, cols) else {
                    return Err(ServiceError::BadRequest(
                        "resize needs h and w, each 1 to 65535".into(),
                    ));
                };
                husk::runtime::container::resize::resize(&service.runtime, &id, rows, cols)?;
                Ok(empty(StatusCode::OK))
            })
            .await
        }
        (&Method::POST, ["containers", id, verb @ ("pause" | "unpause")]) => {
            let (id, pause) = (id.to_string(), *verb == "pause");
            blocking(move || {
                use husk::runtime::container::pause;
                if pause {
                    pause::pause(&service.runtime, &id)?;
                } else {
                    pause::unpause(&service.runtime, &id)?;
                }
                Ok(empty(StatusCode::NO_CONTENT))
            })
            .await
        }
        (&Method::GET, ["events"]) => match filters(&query) {
            Ok(filters) => super::observe::events(service, &query, filters),
            Err(err) => Err(err),
        },
        (&Method::GET, ["containers", id, "top"]) => {
            let id = id.to_string();
            let ps_args = query.get("ps_args").cloned().unwrap_or_default();
            blocking(move || super::observe::top(&service, &id, &ps_args)).await
        }
        (&Method::GET, ["containers", id, "stats"]) => {
            // Docker streams unless told stream=false (or 0).
            let stream = !matches!(
                query.get("stream").map(String::as_str),
                Some("0" | "false" | "False")
            );
            let id = id.to_string();
            blocking(move || super::observe::stats(service, &id, stream)).await
        }
        (&Method::POST, ["containers", id, "rename"]) => {
            let id = id.to_string();
            let name = query.get("name").cloned().unwrap_or_default();
            blocking(move || super::observe::rename(&service, &id, &name)).await
        }
        (&Method::POST, ["containers", id, "exec"]) => {
            let id = id.to_string();
            with_body(request, move |body| {
                super::exec::create(&service, &id, &body)
            })
            .await
        }
        (&Method::POST, ["exec", id, "start"]) => {
            let id = id.to_string();
            super::exec::start(service, &id, request).await
        }
        (&Method::GET, ["exec", id, "json"]) => super::exec::inspect(&service, id),
        (&Method::POST, ["exec", id, "resize"]) => super::exec::resize(&service, id, &query),
        (&Method::GET, ["networks"]) => {
            blocking(move || super::networks::list(&service, &filters(&query)?)).await
        }
        (&Method::POST, ["networks", "create"]) => {
            with_body(request, move |body| {
                super::networks::create(&service, &body)
            })
            .await
        }
        (&Method::POST, ["networks", "prune"]) => {
            blocking(move || super::networks::prune(&service, &filters(&query)?)).await
        }
        (&Method::GET, ["networks", id]) => {
            let id = id.to_string();
            blocking(move || super::networks::inspect(&service, &id)).await
        }
        (&Method::DELETE, ["networks", id]) => {
            let id = id.to_string();
            blocking(move || super::networks::remove(&service, &id)).await
        }
        (&Method::POST, ["networks", id, verb @ ("connect" | "disconnect")]) => {
            let (id, disconnect) = (id.to_string(), *verb == "disconnect");
            with_body(request, move |body| {
                super::networks::connect(&service, &id, &body, disconnect)
            })
            .await
        }
        (&Method::GET, ["volumes"]) => {
            blocking(move || super::volumes::list(&service, &filters(&query)?)).await
        }
        (&Method::POST, ["volumes", "create"]) => {
            with_body(request, move |body| super::volumes::create(&service, &body)).await
        }
        (&Method::POST, ["volumes", "prune"]) => {
            blocking(move || super::volumes::prune(&service, &filters(&query)?)).await
        }
        (&Method::GET, ["volumes", name]) => {
            let name = name.to_string();
            blocking(move || super::volumes::inspect(&service, &name)).await
        }
        (&Method::DELETE, ["volumes", name]) => {
            let name = name.to_string();
            let force = truthy(&query, "force");
            blocking(move || super::volumes::remove(&service, &name, force)).await
        }
        (&Method::DELETE, ["containers", id]) => {
            let id = id.to_string();
            blocking(move || remove(&service, &id, &query)).await
        }
        _ => Err(ServiceError::NotFound(format!(
            "page not found: husk's Engine API does not serve {method} {route}"
        ))),
    }
    .unwrap_or_else(|err| error(&err));
    let headers = response.headers_mut();
    headers.insert("Api-Version", API_VERSION.parse().unwrap());
    headers.insert("Ostype", "linux".parse().unwrap());
    headers.insert(
        "Server",
        concat!("husk/", env!("CARGO_PKG_VERSION")).parse().unwrap(),
    );
    response
}

/// The request's body (bounded, as read_body reads it), then `work` on it in the blocking pool.
async fn with_body(
    request: Request<Incoming>,
    work: impl FnOnce(Bytes) -> Result<Response<Body>, ServiceError> + Send + 'static,
) -> Result<Response<Body>, ServiceError> {
    let body = read_body(request.into_body()).await?;
    blocking(move || work(body)).await
}

async fn blocking(
    work: impl FnOnce() -> Result<Response<Body>, ServiceError> + Send + 'static,
) -> Result<Response<Body>, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(ServiceError::Internal(format!("the handler failed: {e}"))))
}

fn version() -> Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "Platform": {"Name": "husk"},
        "Components": [{"Name": "Engine", "Version": env!("CARGO_PKG_VERSION"),
                        "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": super::MIN_API_VERSION,
                                    "Os": "linux", "Arch": "amd64"}}],
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_VERSION,
        "MinAPIVersion": super::MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": kernel.trim(),
    })
}

fn info(service: &Service) -> Result<Response<Body>, ServiceError> {
    let runtime = &service.runtime;
    let records = runtime.containers()?.list()?;
    let count = |s: Status| records.iter().filter(|r| r.effective_status() == s).count();
    let images = Store::open(&runtime.root)?.images()?.len();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cgroup_version = match husk::process::CgroupLayout::detect() {
        Ok(husk::process::CgroupLayout::Unified(_)) => "2",
        _ => "1",
    };
    Ok(json(
        StatusCode::OK,
        &json!({
            "ID": "husk",
            "Containers": records.len(),
            "ContainersRunning": count(Status::Running),
            "ContainersPaused": 0,
            "ContainersStopped": records.len() - count(Status::Running),
            "Images": images,
            "Driver": "overlay",
            "DockerRootDir": runtime.root,
            "Name": hostname,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "KernelVersion": kernel.trim(),
            "OperatingSystem": "husk",
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": cgroup_version,
            "DefaultRuntime": "husk",
            "Runtimes": {"husk": {"path": "husk"}},
            "Isolation": runtime.config.default_isolation.to_string(),
            "SecurityOptions": ["name=seccomp,profile=default"],
            "Swarm": {"LocalNodeState": "inactive"},
        }),
    ))
}

fn images(service: &Service) -> Result<Response<Body>, ServiceError> {
    let store = Store::open(&service.runtime.root)?;
    let list: Vec<Value> = store
        .images()?
        .iter()
        .map(|image| {
            let created = image
                .created
                .as_deref()
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map(|c| c.timestamp())
                .unwrap_or(0);
            json!({
                "Id": image.id,
                "ParentId": "",
                "RepoTags": image.repo_tags,
                "RepoDigests": image.repo_digests,
                "Created": created,
                "Size": image.size,
                "VirtualSize": image.size,
                "SharedSize": -1,
                "Labels": {},
                "Containers": -1,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &Value::Array(list)))
}

fn image_inspect(service: &Service, name: &str) -> Result<Response<Body>, ServiceError> {
    let store = Store::open(&service.runtime.root)?;
    let image = store
        .lookup(name)
        .map_err(husk::image::store::not_found_as_no_such)?;
    let value = crate::commands::image::inspect_value(&store, &image)
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(json(StatusCode::OK, &value))
}

/// `POST /images/create?fromImage=&tag=`: a pull, its progress as JSON lines.
fn pull(service: Arc<Service>, query: Query) -> Result<Response<Body>, ServiceError> {
    let Some(from) = query.get("fromImage").filter(|f| !f.is_empty()).cloned() else {
        return Err(ServiceError::BadRequest(
            "husk's Engine API pulls images (fromImage); fromSrc imports are not served".into(),
        ));
    };
    let tag = query.get("tag").filter(|t| !t.is_empty()).cloned();
    let name = match &tag {
        Some(tag) if tag.starts_with("sha256:") => format!("{from}@{tag}"),
        Some(tag) => format!("{from}:{tag}"),
        None => from.clone(),
    };
    let (response, tx) = channel(StatusCode::OK, "application/json");
    tokio::task::spawn_blocking(move || {
        let send = move |value: Value| {
            let _ = tx.blocking_send(Bytes::from(format!("{value}\r\n")));
        };
        let events = {
            let send = send.clone();
            PullEvents(Arc::new(move |event: PullEvent| send(pull_message(&event))))
        };
        let pulled = Store::open(&service.runtime.root)
            .map_err(|e| e.to_string())
            .and_then(|store| {
                let options = PullOptions {
                    events: Some(events),
                    ..PullOptions::default()
                };
                registry::pull(&store, &name, &options).map_err(|e| e.to_string())
            });
        if let Err(message) = pulled {
            send(json!({"errorDetail": {"message": message}, "error": message}));
        }
    });
    Ok(response)
}

/// One step of a pull as a message of Docker's progress stream (jsonmessage): a download's
/// bytes as progressDetail and the bar the CLI draws on a terminal.
fn pull_message(event: &PullEvent) -> Value {
    let mut message = json!({"status": event.status});
    if let Some(id) = &event.id {
        message["id"] = json!(id);
        message["progressDetail"] = json!({});
    }
    if let Some((current, total)) = event.progress {
        message["progressDetail"] = json!({"current": current, "total": total});
        let width = 50;
        let done = (current.min(total) * width / total.max(1)) as usize;
        let bar = format!(
            "[{}>{}]",
            "=".repeat(done.saturating_sub(1)),
            " ".repeat(width as usize - done.max(1))
        );
        message["progress"] = json!(format!(
            "{bar} {}/{}",
            husk::display::human_size(current),
            husk::display::human_size(total)
        ));
    }
    message
}

/// `filters` as the CLI sends it: {"status":{"exited":true}} (or the older list form).
fn filters(query: &Query) -> Result<HashMap<String, Vec<String>>, ServiceError> {
    let Some(raw) = query.get("filters").filter(|f| !f.is_empty()) else {
        return Ok(HashMap::new());
    };
    let value: Value = serde_json::from_str(raw)
        .map_err(|e| ServiceError::BadRequest(format!("invalid filters: {e}")))?;
    let mut out = HashMap::new();
    for (key, values) in value.as_object().into_iter().flatten() {
        let list: Vec<String> = match values {
            Value::Object(map) => map.keys().cloned().collect(),
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => return Err(ServiceError::BadRequest(format!("invalid filter {key:?}"))),
        };
        out.insert(key.clone(), list);
    }
    Ok(out)
}

fn containers(service: &Service, query: &Query) -> Result<Response<Body>, ServiceError> {
    let all = truthy(query, "all");
    let filters = filters(query)?;
    let ports = husk::network::published_by_container(&service.runtime.root);
    for key in filters.keys() {
        if !matches!(key.as_str(), "status" | "name" | "id" | "label") {
            return Err(ServiceError::BadRequest(format!(
                "invalid filter '{key}': husk's Engine API filters by status, name, id and label"
            )));
        }
    }
    let mut records = service.runtime.containers()?.list()?;
    records.reverse(); // newest first, as Docker lists
    let list: Vec<Value> = records
        .iter()
        .filter(|r| {
            all || r.effective_status() == Status::Running || filters.contains_key("status")
        })
        .filter(|r| {
            filters.iter().all(|(key, values)| {
                // Docker ORs the values of a key, but every label filter must hold.
                if key == "label" {
                    return values
                        .iter()
                        .all(|v| husk::container::spec::labels_match(&r.options.labels, v));
                }
                values.iter().any(|v| match key.as_str() {
                    "status" => husk::runtime::container::pause::state_name(r) == *v,
                    "name" => r.name.contains(v.trim_start_matches('/')),
                    _ => r.id.starts_with(v.as_str()),
                })
            })
        })
        .map(|r| {
            json!({
                "Id": r.id,
                "Names": [format!("/{}", r.name)],
                "Image": r.image,
                "ImageID": r.image_id,
                "Command": crate::commands::ps::command_line(r),
                "Created": r.created.timestamp(),
                // What the CLI's PORTS column is made of: 0.0.0.0:8080->80/tcp.
                "Ports": ports.get(&r.id).map(|list| list.iter().map(|p| json!({
                    "IP": p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED).to_string(),
                    "PrivatePort": p.container_port,
                    "PublicPort": p.host_port,
                    "Type": p.protocol.to_string(),
                })).collect::<Vec<_>>()).unwrap_or_default(),
                "Labels": r.options.labels,
                "State": husk::runtime::container::pause::state_name(r),
                "Status": crate::commands::ps::status_text(r),
                "HostConfig": {"NetworkMode": "default"},
                "NetworkSettings": {"Networks": {}},
                "Mounts": [],
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &Value::Array(list)))
}

fn create(service: &Service, query: &Query, body: &[u8]) -> Result<Response<Body>, ServiceError> {
    let args = super::create::args(query.get("name").cloned(), body)?;
    // The CLI pulls on 404 (with its progress bar); a create never pulls behind its back.
    Store::open(&service.runtime.root)?
        .lookup(&args.image)
        .map_err(|_| ServiceError::NotFound(format!("No such image: {}", args.image)))?;
    let request = args
        .request()
        .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
    let record = husk::runtime::container::create::create(&service.runtime, request)?;
    Ok(json(
        StatusCode::CREATED,
        &json!({"Id": record.id, "Warnings": []}),
    ))
}

fn find(service: &Service, key: &str) -> Result<(Containers, Record), ServiceError> {
    let store = service.runtime.containers()?;
    let record = store.find(key)?;
    Ok((store, record))
}

fn inspect(service: &Service, key: &str) -> Result<Response<Body>, ServiceError> {
    let (store, record) = find(service, key)?;
    let value = crate::commands::inspect::container_value(&service.runtime.root, &store, &record);
    Ok(json(StatusCode::OK, &value))
}

fn start_container(service: &Service, key: &str) -> Result<Response<Body>, ServiceError> {
    let (store, record) = find(service, key)?;
    if husk::runtime::container::pause::is_paused(&record) {
        return Err(ServiceError::Conflict(
            "cannot start a paused container, try unpause instead".into(),
        ));
    }
    if record.effective_status() == Status::Running {
        return Err(ServiceError::NotModified("already started".into()));
    }
    start::start_detached(&service.runtime, &store, &record).map_err(|err| match err {
        husk::runtime::RuntimeError::Failed(message) => ServiceError::BadRequest(message),
        other => other.into(),
    })?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `wait`: the headers at once (the CLI's wait returns on them, before it starts the
/// container), the body when `condition` is met: not-running (default), next-exit, removed.
fn wait_container(
    service: Arc<Service>,
    key: &str,
    query: &Query,
) -> Result<Response<Body>, ServiceError> {
    let condition = query
        .get("condition")
        .cloned()
        .unwrap_or_else(|| "not-running".into());
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ServiceError::BadRequest(format!(
            "invalid condition {condition:?}: use not-running, next-exit or removed"
        )));
    }
    let store = service.runtime.containers()?;
    let record = store.find(key)?;
    let journal = store.journal().clone();
    let cursor = journal.end();
    let (response, tx) = channel(StatusCode::OK, "application/json");
    tokio::task::spawn_blocking(move || {
        let code = match condition.as_str() {
            "not-running" => loop {
                match store.load(&record.id) {
                    Ok(r) if r.effective_status() == Status::Running => {}
                    Ok(r) => break r.state.exit_code.unwrap_or(0),
                    Err(_) => break record.state.exit_code.unwrap_or(0),
                }
                if tx.is_closed() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            },
            until => {
                let wanted = if until == "removed" {
                    Action::Destroy
                } else {
                    Action::Die
                };
                let mut cursor = cursor;
                let mut code = None;
                loop {
                    let (events, next) = journal.read_from(cursor);
                    cursor = next;
                    let mut done = false;
                    for event in events.iter().filter(|e| e.id == record.id) {
                        if event.action == Action::Die {
                            code = event.exit_code;
                        }
                        done |= event.action == wanted;
                    }
                    if done || tx.is_closed() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                code.unwrap_or(-1)
            }
        };
        let body = json!({"StatusCode": code, "Error": null}).to_string();
        let _ = tx.blocking_send(Bytes::from(body));
    });
    Ok(response)
}

/// One frame of Docker's multiplexed stream (stream byte, three zeros, big-endian length),
/// or the bare text for a tty container.
fn frame(entry: &logs::Entry, text: &str, tty: bool) -> Bytes {
    if tty {
        return Bytes::from(text.as_bytes().to_vec());
    }
    let mut out = Vec::with_capacity(8 + text.len());
    out.push(match entry.stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    });
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Bytes::from(out)
}

fn wanted(entry: &logs::Entry, stdout: bool, stderr: bool) -> bool {
    match entry.stream {
        Stream::Stdout => stdout,
        Stream::Stderr => stderr,
    }
}

/// Follow the container's log from `offset` (in `file` when it is open already), framed,
/// while `going` says so.
fn stream_log(
    store: &Containers,
    record: &Record,
    (file, offset): (Option<std::fs::File>, u64),
    (stdout, stderr, timestamps): (bool, bool, bool),
    tx: &Sender<Bytes>,
    going: impl Fn(&Record) -> bool,
) {
    let dir = store.dir_of(&record.id);
    let tty = record.options.tty;
    let emit = |entry: &logs::Entry| {
        if wanted(entry, stdout, stderr) {
            let _ = tx.blocking_send(frame(entry, &logs::render(entry, timestamps), tty));
        }
    };
    let keep_going = || !tx.is_closed() && store.load(&record.id).is_ok_and(|r| going(&r));
    let _ = match file {
        Some(file) => logs::follow_open(&dir, file, offset, emit, keep_going),
        None => logs::follow(&dir, offset, emit, keep_going),
    };
}

async fn logs_of(
    service: Arc<Service>,
    key: &str,
    query: &Query,
) -> Result<Response<Body>, ServiceError> {
    let (stdout, stderr) = (truthy(query, "stdout"), truthy(query, "stderr"));
    if !stdout && !stderr {
        return Err(ServiceError::BadRequest(
            "Bad parameters: you must choose at least one stream".into(),
        ));
    }
    let tail = match query.get("tail").map(String::as_str) {
        None | Some("all") | Some("") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ServiceError::BadRequest(format!("invalid tail {n:?}")))?,
        ),
    };
    let since = match query.get("since").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(s) => {
            let seconds: f64 = s
                .parse()
                .map_err(|_| ServiceError::BadRequest(format!("invalid since {s:?}")))?;
            chrono::DateTime::from_timestamp_nanos((seconds * 1e9) as i64).into()
        }
    };
    let timestamps = truthy(query, "timestamps");
    let follow = truthy(query, "follow");
    let (store, record) = find(&service, key)?;
    let (response, tx) = channel(StatusCode::OK, "application/vnd.docker.raw-stream");
    tokio::task::spawn_blocking(move || {
        let options = ReadOptions {
            tail,
            since,
            timestamps,
        };
        let dir = store.dir_of(&record.id);
        let Ok((entries, offset)) = logs::read(&dir, &options) else {
            return;
        };
        for entry in entries.iter().filter(|e| wanted(e, stdout, stderr)) {
            if tx
                .blocking_send(frame(
                    entry,
                    &logs::render(entry, timestamps),
                    record.options.tty,
                ))
                .is_err()
            {
                return;
            }
        }
        if follow {
            stream_log(
                &store,
                &record,
                (None, offset),
                (stdout, stderr, timestamps),
                &tx,
                |r| {
                    r.effective_status() == Status::Running
                        || r.state.supervisor.is_some_and(|s| s.is_alive())
                },
            );
        }
    });
    Ok(response)
}

/// `attach`: the connection is hijacked (HTTP upgrade to a raw stream) and carries the
/// container's output from now until it stops, and with `stdin` what the client sends into
/// the stdin FIFO of a `-i` container (as `husk attach` does). A created container is waited
/// for: the CLI attaches before it starts.
async fn attach(
    service: Arc<Service>,
    key: &str,
    query: &Query,
    request: Request<Incoming>,
) -> Result<Response<Body>, ServiceError> {
    let (stdout, stderr) = (truthy(query, "stdout"), truthy(query, "stderr"));
    let (store, record) = find(&service, key)?;
    let dir = store.dir_of(&record.id);
    // Docker ignores stdin for a container made without OpenStdin; so does husk. Opened
    // read-write, so that it never waits for the container's side, which opens it when it
    // starts; a StdinOnce container's stdin ends when this copy closes.
    let input = match truthy(query, "stdin") && record.options.interactive {
        true => {
            let path = husk::runtime::container::start::make_stdin_fifo(&dir)?;
            let fifo = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| ServiceError::Internal(format!("opening the stdin FIFO: {e}")))?;
            Some(tokio::fs::File::from_std(fifo))
        }
        false => None,
    };
    // Open before the 101 goes out: the CLI starts the container only after it, and a short
    // `--rm` run is then read in full before its directory goes.
    let file = logs::open_for_follow(&dir).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let offset = file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let (waiting, id) = (service.runtime.containers()?, record.id.clone());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        stream_log(
            &store,
            &record,
            (Some(file), offset),
            (stdout, stderr, false),
            &tx,
            |r| matches!(r.effective_status(), Status::Created | Status::Running),
        );
    });
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let (mut from_client, mut to_client) =
            tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        if let Some(mut fifo) = input {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_client, &mut fifo).await;
                // A pipe's data goes with its last open end: what the client sent before the
                // container opened its side (the CLI sends, then starts) must wait for it.
                let _ = tokio::task::spawn_blocking(move || {
                    let deadline = std::time::Instant::now() + Duration::from_secs(60);
                    while waiting
                        .load(&id)
                        .is_ok_and(|r| r.state.status == Status::Created)
                        && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
                .await;
                drop(fifo);
            });
        }
        use tokio::io::AsyncWriteExt;
        while let Some(chunk) = rx.recv().await {
            if to_client.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to_client.shutdown().await;
    });
    let mut response = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert("Connection", "Upgrade".parse().unwrap());
    headers.insert("Upgrade", "tcp".parse().unwrap());
    headers.insert(
        "Content-Type",
        "application/vnd.docker.raw-stream".parse().unwrap(),
    );
    Ok(response)
}

fn grace(query: &Query) -> Result<Duration, ServiceError> {
    match query.get("t").map(String::as_str) {
        None | Some("") => Ok(Duration::from_secs(10)),
        Some(t) => t
            .parse::<i64>()
            .map(|t| Duration::from_secs(t.max(0) as u64))
            .map_err(|_| ServiceError::BadRequest(format!("invalid t {t:?}"))),
    }
}

fn stop(service: &Service, key: &str, query: &Query) -> Result<Response<Body>, ServiceError> {
    let grace = grace(query)?;
    let (_, record) = find(service, key)?;
    if record.effective_status() != Status::Running {
        return Err(ServiceError::NotModified("not running".into()));
    }
    kill::stop(&service.runtime, &record.id, grace)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn restart(service: &Service, key: &str, query: &Query) -> Result<Response<Body>, ServiceError> {
    let grace = grace(query)?;
    kill::restart(&service.runtime, key, grace)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn kill_container(
    service: &Service,
    key: &str,
    query: &Query,
) -> Result<Response<Body>, ServiceError> {
    let signal = crate::commands::lifecycle::parse_signal(
        query.get("signal").map(String::as_str).unwrap_or("KILL"),
    )
    .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
    let (_, record) = find(service, key)?;
    if record.effective_status() != Status::Running {
        return Err(ServiceError::Conflict(format!(
            "Container {} is not running",
            record.id
        )));
    }
    kill::kill(&service.runtime, &record.id, signal)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn remove(service: &Service, key: &str, query: &Query) -> Result<Response<Body>, ServiceError> {
    delete::remove(
        &service.runtime,
        key,
        truthy(query, "force"),
        truthy(query, "v"),
    )?;
    Ok(empty(StatusCode::NO_CONTENT))
}
