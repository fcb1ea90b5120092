//! Tollgate's storage traits on SQLite: the embedded default.
//!
//! One file, nothing to install (SQLite is compiled in). Writes go through a single writer
//! connection in `BEGIN IMMEDIATE` transactions, so concurrent API requests queue instead
//! of failing with `SQLITE_BUSY`; reads use a separate pool of connections, which WAL mode
//! lets run alongside the writer. Every execution transition is
//! [`tollgate_store::rules`]' — the same as every other backend.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate_sqlite::{SqliteOptions, SqliteStore};
//! use tollgate_store::Health;
//!
//! let dir = tempfile::tempdir()?;
//! // Creates the file and applies the embedded migrations.
//! let store = SqliteStore::open(&SqliteOptions::new(dir.path().join("tollgate.db"))).await?;
//! store.ping().await?;
//! store.close().await;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

/// `SELECT` of whole execution rows with their stored format (`format`, NULL for
/// format 1): an execution's format is a row of `execution_formats`, present only when a
/// newer release wrote it, not a column of `executions` (PostgreSQL's reason, kept on
/// both backends so that they hold the same shape; see the 0008 migration).
macro_rules! select_executions {
    () => {
        "SELECT *, (SELECT f.format FROM execution_formats f WHERE f.execution_id = executions.id) AS format FROM executions"
    };
}

/// A condition true for the execution rows this release can read (none of a newer
/// release's): what claims and scans filter on.
macro_rules! readable_execution {
    () => {
        "NOT EXISTS (SELECT 1 FROM execution_formats f WHERE f.execution_id = executions.id AND f.format > 1)"
    };
}

mod rows;
mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;

/// How durable a commit is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL` (default): in WAL mode a commit survives a crash of the
    /// process; a power loss or OS crash may lose the last few transactions (never
    /// corrupting the database).
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced before it returns; survives power loss,
    /// at several times the cost per commit.
    Full,
}

/// Options of [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file; its directory is created if missing.
    pub path: PathBuf,
    /// Commit durability.
    pub durability: Durability,
    /// How long a statement waits for a lock held by another process.
    pub busy_timeout: Duration,
    /// Connections in the read pool.
    pub read_connections: u32,
    /// Page cache of each read connection, in KiB (`PRAGMA cache_size`). Reads are point
    /// lookups by key and scans (the gauges' counts, listings): the upper levels of each
    /// tree are all a lookup reuses, and a scan of a large table passes through any
    /// cache without reusing it. SQLite's default (2,000 KiB per connection) only made
    /// each reader's cache fill as the data grew, so the server's memory grew with the
    /// paused executions until every cache was full; the writer keeps the default, as
    /// its batches revisit the pages they just wrote.
    pub read_cache_kib: u32,
    /// The write-ahead log is cut back to this many bytes whenever SQLite restarts it
    /// (`journal_size_limit`); without it the file keeps its largest size forever.
    pub wal_size_limit: u64,
    /// What opening does with the schema.
    pub schema: tollgate_store::SchemaPolicy,
    /// How often the background checkpointer copies the log into the database. Commits
    /// never checkpoint (SQLite's automatic checkpoint is off on the writer): a
    /// checkpoint in the writer's commit stalled every write queued behind it. The
    /// checkpointer runs on a connection of its own, passive: it never waits for
    /// readers nor blocks a commit. Under steady load a passive checkpoint alone never
    /// lets the writer start the log over (some reader or the next commit always needs
    /// its tail), so once the log holds more than half of `wal_size_limit` the
    /// checkpointer also restarts it, on the writer's own connection between two of its
    /// transactions: the few frames left are copied and readers get at most
    /// [`CHECKPOINT_RESTART_WAIT`] to leave the log.
    pub checkpoint_interval: Duration,
}

impl SqliteOptions {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            read_cache_kib: 256,
            wal_size_limit: 64 * 1024 * 1024,
            checkpoint_interval: Duration::from_millis(100),
            schema: tollgate_store::SchemaPolicy::Apply,
        }
    }
}

/// Why a backup could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target exists (a backup never overwrites), or is not a UTF-8 path.
    #[error("{0} exists (or is not a UTF-8 path): a backup never overwrites a file")]
    Exists(PathBuf),
    /// SQLite could not write it.
    #[error("cannot write the backup {path}")]
    Write {
        /// The target.
        path: PathBuf,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// It was written but cannot be made owner-only.
    #[error("cannot make the backup {path} owner-only")]
    Private {
        /// The target.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why the database could not be opened. The message names this level; the cause is the
/// error's source, so a report of the chain names each cause once.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory could not be created or is not writable.
    #[error("cannot use data directory {path}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused to open the file.
    #[error("cannot open SQLite database {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The schema lacks migrations of this release and `SchemaPolicy::Check` forbids
    /// applying them.
    #[error("the schema of {path} lacks migrations {missing:?} of this release: run `tollgate-api migrate` first (or start with `--migrate auto`)")]
    SchemaBehind {
        /// The file.
        path: PathBuf,
        /// The versions missing.
        missing: Vec<i64>,
    },
    /// A newer release migrated the schema and declared that this release cannot run
    /// on it (`schema_compatibility`).
    #[error("the schema of {path} was migrated by a newer release that this one cannot run on: it needs a release that knows migration {needs}, and this one knows up to {knows}; upgrade")]
    SchemaAhead {
        /// The file.
        path: PathBuf,
        /// The highest migration a release must know to run on this schema.
        needs: i64,
        /// The highest migration this release knows.
        knows: i64,
    },
    /// Applying the schema failed.
    #[error("cannot apply migrations to {path}")]
    Migrate {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// The embedded migrations (`crates/sqlite/migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// [`MIGRATOR`] as opening runs it: migrations applied by a newer release are ignored,
/// not refused (see [`tollgate_store::SchemaPolicy`]).
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// The schema's compatibility floor (`None` before migration 9 created its table).
async fn schema_floor(pool: &SqlitePool) -> Result<Option<i64>, sqlx::Error> {
    let exists: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_compatibility'",
    )
    .fetch_optional(pool)
    .await?;
    if exists.is_none() {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT min_reader_migration FROM schema_compatibility WHERE id = 1")
        .fetch_optional(pool)
        .await
}

/// This release's migrations the database has not applied, and those it has that this
/// release does not know (applied by a newer one).
async fn schema_difference(pool: &SqlitePool) -> Result<(Vec<i64>, Vec<i64>), sqlx::Error> {
    let exists: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await?;
    let applied: Vec<i64> = match exists {
        Some(_) => {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(pool)
                .await?
        }
        None => Vec::new(),
    };
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    Ok(tollgate_store::SchemaPolicy::difference(&known, applied))
}

/// A Tollgate store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) writer: SqlitePool,
    pub(crate) reader: SqlitePool,
    /// The background checkpointer's own connection.
    checkpointer: SqlitePool,
    pub(crate) wakeups: Arc<Notify>,
    pub(crate) committer: tollgate_store::group_commit::GroupCommitter,
    /// Group commit of step begins (see `store::begin_batch`).
    pub(crate) begins: tollgate_store::group_commit::BeginCommitter,
    /// Group commit of approval decisions (see `store::decider`).
    pub(crate) decider: store::Decider,
    /// Group commit of events with the executions they start (see `store::intake`).
    pub(crate) intake: store::Intake,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies migrations. The directory is
    /// created if missing; an unwritable one is an error — never a silent fallback.
    pub async fn open(options: &SqliteOptions) -> Result<Self, OpenError> {
        let dir = options
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir_existed = dir.exists();
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
        // The database holds every execution's context, decision and API-key hash:
        // readable by its owner only. A directory created here is owner-only too.
        make_private(dir, &options.path, !dir_existed).map_err(|source| OpenError::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
        check_writable(dir).map_err(|source| OpenError::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
        let base = SqliteConnectOptions::new()
            .filename(&options.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout)
            .pragma("journal_size_limit", options.wal_size_limit.to_string());
        let open_err = |source| OpenError::Open {
            path: options.path.clone(),
            source,
        };
        // Set once the schema is current: a connection the pool opens after that (it
        // replaces its connection now and then) keeps its statement journals in memory
        // from the start (`journals_in_memory`).
        let migrated = Arc::new(AtomicBool::new(false));
        // A local file cannot silently drop a connection the way a network can, so the
        // per-acquire liveness ping (a thread hop each time) buys nothing here.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .after_release(|conn, _| Box::pin(no_transaction_left(conn)))
            .after_connect({
                let migrated = migrated.clone();
                move |conn, _| {
                    let migrated = migrated.load(Ordering::Acquire);
                    Box::pin(async move {
                        count_commits(conn).await?;
                        if migrated {
                            journals_in_memory(conn).await?;
                        }
                        Ok(())
                    })
                }
            })
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(base.clone().pragma("wal_autocheckpoint", "0"))
            .await
            .map_err(open_err)?;
        let (missing, newer) = schema_difference(&writer).await.map_err(open_err)?;
        let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        let floor = schema_floor(&writer).await.map_err(open_err)?;
        if let Some((needs, knows)) = tollgate_store::SchemaPolicy::too_old_for(floor, &known) {
            return Err(OpenError::SchemaAhead {
                path: options.path.clone(),
                needs,
                knows,
            });
        }
        match options.schema {
            tollgate_store::SchemaPolicy::Apply if !missing.is_empty() => migrator()
                .run(&writer)
                .await
                .map_err(|source| OpenError::Migrate {
                    path: options.path.clone(),
                    source,
                })?,
            tollgate_store::SchemaPolicy::Check if !missing.is_empty() => {
                return Err(OpenError::SchemaBehind {
                    path: options.path.clone(),
                    missing,
                })
            }
            _ => {}
        }
        if !newer.is_empty() {
            tracing::info!(?newer, "the database has migrations of a newer release; running on it as the previous release");
        }
        migrated.store(true, Ordering::Release);
        {
            let mut conn = writer.acquire().await.map_err(open_err)?;
            journals_in_memory(&mut conn).await.map_err(open_err)?;
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .test_before_acquire(false)
            .after_release(|conn, _| Box::pin(no_transaction_left(conn)))
            .connect_with(
                base.clone()
                    .read_only(true)
                    .pragma("cache_size", format!("-{}", options.read_cache_kib.max(1))),
            )
            .await
            .map_err(|source| OpenError::Open {
                path: options.path.clone(),
                source,
            })?;
        let wakeups = Arc::new(Notify::new());
        let committer = {
            let writer = writer.clone();
            let wake = wakeups.clone();
            tollgate_store::group_commit::GroupCommitter::spawn(move |commits| {
                let writer = writer.clone();
                let wake = wake.clone();
                async move {
                    let written = store::commit_batch(&writer, &commits).await;
                    // A released lease is due work for the worker loop.
                    if commits
                        .iter()
                        .any(|c| matches!(c.transition, tollgate_store::Transition::Release { .. }))
                    {
                        wake.notify_one();
                    }
                    Ok(written?.into_iter().map(Ok).collect())
                }
            })
        };
        let begins = {
            let writer = writer.clone();
            tollgate_store::group_commit::BeginCommitter::spawn(move |begins| {
                let writer = writer.clone();
                async move {
                    let versions = store::begin_batch(&writer, &begins).await?;
                    Ok(versions.into_iter().map(Ok).collect())
                }
            })
        };
        let decider = store::decider(writer.clone(), wakeups.clone());
        let intake = store::intake(writer.clone(), reader.clone(), wakeups.clone());
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            // Passive checkpoints never wait; nothing here should wait long.
            .connect_with(base.clone().busy_timeout(CHECKPOINT_RESTART_WAIT))
            .await
            .map_err(|source| OpenError::Open {
                path: options.path.clone(),
                source,
            })?;
        spawn_checkpointer(
            checkpointer.clone(),
            Restarts {
                writer: writer.clone(),
                above_bytes: options.wal_size_limit / 2,
                writer_busy_timeout: options.busy_timeout,
            },
            options.checkpoint_interval,
        );
        Ok(Self {
            writer,
            reader,
            checkpointer,
            wakeups,
            committer,
            begins,
            decider,
            intake,
        })
    }

    /// Signalled after commits that may have created due work (a released lease, a new
    /// gate): the in-process worker loop waits on it as well as on its poll interval.
    pub fn wakeups(&self) -> Arc<Notify> {
        self.wakeups.clone()
    }

    /// Writes a consistent, compacted copy of the database to `to` (`VACUUM INTO`, on a
    /// read connection): one snapshot, taken while the server keeps running, that never
    /// blocks writers — unlike `.backup`, which restarts on every concurrent write and
    /// may never finish on a busy file. `to` must not exist; it is created owner-only.
    pub async fn backup_to(&self, to: &Path) -> Result<(), BackupError> {
        if to.exists() {
            return Err(BackupError::Exists(to.to_path_buf()));
        }
        let target = to
            .to_str()
            .ok_or_else(|| BackupError::Exists(to.to_path_buf()))?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.reader)
            .await
            .map_err(|source| BackupError::Write {
                path: to.to_path_buf(),
                source,
            })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| BackupError::Private {
                    path: to.to_path_buf(),
                    source,
                },
            )?;
        }
        Ok(())
    }

    /// The durability the writer actually runs with (`PRAGMA synchronous` read back from
    /// it), for start-up logs and checks: a setting that silently did not apply would
    /// otherwise only show after a power loss.
    pub async fn synchronous(&self) -> Result<Durability, sqlx::Error> {
        let (level,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&self.writer)
            .await?;
        // 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA: anything that syncs every commit is `Full`.
        Ok(if level >= 2 {
            Durability::Full
        } else {
            Durability::Normal
        })
    }

    /// The page cache a read connection runs with, in KiB (`PRAGMA cache_size` read back
    /// from the read pool): what [`SqliteOptions::read_cache_kib`] bounds.
    pub async fn read_cache_kib(&self) -> Result<u64, sqlx::Error> {
        let (pages,): (i64,) = sqlx::query_as("PRAGMA cache_size")
            .fetch_one(&self.reader)
            .await?;
        // Negative: KiB; positive: pages of the database's page size.
        if pages < 0 {
            return Ok(pages.unsigned_abs());
        }
        let (page_size,): (i64,) = sqlx::query_as("PRAGMA page_size")
            .fetch_one(&self.reader)
            .await?;
        Ok(pages.unsigned_abs() * page_size.unsigned_abs() / 1024)
    }

    /// Closes the pools, waiting for connections in use; the writer's closes last, and
    /// SQLite checkpoints the log as its last connection closes.
    pub async fn close(&self) {
        self.checkpointer.close().await;
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Counts the writer's committed write transactions in `tollgate_sqlite_commits_total`
/// (SQLite calls the hook for transactions that wrote, not for reads). With group
/// commit, commits per second against decisions or events per second says how many
/// each transaction carries — and, under `synchronous=FULL`, how many syncs they cost.
async fn count_commits(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    conn.lock_handle().await?.set_commit_hook(|| {
        // Looked up per commit, not once here: the writer connects when the store
        // opens, which may be before the process installs its metrics recorder.
        metrics::counter!("tollgate_sqlite_commits_total").increment(1);
        // `true` lets the commit go ahead.
        true
    });
    Ok(())
}

/// Keeps the writer's statement journals (and temporary tables) in memory. A statement
/// inside a transaction that may fail part-way journals each page it changes, to undo
/// itself alone; a batch's statements change far more than the 64 KiB SQLite keeps in
/// memory before spilling that journal to a temporary file, and writing it there was
/// 9 % of the writer thread's samples under the approval benchmark (2 % in memory). A
/// journal lives as long as its statement, bounded by the batch. Not during migrations:
/// a migration's statement may rewrite a whole table, and its journal belongs on disk.
async fn journals_in_memory(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("PRAGMA temp_store = MEMORY")
        .execute(conn)
        .await
        .map(drop)
}

/// Whether a connection going back to its pool may stay open: `false` (close it, which
/// rolls back) when it is still inside a transaction nobody can finish.
///
/// A caller that stops waiting at the wrong moment — an HTTP request whose client went
/// away, a timeout, a process shutting down — can drop `begin_with("BEGIN IMMEDIATE")`
/// after SQLite ran the `BEGIN` but before the `Transaction` that would roll it back on
/// drop exists. Returned to the pool as it is, the single writer would hold the database's
/// write lock for good: every later write in this process fails and every other process
/// waits out its busy timeout. A transaction that was dropped normally has its rollback
/// queued; the ping runs it first, so only the orphan costs a new connection.
async fn no_transaction_left(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!(
            "a connection came back inside an unfinished transaction; closing it rolls that back"
        );
        return Ok(false);
    }
    Ok(true)
}

/// The longest a restart of the log waits for readers to leave it, holding the write
/// lock; past it the restart is left to the next round. Readers that begin meanwhile read
/// the database file, not the log, so only reads already under way are waited for.
pub const CHECKPOINT_RESTART_WAIT: Duration = Duration::from_millis(2);

/// A restart of the log waits until a passive checkpoint saw at most this many frames
/// (256 KiB of 4 KiB pages) come into the log while the one before it ran…
const RESTART_LEFT_FRAMES: i64 = 64;

/// …or until this many passive checkpoints after the round's own, whichever comes first.
const RESTART_CATCH_UP_ROUNDS: u32 = 4;

/// A passive checkpoint on the checkpointer's connection; the frames in the log.
async fn passive(checkpointer: &SqlitePool) -> Result<i64, sqlx::Error> {
    // (busy, frames in the log, frames copied).
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(checkpointer)
        .await?;
    Ok(frames)
}

/// How the checkpointer restarts the log: on `writer`'s connection once the log holds
/// more than `above_bytes`; the writer's busy timeout is set back to
/// `writer_busy_timeout` afterwards.
struct Restarts {
    writer: SqlitePool,
    above_bytes: u64,
    writer_busy_timeout: Duration,
}

/// Every `interval`, a passive checkpoint on the checkpointer's own connection, beside
/// the writer's commits, and a restart of the log once it is large (see [`Restarts`]);
/// ends when that pool closes.
///
/// Without the restart the log grew without bound under steady load (650 MB in seven
/// seconds of the approval benchmark): a passive checkpoint copies frames but the writer
/// starts the log over only when every frame was copied *and* no reader is in it as a
/// transaction begins — never, with a commit every few milliseconds. Every frame then
/// went to a new block of the file (the kernel zeroing each: 15 % of the server's CPU),
/// and readers searched an ever longer log index.
///
/// The restart runs on the writer's connection, taken from its pool like any write,
/// rather than on the checkpointer's: from another connection it competed with the
/// writer for the write lock, each side sleeping in SQLite's busy handler (1, 2, 5,
/// 10 ms …) while the other held it, and the waits showed as the decisions' tail (a
/// restart took 8 ms at the median and 64 ms at p90 in the approval benchmark; the
/// transaction after it waited up to 55 ms to begin).
fn spawn_checkpointer(checkpointer: SqlitePool, restarts: Restarts, interval: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        // A reader that stays in the log (a backup, a long listing) makes restarts fail;
        // each failure doubles the rounds until the next try (up to 64), so that the
        // write lock is not taken every round for nothing.
        let (mut skip, mut backoff) = (0_u32, 1_u32);
        // The log's length when it was last restarted: SQLite reports that length until
        // the next commit writes the log again, so an idle log is not restarted again.
        let mut restarted_at = None;
        // A frame is a page and its 24-byte header; the page size of a file is fixed.
        let frame_bytes = sqlx::query_as::<_, (i64,)>("PRAGMA page_size")
            .fetch_one(&checkpointer)
            .await
            .map_or(4096, |(size,)| size)
            + 24;
        loop {
            ticks.tick().await;
            if checkpointer.is_closed() {
                break;
            }
            let may_restart = skip == 0;
            skip = skip.saturating_sub(1);
            let restarts = may_restart.then_some(&restarts);
            match checkpoint(&checkpointer, frame_bytes, restarts, &mut restarted_at).await {
                Ok(Some(false)) => {
                    skip = backoff;
                    backoff = (backoff * 2).min(64);
                }
                Ok(Some(true)) => backoff = 1,
                Ok(None) => {}
                Err(_) if checkpointer.is_closed() => break,
                Err(err) => tracing::warn!("periodic WAL checkpoint failed: {err}"),
            }
        }
    });
}

/// One round of the checkpointer: passive, then a restart if `restarts` is given, the
/// log is over its size and was written since it was last restarted (`restarted_at`,
/// its length then, updated here). Whether a restart was tried and succeeded.
async fn checkpoint(
    checkpointer: &SqlitePool,
    frame_bytes: i64,
    restarts: Option<&Restarts>,
    restarted_at: &mut Option<i64>,
) -> Result<Option<bool>, sqlx::Error> {
    let mut frames = passive(checkpointer).await?;
    let log_bytes = u64::try_from(frames.saturating_mul(frame_bytes)).unwrap_or(0);
    let Some(restarts) = restarts
        .filter(|r| log_bytes > r.above_bytes)
        .filter(|_| *restarted_at != Some(frames))
    else {
        return Ok(None);
    };
    // The restart copies, syncs and writes back under the writer's lock whatever the
    // passive checkpoint did not see: the frames committed while it ran. Under load that
    // was a few megabytes, and the restart held every write for 17–24 ms (the decisions'
    // p99). Passive checkpoints copy several times faster than the writer fills the log,
    // so a few more of them, beside the writer, each catching up what came during the
    // one before, leave the restart little to do.
    for _ in 0..RESTART_CATCH_UP_ROUNDS {
        let now = passive(checkpointer).await?;
        let came = now.saturating_sub(frames);
        frames = now;
        if came <= RESTART_LEFT_FRAMES {
            break;
        }
    }
    // One hop on the writer: a short wait for readers, the restart, the writer's own
    // wait back. The pragmas' rows are the new timeouts (one column) and the restart's
    // (busy, frames, copied).
    let sql = format!(
        "PRAGMA busy_timeout = {}; PRAGMA wal_checkpoint(RESTART); PRAGMA busy_timeout = {};",
        CHECKPOINT_RESTART_WAIT.as_millis(),
        restarts.writer_busy_timeout.as_millis()
    );
    let rows = match sqlx::raw_sql(&sql).fetch_all(&restarts.writer).await {
        Ok(rows) => rows,
        Err(err) => {
            // The writer must not keep the short wait: set its own back (a writer that
            // cannot even do that fails its next write, which reports it).
            let back = format!(
                "PRAGMA busy_timeout = {}",
                restarts.writer_busy_timeout.as_millis()
            );
            let _ = sqlx::raw_sql(&back).execute(&restarts.writer).await;
            return Err(err);
        }
    };
    let busy = rows
        .iter()
        .find(|row| sqlx::Row::columns(*row).len() == 3)
        .map(|row| sqlx::Row::try_get::<i64, _>(row, 0))
        .transpose()?;
    let restarted = busy == Some(0);
    if restarted {
        *restarted_at = Some(frames);
    }
    tracing::debug!(log_bytes, restarted, "WAL restart checkpoint");
    Ok(Some(restarted))
}

/// Owner-only permissions for the database: the file is created `0600` before SQLite
/// opens it (SQLite gives its `-wal` and `-shm` files the database file's mode), files
/// left by earlier versions are tightened, and a directory just created becomes `0700`.
#[cfg(unix)]
fn make_private(dir: &Path, database: &Path, created_dir: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if created_dir {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if !database.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(database)?;
    }
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = database.as_os_str().to_owned();
    shm.push("-shm");
    for file in [database.to_path_buf(), wal.into(), shm.into()] {
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_dir: &Path, _database: &Path, _created_dir: bool) -> std::io::Result<()> {
    Ok(())
}

fn check_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".tollgate-write-check-{}", uuid::Uuid::new_v4()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}
