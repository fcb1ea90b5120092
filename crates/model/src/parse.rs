//! Turning JSON into a [`WorkflowDefinition`], reporting **every** problem with its path.
//!
//! The parser never stops at the first mistake: a field that cannot be read is reported and
//! replaced by a neutral value so that the rest of the document is still checked. A
//! definition is only handed out when no error was found, so those neutral values never
//! escape. The compatibility forms (docs/workflow-format.md) are accepted here and nowhere else.

use std::collections::HashSet;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::condition::{Condition, Leaf, Operator};
use crate::definition::{
    ActionSpec, ApprovalSpec, Approvers, Backoff, Branch, CompatApproval, ContextSpec, EntityRef,
    ErrorClass, EscalationRung, ForeachSpec, FormSpec, HttpRequest, LogLevel, NotifySpec,
    OnTimeout, ParallelSpec, Required, RetryPolicy, ServiceLevelSpec, Step, StepKind, Strategy,
    SubAction, SubActionKind, Trigger, Verb, WaitSpec, WorkflowDefinition,
};
use crate::duration::Duration;
use crate::problem::{Path, Report};
use crate::validate;

/// A definition that parsed and validated, with its warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The canonical definition.
    pub definition: WorkflowDefinition,
    /// Problems that do not stop it from running (e.g. unreachable steps).
    pub warnings: Vec<crate::Problem>,
}

/// Parses and validates a definition document (flat or nested under `definition`).
///
/// Returns the definition and its warnings, or a report listing every error (and the
/// warnings found so far).
pub fn load(document: &Value) -> Result<Loaded, Report> {
    let (definition, report) = check_document(document);
    match definition {
        Some(definition) if report.is_valid() => Ok(Loaded {
            definition,
            warnings: report.warnings,
        }),
        _ => Err(report),
    }
}

/// Parses a definition held in a JSON string (see [`load`]); a syntax error is reported at
/// the document root with its line and column.
pub fn load_str(text: &str) -> Result<Loaded, Report> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => load(&value),
        Err(err) => {
            let mut report = Report::default();
            report.error(
                &Path::root(),
                format!(
                    "malformed JSON at line {}, column {}: {err}",
                    err.line(),
                    err.column()
                ),
            );
            Err(report)
        }
    }
}

/// Checks a document and returns every error and warning, whether or not it is valid.
pub fn check(document: &Value) -> Report {
    check_document(document).1
}

fn check_document(document: &Value) -> (Option<WorkflowDefinition>, Report) {
    let mut parser = Parser {
        report: Report::default(),
        all_ids: HashSet::new(),
    };
    let definition = parser.definition(document);
    if let Some(def) = &definition {
        validate::check(def, &parser.all_ids, &mut parser.report);
    }
    (definition, parser.report)
}

struct Parser {
    report: Report,
    /// Ids of every step seen, including ones too broken to build, so that a reference to
    /// a broken step is not also reported as a reference to a missing one.
    all_ids: HashSet<String>,
}

/// The keys of one JSON object, tracking which were read so the rest can be reported as
/// unknown.
struct Fields<'v> {
    map: &'v Map<String, Value>,
    path: Path,
    used: HashSet<&'static str>,
}

impl<'v> Fields<'v> {
    fn get(&mut self, key: &'static str) -> Option<&'v Value> {
        self.used.insert(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn at(&self, key: &str) -> Path {
        self.path.key(key)
    }

    /// Reports keys that were never read, with the nearest known one when it looks like
    /// a typo.
    fn finish(self, report: &mut Report, what: &str) {
        for key in self.map.keys() {
            if !self.used.contains(key.as_str()) {
                report.error(
                    &self.path.key(key),
                    format!(
                        "unknown field `{key}` in {what}{}",
                        did_you_mean(key, self.used.iter().copied())
                    ),
                );
            }
        }
    }
}

/// ` — did you mean `x`?` when `word` is a likely typo of one of `known` (at most one
/// edit per three letters, and at least one), else nothing.
pub(crate) fn did_you_mean<'k>(word: &str, known: impl IntoIterator<Item = &'k str>) -> String {
    let limit = (word.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), k))
        .filter(|(d, k)| *d <= limit && *k != word)
        .min()
        .map(|(_, k)| format!(" — did you mean `{k}`?"))
        .unwrap_or_default()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Parser {
    fn object<'v>(&mut self, value: &'v Value, path: &Path, what: &str) -> Option<Fields<'v>> {
        if let Value::Object(map) = value {
            Some(Fields {
                map,
                path: path.clone(),
                used: HashSet::new(),
            })
        } else {
            self.report.error(
                path,
                format!("{what} must be an object, not {}", type_name(value)),
            );
            None
        }
    }

    fn string_value(&mut self, value: &Value, path: &Path) -> Option<String> {
        if let Value::String(s) = value {
            Some(s.clone())
        } else {
            self.report
                .error(path, format!("must be a string, not {}", type_name(value)));
            None
        }
    }

    fn opt_string(&mut self, f: &mut Fields<'_>, key: &'static str) -> Option<String> {
        let value = f.get(key)?;
        self.string_value(value, &f.at(key))
    }

    fn req_string(&mut self, f: &mut Fields<'_>, key: &'static str, what: &str) -> String {
        match f.get(key) {
            Some(value) => self.string_value(value, &f.at(key)).unwrap_or_default(),
            None => {
                self.report.error(
                    &f.at(key),
                    format!("missing required field `{key}` ({what})"),
                );
                String::new()
            }
        }
    }

    fn opt_bool(&mut self, f: &mut Fields<'_>, key: &'static str) -> Option<bool> {
        match f.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                let path = f.at(key);
                self.report.error(
                    &path,
                    format!("must be true or false, not {}", type_name(other)),
                );
                None
            }
        }
    }

    fn opt_u32(&mut self, f: &mut Fields<'_>, key: &'static str) -> Option<u32> {
        let value = f.get(key)?;
        match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.report.error(
                    &f.at(key),
                    format!("must be a whole number from 0 to {}", u32::MAX),
                );
                None
            }
        }
    }

    fn duration_at(&mut self, value: &Value, path: &Path) -> Option<Duration> {
        let text = self.string_value(value, path)?;
        match text.parse::<Duration>() {
            Ok(d) => Some(d),
            Err(err) => {
                self.report.error(path, err.to_string());
                None
            }
        }
    }

    fn opt_duration(&mut self, f: &mut Fields<'_>, key: &'static str) -> Option<Duration> {
        let value = f.get(key)?;
        self.duration_at(value, &f.at(key))
    }

    fn string_list(&mut self, f: &mut Fields<'_>, key: &'static str) -> Vec<String> {
        let Some(value) = f.get(key) else {
            return Vec::new();
        };
        let path = f.at(key);
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string_value(item, &path.index(i)))
                .collect(),
            other => {
                self.report.error(
                    &path,
                    format!("must be an array of strings, not {}", type_name(other)),
                );
                Vec::new()
            }
        }
    }

    fn definition(&mut self, document: &Value) -> Option<WorkflowDefinition> {
        let root = Path::root();
        let mut top = self.object(document, &root, "a workflow definition")?;
        // Compatibility: trigger/context/steps/timeout nested under "definition".
        let mut nested = match top.get("definition") {
            Some(inner) => self.object(inner, &root.key("definition"), "`definition`"),
            None => None,
        };
        let mut pick = |parser: &mut Self,
                        top: &mut Fields<'_>,
                        key: &'static str|
         -> Option<(Value, Path)> {
            let outer = top.get(key).map(|v| (v.clone(), top.at(key)));
            let inner = nested
                .as_mut()
                .and_then(|n| n.get(key).map(|v| (v.clone(), n.at(key))));
            match (outer, inner) {
                (Some(o), Some((_, inner_path))) => {
                    parser.report.error(
                        &inner_path,
                        format!("`{key}` is given both at the top level and under `definition`"),
                    );
                    Some(o)
                }
                (o, i) => o.or(i),
            }
        };
        let trigger = pick(self, &mut top, "trigger");
        let context = pick(self, &mut top, "context");
        let steps = pick(self, &mut top, "steps");
        let timeout = pick(self, &mut top, "timeout");
        let max_steps = pick(self, &mut top, "max_steps");
        let retention = pick(self, &mut top, "retention");

        let workflow_id = self.req_string(&mut top, "workflow_id", "the workflow's string id");
        let version = self.req_string(&mut top, "version", "e.g. \"1.0.0\"");
        let name = self
            .opt_string(&mut top, "name")
            .unwrap_or_else(|| workflow_id.clone());
        let description = self.opt_string(&mut top, "description");
        let enabled = self.opt_bool(&mut top, "enabled").unwrap_or(true);
        let tags = self.string_list(&mut top, "tags");
        let metadata = top.get("metadata").cloned();
        let input_schema = match top.get("input_schema") {
            Some(schema @ Value::Object(_)) => Some(schema.clone()),
            Some(_) => {
                self.report.error(
                    &top.at("input_schema"),
                    "must be a JSON Schema object (e.g. {\"type\": \"object\", \"properties\": {…}})",
                );
                None
            }
            None => None,
        };
        let strict_paths = self.opt_bool(&mut top, "strict_paths").unwrap_or(false);
        // Fields some exporters of the replaced system add; their values come from the
        // server, so they are accepted and ignored rather than refused.
        for ignored in ["id", "created_at", "updated_at"] {
            let _ = top.get(ignored);
        }

        let trigger = match trigger {
            Some((value, path)) => self.trigger(&value, &path),
            None => Trigger::Manual,
        };
        let context = match context {
            Some((value, path)) => self.context(&value, &path),
            None => ContextSpec::default(),
        };
        let timeout = timeout.and_then(|(value, path)| self.duration_at(&value, &path));
        let retention = retention.and_then(|(value, path)| {
            let retention = self.duration_at(&value, &path)?;
            if retention.as_std() < std::time::Duration::from_secs(60) {
                self.report.error(
                    &path,
                    "must be at least 1m: ended executions are deleted this long after they end",
                );
                return None;
            }
            Some(retention)
        });
        let max_steps = max_steps.and_then(|(value, path)| {
            match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n >= 1 => Some(n),
                _ => {
                    self.report
                        .error(&path, "must be a whole number of at least 1");
                    None
                }
            }
        });
        let steps = match steps {
            Some((value, path)) => self.steps(&value, &path),
            None => {
                self.report
                    .error(&root.key("steps"), "missing required field `steps`");
                Vec::new()
            }
        };
        if let Some(nested) = nested {
            nested.finish(&mut self.report, "`definition`");
        }
        top.finish(&mut self.report, "the workflow definition");
        Some(WorkflowDefinition {
            workflow_id,
            version,
            name,
            description,
            enabled,
            tags,
            trigger,
            context,
            timeout,
            max_steps,
            retention,
            metadata,
            input_schema,
            strict_paths,
            steps,
        })
    }

    fn trigger(&mut self, value: &Value, path: &Path) -> Trigger {
        let Some(mut f) = self.object(value, path, "`trigger`") else {
            return Trigger::Manual;
        };
        let kind = self.req_string(&mut f, "type", "event, manual or schedule");
        let trigger = match kind.as_str() {
            "event" => Trigger::Event {
                event: self.req_string(
                    &mut f,
                    "event",
                    "the event type or pattern, e.g. \"order.*\"",
                ),
            },
            "manual" => Trigger::Manual,
            "schedule" => Trigger::Schedule {
                cron: self.req_string(&mut f, "cron", "a cron expression"),
                timezone: self.opt_string(&mut f, "timezone"),
            },
            "" => Trigger::Manual,
            other => {
                self.report.error(
                    &f.at("type"),
                    format!(
                        "unknown trigger type `{other}` (expected event, manual or schedule){}",
                        did_you_mean(other, ["event", "manual", "schedule"])
                    ),
                );
                return Trigger::Manual;
            }
        };
        f.finish(&mut self.report, "`trigger`");
        trigger
    }

    fn context(&mut self, value: &Value, path: &Path) -> ContextSpec {
        let Some(mut f) = self.object(value, path, "`context`") else {
            return ContextSpec::default();
        };
        let load = self.string_list(&mut f, "load");
        f.finish(&mut self.report, "`context`");
        ContextSpec { load }
    }

    fn steps(&mut self, value: &Value, path: &Path) -> Vec<Step> {
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.step(item, &path.index(i)))
                .collect(),
            other => {
                self.report.error(
                    path,
                    format!("must be an array of steps, not {}", type_name(other)),
                );
                Vec::new()
            }
        }
    }

    /// A step, or (when it is too broken to build) an inert stand-in carrying its id,
    /// so that the paths of the steps after it stay right. Errors have been reported
    /// either way, so a stand-in never leaves the parser.
    fn step(&mut self, value: &Value, path: &Path) -> Step {
        let stand_in = |id: String| Step {
            id,
            name: None,
            description: None,
            kind: StepKind::Execute {
                execute: vec![inert_sub_action()],
                next: None,
            },
            retry: None,
            timeout: None,
            on_error: None,
            metadata: None,
        };
        let Some(mut f) = self.object(value, path, "a step") else {
            return stand_in(String::new());
        };
        let id = self.req_string(&mut f, "id", "a unique step id");
        if !id.is_empty() {
            self.all_ids.insert(id.clone());
        }
        let name = self.opt_string(&mut f, "name");
        let description = self.opt_string(&mut f, "description");
        let metadata = f.get("metadata").cloned();
        let retry = f.get("retry").map(|v| self.retry(v, &path.key("retry")));
        let timeout = self.opt_duration(&mut f, "timeout");
        let on_error = self.opt_string(&mut f, "on_error");
        let kind_name = self.req_string(&mut f, "type", "the step type");
        let kind = match kind_name.as_str() {
            "condition" => StepKind::Condition {
                condition: self.required_condition(&mut f, "condition"),
                on_true: self.opt_string(&mut f, "on_true"),
                on_false: self.opt_string(&mut f, "on_false"),
            },
            "action" => self.action_step(&mut f),
            "execute" => StepKind::Execute {
                execute: self.sub_actions(&mut f, true),
                next: self.opt_string(&mut f, "next"),
            },
            "approval" => {
                let approval = match f.get("approval") {
                    Some(v) => self.approval(v, &f.at("approval")),
                    None => {
                        self.report.error(
                            &f.at("approval"),
                            "missing required field `approval` (approvers, required, timeout, …)",
                        );
                        empty_approval()
                    }
                };
                StepKind::Approval {
                    approval,
                    on_approve: self.opt_string(&mut f, "on_approve"),
                    on_reject: self.opt_string(&mut f, "on_reject"),
                }
            }
            "wait" => {
                let wait = match f.get("wait") {
                    Some(v) => self.wait(v, &f.at("wait")),
                    None => {
                        self.report.error(
                            &f.at("wait"),
                            "missing required field `wait` (event, match, timeout)",
                        );
                        WaitSpec {
                            event: String::new(),
                            match_: None,
                            timeout: None,
                            on_timeout: None,
                            early_events: None,
                        }
                    }
                };
                StepKind::Wait {
                    wait,
                    next: self.opt_string(&mut f, "next"),
                }
            }
            "first_of" => {
                let first_of = match f.get("first_of") {
                    Some(v) => self.first_of(v, &f.at("first_of")),
                    None => {
                        self.report.error(
                            &f.at("first_of"),
                            "missing required field `first_of` (an array of gates: event, approval or after)",
                        );
                        Vec::new()
                    }
                };
                StepKind::FirstOf { first_of }
            }
            "parallel" => {
                let parallel = match f.get("parallel") {
                    Some(v) => self.parallel(v, &f.at("parallel")),
                    None => {
                        self.report.error(
                            &f.at("parallel"),
                            "missing required field `parallel` (strategy, steps)",
                        );
                        ParallelSpec {
                            strategy: Strategy::default(),
                            steps: Vec::new(),
                        }
                    }
                };
                StepKind::Parallel {
                    parallel,
                    next: self.opt_string(&mut f, "next"),
                    on_false: self.opt_string(&mut f, "on_false"),
                }
            }
            "foreach" => {
                let foreach = match f.get("foreach") {
                    Some(v) => self.foreach(v, &f.at("foreach")),
                    None => {
                        self.report.error(
                            &f.at("foreach"),
                            "missing required field `foreach` (items, item_var, steps)",
                        );
                        ForeachSpec {
                            items: String::new(),
                            item_var: "item".into(),
                            steps: Vec::new(),
                        }
                    }
                };
                StepKind::Foreach {
                    foreach,
                    next: self.opt_string(&mut f, "next"),
                }
            }
            "" => return stand_in(id),
            other => {
                self.report.error(
                    &f.at("type"),
                    format!("unknown step type `{other}` (expected condition, action, execute, approval, wait, first_of, parallel or foreach){}", did_you_mean(other, ["condition", "action", "execute", "approval", "wait", "first_of", "parallel", "foreach"])),
                );
                return stand_in(id);
            }
        };
        f.finish(&mut self.report, &format!("a `{kind_name}` step"));
        Step {
            id,
            name,
            description,
            kind,
            retry,
            timeout,
            on_error,
            metadata,
        }
    }

    fn action_step(&mut self, f: &mut Fields<'_>) -> StepKind {
        let action = match f.get("action") {
            // Compatibility: the verb as a bare string.
            Some(Value::String(verb)) => ActionSpec {
                verb: self.verb(verb, &f.at("action")),
                reason: None,
            },
            Some(value) => {
                let path = f.at("action");
                match self.object(value, &path, "`action`") {
                    Some(mut a) => {
                        // Compatibility: the verb under `type` or under `action`.
                        let verb = match (a.get("type"), a.get("action")) {
                            (Some(_), Some(_)) => {
                                self.report
                                    .error(&a.at("action"), "give the verb once, as `type`");
                                Verb::Execute
                            }
                            (Some(v), None) => self.verb_value(v, &a.at("type")),
                            (None, Some(v)) => self.verb_value(v, &a.at("action")),
                            (None, None) => {
                                self.report.error(&a.at("type"), "missing required field `type` (allow, block, execute or require_approval)");
                                Verb::Execute
                            }
                        };
                        let reason = self.opt_string(&mut a, "reason");
                        a.finish(&mut self.report, "`action`");
                        ActionSpec { verb, reason }
                    }
                    None => ActionSpec {
                        verb: Verb::Execute,
                        reason: None,
                    },
                }
            }
            None => {
                self.report.error(
                    &f.at("action"),
                    "missing required field `action` (allow, block, execute or require_approval)",
                );
                ActionSpec {
                    verb: Verb::Execute,
                    reason: None,
                }
            }
        };
        StepKind::Action {
            action,
            execute: self.sub_actions(f, false),
            next: self.opt_string(f, "next"),
            on_approve: self.opt_string(f, "on_approve"),
            on_reject: self.opt_string(f, "on_reject"),
        }
    }

    fn verb_value(&mut self, value: &Value, path: &Path) -> Verb {
        match self.string_value(value, path) {
            Some(name) => self.verb(&name, path),
            None => Verb::Execute,
        }
    }

    fn verb(&mut self, name: &str, path: &Path) -> Verb {
        Verb::parse(name).unwrap_or_else(|| {
            self.report.error(path, format!("unknown action verb `{name}` (expected allow, block, execute or require_approval){}", did_you_mean(name, ["allow", "block", "execute", "require_approval"])));
            Verb::Execute
        })
    }

    fn required_condition(&mut self, f: &mut Fields<'_>, key: &'static str) -> Condition {
        match f.get(key) {
            Some(value) => self.condition(value, &f.at(key)),
            None => {
                self.report
                    .error(&f.at(key), format!("missing required field `{key}`"));
                Condition::And { and: Vec::new() }
            }
        }
    }

    /// Parses a condition tree. A node is exactly one of: a leaf, `and`, `or`, `not`.
    pub(crate) fn condition(&mut self, value: &Value, path: &Path) -> Condition {
        // Stands in for a condition that could not be read (already reported).
        let unreadable = Condition::And { and: Vec::new() };
        let Some(mut f) = self.object(value, path, "a condition") else {
            return unreadable;
        };
        let combinators: Vec<&str> = ["and", "or", "not"]
            .into_iter()
            .filter(|k| f.map.contains_key(*k))
            .collect();
        let is_leaf = ["field", "operator", "value"]
            .iter()
            .any(|k| f.map.contains_key(*k));
        if is_leaf && !combinators.is_empty() {
            self.report.error(path, format!("a condition is either a leaf (field, operator, value) or one of and/or/not, not both: found `{}` beside a leaf", combinators[0]));
            return unreadable;
        }
        if combinators.len() > 1 {
            self.report.error(
                path,
                format!(
                    "a condition node takes one of and/or/not, found {}",
                    combinators.join(" and ")
                ),
            );
            return unreadable;
        }
        let condition = match combinators.first().copied() {
            Some(key @ ("and" | "or")) => {
                let children = match f.get(if key == "and" { "and" } else { "or" }) {
                    Some(Value::Array(items)) => items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| self.condition(item, &path.key(key).index(i)))
                        .collect(),
                    Some(other) => {
                        self.report.error(
                            &path.key(key),
                            format!("must be an array of conditions, not {}", type_name(other)),
                        );
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                if key == "and" {
                    Condition::And { and: children }
                } else {
                    Condition::Or { or: children }
                }
            }
            Some(_) => match f.get("not") {
                Some(inner) => Condition::Not {
                    not: Box::new(self.condition(inner, &path.key("not"))),
                },
                None => unreadable,
            },
            None => {
                let field = self.req_string(&mut f, "field", "a context path");
                // `None` when the operator could not be read (already reported): then the
                // value is not checked against it, which would only add a misleading error.
                let operator = match f.get("operator") {
                    Some(Value::String(name)) => Operator::parse(name).or_else(|| {
                        self.report.error(
                            &path.key("operator"),
                            format!(
                                "unknown operator `{name}` (expected one of {}){}",
                                Operator::ALL.map(Operator::as_str).join(", "),
                                did_you_mean(name, Operator::ALL.map(Operator::as_str))
                            ),
                        );
                        None
                    }),
                    Some(other) => {
                        self.report.error(
                            &path.key("operator"),
                            format!("must be a string, not {}", type_name(other)),
                        );
                        None
                    }
                    None => {
                        self.report
                            .error(&path.key("operator"), "missing required field `operator`");
                        None
                    }
                };
                // `value: null` is meaningful (`eq null`), so read the raw map here.
                f.used.insert("value");
                let value = f.map.get("value").cloned();
                if let Some(op) = operator.filter(|op| value.is_none() && op.takes_value()) {
                    self.report.error(
                        &path.key("value"),
                        format!("operator `{op}` needs a `value`"),
                    );
                }
                let operator = operator.unwrap_or(Operator::Eq);
                Condition::Leaf(Leaf {
                    field,
                    operator,
                    value,
                })
            }
        };
        f.finish(&mut self.report, "a condition");
        condition
    }

    fn sub_actions(&mut self, f: &mut Fields<'_>, required: bool) -> Vec<SubAction> {
        let path = f.at("execute");
        match f.get("execute") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    // Broken entries become an inert `log` so later indices stay right.
                    self.sub_action(item, &path.index(i))
                        .unwrap_or_else(inert_sub_action)
                })
                .collect(),
            Some(other) => {
                self.report.error(
                    &path,
                    format!("must be an array of sub-actions, not {}", type_name(other)),
                );
                Vec::new()
            }
            None => {
                if required {
                    self.report.error(
                        &path,
                        "missing required field `execute` (a list of sub-actions)",
                    );
                }
                Vec::new()
            }
        }
    }

    fn sub_action(&mut self, value: &Value, path: &Path) -> Option<SubAction> {
        let mut f = self.object(value, path, "a sub-action")?;
        let kind_name = self.req_string(&mut f, "type", "the sub-action type");
        let continue_on_error = self.opt_bool(&mut f, "continue_on_error").unwrap_or(false);
        let kind = match kind_name.as_str() {
            "webhook" | "http_request" => {
                let headers = match f.get("headers") {
                    Some(Value::Object(map)) => map.clone(),
                    Some(other) => {
                        self.report.error(
                            &f.at("headers"),
                            format!(
                                "must be an object of header names to values, not {}",
                                type_name(other)
                            ),
                        );
                        Map::new()
                    }
                    None => Map::new(),
                };
                SubActionKind::Webhook(HttpRequest {
                    method: self
                        .opt_string(&mut f, "method")
                        .unwrap_or_else(|| "POST".to_owned()),
                    url: self.req_string(&mut f, "url", "the URL to call (a template)"),
                    headers,
                    body: f.get("body").cloned(),
                    timeout: self.opt_duration(&mut f, "timeout"),
                })
            }
            "notify" => SubActionKind::Notify {
                recipients: self.string_list(&mut f, "recipients"),
                message: self.req_string(&mut f, "message", "the message (a template)"),
                channel: self.opt_string(&mut f, "channel"),
            },
            "log" => {
                let level = match self.opt_string(&mut f, "level").as_deref() {
                    None | Some("info") => LogLevel::Info,
                    Some("debug") => LogLevel::Debug,
                    Some("warn" | "warning") => LogLevel::Warn,
                    Some("error") => LogLevel::Error,
                    Some(other) => {
                        self.report.error(
                            &f.at("level"),
                            format!(
                                "unknown log level `{other}` (expected debug, info, warn or error)"
                            ),
                        );
                        LogLevel::Info
                    }
                };
                SubActionKind::Log {
                    message: self.req_string(&mut f, "message", "the message (a template)"),
                    level,
                }
            }
            "set" => {
                // Either {"values": {path: value}} or the short {"path": p, "value": v}.
                let mut values = Map::new();
                match f.get("values") {
                    Some(Value::Object(map)) => values.clone_from(map),
                    Some(other) => self.report.error(
                        &f.at("values"),
                        format!(
                            "must be an object of context paths to values, not {}",
                            type_name(other)
                        ),
                    ),
                    None => {}
                }
                if let Some(p) = self.opt_string(&mut f, "path") {
                    f.used.insert("value");
                    values.insert(p, f.map.get("value").cloned().unwrap_or(Value::Null));
                }
                SubActionKind::Set { values }
            }
            "create_record" => SubActionKind::CreateRecord {
                entity: self.req_string(&mut f, "entity", "the entity type"),
                entity_id: self.opt_string(&mut f, "entity_id"),
                data: f
                    .get("data")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Map::new())),
            },
            "update_record" => SubActionKind::UpdateRecord {
                entity: self.req_string(&mut f, "entity", "the entity type"),
                entity_id: self.req_string(&mut f, "entity_id", "the entity id (a template)"),
                data: f
                    .get("data")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Map::new())),
            },
            "create_approval_request" => {
                SubActionKind::CreateApprovalRequest(Box::new(self.compat_approval(&mut f)))
            }
            "" => return None,
            other => {
                self.report.error(&f.at("type"), format!(
                    "unknown sub-action type `{other}` (expected webhook, http_request, notify, log, set, create_record, update_record or create_approval_request){}",
                    did_you_mean(other, ["webhook", "http_request", "notify", "log", "set", "create_record", "update_record", "create_approval_request"])
                ));
                return None;
            }
        };
        f.finish(&mut self.report, &format!("a `{kind_name}` sub-action"));
        Some(SubAction {
            kind,
            continue_on_error,
        })
    }

    /// `create_approval_request` → [`ApprovalSpec`] (docs/workflow-format.md, "Approval").
    fn compat_approval(&mut self, f: &mut Fields<'_>) -> CompatApproval {
        let entity = self.opt_string(f, "entity");
        let entity_id = self.opt_string(f, "entity_id");
        let data_path = f.at("data");
        let data = match f.get("data") {
            Some(Value::Object(map)) => map.clone(),
            Some(other) => {
                self.report.error(
                    &data_path,
                    format!("must be an object, not {}", type_name(other)),
                );
                Map::new()
            }
            None => Map::new(),
        };
        let mut approvers = Approvers::default();
        let mut required = Required::Count(1);
        let mut timeout = None;
        let mut reason = None;
        let mut on_timeout = OnTimeout::Reject;
        let mut allow_self_approval = false;
        let mut extra = Map::new();
        for (key, value) in &data {
            let path = data_path.key(key);
            match key.as_str() {
                "approver_role" => approvers.roles.extend(self.string_value(value, &path)),
                "approver_roles" | "roles" => approvers.roles.extend(self.strings(value, &path)),
                "approvers" | "approver_users" | "users" => {
                    approvers.users.extend(self.strings(value, &path));
                }
                "expires_in" | "timeout" => timeout = self.duration_at(value, &path),
                "reason" => reason = self.string_value(value, &path),
                "required" => required = self.required(value, &path),
                "on_timeout" => on_timeout = self.on_timeout(value, &path),
                "allow_self_approval" => allow_self_approval = value.as_bool().unwrap_or(false),
                _ => {
                    extra.insert(key.clone(), value.clone());
                }
            }
        }
        let entity_ref = entity.clone().map(|entity_type| EntityRef {
            entity_type,
            id: entity_id.clone().unwrap_or_default(),
        });
        CompatApproval {
            entity,
            entity_id,
            data,
            approval: ApprovalSpec {
                approvers,
                required,
                reason,
                entity: entity_ref,
                timeout,
                on_timeout,
                allow_self_approval,
                data: if extra.is_empty() {
                    None
                } else {
                    Some(Value::Object(extra))
                },
                notify: Vec::new(),
                reminders: Vec::new(),
                escalate: Vec::new(),
                service: None,
                decision_form: None,
            },
        }
    }

    fn strings(&mut self, value: &Value, path: &Path) -> Vec<String> {
        match value {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| self.string_value(v, &path.index(i)))
                .collect(),
            other => {
                self.report.error(
                    path,
                    format!(
                        "must be a string or an array of strings, not {}",
                        type_name(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    fn required(&mut self, value: &Value, path: &Path) -> Required {
        match value {
            Value::String(s) if s == "all" => Required::All,
            Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n >= 1 => Required::Count(n),
                _ => {
                    self.report
                        .error(path, "must be a whole number of at least 1, or \"all\"");
                    Required::Count(1)
                }
            },
            _ => {
                self.report
                    .error(path, "must be a whole number of at least 1, or \"all\"");
                Required::Count(1)
            }
        }
    }

    fn on_timeout(&mut self, value: &Value, path: &Path) -> OnTimeout {
        match self.string_value(value, path).as_deref() {
            Some("reject") | None => OnTimeout::Reject,
            Some("approve") => OnTimeout::Approve,
            Some("fail") => OnTimeout::Fail,
            Some(step) => OnTimeout::Step(step.to_owned()),
        }
    }

    fn approval(&mut self, value: &Value, path: &Path) -> ApprovalSpec {
        let Some(mut f) = self.object(value, path, "`approval`") else {
            return empty_approval();
        };
        let approvers = self.approvers(&mut f);
        let required = match f.get("required") {
            Some(v) => self.required(v, &f.at("required")),
            None => Required::Count(1),
        };
        let entity = match f.get("entity") {
            Some(v) => {
                let ep = f.at("entity");
                self.object(v, &ep, "`entity`").map(|mut e| {
                    let entity_type =
                        self.req_string(&mut e, "type", "the entity type, e.g. \"order\"");
                    let id = self.req_string(&mut e, "id", "the entity id (a template)");
                    e.finish(&mut self.report, "`entity`");
                    EntityRef { entity_type, id }
                })
            }
            None => None,
        };
        let on_timeout = match f.get("on_timeout") {
            Some(v) => self.on_timeout(v, &f.at("on_timeout")),
            None => OnTimeout::Reject,
        };
        let spec = ApprovalSpec {
            approvers,
            required,
            reason: self.opt_string(&mut f, "reason"),
            entity,
            timeout: self.opt_duration(&mut f, "timeout"),
            on_timeout,
            allow_self_approval: self
                .opt_bool(&mut f, "allow_self_approval")
                .unwrap_or(false),
            data: f.get("data").cloned(),
            notify: self.notify_list(&mut f),
            reminders: self.duration_list(&mut f, "reminders"),
            escalate: self.escalate(&mut f),
            decision_form: {
                let form = f.get("form").cloned();
                let editable = self.string_list(&mut f, "editable");
                let merge_into = self.opt_string(&mut f, "merge_into");
                match form {
                    Some(form) => Some(Box::new(FormSpec {
                        form,
                        editable,
                        merge_into,
                    })),
                    None => {
                        if !editable.is_empty() || merge_into.is_some() {
                            self.report.error(
                                &f.at("form"),
                                "`editable` and `merge_into` belong to a decision form: add `form`",
                            );
                        }
                        None
                    }
                }
            },
            service: {
                let priority = self.opt_string(&mut f, "priority");
                let due = self.opt_string(&mut f, "due");
                (priority.is_some() || due.is_some())
                    .then(|| Box::new(ServiceLevelSpec { priority, due }))
            },
        };
        f.finish(&mut self.report, "`approval`");
        spec
    }

    /// `approvers: {role, roles, users}` of an approval or an escalation rung.
    fn approvers(&mut self, f: &mut Fields<'_>) -> Approvers {
        let Some(v) = f.get("approvers") else {
            return Approvers::default();
        };
        let ap = f.at("approvers");
        match self.object(v, &ap, "`approvers`") {
            Some(mut a) => {
                let mut approvers = Approvers::default();
                if let Some(role) = self.opt_string(&mut a, "role") {
                    approvers.roles.push(role);
                }
                approvers.roles.extend(self.string_list(&mut a, "roles"));
                approvers.users.extend(self.string_list(&mut a, "users"));
                a.finish(&mut self.report, "`approvers` (role, roles, users)");
                approvers
            }
            None => Approvers::default(),
        }
    }

    /// `notify: [{channel, to, subject, message, user}]`.
    fn notify_list(&mut self, f: &mut Fields<'_>) -> Vec<NotifySpec> {
        let Some(value) = f.get("notify") else {
            return Vec::new();
        };
        let path = f.at("notify");
        let Value::Array(items) = value else {
            self.report.error(
                &path,
                format!(
                    "must be an array of {{\"channel\": …}} objects, not {}",
                    type_name(value)
                ),
            );
            return Vec::new();
        };
        let mut specs = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(mut n) = self.object(item, &path.index(i), "a `notify` entry") else {
                continue;
            };
            let spec = NotifySpec {
                channel: self.req_string(&mut n, "channel", "email, slack, teams or webhook"),
                to: self.opt_string(&mut n, "to"),
                subject: self.opt_string(&mut n, "subject"),
                message: self.opt_string(&mut n, "message"),
                user: self.opt_string(&mut n, "user"),
            };
            n.finish(
                &mut self.report,
                "a `notify` entry (channel, to, subject, message, user)",
            );
            specs.push(spec);
        }
        specs
    }

    /// An array of durations, e.g. `reminders: ["4h", "24h"]`.
    fn duration_list(&mut self, f: &mut Fields<'_>, key: &'static str) -> Vec<Duration> {
        let Some(value) = f.get(key) else {
            return Vec::new();
        };
        let path = f.at(key);
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.duration_at(item, &path.index(i)))
                .collect(),
            other => {
                self.report.error(
                    &path,
                    format!(
                        "must be an array of durations such as \"4h\", not {}",
                        type_name(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    /// `escalate: [{after, approvers, notify}]`.
    fn escalate(&mut self, f: &mut Fields<'_>) -> Vec<EscalationRung> {
        let Some(value) = f.get("escalate") else {
            return Vec::new();
        };
        let path = f.at("escalate");
        let Value::Array(items) = value else {
            self.report.error(
                &path,
                format!(
                    "must be an array of {{\"after\": …, \"approvers\": …}} objects, not {}",
                    type_name(value)
                ),
            );
            return Vec::new();
        };
        let mut rungs = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(mut r) = self.object(item, &path.index(i), "an `escalate` rung") else {
                continue;
            };
            let after = match r.get("after") {
                Some(v) => self.duration_at(v, &r.at("after")),
                None => {
                    self.report.error(
                        &r.at("after"),
                        "missing required field `after` (when the rung fires, e.g. \"48h\")",
                    );
                    None
                }
            };
            let approvers = self.approvers(&mut r);
            let notify = self.notify_list(&mut r);
            r.finish(
                &mut self.report,
                "an `escalate` rung (after, approvers, notify)",
            );
            if let Some(after) = after {
                rungs.push(EscalationRung {
                    after,
                    approvers,
                    notify,
                });
            }
        }
        rungs
    }

    fn wait(&mut self, value: &Value, path: &Path) -> WaitSpec {
        let Some(mut f) = self.object(value, path, "`wait`") else {
            return WaitSpec {
                event: String::new(),
                match_: None,
                timeout: None,
                on_timeout: None,
                early_events: None,
            };
        };
        let spec = WaitSpec {
            event: self.req_string(&mut f, "event", "the event type awaited"),
            match_: f
                .get("match")
                .map(|v| self.condition(v, &path.key("match"))),
            timeout: self.opt_duration(&mut f, "timeout"),
            on_timeout: self.opt_string(&mut f, "on_timeout"),
            early_events: self.opt_duration(&mut f, "early_events"),
        };
        f.finish(&mut self.report, "`wait`");
        spec
    }

    fn first_of(&mut self, value: &Value, path: &Path) -> Vec<Branch> {
        let Value::Array(items) = value else {
            self.report.error(
                path,
                format!(
                    "must be an array of gates (event, approval or after), not {}",
                    type_name(value)
                ),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.branch(item, &path.index(i)))
            .collect()
    }

    /// One gate of a `first_of` step: the key among `event`, `approval` and `after` that
    /// it has says which kind it is.
    fn branch(&mut self, value: &Value, path: &Path) -> Option<Branch> {
        let mut f = self.object(value, path, "a `first_of` gate")?;
        let kinds: Vec<&str> = ["event", "approval", "after"]
            .into_iter()
            .filter(|k| f.map.get(*k).is_some_and(|v| !v.is_null()))
            .collect();
        let branch = match kinds.as_slice() {
            ["event"] => Branch::Event {
                event: self.req_string(&mut f, "event", "the event type awaited"),
                match_: f
                    .get("match")
                    .map(|v| self.condition(v, &path.key("match"))),
                early_events: self.opt_duration(&mut f, "early_events"),
                next: self.opt_string(&mut f, "next"),
            },
            ["approval"] => {
                let approval = match f.get("approval") {
                    Some(v) => self.approval(v, &f.at("approval")),
                    None => empty_approval(),
                };
                Branch::Approval {
                    approval: Box::new(approval),
                    on_approve: self.opt_string(&mut f, "on_approve"),
                    on_reject: self.opt_string(&mut f, "on_reject"),
                }
            }
            ["after"] => {
                let after = self.opt_duration(&mut f, "after");
                Branch::After {
                    after: after?,
                    next: self.opt_string(&mut f, "next"),
                }
            }
            [] => {
                self.report.error(
                    path,
                    "a `first_of` gate needs one of `event`, `approval` or `after`",
                );
                return None;
            }
            several => {
                self.report.error(
                    path,
                    format!(
                        "a `first_of` gate is one of `event`, `approval` or `after`, not several ({})",
                        several.join(", ")
                    ),
                );
                return None;
            }
        };
        f.finish(
            &mut self.report,
            &format!("a `first_of` {} gate", branch.kind_name()),
        );
        Some(branch)
    }

    fn parallel(&mut self, value: &Value, path: &Path) -> ParallelSpec {
        let Some(mut f) = self.object(value, path, "`parallel`") else {
            return ParallelSpec {
                strategy: Strategy::default(),
                steps: Vec::new(),
            };
        };
        let strategy = match self.opt_string(&mut f, "strategy").as_deref() {
            None | Some("all_must_pass") => Strategy::AllMustPass,
            Some("any_can_pass") => Strategy::AnyCanPass,
            Some("best_effort") => Strategy::BestEffort,
            Some(other) => {
                self.report.error(&f.at("strategy"), format!("unknown strategy `{other}` (expected all_must_pass, any_can_pass or best_effort)"));
                Strategy::AllMustPass
            }
        };
        let steps = match f.get("steps") {
            Some(v) => self.steps(v, &path.key("steps")),
            None => {
                self.report
                    .error(&path.key("steps"), "missing required field `steps`");
                Vec::new()
            }
        };
        f.finish(&mut self.report, "`parallel`");
        ParallelSpec { strategy, steps }
    }

    fn foreach(&mut self, value: &Value, path: &Path) -> ForeachSpec {
        let Some(mut f) = self.object(value, path, "`foreach`") else {
            return ForeachSpec {
                items: String::new(),
                item_var: "item".into(),
                steps: Vec::new(),
            };
        };
        let items = self.req_string(
            &mut f,
            "items",
            "a context path or template naming an array",
        );
        let item_var = self
            .opt_string(&mut f, "item_var")
            .unwrap_or_else(|| "item".to_owned());
        let steps = match f.get("steps") {
            Some(v) => self.steps(v, &path.key("steps")),
            None => {
                self.report
                    .error(&path.key("steps"), "missing required field `steps`");
                Vec::new()
            }
        };
        f.finish(&mut self.report, "`foreach`");
        ForeachSpec {
            items,
            item_var,
            steps,
        }
    }

    fn retry(&mut self, value: &Value, path: &Path) -> RetryPolicy {
        let mut policy = RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::default(),
            initial_interval: RetryPolicy::DEFAULT_INITIAL,
            max_interval: RetryPolicy::DEFAULT_MAX,
            retry_on: vec![ErrorClass::Any],
            jitter: true,
        };
        let Some(mut f) = self.object(value, path, "`retry`") else {
            return policy;
        };
        if let Some(n) = self.opt_u32(&mut f, "max_attempts") {
            if n == 0 {
                self.report.error(
                    &f.at("max_attempts"),
                    "must be at least 1 (the first attempt counts)",
                );
            }
            policy.max_attempts = n.max(1);
        }
        match self.opt_string(&mut f, "backoff").as_deref() {
            None => {}
            Some("fixed") => policy.backoff = Backoff::Fixed,
            Some("linear") => policy.backoff = Backoff::Linear,
            Some("exponential") => policy.backoff = Backoff::Exponential,
            Some(other) => self.report.error(
                &f.at("backoff"),
                format!("unknown backoff `{other}` (expected fixed, linear or exponential)"),
            ),
        }
        if let Some(d) = self.opt_duration(&mut f, "initial_interval") {
            policy.initial_interval = d;
        }
        if let Some(d) = self.opt_duration(&mut f, "max_interval") {
            policy.max_interval = d;
        }
        if policy.initial_interval > policy.max_interval {
            self.report.error(
                &f.at("initial_interval"),
                format!(
                    "initial_interval ({}) is longer than max_interval ({})",
                    policy.initial_interval, policy.max_interval
                ),
            );
        }
        if f.map.contains_key("retry_on") {
            let path = f.at("retry_on");
            let names = self.string_list(&mut f, "retry_on");
            policy.retry_on = names
                .iter()
                .enumerate()
                .filter_map(|(i, name)| {
                    let class = ErrorClass::parse(name);
                    if class.is_none() {
                        self.report.error(&path.index(i), format!("unknown error class `{name}` (expected timeout, 5xx, 4xx, network, error or *)"));
                    }
                    class
                })
                .collect();
        }
        if let Some(jitter) = self.opt_bool(&mut f, "jitter") {
            policy.jitter = jitter;
        }
        f.finish(&mut self.report, "`retry`");
        policy
    }
}

/// Stands in for a sub-action or step that could not be read (see [`Parser::step`]).
fn inert_sub_action() -> SubAction {
    SubAction {
        kind: SubActionKind::Log {
            message: String::new(),
            level: LogLevel::Info,
        },
        continue_on_error: false,
    }
}

fn empty_approval() -> ApprovalSpec {
    ApprovalSpec {
        approvers: Approvers::default(),
        required: Required::Count(1),
        reason: None,
        entity: None,
        timeout: None,
        on_timeout: OnTimeout::Reject,
        allow_self_approval: false,
        data: None,
        notify: Vec::new(),
        reminders: Vec::new(),
        escalate: Vec::new(),
        service: None,
        decision_form: None,
    }
}

/// Parses a standalone condition tree (used for API inputs such as filters and for
/// tests), reporting every problem.
pub fn parse_condition(value: &Value) -> Result<Condition, Report> {
    let mut parser = Parser {
        report: Report::default(),
        all_ids: HashSet::new(),
    };
    let condition = parser.condition(value, &Path::root());
    validate::check_condition(&condition, &Path::root(), &mut parser.report);
    if parser.report.is_valid() {
        Ok(condition)
    } else {
        Err(parser.report)
    }
}

/// Reads a definition this or another release stored. Strictness is for new input: a
/// field this release does not know (a newer release added it) is a warning, not an
/// error, and today's validation rules are not applied again (the definition was valid
/// when it was stored; a rule tightened since must not make a paused execution's
/// snapshot unreadable). A document this release cannot understand at all — an unknown
/// step type, a value of the wrong type — is still refused: running a guess would be
/// worse.
pub fn load_stored(document: &Value) -> Result<WorkflowDefinition, Report> {
    let mut parser = Parser {
        report: Report::default(),
        all_ids: HashSet::new(),
    };
    let definition = parser.definition(document);
    let mut report = parser.report;
    let (unknown, errors): (Vec<_>, Vec<_>) = report
        .errors
        .into_iter()
        .partition(|p| p.message.starts_with("unknown field `"));
    report.errors = errors;
    report.warnings.extend(unknown);
    match definition {
        Some(definition) if report.is_valid() => Ok(definition),
        _ => Err(report),
    }
}

/// Definitions are read back from storage through the same parser that checks user input
/// (there is one way to turn JSON into a definition), in its lenient form
/// ([`load_stored`]).
impl<'de> Deserialize<'de> for WorkflowDefinition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        load_stored(&value).map_err(|report| {
            let all: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
            serde::de::Error::custom(all.join("; "))
        })
    }
}
