//! Group commit of hot-path step commits.
//!
//! Every step commit is its own durable transaction, so on its own it waits for a WAL
//! flush. Commits of different executions that arrive together are instead handed to one
//! task that folds everything queued (up to [`MAX_BATCH`]) into a single statement: each
//! commit keeps its own compare-and-set, but they share one round trip and one flush. A
//! lone commit pays one channel hop more than it would alone.

use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use tollgate_store::{Committed, Error, Result, StepCommit, Transition};

use crate::rows::{backend, to_json};
use crate::WAKEUP_CHANNEL;

/// Most commits folded into one statement.
pub(crate) const MAX_BATCH: usize = 64;

/// A commit waiting for the committer: `None` back means its compare-and-set did not
/// match (the caller finds out why).
pub(crate) struct Pending {
    pub(crate) commit: StepCommit,
    pub(crate) reply: oneshot::Sender<Result<Option<Committed>>>,
}

/// Starts the committer; it stops when every sender (every store clone) is gone.
pub(crate) fn spawn(pool: PgPool) -> mpsc::Sender<Pending> {
    let (tx, mut rx) = mpsc::channel::<Pending>(1024);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let commits: Vec<&StepCommit> = batch.iter().map(|p| &p.commit).collect();
            match commit_batch(&pool, &commits).await {
                Ok(results) => {
                    for (pending, result) in batch.into_iter().zip(results) {
                        let _ = pending.reply.send(Ok(result));
                    }
                }
                // A database error fails the whole statement: retry each commit alone so
                // the error stays with the commit that caused it.
                Err(_) if batch.len() > 1 => {
                    for pending in batch {
                        let result = commit_batch(&pool, &[&pending.commit])
                            .await
                            .map(|mut r| r.pop().flatten());
                        let _ = pending.reply.send(result);
                    }
                }
                Err(err) => {
                    for pending in batch {
                        let _ = pending
                            .reply
                            .send(Err(Error::Backend(err.to_string().into())));
                    }
                }
            }
        }
    });
    tx
}

const SQL: &str = "WITH v AS (SELECT * FROM jsonb_to_recordset($1) AS v(slot int, id uuid, owner text, expected bigint, context jsonb, \
        cursor jsonb, visits jsonb, steps_run int, result text, release boolean, expires timestamptz, now timestamptz)), \
     upd AS (UPDATE executions e SET context = v.context, cursor = v.cursor, visits = v.visits, steps_run = v.steps_run, result = v.result, \
        wake = NULL, gate = NULL, gate_reason = NULL, gate_deadline = NULL, gate_event = NULL, gate_approval_id = NULL, paused_at = NULL, \
        lease_owner = CASE WHEN v.release THEN NULL ELSE e.lease_owner END, lease_expires_at = v.expires, version = e.version + 1, updated_at = v.now \
        FROM v WHERE e.id = v.id AND e.status = 'running' AND e.lease_owner = v.owner AND e.version = v.expected \
        RETURNING v.slot, e.version, e.pause_requested, v.release), \
     ins AS (INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
        SELECT r.id, r.execution_id, r.step_id, r.step_type, r.parent_step_id, r.iteration, r.visit, r.attempt, r.status, r.input, r.output, r.warnings, r.started_at, r.completed_at, r.error \
        FROM jsonb_to_recordset($2) AS r(slot int, id uuid, execution_id uuid, step_id text, step_type text, parent_step_id text, iteration int, visit int, attempt int, \
            status text, input jsonb, output jsonb, warnings jsonb, started_at timestamptz, completed_at timestamptz, error jsonb) \
        JOIN upd ON upd.slot = r.slot \
        ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, input = EXCLUDED.input, output = EXCLUDED.output, warnings = EXCLUDED.warnings, \
            started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at, error = EXCLUDED.error RETURNING 1), \
     note AS (SELECT pg_notify($3, 'release') WHERE EXISTS (SELECT 1 FROM upd WHERE release)) \
     SELECT slot, version, pause_requested, (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM note) AS notified FROM upd";

/// Commits `Continue`/`Release` step commits without effects in one statement; returns,
/// per commit, its new state or `None` when its compare-and-set did not match. The
/// transition is exactly `rules::apply_commit`'s for those two cases.
async fn commit_batch(pool: &PgPool, commits: &[&StepCommit]) -> Result<Vec<Option<Committed>>> {
    let mut executions = Vec::with_capacity(commits.len());
    let mut records = Vec::new();
    for (slot, c) in commits.iter().enumerate() {
        let (release, expires) = match c.transition {
            Transition::Release { at } => (true, at),
            _ => (false, c.lease_expires_at),
        };
        executions.push(json!({
            "slot": slot, "id": c.execution_id, "owner": c.owner, "expected": c.expected_version,
            "context": c.context, "cursor": c.cursor, "visits": c.visits, "steps_run": c.steps_run,
            "result": c.result, "release": release, "expires": expires, "now": c.now,
        }));
        for record in &c.records {
            let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut value {
                map.insert("slot".into(), json!(slot));
            }
            records.push(value);
        }
    }
    let rows = sqlx::query(SQL)
        .bind(to_json(&executions))
        .bind(to_json(&records))
        .bind(WAKEUP_CHANNEL)
        .fetch_all(pool)
        .await
        .map_err(backend)?;
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
