//! How results look: aligned tables for people, the API's JSON for scripts.

use std::io::IsTerminal;

use chrono::{DateTime, Utc};
use comfy_table::{presets, Table};
use serde::Serialize;

/// Where output goes and how it may look.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// ANSI colors on stdout: only on a terminal, never with `NO_COLOR` set.
    pub color: bool,
    /// ANSI colors on stderr.
    pub color_err: bool,
    /// "Now", for relative times.
    pub now: DateTime<Utc>,
}

impl Style {
    /// From the environment.
    pub fn detect() -> Self {
        let allowed = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Self {
            color: allowed && std::io::stdout().is_terminal(),
            color_err: allowed && std::io::stderr().is_terminal(),
            now: Utc::now(),
        }
    }

    /// `text` in the color of a status (green done, red failed, yellow stopped at a gate).
    pub fn status(&self, text: &str) -> String {
        let code = match text {
            "completed" | "approved" | "allowed" | "executed" | "started" | "resumed"
            | "retried" => "32",
            "failed" | "rejected" | "blocked" | "timed_out" | "expired" | "refused" => "31",
            "paused" | "waiting" | "pending" | "would_retry" | "would_migrate" => "33",
            "cancelled" | "superseded" => "90",
            _ => return text.to_owned(),
        };
        paint(self.color, code, text)
    }

    /// `text` dimmed (secondary information).
    pub fn dim(&self, text: &str) -> String {
        paint(self.color, "2", text)
    }

    /// `text` in bold.
    pub fn bold(&self, text: &str) -> String {
        paint(self.color, "1", text)
    }

    /// A time relative to now: `5 s ago`, `2 h ago`, `in 3 d`.
    pub fn ago(&self, at: DateTime<Utc>) -> String {
        relative(at, self.now)
    }

    /// An optional time, relative, or `-`.
    pub fn ago_opt(&self, at: Option<DateTime<Utc>>) -> String {
        at.map_or_else(|| "-".to_owned(), |t| self.ago(t))
    }
}

fn paint(on: bool, code: &str, text: &str) -> String {
    if on {
        format!("\u{1b}[{code}m{text}\u{1b}[0m")
    } else {
        text.to_owned()
    }
}

/// `at` relative to `now`, in the largest unit that fits.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds();
    let (n, future) = if secs < 0 {
        (-secs, true)
    } else {
        (secs, false)
    };
    let span = match n {
        0..=59 => format!("{n} s"),
        60..=3599 => format!("{} min", n / 60),
        3600..=86_399 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86_400),
    };
    if future {
        format!("in {span}")
    } else if n == 0 {
        "now".to_owned()
    } else {
        format!("{span} ago")
    }
}

/// Prints rows under headers, aligned, without borders (like `kubectl get`).
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    if rows.is_empty() {
        println!("(none)");
        return;
    }
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(headers.iter().map(|h| h.to_uppercase()));
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    for line in table.to_string().lines() {
        println!("{}", line.trim_end());
    }
}

/// Prints `label: value` lines, labels aligned.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in pairs {
        println!("{label:<width$}  {value}");
    }
}

/// Prints `value` as pretty JSON.
pub fn json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Compact one-line JSON of a value, shortened for a table cell.
pub fn brief(value: &serde_json::Value, max: usize) -> String {
    let text = match value {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > max {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// An optional text, or `-`.
pub fn or_dash(text: Option<&str>) -> String {
    text.map_or_else(|| "-".to_owned(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_use_the_largest_unit_that_fits() {
        let now = Utc::now();
        let cases = [
            (0, "now"),
            (5, "5 s ago"),
            (90, "1 min ago"),
            (7300, "2 h ago"),
            (3 * 86_400 + 5, "3 d ago"),
            (-7300, "in 2 h"),
        ];
        for (secs, want) in cases {
            assert_eq!(
                relative(now - chrono::TimeDelta::seconds(secs), now),
                want,
                "{secs} s"
            );
        }
    }

    #[test]
    fn brief_cuts_long_values() {
        let v = serde_json::json!({"a": "0123456789"});
        assert_eq!(brief(&v, 8), "{\"a\":\"0…");
        assert_eq!(brief(&serde_json::Value::Null, 8), "-");
    }
}
