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
