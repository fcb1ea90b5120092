//! The interpreter on the in-memory store: a 10-step condition/action workflow (target
//! ≥ 100,000 steps/s on one core) and a full approval cycle (start → pause → decide →
//! complete; target ≥ 20,000/s).
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::json;
use tollgate_engine::{Engine, StartRequest};
use tollgate_model::records::{snapshot_id, Decision, DecisionKind, Principal, Workflow};
use tollgate_store::{MemoryStore, Store};

async fn deploy(store: &Arc<dyn Store>, doc: serde_json::Value) -> Workflow {
    let definition = Arc::new(tollgate_model::load(&doc).unwrap().definition);
    let now = chrono::Utc::now();
    store
        .create_workflow(Workflow {
            id: uuid::Uuid::now_v7(),
            snapshot_id: snapshot_id(&definition),
            enabled: true,
            definition,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap()
}

fn ten_steps() -> serde_json::Value {
    let mut steps = Vec::new();
    for i in 0..5 {
        steps.push(json!({"id": format!("c{i}"), "type": "condition",
            "condition": {"and": [{"field": "order.total", "operator": "gte", "value": 100}, {"field": "customer.tier", "operator": "in", "value": ["gold", "silver"]}]},
            "on_true": format!("a{i}"), "on_false": format!("a{i}")}));
        let next = if i < 4 {
            json!(format!("c{}", i + 1))
        } else {
            serde_json::Value::Null
        };
        let mut action = json!({"id": format!("a{i}"), "type": "action", "action": if i % 2 == 0 { "allow" } else { "block" }});
        if !next.is_null() {
            action["next"] = next;
        }
        steps.push(action);
    }
    json!({"workflow_id": "ten", "version": "1", "trigger": {"type": "event", "event": "bench"}, "steps": steps})
}

fn approval() -> serde_json::Value {
    json!({"workflow_id": "cycle", "version": "1", "trigger": {"type": "event", "event": "bench"},
           "steps": [{"id": "check", "type": "condition", "condition": {"field": "order.total", "operator": "gte", "value": 100}, "on_true": "gate", "on_false": "ok"},
                     {"id": "gate", "type": "approval", "approval": {"approvers": {"role": "manager"}, "timeout": "1d"}, "on_approve": "ok"},
                     {"id": "ok", "type": "action", "action": "allow"}]})
}

fn start(workflow: &Workflow) -> StartRequest {
    StartRequest {
        workflow: workflow.clone(),
        trigger_event: "bench".into(),
        payload: json!({"order": {"id": "o-1", "total": 1200, "lines": [1, 2, 3]}, "customer": {"tier": "gold", "id": "c-9"}}),
        event_id: None,
        event_key: None,
        source: None,
        requested_by: Some("shop".into()),
    }
}

/// A fresh store and engine with both workflows deployed.
fn setup(runtime: &tokio::runtime::Runtime) -> (Arc<dyn Store>, Engine, Workflow, Workflow) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::builder(store.clone()).build().unwrap();
    let ten = runtime.block_on(deploy(&store, ten_steps()));
    let cycle = runtime.block_on(deploy(&store, approval()));
    (store, engine, ten, cycle)
}

async fn approval_cycle(store: &Arc<dyn Store>, engine: &Engine, cycle: &Workflow) {
    let paused = engine.start(start(cycle)).await.unwrap();
    let approval_id = paused.gate.as_ref().and_then(|g| g.approval_id).unwrap();
    let now = engine.clock().now();
    let manager = Principal {
        subject: "mia".into(),
        roles: vec!["manager".into()],
    };
    let decision = Decision {
        decided_by: "mia".into(),
        decision: DecisionKind::Approve,
        reason: None,
        data: json!({}),
        decided_at: now,
        channel: None,
        delegate: None,
    };
    let decided = store
        .decide(approval_id, decision, &manager, &engine.claim(), now, None)
        .await
        .unwrap();
    let done = engine.advance(decided.execution).await.unwrap();
    assert_eq!(done.status, tollgate_model::ExecutionStatus::Completed);
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("engine");

    // Steady state: each batch of 100 executions gets a fresh store (built and dropped
    // outside the timing), so the figure is the engine's cost, not that of a store grown
    // to millions of records.
    group.throughput(Throughput::Elements(10 * 100));
    group.bench_function("ten_step_workflow_x100", |b| {
        b.iter_batched(
            || setup(&runtime),
            |(store, engine, ten, cycle)| {
                runtime.block_on(async {
                    for _ in 0..100 {
                        let done = engine.start(start(&ten)).await.unwrap();
                        assert_eq!(done.steps_run, 10);
                    }
                });
                (store, engine, ten, cycle)
            },
            BatchSize::PerIteration,
        );
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("approval_cycle_x100", |b| {
        b.iter_batched(
            || setup(&runtime),
            |(store, engine, ten, cycle)| {
                runtime.block_on(async {
                    for _ in 0..100 {
                        approval_cycle(&store, &engine, &cycle).await;
                    }
                });
                (store, engine, ten, cycle)
            },
            BatchSize::PerIteration,
        );
    });

    // One store for the whole run: it keeps every record, as a long-lived embedded
    // store would; allocation and page faults of the growing heap show up here.
    let (store, engine, ten, cycle) = setup(&runtime);
    group.throughput(Throughput::Elements(10));
    group.bench_function("ten_step_workflow_growing_store", |b| {
        b.to_async(&runtime).iter(|| async {
            let done = engine.start(start(&ten)).await.unwrap();
            assert_eq!(done.steps_run, 10);
        });
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("approval_cycle_growing_store", |b| {
        b.to_async(&runtime)
            .iter(|| approval_cycle(&store, &engine, &cycle));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
