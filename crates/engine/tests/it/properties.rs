//! Property tests: the evaluator and templates never panic, whatever the JSON.

use chrono::TimeZone;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tollgate_engine::template::{render_value, Mode};
use tollgate_engine::{CompiledCondition, Scope};
use tollgate_model::{parse_condition, Operator};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z0-9 .{}$()*+?\\\\^-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("{{a.b}}"),
            Just("${x}"),
            Just("{{a.length}}"),
            Just("1e400"),
            Just("NaN"),
            Just("  7 ")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,3}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn arb_path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof!["[a-c]", "[0-2]", Just("length".to_owned())],
        1..4,
    )
    .prop_map(|p| p.join("."))
}

fn arb_condition() -> impl Strategy<Value = Value> {
    let ops: Vec<&'static str> = Operator::ALL.iter().map(|o| o.as_str()).collect();
    let leaf = (arb_path(), prop::sample::select(ops), arb_json())
        .prop_map(|(field, op, value)| json!({"field": field, "operator": op, "value": value}));
    leaf.prop_recursive(3, 20, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|c| json!({"and": c})),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|c| json!({"or": c})),
            inner.prop_map(|c| json!({"not": c})),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn evaluation_never_panics(context in arb_json(), condition in arb_condition()) {
        let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        // Invalid conditions (bad regexes, `in` without an array) are refused by parsing
        // or compiling; the valid ones must evaluate without panicking.
        if let Ok(parsed) = parse_condition(&condition) {
            if let Ok(compiled) = CompiledCondition::compile(&parsed) {
                let mut warnings = Vec::new();
                let _ = compiled.evaluate(&Scope::new(&context, now), &mut warnings);
            }
        }
    }

    #[test]
    fn rendering_never_panics(context in arb_json(), template in arb_json()) {
        let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut warnings = Vec::new();
        let _ = render_value(&template, &Scope::new(&context, now), Mode::Live, &mut warnings);
    }

    #[test]
    fn text_without_templates_renders_unchanged(text in "[^{$]{0,40}") {
        let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let ctx = json!({});
        let mut warnings = Vec::new();
        let out = render_value(&Value::String(text.clone()), &Scope::new(&ctx, now), Mode::Live, &mut warnings);
        prop_assert_eq!(out, Value::String(text));
        prop_assert!(warnings.is_empty());
    }
}
