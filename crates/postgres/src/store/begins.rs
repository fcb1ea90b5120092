//! The group-commit writer of step begins: the `running` records that side-effect steps
//! write before they act, many workers' in one statement, each keeping its own
//! compare-and-set.

use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::Row;
use tollgate_model::records::{StepRecord, Timestamp};
use tollgate_store::group_commit::BeginRequest;
use tollgate_store::Result;
use uuid::Uuid;

use crate::rows::{backend, to_json};

use super::json_rows::Slotted;
use super::sql::{STEP_SELECT, STEP_UPSERT_TAIL};

/// One begin's compare-and-set: the execution, its holder and the version it expects.
#[derive(Serialize)]
struct BeginRow<'a> {
    slot: usize,
    id: Uuid,
    owner: &'a str,
    expected: i64,
    now: Timestamp,
}

/// Each begin's version bump under its compare-and-set, and its record joined to its own
/// bump (by slot), so a record lands only where its execution matched.
pub(super) static BEGIN_BATCH_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH v AS (SELECT * FROM jsonb_to_recordset($2) AS v(slot int, id uuid, owner text, expected bigint, now timestamptz)), \
         upd AS (UPDATE executions e SET version = e.version + 1, updated_at = v.now FROM v \
            WHERE e.id = ANY($3) AND e.id = v.id AND e.status = 'running' AND e.lease_owner = v.owner AND e.version = v.expected \
            RETURNING v.slot, e.version), \
         ins AS (INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
            SELECT {STEP_SELECT} FROM jsonb_to_recordset($1) AS r(slot int, id uuid, execution_id uuid, step_id text, step_type text, parent_step_id text, \
                iteration int, visit int, attempt int, status text, input jsonb, output jsonb, warnings jsonb, started_at timestamptz, \
                completed_at timestamptz, error jsonb) \
            JOIN upd ON upd.slot = r.slot {STEP_UPSERT_TAIL} RETURNING 1) \
         SELECT slot, version, (SELECT count(*) FROM ins) AS inserted FROM upd"
    )
});

/// Writes a batch of step begins in one statement (one transaction, one WAL flush);
/// per begin, the execution's new version, or `None` when its compare-and-set did not
/// match (nothing written for it).
pub(crate) async fn begin_batch(
    conn: &mut PgConnection,
    begins: &[BeginRequest],
) -> Result<Vec<Option<i64>>> {
    let rows: Vec<BeginRow> = begins
        .iter()
        .enumerate()
        .map(|(slot, b)| BeginRow {
            slot,
            id: b.execution_id,
            owner: &b.owner,
            expected: b.expected_version,
            now: b.now,
        })
        .collect();
    let records: Vec<Slotted<StepRecord>> = begins
        .iter()
        .enumerate()
        .map(|(slot, b)| Slotted {
            slot,
            row: &b.record,
        })
        .collect();
    let found = sqlx::query(&BEGIN_BATCH_SQL)
        .bind(to_json(&records))
        .bind(to_json(&rows))
        .bind(begins.iter().map(|b| b.execution_id).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    let mut versions = vec![None; begins.len()];
    for row in found {
        let slot: i32 = row.try_get("slot").map_err(backend)?;
        let version: i64 = row.try_get("version").map_err(backend)?;
        if let Some(entry) = usize::try_from(slot).ok().and_then(|s| versions.get_mut(s)) {
            *entry = Some(version);
        }
    }
    Ok(versions)
}
