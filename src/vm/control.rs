//! The control protocol between a VM container's supervisor (the process that holds the VM)
//! and the husk commands that reach it: `kill`/`stop`/`rm -f` send a signal, `exec` (and
//! `top`/`cp`, which run husk's helpers in the guest) runs a process and gets its output back.
//!
//! One request line, then for `exec` a stream of frames from the supervisor: kind (1 stdout,
//! 2 stderr, 3 exit code, 4 error) + u32 little-endian length + payload, each bounded. An exec
//! with a terminal names a session, and its requester sends `resize SESSION ROWS COLS` on a
//! connection of its own when its window changes. Any
//! local user with access to the socket's directory (root only: /run/husk is 0700) can write
//! to it and a confused supervisor can answer anything, so both directions are parsed by the
//! pure functions below, which never panic and never allocate more than their bound
//! (fuzz/fuzz_targets/control_protocol.rs).

use std::io::{Read, Write};

use rootfs_agent::protocol::ProcessSpec;

/// Largest request line and largest frame payload either side accepts.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;
/// Bytes of a frame header: kind + length.
pub const FRAME_HEADER: usize = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("the control request is longer than {MAX_CONTROL_FRAME} bytes")]
    RequestTooLong,
    #[error("the control request is not UTF-8")]
    NotText,
    #[error("unknown control request {0:?}")]
    UnknownRequest(String),
    #[error("signal {0:?} is not a signal number from 1 to 64")]
    BadSignal(String),
    #[error("bad exec request: {0}")]
    BadExec(String),
    #[error("bad resize request {0:?}: resize SESSION ROWS COLS, sizes 1..=65535")]
    BadResize(String),
    #[error("the container's supervisor sent a frame of {0} bytes, over the bound")]
    OversizedFrame(usize),
    #[error("the container's supervisor sent an unknown frame kind {0}")]
    UnknownFrame(u8),
    #[error("the container's supervisor sent an exit frame of {0} bytes (4 expected)")]
    BadExitFrame(usize),
    #[error("the container's supervisor closed the exec session")]
    Closed,
    #[error("the container's supervisor: {0}")]
    Io(String),
}

/// What `husk exec` (or husk itself, for `top` and `cp`) asks the supervisor to run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub process: ProcessSpec,
    /// The requester's stream after the request line is the process's stdin.
    pub interactive: bool,
    /// Kill the process when the requester hangs up: husk's own helpers (`cp`'s tar, `top`'s
    /// ps), whose output nobody reads once the requester is gone. A user's `exec` lives on,
    /// as in Docker.
    #[serde(default)]
    pub kill_on_hangup: bool,
    /// A token the requester picks when the process has a terminal, by which it later asks
    /// for window-size changes (`resize`): the exec stream itself carries only stdin.
    #[serde(default)]
    pub session: Option<String>,
}

/// Bytes of a session token's hex text.
pub const SESSION_LEN: usize = 16;

/// A new session token: 8 random bytes, hex.
pub fn new_session() -> Option<String> {
    let mut bytes = [0u8; SESSION_LEN / 2];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

fn is_session(token: &str) -> bool {
    token.len() == SESSION_LEN
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    Signal(i32),
    /// The signal to every process of the container in the guest (`kill --all`).
    SignalAll(i32),
    Exec(Box<ExecRequest>),
    /// The container's /etc/hosts again (a member of its network came or went).
    Hosts(String),
    /// The terminal of the exec session `session` is now `rows` x `cols`.
    Resize {
        session: String,
        rows: u16,
        cols: u16,
    },
    /// The terminal of the container's own process (`docker run -it`, resized through the
    /// Engine API) is now `rows` x `cols`: `resize process ROWS COLS` ("process" is not hex,
    /// so it is never a session).
    ResizeProcess {
        rows: u16,
        cols: u16,
    },
}

impl ControlRequest {
    /// The request line, newline included.
    pub fn encode(&self) -> Vec<u8> {
        let mut line = match self {
            ControlRequest::Signal(signal) => format!("signal {signal}").into_bytes(),
            ControlRequest::SignalAll(signal) => format!("signal-all {signal}").into_bytes(),
            ControlRequest::Exec(request) => {
                let json = serde_json::to_string(request).unwrap_or_default();
                format!("exec {json}").into_bytes()
            }
            ControlRequest::Hosts(text) => {
                let json = serde_json::to_string(text).unwrap_or_default();
                format!("hosts {json}").into_bytes()
            }
            ControlRequest::Resize {
                session,
                rows,
                cols,
            } => format!("resize {session} {rows} {cols}").into_bytes(),
            ControlRequest::ResizeProcess { rows, cols } => {
                format!("resize process {rows} {cols}").into_bytes()
            }
        };
        line.push(b'\n');
        line
    }

    /// Parse a request line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Self, ControlError> {
        if line.len() > MAX_CONTROL_FRAME {
            return Err(ControlError::RequestTooLong);
        }
        let text = std::str::from_utf8(line).map_err(|_| ControlError::NotText)?;
        if let Some(json) = text.strip_prefix("exec ") {
            let request: ExecRequest =
                serde_json::from_str(json).map_err(|e| ControlError::BadExec(e.to_string()))?;
            request
                .process
                .validate()
                .map_err(|e| ControlError::BadExec(e.to_string()))?;
            if request.session.as_deref().is_some_and(|t| !is_session(t)) {
                return Err(ControlError::BadExec(format!(
                    "a session is {SESSION_LEN} hex digits"
                )));
            }
            return Ok(ControlRequest::Exec(Box::new(request)));
        }
        if let Some(json) = text.strip_prefix("hosts ") {
            let hosts: String =
                serde_json::from_str(json).map_err(|e| ControlError::BadExec(e.to_string()))?;
            return Ok(ControlRequest::Hosts(hosts));
        }
        if let Some(rest) = text.strip_prefix("resize ") {
            let mut words = rest.split(' ');
            let parsed = match (words.next(), words.next(), words.next(), words.next()) {
                (Some(session), Some(rows), Some(cols), None)
                    if is_session(session) || session == "process" =>
                {
                    match (rows.parse::<u16>(), cols.parse::<u16>()) {
                        (Ok(rows), Ok(cols)) if rows > 0 && cols > 0 => Some((session, rows, cols)),
                        _ => None,
                    }
                }
                _ => None,
            };
            return match parsed {
                Some(("process", rows, cols)) => Ok(ControlRequest::ResizeProcess { rows, cols }),
                Some((session, rows, cols)) => Ok(ControlRequest::Resize {
                    session: session.to_string(),
                    rows,
                    cols,
                }),
                None => Err(ControlError::BadResize(rest.chars().take(48).collect())),
            };
        }
        for (prefix, all) in [("signal ", false), ("signal-all ", true)] {
            if let Some(number) = text.trim_end().strip_prefix(prefix) {
                return match number.parse::<i32>() {
                    Ok(signal) if (1..=64).contains(&signal) => Ok(if all {
                        ControlRequest::SignalAll(signal)
                    } else {
                        ControlRequest::Signal(signal)
                    }),
                    _ => Err(ControlError::BadSignal(number.chars().take(32).collect())),
                };
            }
        }
        Err(ControlError::UnknownRequest(
            text.chars().take(32).collect(),
        ))
    }
}

/// Read one request line without reading past it (what follows is the exec's stdin). None
/// when the peer hung up first.
pub fn read_request_line(conn: &mut impl Read) -> Result<Option<Vec<u8>>, ControlError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match conn.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) if byte[0] == b'\n' => return Ok(Some(line)),
            Ok(_) if line.len() == MAX_CONTROL_FRAME => return Err(ControlError::RequestTooLong),
            Ok(_) => line.push(byte[0]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(ControlError::Io(err.to_string())),
        }
    }
}

/// One frame of an exec session, supervisor to requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecFrame {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
    Error(String),
}

const FRAME_STDOUT: u8 = 1;
const FRAME_STDERR: u8 = 2;
const FRAME_EXIT: u8 = 3;
const FRAME_ERROR: u8 = 4;

impl ExecFrame {
    /// Wire bytes; output larger than a frame becomes several frames.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, &[u8]) = match self {
            ExecFrame::Stdout(bytes) => (FRAME_STDOUT, bytes),
            ExecFrame::Stderr(bytes) => (FRAME_STDERR, bytes),
            ExecFrame::Exit(code) => return frame(FRAME_EXIT, &code.to_le_bytes()),
            ExecFrame::Error(text) => {
                let bytes = text.as_bytes();
                let cut = bytes.len().min(MAX_CONTROL_FRAME);
                return frame(FRAME_ERROR, &bytes[..cut]);
            }
        };
        let mut out = Vec::with_capacity(payload.len() + FRAME_HEADER);
        for chunk in payload.chunks(MAX_CONTROL_FRAME) {
            out.extend(frame(kind, chunk));
        }
        out
    }

    /// Check a header: the kind and a payload length within its bound.
    pub fn check_header(header: [u8; FRAME_HEADER]) -> Result<(u8, usize), ControlError> {
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_CONTROL_FRAME {
            return Err(ControlError::OversizedFrame(len));
        }
        match header[0] {
            FRAME_STDOUT | FRAME_STDERR | FRAME_ERROR => Ok((header[0], len)),
            FRAME_EXIT if len == 4 => Ok((header[0], len)),
            FRAME_EXIT => Err(ControlError::BadExitFrame(len)),
            other => Err(ControlError::UnknownFrame(other)),
        }
    }

    /// A frame from a checked header and its payload.
    pub fn from_parts(kind: u8, payload: Vec<u8>) -> Result<Self, ControlError> {
        match kind {
            FRAME_STDOUT => Ok(ExecFrame::Stdout(payload)),
            FRAME_STDERR => Ok(ExecFrame::Stderr(payload)),
            FRAME_EXIT => match <[u8; 4]>::try_from(payload.as_slice()) {
                Ok(bytes) => Ok(ExecFrame::Exit(i32::from_le_bytes(bytes))),
                Err(_) => Err(ControlError::BadExitFrame(payload.len())),
            },
            FRAME_ERROR => Ok(ExecFrame::Error(
                String::from_utf8_lossy(&payload).into_owned(),
            )),
            other => Err(ControlError::UnknownFrame(other)),
        }
    }

    /// Read the next frame; `Closed` when the stream ends, even inside a frame.
    pub fn read(conn: &mut impl Read) -> Result<Self, ControlError> {
        let mut header = [0u8; FRAME_HEADER];
        conn.read_exact(&mut header)
            .map_err(|_| ControlError::Closed)?;
        let (kind, len) = Self::check_header(header)?;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload)
            .map_err(|_| ControlError::Closed)?;
        Self::from_parts(kind, payload)
    }

    pub fn write(&self, conn: &mut impl Write) -> std::io::Result<()> {
        conn.write_all(&self.encode())
    }
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + FRAME_HEADER);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Follow an exec session to its end: output to the writers, the exit code returned.
pub fn follow_exec(
    conn: &mut impl Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<i32, ControlError> {
    let io = |err: std::io::Error| ControlError::Io(err.to_string());
    loop {
        match ExecFrame::read(conn)? {
            ExecFrame::Stdout(bytes) => {
                stdout.write_all(&bytes).map_err(io)?;
                stdout.flush().map_err(io)?;
            }
            ExecFrame::Stderr(bytes) => stderr.write_all(&bytes).map_err(io)?,
            ExecFrame::Exit(code) => return Ok(code),
            ExecFrame::Error(text) => return Err(ControlError::Io(text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_named() {
        for signal in [ControlRequest::Signal(15), ControlRequest::SignalAll(9)] {
            let wire = signal.encode();
            assert_eq!(ControlRequest::parse(&wire[..wire.len() - 1]), Ok(signal));
        }
        assert!(matches!(
            ControlRequest::parse(b"signal-all 99"),
            Err(ControlError::BadSignal(_))
        ));
        let exec = ControlRequest::Exec(Box::new(ExecRequest {
            process: ProcessSpec::new(vec!["ps"]),
            interactive: true,
            kill_on_hangup: true,
            session: None,
        }));
        let wire = exec.encode();
        assert_eq!(ControlRequest::parse(&wire[..wire.len() - 1]), Ok(exec));
        let session = new_session().unwrap();
        let resize = ControlRequest::Resize {
            session: session.clone(),
            rows: 50,
            cols: 132,
        };
        let wire = resize.encode();
        assert_eq!(ControlRequest::parse(&wire[..wire.len() - 1]), Ok(resize));
        let main = ControlRequest::ResizeProcess {
            rows: 40,
            cols: 120,
        };
        let wire = main.encode();
        assert_eq!(ControlRequest::parse(&wire[..wire.len() - 1]), Ok(main));
        assert!(ControlRequest::parse(b"resize process 0 80").is_err());
        for bad in [
            format!("resize {session} 0 80"),
            format!("resize {session} 24"),
            format!("resize {session} 24 80 1"),
            format!("resize {session} 70000 80"),
            "resize ../../etc 24 80".to_string(),
        ] {
            assert!(
                matches!(
                    ControlRequest::parse(bad.as_bytes()),
                    Err(ControlError::BadResize(_))
                ),
                "{bad}"
            );
        }
        let mut with_bad_session = ExecRequest {
            process: ProcessSpec::new(vec!["sh"]),
            interactive: true,
            kill_on_hangup: false,
            session: Some("not-hex".into()),
        };
        let wire = ControlRequest::Exec(Box::new(with_bad_session.clone())).encode();
        assert!(matches!(
            ControlRequest::parse(&wire[..wire.len() - 1]),
            Err(ControlError::BadExec(_))
        ));
        with_bad_session.session = Some(session);
        let wire = ControlRequest::Exec(Box::new(with_bad_session)).encode();
        assert!(ControlRequest::parse(&wire[..wire.len() - 1]).is_ok());
        assert!(matches!(
            ControlRequest::parse(b"signal 0"),
            Err(ControlError::BadSignal(_))
        ));
        assert!(matches!(
            ControlRequest::parse(b"signal 65"),
            Err(ControlError::BadSignal(_))
        ));
        assert!(matches!(
            ControlRequest::parse(b"reboot"),
            Err(ControlError::UnknownRequest(_))
        ));
        assert!(matches!(
            ControlRequest::parse(b"exec {\"process\":1}"),
            Err(ControlError::BadExec(_))
        ));
        assert_eq!(
            ControlRequest::parse(&[0xff, 0xfe]),
            Err(ControlError::NotText)
        );
    }

    #[test]
    fn a_request_line_is_bounded() {
        let long = vec![b'a'; MAX_CONTROL_FRAME + 10];
        assert_eq!(
            read_request_line(&mut &long[..]),
            Err(ControlError::RequestTooLong)
        );
        let mut two = &b"signal 9\nrest"[..];
        assert_eq!(read_request_line(&mut two), Ok(Some(b"signal 9".to_vec())));
        assert_eq!(two, b"rest", "nothing past the line is read");
        assert_eq!(read_request_line(&mut &b"signal"[..]), Ok(None));
    }

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let big = vec![7u8; MAX_CONTROL_FRAME + 3];
        let mut wire = ExecFrame::Stdout(big).encode();
        wire.extend(ExecFrame::Stderr(b"err".to_vec()).encode());
        wire.extend(ExecFrame::Exit(42).encode());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(follow_exec(&mut &wire[..], &mut out, &mut err), Ok(42));
        assert_eq!(
            (out.len(), err.as_slice()),
            (MAX_CONTROL_FRAME + 3, &b"err"[..])
        );

        let oversized = [FRAME_STDOUT, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(
            ExecFrame::read(&mut &oversized[..]),
            Err(ControlError::OversizedFrame(_))
        ));
        let short_exit = frame(FRAME_EXIT, &[1, 2]);
        assert_eq!(
            ExecFrame::read(&mut &short_exit[..]),
            Err(ControlError::BadExitFrame(2))
        );
        assert_eq!(
            ExecFrame::read(&mut &frame(9, b"")[..]),
            Err(ControlError::UnknownFrame(9))
        );
        let cut = &ExecFrame::Stdout(b"hello".to_vec()).encode()[..7];
        assert_eq!(ExecFrame::read(&mut &cut[..]), Err(ControlError::Closed));
        let error = ExecFrame::Error("no such file".into()).encode();
        assert_eq!(
            follow_exec(&mut &error[..], &mut Vec::new(), &mut Vec::new()),
            Err(ControlError::Io("no such file".into()))
        );
    }

    /// The fuzz target's property (fuzz/fuzz_targets/control_protocol.rs) on inputs from a
    /// deterministic generator, in every test run: valid encodings with bytes flipped, cut
    /// or appended, and plain noise. Nothing panics; nothing over a bound is accepted.
    #[test]
    fn arbitrary_bytes_never_panic_the_parsers() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: Vec<Vec<u8>> = vec![
            [
                ControlRequest::Signal(9).encode(),
                ControlRequest::SignalAll(15).encode(),
                ControlRequest::Resize {
                    session: "0123456789abcdef".into(),
                    rows: 24,
                    cols: 80,
                }
                .encode(),
            ]
            .concat(),
            ControlRequest::Exec(Box::new(ExecRequest {
                process: ProcessSpec::new(vec!["tar", "-cf", "-"]),
                interactive: false,
                kill_on_hangup: true,
                session: new_session(),
            }))
            .encode(),
            [
                ExecFrame::Stdout(b"out".to_vec()).encode(),
                ExecFrame::Exit(3).encode(),
            ]
            .concat(),
        ];
        for round in 0..20_000u64 {
            let mut input = match round % 4 {
                3 => (0..next() % 64).map(|_| next() as u8).collect(),
                n => seeds[n as usize].clone(),
            };
            for _ in 0..next() % 4 {
                if input.is_empty() {
                    break;
                }
                let at = (next() as usize) % input.len();
                match next() % 3 {
                    0 => input[at] = next() as u8,
                    1 => input.truncate(at),
                    _ => input.insert(at, next() as u8),
                }
            }
            let mut lines = &input[..];
            while let Ok(Some(line)) = read_request_line(&mut lines) {
                if let Ok(request) = ControlRequest::parse(&line) {
                    let wire = request.encode();
                    assert_eq!(ControlRequest::parse(&wire[..wire.len() - 1]), Ok(request));
                }
            }
            let mut frames = &input[..];
            while let Ok(frame) = ExecFrame::read(&mut frames) {
                if let ExecFrame::Stdout(bytes) | ExecFrame::Stderr(bytes) = frame {
                    assert!(bytes.len() <= MAX_CONTROL_FRAME);
                }
            }
        }
    }
}
