//! The trait implementations on SQLite: one file per store trait, beside the SQL every
//! write shares (`sql`), step commits and their group-commit writer (`commits`), and
//! the decisions' group-commit writer (`decisions`). Each method is one statement or one `BEGIN IMMEDIATE`
//! transaction on the writer connection; reads use the read pool.

/// The rows of the JSON array bound to a statement as table `j`, each row's `value` in
/// SQLite's binary JSON form, converted once per row; a statement of a batch starts
/// with it and picks its fields with `j.value ->> 'field'`. Picking fields straight
/// from `json_each`'s `value` had SQLite render the row as JSON text again, and look it
/// up among the texts it parsed, for every field picked (rows of 15 to 35 fields here):
/// the JSON functions took 28 % of the writer thread's samples during the approval
/// benchmark's starts, 10 % this way.
macro_rules! rows_as_j {
    () => {
        "WITH j AS MATERIALIZED (SELECT jsonb(value) AS value FROM json_each(?))"
    };
}

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
