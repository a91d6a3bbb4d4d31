//! Exec instances: `POST /containers/{id}/exec` records what to run, `POST /exec/{id}/start`
//! runs it, `GET /exec/{id}/json` tells how it ended, `POST /exec/{id}/resize` sizes its
//! terminal.
//!
//! A started exec is `husk exec` itself, a child of the service: the CLI's one path through
//! the runtime layer, in both isolations. Its stdio are pipes the service bridges to the
//! hijacked connection in Docker's multiplexed framing, or with `Tty` a pty the service holds,
//! whose size the resize route sets and `husk exec -t` follows (SIGWINCH) into the container.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use husk::container::Status;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{empty, json, Body, Service, ServiceError};

/// Exec instances kept (Docker keeps them while their container lives); beyond it, the
/// oldest finished one goes, and with none finished a create is refused.
const MAX_EXECS: usize = 256;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: String,
    user: String,
    tty: bool,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    privileged: bool,
    detach_keys: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
}

/// One exec instance.
struct Exec {
    id: String,
    container: String,
    request: CreateBody,
    /// Creation order, for eviction.
    serial: u64,
    started: bool,
    running: bool,
    exit_code: Option<i32>,
    pid: Option<u32>,
    /// The master of its pty, while it runs with `Tty`.
    pty: Option<Arc<OwnedFd>>,
}

#[derive(Default)]
pub struct Execs {
    table: Mutex<(u64, HashMap<String, Exec>)>,
}

impl Execs {
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Exec) -> T) -> Result<T, ServiceError> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        // Docker takes an unambiguous prefix of an exec's id too.
        let key = match table.1.get(id) {
            Some(_) => id.to_string(),
            None => {
                let mut matching = table.1.keys().filter(|k| k.starts_with(id));
                match (matching.next(), matching.next(), id.is_empty()) {
                    (Some(k), None, false) => k.clone(),
                    _ => {
                        return Err(ServiceError::NotFound(format!(
                            "No such exec instance: {id}"
                        )))
                    }
                }
            }
        };
        Ok(f(table.1.get_mut(&key).expect("the key was just found")))
    }

    /// The exec ended: its code, and no terminal to resize any more.
    fn finish(&self, id: &str, code: i32) {
        let _ = self.with(id, |exec| {
            exec.running = false;
            exec.exit_code = Some(code);
            exec.pty = None;
        });
    }
}

fn random_id() -> Result<String, ServiceError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| ServiceError::Internal(format!("the OS random source: {e}")))?;
    Ok(hex::encode(bytes))
}

/// `POST /containers/{id}/exec`.
pub fn create(service: &Service, key: &str, body: &[u8]) -> Result<Response<Body>, ServiceError> {
    let request: CreateBody = serde_json::from_slice(body)
        .map_err(|e| ServiceError::BadRequest(format!("invalid JSON in the exec body: {e}")))?;
    if request.cmd.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(ServiceError::BadRequest("No exec command specified".into()));
    }
    super::create::check_env(request.env.as_deref().unwrap_or_default())?;
    if request.privileged {
        return Err(ServiceError::BadRequest(
            "Privileged is not supported by husk's exec".into(),
        ));
    }
    if !request.detach_keys.is_empty() {
        return Err(ServiceError::BadRequest(
            "DetachKeys is not supported by husk's exec".into(),
        ));
    }
    let record = service.runtime.containers()?.find(key)?;
    if record.effective_status() != Status::Running {
        return Err(ServiceError::Conflict(format!(
            "Container {} is not running",
            record.id
        )));
    }
    husk::runtime::container::pause::refuse_if_paused(&record, "exec")?;
    let id = random_id()?;
    let mut table = service
        .execs
        .table
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if table.1.len() >= MAX_EXECS {
        let oldest = table
            .1
            .values()
            .filter(|e| !e.running && (e.started || e.exit_code.is_some()))
            .min_by_key(|e| e.serial)
            .map(|e| e.id.clone());
        match oldest {
            Some(oldest) => {
                table.1.remove(&oldest);
            }
            None => {
                return Err(ServiceError::Conflict(format!(
                    "{MAX_EXECS} exec instances are open: start or finish some first"
                )))
            }
        }
    }
    table.0 += 1;
    let serial = table.0;
    table.1.insert(
        id.clone(),
        Exec {
            id: id.clone(),
            container: record.id,
            request,
            serial,
            started: false,
            running: false,
            exit_code: None,
            pid: None,
            pty: None,
        },
    );
    Ok(json(StatusCode::CREATED, &json!({ "Id": id })))
}

/// `GET /exec/{id}/json`.
pub fn inspect(service: &Service, id: &str) -> Result<Response<Body>, ServiceError> {
    service.execs.with(id, |exec| {
        let cmd = exec.request.cmd.clone().unwrap_or_default();
        json(
            StatusCode::OK,
            &json!({
                "ID": exec.id,
                "ContainerID": exec.container,
                "Running": exec.running,
                "ExitCode": exec.exit_code,
                "Pid": exec.pid.unwrap_or(0),
                "OpenStdin": exec.request.attach_stdin,
                "OpenStdout": exec.request.attach_stdout,
                "OpenStderr": exec.request.attach_stderr,
                "CanRemove": false,
                "DetachKeys": "",
                "ProcessConfig": {
                    "tty": exec.request.tty,
                    "entrypoint": cmd.first(),
                    "arguments": cmd.get(1..).unwrap_or_default(),
                    "privileged": false,
                    "user": exec.request.user,
                },
            }),
        )
    })
}

/// `POST /exec/{id}/resize?h=&w=`: the size of the exec's pty.
pub fn resize(
    service: &Service,
    id: &str,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ServiceError> {
    let dimension = |key: &str| -> Result<u16, ServiceError> {
        query
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ServiceError::BadRequest(format!("invalid {key}: a number 0-65535")))
    };
    let (rows, cols) = (dimension("h")?, dimension("w")?);
    let pty = service.execs.with(id, |exec| exec.pty.clone())?;
    let pty = pty.ok_or_else(|| {
        ServiceError::Conflict(format!("exec {id} is not running with a terminal"))
    })?;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we own from a pty master we hold open (the Arc).
    if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(ServiceError::Internal(format!(
            "resizing the terminal: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(empty(StatusCode::OK))
}

/// The `husk exec` command line for an exec instance.
fn command(service: &Service, exec: &Exec, detach: bool) -> Result<Command, ServiceError> {
    let mut command = service.husk_command()?;
    command.arg("exec");
    let request = &exec.request;
    if request.attach_stdin && !detach {
        command.arg("--interactive");
    }
    if request.tty && !detach {
        command.arg("--tty");
    }
    for entry in request.env.iter().flatten() {
        command.arg(format!("--env={entry}"));
    }
    if !request.working_dir.is_empty() {
        command.arg(format!("--workdir={}", request.working_dir));
    }
    if !request.user.is_empty() {
        command.arg(format!("--user={}", request.user));
    }
    command
        .arg(&exec.container)
        .args(request.cmd.iter().flatten());
    Ok(command)
}

fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> ServiceError {
    move |e| ServiceError::Internal(format!("{what}: {e}"))
}

/// The output of the exec's side of a pipe or pty, framed for the client until EOF (EIO on a
/// pty master once the exec's side has closed).
fn pump(
    mut from: std::fs::File,
    stream: Option<u8>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let chunk = match stream {
                None => Bytes::copy_from_slice(&buf[..n]),
                Some(stream) => {
                    let mut framed = Vec::with_capacity(8 + n);
                    framed.extend_from_slice(&[stream, 0, 0, 0]);
                    framed.extend_from_slice(&(n as u32).to_be_bytes());
                    framed.extend_from_slice(&buf[..n]);
                    Bytes::from(framed)
                }
            };
            if tx.blocking_send(chunk).is_err() {
                return;
            }
        }
    })
}

/// `POST /exec/{id}/start`: detached, the exec runs on its own and the answer is at once;
/// attached, the connection is hijacked and carries its stdio until it exits, its exit code
/// recorded before the stream ends (the CLI asks for it right after).
pub async fn start(
    service: Arc<Service>,
    id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ServiceError> {
    let (parts, incoming) = request.into_parts();
    let body = super::read_body(incoming).await?;
    let start: StartBody = match body.is_empty() {
        true => StartBody::default(),
        false => serde_json::from_slice(&body).map_err(|e| {
            ServiceError::BadRequest(format!("invalid JSON in the start body: {e}"))
        })?,
    };
    // Taken once: a second start is a conflict, as in Docker.
    let (id, mut command, tty, stdin) = {
        let service = Arc::clone(&service);
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            let (id, container, tty, stdin, started) = service.execs.with(&id, |exec| {
                let was = exec.started;
                exec.started = true;
                (
                    exec.id.clone(),
                    exec.container.clone(),
                    exec.request.tty,
                    exec.request.attach_stdin,
                    was,
                )
            })?;
            if started {
                return Err(ServiceError::Conflict(format!(
                    "exec {id} has already been started"
                )));
            }
            let record = service.runtime.containers()?.find(&container)?;
            if record.effective_status() != Status::Running {
                service.execs.finish(&id, 126);
                return Err(ServiceError::Conflict(format!(
                    "Container {} is not running",
                    record.id
                )));
            }
            let command = service
                .execs
                .with(&id, |exec| command(&service, exec, start.detach))??;
            Ok((id, command, tty, stdin))
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("the handler failed: {e}")))??
    };
    // Its own session: the service's signals and terminal are not its.
    let setsid = |command: &mut Command, controlling_tty: bool| {
        // SAFETY: the closure runs in the forked child before exec and only calls setsid and
        // ioctl, both async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };

    if start.detach {
        setsid(&mut command, false);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().map_err(io_error("starting husk exec"))?;
        let _ = service.execs.with(&id, |exec| {
            exec.running = true;
            exec.pid = Some(child.id());
        });
        let service = Arc::clone(&service);
        std::thread::spawn(move || {
            let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
            service.execs.finish(&id, code);
        });
        return Ok(empty(StatusCode::OK));
    }

    // Attached: the exec's stdio, and what the client's input goes to.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let (input, pumps, master) = if tty {
        let pty =
            nix::pty::openpty(None, None).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let slave = std::fs::File::from(pty.slave);
        let clone = |f: &std::fs::File| f.try_clone().map_err(io_error("the pty"));
        command
            .stdin(clone(&slave)?)
            .stdout(clone(&slave)?)
            .stderr(slave);
        setsid(&mut command, true);
        let master = Arc::new(pty.master);
        let reader = std::fs::File::from(master.try_clone().map_err(io_error("the pty"))?);
        let writer = std::fs::File::from(master.try_clone().map_err(io_error("the pty"))?);
        (stdin.then_some(writer), vec![(reader, None)], Some(master))
    } else {
        let (out_read, out_write) =
            nix::unistd::pipe().map_err(|e| ServiceError::Internal(e.to_string()))?;
        let (err_read, err_write) =
            nix::unistd::pipe().map_err(|e| ServiceError::Internal(e.to_string()))?;
        let input = match stdin {
            true => {
                let (in_read, in_write) =
                    nix::unistd::pipe().map_err(|e| ServiceError::Internal(e.to_string()))?;
                command.stdin(in_read);
                Some(std::fs::File::from(in_write))
            }
            false => {
                command.stdin(Stdio::null());
                None
            }
        };
        command.stdout(out_write).stderr(err_write);
        setsid(&mut command, false);
        let pumps = vec![
            (std::fs::File::from(out_read), Some(1u8)),
            (std::fs::File::from(err_read), Some(2u8)),
        ];
        (input, pumps, None)
    };
    let mut child = command.spawn().map_err(io_error("starting husk exec"))?;
    // The command holds its ends now: ours close, so the pumps see EOF when it exits.
    drop(command);
    let _ = service.execs.with(&id, |exec| {
        exec.running = true;
        exec.pid = Some(child.id());
        exec.pty = master.clone();
    });
    let pumps: Vec<_> = pumps
        .into_iter()
        .map(|(from, stream)| pump(from, stream, tx.clone()))
        .collect();
    drop(tx);
    let (exited_tx, exited_rx) = tokio::sync::oneshot::channel::<()>();
    {
        let service = Arc::clone(&service);
        let id = id.clone();
        std::thread::spawn(move || {
            let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
            for pump in pumps {
                let _ = pump.join();
            }
            service.execs.finish(&id, code);
            let _ = exited_tx.send(());
        });
    }
    let request = Request::from_parts(parts, ());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let (mut from_client, mut to_client) =
            tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        if let Some(input) = input {
            tokio::spawn(async move {
                let mut input = tokio::fs::File::from_std(input);
                let _ = tokio::io::copy(&mut from_client, &mut input).await;
                // Dropped: the exec's stdin ends with the client's (a pty keeps it).
            });
        }
        while let Some(chunk) = rx.recv().await {
            if to_client.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = exited_rx.await;
        let _ = to_client.shutdown().await;
    });
    let mut response = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert("Connection", "Upgrade".parse().expect("a valid header"));
    headers.insert("Upgrade", "tcp".parse().expect("a valid header"));
    headers.insert(
        "Content-Type",
        "application/vnd.docker.raw-stream"
            .parse()
            .expect("a valid header"),
    );
    Ok(response)
}
