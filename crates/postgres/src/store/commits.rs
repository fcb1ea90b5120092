//! The group-commit writer of step commits: many workers' commits in one statement, each
//! keeping its own compare-and-set.

use sqlx::postgres::PgConnection;
use sqlx::Row;
use tollgate_model::records::Timestamp;
use tollgate_store::{rules, Committed, Error, ExecutionStore, Result, StepCommit, Transition};
use uuid::Uuid;

use crate::rows::{backend, to_json};
use crate::{PgStore, WAKEUP_CHANNEL};

use super::json_rows::{CommitRow, SlotUndo, Slotted};
use super::sql::{approvals_from_recordset, limit};

impl PgStore {
    /// Every step commit without effects or consumed events — continue, release for a
    /// retry, enter a gate, end — goes through the group committer: one statement per
    /// batch of concurrent commits ([`commit_batch`]), each keeping its own
    /// compare-and-set.
    pub(super) async fn commit_in_one_statement(&self, c: StepCommit) -> Result<Committed> {
        let (execution_id, owner, expected, stop) = (
            c.execution_id,
            c.owner.clone(),
            c.expected_version,
            c.refuse_if_pause_requested,
        );
        match self.committer.submit(c).await? {
            Some(committed) => Ok(committed),
            // Nothing changed: say precisely why.
            None => {
                let execution = self.get_execution(execution_id).await?;
                Err(rules::commit_refusal(&execution, &owner, expected, stop))
            }
        }
    }
}

/// One batch of effect-free step commits. `v` holds each commit's new row state as
/// computed by [`CommitRow`](super::json_rows::CommitRow) (what `rules::apply_commit`
/// does for its transition); the step rows, the approval request of a gate, the closing
/// of an ending execution's open approvals and the wake-up are joined to the update of
/// their own execution, so they only happen where its compare-and-set matched (which,
/// for a commit flagged `refuse_if_pause_requested`, also needs no pause request
/// pending).
pub(super) static GROUP_COMMIT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("WITH v AS (SELECT * FROM jsonb_to_recordset($1) AS v(slot int, id uuid, owner text, expected bigint, kind text, status text, \
        context jsonb, cursor jsonb, visits jsonb, steps_run int, result text, expires timestamptz, now timestamptz, gate jsonb, gate_reason text, \
        gate_deadline timestamptz, gate_event text, gate_approval_id uuid, paused_at timestamptz, error jsonb, close text, wakes boolean, stop boolean)), \
     upd AS (UPDATE executions e SET status = v.status, context = v.context, cursor = v.cursor, visits = v.visits, steps_run = v.steps_run, result = v.result, \
        wake = NULL, gate = v.gate, gate_reason = v.gate_reason, gate_deadline = v.gate_deadline, gate_event = v.gate_event, \
        gate_approval_id = v.gate_approval_id, paused_at = v.paused_at, \
        lease_owner = CASE WHEN v.kind = 'continue' THEN e.lease_owner END, lease_expires_at = v.expires, \
        pause_requested = CASE WHEN v.kind IN ('gate', 'finish') THEN false ELSE e.pause_requested END, \
        error = CASE WHEN v.kind = 'finish' THEN v.error ELSE e.error END, \
        completed_at = CASE WHEN v.kind = 'finish' THEN v.now ELSE e.completed_at END, \
        version = e.version + 1, updated_at = v.now \
        FROM v WHERE e.id = ANY($5) AND e.id = v.id AND e.status = 'running' AND e.lease_owner = v.owner AND e.version = v.expected \
        AND NOT (v.stop AND e.pause_requested) \
        RETURNING v.slot, e.id, e.version, e.pause_requested, v.kind, v.status, v.close, v.wakes, v.now), \
     ins AS (INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
        SELECT r.id, r.execution_id, r.step_id, r.step_type, r.parent_step_id, r.iteration, r.visit, r.attempt, r.status, \
            COALESCE(r.input, 'null'::jsonb), COALESCE(r.output, 'null'::jsonb), COALESCE(r.warnings, '[]'::jsonb), r.started_at, r.completed_at, r.error \
        FROM jsonb_to_recordset($2) AS r(slot int, id uuid, execution_id uuid, step_id text, step_type text, parent_step_id text, iteration int, visit int, attempt int, \
            status text, input jsonb, output jsonb, warnings jsonb, started_at timestamptz, completed_at timestamptz, error jsonb) \
        JOIN upd ON upd.slot = r.slot \
        ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, input = EXCLUDED.input, output = EXCLUDED.output, warnings = EXCLUDED.warnings, \
            started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at, error = EXCLUDED.error RETURNING 1), \
     appr AS ({} JOIN upd ON upd.slot = a.slot RETURNING 1), \
     trail AS (INSERT INTO context_trail (execution_id, version, undo) SELECT upd.id, upd.version, t.undo \
        FROM jsonb_to_recordset($6) AS t(slot int, undo jsonb) JOIN upd ON upd.slot = t.slot AND upd.status <> 'completed' RETURNING 1), \
     untrail AS (DELETE FROM context_trail c USING upd WHERE upd.status = 'completed' AND c.execution_id = upd.id RETURNING 1), \
     closed AS (UPDATE approvals a SET status = upd.close, decided_at = upd.now FROM upd \
        WHERE upd.close IS NOT NULL AND a.execution_id = upd.id AND a.status = 'pending' RETURNING 1), \
     note AS (SELECT pg_notify($4, 'commit') WHERE EXISTS (SELECT 1 FROM upd WHERE kind = 'release' OR wakes)) \
     SELECT slot, version, pause_requested, (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM appr) AS requested, \
        (SELECT count(*) FROM closed) AS closed, (SELECT count(*) FROM note) AS notified FROM upd", approvals_from_recordset(3))
});

/// Commits step commits without effects or consumed events (any transition) in one
/// statement; returns, per commit, its new state or `None` when its compare-and-set did
/// not match. The transitions are exactly `rules::apply_commit`'s.
pub(crate) async fn commit_batch(
    conn: &mut PgConnection,
    commits: &[StepCommit],
) -> Result<Vec<Option<Committed>>> {
    let mut executions = Vec::with_capacity(commits.len());
    let mut records = Vec::new();
    let mut approvals = Vec::new();
    let mut trails = Vec::new();
    for (slot, c) in commits.iter().enumerate() {
        executions.push(CommitRow::of(slot, c));
        if !c.undo.is_empty() {
            trails.push(SlotUndo {
                slot,
                undo: &c.undo,
            });
        }
        records.extend(c.records.iter().map(|row| Slotted { slot, row }));
        if let Transition::Gate {
            approval: Some(approval),
            ..
        } = &c.transition
        {
            approvals.push(Slotted {
                slot,
                row: &**approval,
            });
        }
    }
    let rows = sqlx::query(&GROUP_COMMIT_SQL)
        .bind(to_json(&executions))
        .bind(to_json(&records))
        .bind(to_json(&approvals))
        .bind(WAKEUP_CHANNEL)
        .bind(commits.iter().map(|c| c.execution_id).collect::<Vec<_>>())
        .bind(to_json(&trails))
        .fetch_all(&mut *conn)
        .await
        .map_err(|err| match (&err, commits) {
            // Alone (the committer retries a failed batch commit by commit), a
            // duplicate approval id is this commit's conflict.
            (sqlx::Error::Database(db), [c]) if db.is_unique_violation() => match &c.transition {
                Transition::Gate {
                    approval: Some(a), ..
                } => Error::Conflict(format!("approval {} already exists", a.id)),
                _ => backend(err),
            },
            _ => backend(err),
        })?;
    let mut results = vec![None; commits.len()];
    for row in rows {
        let slot: i32 = row.try_get("slot").map_err(backend)?;
        let committed = Committed {
            version: row.try_get("version").map_err(backend)?,
            pause_requested: row.try_get("pause_requested").map_err(backend)?,
        };
        if let Some(entry) = usize::try_from(slot).ok().and_then(|s| results.get_mut(s)) {
            *entry = Some(committed);
        }
    }
    Ok(results)
}

/// Ids picked by a `SELECT id … FOR UPDATE SKIP LOCKED` inside the transaction.
pub(super) async fn locked_ids(
    conn: &mut PgConnection,
    sql: &str,
    now: Timestamp,
    n: u32,
) -> Result<Vec<Uuid>> {
    let rows = sqlx::query(sql)
        .bind(now)
        .bind(limit(n))
        .fetch_all(conn)
        .await
        .map_err(backend)?;
    rows.iter()
        .map(|r| r.try_get("id").map_err(backend))
        .collect()
}
