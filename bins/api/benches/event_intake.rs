//! The "waits at scale" load driver (issue: waits at scale).
//!
//! Starts the release `tollgate-api` binary (embedded worker on) on SQLite and on
//! PostgreSQL and creates a workflow whose executions wait for `payment.settled` with a
//! `match` on the order id (`event.order_id == {{order_id}}`: a correlation key). Then,
//! in one run, for each number `W` of executions waiting (filled between measurements by
//! starting more):
//!
//! - `M` `POST /events` of `payment.settled` for orders nobody waits for, at concurrency
//!   `C`: p50/p99 latency and events per second — the cost of storing an event and
//!   finding the waits it may satisfy, which must not grow with `W`;
//! - the server's resident memory.
//!
//! Before each measurement the driver waits 36 s, for the worker's delivery sweep (which
//! offers every event again 30 s after it arrived) to be done with the events sent
//! before. On PostgreSQL it then runs `ANALYZE` (every table), as autovacuum does on a
//! live database (without it the planner keeps its idea of a table it last saw empty:
//! see docs/benchmarks.md).
//!
//! Last, `M` events that each resume one of the waiting executions (found by key among
//! all the others), timed the same way.
//!
//! With `TOLLGATE_BENCH_GATE=first_of` the executions wait at a `first_of` step instead
//! (the payment, the order's cancellation or a 30-day deadline, whichever comes first).
//!
//! Settings (env): `TOLLGATE_BENCH_WAITING` (`0,10000,100000`), `TOLLGATE_BENCH_EVENTS`
//! (2000), `TOLLGATE_BENCH_CONCURRENCY` (8), `TOLLGATE_BENCH_GATE` (`wait`), `TOLLGATE_BENCH_BACKENDS`
//! (`sqlite,postgres`), `TOLLGATE_BENCH_API_BIN` (another build of the server),
//! `TOLLGATE_BENCH_DATABASE_URL` (`postgres://postgres@127.0.0.1:5432/postgres`; a fresh
//! database is created in it; `TOLLGATE_BENCH_KEEP_DATABASE=1` keeps it afterwards, to
//! read the plans of the intake's queries on it).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::json;

use support::{each_backend, env_or, gauge, percentile, post, rss_mib, start, CpuMeter};

/// How long the driver waits before each measurement for the delivery sweep of the
/// events sent before it: the worker's 30 s delivery grace and a few passes.
const SWEEP_SETTLES: Duration = Duration::from_secs(36);

/// Sends `payment.settled` for each order of `orders` at concurrency `c`; returns the
/// latencies, sorted, and the wall time.
async fn settle(
    client: &reqwest::Client,
    base: &str,
    key: &Arc<String>,
    orders: Vec<String>,
    c: usize,
) -> (Vec<Duration>, Duration) {
    let began = Instant::now();
    let mut latencies: Vec<Duration> = stream::iter(orders)
        .map(|order| {
            let client = client.clone();
            let url = format!("{base}/api/v1/events");
            let key = key.clone();
            async move {
                let sent = Instant::now();
                let (s, b) = post(
                    &client,
                    url,
                    &key,
                    json!({"event_type": "payment.settled", "payload": {"order_id": order, "amount": 10}}),
                )
                .await;
                assert_eq!(s, 202, "{b}");
                sent.elapsed()
            }
        })
        .buffer_unordered(c)
        .collect()
        .await;
    let wall = began.elapsed();
    latencies.sort();
    (latencies, wall)
}

fn line(label: &str, latencies: &[Duration], wall: Duration, cpu: &str, rss: f64) -> String {
    format!(
        "{label}: {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms; {cpu}; server RSS {rss:.0} MiB",
        latencies.len() as f64 / wall.as_secs_f64(),
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
    )
}

/// The workflow: its executions wait for their order's payment — at a `wait` step, or
/// (`first_of`) at a `first_of` step that also awaits the order's cancellation and a
/// 30-day deadline.
fn definition(first_of: bool) -> serde_json::Value {
    let paid = json!({"and": [{"field": "event.order_id", "operator": "eq", "value": "{{order_id}}"},
                              {"field": "event.amount", "operator": "gt", "value": 0}]});
    let gate = if first_of {
        json!({"id": "paid", "type": "first_of", "first_of": [
                 {"event": "payment.settled", "match": paid, "next": "ship"},
                 {"event": "order.cancelled", "next": "stop",
                  "match": {"field": "event.order_id", "operator": "eq", "value": "{{order_id}}"}},
                 {"after": "30d", "next": "stop"}]})
    } else {
        json!({"id": "paid", "type": "wait", "wait": {"event": "payment.settled", "match": paid},
               "next": "ship"})
    };
    json!({"workflow_id": "settle", "version": "1",
           "trigger": {"type": "event", "event": "order.placed"},
           "steps": [gate,
                     {"id": "ship", "type": "action", "action": "allow"},
                     {"id": "stop", "type": "action", "action": "block"}]})
}

async fn run(
    label: &str,
    database_url: Option<&str>,
    levels: &[usize],
    (m, c): (usize, usize),
    first_of: bool,
) {
    let label = &if first_of {
        format!("{label}, first_of")
    } else {
        label.to_owned()
    };
    let server = start(database_url, &[]).await;
    let pid = server.child.id();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(c.max(32))
        .build()
        .unwrap();
    let base = server.base.clone();
    let (s, b) = post(
        &client,
        format!("{base}/api/v1/workflows"),
        &server.admin,
        definition(first_of),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (_, shop) = post(
        &client,
        format!("{base}/api/v1/api-keys"),
        &server.admin,
        json!({"name": "shop", "roles": ["service"]}),
    )
    .await;
    let shop = Arc::new(shop["key"].as_str().unwrap().to_owned());

    let mut waiting = 0usize;
    for (round, &level) in levels.iter().enumerate() {
        // Start executions until `level` wait.
        let fill = Instant::now();
        stream::iter(waiting..level)
            .for_each_concurrent(32, |i| {
                let client = client.clone();
                let url = format!("{base}/api/v1/events");
                let shop = shop.clone();
                async move {
                    let (s, b) = post(&client, url, &shop,
                        json!({"event_type": "order.placed", "payload": {"order_id": format!("o-{i}")}})).await;
                    assert_eq!(s, 202, "{b}");
                }
            })
            .await;
        while gauge(&client, &base, "waiting").await < level as u64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if level > waiting {
            eprintln!(
                "{label}: {} executions started and waiting in {:.1} s",
                level - waiting,
                fill.elapsed().as_secs_f64()
            );
        }
        waiting = level;
        // Let the worker's delivery sweep finish with the events sent so far (it offers
        // each event again after the 30 s delivery grace, and marks it delivered), so
        // that the measurement is of the intake alone.
        tokio::time::sleep(SWEEP_SETTLES).await;
        // A live database's statistics follow its tables (autovacuum); measure the
        // intake on them, not on the planner's guesses about a table it last saw empty.
        // (Not at 0: statistics of an empty table, kept while it grows by 100,000 with
        // autovacuum off, slowed the next fill fifteen-fold.)
        if let Some(url) = database_url.filter(|_| level > 0) {
            let mut conn: sqlx::PgConnection = sqlx::ConnectOptions::connect(
                &url.parse::<sqlx::postgres::PgConnectOptions>().unwrap(),
            )
            .await
            .unwrap();
            sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
        }
        // Events for orders nobody waits for.
        let orders = (0..m).map(|i| format!("none-{round}-{i}")).collect();
        let cpu = CpuMeter::start(pid);
        let (latencies, wall) = settle(&client, &base, &shop, orders, c).await;
        let cpu = cpu.report(latencies.len(), wall, "event");
        println!(
            "{}",
            line(
                &format!("{label}, {level} waiting, events nobody waits for"),
                &latencies,
                wall,
                &cpu,
                rss_mib(pid)
            )
        );
    }
    // Events that each resume one waiting execution, found among all the others.
    let m = m.min(waiting);
    let orders = (0..m)
        .map(|i| format!("o-{}", i * (waiting / m.max(1))))
        .collect();
    let cpu = CpuMeter::start(pid);
    let (latencies, wall) = settle(&client, &base, &shop, orders, c).await;
    let cpu = cpu.report(latencies.len(), wall, "event");
    while gauge(&client, &base, "waiting").await > (waiting - m) as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if m > 0 {
        println!(
            "{}",
            line(
                &format!("{label}, {waiting} waiting, events that each resume one"),
                &latencies,
                wall,
                &cpu,
                rss_mib(pid)
            )
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: then only
    // a smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let levels: Vec<usize> = std::env::var("TOLLGATE_BENCH_WAITING")
        .unwrap_or_else(|_| {
            if benching {
                "0,10000,100000".into()
            } else {
                "0,20".into()
            }
        })
        .split(',')
        .map(|l| l.trim().parse().expect("TOLLGATE_BENCH_WAITING: numbers"))
        .collect();
    let m: usize = env_or("TOLLGATE_BENCH_EVENTS", if benching { 2000 } else { 10 });
    let c: usize = env_or("TOLLGATE_BENCH_CONCURRENCY", 8);
    let first_of = match std::env::var("TOLLGATE_BENCH_GATE").as_deref() {
        Ok("first_of") => true,
        Ok("wait") | Err(_) => false,
        Ok(other) => panic!("TOLLGATE_BENCH_GATE: wait or first_of, not {other}"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(each_backend(async |label, url| {
        run(label, url, &levels, (m, c), first_of).await;
    }));
}
