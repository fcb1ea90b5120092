//! Correlation keys: how an incoming event finds the waits it may satisfy without being
//! checked against every wait of its type (docs/execution-semantics.md, "Correlation
//! keys").
//!
//! A wait's key is made, when the wait is entered, of the `eq` leaves of its resolved
//! `match` that compare an event field with a value and that every match must satisfy
//! (reached through `and` only: [`tollgate_model::Condition::key_leaves`]). The sorted
//! field paths are the key's *shape*; the values, canonicalised, its *hash*. An event
//! computes, for each shape waiting on its type, the same hash from its own payload, and
//! the store returns the waits with that hash and the waits without a key. The key is
//! sound: whenever a match holds, the event's hash for the wait's shape equals the
//! wait's, because the canonical form follows `eq`'s numeric rule — two values are
//! `eq` exactly when their canonical forms are equal. Every candidate is then checked
//! against its whole `match`, which rules out hash collisions and applies the parts
//! the key leaves out.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tollgate_model::records::Correlation;

use crate::condition::{as_number, CompiledCondition};
use crate::path::{Found, Path};
use crate::template::{Mode, Resolved, Scope};

/// The key of a wait's resolved `match` (templates already rendered), or `None` when it
/// has no usable equality part: then every event of its type is checked against it.
/// A leaf whose value is not a scalar after rendering (an object, an array, `null`, a
/// string that still reads as a template) is left to the full check.
pub fn key_of_match(resolved: &Value) -> Option<Correlation> {
    let condition = tollgate_model::parse_condition(resolved).ok()?;
    let mut pairs: Vec<(String, String)> = condition
        .key_leaves()
        .into_iter()
        .filter_map(|leaf| {
            let value = leaf.value.as_ref()?;
            if let Value::String(text) = value {
                if text.contains("{{") || text.contains("${") {
                    return None;
                }
            }
            Some((
                Path::parse(&leaf.field).as_str().to_owned(),
                canonical(value)?,
            ))
        })
        .collect();
    if pairs.is_empty() {
        return None;
    }
    pairs.sort();
    let (fields, values): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
    let shape = shape_of(&fields);
    let hash = hash_of(&shape, &values);
    Some(Correlation {
        shape,
        fields,
        values,
        hash,
    })
}

/// The shapes a definition's wait steps will have, by event type — those whose `match`
/// has equality parts, assuming every template in them renders to a scalar (a wait
/// whose template does not gets another shape when entered, and finds its early events
/// without keys). Stored events are keyed for these shapes, so that entering such a wait
/// finds an early event by one probe.
pub fn definition_shapes(
    definition: &tollgate_model::WorkflowDefinition,
) -> Vec<(String, String, Vec<String>)> {
    fn walk(
        steps: &[tollgate_model::definition::Step],
        out: &mut Vec<(String, String, Vec<String>)>,
    ) {
        for step in steps {
            let mut awaited = Vec::new();
            match &step.kind {
                tollgate_model::definition::StepKind::Wait { wait, .. } => {
                    awaited.push((&wait.event, wait.match_.as_ref()));
                }
                tollgate_model::definition::StepKind::FirstOf { first_of } => {
                    for branch in first_of {
                        if let tollgate_model::definition::Branch::Event { event, match_, .. } =
                            branch
                        {
                            awaited.push((event, match_.as_ref()));
                        }
                    }
                }
                _ => {}
            }
            for (event, condition) in awaited {
                let Some(condition) = condition else {
                    continue;
                };
                let mut fields: Vec<String> = condition
                    .key_leaves()
                    .into_iter()
                    .map(|leaf| Path::parse(&leaf.field).as_str().to_owned())
                    .collect();
                if !fields.is_empty() {
                    fields.sort();
                    let shape = shape_of(&fields);
                    if !out.iter().any(|(t, s, _)| t == event && *s == shape) {
                        out.push((event.clone(), shape, fields));
                    }
                }
            }
            walk(step.children(), out);
        }
    }
    let mut out = Vec::new();
    walk(&definition.steps, &mut out);
    out
}

/// The hash an event with `payload` has for a shape reading `fields`, or `None` when one
/// of those fields is missing or not a scalar: then no wait of that shape can match it.
pub fn event_hash(shape: &str, fields: &[String], payload: &Value) -> Option<String> {
    let locals = [("event", payload)];
    let context = Value::Null;
    let scope = Scope {
        locals: &locals,
        ..Scope::new(&context, chrono::DateTime::<chrono::Utc>::MIN_UTC)
    };
    let values = fields
        .iter()
        .map(
            |field| match scope.resolve(&Path::parse(field), Mode::Live) {
                Resolved::Found(Found::Missing) => None,
                Resolved::Found(found) => canonical(found.as_value()),
                Resolved::Secret(_) => None,
            },
        )
        .collect::<Option<Vec<String>>>()?;
    Some(hash_of(shape, &values))
}

/// The canonical form of a value under `eq`: `n:` and the number (an integer, or the
/// bits of any other float) for what the numeric rule reads as a number (`42`, `42.0` and `"42"` are one key), `j:` and the JSON of
/// other scalars; `None` for `null`, arrays and objects, which a key never holds.
fn canonical(value: &Value) -> Option<String> {
    if let Some(number) = as_number(value) {
        // Whole numbers (`-0.0` included: `eq` to `0`) as integers, others by their
        // bits: both spellings are fixed, so keys stored by one release are computed the
        // same by the next (float formatting is not).
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        if number.fract() == 0.0 && number.abs() <= EXACT {
            #[allow(clippy::cast_possible_truncation)]
            return Some(format!("n:{}", number as i64));
        }
        return Some(format!("n:0x{:016x}", number.to_bits()));
    }
    match value {
        Value::Null | Value::Array(_) | Value::Object(_) => None,
        scalar => Some(format!("j:{scalar}")),
    }
}

/// 32 hex digits of the SHA-256 of the sorted field paths.
fn shape_of(fields: &[String]) -> String {
    let mut digest = Sha256::new();
    digest.update(b"tollgate-shape-1");
    for field in fields {
        digest.update([0x1f]);
        digest.update(field.as_bytes());
    }
    hex(&digest.finalize()[..16])
}

/// 16 hex digits of the SHA-256 of a shape and its values (collisions only add
/// candidates, each checked against its whole match).
fn hash_of(shape: &str, values: &[String]) -> String {
    let mut digest = Sha256::new();
    digest.update(shape.as_bytes());
    for value in values {
        digest.update([0x1f]);
        digest.update(value.as_bytes());
    }
    hex(&digest.finalize()[..8])
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Compiled wait matches, by their resolved JSON text. Waits entered at the same step
/// with the same rendered values (every wait of a step whose `match` has no templates)
/// share one compiled condition: an event checked against many of them parses and
/// compiles the match — regexes included — once. Bounded: when full it starts over.
static COMPILED: LazyLock<Mutex<HashMap<String, Option<Arc<CompiledCondition>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Entries kept in [`COMPILED`] before it starts over.
const COMPILED_CAPACITY: usize = 4096;

/// The compiled form of a resolved match (`None`: it does not parse or compile, and so
/// matches nothing), from the cache when it was compiled before.
pub(crate) fn compiled_match(resolved: &Value) -> Option<Arc<CompiledCondition>> {
    let text = resolved.to_string();
    if let Ok(cache) = COMPILED.lock() {
        if let Some(found) = cache.get(&text) {
            return found.clone();
        }
    }
    let compiled = tollgate_model::parse_condition(resolved)
        .ok()
        .and_then(|condition| CompiledCondition::compile(&condition).ok())
        .map(Arc::new);
    if let Ok(mut cache) = COMPILED.lock() {
        if cache.len() >= COMPILED_CAPACITY {
            cache.clear();
        }
        cache.insert(text, compiled.clone());
    }
    compiled
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    fn key(m: Value) -> Option<Correlation> {
        key_of_match(&m)
    }

    #[test]
    fn a_key_is_the_sorted_event_equalities_reached_through_and() {
        let k = key(json!({"and": [
            {"field": "event.region", "operator": "eq", "value": "eu"},
            {"field": "event.amount", "operator": "gt", "value": 10},
            {"field": "event.order_id", "operator": "eq", "value": 42},
            {"or": [{"field": "event.x", "operator": "eq", "value": 1}]},
            {"field": "context.y", "operator": "eq", "value": 1},
        ]}))
        .unwrap();
        assert_eq!(k.fields, vec!["event.order_id", "event.region"]);
        assert_eq!(k.values, vec!["n:42", "j:\"eu\""]);
        assert_eq!(k.shape.len(), 32);
        assert_eq!(k.hash.len(), 16);
    }

    #[test]
    fn matches_without_a_usable_equality_have_no_key() {
        assert!(key(json!({"field": "event.a", "operator": "gt", "value": 1})).is_none());
        assert!(key(json!({"or": [{"field": "event.a", "operator": "eq", "value": 1}]})).is_none());
        assert!(key(json!({"field": "event.a", "operator": "eq", "value": null})).is_none());
        assert!(key(json!({"field": "event.a", "operator": "eq", "value": [1]})).is_none());
        assert!(key(json!({"field": "event.a", "operator": "eq", "value": "{{x}}"})).is_none());
        assert!(key(json!({"field": "order.a", "operator": "eq", "value": 1})).is_none());
    }

    #[test]
    fn values_equal_under_eq_have_one_hash() {
        let wait = key(json!({"field": "event.id", "operator": "eq", "value": "42"})).unwrap();
        for payload in [
            json!({"id": 42}),
            json!({"id": 42.0}),
            json!({"id": " 42 "}),
        ] {
            assert_eq!(
                event_hash(&wait.shape, &wait.fields, &payload).as_deref(),
                Some(wait.hash.as_str()),
                "{payload}"
            );
        }
        let zero = key(json!({"field": "event.id", "operator": "eq", "value": -0.0})).unwrap();
        assert_eq!(
            event_hash(&zero.shape, &zero.fields, &json!({"id": 0})).as_deref(),
            Some(zero.hash.as_str())
        );
        for other in [
            json!({"id": 43}),
            json!({"id": "x"}),
            json!({}),
            json!({"id": [42]}),
        ] {
            assert_ne!(
                event_hash(&wait.shape, &wait.fields, &other).as_deref(),
                Some(wait.hash.as_str()),
                "{other}"
            );
        }
    }

    #[test]
    fn the_key_is_stable_across_releases() {
        // Keys are stored: a change here strands every wait stored before it.
        let k = key(json!({"and": [
            {"field": "event.order_id", "operator": "eq", "value": "A-1"},
            {"field": "event.qty", "operator": "eq", "value": 42},
            {"field": "event.rate", "operator": "eq", "value": 0.5},
            {"field": "event.rush", "operator": "eq", "value": true},
        ]}))
        .unwrap();
        assert_eq!(
            k.values,
            ["j:\"A-1\"", "n:42", "n:0x3fe0000000000000", "j:true"]
        );
        assert_eq!(k.shape, "809f7b75a0c355b3ec8bd649ed27c6dc");
        assert_eq!(k.hash, "d57683e49f92d93b");
    }

    fn scalar() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            (-3i64..3).prop_map(Value::from),
            (-3i64..3).prop_map(|n| Value::from(n as f64 / 2.0)),
            (-3i64..3).prop_map(|n| Value::from(format!("{n}"))),
            (-3i64..3).prop_map(|n| Value::from(format!(" {n}.0"))),
            prop_oneof![Just("a"), Just("b"), Just(""), Just("-0")].prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
            Just(json!([1])),
        ]
    }

    proptest::proptest! {
        /// Soundness: whenever an event satisfies a wait's match, the event's hash for
        /// the wait's shape is the wait's hash — a key never hides a match.
        #[test]
        fn a_satisfied_match_always_has_the_waits_key(
            a in scalar(), b in scalar(), x in scalar(), y in scalar(),
        ) {
            let resolved = json!({"and": [
                {"field": "event.a", "operator": "eq", "value": a},
                {"field": "event.b", "operator": "==", "value": b},
            ]});
            let payload = json!({"a": x, "b": y});
            let now = chrono::Utc::now();
            if crate::wait_matches(Some(&resolved), &json!({}), &payload, now) {
                let key = key_of_match(&resolved);
                if let Some(key) = key {
                    proptest::prop_assert_eq!(
                        event_hash(&key.shape, &key.fields, &payload),
                        Some(key.hash)
                    );
                }
            }
        }
    }
}
