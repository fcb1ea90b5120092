//! Entering and leaving gates: an approval's request, a wait's resolved `match` and the
//! events that arrived before it.

use serde_json::{json, Map, Value};
use tollgate_model::definition::{
    ApprovalSpec, Approvers, Branch, NotifySpec, Required, Step, StepKind, PRIORITIES,
};
use tollgate_model::records::{
    ApprovalRequest, ApprovalRung, ApprovalSla, ApprovalStatus, Cursor, Gate, GateBranch,
    Notification, StepRecord, Timestamp,
};
use tollgate_model::PauseReason;
use tollgate_store::Effect;

use crate::error::Result;
use crate::steps::{time_ordered_id, Body, Env};
use crate::template::{render_value, Mode, Scope, Template};

use super::run::{merge_output, Outcome, Run, MAX_PURE_BATCH};

/// The context root where an operator's retry leaves its marker (`from_step`, `count`,
/// `by`, `reason`, `at`, and `kept`: the approval steps whose earlier grant was reused).
pub const RETRY_ROOT: &str = "retry";

/// Early events are looked up in pages of this many.
pub(super) const EARLY_EVENT_PAGE: u32 = 500;

impl Run<'_> {
    pub(super) fn enter_approval(
        &self,
        step: &Step,
        spec: &ApprovalSpec,
        context: &Value,
        env: &Env,
        mut body: Body,
    ) -> Outcome {
        let now = self.now();
        let expires_at = spec.timeout.map(|t| now + t.as_chrono());
        let approval = self.approval_request(step, spec, context, env, expires_at, &mut body);
        let gate = Gate {
            reason: PauseReason::Approval,
            step_id: step.id.clone(),
            visit: env.visit,
            paused_at: now,
            deadline: expires_at,
            event: None,
            event_match: None,
            approval_id: Some(approval.id),
            note: None,
            correlation: None,
            branches: None,
        };
        Outcome::Gate {
            body,
            gate,
            approval: Some(Box::new(approval)),
        }
    }

    /// The approval request `spec` asks for at `step` (its templates rendered now), with
    /// its id, quorum and deadline in the step's output.
    fn approval_request(
        &self,
        step: &Step,
        spec: &ApprovalSpec,
        context: &Value,
        env: &Env,
        expires_at: Option<Timestamp>,
        body: &mut Body,
    ) -> ApprovalRequest {
        let now = self.now();
        let scope = self.scope(context, Some(&step.id));
        let warnings = &mut body.warnings;
        let reason = spec
            .reason
            .as_ref()
            .map(|r| Template::parse(r).render_text(&scope, Mode::Redacted, warnings));
        let (entity_type, entity_id) = match &spec.entity {
            Some(e) => (
                Some(Template::parse(&e.entity_type).render_text(&scope, Mode::Redacted, warnings)),
                Some(Template::parse(&e.id).render_text(&scope, Mode::Redacted, warnings)),
            ),
            None => (None, None),
        };
        let data = spec.data.as_ref().map_or(json!({}), |d| {
            render_value(d, &scope, Mode::Redacted, warnings)
        });
        let required = match spec.required {
            Required::Count(n) => n,
            Required::All => {
                let distinct: std::collections::HashSet<&String> =
                    spec.approvers.users.iter().collect();
                u32::try_from(distinct.len()).unwrap_or(u32::MAX)
            }
        };
        // Time-ordered: the inbox lists requests newest first by id.
        let approval_id = time_ordered_id(
            self.now(),
            self.exec.id,
            format!("approval:{}:{}", step.id, env.visit).as_bytes(),
        );
        body.output = merge_output(
            std::mem::take(&mut body.output),
            json!({"approval_id": approval_id, "required": required, "expires_at": expires_at}),
        );
        let approval = ApprovalRequest {
            id: approval_id,
            execution_id: self.exec.id,
            step_id: step.id.clone(),
            visit: env.visit,
            entity_type,
            entity_id,
            approver_roles: spec.approvers.roles.clone(),
            approver_users: spec.approvers.users.clone(),
            required,
            status: ApprovalStatus::Pending,
            reason,
            data,
            decisions: Vec::new(),
            requested_by: self.exec.requested_by.clone(),
            allow_self_approval: spec.allow_self_approval,
            requested_at: now,
            expires_at,
            decided_at: None,
        };
        queue_ladder(spec, &approval, &scope, body);
        if let Some(sla) = service_level(spec, &approval, &scope, &mut body.warnings) {
            body.effects.push(Effect::Sla(sla));
        }
        approval
    }

    /// Enters a `first_of` step (docs/execution-semantics.md, "First-of gates"): an event
    /// that arrived early for one of its event gates wins at once (the oldest such event,
    /// across gates); otherwise the step stops with every gate open in one gate record —
    /// its event gates each with their own type, match and key, its approval requested,
    /// its `after` gate as the deadline.
    pub(super) async fn enter_first_of(
        &self,
        step: &Step,
        branches: &[Branch],
        context: &mut Value,
        env: &Env,
    ) -> Outcome {
        let now = self.now();
        let mut body = Body::default();
        let mut gates = Vec::new();
        for (index, branch) in branches.iter().enumerate() {
            let Branch::Event { event, match_, .. } = branch else {
                continue;
            };
            let resolved = match_.as_ref().map(|m| {
                let scope = self.scope(context, Some(&step.id));
                resolve_match(
                    &serde_json::to_value(m).unwrap_or(Value::Null),
                    &scope,
                    &mut body.warnings,
                )
            });
            let correlation = resolved
                .as_ref()
                .and_then(crate::correlation::key_of_match)
                .map(Box::new);
            gates.push(GateBranch {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                event: event.clone(),
                event_match: resolved,
                correlation,
            });
        }
        let mut early: Option<(u32, tollgate_model::records::Event)> = None;
        for gate in &gates {
            let since = self.branch_since(branches, gate.index, now);
            let found = self
                .find_early_event(&gate.event, since, gate.correlation.as_deref(), |event| {
                    !env.consumed.contains(&event.id)
                        && wait_matches(gate.event_match.as_ref(), context, &event.payload, now)
                })
                .await;
            match found {
                Ok(Some(event)) => {
                    let older = early
                        .as_ref()
                        .is_none_or(|(_, e)| (event.received_at, event.id) < (e.received_at, e.id));
                    if older {
                        early = Some((gate.index, event));
                    }
                }
                Ok(None) => {}
                Err(err) => body.warnings.push(format!(
                    "could not look for `{}` events that arrived early: {err}",
                    gate.event
                )),
            }
        }
        if let Some((index, event)) = early {
            apply_event(context, &step.id, &event.payload);
            let next = match branches.get(index as usize) {
                Some(Branch::Event { next, .. }) => next.clone(),
                _ => None,
            };
            body.output = json!({"gate": "event", "branch": index, "event_id": event.id,
                "event_type": event.event_type, "early": true});
            return Outcome::Done {
                body,
                next,
                consumed: vec![event.id],
            };
        }
        let deadline = branches.iter().find_map(|b| match b {
            Branch::After { after, .. } => Some(now + after.as_chrono()),
            _ => None,
        });
        let approval = branches.iter().find_map(|b| match b {
            Branch::Approval { approval, .. } => {
                Some(self.approval_request(step, approval, context, env, deadline, &mut body))
            }
            _ => None,
        });
        body.output = merge_output(
            std::mem::take(&mut body.output),
            json!({"events": gates.iter().map(|g| &g.event).collect::<Vec<_>>(), "deadline": deadline}),
        );
        let gate = Gate {
            reason: if gates.is_empty() {
                PauseReason::Approval
            } else {
                PauseReason::Event
            },
            step_id: step.id.clone(),
            visit: env.visit,
            paused_at: now,
            deadline,
            event: None,
            event_match: None,
            approval_id: approval.as_ref().map(|a| a.id),
            note: None,
            correlation: None,
            branches: Some(gates),
        };
        Outcome::Gate {
            body,
            gate,
            approval: approval.map(Box::new),
        }
    }

    /// The earliest arrival the event gate at `index` of a `first_of` step entered at
    /// `entered` takes (as [`Self::early_since`] for a wait).
    fn branch_since(&self, branches: &[Branch], index: u32, entered: Timestamp) -> Timestamp {
        let window = match branches.get(index as usize) {
            Some(Branch::Event { early_events, .. }) => *early_events,
            _ => None,
        };
        self.window_since(window, entered)
    }

    /// On a retried execution, an approval this run already granted is kept rather than
    /// asked again (docs/operations.md, "Retrying a failed execution"): when the context's
    /// `retry` marker names another step as the retry's start, `approvals.<step>` holds an
    /// `approved` decision, and this retry has not kept that step's decision before. Returns
    /// the step's output and its successor, and notes the step in `retry.kept`, so a loop
    /// that comes back to the gate asks again.
    pub(super) fn kept_approval(
        step: &Step,
        context: &mut Value,
        next_after: Option<String>,
    ) -> Option<(Value, Option<String>)> {
        let marker = context.get(RETRY_ROOT)?.as_object()?;
        let from_step = marker.get("from_step")?.as_str()?;
        let already = marker
            .get("kept")
            .and_then(Value::as_array)
            .is_some_and(|kept| kept.iter().any(|k| k.as_str() == Some(step.id.as_str())));
        if from_step == step.id || already {
            return None;
        }
        let decision = context.get("approvals")?.get(&step.id)?;
        if decision.get("status").and_then(Value::as_str) != Some("approved") {
            return None;
        }
        let mut output = decision.clone();
        if let Value::Object(map) = &mut output {
            map.insert("kept".into(), Value::Bool(true));
        }
        if let Some(Value::Object(marker)) = context.get_mut(RETRY_ROOT) {
            let kept = marker.entry("kept").or_insert_with(|| json!([]));
            if let Value::Array(list) = kept {
                list.push(Value::String(step.id.clone()));
            }
        }
        Some((output, next_after))
    }

    pub(super) async fn enter_wait(
        &self,
        step: &Step,
        wait: &tollgate_model::definition::WaitSpec,
        next: Option<String>,
        context: &mut Value,
        env: &Env,
    ) -> Outcome {
        let now = self.now();
        let mut body = Body::default();
        let resolved = wait.match_.as_ref().map(|m| {
            let scope = self.scope(context, Some(&step.id));
            resolve_match(
                &serde_json::to_value(m).unwrap_or(Value::Null),
                &scope,
                &mut body.warnings,
            )
        });
        // An event that arrived after the execution started but before this wait is not
        // lost: it is looked for first, through every page (no cap may hide a match).
        let since = self.early_since(wait, now);
        let correlation = resolved.as_ref().and_then(crate::correlation::key_of_match);
        let early = self
            .find_early_event(&wait.event, since, correlation.as_ref(), |event| {
                !env.consumed.contains(&event.id)
                    && wait_matches(resolved.as_ref(), context, &event.payload, now)
            })
            .await;
        match early {
            Ok(Some(event)) => {
                apply_event(context, &step.id, &event.payload);
                body.output =
                    json!({"event_id": event.id, "event_type": event.event_type, "early": true});
                return Outcome::Done {
                    body,
                    next,
                    consumed: vec![event.id],
                };
            }
            Ok(None) => {}
            Err(err) => body.warnings.push(format!(
                "could not look for events that arrived early: {err}"
            )),
        }
        body.output =
            json!({"event": wait.event, "deadline": wait.timeout.map(|t| now + t.as_chrono())});
        let gate = Gate {
            reason: PauseReason::Event,
            step_id: step.id.clone(),
            visit: env.visit,
            paused_at: now,
            deadline: wait.timeout.map(|t| now + t.as_chrono()),
            event: Some(wait.event.clone()),
            correlation: correlation.map(Box::new),
            event_match: resolved,
            approval_id: None,
            note: None,
            branches: None,
        };
        Outcome::Gate {
            body,
            gate,
            approval: None,
        }
    }

    /// After committing a wait (or a `first_of` step with event gates): an event stored
    /// while we were entering it may have been missed both by our look-up and by its
    /// sender's scan of waiting executions. Look once more, for each awaited type, now
    /// that the wait is visible; claim it ourselves if one matches.
    pub(super) async fn recheck_wait(&mut self) -> Result<bool> {
        let Some(gate) = self.exec.gate.clone() else {
            return Ok(false);
        };
        let now = self.now();
        let step = self.definition().step(&gate.step_id).cloned();
        let mut awaited = Vec::new();
        if let Some(event_type) = gate.event.clone() {
            let since = match step.as_ref().map(|s| &s.kind) {
                Some(StepKind::Wait { wait, .. }) => self.early_since(wait, gate.paused_at),
                _ => self.exec.started_at,
            };
            awaited.push((
                event_type,
                gate.event_match.clone(),
                gate.correlation.clone(),
                since,
            ));
        }
        for branch in gate.branches.iter().flatten() {
            let since = match step.as_ref().map(|s| &s.kind) {
                Some(StepKind::FirstOf { first_of }) => {
                    self.branch_since(first_of, branch.index, gate.paused_at)
                }
                _ => self.exec.started_at,
            };
            awaited.push((
                branch.event.clone(),
                branch.event_match.clone(),
                branch.correlation.clone(),
                since,
            ));
        }
        let mut early: Option<tollgate_model::records::Event> = None;
        for (event_type, event_match, correlation, since) in awaited {
            let found = self
                .find_early_event(&event_type, since, correlation.as_deref(), |event| {
                    !self.exec.consumed_events.contains(&event.id)
                        && wait_matches(
                            event_match.as_ref(),
                            &self.exec.context,
                            &event.payload,
                            now,
                        )
                })
                .await?;
            if let Some(event) = found {
                if early
                    .as_ref()
                    .is_none_or(|e| (event.received_at, event.id) < (e.received_at, e.id))
                {
                    early = Some(event);
                }
            }
        }
        let Some(event) = early else {
            return Ok(false);
        };
        match self
            .inner()
            .store
            .claim_wait(
                self.exec.id,
                Some(self.exec.version),
                &event,
                None,
                &self.engine.claim(),
                now,
            )
            .await
        {
            Ok(claimed) => {
                self.exec = claimed;
                Ok(true)
            }
            Err(err) if err.is_conflict() => Ok(false), // the sender claimed it
            Err(err) => Err(err.into()),
        }
    }

    /// The earliest arrival a wait entered at `entered` takes: since the execution
    /// started, or its `early_events` window when that is shorter.
    fn early_since(
        &self,
        wait: &tollgate_model::definition::WaitSpec,
        entered: tollgate_model::records::Timestamp,
    ) -> tollgate_model::records::Timestamp {
        self.window_since(wait.early_events, entered)
    }

    /// `entered` less an `early_events` window, never before the execution started.
    fn window_since(
        &self,
        window: Option<tollgate_model::duration::Duration>,
        entered: Timestamp,
    ) -> Timestamp {
        let window = window
            .and_then(|d| chrono::TimeDelta::from_std(d.as_std()).ok())
            .and_then(|d| entered.checked_sub_signed(d));
        window.map_or(self.exec.started_at, |w| w.max(self.exec.started_at))
    }

    /// The oldest event of `event_type` this execution may consume (received at or
    /// after `since`, which is never before it started; addressed to nobody or to it;
    /// not the event that started it) for which `accept` holds, looked for page by page.
    /// With the wait's correlation `key`, the events keyed for its shape are found by
    /// that key — one probe however many others of the type are kept — and only those
    /// newer than the keying has reached are read one by one.
    pub(super) async fn find_early_event(
        &self,
        event_type: &str,
        since: tollgate_model::records::Timestamp,
        key: Option<&tollgate_model::records::Correlation>,
        mut accept: impl FnMut(&tollgate_model::records::Event) -> bool,
    ) -> tollgate_store::Result<Option<tollgate_model::records::Event>> {
        let store = &self.inner().store;
        let mut after = None;
        let keyed_through = match key {
            Some(key) => store
                .event_shapes(Some(event_type))
                .await?
                .into_iter()
                .find(|s| s.shape == key.shape)
                .and_then(|s| s.keyed_through),
            None => None,
        };
        if let (Some(key), Some(through)) = (key, keyed_through) {
            let mut keyed_after = None;
            loop {
                let page = store
                    .keyed_events_for_wait(
                        event_type,
                        &key.shape,
                        &key.hash,
                        since,
                        self.exec.id,
                        keyed_after,
                        through,
                        EARLY_EVENT_PAGE,
                    )
                    .await?;
                let full = page.len() == EARLY_EVENT_PAGE as usize;
                keyed_after = page.last().map(|e| (e.received_at, e.id));
                if let Some(found) = page
                    .into_iter()
                    .find(|e| !e.started.contains(&self.exec.id) && accept(e))
                {
                    return Ok(Some(found));
                }
                if !full {
                    break;
                }
            }
            after = Some(through);
        }
        loop {
            let page = self
                .inner()
                .store
                .events_for_wait(event_type, since, self.exec.id, after, EARLY_EVENT_PAGE)
                .await?;
            let full = page.len() == EARLY_EVENT_PAGE as usize;
            after = page.last().map(|e| (e.received_at, e.id));
            if let Some(found) = page
                .into_iter()
                .find(|e| !e.started.contains(&self.exec.id) && accept(e))
            {
                return Ok(Some(found));
            }
            if !full {
                return Ok(None);
            }
        }
    }

    /// Leaves an approval gate for `next`. Resolving a decision has no side effect and
    /// the deciding signal is stored on the execution until the next commit clears it,
    /// so — like a pure step — the move rides on the next commit instead of costing one
    /// of its own: a worker that dies before that commit is followed by one that resolves
    /// the same stored signal the same way.
    pub(super) async fn leave_gate(
        &mut self,
        next: Option<String>,
        records: Vec<StepRecord>,
    ) -> Result<()> {
        let batchable = self.pending.len() < MAX_PURE_BATCH && !self.exec.pause_requested;
        match next {
            Some(next) if batchable => {
                let visit = self.exec.visits.get(&next).copied().unwrap_or(0) + 1;
                self.exec.cursor = Some(Cursor::new(next, visit));
                self.exec.gate = None;
                self.exec.wake = None;
                self.pending.extend(records);
                Ok(())
            }
            other => {
                self.goto(other, records, Vec::new(), Vec::new()).await?;
                Ok(())
            }
        }
    }
}

/// An event's payload lands at `events.<step_id>` and replaces `event`.
pub(super) fn apply_event(context: &mut Value, step_id: &str, payload: &Value) {
    if let Value::Object(map) = context {
        let events = map.entry("events").or_insert_with(|| json!({}));
        if !events.is_object() {
            *events = json!({});
        }
        if let Value::Object(events) = events {
            events.insert(step_id.to_owned(), payload.clone());
        }
        map.insert("event".into(), payload.clone());
    }
}

/// Resolves the templates in a wait's `match` condition (JSON form) at entry: only the
/// `value`s are rendered; fields stay paths (`event.*` is the incoming payload).
pub(super) fn resolve_match(
    condition: &Value,
    scope: &Scope<'_>,
    warnings: &mut Vec<String>,
) -> Value {
    match condition {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let v = match k.as_str() {
                    "value" => render_value(v, scope, Mode::Live, warnings),
                    "and" | "or" => Value::Array(
                        v.as_array()
                            .map(|a| {
                                a.iter()
                                    .map(|c| resolve_match(c, scope, warnings))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                    "not" => resolve_match(v, scope, warnings),
                    _ => v.clone(),
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Whether `gate` takes an event of `event_type` with `payload`: a wait's event whose
/// match holds, or any event gate of a `first_of` step of that type whose match holds.
pub fn gate_accepts(
    gate: &Gate,
    context: &Value,
    event_type: &str,
    payload: &Value,
    now: Timestamp,
) -> bool {
    (gate.event.as_deref() == Some(event_type)
        && wait_matches(gate.event_match.as_ref(), context, payload, now))
        || gate
            .branches
            .iter()
            .flatten()
            .filter(|b| b.event == event_type)
            .any(|b| wait_matches(b.event_match.as_ref(), context, payload, now))
}

/// Whether an event payload satisfies a wait's resolved `match` (absent: any event of
/// the awaited type). `event` in the condition is the payload; other roots read the
/// execution's context.
pub fn wait_matches(
    resolved: Option<&Value>,
    context: &Value,
    payload: &Value,
    now: Timestamp,
) -> bool {
    let Some(resolved) = resolved else {
        return true;
    };
    let Some(compiled) = crate::correlation::compiled_match(resolved) else {
        return false;
    };
    let locals = [("event", payload)];
    let scope = Scope {
        locals: &locals,
        ..Scope::new(context, now)
    };
    compiled.evaluate(&scope, &mut Vec::new())
}

/// The request's service level from the step's `priority` and `due`, rendered now from
/// the context at the gate (docs/approvals.md, "Service levels"); `None` when the step
/// gives neither. A template that renders to no priority or no time counts as none,
/// with a warning on the step record.
fn service_level(
    spec: &ApprovalSpec,
    approval: &ApprovalRequest,
    scope: &Scope,
    warnings: &mut Vec<String>,
) -> Option<ApprovalSla> {
    let service = spec.service.as_deref()?;
    let priority = match &service.priority {
        Some(p) => {
            let rendered = Template::parse(p).render_text(scope, Mode::Live, warnings);
            let rendered = rendered.trim();
            if rendered.is_empty() {
                "normal".to_owned()
            } else if PRIORITIES.contains(&rendered) {
                rendered.to_owned()
            } else {
                warnings.push(format!(
                    "priority `{rendered}` is not one of {}; the request is `normal`",
                    PRIORITIES.join(", ")
                ));
                "normal".to_owned()
            }
        }
        None => "normal".to_owned(),
    };
    let due_at = service.due.as_deref().and_then(|due| {
        if !due.contains("{{") {
            return due
                .parse::<tollgate_model::duration::Duration>()
                .ok()
                .map(|d| approval.requested_at + d.as_chrono());
        }
        let rendered = Template::parse(due).render_text(scope, Mode::Live, warnings);
        if rendered.trim().is_empty() {
            return None;
        }
        match chrono::DateTime::parse_from_rfc3339(rendered.trim()) {
            Ok(at) => Some(at.with_timezone(&chrono::Utc)),
            Err(err) => {
                warnings.push(format!(
                    "due `{rendered}` is not an RFC 3339 time ({err}); the request has no due time"
                ));
                None
            }
        }
    });
    Some(ApprovalSla {
        approval_id: approval.id,
        priority,
        due_at,
    })
}

/// Queues what an approval request sends (docs/notifications.md): its `notify` messages
/// now, in the gate's own commit, and its reminders and escalations as rungs fired
/// later. Everything is rendered now, from the context at the gate, redacted.
fn queue_ladder(spec: &ApprovalSpec, approval: &ApprovalRequest, scope: &Scope, body: &mut Body) {
    let now = approval.requested_at;
    // Whom a message's decision link decides as when the entry names no `user`: the
    // first approver role the message is about, as the address it goes to.
    let role_link = |approvers: &Approvers| approvers.roles.first().map(|r| format!("role:{r}"));
    let render = |specs: &[NotifySpec],
                  kind: &str,
                  default_link: Option<String>,
                  warnings: &mut Vec<String>| {
        specs
            .iter()
            .map(|n| {
                let mut text = |t: &Option<String>| {
                    t.as_ref()
                        .map(|t| Template::parse(t).render_text(scope, Mode::Redacted, warnings))
                };
                let mut out = Notification::queued(
                    approval.execution_id,
                    &approval.step_id,
                    kind,
                    &n.channel,
                    now,
                );
                out.recipients = text(&n.to).into_iter().collect();
                out.message = text(&n.message).unwrap_or_default();
                out.subject = text(&n.subject);
                out.link_user = text(&n.user).or_else(|| default_link.clone());
                out.approval_id = Some(approval.id);
                out
            })
            .collect::<Vec<_>>()
    };
    let warnings = &mut body.warnings;
    let first_link = role_link(&spec.approvers);
    let first = render(&spec.notify, "approval", first_link.clone(), warnings);
    let mut rungs = Vec::new();
    for after in &spec.reminders {
        let notify = render(&spec.notify, "reminder", first_link.clone(), warnings);
        rungs.push((after, "reminder", Approvers::default(), notify));
    }
    for rung in &spec.escalate {
        let notify = render(
            &rung.notify,
            "escalation",
            role_link(&rung.approvers),
            warnings,
        );
        rungs.push((&rung.after, "escalation", rung.approvers.clone(), notify));
    }
    body.effects.extend(first.into_iter().map(Effect::Notify));
    for (position, (after, kind, approvers, notify)) in rungs.into_iter().enumerate() {
        body.effects.push(Effect::Rung(ApprovalRung {
            approval_id: approval.id,
            execution_id: approval.execution_id,
            position: u32::try_from(position).unwrap_or(u32::MAX),
            kind: kind.to_owned(),
            due_at: now + after.as_chrono(),
            add_roles: approvers.roles,
            add_users: approvers.users,
            notify,
            fired_at: None,
            outcome: None,
        }));
    }
}
