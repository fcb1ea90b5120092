//! The "approval workload" load driver (issue: API performance).
//!
//! Starts the release `tollgate-api` binary as a child process (embedded worker on) on
//! SQLite and on PostgreSQL, creates a condition → approval → action workflow, then:
//!
//! - phase A: `N` `POST /events` at concurrency `C`, timed until all `N` executions are
//!   paused at the approval (read from `/metrics`);
//! - phase B: one decision per execution (90 % approve, 10 % reject) with `?wait=true`
//!   at concurrency `C`; decisions per second, and per decision the latency from sending
//!   it to the answer that the execution is `completed` (p50/p95/p99).
//!
//! The `webhook` variant puts a side effect after the approval — a `webhook` step that
//! POSTs to a receiver inside this driver, which answers at once — the shape of a real
//! approval (the refund is paid once approved). The driver checks that the receiver got
//! exactly one call per approved execution.
//!
//! The `notify` variant measures the outbox instead: the approval step queues a message
//! to the signed `webhook` channel (`"notify": [{"channel": "webhook"}]`, pointed at the
//! driver's receiver), committed with each gate. Phase A then also times how long after
//! its start the receiver has all `N` messages (the embedded worker claims and sends
//! them in batches of 50), and checks that it got each once.
//!
//! Settings (env): `TOLLGATE_BENCH_N` (10000), `TOLLGATE_BENCH_CONCURRENCY` (32),
//! `TOLLGATE_BENCH_VARIANTS` (`plain,webhook,notify`),
//! `TOLLGATE_BENCH_BACKENDS` (`sqlite,postgres`), `TOLLGATE_BENCH_API_BIN` (another
//! build of the server), `TOLLGATE_BENCH_DATABASE_URL`
//! (`postgres://postgres@127.0.0.1:5432/postgres`; a fresh database is created in it).
//!
//! History (env, PostgreSQL only): `TOLLGATE_BENCH_HISTORY=H` fills the database with
//! `H` executions that ended two days ago (each with its step records, copied from a
//! real one), vacuumed as a long-lived database's history is, before the workload, so
//! its figures can be compared with an empty database; `TOLLGATE_BENCH_PURGE=1` starts
//! the server with `--retention 1d`, so that it deletes that history in batches (of 500,
//! looking again every second) while the workload runs.
//!
//! Phase B decides the paused executions in a fixed shuffled order (by a hash of the
//! approval id), as people's decisions arrive: not in the order they were started.
//! `TOLLGATE_BENCH_ORDER=listed` decides them in the inbox's order instead (newest
//! first), as an approver working down the list or a bulk decision does; the line then
//! says `decided in listed order`.
//!
//! Scale (env): `TOLLGATE_BENCH_DECISIONS=K` decides only the first `K` of the `N` paused
//! executions in that order (a million can be paused to measure memory without deciding
//! them all). `TOLLGATE_BENCH_SETTLE=S` waits `S` seconds between the phases, so that
//! what phase A left behind (checkpoints, autovacuum) is over before the decisions are
//! timed; as phase B begins the driver prints `phase B begins (server pid P)` to stderr,
//! for a profiler to attach to.
//! The server's resident memory is printed with `N` paused and at the end, each two
//! seconds after its phase (once the phase's own buffers are gone).
//!
//! Counts (env): `TOLLGATE_BENCH_COUNTS=1` adds, per start and per decision, the SQL
//! statements (with `TOLLGATE_BENCH_SERVER_LOG` set and `TOLLGATE_BENCH_LOG_LEVEL`
//! including `sqlx::query=debug`), the write transactions, the `fsync`/`fdatasync`
//! calls of the whole machine (under `perf stat`, when `perf` is installed and
//! allowed), PostgreSQL's WAL records, bytes and syncs, and the bytes the server and
//! the database processes wrote to storage.
//!
//! Each line also prints the host's speed: how long a fixed piece of JSON work like the
//! server's takes on it (`reference work`, measured before the server starts), so that
//! figures from hosts of different speed can be told apart.
//!
//! Diagnostics (env): `TOLLGATE_BENCH_TRACE=FILE` writes each decision of phase B as
//! "ms since the phase began, latency ms" (where in the phase the slow ones were);
//! `TOLLGATE_BENCH_SERVER_LOG=FILE` keeps the server's log there, at the level
//! `TOLLGATE_BENCH_LOG_LEVEL` (`error`; `info` logs every request with its duration).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::fmt::Write as _;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::ConnectOptions;

use support::{
    each_backend, env_or, gauge, pending_approvals, percentile, post, reference_work_ms, rss_mib,
    start, Counts, CpuMeter,
};

/// A receiver for the webhook variant: answers every request `200 {}` at once, on its
/// own thread and runtime (so that it takes nothing from the driver's), and counts them.
struct Receiver {
    url: String,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    fn start() -> Self {
        use actix_web::{web, App, HttpResponse, HttpServer};
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/paid", listener.local_addr().unwrap());
        let counted = calls.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                HttpServer::new(move || {
                    let counted = counted.clone();
                    // It reads the body, as a real receiver does: actix closes a
                    // connection whose request body was left unread, which would make
                    // the server open a new connection for every call.
                    App::new().default_service(web::to(move |_body: web::Bytes| {
                        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        async { HttpResponse::Ok().json(json!({})) }
                    }))
                })
                .workers(1)
                .listen(listener)
                .unwrap()
                .run()
                .await
                .unwrap();
            });
        });
        Self { url, calls }
    }
}

/// What follows the approval, or what the gate sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// Only side-effect-free steps.
    Plain,
    /// A `webhook` step after the approval.
    Webhook,
    /// The approval queues a notification to the `webhook` channel.
    Notify,
}

async fn run(label: &str, database_url: Option<&str>, n: usize, c: usize, variant: Variant) {
    let webhook = variant == Variant::Webhook;
    let history: usize = if database_url.is_some() {
        env_or("TOLLGATE_BENCH_HISTORY", 0)
    } else {
        0
    };
    let purge = history > 0 && env_or("TOLLGATE_BENCH_PURGE", 0) == 1;
    let mut extra: Vec<String> = if purge {
        ["--retention", "1d", "--retention-interval", "1s"]
            .map(str::to_owned)
            .to_vec()
    } else {
        Vec::new()
    };
    let receiver = (variant != Variant::Plain).then(Receiver::start);
    let config = tempfile::NamedTempFile::new().unwrap();
    if let (Variant::Notify, Some(receiver)) = (variant, &receiver) {
        std::fs::write(
            config.path(),
            json!({"channels": {"webhook": {"webhook_url": receiver.url, "signing_secret": "whsec-bench"}}})
                .to_string(),
        )
        .unwrap();
        extra.push("--config".into());
        extra.push(config.path().display().to_string());
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let reference = reference_work_ms();
    let server = start(database_url, &extra).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(c)
        .build()
        .unwrap();
    let base = server.base.clone();
    let admin = server.admin.clone();
    let approved_next = if webhook { "pay" } else { "ok" };
    let mut steps = vec![
        json!({"id": "check", "type": "condition", "condition": {"field": "total", "operator": "gt", "value": 10000},
               "on_true": "approve", "on_false": "ok"}),
        if variant == Variant::Notify {
            json!({"id": "approve", "type": "approval",
                   "approval": {"approvers": {"role": "sales_manager"}, "notify": [{"channel": "webhook"}]},
                   "on_approve": approved_next, "on_reject": "no"})
        } else {
            json!({"id": "approve", "type": "approval", "approval": {"approvers": {"role": "sales_manager"}},
                   "on_approve": approved_next, "on_reject": "no"})
        },
        json!({"id": "ok", "type": "action", "action": "allow"}),
        json!({"id": "no", "type": "action", "action": "block"}),
    ];
    if let (Variant::Webhook, Some(receiver)) = (variant, &receiver) {
        steps.push(json!({"id": "pay", "type": "execute", "next": "ok",
            "execute": [{"type": "webhook", "url": receiver.url, "method": "POST",
                         "body": {"order": "{{order_id}}", "amount": "{{total}}"}, "timeout": "10s"}]}));
    }
    let (s, b) = post(
        &client,
        format!("{base}/api/v1/workflows"),
        &admin,
        json!({
        "workflow_id": "approval_workload", "version": "1",
        "trigger": {"type": "event", "event": "order.created"},
        "steps": steps}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let label = match variant {
        Variant::Plain => label.to_owned(),
        Variant::Webhook => format!("{label} + webhook after the approval"),
        Variant::Notify => format!("{label} + a notification queued at the gate"),
    };
    let (_, shop) = post(
        &client,
        format!("{base}/api/v1/api-keys"),
        &admin,
        json!({"name": "shop", "roles": ["service"]}),
    )
    .await;
    let shop = Arc::new(shop["key"].as_str().unwrap().to_owned());
    let (_, manager) = post(
        &client,
        format!("{base}/api/v1/api-keys"),
        &admin,
        json!({"name": "manager", "roles": ["sales_manager"]}),
    )
    .await;
    let manager = Arc::new(manager["key"].as_str().unwrap().to_owned());
    let label = match (history, purge) {
        (0, _) => label,
        (_, false) => format!("{label} with {history} ended executions in the tables"),
        (_, true) => format!("{label} with {history} ended executions being purged"),
    };
    let before = match database_url {
        Some(url) if history > 0 => {
            fill_history(&client, &base, &shop, url, history).await;
            count_executions(url).await
        }
        _ => 0,
    };

    // Phase A: starts.
    let counting = Counts::enabled();
    let listed_order = std::env::var("TOLLGATE_BENCH_ORDER").as_deref() == Ok("listed");
    let counts_a = if counting {
        Some(Counts::start(server.child.id(), &base, database_url).await)
    } else {
        None
    };
    let cpu_a = CpuMeter::start(server.child.id());
    let began = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(c, |i| {
            let client = client.clone();
            let base = base.clone();
            let shop = shop.clone();
            async move {
                let (s, _) = post(&client, format!("{base}/api/v1/events"), &shop,
                    json!({"event_type": "order.created", "payload": {"total": 20000 + i, "order_id": i}})).await;
                assert_eq!(s, 202);
            }
        })
        .await;
    let accepted = began.elapsed();
    while gauge(&client, &base, "paused").await < n as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_paused = began.elapsed();
    let cpu_a = cpu_a.report(n, all_paused, "start");
    // Memory once the phase's requests and their buffers are gone: what holding the
    // paused executions costs, not the burst that made them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_paused = rss_mib(server.child.id());
    let counts_a = match counts_a {
        Some(counts) => format!(", {}", counts.report(n, "start").await),
        None => String::new(),
    };
    let mut delivered = String::new();
    if let (Variant::Notify, Some(receiver)) = (variant, &receiver) {
        let calls = || receiver.calls.load(std::sync::atomic::Ordering::Relaxed);
        while calls() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let all_sent = began.elapsed();
        // Each message once: nothing more arrives after the last claim settles.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(calls(), n, "notifications received");
        delivered = format!(
            ", all {n} notifications received after {:.2} s = {:.0} messages/s ({:.2} s after the last pause)",
            all_sent.as_secs_f64(),
            n as f64 / all_sent.as_secs_f64(),
            (all_sent.saturating_sub(all_paused)).as_secs_f64()
        );
    }

    // The approval ids, paged (newest first), then by default put in a fixed order that
    // has nothing to do with when they were made: in listed order each batch of
    // decisions finds its executions' rows on neighbouring pages, which decisions
    // arriving one by one from people do not. `TOLLGATE_BENCH_DECISIONS` decides only
    // the first ones (a million paused executions need not all be decided to measure
    // the decisions).
    let mut ids = pending_approvals(&client, &base, &admin).await;
    assert_eq!(ids.len(), n);
    if !listed_order {
        ids.sort_by_cached_key(|id| uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id.as_bytes()));
    }
    let decisions: usize = env_or("TOLLGATE_BENCH_DECISIONS", n).min(n);
    ids.truncate(decisions);

    let settle: u64 = env_or("TOLLGATE_BENCH_SETTLE", 0);
    tokio::time::sleep(Duration::from_secs(settle)).await;
    eprintln!("phase B begins (server pid {})", server.child.id());
    // Phase B: decisions.
    let counts_b = if counting {
        Some(Counts::start(server.child.id(), &base, database_url).await)
    } else {
        None
    };
    let cpu_b = CpuMeter::start(server.child.id());
    let began = Instant::now();
    let latencies: Vec<(Duration, Duration)> = stream::iter(ids.into_iter().enumerate())
        .map(|(i, id)| {
            let client = client.clone();
            let base = base.clone();
            let manager = manager.clone();
            async move {
                let (verb, body) = if i % 10 == 9 {
                    ("reject", json!({"reason": "load test"}))
                } else {
                    ("approve", json!({}))
                };
                let sent = Instant::now();
                let (s, b) = post(
                    &client,
                    format!("{base}/api/v1/approvals/{id}/{verb}?wait=true"),
                    &manager,
                    body,
                )
                .await;
                let took = sent.elapsed();
                assert_eq!(s, 200, "{b}");
                assert_eq!(b["execution"]["status"], "completed", "{b}");
                (sent - began, took)
            }
        })
        .buffer_unordered(c)
        .collect()
        .await;
    let decided = began.elapsed();
    let cpu_b = cpu_b.report(decisions, decided, "decision");
    let counts_b = match counts_b {
        Some(counts) => format!(", {}", counts.report(decisions, "decision").await),
        None => String::new(),
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_end = rss_mib(server.child.id());
    // Every answer said `completed`; nothing may be left in flight either (but the
    // executions left undecided). The gauge's terminal counts are refreshed once a
    // minute, its in-flight ones on every scrape.
    for (status, left) in [("running", 0), ("paused", n - decisions), ("waiting", 0)] {
        assert_eq!(gauge(&client, &base, status).await, left as u64, "{status}");
    }
    // Exactly one side effect per approved execution.
    if let (Variant::Webhook, Some(receiver)) = (variant, &receiver) {
        let approved = decisions - decisions / 10;
        assert_eq!(
            receiver.calls.load(std::sync::atomic::Ordering::Relaxed),
            approved,
            "webhook calls"
        );
    }
    if let Ok(path) = std::env::var("TOLLGATE_BENCH_TRACE") {
        let mut text = String::new();
        for (at, took) in &latencies {
            let (at, took) = (at.as_secs_f64() * 1e3, took.as_secs_f64() * 1e3);
            writeln!(text, "{at:.3} {took:.3}").unwrap();
        }
        std::fs::write(path, text).unwrap();
    }
    if let (true, Some(url)) = (purge, database_url) {
        let left = count_executions(url).await;
        println!(
            "history purged while the workload ran: {} of {history} ended executions",
            (before + n as i64 - left).max(0)
        );
    }
    let mut sorted: Vec<Duration> = latencies.iter().map(|(_, t)| *t).collect();
    sorted.sort();
    let order = if listed_order {
        " decided in listed order"
    } else {
        ""
    };
    println!(
        "approval workload {label}: N={n} C={c}, host reference work {reference:.0} ms | phase A: {:.0} starts/s accepted ({:.2} s), all paused after {:.2} s = {:.0} starts/s{delivered}, {cpu_a}{counts_a}; server RSS with {n} paused {rss_paused:.1} MiB | \
         phase B: {decisions} decisions{order}, {:.0}/s ({:.2} s), {cpu_b}{counts_b}; decision→completed p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server RSS at the end {rss_end:.1} MiB",
        n as f64 / accepted.as_secs_f64(),
        accepted.as_secs_f64(),
        all_paused.as_secs_f64(),
        n as f64 / all_paused.as_secs_f64(),
        decisions as f64 / decided.as_secs_f64(),
        decided.as_secs_f64(),
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.95),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0),
    );
}

/// `h` executions that ended two days ago, each with the step records of a real one,
/// written straight into the database in chunks (the server never saw them start).
async fn fill_history(client: &reqwest::Client, base: &str, shop: &str, url: &str, h: usize) {
    let (s, b) = post(
        client,
        format!("{base}/api/v1/events?wait=true"),
        shop,
        json!({"event_type": "order.created", "payload": {"total": 5, "order_id": "history"}}),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let template = uuid::Uuid::parse_str(b["started"][0].as_str().unwrap()).unwrap();
    let mut conn: PgConnection = url
        .parse::<PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .unwrap();
    let began = Instant::now();
    let mut done = 0;
    while done < h {
        let chunk = (h - done).min(100_000) as i64;
        sqlx::query(
            // Ids are UUIDv7 of the start they are given (as the engine makes them), so
            // the history sits in the indexes where real history would: before the new.
            "WITH new AS (INSERT INTO executions SELECT (lpad(to_hex((extract(epoch FROM t.at) * 1000)::bigint), 12, '0') || '7' \
             || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid, workflow_id, workflow_key, \
             workflow_version, snapshot_id, status, result, \
             trigger_event, trigger_payload, context, cursor, visits, steps_run, version, lease_owner, lease_expires_at, gate, gate_reason, \
             gate_deadline, gate_event, gate_approval_id, paused_at, wake, pause_requested, deadline, resume_count, last_resumed_at, \
             t.at, t.at + (completed_at - started_at), \
             updated_at, error, requested_by, consumed_events, commit_token FROM executions, generate_series($3 + 1, $3 + $2) AS n, \
             LATERAL (SELECT started_at - interval '2 days' - make_interval(secs => n) AS at) AS t WHERE id = $1 RETURNING id, started_at) \
             INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, \
             warnings, started_at, completed_at, error) \
             SELECT (lpad(to_hex((extract(epoch FROM new.started_at) * 1000)::bigint), 12, '0') || '7' \
             || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid, new.id, s.step_id, s.step_type, \
             s.parent_step_id, s.iteration, s.visit, s.attempt, s.status, s.input, \
             s.output, s.warnings, new.started_at, new.started_at, s.error FROM new, step_records s WHERE s.execution_id = $1",
        )
        .bind(template)
        .bind(chunk)
        .bind(done as i64)
        .execute(&mut conn)
        .await
        .unwrap();
        done += chunk as usize;
    }
    let written = began.elapsed();
    let vacuum = Instant::now();
    // A database that has held its history for a while has had it vacuumed; a run right
    // after a bulk load would otherwise measure autovacuum's first pass over it.
    for table in ["executions", "step_records"] {
        sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    println!(
        "history: {h} ended executions written in {:.1} s, vacuumed in {:.1} s",
        written.as_secs_f64(),
        vacuum.elapsed().as_secs_f64()
    );
}

async fn count_executions(url: &str) -> i64 {
    let mut conn: PgConnection = url
        .parse::<PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM executions")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: then only
    // a smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let n: usize = env_or("TOLLGATE_BENCH_N", if benching { 10_000 } else { 50 });
    let c: usize = env_or("TOLLGATE_BENCH_CONCURRENCY", 32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let variants =
        std::env::var("TOLLGATE_BENCH_VARIANTS").unwrap_or_else(|_| "plain,webhook,notify".into());
    runtime.block_on(async {
        for variant in variants.split(',') {
            let variant = match variant.trim() {
                "plain" => Variant::Plain,
                "webhook" => Variant::Webhook,
                "notify" => Variant::Notify,
                other => panic!("unknown variant `{other}` in TOLLGATE_BENCH_VARIANTS"),
            };
            each_backend(async |label, url| run(label, url, n, c, variant).await).await;
        }
    });
}
