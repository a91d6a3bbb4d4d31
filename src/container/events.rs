//! The container event journal: one JSON line per create, start, pause, unpause, die and
//! destroy in
//! `<root>/events.jsonl`, appended by whichever husk process makes the change (the CLI, a
//! detached monitor, the API service). It is how the Engine API's `wait?condition=removed`
//! learns the exit code of a container that `--rm` has already removed, and what `/events`
//! streams.
//!
//! Like the log writer it never fails the container: an event that cannot be written is
//! lost, the change it describes is not. The journal is bounded: past [`ROTATE_BYTES`] it
//! becomes `events.jsonl.1` (the one older generation kept) and a new one starts.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const EVENTS_FILE: &str = "events.jsonl";

/// Size at which the journal rotates.
pub const ROTATE_BYTES: u64 = 1 << 20;

/// The longest line a reader takes; anything longer is not an event of ours.
const MAX_LINE: u64 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Start,
    Pause,
    Unpause,
    Die,
    Destroy,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Die => "die",
            Action::Destroy => "destroy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub action: Action,
    pub id: String,
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Nanoseconds since the epoch, as Docker's `timeNano`.
    pub time_nano: i64,
}

/// The journal of one root.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

/// Where a reader is in the journal: which generation (its inode) and how far into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    inode: u64,
    offset: u64,
}

fn inode(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.ino(), m.len()))
}

impl Journal {
    pub fn open(root: &Path) -> Self {
        Self {
            path: root.join(EVENTS_FILE),
        }
    }

    fn rotated(&self) -> PathBuf {
        self.path.with_extension("jsonl.1")
    }

    /// Append one event (best effort, see the module comment).
    pub fn append(&self, event: &Event) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= ROTATE_BYTES) {
            let _ = std::fs::rename(&self.path, self.rotated());
        }
        // One write of a short line to an O_APPEND file: lines from concurrent writers never
        // interleave.
        if let Ok(mut file) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = file.write_all(&line);
        }
    }

    /// A cursor at the end of the journal: what [`Journal::read_from`] returns from it is
    /// what happens from now on.
    pub fn end(&self) -> Cursor {
        let (inode, offset) = inode(&self.path).unwrap_or((0, 0));
        Cursor { inode, offset }
    }

    /// Every event the journal still holds, oldest first.
    pub fn all(&self) -> Vec<Event> {
        let mut events = read_lines(&self.rotated(), 0).0;
        events.extend(read_lines(&self.path, 0).0);
        events
    }

    /// The events after `cursor`, and the cursor after them. A journal that rotated since
    /// gives the rest of its older generation first.
    pub fn read_from(&self, cursor: Cursor) -> (Vec<Event>, Cursor) {
        let Some((current, _)) = inode(&self.path) else {
            return (Vec::new(), cursor);
        };
        if current == cursor.inode {
            let (events, offset) = read_lines(&self.path, cursor.offset);
            return (events, Cursor { offset, ..cursor });
        }
        // Rotated since (or the journal did not exist): the rest of the generation the
        // cursor was in, when that is the one kept, then the new one from its start.
        let mut events = Vec::new();
        if cursor.inode != 0 && inode(&self.rotated()).is_some_and(|(i, _)| i == cursor.inode) {
            events = read_lines(&self.rotated(), cursor.offset).0;
        }
        let (newer, offset) = read_lines(&self.path, 0);
        events.extend(newer);
        (
            events,
            Cursor {
                inode: current,
                offset,
            },
        )
    }
}

/// The complete lines of `path` from `offset`, and the offset after the last one. A line that
/// is not an event (a torn write, a foreign line) is skipped.
fn read_lines(path: &Path, offset: u64) -> (Vec<Event>, u64) {
    let mut events = Vec::new();
    let Ok(mut file) = File::open(path) else {
        return (events, offset);
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return (events, offset);
    }
    let mut reader = BufReader::new(file);
    let mut offset = offset;
    loop {
        let mut line = Vec::new();
        match std::io::Read::take(&mut reader, MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(n) if line.ends_with(b"\n") => {
                offset += n as u64;
                if let Ok(event) = serde_json::from_slice::<Event>(&line) {
                    events.push(event);
                }
            }
            // The last line is still being written (or is longer than any event): later.
            Ok(_) => break,
        }
    }
    (events, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: Action, id: &str, exit_code: Option<i32>) -> Event {
        Event {
            action,
            id: id.into(),
            name: "web".into(),
            image: "busybox".into(),
            exit_code,
            time_nano: 1,
        }
    }

    #[test]
    fn readers_see_what_comes_after_their_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path());
        journal.append(&event(Action::Create, "a", None));
        let cursor = journal.end();
        journal.append(&event(Action::Die, "a", Some(3)));
        let (events, cursor) = journal.read_from(cursor);
        assert_eq!(events, vec![event(Action::Die, "a", Some(3))]);
        assert!(journal.read_from(cursor).0.is_empty());
        assert_eq!(journal.all().len(), 2);
    }

    #[test]
    fn a_torn_or_foreign_line_is_skipped_and_a_partial_one_waits() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path());
        std::fs::write(dir.path().join(EVENTS_FILE), "not json\n{\"action\":").unwrap();
        let (events, cursor) = journal.read_from(Cursor::default());
        assert!(events.is_empty());
        assert_eq!(cursor.offset, "not json\n".len() as u64);
        assert_ne!(cursor.inode, 0);
    }

    #[test]
    fn the_journal_rotates_and_a_reader_keeps_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path());
        let big = "x".repeat(ROTATE_BYTES as usize);
        std::fs::write(dir.path().join(EVENTS_FILE), format!("{big}\n")).unwrap();
        journal.append(&event(Action::Start, "a", None));
        let cursor = journal.end();
        journal.append(&event(Action::Die, "a", Some(0)));
        // The next append rotates: the reader still gets the die, then the destroy.
        std::fs::write(
            dir.path().join(EVENTS_FILE),
            [
                std::fs::read(dir.path().join(EVENTS_FILE)).unwrap(),
                vec![b'y'; ROTATE_BYTES as usize],
            ]
            .concat(),
        )
        .unwrap();
        journal.append(&event(Action::Destroy, "a", None));
        assert!(dir.path().join("events.jsonl.1").exists());
        let (events, _) = journal.read_from(cursor);
        let actions: Vec<Action> = events.iter().map(|e| e.action).collect();
        assert_eq!(actions, vec![Action::Die, Action::Destroy]);
    }
}
