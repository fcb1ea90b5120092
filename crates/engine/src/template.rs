//! Templates (docs/workflow-format.md, "Conditions" and "Templates"): `{{path}}` and `${path}` inside strings.
//!
//! A string that is exactly one template yields the raw JSON value (a number stays a
//! number); otherwise each template is stringified into the text. A missing path renders
//! as empty text and adds a warning. Secrets (`secrets.NAME`) render as their value when
//! a request is made and as `"***"` in anything recorded ([`Mode::Redacted`]).

use std::collections::HashMap;
use std::fmt::Write;

use chrono::SecondsFormat;
use serde_json::Value;
use tollgate_model::records::Timestamp;
use uuid::Uuid;

use crate::path::{Found, Path};

/// Secret values from server configuration, by name.
pub type Secrets = HashMap<String, String>;

/// `text` with every secret's value replaced by `***` (longest values first, so a secret
/// that contains another is replaced whole). For text that may quote what was sent —
/// an HTTP library's error, a remote's answer — before it is stored, returned or logged.
pub fn redact_secrets(text: &str, secrets: &Secrets) -> String {
    let mut values: Vec<&str> = secrets
        .values()
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_owned();
    for value in values {
        if out.contains(value) {
            out = out.replace(value, "***");
        }
    }
    out
}

/// [`redact_secrets`] on every string (keys included) of a JSON value.
pub fn redact_value(value: Value, secrets: &Secrets) -> Value {
    if secrets.is_empty() {
        return value;
    }
    match value {
        Value::String(s) => Value::String(redact_secrets(&s, secrets)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| redact_value(v, secrets))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (redact_secrets(&k, secrets), redact_value(v, secrets)))
                .collect(),
        ),
        other => other,
    }
}

/// The text that stands for a secret in recorded data.
pub const REDACTED: &str = "***";

/// Everything a template or condition can read.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The execution's context (the default root).
    pub context: &'a Value,
    /// The current time, for `now` and `now_plus_<duration>`.
    pub now: Timestamp,
    /// `execution.id`.
    pub execution_id: Option<Uuid>,
    /// `workflow.id` (the workflow's string id).
    pub workflow_id: Option<&'a str>,
    /// `step.id`.
    pub step_id: Option<&'a str>,
    /// `secrets.NAME`.
    pub secrets: Option<&'a Secrets>,
    /// Names that shadow context roots (a foreach `item_var` and `index`, a wait's
    /// `event`).
    pub locals: &'a [(&'a str, &'a Value)],
}

impl<'a> Scope<'a> {
    /// A scope over `context` alone.
    pub fn new(context: &'a Value, now: Timestamp) -> Self {
        Self {
            context,
            now,
            execution_id: None,
            workflow_id: None,
            step_id: None,
            secrets: None,
            locals: &[],
        }
    }

    /// Resolves a path against the roots: locals, then the special names, then the
    /// context.
    pub fn resolve(&self, path: &Path, mode: Mode) -> Resolved<'a> {
        let root = path.root();
        if let Some((_, value)) = self.locals.iter().find(|(name, _)| *name == root) {
            return Resolved::Found(path.lookup_from(value, 1));
        }
        match (root, path.len()) {
            ("now", 1) => {
                return Resolved::Found(Found::Computed(Value::String(rfc3339(self.now))))
            }
            ("execution", 2) if path.as_str() == "execution.id" => {
                if let Some(id) = self.execution_id {
                    return Resolved::Found(Found::Computed(Value::String(id.to_string())));
                }
            }
            ("workflow", 2) if path.as_str() == "workflow.id" => {
                if let Some(id) = self.workflow_id {
                    return Resolved::Found(Found::Computed(Value::String(id.to_owned())));
                }
            }
            ("step", 2) if path.as_str() == "step.id" => {
                if let Some(id) = self.step_id {
                    return Resolved::Found(Found::Computed(Value::String(id.to_owned())));
                }
            }
            ("secrets", 2) => {
                let name = &path.as_str()["secrets.".len()..];
                return match self.secrets.and_then(|s| s.get(name)) {
                    Some(_) if mode == Mode::Redacted => {
                        Resolved::Secret(Value::String(REDACTED.to_owned()))
                    }
                    Some(secret) => Resolved::Secret(Value::String(secret.clone())),
                    None => Resolved::Found(Found::Missing),
                };
            }
            (relative, 1) => {
                if let Some(at) = relative_time(relative, self.now) {
                    return Resolved::Found(Found::Computed(Value::String(rfc3339(at))));
                }
            }
            _ => {}
        }
        Resolved::Found(path.lookup(self.context))
    }
}

/// `now_plus_24h` / `now_minus_7d`: the current time shifted by a duration.
fn relative_time(name: &str, now: Timestamp) -> Option<Timestamp> {
    if let Some(d) = name.strip_prefix("now_plus_") {
        d.parse::<tollgate_model::Duration>()
            .ok()
            .map(|d| now + d.as_chrono())
    } else if let Some(d) = name.strip_prefix("now_minus_") {
        d.parse::<tollgate_model::Duration>()
            .ok()
            .map(|d| now - d.as_chrono())
    } else {
        None
    }
}

fn rfc3339(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A resolved path: a value from the scope, or a secret.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved<'a> {
    /// From the context, locals or special names.
    Found(Found<'a>),
    /// A secret (already redacted in [`Mode::Redacted`]).
    Secret(Value),
}

/// Whether secrets render as their value (to make a request) or redacted (to record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Secrets render as their values.
    Live,
    /// Secrets render as `"***"`.
    Redacted,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Path(Path),
}

/// A string parsed into literal text and template paths, reusable across renders.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a string. Unclosed `{{` or `${` are literal text.
    pub fn parse(text: &str) -> Self {
        let parts = tollgate_model::template::scan(text)
            .into_iter()
            .map(|piece| match piece {
                tollgate_model::template::Piece::Text(text) => Part::Text(text),
                tollgate_model::template::Piece::Path(path) => Part::Path(Path::parse(&path)),
            })
            .collect();
        Self { parts }
    }

    /// The path when the string is exactly one template (`"{{order.total}}"`).
    pub fn single_path(&self) -> Option<&Path> {
        match self.parts.as_slice() {
            [Part::Path(path)] => Some(path),
            _ => None,
        }
    }

    /// Whether the string contains any template.
    pub fn has_paths(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Path(_)))
    }

    /// Renders: one whole template yields the raw value; otherwise text. Missing paths
    /// render empty and push a warning.
    pub fn render(&self, scope: &Scope<'_>, mode: Mode, warnings: &mut Vec<String>) -> Value {
        if let [Part::Path(path)] = self.parts.as_slice() {
            return match scope.resolve(path, mode) {
                Resolved::Found(found) => found.into_owned().unwrap_or_else(|| {
                    warnings.push(missing(path));
                    Value::String(String::new())
                }),
                Resolved::Secret(value) => value,
            };
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Path(path) => match scope.resolve(path, mode) {
                    Resolved::Found(Found::Missing) => warnings.push(missing(path)),
                    Resolved::Found(found) => push_text(&mut out, found.as_value()),
                    Resolved::Secret(value) => push_text(&mut out, &value),
                },
            }
        }
        Value::String(out)
    }

    /// Renders to text (a whole-template number becomes its digits).
    pub fn render_text(&self, scope: &Scope<'_>, mode: Mode, warnings: &mut Vec<String>) -> String {
        match self.render(scope, mode, warnings) {
            Value::String(s) => s,
            other => {
                let mut s = String::new();
                push_text(&mut s, &other);
                s
            }
        }
    }
}

fn missing(path: &Path) -> String {
    if path.root() == "secrets" {
        format!(
            "template `{{{{{}}}}}`: no such secret is configured; rendered empty",
            path.as_str()
        )
    } else {
        format!(
            "template `{{{{{}}}}}`: `{}` is missing; rendered empty",
            path.as_str(),
            path.as_str()
        )
    }
}

/// Stringifies a value for interpolation: strings as they are, null as nothing, other
/// values as JSON.
pub fn push_text(out: &mut String, value: &Value) {
    match value {
        Value::String(s) => out.push_str(s),
        Value::Null => {}
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Renders every string inside a JSON value (object keys are left as written).
pub fn render_value(
    value: &Value,
    scope: &Scope<'_>,
    mode: Mode,
    warnings: &mut Vec<String>,
) -> Value {
    match value {
        Value::String(s) => {
            let template = Template::parse(s);
            if template.has_paths() {
                template.render(scope, mode, warnings)
            } else {
                value.clone()
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, scope, mode, warnings))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_value(v, scope, mode, warnings)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Renders a string template to text.
pub fn render_str(text: &str, scope: &Scope<'_>, mode: Mode, warnings: &mut Vec<String>) -> String {
    Template::parse(text).render_text(scope, mode, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 3, 1, 9, 30, 0).unwrap()
    }

    #[test]
    fn whole_templates_keep_their_type_and_mixed_ones_stringify() {
        let ctx =
            json!({"order": {"total": 12000, "items": [1, 2, 3], "vip": true, "tags": ["a"]}});
        let scope = Scope::new(&ctx, now());
        let mut w = Vec::new();
        assert_eq!(
            render_value(&json!("{{order.total}}"), &scope, Mode::Live, &mut w),
            json!(12000)
        );
        assert_eq!(
            render_value(&json!("${order.vip}"), &scope, Mode::Live, &mut w),
            json!(true)
        );
        assert_eq!(
            render_value(
                &json!("{{ order.items.length }}"),
                &scope,
                Mode::Live,
                &mut w
            ),
            json!(3)
        );
        assert_eq!(
            render_value(
                &json!("Total: ${{order.total}} ({{order.items.length}} items) {{order.tags}}"),
                &scope,
                Mode::Live,
                &mut w
            ),
            json!("Total: $12000 (3 items) [\"a\"]")
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            render_value(
                &json!({"n": ["{{order.items.0}}"]}),
                &scope,
                Mode::Live,
                &mut w
            ),
            json!({"n": [1]})
        );
    }

    #[test]
    fn missing_paths_render_empty_with_a_warning() {
        let ctx = json!({});
        let scope = Scope::new(&ctx, now());
        let mut w = Vec::new();
        assert_eq!(
            render_str("Hi {{customer.name}}!", &scope, Mode::Live, &mut w),
            "Hi !"
        );
        assert_eq!(
            render_value(&json!("{{customer.name}}"), &scope, Mode::Live, &mut w),
            json!("")
        );
        assert_eq!(w.len(), 2);
        assert!(w[0].contains("customer.name"));
    }

    #[test]
    fn special_roots_and_locals() {
        let ctx = json!({"execution": {"id": "shadowed"}, "x": 1});
        let secrets = Secrets::from([("token".to_owned(), "s3cr3t".to_owned())]);
        let item = json!({"sku": "A-1"});
        let locals = [("line", &item)];
        let id = Uuid::nil();
        let scope = Scope {
            execution_id: Some(id),
            workflow_id: Some("wf"),
            step_id: Some("notify"),
            secrets: Some(&secrets),
            locals: &locals,
            ..Scope::new(&ctx, now())
        };
        let mut w = Vec::new();
        let r = |t: &str, mode, w: &mut Vec<String>| render_str(t, &scope, mode, w);
        assert_eq!(r("{{now}}", Mode::Live, &mut w), "2026-03-01T09:30:00.000Z");
        assert_eq!(
            r("{{now_plus_24h}}", Mode::Live, &mut w),
            "2026-03-02T09:30:00.000Z"
        );
        assert_eq!(
            r(
                "{{execution.id}}/{{workflow.id}}/{{step.id}}",
                Mode::Live,
                &mut w
            ),
            format!("{id}/wf/notify")
        );
        assert_eq!(
            r("Bearer {{secrets.token}}", Mode::Live, &mut w),
            "Bearer s3cr3t"
        );
        assert_eq!(
            r("Bearer {{secrets.token}}", Mode::Redacted, &mut w),
            "Bearer ***"
        );
        assert_eq!(r("{{line.sku}}", Mode::Live, &mut w), "A-1");
        assert!(w.is_empty());
        assert_eq!(r("{{secrets.nope}}", Mode::Live, &mut w), "");
        assert!(w[0].contains("no such secret"));
    }

    #[test]
    fn malformed_templates_are_text() {
        let ctx = json!({"a": 1});
        let scope = Scope::new(&ctx, now());
        let mut w = Vec::new();
        for text in ["{{a", "${a", "{{}}", "a }} b", "{{ }} {{a}}"] {
            let out = render_str(text, &scope, Mode::Live, &mut w);
            assert!(!out.is_empty() || text.is_empty(), "{text}");
        }
        assert_eq!(
            render_str("{{}} {{a}}", &scope, Mode::Live, &mut w),
            "{{}} 1"
        );
        assert_eq!(
            render_str("cost: ${5}", &scope, Mode::Live, &mut w),
            "cost: "
        );
    }
}
