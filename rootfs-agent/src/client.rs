//! Blocking host-side client for the agent protocol, over any reader/writer pair (the two
//! halves of a `UnixStream`, typically).
//!
//! One thread reads frames and delivers stdout/stderr to each process's sinks, granting credit
//! back as it writes them (so a slow sink slows the guest, never grows a buffer here). Each
//! process with stdin gets a thread that sends it within the agent's window.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use crate::protocol::{
    read_frame, ErrorReport, ExitStatus, Frame, FrameKind, ProcessSpec, ProtocolError, ReadyInfo,
    ResizeRequest, SignalRequest, StartRequest, Started, INITIAL_WINDOW, MAX_DATA_CHUNK,
    MAX_ETC_FILE,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("guest agent reported: {0}")]
    Agent(String),
    #[error("guest agent connection closed before process {0} exited{1}")]
    Closed(u32, String),
    #[error("guest agent did not say it was ready (got {0:?} first)")]
    NotReady(FrameKind),
    #[error("guest agent closed the connection before it was ready")]
    NoReady,
    #[error("writing to the guest agent: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T> = std::result::Result<T, ClientError>;

type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Where a process's stdio goes on the host.
pub struct ProcessIo {
    /// Read to EOF and forwarded; `None` closes the process's stdin at once.
    pub stdin: Option<Box<dyn Read + Send>>,
    pub stdout: Box<dyn Write + Send>,
    pub stderr: Box<dyn Write + Send>,
}

#[derive(Default)]
struct ProcState {
    stdout: Option<Sink>,
    stderr: Option<Sink>,
    stdin_credit: u64,
    /// What the agent may still send of this process's output before our next credit: the
    /// agent is held to the window it was granted, as it holds us to its stdin window.
    output_window: u64,
    pid: Option<i32>,
    exit: Option<i32>,
    /// The agent's word that the container's cgroup saw an OOM kill, sent with the exit.
    oom_killed: bool,
    error: Option<String>,
}

#[derive(Default)]
struct State {
    procs: HashMap<u32, ProcState>,
    /// Set when the reader stops: why the session ended.
    closed: Option<String>,
    next_id: u32,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    writer: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, frame: &Frame) -> Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&frame.encode())?;
        w.flush()?;
        Ok(())
    }
}

/// A connected agent session.
pub struct AgentClient {
    shared: Arc<Shared>,
    ready: ReadyInfo,
}

impl AgentClient {
    /// Wait for the agent's `Ready` frame on `reader`, then serve the session in a background
    /// thread. Any read timeout set on the underlying stream applies to the whole session.
    pub fn connect<R, W>(mut reader: R, writer: W) -> Result<AgentClient>
    where
        R: Read + Send + 'static,
        W: Write + Send + 'static,
    {
        let frame = read_frame(&mut reader)?.ok_or(ClientError::NoReady)?;
        if frame.kind != FrameKind::Ready {
            return Err(ClientError::NotReady(frame.kind));
        }
        let ready: ReadyInfo = frame.parse_json(FrameKind::Ready)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            writer: Mutex::new(Box::new(writer)),
        });
        let for_reader = Arc::clone(&shared);
        thread::Builder::new()
            .name("husk-agent-reader".into())
            .spawn(move || reader_loop(reader, for_reader))?;
        Ok(AgentClient { shared, ready })
    }

    pub fn ready(&self) -> &ReadyInfo {
        &self.ready
    }

    /// Start the container process (process 0). Only once per session.
    pub fn start(&self, req: &StartRequest, io: ProcessIo) -> Result<Process> {
        req.validate()?;
        let frame = Frame::json(FrameKind::Start, 0, req)?;
        self.launch(0, frame, io)
    }

    /// Run an extra process in the running guest.
    /// Send the container's /etc/hosts again (a member of its network came or went).
    pub fn update_hosts(&self, hosts: &str) -> Result<()> {
        if hosts.len() > MAX_ETC_FILE {
            return Err(ProtocolError::Invalid {
                what: "hosts file",
                why: format!("over {MAX_ETC_FILE} bytes"),
            }
            .into());
        }
        self.shared
            .send(&Frame::new(FrameKind::Hosts, 0, hosts.as_bytes().to_vec()))
    }

    pub fn exec(&self, spec: &ProcessSpec, io: ProcessIo) -> Result<Process> {
        spec.validate()?;
        let id = {
            let mut st = self.shared.lock();
            st.next_id = st.next_id.max(1);
            let id = st.next_id;
            st.next_id += 1;
            id
        };
        let frame = Frame::json(FrameKind::Exec, id, spec)?;
        self.launch(id, frame, io)
    }

    fn launch(&self, id: u32, frame: Frame, io: ProcessIo) -> Result<Process> {
        {
            let mut st = self.shared.lock();
            if let Some(why) = &st.closed {
                return Err(ClientError::Closed(id, format!(": {why}")));
            }
            st.procs.insert(
                id,
                ProcState {
                    stdout: Some(Arc::new(Mutex::new(io.stdout))),
                    stderr: Some(Arc::new(Mutex::new(io.stderr))),
                    stdin_credit: u64::from(INITIAL_WINDOW),
                    output_window: u64::from(INITIAL_WINDOW),
                    ..ProcState::default()
                },
            );
        }
        self.shared.send(&frame)?;
        match io.stdin {
            None => {
                // The process may already be over (a program that does not exist) and the agent
                // gone; `wait` reports that, so a failed EOF is not a failed start.
                let _ = self
                    .shared
                    .send(&Frame::new(FrameKind::StdinEof, id, Vec::new()));
            }
            Some(stdin) => {
                let shared = Arc::clone(&self.shared);
                // Detached on purpose: a terminal stdin may block in read long after the process
                // is gone; the thread ends at its next read.
                thread::Builder::new()
                    .name(format!("husk-agent-stdin-{id}"))
                    .spawn(move || stdin_loop(stdin, id, shared))?;
            }
        }
        Ok(Process {
            id,
            shared: Arc::clone(&self.shared),
        })
    }
}

/// A process in the guest.
pub struct Process {
    id: u32,
    shared: Arc<Shared>,
}

impl Process {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The guest pid, once the agent has started the process (`None` if it failed to start).
    pub fn pid(&self) -> Result<Option<i32>> {
        let mut st = self.shared.lock();
        loop {
            let p = st.procs.get(&self.id);
            if let Some(pid) = p.and_then(|p| p.pid) {
                return Ok(Some(pid));
            }
            if p.is_some_and(|p| p.exit.is_some() || p.error.is_some()) {
                return Ok(None);
            }
            if let Some(why) = &st.closed {
                return Err(ClientError::Closed(self.id, format!(": {why}")));
            }
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Wait for the exit code (shell style: 128+N after signal N).
    pub fn wait(&self) -> Result<i32> {
        self.wait_status().map(|exit| exit.code)
    }

    /// Wait for the exit: its code and whether the guest's OOM killer acted.
    pub fn wait_status(&self) -> Result<ExitStatus> {
        let mut st = self.shared.lock();
        loop {
            if let Some(p) = st.procs.get(&self.id) {
                if let Some(code) = p.exit {
                    return Ok(ExitStatus {
                        code,
                        oom_killed: p.oom_killed,
                    });
                }
                if let Some(err) = &p.error {
                    return Err(ClientError::Agent(err.clone()));
                }
            }
            if let Some(why) = &st.closed {
                return Err(ClientError::Closed(self.id, format!(": {why}")));
            }
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn signal(&self, signal: i32) -> Result<()> {
        self.shared.send(&Frame::json(
            FrameKind::Signal,
            self.id,
            &SignalRequest { signal, all: false },
        )?)
    }

    /// Signal every process of the container (this must be its process 0), as `kill --all`.
    pub fn signal_all(&self, signal: i32) -> Result<()> {
        self.shared.send(&Frame::json(
            FrameKind::Signal,
            self.id,
            &SignalRequest { signal, all: true },
        )?)
    }

    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        self.shared.send(&Frame::json(
            FrameKind::Resize,
            self.id,
            &ResizeRequest { rows, cols },
        )?)
    }
}

fn stdin_loop(mut stdin: Box<dyn Read + Send>, id: u32, shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATA_CHUNK];
    loop {
        // Wait for window before reading, so at most one chunk is ever held here.
        let allowed = {
            let mut st = shared.lock();
            loop {
                let Some(p) = st.procs.get(&id) else { return };
                if p.exit.is_some() || p.error.is_some() || st.closed.is_some() {
                    return;
                }
                if p.stdin_credit > 0 {
                    break p.stdin_credit.min(MAX_DATA_CHUNK as u64) as usize;
                }
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let n = match stdin.read(&mut buf[..allowed]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        let frame = if n == 0 {
            Frame::new(FrameKind::StdinEof, id, Vec::new())
        } else {
            Frame::new(FrameKind::Stdin, id, buf[..n].to_vec())
        };
        {
            let mut st = shared.lock();
            match st.procs.get_mut(&id) {
                Some(p) if p.exit.is_none() => p.stdin_credit -= n as u64,
                _ => return,
            }
        }
        if shared.send(&frame).is_err() || n == 0 {
            return;
        }
    }
}

fn reader_loop<R: Read>(mut reader: R, shared: Arc<Shared>) {
    let why = loop {
        match read_frame(&mut reader) {
            Ok(None) => break "the agent hung up".to_string(),
            Err(e) => break e.to_string(),
            Ok(Some(frame)) => {
                if let Err(e) = deliver(&shared, frame) {
                    break e.to_string();
                }
            }
        }
    };
    let mut st = shared.lock();
    st.closed = Some(why);
    shared.changed.notify_all();
}

fn deliver(shared: &Shared, frame: Frame) -> Result<()> {
    let id = frame.id;
    let unknown = || ProtocolError::OutOfOrder {
        kind: frame.kind,
        id,
        why: "no such process on this side",
    };
    match frame.kind {
        FrameKind::Stdout | FrameKind::Stderr => {
            let len = frame.payload.len() as u64;
            let sink = {
                let mut st = shared.lock();
                let p = st.procs.get_mut(&id).ok_or_else(unknown)?;
                if len > p.output_window {
                    return Err(ProtocolError::OutOfOrder {
                        kind: frame.kind,
                        id,
                        why: "output beyond the granted window",
                    }
                    .into());
                }
                p.output_window -= len;
                if frame.kind == FrameKind::Stdout {
                    p.stdout.clone()
                } else {
                    p.stderr.clone()
                }
            };
            if let Some(sink) = sink {
                let mut w = sink.lock().unwrap_or_else(|p| p.into_inner());
                // A sink that fails (closed pipe) drops output, like a closed terminal would.
                let _ = w.write_all(&frame.payload).and_then(|_| w.flush());
            }
            // The agent may already be gone after its last output (its Exit is still queued in
            // our receive buffer), so a failed credit is not an error; a dead connection shows
            // up on the next read.
            let _ = shared.send(&Frame::credit(id, len as u32));
            if let Some(p) = shared.lock().procs.get_mut(&id) {
                p.output_window += len;
            }
        }
        FrameKind::Credit => {
            let more = frame.credit_value()?;
            let mut st = shared.lock();
            // Credit for a process we already saw exit is harmless.
            if let Some(p) = st.procs.get_mut(&id) {
                p.stdin_credit = (p.stdin_credit + u64::from(more)).min(u64::from(u32::MAX));
                shared.changed.notify_all();
            }
        }
        FrameKind::Started => {
            let started: Started = frame.parse_json(FrameKind::Started)?;
            let mut st = shared.lock();
            st.procs.get_mut(&id).ok_or_else(unknown)?.pid = Some(started.pid);
            shared.changed.notify_all();
        }
        FrameKind::Exit => {
            let exit: ExitStatus = frame.parse_json(FrameKind::Exit)?;
            let mut st = shared.lock();
            let p = st.procs.get_mut(&id).ok_or_else(unknown)?;
            p.exit = Some(exit.code);
            p.oom_killed = exit.oom_killed;
            shared.changed.notify_all();
        }
        FrameKind::Error => {
            let report: ErrorReport = frame.parse_json(FrameKind::Error)?;
            let mut st = shared.lock();
            match st.procs.get_mut(&id) {
                Some(p) => p.error = Some(report.message),
                None => return Err(ClientError::Agent(report.message)),
            }
            shared.changed.notify_all();
        }
        FrameKind::Ready
        | FrameKind::Start
        | FrameKind::Exec
        | FrameKind::Stdin
        | FrameKind::StdinEof
        | FrameKind::Signal
        | FrameKind::Resize
        | FrameKind::Hosts => {
            return Err(ProtocolError::OutOfOrder {
                kind: frame.kind,
                id,
                why: "the agent may not send this",
            }
            .into());
        }
    }
    Ok(())
}
