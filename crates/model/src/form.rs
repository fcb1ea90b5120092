//! Decision forms (docs/approvals.md, "Decision forms"): the JSON Schema subset an
//! approval step may give, checked when the workflow is saved, and the check of an
//! approval's `data` against it.

use serde_json::Value;

use crate::definition::FormSpec;

/// The field types a form may have.
pub const FIELD_TYPES: [&str; 4] = ["string", "number", "integer", "boolean"];

/// The keywords a form may use at its top.
const FORM_KEYWORDS: [&str; 6] = [
    "type",
    "properties",
    "required",
    "title",
    "description",
    "additionalProperties",
];

/// The keywords a field may use.
const FIELD_KEYWORDS: [&str; 13] = [
    "type",
    "title",
    "description",
    "enum",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "default",
];

/// One problem, at a path below the form (`properties.amount.type`) or the data
/// (`data.amount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormProblem {
    /// Where.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> FormProblem {
    FormProblem {
        path: path.into(),
        message: message.into(),
    }
}

/// The form's fields in the order the schema lists them.
pub fn fields(form: &Value) -> Vec<(&str, &Value)> {
    form.get("properties")
        .and_then(Value::as_object)
        .map(|p| p.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default()
}

/// Whether the form marks `field` as required.
pub fn is_required(form: &Value, field: &str) -> bool {
    form.get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|f| f.as_str() == Some(field)))
}

/// What is wrong with a step's form: keywords outside the subset, unknown field types or
/// formats, editable fields the form lacks, a bad `merge_into`, or a schema the
/// validator cannot compile (a bad `pattern`, say). Empty when it is usable.
pub fn check_spec(spec: &FormSpec) -> Vec<FormProblem> {
    let mut problems = Vec::new();
    let Some(top) = spec.form.as_object() else {
        return vec![problem("", "must be a JSON Schema object")];
    };
    if top.get("type").and_then(Value::as_str) != Some("object") {
        problems.push(problem(
            "type",
            "must be \"object\": a form is an object of fields",
        ));
    }
    for key in top.keys() {
        if !FORM_KEYWORDS.contains(&key.as_str()) {
            problems.push(problem(
                key.clone(),
                format!(
                    "`{key}` is not supported in a form (use {})",
                    FORM_KEYWORDS.join(", ")
                ),
            ));
        }
    }
    match top.get("properties").and_then(Value::as_object) {
        Some(props) if !props.is_empty() => {
            for (name, field) in props {
                let at = format!("properties.{name}");
                let Some(field) = field.as_object() else {
                    problems.push(problem(at, "must be an object (a field's schema)"));
                    continue;
                };
                match field.get("type").and_then(Value::as_str) {
                    Some(t) if FIELD_TYPES.contains(&t) => {}
                    _ => problems.push(problem(
                        format!("{at}.type"),
                        format!("must be one of {}", FIELD_TYPES.join(", ")),
                    )),
                }
                for key in field.keys() {
                    if !FIELD_KEYWORDS.contains(&key.as_str()) {
                        problems.push(problem(
                            format!("{at}.{key}"),
                            format!("`{key}` is not supported in a form field"),
                        ));
                    }
                }
                if let Some(f) = field.get("format") {
                    if !matches!(f.as_str(), Some("date" | "date-time")) {
                        problems.push(problem(
                            format!("{at}.format"),
                            "must be \"date\" or \"date-time\"",
                        ));
                    }
                }
            }
        }
        _ => problems.push(problem("properties", "must name at least one field")),
    }
    if let Some(required) = top.get("required") {
        let names = required.as_array().map(|r| {
            r.iter()
                .map(|v| v.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
        });
        match names {
            Some(names) => {
                for name in names {
                    if top.get("properties").and_then(|p| p.get(name)).is_none() {
                        problems.push(problem(
                            "required",
                            format!("`{name}` is not a field of the form"),
                        ));
                    }
                }
            }
            None => problems.push(problem("required", "must be an array of field names")),
        }
    }
    for name in &spec.editable {
        if top.get("properties").and_then(|p| p.get(name)).is_none() {
            problems.push(problem(
                "editable",
                format!("`{name}` is not a field of the form"),
            ));
        }
    }
    if let Some(path) = &spec.merge_into {
        let ok = !path.is_empty()
            && path.split('.').all(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            })
            && !matches!(
                path.split('.').next(),
                Some("approvals" | "approval" | "steps" | "trigger")
            );
        if !ok {
            problems.push(problem(
                "merge_into",
                "must be a context path such as `order` or `order.approval`, outside `approvals`, `approval`, `steps` and `trigger`",
            ));
        }
    }
    if problems.is_empty() {
        if let Err(err) = validator(&spec.form) {
            problems.push(problem("", format!("is not a usable JSON Schema: {err}")));
        }
    }
    problems
}

fn validator(form: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(form)
        .map_err(|e| e.to_string())
}

/// What is wrong with an approval's `data` under `spec`: the schema's verdicts, by
/// field (`data.amount`), and any field the form does not have. Empty when it passes.
pub fn check_data(spec: &FormSpec, data: &Value) -> Vec<FormProblem> {
    let mut problems = Vec::new();
    if let Some(map) = data.as_object() {
        for key in map.keys() {
            if spec
                .form
                .get("properties")
                .and_then(|p| p.get(key))
                .is_none()
            {
                problems.push(problem(
                    format!("data.{key}"),
                    "is not a field of this request's form",
                ));
            }
        }
    }
    match validator(&spec.form) {
        Ok(v) => {
            for err in v.iter_errors(data) {
                let at = err
                    .instance_path()
                    .as_str()
                    .trim_start_matches('/')
                    .replace('/', ".");
                // A missing required field is reported at the object: name the field.
                let at = if at.is_empty() {
                    missing_field(&err.to_string())
                        .map_or_else(|| "data".to_owned(), |f| format!("data.{f}"))
                } else {
                    format!("data.{at}")
                };
                problems.push(problem(at, err.to_string()));
            }
        }
        Err(err) => problems.push(problem("form", err)),
    }
    problems
}

/// The field a "\"amount\" is a required property" message names.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix('"')?;
    let end = rest.find('"')?;
    rest[end..].contains("required").then(|| &rest[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(form: Value) -> FormSpec {
        FormSpec {
            form,
            editable: vec!["amount".into()],
            merge_into: Some("order.approval".into()),
        }
    }

    fn form() -> Value {
        json!({"type": "object", "required": ["amount", "code"], "properties": {
            "amount": {"type": "number", "minimum": 0, "maximum": 50000},
            "code": {"type": "string", "enum": ["ok", "exception"]},
            "ship_by": {"type": "string", "format": "date"},
            "ref": {"type": "string", "pattern": "^PO-[0-9]+$"},
            "urgent": {"type": "boolean"}}})
    }

    #[test]
    fn a_usable_form_passes_and_its_data_is_checked_by_field() {
        let s = spec(form());
        assert_eq!(check_spec(&s), Vec::new());
        assert_eq!(
            check_data(
                &s,
                &json!({"amount": 9000, "code": "ok", "ship_by": "2026-12-24"})
            ),
            Vec::new()
        );
        let paths = |data: Value| {
            let mut p: Vec<String> = check_data(&s, &data).into_iter().map(|p| p.path).collect();
            p.sort();
            p
        };
        assert_eq!(
            paths(
                json!({"amount": 90000, "code": "maybe", "ship_by": "soon", "ref": "x", "other": 1})
            ),
            [
                "data.amount",
                "data.code",
                "data.other",
                "data.ref",
                "data.ship_by"
            ]
        );
        assert_eq!(paths(json!({"amount": 1})), ["data.code"]);
    }

    #[test]
    fn forms_outside_the_subset_are_refused_with_their_paths() {
        let paths = |form: Value| -> Vec<String> {
            check_spec(&spec(form))
                .into_iter()
                .map(|p| p.path)
                .collect()
        };
        assert_eq!(
            paths(json!({"type": "array"})),
            ["type", "properties", "editable"]
        );
        assert_eq!(
            paths(
                json!({"type": "object", "properties": {"amount": {"type": "object"}, "code": {"type": "string", "format": "email", "oneOf": []}}})
            ),
            [
                "properties.amount.type",
                "properties.code.oneOf",
                "properties.code.format"
            ]
        );
        assert_eq!(
            paths(
                json!({"type": "object", "required": ["nope"], "properties": {"x": {"type": "string"}}})
            ),
            ["required", "editable"]
        );
        assert_eq!(
            paths(
                json!({"type": "object", "properties": {"amount": {"type": "string", "pattern": "(["}}})
            ),
            [""]
        );
    }
}
