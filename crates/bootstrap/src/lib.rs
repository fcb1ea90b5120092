//! What every Tollgate process composes at start-up, written once for `tollgate-api` and
//! `tollgate-resume-worker`: settings from flags, environment and a JSON file
//! ([`config`]), the backend a database URL names ([`Backend`], from the `tollgate`
//! crate, which embedders use too), logging, the engine
//! ([`build_engine`]), and the process frame — the runtime, the exit code, the shutdown
//! signal ([`process`]).
//!
//! The concrete backends are named only in the `tollgate` crate's `backend` module; the
//! crates below it see only `Arc<dyn Store>`.
//!
//! ```
//! use tollgate_bootstrap::{parse_duration, DatabaseArgs, DatabaseTarget};
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Flags {
//!     #[command(flatten)]
//!     database: DatabaseArgs,
//! }
//!
//! let flags = Flags::parse_from(["tollgate-api", "--database-url", "postgres://db/tollgate"]);
//! assert!(matches!(flags.database.target()?, DatabaseTarget::Postgres(_)));
//! assert_eq!(parse_duration("1h30m")?, std::time::Duration::from_secs(5400));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod channels;
pub mod config;
mod engine;
pub mod links;
pub mod process;

pub use channels::{ChannelNotifier, LinkSource};
pub use config::{
    parse_duration, parse_duration_or_off, parse_positive_duration, ChannelsConfig, ChatConfig,
    DatabaseArgs, DurationOrOff, EmailConfig, FileConfig, LogFormat, MigrateMode, NotifierConfig,
    WorkerArgs,
};
pub use engine::{build_engine, default_worker_id};
pub use process::{
    describe_metrics, init_logging, run_main, wait_for_signal, DECISION_SECONDS,
    DECISION_SECONDS_BUCKETS, SECONDS_BUCKETS,
};
pub use tollgate::backend::{Backend, BackendOptions, DatabaseTarget, Kind, CLOCK_CHECK_INTERVAL};

use std::path::PathBuf;

/// Why a process could not start. Each message says what failed at this level; the
/// cause is its [`std::error::Error::source`], so a report of the whole chain (`{:#}`
/// of an `anyhow::Error`, as the binaries print it) names every cause once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database cannot be opened or used (bad URL, schema, clock, connection).
    #[error(transparent)]
    Backend(#[from] tollgate::BackendError),
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
    /// A notification channel cannot be set up from its configuration.
    #[error("notification channel: {0}")]
    Channel(String),
    /// The process cannot listen for shutdown signals.
    #[error("cannot listen for {signal}")]
    Signal {
        /// Which signal.
        signal: &'static str,
        /// Why.
        source: std::io::Error,
    },
}
