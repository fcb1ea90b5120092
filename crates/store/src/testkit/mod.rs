//! The backend contract test kit: the behaviour every [`Store`](crate::Store) must show, as one async
//! function per rule, and [`contract_tests!`](crate::contract_tests) to run them all as
//! separate tests against a backend.
//!
//! ```text
//! tollgate_store::contract_tests!(|| async { std::sync::Arc::new(MyStore::fresh().await) as std::sync::Arc<dyn tollgate_store::Store> });
//! ```
//!
//! The factory is called once per test and must return an empty store that no other test
//! uses (its own database or schema).
//!
//! The rules live in one file per aggregate, mirroring the store traits; `fixtures` holds
//! the builders they share, which backends' own tests reuse.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    missing_docs
)]

mod approvals;
mod audit;
mod control;
mod events;
mod executions;
mod first_of;
mod fixtures;
mod keys;
mod outbox;
mod quarantine;
mod retention;
mod schedules;
mod workflows;

pub use approvals::*;
pub use audit::*;
pub use control::*;
pub use events::*;
pub use executions::*;
pub use first_of::*;
pub use fixtures::*;
pub use keys::*;
pub use outbox::*;
pub use quarantine::*;
pub use retention::*;
pub use schedules::*;
pub use workflows::*;

/// Generates one `#[tokio::test]` per contract rule, each with a fresh store from
/// `$factory` (an async closure returning `Arc<dyn Store>`).
#[macro_export]
macro_rules! contract_tests {
    ($factory:expr) => {
        $crate::contract_tests!(@cases $factory;
            workflows_create_get_list_and_conflict,
            quarantine_keeps_the_row_and_ends_the_execution,
            worker_heartbeats_are_kept_per_worker,
            workflow_replace_keeps_old_snapshots,
            workflows_for_event_pick_highest_enabled_version,
            executions_create_get_and_conflict,
            concurrent_step_begins_keep_each_their_compare_and_set,
            step_commits_are_compare_and_set,
            concurrent_commits_keep_their_own_compare_and_set,
            effects_apply_once_with_the_commit,
            quorum_decisions_claim_the_execution_once,
            concurrent_decisions_claim_once,
            rejection_decides_and_stale_gates_refuse,
            decisions_are_authorised_in_their_transaction,
            decisions_store_their_continuation,
            due_gates_are_claimed_once_across_claimers,
            retry_restarts_only_an_unchanged_failed_execution,
            the_context_trail_grows_with_commits_until_completion,
            migration_moves_a_gated_execution_and_keeps_its_gate,
            purges_delete_ended_executions_whole_by_their_workflows_cutoff,
            expired_leases_are_reclaimed_and_old_owner_fenced,
            released_lease_waits_until_its_time,
            overdue_executions_time_out_unless_held,
            overdue_gates_and_pending_approvals_are_counted,
            manual_pause_resume_and_cancel,
            commits_past_a_boundary_are_refused_while_a_pause_is_requested,
            waits_claim_events_once,
            waits_are_found_by_their_correlation_key,
            events_are_idempotent_by_event_id,
            early_events_are_paged_without_a_cap,
            untaken_events_are_purged_by_their_types_cutoff,
            events_are_found_by_their_stored_keys,
            first_of_gates_are_found_by_each_type_and_an_event_supersedes_the_approval,
            a_first_of_step_is_decided_while_waiting_and_its_deadline_supersedes,
            first_of_gates_are_found_by_their_correlation_keys,
            decisions_after_the_deadline_are_refused,
            a_retried_event_write_answers_with_the_stored_event,
            pauses_keep_a_stored_wake,
            undelivered_events_are_listed_until_marked,
            direct_deliveries_store_nothing_when_refused,
            waits_refuse_events_from_before_they_started,
            execution_lists_use_keyset_pagination_and_filters,
            approval_lists_filter_by_decider,
            approval_comments_are_a_thread_that_goes_with_its_request,
            approval_claims_have_one_holder_and_go_with_their_request,
            service_levels_order_the_inbox_and_count_the_overdue,
            holds_and_service_levels_read_together_as_apart,
            a_decision_answers_with_its_holder_and_service_level,
            decisions_check_their_form_in_their_transaction,
            the_outbox_hands_each_notification_to_one_sender_until_it_is_settled,
            ladder_rungs_fire_once_add_approvers_and_skip_decided_requests,
            approval_lists_filter_by_workflow_step_and_age,
            api_keys_are_unique_findable_and_revocable,
            delegations_are_listed_used_in_their_period_and_revoked_once,
            finishing_closes_open_approvals,
            resume_request_audit_is_kept_in_order,
            foreign_cursors_are_refused,
            counts_by_status_match_the_rows,
            step_records_keep_json_null,
            trigger_schedules_follow_their_workflow,
            due_schedules_fire_each_tick_once_across_claimers,
            ticks_start_once_and_orphans_are_reclaimed,
            paused_schedules_fire_nothing_and_catch_up_is_bounded,
            schedule_crud_and_tick_history,
            events_start_their_executions_atomically,
            events_store_executions_already_at_their_gate,
            a_step_begun_with_its_start_is_completed_in_place,
            concurrent_repeats_of_an_event_store_it_once,
            a_refused_event_spoils_no_other_of_its_batch,
            console_sessions_live_until_they_expire
        );
    };
    (@cases $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::Store> = ($factory)().await;
                $crate::testkit::$name(store).await;
            }
        )*
    };
}

/// Generates one `#[tokio::test]` per rule that needs SQL on the rows (damaged or newer
/// rows), each with a fresh store and its SQL runner from `$factory` (an async function
/// returning `(Arc<dyn Store>, run)`, `run` executing one statement that changes one
/// row).
#[macro_export]
macro_rules! sql_rule_tests {
    ($factory:path) => {
        $crate::sql_rule_tests!(@cases $factory;
            unreadable_executions_are_quarantined_and_the_pass_goes_on,
            rows_of_a_newer_release_are_left_alone,
            unreadable_workflows_do_not_stop_other_workflows
        );
    };
    (@cases $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, sql) = $factory().await;
                $crate::testkit::$name(store, sql).await;
            }
        )*
    };
}
