//! [`ScheduleStore`](crate::ScheduleStore): trigger and manual schedules, ticks claimed
//! once, catch-up, and tick history.

use std::sync::Arc;

use serde_json::{json, Value};
use tollgate_model::records::{snapshot_id, Timestamp, Workflow};
use tollgate_model::schedule::{CatchUp, Schedule, TickStatus};
use tollgate_model::ExecutionStatus;
use uuid::Uuid;

use super::fixtures::{definition, lease, new_execution, secs, t0, workflow};
use crate::{PageRequest, ScheduleFilter, Store};

async fn workflow_from(store: &Arc<dyn Store>, doc: Value) -> Workflow {
    let definition = Arc::new(tollgate_model::load(&doc).unwrap().definition);
    store
        .create_workflow(Workflow {
            id: Uuid::now_v7(),
            snapshot_id: snapshot_id(&definition),
            enabled: definition.enabled,
            definition,
            created_at: t0(),
            updated_at: t0(),
        })
        .await
        .unwrap()
}

fn scheduled_doc(workflow_id: &str, cron: &str, timezone: Option<&str>) -> Value {
    let mut trigger = json!({"type": "schedule", "cron": cron});
    if let Some(tz) = timezone {
        trigger["timezone"] = json!(tz);
    }
    json!({"workflow_id": workflow_id, "version": "1", "trigger": trigger,
           "steps": [{"id": "done", "type": "action", "action": "allow"}]})
}

/// A manual schedule on `w`: every minute, due at `t0()`.
pub fn minute_schedule(w: &Workflow, catch_up: CatchUp) -> Schedule {
    Schedule {
        id: Uuid::now_v7(),
        workflow_id: w.id,
        cron: "0 * * * * *".into(),
        timezone: "UTC".into(),
        enabled: true,
        catch_up,
        from_trigger: false,
        next_fire_at: Some(t0()),
        last_fired_at: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

/// A workflow's own `schedule` trigger has a schedule that follows the definition, and
/// deleting the workflow deletes every schedule of it.
pub async fn trigger_schedules_follow_their_workflow(store: Arc<dyn Store>) {
    let w = workflow_from(
        &store,
        scheduled_doc("report", "0 */6 * * *", Some("Europe/Berlin")),
    )
    .await;
    let id = crate::rules::trigger_schedule_id(w.id);
    let s = store.get_schedule(id).await.unwrap();
    assert!(s.from_trigger && s.enabled);
    assert_eq!(
        (s.cron.as_str(), s.timezone.as_str()),
        ("0 */6 * * *", "Europe/Berlin")
    );
    // 12:00 UTC is 13:00 in Berlin; the next 6-hourly tick is 18:00 Berlin = 17:00 UTC.
    assert_eq!(s.next_fire_at, Some(t0() + secs(5 * 3600)));

    let changed = Arc::new(
        tollgate_model::load(&scheduled_doc("report", "@daily", None))
            .unwrap()
            .definition,
    );
    store
        .replace_workflow(w.id, changed, t0() + secs(60))
        .await
        .unwrap();
    let s = store.get_schedule(id).await.unwrap();
    assert_eq!((s.cron.as_str(), s.timezone.as_str()), ("@daily", "UTC"));
    assert_eq!(s.next_fire_at, Some(t0() + secs(12 * 3600)));

    let manual = store
        .create_schedule(minute_schedule(&w, CatchUp::Skip))
        .await
        .unwrap();
    let evented = definition("report", "1", "report.requested");
    store
        .replace_workflow(w.id, evented, t0() + secs(120))
        .await
        .unwrap();
    assert!(store.get_schedule(id).await.unwrap_err().is_not_found());
    assert!(
        store.get_schedule(manual.id).await.is_ok(),
        "manual schedules stay"
    );

    // Enabling a workflow whose trigger is a schedule brings the trigger schedule back.
    let again = Arc::new(
        tollgate_model::load(&scheduled_doc("report", "@hourly", None))
            .unwrap()
            .definition,
    );
    store.replace_workflow(w.id, again, t0()).await.unwrap();
    store.delete_schedule(id).await.unwrap();
    store.set_workflow_enabled(w.id, false, t0()).await.unwrap();
    store.set_workflow_enabled(w.id, true, t0()).await.unwrap();
    assert_eq!(store.get_schedule(id).await.unwrap().cron, "@hourly");

    store.delete_workflow(w.id).await.unwrap();
    assert!(store.get_schedule(id).await.unwrap_err().is_not_found());
    assert!(store
        .get_schedule(manual.id)
        .await
        .unwrap_err()
        .is_not_found());
    let none = store
        .create_schedule(minute_schedule(&w, CatchUp::Skip))
        .await
        .unwrap_err();
    assert!(none.is_not_found());
}

/// Two claimers racing over due schedules claim every tick exactly once, and the
/// schedules move past `now`.
pub async fn due_schedules_fire_each_tick_once_across_claimers(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    for _ in 0..20 {
        store
            .create_schedule(minute_schedule(&w, CatchUp::Skip))
            .await
            .unwrap();
    }
    let now = t0() + secs(1);
    let mut handles = Vec::new();
    for owner in ["w1", "w2"] {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store
                    .claim_ticks(now, &lease(owner, now + secs(30)), 3)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(
                    batch
                        .into_iter()
                        .map(|c| (c.tick.schedule_id, c.tick.tick_time)),
                );
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: std::collections::BTreeSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), 20, "each schedule's tick claimed once");
    assert_eq!(unique.len(), 20);
    assert!(all.iter().all(|(_, t)| *t == t0()));
    let page = store
        .list_schedules(&ScheduleFilter::default(), &PageRequest::first(100))
        .await
        .unwrap();
    assert!(page
        .items
        .iter()
        .all(|s| s.next_fire_at == Some(t0() + secs(60)) && s.last_fired_at == Some(t0())));
    assert!(store
        .claim_ticks(now, &lease("w3", now + secs(30)), 100)
        .await
        .unwrap()
        .is_empty());
}

/// A tick starts one execution, only by its holder; a claimer that died before starting
/// leaves a tick that another worker reclaims after the lease.
pub async fn ticks_start_once_and_orphans_are_reclaimed(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let schedule = store
        .create_schedule(minute_schedule(&w, CatchUp::Skip))
        .await
        .unwrap();
    let claimed = store
        .claim_ticks(t0(), &lease("w1", t0() + secs(30)), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].schedule.id, schedule.id);
    let tick = claimed[0].tick.clone();
    assert_eq!(tick.status, TickStatus::Pending);
    assert!(store
        .start_tick(tick.id, "w2", new_execution(&w, "w2"), t0())
        .await
        .unwrap_err()
        .is_conflict());
    // w1 dies; before its lease ends nobody else gets the tick.
    assert!(store
        .claim_ticks(t0() + secs(10), &lease("w2", t0() + secs(40)), 10)
        .await
        .unwrap()
        .is_empty());
    let later = t0() + secs(31);
    let reclaimed = store
        .claim_ticks(later, &lease("w2", later + secs(30)), 10)
        .await
        .unwrap();
    assert!(
        reclaimed.iter().any(|c| c.tick.id == tick.id),
        "{reclaimed:?}"
    );
    // The old holder is fenced off; the new one starts it exactly once.
    let lost = new_execution(&w, "w1");
    assert!(store
        .start_tick(tick.id, "w1", lost.clone(), later)
        .await
        .unwrap_err()
        .is_conflict());
    assert!(
        store
            .get_execution(lost.id)
            .await
            .unwrap_err()
            .is_not_found(),
        "a refused start stores nothing"
    );
    let execution = new_execution(&w, "w2");
    let started = store
        .start_tick(tick.id, "w2", execution.clone(), later)
        .await
        .unwrap();
    assert_eq!(started.id, execution.id);
    assert!(store.get_execution(execution.id).await.is_ok());
    assert!(store
        .start_tick(tick.id, "w2", new_execution(&w, "w2"), later)
        .await
        .unwrap_err()
        .is_conflict());
    let ticks = store
        .list_ticks(schedule.id, &PageRequest::first(10))
        .await
        .unwrap();
    let view = ticks.items.iter().find(|v| v.tick.id == tick.id).unwrap();
    assert_eq!(view.tick.status, TickStatus::Started);
    assert_eq!(view.tick.execution_id, Some(execution.id));
    assert_eq!(view.outcome, Some(ExecutionStatus::Running));

    // A tick whose workflow vanished is marked failed by its holder.
    let next = store
        .claim_ticks(t0() + secs(61), &lease("w2", t0() + secs(90)), 10)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert!(store
        .fail_tick(next[0].tick.id, "w1", "gone", t0())
        .await
        .unwrap_err()
        .is_conflict());
    store
        .fail_tick(next[0].tick.id, "w2", "workflow deleted", t0() + secs(61))
        .await
        .unwrap();
    let ticks = store
        .list_ticks(schedule.id, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(ticks.items[0].tick.status, TickStatus::Failed);
    assert_eq!(
        ticks.items[0].tick.error.as_deref(),
        Some("workflow deleted")
    );
}

/// Paused schedules and schedules of disabled workflows fire nothing; `all` catches up on
/// missed ticks, `skip` collapses them.
pub async fn paused_schedules_fire_nothing_and_catch_up_is_bounded(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let mut paused = minute_schedule(&w, CatchUp::Skip);
    paused.enabled = false;
    store.create_schedule(paused).await.unwrap();
    let skip = store
        .create_schedule(minute_schedule(&w, CatchUp::Skip))
        .await
        .unwrap();
    let all = store
        .create_schedule(minute_schedule(&w, CatchUp::All))
        .await
        .unwrap();
    assert_eq!(store.next_fire_at().await.unwrap(), Some(t0()));
    store.set_workflow_enabled(w.id, false, t0()).await.unwrap();
    assert_eq!(
        store.next_fire_at().await.unwrap(),
        None,
        "a disabled workflow schedules nothing"
    );
    let now = t0() + secs(150);
    assert!(store
        .claim_ticks(now, &lease("w1", now + secs(30)), 10)
        .await
        .unwrap()
        .is_empty());
    store.set_workflow_enabled(w.id, true, t0()).await.unwrap();
    let claimed = store
        .claim_ticks(now, &lease("w1", now + secs(30)), 10)
        .await
        .unwrap();
    let of = |id: Uuid| -> Vec<Timestamp> {
        let mut t: Vec<_> = claimed
            .iter()
            .filter(|c| c.schedule.id == id)
            .map(|c| c.tick.tick_time)
            .collect();
        t.sort();
        t
    };
    assert_eq!(of(skip.id), vec![t0() + secs(120)]);
    assert_eq!(of(all.id), vec![t0(), t0() + secs(60), t0() + secs(120)]);
    assert_eq!(claimed.len(), 4);
    assert_eq!(
        store.get_schedule(all.id).await.unwrap().next_fire_at,
        Some(t0() + secs(180))
    );
    assert_eq!(store.next_fire_at().await.unwrap(), Some(t0() + secs(180)));
}

/// Create, read, list, update and delete; tick history pages newest first.
pub async fn schedule_crud_and_tick_history(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let q = workflow(&store, "quotes", "1", "quote.created").await;
    let mut s = store
        .create_schedule(minute_schedule(&w, CatchUp::Skip))
        .await
        .unwrap();
    store
        .create_schedule(minute_schedule(&q, CatchUp::Skip))
        .await
        .unwrap();
    assert!(store
        .create_schedule(s.clone())
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(store.get_schedule(s.id).await.unwrap(), s);
    let mine = store
        .list_schedules(
            &ScheduleFilter {
                workflow_id: Some(w.id),
            },
            &PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(mine.items, vec![s.clone()]);
    let first = store
        .list_schedules(&ScheduleFilter::default(), &PageRequest::first(1))
        .await
        .unwrap();
    let second = store
        .list_schedules(
            &ScheduleFilter::default(),
            &PageRequest::after(1, first.next_cursor.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(first.items.len() + second.items.len(), 2);
    assert_ne!(first.items[0].id, second.items[0].id);

    // Five ticks, one a minute.
    for minute in 0..5 {
        let now = t0() + secs(60 * minute);
        let claimed = store
            .claim_ticks(now, &lease("w1", now + secs(30)), 10)
            .await
            .unwrap();
        for c in claimed.iter().filter(|c| c.schedule.id == s.id) {
            store
                .start_tick(c.tick.id, "w1", new_execution(&w, "w1"), now)
                .await
                .unwrap();
        }
    }
    let page = store
        .list_ticks(s.id, &PageRequest::first(3))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    assert_eq!(
        page.items[0].tick.tick_time,
        t0() + secs(240),
        "newest first"
    );
    let rest = store
        .list_ticks(s.id, &PageRequest::after(3, page.next_cursor.unwrap()))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert_eq!(rest.items[1].tick.tick_time, t0());
    assert!(rest.next_cursor.is_none());
    assert!(matches!(
        store
            .list_ticks(s.id, &PageRequest::after(3, "nonsense"))
            .await,
        Err(crate::Error::Invalid(_))
    ));

    s.cron = "@hourly".into();
    s.timezone = "Asia/Tokyo".into();
    s.enabled = false;
    s.catch_up = CatchUp::All;
    s.next_fire_at = Some(t0() + secs(3600));
    s.updated_at = t0() + secs(300);
    let updated = store.update_schedule(s.clone()).await.unwrap();
    assert_eq!(
        (
            updated.cron.as_str(),
            updated.timezone.as_str(),
            updated.enabled,
            updated.catch_up
        ),
        ("@hourly", "Asia/Tokyo", false, CatchUp::All)
    );
    assert_eq!(updated.next_fire_at, s.next_fire_at);
    assert_eq!(
        updated.last_fired_at,
        Some(t0() + secs(240)),
        "history is kept"
    );
    store.delete_schedule(s.id).await.unwrap();
    assert!(store
        .delete_schedule(s.id)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(store
        .list_ticks(s.id, &PageRequest::first(10))
        .await
        .unwrap()
        .items
        .is_empty());
    let mut ghost = s.clone();
    ghost.id = Uuid::now_v7();
    assert!(store
        .update_schedule(ghost)
        .await
        .unwrap_err()
        .is_not_found());
}
