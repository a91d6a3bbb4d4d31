//! `top`, `stats` and `rename`: the same runtime pieces as the CLI verbs, in Docker's JSON.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use husk::container::events::{Action, Event};
use husk::container::{Record, Status};
use husk::process::CgroupStats;
use husk::runtime::container::stats;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{channel, empty, json, Body, Service, ServiceError};

/// `GET /containers/{id}/top?ps_args=`: `husk top` (ps in the container's own kernel: the
/// host's, or the guest's) run by the service, its table as Titles and Processes; the last
/// column keeps its spaces, as Docker splits it.
pub fn top(service: &Service, key: &str, ps_args: &str) -> Result<Response<Body>, ServiceError> {
    let record = service.runtime.containers()?.find(key)?;
    if record.effective_status() != Status::Running {
        return Err(ServiceError::Conflict(format!(
            "Container {} is not running",
            record.id
        )));
    }
    let out = service
        .husk_command()?
        .arg("top")
        .arg(&record.id)
        .args(ps_args.split_whitespace())
        .output()
        .map_err(|e| ServiceError::Internal(format!("running husk top: {e}")))?;
    if !out.status.success() {
        return Err(ServiceError::Internal(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(json(StatusCode::OK, &ps_table(&text)?))
}

/// ps's output as Docker's top answer.
fn ps_table(text: &str) -> Result<Value, ServiceError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let titles: Vec<&str> = lines
        .next()
        .ok_or_else(|| ServiceError::Internal("ps printed nothing".into()))?
        .split_whitespace()
        .collect();
    let processes: Vec<Vec<String>> = lines
        .map(|line| {
            let mut fields: Vec<String> = Vec::with_capacity(titles.len());
            let mut rest = line.trim_start();
            while fields.len() + 1 < titles.len() {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                fields.push(rest[..end].to_string());
                rest = rest[end..].trim_start();
            }
            fields.push(rest.to_string());
            fields
        })
        .collect();
    Ok(json!({ "Titles": titles, "Processes": processes }))
}

/// The host's CPU time in nanoseconds (the first line of /proc/stat), what Docker's CPU %
/// divides the container's own by.
fn system_cpu_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?.strip_prefix("cpu ")?.to_string();
            Some(
                line.split_whitespace()
                    .filter_map(|f| f.parse::<u64>().ok())
                    .sum::<u64>(),
            )
        })
        .map_or(0, |total| total * (1_000_000_000 / ticks))
}

struct Sample {
    cgroup: CgroupStats,
    system_ns: u64,
    read: chrono::DateTime<chrono::Utc>,
}

fn sample(record: &Record) -> Option<Sample> {
    let (cgroup, _) = stats::sample(record).ok()?;
    Some(Sample {
        cgroup,
        system_ns: system_cpu_ns(),
        read: chrono::Utc::now(),
    })
}

fn cpu_value(sample: Option<&Sample>, cpus: usize) -> Value {
    match sample {
        Some(s) => json!({
            "cpu_usage": {"total_usage": s.cgroup.cpu_usage_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": s.system_ns,
            "online_cpus": cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }),
        None => json!({"cpu_usage": {"total_usage": 0}, "throttling_data": {}}),
    }
}

/// One stats object: `now` against `before` (Docker's precpu_stats).
fn stats_value(record: &Record, now: &Sample, before: Option<&Sample>) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit = now
        .cgroup
        .memory_limit_bytes
        .filter(|&l| l < u64::MAX / 2)
        .unwrap_or_else(crate::commands::observe::host_memory);
    let zero_time = "0001-01-01T00:00:00Z".to_string();
    json!({
        "id": record.id,
        "name": format!("/{}", record.name),
        "read": now.read.to_rfc3339(),
        "preread": before.map_or(zero_time, |b| b.read.to_rfc3339()),
        "pids_stats": {"current": now.cgroup.pids},
        "cpu_stats": cpu_value(Some(now), cpus),
        "precpu_stats": cpu_value(before, cpus),
        "memory_stats": {
            "usage": now.cgroup.memory_usage_bytes,
            "max_usage": now.cgroup.memory_peak_bytes,
            "limit": limit,
            "failcnt": now.cgroup.oom_kills,
            "stats": {},
        },
        "blkio_stats": {},
        "num_procs": 0,
    })
}

/// `GET /containers/{id}/stats?stream=`: with stream (the default) one object a second until
/// the container stops or the client leaves; without, one object whose precpu_stats is a
/// sample taken a second earlier, so the client's CPU % means something.
pub fn stats(
    service: Arc<Service>,
    key: &str,
    stream: bool,
) -> Result<Response<Body>, ServiceError> {
    let store = service.runtime.containers()?;
    let record = store.find(key)?;
    let (response, tx) = channel(StatusCode::OK, "application/json");
    tokio::task::spawn_blocking(move || {
        let mut before = None;
        loop {
            let running = store
                .load(&record.id)
                .is_ok_and(|r| r.effective_status() == Status::Running);
            let now = if running { sample(&record) } else { None };
            let value = match &now {
                Some(now) if stream || before.is_some() => {
                    Some(stats_value(&record, now, before.as_ref()))
                }
                Some(_) => None, // the first of a one-shot's two samples
                // A stopped container: Docker's empty object, with the names.
                None => Some(json!({"id": record.id, "name": format!("/{}", record.name),
                    "read": "0001-01-01T00:00:00Z", "pids_stats": {}, "cpu_stats": {"cpu_usage": {"total_usage": 0}},
                    "precpu_stats": {"cpu_usage": {"total_usage": 0}}, "memory_stats": {}, "blkio_stats": {}})),
            };
            if let Some(value) = value {
                if tx.blocking_send(Bytes::from(format!("{value}\n"))).is_err() {
                    return;
                }
                if !stream || now.is_none() {
                    return;
                }
            }
            before = now;
            std::thread::sleep(Duration::from_secs(1));
            if tx.is_closed() {
                return;
            }
        }
    });
    Ok(response)
}

/// A time of the events API: Unix seconds, with an optional fraction (what the docker CLI
/// turns `--since 10m` into), as nanoseconds.
fn unix_nanos(key: &str, value: Option<&String>) -> Result<Option<i64>, ServiceError> {
    match value.map(String::as_str) {
        None | Some("") => Ok(None),
        Some(text) => {
            let seconds: f64 = text
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| ServiceError::BadRequest(format!("invalid {key} {text:?}")))?;
            Ok(Some((seconds * 1e9).min(i64::MAX as f64) as i64))
        }
    }
}

/// One journal event in Docker's JSON shape.
fn event_value(event: &Event) -> Value {
    let mut attributes = json!({"image": event.image, "name": event.name});
    if let (Action::Die, Some(code)) = (event.action, event.exit_code) {
        attributes["exitCode"] = json!(code.to_string());
    }
    json!({
        "status": event.action.as_str(),
        "id": event.id,
        "from": event.image,
        "Type": "container",
        "Action": event.action.as_str(),
        "Actor": {"ID": event.id, "Attributes": attributes},
        "scope": "local",
        "time": event.time_nano / 1_000_000_000,
        "timeNano": event.time_nano,
    })
}

/// `GET /events?since=&until=&filters=`: the container events of the journal (create, start,
/// die, destroy) from `since`, then as they happen until `until` (or the client leaves).
/// Filters: type (container), event, container (a name or an id prefix).
pub fn events(
    service: Arc<Service>,
    query: &HashMap<String, String>,
    filters: HashMap<String, Vec<String>>,
) -> Result<Response<Body>, ServiceError> {
    for key in filters.keys() {
        if !matches!(key.as_str(), "type" | "event" | "container") {
            return Err(ServiceError::BadRequest(format!(
                "invalid filter '{key}': husk's events filter by type, event and container"
            )));
        }
    }
    let since = unix_nanos("since", query.get("since"))?;
    let until = unix_nanos("until", query.get("until"))?;
    let journal = service.runtime.containers()?.journal().clone();
    let wanted = move |e: &Event| {
        let any = |key: &str, test: &dyn Fn(&str) -> bool| {
            filters
                .get(key)
                .is_none_or(|values| values.iter().any(|v| test(v)))
        };
        until.is_none_or(|u| e.time_nano <= u)
            && any("type", &|v| v == "container")
            && any("event", &|v| v == e.action.as_str())
            && any("container", &|v| v == e.name || e.id.starts_with(v))
    };
    let (response, tx) = channel(StatusCode::OK, "application/json");
    tokio::task::spawn_blocking(move || {
        let mut cursor = journal.end();
        let send = |e: &Event| tx.blocking_send(Bytes::from(format!("{}\n", event_value(e))));
        if let Some(since) = since {
            for event in journal.all().iter().filter(|e| e.time_nano >= since) {
                if wanted(event) && send(event).is_err() {
                    return;
                }
            }
        }
        loop {
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
            if until.is_some_and(|u| now > u) || tx.is_closed() {
                return;
            }
            let (events, next) = journal.read_from(cursor);
            cursor = next;
            for event in events.iter().filter(|e| wanted(e)) {
                if send(event).is_err() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    Ok(response)
}

/// `POST /containers/{id}/rename?name=`.
pub fn rename(service: &Service, key: &str, name: &str) -> Result<Response<Body>, ServiceError> {
    if name.is_empty() {
        return Err(ServiceError::BadRequest("name is required".into()));
    }
    service
        .runtime
        .containers()?
        .rename(key, name.trim_start_matches('/'))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_output_splits_into_titles_and_rows_the_last_column_whole() {
        let text = "PID   USER     TIME  COMMAND\n    1 root      0:00 sh -c sleep 100\n    7 root      0:00 sleep 100\n";
        let value = ps_table(text).unwrap();
        assert_eq!(value["Titles"], json!(["PID", "USER", "TIME", "COMMAND"]));
        assert_eq!(
            value["Processes"][0],
            json!(["1", "root", "0:00", "sh -c sleep 100"])
        );
        assert_eq!(value["Processes"][1][3], "sleep 100");
        assert!(ps_table("").is_err());
    }
}
