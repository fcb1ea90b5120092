//! The condition evaluator (docs/workflow-format.md, "Conditions" and "Templates").
//!
//! A [`Condition`] from a definition is compiled once into a [`CompiledCondition`]: paths
//! split, literal regexes built (the `regex` crate: linear time, no catastrophic
//! backtracking), numeric literals parsed. Evaluation then only walks JSON.
//!
//! Semantics: numbers compare numerically, and a numeric string counts as a number;
//! strings compare lexicographically with `gt`/`lt`; `eq` is JSON equality after the
//! numeric rule. A missing field is `null`: only `exists`, `not_exists`, `eq null` and
//! `neq` can be true on it, and it adds a warning — never an error.

use std::borrow::Cow;
use std::cmp::Ordering;

use regex::Regex;
use serde_json::Value;
use tollgate_model::{Condition, Operator};

use crate::path::{Found, Path};
use crate::template::{push_text, Mode, Resolved, Scope, Template};

/// Largest compiled regex accepted (bytes of the compiled program).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A condition ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledCondition {
    node: Node,
}

#[derive(Debug, Clone)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Leaf(Box<Leaf>),
}

#[derive(Debug, Clone)]
struct Leaf {
    field: Path,
    operator: Operator,
    operand: Operand,
}

#[derive(Debug, Clone)]
enum Operand {
    None,
    /// A constant; `templated` when it is an array/object holding templates (rendered at
    /// evaluation).
    Literal {
        value: Value,
        number: Option<f64>,
        templated: bool,
    },
    /// `"{{path}}"`: read in place, without rendering or cloning.
    Path(Path),
    /// Text with templates in it.
    Template(Template),
    Regex(Regex),
}

/// A condition that cannot be compiled (only an invalid literal regex; definitions that
/// passed validation always compile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regular expression in condition on `{field}`: {message}")]
pub struct CompileError {
    /// The leaf's field.
    pub field: String,
    /// What the regex crate said.
    pub message: String,
}

fn build_regex(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

impl CompiledCondition {
    /// Compiles a condition tree.
    pub fn compile(condition: &Condition) -> Result<Self, CompileError> {
        Ok(Self {
            node: compile(condition)?,
        })
    }

    /// Evaluates against `scope`; pushes a warning for each missing field or unusable
    /// operand.
    pub fn evaluate(&self, scope: &Scope<'_>, warnings: &mut Vec<String>) -> bool {
        eval(&self.node, scope, warnings)
    }
}

fn compile(condition: &Condition) -> Result<Node, CompileError> {
    Ok(match condition {
        Condition::And { and } => Node::And(and.iter().map(compile).collect::<Result<_, _>>()?),
        Condition::Or { or } => Node::Or(or.iter().map(compile).collect::<Result<_, _>>()?),
        Condition::Not { not } => Node::Not(Box::new(compile(not)?)),
        Condition::Leaf(leaf) => {
            let operand = match &leaf.value {
                None => Operand::None,
                Some(Value::String(text)) => {
                    let template = Template::parse(text);
                    if let Some(path) = template.single_path() {
                        Operand::Path(path.clone())
                    } else if template.has_paths() {
                        Operand::Template(template)
                    } else if leaf.operator == Operator::Regex {
                        Operand::Regex(build_regex(text).map_err(|e| CompileError {
                            field: leaf.field.clone(),
                            message: e.to_string(),
                        })?)
                    } else {
                        literal(Value::String(text.clone()))
                    }
                }
                // Arrays and objects (e.g. for `in`) may hold templates: rendered at evaluation.
                Some(value) => literal(value.clone()),
            };
            Node::Leaf(Box::new(Leaf {
                field: Path::parse(&leaf.field),
                operator: leaf.operator,
                operand,
            }))
        }
    })
}

fn literal(value: Value) -> Operand {
    let number = as_number(&value);
    let templated = !value.is_string() && contains_template(&value);
    Operand::Literal {
        value,
        number,
        templated,
    }
}

/// The numeric rule: numbers, and strings that parse as finite numbers.
pub(crate) fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                return None;
            }
            t.parse::<f64>().ok().filter(|f| f.is_finite())
        }
        _ => None,
    }
}

fn eval(node: &Node, scope: &Scope<'_>, warnings: &mut Vec<String>) -> bool {
    match node {
        Node::And(children) => children.iter().all(|c| eval(c, scope, warnings)),
        Node::Or(children) => children.iter().any(|c| eval(c, scope, warnings)),
        Node::Not(child) => !eval(child, scope, warnings),
        Node::Leaf(leaf) => eval_leaf(leaf, scope, warnings),
    }
}

/// The operand's value: a literal, a value read in place, or a template rendered now.
enum OperandValue<'a> {
    Literal(&'a Value, Option<f64>),
    Found(Found<'a>),
    Owned(Value),
}

impl OperandValue<'_> {
    fn value(&self) -> &Value {
        match self {
            Self::Literal(v, _) => v,
            Self::Found(found) => found.as_value(),
            Self::Owned(v) => v,
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Self::Literal(_, n) => *n,
            other => as_number(other.value()),
        }
    }
}

fn eval_leaf(leaf: &Leaf, scope: &Scope<'_>, warnings: &mut Vec<String>) -> bool {
    let found = match scope.resolve(&leaf.field, Mode::Live) {
        Resolved::Found(found) => found,
        Resolved::Secret(value) => Found::Computed(value),
    };
    let op = leaf.operator;
    let field = match &found {
        Found::Missing => None,
        other => Some(other.as_value()),
    };
    if field.is_none() && op != Operator::Exists && op != Operator::NotExists {
        warnings.push(format!(
            "condition field `{}` is missing; treated as null",
            leaf.field.as_str()
        ));
    }

    if let Operand::Regex(regex) = &leaf.operand {
        return field.is_some_and(|f| matches_regex(regex, f));
    }
    let operand = match &leaf.operand {
        Operand::None | Operand::Regex(_) => OperandValue::Owned(Value::Null),
        Operand::Literal {
            value,
            templated: true,
            ..
        } => OperandValue::Owned(crate::template::render_value(
            value,
            scope,
            Mode::Live,
            warnings,
        )),
        Operand::Literal {
            value,
            number,
            templated: false,
        } => OperandValue::Literal(value, *number),
        Operand::Path(path) => match scope.resolve(path, Mode::Live) {
            Resolved::Found(Found::Missing) => {
                // A missing path renders empty (docs/workflow-format.md, "Conditions" and "Templates"), as in any other template.
                warnings.push(format!(
                    "template `{{{{{}}}}}`: `{}` is missing; rendered empty",
                    path.as_str(),
                    path.as_str()
                ));
                OperandValue::Owned(Value::String(String::new()))
            }
            Resolved::Found(found) => OperandValue::Found(found),
            Resolved::Secret(value) => OperandValue::Owned(value),
        },
        Operand::Template(t) => OperandValue::Owned(t.render(scope, Mode::Live, warnings)),
    };

    let Some(field) = field else {
        // Missing field = null; only these four can hold.
        return match op {
            Operator::NotExists => true,
            Operator::Eq => operand.value().is_null(),
            Operator::Neq => !operand.value().is_null(),
            _ => false,
        };
    };

    match op {
        Operator::Exists => !field.is_null(),
        Operator::NotExists => field.is_null(),
        Operator::Eq => equal(field, operand.value(), operand.number()),
        Operator::Neq => !equal(field, operand.value(), operand.number()),
        Operator::Gt => compare(field, &operand) == Some(Ordering::Greater),
        Operator::Gte => matches!(
            compare(field, &operand),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        Operator::Lt => compare(field, &operand) == Some(Ordering::Less),
        Operator::Lte => matches!(
            compare(field, &operand),
            Some(Ordering::Less | Ordering::Equal)
        ),
        Operator::In | Operator::NotIn => {
            let Value::Array(options) = operand.value() else {
                warnings.push(format!(
                    "condition on `{}`: `{op}` needs an array value",
                    leaf.field.as_str()
                ));
                return false;
            };
            let found = options.iter().any(|o| equal(field, o, as_number(o)));
            found == (op == Operator::In)
        }
        Operator::Contains => contains(field, operand.value()),
        Operator::NotContains => !contains(field, operand.value()),
        Operator::StartsWith | Operator::EndsWith => {
            match (text_of(field), text_of(operand.value())) {
                (Some(f), Some(v)) => {
                    if op == Operator::StartsWith {
                        f.starts_with(&*v)
                    } else {
                        f.ends_with(&*v)
                    }
                }
                _ => false,
            }
        }
        Operator::Regex => match text_of(operand.value()) {
            Some(pattern) => match build_regex(&pattern) {
                Ok(regex) => matches_regex(&regex, field),
                Err(err) => {
                    warnings.push(format!(
                        "condition on `{}`: invalid regular expression: {err}",
                        leaf.field.as_str()
                    ));
                    false
                }
            },
            None => false,
        },
    }
}

fn contains_template(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("{{") || s.contains("${"),
        Value::Array(items) => items.iter().any(contains_template),
        Value::Object(map) => map.values().any(contains_template),
        _ => false,
    }
}

fn equal(field: &Value, value: &Value, value_number: Option<f64>) -> bool {
    if let (Some(a), Some(b)) = (as_number(field), value_number) {
        #[allow(clippy::float_cmp)]
        return a == b;
    }
    field == value
}

fn compare(field: &Value, operand: &OperandValue<'_>) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (as_number(field), operand.number()) {
        return a.partial_cmp(&b);
    }
    match (field, operand.value()) {
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

fn contains(field: &Value, value: &Value) -> bool {
    match field {
        Value::String(s) => text_of(value).is_some_and(|v| s.contains(&*v)),
        Value::Array(items) => items
            .iter()
            .any(|item| equal(item, value, as_number(value))),
        Value::Object(map) => value.as_str().is_some_and(|k| map.contains_key(k)),
        _ => false,
    }
}

/// Text of a scalar (numbers and booleans stringified); `None` for null, arrays, objects.
fn text_of(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
        scalar => {
            let mut s = String::new();
            push_text(&mut s, scalar);
            Some(Cow::Owned(s))
        }
    }
}

fn matches_regex(regex: &Regex, field: &Value) -> bool {
    match field {
        Value::String(s) => regex.is_match(s),
        other => text_of(other).is_some_and(|s| regex.is_match(&s)),
    }
}
