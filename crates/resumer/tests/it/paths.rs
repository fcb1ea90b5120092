//! `strict_paths`: a path the context lacks fails the step before it acts, instead of
//! rendering empty (docs/workflow-format.md, "Declared input").

use serde_json::{json, Value};
use tollgate_model::records::StepStatus;
use tollgate_model::{ErrorKind, ExecutionStatus};
use tollgate_store::{NotificationFilter, PageRequest};

use crate::Harness;

fn claim_flow(strict: bool) -> Value {
    json!({
        "workflow_id": "claims", "version": "1", "strict_paths": strict,
        "trigger": {"type": "event", "event": "claim.filed"},
        "steps": [
            {"id": "tell", "type": "execute", "execute": [
                {"type": "notify", "recipients": ["finance"], "message": "Expense {{claim_id}} by {{employe}}: {{amount}}"}],
             "next": "done"},
            {"id": "done", "type": "action", "action": "allow"}
        ]
    })
}

async fn notifications(h: &Harness, execution: uuid::Uuid) -> Vec<String> {
    h.store
        .list_notifications(
            &NotificationFilter {
                execution_id: Some(execution),
            },
            &PageRequest::first(50),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.message)
        .collect()
}

#[tokio::test]
async fn a_missing_path_fails_the_step_before_it_acts() {
    let h = Harness::new();
    h.deploy(claim_flow(true)).await;
    let payload = json!({"claim_id": "t-1", "employee": "ana", "amount": 20});
    let execution = h.start("claim.filed", payload).await;
    assert_eq!(execution.status, ExecutionStatus::Failed);
    let error = execution.error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::StepFailed);
    assert!(
        error
            .message
            .contains("`employe` (at steps[0].execute[0].message)"),
        "{}",
        error.message
    );
    assert!(
        notifications(&h, execution.id).await.is_empty(),
        "nothing may be sent"
    );
    let steps = h.store.list_steps(execution.id).await.unwrap();
    let tell = steps.iter().find(|s| s.step_id == "tell").unwrap();
    assert_eq!(tell.status, StepStatus::Failed);
    assert!(!steps.iter().any(|s| s.step_id == "done"));
}

#[tokio::test]
async fn without_strict_paths_it_renders_empty_with_a_warning() {
    let h = Harness::new();
    h.deploy(claim_flow(false)).await;
    let payload = json!({"claim_id": "t-1", "employee": "ana", "amount": 20});
    let execution = h.start("claim.filed", payload).await;
    assert_eq!(execution.status, ExecutionStatus::Completed);
    assert_eq!(
        notifications(&h, execution.id).await,
        vec!["Expense t-1 by : 20".to_owned()]
    );
    let steps = h.store.list_steps(execution.id).await.unwrap();
    let tell = steps.iter().find(|s| s.step_id == "tell").unwrap();
    assert!(
        tell.warnings
            .iter()
            .any(|w| w.contains("`employe` is missing")),
        "{:?}",
        tell.warnings
    );
}

#[tokio::test]
async fn present_paths_and_probes_pass_under_strict_paths() {
    let h = Harness::new();
    let mut doc = claim_flow(true);
    doc["steps"][0]["execute"][0]["message"] =
        json!("Expense {{claim_id}} by {{employee}}: {{amount}}");
    doc["steps"].as_array_mut().unwrap().insert(
        0,
        json!({"id": "has_note", "type": "condition",
               "condition": {"field": "note", "operator": "not_exists"}, "on_true": "tell", "on_false": "tell"}),
    );
    h.deploy(doc).await;
    let payload = json!({"claim_id": "t-2", "employee": "ana", "amount": 20});
    let execution = h.start("claim.filed", payload).await;
    assert_eq!(
        execution.status,
        ExecutionStatus::Completed,
        "{:?}",
        execution.error
    );
    assert_eq!(
        notifications(&h, execution.id).await,
        vec!["Expense t-2 by ana: 20".to_owned()]
    );
}
