//! Moving paused and waiting executions to a new version (docs/operations.md,
//! "Migrating paused executions").

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tollgate_model::records::DecisionKind;
use tollgate_model::ExecutionStatus;
use tollgate_resumer::{Error, MigrateCommand, MigrationOutcome, MigrationSelection};

use crate::Harness;

fn orders(version: &str, approve: Value, after: &str) -> Value {
    json!({"workflow_id": "orders", "version": version, "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "check", "type": "condition", "condition": {"field": "total", "operator": "gt", "value": 100}, "on_true": "approve", "on_false": "done"},
            approve,
            {"id": after, "type": "execute", "execute": [{"type": "set", "path": "shipped_by", "value": after}], "next": "done"},
            {"id": "done", "type": "action", "action": "allow"}]})
}

fn approval(next: &str) -> Value {
    json!({"id": "approve", "type": "approval", "approval": {"approvers": {"role": "sales"}, "timeout": "2d"}, "on_approve": next, "on_reject": "done"})
}

fn to<'a>(
    version: &'a str,
    map: &'a BTreeMap<String, String>,
    dry_run: bool,
) -> (MigrateCommand<'a>, bool) {
    (
        MigrateCommand {
            to_version: version,
            step_map: map,
            reason: Some("ship faster"),
            actor: Some("ops-lead"),
            origin: Some("test"),
        },
        dry_run,
    )
}

#[tokio::test]
async fn a_paused_approval_moves_to_the_new_version_and_follows_its_branch() {
    let h = Harness::new();
    h.deploy(orders("1", approval("ship_slow"), "ship_slow"))
        .await;
    let paused = h.start("order.created", json!({"total": 500})).await;
    assert_eq!(paused.status, ExecutionStatus::Paused);
    h.deploy(orders("2", approval("ship_fast"), "ship_fast"))
        .await;
    let none = BTreeMap::new();

    let (command, dry) = to("2", &none, true);
    let preview = h.control.migrate(paused.id, command, dry).await.unwrap();
    assert_eq!(preview.outcome, MigrationOutcome::WouldMigrate);
    assert_eq!(
        h.store.get_execution(paused.id).await.unwrap(),
        paused,
        "a dry run changes nothing"
    );

    let (command, dry) = to("2", &none, false);
    let moved = h.control.migrate(paused.id, command, dry).await.unwrap();
    assert_eq!(
        (
            moved.outcome,
            moved.from_version.as_str(),
            moved.gate_step.as_deref()
        ),
        (MigrationOutcome::Migrated, "1", Some("approve"))
    );
    let stored = h.store.get_execution(paused.id).await.unwrap();
    assert_eq!(stored.workflow_version, "2");
    assert_eq!(
        stored.gate, paused.gate,
        "the pending approval and its deadline carry over"
    );
    let audit = h.store.list_resume_requests(paused.id).await.unwrap();
    let row = audit.last().unwrap();
    assert_eq!(
        (
            row.data["command"].as_str(),
            row.data["from_version"].as_str(),
            row.actor.as_deref()
        ),
        (Some("migrate"), Some("1"), Some("ops-lead"))
    );

    let done = h
        .decide(&stored, "sam", &["sales"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(
        done.context["shipped_by"], "ship_fast",
        "the new version's branch ran"
    );
}

#[tokio::test]
async fn a_waiting_execution_moves_with_a_renamed_step() {
    let h = Harness::new();
    let wait = |id: &str, next: &str| json!({"id": id, "type": "wait", "wait": {"event": "payment.received"}, "next": next});
    h.deploy(json!({"workflow_id": "pay", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [wait("await_payment", "done"), {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let waiting = h.start("order.created", json!({})).await;
    assert_eq!(waiting.status, ExecutionStatus::Waiting);
    h.deploy(json!({"workflow_id": "pay", "version": "2", "trigger": {"type": "event", "event": "order.created"},
        "steps": [wait("payment", "thank"),
                  {"id": "thank", "type": "execute", "execute": [{"type": "set", "path": "thanked", "value": true}], "next": "done"},
                  {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let none = BTreeMap::new();
    let (command, dry) = to("2", &none, false);
    let err = h
        .control
        .migrate(waiting.id, command, dry)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains("no top-level step `await_payment`") && m.contains("step_map")),
        "{err}"
    );
    let map = BTreeMap::from([("await_payment".to_owned(), "payment".to_owned())]);
    let (command, dry) = to("2", &map, false);
    let moved = h.control.migrate(waiting.id, command, dry).await.unwrap();
    assert_eq!(moved.gate_step.as_deref(), Some("payment"));
    let mut ingested = h.send("payment.received", json!({"amount": 5})).await;
    assert_eq!(ingested.resumed.len(), 1);
    let done = ingested
        .resumed
        .remove(0)
        .settled(&h.engine, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.context["thanked"], true);
}

#[tokio::test]
async fn refused_migrations_say_why() {
    let h = Harness::new();
    h.deploy(orders("1", approval("ship"), "ship")).await;
    let paused = h.start("order.created", json!({"total": 500})).await;
    let small = h.start("order.created", json!({"total": 5})).await;
    assert_eq!(small.status, ExecutionStatus::Completed);
    // Version 2 decides by a condition where version 1 asked for an approval.
    h.deploy(orders(
        "2",
        json!({"id": "approve", "type": "condition", "condition": {"field": "total", "operator": "lt", "value": 1000}, "on_true": "ship", "on_false": "done"}),
        "ship",
    ))
    .await;
    let none = BTreeMap::new();
    let (command, dry) = to("2", &none, false);
    let err = h
        .control
        .migrate(paused.id, command, dry)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains("condition step")),
        "{err}"
    );
    let (command, dry) = to("9", &none, false);
    let err = h
        .control
        .migrate(paused.id, command, dry)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("no version 9") && (m.contains("1, 2") || m.contains("2, 1"))),
        "{err}"
    );
    let (command, dry) = to("2", &none, false);
    let err = h.control.migrate(small.id, command, dry).await.unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains("completed")),
        "{err}"
    );
    let (command, dry) = to("1", &none, false);
    let err = h
        .control
        .migrate(paused.id, command, dry)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains("already runs")),
        "{err}"
    );
    assert_eq!(h.store.get_execution(paused.id).await.unwrap(), paused);
    let refusals = h
        .store
        .list_resume_requests(paused.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.data["command"] == "migrate")
        .count();
    assert_eq!(
        refusals, 2,
        "each refused migration of a paused execution is audited"
    );
}

#[tokio::test]
async fn bulk_migrations_preview_then_move_the_selected_executions() {
    let h = Harness::new();
    h.deploy(orders("1", approval("ship_slow"), "ship_slow"))
        .await;
    let mut paused = Vec::new();
    for _ in 0..3 {
        paused.push(h.start("order.created", json!({"total": 500})).await.id);
    }
    h.deploy(orders("2", approval("ship_fast"), "ship_fast"))
        .await;
    let on_v2 = h.start("order.created", json!({"total": 500})).await;
    let none = BTreeMap::new();
    let selection = MigrationSelection {
        workflow_key: "orders".into(),
        from_version: Some("1".into()),
        status: ExecutionStatus::Paused,
        limit: 100,
        cursor: None,
    };
    let (command, _) = to("2", &none, true);
    let preview = h
        .control
        .migrate_many(&selection, command, true)
        .await
        .unwrap();
    assert_eq!(
        preview.items.len(),
        3,
        "the one already on version 2 is not selected"
    );
    assert!(preview
        .items
        .iter()
        .all(|i| i.outcome == MigrationOutcome::WouldMigrate));
    let report = h
        .control
        .migrate_many(&selection, command, false)
        .await
        .unwrap();
    assert!(report
        .items
        .iter()
        .all(|i| i.outcome == MigrationOutcome::Migrated));
    for id in paused {
        assert_eq!(
            h.store.get_execution(id).await.unwrap().workflow_version,
            "2"
        );
    }
    assert_eq!(
        h.store
            .get_execution(on_v2.id)
            .await
            .unwrap()
            .workflow_version,
        "2"
    );
    let err = h
        .control
        .migrate_many(
            &MigrationSelection {
                status: ExecutionStatus::Completed,
                ..selection
            },
            command,
            true,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
}
