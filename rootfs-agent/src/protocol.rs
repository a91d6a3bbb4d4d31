//! The host<->agent wire protocol.
//!
//! Every frame is a fixed 16-byte header followed by a bounded payload:
//!
//! ```text
//! offset  size  field
//! 0       4     magic   b"HUSK"
//! 4       1     version PROTOCOL_VERSION
//! 5       1     kind    FrameKind
//! 6       2     flags   must be zero (room for later versions)
//! 8       4     id      process id inside the session (0 = the container process), LE
//! 12      4     length  payload length, LE, at most MAX_PAYLOAD
//! ```
//!
//! Control messages carry JSON payloads; stream data carries raw bytes; credits carry a u32.
//! Stream data is flow controlled: a sender may only send as many data bytes for a process as the
//! receiver has granted through `Credit` frames (each side starts with [`INITIAL_WINDOW`]), so
//! neither side ever has to buffer more than a window per process.
//!
//! Both peers treat the other as hostile: [`Decoder`] validates the header before it reserves
//! memory for a payload and never holds more than one frame.

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub use crate::confine::{validate_filters, BpfInstruction, CapabilityNames};

pub const MAGIC: [u8; 4] = *b"HUSK";
pub const PROTOCOL_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 16;
/// Upper bound for any payload, control or data.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Largest data frame a well-behaved peer sends; smaller than the window so several frames can
/// be in flight.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;
/// Bytes of stream data each side may send per process before it receives a credit.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Limits on what a process description may contain, checked by [`ProcessSpec::validate`].
pub const MAX_ARGS: usize = 4096;
pub const MAX_ENV: usize = 4096;
pub const MAX_GROUPS: usize = 64;
pub const MAX_RLIMITS: usize = 32;
/// Volumes, binds and tmpfs mounts one container may ask for.
pub const MAX_MOUNTS: usize = 64;
/// Masked plus read-only paths one container may ask for.
pub const MAX_MASKED_PATHS: usize = 128;
/// A virtio-fs tag is at most 36 bytes (the device's config space, virtio 1.2 5.11.4).
pub const MAX_FS_TAG: usize = 36;
/// The virtio-fs tag the agent boots into as the container's root when the host offers it
/// (an OCI bundle's root directory) instead of image and writable disks.
pub const ROOT_SHARE_TAG: &str = "husk-root";

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("bad frame magic {0:02x?} (not a husk agent stream)")]
    BadMagic([u8; 4]),
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    BadVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("reserved frame flags set: {0:#x}")]
    BadFlags(u16),
    #[error("frame payload of {len} bytes exceeds the {max}-byte limit for {kind:?}")]
    TooLarge {
        kind: FrameKind,
        len: usize,
        max: usize,
    },
    #[error("frame {kind:?} needs a payload of exactly {want} bytes, got {got}")]
    BadLength {
        kind: FrameKind,
        want: usize,
        got: usize,
    },
    #[error("malformed {kind:?} message: {source}")]
    BadJson {
        kind: FrameKind,
        source: serde_json::Error,
    },
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("unexpected {kind:?} frame for process {id}: {why}")]
    OutOfOrder {
        kind: FrameKind,
        id: u32,
        why: &'static str,
    },
    #[error("peer closed the connection in the middle of a frame")]
    Truncated,
    #[error("agent connection I/O: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T> = std::result::Result<T, ProtocolError>;

/// What a frame carries; the direction is noted for each kind and enforced by the peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// agent -> host, JSON [`ReadyInfo`]: the guest is set up and waits for `Start`.
    Ready = 1,
    /// host -> agent, JSON [`StartRequest`] for process 0.
    Start = 2,
    /// host -> agent, JSON [`ProcessSpec`]: an extra process with a fresh id.
    Exec = 3,
    /// agent -> host, JSON [`Started`].
    Started = 4,
    /// host -> agent, raw stdin bytes.
    Stdin = 5,
    /// host -> agent, empty: stdin reached end of file.
    StdinEof = 6,
    /// agent -> host, raw stdout bytes (the terminal output for a tty process).
    Stdout = 7,
    /// agent -> host, raw stderr bytes.
    Stderr = 8,
    /// both ways, u32 LE: the receiver of data grants this many more bytes.
    Credit = 9,
    /// host -> agent, JSON [`SignalRequest`].
    Signal = 10,
    /// host -> agent, JSON [`ResizeRequest`].
    Resize = 11,
    /// agent -> host, JSON [`ExitStatus`]: the process is gone and its output fully sent.
    Exit = 12,
    /// agent -> host, JSON [`ErrorReport`]: a request failed or the host broke the protocol.
    Error = 13,
    /// host -> agent, id 0, raw bytes: the container's /etc/hosts again, after a member of its
    /// network came or went (at most [`MAX_ETC_FILE`]).
    Hosts = 14,
}

impl FrameKind {
    pub fn from_u8(raw: u8) -> Option<FrameKind> {
        use FrameKind::*;
        Some(match raw {
            1 => Ready,
            2 => Start,
            3 => Exec,
            4 => Started,
            5 => Stdin,
            6 => StdinEof,
            7 => Stdout,
            8 => Stderr,
            9 => Credit,
            10 => Signal,
            11 => Resize,
            12 => Exit,
            13 => Error,
            14 => Hosts,
            _ => return None,
        })
    }

    /// Largest payload this kind may carry; checked before any payload memory is reserved.
    pub fn max_payload(self) -> usize {
        match self {
            FrameKind::StdinEof => 0,
            FrameKind::Credit => 4,
            FrameKind::Signal | FrameKind::Resize | FrameKind::Exit | FrameKind::Started => 256,
            FrameKind::Ready | FrameKind::Error => 64 * 1024,
            FrameKind::Stdin | FrameKind::Stdout | FrameKind::Stderr => MAX_PAYLOAD,
            FrameKind::Start | FrameKind::Exec => MAX_PAYLOAD,
            FrameKind::Hosts => MAX_ETC_FILE,
        }
    }

    /// Kinds whose payload is stream data counted against the flow-control window.
    pub fn is_data(self) -> bool {
        matches!(
            self,
            FrameKind::Stdin | FrameKind::Stdout | FrameKind::Stderr
        )
    }
}

/// One decoded frame. The payload length is already validated against the kind's bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub id: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: FrameKind, id: u32, payload: Vec<u8>) -> Frame {
        Frame { kind, id, payload }
    }

    pub fn json<T: Serialize>(kind: FrameKind, id: u32, msg: &T) -> Result<Frame> {
        let payload =
            serde_json::to_vec(msg).map_err(|source| ProtocolError::BadJson { kind, source })?;
        check_len(kind, payload.len())?;
        Ok(Frame { kind, id, payload })
    }

    pub fn credit(id: u32, bytes: u32) -> Frame {
        Frame::new(FrameKind::Credit, id, bytes.to_le_bytes().to_vec())
    }

    /// Parse a JSON control payload, insisting on the expected kind.
    pub fn parse_json<T: DeserializeOwned>(&self, want: FrameKind) -> Result<T> {
        if self.kind != want {
            return Err(ProtocolError::OutOfOrder {
                kind: self.kind,
                id: self.id,
                why: "a different message was expected here",
            });
        }
        serde_json::from_slice(&self.payload).map_err(|source| ProtocolError::BadJson {
            kind: self.kind,
            source,
        })
    }

    pub fn credit_value(&self) -> Result<u32> {
        let bytes: [u8; 4] =
            self.payload
                .as_slice()
                .try_into()
                .map_err(|_| ProtocolError::BadLength {
                    kind: self.kind,
                    want: 4,
                    got: self.payload.len(),
                })?;
        Ok(u32::from_le_bytes(bytes))
    }

    /// The full wire form: header followed by payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(PROTOCOL_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        // Payloads are built by this crate and bounded by check_len, so the cast cannot truncate.
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
    }
}

fn check_len(kind: FrameKind, len: usize) -> Result<()> {
    let max = kind.max_payload();
    if len > max {
        return Err(ProtocolError::TooLarge { kind, len, max });
    }
    if kind == FrameKind::Credit && len != 4 {
        return Err(ProtocolError::BadLength {
            kind,
            want: 4,
            got: len,
        });
    }
    Ok(())
}

/// Validated header fields.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: FrameKind,
    id: u32,
    len: usize,
}

fn parse_header(raw: &[u8; HEADER_LEN]) -> Result<Header> {
    let magic = [raw[0], raw[1], raw[2], raw[3]];
    if magic != MAGIC {
        return Err(ProtocolError::BadMagic(magic));
    }
    if raw[4] != PROTOCOL_VERSION {
        return Err(ProtocolError::BadVersion(raw[4]));
    }
    let kind = FrameKind::from_u8(raw[5]).ok_or(ProtocolError::UnknownKind(raw[5]))?;
    let flags = u16::from_le_bytes([raw[6], raw[7]]);
    if flags != 0 {
        return Err(ProtocolError::BadFlags(flags));
    }
    let id = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
    let len = u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]) as usize;
    check_len(kind, len)?;
    Ok(Header { kind, id, len })
}

/// Incremental decoder for a non-blocking byte stream. It consumes only the bytes of the frame
/// it is assembling, so its memory never exceeds one header plus one bounded payload, whatever
/// the peer sends. After an error the stream is unusable (framing is lost) and every later call
/// repeats the failure.
#[derive(Debug, Default)]
pub struct Decoder {
    header: [u8; HEADER_LEN],
    header_have: usize,
    current: Option<Header>,
    payload: Vec<u8>,
    failed: bool,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Feed bytes; returns how many were consumed and the frame completed by them, if any.
    /// Call again with the unconsumed rest until it consumes nothing.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Frame>)> {
        if self.failed {
            return Err(ProtocolError::Invalid {
                what: "stream",
                why: "an earlier frame was malformed".into(),
            });
        }
        let mut used = 0;
        let header = match self.current {
            Some(h) => h,
            None => {
                let take = (HEADER_LEN - self.header_have).min(input.len());
                self.header[self.header_have..self.header_have + take]
                    .copy_from_slice(&input[..take]);
                self.header_have += take;
                used += take;
                if self.header_have < HEADER_LEN {
                    return Ok((used, None));
                }
                let h = parse_header(&self.header).inspect_err(|_| self.failed = true)?;
                self.payload = Vec::with_capacity(h.len);
                self.current = Some(h);
                h
            }
        };
        let rest = &input[used..];
        let take = (header.len - self.payload.len()).min(rest.len());
        self.payload.extend_from_slice(&rest[..take]);
        used += take;
        if self.payload.len() < header.len {
            return Ok((used, None));
        }
        self.current = None;
        self.header_have = 0;
        let frame = Frame {
            kind: header.kind,
            id: header.id,
            payload: std::mem::take(&mut self.payload),
        };
        Ok((used, Some(frame)))
    }

    /// True between frames: a clean place for the stream to end.
    pub fn is_idle(&self) -> bool {
        self.header_have == 0 && self.current.is_none()
    }
}

/// Read one frame from a blocking reader; `Ok(None)` on a clean end of stream between frames.
pub fn read_frame<R: Read>(reader: &mut R) -> Result<Option<Frame>> {
    let mut raw = [0u8; HEADER_LEN];
    let mut have = 0;
    while have < HEADER_LEN {
        match reader.read(&mut raw[have..]) {
            Ok(0) if have == 0 => return Ok(None),
            Ok(0) => return Err(ProtocolError::Truncated),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let header = parse_header(&raw)?;
    let mut payload = vec![0u8; header.len];
    reader.read_exact(&mut payload).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ProtocolError::Truncated
        } else {
            ProtocolError::Io(e)
        }
    })?;
    Ok(Some(Frame {
        kind: header.kind,
        id: header.id,
        payload,
    }))
}

pub fn write_frame<W: Write>(writer: &mut W, frame: &Frame) -> Result<()> {
    writer.write_all(&frame.encode())?;
    Ok(())
}

/// Sent by the agent once the guest is ready for `Start`: what it found, so the host can name
/// the guest in errors and tests can check the kernel config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    pub protocol: u8,
    pub agent_version: String,
    pub kernel_release: String,
    /// Filesystem type of the read-only image disk, if one was found.
    pub image_fs: Option<String>,
    /// Whether the writable disk was found and mounted.
    pub writable_disk: bool,
    /// The console device the agent speaks on.
    pub console: String,
    /// Guest CLOCK_BOOTTIME (ms since the kernel started) when the agent began as PID 1: the
    /// kernel's share of the boot.
    #[serde(default)]
    pub init_started_ms: u64,
    /// Guest CLOCK_BOOTTIME when the agent was ready: minus the above, the agent's setup
    /// (mounts, console).
    #[serde(default)]
    pub ready_ms: u64,
}

/// One resource limit, named as in the OCI runtime spec ("RLIMIT_NOFILE").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// The process part of an OCI spec, shipped to the agent for `Start` and `Exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default = "default_cwd")]
    pub cwd: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    #[serde(default)]
    pub terminal: bool,
    /// Initial terminal size (rows, cols) for a terminal process.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// The five capability sets; `None` leaves the agent's (all of them) to the process.
    #[serde(default)]
    pub capabilities: Option<CapabilityNames>,
    #[serde(default)]
    pub no_new_privs: bool,
    /// The container's seccomp profile, compiled on the host by the same code that confines
    /// process containers, in installation order.
    #[serde(default)]
    pub seccomp: Vec<Vec<BpfInstruction>>,
    /// `None`: 0022, runc's default.
    #[serde(default)]
    pub umask: Option<u32>,
}

fn default_cwd() -> String {
    "/".to_string()
}

impl ProcessSpec {
    pub fn new<S: Into<String>>(args: impl IntoIterator<Item = S>) -> ProcessSpec {
        ProcessSpec {
            args: args.into_iter().map(Into::into).collect(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: default_cwd(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            rlimits: Vec::new(),
            terminal: false,
            console_size: None,
            capabilities: None,
            no_new_privs: false,
            seccomp: Vec::new(),
            umask: None,
        }
    }

    /// Reject what the agent could not hand to execve or would trip over: empty argv, NUL
    /// bytes, relative cwd, malformed env entries, oversized lists, unknown rlimits.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what, why: String| Err(ProtocolError::Invalid { what, why });
        if self.args.is_empty() {
            return invalid("process", "args must name a program".into());
        }
        if self.args.len() > MAX_ARGS || self.env.len() > MAX_ENV {
            return invalid(
                "process",
                format!("more than {MAX_ARGS} args or {MAX_ENV} env entries"),
            );
        }
        if self.additional_gids.len() > MAX_GROUPS || self.rlimits.len() > MAX_RLIMITS {
            return invalid(
                "process",
                format!("more than {MAX_GROUPS} groups or {MAX_RLIMITS} rlimits"),
            );
        }
        if let Some(s) = self.args.iter().chain(&self.env).find(|s| s.contains('\0')) {
            return invalid(
                "process",
                format!("argument or env entry contains a NUL byte: {s:?}"),
            );
        }
        if let Some(e) = self
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return invalid("env", format!("{e:?} is not NAME=value"));
        }
        if !self.cwd.starts_with('/') || self.cwd.contains('\0') {
            return invalid("cwd", format!("{:?} is not an absolute path", self.cwd));
        }
        for limit in &self.rlimits {
            if rlimit_resource(&limit.kind).is_none() {
                return invalid("rlimit", format!("unknown resource {:?}", limit.kind));
            }
            if limit.soft > limit.hard {
                return invalid(
                    "rlimit",
                    format!("{} soft limit above hard limit", limit.kind),
                );
            }
        }
        if let Some((rows, cols)) = self.console_size {
            if rows == 0 || cols == 0 {
                return invalid("console_size", "rows and cols must be non-zero".into());
            }
        }
        if let Some(names) = &self.capabilities {
            names
                .validate()
                .or_else(|e| invalid("capabilities", e.to_string()))?;
        }
        validate_filters(&self.seccomp).or_else(|e| invalid("seccomp", e.to_string()))?;
        if self.umask.is_some_and(|mask| mask > 0o777) {
            return invalid(
                "umask",
                format!("{:o} is not a file mode mask", self.umask.unwrap_or(0)),
            );
        }
        Ok(())
    }
}

/// The Linux resource number for an OCI rlimit name.
pub fn rlimit_resource(name: &str) -> Option<u32> {
    Some(match name {
        "RLIMIT_CPU" => 0,
        "RLIMIT_FSIZE" => 1,
        "RLIMIT_DATA" => 2,
        "RLIMIT_STACK" => 3,
        "RLIMIT_CORE" => 4,
        "RLIMIT_RSS" => 5,
        "RLIMIT_NPROC" => 6,
        "RLIMIT_NOFILE" => 7,
        "RLIMIT_MEMLOCK" => 8,
        "RLIMIT_AS" => 9,
        "RLIMIT_LOCKS" => 10,
        "RLIMIT_SIGPENDING" => 11,
        "RLIMIT_MSGQUEUE" => 12,
        "RLIMIT_NICE" => 13,
        "RLIMIT_RTPRIO" => 14,
        "RLIMIT_RTTIME" => 15,
        _ => return None,
    })
}

/// `Start`: the container process plus the sandbox-wide settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    pub process: ProcessSpec,
    #[serde(default)]
    pub hostname: Option<String>,
    /// The container's root is read-only (OCI `root.readonly`, `--read-only`): /dev/shm,
    /// /dev/pts, /proc and /sys stay what they are, as with runc.
    #[serde(default)]
    pub readonly_root: bool,
    /// Volumes and binds (virtio-fs shares the host serves) and tmpfs mounts, mounted in this
    /// order before the process starts, over the root and before it turns read-only.
    #[serde(default)]
    pub mounts: Vec<GuestMount>,
    /// OCI `linux.maskedPaths`: files covered by /dev/null, directories by an empty read-only
    /// tmpfs, as runc does on the host.
    #[serde(default)]
    pub masked_paths: Vec<String>,
    /// OCI `linux.readonlyPaths`: bound read-only over themselves.
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    /// /sys (and the cgroup hierarchy below it) read-only, as the spec's sysfs mount asks for
    /// every unprivileged container.
    #[serde(default)]
    pub readonly_sysfs: bool,
    /// Limits of the guest cgroup every process of the container runs in.
    #[serde(default)]
    pub limits: GuestLimits,
    /// OCI `linux.sysctl`: written under /proc/sys in the guest before the process starts.
    #[serde(default)]
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// The container is on a network: the guest's virtio-net interface and its /etc files.
    #[serde(default)]
    pub network: Option<GuestNetwork>,
    /// OCI startContainer hooks (husk-runc), run in this order once the container's mounts
    /// are in place and before its process; the first failure fails the start.
    #[serde(default)]
    pub start_hooks: Vec<GuestHook>,
    /// The container's OCI state (JSON), each hook's stdin.
    #[serde(default)]
    pub hook_state: String,
}

/// Most startContainer hooks in one request.
pub const MAX_HOOKS: usize = 32;
/// Most bytes of the hook state: it goes into a pipe before the hook runs, so it must fit
/// the pipe's 64 KiB.
pub const MAX_HOOK_STATE: usize = 32 << 10;

/// An OCI hook (config.md "POSIX-platform Hooks") as the agent runs it: `path` resolved in
/// the container's root, `args` with argv[0] first, `env` alone, killed after `timeout`
/// seconds when set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestHook {
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout: Option<u32>,
}

impl GuestHook {
    fn validate(&self) -> Result<()> {
        let invalid = |why: String| ProtocolError::Invalid { what: "hook", why };
        if !self.path.starts_with('/') || self.path.len() > 4096 || self.path.contains('\0') {
            return Err(invalid(format!(
                "{:?} is not an absolute path without NUL",
                self.path
            )));
        }
        if self.args.len() > MAX_ARGS || self.env.len() > MAX_ENV {
            return Err(invalid(format!(
                "more than {MAX_ARGS} args or {MAX_ENV} env entries"
            )));
        }
        if self.args.iter().chain(&self.env).any(|a| a.contains('\0')) {
            return Err(invalid("an arg or env entry holds a NUL".into()));
        }
        Ok(())
    }
}

/// Most bytes of a generated /etc/hosts or /etc/resolv.conf (a network of thousands of
/// members stays far below).
pub const MAX_ETC_FILE: usize = 256 << 10;

/// What the agent configures on the guest's one network interface (eth0, the monitor's
/// virtio-net device) before the container's process exists, and the files it binds over
/// /etc/hosts and /etc/resolv.conf, as husk does for a process container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    pub address: std::net::Ipv4Addr,
    /// Prefix length of the network, 8..=32 (a pod network may give a /32 with a gateway
    /// outside it, reached through a link route).
    pub prefix: u8,
    /// The default route's gateway; None for a network with no way out.
    pub gateway: Option<std::net::Ipv4Addr>,
    pub mtu: u16,
    /// The files bound over /etc/hosts and /etc/resolv.conf; None leaves the container's
    /// own (the image's, or the bundle's binds of an OCI client that made them).
    pub hosts: Option<String>,
    pub resolv: Option<String>,
}

impl GuestNetwork {
    pub fn validate(&self) -> Result<()> {
        let invalid = |why: String| {
            Err(ProtocolError::Invalid {
                what: "network",
                why,
            })
        };
        if !(8..=32).contains(&self.prefix) {
            return invalid(format!("prefix /{} is outside /8../32", self.prefix));
        }
        if !(68..=65517).contains(&self.mtu) {
            return invalid(format!("MTU {} is outside 68..=65517", self.mtu));
        }
        for (name, text) in [("hosts", &self.hosts), ("resolv.conf", &self.resolv)] {
            let Some(text) = text else { continue };
            if text.len() > MAX_ETC_FILE || text.contains('\0') {
                return invalid(format!(
                    "{name} is over {MAX_ETC_FILE} bytes or holds a NUL"
                ));
            }
        }
        Ok(())
    }
}

/// Most sysctls a start request may carry.
pub const MAX_SYSCTLS: usize = 64;

/// A sysctl name that can only ever name a file below /proc/sys: dotted words of letters,
/// digits, '_' and '-', at most 128 bytes.
pub fn is_sysctl_name(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// A sysctl value: one line of at most 4096 bytes.
pub fn is_sysctl_value(value: &str) -> bool {
    value.len() <= 4096 && !value.contains('\n') && !value.contains('\0')
}

/// The container's cgroup in the guest (cgroup v2), as `--pids-limit` and `--memory` set it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLimits {
    /// pids.max.
    #[serde(default)]
    pub pids_max: Option<u64>,
    /// memory.max in bytes.
    #[serde(default)]
    pub memory_max: Option<u64>,
}

/// What backs one guest mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestMountKind {
    /// A virtio-fs share: `source` is its tag.
    Virtiofs,
    /// A fresh tmpfs in guest memory (`--tmpfs`, `--mount type=tmpfs`).
    Tmpfs,
}

/// One mount the agent makes in the container's root before the process starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    pub kind: GuestMountKind,
    /// The virtio-fs tag; empty for tmpfs.
    #[serde(default)]
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
    /// For a share: mount only this file or directory of it (relative to the share's root),
    /// as a bind; how a file bind (an OCI runtime's /etc/hosts) reaches the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
}

/// An absolute path, at most PATH_MAX, with no NUL and no `..`, that is not `/` itself.
fn is_clean_absolute(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 4096
        && !path.contains('\0')
        && !path.split('/').any(|part| part == "..")
        && !path.trim_end_matches('/').is_empty()
}

impl GuestMount {
    pub fn validate(&self) -> Result<()> {
        let invalid = |why: String| Err(ProtocolError::Invalid { what: "mount", why });
        if !is_clean_absolute(&self.target) {
            return invalid(format!(
                "target {:?} is not an absolute path below / without '..'",
                self.target
            ));
        }
        match self.kind {
            GuestMountKind::Virtiofs
                if self.source.is_empty()
                    || self.source.len() > MAX_FS_TAG
                    || !self
                        .source
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                invalid(format!(
                    "virtio-fs tag {:?} is not 1..={MAX_FS_TAG} letters, digits, '-' and '_'",
                    self.source
                ))
            }
            GuestMountKind::Tmpfs if !self.source.is_empty() => {
                invalid(format!("a tmpfs takes no source, got {:?}", self.source))
            }
            GuestMountKind::Tmpfs if self.subpath.is_some() => {
                invalid("a tmpfs has no subpath".to_string())
            }
            _ => match &self.subpath {
                Some(sub) if !is_clean_absolute(&format!("/{sub}")) || sub.starts_with('/') => {
                    invalid(format!(
                        "subpath {sub:?} is not a relative path inside the share without '..'"
                    ))
                }
                _ => Ok(()),
            },
        }
    }
}

impl StartRequest {
    pub fn validate(&self) -> Result<()> {
        self.process.validate()?;
        if self.mounts.len() > MAX_MOUNTS {
            return Err(ProtocolError::Invalid {
                what: "mounts",
                why: format!(
                    "{} mounts exceed the limit of {MAX_MOUNTS}",
                    self.mounts.len()
                ),
            });
        }
        for mount in &self.mounts {
            mount.validate()?;
        }
        if self.masked_paths.len() + self.readonly_paths.len() > MAX_MASKED_PATHS {
            return Err(ProtocolError::Invalid {
                what: "masked and read-only paths",
                why: format!("more than {MAX_MASKED_PATHS}"),
            });
        }
        for path in self.masked_paths.iter().chain(&self.readonly_paths) {
            if !is_clean_absolute(path) {
                return Err(ProtocolError::Invalid {
                    what: "masked or read-only path",
                    why: format!("{path:?} is not an absolute path below / without '..'"),
                });
            }
        }
        if self.sysctls.len() > MAX_SYSCTLS {
            return Err(ProtocolError::Invalid {
                what: "sysctls",
                why: format!("more than {MAX_SYSCTLS}"),
            });
        }
        for (key, value) in &self.sysctls {
            if !is_sysctl_name(key) || !is_sysctl_value(value) {
                return Err(ProtocolError::Invalid {
                    what: "sysctl",
                    why: format!("{key:?} is not a sysctl name with a one-line value"),
                });
            }
        }
        if let Some(network) = &self.network {
            network.validate()?;
        }
        if self.limits.pids_max == Some(0) {
            return Err(ProtocolError::Invalid {
                what: "pids limit",
                why: "0 would allow no process at all".into(),
            });
        }
        if self.start_hooks.len() > MAX_HOOKS || self.hook_state.len() > MAX_HOOK_STATE {
            return Err(ProtocolError::Invalid {
                what: "hooks",
                why: format!("more than {MAX_HOOKS} hooks or a state over {MAX_HOOK_STATE} bytes"),
            });
        }
        for hook in &self.start_hooks {
            hook.validate()?;
        }
        if let Some(h) = &self.hostname {
            if h.is_empty()
                || h.len() > 64
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(ProtocolError::Invalid {
                    what: "hostname",
                    why: format!(
                        "{h:?} is not a hostname of at most 64 letters, digits, '-' and '.'"
                    ),
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The process's pid inside the guest.
    pub pid: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRequest {
    pub signal: i32,
    /// For the container's process (id 0): every process in the container's cgroup, as
    /// `runc kill --all` signals them.
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeRequest {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Shell-style: the exit code, 128+N after signal N, 127 not found, 126 not executable.
    pub code: i32,
    /// The guest's OOM killer acted in the container's cgroup (Docker's `OOMKilled`).
    #[serde(default)]
    pub oom_killed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Frame> {
        vec![
            Frame::json(
                FrameKind::Start,
                0,
                &StartRequest {
                    process: ProcessSpec::new(["echo", "hi"]),
                    hostname: Some("box".into()),
                    readonly_root: false,
                    mounts: Vec::new(),
                    ..Default::default()
                },
            )
            .unwrap(),
            Frame::new(FrameKind::Stdout, 3, b"hello\n".to_vec()),
            Frame::credit(3, 4096),
            Frame::new(FrameKind::StdinEof, 0, Vec::new()),
            Frame::json(
                FrameKind::Exit,
                0,
                &ExitStatus {
                    code: 137,
                    oom_killed: true,
                },
            )
            .unwrap(),
        ]
    }

    #[test]
    fn roundtrip_byte_by_byte_and_all_at_once() {
        let frames = sample();
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.encode()).collect();
        for chunk in [1usize, 3, 7, 16, 17, wire.len()] {
            let mut dec = Decoder::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                let mut rest = piece;
                while !rest.is_empty() {
                    let (used, frame) = dec.decode(rest).unwrap();
                    rest = &rest[used..];
                    got.extend(frame);
                }
            }
            assert_eq!(got, frames, "chunk size {chunk}");
            assert!(dec.is_idle());
        }
        let mut cursor = io::Cursor::new(wire);
        let mut got = Vec::new();
        while let Some(f) = read_frame(&mut cursor).unwrap() {
            got.push(f);
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn oversized_frame_rejected_before_allocation() {
        let mut raw = Frame::new(FrameKind::Stdout, 1, Vec::new()).encode();
        raw[12..16].copy_from_slice(&(u32::MAX).to_le_bytes());
        let mut dec = Decoder::new();
        assert!(matches!(
            dec.decode(&raw),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert_eq!(dec.payload.capacity(), 0);
        // The stream stays failed: framing is lost.
        assert!(dec.decode(b"HUSK").is_err());
        assert!(matches!(
            read_frame(&mut io::Cursor::new(raw)),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn header_fields_are_checked() {
        let good = Frame::credit(1, 1).encode();
        type Check = fn(&ProtocolError) -> bool;
        let cases: [(usize, u8, Check); 4] = [
            (0, b'X', |e| matches!(e, ProtocolError::BadMagic(_))),
            (4, 9, |e| matches!(e, ProtocolError::BadVersion(9))),
            (5, 200, |e| matches!(e, ProtocolError::UnknownKind(200))),
            (6, 1, |e| matches!(e, ProtocolError::BadFlags(1))),
        ];
        for (at, value, check) in cases {
            let mut raw = good.clone();
            raw[at] = value;
            let err = Decoder::new().decode(&raw).unwrap_err();
            assert!(check(&err), "byte {at}: {err}");
        }
        // A credit must be exactly 4 bytes, an EOF empty.
        let mut short = good.clone();
        short[12] = 2;
        assert!(matches!(
            Decoder::new().decode(&short),
            Err(ProtocolError::BadLength { .. })
        ));
        let mut eof = Frame::new(FrameKind::StdinEof, 0, Vec::new()).encode();
        eof[12] = 1;
        assert!(matches!(
            Decoder::new().decode(&eof),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn truncated_stream_is_an_error_not_eof() {
        let raw = Frame::new(FrameKind::Stdout, 1, b"abc".to_vec()).encode();
        assert!(matches!(
            read_frame(&mut io::Cursor::new(&raw[..5])),
            Err(ProtocolError::Truncated)
        ));
        assert!(matches!(
            read_frame(&mut io::Cursor::new(&raw[..18])),
            Err(ProtocolError::Truncated)
        ));
        assert!(read_frame(&mut io::Cursor::new(Vec::new()))
            .unwrap()
            .is_none());
    }

    #[test]
    fn json_kind_and_content_checked() {
        let frame = Frame::new(FrameKind::Exit, 0, b"{\"code\":".to_vec());
        assert!(matches!(
            frame.parse_json::<ExitStatus>(FrameKind::Exit),
            Err(ProtocolError::BadJson { .. })
        ));
        let frame = Frame::json(
            FrameKind::Exit,
            0,
            &ExitStatus {
                code: 1,
                oom_killed: false,
            },
        )
        .unwrap();
        assert!(matches!(
            frame.parse_json::<ExitStatus>(FrameKind::Started),
            Err(ProtocolError::OutOfOrder { .. })
        ));
        assert_eq!(
            frame
                .parse_json::<ExitStatus>(FrameKind::Exit)
                .unwrap()
                .code,
            1
        );
    }

    /// Deterministic randomized decoding (runs in every `cargo test`; the cargo-fuzz target in
    /// fuzz/ explores further): mutated valid streams and pure noise, fed in random chunk sizes,
    /// must never panic, never hold more than one bounded frame, and keep failing once failed.
    #[test]
    fn randomized_streams_never_panic_or_overallocate() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid: Vec<u8> = sample().iter().flat_map(|f| f.encode()).collect();
        for round in 0..20_000 {
            let mut input = if round % 4 == 0 {
                (0..(next() % 200) as usize).map(|_| next() as u8).collect()
            } else {
                valid.clone()
            };
            for _ in 0..(next() % 6) {
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
            let mut dec = Decoder::new();
            let mut rest: &[u8] = &input;
            while !rest.is_empty() {
                let take = 1 + (next() as usize) % 40;
                let piece = &rest[..take.min(rest.len())];
                match dec.decode(piece) {
                    Ok((used, frame)) => {
                        assert!(used <= piece.len());
                        if let Some(f) = frame {
                            assert!(f.payload.len() <= f.kind.max_payload());
                            let _ = f
                                .parse_json::<StartRequest>(FrameKind::Start)
                                .map(|s| s.validate());
                            let _ = f
                                .parse_json::<ProcessSpec>(FrameKind::Exec)
                                .map(|s| s.validate());
                            let _ = f.credit_value();
                        }
                        assert!(dec.payload.capacity() <= MAX_PAYLOAD);
                        rest = &rest[used..];
                        if used == 0 {
                            break;
                        }
                    }
                    Err(_) => {
                        assert!(dec.decode(b"HUSK").is_err());
                        break;
                    }
                }
            }
            let _ = read_frame(&mut io::Cursor::new(&input));
        }
    }

    #[test]
    fn confinement_and_sandbox_fields_are_bounded() {
        let mut spec = ProcessSpec::new(["true"]);
        spec.umask = Some(0o1777);
        assert!(spec.validate().is_err(), "a umask beyond 0777");
        spec.umask = Some(0o027);
        spec.seccomp = vec![vec![BpfInstruction(0x06, 0, 0, 0x7fff_0000)]; 17];
        assert!(spec.validate().is_err(), "more filters than the limit");
        spec.seccomp = vec![Vec::new()];
        assert!(spec.validate().is_err(), "an empty filter");
        spec.seccomp = Vec::new();
        spec.capabilities = Some(CapabilityNames {
            bounding: vec!["CAP_CHOWN".into(); 65],
            ..Default::default()
        });
        assert!(spec.validate().is_err(), "an oversized capability set");
        spec.capabilities = None;
        assert!(spec.validate().is_ok());

        let start = |masked: &str| StartRequest {
            process: ProcessSpec::new(["true"]),
            masked_paths: vec![masked.into()],
            ..Default::default()
        };
        assert!(start("/proc/kcore").validate().is_ok());
        for bad in ["proc/kcore", "/proc/../etc", "/", "/a\0b"] {
            assert!(start(bad).validate().is_err(), "{bad:?} accepted");
        }
        let mut many = start("/proc/kcore");
        many.readonly_paths = vec!["/proc/sys".into(); MAX_MASKED_PATHS];
        assert!(many.validate().is_err(), "more paths than the limit");
        let mut no_pids = start("/proc/kcore");
        no_pids.limits.pids_max = Some(0);
        assert!(no_pids.validate().is_err(), "a pids limit of 0");

        let hook = |path: &str| GuestHook {
            path: path.into(),
            args: vec!["x".into()],
            env: Vec::new(),
            timeout: None,
        };
        let mut hooked = start("/proc/kcore");
        hooked.start_hooks = vec![hook("/bin/hook")];
        assert!(hooked.validate().is_ok());
        for bad in ["bin/hook", "/a\0b"] {
            hooked.start_hooks = vec![hook(bad)];
            assert!(hooked.validate().is_err(), "hook {bad:?} accepted");
        }
        hooked.start_hooks = vec![hook("/bin/hook"); MAX_HOOKS + 1];
        assert!(hooked.validate().is_err(), "more hooks than the limit");
        hooked.start_hooks = vec![hook("/bin/hook")];
        hooked.hook_state = "x".repeat(MAX_HOOK_STATE + 1);
        assert!(hooked.validate().is_err(), "a state over the limit");
    }

    /// A sysctl name can only name a file below /proc/sys: no '/', no empty word, no "..".
    #[test]
    fn sysctls_are_bounded_and_stay_below_proc_sys() {
        let with = |key: &str, value: &str| StartRequest {
            process: ProcessSpec::new(["/bin/true"]),
            sysctls: [(key.to_string(), value.to_string())].into(),
            ..Default::default()
        };
        assert!(with("net.ipv4.ip_forward", "1").validate().is_ok());
        for key in [
            "../../etc/passwd",
            "net/ipv4",
            "net..x",
            ".net",
            "",
            "a.b c",
        ] {
            assert!(with(key, "1").validate().is_err(), "{key:?}");
        }
        assert!(with("kernel.shmmni", "1\n2").validate().is_err());
        let mut many = with("kernel.shmmni", "1");
        for n in 0..MAX_SYSCTLS {
            many.sysctls.insert(format!("net.x{n}"), "1".into());
        }
        assert!(many.validate().is_err());
    }

    #[test]
    fn process_spec_validation() {
        let ok = ProcessSpec::new(["/bin/true"]);
        ok.validate().unwrap();
        let mut bad = ok.clone();
        bad.args.clear();
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.args.push("a\0b".into());
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.env.push("NOEQUALS".into());
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.cwd = "relative".into();
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.rlimits.push(Rlimit {
            kind: "RLIMIT_BOGUS".into(),
            soft: 1,
            hard: 1,
        });
        assert!(bad.validate().is_err());
        let start = StartRequest {
            process: ok,
            hostname: Some("bad host".into()),
            readonly_root: false,
            mounts: Vec::new(),
            ..Default::default()
        };
        assert!(start.validate().is_err());

        let share = |source: &str, target: &str| GuestMount {
            kind: GuestMountKind::Virtiofs,
            source: source.into(),
            target: target.into(),
            readonly: false,
            subpath: None,
        };
        let mut start = StartRequest {
            hostname: None,
            ..start
        };
        start.mounts = vec![share("husk-fs0", "/data")];
        assert!(start.validate().is_ok());
        for (tag, target) in [
            ("husk-fs0", "data"),
            ("husk-fs0", "/"),
            ("husk-fs0", "/a/../../etc"),
            ("husk-fs0", "/a\0b"),
            ("", "/data"),
            ("tag with space", "/data"),
            (&"t".repeat(MAX_FS_TAG + 1), "/data"),
        ] {
            start.mounts = vec![share(tag, target)];
            assert!(start.validate().is_err(), "{tag:?} at {target:?} accepted");
        }
        start.mounts = vec![GuestMount {
            kind: GuestMountKind::Tmpfs,
            source: "husk-fs0".into(),
            target: "/t".into(),
            readonly: false,
            subpath: None,
        }];
        assert!(start.validate().is_err(), "tmpfs with a source accepted");
        for (subpath, ok) in [
            ("0", true),
            ("etc/hosts", true),
            ("/etc", false),
            ("../x", false),
            ("a/../../b", false),
            ("", false),
        ] {
            start.mounts = vec![GuestMount {
                subpath: Some(subpath.into()),
                ..share("husk-files", "/etc/hosts")
            }];
            assert_eq!(start.validate().is_ok(), ok, "subpath {subpath:?}");
        }
        start.mounts = vec![share("husk-fs0", "/data"); MAX_MOUNTS + 1];
        assert!(start.validate().is_err(), "too many mounts accepted");
    }
}
