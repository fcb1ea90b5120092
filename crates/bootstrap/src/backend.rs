//! Opening the configured database: the only place that names a concrete backend.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tollgate_postgres::{PgOptions, PgStore};
use tollgate_sqlite::{SqliteOptions, SqliteStore};
use tollgate_store::Store;

use crate::config::{DatabaseArgs, DatabaseTarget};
use crate::Error;

/// Which backend is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One SQLite file: one process serves it.
    Sqlite,
    /// PostgreSQL: any number of API and worker processes.
    Postgres,
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
    /// `--max-clock-skew`, for [`Backend::watch_clock`].
    max_clock_skew: Duration,
}

/// How often a running process measures its clock against the database server's.
pub const CLOCK_CHECK_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Closer {
    Sqlite(SqliteStore),
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
    /// Opens the database and applies pending migrations.
    pub async fn open(args: &DatabaseArgs) -> Result<Self, Error> {
        match args.target()? {
            DatabaseTarget::Sqlite(path) => {
                let store = SqliteStore::open(&SqliteOptions {
                    schema: args.migrate.policy(),
                    ..SqliteOptions::new(&path)
                })
                .await?;
                Ok(Self {
                    store: Arc::new(store.clone()),
                    wakeups: store.wakeups(),
                    kind: Kind::Sqlite,
                    closer: Closer::Sqlite(store),
                    max_clock_skew: args.max_clock_skew,
                })
            }
            DatabaseTarget::Postgres(url) => {
                let mut options = PgOptions::new(url);
                options.max_connections = args.database_max_connections;
                options.acquire_timeout = Duration::from_secs(5);
                options.session = tollgate_postgres::PgSession {
                    statement_timeout: args.database_statement_timeout,
                    lock_timeout: args.database_lock_timeout,
                    idle_in_transaction_timeout: args.database_idle_in_transaction_timeout,
                    // The process in `pg_stat_activity`: `tollgate-api`, `tollgate-resume-worker`.
                    application_name: std::env::current_exe()
                        .ok()
                        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                        .filter(|name| name.starts_with("tollgate"))
                        .unwrap_or_else(|| "tollgate".into()),
                };
                let store = PgStore::connect(&options)
                    .await
                    .map_err(|source| Error::Postgres {
                        what: "connect to",
                        source,
                    })?;
                store
                    .prepare_schema(args.migrate.policy())
                    .await
                    .map_err(|source| Error::Postgres {
                        what: "prepare the schema of",
                        source,
                    })?;
                let skew = store.clock_skew().await.map_err(|source| Error::Postgres {
                    what: "read the clock of",
                    source,
                })?;
                check_clock_skew(skew, args.max_clock_skew)?;
                Ok(Self {
                    store: Arc::new(store.clone()),
                    wakeups: store.wakeups(),
                    kind: Kind::Postgres,
                    closer: Closer::Postgres(store),
                    max_clock_skew: args.max_clock_skew,
                })
            }
        }
    }

    /// Opens the PostgreSQL batch writers' connections now rather than at their first
    /// batch, so the first decisions after start-up do not pay for connecting. For API
    /// servers; a resume worker leaves the ones it never uses (decisions, event
    /// intake) unopened, which keeps its connection count down.
    pub fn warm_up(&self) {
        if let Closer::Postgres(store) = &self.closer {
            store.open_batch_connections();
        }
    }

    /// Writes a consistent copy of an SQLite database to `to` while it stays in use
    /// ([`SqliteStore::backup_to`]); PostgreSQL is refused, its own tools do it.
    pub async fn backup(&self, to: &Path) -> Result<(), Error> {
        match &self.closer {
            Closer::Sqlite(store) => Ok(store.backup_to(to).await?),
            Closer::Postgres(_) => Err(Error::BackupUnsupported),
        }
    }

    /// Measures this host's clock against the database server's every
    /// [`CLOCK_CHECK_INTERVAL`] for as long as the process runs, and returns
    /// [`Error::ClockSkew`] once it is beyond `--max-clock-skew` — what the start-up check
    /// refuses, for a clock that jumps later (a VM resumed from suspend, NTP stepping a
    /// drifted clock). The caller stops the process on it: a host ahead by a lease takes
    /// over executions that are still running elsewhere. Never returns on SQLite (one
    /// process, one clock).
    pub async fn watch_clock(&self) -> Error {
        match &self.closer {
            Closer::Sqlite(_) => std::future::pending().await,
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
            Closer::Sqlite(store) => store.close().await,
            Closer::Postgres(store) => store.close().await,
        }
    }
}

/// Every `every`, takes a measurement of the skew (`None`: the database did not answer,
/// which its own health checks report), publishes it as `tollgate_clock_skew_seconds`,
/// and returns the refusal of the first one beyond `limit`.
async fn watch_clock<M, F>(mut measure: M, limit: Duration, every: Duration) -> Error
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
fn check_clock_skew(skew: chrono::TimeDelta, limit: Duration) -> Result<(), Error> {
    let skew_ms = skew.num_milliseconds();
    let abs = skew_ms.unsigned_abs();
    let direction = if skew_ms >= 0 { "ahead of" } else { "behind" };
    if u128::from(abs) > limit.as_millis() {
        return Err(Error::ClockSkew {
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
        let dir = tempfile::tempdir().unwrap();
        let args = DatabaseArgs {
            data_dir: dir.path().to_path_buf(),
            database_url: Some(url.clone()),
            database_max_connections: 4,
            database_statement_timeout: Duration::from_secs(30),
            database_lock_timeout: Duration::from_secs(10),
            database_idle_in_transaction_timeout: Duration::from_secs(60),
            migrate: crate::MigrateMode::Auto,
            max_clock_skew: Duration::from_secs(5),
        };
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
        let backend = Backend::open(&args).await.unwrap();
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
