//! Store-level throughput on SQLite: step commits and approval decide+claim, at
//! concurrency 1 and 32 (target: ≥ 5,000 step commits/s with synchronous=NORMAL).
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use tollgate_model::records::{DecisionKind, StepStatus};
use tollgate_sqlite::{Durability, SqliteOptions, SqliteStore};
use tollgate_store::testkit::{
    commit, decision, lease, manager, paused_at_approval, running, step_record, t0, workflow,
};
use tollgate_store::{Store, Transition};

fn open(runtime: &tokio::runtime::Runtime, durability: Durability) -> Arc<dyn Store> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sqlite-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.db", uuid::Uuid::now_v7()));
    let options = SqliteOptions {
        durability,
        ..SqliteOptions::new(path)
    };
    Arc::new(runtime.block_on(SqliteStore::open(&options)).unwrap())
}

/// `total` step commits spread over `concurrency` tasks, each on its own execution.
async fn step_commits(store: Arc<dyn Store>, concurrency: u64, total: u64) -> Duration {
    let w = workflow(
        &store,
        &format!("bench-{}", uuid::Uuid::now_v7()),
        "1",
        "bench",
    )
    .await;
    let mut executions = Vec::new();
    for i in 0..concurrency {
        executions.push(running(&store, &w, &format!("w{i}")).await);
    }
    let per_task = total.div_ceil(concurrency);
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
    start.elapsed()
}

/// `total` executions paused at approvals, then decided by `concurrency` deciders.
async fn decide_claims(store: Arc<dyn Store>, concurrency: u64, total: u64) -> Duration {
    let w = workflow(
        &store,
        &format!("bench-{}", uuid::Uuid::now_v7()),
        "1",
        "bench",
    )
    .await;
    let mut approvals = Vec::new();
    for _ in 0..total {
        approvals.push(paused_at_approval(&store, &w, 1, None).await.1.id);
    }
    let chunks: Vec<Vec<uuid::Uuid>> = approvals
        .chunks(total.div_ceil(concurrency) as usize)
        .map(<[_]>::to_vec)
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|ids| {
            let store = store.clone();
            tokio::spawn(async move {
                for id in ids {
                    let d = store
                        .decide(
                            id,
                            decision("mia", DecisionKind::Approve),
                            &manager("mia"),
                            &lease("api", t0()),
                            t0(),
                            None,
                        )
                        .await
                        .unwrap();
                    assert!(d.claimed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    // Single-threaded, like each of the worker runtimes an actix-web server runs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("sqlite");
    group.sample_size(10);
    for (name, durability) in [("normal", Durability::Normal), ("full", Durability::Full)] {
        for concurrency in [1u64, 32] {
            group.throughput(Throughput::Elements(1));
            group.bench_function(format!("step_commit/{name}/c{concurrency}"), |b| {
                b.iter_custom(|iters| {
                    let store = open(&runtime, durability);
                    runtime.block_on(step_commits(store, concurrency, iters.max(concurrency)))
                });
            });
        }
    }
    for concurrency in [1u64, 32] {
        group.bench_function(format!("decide_claim/normal/c{concurrency}"), |b| {
            b.iter_custom(|iters| {
                let store = open(&runtime, Durability::Normal);
                runtime.block_on(decide_claims(store, concurrency, iters.max(concurrency)))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
