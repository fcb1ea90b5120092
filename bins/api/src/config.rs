//! Settings of the server and the worker, from flags, `TOLLGATE_…` environment variables
//! and an optional JSON file for what does not fit on a command line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Directory for the embedded SQLite database and the admin key file.
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "./tollgate-data")]
    pub data_dir: PathBuf,

    /// Database to use: `sqlite:PATH` (default: `<data-dir>/tollgate.db`) or
    /// `postgres://user@host/db` (needed to run several API processes or separate
    /// resume workers).
    #[arg(long, env = "TOLLGATE_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Maximum PostgreSQL connections of this process.
    #[arg(long, env = "TOLLGATE_DATABASE_MAX_CONNECTIONS", default_value_t = 32)]
    pub database_max_connections: u32,
}

impl DatabaseArgs {
    /// The database this process uses.
    pub fn target(&self) -> anyhow::Result<DatabaseTarget> {
        match self.database_url.as_deref() {
            None => Ok(DatabaseTarget::Sqlite(self.data_dir.join("tollgate.db"))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(DatabaseTarget::Postgres(url.to_owned()))
            }
            Some(url) => match url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
            {
                Some(path) if !path.is_empty() => Ok(DatabaseTarget::Sqlite(PathBuf::from(
                    path.split('?').next().unwrap_or(path),
                ))),
                _ => bail!("--database-url `{url}` is neither `sqlite:PATH` nor `postgres://…`"),
            },
        }
    }
}

/// A parsed `--database-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

/// How the worker loop runs.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Safety-net poll for due deadlines and abandoned executions, when no wake-up came
    /// earlier (e.g. `1s`, `500ms`).
    #[arg(long, env = "TOLLGATE_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Executions the worker loop advances at once.
    #[arg(long, env = "TOLLGATE_WORKER_CONCURRENCY", default_value_t = 16)]
    pub worker_concurrency: usize,

    /// How long a worker's claim on an execution lasts without a heartbeat; another
    /// worker takes over a dead one's executions after this.
    #[arg(long, env = "TOLLGATE_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,
}

/// Parses `1s`, `250ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration: {e}"))
}

/// `--config FILE`: settings that are maps rather than flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Context providers: resource name (as in a definition's `context.load`) → URL
    /// template, e.g. `"customer.profile": "https://crm/customers/{{customer_id}}"`.
    #[serde(default)]
    pub context_providers: HashMap<String, String>,
    /// Values for `{{secrets.NAME}}` in definitions.
    #[serde(default)]
    pub secrets: HashMap<String, String>,
    /// Where `notify` actions are delivered.
    #[serde(default)]
    pub notifier: Option<NotifierConfig>,
    /// Time limit of outgoing HTTP calls without their own `timeout` (default `30s`).
    #[serde(default)]
    pub http_timeout: Option<String>,
}

/// `notifier` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    /// Notifications are sent here (HTTP `POST`) as JSON; without it they are only recorded.
    pub webhook_url: String,
}

impl FileConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let config: Self = serde_json::from_str(&text)
            .with_context(|| format!("config file {} is not valid", path.display()))?;
        if let Some(timeout) = &config.http_timeout {
            parse_duration(timeout)
                .map_err(|e| anyhow::anyhow!("{}: http_timeout: {e}", path.display()))?;
        }
        Ok(config)
    }

    /// The default HTTP time limit.
    pub fn http_timeout(&self) -> Duration {
        self.http_timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(30))
    }
}

/// Everything `tollgate-api` needs to serve.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Run the worker loop (deadlines, abandoned executions) inside this process. Turn
    /// it off when separate `tollgate-resume-worker` processes do it (PostgreSQL only).
    #[arg(long, env = "TOLLGATE_EMBEDDED_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub embedded_worker: bool,

    /// Worker loop tuning.
    #[command(flatten)]
    pub worker: WorkerArgs,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "TOLLGATE_MAX_BODY_SIZE", default_value_t = 1024 * 1024)]
    pub max_body_size: usize,

    /// Longest a `?wait=true` call waits for the execution to reach a gate or end.
    #[arg(long, env = "TOLLGATE_WAIT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub wait_timeout: Duration,

    /// How long a verified API key is trusted before it is looked up again. A key
    /// revoked through this server stops working at once; one revoked through another
    /// server stops working here within this time. `0s` looks the key up on every
    /// request.
    #[arg(long, env = "TOLLGATE_KEY_CACHE_TTL", default_value = "1s", value_parser = parse_duration)]
    pub key_cache_ttl: Duration,

    /// How old the counts of ended executions (completed, failed, cancelled, timed out)
    /// in `/metrics` may be. Counting them reads every execution ever run, so each
    /// server does it at most this often; `running`, `paused` and `waiting` are counted
    /// on every scrape. `0s` counts everything on every scrape.
    #[arg(long, env = "TOLLGATE_METRICS_TERMINAL_REFRESH", default_value = "60s", value_parser = parse_duration)]
    pub metrics_terminal_refresh: Duration,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "TOLLGATE_HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    /// Log format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// JSON file with context providers, secrets and the notifier webhook.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,

    /// How long shutdown waits for executions in flight before leaving them to lease
    /// expiry.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(url: Option<&str>) -> DatabaseArgs {
        DatabaseArgs {
            data_dir: PathBuf::from("/d"),
            database_url: url.map(str::to_owned),
            database_max_connections: 4,
        }
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            db(None).target().unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("/d/tollgate.db"))
        );
        assert_eq!(
            db(Some("sqlite:/tmp/x.db")).target().unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(
            db(Some("sqlite://rel.db?mode=rwc")).target().unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("rel.db"))
        );
        assert!(matches!(
            db(Some("postgres://u@h/db")).target().unwrap(),
            DatabaseTarget::Postgres(_)
        ));
        assert!(db(Some("mysql://x")).target().is_err());
        assert!(db(Some("sqlite:")).target().is_err());
    }
}
