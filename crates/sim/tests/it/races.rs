//! Races the sequential sweep cannot produce: concurrent callers whose store calls
//! interleave (the fuse's seeded yields, no crash).

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use serde_json::json;
use tollgate_engine::{Clock, Engine, EngineOptions, TestClock};
use tollgate_model::records::{snapshot_id, Workflow};
use tollgate_model::ExecutionStatus;
use tollgate_resumer::{EventService, NewEvent};
use tollgate_sim::fuse::{CrashStore, Fuse};
use tollgate_store::{MemoryStore, Store};

/// Two direct deliveries race for one waiting execution: one resumes it, the other is
/// refused — and the refused one stored nothing, so the execution's next wait does not
/// take it as an early event. (Before, the loser's event was stored and then refused.)
#[tokio::test]
async fn a_delivery_that_loses_its_race_stores_nothing() {
    let mut raced = 0;
    for seed in 0..200u64 {
        let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let fuse = Fuse::with_jitter(None, rand::rngs::StdRng::seed_from_u64(seed));
        let store: Arc<dyn Store> = Arc::new(CrashStore::new(memory.clone(), fuse));
        let clock = Arc::new(TestClock::new(chrono::DateTime::UNIX_EPOCH));
        let engine = Engine::builder(store.clone())
            .clock(clock.clone())
            .options(EngineOptions {
                worker_id: "p".into(),
                ..EngineOptions::default()
            })
            .build()
            .unwrap();
        let definition = Arc::new(
            tollgate_model::load(&json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                "steps": [{"id": "first", "type": "wait", "wait": {"event": "signed"}, "next": "second"},
                          {"id": "second", "type": "wait", "wait": {"event": "signed"}, "next": "ok"},
                          {"id": "ok", "type": "action", "action": "allow"}]}))
            .unwrap()
            .definition,
        );
        memory
            .create_workflow(Workflow {
                id: uuid::Uuid::now_v7(),
                snapshot_id: snapshot_id(&definition),
                enabled: true,
                definition,
                created_at: clock.now(),
                updated_at: clock.now(),
            })
            .await
            .unwrap();
        let events = EventService::new(engine.clone());
        let mut started = events
            .ingest(NewEvent {
                event_type: "go".into(),
                payload: json!({}),
                ..NewEvent::default()
            })
            .await
            .unwrap();
        let waiting = started
            .started
            .remove(0)
            .settled(&engine, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(waiting.status, ExecutionStatus::Waiting);
        let (a, b) = tokio::join!(
            events.deliver_to(waiting.id, "signed", json!({"n": 1}), None, Some("a")),
            events.deliver_to(waiting.id, "signed", json!({"n": 2}), None, Some("b")),
        );
        let mut accepted = Vec::new();
        for result in [a, b] {
            match result {
                Ok(delivered) => accepted.push(delivered),
                Err(refused) => {
                    assert!(
                        matches!(refused, tollgate_resumer::Error::Conflict(_)),
                        "seed {seed}: {refused}"
                    );
                    // Lost at the store (both read the execution waiting), not at its
                    // own check.
                    if refused.to_string().contains("changed since it was read") {
                        raced += 1;
                    }
                }
            }
        }
        let count = accepted.len();
        for delivered in accepted {
            delivered
                .progress
                .settled(&engine, Duration::from_secs(10))
                .await
                .unwrap();
        }
        let after = memory.get_execution(waiting.id).await.unwrap();
        // One accepted: the execution is at its second wait, which did not take the
        // refused delivery's event early. Two accepted (the second read the execution
        // at its second wait): it completed, one event per wait.
        let expected = if count == 1 {
            ExecutionStatus::Waiting
        } else {
            ExecutionStatus::Completed
        };
        assert_eq!(
            after.status, expected,
            "seed {seed}: {} accepted, the execution is {}",
            count, after.status
        );
        let stored = memory
            .events_for_wait("signed", chrono::DateTime::UNIX_EPOCH, waiting.id, None, 10)
            .await
            .unwrap();
        assert_eq!(
            stored.len(),
            count,
            "seed {seed}: a refused delivery stored its event"
        );
        assert_eq!(after.consumed_events.len(), count);
    }
    assert!(
        raced > 0,
        "no seed made the two deliveries race at the store"
    );
    eprintln!("{raced} of 200 seeds raced at the store");
}
