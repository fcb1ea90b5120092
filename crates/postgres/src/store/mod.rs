//! The trait implementations on PostgreSQL: one file per store trait, beside the SQL every
//! write shares (`sql`) and the group-commit writers the batching tasks run (`commits`,
//! `decisions`, `intake`).

mod approvals;
mod audit;
mod begins;
mod commits;
mod decisions;
mod delegations;
mod events;
mod executions;
mod health;
mod intake;
mod json_rows;
mod keys;
mod notifications;
mod records;
mod retention;
mod schedules;
mod sessions;
mod sql;
mod workers;
mod workflows;

pub(crate) use begins::begin_batch;
pub(crate) use commits::commit_batch;
pub(crate) use decisions::{decide_batch, prepare_decisions};
pub(crate) use intake::{
    insert_events, triggered_batch, waiting_batch, WaitingAnswer, WaitingRead,
};
pub(crate) use tollgate_store::decision_batch::DecideRequest;

/// The statements of the batch connections opened with [`crate::KEYED_BATCH_SETTINGS`],
/// each with a name: for the test that checks how those connections plan them.
#[cfg(feature = "testing")]
pub(crate) fn keyed_batch_statements() -> Vec<(&'static str, String)> {
    let mut statements = vec![
        ("step commits", commits::GROUP_COMMIT_SQL.clone()),
        ("step begins", begins::BEGIN_BATCH_SQL.clone()),
        ("decision read", decisions::READ_FOR_DECISION_SQL.clone()),
        ("decision writes", decisions::DECISION_WRITES_SQL.clone()),
    ];
    statements.extend(intake::keyed_statements());
    statements
}
