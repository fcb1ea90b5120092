//! Workflow definitions written in Rust: a typed builder that produces the same
//! [`WorkflowDefinition`] the JSON parser produces, through the same validator.
//!
//! A service that keeps its workflows in code gets them type-checked and reviewed with
//! the rest of its code, and cannot build a definition the server would refuse: the
//! builder writes the canonical JSON document (`docs/workflow-format.md`) and
//! [`WorkflowBuilder::build`] runs it through [`crate::load`], so every rule, default
//! and error path is the parser's own. Problems come back as a [`Report`] whose paths
//! name the step (`steps[1].on_true`), exactly as they would for the JSON file.
//!
//! ```
//! use tollgate_model::builder::{Approval, Cond, StepBuilder, WorkflowBuilder};
//!
//! let definition = WorkflowBuilder::new("big_orders", "1")
//!     .on_event("order.created")
//!     .step(
//!         StepBuilder::condition("check", Cond::field("order.total").gte(10_000))
//!             .on_true("manager")
//!             .on_false("ship"),
//!     )
//!     .step(
//!         StepBuilder::approval(
//!             "manager",
//!             Approval::role("sales_manager")
//!                 .reason("Order {{order.id}} is large")
//!                 .timeout("2d"),
//!         )
//!         .on_approve("ship")
//!         .on_reject("refuse"),
//!     )
//!     .step(StepBuilder::allow("ship"))
//!     .step(StepBuilder::block("refuse"))
//!     .build()
//!     .expect("a valid workflow");
//! assert_eq!(definition.steps.len(), 4);
//! ```

use serde_json::{json, Map, Value};

use crate::{Report, WorkflowDefinition};

/// A workflow definition under construction. Steps run from the first one added.
#[derive(Debug, Clone)]
#[must_use]
pub struct WorkflowBuilder {
    document: Map<String, Value>,
    steps: Vec<Value>,
}

impl WorkflowBuilder {
    /// A workflow `workflow_id` at `version` (the pair is unique in a store), started by
    /// hand until a trigger is set.
    pub fn new(workflow_id: impl Into<String>, version: impl Into<String>) -> Self {
        let mut document = Map::new();
        document.insert("workflow_id".into(), Value::String(workflow_id.into()));
        document.insert("version".into(), Value::String(version.into()));
        Self {
            document,
            steps: Vec::new(),
        }
    }

    fn set(mut self, key: &str, value: Value) -> Self {
        self.document.insert(key.into(), value);
        self
    }

    /// The name people see (defaults to the `workflow_id`).
    pub fn name(self, name: impl Into<String>) -> Self {
        self.set("name", Value::String(name.into()))
    }

    /// A description for people.
    pub fn description(self, text: impl Into<String>) -> Self {
        self.set("description", Value::String(text.into()))
    }

    /// Tags, for filtering lists.
    pub fn tags<I, S>(self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let tags = tags.into_iter().map(|t| Value::String(t.into())).collect();
        self.set("tags", Value::Array(tags))
    }

    /// Stored disabled: events do not start it until it is enabled.
    pub fn disabled(self) -> Self {
        self.set("enabled", Value::Bool(false))
    }

    /// Started by events whose type matches `pattern` (`order.created`, `order.*`, `*`).
    pub fn on_event(self, pattern: impl Into<String>) -> Self {
        self.set("trigger", json!({"type": "event", "event": pattern.into()}))
    }

    /// Started on a cron schedule (5 or 6 fields, or `@daily`…) in an IANA time zone.
    pub fn on_schedule(self, cron: impl Into<String>, timezone: impl Into<String>) -> Self {
        self.set(
            "trigger",
            json!({"type": "schedule", "cron": cron.into(), "timezone": timezone.into()}),
        )
    }

    /// Only started by hand (the default).
    pub fn manual(self) -> Self {
        self.set("trigger", json!({"type": "manual"}))
    }

    /// Deadline of the whole execution from its start (`7d`, `1h30m`).
    pub fn timeout(self, duration: impl Into<String>) -> Self {
        self.set("timeout", Value::String(duration.into()))
    }

    /// Step budget per execution (default 1000).
    pub fn max_steps(self, max: u32) -> Self {
        self.set("max_steps", Value::from(max))
    }

    /// Context resources loaded before the first step (`customer.profile`).
    pub fn load<I, S>(self, resources: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let load: Vec<Value> = resources
            .into_iter()
            .map(|r| Value::String(r.into()))
            .collect();
        self.set("context", json!({ "load": load }))
    }

    /// The trigger payload's shape as a JSON Schema object; with `strict` every path the
    /// steps read must be declared in it.
    pub fn input_schema(self, schema: Value, strict: bool) -> Self {
        self.set("input_schema", schema)
            .set("strict_paths", Value::Bool(strict))
    }

    /// Free-form information kept with the definition.
    pub fn metadata(self, metadata: Value) -> Self {
        self.set("metadata", metadata)
    }

    /// Appends a step.
    pub fn step(mut self, step: StepBuilder) -> Self {
        self.steps.push(step.into_json());
        self
    }

    /// The JSON document this builder describes, in the format a file or
    /// `POST /api/v1/workflows` takes.
    pub fn to_json(&self) -> Value {
        let mut document = self.document.clone();
        document.insert("steps".into(), Value::Array(self.steps.clone()));
        Value::Object(document)
    }

    /// Parses and validates the document exactly as a JSON definition is; the error
    /// lists every problem with its path.
    pub fn build(self) -> Result<WorkflowDefinition, Report> {
        crate::load(&self.to_json()).map(|loaded| loaded.definition)
    }
}

/// One step: its kind, its successors and its common settings.
#[derive(Debug, Clone)]
#[must_use]
pub struct StepBuilder {
    step: Map<String, Value>,
}

impl StepBuilder {
    fn of(id: impl Into<String>, kind: &str) -> Self {
        let mut step = Map::new();
        step.insert("id".into(), Value::String(id.into()));
        step.insert("type".into(), Value::String(kind.into()));
        Self { step }
    }

    fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.step.insert(key.into(), value.into());
        self
    }

    /// Branches on `condition`: [`on_true`](Self::on_true) / [`on_false`](Self::on_false).
    pub fn condition(id: impl Into<String>, condition: Cond) -> Self {
        Self::of(id, "condition").set("condition", condition.0)
    }

    /// Ends the execution `allowed` (or continues at [`next`](Self::next)).
    pub fn allow(id: impl Into<String>) -> Self {
        Self::of(id, "action").set("action", json!({"type": "allow"}))
    }

    /// Ends the execution `blocked` (or continues at [`next`](Self::next)).
    pub fn block(id: impl Into<String>) -> Self {
        Self::of(id, "action").set("action", json!({"type": "block"}))
    }

    /// Runs sub-actions (webhooks, notifications, records, context changes) in order.
    pub fn execute<I>(id: impl Into<String>, actions: I) -> Self
    where
        I: IntoIterator<Item = SubAction>,
    {
        let actions: Vec<Value> = actions.into_iter().map(|a| a.0).collect();
        Self::of(id, "execute").set("execute", actions)
    }

    /// A gate: stops until the approvers decide
    /// ([`on_approve`](Self::on_approve) / [`on_reject`](Self::on_reject)).
    pub fn approval(id: impl Into<String>, approval: Approval) -> Self {
        Self::of(id, "approval").set("approval", approval.0)
    }

    /// A gate: stops until a matching event arrives ([`next`](Self::next)).
    pub fn wait(id: impl Into<String>, wait: Wait) -> Self {
        Self::of(id, "wait").set("wait", wait.0)
    }

    /// Runs `children` at once; `strategy` is `all_must_pass`, `any_can_pass` or
    /// `best_effort`. Passed → [`next`](Self::next), failed → [`on_false`](Self::on_false).
    pub fn parallel<I>(id: impl Into<String>, strategy: &str, children: I) -> Self
    where
        I: IntoIterator<Item = StepBuilder>,
    {
        let steps: Vec<Value> = children.into_iter().map(StepBuilder::into_json).collect();
        Self::of(id, "parallel").set("parallel", json!({"strategy": strategy, "steps": steps}))
    }

    /// Runs `children` once per element of `items` (a context path or a template), the
    /// element visible as `item_var`.
    pub fn foreach<I>(id: impl Into<String>, items: &str, item_var: &str, children: I) -> Self
    where
        I: IntoIterator<Item = StepBuilder>,
    {
        let steps: Vec<Value> = children.into_iter().map(StepBuilder::into_json).collect();
        Self::of(id, "foreach").set(
            "foreach",
            json!({"items": items, "item_var": item_var, "steps": steps}),
        )
    }

    /// The step after this one.
    pub fn next(self, step: impl Into<String>) -> Self {
        self.set("next", step.into())
    }

    /// Where a true condition (or a passed parallel group) goes.
    pub fn on_true(self, step: impl Into<String>) -> Self {
        self.set("on_true", step.into())
    }

    /// Where a false condition (or a failed parallel group) goes.
    pub fn on_false(self, step: impl Into<String>) -> Self {
        self.set("on_false", step.into())
    }

    /// Where an approved request goes.
    pub fn on_approve(self, step: impl Into<String>) -> Self {
        self.set("on_approve", step.into())
    }

    /// Where a rejected (or expired) request goes.
    pub fn on_reject(self, step: impl Into<String>) -> Self {
        self.set("on_reject", step.into())
    }

    /// Where the execution continues when this step has failed for good.
    pub fn on_error(self, step: impl Into<String>) -> Self {
        self.set("on_error", step.into())
    }

    /// A name for people.
    pub fn name(self, name: impl Into<String>) -> Self {
        self.set("name", name.into())
    }

    /// Time limit per attempt (`30s`).
    pub fn timeout(self, duration: impl Into<String>) -> Self {
        self.set("timeout", duration.into())
    }

    /// Retries of a failed attempt: at most `max_attempts` in all, exponential backoff
    /// from `initial_interval` (`1s`); the other settings keep their defaults.
    pub fn retry(self, max_attempts: u32, initial_interval: impl Into<String>) -> Self {
        self.set(
            "retry",
            json!({"max_attempts": max_attempts, "initial_interval": initial_interval.into()}),
        )
    }

    fn into_json(self) -> Value {
        Value::Object(self.step)
    }
}

/// A condition: a comparison of a context field, or a combination of conditions.
#[derive(Debug, Clone)]
#[must_use]
pub struct Cond(Value);

/// The field side of a comparison, waiting for its operator.
#[derive(Debug, Clone)]
#[must_use]
pub struct Field(String);

impl Cond {
    /// Starts a comparison of the context path `path` (`order.total`).
    pub fn field(path: impl Into<String>) -> Field {
        Field(path.into())
    }

    /// True when every one of `conditions` is.
    pub fn all<I: IntoIterator<Item = Cond>>(conditions: I) -> Self {
        Self(json!({"and": conditions.into_iter().map(|c| c.0).collect::<Vec<_>>()}))
    }

    /// True when any of `conditions` is.
    pub fn any<I: IntoIterator<Item = Cond>>(conditions: I) -> Self {
        Self(json!({"or": conditions.into_iter().map(|c| c.0).collect::<Vec<_>>()}))
    }
}

/// `!condition`: true when `condition` is not.
impl std::ops::Not for Cond {
    type Output = Cond;

    fn not(self) -> Cond {
        Cond(json!({"not": self.0}))
    }
}

impl Field {
    /// `field <operator> value`, with an operator of `docs/workflow-format.md`
    /// ("Conditions"); the named methods below cover the usual ones.
    pub fn op(self, operator: &str, value: impl Into<Value>) -> Cond {
        Cond(json!({"field": self.0, "operator": operator, "value": value.into()}))
    }

    /// Equal (JSON equality; numeric strings count as numbers).
    pub fn eq(self, value: impl Into<Value>) -> Cond {
        self.op("eq", value)
    }

    /// Not equal.
    pub fn neq(self, value: impl Into<Value>) -> Cond {
        self.op("neq", value)
    }

    /// Greater than.
    pub fn gt(self, value: impl Into<Value>) -> Cond {
        self.op("gt", value)
    }

    /// Greater than or equal.
    pub fn gte(self, value: impl Into<Value>) -> Cond {
        self.op("gte", value)
    }

    /// Less than.
    pub fn lt(self, value: impl Into<Value>) -> Cond {
        self.op("lt", value)
    }

    /// Less than or equal.
    pub fn lte(self, value: impl Into<Value>) -> Cond {
        self.op("lte", value)
    }

    /// One of `values`.
    pub fn one_of<I, V>(self, values: I) -> Cond
    where
        I: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        let values: Vec<Value> = values.into_iter().map(Into::into).collect();
        self.op("in", values)
    }

    /// Substring, array element or object key.
    pub fn contains(self, value: impl Into<Value>) -> Cond {
        self.op("contains", value)
    }

    /// Matches the regular expression (linear-time `regex` syntax).
    pub fn matches(self, pattern: impl Into<String>) -> Cond {
        self.op("regex", pattern.into())
    }

    /// The field is present and not null.
    pub fn exists(self) -> Cond {
        Cond(json!({"field": self.0, "operator": "exists"}))
    }
}

/// Who approves, how many, for how long, and what they see.
#[derive(Debug, Clone)]
#[must_use]
pub struct Approval(Value);

impl Approval {
    fn with_approvers(approvers: Value) -> Self {
        Self(json!({ "approvers": approvers }))
    }

    fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self.0 {
            map.insert(key.into(), value.into());
        }
        self
    }

    /// Anyone with `role` may decide.
    pub fn role(role: impl Into<String>) -> Self {
        Self::with_approvers(json!({"role": role.into()}))
    }

    /// Anyone with one of `roles` may decide.
    pub fn roles<I, S>(roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let roles: Vec<String> = roles.into_iter().map(Into::into).collect();
        Self::with_approvers(json!({ "roles": roles }))
    }

    /// The named users may decide.
    pub fn users<I, S>(users: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let users: Vec<String> = users.into_iter().map(Into::into).collect();
        Self::with_approvers(json!({ "users": users }))
    }

    /// Distinct approvals needed (default 1).
    pub fn required(self, count: u32) -> Self {
        self.set("required", count)
    }

    /// Every named user must approve (only with [`users`](Self::users)).
    pub fn required_all(self) -> Self {
        self.set("required", "all")
    }

    /// What the approvers read (a template: `Order {{order.id}} is large`).
    pub fn reason(self, text: impl Into<String>) -> Self {
        self.set("reason", text.into())
    }

    /// How long the request stays open (`24h`).
    pub fn timeout(self, duration: impl Into<String>) -> Self {
        self.set("timeout", duration.into())
    }

    /// What expiry does: `reject` (default), `approve`, `fail`, or a step id.
    pub fn on_timeout(self, route: impl Into<String>) -> Self {
        self.set("on_timeout", route.into())
    }

    /// Lets the requester decide their own request.
    pub fn allow_self_approval(self) -> Self {
        self.set("allow_self_approval", true)
    }

    /// The entity the request is about (templates allowed).
    pub fn entity(self, kind: impl Into<String>, id: impl Into<String>) -> Self {
        self.set("entity", json!({"type": kind.into(), "id": id.into()}))
    }

    /// Information shown to the approvers (templates allowed).
    pub fn data(self, data: Value) -> Self {
        self.set("data", data)
    }
}

/// The event a wait stops for.
#[derive(Debug, Clone)]
#[must_use]
pub struct Wait(Value);

impl Wait {
    fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self.0 {
            map.insert(key.into(), value.into());
        }
        self
    }

    /// Any event of `event_type`, until [`matching`](Self::matching) narrows it.
    pub fn event(event_type: impl Into<String>) -> Self {
        Self(json!({"event": event_type.into()}))
    }

    /// Only events for which `condition` holds (`event.…` paths read the event; values
    /// may be templates of the context, rendered when the wait is entered).
    pub fn matching(self, condition: Cond) -> Self {
        self.set("match", condition.0)
    }

    /// How long to wait (`2d`).
    pub fn timeout(self, duration: impl Into<String>) -> Self {
        self.set("timeout", duration.into())
    }

    /// The step to continue at when the wait times out.
    pub fn on_timeout(self, step: impl Into<String>) -> Self {
        self.set("on_timeout", step.into())
    }

    /// How far back from entering the wait an event that came before it may be taken
    /// (`24h`; `0s`: none).
    pub fn early_events(self, window: impl Into<String>) -> Self {
        self.set("early_events", window.into())
    }
}

/// One sub-action of an `execute` step.
#[derive(Debug, Clone)]
#[must_use]
pub struct SubAction(Value);

impl SubAction {
    fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self.0 {
            map.insert(key.into(), value.into());
        }
        self
    }

    /// An HTTP call (`POST` by default), retried per the step's retry settings with a
    /// stable idempotency key.
    pub fn webhook(url: impl Into<String>) -> Self {
        Self(json!({"type": "webhook", "url": url.into()}))
    }

    /// The HTTP method of a [`webhook`](Self::webhook).
    pub fn method(self, method: impl Into<String>) -> Self {
        self.set("method", method.into())
    }

    /// The JSON body of a [`webhook`](Self::webhook) (templates allowed).
    pub fn body(self, body: Value) -> Self {
        self.set("body", body)
    }

    /// A header of a [`webhook`](Self::webhook).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let Value::Object(map) = &mut self.0 {
            let headers = map
                .entry("headers")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(headers) = headers {
                headers.insert(name.into(), Value::String(value.into()));
            }
        }
        self
    }

    /// A notification to `recipients` through the configured notifier.
    pub fn notify<I, S>(recipients: I, message: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let recipients: Vec<String> = recipients.into_iter().map(Into::into).collect();
        Self(json!({"type": "notify", "recipients": recipients, "message": message.into()}))
    }

    /// A line in the execution's log.
    pub fn log(message: impl Into<String>) -> Self {
        Self(json!({"type": "log", "message": message.into()}))
    }

    /// Sets a context value at a dotted path.
    pub fn set_value(path: impl Into<String>, value: impl Into<Value>) -> Self {
        let mut values = Map::new();
        values.insert(path.into(), value.into());
        Self(json!({"type": "set", "values": values}))
    }

    /// Stores a record of `entity` with `data` (an object; templates allowed).
    pub fn create_record(entity: impl Into<String>, data: Value) -> Self {
        Self(json!({"type": "create_record", "entity": entity.into(), "data": data}))
    }

    /// The id of the record a [`create_record`](Self::create_record) stores (a
    /// template, e.g. `{{order_id}}`; a new id when absent).
    pub fn entity_id(self, id: impl Into<String>) -> Self {
        self.set("entity_id", id.into())
    }

    /// Merges `data` into the record `entity`/`entity_id` (templates allowed).
    pub fn update_record(
        entity: impl Into<String>,
        entity_id: impl Into<String>,
        data: Value,
    ) -> Self {
        Self(json!({"type": "update_record", "entity": entity.into(),
                    "entity_id": entity_id.into(), "data": data}))
    }

    /// A failure of this sub-action does not fail the step.
    pub fn continue_on_error(self) -> Self {
        self.set("continue_on_error", true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn big_orders() -> WorkflowBuilder {
        WorkflowBuilder::new("big_orders", "1")
            .on_event("order.created")
            .step(
                StepBuilder::condition("check", Cond::field("order.total").gte(10_000))
                    .on_true("manager")
                    .on_false("ship"),
            )
            .step(
                StepBuilder::approval(
                    "manager",
                    Approval::role("sales_manager")
                        .reason("Order {{order.id}} is large")
                        .timeout("2d"),
                )
                .on_approve("pay")
                .on_reject("refuse"),
            )
            .step(
                StepBuilder::wait(
                    "pay",
                    Wait::event("payment.settled")
                        .matching(Cond::field("event.order_id").eq("{{order.id}}"))
                        .timeout("1d")
                        .on_timeout("refuse"),
                )
                .next("ship"),
            )
            .step(
                StepBuilder::execute(
                    "ship",
                    [
                        SubAction::webhook("https://shop.example/ship")
                            .body(json!({"order": "{{order.id}}"})),
                        SubAction::set_value("shipped", true),
                    ],
                )
                .retry(5, "2s")
                .next("done"),
            )
            .step(StepBuilder::allow("done"))
            .step(StepBuilder::block("refuse"))
    }

    /// The builder's definition is the parser's: the same document written by hand as
    /// JSON loads to an equal definition.
    #[test]
    fn builds_what_the_json_parser_builds() {
        let built = big_orders().build().unwrap();
        let by_hand = crate::load(&json!({
            "workflow_id": "big_orders", "version": "1",
            "trigger": {"type": "event", "event": "order.created"},
            "steps": [
                {"id": "check", "type": "condition",
                 "condition": {"field": "order.total", "operator": "gte", "value": 10000},
                 "on_true": "manager", "on_false": "ship"},
                {"id": "manager", "type": "approval",
                 "approval": {"approvers": {"role": "sales_manager"},
                              "reason": "Order {{order.id}} is large", "timeout": "2d"},
                 "on_approve": "pay", "on_reject": "refuse"},
                {"id": "pay", "type": "wait",
                 "wait": {"event": "payment.settled",
                          "match": {"field": "event.order_id", "operator": "eq", "value": "{{order.id}}"},
                          "timeout": "1d", "on_timeout": "refuse"},
                 "next": "ship"},
                {"id": "ship", "type": "execute",
                 "execute": [{"type": "webhook", "url": "https://shop.example/ship",
                              "body": {"order": "{{order.id}}"}},
                             {"type": "set", "values": {"shipped": true}}],
                 "retry": {"max_attempts": 5, "initial_interval": "2s"},
                 "next": "done"},
                {"id": "done", "type": "action", "action": "allow"},
                {"id": "refuse", "type": "action", "action": "block"}
            ]
        }))
        .unwrap()
        .definition;
        assert_eq!(built, by_hand);
    }

    /// The validator's rules and paths apply: a successor that names no step is
    /// reported where a JSON file would have it.
    #[test]
    fn invalid_definitions_are_reported_with_paths() {
        let report = WorkflowBuilder::new("w", "1")
            .step(
                StepBuilder::condition("check", Cond::field("a").eq(1))
                    .on_true("nowhere")
                    .on_false("end"),
            )
            .step(StepBuilder::approval("end", Approval::users(["ann", "ann"])).on_approve("x"))
            .build()
            .unwrap_err();
        let paths: Vec<&str> = report.errors.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"steps[0].on_true"), "{paths:?}");
        assert!(
            paths.iter().any(|p| p.starts_with("steps[1].")),
            "{paths:?}"
        );
    }

    /// Combinators, parallel groups and loops come out as the format describes them.
    #[test]
    fn combinators_groups_and_loops() {
        let definition = WorkflowBuilder::new("checks", "2")
            .name("Checks")
            .tags(["risk"])
            .disabled()
            .step(
                StepBuilder::parallel(
                    "all",
                    "all_must_pass",
                    [
                        StepBuilder::condition(
                            "known",
                            Cond::any([
                                Cond::field("customer.tier").one_of(["gold", "silver"]),
                                !Cond::field("customer.new").eq(true),
                            ]),
                        ),
                        StepBuilder::condition(
                            "country",
                            Cond::all([
                                Cond::field("country").exists(),
                                Cond::field("country").matches("^[A-Z]{2}$"),
                            ]),
                        ),
                    ],
                )
                .next("each")
                .on_false("no"),
            )
            .step(
                StepBuilder::foreach(
                    "each",
                    "order.lines",
                    "line",
                    [StepBuilder::execute(
                        "note",
                        [SubAction::log("line {{line.sku}}")],
                    )],
                )
                .next("yes"),
            )
            .step(StepBuilder::allow("yes"))
            .step(StepBuilder::block("no"))
            .build()
            .unwrap();
        assert!(!definition.enabled);
        assert_eq!(definition.steps.len(), 4);
        assert_eq!(definition.name, "Checks");
    }
}
