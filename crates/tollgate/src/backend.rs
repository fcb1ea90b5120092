//! Opening the database a URL names: the one place that names a concrete backend.
//!
//! The API server, the resume worker and embedding services all open their store here,
//! so they run the same migrations, the same connection settings and the same clock
//! check. Each backend is a cargo feature (`sqlite`, `postgres`): an embedder that uses
//! one does not compile the other.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
#[cfg(feature = "postgres")]
use tollgate_postgres::{PgOptions, PgStore};
#[cfg(feature = "sqlite")]
use tollgate_sqlite::{SqliteOptions, SqliteStore};
use tollgate_store::{SchemaPolicy, Store};

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("tollgate needs a backend: enable the `sqlite` or the `postgres` feature (or both)");

/// Which backend is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One SQLite file: one process serves it.
    Sqlite,
    /// PostgreSQL: any number of API, worker and embedding processes.
    Postgres,
}

/// A parsed database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// An SQLite file (`sqlite:PATH`, `sqlite://PATH`).
    Sqlite(PathBuf),
    /// An SQLite database in a private temporary directory, removed when the last
    /// handle to it is dropped (`sqlite::memory:`): for tests and throwaway runs.
    SqliteTemporary,
    /// A PostgreSQL URL (`postgres://…`, `postgresql://…`).
    Postgres(String),
}

impl DatabaseTarget {
    /// Parses `url`; anything that names neither backend is [`BackendError::Url`].
    pub fn parse(url: &str) -> Result<Self, BackendError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        if url == "sqlite::memory:" || url == "sqlite://:memory:" {
            return Ok(Self::SqliteTemporary);
        }
        match url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            Some(path) if !path.is_empty() => Ok(Self::Sqlite(PathBuf::from(
                path.split('?').next().unwrap_or(path),
            ))),
            _ => Err(BackendError::Url(url.to_owned())),
        }
    }
}

/// Why a backend could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The URL names neither backend.
    #[error("database URL `{0}` is neither `sqlite:PATH`, `sqlite::memory:` nor `postgres://…`")]
    Url(String),
    /// The URL names a backend this build was compiled without.
    #[error("this build of tollgate has no {0} backend: enable the cargo feature `{0}`")]
    NotCompiled(&'static str),
    /// The temporary directory of `sqlite::memory:` cannot be made.
    #[error("cannot make a temporary directory for `sqlite::memory:`")]
    TempDir(#[source] std::io::Error),
    /// The SQLite database cannot be opened (or its schema is behind, with `Check`).
    #[cfg(feature = "sqlite")]
    #[error("cannot open the SQLite database")]
    Sqlite(#[from] tollgate_sqlite::OpenError),
    /// An SQLite backup could not be written.
    #[cfg(feature = "sqlite")]
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
    /// SQLite did not take the `synchronous` level asked for.
    #[error("SQLite runs with synchronous={got:?} although {wanted:?} was asked for")]
    SynchronousNotApplied {
        /// Asked for.
        wanted: SqliteSynchronous,
        /// Read back from the writer connection.
        got: SqliteSynchronous,
    },
    /// `backup` on PostgreSQL: its own tools do it better.
    #[error("`backup` copies the embedded SQLite database; back PostgreSQL up with pg_dump or base backups and WAL archiving")]
    BackupUnsupported,
    /// PostgreSQL is unreachable, refused us, or its migrations failed.
    #[cfg(feature = "postgres")]
    #[error("cannot {what} PostgreSQL")]
    Postgres {
        /// `connect to` or `prepare the schema of`.
        what: &'static str,
        /// Why.
        source: tollgate_postgres::ConnectError,
    },
}

/// How durable an SQLite commit is (`PRAGMA synchronous` in WAL mode). PostgreSQL's own
/// settings (`synchronous_commit`, `fsync`) govern it there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// `NORMAL` (the default): a commit survives the process being killed; a power loss
    /// or kernel crash may lose the last transactions, never corrupting the file.
    #[default]
    Normal,
    /// `FULL`: every commit syncs the log before it returns, so it survives a power loss
    /// too, at the price of one sync per commit (per group commit of the writer).
    Full,
}

/// How to open a backend. [`BackendOptions::new`] has the servers' defaults.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Which database.
    pub target: DatabaseTarget,
    /// What opening does with the schema (apply missing migrations by default).
    pub schema: SchemaPolicy,
    /// PostgreSQL: most connections of this process.
    pub max_connections: u32,
    /// PostgreSQL: longest a statement may run (zero: no limit).
    pub statement_timeout: Duration,
    /// PostgreSQL: longest a statement waits for a lock (zero: no limit).
    pub lock_timeout: Duration,
    /// PostgreSQL: a transaction left idle this long is ended by the server.
    pub idle_in_transaction_timeout: Duration,
    /// PostgreSQL: refuse to open (and [`Backend::watch_clock`] returns) when this
    /// host's clock differs from the server's by more.
    pub max_clock_skew: Duration,
    /// PostgreSQL: the name `pg_stat_activity` shows for this process.
    pub application_name: String,
    /// SQLite: how durable a commit is.
    pub sqlite_synchronous: SqliteSynchronous,
}

impl BackendOptions {
    /// The servers' defaults for `target`.
    pub fn new(target: DatabaseTarget) -> Self {
        Self {
            target,
            schema: SchemaPolicy::Apply,
            max_connections: 32,
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(60),
            max_clock_skew: Duration::from_secs(5),
            application_name: std::env::current_exe()
                .ok()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "tollgate".into()),
            sqlite_synchronous: SqliteSynchronous::Normal,
        }
    }
}

/// An open store with its wake-up signal.
#[derive(Clone)]
pub struct Backend {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Fires when another writer (or this one) made work due: new gates, decisions,
    /// events.
    pub wakeups: Arc<Notify>,
    /// Which backend.
    pub kind: Kind,
    closer: Closer,
    /// SQLite: the durability read back from the writer at open (`None` on PostgreSQL).
    sqlite_synchronous: Option<SqliteSynchronous>,
    /// `max_clock_skew`, for [`Backend::watch_clock`].
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    max_clock_skew: Duration,
    /// The directory of a `sqlite::memory:` database, removed with the last clone.
    _temporary: Option<Arc<tempfile::TempDir>>,
}

/// How often a running process measures its clock against the database server's.
pub const CLOCK_CHECK_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Closer {
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(PgStore),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Opens the database and prepares its schema as `options.schema` says.
    pub async fn open(options: &BackendOptions) -> Result<Self, BackendError> {
        match &options.target {
            DatabaseTarget::Sqlite(path) => Self::open_sqlite(path, options, None).await,
            DatabaseTarget::SqliteTemporary => {
                let dir = tempfile::Builder::new()
                    .prefix("tollgate-")
                    .tempdir()
                    .map_err(BackendError::TempDir)?;
                let path = dir.path().join("tollgate.db");
                Self::open_sqlite(&path, options, Some(Arc::new(dir))).await
            }
            DatabaseTarget::Postgres(url) => Self::open_postgres(url, options).await,
        }
    }

    #[cfg(feature = "sqlite")]
    async fn open_sqlite(
        path: &Path,
        options: &BackendOptions,
        temporary: Option<Arc<tempfile::TempDir>>,
    ) -> Result<Self, BackendError> {
        let store = SqliteStore::open(&SqliteOptions {
            schema: options.schema,
            durability: match options.sqlite_synchronous {
                SqliteSynchronous::Normal => tollgate_sqlite::Durability::Normal,
                SqliteSynchronous::Full => tollgate_sqlite::Durability::Full,
            },
            ..SqliteOptions::new(path)
        })
        .await?;
        // Read back, not assumed: what a power loss can cost depends on it.
        let synchronous = match store.synchronous().await.map_err(|source| {
            BackendError::Sqlite(tollgate_sqlite::OpenError::Open {
                path: path.to_path_buf(),
                source,
            })
        })? {
            tollgate_sqlite::Durability::Normal => SqliteSynchronous::Normal,
            tollgate_sqlite::Durability::Full => SqliteSynchronous::Full,
        };
        if synchronous != options.sqlite_synchronous {
            store.close().await;
            return Err(BackendError::SynchronousNotApplied {
                wanted: options.sqlite_synchronous,
                got: synchronous,
            });
        }
        tracing::info!(path = %path.display(), ?synchronous, "SQLite database open");
        Ok(Self {
            sqlite_synchronous: Some(synchronous),
            store: Arc::new(store.clone()),
            wakeups: store.wakeups(),
            kind: Kind::Sqlite,
            closer: Closer::Sqlite(store),
            max_clock_skew: options.max_clock_skew,
            _temporary: temporary,
        })
    }

    #[cfg(not(feature = "sqlite"))]
    #[allow(clippy::unused_async)]
    async fn open_sqlite(
        _path: &Path,
        _options: &BackendOptions,
        _temporary: Option<Arc<tempfile::TempDir>>,
    ) -> Result<Self, BackendError> {
        Err(BackendError::NotCompiled("sqlite"))
    }

    #[cfg(feature = "postgres")]
    async fn open_postgres(url: &str, options: &BackendOptions) -> Result<Self, BackendError> {
        let mut pg = PgOptions::new(url);
        pg.max_connections = options.max_connections;
        pg.acquire_timeout = Duration::from_secs(5);
        pg.session = tollgate_postgres::PgSession {
            statement_timeout: options.statement_timeout,
            lock_timeout: options.lock_timeout,
            idle_in_transaction_timeout: options.idle_in_transaction_timeout,
            application_name: options.application_name.clone(),
        };
        let store = PgStore::connect(&pg)
            .await
            .map_err(|source| BackendError::Postgres {
                what: "connect to",
                source,
            })?;
        store
            .prepare_schema(options.schema)
            .await
            .map_err(|source| BackendError::Postgres {
                what: "prepare the schema of",
                source,
            })?;
        let skew = store
            .clock_skew()
            .await
            .map_err(|source| BackendError::Postgres {
                what: "read the clock of",
                source,
            })?;
        check_clock_skew(skew, options.max_clock_skew)?;
        Ok(Self {
            store: Arc::new(store.clone()),
            wakeups: store.wakeups(),
            kind: Kind::Postgres,
            closer: Closer::Postgres(store),
            sqlite_synchronous: None,
            max_clock_skew: options.max_clock_skew,
            _temporary: None,
        })
    }

    #[cfg(not(feature = "postgres"))]
    #[allow(clippy::unused_async)]
    async fn open_postgres(_url: &str, _options: &BackendOptions) -> Result<Self, BackendError> {
        Err(BackendError::NotCompiled("postgres"))
    }

    /// SQLite: how durable a commit is, as read back from the writer when the database
    /// was opened (`None` on PostgreSQL, whose server settings decide).
    pub fn sqlite_synchronous(&self) -> Option<SqliteSynchronous> {
        self.sqlite_synchronous
    }

    /// Opens the PostgreSQL batch writers' connections now rather than at their first
    /// batch, so the first decisions after start-up do not pay for connecting. For API
    /// servers; a resume worker leaves the ones it never uses (decisions, event
    /// intake) unopened, which keeps its connection count down.
    pub fn warm_up(&self) {
        #[cfg(feature = "postgres")]
        #[allow(irrefutable_let_patterns)] // without the `sqlite` feature
        if let Closer::Postgres(store) = &self.closer {
            store.open_batch_connections();
        }
    }

    /// Writes a consistent copy of an SQLite database to `to` while it stays in use;
    /// PostgreSQL is refused, its own tools do it.
    #[cfg_attr(not(feature = "sqlite"), allow(clippy::unused_async))]
    pub async fn backup(&self, to: &Path) -> Result<(), BackendError> {
        match &self.closer {
            #[cfg(feature = "sqlite")]
            Closer::Sqlite(store) => Ok(store.backup_to(to).await?),
            #[cfg(feature = "postgres")]
            Closer::Postgres(_) => {
                let _ = to;
                Err(BackendError::BackupUnsupported)
            }
        }
    }

    /// Measures this host's clock against the database server's every
    /// [`CLOCK_CHECK_INTERVAL`] for as long as the process runs, and returns
    /// [`BackendError::ClockSkew`] once it is beyond `max_clock_skew` — what opening
    /// refuses, for a clock that jumps later (a VM resumed from suspend, NTP stepping a
    /// drifted clock). The caller stops the process on it: a host ahead by a lease takes
    /// over executions that are still running elsewhere. Never returns on SQLite (one
    /// process, one clock).
    pub async fn watch_clock(&self) -> BackendError {
        match &self.closer {
            #[cfg(feature = "sqlite")]
            Closer::Sqlite(_) => std::future::pending().await,
            #[cfg(feature = "postgres")]
            Closer::Postgres(store) => {
                watch_clock(
                    || async {
                        store
                            .clock_skew()
                            .await
                            .map_err(|err| {
                                tracing::debug!("cannot read the database's clock: {err}");
                            })
                            .ok()
                    },
                    self.max_clock_skew,
                    CLOCK_CHECK_INTERVAL,
                )
                .await
            }
        }
    }

    /// Closes connections (after the last writer finished).
    pub async fn close(&self) {
        match &self.closer {
            #[cfg(feature = "sqlite")]
            Closer::Sqlite(store) => store.close().await,
            #[cfg(feature = "postgres")]
            Closer::Postgres(store) => store.close().await,
        }
    }
}

/// Every `every`, takes a measurement of the skew (`None`: the database did not answer,
/// which its own health checks report), publishes it as `tollgate_clock_skew_seconds`,
/// and returns the refusal of the first one beyond `limit`.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
async fn watch_clock<M, F>(mut measure: M, limit: Duration, every: Duration) -> BackendError
where
    M: FnMut() -> F,
    F: std::future::Future<Output = Option<chrono::TimeDelta>>,
{
    loop {
        tokio::time::sleep(every).await;
        let Some(skew) = measure().await else {
            continue;
        };
        #[allow(clippy::cast_precision_loss)] // milliseconds of skew: far below 2^52
        metrics::gauge!("tollgate_clock_skew_seconds").set(skew.num_milliseconds() as f64 / 1e3);
        if let Err(err) = check_clock_skew(skew, limit) {
            return err;
        }
    }
}

/// Refuses a skew beyond `limit`; warns above a fifth of it.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn check_clock_skew(skew: chrono::TimeDelta, limit: Duration) -> Result<(), BackendError> {
    let skew_ms = skew.num_milliseconds();
    let abs = skew_ms.unsigned_abs();
    let direction = if skew_ms >= 0 { "ahead of" } else { "behind" };
    if u128::from(abs) > limit.as_millis() {
        return Err(BackendError::ClockSkew {
            skew_ms: skew_ms.abs(),
            direction,
            limit_ms: limit.as_millis(),
        });
    }
    if u128::from(abs) * 5 > limit.as_millis() {
        tracing::warn!(
            skew_ms,
            "this host's clock is {abs} ms {direction} the database server's"
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod target_tests {
    use super::DatabaseTarget;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            DatabaseTarget::parse("sqlite::memory:").unwrap(),
            DatabaseTarget::SqliteTemporary
        );
        assert_eq!(
            DatabaseTarget::parse("sqlite://rel.db?mode=rwc").unwrap(),
            DatabaseTarget::Sqlite("rel.db".into())
        );
        assert_eq!(
            DatabaseTarget::parse("sqlite:/tmp/x.db").unwrap(),
            DatabaseTarget::Sqlite("/tmp/x.db".into())
        );
        assert!(matches!(
            DatabaseTarget::parse("postgresql://u@h/db").unwrap(),
            DatabaseTarget::Postgres(_)
        ));
        for bad in ["mysql://x", "sqlite:", ""] {
            let err = DatabaseTarget::parse(bad).unwrap_err().to_string();
            assert!(err.contains("is neither"), "{bad}: {err}");
        }
    }
}

#[cfg(all(test, feature = "postgres"))]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn clock_skew_beyond_the_limit_is_refused() {
        let limit = std::time::Duration::from_secs(5);
        for ms in [0, 999, -4_999, 5_000] {
            assert!(
                super::check_clock_skew(chrono::TimeDelta::milliseconds(ms), limit).is_ok(),
                "{ms}"
            );
        }
        let ahead = super::check_clock_skew(chrono::TimeDelta::milliseconds(31_000), limit)
            .unwrap_err()
            .to_string();
        assert!(ahead.contains("31000 ms ahead of"), "{ahead}");
        let behind = super::check_clock_skew(chrono::TimeDelta::milliseconds(-6_000), limit)
            .unwrap_err()
            .to_string();
        assert!(behind.contains("6000 ms behind"), "{behind}");
    }

    /// A clock that drifts after start is caught by the next measurement beyond the
    /// limit, in either direction; measurements the database did not answer are skipped.
    #[tokio::test(start_paused = true)]
    async fn a_clock_that_jumps_after_start_is_caught() {
        let limit = std::time::Duration::from_secs(5);
        let every = std::time::Duration::from_secs(60);
        for (jump, said) in [(31_000, "31000 ms ahead of"), (-6_000, "6000 ms behind")] {
            let readings = std::sync::Mutex::new(
                vec![
                    Some(chrono::TimeDelta::milliseconds(20)),
                    None,
                    Some(chrono::TimeDelta::milliseconds(-4_000)),
                    Some(chrono::TimeDelta::milliseconds(jump)),
                ]
                .into_iter(),
            );
            let started = tokio::time::Instant::now();
            let watch = super::watch_clock(
                || {
                    let next = readings.lock().unwrap().next().flatten();
                    async move { next }
                },
                limit,
                every,
            );
            let err = tokio::time::timeout(every * 10, watch)
                .await
                .expect("the jump was not caught")
                .to_string();
            assert!(err.contains(said), "{err}");
            // Three readings within the limit (one missing), the fourth beyond it.
            assert_eq!(started.elapsed(), every * 4);
        }
    }

    /// On one host the database's clock and this process's agree to well under the
    /// default limit, so start-up passes; the measurement is what it refuses on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_database_clock_is_measured_at_start() {
        let url = tollgate_postgres::testing::fresh_database_url("clock")
            .await
            .unwrap();
        let store = tollgate_postgres::PgStore::connect(&tollgate_postgres::PgOptions::new(&url))
            .await
            .unwrap();
        let skew = store.clock_skew().await.unwrap();
        assert!(skew.num_milliseconds().abs() < 1_000, "{skew}");
        store.close().await;
    }

    use std::time::Duration;

    use super::*;

    /// Connections to `database` from processes other than the test's own observer.
    async fn connections(observer: &sqlx::PgPool, database: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() \
             AND application_name <> 'observer'",
        )
        .bind(database)
        .fetch_one(observer)
        .await
        .unwrap()
    }

    /// A resume worker opens only what it uses: the batch writers' connections are
    /// opened by `warm_up`, which only API servers call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_connections_open_only_when_warmed_up() {
        let url = tollgate_postgres::testing::fresh_database_url("budget")
            .await
            .unwrap();
        let database = url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .unwrap()
            .get_database()
            .unwrap()
            .to_owned();
        let mut options = BackendOptions::new(DatabaseTarget::Postgres(url.clone()));
        options.max_connections = 4;
        let observer = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(
                url.parse::<sqlx::postgres::PgConnectOptions>()
                    .unwrap()
                    .application_name("observer"),
            )
            .await
            .unwrap();
        let settle = || tokio::time::sleep(Duration::from_millis(500));
        let backend = Backend::open(&options).await.unwrap();
        settle().await;
        let cold = connections(&observer, &database).await;
        backend.warm_up();
        settle().await;
        let warm = connections(&observer, &database).await;
        assert!(
            warm >= cold + 5,
            "warming up opens the batch writers' connections: {cold} before, {warm} after"
        );
        backend.close().await;
    }
}
