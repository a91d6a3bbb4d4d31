//! Docker's ways of showing things: tab-aligned tables, human durations ("2 minutes ago")
//! and human sizes ("4.26MB"), so output reads (and parses) like Docker's.

use std::time::Duration;

/// Columns padded like Docker's tabwriter (`tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`):
/// each column is as wide as its widest cell plus 3 spaces, and at least 10.
const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = (widths[c] + PADDING).max(MIN_WIDTH) - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Docker's `units.HumanDuration`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    match () {
        _ if seconds < 1 => "Less than a second".into(),
        _ if seconds == 1 => "1 second".into(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// How long ago `then` was, Docker style ("5 seconds ago").
pub fn ago(then: chrono::DateTime<chrono::Utc>) -> String {
    let elapsed = (chrono::Utc::now() - then).to_std().unwrap_or_default();
    format!("{} ago", human_duration(elapsed))
}

/// Docker's `units.HumanSizeWithPrecision(size, 3)` in decimal units ("4.26MB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < UNITS.len() {
        size /= 1000.0;
        unit += 1;
    }
    // %.4g: at most 3 significant digits after trimming, no trailing zeros.
    let digits = if size >= 100.0 {
        0
    } else if size >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{size:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

/// Shorten to `max` characters with Docker's ellipsis.
pub fn ellipsize(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(600)), "10 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600)), "About an hour");
        assert_eq!(human_duration(Duration::from_secs(5 * 3600)), "5 hours");
        assert_eq!(human_duration(Duration::from_secs(72 * 3600)), "3 days");
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(13_300), "13.3kB");
        assert_eq!(human_size(1_000_000_000), "1GB");
    }

    #[test]
    fn tables_pad_with_three_spaces() {
        let mut table = Table::new(&["A", "LONGER"]);
        table.row(vec!["value".into(), "x".into()]);
        // Narrow columns are 10 wide, as in Docker's `PORTS     NAMES`.
        assert_eq!(table.render(), "A         LONGER\nvalue     x\n");
        let mut wide = Table::new(&["CONTAINER ID", "IMAGE"]);
        wide.row(vec!["0123456789ab".into(), "busybox".into()]);
        assert_eq!(
            wide.render(),
            "CONTAINER ID   IMAGE\n0123456789ab   busybox\n"
        );
    }

    #[test]
    fn ellipsis_keeps_the_limit() {
        assert_eq!(
            ellipsize("echo 'hello from busybox'", 20),
            "echo 'hello from bu…"
        );
        assert_eq!(ellipsize("true", 20), "true");
    }
}
