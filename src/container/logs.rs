//! Container logs in Docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2026-11-28T01:02:03.456789012Z"}`.
//!
//! The writer never fails the container: a full disk or an I/O error drops log lines (counted)
//! but the caller keeps draining the container's output so it is never blocked.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

pub const LOG_FILE: &str = "container.log";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read log {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: Stream,
    pub time: DateTime<Utc>,
}

/// Free space the log leaves on its filesystem, so that a container printing without end can
/// never take the room its record needs to say how it exited.
const RESERVED_BYTES: u64 = 4 << 20;

pub struct LogWriter {
    file: File,
    /// Chunks lost to write errors or to the reserve (e.g. a full disk).
    pub dropped: u64,
}

impl LogWriter {
    pub fn open(container_dir: &Path) -> Result<Self, LogError> {
        let path = container_dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| LogError::Open { path, source })?;
        Ok(Self { file, dropped: 0 })
    }

    fn has_room(&self, bytes: u64) -> bool {
        match nix::sys::statvfs::fstatvfs(&self.file) {
            Ok(stat) => {
                let free = stat.blocks_available() * stat.fragment_size();
                free >= bytes + RESERVED_BYTES
            }
            Err(_) => true, // cannot tell: let the write itself succeed or fail
        }
    }

    /// Append one chunk of output, split into lines as Docker does (a partial last line is
    /// written as is, without a newline).
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let mut buffer = Vec::with_capacity(text.len() + 80);
        for line in text.split_inclusive('\n') {
            let entry = Entry {
                log: line.to_string(),
                stream,
                time: Utc::now(),
            };
            serde_json::to_writer(&mut buffer, &EntryRef(&entry))
                .expect("log entries always serialize");
            buffer.push(b'\n');
        }
        if !self.has_room(buffer.len() as u64) || self.file.write_all(&buffer).is_err() {
            self.dropped += 1;
        }
    }
}

/// Writes to the terminal and to the container's log at once: an attached container is
/// logged like a detached one (`husk logs` works for both, as in Docker).
pub struct Tee<W: Write> {
    pub out: W,
    pub log: std::sync::Arc<std::sync::Mutex<LogWriter>>,
    pub stream: Stream,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(self.stream, buf);
        self.out.write_all(buf)?;
        self.out.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Serializes times with nanoseconds and a Z, exactly like Docker's json-file driver.
struct EntryRef<'a>(&'a Entry);

impl Serialize for EntryRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Entry", 3)?;
        s.serialize_field("log", &self.0.log)?;
        s.serialize_field("stream", &self.0.stream)?;
        s.serialize_field(
            "time",
            &self.0.time.to_rfc3339_opts(SecondsFormat::Nanos, true),
        )?;
        s.end()
    }
}

/// What `husk logs` asked for.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub tail: Option<usize>,
    pub since: Option<DateTime<Utc>>,
    pub timestamps: bool,
}

/// Format one entry for the terminal.
pub fn render(entry: &Entry, timestamps: bool) -> String {
    if timestamps {
        format!(
            "{} {}",
            entry.time.to_rfc3339_opts(SecondsFormat::Nanos, true),
            entry.log
        )
    } else {
        entry.log.clone()
    }
}

/// Read the entries currently in the log. Corrupt lines (a write cut short by a crash or a full
/// disk) are skipped rather than failing the whole read.
pub fn read(container_dir: &Path, opts: &ReadOptions) -> Result<(Vec<Entry>, u64), LogError> {
    let path = container_dir.join(LOG_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(source) => return Err(LogError::Read { path, source }),
    };
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut offset = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|source| LogError::Read {
                path: path.clone(),
                source,
            })?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        offset += n as u64;
        if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
            if opts.since.is_none_or(|since| entry.time >= since) {
                entries.push(entry);
            }
        }
    }
    if let Some(tail) = opts.tail {
        let skip = entries.len().saturating_sub(tail);
        entries.drain(..skip);
    }
    Ok((entries, offset))
}

/// Follow the log from `offset`, calling `emit` for each new entry, until `keep_going` says
/// stop (checked whenever no new data arrived).
///
/// The log is held open between passes, so what a container wrote just before `--rm`
/// removed its directory is still read; it is reopened only when the path names another
/// file (the log was replaced), from its start.
pub fn follow(
    container_dir: &Path,
    offset: u64,
    emit: impl FnMut(&Entry),
    keep_going: impl FnMut() -> bool,
) -> Result<(), LogError> {
    follow_held(container_dir, None, offset, emit, keep_going)
}

/// The log of a container that has not started yet, created (empty) and opened now: a
/// follower that starts before the container cannot miss its output, however short its run
/// and however soon `--rm` removes it. The writer appends to the same file.
pub fn open_for_follow(container_dir: &Path) -> Result<File, LogError> {
    let path = container_dir.join(LOG_FILE);
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)
        .map_err(|source| LogError::Open { path, source })
}

/// [`follow`] from a log already open (see [`open_for_follow`]).
pub fn follow_open(
    container_dir: &Path,
    file: File,
    offset: u64,
    emit: impl FnMut(&Entry),
    keep_going: impl FnMut() -> bool,
) -> Result<(), LogError> {
    follow_held(container_dir, Some(file), offset, emit, keep_going)
}

fn follow_held(
    container_dir: &Path,
    file: Option<File>,
    mut offset: u64,
    mut emit: impl FnMut(&Entry),
    mut keep_going: impl FnMut() -> bool,
) -> Result<(), LogError> {
    use std::os::unix::fs::MetadataExt;
    let path = container_dir.join(LOG_FILE);
    let mut held: Option<(File, u64)> = file.map(|f| {
        let ino = f.metadata().map(|m| m.ino()).unwrap_or_default();
        (f, ino)
    });
    let mut finishing = false;
    loop {
        let named = std::fs::metadata(&path).ok().map(|m| m.ino());
        if named.is_some() && named != held.as_ref().map(|(_, ino)| *ino) {
            if let Ok(file) = File::open(&path) {
                let ino = file.metadata().map(|m| m.ino()).unwrap_or_default();
                if held.is_some() {
                    offset = 0; // the log was replaced
                }
                held = Some((file, ino));
            }
        }
        let mut progressed = false;
        if let Some((file, _)) = &held {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offset {
                offset = 0; // truncated in place
            }
            let mut file = file;
            if file.seek(SeekFrom::Start(offset)).is_ok() {
                let mut reader = BufReader::new(file);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
                    offset += line.len() as u64;
                    if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
                        emit(&entry);
                    }
                    line.clear();
                    progressed = true;
                }
            }
        }
        if !progressed {
            if finishing {
                return Ok(());
            }
            if !keep_going() {
                // One more pass: output written just before the container stopped.
                finishing = true;
                continue;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_in_docker_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path()).unwrap();
        writer.write(Stream::Stdout, b"one\ntwo\n");
        writer.write(Stream::Stderr, b"oops\n");
        let raw = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
        assert_eq!(first["log"], "one\n");
        assert_eq!(first["stream"], "stdout");
        let time = first["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.len() == 30, "{time}");
        let (entries, _) = read(dir.path(), &ReadOptions::default()).unwrap();
        let texts: Vec<&str> = entries.iter().map(|e| e.log.as_str()).collect();
        assert_eq!(texts, ["one\n", "two\n", "oops\n"]);
        assert_eq!(entries[2].stream, Stream::Stderr);
    }

    #[test]
    fn tail_and_corrupt_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path()).unwrap();
        writer.write(Stream::Stdout, b"a\nb\nc\n");
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap()
            .write_all(b"{not json}\n{\"log\":\"cut")
            .unwrap();
        let opts = ReadOptions {
            tail: Some(2),
            ..Default::default()
        };
        let (entries, _) = read(dir.path(), &opts).unwrap();
        let texts: Vec<&str> = entries.iter().map(|e| e.log.as_str()).collect();
        assert_eq!(texts, ["b\n", "c\n"]);
    }

    #[test]
    fn follow_sees_appended_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path()).unwrap();
        writer.write(Stream::Stdout, b"first\n");
        let (_, offset) = read(dir.path(), &ReadOptions::default()).unwrap();
        writer.write(Stream::Stdout, b"second\n");
        let mut seen = Vec::new();
        let mut polls = 0;
        follow(
            dir.path(),
            offset,
            |e| seen.push(e.log.clone()),
            || {
                polls += 1;
                polls < 2
            },
        )
        .unwrap();
        assert_eq!(seen, ["second\n"]);
    }

    #[test]
    fn a_follower_opened_before_the_run_reads_it_after_the_directory_is_gone() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("c");
        std::fs::create_dir(&dir).unwrap();
        let held = open_for_follow(&dir).unwrap();
        let mut writer = LogWriter::open(&dir).unwrap();
        writer.write(Stream::Stdout, b"last words\n");
        drop(writer);
        std::fs::remove_dir_all(&dir).unwrap(); // --rm
        let mut seen = Vec::new();
        follow_open(&dir, held, 0, |e| seen.push(e.log.clone()), || false).unwrap();
        assert_eq!(seen, ["last words\n"]);
        // Without the early open the line is gone with the directory.
        let mut unseen = Vec::new();
        follow(&dir, 0, |e| unseen.push(e.log.clone()), || false).unwrap();
        assert!(unseen.is_empty());
    }
}
