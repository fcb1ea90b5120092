use std::path::PathBuf;

use serde_json::{json, Value};
use tollgate_model::definition::{OnTimeout, Required, StepKind, SubActionKind, Trigger, Verb};
use tollgate_model::{load, load_str, WorkflowDefinition};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows/original")
}

fn example(name: &str) -> Value {
    let text = std::fs::read_to_string(examples_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

const ORIGINALS: [&str; 7] = [
    "cart-fraud-detection.json",
    "data-processing-with-timeout.json",
    "high-value-order-approval.json",
    "order-processing-with-timeout.json",
    "product-inventory-sync.json",
    "quote-expiration-management.json",
    "quote-multi-level-approval.json",
];

#[test]
fn the_seven_original_examples_load_without_errors_or_warnings() {
    for name in ORIGINALS {
        let loaded =
            load(&example(name)).unwrap_or_else(|report| panic!("{name}: {:#?}", report.errors));
        assert!(loaded.warnings.is_empty(), "{name}: {:?}", loaded.warnings);
    }
}

/// The copies in this repository are the files in shared/ (when shared/ is beside it).
#[test]
fn example_copies_match_the_shared_originals() {
    let shared =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/examples/original");
    if !shared.is_dir() {
        return;
    }
    for name in ORIGINALS {
        let ours = std::fs::read(examples_dir().join(name)).unwrap();
        let theirs = std::fs::read(shared.join(name)).unwrap();
        assert!(
            ours == theirs,
            "{name} differs from shared/examples/original"
        );
    }
}

#[test]
fn canonical_form_round_trips() {
    for name in ORIGINALS {
        let first = load(&example(name)).unwrap().definition;
        let canonical = first.to_json();
        let second = load(&canonical).unwrap().definition;
        assert_eq!(first, second, "{name}");
        assert_eq!(canonical, second.to_json(), "{name}");
        // And through serde, the way stores read snapshots back.
        let via_serde: WorkflowDefinition = serde_json::from_value(canonical).unwrap();
        assert_eq!(via_serde, first, "{name}");
    }
}

#[test]
fn compatibility_approval_form_maps_onto_an_approval() {
    let def = load(&example("high-value-order-approval.json"))
        .unwrap()
        .definition;
    let step = def.step("require_approval").unwrap();
    let approval = step.compat_approval().expect("an approval gate");
    assert_eq!(approval.approvers.roles, ["sales_manager"]);
    assert_eq!(approval.timeout.unwrap().to_string(), "1d");
    assert_eq!(
        approval.reason.as_deref(),
        Some("High value order requires approval")
    );
    assert_eq!(approval.on_timeout, OnTimeout::Reject);
    assert_eq!(approval.required, Required::Count(1));
    let entity = approval.entity.as_ref().unwrap();
    assert_eq!(
        (entity.entity_type.as_str(), entity.id.as_str()),
        ("order", "{{order.id}}")
    );
    assert_eq!(
        approval.data.as_ref().unwrap()["order_total"],
        "{{order.total}}"
    );
    assert!(step.gate_kind().is_some());

    let quote = load(&example("quote-multi-level-approval.json"))
        .unwrap()
        .definition;
    let StepKind::Action { action, .. } = &quote.step("require_sales_rep_review").unwrap().kind
    else {
        panic!("action");
    };
    assert_eq!(action.verb, Verb::RequireApproval);
}

#[test]
fn nested_definition_and_verb_spellings_are_accepted() {
    let doc = json!({
        "workflow_id": "nested", "version": "2", "name": "Nested",
        "definition": {
            "trigger": {"type": "event", "event": "order.*"},
            "timeout": "1h30m",
            "steps": [
                {"id": "a", "type": "action", "action": "allow", "next": "b"},
                {"id": "b", "type": "action", "action": {"action": "block", "reason": "r"}, "next": "c"},
                {"id": "c", "type": "action", "action": {"type": "execute"},
                 "execute": [{"type": "http_request", "url": "http://x"}, {"type": "set", "path": "a.b", "value": 1}]}
            ]
        }
    });
    let def = load(&doc).unwrap().definition;
    assert_eq!(def.timeout.unwrap().to_string(), "1h30m");
    assert_eq!(
        def.trigger,
        Trigger::Event {
            event: "order.*".into()
        }
    );
    let verbs: Vec<Verb> = def
        .steps
        .iter()
        .map(|s| match &s.kind {
            StepKind::Action { action, .. } => action.verb,
            _ => panic!(),
        })
        .collect();
    assert_eq!(verbs, [Verb::Allow, Verb::Block, Verb::Execute]);
    let canonical = def.to_json();
    assert_eq!(canonical["steps"][0]["action"], json!({"type": "allow"}));
    assert_eq!(canonical["steps"][2]["execute"][0]["type"], "webhook");
    assert_eq!(
        canonical["steps"][2]["execute"][1],
        json!({"type": "set", "values": {"a.b": 1}})
    );
    assert!(canonical.get("definition").is_none());
    let StepKind::Action { execute, .. } = &def.steps[2].kind else {
        panic!()
    };
    assert!(matches!(execute[0].kind, SubActionKind::Webhook(_)));
}

#[test]
fn name_metadata_and_description_are_kept() {
    let doc = json!({
        "workflow_id": "w", "version": "1", "description": "d", "metadata": {"owner": "ops"},
        "steps": [{"id": "a", "type": "action", "action": "allow", "name": "A", "description": "x", "metadata": {"k": 1}}]
    });
    let canonical = load(&doc).unwrap().definition.to_json();
    assert_eq!(canonical["metadata"], json!({"owner": "ops"}));
    assert_eq!(canonical["steps"][0]["name"], "A");
    assert_eq!(canonical["steps"][0]["metadata"], json!({"k": 1}));
    assert_eq!(canonical["name"], "w", "name defaults to the workflow_id");
}

#[test]
fn malformed_json_is_located() {
    let report = load_str("{\"workflow_id\": \"x\",\n  \"steps\": [}").unwrap_err();
    assert!(
        report.errors[0].message.contains("line 2"),
        "{:?}",
        report.errors
    );
}

#[test]
fn trigger_patterns_match_as_documented() {
    use tollgate_model::definition::event_pattern_matches as m;
    assert!(m("order.created", "order.created"));
    assert!(!m("order.created", "order.created.v2"));
    assert!(m("order.checkout.*", "order.checkout.initiated"));
    assert!(!m("order.checkout.*", "order.checkout"));
    assert!(!m("order.checkout.*", "order.refund.initiated"));
    assert!(m("*", "anything.at.all"));
    assert!(m("order*", "orders.x"));
}

#[test]
fn content_hash_ignores_enabled_and_changes_with_content() {
    use tollgate_model::records::snapshot_id;
    let a = load(&example("high-value-order-approval.json"))
        .unwrap()
        .definition;
    let mut b = a.clone();
    b.enabled = false;
    assert_eq!(snapshot_id(&a), snapshot_id(&b));
    b.name.push('!');
    assert_ne!(snapshot_id(&a), snapshot_id(&b));
}

#[test]
fn stored_definitions_are_read_leniently_and_new_input_strictly() {
    let doc = serde_json::json!({
        "workflow_id": "w", "version": "1", "added_by_a_newer_release": true,
        "steps": [{"id": "a", "type": "action", "action": "allow", "also_new": 1}]});
    assert!(tollgate_model::load(&doc).is_err(), "new input is strict");
    let stored = tollgate_model::load_stored(&doc).unwrap();
    assert_eq!(stored.steps.len(), 1);
    let via_serde: tollgate_model::WorkflowDefinition = serde_json::from_value(doc).unwrap();
    assert_eq!(via_serde, stored);
    // What this release cannot understand is still refused.
    let unknown_step = serde_json::json!({"workflow_id": "w", "version": "1",
        "steps": [{"id": "a", "type": "teleport"}]});
    assert!(tollgate_model::load_stored(&unknown_step).is_err());
}
