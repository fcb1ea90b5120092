//! The crash-point explorer in the test suite: every crash point of every scenario on
//! the in-memory store, a subset on SQLite files, and a few randomised seeds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod begins;
mod partition;
mod races;

/// One process's engine on the in-memory store behind `fuse`, with the workflow `doc`
/// deployed and started by an event `event`, settled at its first stop.
pub struct Started {
    /// The store itself, past the fuse: what survives the process.
    pub durable: std::sync::Arc<dyn tollgate_store::Store>,
    pub engine: tollgate_engine::Engine,
    pub clock: std::sync::Arc<tollgate_engine::TestClock>,
    pub events: tollgate_resumer::EventService,
    pub execution: tollgate_model::records::Execution,
}

pub async fn started(
    fuse: std::sync::Arc<tollgate_sim::fuse::Fuse>,
    doc: &serde_json::Value,
    event: &str,
) -> Started {
    use std::sync::Arc;
    use tollgate_engine::{Clock, Engine, EngineOptions, TestClock};
    use tollgate_model::records::{snapshot_id, Workflow};
    use tollgate_store::{MemoryStore, Store};

    let durable: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> =
        Arc::new(tollgate_sim::fuse::CrashStore::new(durable.clone(), fuse));
    let clock = Arc::new(TestClock::new(chrono::DateTime::UNIX_EPOCH));
    let engine = Engine::builder(store)
        .clock(clock.clone())
        .options(EngineOptions {
            worker_id: "p".into(),
            ..EngineOptions::default()
        })
        .build()
        .unwrap();
    let definition = Arc::new(tollgate_model::load(doc).unwrap().definition);
    durable
        .create_workflow(Workflow {
            id: uuid::Uuid::now_v7(),
            snapshot_id: snapshot_id(&definition),
            enabled: true,
            definition,
            created_at: clock.now(),
            updated_at: clock.now(),
        })
        .await
        .unwrap();
    let events = tollgate_resumer::EventService::new(engine.clone());
    let mut ingested = events
        .ingest(tollgate_resumer::NewEvent {
            event_type: event.into(),
            payload: serde_json::json!({}),
            ..tollgate_resumer::NewEvent::default()
        })
        .await
        .unwrap();
    let execution = ingested
        .started
        .remove(0)
        .settled(&engine, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    Started {
        durable,
        engine,
        clock,
        events,
        execution,
    }
}

use tollgate_sim::sweep::{exhaustive, randomised, SweepReport};
use tollgate_sim::{named, Backend};

fn assert_clean(name: &str, report: &SweepReport) {
    eprintln!(
        "{name}: {} crash points, {} runs, {} checks, {:.1} s",
        report.calls * 2,
        report.runs,
        report.checks,
        report.elapsed.as_secs_f64()
    );
    assert!(
        report.calls > 10,
        "{name}: the dry run made {} store calls",
        report.calls
    );
    assert!(
        report.checks > report.runs,
        "{name}: every run checks invariants"
    );
    let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
}

fn sweep(name: &str, backend: Backend, stride: usize) {
    let scenario = named(name).unwrap_or_else(|| panic!("no scenario {name}"));
    let report = exhaustive(&scenario, backend, stride, 1).unwrap();
    assert_clean(name, &report);
}

macro_rules! every_crash_point {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                sweep($name, Backend::Memory, 1);
            }
        )*
        /// Every scenario of the catalogue has its test above.
        #[test]
        fn every_scenario_is_swept() {
            let swept = [$($name),*];
            for s in tollgate_sim::all() {
                assert!(swept.contains(&s.name), "scenario {} has no sweep test", s.name);
            }
        }
    };
}

every_crash_point! {
    approval_quorum_2 => "approval-quorum-2",
    approval_reject => "approval-reject",
    approval_deadline_rejects => "approval-deadline-rejects",
    approval_deadline_approves => "approval-deadline-approves",
    wait_early_event => "wait-early-event",
    wait_late_event => "wait-late-event",
    wait_event_races_timer => "wait-event-races-timer",
    wait_direct_delivery => "wait-direct-delivery",
    first_of_event_beats_decision => "first-of-event-beats-decision",
    first_of_deadline_beats_event => "first-of-deadline-beats-event",
    operator_at_a_gate => "operator-at-a-gate",
    operator_pauses_a_woken_wait => "operator-pauses-a-woken-wait",
    operator_pauses_a_decided_gate => "operator-pauses-a-decided-gate",
    operator_cancels_a_wait => "operator-cancels-a-wait",
    operator_pause_resume_retrying => "operator-pause-resume-retrying",
    webhook_retries_inline => "webhook-retries-inline",
    schedule_tick => "schedule-tick",
    original_high_value_order => "original-high-value-order",
    original_quote_multi_level => "original-quote-multi-level",
    original_cart_fraud => "original-cart-fraud",
    original_data_processing => "original-data-processing",
    original_order_processing => "original-order-processing",
    original_inventory_sync => "original-inventory-sync",
    original_quote_expiration => "original-quote-expiration",
}

// On SQLite each process opens its own pool on one file, and a dead process's pool is
// left unclosed: what survives is what SQLite committed.
#[test]
fn sqlite_approval_quorum_2() {
    sweep("approval-quorum-2", Backend::Sqlite, 1);
}

#[test]
fn sqlite_wait_late_event() {
    sweep("wait-late-event", Backend::Sqlite, 1);
}

#[test]
fn sqlite_operator_pauses_a_woken_wait() {
    sweep("operator-pauses-a-woken-wait", Backend::Sqlite, 1);
}

#[test]
fn sqlite_first_of_event_beats_decision() {
    sweep("first-of-event-beats-decision", Backend::Sqlite, 1);
}

#[test]
fn sqlite_schedule_tick() {
    sweep("schedule-tick", Backend::Sqlite, 2);
}

/// Two crashes per run, concurrent callers, random interleavings.
#[test]
fn randomised_seeds() {
    let report = randomised(&tollgate_sim::all(), 1, 40, Backend::Memory).unwrap();
    let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(report.runs, 40);
}
