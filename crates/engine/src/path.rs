//! Dotted paths into JSON (`order.items.0.sku`, `order.items.length`), parsed once and
//! walked without allocating.

use serde_json::Value;

/// One segment of a path: an object key that may also be an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    key: String,
    index: Option<usize>,
}

/// A parsed dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    text: String,
    segments: Vec<Segment>,
}

/// The result of looking a path up: a borrowed value, a computed one (`.length`), or
/// nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Found<'a> {
    /// The value at the path.
    Value(&'a Value),
    /// A computed value (a `.length`).
    Computed(Value),
    /// Nothing is there.
    Missing,
}

impl Found<'_> {
    /// The value, cloned, or `None` when missing.
    pub fn into_owned(self) -> Option<Value> {
        match self {
            Found::Value(v) => Some(v.clone()),
            Found::Computed(v) => Some(v),
            Found::Missing => None,
        }
    }

    /// A reference to the value; `Null` when missing.
    pub fn as_value(&self) -> &Value {
        static NULL: Value = Value::Null;
        match self {
            Found::Value(v) => v,
            Found::Computed(v) => v,
            Found::Missing => &NULL,
        }
    }

    /// Whether something (possibly `null`) is there.
    pub fn is_present(&self) -> bool {
        !matches!(self, Found::Missing)
    }
}

impl Path {
    /// Parses `a.b.0.c`. Empty segments (`a..b`) are kept and simply never match.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        let segments = text
            .split('.')
            .map(|s| Segment {
                key: s.to_owned(),
                index: s.parse().ok(),
            })
            .collect();
        Self {
            text: text.to_owned(),
            segments,
        }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first segment (the root name).
    pub fn root(&self) -> &str {
        self.segments.first().map_or("", |s| s.key.as_str())
    }

    /// Looks the path up in `value`, skipping the first `skip` segments.
    pub fn lookup_from<'a>(&self, value: &'a Value, skip: usize) -> Found<'a> {
        let mut current = value;
        let mut segments = self.segments.iter().skip(skip).peekable();
        while let Some(segment) = segments.next() {
            let next = match current {
                Value::Object(map) => map.get(&segment.key),
                Value::Array(items) => segment.index.and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(v) => current = v,
                None if segment.key == "length" && segments.peek().is_none() => {
                    return match current {
                        Value::Array(items) => Found::Computed(Value::from(items.len())),
                        Value::String(s) => Found::Computed(Value::from(s.chars().count())),
                        Value::Object(map) => Found::Computed(Value::from(map.len())),
                        _ => Found::Missing,
                    };
                }
                None => return Found::Missing,
            }
        }
        Found::Value(current)
    }

    /// Looks the whole path up in `value`.
    pub fn lookup<'a>(&self, value: &'a Value) -> Found<'a> {
        self.lookup_from(value, 0)
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether the path has no segments (never: an empty string is one empty segment).
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// Writes `value` at dotted `path` inside `target`, creating objects along the way and
/// replacing non-objects in the way. Numeric segments index existing arrays.
pub fn set_path(target: &mut Value, path: &str, value: Value) {
    let segments: Vec<&str> = path.split('.').collect();
    set_segments(target, &segments, value);
}

fn set_segments(current: &mut Value, segments: &[&str], value: Value) {
    let Some((first, rest)) = segments.split_first() else {
        *current = value;
        return;
    };
    if let Value::Array(items) = current {
        if let Some(slot) = first.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
            return set_segments(slot, rest, value);
        }
    }
    if !current.is_object() {
        *current = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(map) = current {
        let slot = map.entry((*first).to_owned()).or_insert(Value::Null);
        set_segments(slot, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn walks_objects_arrays_and_length() {
        let v =
            json!({"order": {"items": [{"sku": "a"}, {"sku": "b"}], "note": "héllo", "0": "zero"}});
        assert_eq!(
            Path::parse("order.items.1.sku").lookup(&v),
            Found::Value(&json!("b"))
        );
        assert_eq!(
            Path::parse("order.items.length").lookup(&v),
            Found::Computed(json!(2))
        );
        assert_eq!(
            Path::parse("order.note.length").lookup(&v),
            Found::Computed(json!(5))
        );
        assert_eq!(
            Path::parse("order.0").lookup(&v),
            Found::Value(&json!("zero"))
        );
        assert_eq!(Path::parse("order.items.9.sku").lookup(&v), Found::Missing);
        assert_eq!(Path::parse("order.missing").lookup(&v), Found::Missing);
        assert_eq!(
            Path::parse("order.items.0.sku.deeper").lookup(&v),
            Found::Missing
        );
    }

    #[test]
    fn set_path_creates_and_replaces() {
        let mut v = json!({"a": 1, "list": [1, 2]});
        set_path(&mut v, "a.b.c", json!(true));
        set_path(&mut v, "list.1", json!("x"));
        set_path(&mut v, "new", json!(null));
        assert_eq!(
            v,
            json!({"a": {"b": {"c": true}}, "list": [1, "x"], "new": null})
        );
    }
}
