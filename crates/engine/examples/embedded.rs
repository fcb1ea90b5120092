//! The engine's own layer, without the `tollgate` crate: an in-memory store, one approval
//! workflow, run to its gate, decided, and run to the end. No server, no database.
//!
//! Services should use the `tollgate` crate's handle (`docs/embedding.md`), which does
//! this wiring — and the decision rules, events and the worker loop — for them; this
//! example shows what lies underneath.
//!
//! `cargo run -p tollgate-engine --example embedded`

use std::sync::Arc;

use serde_json::json;
use tollgate_engine::{Engine, StartRequest};
use tollgate_model::records::{snapshot_id, Decision, DecisionKind, Principal, Workflow};
use tollgate_store::{MemoryStore, Store};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. A store and an engine. Any `Arc<dyn Store>` works: SQLite, PostgreSQL, memory.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::builder(store.clone()).build()?;

    // 2. A workflow: big orders wait for a sales manager.
    let definition = tollgate_model::load(&json!({
        "workflow_id": "big_orders", "version": "1",
        "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "check", "type": "condition",
             "condition": {"field": "order.total", "operator": "gte", "value": 10000},
             "on_true": "manager", "on_false": "ship"},
            {"id": "manager", "type": "approval",
             "approval": {"approvers": {"role": "sales_manager"}, "reason": "Order {{order.id}} is large", "timeout": "2d"},
             "on_approve": "ship", "on_reject": "refuse"},
            {"id": "ship", "type": "action", "action": "allow"},
            {"id": "refuse", "type": "action", "action": "block"}
        ]
    }))
    .map_err(|report| format!("invalid workflow: {:?}", report.errors))?
    .definition;
    let definition = Arc::new(definition);
    let now = engine.clock().now();
    let workflow = store
        .create_workflow(Workflow {
            id: uuid::Uuid::now_v7(),
            snapshot_id: snapshot_id(&definition),
            enabled: true,
            definition,
            created_at: now,
            updated_at: now,
        })
        .await?;

    // 3. An order arrives; the execution stops at the approval with everything stored.
    let paused = engine
        .start(StartRequest {
            workflow,
            trigger_event: "order.created".into(),
            payload: json!({"order": {"id": "ord-42", "total": 25000}}),
            event_id: None,
            event_key: None,
            source: Some("shop".into()),
            requested_by: Some("shop".into()),
        })
        .await?;
    let approval_id = paused
        .gate
        .as_ref()
        .and_then(|g| g.approval_id)
        .ok_or("expected an approval gate")?;
    let approval = store.get_approval(approval_id).await?;
    println!(
        "execution {} is {} at `{}`: {}",
        paused.id,
        paused.status,
        approval.step_id,
        approval.reason.as_deref().unwrap_or("")
    );

    // 4. Later (seconds or weeks, any process): a manager decides. The decision and the
    //    claim of the execution are one atomic store call, which also authorises the
    //    decider against the request; then the engine continues.
    let manager = Principal {
        subject: "mia".into(),
        roles: vec!["sales_manager".into()],
    };
    let now = engine.clock().now();
    let decision = Decision {
        decided_by: manager.subject.clone(),
        decision: DecisionKind::Approve,
        reason: Some("known customer".into()),
        data: json!({}),
        decided_at: now,
        channel: None,
        delegate: None,
    };
    let decided = store
        .decide(approval_id, decision, &manager, &engine.claim(), now, None)
        .await?;
    let done = engine.advance(decided.execution).await?;
    println!(
        "execution {} is {} with result {:?}",
        done.id,
        done.status,
        done.result.map(tollgate_model::ExecutionResult::as_str)
    );
    if done.status != tollgate_model::ExecutionStatus::Completed {
        return Err("the execution did not complete".into());
    }
    Ok(())
}
