//! Condition evaluation on a 20-leaf tree (target: under 2 µs per evaluation).
#![allow(missing_docs, clippy::unwrap_used)]

use chrono::TimeZone;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::json;
use tollgate_engine::{CompiledCondition, Scope};

fn twenty_leaves() -> serde_json::Value {
    json!({"and": [
        {"field": "order.total", "operator": "gte", "value": 10000},
        {"field": "order.currency", "operator": "eq", "value": "EUR"},
        {"field": "order.items.length", "operator": "gt", "value": 2},
        {"field": "order.items.0.sku", "operator": "starts_with", "value": "SKU-"},
        {"field": "customer.tier", "operator": "in", "value": ["gold", "platinum", "silver"]},
        {"field": "customer.country", "operator": "eq", "value": "{{order.shipping.country}}"},
        {"field": "customer.email", "operator": "regex", "value": "^[^@]+@example\\.com$"},
        {"field": "customer.account_age_days", "operator": "gt", "value": "30"},
        {"field": "customer.flags", "operator": "not_contains", "value": "fraud"},
        {"field": "customer.verified", "operator": "eq", "value": true},
        {"or": [
            {"field": "order.discount", "operator": "lt", "value": 15},
            {"field": "order.coupon", "operator": "exists"},
            {"field": "customer.vip", "operator": "eq", "value": true},
            {"field": "order.channel", "operator": "neq", "value": "b2b"}
        ]},
        {"not": {"field": "order.status", "operator": "eq", "value": "cancelled"}},
        {"field": "order.note", "operator": "contains", "value": "gift"},
        {"field": "order.priority", "operator": "lte", "value": 3},
        {"field": "order.warehouse", "operator": "ends_with", "value": "-EU"},
        {"field": "order.missing_field", "operator": "not_exists"},
        {"field": "order.shipping.method", "operator": "not_in", "value": ["drone"]},
        {"field": "order.created_by", "operator": "neq", "value": "{{customer.id}}"}
    ]})
}

fn context() -> serde_json::Value {
    json!({
        "order": {
            "total": 12500, "currency": "EUR", "discount": 5, "channel": "web", "status": "open",
            "note": "a gift for mum", "priority": 2, "warehouse": "BER-EU", "created_by": "shop",
            "items": [{"sku": "SKU-1"}, {"sku": "SKU-2"}, {"sku": "SKU-3"}],
            "shipping": {"country": "DE", "method": "parcel"}
        },
        "customer": {
            "id": "c-1", "tier": "gold", "country": "DE", "email": "ann@example.com",
            "account_age_days": 400, "flags": ["newsletter"], "verified": true, "vip": false
        }
    })
}

fn bench(c: &mut Criterion) {
    let condition = tollgate_model::parse_condition(&twenty_leaves()).unwrap();
    let compiled = CompiledCondition::compile(&condition).unwrap();
    let ctx = context();
    let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let scope = Scope::new(&ctx, now);
    let mut warnings = Vec::new();
    assert!(
        compiled.evaluate(&scope, &mut warnings),
        "the benchmark tree is true on its context"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    c.bench_function("condition/20_leaves", |b| {
        b.iter(|| {
            let mut warnings = Vec::new();
            black_box(compiled.evaluate(black_box(&scope), &mut warnings))
        });
    });
    c.bench_function("condition/compile_20_leaves", |b| {
        b.iter(|| CompiledCondition::compile(black_box(&condition)).unwrap());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
