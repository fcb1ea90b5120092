//! Tollgate's storage traits on PostgreSQL: the backend for production and for scaling
//! out to many API processes and resume workers.
//!
//! Every method is one statement or one transaction. Claims of due work use
//! `FOR UPDATE SKIP LOCKED`, so any number of workers share the queue without handing an
//! execution to two of them. The hot path — a step commit — is a single statement (one
//! round trip). Commits that create due work `NOTIFY tollgate_wakeup`, which
//! [`PgStore::wakeups`] turns into a wake-up for the worker loop, reconnecting by itself.
//! Every execution transition is [`tollgate_store::rules`]' — the same as every backend.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate_postgres::{PgOptions, PgStore};
//! use tollgate_store::{Health, SchemaPolicy};
//!
//! # let url = tollgate_postgres::testing::fresh_database_url("doc").await?;
//! let store = PgStore::connect(&PgOptions::new(url)).await?;
//! // Applies this release's missing migrations; a newer release's are left alone.
//! store.prepare_schema(SchemaPolicy::Apply).await?;
//! store.ping().await?;
//! store.close().await;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

/// The columns of `$table`'s rows as this release reads them, each prefixed with
/// `$prefix` (`"e."`), as a string literal for `concat!`.
///
/// Reads name their columns instead of `SELECT *` / `RETURNING *`: a prepared statement
/// whose result columns change is refused by PostgreSQL ("cached plan must not change
/// result type"), so a release that read whole rows would fail on every such statement
/// once a newer release's migration added a column — in the middle of a rolling
/// upgrade. With named columns, the release after this one may add columns (see
/// `migration_rules`).
macro_rules! columns {
    ($table:ident) => {
        columns!($table, "")
    };
    (executions, $p:literal) => {
        columns!(@list $p; id, workflow_id, workflow_key, workflow_version, snapshot_id, status, result,
            trigger_event, trigger_payload, context, cursor, visits, steps_run, version, lease_owner,
            lease_expires_at, gate, gate_reason, gate_deadline, gate_event, gate_approval_id, paused_at,
            wake, pause_requested, deadline, resume_count, last_resumed_at, started_at, completed_at,
            updated_at, error, requested_by, consumed_events)
    };
    (approvals, $p:literal) => {
        columns!(@list $p; id, execution_id, step_id, visit, entity_type, entity_id, approver_roles,
            approver_users, required, status, reason, data, decisions, requested_by,
            allow_self_approval, requested_at, expires_at, decided_at)
    };
    (step_records, $p:literal) => {
        columns!(@list $p; seq, id, execution_id, step_id, step_type, parent_step_id, iteration, visit,
            attempt, status, input, output, warnings, started_at, completed_at, error)
    };
    (events, $p:literal) => {
        columns!(@list $p; id, event_id, event_type, payload, source, correlation_id, submitted_by,
            received_at, started, resumed, delivered)
    };
    (workflows, $p:literal) => {
        columns!(@list $p; id, workflow_id, version, enabled, definition, snapshot_id, tags,
            event_pattern, created_at, updated_at)
    };
    (schedules, $p:literal) => {
        columns!(@list $p; id, workflow_id, cron, timezone, enabled, catch_up, from_trigger,
            next_fire_at, last_fired_at, created_at, updated_at)
    };
    (schedule_ticks, $p:literal) => {
        columns!(@list $p; id, schedule_id, tick_time, status, owner, lease_expires_at, claimed_at,
            started_at, execution_id, error)
    };
    (api_keys, $p:literal) => {
        columns!(@list $p; id, name, roles, key_hash, created_at)
    };
    (console_sessions, $p:literal) => {
        columns!(@list $p; id_hash, key_hash, csrf, created_at, expires_at)
    };
    (worker_heartbeats, $p:literal) => {
        columns!(@list $p; worker_id, started_at, beat_at, last_claim_at, claimed)
    };
    (notifications, $p:literal) => {
        columns!(@list $p; id, execution_id, step_id, recipients, message, channel, status, created_at)
    };
    (records, $p:literal) => {
        columns!(@list $p; entity, entity_id, data, version, updated_at)
    };
    (resume_requests, "") => {
        "seq, id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error"
    };
    (@list $p:literal; $first:ident $(, $c:ident)* $(,)?) => {
        concat!($p, stringify!($first) $(, ", ", $p, stringify!($c))*)
    };
}

#[cfg(test)]
mod migration_rules;
mod rows;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::Notify;

/// The notification channel commits use to wake workers.
pub const WAKEUP_CHANNEL: &str = "tollgate_wakeup";

/// Decision batches written at once (each on its own connection).
const DECISION_BATCHES_IN_FLIGHT: usize = 2;

/// A pooled connection idle at least this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Longest a batch connection's ping may take before the connection is given up.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Session settings of the batch connections whose statements only look rows up by key
/// (commits, begins, decisions, events, waiting reads).
///
/// Their statements are few and fixed, and PostgreSQL's default plan caching planned the
/// big ones again at every execution — its cost estimate favoured a plan made for the
/// values at hand — so planning was a fifth of the database's time per decision and a
/// third per event. `force_generic_plan` plans each statement once per connection. A
/// plan made once is kept while the tables grow (until the next `ANALYZE` of one of them),
/// and made on a new, empty table it would be a sequential scan; `enable_seqscan = off`
/// makes it an index scan (until a new database's first `ANALYZE`, the step commit
/// still reads two partial indexes whole). The pool's connections, which also run range
/// scans and ad-hoc reads, keep the defaults.
pub(crate) const KEYED_BATCH_SETTINGS: [(&str, &str); 2] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
];

/// The options of a batch connection whose statements only look rows up by key: `pool`'s,
/// with [`KEYED_BATCH_SETTINGS`].
pub(crate) fn keyed_batch_options(pool: &PgConnectOptions) -> PgConnectOptions {
    pool.clone().options(KEYED_BATCH_SETTINGS)
}

/// Options of [`PgStore::connect`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// `true` (default): a commit returns once PostgreSQL has flushed it to disk.
    /// `false` sets `synchronous_commit = off` on the store's connections: commits return
    /// before the flush, so a crash of the *database server* (not of Tollgate) can lose
    /// the last few hundred milliseconds of commits — never corrupting anything — in
    /// exchange for far more commits per second. The same trade as SQLite's default.
    pub synchronous_commit: bool,
    /// Limits set on every connection of the store, so that one stuck statement, lock
    /// wait or abandoned transaction fails instead of holding a connection (and the
    /// calls queued behind it) forever.
    pub session: PgSession,
}

/// Per-connection settings sent when each connection opens. A zero duration turns that
/// limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSession {
    /// `statement_timeout`: longest a statement may run (migrations run without it).
    pub statement_timeout: Duration,
    /// `lock_timeout`: longest a statement waits for a lock.
    pub lock_timeout: Duration,
    /// `idle_in_transaction_session_timeout`: a transaction left open this long is ended
    /// by the server, releasing its locks.
    pub idle_in_transaction_timeout: Duration,
    /// `application_name`: names the process in `pg_stat_activity`.
    pub application_name: String,
}

impl Default for PgSession {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(60),
            application_name: "tollgate".into(),
        }
    }
}

impl PgOptions {
    /// The client-side bound of one batch call on a batch connection: the statement
    /// timeout plus 5 s for the round trips (60 s when statements are unbounded). The
    /// server's limits end slow statements; this ends calls whose connection stopped
    /// answering (a dropped network), which no server-side limit can.
    pub fn call_timeout(&self) -> Duration {
        if self.session.statement_timeout.is_zero() {
            Duration::from_secs(60)
        } else {
            self.session.statement_timeout + Duration::from_secs(5)
        }
    }

    /// Defaults for `url`: 16 connections, 10 s acquire timeout, the default session
    /// limits.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            synchronous_commit: true,
            session: PgSession::default(),
        }
    }
}

/// The embedded migrations (`crates/postgres/migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// [`MIGRATOR`] as the store runs it: migrations applied by a newer release are ignored,
/// not refused (see [`tollgate_store::SchemaPolicy`]).
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// Why the store could not be set up. The message names this level; the cause is the
/// error's source, so a report of the chain names each cause once.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is malformed.
    #[error("invalid database URL")]
    Url(#[source] sqlx::Error),
    /// The server refused or could not be reached.
    #[error("the server refused the connection or could not be reached")]
    Connect(#[source] sqlx::Error),
    /// Applying the schema failed.
    #[error("cannot apply migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The schema lacks migrations of this release and `SchemaPolicy::Check` forbids
    /// applying them.
    #[error("the database schema lacks migrations {0:?} of this release: run `tollgate-api migrate` first (or start with `--migrate auto`)")]
    SchemaBehind(Vec<i64>),
    /// A newer release migrated the schema and declared that this release cannot run
    /// on it (`schema_compatibility`).
    #[error("the database schema was migrated by a newer release that this one cannot run on: it needs a release that knows migration {needs}, and this one knows up to {knows}; upgrade")]
    SchemaAhead {
        /// The highest migration a release must know to run on this schema.
        needs: i64,
        /// The highest migration this release knows.
        knows: i64,
    },
}

/// A Tollgate store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    /// The wake-up listener's own pool (one connection, opened by [`PgStore::wakeups`]),
    /// so the listener does not hold one of `pool`'s connections for the process's life.
    listening: PgPool,
    pub(crate) committer: tollgate_store::group_commit::GroupCommitter,
    /// Group commit of decisions (see `store::decide_batch`).
    /// Step begins' group committer ([`store::begin_batch`]).
    pub(crate) begins: tollgate_store::group_commit::BeginCommitter,
    pub(crate) decider:
        tollgate_store::group_commit::Batcher<store::DecideRequest, tollgate_store::Decided>,
    /// Group commit of events with what they start (see `store::insert_events`).
    pub(crate) events: tollgate_store::group_commit::Batcher<
        (
            tollgate_model::records::Event,
            Vec<tollgate_store::Starting>,
        ),
        tollgate_store::EventInsert,
    >,
    /// Batched reads of the workflows events trigger (see `store::triggered_batch`).
    pub(crate) triggered:
        tollgate_store::group_commit::Batcher<String, Vec<tollgate_model::records::Workflow>>,
    /// Batched reads of the executions waiting for an event type and of their
    /// correlation shapes (see `store::waiting_batch`).
    pub(crate) waiting:
        tollgate_store::group_commit::Batcher<store::WaitingRead, store::WaitingAnswer>,
    /// The batching tasks' connections, for [`PgStore::open_batch_connections`].
    batch_connections: Arc<[Dedicated]>,
}

/// A batch being written on a batch connection: one answer per request, in order.
type BatchFuture<'c, R> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = tollgate_store::Result<Vec<tollgate_store::Result<R>>>>
            + Send
            + 'c,
    >,
>;

/// Runs a batching task's statements on no rows on a new connection (see
/// [`Dedicated::prepared_by`]).
type Prepare = for<'c> fn(
    &'c mut PgConnection,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = tollgate_store::Result<()>> + Send + 'c>,
>;

/// An open batch connection and when it was last used.
type Opened = (PgConnection, Instant);

/// The connections of one batching task ([`tollgate_store::group_commit::Batcher`]), one
/// per batch it writes at once, each opened on first use and again after a loss. Like a
/// pooled connection, one is pinged before use when it sat idle for [`PING_IF_IDLE_FOR`],
/// so a server restart during a quiet period costs a reconnect, not a failed batch. The
/// task never has more batches in flight than connections, so a batch always finds a
/// free one; the locks only let the task's concurrent batches share the slots.
#[derive(Clone, Debug)]
struct Dedicated {
    options: Arc<PgConnectOptions>,
    /// How long opening a connection may take (the pool's acquire timeout).
    connect_timeout: Duration,
    /// What each new connection runs before its first batch.
    prepare: Option<Prepare>,
    /// Longest a batch (or a ping) may take before its connection is given up and its
    /// requests answered [`tollgate_store::Error::Unavailable`]: the server's
    /// `statement_timeout` cannot end a call whose packets never reach it.
    call_timeout: Duration,
    slots: Arc<[tokio::sync::Mutex<Option<Opened>>]>,
    /// When the batch on each slot started, while one runs (for readiness).
    busy_since: Arc<[std::sync::Mutex<Option<Instant>>]>,
}

impl Dedicated {
    /// `n` connections, one per batch the task writes at once.
    fn new(
        options: Arc<PgConnectOptions>,
        connect_timeout: Duration,
        call_timeout: Duration,
        n: usize,
    ) -> Self {
        Self {
            options,
            connect_timeout,
            prepare: None,
            call_timeout,
            slots: (0..n.max(1))
                .map(|_| tokio::sync::Mutex::default())
                .collect(),
            busy_since: (0..n.max(1)).map(|_| std::sync::Mutex::default()).collect(),
        }
    }

    /// How long the oldest batch still running on these connections has run.
    fn longest_busy(&self) -> Option<Duration> {
        self.busy_since
            .iter()
            .filter_map(|b| *b.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            .map(|since| since.elapsed())
            .max()
    }

    /// Has each new connection run `prepare` — the task's statements on no rows — before
    /// its first batch, so that the statements are prepared and the server
    /// process's catalog caches filled when the first real batch comes.
    fn prepared_by(mut self, prepare: Prepare) -> Self {
        self.prepare = Some(prepare);
        self
    }

    /// A batcher writing each batch with `write` on these connections, with as many
    /// batches in flight as there are connections.
    fn batcher<T, R>(
        self,
        write: for<'c> fn(&'c mut PgConnection, Arc<Vec<T>>) -> BatchFuture<'c, R>,
    ) -> tollgate_store::group_commit::Batcher<T, R>
    where
        T: Clone + Send + Sync + 'static,
        R: Send + 'static,
    {
        let in_flight = self.slots.len();
        tollgate_store::group_commit::Batcher::spawn_in_flight(in_flight, move |items| {
            let conn = self.clone();
            async move { conn.run(async |c| write(c, items).await).await }
        })
    }

    /// Opens every connection in the background (see [`PgStore::open_batch_connections`]).
    /// A failure here only leaves the slot for the first batch to open, which then
    /// reports its own error.
    fn open_ahead(&self) {
        for slot in 0..self.slots.len() {
            let this = self.clone();
            tokio::spawn(async move {
                let Some(slot) = this.slots.get(slot) else {
                    return;
                };
                let mut slot = slot.lock().await;
                if slot.is_none() {
                    match this.open().await {
                        Ok(conn) => *slot = Some((conn, Instant::now())),
                        Err(err) => tracing::debug!("batch connection not opened ahead: {err}"),
                    }
                }
            });
        }
    }

    /// Opens a connection within the connect timeout and runs the task's [`Prepare`].
    /// How its statements are planned is in its options ([`KEYED_BATCH_SETTINGS`]).
    async fn open(&self) -> tollgate_store::Result<PgConnection> {
        tokio::time::timeout(self.connect_timeout, async {
            let mut conn = self.options.connect().await.map_err(rows::backend)?;
            if let Some(prepare) = self.prepare {
                prepare(&mut conn).await?;
            }
            Ok(conn)
        })
        .await
        .map_err(|_| {
            tollgate_store::Error::Unavailable(format!(
                "could not connect to PostgreSQL within {:?}",
                self.connect_timeout
            ))
        })?
    }

    /// Runs `batch` on the connection (opening it if needed). After an error the
    /// connection is kept only if it still answers — which also completes the rollback
    /// of a transaction the error abandoned.
    async fn run<R>(
        &self,
        batch: impl AsyncFnOnce(&mut PgConnection) -> tollgate_store::Result<R>,
    ) -> tollgate_store::Result<R> {
        let free = self
            .slots
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.try_lock().ok().map(|s| (i, s)));
        let (index, mut slot) = match free {
            Some(free) => free,
            None => (0, self.slots[0].lock().await),
        };
        let bound = self.call_timeout;
        if let Some((conn, used)) = &mut *slot {
            if used.elapsed() >= PING_IF_IDLE_FOR
                && !matches!(
                    tokio::time::timeout(PING_TIMEOUT, conn.ping()).await,
                    Ok(Ok(()))
                )
            {
                *slot = None;
            }
        }
        let (conn, used) = match &mut *slot {
            Some(open) => open,
            None => slot.insert((self.open().await?, Instant::now())),
        };
        let busy = self.busy_since.get(index);
        let mark = |at: Option<Instant>| {
            if let Some(busy) = busy {
                *busy
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
            }
        };
        mark(Some(Instant::now()));
        let result = tokio::time::timeout(bound, batch(conn)).await;
        mark(None);
        *used = Instant::now();
        let Ok(result) = result else {
            // The connection is in an unknown state (a statement may still be running, or
            // the network dropped): it is closed by dropping it, and a new one is opened
            // for the next batch.
            *slot = None;
            return Err(tollgate_store::Error::Unavailable(format!(
                "PostgreSQL did not answer a batch within {bound:?}; whether it was written is unknown"
            )));
        };
        if result.is_err()
            && !matches!(
                tokio::time::timeout(PING_TIMEOUT, conn.ping()).await,
                Ok(Ok(()))
            )
        {
            *slot = None;
        }
        result
    }
}

impl PgStore {
    /// Connects (the pool reconnects by itself after connection losses: a restarted
    /// server yields errors for the calls in flight, then service resumes).
    pub async fn connect(options: &PgOptions) -> Result<Self, ConnectError> {
        let mut connect: PgConnectOptions = options.url.parse().map_err(ConnectError::Url)?;
        if !options.synchronous_commit {
            connect = connect.options([("synchronous_commit", "off")]);
        }
        let session = &options.session;
        let millis = |d: Duration| d.as_millis().to_string();
        connect = connect
            .application_name(&session.application_name)
            .options([
                ("statement_timeout", millis(session.statement_timeout)),
                ("lock_timeout", millis(session.lock_timeout)),
                (
                    "idle_in_transaction_session_timeout",
                    millis(session.idle_in_transaction_timeout),
                ),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A ping costs a round trip: pay it only for a connection that sat idle
            // long enough to have been cut (server restart, firewall); a busy pool's
            // connections are proven by their last use.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect)
            .await
            .map_err(ConnectError::Connect)?;
        // Each batching task writes on a connection of its own, made on its own task:
        // no pool checkout and release (with its ping) per batch, prepared statements
        // that stay warm, and the socket's readiness driven by the runtime the task runs
        // on rather than by whichever request handler happened to open a pooled one.
        let call_timeout = options.call_timeout();
        let keyed = Arc::new(keyed_batch_options(&pool.connect_options()));
        let dedicated = |connect: &Arc<PgConnectOptions>, n| {
            Dedicated::new(connect.clone(), options.acquire_timeout, call_timeout, n)
        };
        let connections = [
            dedicated(&keyed, 1),
            dedicated(&keyed, DECISION_BATCHES_IN_FLIGHT)
                .prepared_by(|c| Box::pin(store::prepare_decisions(c))),
            dedicated(&keyed, 1),
            // One read of every enabled event-triggered workflow: a scan of a small
            // table, planned as PostgreSQL likes.
            dedicated(&pool.connect_options(), 1),
            dedicated(&keyed, 1),
            dedicated(&keyed, 1),
        ];
        let [commits, decisions, events, triggered, waiting, begins] = connections.clone();
        let committer = commits.batcher(|c, commits| {
            Box::pin(async move {
                let results = store::commit_batch(c, &commits).await?;
                Ok(results.into_iter().map(Ok).collect())
            })
        });
        let begins = begins.batcher(|c, begins| {
            Box::pin(async move {
                let versions = store::begin_batch(c, &begins).await?;
                Ok(versions.into_iter().map(Ok).collect())
            })
        });
        let decider = decisions.batcher(|c, requests| {
            Box::pin(async move { store::decide_batch(c, &requests).await })
        });
        let events = events.batcher(|c, items| {
            Box::pin(async move {
                let results = store::insert_events(c, &items).await?;
                Ok(results.into_iter().map(Ok).collect())
            })
        });
        let triggered = triggered
            .batcher(|c, types| Box::pin(async move { store::triggered_batch(c, &types).await }));
        let waiting = waiting
            .batcher(|c, reads| Box::pin(async move { store::waiting_batch(c, &reads).await }));
        // The listener holds its connection for the life of the process: a pool of its
        // own (one connection, the same settings, opened only when listening starts).
        let listening = PgPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with((*pool.connect_options()).clone());
        Ok(Self {
            pool,
            listening,
            committer,
            begins,
            decider,
            events,
            triggered,
            waiting,
            batch_connections: Arc::new(connections),
        })
    }

    /// Opens the batching tasks' connections now, in the background, rather than at
    /// their first batch: the first decisions after start-up then find their statements
    /// prepared and the server process's catalog caches filled (in the approval
    /// benchmark, the first decision took 18–23 ms without this, 6–8 ms with it). Call
    /// it once the schema is current (after [`Self::migrate`]): the statements are
    /// prepared against the tables as they are.
    pub fn open_batch_connections(&self) {
        for connections in self.batch_connections.iter() {
            connections.open_ahead();
        }
    }

    /// How long the oldest batch now in flight on a batch connection has run (`None`
    /// when none runs): readiness reports a batch writer stuck longer than its probe
    /// allows, since the requests queued behind it wait too.
    pub(crate) fn longest_batch(&self) -> Option<Duration> {
        self.batch_connections
            .iter()
            .filter_map(Dedicated::longest_busy)
            .max()
    }

    /// Applies pending migrations.
    ///
    /// Migrations may build indexes on large tables: they run on a connection of their
    /// own without the statement timeout, which is then closed rather than returned to
    /// the pool.
    pub async fn migrate(&self) -> Result<(), ConnectError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(ConnectError::Connect)?
            .detach();
        sqlx::query("SET statement_timeout = 0")
            .execute(&mut conn)
            .await
            .map_err(ConnectError::Connect)?;
        let result = migrator()
            .run(&mut conn)
            .await
            .map_err(ConnectError::Migrate);
        let _ = conn.close().await;
        result
    }

    /// Prepares the schema as `policy` says: applies this release's missing migrations
    /// ([`PgStore::migrate`]), or refuses a schema that lacks some, or does nothing.
    /// Migrations of a newer release are never an error.
    pub async fn prepare_schema(
        &self,
        policy: tollgate_store::SchemaPolicy,
    ) -> Result<(), ConnectError> {
        let (missing, newer) = self.schema_difference().await?;
        let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        let floor = self.schema_floor().await.map_err(ConnectError::Connect)?;
        if let Some((needs, knows)) = tollgate_store::SchemaPolicy::too_old_for(floor, &known) {
            return Err(ConnectError::SchemaAhead { needs, knows });
        }
        if !newer.is_empty() {
            tracing::info!(?newer, "the database has migrations of a newer release; running on it as the previous release");
        }
        match policy {
            tollgate_store::SchemaPolicy::Apply if !missing.is_empty() => self.migrate().await,
            tollgate_store::SchemaPolicy::Check if !missing.is_empty() => {
                Err(ConnectError::SchemaBehind(missing))
            }
            _ => Ok(()),
        }
    }

    /// The schema's compatibility floor (`None` before migration 9 created its table).
    async fn schema_floor(&self) -> Result<Option<i64>, sqlx::Error> {
        let table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('schema_compatibility')::text")
                .fetch_one(&self.pool)
                .await?;
        if table.is_none() {
            return Ok(None);
        }
        sqlx::query_scalar("SELECT min_reader_migration FROM schema_compatibility WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
    }

    /// This release's migrations the database has not applied, and those it has that
    /// this release does not know.
    async fn schema_difference(&self) -> Result<(Vec<i64>, Vec<i64>), ConnectError> {
        let table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&self.pool)
                .await
                .map_err(ConnectError::Connect)?;
        let applied: Vec<i64> = match table {
            Some(_) => sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .map_err(ConnectError::Connect)?,
            None => Vec::new(),
        };
        let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        Ok(tollgate_store::SchemaPolicy::difference(&known, applied))
    }

    /// How far this host's clock is from the database server's (positive: this host is
    /// ahead). The server's `clock_timestamp()` is compared with the middle of the
    /// round trip, so network delay does not count as skew.
    ///
    /// Leases and deadlines are compared against each process's own clock, so a host
    /// ahead by more than a lease would take over executions that are still running:
    /// processes check this at start.
    pub async fn clock_skew(&self) -> Result<chrono::TimeDelta, ConnectError> {
        let before = std::time::SystemTime::now();
        let server: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&self.pool)
            .await
            .map_err(ConnectError::Connect)?;
        let after = std::time::SystemTime::now();
        let middle = before + after.duration_since(before).unwrap_or_default() / 2;
        Ok(chrono::DateTime::<chrono::Utc>::from(middle) - server)
    }

    /// The connection pool (for health checks and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A wake-up signal fed by `LISTEN tollgate_wakeup` on a dedicated connection, which
    /// is re-established after any loss (polling remains the safety net meanwhile).
    pub fn wakeups(&self) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        let signal = notify.clone();
        let pool = self.pool.clone();
        let listening = self.listening.clone();
        tokio::spawn(async move {
            loop {
                // A closed pool is the store shutting down (a clean stop, `migrate`):
                // the listener ends quietly instead of reporting a lost connection.
                let problem = match PgListener::connect_with(&listening).await {
                    Ok(mut listener) => match listener.listen(WAKEUP_CHANNEL).await {
                        Err(err) => format!("LISTEN {WAKEUP_CHANNEL} failed: {err}"),
                        Ok(()) => {
                            // A reconnect may have missed notifications: wake once.
                            signal.notify_one();
                            loop {
                                match listener.recv().await {
                                    Ok(_) => signal.notify_one(),
                                    Err(err) => {
                                        break format!(
                                            "wake-up listener lost its connection: {err}"
                                        )
                                    }
                                }
                            }
                        }
                    },
                    Err(err) => format!("wake-up listener cannot connect: {err}"),
                };
                if pool.is_closed() || listening.is_closed() {
                    tracing::debug!("wake-up listener stopped with its store");
                    return;
                }
                tracing::warn!("{problem}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        notify
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
        self.listening.close().await;
    }
}
