//! The context's undo trail (docs/execution-semantics.md, "The context's undo trail"):
//! for each step visit, the values its changes to the context replaced. It is what lets
//! an operator's retry from an earlier step put the context back as it was when that step
//! was entered, without a copy of the whole context per step: a step usually writes one
//! new key (`steps.<id>`), and the trail holds only what that key held before — nothing,
//! on a first visit.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// What one step visit changed in the context, as the values it replaced. The engine
/// stores these with its commits; played back newest first they turn the context as it
/// ended into the context as it was at any earlier step's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextUndo {
    /// The top-level step whose visit made the changes; `None` for a change no step made
    /// (a retry's own rewind, so that a later retry can rewind across it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// The visit of that step.
    #[serde(default)]
    pub visit: u32,
    /// The replaced values, in the order the changes happened.
    pub prior: Vec<Prior>,
}

/// One replaced value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prior {
    /// Object keys from the context's root (keys may contain dots, so not a dotted path).
    pub path: Vec<String>,
    /// What the path held; `None` when it did not exist (a JSON `null` is `Some(Null)`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub value: Option<Value>,
}

/// A present `value` key is `Some`, even when it holds `null`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl ContextUndo {
    /// An empty trail entry for a visit of `step_id`.
    pub fn new(step_id: Option<String>, visit: u32) -> Self {
        Self {
            step_id,
            visit,
            prior: Vec::new(),
        }
    }

    /// True when it belongs to visit `visit` of `step_id`.
    pub fn is_of(&self, step_id: &str, visit: u32) -> bool {
        self.step_id.as_deref() == Some(step_id) && self.visit == visit
    }
}

/// Appends to `out` what turning `before` into `after` replaced: for each changed object
/// key, the deepest path at which both sides are still objects, with `before`'s value
/// there (`None` where `after` added the key). Arrays and scalars are replaced whole.
pub fn diff(before: &Value, after: &Value, out: &mut Vec<Prior>) {
    let mut path = Vec::new();
    diff_at(before, after, &mut path, out);
}

fn diff_at(before: &Value, after: &Value, path: &mut Vec<String>, out: &mut Vec<Prior>) {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, old_value) in old {
                path.push(key.clone());
                match new.get(key) {
                    Some(new_value) if new_value == old_value => {}
                    Some(new_value) if old_value.is_object() && new_value.is_object() => {
                        diff_at(old_value, new_value, path, out);
                    }
                    _ => out.push(Prior {
                        path: path.clone(),
                        value: Some(old_value.clone()),
                    }),
                }
                path.pop();
            }
            for key in new.keys().filter(|k| !old.contains_key(*k)) {
                path.push(key.clone());
                out.push(Prior {
                    path: path.clone(),
                    value: None,
                });
                path.pop();
            }
        }
        (old, new) if old == new => {}
        (old, _) => out.push(Prior {
            path: path.clone(),
            value: Some(old.clone()),
        }),
    }
}

/// Puts `prior` back into `context`: the value at its path, or removes the key.
pub fn restore(context: &mut Value, prior: &Prior) {
    let Some((last, parents)) = prior.path.split_last() else {
        if let Some(value) = &prior.value {
            *context = value.clone();
        }
        return;
    };
    let mut node = context;
    for key in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        match &prior.value {
            Some(value) => {
                map.insert(last.clone(), value.clone());
            }
            None => {
                map.remove(last);
            }
        }
    }
}

/// Turns `context` (the context as it stands after all of `trail`, oldest entry first)
/// into the context as it was when visit `visit` of `step_id` was entered: plays the
/// trail back, newest change first, down to that visit's first entry. Returns false, with
/// `context` unchanged, when the trail has no entry for that visit (it changed nothing
/// and nothing after it did, or it ran before the trail was kept).
pub fn rewind(context: &mut Value, trail: &[ContextUndo], step_id: &str, visit: u32) -> bool {
    let Some(first) = trail.iter().position(|u| u.is_of(step_id, visit)) else {
        return false;
    };
    for entry in trail[first..].iter().rev() {
        for prior in entry.prior.iter().rev() {
            restore(context, prior);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn undo(step: &str, visit: u32, before: &Value, after: &Value) -> ContextUndo {
        let mut entry = ContextUndo::new(Some(step.into()), visit);
        diff(before, after, &mut entry.prior);
        entry
    }

    #[test]
    fn a_diff_keeps_only_what_changed_at_the_deepest_object() {
        let before = json!({"trigger": {"a": 1}, "steps": {"x": {"n": 1}}, "gone": null});
        let after = json!({"trigger": {"a": 1}, "steps": {"x": {"n": 2}, "y": [1]}, "new": 3});
        let mut out = Vec::new();
        diff(&before, &after, &mut out);
        // Key order follows the map's (sorted, or insertion order with `preserve_order`).
        out.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!([
                {"path": ["gone"], "value": null},
                {"path": ["new"]},
                {"path": ["steps", "x", "n"], "value": 1},
                {"path": ["steps", "y"]},
            ])
        );
        let back: Vec<Prior> = serde_json::from_value(serde_json::to_value(&out).unwrap()).unwrap();
        assert_eq!(
            back, out,
            "a replaced null stays distinct from an absent key"
        );
    }

    #[test]
    fn rewinding_gives_the_context_at_a_visits_entry() {
        let c0 = json!({"trigger": {"total": 5}});
        let c1 = json!({"trigger": {"total": 5}, "steps": {"a": 1}});
        let c2 = json!({"trigger": {"total": 7}, "steps": {"a": 1, "b": {"k": "v"}}});
        let c3 = json!({"trigger": {"total": 7}, "steps": {"a": 2, "b": {"k": "v"}}});
        let trail = vec![
            undo("a", 1, &c0, &c1),
            undo("b", 1, &c1, &c2),
            undo("a", 2, &c2, &c3),
        ];
        for (step, visit, expected) in [("a", 2, &c2), ("b", 1, &c1), ("a", 1, &c0)] {
            let mut context = c3.clone();
            assert!(rewind(&mut context, &trail, step, visit));
            assert_eq!(&context, expected, "{step} visit {visit}");
        }
        let mut context = c3.clone();
        assert!(!rewind(&mut context, &trail, "c", 1));
        assert_eq!(context, c3);
    }

    #[test]
    fn a_visit_recorded_in_two_parts_rewinds_to_its_first() {
        // A gate: entered in one commit, left after its decision in another.
        let c0 = json!({});
        let c1 = json!({"steps": {"gate": "pending"}});
        let c2 = json!({"steps": {"gate": "approved"}, "approvals": {"gate": "approved"}});
        let trail = vec![undo("gate", 1, &c0, &c1), undo("gate", 1, &c1, &c2)];
        let mut context = c2;
        assert!(rewind(&mut context, &trail, "gate", 1));
        assert_eq!(context, c0);
    }
}
