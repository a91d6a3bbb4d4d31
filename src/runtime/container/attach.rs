//! `attach` and `logs`: the container's output from its json-file log, and our stdin into
//! the stdin FIFO of a detached `-i` container. Both isolations write the same log.

use std::io::Write;

use crate::container::logs::{self, ReadOptions, Stream};
use crate::container::Status;
use crate::runtime::{Runtime, RuntimeError};

/// Write one log entry to our stdout or stderr, as the container wrote it.
fn emit(entry: &logs::Entry, text: &str) {
    let _ = match entry.stream {
        Stream::Stdout => std::io::stdout().write_all(text.as_bytes()),
        Stream::Stderr => std::io::stderr().write_all(text.as_bytes()),
    };
    let _ = std::io::stdout().flush();
}

/// `attach`: the container's output from now on, and our stdin into its stdin when it was
/// started with `-i`, until it stops. Returns its exit code.
pub fn attach(runtime: &Runtime, key: &str, stdin: bool) -> Result<i32, RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    if record.effective_status() != Status::Running {
        return Err(RuntimeError::State(
            "You cannot attach to a stopped container, start it first".into(),
        ));
    }
    let dir = store.dir_of(&record.id);
    // From here on every line is ours: taken before any input can make the container answer.
    let (_, offset) = logs::read(&dir, &ReadOptions::default())?;
    if record.options.interactive && stdin {
        let fifo = dir.join(super::start::STDIN_FIFO);
        if let Ok(mut input) = std::fs::OpenOptions::new().write(true).open(&fifo) {
            std::thread::spawn(move || std::io::copy(&mut std::io::stdin(), &mut input));
        }
    }
    logs::follow(
        &dir,
        offset,
        |entry| emit(entry, &entry.log),
        || {
            store
                .load(&record.id)
                .is_ok_and(|r| r.effective_status() == Status::Running)
        },
    )?;
    let record = store.load(&record.id)?;
    Ok(record.state.exit_code.unwrap_or(0))
}

/// `logs`: what the log holds as `options` select, then, with `follow`, what comes until the
/// container stops for good (a restart policy keeps it running; its supervisor lives on
/// between the runs).
pub fn logs(
    runtime: &Runtime,
    key: &str,
    options: &ReadOptions,
    follow: bool,
) -> Result<(), RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    let dir = store.dir_of(&record.id);
    let (entries, offset) = logs::read(&dir, options)?;
    let show = |entry: &logs::Entry| emit(entry, &logs::render(entry, options.timestamps));
    entries.iter().for_each(show);
    if follow {
        logs::follow(&dir, offset, show, || {
            store.load(&record.id).is_ok_and(|r| {
                r.effective_status() == Status::Running
                    || r.state.supervisor.is_some_and(|s| s.is_alive())
            })
        })?;
    }
    Ok(())
}
