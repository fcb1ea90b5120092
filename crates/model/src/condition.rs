//! Condition trees (docs/workflow-format.md, "Conditions" and "Templates"): leaves `{field, operator, value}` combined with
//! `and`, `or` and `not`. Evaluation lives in the engine; this is only the shape.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

/// A boolean expression over the execution's context.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Condition {
    /// True when every child is true (true when empty).
    And {
        /// The children.
        and: Vec<Condition>,
    },
    /// True when any child is true (false when empty).
    Or {
        /// The children.
        or: Vec<Condition>,
    },
    /// True when the child is false.
    Not {
        /// The negated condition.
        not: Box<Condition>,
    },
    /// A comparison of one context field with a value.
    Leaf(Leaf),
}

/// A single comparison: `field <operator> value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leaf {
    /// Dotted path into the context (`order.items.0.sku`, `order.items.length`).
    pub field: String,
    /// How to compare.
    pub operator: Operator,
    /// What to compare with; may be a template (`"{{customer.country}}"`). Absent for
    /// `exists`/`not_exists`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// Comparison operators, with their symbolic aliases accepted on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `eq`, `==`: JSON equality after the numeric rule.
    Eq,
    /// `neq`, `!=`.
    Neq,
    /// `gt`, `>`.
    Gt,
    /// `gte`, `>=`.
    Gte,
    /// `lt`, `<`.
    Lt,
    /// `lte`, `<=`.
    Lte,
    /// Field is one of the values of an array.
    In,
    /// Field is none of the values of an array.
    NotIn,
    /// String contains substring, or array contains element.
    Contains,
    /// Negation of `contains`.
    NotContains,
    /// String starts with the value.
    StartsWith,
    /// String ends with the value.
    EndsWith,
    /// String matches the regular expression.
    Regex,
    /// Field is present and not null.
    Exists,
    /// Field is absent or null.
    NotExists,
}

impl Operator {
    /// Every operator, in documentation order.
    pub const ALL: [Operator; 15] = [
        Self::Eq,
        Self::Neq,
        Self::Gt,
        Self::Gte,
        Self::Lt,
        Self::Lte,
        Self::In,
        Self::NotIn,
        Self::Contains,
        Self::NotContains,
        Self::StartsWith,
        Self::EndsWith,
        Self::Regex,
        Self::Exists,
        Self::NotExists,
    ];

    /// The canonical name (`gte`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Neq => "neq",
            Self::Gt => "gt",
            Self::Gte => "gte",
            Self::Lt => "lt",
            Self::Lte => "lte",
            Self::In => "in",
            Self::NotIn => "not_in",
            Self::Contains => "contains",
            Self::NotContains => "not_contains",
            Self::StartsWith => "starts_with",
            Self::EndsWith => "ends_with",
            Self::Regex => "regex",
            Self::Exists => "exists",
            Self::NotExists => "not_exists",
        }
    }

    /// Parses a canonical name or symbolic alias (`>=`); `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "==" => Self::Eq,
            "!=" => Self::Neq,
            ">" => Self::Gt,
            ">=" => Self::Gte,
            "<" => Self::Lt,
            "<=" => Self::Lte,
            other => return Self::ALL.into_iter().find(|op| op.as_str() == other),
        })
    }

    /// Whether the operator compares with a `value` (all but `exists`/`not_exists`).
    pub fn takes_value(self) -> bool {
        !matches!(self, Self::Exists | Self::NotExists)
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Operator {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Condition {
    /// The leaves a wait's correlation key is made of: `eq` comparisons of an event field
    /// (`event`, `event.…`) with a scalar value, reached from the root through `and`s
    /// only — every one of them must hold for the whole condition to hold. Leaves under
    /// `or` or `not`, and other operators, filter the candidates a key finds.
    pub fn key_leaves(&self) -> Vec<&Leaf> {
        let mut out = Vec::new();
        self.collect_key_leaves(&mut out);
        out
    }

    fn collect_key_leaves<'a>(&'a self, out: &mut Vec<&'a Leaf>) {
        match self {
            Self::And { and } => and.iter().for_each(|c| c.collect_key_leaves(out)),
            Self::Leaf(leaf)
                if leaf.operator == Operator::Eq
                    && (leaf.field == "event" || leaf.field.starts_with("event."))
                    && leaf
                        .value
                        .as_ref()
                        .is_some_and(|v| !v.is_null() && !v.is_array() && !v.is_object()) =>
            {
                out.push(leaf);
            }
            Self::Or { .. } | Self::Not { .. } | Self::Leaf(_) => {}
        }
    }

    /// Calls `f` on every leaf, depth first.
    pub fn for_each_leaf<'a>(&'a self, f: &mut impl FnMut(&'a Leaf)) {
        match self {
            Self::And { and: children } | Self::Or { or: children } => {
                for child in children {
                    child.for_each_leaf(f);
                }
            }
            Self::Not { not } => not.for_each_leaf(f),
            Self::Leaf(leaf) => f(leaf),
        }
    }
}
