//! Races the sequential sweep cannot produce: concurrent callers whose store calls
//! interleave (the fuse's seeded yields, no crash).

use std::time::Duration;

use rand::SeedableRng;
use serde_json::json;
use tollgate_model::ExecutionStatus;
use tollgate_sim::fuse::Fuse;

/// Two direct deliveries race for one waiting execution: one resumes it, the other is
/// refused — and the refused one stored nothing, so the execution's next wait does not
/// take it as an early event. (Before, the loser's event was stored and then refused.)
#[tokio::test]
async fn a_delivery_that_loses_its_race_stores_nothing() {
    let mut raced = 0;
    for seed in 0..200u64 {
        let fuse = Fuse::with_jitter(None, rand::rngs::StdRng::seed_from_u64(seed));
        let doc = json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
            "steps": [{"id": "first", "type": "wait", "wait": {"event": "signed"}, "next": "second"},
                      {"id": "second", "type": "wait", "wait": {"event": "signed"}, "next": "ok"},
                      {"id": "ok", "type": "action", "action": "allow"}]});
        let crate::Started {
            durable: memory,
            engine,
            events,
            execution: waiting,
            ..
        } = crate::started(fuse, &doc, "go").await;
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
