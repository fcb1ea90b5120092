//! Scenarios: workflows and a script of outside calls (events, decisions, operator
//! commands, clock moves, worker passes), written as a client would make them.

use std::time::Duration;

use serde_json::{json, Value};

/// One outside call, or a move of the world's clock.
#[derive(Debug, Clone)]
pub enum Act {
    /// `POST /events` with the sender's `event_id` `key`. `to` addresses it to the
    /// execution started by the event with that key.
    Send {
        /// Event type.
        event_type: &'static str,
        /// The sender's idempotency id (also how later acts name what it started).
        key: &'static str,
        /// Payload.
        payload: Value,
        /// Address it to the execution that this key's event started.
        to: Option<&'static str>,
    },
    /// `POST /executions/{id}/events` to the execution started by `of`'s event.
    Deliver {
        /// Whose execution.
        of: &'static str,
        /// Event type.
        event_type: &'static str,
        /// The sender's idempotency id.
        key: &'static str,
        /// Payload.
        payload: Value,
    },
    /// Approve or reject the approval the execution started by `of`'s event waits at.
    Decide {
        /// Whose execution.
        of: &'static str,
        /// The decider.
        who: &'static str,
        /// Their roles.
        roles: &'static [&'static str],
        /// Approve (else reject).
        approve: bool,
    },
    /// Pause the execution started by `of`'s event.
    Pause {
        /// Whose execution.
        of: &'static str,
    },
    /// Resume it, merging `data` into its context.
    Resume {
        /// Whose execution.
        of: &'static str,
        /// Merged into the context.
        data: Value,
    },
    /// Cancel it.
    Cancel {
        /// Whose execution.
        of: &'static str,
    },
    /// Move the clock.
    Advance(Duration),
    /// One worker pass.
    Tick,
}

/// How the scenario's outside HTTP service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// Every request: 200 with a small JSON body.
    Healthy,
    /// The first request of each path: 500; later ones 200 (a retrying webhook).
    FailsOnce,
}

/// Workflows, a script, and the outside service they talk to.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name (`cargo xtask sim --scenario NAME`).
    pub name: &'static str,
    /// Workflow documents; `{{remote}}` in any string becomes the outside service's URL.
    pub workflows: Vec<Value>,
    /// The client's calls, in order.
    pub script: Vec<Act>,
    /// The outside service.
    pub remote: Remote,
}

const HOUR: Duration = Duration::from_secs(3600);

fn send(event_type: &'static str, key: &'static str, payload: Value) -> Act {
    Act::Send {
        event_type,
        key,
        payload,
        to: None,
    }
}

fn decide(
    of: &'static str,
    who: &'static str,
    roles: &'static [&'static str],
    approve: bool,
) -> Act {
    Act::Decide {
        of,
        who,
        roles,
        approve,
    }
}

fn approval_flow(name: &'static str, approval: Value, script: Vec<Act>) -> Scenario {
    Scenario {
        name,
        workflows: vec![json!({
            "workflow_id": name, "version": "1",
            "trigger": {"type": "event", "event": "order.created"},
            "steps": [
                {"id": "record", "type": "action", "action": "execute",
                 "execute": [{"type": "create_record", "entity": "order", "entity_id": "{{order.id}}", "data": {"seen": true}}],
                 "next": "approve"},
                {"id": "approve", "type": "approval", "approval": approval,
                 "on_approve": "notify", "on_reject": "no"},
                {"id": "notify", "type": "action", "action": "allow",
                 "execute": [{"type": "webhook", "url": "{{remote}}/approved", "body": {"order": "{{order.id}}"}},
                             {"type": "notify", "recipients": ["ops"], "message": "order {{order.id}} approved"}]},
                {"id": "no", "type": "action", "action": "block"}
            ]
        })],
        script,
        remote: Remote::Healthy,
    }
}

fn wait_flow(name: &'static str, wait: Value, before: Value, script: Vec<Act>) -> Scenario {
    Scenario {
        name,
        workflows: vec![json!({
            "workflow_id": name, "version": "1",
            "trigger": {"type": "event", "event": "order.created"},
            "steps": [
                before,
                {"id": "pay", "type": "wait", "wait": wait, "next": "ship"},
                {"id": "ship", "type": "action", "action": "allow",
                 "execute": [{"type": "webhook", "url": "{{remote}}/ship", "body": {"order": "{{order.id}}"}}]},
                {"id": "late", "type": "action", "action": "block"}
            ]
        })],
        script,
        remote: Remote::Healthy,
    }
}

/// A `first_of` step racing a payment, a manager's decision and a one-hour deadline.
fn first_of_flow(name: &'static str, script: Vec<Act>) -> Scenario {
    Scenario {
        name,
        workflows: vec![json!({
            "workflow_id": name, "version": "1",
            "trigger": {"type": "event", "event": "order.created"},
            "steps": [
                {"id": "settle", "type": "first_of", "first_of": [
                    {"event": "payment.received",
                     "match": {"field": "event.order_id", "operator": "eq", "value": "{{order.id}}"},
                     "next": "ship"},
                    {"approval": {"approvers": {"role": "manager"}}, "on_approve": "ship", "on_reject": "late"},
                    {"after": "1h", "next": "late"}]},
                {"id": "ship", "type": "action", "action": "allow",
                 "execute": [{"type": "webhook", "url": "{{remote}}/ship", "body": {"order": "{{order.id}}"}}]},
                {"id": "late", "type": "action", "action": "block"}
            ]
        })],
        script,
        remote: Remote::Healthy,
    }
}

fn order(id: &str) -> Value {
    json!({"order": {"id": id, "total": 25000}})
}

/// The scenario workflows the issue names: approvals (quorum, rejection, both deadline
/// routes), waits (early, late, racing their timer, addressed), operator commands at
/// each status, a retrying webhook and a schedule tick.
pub fn scenarios() -> Vec<Scenario> {
    let approvers = json!({"approvers": {"role": "manager"}, "timeout": "2h"});
    let gate_first = json!({"id": "hold", "type": "approval",
        "approval": {"approvers": {"role": "manager"}}, "on_approve": "pay"});
    let quick = json!({"id": "hold", "type": "action", "action": "execute", "next": "pay"});
    let paid = |id: &str| json!({"order_id": id});
    let wait = json!({"event": "payment.received",
        "match": {"field": "event.order_id", "operator": "eq", "value": "{{order.id}}"},
        "timeout": "1h", "on_timeout": "late"});
    vec![
        approval_flow(
            "approval-quorum-2",
            json!({"approvers": {"role": "manager"}, "required": 2, "timeout": "2h"}),
            vec![
                send("order.created", "o-1", order("o-1")),
                decide("o-1", "ana", &["manager"], true),
                decide("o-1", "bo", &["manager"], true),
            ],
        ),
        approval_flow(
            "approval-reject",
            approvers.clone(),
            vec![
                send("order.created", "o-1", order("o-1")),
                decide("o-1", "ana", &["manager"], false),
            ],
        ),
        approval_flow(
            "approval-deadline-rejects",
            approvers.clone(),
            vec![
                send("order.created", "o-1", order("o-1")),
                Act::Advance(2 * HOUR),
                decide("o-1", "ana", &["manager"], true),
                Act::Tick,
            ],
        ),
        approval_flow(
            "approval-deadline-approves",
            json!({"approvers": {"role": "manager"}, "timeout": "2h", "on_timeout": "approve"}),
            vec![
                send("order.created", "o-1", order("o-1")),
                Act::Advance(2 * HOUR),
                Act::Tick,
            ],
        ),
        wait_flow(
            "wait-early-event",
            wait.clone(),
            gate_first.clone(),
            vec![
                send("order.created", "o-1", order("o-1")),
                send("payment.received", "p-1", paid("o-1")),
                decide("o-1", "ana", &["manager"], true),
            ],
        ),
        wait_flow(
            "wait-late-event",
            json!({"event": "payment.received",
                   "match": {"field": "event.order_id", "operator": "eq", "value": "{{order.id}}"}}),
            quick.clone(),
            vec![
                send("order.created", "o-1", order("o-1")),
                send("order.created", "o-2", order("o-2")),
                send("payment.received", "p-1", paid("o-1")),
                send("payment.received", "p-2", paid("o-2")),
            ],
        ),
        wait_flow(
            "wait-event-races-timer",
            wait.clone(),
            quick.clone(),
            vec![
                send("order.created", "o-1", order("o-1")),
                Act::Advance(HOUR),
                send("payment.received", "p-1", paid("o-1")),
                Act::Tick,
            ],
        ),
        wait_flow(
            "wait-direct-delivery",
            json!({"event": "payment.received"}),
            quick.clone(),
            vec![
                send("order.created", "o-1", order("o-1")),
                Act::Deliver {
                    of: "o-1",
                    event_type: "refund.issued",
                    key: "wrong-type",
                    payload: json!({}),
                },
                Act::Deliver {
                    of: "o-1",
                    event_type: "payment.received",
                    key: "d-1",
                    payload: paid("o-1"),
                },
                Act::Send {
                    event_type: "payment.received",
                    key: "p-late",
                    payload: paid("o-1"),
                    to: Some("o-1"),
                },
            ],
        ),
        first_of_flow(
            "first-of-event-beats-decision",
            vec![
                send("order.created", "o-1", order("o-1")),
                send("payment.received", "p-1", paid("o-1")),
                decide("o-1", "ana", &["manager"], false),
                Act::Advance(HOUR),
                Act::Tick,
            ],
        ),
        first_of_flow(
            "first-of-deadline-beats-event",
            vec![
                send("order.created", "o-1", order("o-1")),
                Act::Advance(HOUR),
                send("payment.received", "p-1", paid("o-1")),
                Act::Tick,
                decide("o-1", "ana", &["manager"], true),
            ],
        ),
        approval_flow(
            "operator-at-a-gate",
            approvers.clone(),
            vec![
                send("order.created", "o-1", order("o-1")),
                send("order.created", "o-2", order("o-2")),
                Act::Pause { of: "o-1" },
                Act::Cancel { of: "o-1" },
                decide("o-1", "ana", &["manager"], true),
                decide("o-2", "ana", &["manager"], true),
                Act::Cancel { of: "o-2" },
            ],
        ),
        wait_flow(
            "operator-pauses-a-woken-wait",
            json!({"event": "payment.received",
                   "match": {"field": "event.order_id", "operator": "eq", "value": "{{order.id}}"}}),
            quick.clone(),
            vec![
                send("order.created", "o-1", order("o-1")),
                send("payment.received", "p-1", paid("o-1")),
                Act::Pause { of: "o-1" },
                Act::Resume {
                    of: "o-1",
                    data: json!({"operator": "checked"}),
                },
            ],
        ),
        approval_flow(
            "operator-pauses-a-decided-gate",
            json!({"approvers": {"role": "manager"}, "required": 2}),
            vec![
                send("order.created", "o-1", order("o-1")),
                decide("o-1", "ana", &["manager"], true),
                decide("o-1", "bo", &["manager"], true),
                Act::Pause { of: "o-1" },
                Act::Resume {
                    of: "o-1",
                    data: json!({}),
                },
            ],
        ),
        wait_flow(
            "operator-cancels-a-wait",
            wait.clone(),
            quick.clone(),
            vec![
                send("order.created", "o-1", order("o-1")),
                Act::Cancel { of: "o-1" },
                send("payment.received", "p-1", paid("o-1")),
            ],
        ),
        Scenario {
            name: "operator-pause-resume-retrying",
            workflows: vec![json!({
                "workflow_id": "retrying", "version": "1",
                "trigger": {"type": "event", "event": "order.created"},
                "steps": [
                    {"id": "call", "type": "action", "action": "allow",
                     "retry": {"max_attempts": 3, "backoff": "fixed", "initial_interval": "1m", "jitter": false},
                     "execute": [{"type": "webhook", "url": "{{remote}}/erp", "body": {"order": "{{order.id}}"}}],
                     "next": "done"},
                    {"id": "done", "type": "action", "action": "allow"}
                ]
            })],
            script: vec![
                send("order.created", "o-1", order("o-1")),
                Act::Pause { of: "o-1" },
                Act::Resume {
                    of: "o-1",
                    data: json!({"operator": "checked"}),
                },
                Act::Advance(Duration::from_secs(120)),
                Act::Tick,
            ],
            remote: Remote::FailsOnce,
        },
        Scenario {
            name: "webhook-retries-inline",
            workflows: vec![json!({
                "workflow_id": "inline", "version": "1",
                "trigger": {"type": "event", "event": "order.created"},
                "steps": [
                    {"id": "call", "type": "action", "action": "allow",
                     "retry": {"max_attempts": 3, "backoff": "fixed", "initial_interval": "10ms", "jitter": false},
                     "execute": [{"type": "webhook", "url": "{{remote}}/erp", "body": {"order": "{{order.id}}"}}]}
                ]
            })],
            script: vec![send("order.created", "o-1", order("o-1"))],
            remote: Remote::FailsOnce,
        },
        Scenario {
            name: "schedule-tick",
            workflows: vec![json!({
                "workflow_id": "nightly", "version": "1",
                "trigger": {"type": "schedule", "cron": "0 */6 * * *"},
                "steps": [
                    {"id": "report", "type": "action", "action": "execute",
                     "execute": [{"type": "webhook", "url": "{{remote}}/report", "body": {"tick": "{{trigger.event_id}}"}}],
                     "next": "approve"},
                    {"id": "approve", "type": "approval", "approval": {"approvers": {"role": "manager"}, "timeout": "1h"},
                     "on_approve": "done"},
                    {"id": "done", "type": "action", "action": "allow"}
                ]
            })],
            script: vec![Act::Advance(6 * HOUR), Act::Tick, Act::Tick],
            remote: Remote::Healthy,
        },
    ]
}

/// The seven workflow files of the system Tollgate replaces, each driven to its gates
/// and through them.
pub fn originals() -> Vec<Scenario> {
    let original = |file: &str| -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/workflows/original")
            .join(file);
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_else(|| json!({"unreadable": path.display().to_string()}))
    };
    let one = |name: &'static str, file: &str, script: Vec<Act>| Scenario {
        name,
        workflows: vec![original(file)],
        script,
        remote: Remote::Healthy,
    };
    let crm = json!({"crm": {"webhook_url": "{{remote}}/crm"}});
    vec![
        one(
            "original-high-value-order",
            "high-value-order-approval.json",
            vec![
                send(
                    "order.checkout.initiated",
                    "o-1",
                    json!({"order": {"id": "o-1", "total": 25000, "items": [1, 2]}, "customer": {"tier": "silver", "name": "Ada"}}),
                ),
                decide("o-1", "mia", &["sales_manager"], true),
            ],
        ),
        one(
            "original-quote-multi-level",
            "quote-multi-level-approval.json",
            vec![
                send(
                    "quote.created",
                    "q-1",
                    json!({"quote": {"id": "q-1", "total": 8000, "number": "Q-1", "rep_decision": "approved", "manager_decision": "approved", "line_items": [1, 2, 3]},
                           "customer": {"name": "Bo"}, "sales_rep": {"id": "rep-1", "email": "rep@example.com"}, "sales_manager": {"id": "man-1"},
                           "integrations": crm}),
                ),
                decide("q-1", "rita", &["sales_rep"], true),
                send(
                    "quote.rep_reviewed",
                    "r-1",
                    json!({"quote_id": "q-1", "comments": "ok"}),
                ),
                decide("q-1", "max", &["sales_manager"], true),
                send("quote.manager_reviewed", "m-1", json!({"quote_id": "q-1"})),
            ],
        ),
        one(
            "original-cart-fraud",
            "cart-fraud-detection.json",
            vec![
                send(
                    "cart.checkout.started",
                    "c-1",
                    json!({"cart": {"id": "c-1", "total": 100, "shipping_address": {"country": "DE"}},
                           "customer": {"id": "u-1", "carts_created_last_hour": 1, "account_age_days": 400, "billing_address": {"country": "DE"}}}),
                ),
                decide("c-1", "fay", &["fraud_analyst"], true),
            ],
        ),
        one(
            "original-data-processing",
            "data-processing-with-timeout.json",
            vec![send(
                "data.batch.ready",
                "b-7",
                json!({"batch_id": "b-7", "data": {"records_count": 2, "records": [1, 2]}}),
            )],
        ),
        one(
            "original-order-processing",
            "order-processing-with-timeout.json",
            vec![
                send(
                    "order.created",
                    "o-1",
                    json!({"order": {"id": "o-1", "total": 50}, "customer": {"risk_score": 10}}),
                ),
                send(
                    "order.created",
                    "o-2",
                    json!({"order": {"id": "o-2", "total": 5000}, "customer": {"risk_score": 90}}),
                ),
            ],
        ),
        one(
            "original-inventory-sync",
            "product-inventory-sync.json",
            vec![send(
                "product.inventory.changed",
                "p-1",
                json!({"product": {"id": "p-1", "sku": "S-1", "available_quantity": 0, "reorder_settings": {"reorder_point": 5, "reorder_quantity": 50}},
                       "integrations": {"erp": {"webhook_url": "{{remote}}/erp"}, "storefront": {"webhook_url": "{{remote}}/shop"}}}),
            )],
        ),
        one(
            "original-quote-expiration",
            "quote-expiration-management.json",
            vec![Act::Advance(6 * HOUR), Act::Tick],
        ),
    ]
}

/// Every scenario: the named ones and the originals.
pub fn all() -> Vec<Scenario> {
    let mut all = scenarios();
    all.extend(originals());
    all
}

/// The scenario called `name`.
pub fn named(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}
