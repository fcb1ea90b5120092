//! SQLite-specific behaviour: concurrent writers, crash durability, data directories.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_model::records::{DecisionKind, StepStatus};
use tollgate_model::ExecutionStatus;
use tollgate_sqlite::{OpenError, SqliteOptions, SqliteStore};
use tollgate_store::testkit::{
    commit, decision, lease, manager, paused_at_approval, running, step_record, t0, workflow,
};
use tollgate_store::{ExecutionStore, Store, Transition};

use crate::{fresh, fresh_path};

/// 50 deciders at once: one claim, and no `SQLITE_BUSY` reaches anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_decisions_one_claim_no_busy_errors() {
    let store: Arc<dyn Store> = Arc::new(fresh().await);
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 1, None).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .decide(
                    approval.id,
                    decision(&format!("m{i}"), DecisionKind::Approve),
                    &manager(&format!("m{i}")),
                    &lease("api", t0()),
                    t0(),
                    None,
                )
                .await
        }));
    }
    let mut claims = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(d) => claims += usize::from(d.claimed),
            Err(err) => assert!(err.is_conflict(), "only conflicts may surface, got: {err}"),
        }
    }
    assert_eq!(claims, 1);
    assert_eq!(store.get_execution(e.id).await.unwrap().resume_count, 1);
}

/// Eight writers committing steps as fast as they can for five seconds: no errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_writers_for_five_seconds() {
    let store: Arc<dyn Store> = Arc::new(fresh().await);
    let w = workflow(&store, "orders", "1", "order.created").await;
    let until = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{writer}");
            let mut commits = 0u64;
            while Instant::now() < until {
                let e = running(&store, &w, &owner).await;
                let mut version = e.version;
                for _ in 0..5 {
                    let mut c = commit(&e, &owner, version, Transition::Continue);
                    c.records = vec![step_record(e.id, "s", StepStatus::Completed)];
                    version = store
                        .commit_step(c)
                        .await
                        .expect("no error under concurrency")
                        .version;
                    commits += 1;
                }
                // Reads interleave with the writes.
                store.get_execution(e.id).await.expect("reads never fail");
            }
            commits
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert!(total > 0);
}

/// Everything committed survives a process that dies without closing the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_data_survives_an_unclean_shutdown() {
    let path = fresh_path();
    let id = {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&SqliteOptions::new(&path)).await.unwrap());
        let w = workflow(&store, "orders", "1", "order.created").await;
        let (e, _) = paused_at_approval(&store, &w, 1, None).await;
        // Dropped without `close()`: no checkpoint, the WAL holds the commits.
        e.id
    };
    let reopened = SqliteStore::open(&SqliteOptions::new(&path)).await.unwrap();
    let e = reopened.get_execution(id).await.unwrap();
    assert_eq!(e.status, ExecutionStatus::Paused);
    assert_eq!(e.context, json!({"order": {"id": "o-1"}}));
}

#[tokio::test]
async fn the_data_directory_is_created_and_an_unwritable_one_is_an_error() {
    let nested = fresh_path()
        .with_extension("d")
        .join("deeper")
        .join("tollgate.db");
    SqliteStore::open(&SqliteOptions::new(&nested))
        .await
        .unwrap();
    assert!(nested.exists());

    // A path under a regular file can never be a directory.
    let file = fresh_path();
    std::fs::write(&file, b"not a directory").unwrap();
    let err = SqliteStore::open(&SqliteOptions::new(file.join("tollgate.db")))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Directory { .. }), "{err}");
    assert!(
        err.to_string().contains("cannot use data directory"),
        "{err}"
    );
}

#[tokio::test]
async fn migrations_are_idempotent_and_the_schema_refuses_bad_states() {
    let path = fresh_path();
    let store = SqliteStore::open(&SqliteOptions::new(&path)).await.unwrap();
    drop(store);
    let store = SqliteStore::open(&SqliteOptions::new(&path)).await.unwrap();
    let dyn_store: Arc<dyn Store> = Arc::new(store.clone());
    let w = workflow(&dyn_store, "orders", "1", "order.created").await;
    let e = running(&dyn_store, &w, "w1").await;
    // A status the model does not know is refused by the CHECK constraint.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&path))
        .await
        .unwrap();
    let bad = sqlx::query("UPDATE executions SET status = 'sleeping' WHERE id = ?")
        .bind(e.id.to_string())
        .execute(&pool)
        .await;
    assert!(bad.is_err());
    let gated_without_gate =
        sqlx::query("UPDATE executions SET status = 'paused', gate = NULL WHERE id = ?")
            .bind(e.id.to_string())
            .execute(&pool)
            .await;
    assert!(
        gated_without_gate.is_err(),
        "a paused execution must have its gate"
    );
}

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_is_bounded_and_checkpointed_when_quiet() {
    use sqlx::{ConnectOptions, Connection};
    use tollgate_model::records::ApiKey;
    use tollgate_store::ApiKeyStore;

    let path = fresh_path();
    let wal = path.with_extension("db-wal");
    let limit = 256 * 1024;
    let store = SqliteStore::open(&SqliteOptions {
        wal_size_limit: limit,
        checkpoint_interval: Duration::from_millis(50),
        ..SqliteOptions::new(&path)
    })
    .await
    .unwrap();
    let key = |i: usize| ApiKey {
        id: uuid::Uuid::now_v7(),
        name: format!("k{i}"),
        roles: vec!["viewer".into()],
        key_hash: format!("{i:064}"),
        created_at: tollgate_store::testkit::t0(),
    };
    // A reader holds its snapshot while commits pile up: the log cannot start over.
    let mut reader = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    sqlx::query("SELECT count(*) FROM api_keys")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    for i in 0..600 {
        store.create_api_key(key(i)).await.unwrap();
    }
    let grown = file_size(&wal);
    assert!(grown > 4 * limit, "the log grew to {grown} bytes");
    sqlx::query("COMMIT").execute(&mut reader).await.unwrap();
    reader.close().await.unwrap();
    // Quiet now: the periodic checkpoint copies the log into the database file. The copy
    // is done once the file stops growing for two checkpoint intervals (a commit in the
    // middle of the copy would find the log's tail still needed, and go on from it).
    let before = file_size(&path);
    let (mut copied, mut last, mut still) = (false, before, 0);
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = file_size(&path);
        copied |= now > before;
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if copied && still >= 5 {
            break;
        }
    }
    assert!(copied, "no checkpoint ran while no commit came");
    // The next commit starts the log over, cut back to the limit.
    store.create_api_key(key(600)).await.unwrap();
    let cut = file_size(&wal);
    assert!(
        cut <= limit,
        "the log is {cut} bytes after restarting (limit {limit})"
    );
    store.close().await;
}

/// Under steady load — reads on every connection of the pool and a commit right after
/// another — the log still starts over: the checkpointer restarts it once it passes a
/// quarter of the limit. (A passive checkpoint alone let it grow with every commit: the
/// writer never found it all copied with no reader in it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_stays_bounded_under_steady_reads_and_writes() {
    use tollgate_model::records::ApiKey;
    use tollgate_store::ApiKeyStore;

    let path = fresh_path();
    let wal = path.with_extension("db-wal");
    let limit = 256 * 1024;
    let store = Arc::new(
        SqliteStore::open(&SqliteOptions {
            wal_size_limit: limit,
            checkpoint_interval: Duration::from_millis(10),
            ..SqliteOptions::new(&path)
        })
        .await
        .unwrap(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let page = tollgate_store::PageRequest::first(50);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store.list_api_keys(&page).await.unwrap();
                }
            })
        })
        .collect();
    let mut largest = 0;
    let mut written = 0;
    for i in 0..3000 {
        store
            .create_api_key(ApiKey {
                id: uuid::Uuid::now_v7(),
                name: format!("key {i} {}", "x".repeat(400)),
                roles: vec!["viewer".into()],
                key_hash: format!("{i:064}"),
                created_at: tollgate_store::testkit::t0(),
            })
            .await
            .unwrap();
        written += 1;
        largest = largest.max(file_size(&wal));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    // 3,000 commits of a page or more each would be over 12 MB of log.
    assert!(
        largest <= 16 * limit,
        "the log reached {largest} bytes over {written} commits (limit {limit})"
    );
    // The restarts ran on the writer's connection with a short wait for readers; the
    // writer got its own back: a write lock held elsewhere for a moment is waited out,
    // not a `database is locked` error after the restarts' few milliseconds.
    let other = {
        use sqlx::Connection;
        let mut other = another_connection(&path).await;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sqlx::query("COMMIT").execute(&mut other).await.unwrap();
            other.close().await.unwrap();
        })
    };
    store
        .create_api_key(ApiKey {
            id: uuid::Uuid::now_v7(),
            name: "after the lock".into(),
            roles: vec!["viewer".into()],
            key_hash: format!("{:064}", 99_999),
            created_at: tollgate_store::testkit::t0(),
        })
        .await
        .expect("the writer waits out a lock held elsewhere");
    other.await.unwrap();
    store.close().await;
}

/// `--migrate check` refuses a schema that lacks this release's migrations; a schema
/// with a newer release's migrations opens in every mode (rolling upgrades, rollbacks).
#[tokio::test]
async fn schema_policies_and_a_newer_schema() {
    use tollgate_store::SchemaPolicy;
    let path = fresh_path();
    let open = |schema| {
        let path = path.clone();
        async move {
            SqliteStore::open(&SqliteOptions {
                schema,
                ..SqliteOptions::new(&path)
            })
            .await
        }
    };
    let refused = open(SchemaPolicy::Check).await.unwrap_err();
    assert!(
        matches!(&refused, OpenError::SchemaBehind { missing, .. } if missing.len() == tollgate_sqlite::MIGRATOR.iter().count()),
        "{refused}"
    );
    assert!(refused
        .to_string()
        .contains("run `tollgate-api migrate` first"));
    let store = open(SchemaPolicy::Apply).await.unwrap();
    store.close().await;
    // A newer release added a migration this one does not know.
    {
        use sqlx::Connection;
        let mut conn = another_connection(&path).await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
             VALUES (99990101000000, 'from the future', CURRENT_TIMESTAMP, TRUE, x'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    for schema in [SchemaPolicy::Apply, SchemaPolicy::Check, SchemaPolicy::Skip] {
        let store = open(schema)
            .await
            .unwrap_or_else(|e| panic!("{schema:?}: {e}"));
        store.close().await;
    }
    // A release after that one declared that a release knowing only this one's
    // migrations cannot run on its schema: refused, whatever the policy.
    {
        use sqlx::Connection;
        let mut conn = another_connection(&path).await;
        sqlx::query("UPDATE schema_compatibility SET min_reader_migration = 99990101000000")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let knows = tollgate_sqlite::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap();
    for schema in [SchemaPolicy::Apply, SchemaPolicy::Check, SchemaPolicy::Skip] {
        let refused = open(schema).await.unwrap_err();
        assert!(
            matches!(&refused, OpenError::SchemaAhead { needs: 99_990_101_000_000, knows: k, .. } if *k == knows),
            "{schema:?}: {refused}"
        );
        assert!(refused.to_string().contains("upgrade"), "{refused}");
    }
}

/// `VACUUM INTO` while the store is in use, then a restore: the copy opens as a store
/// with everything committed before the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_running_restores() {
    let path = fresh_path();
    let store = SqliteStore::open(&SqliteOptions::new(&path)).await.unwrap();
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let w = workflow(&shared, "orders", "1", "order.created").await;
    let (paused, _) = paused_at_approval(&shared, &w, 1, None).await;
    let copy = path.with_extension("backup.db");
    store.backup_to(&copy).await.unwrap();
    // Never over an existing file.
    let again = store.backup_to(&copy).await.unwrap_err();
    assert!(again.to_string().contains("never overwrites"), "{again}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the copy is owner-only");
    }
    // Written after the backup: not in the copy.
    let (later, _) = paused_at_approval(&shared, &w, 2, None).await;
    store.close().await;
    let restored = SqliteStore::open(&SqliteOptions::new(&copy)).await.unwrap();
    let e = restored.get_execution(paused.id).await.unwrap();
    assert_eq!(e.status, ExecutionStatus::Paused);
    assert!(restored
        .get_execution(later.id)
        .await
        .unwrap_err()
        .is_not_found());
    restored.close().await;
}

/// Readiness writes: a write lock held by another process (or a full disk) makes the
/// store not ready even though reads still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_writes_cannot_happen() {
    use sqlx::Connection;
    use tollgate_store::Health;
    let path = fresh_path();
    let store = SqliteStore::open(&SqliteOptions {
        busy_timeout: Duration::from_millis(200),
        ..SqliteOptions::new(&path)
    })
    .await
    .unwrap();
    store.ping().await.unwrap();
    let mut other = another_connection(&path).await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let refused = store.ping().await.unwrap_err();
    assert!(refused.to_string().contains("refuses writes"), "{refused}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    store.ping().await.unwrap();
    store.close().await;
}

/// A write whose caller stops waiting between SQLite running its `BEGIN IMMEDIATE` and
/// sqlx handing back the transaction (a client that went away, a timeout, a process
/// shutting down) leaves no transaction open: the store's next write works and another
/// process can take the write lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_inside_its_begin_leaves_no_lock() {
    use sqlx::{ConnectOptions, Connection};
    use std::task::{Context, Waker};
    let path = fresh_path();
    let store = SqliteStore::open(&SqliteOptions::new(&path)).await.unwrap();
    let mut other = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(Duration::ZERO)
        .connect()
        .await
        .unwrap();
    // Whether the store holds the write lock (taken and given back at once when free).
    async fn locked(other: &mut sqlx::SqliteConnection) -> bool {
        if sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *other)
            .await
            .is_err()
        {
            return true;
        }
        sqlx::query("ROLLBACK").execute(&mut *other).await.unwrap();
        false
    }
    let now = t0();
    let mut cx = Context::from_waker(Waker::noop());
    let mut cut = 0;
    for _ in 0..20 {
        // `time_out_overdue` opens its transaction first. Poll it until SQLite has run
        // the BEGIN, poll once more so that sqlx takes the answer, and drop it there.
        let mut write = store.time_out_overdue(now, 10);
        for _ in 0..500 {
            if write.as_mut().poll(&mut cx).is_ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            if locked(&mut other).await {
                if write.as_mut().poll(&mut cx).is_pending() {
                    cut += 1;
                }
                break;
            }
        }
        drop(write);
        // The dropped connection goes back to the pool on a task of its own.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cut > 0, "no write was ever cut inside its BEGIN");
    tokio::time::timeout(Duration::from_secs(10), store.time_out_overdue(now, 10))
        .await
        .expect("the next write is not stuck behind the lock")
        .expect("the next write works");
    assert!(
        !locked(&mut other).await,
        "no transaction was left holding the write lock"
    );
    other.close().await.unwrap();
    store.close().await;
}

/// A store on a fresh file, and a way to run SQL on that file behind its back (to damage
/// rows as a bug, a hand edit or a newer release would).
async fn store_and_sql() -> (
    Arc<dyn Store>,
    impl Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    let path = fresh_path();
    let store = SqliteStore::open(&SqliteOptions::new(&path)).await.unwrap();
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .busy_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let sql = move |statement: String| {
        let pool = pool.clone();
        Box::pin(async move {
            let done = sqlx::query(&statement).execute(&pool).await.unwrap();
            assert_eq!(done.rows_affected(), 1, "{statement}");
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    };
    (Arc::new(store) as Arc<dyn Store>, sql)
}

tollgate_store::sql_rule_tests!(store_and_sql);

/// Read connections keep a small page cache (256 KiB, SQLite's default is 2,000 KiB):
/// their scans pass through any cache, and with the default each of them filled its
/// cache as the data grew, so the server's memory grew with the paused executions.
#[tokio::test]
async fn read_connections_keep_a_small_page_cache() {
    let path = fresh_path();
    let store = SqliteStore::open(&SqliteOptions::new(&path)).await.unwrap();
    assert_eq!(store.read_cache_kib().await.unwrap(), 256);
    store.close().await;
    let larger = SqliteStore::open(&SqliteOptions {
        read_cache_kib: 4096,
        ..SqliteOptions::new(&path)
    })
    .await
    .unwrap();
    assert_eq!(larger.read_cache_kib().await.unwrap(), 4096);
    larger.close().await;
}

/// The durability asked for is the one the writer runs with, per open: `FULL` on one
/// open does not stick to the file, and the default is `NORMAL`.
#[tokio::test]
async fn the_writer_runs_with_the_durability_asked_for() {
    use tollgate_sqlite::Durability;
    let path = fresh_path();
    let store = SqliteStore::open(&SqliteOptions::new(&path)).await.unwrap();
    assert_eq!(store.synchronous().await.unwrap(), Durability::Normal);
    store.close().await;
    let full = SqliteStore::open(&SqliteOptions {
        durability: Durability::Full,
        ..SqliteOptions::new(&path)
    })
    .await
    .unwrap();
    assert_eq!(full.synchronous().await.unwrap(), Durability::Full);
    let reopened = SqliteStore::open(&SqliteOptions::new(&path)).await.unwrap();
    assert_eq!(
        reopened.synchronous().await.unwrap(),
        Durability::Normal,
        "the level belongs to the connection, not the file"
    );
    reopened.close().await;
    let written: Arc<dyn Store> = Arc::new(full.clone());
    let w = workflow(&written, "orders", "1", "order.created").await;
    full.close().await;
    let again: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&SqliteOptions::new(&path)).await.unwrap());
    assert_eq!(again.get_workflow(w.id).await.unwrap().id, w.id);
}

/// A connection of its own to the database at `path`, as another process would open it.
async fn another_connection(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}
