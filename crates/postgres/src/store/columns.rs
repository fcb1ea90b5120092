//! The hot batch writers' rows as one typed array per column, read back with
//! `UNNEST($n::type[], …)`.
//!
//! A JSON recordset makes the database parse the whole batch as one `jsonb` document
//! (sorting every object's keys), copy each row's nested documents out of it, and read
//! every id and timestamp from text. Arrays arrive in the binary protocol: ids, numbers
//! and timestamps are copied as they are, and only the documents themselves (a
//! context, a step's output) are parsed, once. Step records are written by every step
//! commit, begin, decision and start, so their columns are shared here.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;
use sqlx::types::Json;
use tollgate_model::records::{Cursor, ExecutionError, Gate, StepError, StepRecord, Timestamp};
use tollgate_model::ExecutionResult;
use tollgate_store::{rules, StepCommit, Transition};
use uuid::Uuid;

/// A batch statement's query, to which a set of columns binds its arrays.
pub(super) type Batch<'q> = Query<'q, Postgres, PgArguments>;

/// `UNNEST($first::type[], …) WITH ORDINALITY AS alias(column, …, ord)`: the rows of
/// `columns` (name and element type, in bind order) from the parameters `$first`
/// onward, each with its position as `ord`.
pub(super) fn unnest(first: usize, alias: &str, columns: &[(&str, &str)]) -> String {
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("${}::{ty}[]", first + i))
        .collect();
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    format!(
        "UNNEST({}) WITH ORDINALITY AS {alias}({}, ord)",
        arrays.join(", "),
        names.join(", ")
    )
}

/// A count that the database stores as `int`, widened so that no value is cut: one
/// too large for the column fails the statement, as it would have from JSON.
pub(super) fn int(n: u32) -> i64 {
    i64::from(n)
}

/// A batch position as the `slot` column (batches are far smaller than `i32::MAX`).
pub(super) fn slot(position: usize) -> i32 {
    i32::try_from(position).unwrap_or(i32::MAX)
}

/// The slots of a batch of `n`.
pub(super) fn slots(n: usize) -> Vec<i32> {
    (0..n).map(slot).collect()
}

/// Step records' columns, each with its batch position (`slot`, how a statement joins a
/// record to its own commit's compare-and-set).
#[derive(Default)]
pub(super) struct StepColumns<'a> {
    slot: Vec<i32>,
    id: Vec<Uuid>,
    execution_id: Vec<Uuid>,
    step_id: Vec<&'a str>,
    step_type: Vec<&'a str>,
    parent_step_id: Vec<Option<&'a str>>,
    iteration: Vec<Option<i64>>,
    visit: Vec<i64>,
    attempt: Vec<i64>,
    status: Vec<&'static str>,
    input: Vec<Json<&'a Value>>,
    output: Vec<Json<&'a Value>>,
    warnings: Vec<Json<&'a [String]>>,
    started_at: Vec<Timestamp>,
    completed_at: Vec<Option<Timestamp>>,
    error: Vec<Option<Json<&'a StepError>>>,
}

impl<'a> StepColumns<'a> {
    /// The columns' names and element types, in bind order.
    pub(super) const COLUMNS: [(&'static str, &'static str); 16] = [
        ("slot", "int4"),
        ("id", "uuid"),
        ("execution_id", "uuid"),
        ("step_id", "text"),
        ("step_type", "text"),
        ("parent_step_id", "text"),
        ("iteration", "int8"),
        ("visit", "int8"),
        ("attempt", "int8"),
        ("status", "text"),
        ("input", "jsonb"),
        ("output", "jsonb"),
        ("warnings", "jsonb"),
        ("started_at", "timestamptz"),
        ("completed_at", "timestamptz"),
        ("error", "jsonb"),
    ];

    /// The records' rows as `r` from the parameters `$first` onward.
    pub(super) fn unnest(first: usize) -> String {
        unnest(first, "r", &Self::COLUMNS)
    }

    /// Columns of `records`, each in slot `slot`.
    pub(super) fn of<'r>(records: impl IntoIterator<Item = (usize, &'r StepRecord)>) -> Self
    where
        'r: 'a,
    {
        let mut columns = Self::default();
        for (slot, record) in records {
            columns.push(slot, record);
        }
        columns
    }

    /// Adds `record`, in slot `slot`.
    pub(super) fn push(&mut self, slot: usize, record: &'a StepRecord) {
        self.slot.push(self::slot(slot));
        self.id.push(record.id);
        self.execution_id.push(record.execution_id);
        self.step_id.push(&record.step_id);
        self.step_type.push(&record.step_type);
        self.parent_step_id.push(record.parent_step_id.as_deref());
        self.iteration.push(record.iteration.map(int));
        self.visit.push(int(record.visit));
        self.attempt.push(int(record.attempt));
        self.status.push(record.status.as_str());
        self.input.push(Json(&record.input));
        self.output.push(Json(&record.output));
        self.warnings.push(Json(&record.warnings));
        self.started_at.push(record.started_at);
        self.completed_at.push(record.completed_at);
        self.error.push(record.error.as_ref().map(Json));
    }

    /// Binds the arrays, in [`Self::COLUMNS`]' order, as the query's next parameters.
    pub(super) fn bind<'q>(self, query: Batch<'q>) -> Batch<'q>
    where
        'a: 'q,
    {
        query
            .bind(self.slot)
            .bind(self.id)
            .bind(self.execution_id)
            .bind(self.step_id)
            .bind(self.step_type)
            .bind(self.parent_step_id)
            .bind(self.iteration)
            .bind(self.visit)
            .bind(self.attempt)
            .bind(self.status)
            .bind(self.input)
            .bind(self.output)
            .bind(self.warnings)
            .bind(self.started_at)
            .bind(self.completed_at)
            .bind(self.error)
    }
}

/// The group commit's step commits: per commit, the execution's state after its
/// transition as `rules::apply_commit` computes it, and its compare-and-set.
#[derive(Default)]
pub(super) struct CommitColumns<'a> {
    slot: Vec<i32>,
    id: Vec<Uuid>,
    owner: Vec<&'a str>,
    expected: Vec<i64>,
    kind: Vec<&'static str>,
    status: Vec<&'static str>,
    context: Vec<Json<&'a Value>>,
    cursor: Vec<Option<Json<&'a Cursor>>>,
    visits: Vec<Json<&'a BTreeMap<String, u32>>>,
    steps_run: Vec<i64>,
    result: Vec<Option<&'static str>>,
    expires: Vec<Option<Timestamp>>,
    now: Vec<Timestamp>,
    gate: Vec<Option<Json<&'a Gate>>>,
    gate_reason: Vec<Option<&'static str>>,
    gate_deadline: Vec<Option<Timestamp>>,
    gate_event: Vec<Option<&'a str>>,
    gate_approval_id: Vec<Option<Uuid>>,
    paused_at: Vec<Option<Timestamp>>,
    error: Vec<Option<Json<&'a ExecutionError>>>,
    close: Vec<Option<&'static str>>,
    wakes: Vec<bool>,
    stop: Vec<bool>,
}

impl<'a> CommitColumns<'a> {
    /// The columns' names and element types, in bind order; `id` is the second.
    pub(super) const COLUMNS: [(&'static str, &'static str); 23] = [
        ("slot", "int4"),
        ("id", "uuid"),
        ("owner", "text"),
        ("expected", "int8"),
        ("kind", "text"),
        ("status", "text"),
        ("context", "jsonb"),
        ("cursor", "jsonb"),
        ("visits", "jsonb"),
        ("steps_run", "int8"),
        ("result", "text"),
        ("expires", "timestamptz"),
        ("now", "timestamptz"),
        ("gate", "jsonb"),
        ("gate_reason", "text"),
        ("gate_deadline", "timestamptz"),
        ("gate_event", "text"),
        ("gate_approval_id", "uuid"),
        ("paused_at", "timestamptz"),
        ("error", "jsonb"),
        ("close", "text"),
        ("wakes", "bool"),
        ("stop", "bool"),
    ];

    /// Adds commit `c`, in slot `slot`. `kind` names its transition (`continue`,
    /// `release`, `gate`, `finish`), `expires` is its lease's new expiry, `close` the
    /// status its execution's open approvals take when it ends, and `wakes` whether the
    /// worker loops must look (a gate with a deadline).
    pub(super) fn push(&mut self, slot: usize, c: &'a StepCommit) {
        let (mut kind, mut status, mut expires) = ("continue", "running", None);
        let (mut gate, mut error, mut close) = (None, None, None);
        match &c.transition {
            Transition::Continue => expires = Some(c.lease_expires_at),
            Transition::Release { at } => {
                kind = "release";
                expires = Some(*at);
            }
            Transition::Gate { gate: g, .. } => {
                kind = "gate";
                status = rules::gated_status(g).as_str();
                gate = Some(g);
            }
            Transition::Finish {
                status: s,
                error: e,
            } => {
                kind = "finish";
                status = s.as_str();
                error = e.as_ref();
                close = Some(rules::closing_status(*s).as_str());
            }
        }
        self.slot.push(self::slot(slot));
        self.id.push(c.execution_id);
        self.owner.push(&c.owner);
        self.expected.push(c.expected_version);
        self.kind.push(kind);
        self.status.push(status);
        self.context.push(Json(&c.context));
        self.cursor.push(c.cursor.as_ref().map(Json));
        self.visits.push(Json(&c.visits));
        self.steps_run.push(int(c.steps_run));
        self.result.push(c.result.map(ExecutionResult::as_str));
        self.expires.push(expires);
        self.now.push(c.now);
        self.gate.push(gate.map(Json));
        self.gate_reason.push(gate.map(|g| g.reason.as_str()));
        self.gate_deadline.push(gate.and_then(|g| g.deadline));
        self.gate_event.push(gate.and_then(|g| g.event.as_deref()));
        self.gate_approval_id.push(gate.and_then(|g| g.approval_id));
        self.paused_at.push(gate.map(|g| g.paused_at));
        self.error.push(error.map(Json));
        self.close.push(close);
        self.wakes.push(gate.is_some_and(|g| g.deadline.is_some()));
        self.stop.push(c.refuse_if_pause_requested);
    }

    /// Binds the arrays, in [`Self::COLUMNS`]' order, as the query's next parameters.
    pub(super) fn bind<'q>(self, query: Batch<'q>) -> Batch<'q>
    where
        'a: 'q,
    {
        query
            .bind(self.slot)
            .bind(self.id)
            .bind(self.owner)
            .bind(self.expected)
            .bind(self.kind)
            .bind(self.status)
            .bind(self.context)
            .bind(self.cursor)
            .bind(self.visits)
            .bind(self.steps_run)
            .bind(self.result)
            .bind(self.expires)
            .bind(self.now)
            .bind(self.gate)
            .bind(self.gate_reason)
            .bind(self.gate_deadline)
            .bind(self.gate_event)
            .bind(self.gate_approval_id)
            .bind(self.paused_at)
            .bind(self.error)
            .bind(self.close)
            .bind(self.wakes)
            .bind(self.stop)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unnest_numbers_its_parameters_from_the_first() {
        assert_eq!(
            unnest(3, "t", &[("slot", "int4"), ("undo", "jsonb")]),
            "UNNEST($3::int4[], $4::jsonb[]) WITH ORDINALITY AS t(slot, undo, ord)"
        );
        let steps = StepColumns::unnest(10);
        assert!(
            steps.starts_with("UNNEST($10::int4[], $11::uuid[]"),
            "{steps}"
        );
        assert!(steps.contains("$25::jsonb[]) WITH ORDINALITY AS r(slot, id, execution_id"));
    }
}
