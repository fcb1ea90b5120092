//! [`EventStore`](crate::EventStore): idempotent intake, waits that claim events once,
//! direct deliveries, the delivery sweep's queue, and executions started by events.

use std::collections::HashSet;
use std::sync::Arc;

use tollgate_model::records::{
    Correlation, Cursor, Event, Execution, ResumeTrigger, StepStatus, Wake, Workflow,
};
use tollgate_model::{ExecutionStatus, PauseReason};
use uuid::Uuid;

use super::fixtures::{
    approval_for, commit, event, gate, lease, new_execution, running, secs, step_record, t0,
    undo_of, waiting, workflow,
};
use crate::{
    Error, EventInsert, EventKey, EventPurge, Starting, Store, Transition, WaitKey, WaitShape,
};

pub async fn waits_claim_events_once(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = waiting(&store, &w, None).await;
    let other = waiting(&store, &w, None).await;
    assert_eq!(e.status, ExecutionStatus::Waiting);
    let listed: Vec<Uuid> = store
        .waiting_for_event("payment.received", None, 10, t0())
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(listed, [e.id, other.id]);
    assert_eq!(
        store
            .waiting_for_event("payment.received", Some(e.id), 10, t0())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .waiting_for_event("nothing", None, 10, t0())
        .await
        .unwrap()
        .is_empty());

    let wrong = event("refund.issued", None, t0());
    assert!(store
        .claim_wait(e.id, None, &wrong, None, &lease("api", t0()), t0())
        .await
        .unwrap_err()
        .is_conflict());
    let paid = event("payment.received", None, t0());
    assert!(
        store
            .claim_wait(
                e.id,
                Some(e.version + 7),
                &paid,
                None,
                &lease("api", t0()),
                t0()
            )
            .await
            .unwrap_err()
            .is_conflict(),
        "stale"
    );
    let mut addressed = paid.clone();
    addressed.correlation_id = Some(other.id);
    assert!(
        store
            .claim_wait(e.id, None, &addressed, None, &lease("api", t0()), t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "addressed elsewhere"
    );

    let claimed = store
        .claim_wait(
            e.id,
            Some(e.version),
            &paid,
            Some("shop"),
            &lease("api", t0() + secs(30)),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.status, ExecutionStatus::Running);
    assert_eq!(claimed.consumed_events, [paid.id]);
    assert!(
        matches!(claimed.wake, Some(Wake::Event { ref event_type, .. }) if event_type == "payment.received")
    );
    assert!(
        store
            .claim_wait(e.id, None, &paid, None, &lease("api", t0()), t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "claimed once"
    );
    assert_eq!(
        store.list_resume_requests(e.id).await.unwrap()[0].trigger,
        ResumeTrigger::Event
    );
}

pub async fn events_are_idempotent_by_event_id(store: Arc<dyn Store>) {
    let first = event("order.created", Some("ord-42"), t0());
    let EventInsert::Inserted(stored) = store.insert_event(first.clone()).await.unwrap() else {
        panic!("inserted")
    };
    assert_eq!(stored, first);
    let again = event("order.created", Some("ord-42"), t0() + secs(5));
    let EventInsert::Duplicate(dup) = store.insert_event(again).await.unwrap() else {
        panic!("duplicate")
    };
    assert_eq!(dup.id, first.id);

    let started = vec![Uuid::now_v7()];
    let updated = store
        .set_event_outcome(first.id, started.clone(), Vec::new())
        .await
        .unwrap();
    assert_eq!(updated.started, started);
    assert_eq!(store.get_event(first.id).await.unwrap(), updated);
    assert!(store
        .get_event(Uuid::now_v7())
        .await
        .unwrap_err()
        .is_not_found());

    // Events without event_id are never deduplicated.
    for _ in 0..2 {
        assert!(matches!(
            store
                .insert_event(event("order.created", None, t0()))
                .await
                .unwrap(),
            EventInsert::Inserted(_)
        ));
    }

    // Candidates for a wait: type, time and addressee.
    let exec = Uuid::now_v7();
    let mut mine = event("payment.received", None, t0() + secs(10));
    mine.correlation_id = Some(exec);
    let mut theirs = event("payment.received", None, t0() + secs(11));
    theirs.correlation_id = Some(Uuid::now_v7());
    let early = event("payment.received", None, t0() - secs(10));
    let open = event("payment.received", None, t0() + secs(12));
    for e in [&mine, &theirs, &early, &open] {
        store.insert_event((*e).clone()).await.unwrap();
    }
    let found: Vec<Uuid> = store
        .events_for_wait("payment.received", t0(), exec, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(found, [mine.id, open.id]);
}

/// The same event written twice (same id: a retry after a commit whose outcome its
/// caller could not know) answers with the stored event — not a key error — and stores
/// nothing twice, with or without an `event_id`.
pub async fn a_retried_event_write_answers_with_the_stored_event(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    for key in [None, Some("ord-7")] {
        let mut e = event("order.created", key, t0());
        let start = new_execution(&w, "api");
        e.started = vec![start.id];
        let starts = vec![Starting::from(start.clone())];
        let first = store
            .insert_event_starting(e.clone(), starts.clone())
            .await
            .unwrap();
        assert!(matches!(first, EventInsert::Inserted(ref x) if x.id == e.id));
        let again = store.insert_event_starting(e.clone(), starts).await;
        assert!(
            matches!(again, Ok(EventInsert::Inserted(ref x)) if x.id == e.id),
            "{again:?}"
        );
        assert_eq!(store.get_execution(start.id).await.unwrap(), start);
    }
}

/// An execution waiting for `event_type` with the correlation key `(shape, hash)` over
/// `fields` (`None`: a wait without a key).
async fn waiting_keyed(
    store: &Arc<dyn Store>,
    w: &Workflow,
    event_type: &str,
    key: Option<(&str, &[&str], &str)>,
) -> Execution {
    let e = running(store, w, "w1").await;
    let mut g = gate(PauseReason::Event, None);
    g.event = Some(event_type.to_owned());
    g.correlation = key.map(|(shape, fields, hash)| {
        Box::new(Correlation {
            shape: shape.to_owned(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            values: fields.iter().map(|_| "n:1".to_owned()).collect(),
            hash: hash.to_owned(),
        })
    });
    store
        .commit_step(commit(
            &e,
            "w1",
            e.version,
            Transition::Gate {
                gate: g,
                approval: None,
            },
        ))
        .await
        .unwrap();
    store.get_execution(e.id).await.unwrap()
}

/// Waits are found by correlation key: the shapes waiting on a type are listed once
/// each, a probe returns the waits with one of the given keys and every wait without a
/// key, by id and in pages, and a wait that is no longer waiting drops out of both.
pub async fn waits_are_found_by_their_correlation_key(store: Arc<dyn Store>) {
    let flow = workflow(&store, "orders", "1", "order.created").await;
    let by_order: &[&str] = &["event.order_id"];
    let by_order_region: &[&str] = &["event.order_id", "event.region"];
    let first = waiting_keyed(&store, &flow, "paid", Some(("s1", by_order, "h1"))).await;
    let second = waiting_keyed(&store, &flow, "paid", Some(("s1", by_order, "h2"))).await;
    let wider = waiting_keyed(&store, &flow, "paid", Some(("s2", by_order_region, "h1"))).await;
    let keyless = waiting_keyed(&store, &flow, "paid", None).await;
    let other_type = waiting_keyed(&store, &flow, "refunded", Some(("s3", by_order, "h1"))).await;
    let first_again = waiting_keyed(&store, &flow, "paid", Some(("s1", by_order, "h1"))).await;

    let shapes = store.wait_shapes("paid").await.unwrap();
    assert_eq!(
        shapes,
        [
            WaitShape {
                shape: "s1".into(),
                fields: vec!["event.order_id".into()]
            },
            WaitShape {
                shape: "s2".into(),
                fields: vec!["event.order_id".into(), "event.region".into()]
            },
        ]
    );
    assert_eq!(store.wait_shapes("refunded").await.unwrap().len(), 1);
    assert!(store.wait_shapes("nothing").await.unwrap().is_empty());

    let key = |shape: &str, hash: &str| WaitKey {
        shape: shape.into(),
        hash: hash.into(),
    };
    let ids = |found: Vec<Execution>| found.iter().map(|e| e.id).collect::<Vec<_>>();
    let probe = |keys: Vec<WaitKey>, after: Option<Uuid>, limit: u32| {
        let store = store.clone();
        async move {
            store
                .waiting_for_keys("paid", &keys, after, limit, t0())
                .await
                .unwrap()
        }
    };
    // No key: only the waits without one.
    assert_eq!(ids(probe(Vec::new(), None, 10).await), [keyless.id]);
    assert_eq!(
        ids(probe(vec![key("s1", "h1")], None, 10).await),
        [first.id, keyless.id, first_again.id]
    );
    // A hash is only looked for under its own shape.
    assert_eq!(
        ids(probe(vec![key("s2", "h1"), key("s1", "h9")], None, 10).await),
        [wider.id, keyless.id]
    );
    // Pages by id, each key's range cut at the limit and merged.
    let all = vec![key("s1", "h1"), key("s1", "h2"), key("s2", "h1")];
    let page = ids(probe(all.clone(), None, 3).await);
    assert_eq!(page, [first.id, second.id, wider.id]);
    assert_eq!(
        ids(probe(all.clone(), page.last().copied(), 3).await),
        [keyless.id, first_again.id]
    );
    assert!(!ids(probe(all.clone(), None, 10).await).contains(&other_type.id));

    // A claimed wait is no longer found, by key or among the shapes.
    let paid = event("paid", None, t0());
    for e in [&first, &first_again, &wider] {
        store
            .claim_wait(e.id, None, &paid, None, &lease("api", t0()), t0())
            .await
            .unwrap();
    }
    assert_eq!(ids(probe(all, None, 10).await), [second.id, keyless.id]);
    assert_eq!(
        store
            .wait_shapes("paid")
            .await
            .unwrap()
            .iter()
            .map(|s| s.shape.as_str())
            .collect::<Vec<_>>(),
        ["s1"]
    );
}

/// Early-event look-ups page by (`received_at`, id): every candidate is reachable, however
/// many came before it — including events received in the same instant.
pub async fn early_events_are_paged_without_a_cap(store: Arc<dyn Store>) {
    let exec = Uuid::now_v7();
    let mut all = Vec::new();
    for i in 0..7 {
        // Pairs received in the same instant: the id breaks the tie.
        let e = event("doc.signed", None, t0() + secs(i / 2));
        store.insert_event(e.clone()).await.unwrap();
        all.push((e.received_at, e.id));
    }
    all.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .events_for_wait("doc.signed", t0(), exec, after, 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|e| (e.received_at, e.id)));
        match page.last() {
            Some(last) if page.len() == 3 => after = Some((last.received_at, last.id)),
            _ => break,
        }
    }
    assert_eq!(seen, all, "every event once, oldest first");
}

/// Events are stored pending delivery; the sweep's query finds them by age and marking
/// removes them from it. A direct delivery is delivered when stored.
pub async fn undelivered_events_are_listed_until_marked(store: Arc<dyn Store>) {
    let a = event("order.paid", Some("pay-1"), t0());
    let b = event("order.paid", None, t0() + secs(5));
    store.insert_event(a.clone()).await.unwrap();
    store
        .insert_event_starting(b.clone(), Vec::new())
        .await
        .unwrap();
    let ids = |events: Vec<Event>| events.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.undelivered_events(t0() + secs(5), 10).await.unwrap()),
        [a.id, b.id]
    );
    assert_eq!(
        ids(store.undelivered_events(t0() + secs(4), 10).await.unwrap()),
        [a.id],
        "only those received by the given time"
    );
    assert_eq!(
        ids(store.undelivered_events(t0() + secs(5), 1).await.unwrap()),
        [a.id]
    );
    // A repeat of an `event_id` stores nothing new.
    store
        .insert_event(event("order.paid", Some("pay-1"), t0() + secs(6)))
        .await
        .unwrap();
    store
        .mark_events_delivered(&[a.id, Uuid::now_v7()])
        .await
        .unwrap();
    assert_eq!(
        ids(store.undelivered_events(t0() + secs(60), 10).await.unwrap()),
        [b.id]
    );
    store.mark_events_delivered(&[b.id]).await.unwrap();
    store.mark_events_delivered(&[]).await.unwrap();
    assert!(store
        .undelivered_events(t0() + secs(60), 10)
        .await
        .unwrap()
        .is_empty());
}

/// A direct delivery stores the event and claims its addressee in one transaction; a
/// refusal stores nothing, and a repeated `event_id` changes nothing.
pub async fn direct_deliveries_store_nothing_when_refused(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = waiting(&store, &w, None).await;
    let addressed = |event_type: &str, key: Option<&str>| {
        let mut ev = event(event_type, key, t0() + secs(1));
        ev.correlation_id = Some(e.id);
        ev
    };
    // Wrong type: refused, nothing stored (not even the event).
    let wrong = addressed("refund.issued", Some("d-1"));
    assert!(store
        .deliver_event(wrong.clone(), None, &lease("api", t0() + secs(30)), t0())
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store.get_event(wrong.id).await.unwrap_err().is_not_found());
    // Stale version: refused too.
    let stale = addressed("payment.received", Some("d-1"));
    assert!(store
        .deliver_event(
            stale.clone(),
            Some(e.version + 3),
            &lease("api", t0() + secs(30)),
            t0()
        )
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store.get_event(stale.id).await.unwrap_err().is_not_found());
    // No addressee: invalid.
    assert!(matches!(
        store
            .deliver_event(
                event("payment.received", None, t0()),
                None,
                &lease("api", t0()),
                t0()
            )
            .await,
        Err(Error::Invalid(_))
    ));
    assert!(store
        .deliver_event(
            {
                let mut ev = event("payment.received", None, t0());
                ev.correlation_id = Some(Uuid::now_v7());
                ev
            },
            None,
            &lease("api", t0()),
            t0()
        )
        .await
        .unwrap_err()
        .is_not_found());

    // The same key, now right: stored and claimed together.
    let good = addressed("payment.received", Some("d-1"));
    let crate::Delivery::Claimed {
        event: stored,
        execution,
    } = store
        .deliver_event(
            good.clone(),
            Some(e.version),
            &lease("api", t0() + secs(30)),
            t0() + secs(1),
        )
        .await
        .unwrap()
    else {
        panic!("claimed")
    };
    assert_eq!(stored.resumed, [e.id]);
    assert_eq!(execution.status, ExecutionStatus::Running);
    assert_eq!(execution.consumed_events, [good.id]);
    assert_eq!(store.get_execution(e.id).await.unwrap(), *execution);
    assert_eq!(store.get_event(good.id).await.unwrap(), stored);
    assert!(
        store
            .undelivered_events(t0() + secs(60), 10)
            .await
            .unwrap()
            .is_empty(),
        "a direct delivery is delivered when stored"
    );
    assert_eq!(
        store.list_resume_requests(e.id).await.unwrap().len(),
        1,
        "one audit row, for the accepted delivery"
    );
    // A resend with the same key: the first event, nothing changed.
    let again = addressed("payment.received", Some("d-1"));
    let crate::Delivery::Duplicate(first) = store
        .deliver_event(
            again.clone(),
            None,
            &lease("other", t0() + secs(30)),
            t0() + secs(2),
        )
        .await
        .unwrap()
    else {
        panic!("duplicate")
    };
    assert_eq!(first, stored);
    assert_eq!(store.get_execution(e.id).await.unwrap(), *execution);
    assert!(store.get_event(again.id).await.unwrap_err().is_not_found());
}

/// An event that arrived before an execution started, or that started it, never
/// resumes it.
pub async fn waits_refuse_events_from_before_they_started(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = waiting(&store, &w, None).await;
    let before = event("payment.received", None, t0() - secs(1));
    assert!(store
        .claim_wait(e.id, None, &before, None, &lease("api", t0()), t0())
        .await
        .unwrap_err()
        .is_conflict());
    let mut starter = event("payment.received", None, t0());
    starter.started = vec![e.id];
    assert!(store
        .claim_wait(e.id, None, &starter, None, &lease("api", t0()), t0())
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(
        store.get_execution(e.id).await.unwrap().status,
        ExecutionStatus::Waiting
    );
}

/// An event and the executions it starts are stored together; a repeated `event_id`
/// stores none of the new executions.
pub async fn events_start_their_executions_atomically(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (a, b) = (new_execution(&w, "api"), new_execution(&w, "api"));
    let mut first = event("order.created", Some("o-1"), t0());
    first.started = vec![a.id, b.id];
    let EventInsert::Inserted(stored) = store
        .insert_event_starting(first.clone(), vec![a.clone().into(), b.clone().into()])
        .await
        .unwrap()
    else {
        panic!("first insert")
    };
    assert_eq!(stored.started, vec![a.id, b.id]);
    assert_eq!(store.get_execution(a.id).await.unwrap().id, a.id);
    assert_eq!(store.get_execution(b.id).await.unwrap().id, b.id);
    assert_eq!(
        store.get_event(first.id).await.unwrap().started,
        vec![a.id, b.id]
    );

    let c = new_execution(&w, "api");
    let mut again = event("order.created", Some("o-1"), t0() + secs(1));
    again.started = vec![c.id];
    let EventInsert::Duplicate(dup) = store
        .insert_event_starting(again, vec![c.clone().into()])
        .await
        .unwrap()
    else {
        panic!("a repeated event_id is a duplicate")
    };
    assert_eq!(dup.id, first.id);
    assert!(
        store.get_execution(c.id).await.unwrap_err().is_not_found(),
        "nothing of a duplicate is stored"
    );

    // An execution id that exists refuses the whole event.
    let mut clash = event("order.created", Some("o-2"), t0());
    clash.started = vec![a.id];
    assert!(store
        .insert_event_starting(clash.clone(), vec![a.clone().into()])
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store.get_event(clash.id).await.unwrap_err().is_not_found());
}

/// An execution that already ran its first steps before it was stored (the engine runs
/// side-effect-free steps ahead of the event's transaction) is stored as it stands — at
/// its approval gate with its request, or ended — with its step records; a duplicate
/// event stores none of it.
pub async fn events_store_executions_already_at_their_gate(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let ahead = |e: Execution, transition: Transition| -> Starting {
        let mut e = e;
        let mut step = commit(&e, "api", e.version, transition);
        step.records = vec![
            step_record(e.id, "check", StepStatus::Completed),
            step_record(e.id, "gate", StepStatus::Paused),
        ];
        step.undo = vec![undo_of("check", 1), undo_of("gate", 1)];
        let writes = crate::rules::apply_commit(&mut e, step).unwrap();
        Starting {
            execution: e,
            records: writes.records,
            approval: writes.approval,
            // As the engine sends them: none for an execution that completed.
            undo: writes.undo,
        }
    };
    let fresh = new_execution(&w, "api");
    let approval = approval_for(&fresh, 1, Some(t0() + secs(60)));
    let mut g = gate(PauseReason::Approval, Some(t0() + secs(60)));
    g.approval_id = Some(approval.id);
    let paused = ahead(
        fresh,
        Transition::Gate {
            gate: g,
            approval: Some(Box::new(approval.clone())),
        },
    );
    let ended = ahead(
        new_execution(&w, "api"),
        Transition::Finish {
            status: ExecutionStatus::Completed,
            error: None,
        },
    );
    let mut first = event("order.created", Some("o-ahead"), t0());
    first.started = vec![paused.execution.id, ended.execution.id];
    assert!(matches!(
        store
            .insert_event_starting(first, vec![paused.clone(), ended.clone()])
            .await
            .unwrap(),
        EventInsert::Inserted(_)
    ));
    for start in [&paused, &ended] {
        let id = start.execution.id;
        assert_eq!(store.get_execution(id).await.unwrap(), start.execution);
        let steps: Vec<_> = store
            .list_steps(id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.step_id, r.status))
            .collect();
        assert_eq!(
            steps,
            vec![
                ("check".to_owned(), StepStatus::Completed),
                ("gate".to_owned(), StepStatus::Paused)
            ]
        );
    }
    assert_eq!(
        store
            .get_execution(paused.execution.id)
            .await
            .unwrap()
            .status,
        ExecutionStatus::Paused
    );
    assert_eq!(
        store.context_trail(paused.execution.id).await.unwrap(),
        [undo_of("check", 1), undo_of("gate", 1)],
        "the undo trail is stored with the start"
    );
    assert_eq!(
        store.context_trail(ended.execution.id).await.unwrap(),
        [],
        "a completed execution keeps no trail"
    );
    assert_eq!(store.get_approval(approval.id).await.unwrap(), approval);
    // It is due like any other paused execution.
    let due = store
        .claim_due_gates(t0() + secs(61), &lease("w2", t0() + secs(120)), 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![paused.execution.id]
    );

    // A duplicate stores nothing of what it carries.
    let fresh = new_execution(&w, "api");
    let late = approval_for(&fresh, 1, None);
    let mut g = gate(PauseReason::Approval, None);
    g.approval_id = Some(late.id);
    let again_start = ahead(
        fresh,
        Transition::Gate {
            gate: g,
            approval: Some(Box::new(late.clone())),
        },
    );
    let mut again = event("order.created", Some("o-ahead"), t0() + secs(1));
    again.started = vec![again_start.execution.id];
    assert!(matches!(
        store
            .insert_event_starting(again, vec![again_start.clone()])
            .await
            .unwrap(),
        EventInsert::Duplicate(_)
    ));
    assert!(store
        .get_execution(again_start.execution.id)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(store
        .get_approval(late.id)
        .await
        .unwrap_err()
        .is_not_found());
    // Its steps: none (or, where the store says so, no such execution).
    assert!(store
        .list_steps(again_start.execution.id)
        .await
        .map_or(true, |steps| steps.is_empty()));
}

/// Twenty concurrent deliveries of one `event_id` (which a store may fold into one
/// batch): one is stored with its execution, every other answer is that first event, and
/// none of their executions exists.
pub async fn concurrent_repeats_of_an_event_store_it_once(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let execution = new_execution(&w, "api");
        tasks.push(tokio::spawn(async move {
            let mut e = event("order.created", Some("o-race"), t0() + secs(i));
            e.started = vec![execution.id];
            let answer = store
                .insert_event_starting(e.clone(), vec![execution.clone().into()])
                .await
                .unwrap();
            (e, execution, answer)
        }));
    }
    let mut firsts = HashSet::new();
    let mut stored = 0;
    for task in tasks {
        let (sent, execution, answer) = task.await.unwrap();
        match answer {
            EventInsert::Inserted(e) => {
                assert_eq!(e.id, sent.id);
                firsts.insert(e.id);
                assert_eq!(
                    store.get_execution(execution.id).await.unwrap().id,
                    execution.id
                );
                stored += 1;
            }
            EventInsert::Duplicate(first) => {
                firsts.insert(first.id);
                assert!(store
                    .get_execution(execution.id)
                    .await
                    .unwrap_err()
                    .is_not_found());
            }
        }
    }
    assert_eq!(stored, 1, "exactly one delivery is stored");
    assert_eq!(firsts.len(), 1, "every answer is the one stored event");
}

/// An event that must be refused (it would start an execution whose id exists),
/// delivered together with twenty good ones (which a store may fold into one batch
/// with it): it alone is refused and stores nothing; every other event is stored with
/// its execution.
pub async fn a_refused_event_spoils_no_other_of_its_batch(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let existing = new_execution(&w, "api");
    let mut first = event("order.created", Some("o-first"), t0());
    first.started = vec![existing.id];
    store
        .insert_event_starting(first, vec![existing.clone().into()])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..21 {
        let store = store.clone();
        let execution = if i == 10 {
            existing.clone()
        } else {
            new_execution(&w, "api")
        };
        tasks.push(tokio::spawn(async move {
            let mut e = event("order.created", Some(&format!("o-{i}")), t0() + secs(i));
            e.started = vec![execution.id];
            let answer = store
                .insert_event_starting(e.clone(), vec![execution.clone().into()])
                .await;
            (i, e, execution, answer)
        }));
    }
    for task in tasks {
        let (i, sent, execution, answer) = task.await.unwrap();
        if i == 10 {
            assert!(answer.unwrap_err().is_conflict(), "the clashing event");
            assert!(store.get_event(sent.id).await.unwrap_err().is_not_found());
            continue;
        }
        let EventInsert::Inserted(stored) = answer.unwrap() else {
            panic!("event {i} is new")
        };
        assert_eq!(stored.id, sent.id);
        assert_eq!(store.get_event(sent.id).await.unwrap().id, sent.id);
        assert_eq!(
            store.get_execution(execution.id).await.unwrap().id,
            execution.id
        );
    }
}

/// Retention deletes only the events nobody took — delivered, starting nothing, in no
/// execution's `resumed` list — received before their type's cutoff, oldest first and in
/// batches; an execution that consumes an event, by a claim or in a step's commit, is
/// listed in its `resumed` list, and recording an outcome adds to that list.
pub async fn untaken_events_are_purged_by_their_types_cutoff(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let stored = |e: Event| {
        let store = store.clone();
        async move {
            store.insert_event(e.clone()).await.unwrap();
            store.mark_events_delivered(&[e.id]).await.unwrap();
            e
        }
    };
    let old = stored(event("doc.signed", Some("old"), t0())).await;
    let older = stored(event("doc.signed", None, t0() - secs(5))).await;
    let young = stored(event("doc.signed", None, t0() + secs(100))).await;
    let kept_longer = stored(event("order.paid", None, t0())).await;
    let mut starting = event("doc.signed", None, t0());
    starting.started = vec![Uuid::now_v7()];
    let starting = stored(starting).await;
    let undelivered = event("doc.signed", None, t0());
    store.insert_event(undelivered.clone()).await.unwrap();
    // Taken by a delivery's outcome, by a claim, and by a step that found it early.
    let resumed = stored(event("doc.signed", None, t0())).await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    store
        .set_event_outcome(resumed.id, Vec::new(), vec![first])
        .await
        .unwrap();
    let outcome = store
        .set_event_outcome(resumed.id, Vec::new(), vec![second, first])
        .await
        .unwrap();
    assert_eq!(
        outcome.resumed.iter().collect::<HashSet<_>>(),
        [first, second].iter().collect::<HashSet<_>>(),
        "an outcome adds to the executions that took the event"
    );
    let claimed = stored(event("payment.received", None, t0())).await;
    let waiter = waiting(&store, &w, None).await;
    store
        .claim_wait(waiter.id, None, &claimed, None, &lease("api", t0()), t0())
        .await
        .unwrap();
    assert_eq!(
        store.get_event(claimed.id).await.unwrap().resumed,
        [waiter.id]
    );
    let early = stored(event("doc.signed", None, t0())).await;
    let taker = running(&store, &w, "w1").await;
    let mut step = commit(&taker, "w1", taker.version, Transition::Continue);
    step.consumed_events = vec![early.id];
    store.commit_step(step).await.unwrap();
    assert_eq!(store.get_event(early.id).await.unwrap().resumed, [taker.id]);

    let purge = EventPurge {
        before: t0() + secs(10),
        per_type: vec![("order.paid".into(), t0() - secs(60))],
    };
    assert_eq!(store.purge_events(&purge, 1).await.unwrap(), 1, "a batch");
    assert!(
        store.get_event(older.id).await.unwrap_err().is_not_found(),
        "oldest first"
    );
    store.get_event(old.id).await.unwrap();
    assert_eq!(store.purge_events(&purge, 100).await.unwrap(), 1);
    assert!(store.get_event(old.id).await.unwrap_err().is_not_found());
    assert_eq!(store.purge_events(&purge, 100).await.unwrap(), 0);
    for kept in [
        &young,
        &kept_longer,
        &starting,
        &undelivered,
        &resumed,
        &claimed,
        &early,
    ] {
        store.get_event(kept.id).await.unwrap();
    }
    // The deleted event's `event_id` is free again: a repeat is a new event.
    assert!(matches!(
        store
            .insert_event(event("doc.signed", Some("old"), t0() + secs(200)))
            .await
            .unwrap(),
        EventInsert::Inserted(_)
    ));
    let later = EventPurge {
        before: t0() + secs(10),
        per_type: vec![("order.paid".into(), t0() + secs(1))],
    };
    assert_eq!(
        store.purge_events(&later, 100).await.unwrap(),
        1,
        "its type's own cutoff"
    );
    assert!(store
        .get_event(kept_longer.id)
        .await
        .unwrap_err()
        .is_not_found());
}

/// Event keys: shapes are registered once; keys land with the cursor only from where it
/// was (a second keyer of the same events is refused); a keyed probe returns the events
/// with that hash, oldest first, up to the cursor and from `since`, addressed to nobody
/// or to the execution; a deleted event takes its keys with it.
pub async fn events_are_found_by_their_stored_keys(store: Arc<dyn Store>) {
    let fields = vec!["event.order_id".to_owned()];
    store.add_event_shape("paid", "s1", &fields).await.unwrap();
    store
        .add_event_shape("paid", "s1", &["other".to_owned()])
        .await
        .unwrap();
    store.add_event_shape("sent", "s2", &fields).await.unwrap();
    let shapes = store.event_shapes(Some("paid")).await.unwrap();
    assert_eq!(shapes.len(), 1);
    assert_eq!(shapes[0].fields, fields, "registered once, as first given");
    assert_eq!(shapes[0].keyed_through, None);
    assert_eq!(store.event_shapes(None).await.unwrap().len(), 2);

    let exec = Uuid::now_v7();
    let mut events = Vec::new();
    for i in 0..6 {
        let mut e = event("paid", None, t0() + secs(i));
        if i == 4 {
            e.correlation_id = Some(Uuid::now_v7());
        }
        store.insert_event(e.clone()).await.unwrap();
        events.push(e);
    }
    let to_key = store
        .events_to_key("paid", None, t0() + secs(3), 10)
        .await
        .unwrap();
    assert_eq!(
        to_key.iter().map(|e| e.id).collect::<Vec<_>>(),
        events[..4].iter().map(|e| e.id).collect::<Vec<_>>(),
        "up to the given arrival"
    );
    let key = |e: &Event, hash: &str| EventKey {
        event_id: e.id,
        received_at: e.received_at,
        hash: hash.into(),
    };
    let through = (events[3].received_at, events[3].id);
    store
        .add_event_keys(
            "paid",
            "s1",
            &[
                key(&events[0], "h"),
                key(&events[1], "x"),
                key(&events[3], "h"),
            ],
            None,
            through,
        )
        .await
        .unwrap();
    assert!(
        store
            .add_event_keys("paid", "s1", &[key(&events[2], "h")], None, through)
            .await
            .unwrap_err()
            .is_conflict(),
        "keyed meanwhile"
    );
    assert!(store
        .add_event_keys("paid", "nope", &[], None, through)
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(
        store.event_shapes(Some("paid")).await.unwrap()[0].keyed_through,
        Some(through)
    );
    let last = (events[5].received_at, events[5].id);
    store
        .add_event_keys(
            "paid",
            "s1",
            &[key(&events[4], "h"), key(&events[5], "h")],
            Some(through),
            last,
        )
        .await
        .unwrap();
    let probe = |since, after, through, limit| {
        let store = store.clone();
        async move {
            store
                .keyed_events_for_wait("paid", "s1", "h", since, exec, after, through, limit)
                .await
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        probe(t0(), None, last, 10).await,
        [events[0].id, events[3].id, events[5].id],
        "by hash, oldest first, not addressed elsewhere"
    );
    assert_eq!(
        probe(t0(), None, through, 10).await,
        [events[0].id, events[3].id]
    );
    assert_eq!(
        probe(t0() + secs(1), None, last, 10).await,
        [events[3].id, events[5].id]
    );
    assert_eq!(probe(t0(), None, last, 1).await, [events[0].id]);
    assert_eq!(
        probe(t0(), Some((events[0].received_at, events[0].id)), last, 10).await,
        [events[3].id, events[5].id]
    );
    // Retention deletes the event, and its key with it.
    store.mark_events_delivered(&[events[0].id]).await.unwrap();
    let purge = EventPurge {
        before: t0() + secs(1),
        per_type: Vec::new(),
    };
    assert_eq!(store.purge_events(&purge, 10).await.unwrap(), 1);
    assert_eq!(
        probe(t0(), None, last, 10).await,
        [events[3].id, events[5].id]
    );
}

/// A run ahead that stopped before a side effect stores that step's `running` record
/// with the execution ([`Starting::begun`]): the row is stored running and leased, the
/// record as sent, and the holder's commit after the call completes that record in
/// place — one record per attempt, begun when the start stored it.
pub async fn a_step_begun_with_its_start_is_completed_in_place(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let mut e = new_execution(&w, "api");
    let mut step = commit(&e, "api", e.version, Transition::Continue);
    step.cursor = Some(Cursor::new("pay", 1));
    let mut pay = step_record(e.id, "pay", StepStatus::Running);
    pay.input = serde_json::Value::Null;
    pay.output = serde_json::Value::Null;
    step.records = vec![
        step_record(e.id, "check", StepStatus::Completed),
        pay.clone(),
    ];
    let writes = crate::rules::apply_commit(&mut e, step).unwrap();
    let start = Starting {
        execution: e,
        records: writes.records,
        approval: None,
        undo: writes.undo,
    };
    assert_eq!(start.begun(), Some(&pay));
    let mut retried = start.clone();
    retried.execution.cursor = Some(Cursor {
        attempt: 2,
        ..Cursor::new("pay", 1)
    });
    assert_eq!(retried.begun(), None, "a record of another attempt");

    let mut first = event("order.created", Some("o-begun"), t0());
    first.started = vec![start.execution.id];
    assert!(matches!(
        store
            .insert_event_starting(first, vec![start.clone()])
            .await
            .unwrap(),
        EventInsert::Inserted(_)
    ));
    let stored = store.get_execution(start.execution.id).await.unwrap();
    assert_eq!(stored, start.execution);
    assert_eq!(stored.status, ExecutionStatus::Running);
    let steps = store.list_steps(stored.id).await.unwrap();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[1], pay);

    let mut done = pay.clone();
    done.status = StepStatus::Completed;
    done.output = serde_json::json!({"status": 200});
    done.completed_at = Some(t0() + secs(1));
    let mut end = commit(
        &stored,
        "api",
        stored.version,
        Transition::Finish {
            status: ExecutionStatus::Completed,
            error: None,
        },
    );
    end.cursor = None;
    end.records = vec![done.clone()];
    store.commit_step(end).await.unwrap();
    let steps = store.list_steps(stored.id).await.unwrap();
    let statuses: Vec<_> = steps
        .iter()
        .map(|r| (r.step_id.as_str(), r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("check", StepStatus::Completed),
            ("pay", StepStatus::Completed)
        ]
    );
    assert_eq!(steps[1], done);
}
