//! Scheduled triggers on the in-memory store with the test clock.

use std::time::Duration;

use chrono::TimeZone;
use serde_json::json;
use tollgate_engine::Clock;
use tollgate_model::schedule::{CatchUp, Schedule};
use tollgate_model::ExecutionStatus;
use tollgate_store::{rules, ExecutionFilter, PageRequest};
use uuid::Uuid;

use crate::Harness;

fn at(h: u32, m: u32, s: u32) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc.with_ymd_and_hms(2026, 6, 1, h, m, s).unwrap()
}

fn hourly(steps: serde_json::Value) -> serde_json::Value {
    json!({"workflow_id": "hourly_report", "version": "1",
           "trigger": {"type": "schedule", "cron": "0 * * * *", "timezone": "UTC"},
           "steps": steps})
}

async fn executions(h: &Harness) -> Vec<tollgate_model::records::Execution> {
    let mut all = h
        .store
        .list_executions(&ExecutionFilter::default(), &PageRequest::first(500))
        .await
        .unwrap()
        .items;
    all.reverse();
    all
}

#[tokio::test]
async fn ticks_fire_on_time_and_once() {
    let h = Harness::new(); // the clock starts at 09:00:00
    let w = h
        .deploy(hourly(
            json!([{"id": "done", "type": "action", "action": "allow"}]),
        ))
        .await;
    let schedule = h
        .store
        .get_schedule(rules::trigger_schedule_id(w.id))
        .await
        .unwrap();
    assert_eq!(schedule.next_fire_at, Some(at(10, 0, 0)));

    h.clock.set(at(9, 59, 59));
    assert_eq!(
        h.worker.tick().await.unwrap().ticks,
        0,
        "not before its time"
    );
    h.clock.set(at(10, 0, 0));
    assert_eq!(h.worker.tick().await.unwrap().ticks, 1);
    assert_eq!(h.worker.tick().await.unwrap().ticks, 0, "never twice");
    let started = executions(&h).await;
    assert_eq!(started.len(), 1);
    let e = &started[0];
    assert_eq!(e.status, ExecutionStatus::Completed);
    assert_eq!(e.trigger_event, "schedule");
    assert_eq!(e.trigger_payload["schedule"]["id"], json!(schedule.id));
    assert_eq!(e.trigger_payload["schedule"]["cron"], "0 * * * *");
    assert_eq!(e.trigger_payload["schedule"]["tick"], json!(at(10, 0, 0)));
    let ticks = h
        .store
        .list_ticks(schedule.id, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(ticks.items.len(), 1);
    assert_eq!(ticks.items[0].tick.execution_id, Some(e.id));
    assert_eq!(ticks.items[0].outcome, Some(ExecutionStatus::Completed));
    let schedule = h.store.get_schedule(schedule.id).await.unwrap();
    assert_eq!(
        (schedule.last_fired_at, schedule.next_fire_at),
        (Some(at(10, 0, 0)), Some(at(11, 0, 0)))
    );
}

#[tokio::test]
async fn missed_ticks_collapse_or_catch_up_per_policy() {
    let h = Harness::new();
    let w = h
        .deploy(hourly(
            json!([{"id": "done", "type": "action", "action": "allow"}]),
        ))
        .await;
    // A second schedule on the same workflow that catches up on every missed tick.
    let all = h
        .store
        .create_schedule(Schedule {
            id: Uuid::now_v7(),
            workflow_id: w.id,
            cron: "0 * * * *".into(),
            timezone: "UTC".into(),
            enabled: true,
            catch_up: CatchUp::All,
            from_trigger: false,
            next_fire_at: Some(at(10, 0, 0)),
            last_fired_at: None,
            created_at: at(9, 0, 0),
            updated_at: at(9, 0, 0),
        })
        .await
        .unwrap();
    // Nothing ran from 09:00 to 15:30: six ticks were missed (10:00 … 15:00).
    h.clock.set(at(15, 30, 0));
    let report = h.worker.tick().await.unwrap();
    assert_eq!(report.ticks, 1 + 6);
    let trigger = rules::trigger_schedule_id(w.id);
    let skip_ticks = h
        .store
        .list_ticks(trigger, &PageRequest::first(50))
        .await
        .unwrap()
        .items;
    assert_eq!(skip_ticks.len(), 1);
    assert_eq!(
        skip_ticks[0].tick.tick_time,
        at(15, 0, 0),
        "skip fires the latest missed tick"
    );
    let all_ticks = h
        .store
        .list_ticks(all.id, &PageRequest::first(50))
        .await
        .unwrap()
        .items;
    let times: Vec<_> = all_ticks.iter().rev().map(|t| t.tick.tick_time).collect();
    assert_eq!(
        times,
        (10..=15).map(|hour| at(hour, 0, 0)).collect::<Vec<_>>()
    );
    assert_eq!(executions(&h).await.len(), 7);
}

#[tokio::test]
async fn a_failing_workflow_keeps_its_schedule_moving() {
    let h = Harness::new();
    // Port 1 refuses connections at once: the step fails, the execution fails.
    h.deploy(hourly(json!([
        {"id": "call", "type": "execute", "execute": [{"type": "webhook", "url": "http://127.0.0.1:1/report", "timeout": "2s"}], "next": "done"},
        {"id": "done", "type": "action", "action": "allow"}
    ])))
    .await;
    for hour in 10..=12 {
        h.clock.set(at(hour, 0, 0));
        assert_eq!(h.worker.tick().await.unwrap().ticks, 1, "tick at {hour}:00");
        h.clock.advance(Duration::from_secs(1));
        h.worker.tick().await.unwrap();
    }
    let runs = executions(&h).await;
    assert_eq!(runs.len(), 3);
    assert!(
        runs.iter().all(|e| e.status == ExecutionStatus::Failed),
        "{:?}",
        runs.iter().map(|e| e.status).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn disabled_workflows_pause_their_schedules() {
    let h = Harness::new();
    let w = h
        .deploy(hourly(
            json!([{"id": "done", "type": "action", "action": "allow"}]),
        ))
        .await;
    h.store
        .set_workflow_enabled(w.id, false, h.clock.now())
        .await
        .unwrap();
    h.clock.set(at(12, 0, 0));
    assert_eq!(h.worker.tick().await.unwrap().ticks, 0);
    h.store
        .set_workflow_enabled(w.id, true, h.clock.now())
        .await
        .unwrap();
    assert_eq!(
        h.worker.tick().await.unwrap().ticks,
        1,
        "missed ticks collapse into one"
    );
    h.store.delete_workflow(w.id).await.unwrap();
    assert!(h
        .store
        .get_schedule(rules::trigger_schedule_id(w.id))
        .await
        .unwrap_err()
        .is_not_found());
}

/// The worker loop sleeps until the next tick when that comes before its poll interval:
/// with a 30 s poll, a tick 300 ms away still starts within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_wakes_for_the_next_tick_before_its_poll_interval() {
    let h = Harness::new();
    h.deploy(hourly(
        json!([{"id": "done", "type": "action", "action": "allow"}]),
    ))
    .await;
    h.clock
        .set(at(9, 59, 59) + chrono::TimeDelta::milliseconds(700));
    let worker = tollgate_resumer::Worker::new(
        h.engine.clone(),
        tollgate_resumer::WorkerOptions {
            poll_interval: Duration::from_secs(30),
            ..tollgate_resumer::WorkerOptions::default()
        },
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    // The first pass finds nothing due and sleeps the 300 ms left until 10:00; the test
    // clock is moved to 10:00 meanwhile.
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.clock.set(at(10, 0, 0));
    let mut started = Vec::new();
    for _ in 0..40 {
        started = executions(&h).await;
        if !started.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    running.await.unwrap();
    assert_eq!(
        started.len(),
        1,
        "the tick started long before the 30 s poll"
    );
}
