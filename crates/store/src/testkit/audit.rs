//! [`ResumeRequestStore`](crate::ResumeRequestStore): the audit of every resume attempt.

use std::sync::Arc;

use serde_json::json;
use tollgate_model::records::{DecisionKind, ResumeOutcome, ResumeRequest, ResumeTrigger};
use uuid::Uuid;

use super::fixtures::{decision, lease, manager, paused_at_approval, secs, t0, workflow};
use crate::Store;

pub async fn resume_request_audit_is_kept_in_order(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, a) = paused_at_approval(&store, &w, 1, None).await;
    let refused = ResumeRequest {
        id: Uuid::now_v7(),
        execution_id: e.id,
        trigger: ResumeTrigger::Manual,
        actor: Some("ops".into()),
        data: json!({}),
        requested_at: t0(),
        executed_at: None,
        outcome: ResumeOutcome::Refused,
        error: Some("paused at an approval gate".into()),
    };
    store.record_resume_request(refused.clone()).await.unwrap();
    store
        .decide(
            a.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0()),
            t0() + secs(1),
            None,
        )
        .await
        .unwrap();
    let audit = store.list_resume_requests(e.id).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0], refused);
    assert_eq!(audit[1].outcome, ResumeOutcome::Resumed);
    assert!(store
        .list_resume_requests(Uuid::now_v7())
        .await
        .unwrap_err()
        .is_not_found());
}
