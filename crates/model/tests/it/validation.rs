use serde_json::{json, Value};
use tollgate_model::{check, load};

fn errors(doc: &Value) -> Vec<(String, String)> {
    check(doc)
        .errors
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect()
}

fn paths(doc: &Value) -> Vec<String> {
    errors(doc).into_iter().map(|(p, _)| p).collect()
}

fn wf(steps: Value) -> Value {
    json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "e"}, "steps": steps})
}

/// The "done when" case of the foundation issue: four distinct problems, four errors.
#[test]
fn four_problems_give_four_located_errors_in_one_call() {
    let doc = wf(json!([
        {"id": "start", "type": "condition",
         "condition": {"field": "a", "operator": "bigger_than", "value": 1},
         "on_true": "nowhere", "on_false": "checks"},
        {"id": "start", "type": "action", "action": "allow"},
        {"id": "checks", "type": "parallel", "parallel": {"steps": [
            {"id": "inner_ok", "type": "condition", "condition": {"field": "x", "operator": "exists"}},
            {"id": "inner_gate", "type": "approval", "approval": {"approvers": {"role": "boss"}}}
        ]}}
    ]));
    let found = errors(&doc);
    let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "steps[0].condition.operator",
            "steps[0].on_true",
            "steps[1].id",
            "steps[2].parallel.steps[1]",
        ],
        "{found:#?}"
    );
    assert!(found[0].1.contains("unknown operator `bigger_than`"));
    assert!(found[1].1.contains("`nowhere`"));
    assert!(found[2]
        .1
        .contains("duplicate step id `start` (first defined at steps[0])"));
    assert!(found[3]
        .1
        .contains("gates cannot be inside parallel step `checks`"));
}

#[test]
fn each_rule_reports_its_path() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            wf(json!([{"id": "a", "type": "loop"}])),
            "steps[0].type",
            "unknown step type `loop`",
        ),
        (
            wf(json!([{"id": "a b", "type": "action", "action": "allow"}])),
            "steps[0].id",
            "not a valid step id",
        ),
        (
            wf(json!([{"type": "action", "action": "allow"}])),
            "steps[0].id",
            "missing required field `id`",
        ),
        (
            wf(json!([{"id": "a", "type": "condition"}])),
            "steps[0].condition",
            "missing required field `condition`",
        ),
        (
            wf(json!([{"id": "a", "type": "execute"}])),
            "steps[0].execute",
            "missing required field `execute`",
        ),
        (
            wf(json!([{"id": "a", "type": "wait", "wait": {}}])),
            "steps[0].wait.event",
            "missing required field `event`",
        ),
        (
            wf(
                json!([{"id": "a", "type": "condition", "condition": {"field": "x", "operator": "eq", "value": 1, "and": []}}]),
            ),
            "steps[0].condition",
            "either a leaf",
        ),
        (
            wf(json!([{"id": "a", "type": "action", "action": "allow", "timeout": "5 minutes"}])),
            "steps[0].timeout",
            "invalid duration",
        ),
        (
            wf(
                json!([{"id": "a", "type": "condition", "condition": {"field": "x", "operator": "regex", "value": "(unclosed"}}]),
            ),
            "steps[0].condition.value",
            "invalid regular expression",
        ),
        (
            wf(json!([{"id": "a", "type": "approval", "approval": {"approvers": {}}}])),
            "steps[0].approval.approvers",
            "needs approvers",
        ),
        (
            wf(
                json!([{"id": "a", "type": "approval", "approval": {"approvers": {"users": ["x", "y"]}, "required": 3}}]),
            ),
            "steps[0].approval.required",
            "only 2 distinct users",
        ),
        (
            wf(
                json!([{"id": "a", "type": "approval", "approval": {"approvers": {"role": "r"}, "required": "all"}}]),
            ),
            "steps[0].approval.required",
            "needs a list of users",
        ),
        (
            wf(
                json!([{"id": "a", "type": "foreach", "foreach": {"items": "xs", "steps": [
            {"id": "w", "type": "wait", "wait": {"event": "e"}}]}}]),
            ),
            "steps[0].foreach.steps[0]",
            "gates cannot be inside foreach",
        ),
        (
            wf(
                json!([{"id": "a", "type": "foreach", "foreach": {"items": "xs", "steps": [
            {"id": "c", "type": "action", "action": "allow", "next": "a"}]}}]),
            ),
            "steps[0].foreach.steps[0].next",
            "cannot jump",
        ),
        (
            wf(
                json!([{"id": "a", "type": "action", "action": "allow", "next": "c"},
                   {"id": "p", "type": "parallel", "parallel": {"steps": [{"id": "c", "type": "action", "action": "allow"}]}}]),
            ),
            "steps[0].next",
            "inside a parallel or foreach",
        ),
        (
            wf(json!([{"id": "a", "type": "action", "action": "allow", "colour": "red"}])),
            "steps[0].colour",
            "unknown field `colour`",
        ),
        (
            wf(json!([{"id": "a", "type": "action", "action": "permit"}])),
            "steps[0].action",
            "unknown action verb `permit`",
        ),
        (
            wf(json!([{"id": "a", "type": "action", "action": "require_approval"}])),
            "steps[0].action.type",
            "needs a `create_approval_request`",
        ),
        (
            wf(
                json!([{"id": "a", "type": "action", "action": "allow", "execute": [
            {"type": "create_approval_request", "data": {"reason": "r"}}]}]),
            ),
            "steps[0].execute[0].data.approvers",
            "needs approvers",
        ),
        (
            wf(json!([{"id": "a", "type": "wait", "wait": {"event": "e", "on_timeout": "gone"}}])),
            "steps[0].wait.on_timeout",
            "`gone`",
        ),
        (
            wf(
                json!([{"id": "a", "type": "approval", "approval": {"approvers": {"role": "r"}, "on_timeout": "gone"}}]),
            ),
            "steps[0].approval.on_timeout",
            "`gone`",
        ),
        (
            wf(
                json!([{"id": "a", "type": "execute", "retry": {"max_attempts": 0}, "execute": [{"type": "log", "message": "m"}]}]),
            ),
            "steps[0].retry.max_attempts",
            "at least 1",
        ),
        (
            wf(
                json!([{"id": "a", "type": "execute", "retry": {"retry_on": ["teapot"]}, "execute": [{"type": "log", "message": "m"}]}]),
            ),
            "steps[0].retry.retry_on[0]",
            "unknown error class",
        ),
        (
            wf(json!([{"id": "a", "type": "execute", "execute": [{"type": "fax", "to": "x"}]}])),
            "steps[0].execute[0].type",
            "unknown sub-action",
        ),
        (
            wf(
                json!([{"id": "a", "type": "condition", "condition": {"field": "x", "operator": "in", "value": 3}}]),
            ),
            "steps[0].condition.value",
            "needs an array",
        ),
        (
            json!({"workflow_id": "w", "version": "1", "trigger": {"type": "schedule", "cron": "99 * * * *"},
                "steps": [{"id": "a", "type": "action", "action": "allow"}]}),
            "trigger.cron",
            "invalid cron",
        ),
        (
            json!({"workflow_id": "w", "version": "1", "trigger": {"type": "schedule", "cron": "@daily", "timezone": "Mars/Olympus"},
                "steps": [{"id": "a", "type": "action", "action": "allow"}]}),
            "trigger.timezone",
            "unknown time zone",
        ),
        (
            json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "a.*.b"},
                "steps": [{"id": "a", "type": "action", "action": "allow"}]}),
            "trigger.event",
            "may only end",
        ),
        (
            json!({"workflow_id": "w", "version": "1", "steps": []}),
            "steps",
            "at least one step",
        ),
        (
            json!({"version": "1", "steps": [{"id": "a", "type": "action", "action": "allow"}]}),
            "workflow_id",
            "missing required field",
        ),
        (
            json!({"workflow_id": "w", "version": "1", "stepz": [], "steps": [{"id": "a", "type": "action", "action": "allow"}]}),
            "stepz",
            "unknown field",
        ),
        (
            json!({"workflow_id": "w", "version": "1", "steps": [{"id": "a", "type": "action", "action": "allow"}],
                "definition": {"steps": []}}),
            "definition.steps",
            "both at the top level",
        ),
    ];
    for (doc, path, message) in cases {
        let found = errors(&doc);
        assert!(
            found.iter().any(|(p, m)| p == path && m.contains(message)),
            "expected `{message}` at {path}, got {found:#?}"
        );
    }
}

#[test]
fn unreachable_steps_are_warnings_not_errors() {
    let doc = wf(json!([
        {"id": "a", "type": "action", "action": "allow"},
        {"id": "orphan", "type": "action", "action": "block"}
    ]));
    let loaded = load(&doc).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].path, "steps[1]");
    assert!(loaded.warnings[0].message.contains("never reached"));
}

#[test]
fn a_broken_step_does_not_shift_the_paths_of_later_steps() {
    let doc = wf(json!([
        {"id": "a", "type": "mystery", "next": "b"},
        "not even an object",
        {"id": "b", "type": "action", "action": "allow", "next": "zzz"}
    ]));
    assert_eq!(paths(&doc), ["steps[0].type", "steps[1]", "steps[2].next"]);
}

#[test]
fn references_to_broken_steps_are_not_reported_as_missing() {
    let doc = wf(json!([
        {"id": "a", "type": "action", "action": "allow", "next": "b"},
        {"id": "b", "type": "mystery"}
    ]));
    assert_eq!(paths(&doc), ["steps[1].type"]);
}

#[test]
fn cycles_are_allowed() {
    let doc = wf(json!([
        {"id": "review", "type": "condition", "condition": {"field": "ok", "operator": "eq", "value": true},
         "on_true": "done", "on_false": "revise"},
        {"id": "revise", "type": "execute", "execute": [{"type": "log", "message": "again"}], "next": "review"},
        {"id": "done", "type": "action", "action": "allow"}
    ]));
    assert!(load(&doc).is_ok());
}

#[test]
fn operator_aliases_are_accepted() {
    for op in [
        "==",
        "!=",
        ">",
        ">=",
        "<",
        "<=",
        "eq",
        "not_in",
        "starts_with",
        "not_exists",
    ] {
        let value = if op == "not_in" { json!([1]) } else { json!(1) };
        let doc = wf(
            json!([{"id": "a", "type": "condition", "condition": {"field": "x", "operator": op, "value": value}}]),
        );
        assert!(errors(&doc).is_empty(), "{op}: {:?}", errors(&doc));
    }
}

/// Found by the API's generated-request test: documents without steps used to panic in
/// the reachability check instead of being reported.
#[test]
fn documents_without_steps_are_errors_not_panics() {
    for doc in [
        json!({}),
        json!({"steps": []}),
        json!({"workflow_id": "w", "version": "1", "steps": {}}),
    ] {
        let report = tollgate_model::load(&doc).unwrap_err();
        assert!(
            report
                .errors
                .iter()
                .any(|p| p.path.starts_with("steps") || p.path.is_empty()),
            "{doc}: {:?}",
            report.errors
        );
    }
}

/// A user listed twice would make `required: "all"` (one approval per listed user)
/// impossible to meet, and a count ambiguous: each duplicate is an error at its path.
#[test]
fn approvers_listed_twice_are_refused() {
    let doc = wf(json!([
        {"id": "a", "type": "approval", "approval": {"approvers": {"users": ["ana", "bo", "ana"]}, "required": "all"}}
    ]));
    let found = errors(&doc);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "steps[0].approval.approvers.users[2]");
    assert!(
        found[0].1.contains("`ana` is listed twice"),
        "{}",
        found[0].1
    );
    let fine = wf(json!([
        {"id": "a", "type": "approval", "approval": {"approvers": {"users": ["ana", "bo"]}, "required": "all"}}
    ]));
    assert!(errors(&fine).is_empty());
}

/// A wait's `match` values are stored with the execution when the wait is entered: a
/// secret there would be readable by anyone who can read executions.
#[test]
fn secrets_in_a_wait_match_are_refused() {
    let doc = wf(json!([
        {"id": "w", "type": "wait", "wait": {"event": "paid",
            "match": {"and": [{"field": "event.token", "operator": "eq", "value": "{{ secrets.shared_token }}"}]}}}
    ]));
    let found = errors(&doc);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "steps[0].wait.match");
    assert!(found[0].1.contains("secrets"), "{}", found[0].1);
    let fine = wf(json!([
        {"id": "w", "type": "wait", "wait": {"event": "paid",
            "match": {"field": "event.order", "operator": "eq", "value": "{{order.id}}"}}}
    ]));
    assert!(errors(&fine).is_empty(), "{:?}", errors(&fine));
}

/// Typos get the nearest known name: step and sub-action types, fields, verbs, operators.
#[test]
fn typos_are_answered_with_the_nearest_known_name() {
    let doc = wf(json!([
        {"id": "a", "type": "aproval", "approval": {"approvers": {"role": "boss"}}},
        {"id": "b", "type": "condition", "condtion": {"field": "x", "operator": "exists"}},
        {"id": "c", "type": "condition",
         "condition": {"field": "x", "operator": "contians", "value": "a"}},
        {"id": "d", "type": "execute", "execute": [{"type": "notfy", "recipients": ["a"], "message": "m"}]},
        {"id": "e", "type": "action", "action": "alow"},
        {"id": "f", "type": "action", "action": "allow", "zzzzzzzz": 1}
    ]));
    let found = errors(&doc);
    let message = |path: &str| {
        found.iter().find(|(p, _)| p == path).map_or_else(
            || panic!("no error at {path}: {found:#?}"),
            |(_, m)| m.clone(),
        )
    };
    assert!(message("steps[0].type").ends_with("did you mean `approval`?"));
    assert!(message("steps[1].condtion").ends_with("did you mean `condition`?"));
    assert!(message("steps[2].condition.operator").ends_with("did you mean `contains`?"));
    assert!(message("steps[3].execute[0].type").ends_with("did you mean `notify`?"));
    assert!(message("steps[4].action").ends_with("did you mean `allow`?"));
    let far = message("steps[5].zzzzzzzz");
    assert!(
        !far.contains("did you mean"),
        "no guess when nothing is close: {far}"
    );
}

#[test]
fn retention_is_a_duration_of_at_least_a_minute() {
    let with = |retention: Value| {
        let mut doc = wf(json!([{"id": "a", "type": "action", "action": "allow"}]));
        doc["retention"] = retention;
        doc
    };
    let loaded = tollgate_model::load(&with(json!("90d"))).unwrap();
    assert_eq!(
        loaded
            .definition
            .retention
            .map(tollgate_model::Duration::as_std),
        Some(std::time::Duration::from_secs(90 * 24 * 3600))
    );
    let short = errors(&with(json!("30s")));
    assert_eq!(short.len(), 1, "{short:?}");
    assert_eq!(short[0].0, "retention");
    assert!(short[0].1.contains("at least 1m"), "{short:?}");
    assert_eq!(paths(&with(json!("ninety days"))), ["retention"]);
    // A definition without it keeps its snapshot id: the field is not written when absent.
    let plain = tollgate_model::load(&wf(
        json!([{"id": "a", "type": "action", "action": "allow"}]),
    ))
    .unwrap();
    assert!(serde_json::to_value(&plain.definition)
        .unwrap()
        .get("retention")
        .is_none());
}

/// A wait whose `match` gives no correlation key (no `eq` of an event field with a
/// value outside `or`/`not`) works, but every event of its type is checked against
/// every such wait: the validator says so, naming the step. A keyed match, or no match
/// at all, is not warned about.
#[test]
fn waits_without_a_correlation_key_are_warned_about() {
    let wait = |m: Option<serde_json::Value>| {
        let mut w = json!({"event": "paid"});
        if let Some(m) = m {
            w["match"] = m;
        }
        wf(json!([
            {"id": "a", "type": "action", "action": "allow", "next": "settle"},
            {"id": "settle", "type": "wait", "wait": w}
        ]))
    };
    let ranged = load(&wait(Some(json!({"or": [
        {"field": "event.order_id", "operator": "eq", "value": "{{order.id}}"},
        {"field": "event.amount", "operator": "gt", "value": 5}]}))))
    .unwrap();
    assert_eq!(ranged.warnings.len(), 1, "{:?}", ranged.warnings);
    assert_eq!(ranged.warnings[0].path, "steps[1].wait.match");
    assert!(
        ranged.warnings[0].message.contains("wait step `settle`")
            && ranged.warnings[0].message.contains("`paid`"),
        "{}",
        ranged.warnings[0].message
    );
    for quiet in [
        Some(json!({"and": [
            {"field": "event.order_id", "operator": "eq", "value": "{{order.id}}"},
            {"field": "event.amount", "operator": "gt", "value": 5}]})),
        None,
    ] {
        let loaded = load(&wait(quiet)).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
}

#[test]
fn a_waits_early_events_window_is_a_duration() {
    let wait = |window: serde_json::Value| {
        wf(json!([
            {"id": "a", "type": "action", "action": "allow", "next": "settle"},
            {"id": "settle", "type": "wait", "wait": {"event": "paid", "early_events": window}}
        ]))
    };
    let loaded = load(&wait(json!("24h"))).unwrap();
    match &loaded.definition.steps[1].kind {
        tollgate_model::definition::StepKind::Wait { wait, .. } => assert_eq!(
            wait.early_events.map(tollgate_model::Duration::as_std),
            Some(std::time::Duration::from_secs(24 * 3600))
        ),
        other => panic!("{other:?}"),
    }
    load(&wait(json!("0s"))).unwrap();
    let refused = load(&wait(json!("a day"))).unwrap_err();
    assert_eq!(refused.errors[0].path, "steps[1].wait.early_events");
}

/// A `first_of` step is checked gate by gate, each problem at its gate's path.
#[test]
fn first_of_gates_are_checked_at_their_own_paths() {
    let doc = wf(json!([
        {"id": "start", "type": "action", "action": "allow", "next": "settle"},
        {"id": "settle", "type": "first_of", "first_of": [
            {"event": "payment.settled", "match": {"field": "event.order_id", "operator": "bigger", "value": 1}, "next": "ship"},
            {"event": "order.cancelled", "next": "nowhere"},
            {"approval": {"approvers": {}, "timeout": "1h"}, "on_approve": "ship"},
            {"approval": {"approvers": {"role": "ops"}}},
            {"after": "3d", "next": "ship", "nxt": "x"},
            {"after": "0s"},
            {"event": "x", "after": "1h"},
            {}]},
        {"id": "ship", "type": "action", "action": "allow"}
    ]));
    let found = errors(&doc);
    let located: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        located,
        [
            "steps[1].first_of[0].match.operator",
            "steps[1].first_of[4].nxt",
            "steps[1].first_of[6]",
            "steps[1].first_of[7]",
            "steps[1].first_of[1].next",
            "steps[1].first_of[2].approval.approvers",
            "steps[1].first_of[2].approval.timeout",
            "steps[1].first_of[3].approval",
            "steps[1].first_of[5].after",
            "steps[1].first_of[5].after",
        ],
        "{found:#?}"
    );
    // One gate is not a race; `after` alone has nothing to race with.
    let one = wf(json!([{"id": "s", "type": "first_of", "first_of": [{"event": "a"}]}]));
    assert_eq!(paths(&one), ["steps[0].first_of"]);
    let timers = wf(
        json!([{"id": "s", "type": "first_of", "first_of": [{"after": "1h"}, {"after": "2h"}]}]),
    );
    assert!(
        paths(&timers).contains(&"steps[0].first_of".to_owned()),
        "{:?}",
        errors(&timers)
    );
    // Gates cannot sit inside parallel steps; a valid one loads and keeps its branches.
    let nested = wf(
        json!([{"id": "p", "type": "parallel", "parallel": {"steps": [
        {"id": "s", "type": "first_of", "first_of": [{"event": "a"}, {"after": "1h"}]}]}}]),
    );
    assert_eq!(paths(&nested), ["steps[0].parallel.steps[0]"]);
    let ok = wf(json!([
        {"id": "s", "type": "first_of", "first_of": [
            {"event": "a", "match": {"field": "event.id", "operator": "eq", "value": "{{id}}"}, "next": "t"},
            {"approval": {"approvers": {"role": "ops"}}, "on_reject": "t"},
            {"after": "1h", "next": "t"}]},
        {"id": "t", "type": "action", "action": "allow"}]));
    let loaded = load(&ok).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    // The canonical form it is stored in loads back to the same definition.
    let round_trip = serde_json::to_value(&loaded.definition).unwrap();
    assert_eq!(
        round_trip["steps"][0]["first_of"][2],
        json!({"after": "1h", "next": "t"})
    );
    assert_eq!(load(&round_trip).unwrap().definition, loaded.definition);
}

/// An approval's ladder (docs/notifications.md): known channels, an address for email,
/// rungs after the request, in order, before the deadline; a reminder needs recipients.
#[test]
fn approval_ladders_are_checked_rung_by_rung() {
    let gate = |approval: Value| {
        wf(
            json!([{"id": "a", "type": "approval", "approval": approval, "on_approve": "ok"},
                  {"id": "ok", "type": "action", "action": "allow"}]),
        )
    };
    let good = gate(json!({"approvers": {"role": "m"}, "timeout": "72h",
        "notify": [{"channel": "email", "to": "{{m}}"}, {"channel": "slack"}],
        "reminders": ["4h", "24h"],
        "escalate": [{"after": "48h", "approvers": {"role": "d"}, "notify": [{"channel": "teams"}]}]}));
    assert_eq!(errors(&good), []);
    let loaded = load(&good).unwrap().definition;
    let step = loaded.step("a").unwrap();
    assert!(step.queues_notifications());

    let bad = gate(json!({"approvers": {"role": "m"}, "timeout": "24h",
        "notify": [{"channel": "pager"}, {"channel": "email"}],
        "reminders": ["4h", "2h", "24h"],
        "escalate": [{"after": "0s", "approvers": {}}, {"after": "30h", "approvers": {"role": "d"}}]}));
    assert_eq!(
        paths(&bad),
        [
            "steps[0].approval.notify[0].channel",
            "steps[0].approval.notify[1].to",
            "steps[0].approval.reminders[1]",
            "steps[0].approval.reminders[2]",
            "steps[0].approval.escalate[0].after",
            "steps[0].approval.escalate[0].approvers",
            "steps[0].approval.escalate[1].after",
        ]
    );
    let lonely = gate(json!({"approvers": {"role": "m"}, "reminders": ["4h"]}));
    assert_eq!(paths(&lonely), ["steps[0].approval.reminders"]);
    let unknown = gate(
        json!({"approvers": {"role": "m"}, "notify": [{"channel": "email", "to": "x", "cc": "y"}]}),
    );
    assert_eq!(paths(&unknown), ["steps[0].approval.notify[0].cc"]);
}
