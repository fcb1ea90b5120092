//! What every Tollgate process composes at start-up, written once for `tollgate-api` and
//! `tollgate-resume-worker`: settings from flags, environment and a JSON file
//! ([`config`]), the backend a database URL names ([`backend`]), logging, the engine
//! ([`build_engine`]), and the process frame — the runtime, the exit code, the shutdown
//! signal ([`process`]).
//!
//! This is the one library besides the binaries that names the concrete backends; the
//! crates below it see only `Arc<dyn Store>`.

pub mod backend;
pub mod config;
mod engine;
pub mod process;

pub use backend::{Backend, Kind};
pub use config::{
    parse_duration, parse_positive_duration, DatabaseArgs, DatabaseTarget, FileConfig, LogFormat,
    MigrateMode, NotifierConfig, WorkerArgs,
};
pub use engine::{build_engine, default_worker_id};
pub use process::{describe_metrics, init_logging, run_main, wait_for_signal, SECONDS_BUCKETS};

use std::path::PathBuf;

/// Why a process could not start. Each message says what failed at this level; the
/// cause is its [`std::error::Error::source`], so a report of the whole chain (`{:#}`
/// of an `anyhow::Error`, as the binaries print it) names every cause once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--database-url` names neither backend.
    #[error("--database-url `{0}` is neither `sqlite:PATH` nor `postgres://…`")]
    DatabaseUrl(String),
    /// The config file cannot be read.
    #[error("cannot read config file {}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid JSON of the expected shape.
    #[error("config file {} is not valid", path.display())]
    ConfigInvalid {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: serde_json::Error,
    },
    /// A value in the config file is out of range.
    #[error("{}: {field}: {message}", path.display())]
    ConfigValue {
        /// The file.
        path: PathBuf,
        /// The field (`notifier.webhook_url`, `context_providers["customer.profile"]`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The SQLite database cannot be opened.
    #[error("cannot open the SQLite database")]
    Sqlite(#[from] tollgate_sqlite::OpenError),
    /// An SQLite backup could not be written.
    #[error(transparent)]
    Backup(#[from] tollgate_sqlite::BackupError),
    /// This host's clock is too far from the database server's.
    #[error("this host's clock is {skew_ms} ms {direction} the database server's (more than --max-clock-skew {limit_ms} ms): leases and deadlines compare against this clock, so fix the time synchronisation (NTP) first")]
    ClockSkew {
        /// How far, in milliseconds.
        skew_ms: i64,
        /// `ahead of` or `behind`.
        direction: &'static str,
        /// The limit, in milliseconds.
        limit_ms: u128,
    },
    /// `backup` on PostgreSQL: its own tools do it better.
    #[error("`backup` copies the embedded SQLite database; back PostgreSQL up with pg_dump or base backups and WAL archiving")]
    BackupUnsupported,
    /// PostgreSQL is unreachable, refused us, or its migrations failed.
    #[error("cannot {what} PostgreSQL")]
    Postgres {
        /// `connect to` or `prepare the schema of`.
        what: &'static str,
        /// Why.
        source: tollgate_postgres::ConnectError,
    },
    /// An HTTP client (notifier, context providers) cannot be built.
    #[error("cannot build the {what}'s HTTP client")]
    HttpClient {
        /// Whose client.
        what: &'static str,
        /// Why.
        source: reqwest::Error,
    },
    /// The engine refused its settings.
    #[error(transparent)]
    Engine(#[from] tollgate_engine::Error),
    /// The process cannot listen for shutdown signals.
    #[error("cannot listen for {signal}")]
    Signal {
        /// Which signal.
        signal: &'static str,
        /// Why.
        source: std::io::Error,
    },
}
