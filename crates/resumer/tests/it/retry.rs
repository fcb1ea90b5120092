//! An operator's retry of failed and timed-out executions (docs/operations.md,
//! "Retrying a failed execution").

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_engine::Clock;
use tollgate_model::records::{
    ApprovalStatus, Cursor, DecisionKind, Execution, ResumeOutcome, ResumeTrigger, Retry,
    StepStatus,
};
use tollgate_model::{ExecutionResult, ExecutionStatus};
use tollgate_resumer::{Error, RetryCommand, RetryOutcome, RetrySelection};
use tollgate_store::{ApprovalFilter, LeaseClaim};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::Harness;

fn command<'a>(from_step: Option<&'a str>, reason: &'a str) -> RetryCommand<'a> {
    RetryCommand {
        from_step,
        reason,
        actor: Some("ops-lead"),
        origin: Some("test"),
    }
}

/// A ledger that fails the first `failures` payments with a 503, then accepts.
async fn ledger(failures: u64) -> MockServer {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(failures)
        .with_priority(1)
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&api)
        .await;
    api
}

/// check → approve (ops) → pay (webhook, no retry policy) → done.
async fn refunds(h: &Harness, api: &MockServer) {
    h.deploy(json!({"workflow_id": "refunds", "version": "1", "trigger": {"type": "event", "event": "refund.requested"},
        "steps": [
            {"id": "check", "type": "condition", "condition": {"field": "amount", "operator": "gt", "value": 0}, "on_true": "approve", "on_false": "done"},
            {"id": "approve", "type": "approval", "approval": {"approvers": {"role": "ops"}}, "on_approve": "pay", "on_reject": "done"},
            {"id": "pay", "type": "execute", "execute": [{"type": "webhook", "url": format!("{}/pay", api.uri())}], "next": "done"},
            {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
}

/// A refund approved by ops whose payment failed.
async fn failed_payment(h: &Harness) -> Execution {
    let paused = h.start("refund.requested", json!({"amount": 120})).await;
    assert_eq!(paused.status, ExecutionStatus::Paused);
    let failed = h
        .decide(&paused, "olga", &["ops"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(failed.status, ExecutionStatus::Failed);
    failed
}

fn keys(requests: &[wiremock::Request]) -> Vec<String> {
    requests
        .iter()
        .filter_map(|r| r.headers.get("idempotency-key"))
        .map(|k| k.to_str().unwrap().to_owned())
        .collect()
}

async fn settle(h: &Harness, progress: tollgate_resumer::Progress) -> Execution {
    let settled = progress
        .settled(&h.engine, Duration::from_secs(10))
        .await
        .unwrap();
    h.assert_stored(&settled).await;
    settled
}

#[tokio::test]
async fn a_failed_execution_continues_from_its_failed_step_with_a_new_key() {
    let api = ledger(1).await;
    let h = Harness::new();
    refunds(&h, &api).await;
    let failed = failed_payment(&h).await;

    let retried = h
        .control
        .retry(failed.id, command(None, "ledger is back"))
        .await
        .unwrap();
    assert_eq!(retried.execution.status, ExecutionStatus::Running);
    let done = settle(&h, retried).await;
    assert_eq!(
        (done.status, done.result, done.error.as_ref()),
        (
            ExecutionStatus::Completed,
            Some(ExecutionResult::Allowed),
            None
        )
    );
    // The payment ran again under a new visit, so a new idempotency key.
    let id = failed.id;
    assert_eq!(
        keys(&api.received_requests().await.unwrap()),
        [format!("{id}:pay:1"), format!("{id}:pay:2")]
    );
    // The approval was not asked again: one request, approved once.
    let approvals = h
        .store
        .list_approvals(
            &ApprovalFilter {
                execution_id: Some(id),
                ..ApprovalFilter::default()
            },
            &tollgate_store::PageRequest::first(10),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].status, ApprovalStatus::Approved);
    // The context says it was retried, by whom and why; the decision is still there.
    let marker = &done.context["retry"];
    assert_eq!(
        (
            &marker["from_step"],
            &marker["count"],
            &marker["by"],
            &marker["reason"]
        ),
        (
            &json!("pay"),
            &json!(1),
            &json!("ops-lead"),
            &json!("ledger is back")
        )
    );
    assert_eq!(done.context["approvals"]["approve"]["decided_by"], "olga");
    // The audit has the retry: who, why, from where, and what it was before.
    let audit = h.store.list_resume_requests(id).await.unwrap();
    let row = audit.last().unwrap();
    assert_eq!(
        (row.trigger, row.outcome, row.actor.as_deref()),
        (
            ResumeTrigger::Manual,
            ResumeOutcome::Resumed,
            Some("ops-lead")
        )
    );
    assert_eq!(row.data["command"], "retry");
    assert_eq!(row.data["from_step"], "pay");
    assert_eq!(row.data["origin"], "test");
    assert_eq!(row.data["previous_status"], "failed");
    assert_eq!(row.data["previous_error"]["kind"], "step_failed");
    // The failed attempt stays on record beside the new one.
    let pays: Vec<(u32, StepStatus)> = h
        .store
        .list_steps(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.step_id == "pay")
        .map(|s| (s.visit, s.status))
        .collect();
    assert_eq!(pays, [(1, StepStatus::Failed), (2, StepStatus::Completed)]);

    // A completed execution is not retried, and the refusal is audited.
    let again = h
        .control
        .retry(id, command(None, "once more"))
        .await
        .unwrap_err();
    assert!(
        matches!(&again, Error::Conflict(m) if m.contains("completed")),
        "{again}"
    );
    let audit = h.store.list_resume_requests(id).await.unwrap();
    let refusal = audit.last().unwrap();
    assert_eq!(
        (refusal.outcome, refusal.data["command"].as_str()),
        (ResumeOutcome::Refused, Some("retry"))
    );
}

#[tokio::test]
async fn a_retry_from_an_earlier_step_keeps_the_grant_unless_it_starts_at_the_approval() {
    let api = ledger(2).await;
    let h = Harness::new();
    refunds(&h, &api).await;
    let failed = failed_payment(&h).await;

    // From `check`: the path runs again, the granted approval is kept, the payment
    // fails again (the ledger's second 503).
    let from_check = h
        .control
        .retry(failed.id, command(Some("check"), "rerun the checks"))
        .await
        .unwrap();
    let failed_again = settle(&h, from_check).await;
    assert_eq!(failed_again.status, ExecutionStatus::Failed);
    assert_eq!(failed_again.visits.get("approve"), Some(&2));
    let approve_records: Vec<Value> = h
        .store
        .list_steps(failed.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.step_id == "approve" && s.visit == 2)
        .map(|s| s.output)
        .collect();
    assert_eq!(approve_records.len(), 1);
    assert_eq!(approve_records[0]["kept"], true);
    assert_eq!(approve_records[0]["decided_by"], "olga");
    assert_eq!(failed_again.context["retry"]["kept"], json!(["approve"]));

    // From the approval itself: it is asked again, as a new request.
    let from_gate = h
        .control
        .retry(failed.id, command(Some("approve"), "ask again"))
        .await
        .unwrap();
    let at_gate = settle(&h, from_gate).await;
    assert_eq!(at_gate.status, ExecutionStatus::Paused);
    assert_eq!(at_gate.context["retry"]["count"], 2);
    let gate = at_gate.gate.as_ref().unwrap();
    assert_eq!((gate.step_id.as_str(), gate.visit), ("approve", 3));
    let done = h
        .decide(&at_gate, "pavel", &["ops"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.context["approvals"]["approve"]["decided_by"], "pavel");
    assert_eq!(api.received_requests().await.unwrap().len(), 3);
}

/// tag → bump (overwrites the trigger's `amount`) → pay (webhook) → done.
async fn bumped_refunds(h: &Harness, api: &MockServer) {
    h.deploy(json!({"workflow_id": "bumped", "version": "1", "trigger": {"type": "event", "event": "refund.bumped"},
        "steps": [
            {"id": "tag", "type": "execute", "execute": [{"type": "set", "path": "stage", "value": "tagged"}], "next": "bump"},
            {"id": "bump", "type": "execute", "execute": [{"type": "set", "values": {"amount": 999, "stage": "bumped", "audit.by": "bump"}}], "next": "pay"},
            {"id": "pay", "type": "execute", "execute": [{"type": "webhook", "url": format!("{}/pay", api.uri())}], "next": "done"},
            {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
}

#[tokio::test]
async fn a_retry_from_an_earlier_step_sees_the_context_of_that_steps_entry() {
    let api = ledger(2).await;
    let h = Harness::new();
    bumped_refunds(&h, &api).await;
    let failed = h.start("refund.bumped", json!({"amount": 120})).await;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(
        (&failed.context["amount"], &failed.context["stage"]),
        (&json!(999), &json!("bumped"))
    );

    // From `bump`: what `bump` and `pay` wrote is gone, what `tag` wrote is there.
    let from_bump = h
        .control
        .retry(failed.id, command(Some("bump"), "recompute the amount"))
        .await
        .unwrap();
    let context = &from_bump.execution.context;
    assert_eq!(
        (&context["amount"], &context["stage"], &context["audit"]),
        (&json!(120), &json!("tagged"), &Value::Null)
    );
    assert!(context["steps"].get("tag").is_some(), "{context}");
    assert!(context["steps"].get("bump").is_none(), "{context}");
    assert!(context["steps"].get("pay").is_none(), "{context}");
    assert_eq!(context["retry"]["from_step"], "bump");
    let audit = h.store.list_resume_requests(failed.id).await.unwrap();
    assert_eq!(audit.last().unwrap().data["context_of_visit"], 1);
    let failed_again = settle(&h, from_bump).await;
    assert_eq!(failed_again.status, ExecutionStatus::Failed);
    assert_eq!(failed_again.context["amount"], 999);

    // From `tag`, across the first retry: the context the execution started with.
    let from_tag = h
        .control
        .retry(failed.id, command(Some("tag"), "start over"))
        .await
        .unwrap();
    let context = &from_tag.execution.context;
    assert_eq!(
        (&context["amount"], &context["stage"], &context["audit"]),
        (&json!(120), &Value::Null, &Value::Null)
    );
    assert_eq!(context.get("steps"), None, "{context}");
    assert_eq!(context["retry"]["count"], 2);
    let done = settle(&h, from_tag).await;
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(
        (&done.context["amount"], &done.context["stage"]),
        (&json!(999), &json!("bumped"))
    );
    // A completed execution cannot be retried: its trail is gone with its completion.
    assert_eq!(h.store.context_trail(failed.id).await.unwrap(), []);
}

#[tokio::test]
async fn a_retry_from_a_step_never_entered_keeps_the_context_it_ended_with() {
    let api = ledger(1).await;
    let h = Harness::new();
    refunds(&h, &api).await;
    let failed = failed_payment(&h).await;
    let retried = h
        .control
        .retry(failed.id, command(Some("done"), "skip the payment"))
        .await
        .unwrap();
    let mut ended = failed.context.clone();
    ended["retry"] = retried.execution.context["retry"].clone();
    assert_eq!(retried.execution.context, ended);
    let audit = h.store.list_resume_requests(failed.id).await.unwrap();
    assert_eq!(audit.last().unwrap().data["context_of_visit"], Value::Null);
    assert_eq!(settle(&h, retried).await.status, ExecutionStatus::Completed);
}

#[tokio::test]
async fn a_timed_out_execution_gets_a_fresh_deadline_and_a_new_request() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "quotes", "version": "1", "timeout": "2h", "trigger": {"type": "event", "event": "quote.created"},
        "steps": [
            {"id": "approve", "type": "approval", "approval": {"approvers": {"role": "sales"}, "timeout": "1h", "on_timeout": "fail"}, "on_approve": "done"},
            {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let paused = h.start("quote.created", json!({"discount": 40})).await;
    h.advance(3601);
    h.worker.tick().await.unwrap();
    let mut timed_out = h.store.get_execution(paused.id).await.unwrap();
    for _ in 0..200 {
        if timed_out.status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        timed_out = h.store.get_execution(paused.id).await.unwrap();
    }
    assert_eq!(timed_out.status, ExecutionStatus::TimedOut);

    let retried = h
        .control
        .retry(paused.id, command(None, "sales is back"))
        .await
        .unwrap();
    let at_gate = settle(&h, retried).await;
    let now = h.clock.now();
    assert_eq!(at_gate.status, ExecutionStatus::Paused);
    assert_eq!(at_gate.deadline, Some(now + chrono::TimeDelta::hours(2)));
    let gate = at_gate.gate.as_ref().unwrap();
    assert_eq!(
        (gate.visit, gate.deadline),
        (2, Some(now + chrono::TimeDelta::hours(1)))
    );
    let done = h
        .decide(&at_gate, "sam", &["sales"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed))
    );
}

#[tokio::test]
async fn refused_retries_say_why_and_change_nothing() {
    let api = ledger(1).await;
    let h = Harness::new();
    refunds(&h, &api).await;
    let paused = h.start("refund.requested", json!({"amount": 5})).await;
    let err = h
        .control
        .retry(paused.id, command(None, "too early"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains("paused")),
        "{err}"
    );

    let failed = failed_payment(&h).await;
    let err = h
        .control
        .retry(failed.id, command(Some("ship"), "typo"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("`ship`") && m.contains("check, approve, pay, done")),
        "{err}"
    );
    let err = h
        .control
        .retry(failed.id, command(None, "  "))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("reason")),
        "{err}"
    );
    assert_eq!(h.store.get_execution(failed.id).await.unwrap(), failed);

    h.deploy(json!({"workflow_id": "loop", "version": "1", "max_steps": 10, "trigger": {"type": "event", "event": "go"},
        "steps": [{"id": "review", "type": "condition", "condition": {"field": "approved", "operator": "eq", "value": true}, "on_true": "done", "on_false": "revise"},
                  {"id": "revise", "type": "execute", "execute": [{"type": "set", "path": "revisions", "value": 1}], "next": "review"},
                  {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let spent = h.start("go", json!({})).await;
    let err = h
        .control
        .retry(spent.id, command(None, "again"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains("step budget")),
        "{err}"
    );
}

#[tokio::test]
async fn two_operators_retrying_at_once_start_it_once() {
    let api = ledger(1).await;
    let h = Harness::new();
    refunds(&h, &api).await;
    let failed = failed_payment(&h).await;
    let (a, b) = tokio::join!(
        h.control.retry(failed.id, command(None, "first")),
        h.control.retry(failed.id, command(None, "second")),
    );
    let (won, lost) = match (a, b) {
        (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
        (a, b) => panic!("exactly one retry must win: {a:?} / {b:?}"),
    };
    assert!(matches!(lost, Error::Conflict(_)), "{lost}");
    let done = settle(&h, won).await;
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(
        api.received_requests().await.unwrap().len(),
        2,
        "one payment per retry"
    );
}

/// The retry is one store change; the process that made it may die before advancing
/// the execution. It is then `running` under a lease nobody renews, and any worker takes
/// it over when that lease lapses.
#[tokio::test]
async fn a_retry_whose_process_dies_before_advancing_is_taken_over() {
    let api = ledger(1).await;
    let h = Harness::new();
    refunds(&h, &api).await;
    let failed = failed_payment(&h).await;
    let now = h.clock.now();
    let dead = LeaseClaim {
        owner: "dead-api".into(),
        expires_at: now + chrono::TimeDelta::seconds(30),
    };
    let retry = Retry {
        expected_version: failed.version,
        cursor: Cursor::new("pay", 2),
        context: failed.context.clone(),
        undo: Vec::new(),
        deadline: None,
        audit: json!({"command": "retry"}),
    };
    h.store
        .retry_execution(failed.id, &retry, Some("ops-lead"), &dead, now)
        .await
        .unwrap();
    assert_eq!(
        h.worker.tick().await.unwrap().leases,
        0,
        "its lease still holds"
    );
    h.advance(31);
    assert_eq!(h.worker.tick().await.unwrap().leases, 1);
    let mut done = h.store.get_execution(failed.id).await.unwrap();
    for _ in 0..200 {
        if done.status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        done = h.store.get_execution(failed.id).await.unwrap();
    }
    assert_eq!(done.status, ExecutionStatus::Completed);
}

#[tokio::test]
async fn bulk_retries_preview_then_retry_the_selected_executions() {
    let api = ledger(3).await;
    let h = Harness::new();
    refunds(&h, &api).await;
    let mut failed = Vec::new();
    for _ in 0..3 {
        failed.push(failed_payment(&h).await.id);
    }
    let selection = RetrySelection {
        status: ExecutionStatus::Failed,
        workflow_key: Some("refunds".into()),
        failed_step: Some("pay".into()),
        limit: 2,
        cursor: None,
    };
    let preview = h
        .control
        .retry_many(&selection, command(None, "ledger is back"), true)
        .await
        .unwrap();
    assert_eq!(preview.items.len(), 2);
    assert!(preview.next_cursor.is_some());
    assert!(preview
        .items
        .iter()
        .all(|i| i.outcome == RetryOutcome::WouldRetry && i.from_step.as_deref() == Some("pay")));
    for id in &failed {
        assert_eq!(
            h.store.get_execution(*id).await.unwrap().status,
            ExecutionStatus::Failed,
            "a dry run changes nothing"
        );
    }
    let other_step = RetrySelection {
        failed_step: Some("check".into()),
        ..selection.clone()
    };
    let none = h
        .control
        .retry_many(&other_step, command(None, "x"), true)
        .await
        .unwrap();
    assert!(none.items.is_empty());

    let all = RetrySelection {
        limit: 100,
        ..selection.clone()
    };
    let report = h
        .control
        .retry_many(&all, command(None, "ledger is back"), false)
        .await
        .unwrap();
    assert_eq!(report.items.len(), 3);
    assert!(report
        .items
        .iter()
        .all(|i| i.outcome == RetryOutcome::Retried));
    for id in &failed {
        let mut e = h.store.get_execution(*id).await.unwrap();
        for _ in 0..200 {
            if e.status.is_terminal() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            e = h.store.get_execution(*id).await.unwrap();
        }
        assert_eq!(e.status, ExecutionStatus::Completed);
    }
    let err = h
        .control
        .retry_many(
            &RetrySelection {
                status: ExecutionStatus::Completed,
                ..selection.clone()
            },
            command(None, "x"),
            true,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
    let err = h
        .control
        .retry_many(
            &RetrySelection {
                limit: 101,
                ..selection
            },
            command(None, "x"),
            true,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
}
