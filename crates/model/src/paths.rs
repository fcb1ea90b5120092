//! The context paths a definition reads, and how they are checked against the workflow's
//! declared input (`input_schema`).
//!
//! A path is read by a template (`{{order.total}}` in any string), by a condition's
//! `field`, or by a `foreach`'s `items`. Validation checks each against `input_schema`
//! when the workflow declares one (an undeclared path is a warning, or an error under
//! `strict_paths`); the engine checks, under `strict_paths`, that each is present before
//! a step runs, so a typo fails the step instead of sending a request built from empty
//! text (docs/workflow-format.md, "Declared input").

use serde_json::Value;

use crate::definition::{Step, SubActionKind, WorkflowDefinition};
use crate::template;

/// How a path is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// By a template or a condition field: the value must be there.
    Read,
    /// By a condition that asks whether it is there (`exists`, `not_exists`, or a
    /// comparison with `null`): its absence is an answer, not a mistake.
    Probe,
}

/// One path one step reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathUse {
    /// Where, as a JSON path into the definition (`steps[1].condition.field`).
    pub location: String,
    /// The dotted path (`order.total`).
    pub path: String,
    /// How it is read.
    pub how: Use,
}

/// Roots the engine provides whatever the input: the trigger (`event`, `trigger`), what
/// steps leave (`steps`, `approval`, `approvals`, `events`), a resume's reason, and the
/// computed names.
const ENGINE_ROOTS: &[&str] = &[
    "event",
    "trigger",
    "steps",
    "approval",
    "approvals",
    "events",
    "resume_reason",
    "schedule",
    "now",
    "execution",
    "workflow",
    "step",
    "secrets",
];

/// The context paths a step (and its children) reads, with their locations; paths that
/// start at a `foreach`'s item or index, and a wait's `match` fields (which read the
/// incoming event), are not context paths and are left out.
pub fn step_uses(step: &Step, location: &str) -> Vec<PathUse> {
    let mut uses = Vec::new();
    let value = serde_json::to_value(step).unwrap_or(Value::Null);
    walk(&value, location, &mut Vec::new(), false, &mut uses);
    uses
}

fn walk(value: &Value, at: &str, locals: &mut Vec<String>, in_match: bool, out: &mut Vec<PathUse>) {
    let local = |path: &str, locals: &[String]| {
        let root = path.split('.').next().unwrap_or("");
        locals.iter().any(|l| l == root)
    };
    match value {
        Value::String(text) => {
            for path in template::paths(text) {
                if !local(&path, locals) {
                    out.push(PathUse {
                        location: at.to_owned(),
                        path,
                        how: Use::Read,
                    });
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{at}[{i}]"), locals, in_match, out);
            }
        }
        Value::Object(map) => {
            // A condition leaf: `field` is a path, unless a wait's match reads the event.
            if let (Some(Value::String(field)), Some(operator)) =
                (map.get("field"), map.get("operator"))
            {
                let probe = matches!(operator.as_str(), Some("exists" | "not_exists"))
                    || map.get("value").is_some_and(Value::is_null);
                if !in_match && !local(field, locals) {
                    out.push(PathUse {
                        location: format!("{at}.field"),
                        path: field.clone(),
                        how: if probe { Use::Probe } else { Use::Read },
                    });
                }
                if let Some(v) = map.get("value") {
                    walk(v, &format!("{at}.value"), locals, false, out);
                }
                return;
            }
            // A foreach: `items` is a path (or a template); the children see the item.
            if let (Some(Value::String(items)), Some(Value::String(item_var))) =
                (map.get("items"), map.get("item_var"))
            {
                if !items.contains("{{") && !items.contains("${") && !local(items, locals) {
                    out.push(PathUse {
                        location: format!("{at}.items"),
                        path: items.trim().to_owned(),
                        how: Use::Read,
                    });
                }
                locals.push(item_var.clone());
                locals.push("index".to_owned());
                for (key, v) in map {
                    if key != "items" && key != "item_var" {
                        walk(v, &format!("{at}.{key}"), locals, in_match, out);
                    }
                }
                locals.truncate(locals.len() - 2);
                if map.get("items").is_some_and(|i| {
                    i.as_str()
                        .is_some_and(|s| s.contains("{{") || s.contains("${"))
                }) {
                    walk(&map["items"], &format!("{at}.items"), locals, in_match, out);
                }
                return;
            }
            for (key, v) in map {
                // Ids, routes and names are not templated; `set` keys are targets.
                if matches!(
                    key.as_str(),
                    "id" | "type"
                        | "next"
                        | "on_true"
                        | "on_false"
                        | "on_approve"
                        | "on_reject"
                        | "on_error"
                        | "on_timeout"
                        | "metadata"
                ) {
                    continue;
                }
                walk(
                    v,
                    &format!("{at}.{key}"),
                    locals,
                    in_match || key == "match",
                    out,
                );
            }
        }
        _ => {}
    }
}

/// Every context path the definition reads, step by step.
pub fn definition_uses(def: &WorkflowDefinition) -> Vec<PathUse> {
    def.steps
        .iter()
        .enumerate()
        .flat_map(|(i, step)| step_uses(step, &format!("steps[{i}]")))
        .collect()
}

/// Roots a definition itself writes or loads: `set` targets and `context.load` resources.
fn written_roots(def: &WorkflowDefinition) -> Vec<String> {
    fn in_steps(steps: &[Step], out: &mut Vec<String>) {
        for step in steps {
            for sub in step.sub_actions() {
                if let SubActionKind::Set { values } = &sub.kind {
                    out.extend(
                        values
                            .keys()
                            .filter_map(|k| k.split('.').next())
                            .map(str::to_owned),
                    );
                }
            }
            in_steps(step.children(), out);
        }
    }
    let mut roots: Vec<String> = def
        .context
        .load
        .iter()
        .filter_map(|name| name.split('.').next())
        .map(str::to_owned)
        .collect();
    in_steps(&def.steps, &mut roots);
    roots
}

/// Why a path is not declared by the schema, or `None` when it is.
pub fn undeclared(schema: &Value, path: &str, extra_roots: &[String]) -> Option<String> {
    let segments: Vec<&str> = path.split('.').collect();
    let root = segments[0];
    let rest: &[&str] = if root == "event" {
        // The trigger's payload is at `event` (and at the root): both are the input.
        &segments[1..]
    } else if ENGINE_ROOTS.contains(&root)
        || root.starts_with("now_plus_")
        || root.starts_with("now_minus_")
        || extra_roots.iter().any(|r| r == root)
    {
        return None;
    } else {
        &segments
    };
    let mut at = schema;
    let mut walked = Vec::new();
    for (i, segment) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        if let Some(next) = at.get("properties").and_then(|p| p.get(*segment)) {
            at = next;
        } else if segment.parse::<usize>().is_ok() && at.get("items").is_some() {
            at = &at["items"];
        } else if *segment == "length" && last {
            return None;
        } else if let Some(extra) = at.get("additionalProperties").filter(|a| a.is_object()) {
            at = extra;
        } else if at.get("properties").is_some()
            || at.get("additionalProperties") == Some(&Value::Bool(false))
        {
            let known: Vec<&str> = at["properties"]
                .as_object()
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let under = if walked.is_empty() {
                "the input".to_owned()
            } else {
                format!("`{}`", walked.join("."))
            };
            return Some(format!(
                "`{path}` is not declared in `input_schema`: {under} has no `{segment}`{}",
                crate::parse::did_you_mean(segment, known.iter().copied())
            ));
        } else {
            // A free-form value: anything below it is allowed.
            return None;
        }
        walked.push(*segment);
    }
    None
}

/// Checks every path the definition reads against its `input_schema`; returns
/// (location, message) for each undeclared one.
pub fn check_against_input(def: &WorkflowDefinition) -> Vec<(String, String)> {
    let Some(schema) = &def.input_schema else {
        return Vec::new();
    };
    let roots = written_roots(def);
    definition_uses(def)
        .into_iter()
        .filter_map(|u| undeclared(schema, &u.path, &roots).map(|m| (u.location, m)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use crate::{check, load};

    fn expense(strict: bool) -> serde_json::Value {
        json!({
        "workflow_id": "expenses", "version": "1", "strict_paths": strict,
        "trigger": {"type": "event", "event": "expense.submitted"},
        "input_schema": {"type": "object", "properties": {
            "amount": {"type": "number"},
            "employee": {"type": "object", "properties": {"name": {"type": "string"}}},
            "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}},
            "extra": {"type": "object"}}},
        "context": {"load": ["customer.profile"]},
        "steps": [
            {"id": "small", "type": "condition",
             "condition": {"field": "amout", "operator": "lt", "value": 100}, "on_true": "ok", "on_false": "gate"},
            {"id": "gate", "type": "approval", "approval": {"approvers": {"role": "finance"},
              "reason": "Expense by {{employe.name}}: {{amount}} ({{lines.0.sku}}, {{lines.length}}, {{extra.anything.below}})",
              "data": {"who": "{{event.employee.nam}}", "when": "{{now_plus_1d}}", "seen": "{{customer.profile.tier}}"}},
             "on_approve": "ok", "on_reject": "ok"},
            {"id": "ok", "type": "execute", "execute": [
                {"type": "set", "values": {"note": "{{approvals.gate.status}}"}},
                {"type": "log", "message": "{{note}} {{steps.gate.status}} {{secrets.TOKEN}}"}],
             "next": "each"},
            {"id": "each", "type": "foreach", "foreach": {"items": "lines", "item_var": "line", "steps": [
                {"id": "say", "type": "execute", "execute": [{"type": "log", "message": "{{line.sku}} {{index}}"}]}]},
             "next": "wait"},
            {"id": "wait", "type": "wait", "wait": {"event": "paid",
              "match": {"field": "event.ref", "operator": "eq", "value": "{{amount}}"}}},
        ]})
    }

    #[test]
    fn undeclared_paths_are_warnings_that_name_the_near_miss() {
        let report = check(&expense(false));
        assert!(report.is_valid(), "{:?}", report.errors);
        let found: Vec<(String, String)> = report
            .warnings
            .iter()
            .map(|w| (w.path.clone(), w.message.clone()))
            .collect();
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(found[0].0, "steps[0].condition.field");
        assert!(found[0].1.contains("`amout` is not declared in `input_schema`: the input has no `amout` — did you mean `amount`?"), "{}", found[0].1);
        assert_eq!(found[1].0, "steps[1].approval.reason");
        assert!(
            found[1].1.contains("`employe.name`")
                && found[1].1.contains("did you mean `employee`?"),
            "{}",
            found[1].1
        );
        assert_eq!(found[2].0, "steps[1].approval.data.who");
        assert!(
            found[2].1.contains("`employee` has no `nam`") && found[2].1.contains("`name`"),
            "{}",
            found[2].1
        );
    }

    #[test]
    fn under_strict_paths_they_are_errors() {
        let report = check(&expense(true));
        assert_eq!(report.errors.len(), 3, "{:?}", report.errors);
        assert!(load(&expense(true)).is_err());
    }

    #[test]
    fn without_a_schema_nothing_is_checked() {
        let mut doc = expense(true);
        doc.as_object_mut().unwrap().remove("input_schema");
        let loaded = load(&doc).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert!(loaded.definition.strict_paths);
    }

    #[test]
    fn a_schema_must_be_an_object() {
        let mut doc = expense(false);
        doc["input_schema"] = json!("amount");
        let report = check(&doc);
        assert_eq!(report.errors[0].path, "input_schema");
    }

    #[test]
    fn probes_and_the_event_side_of_a_match_are_told_apart() {
        let doc = expense(false);
        let def = load(&doc).unwrap().definition;
        let uses = super::definition_uses(&def);
        // The match's field reads the incoming event; its value reads the context.
        assert!(!uses.iter().any(|u| u.path == "payload.ref"));
        assert!(uses
            .iter()
            .any(|u| u.path == "amount" && u.location == "steps[4].wait.match.value"));
        // Foreach locals are not context paths; its items are.
        assert!(
            !uses
                .iter()
                .any(|u| u.path.starts_with("line.") || u.path == "index"),
            "{uses:#?}"
        );
        assert!(uses
            .iter()
            .any(|u| u.path == "lines" && u.location == "steps[3].foreach.items"));
        let mut probe = doc.clone();
        probe["steps"][0]["condition"] = json!({"field": "amount", "operator": "exists"});
        let def = load(&probe).unwrap().definition;
        let first = &super::definition_uses(&def)[0];
        assert_eq!(
            (first.path.as_str(), first.how),
            ("amount", super::Use::Probe)
        );
    }
}
