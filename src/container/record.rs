//! Container records: one directory per container under `<root>/containers/<id>/` holding
//! `record.json` (identity and state), the OCI `config.json` and the writable layer.
//!
//! Records are written atomically (temp file + fsync + rename) and every change that must see
//! a consistent set of records (name uniqueness, removal) happens under one flock on
//! `<root>/containers/.lock`, so concurrent husk calls on one root are safe.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::names;
use super::spec::SpecOptions;

const RECORD_FILE: &str = "record.json";
const LOCK_FILE: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("multiple containers match '{0}': use more characters of the ID")]
    Ambiguous(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse { name: String, id: String },
    #[error(
        "invalid restart policy '{0}': use no, on-failure[:max-retries], always or unless-stopped"
    )]
    InvalidRestartPolicy(String),
    #[error("invalid container name '{0}': only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("container store at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container record {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which architecture runs the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A namespaced process on the host kernel.
    Process,
    /// A KVM microVM with its own guest kernel.
    Vm,
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Process => "process",
            Isolation::Vm => "vm",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
    /// The record says running but the process supervising the container is gone (husk or
    /// its monitor was killed). Shown as Docker shows dead containers; `rm` cleans it up.
    Dead,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Dead => "dead",
        })
    }
}

/// A process identified by pid plus its start time, so a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessIdentity {
    pub fn of(pid: i32) -> Option<Self> {
        Some(Self {
            pid,
            start_time: proc_start_time(pid)?,
        })
    }

    pub fn current() -> Self {
        let pid = std::process::id() as i32;
        Self {
            pid,
            start_time: proc_start_time(pid).unwrap_or(0),
        }
    }

    /// Running: a zombie (exited, not yet reaped by its parent) is not alive.
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        start_time_from_stat(&stat) == Some(self.start_time) && !is_zombie_stat(&stat)
    }
}

fn proc_start_time(pid: i32) -> Option<u64> {
    start_time_from_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 3 of a /proc/PID/stat text, the state, says the process has exited (Z, X).
fn is_zombie_stat(stat: &str) -> bool {
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    matches!(state, Some("Z" | "X"))
}

/// Field 22 of a /proc/PID/stat text: the start time in clock ticks since boot.
pub fn start_time_from_stat(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: skip past its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    pub exit_code: Option<i32>,
    /// The container's init process, as seen from the host.
    pub pid: Option<i32>,
    /// The same process with its start time, so `exec` never joins a recycled pid.
    #[serde(default)]
    pub init: Option<ProcessIdentity>,
    /// The husk process supervising the container (foreground CLI or detached monitor).
    pub supervisor: Option<ProcessIdentity>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub oom_killed: bool,
    /// Set by `stop`/`kill`/`rm -f` before signalling, so restart policies do not undo them.
    #[serde(default)]
    pub stop_requested: bool,
    /// Why the last start failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    /// The image as the user named it (shown by `ps`).
    pub image: String,
    /// The image's ID ("sha256:..."), so `rmi` knows the image is in use.
    pub image_id: String,
    pub isolation: Isolation,
    /// The full command line (entrypoint + cmd) as it will run.
    pub command: Vec<String>,
    pub created: DateTime<Utc>,
    /// Remove the container when it exits (`run --rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// The `run`/`create` flags, kept for `inspect` and for the VM backend.
    #[serde(default)]
    pub options: SpecOptions,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub restart_count: u32,
    pub state: State,
    /// The cost ledger of the last `husk run` of this container.
    #[serde(default)]
    pub cost: Option<crate::cost::Ledger>,
}

/// Docker's `--restart` policies, applied by the detached monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure {
        /// 0 means no limit.
        maximum_retry_count: u32,
    },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    pub fn parse(text: &str) -> Result<Self, RecordError> {
        let bad = || RecordError::InvalidRestartPolicy(text.to_string());
        match text.split_once(':') {
            None => match text {
                "no" | "" => Ok(Self::No),
                "on-failure" => Ok(Self::OnFailure {
                    maximum_retry_count: 0,
                }),
                "always" => Ok(Self::Always),
                "unless-stopped" => Ok(Self::UnlessStopped),
                _ => Err(bad()),
            },
            Some(("on-failure", count)) => Ok(Self::OnFailure {
                maximum_retry_count: count.parse().map_err(|_| bad())?,
            }),
            Some(_) => Err(bad()),
        }
    }

    /// Whether the monitor starts the container again after it exited with `code`.
    pub fn should_restart(&self, code: i32, restarts_so_far: u32, stop_requested: bool) -> bool {
        if stop_requested {
            return false;
        }
        match *self {
            Self::No => false,
            Self::OnFailure {
                maximum_retry_count,
            } => code != 0 && (maximum_retry_count == 0 || restarts_so_far < maximum_retry_count),
            Self::Always | Self::UnlessStopped => true,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::No => "no",
            Self::OnFailure { .. } => "on-failure",
            Self::Always => "always",
            Self::UnlessStopped => "unless-stopped",
        }
    }
}

impl Record {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// The status as it really is: a record left "running" by a supervisor that died reads as
    /// dead rather than lying.
    pub fn effective_status(&self) -> Status {
        match (self.state.status, self.state.supervisor) {
            (Status::Running, Some(supervisor)) if !supervisor.is_alive() => Status::Dead,
            (status, _) => status,
        }
    }
}

/// What the caller decides about a new container; the store picks the ID and, if none is
/// given, a free random name.
pub struct NewContainer {
    pub name: Option<String>,
    pub image: String,
    pub image_id: String,
    pub isolation: Isolation,
    pub command: Vec<String>,
    pub auto_remove: bool,
    pub options: SpecOptions,
    pub restart: RestartPolicy,
}

pub struct Containers {
    dir: PathBuf,
    journal: super::events::Journal,
}

impl Containers {
    pub fn open(root: &Path) -> Result<Self, RecordError> {
        super::private_dir::ensure(root).map_err(io_err(root))?;
        let dir = root.join("containers");
        super::private_dir::ensure(&dir).map_err(io_err(&dir))?;
        Ok(Self {
            dir,
            journal: super::events::Journal::open(root),
        })
    }

    /// The event journal of this root.
    pub fn journal(&self) -> &super::events::Journal {
        &self.journal
    }

    /// Journal `action` for `record` (best effort: see container::events).
    pub fn record_event(
        &self,
        action: super::events::Action,
        record: &Record,
        exit_code: Option<i32>,
    ) {
        self.journal.append(&super::events::Event {
            action,
            id: record.id.clone(),
            name: record.name.clone(),
            image: record.image.clone(),
            exit_code,
            time_nano: Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        });
    }

    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Exclusive lock over the whole set of records (blocks until free).
    pub fn lock(&self) -> Result<Flock<File>, RecordError> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| RecordError::Io {
            path,
            source: errno.into(),
        })
    }

    /// Create the record and its directory. The name is checked for uniqueness under the lock.
    pub fn create(&self, new: NewContainer) -> Result<Record, RecordError> {
        if let Some(name) = &new.name {
            if !names::is_valid(name) {
                return Err(RecordError::InvalidName(name.clone()));
            }
        }
        let _lock = self.lock()?;
        let existing = self.list()?;
        let name = match new.name {
            Some(name) => {
                if let Some(other) = existing.iter().find(|r| r.name == name) {
                    return Err(RecordError::NameInUse {
                        name,
                        id: other.id.clone(),
                    });
                }
                name
            }
            None => names::generate(|candidate| existing.iter().any(|r| r.name == candidate)),
        };
        let record = Record {
            id: new_id(),
            name,
            image: new.image,
            image_id: new.image_id,
            isolation: new.isolation,
            command: new.command,
            created: Utc::now(),
            auto_remove: new.auto_remove,
            options: new.options,
            restart: new.restart,
            restart_count: 0,
            cost: None,
            state: State {
                status: Status::Created,
                exit_code: None,
                pid: None,
                init: None,
                supervisor: None,
                started_at: None,
                finished_at: None,
                oom_killed: false,
                stop_requested: false,
                error: None,
            },
        };
        let dir = self.dir_of(&record.id);
        super::private_dir::create(&dir).map_err(io_err(&dir))?;
        // A `--rm` container's record lives only as long as its run: atomic is enough.
        let durability = if record.auto_remove {
            Durability::Atomic
        } else {
            Durability::Synced
        };
        if let Err(err) = self.write(&record, durability) {
            let _ = fs::remove_dir_all(&dir);
            return Err(err);
        }
        self.record_event(super::events::Action::Create, &record, None);
        Ok(record)
    }

    /// Atomically and durably replace the record on disk.
    pub fn save(&self, record: &Record) -> Result<(), RecordError> {
        self.write(record, Durability::Synced)
    }

    fn write(&self, record: &Record, durability: Durability) -> Result<(), RecordError> {
        let dir = self.dir_of(&record.id);
        let bytes = serde_json::to_vec_pretty(record).expect("records always serialize");
        write_replacing(&dir.join(RECORD_FILE), &bytes, durability)
    }

    /// Read-modify-write of one record under the store lock, so a monitor recording an exit
    /// and a CLI call asking for a stop never overwrite each other's fields.
    ///
    /// Not fsynced: these are state changes (starting, pid) that a power loss makes moot
    /// anyway, since every supervisor is gone after a reboot and the record then reads as
    /// dead. Use [`Containers::update_durably`] for what must survive (the exit status).
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut Record),
    ) -> Result<Record, RecordError> {
        self.update_with(id, Durability::Atomic, change)
    }

    /// [`Containers::update`], fsynced.
    pub fn update_durably(
        &self,
        id: &str,
        change: impl FnOnce(&mut Record),
    ) -> Result<Record, RecordError> {
        self.update_with(id, Durability::Synced, change)
    }

    fn update_with(
        &self,
        id: &str,
        durability: Durability,
        change: impl FnOnce(&mut Record),
    ) -> Result<Record, RecordError> {
        let _lock = self.lock()?;
        let mut record = self.load(id)?;
        change(&mut record);
        self.write(&record, durability)?;
        Ok(record)
    }

    pub fn load(&self, id: &str) -> Result<Record, RecordError> {
        let path = self.dir_of(id).join(RECORD_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(RecordError::NotFound(id.to_string()))
            }
            Err(err) => return Err(io_err(&path)(err)),
        };
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Corrupt { path, source })
    }

    /// Every record, oldest first. Directories without a readable record (a create that was
    /// interrupted before its record was written) are skipped.
    pub fn list(&self) -> Result<Vec<Record>, RecordError> {
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if id.starts_with('.') {
                continue;
            }
            match self.load(id) {
                Ok(record) => records.push(record),
                Err(RecordError::NotFound(_)) => continue,
                Err(err) => return Err(err),
            }
        }
        records.sort_by_key(|r| r.created);
        Ok(records)
    }

    /// Find a container by exact name, full ID or unique ID prefix (as Docker does).
    pub fn find(&self, key: &str) -> Result<Record, RecordError> {
        let records = self.list()?;
        let key = key.strip_prefix('/').unwrap_or(key);
        if let Some(record) = records.iter().find(|r| r.id == key || r.name == key) {
            return Ok(record.clone());
        }
        let mut matches = records
            .iter()
            .filter(|r| !key.is_empty() && r.id.starts_with(key));
        match (matches.next(), matches.next()) {
            (Some(record), None) => Ok(record.clone()),
            (Some(_), Some(_)) => Err(RecordError::Ambiguous(key.to_string())),
            _ => Err(RecordError::NotFound(key.to_string())),
        }
    }

    /// Give a container a new name, unique among all containers (Docker's `rename`).
    pub fn rename(&self, key: &str, new_name: &str) -> Result<Record, RecordError> {
        if !names::is_valid(new_name) {
            return Err(RecordError::InvalidName(new_name.to_string()));
        }
        let _lock = self.lock()?;
        let record = self.find(key)?;
        if let Some(other) = self.list()?.into_iter().find(|r| r.name == new_name) {
            return Err(RecordError::NameInUse {
                name: new_name.to_string(),
                id: other.id,
            });
        }
        let mut renamed = record;
        renamed.name = new_name.to_string();
        self.save(&renamed)?;
        Ok(renamed)
    }

    /// Delete the container's directory. The record file goes first so that a removal cut
    /// short never leaves a record pointing at half-deleted state.
    /// Under the store lock, so that a supervisor's last update (which also takes it) either
    /// lands before the removal or finds the record gone, and never writes into a directory
    /// being deleted.
    pub fn remove(&self, id: &str) -> Result<(), RecordError> {
        let _lock = self.lock()?;
        let dir = self.dir_of(id);
        let removed = self.load(id).ok();
        let record = dir.join(RECORD_FILE);
        match fs::remove_file(&record) {
            Ok(()) => {
                if let Some(removed) = &removed {
                    self.record_event(super::events::Action::Destroy, removed, None);
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err(&record)(err)),
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_err(&dir)(err)),
        }
    }
}

/// 64 hex characters from the OS random source, never all-digit (Docker avoids IDs that look
/// like numbers so they cannot be mistaken for one).
fn new_id() -> String {
    loop {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).expect("the OS random source is available");
        let id = hex::encode(bytes);
        if id[..12].bytes().any(|b| b.is_ascii_alphabetic()) {
            return id;
        }
    }
}

/// How much a replacement of a file must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Readers see the old or the new file, never a mix (temp file + rename).
    Atomic,
    /// Atomic, and on disk before the call returns (fsync before the rename).
    Synced,
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    write_replacing(path, bytes, Durability::Synced)
}

fn write_replacing(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), RecordError> {
    // A temporary name of this writer's own: two processes (or threads) replacing one file at
    // once must not share one, or the second rename finds the first one's file gone.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let serial = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{serial}", std::process::id()));
    let written = (|| {
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        if durability == Durability::Synced {
            file.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_replacing_one_file_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("volume.json");
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        write_atomic(&path, format!("{{\"writer\":{i}}}").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"writer\":"), "{text}");
        // No temporary file is left.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_exited_child_not_yet_reaped_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let identity = ProcessIdentity::of(child.id() as i32).unwrap();
        // Until its parent waits, an exited child stays in /proc as a zombie, start time and
        // all (a long-lived caller such as the Engine API service saw its monitors so).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !fs::read_to_string(format!("/proc/{}/stat", child.id()))
            .is_ok_and(|stat| is_zombie_stat(&stat))
        {
            assert!(std::time::Instant::now() < deadline, "true never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!identity.is_alive());
        child.wait().unwrap();
        assert!(ProcessIdentity::current().is_alive());
        assert!(!is_zombie_stat("12 (a) b) R 1"));
        assert!(is_zombie_stat("12 (a) Z) Z 1"));
    }

    fn new(name: Option<&str>) -> NewContainer {
        NewContainer {
            name: name.map(str::to_string),
            image: "busybox".into(),
            image_id: "sha256:abc".into(),
            isolation: Isolation::Process,
            command: vec!["true".into()],
            auto_remove: false,
            options: SpecOptions::default(),
            restart: RestartPolicy::No,
        }
    }

    #[test]
    fn create_find_by_name_id_and_prefix() {
        let root = tempfile::tempdir().unwrap();
        let store = Containers::open(root.path()).unwrap();
        let record = store.create(new(Some("web"))).unwrap();
        assert_eq!(record.id.len(), 64);
        assert_eq!(store.find("web").unwrap().id, record.id);
        assert_eq!(store.find(&record.id).unwrap().id, record.id);
        assert_eq!(store.find(&record.id[..4]).unwrap().id, record.id);
        assert!(matches!(store.find("nope"), Err(RecordError::NotFound(_))));
    }

    #[test]
    fn duplicate_names_are_refused_and_random_names_are_unique() {
        let root = tempfile::tempdir().unwrap();
        let store = Containers::open(root.path()).unwrap();
        store.create(new(Some("db"))).unwrap();
        let err = store.create(new(Some("db"))).unwrap_err();
        assert!(err.to_string().contains("is already in use"), "{err}");
        let a = store.create(new(None)).unwrap();
        let b = store.create(new(None)).unwrap();
        assert_ne!(a.name, b.name);
        assert!(a.name.contains('_'));
        assert_eq!(store.list().unwrap().len(), 3);
    }

    #[test]
    fn ambiguous_prefix_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let store = Containers::open(root.path()).unwrap();
        for _ in 0..40 {
            store.create(new(None)).unwrap();
        }
        // With 40 IDs over 16 first characters, some first character repeats.
        let ids: Vec<String> = store.list().unwrap().into_iter().map(|r| r.id).collect();
        let shared = ids
            .iter()
            .find(|id| ids.iter().filter(|o| o[..1] == id[..1]).count() > 1)
            .unwrap();
        assert!(matches!(
            store.find(&shared[..1]),
            Err(RecordError::Ambiguous(_))
        ));
    }

    #[test]
    fn invalid_names_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = Containers::open(root.path()).unwrap();
        for bad in ["", "-x", "a/b", "a b"] {
            assert!(matches!(
                store.create(new(Some(bad))),
                Err(RecordError::InvalidName(_))
            ));
        }
    }

    #[test]
    fn running_record_with_dead_supervisor_reads_as_dead() {
        let root = tempfile::tempdir().unwrap();
        let store = Containers::open(root.path()).unwrap();
        let mut record = store.create(new(None)).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let identity = ProcessIdentity::of(child.id() as i32);
        child.wait().unwrap();
        record.state.status = Status::Running;
        record.state.supervisor = identity.or(Some(ProcessIdentity {
            pid: child.id() as i32,
            start_time: 1,
        }));
        assert_eq!(record.effective_status(), Status::Dead);
        record.state.supervisor = Some(ProcessIdentity::current());
        assert_eq!(record.effective_status(), Status::Running);
    }

    #[test]
    fn restart_policies_follow_docker() {
        let on_failure = RestartPolicy::parse("on-failure:2").unwrap();
        assert!(on_failure.should_restart(1, 0, false));
        assert!(on_failure.should_restart(1, 1, false));
        assert!(!on_failure.should_restart(1, 2, false));
        assert!(!on_failure.should_restart(0, 0, false));
        assert!(RestartPolicy::Always.should_restart(0, 100, false));
        assert!(!RestartPolicy::Always.should_restart(0, 0, true));
        assert!(!RestartPolicy::parse("no")
            .unwrap()
            .should_restart(1, 0, false));
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
    }

    #[test]
    fn remove_deletes_everything() {
        let root = tempfile::tempdir().unwrap();
        let store = Containers::open(root.path()).unwrap();
        let record = store.create(new(None)).unwrap();
        fs::write(store.dir_of(&record.id).join("upper"), b"x").unwrap();
        store.remove(&record.id).unwrap();
        assert!(!store.dir_of(&record.id).exists());
        assert!(store.list().unwrap().is_empty());
    }
}
