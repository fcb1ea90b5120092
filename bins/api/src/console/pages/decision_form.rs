//! Decision forms in the console and on decision-link pages (docs/approvals.md,
//! "Decision forms"): a step's form as plain HTML inputs, and a posted form read back
//! into the decision's `data` by each field's type. There is no JavaScript and no
//! browser-side validation: the server checks every value, and a refused decision
//! comes back as the same page, with what was typed and each problem next to its field.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, SecondsFormat};
use maud::{html, Markup};
use serde_json::{Map, Number, Value};
use tollgate_model::definition::FormSpec;
use tollgate_model::form::{self, FormProblem};

/// How a form field's input is named in a posted form: `field.<name>`, so that form
/// fields never collide with the decision's own (`reason`, `_csrf`, `nonce`).
const PREFIX: &str = "field.";

/// The state a decision form is drawn in: blank (its values from the request and the
/// form's defaults), or after a refused decision (what was posted, and the problems).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Filled<'a> {
    /// The posted form's fields, when the page answers a refused decision.
    pub values: Option<&'a BTreeMap<String, String>>,
    /// What the server found wrong with them, by path (`data.amount`).
    pub problems: &'a [FormProblem],
    /// The reason given with the refused approval, to keep.
    pub reason: Option<&'a str>,
}

/// The inputs of `spec`'s fields, for inside an approve form. `prefix` makes their ids
/// unique on a page with several requests (the inbox).
pub(super) fn fields(spec: &FormSpec, request: &Value, prefix: &str, filled: Filled) -> Markup {
    let names: Vec<&str> = form::fields(&spec.form)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    // Problems no field shows: the whole data's, or a field the form does not have.
    let loose: Vec<&FormProblem> = filled
        .problems
        .iter()
        .filter(|p| {
            p.path
                .strip_prefix("data.")
                .is_none_or(|f| !names.contains(&f))
        })
        .collect();
    html! {
        fieldset.form-fields {
            @if let Some(title) = spec.form.get("title").and_then(Value::as_str) { legend { (title) } }
            @if let Some(d) = spec.form.get("description").and_then(Value::as_str) { p.hint { (d) } }
            @for p in &loose { p.field-error role="alert" { (p.message) } }
            @for (name, schema) in form::fields(&spec.form) {
                (field(spec, name, schema, request, prefix, filled))
            }
        }
    }
}

/// One field: its label (with a required mark), hint, input and problems.
fn field(
    spec: &FormSpec,
    name: &str,
    schema: &Value,
    request: &Value,
    prefix: &str,
    filled: Filled,
) -> Markup {
    let id = format!("{prefix}field-{}", slug(name));
    let error_id = format!("{id}-error");
    let input_name = format!("{PREFIX}{name}");
    let label = schema.get("title").and_then(Value::as_str).unwrap_or(name);
    let required = form::is_required(&spec.form, name);
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    let format = schema.get("format").and_then(Value::as_str);
    let at = format!("data.{name}");
    let problems: Vec<&FormProblem> = filled.problems.iter().filter(|p| p.path == at).collect();
    let value = match filled.values {
        Some(posted) => posted.get(&input_name).cloned().unwrap_or_default(),
        None => initial(spec, name, schema, request),
    };
    let invalid = !problems.is_empty();
    let described = invalid.then_some(error_id.as_str());
    let bound = |key: &str| schema.get(key).map(Value::to_string);
    html! {
        div.field.invalid[invalid] {
            label for=(id) {
                (label)
                @if required { " " abbr.required title="required" { "*" } }
                @if format == Some("date-time") { " " span.muted { "(UTC)" } }
            }
            @if let Some(d) = schema.get("description").and_then(Value::as_str) { small.hint { (d) } }
            @if let Some(options) = schema.get("enum").and_then(Value::as_array) {
                select id=(id) name=(input_name) aria-invalid=[described.map(|_| "true")] aria-describedby=[described] {
                    option value="" selected[value.is_empty()] { "— choose —" }
                    @for option in options {
                        @let text = plain(option);
                        option value=(text) selected[text == value] { (text) }
                    }
                }
            } @else if kind == "boolean" {
                input type="checkbox" id=(id) name=(input_name) value="true" checked[value == "true"]
                    aria-invalid=[described.map(|_| "true")] aria-describedby=[described];
            } @else if kind == "number" || kind == "integer" {
                input type="number" id=(id) name=(input_name) value=(value)
                    step=(if kind == "integer" { "1" } else { "any" })
                    min=[bound("minimum")] max=[bound("maximum")]
                    aria-invalid=[described.map(|_| "true")] aria-describedby=[described];
            } @else {
                input type=(match format { Some("date") => "date", Some("date-time") => "datetime-local", _ => "text" })
                    id=(id) name=(input_name) value=(value)
                    step=[(format == Some("date-time")).then_some("1")]
                    aria-invalid=[described.map(|_| "true")] aria-describedby=[described];
            }
            @for p in &problems { p.field-error id=(error_id) role="alert" { (p.message) } }
        }
    }
}

/// What a blank form shows in a field: the request's value for an editable field, the
/// schema's `default` otherwise, as the input expects it.
fn initial(spec: &FormSpec, name: &str, schema: &Value, request: &Value) -> String {
    let from_request = spec
        .editable
        .iter()
        .any(|e| e == name)
        .then(|| request.get(name))
        .flatten();
    let Some(v) = from_request.or_else(|| schema.get("default")) else {
        return String::new();
    };
    let text = plain(v);
    if schema.get("format").and_then(Value::as_str) == Some("date-time") {
        // `datetime-local` shows a time without a zone: the UTC one.
        if let Ok(at) = DateTime::parse_from_rfc3339(&text) {
            return at.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string();
        }
    }
    text
}

/// The decision's `data` from a posted form: each field of `spec` by its type. An
/// empty field is left out (an editable one then keeps the request's value, a required
/// one is reported missing); an unchecked box is `false`; a number that does not parse
/// is passed on as the text it is, for the server's check to name.
pub(super) fn posted_data(spec: &FormSpec, posted: &BTreeMap<String, String>) -> Value {
    let mut data = Map::new();
    for (name, schema) in form::fields(&spec.form) {
        let raw = posted
            .get(&format!("{PREFIX}{name}"))
            .map(|v| v.trim())
            .unwrap_or_default();
        let kind = schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("string");
        let value = match kind {
            "boolean" => Value::Bool(matches!(raw, "true" | "on")),
            _ if raw.is_empty() => continue,
            "number" | "integer" => number(raw),
            _ if schema.get("format").and_then(Value::as_str) == Some("date-time") => {
                Value::String(utc_time(raw))
            }
            _ => Value::String(raw.to_owned()),
        };
        data.insert(name.to_owned(), value);
    }
    Value::Object(data)
}

/// The posted fields of a form: its `field.` inputs, all else dropped.
pub(super) fn posted_fields(all: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    all.iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn number(raw: &str) -> Value {
    if let Ok(i) = raw.parse::<i64>() {
        return Value::Number(i.into());
    }
    raw.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or_else(|| Value::String(raw.to_owned()), Value::Number)
}

/// A `datetime-local` value (`2026-12-24T10:30`, no zone) as the UTC time it means in
/// RFC 3339; anything else as it is.
fn utc_time(raw: &str) -> String {
    if DateTime::parse_from_rfc3339(raw).is_ok() {
        return raw.to_owned();
    }
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .map_or_else(
            || raw.to_owned(),
            |t| t.and_utc().to_rfc3339_opts(SecondsFormat::Secs, true),
        )
}

/// A value as a field shows it: a string without quotes, anything else as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A field name as part of an element id: letters, digits, `-` and `_`.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> FormSpec {
        FormSpec {
            form: json!({"type": "object", "required": ["amount", "code"], "properties": {
                "amount": {"type": "number", "minimum": 0, "maximum": 50000, "title": "Approved amount"},
                "units": {"type": "integer"},
                "code": {"type": "string", "enum": ["standard", "exception"]},
                "ship_by": {"type": "string", "format": "date"},
                "at": {"type": "string", "format": "date-time"},
                "urgent": {"type": "boolean", "default": true},
                "note": {"type": "string"}}}),
            editable: vec!["amount".into()],
            merge_into: None,
        }
    }

    fn posted(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn posted_fields_become_data_by_their_type() {
        let data = posted_data(
            &spec(),
            &posted(&[
                ("amount", " 9000.5 "),
                ("units", "3"),
                ("code", "exception"),
                ("ship_by", "2026-12-24"),
                ("at", "2026-12-24T10:30"),
                ("note", ""),
            ]),
        );
        assert_eq!(
            data,
            json!({"amount": 9000.5, "units": 3, "code": "exception", "ship_by": "2026-12-24",
                   "at": "2026-12-24T10:30:00Z", "urgent": false})
        );
        // What does not parse goes on as text, for the schema check to name.
        let data = posted_data(&spec(), &posted(&[("amount", "lots"), ("urgent", "true")]));
        assert_eq!(data, json!({"amount": "lots", "urgent": true}));
        let problems = form::check_data(&spec(), &data);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert!(
            paths.contains(&"data.amount") && paths.contains(&"data.code"),
            "{paths:?}"
        );
    }

    #[test]
    fn a_blank_form_starts_from_the_request_and_a_refused_one_from_what_was_posted() {
        let request = json!({"amount": 12000, "code": "standard"});
        let blank = fields(&spec(), &request, "", Filled::default()).into_string();
        // The editable amount from the request, the default box checked; `code` is not
        // editable, so it is not taken from the request.
        assert!(
            blank.contains(r#"name="field.amount" value="12000""#),
            "{blank}"
        );
        assert!(blank.contains(r#"value="true" checked"#), "{blank}");
        assert!(blank.contains(r#"<option value="" selected>"#), "{blank}");
        assert!(blank.contains(r#"type="date""#) && blank.contains(r#"type="datetime-local""#));
        assert!(blank.contains(r#"<abbr class="required" title="required">*</abbr>"#));
        let values = posted(&[("amount", "90000"), ("code", "exception")]);
        let problems = form::check_data(&spec(), &posted_data(&spec(), &values));
        let refused = fields(
            &spec(),
            &request,
            "x-",
            Filled {
                values: Some(&values),
                problems: &problems,
                reason: None,
            },
        )
        .into_string();
        assert!(
            refused.contains(r#"name="field.amount" value="90000""#),
            "{refused}"
        );
        assert!(
            refused.contains(r#"<option value="exception" selected>"#),
            "{refused}"
        );
        assert!(
            refused.contains(r#"<p class="field-error" id="x-field-amount-error" role="alert">"#),
            "{refused}"
        );
        assert!(
            refused.contains(r#"<div class="field invalid">"#),
            "{refused}"
        );
    }
}
