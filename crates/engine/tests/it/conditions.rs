//! Table-driven tests of every operator against every JSON type (docs/workflow-format.md, "Conditions" and "Templates").

use chrono::TimeZone;
use serde_json::{json, Value};
use tollgate_engine::{CompiledCondition, Scope};
use tollgate_model::parse_condition;

fn ctx() -> Value {
    json!({
        "n": 10, "f": 2.5, "s": "hello world", "ns": "42", "t": true, "z": null,
        "arr": ["a", "b", 3], "obj": {"k": 1}, "country": "DE",
        "customer": {"billing_country": "DE", "tier": "gold"}
    })
}

/// Evaluates `{field, operator, value}` on [`ctx`]; returns (result, warnings).
fn eval(field: &str, operator: &str, value: Option<Value>) -> (bool, Vec<String>) {
    let mut leaf = json!({"field": field, "operator": operator});
    if let Some(v) = value {
        leaf["value"] = v;
    }
    let condition = parse_condition(&leaf).unwrap_or_else(|r| panic!("{leaf}: {:?}", r.errors));
    let compiled = CompiledCondition::compile(&condition).unwrap();
    let context = ctx();
    let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut warnings = Vec::new();
    let result = compiled.evaluate(&Scope::new(&context, now), &mut warnings);
    (result, warnings)
}

fn check(rows: &[(&str, &str, Option<Value>, bool)]) {
    for (field, op, value, expected) in rows {
        let (got, _) = eval(field, op, value.clone());
        assert_eq!(got, *expected, "{field} {op} {value:?}");
    }
}

#[test]
fn equality_uses_the_numeric_rule_then_json_equality() {
    check(&[
        ("n", "eq", Some(json!(10)), true),
        ("n", "eq", Some(json!(10.0)), true),
        ("n", "eq", Some(json!("10")), true),
        ("ns", "eq", Some(json!(42)), true),
        ("ns", "==", Some(json!("42.0")), true),
        ("s", "eq", Some(json!("hello world")), true),
        ("s", "eq", Some(json!("Hello world")), false),
        ("t", "eq", Some(json!(true)), true),
        ("t", "eq", Some(json!("true")), false),
        ("z", "eq", Some(json!(null)), true),
        ("arr", "eq", Some(json!(["a", "b", 3])), true),
        ("obj", "eq", Some(json!({"k": 1})), true),
        ("obj", "eq", Some(json!({"k": 2})), false),
        ("n", "neq", Some(json!(11)), true),
        ("n", "!=", Some(json!("10")), false),
        ("s", "neq", Some(json!("x")), true),
        (
            "country",
            "eq",
            Some(json!("{{customer.billing_country}}")),
            true,
        ),
        (
            "country",
            "neq",
            Some(json!("{{customer.billing_country}}")),
            false,
        ),
    ]);
}

#[test]
fn ordering_is_numeric_for_numbers_and_lexicographic_for_strings() {
    check(&[
        ("n", "gt", Some(json!(9)), true),
        ("n", ">", Some(json!(10)), false),
        ("n", "gte", Some(json!(10)), true),
        ("n", ">=", Some(json!("10")), true),
        ("n", "lt", Some(json!(10.5)), true),
        ("n", "<", Some(json!(2)), false),
        ("n", "lte", Some(json!(10)), true),
        ("n", "<=", Some(json!(9.99)), false),
        ("f", "gt", Some(json!(2)), true),
        ("ns", "gt", Some(json!(9)), true), // "42" > 9 numerically, not "42" < "9" as text
        ("ns", "lt", Some(json!("100")), true), // both numeric strings: numeric
        ("s", "gt", Some(json!("hello")), true),
        ("s", "lt", Some(json!("zebra")), true),
        ("s", "gte", Some(json!("hello world")), true),
        ("s", "gt", Some(json!(5)), false), // text vs number: not comparable
        ("t", "gt", Some(json!(false)), false), // booleans do not order
        ("arr", "gt", Some(json!(1)), false),
        ("obj", "lt", Some(json!(1)), false),
        ("z", "gt", Some(json!(0)), false),
    ]);
}

#[test]
fn membership_and_containment() {
    check(&[
        (
            "customer.tier",
            "in",
            Some(json!(["platinum", "gold"])),
            true,
        ),
        ("customer.tier", "in", Some(json!(["silver"])), false),
        ("n", "in", Some(json!([1, "10"])), true),
        (
            "customer.tier",
            "not_in",
            Some(json!(["platinum", "gold"])),
            false,
        ),
        ("customer.tier", "not_in", Some(json!(["silver"])), true),
        (
            "country",
            "in",
            Some(json!(["{{customer.billing_country}}"])),
            true,
        ),
        ("s", "contains", Some(json!("lo wo")), true),
        ("s", "contains", Some(json!("xyz")), false),
        ("arr", "contains", Some(json!("b")), true),
        ("arr", "contains", Some(json!("3")), true),
        ("arr", "contains", Some(json!("c")), false),
        ("obj", "contains", Some(json!("k")), true),
        ("n", "contains", Some(json!(1)), false),
        ("s", "not_contains", Some(json!("xyz")), true),
        ("arr", "not_contains", Some(json!("a")), false),
        ("s", "starts_with", Some(json!("hello")), true),
        ("s", "starts_with", Some(json!("world")), false),
        ("s", "ends_with", Some(json!("world")), true),
        ("n", "starts_with", Some(json!(1)), true),
        ("arr", "starts_with", Some(json!("a")), false),
    ]);
}

#[test]
fn regex_and_existence() {
    check(&[
        ("s", "regex", Some(json!("^hel+o\\s")), true),
        ("s", "regex", Some(json!("^world")), false),
        ("ns", "regex", Some(json!("^\\d+$")), true),
        ("n", "regex", Some(json!("^1")), true),
        ("obj", "regex", Some(json!(".*")), false),
        ("s", "exists", None, true),
        ("z", "exists", None, false),
        ("nope", "exists", None, false),
        ("z", "not_exists", None, true),
        ("nope", "not_exists", None, true),
        ("s", "not_exists", None, false),
        ("arr.1", "eq", Some(json!("b")), true),
        ("arr.length", "eq", Some(json!(3)), true),
        ("s.length", "gt", Some(json!(5)), true),
    ]);
}

#[test]
fn a_missing_field_is_null_with_a_warning() {
    // Only exists / not_exists / eq null / neq can be true on a missing field.
    let truths = [
        ("not_exists", None),
        ("eq", Some(json!(null))),
        ("neq", Some(json!(5))),
    ];
    for (op, value) in truths {
        let (got, warnings) = eval("absent.path", op, value);
        assert!(got, "{op}");
        if op != "not_exists" {
            assert_eq!(warnings.len(), 1, "{op}");
            assert!(warnings[0].contains("absent.path"));
        }
    }
    let falsehoods: [(&str, Option<Value>); 13] = [
        ("exists", None),
        ("eq", Some(json!(0))),
        ("neq", Some(json!(null))),
        ("gt", Some(json!(0))),
        ("gte", Some(json!(0))),
        ("lt", Some(json!(0))),
        ("lte", Some(json!(0))),
        ("in", Some(json!([null]))),
        ("not_in", Some(json!([1]))),
        ("contains", Some(json!("a"))),
        ("not_contains", Some(json!("a"))),
        ("starts_with", Some(json!(""))),
        ("regex", Some(json!(".*"))),
    ];
    for (op, value) in falsehoods {
        let (got, _) = eval("absent.path", op, value);
        assert!(!got, "{op} on a missing field");
    }
}

#[test]
fn combinators() {
    let c = parse_condition(&json!({"and": [
        {"field": "n", "operator": "gt", "value": 5},
        {"or": [{"field": "s", "operator": "eq", "value": "nope"}, {"not": {"field": "t", "operator": "eq", "value": false}}]}
    ]}))
    .unwrap();
    let compiled = CompiledCondition::compile(&c).unwrap();
    let context = ctx();
    let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    assert!(compiled.evaluate(&Scope::new(&context, now), &mut Vec::new()));
    let empty_and =
        CompiledCondition::compile(&parse_condition(&json!({"and": []})).unwrap()).unwrap();
    let empty_or =
        CompiledCondition::compile(&parse_condition(&json!({"or": []})).unwrap()).unwrap();
    assert!(empty_and.evaluate(&Scope::new(&context, now), &mut Vec::new()));
    assert!(!empty_or.evaluate(&Scope::new(&context, now), &mut Vec::new()));
}

#[test]
fn templated_regex_is_compiled_at_evaluation_and_bad_ones_warn() {
    let context = json!({"pattern": "^ab", "bad": "(", "v": "abc"});
    let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let run = |pattern: &str| {
        let c =
            parse_condition(&json!({"field": "v", "operator": "regex", "value": pattern})).unwrap();
        let mut w = Vec::new();
        let r = CompiledCondition::compile(&c)
            .unwrap()
            .evaluate(&Scope::new(&context, now), &mut w);
        (r, w)
    };
    assert_eq!(run("{{pattern}}"), (true, vec![]));
    let (r, w) = run("{{bad}}");
    assert!(!r);
    assert!(w[0].contains("invalid regular expression"));
}
