//! PostgreSQL load driver: step commits and decide+claim per second at concurrency 1 and
//! 32 (targets at 32: ≥ 5,000 commits/s, ≥ 2,000 decide+claim/s), then the hot queries
//! with 1,000,000 paused executions in the table (targets: < 10 ms), with their plans.
//!
//! `TOLLGATE_BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! must allow creating databases; the driver works in a new database and drops it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use tollgate_model::records::{DecisionKind, StepStatus};
use tollgate_postgres::{PgOptions, PgStore};
use tollgate_store::testkit::{
    commit, decision, lease, manager, paused_at_approval, running, step_record, t0, workflow,
};
use tollgate_store::{PageRequest, Store, Transition};

async fn step_commits(store: &Arc<dyn Store>, concurrency: usize, per_task: usize) -> f64 {
    let w = workflow(
        store,
        &format!("bench-{}", uuid::Uuid::now_v7()),
        "1",
        "bench",
    )
    .await;
    let mut executions = Vec::new();
    for i in 0..concurrency {
        executions.push(running(store, &w, &format!("w{i}")).await);
    }
    let start = Instant::now();
    let tasks: Vec<_> = executions
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let store = store.clone();
            tokio::spawn(async move {
                let owner = format!("w{i}");
                let mut version = e.version;
                let mut context = json!({"order": {"id": "o-1", "total": 1200, "lines": [1, 2, 3]}, "customer": {"tier": "gold"}, "steps": {}});
                for n in 0..per_task {
                    let mut c = commit(&e, &owner, version, Transition::Continue);
                    context["steps"][format!("s{}", n % 16)] = json!({"result": true});
                    c.context = context.clone();
                    c.records = vec![step_record(e.id, "s", StepStatus::Completed)];
                    version = store.commit_step(c).await.unwrap().version;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (concurrency * per_task) as f64 / start.elapsed().as_secs_f64()
}

async fn decide_claims(store: &Arc<dyn Store>, concurrency: usize, total: usize) -> f64 {
    let w = workflow(
        store,
        &format!("bench-{}", uuid::Uuid::now_v7()),
        "1",
        "bench",
    )
    .await;
    let mut approvals = Vec::new();
    for _ in 0..total {
        approvals.push(paused_at_approval(store, &w, 1, None).await.1.id);
    }
    let chunks: Vec<Vec<uuid::Uuid>> = approvals
        .chunks(total.div_ceil(concurrency))
        .map(<[_]>::to_vec)
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|ids| {
            let store = store.clone();
            tokio::spawn(async move {
                for id in ids {
                    assert!(
                        store
                            .decide(
                                id,
                                decision("mia", DecisionKind::Approve),
                                &manager("mia"),
                                &lease("api", t0()),
                                t0(),
                                None
                            )
                            .await
                            .unwrap()
                            .claimed
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    let took = start.elapsed();
    println!("  {what}: {:.2} ms", took.as_secs_f64() * 1000.0);
    (out, took)
}

async fn explain(pool: &sqlx::PgPool, sql: &str) {
    println!("\n  EXPLAIN ANALYZE {sql}");
    for row in sqlx::query(&format!(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
    {
        println!("    {}", row.get::<String, _>(0));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks benches to list their tests: there are none.
    }
    let admin_url = std::env::var("TOLLGATE_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin: PgConnectOptions = admin_url.parse().unwrap();
    let mut conn: PgConnection = admin
        .connect()
        .await
        .expect("PostgreSQL for the benchmark (TOLLGATE_BENCH_DATABASE_URL)");
    let name = format!("tollgate_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = admin.clone().database(&name).to_url_lossy().to_string();
    let store = PgStore::connect(&PgOptions {
        max_connections: 32,
        ..PgOptions::new(&url)
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let pool = store.pool().clone();
    let dyn_store: Arc<dyn Store> = Arc::new(store);

    let version: String = sqlx::query("SELECT version()")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    println!("PostgreSQL: {version}\n");
    // `TOLLGATE_BENCH_ONLY=scale` skips the throughput runs.
    let throughput = std::env::var("TOLLGATE_BENCH_ONLY").map_or(true, |only| only != "scale");
    for concurrency in [1, 32].into_iter().filter(|_| throughput) {
        let per_task = if concurrency == 1 { 3000 } else { 300 };
        let rate = step_commits(&dyn_store, concurrency, per_task).await;
        println!("step commits, concurrency {concurrency:>2}: {rate:>8.0}/s");
    }
    for concurrency in [1, 32].into_iter().filter(|_| throughput) {
        let rate = decide_claims(&dyn_store, concurrency, 3000).await;
        println!("decide+claim, concurrency {concurrency:>2}: {rate:>8.0}/s");
    }

    // 1,000,000 paused executions: copies of one paused at an approval, deadlines spread
    // over the next 1,000,000 seconds, so 1,000 are due at "now" (ten batches of 100).
    // Their ids are UUIDv7 as the engine makes them (a millisecond timestamp, then random
    // bits), created a second apart in deadline order; `TOLLGATE_BENCH_RANDOM_IDS=1`
    // fills with random (v4) ids instead, which scatters every claimed row over its own
    // index pages (the worst case).
    let id_expr = if std::env::var("TOLLGATE_BENCH_RANDOM_IDS").is_ok_and(|v| v == "1") {
        "gen_random_uuid()".to_owned()
    } else {
        "(lpad(to_hex((extract(epoch FROM started_at) * 1000)::bigint + n * 1000), 12, '0') || '7' \
         || substr(md5(n::text), 1, 3) || '8' || substr(md5(n::text), 4, 15))::uuid"
            .to_owned()
    };
    println!("\nfilling 1,000,000 paused executions ...");
    let w = workflow(&dyn_store, "scale", "1", "bench").await;
    let (template, _) = paused_at_approval(&dyn_store, &w, 1, Some(t0())).await;
    let fill = Instant::now();
    sqlx::query(&format!(
        "INSERT INTO executions SELECT {id_expr}, workflow_id, workflow_key, workflow_version, snapshot_id, status, result, trigger_event, \
         trigger_payload, context, cursor, visits, steps_run, version, lease_owner, lease_expires_at, gate - 'approval_id', gate_reason, \
         gate_deadline + make_interval(secs => n - 1000), gate_event, NULL, paused_at + make_interval(secs => n), wake, pause_requested, deadline, \
         resume_count, last_resumed_at, started_at, completed_at, updated_at, error, requested_by, consumed_events, commit_token \
         FROM executions, generate_series(1, 999999) AS n WHERE id = $1",
    ))
    .bind(template.id)
    .execute(&pool)
    .await
    .unwrap();
    // The table as it would be after sitting there: vacuumed and analyzed by autovacuum,
    // its pages checkpointed. Straight after the bulk insert, the first statements would
    // instead pay for setting hint bits and for writing out the fill's dirty buffers.
    for maintenance in ["VACUUM ANALYZE executions", "CHECKPOINT"] {
        sqlx::query(maintenance).execute(&pool).await.unwrap();
    }
    println!("  filled in {:.1} s", fill.elapsed().as_secs_f64());
    let now = t0();
    // A worker claims batch after batch: the first claim on a connection also prepares
    // the statement (parse, plan); the steady state is the median of the next nine.
    let mut times = Vec::new();
    for batch in 0..10 {
        let (claimed, took) = timed(
            &format!("claim due timers, batch {} of 100", batch + 1),
            dyn_store.claim_due_gates(
                now,
                &lease("bench", now + chrono::TimeDelta::minutes(5)),
                100,
            ),
        )
        .await;
        assert_eq!(claimed.unwrap().len(), 100);
        times.push(took);
    }
    let mut steady = times[1..].to_vec();
    steady.sort();
    println!(
        "  claim due timers (100 among 1,000,000): first {:.2} ms, then median {:.2} ms, max {:.2} ms",
        times[0].as_secs_f64() * 1000.0,
        steady[steady.len() / 2].as_secs_f64() * 1000.0,
        steady[steady.len() - 1].as_secs_f64() * 1000.0,
    );
    let _ = dyn_store.list_gated(&PageRequest::first(50)).await; // warm the cache
    let (first, _) = timed(
        "list paused, first page (50)",
        dyn_store.list_gated(&PageRequest::first(50)),
    )
    .await;
    let first = first.unwrap();
    // A deep page: the cursor of the 500,000th paused execution.
    let deep_row = sqlx::query("SELECT paused_at, id FROM executions WHERE status IN ('paused', 'waiting') ORDER BY paused_at, id OFFSET 500000 LIMIT 1").fetch_one(&pool).await.unwrap();
    let at: chrono::DateTime<chrono::Utc> = deep_row.get(0);
    let id: uuid::Uuid = deep_row.get(1);
    let cursor =
        tollgate_store::encode_cursor(&[&at.timestamp_micros().to_string(), &id.to_string()]);
    let _ = dyn_store
        .list_gated(&PageRequest::after(50, cursor.clone()))
        .await;
    let (deep, _) = timed(
        "list paused, page after item 500,000 (cursor)",
        dyn_store.list_gated(&PageRequest::after(50, cursor)),
    )
    .await;
    assert_eq!(first.items.len(), 50);
    assert_eq!(deep.unwrap().items.len(), 50);
    let (_, _) = timed(
        "claim expired leases (a batch of 100 due)",
        dyn_store.claim_expired_leases(now, &lease("bench", now), 100),
    )
    .await;

    // Server-side time of the whole claim statement (200 more due), rolled back.
    {
        let mut tx = pool.begin().await.unwrap();
        let sql = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) WITH due AS (SELECT id FROM executions WHERE status IN ('paused', 'waiting') AND gate_deadline <= $1 ORDER BY gate_deadline LIMIT 100 FOR UPDATE SKIP LOCKED), \
            upd AS (UPDATE executions e SET status = 'running', lease_owner = 'x', lease_expires_at = $1, version = e.version + 1, updated_at = $1, resume_count = e.resume_count + 1, last_resumed_at = $1, \
            wake = jsonb_build_object('kind', 'wait_timeout', 'at', $1::timestamptz) FROM due WHERE e.id = due.id RETURNING e.*), \
            audited AS (INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) SELECT gen_random_uuid(), id, 'timer', NULL, '{}'::jsonb, $1, $1, 'resumed', NULL FROM upd RETURNING 1) \
            SELECT upd.*, (SELECT count(*) FROM audited) FROM upd";
        let plan: Vec<String> = sqlx::query(sql)
            .bind(now + chrono::TimeDelta::seconds(300))
            .fetch_all(&mut *tx)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect();
        println!("  the claim statement (100 rows, rolled back):");
        for line in &plan {
            println!("    {line}");
        }
        tx.rollback().await.unwrap();
    }
    explain(&pool, &format!("SELECT id FROM executions WHERE status IN ('paused', 'waiting') AND gate_deadline <= '{}' ORDER BY gate_deadline LIMIT 100 FOR UPDATE SKIP LOCKED", now.to_rfc3339())).await;
    explain(&pool, "SELECT * FROM executions WHERE status IN ('paused', 'waiting') ORDER BY paused_at, id LIMIT 51").await;
    explain(&pool, &format!("SELECT * FROM executions WHERE status IN ('paused', 'waiting') AND (paused_at, id) > ('{}', '{id}') ORDER BY paused_at, id LIMIT 51", at.to_rfc3339())).await;
    explain(&pool, &format!("SELECT id FROM executions WHERE status = 'running' AND lease_expires_at <= '{}' ORDER BY lease_expires_at LIMIT 100 FOR UPDATE SKIP LOCKED", now.to_rfc3339())).await;

    pool.close().await;
    sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}
