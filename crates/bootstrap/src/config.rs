//! Settings every process shares, from flags, `TOLLGATE_…` environment variables and an
//! optional JSON file for what does not fit on a command line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use tollgate::backend::{Backend, BackendOptions, DatabaseTarget, SqliteSynchronous};

use crate::Error;

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

    /// PostgreSQL: longest a statement may run before the server cancels it (`0s`: no
    /// limit). Migrations run without it.
    #[arg(long, env = "TOLLGATE_DATABASE_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub database_statement_timeout: Duration,

    /// PostgreSQL: longest a statement waits for a lock (`0s`: no limit).
    #[arg(long, env = "TOLLGATE_DATABASE_LOCK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub database_lock_timeout: Duration,

    /// PostgreSQL: a transaction left idle this long is ended by the server, releasing
    /// its locks (`0s`: no limit).
    #[arg(long, env = "TOLLGATE_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub database_idle_in_transaction_timeout: Duration,

    /// What a start does with the database schema: `auto` applies this release's
    /// missing migrations; `check` applies nothing and refuses to start on a schema
    /// that lacks one (run `migrate` once first); `off` neither applies nor checks. A
    /// schema one release newer is accepted in every mode (rolling upgrades, rollbacks).
    #[arg(long, env = "TOLLGATE_MIGRATE", value_enum, default_value_t = MigrateMode::Auto)]
    pub migrate: MigrateMode,

    /// PostgreSQL: refuse to start when this host's clock differs from the database
    /// server's by more than this, and stop (exit non-zero) when a check every minute
    /// finds it so later (leases and deadlines are compared against each process's
    /// clock: a host ahead by a lease would take over running executions). Above a
    /// fifth of it, a warning is logged.
    #[arg(long, env = "TOLLGATE_MAX_CLOCK_SKEW", default_value = "5s", value_parser = parse_positive_duration)]
    pub max_clock_skew: Duration,

    /// SQLite: `normal` — a commit survives the process being killed, a power loss may
    /// lose the last transactions; `full` — every commit is synced to disk before it is
    /// acknowledged, and survives a power loss too, at one sync per commit.
    #[arg(long, env = "TOLLGATE_SQLITE_SYNCHRONOUS", value_enum, default_value_t = SqliteSync::Normal)]
    pub sqlite_synchronous: SqliteSync,
}

/// `--sqlite-synchronous`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSync {
    /// `PRAGMA synchronous=NORMAL`.
    #[default]
    Normal,
    /// `PRAGMA synchronous=FULL`.
    Full,
}

/// `--migrate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateMode {
    /// Apply missing migrations at start.
    #[default]
    Auto,
    /// Refuse to start on a schema that lacks migrations.
    Check,
    /// Leave the schema alone.
    Off,
}

impl MigrateMode {
    /// The backends' policy.
    pub fn policy(self) -> tollgate_store::SchemaPolicy {
        match self {
            Self::Auto => tollgate_store::SchemaPolicy::Apply,
            Self::Check => tollgate_store::SchemaPolicy::Check,
            Self::Off => tollgate_store::SchemaPolicy::Skip,
        }
    }
}

impl DatabaseArgs {
    /// The database this process uses.
    pub fn target(&self) -> Result<DatabaseTarget, Error> {
        match self.database_url.as_deref() {
            None => Ok(DatabaseTarget::Sqlite(self.data_dir.join("tollgate.db"))),
            Some(url) => Ok(DatabaseTarget::parse(url)?),
        }
    }

    /// How [`Backend::open`] opens it.
    pub fn backend_options(&self) -> Result<BackendOptions, Error> {
        let mut options = BackendOptions::new(self.target()?);
        options.schema = self.migrate.policy();
        options.max_connections = self.database_max_connections;
        options.statement_timeout = self.database_statement_timeout;
        options.lock_timeout = self.database_lock_timeout;
        options.idle_in_transaction_timeout = self.database_idle_in_transaction_timeout;
        options.max_clock_skew = self.max_clock_skew;
        options.sqlite_synchronous = match self.sqlite_synchronous {
            SqliteSync::Normal => SqliteSynchronous::Normal,
            SqliteSync::Full => SqliteSynchronous::Full,
        };
        // The process in `pg_stat_activity`: `tollgate-api`, `tollgate-resume-worker`.
        if !options.application_name.starts_with("tollgate") {
            options.application_name = "tollgate".into();
        }
        Ok(options)
    }

    /// Opens the database and prepares its schema as `--migrate` says.
    pub async fn open(&self) -> Result<Backend, Error> {
        Ok(Backend::open(&self.backend_options()?).await?)
    }
}

/// How the worker loop runs.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Safety-net poll for due deadlines and abandoned executions, when no wake-up came
    /// earlier (e.g. `1s`, `500ms`).
    #[arg(long, env = "TOLLGATE_POLL_INTERVAL", default_value = "1s", value_parser = parse_positive_duration)]
    pub poll_interval: Duration,

    /// Executions the worker loop advances at once.
    #[arg(long, env = "TOLLGATE_WORKER_CONCURRENCY", default_value_t = 16)]
    pub worker_concurrency: usize,

    /// How long a worker's claim on an execution lasts without a heartbeat; another
    /// worker takes over a dead one's executions after this.
    #[arg(long, env = "TOLLGATE_LEASE", default_value = "30s", value_parser = parse_positive_duration)]
    pub lease: Duration,

    /// How often the worker loop records its heartbeat in the database, which
    /// `/health/ready` and `/metrics` of every API server report.
    #[arg(long, env = "TOLLGATE_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = parse_positive_duration)]
    pub heartbeat_interval: Duration,

    /// The longest the worker loop waits for the database in one pass (its claims, its
    /// heartbeat); past it the pass is abandoned and the next starts on fresh
    /// connections, so a connection a network partition black-holed stops the loop for
    /// this long rather than the many minutes TCP takes to give up.
    #[arg(long, env = "TOLLGATE_WORKER_PASS_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub worker_pass_timeout: Duration,

    /// Delete ended executions this long after they end (e.g. `90d`), with their steps,
    /// audit and notifications, in small batches by the worker loop; off when not given.
    /// A workflow's own `retention` overrides it.
    #[arg(long, env = "TOLLGATE_RETENTION", value_parser = parse_positive_duration)]
    pub retention: Option<Duration>,

    /// Ended executions deleted per transaction by retention (small: no long locks).
    #[arg(long, env = "TOLLGATE_RETENTION_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub retention_batch: u32,

    /// How often the worker loop looks for history past its retention when its last
    /// batch was not full (a full batch is followed by the next at once).
    #[arg(long, env = "TOLLGATE_RETENTION_INTERVAL", default_value = "60s", value_parser = parse_positive_duration)]
    pub retention_interval: Duration,

    /// Before retention deletes a batch, write it here (gzip JSON Lines, a directory per
    /// day the executions ended); nothing is deleted that could not be written.
    #[arg(long, env = "TOLLGATE_ARCHIVE_DIR")]
    pub archive_dir: Option<std::path::PathBuf>,

    /// Delete events nobody took (started nothing, no wait consumed them) this long after
    /// they arrive, in batches by the worker loop; `off` keeps them. A wait step's
    /// `early_events` keeps its event type longer.
    #[arg(long, env = "TOLLGATE_EVENT_RETENTION", default_value = "7d", value_parser = parse_duration_or_off)]
    pub event_retention: DurationOrOff,

    /// How long a worker's claim on a notification it is sending lasts: a worker that
    /// dies mid-send leaves it to another after this (docs/notifications.md, "The
    /// outbox"). Longer than a send takes (`http_timeout`, the SMTP timeout).
    #[arg(long, env = "TOLLGATE_NOTIFICATION_CLAIM", default_value = "2m", value_parser = parse_positive_duration)]
    pub notification_claim: Duration,
}

/// Parses `1s`, `250ms`, `2m`, `1h30m`: the one duration format of Tollgate, the same
/// as in workflow definitions ([`tollgate_model::Duration`]), so no spelling works in one
/// place and fails in another.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<tollgate_model::Duration>()
        .map(tollgate_model::Duration::as_std)
        .map_err(|e| e.to_string())
}

/// An absolute `http` or `https` URL with a host, else why not.
fn check_url(text: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("`{text}` is not an http(s) URL with a host"));
    }
    Ok(())
}

/// A duration that must be longer than zero (a zero poll interval spins the loop; a
/// zero lease is lost as soon as it is taken).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(duration)
}

/// A setting that is a positive duration or `off` (`None`). (A plain `Option` would
/// read as "absent" to clap, and could not have a default that `off` turns off.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationOrOff(pub Option<Duration>);

/// Parses a positive duration, or `off`.
pub fn parse_duration_or_off(text: &str) -> Result<DurationOrOff, String> {
    if text == "off" {
        return Ok(DurationOrOff(None));
    }
    parse_positive_duration(text).map(|d| DurationOrOff(Some(d)))
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
    /// Where `notify` actions are delivered (the `webhook` channel; `channels.webhook`
    /// says the same and wins).
    #[serde(default)]
    pub notifier: Option<NotifierConfig>,
    /// The channels queued notifications are sent through (docs/notifications.md,
    /// "Channels"). Every process that runs a worker needs the same.
    #[serde(default)]
    pub channels: ChannelsConfig,
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
    /// Signs each post in a `Tollgate-Signature` header (HMAC-SHA256 over the timestamp
    /// and body) that the receiver checks with the same secret; unsigned without it.
    #[serde(default)]
    pub signing_secret: Option<String>,
}

/// `channels` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    /// Email over SMTP.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    /// A Slack-compatible incoming webhook.
    #[serde(default)]
    pub slack: Option<ChatConfig>,
    /// A Microsoft Teams-compatible incoming webhook (Adaptive Card messages).
    #[serde(default)]
    pub teams: Option<ChatConfig>,
    /// The generic signed webhook.
    #[serde(default)]
    pub webhook: Option<NotifierConfig>,
    /// Where the server is reached from outside (`https://tollgate.example.com`): the
    /// start of decision links and console links in messages. `tollgate-api` falls
    /// back to its `--public-url`; without either, messages carry no links.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The decision-link key file, for processes without `tollgate-api`'s own
    /// (`tollgate-resume-worker`): it must be the API servers' file, or their links
    /// refuse the links this worker sends.
    #[serde(default)]
    pub link_key_file: Option<PathBuf>,
}

/// `channels.email`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server: `smtp://host:25` (plain), `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS), `smtps://user:pass@host:465` (TLS from the start).
    pub smtp_url: String,
    /// The sender, e.g. `Tollgate <approvals@example.com>`.
    pub from: String,
}

/// `channels.slack` and `channels.teams`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// The incoming webhook's URL: where messages go when no named webhook is asked for.
    pub webhook_url: String,
    /// More incoming webhooks by name (one per chat channel, say `directors`): a message
    /// whose `to` names one goes there. Once any is named, a `to` that names none is a
    /// permanent failure, so a typo never posts approvals into the wrong room.
    #[serde(default)]
    pub webhooks: std::collections::BTreeMap<String, String>,
}

impl FileConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|source| Error::ConfigInvalid {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |field: String, message: String| Error::ConfigValue {
            path: path.to_owned(),
            field,
            message,
        };
        if let Some(timeout) = &config.http_timeout {
            parse_duration(timeout).map_err(|message| invalid("http_timeout".into(), message))?;
        }
        // URLs are checked now, not at the first notification or context load weeks
        // later. A provider's `{{…}}` parts are filled with a stand-in to check the rest.
        if let Some(notifier) = &config.notifier {
            check_url(&notifier.webhook_url)
                .map_err(|m| invalid("notifier.webhook_url".into(), m))?;
            if notifier
                .signing_secret
                .as_deref()
                .is_some_and(|s| s.trim().is_empty())
            {
                return Err(invalid(
                    "notifier.signing_secret".into(),
                    "must not be empty (leave it out for unsigned posts)".into(),
                ));
            }
        }
        let channels = &config.channels;
        if let Some(email) = &channels.email {
            crate::channels::check_email(email).map_err(|m| invalid("channels.email".into(), m))?;
        }
        for (name, chat) in [("slack", &channels.slack), ("teams", &channels.teams)] {
            if let Some(chat) = chat {
                check_url(&chat.webhook_url)
                    .map_err(|m| invalid(format!("channels.{name}.webhook_url"), m))?;
                for (hook, url) in &chat.webhooks {
                    check_url(url)
                        .map_err(|m| invalid(format!("channels.{name}.webhooks.{hook}"), m))?;
                }
            }
        }
        if let Some(webhook) = &channels.webhook {
            check_url(&webhook.webhook_url)
                .map_err(|m| invalid("channels.webhook.webhook_url".into(), m))?;
        }
        if let Some(url) = &channels.public_url {
            check_url(url).map_err(|m| invalid("channels.public_url".into(), m))?;
        }
        let mut providers: Vec<_> = config.context_providers.iter().collect();
        providers.sort();
        for (name, template) in providers {
            let filled = tollgate_model::template::scan(template)
                .into_iter()
                .map(|piece| match piece {
                    tollgate_model::template::Piece::Text(text) => text,
                    tollgate_model::template::Piece::Path(_) => "x".to_owned(),
                })
                .collect::<String>();
            check_url(&filled).map_err(|m| invalid(format!("context_providers[\"{name}\"]"), m))?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(url: Option<&str>) -> DatabaseArgs {
        DatabaseArgs {
            data_dir: PathBuf::from("/data"),
            database_url: url.map(str::to_owned),
            database_max_connections: 4,
            database_statement_timeout: Duration::from_secs(30),
            database_lock_timeout: Duration::from_secs(10),
            database_idle_in_transaction_timeout: Duration::from_secs(60),
            migrate: MigrateMode::Auto,
            max_clock_skew: Duration::from_secs(5),
            sqlite_synchronous: SqliteSync::Normal,
        }
    }

    /// The flags as clap reads them: the default, a duration, `off`, and nonsense.
    #[test]
    fn event_retention_defaults_to_a_week_and_can_be_off() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            worker: WorkerArgs,
        }
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(std::iter::once("x").chain(extra.iter().copied()))
                .map(|c| c.worker.event_retention)
        };
        assert_eq!(
            parse(&[]).unwrap(),
            DurationOrOff(Some(Duration::from_secs(7 * 24 * 3600)))
        );
        assert_eq!(
            parse(&["--event-retention", "2d"]).unwrap(),
            DurationOrOff(Some(Duration::from_secs(2 * 24 * 3600)))
        );
        assert_eq!(
            parse(&["--event-retention", "off"]).unwrap(),
            DurationOrOff(None)
        );
        assert!(parse(&["--event-retention", "0s"]).is_err());
        assert!(parse(&["--event-retention", "a week"]).is_err());
    }

    #[test]
    fn database_urls_name_a_backend_or_are_refused() {
        assert_eq!(
            args(None).target().unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("/data/tollgate.db"))
        );
        assert_eq!(
            args(Some("sqlite:/tmp/x.db?mode=rwc")).target().unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(
            args(Some("postgresql://db/t")).target().unwrap(),
            DatabaseTarget::Postgres("postgresql://db/t".into())
        );
        let refused = args(Some("mysql://db")).target().unwrap_err().to_string();
        assert!(refused.contains("`mysql://db`"), "{refused}");
        assert!(args(Some("sqlite:")).target().is_err());
    }

    /// `--sqlite-synchronous full` reaches the writer: the opened database reports the
    /// level read back from SQLite, and the default stays `normal`.
    #[tokio::test]
    async fn sqlite_synchronous_is_what_the_database_runs_with() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            database: DatabaseArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        for (flags, want) in [
            (vec![], SqliteSynchronous::Normal),
            (
                vec!["--sqlite-synchronous", "full"],
                SqliteSynchronous::Full,
            ),
            (
                vec!["--sqlite-synchronous", "normal"],
                SqliteSynchronous::Normal,
            ),
        ] {
            let cli = Cli::try_parse_from(
                ["x", "--data-dir", data]
                    .into_iter()
                    .chain(flags.iter().copied()),
            )
            .unwrap();
            let backend = cli.database.open().await.unwrap();
            assert_eq!(backend.sqlite_synchronous(), Some(want), "{flags:?}");
            backend.close().await;
        }
        let refused = Cli::try_parse_from(["x", "--sqlite-synchronous", "off"]);
        assert!(refused.is_err(), "`off` would give up crash safety");
    }

    /// The error and its causes, as the binaries print them.
    fn chain(err: &dyn std::error::Error) -> String {
        let mut text = err.to_string();
        let mut cause = err.source();
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }

    #[test]
    fn durations_are_spelled_as_in_definitions() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        let bare = parse_duration("1").unwrap_err();
        assert!(
            bare.contains("needs a unit") && !bare.contains("sec"),
            "{bare}"
        );
        assert!(
            parse_duration("1sec").is_err(),
            "a spelling definitions reject"
        );
    }

    #[test]
    fn config_file_errors_name_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.json");
        std::fs::write(&path, r#"{"http_timeout": "soon"}"#).unwrap();
        let err = FileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("tollgate.json: http_timeout:"), "{err}");
        std::fs::write(&path, r#"{"secret": {}}"#).unwrap();
        let err = chain(&FileConfig::load(&path).unwrap_err());
        assert!(
            err.contains("is not valid") && err.contains("secret"),
            "{err}"
        );
        let missing = chain(&FileConfig::load(&dir.path().join("nope.json")).unwrap_err());
        assert!(missing.starts_with("cannot read config file"), "{missing}");
        assert_eq!(
            missing.matches("os error").count(),
            1,
            "the cause is named once: {missing}"
        );
        std::fs::write(&path, r#"{"http_timeout": "5s", "secrets": {"k": "v"}}"#).unwrap();
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.http_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn urls_are_checked_at_start_not_at_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.json");
        for (text, field) in [
            (
                r#"{"notifier": {"webhook_url": "hooks.example/notify"}}"#,
                "notifier.webhook_url",
            ),
            (
                r#"{"notifier": {"webhook_url": "ftp://hooks.example/"}}"#,
                "notifier.webhook_url",
            ),
            (
                r#"{"context_providers": {"customer.profile": "crm/customers/{{customer_id}}"}}"#,
                r#"context_providers["customer.profile"]"#,
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = FileConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(&format!("tollgate.json: {field}: `")), "{err}");
        }
        std::fs::write(
            &path,
            r#"{"notifier": {"webhook_url": "https://hooks.example/", "signing_secret": " "}}"#,
        )
        .unwrap();
        let err = FileConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("tollgate.json: notifier.signing_secret: must not be empty"),
            "{err}"
        );
        std::fs::write(
            &path,
            r#"{"notifier": {"webhook_url": "https://hooks.example/notify"},
                "context_providers": {"customer.profile": "http://crm:8080/customers/{{customer_id}}?full=1"}}"#,
        )
        .unwrap();
        assert!(FileConfig::load(&path).is_ok());
    }

    #[test]
    fn zero_intervals_are_refused() {
        assert!(parse_positive_duration("0s")
            .unwrap_err()
            .contains("must be longer than zero"));
        assert_eq!(
            parse_positive_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
    }
}
