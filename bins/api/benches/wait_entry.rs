//! Entering a wait with many events of its type kept (issue: waits at scale, "entering a
//! wait with 1,000,000 retained events of its type").
//!
//! Starts the release `tollgate-api` binary (embedded worker on) and a workflow whose
//! executions stop at an approval, then wait for `payment.settled` with a `match` on the
//! order id (a correlation key). `N` executions start and stop at the approval. Then `R`
//! payments are stored straight into the database, received after the executions
//! started — every one a candidate early event for every wait — among them one per
//! execution's order, spread through the others. The driver waits until the worker
//! loop has keyed them all, then approves each execution with `?wait=true`: the answer
//! comes once the execution has entered its wait, found its payment among the `R` and
//! completed. Reported: p50/p99 of those decisions and decisions per second, for `R = 0`
//! (only the `N` payments) and for the `R` asked, on each backend; then the plan and
//! timing of the keyed probe (PostgreSQL: `EXPLAIN ANALYZE`).
//!
//! Settings (env): `TOLLGATE_BENCH_RETAINED` (`0,1000000`), `TOLLGATE_BENCH_EXECUTIONS`
//! (500), `TOLLGATE_BENCH_CONCURRENCY` (4), `TOLLGATE_BENCH_BACKENDS`
//! (`sqlite,postgres`), `TOLLGATE_BENCH_DATABASE_URL`, `TOLLGATE_BENCH_KEEP_DATABASE`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use sqlx::{ConnectOptions, Connection, Row};

use support::{each_backend, env_or, gauge, pending_approvals, percentile, post, start, CpuMeter};

/// One connection to the server's database, behind its back.
enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Db {
    async fn open(server: &support::Server, url: Option<&str>) -> Self {
        match url {
            Some(url) => Self::Postgres(
                url.parse::<sqlx::postgres::PgConnectOptions>()
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            ),
            None => Self::Sqlite(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(server.data_dir().join("tollgate.db"))
                    .busy_timeout(Duration::from_secs(30))
                    .connect()
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Stores `r` payments received just after `after`, one of them for each of the `n`
    /// orders `o-0 … o-{n-1}`, spread evenly; the others for orders nobody waits for.
    async fn fill(&mut self, r: usize, n: usize, after: chrono::DateTime<chrono::Utc>) {
        let every = (r / n.max(1)).max(1);
        match self {
            Self::Postgres(conn) => {
                sqlx::query(
                    "INSERT INTO events (id, event_id, event_type, payload, source, correlation_id, submitted_by, received_at, started, resumed, delivered) \
                     SELECT gen_random_uuid(), NULL, 'payment.settled', \
                       jsonb_build_object('order_id', CASE WHEN g % $2 = 0 AND g / $2 <= $3 THEN 'o-' || (g / $2 - 1) ELSE 'x-' || g END, 'amount', 10), \
                       NULL, NULL, 'bench', $4::timestamptz + g * interval '1 microsecond', '{}', '{}', true \
                     FROM generate_series(1, $1) AS g",
                )
                .bind(r as i64)
                .bind(every as i64)
                .bind(n as i64)
                .bind(after)
                .execute(&mut *conn)
                .await
                .unwrap();
                sqlx::query("ANALYZE events")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
            }
            Self::Sqlite(conn) => {
                let base = after.timestamp_micros();
                sqlx::query(
                    "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?1) \
                     INSERT INTO events (id, event_id, event_type, payload, source, correlation_id, submitted_by, received_at, started, resumed, delivered) \
                     SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))), \
                       NULL, 'payment.settled', \
                       json_object('order_id', CASE WHEN i % ?2 = 0 AND i / ?2 <= ?3 THEN 'o-' || (i / ?2 - 1) ELSE 'x-' || i END, 'amount', 10), \
                       NULL, NULL, 'bench', ?4 + i, '[]', '[]', 1 FROM g",
                )
                .bind(r as i64)
                .bind(every as i64)
                .bind(n as i64)
                .bind(base)
                .execute(&mut *conn)
                .await
                .unwrap();
            }
        }
    }

    /// Whether the worker loop has keyed every `payment.settled` event stored.
    async fn keyed(&mut self) -> bool {
        match self {
            Self::Postgres(conn) => sqlx::query(
                "SELECT COALESCE((SELECT (keyed_at, keyed_id) >= (SELECT received_at, id FROM events WHERE event_type = 'payment.settled' ORDER BY received_at DESC, id DESC LIMIT 1) \
                 FROM event_shapes WHERE event_type = 'payment.settled'), false) AS done",
            )
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get::<bool, _>("done"),
            Self::Sqlite(conn) => sqlx::query(
                "SELECT COALESCE((SELECT (keyed_at, keyed_id) >= (SELECT received_at, id FROM events WHERE event_type = 'payment.settled' ORDER BY received_at DESC, id DESC LIMIT 1) \
                 FROM event_shapes WHERE event_type = 'payment.settled'), 0) AS done",
            )
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get::<bool, _>("done"),
        }
    }

    /// The keyed probe of one wait, as the store runs it: its plan and timing.
    async fn probe_plan(&mut self) -> String {
        match self {
            Self::Postgres(conn) => {
                let row = sqlx::query(
                    "SELECT shape, hash, received_at FROM event_keys WHERE event_type = 'payment.settled' ORDER BY hash LIMIT 1",
                )
                .fetch_one(&mut *conn)
                .await
                .unwrap();
                let (shape, hash): (String, String) = (row.get("shape"), row.get("hash"));
                let plan: Vec<String> = sqlx::query_scalar(&format!(
                    "EXPLAIN (ANALYZE, BUFFERS) SELECT e.* FROM event_keys k JOIN events e ON e.id = k.event_id \
                     WHERE k.event_type = 'payment.settled' AND k.shape = '{shape}' AND k.hash = '{hash}' \
                       AND k.received_at >= now() - interval '1 day' \
                       AND (k.received_at, k.event_id) <= (now(), 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid) \
                       AND (e.correlation_id IS NULL) ORDER BY k.received_at, k.event_id LIMIT 500"
                ))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
                plan.join("\n")
            }
            Self::Sqlite(conn) => {
                let rows = sqlx::query(
                    "EXPLAIN QUERY PLAN SELECT e.* FROM event_keys k JOIN events e ON e.id = k.event_id \
                     WHERE k.event_type = 'payment.settled' AND k.shape = ? AND k.hash = ? AND k.received_at >= 0 \
                       AND (k.received_at, k.event_id) <= (?, ?) AND e.correlation_id IS NULL \
                     ORDER BY k.received_at, k.event_id LIMIT 500",
                )
                .bind("s")
                .bind("h")
                .bind(i64::MAX)
                .bind("z")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
                rows.iter()
                    .map(|r| r.get::<String, _>("detail"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    }

    async fn close(self) {
        match self {
            Self::Postgres(conn) => conn.close().await.unwrap(),
            Self::Sqlite(conn) => conn.close().await.unwrap(),
        }
    }
}

async fn run(label: &str, url: Option<&str>, retained: usize, n: usize, c: usize) {
    let server = start(url, &[]).await;
    let pid = server.child.id();
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let (status, body) = post(
        &client,
        format!("{base}/api/v1/workflows"),
        &server.admin,
        json!({"workflow_id": "paid", "version": "1",
               "trigger": {"type": "event", "event": "order.placed"},
               "steps": [
                 {"id": "approve", "type": "approval", "approval": {"approvers": {"role": "sales"}}, "on_approve": "pay"},
                 {"id": "pay", "type": "wait", "wait": {"event": "payment.settled",
                   "match": {"field": "event.order_id", "operator": "eq", "value": "{{order_id}}"}},
                  "next": "ship"},
                 {"id": "ship", "type": "action", "action": "allow"}]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let key = |roles: &'static str| {
        let client = client.clone();
        let base = base.clone();
        let admin = server.admin.clone();
        async move {
            let (_, created) = post(
                &client,
                format!("{base}/api/v1/api-keys"),
                &admin,
                json!({"name": roles, "roles": [roles]}),
            )
            .await;
            Arc::new(created["key"].as_str().unwrap().to_owned())
        }
    };
    let shop = key("service").await;
    let sales = key("sales").await;
    stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let (client, base, shop) = (client.clone(), base.clone(), shop.clone());
            async move {
                let (s, b) = post(&client, format!("{base}/api/v1/events"), &shop,
                    json!({"event_type": "order.placed", "payload": {"order_id": format!("o-{i}")}})).await;
                assert_eq!(s, 202, "{b}");
            }
        })
        .await;
    while gauge(&client, &base, "paused").await < n as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut db = Db::open(&server, url).await;
    let fill = Instant::now();
    let total = retained.max(n);
    db.fill(total, n, chrono::Utc::now()).await;
    eprintln!(
        "{label}: {total} payments stored in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    // The worker keys events a delivery grace (30 s) after they arrived.
    let keying = Instant::now();
    while !db.keyed().await {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "{label}: keyed within {:.1} s of storing",
        keying.elapsed().as_secs_f64()
    );
    // A live database's statistics follow its tables (autovacuum, off on the bench host).
    if let Db::Postgres(conn) = &mut db {
        sqlx::query("ANALYZE event_keys")
            .execute(&mut *conn)
            .await
            .unwrap();
    }

    let ids = pending_approvals(&client, &base, &server.admin).await;
    assert_eq!(ids.len(), n);
    let cpu = CpuMeter::start(pid);
    let began = Instant::now();
    let mut latencies: Vec<Duration> = stream::iter(ids)
        .map(|id| {
            let (client, base, sales) = (client.clone(), base.clone(), sales.clone());
            async move {
                let sent = Instant::now();
                let (s, b) = post(
                    &client,
                    format!("{base}/api/v1/approvals/{id}/approve?wait=true"),
                    &sales,
                    json!({}),
                )
                .await;
                let took = sent.elapsed();
                assert_eq!(s, 200, "{b}");
                assert_eq!(
                    b["execution"]["status"], "completed",
                    "the wait found its payment: {b}"
                );
                took
            }
        })
        .buffer_unordered(c)
        .collect()
        .await;
    let wall = began.elapsed();
    latencies.sort();
    let cpu = cpu.report(n, wall, "decision");
    println!(
        "{label}, {} other payments kept: approve → enter the wait → take the early payment → complete: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms; {cpu}",
        total - n,
        n as f64 / wall.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );
    if retained > n {
        println!("{label}: the keyed probe\n{}", db.probe_plan().await);
    }
    db.close().await;
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let levels: Vec<usize> = std::env::var("TOLLGATE_BENCH_RETAINED")
        .unwrap_or_else(|_| {
            if benching {
                "0,1000000".into()
            } else {
                "0,200".into()
            }
        })
        .split(',')
        .map(|l| l.trim().parse().expect("TOLLGATE_BENCH_RETAINED: numbers"))
        .collect();
    let n: usize = env_or("TOLLGATE_BENCH_EXECUTIONS", if benching { 500 } else { 10 });
    let c: usize = env_or("TOLLGATE_BENCH_CONCURRENCY", 4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A fresh database per level: a server on a database another has set up makes no
    // new admin key.
    for &retained in &levels {
        runtime.block_on(each_backend(async |label, url| {
            run(label, url, retained, n, c).await;
        }));
    }
}
