//! The trait implementations on SQLite: one file per store trait, beside the SQL every
//! write shares (`sql`), step commits and their group-commit writer (`commits`), and
//! the decisions' group-commit writer (`decisions`). Each method is one statement or one `BEGIN IMMEDIATE`
//! transaction on the writer connection; reads use the read pool.

mod approvals;
mod audit;
mod commits;
mod decisions;
mod delegations;
mod events;
mod executions;
mod health;
mod keys;
mod notifications;
mod records;
mod retention;
mod schedules;
mod sessions;
mod sql;
mod workers;
mod workflows;

pub(crate) use commits::{begin_batch, commit_batch};
pub(crate) use decisions::{decider, Decider};
pub(crate) use events::{intake, Intake};
