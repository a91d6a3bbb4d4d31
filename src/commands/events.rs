//! `husk events`: the container events of the root's journal (container::events) in
//! Docker's line format, past ones from `--since`, then new ones as they happen until
//! `--until` (or forever).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use husk::container::events::{Action, Event};
use husk::container::Containers;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show events created since this time (RFC 3339, or a duration such as 10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this time (RFC 3339, or a duration such as 10m ago).
    #[arg(long)]
    pub until: Option<String>,
}

/// Docker's line: `TIME container ACTION ID (exitCode=N, image=IMAGE, name=NAME)`.
pub fn render(event: &Event) -> String {
    let time = DateTime::<Utc>::from_timestamp_nanos(event.time_nano)
        .to_rfc3339_opts(SecondsFormat::Nanos, true);
    let mut attributes = Vec::new();
    if let (Action::Die, Some(code)) = (event.action, event.exit_code) {
        attributes.push(format!("exitCode={code}"));
    }
    attributes.push(format!("image={}", event.image));
    attributes.push(format!("name={}", event.name));
    format!(
        "{time} container {} {} ({})",
        event.action.as_str(),
        event.id,
        attributes.join(", ")
    )
}

pub fn events(root: &Path, args: EventsArgs) -> Result<i32> {
    let nanos = |at: DateTime<Utc>| at.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let bound = |flag: &str, value: Option<&str>| -> Result<Option<i64>> {
        Ok(value
            .map(|t| super::lifecycle::parse_time(flag, t))
            .transpose()?
            .map(nanos))
    };
    let since = bound("--since", args.since.as_deref())?;
    let until = bound("--until", args.until.as_deref())?;
    let store = Containers::open(root)?;
    let journal = store.journal();
    let mut cursor = journal.end();
    let in_range = |e: &Event| until.is_none_or(|u| e.time_nano <= u);
    if let Some(since) = since {
        for event in journal.all().iter().filter(|e| e.time_nano >= since) {
            if in_range(event) {
                println!("{}", render(event));
            }
        }
    }
    loop {
        let now = nanos(Utc::now());
        if until.is_some_and(|u| now > u) {
            return Ok(0);
        }
        let (events, next) = journal.read_from(cursor);
        cursor = next;
        for event in events.iter().filter(|e| in_range(e)) {
            println!("{}", render(event));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_like_dockers() {
        let event = Event {
            action: Action::Die,
            id: "abc".into(),
            name: "web".into(),
            image: "busybox".into(),
            exit_code: Some(3),
            time_nano: 1_700_000_000_123_456_789,
        };
        assert_eq!(
            render(&event),
            "2023-11-14T22:13:20.123456789Z container die abc (exitCode=3, image=busybox, name=web)"
        );
    }
}
