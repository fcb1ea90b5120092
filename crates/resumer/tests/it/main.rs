//! Engine and resumer scenarios on the in-memory store, with a test clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    missing_docs
)]

mod examples;
mod first_of;
mod gates;
mod migrate;
mod outbox;
mod paths;
mod recovery;
mod retention;
mod retry;
mod schedules;
mod wiring;

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use serde_json::{json, Value};
use tollgate_engine::{Clock, Engine, EngineOptions, TestClock};
use tollgate_model::records::{snapshot_id, DecisionKind, Execution, Principal, Workflow};
use tollgate_resumer::{
    ApprovalService, EventService, ExecutionControl, Ingested, NewEvent, Worker, WorkerOptions,
};
use tollgate_store::{MemoryStore, Store};
use uuid::Uuid;

pub struct Harness {
    pub store: Arc<dyn Store>,
    pub clock: Arc<TestClock>,
    pub engine: Engine,
    pub approvals: ApprovalService,
    pub events: EventService,
    pub control: ExecutionControl,
    pub worker: Worker,
}

pub fn start_time() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap()
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = Arc::new(TestClock::new(start_time()));
        Self::on(store, clock, "worker-a")
    }

    /// Another process on the same store and clock.
    pub fn on(store: Arc<dyn Store>, clock: Arc<TestClock>, worker_id: &str) -> Self {
        let options = EngineOptions {
            worker_id: worker_id.into(),
            inline_retry_max: Duration::from_millis(50),
            ..EngineOptions::default()
        };
        let engine = Engine::builder(store.clone())
            .clock(clock.clone())
            .options(options)
            .build()
            .unwrap();
        Self {
            approvals: ApprovalService::new(engine.clone()),
            events: EventService::new(engine.clone()),
            control: ExecutionControl::new(engine.clone()),
            worker: Worker::new(engine.clone(), WorkerOptions::default()),
            store,
            clock,
            engine,
        }
    }

    pub async fn deploy(&self, doc: Value) -> Workflow {
        let definition = Arc::new(
            tollgate_model::load(&doc)
                .unwrap_or_else(|r| panic!("{:?}", r.errors))
                .definition,
        );
        let now = self.clock.now();
        self.store
            .create_workflow(Workflow {
                id: Uuid::now_v7(),
                snapshot_id: snapshot_id(&definition),
                enabled: definition.enabled,
                definition,
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap()
    }

    pub async fn send(&self, event_type: &str, payload: Value) -> Ingested {
        self.events
            .ingest(NewEvent {
                event_type: event_type.into(),
                payload,
                submitted_by: Some("shop".into()),
                ..NewEvent::default()
            })
            .await
            .unwrap()
    }

    /// Sends an event that starts exactly one execution and returns it once settled.
    pub async fn start(&self, event_type: &str, payload: Value) -> Execution {
        let mut ingested = self.send(event_type, payload).await;
        assert_eq!(ingested.started.len(), 1, "one workflow should start");
        let settled = ingested
            .started
            .remove(0)
            .settled(&self.engine, Duration::from_secs(10))
            .await
            .unwrap();
        self.assert_stored(&settled).await;
        settled
    }

    /// The engine answers with its local copy of the execution instead of reading it
    /// back: it must be exactly the stored row.
    pub async fn assert_stored(&self, execution: &Execution) {
        let stored = self.store.get_execution(execution.id).await.unwrap();
        assert_eq!(
            execution, &stored,
            "the engine's answer differs from the stored row"
        );
    }

    pub async fn decide(
        &self,
        execution: &Execution,
        who: &str,
        roles: &[&str],
        kind: DecisionKind,
        reason: Option<&str>,
    ) -> tollgate_resumer::Result<Execution> {
        let approval_id = execution
            .gate
            .as_ref()
            .and_then(|g| g.approval_id)
            .expect("paused at an approval");
        let principal = Principal {
            subject: who.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        let decided = self
            .approvals
            .decide(
                approval_id,
                &principal,
                kind,
                reason.map(str::to_owned),
                json!({"note": who}),
            )
            .await?;
        let settled = decided
            .progress
            .settled(&self.engine, Duration::from_secs(10))
            .await?;
        self.assert_stored(&settled).await;
        Ok(settled)
    }

    pub async fn steps(
        &self,
        execution: &Execution,
    ) -> Vec<(String, tollgate_model::records::StepStatus)> {
        self.store
            .list_steps(execution.id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.step_id, s.status))
            .collect()
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

pub fn example(name: &str) -> Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/workflows/original")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Replaces every occurrence of `from` in the document's strings with `to` (used to point
/// the examples' fixed external URLs at a local test server).
pub fn rewrite(doc: &Value, from: &str, to: &str) -> Value {
    match doc {
        Value::String(s) => Value::String(s.replace(from, to)),
        Value::Array(a) => Value::Array(a.iter().map(|v| rewrite(v, from, to)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), rewrite(v, from, to)))
                .collect(),
        ),
        other => other.clone(),
    }
}
