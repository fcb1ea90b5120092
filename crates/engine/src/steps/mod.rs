//! Step bodies that do not stop the execution: conditions, actions and their
//! sub-actions, parallel and foreach (with their children).

mod actions;

use std::collections::HashMap;

use futures_util::future::{join_all, BoxFuture};
use serde_json::{json, Value};
use tollgate_model::definition::{ErrorClass, Step, StepKind, Strategy, SubAction, Verb};
use tollgate_model::records::{StepError, StepRecord, StepStatus, Timestamp};
use tollgate_model::ExecutionResult;
use tollgate_store::Effect;
use uuid::Uuid;

use crate::clock::Clock;
use crate::condition::CompiledCondition;
use crate::notify::Notifier;
use crate::path::{set_path, Path};
use crate::template::{Mode, Scope, Secrets, Template};

/// What step bodies need from the engine, and nothing more: the clock, the secrets to
/// redact, the HTTP client and its limits, the notifier, and the compiled conditions of
/// the pinned definition. Bodies cannot reach the store, so only the run loop commits.
pub(crate) struct Tools<'a> {
    pub(crate) clock: &'a dyn Clock,
    pub(crate) secrets: &'a Secrets,
    pub(crate) http: &'a reqwest::Client,
    /// Timeout of a webhook without its own.
    pub(crate) http_timeout: std::time::Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) notifier: &'a dyn Notifier,
    pub(crate) conditions: &'a HashMap<String, CompiledCondition>,
}

/// Deterministic step-record id: a re-run of the same attempt after a crash replaces its
/// `running` record instead of adding a second one.
pub(crate) fn record_id(
    execution_id: Uuid,
    step_id: &str,
    visit: u32,
    iteration: Option<u32>,
    attempt: u32,
) -> Uuid {
    let name = match iteration {
        Some(i) => format!("step:{step_id}:{visit}:{i}:{attempt}"),
        None => format!("step:{step_id}:{visit}:{attempt}"),
    };
    Uuid::new_v5(&execution_id, name.as_bytes())
}

/// A time-ordered id for a row a store lists newest first by id (an approval request):
/// a UUID v7 of `at` whose other bits come from the v5 hash of the execution id and
/// `name`, so that under a controlled clock the same run makes the same id.
///
/// Nothing computes such an id again after its row is stored (the row is found by it),
/// so it need not be the same when a run is repeated after a crash at another time.
pub(crate) fn time_ordered_id(at: Timestamp, execution_id: Uuid, name: &[u8]) -> Uuid {
    let hash = Uuid::new_v5(&execution_id, name).into_bytes();
    let mut rest = [0; 10];
    rest.copy_from_slice(&hash[6..]);
    // A time before 1970 comes from no working clock; it counts as 1970.
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &rest).into_uuid()
}

/// One sub-action's place: the step it belongs to, its position in the step's list, the
/// step's idempotency key, and the scope its templates render in.
pub(super) struct Call<'a> {
    pub(super) tools: &'a Tools<'a>,
    pub(super) step: &'a Step,
    pub(super) index: usize,
    pub(super) key_base: &'a str,
    pub(super) scope: &'a Scope<'a>,
    pub(super) env: &'a Env,
}

/// Where a body runs: which execution, visit, attempt and foreach iteration, and the
/// local names (`item_var`, `index`) it sees.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub(crate) run_exec_id: Uuid,
    pub(crate) workflow_key: String,
    pub(crate) consumed: Vec<Uuid>,
    pub(crate) visit: u32,
    pub(crate) attempt: u32,
    pub(crate) iteration: Option<u32>,
    pub(crate) locals: Vec<(String, Value)>,
}

/// What running a step body produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct Body {
    /// Condition true / action without failure / parallel strategy met.
    pub(crate) passed: bool,
    pub(crate) input: Value,
    pub(crate) output: Value,
    pub(crate) warnings: Vec<String>,
    /// Set when the body failed.
    pub(crate) error: Option<StepError>,
    /// `allow`/`block` verbs that ran.
    pub(crate) verb_result: Option<ExecutionResult>,
    /// Writes to the engine's tables, applied with the commit.
    pub(crate) effects: Vec<Effect>,
    /// Context writes by `set` (so parallel children can be merged in order).
    pub(crate) writes: Vec<(String, Value)>,
    /// Step records of children.
    pub(crate) children: Vec<StepRecord>,
}

fn scope<'a>(
    tools: &'a Tools<'a>,
    context: &'a Value,
    env: &'a Env,
    step_id: &'a str,
    locals: &'a [(&'a str, &'a Value)],
) -> Scope<'a> {
    Scope {
        context,
        now: tools.clock.now(),
        execution_id: Some(env.run_exec_id),
        workflow_id: Some(&env.workflow_key),
        step_id: Some(step_id),
        secrets: Some(tools.secrets),
        locals,
    }
}

/// Runs a non-gate step body (top-level or child).
pub(crate) fn run_body<'a>(
    tools: &'a Tools<'a>,
    step: &'a Step,
    context: &'a mut Value,
    env: &'a Env,
) -> BoxFuture<'a, Body> {
    Box::pin(async move {
        let locals: Vec<(&str, &Value)> = env.locals.iter().map(|(k, v)| (k.as_str(), v)).collect();
        match &step.kind {
            StepKind::Condition { .. } => {
                let mut body = Body::default();
                let passed = match tools.conditions.get(&step.id) {
                    Some(condition) => condition.evaluate(
                        &scope(tools, context, env, &step.id, &locals),
                        &mut body.warnings,
                    ),
                    None => false,
                };
                body.passed = passed;
                body.output = json!({"result": passed});
                body
            }
            StepKind::Action {
                action, execute, ..
            } => {
                let mut body = run_sub_actions(tools, step, execute, context, env).await;
                body.verb_result = match action.verb {
                    Verb::Allow => Some(ExecutionResult::Allowed),
                    Verb::Block => Some(ExecutionResult::Blocked),
                    Verb::Execute | Verb::RequireApproval => None,
                };
                let reason = action.reason.as_ref().map(|r| {
                    let s = scope(tools, context, env, &step.id, &locals);
                    Template::parse(r).render_text(&s, Mode::Redacted, &mut body.warnings)
                });
                let verb = serde_json::to_value(action.verb).unwrap_or(Value::Null);
                body.output = json!({"verb": verb, "reason": reason, "actions": body.output});
                body
            }
            StepKind::Execute { execute, .. } => {
                let mut body = run_sub_actions(tools, step, execute, context, env).await;
                body.output = json!({"actions": body.output});
                body
            }
            StepKind::Parallel { parallel, .. } => {
                let snapshot = context.clone();
                let runs = parallel.steps.iter().map(|child| {
                    let mut own = snapshot.clone();
                    async move {
                        let (body, records) = run_child(tools, step, child, &mut own, env).await;
                        (child, body, records)
                    }
                });
                let results = join_all(runs).await;
                let mut body = Body::default();
                let mut outputs = serde_json::Map::new();
                let mut passes = 0;
                for (child, child_body, records) in results {
                    if child_body.passed {
                        passes += 1;
                    }
                    outputs.insert(child.id.clone(), json!({"passed": child_body.passed, "output": child_body.output, "error": child_body.error}));
                    for (path, value) in &child_body.writes {
                        set_path(context, path, value.clone());
                    }
                    body.writes.extend(child_body.writes);
                    body.effects.extend(child_body.effects);
                    body.warnings.extend(
                        child_body
                            .warnings
                            .into_iter()
                            .map(|w| format!("{}: {w}", child.id)),
                    );
                    body.children.extend(records);
                }
                let total = parallel.steps.len();
                body.passed = match parallel.strategy {
                    Strategy::AllMustPass => passes == total,
                    Strategy::AnyCanPass => passes > 0,
                    Strategy::BestEffort => true,
                };
                body.output = json!({"strategy": parallel.strategy, "passed": body.passed, "passes": passes, "children": outputs});
                body
            }
            StepKind::Foreach { foreach, .. } => {
                let mut body = Body::default();
                let items = {
                    let s = scope(tools, context, env, &step.id, &locals);
                    resolve_items(&foreach.items, &s, &mut body.warnings)
                };
                let Some(items) = items else {
                    body.error = Some(StepError {
                        class: ErrorClass::Other,
                        message: format!("`{}` is not an array", foreach.items),
                    });
                    return body;
                };
                let mut results = Vec::with_capacity(items.len());
                'items: for (index, item) in items.iter().enumerate() {
                    let mut item_env = env.clone();
                    item_env.iteration = Some(index as u32);
                    item_env
                        .locals
                        .push((foreach.item_var.clone(), item.clone()));
                    item_env.locals.push(("index".into(), json!(index)));
                    let mut item_outputs = serde_json::Map::new();
                    for (position, child) in foreach.steps.iter().enumerate() {
                        let (child_body, records) =
                            run_child(tools, step, child, context, &item_env).await;
                        body.children.extend(records);
                        body.effects.extend(child_body.effects);
                        body.warnings.extend(
                            child_body
                                .warnings
                                .iter()
                                .map(|w| format!("{}[{index}]: {w}", child.id)),
                        );
                        body.writes.extend(child_body.writes);
                        item_outputs.insert(child.id.clone(), child_body.output.clone());
                        if let Some(error) = child_body.error {
                            body.error = Some(StepError {
                                class: error.class,
                                message: format!(
                                    "`{}` failed for item {index}: {}",
                                    child.id, error.message
                                ),
                            });
                            results.push(Value::Object(item_outputs));
                            break 'items;
                        }
                        if matches!(child.kind, StepKind::Condition { .. }) && !child_body.passed {
                            // A false condition filters this item: the rest of its steps are skipped.
                            for skipped in &foreach.steps[position + 1..] {
                                body.children.push(child_record(
                                    tools,
                                    step,
                                    skipped,
                                    &item_env,
                                    StepStatus::Skipped,
                                    &Body::default(),
                                ));
                            }
                            break;
                        }
                    }
                    results.push(Value::Object(item_outputs));
                }
                body.passed = body.error.is_none();
                body.output = json!({"items": items.len(), "results": results});
                body
            }
            StepKind::Approval { .. } | StepKind::Wait { .. } | StepKind::FirstOf { .. } => {
                // Validation keeps gates out of bodies; reaching here is a bug, reported as a failure.
                Body {
                    error: Some(StepError {
                        class: ErrorClass::Other,
                        message: "a gate cannot run as a body".into(),
                    }),
                    ..Body::default()
                }
            }
        }
    })
}

/// Runs a child of a parallel/foreach with its own retries and timeout (in place: the
/// parent holds the lease); returns its body and its step records.
async fn run_child(
    tools: &Tools<'_>,
    parent: &Step,
    child: &Step,
    context: &mut Value,
    env: &Env,
) -> (Body, Vec<StepRecord>) {
    let mut records = Vec::new();
    let mut attempt = 1;
    loop {
        let started = tools.clock.now();
        let mut own = context.clone();
        let run = run_body(tools, child, &mut own, env);
        let mut body = match child.timeout {
            Some(limit) => match tokio::time::timeout(limit.as_std(), run).await {
                Ok(body) => body,
                Err(_) => Body {
                    error: Some(StepError {
                        class: ErrorClass::Timeout,
                        message: format!("did not finish within its timeout of {limit}"),
                    }),
                    ..Body::default()
                },
            },
            None => run.await,
        };
        let mut child_env = env.clone();
        child_env.attempt = attempt;
        let status = if body.error.is_some() {
            StepStatus::Failed
        } else {
            StepStatus::Completed
        };
        let mut record = child_record(tools, parent, child, &child_env, status, &body);
        record.started_at = started;
        records.append(&mut body.children);
        records.push(record);
        if let Some(error) = &body.error {
            if let Some(policy) = child
                .retry
                .as_ref()
                .filter(|p| p.retries(error.class) && attempt < p.max_attempts)
            {
                tokio::time::sleep(policy.delay_after(attempt).as_std()).await;
                attempt += 1;
                continue;
            }
            body.passed = false;
        } else {
            *context = own;
        }
        return (body, records);
    }
}

fn child_record(
    tools: &Tools<'_>,
    parent: &Step,
    child: &Step,
    env: &Env,
    status: StepStatus,
    body: &Body,
) -> StepRecord {
    let now = tools.clock.now();
    StepRecord {
        id: record_id(
            env.run_exec_id,
            &child.id,
            env.visit,
            env.iteration,
            env.attempt,
        ),
        execution_id: env.run_exec_id,
        step_id: child.id.clone(),
        step_type: child.kind.type_name().into(),
        parent_step_id: Some(parent.id.clone()),
        iteration: env.iteration,
        visit: env.visit,
        attempt: env.attempt,
        status,
        input: body.input.clone(),
        output: body.output.clone(),
        warnings: body.warnings.clone(),
        started_at: now,
        completed_at: (status != StepStatus::Skipped).then_some(now),
        error: body.error.clone(),
    }
}

/// The collection of a foreach: a dotted path, or a template yielding an array.
fn resolve_items(items: &str, scope: &Scope<'_>, warnings: &mut Vec<String>) -> Option<Vec<Value>> {
    let template = Template::parse(items);
    let value = if template.has_paths() {
        template.render(scope, Mode::Live, warnings)
    } else {
        match scope.resolve(&Path::parse(items), Mode::Live) {
            crate::template::Resolved::Found(found) => found.into_owned().unwrap_or_else(|| {
                warnings.push(format!("foreach items `{items}` is missing; no iterations"));
                Value::Array(Vec::new())
            }),
            crate::template::Resolved::Secret(_) => Value::Null,
        }
    };
    match value {
        Value::Array(items) => Some(items),
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

/// Runs a step's sub-actions in order. The first failure without `continue_on_error`
/// stops the list and fails the body.
async fn run_sub_actions(
    tools: &Tools<'_>,
    step: &Step,
    actions: &[SubAction],
    context: &mut Value,
    env: &Env,
) -> Body {
    let mut body = Body {
        passed: true,
        ..Body::default()
    };
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let key_base = match env.iteration {
        Some(i) => format!("{}:{}:{}.{i}", env.run_exec_id, step.id, env.visit),
        None => format!("{}:{}:{}", env.run_exec_id, step.id, env.visit),
    };
    for (index, action) in actions.iter().enumerate() {
        let locals: Vec<(&str, &Value)> = env.locals.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let result = {
            let s = scope(tools, context, env, &step.id, &locals);
            let call = Call {
                tools,
                step,
                index,
                key_base: &key_base,
                scope: &s,
                env,
            };
            actions::run(&call, action, &mut body).await
        };
        match result {
            Ok((input, output, writes)) => {
                for (path, value) in writes {
                    set_path(context, &path, value.clone());
                    body.writes.push((path, value));
                }
                inputs.push(input);
                outputs.push(output);
            }
            Err(failed) => {
                let (input, output, error) = *failed;
                inputs.push(input);
                outputs.push(json!({"error": {"class": error.class, "message": error.message}, "response": output}));
                if action.continue_on_error {
                    body.warnings.push(format!(
                        "{} (#{index}) failed and was skipped (continue_on_error): {}",
                        action.kind.type_name(),
                        error.message
                    ));
                } else {
                    body.error = Some(error);
                    body.passed = false;
                    break;
                }
            }
        }
    }
    body.input = json!({"actions": inputs});
    body.output = Value::Array(outputs);
    body
}
