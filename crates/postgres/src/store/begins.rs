//! The group-commit writer of step begins: the `running` records that side-effect steps
//! write before they act, many workers' in one statement, each keeping its own
//! compare-and-set.

use sqlx::postgres::PgConnection;
use sqlx::Row;
use tollgate_store::group_commit::BeginRequest;
use tollgate_store::Result;

use crate::rows::backend;

use super::columns::{slots, unnest, StepColumns};
use super::sql::{STEP_INSERT, STEP_SELECT, STEP_UPSERT_TAIL};

/// Each begin's compare-and-set (its execution, holder and expected version, $1–$5) and
/// version bump, and its record ($6 onward) joined to its own bump by slot, so a record
/// lands only where its execution matched.
pub(super) static BEGIN_BATCH_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let begins = unnest(
        1,
        "v",
        &[
            ("slot", "int4"),
            ("id", "uuid"),
            ("owner", "text"),
            ("expected", "int8"),
            ("now", "timestamptz"),
        ],
    );
    format!(
        "WITH upd AS (UPDATE executions e SET version = e.version + 1, updated_at = v.now FROM {begins} \
            WHERE e.id = ANY($2) AND e.id = v.id AND e.status = 'running' AND e.lease_owner = v.owner AND e.version = v.expected \
            RETURNING v.slot, e.version), \
         ins AS ({STEP_INSERT} SELECT {STEP_SELECT} FROM {} \
            JOIN upd ON upd.slot = r.slot {STEP_UPSERT_TAIL} RETURNING 1) \
         SELECT slot, version, (SELECT count(*) FROM ins) AS inserted FROM upd",
        StepColumns::unnest(6)
    )
});

/// Writes a batch of step begins in one statement (one transaction, one WAL flush);
/// per begin, the execution's new version, or `None` when its compare-and-set did not
/// match (nothing written for it).
pub(crate) async fn begin_batch(
    conn: &mut PgConnection,
    begins: &[BeginRequest],
) -> Result<Vec<Option<i64>>> {
    let query = sqlx::query(&BEGIN_BATCH_SQL)
        .bind(slots(begins.len()))
        .bind(begins.iter().map(|b| b.execution_id).collect::<Vec<_>>())
        .bind(begins.iter().map(|b| b.owner.as_str()).collect::<Vec<_>>())
        .bind(
            begins
                .iter()
                .map(|b| b.expected_version)
                .collect::<Vec<_>>(),
        )
        .bind(begins.iter().map(|b| b.now).collect::<Vec<_>>());
    let found = StepColumns::of(begins.iter().map(|b| &b.record).enumerate())
        .bind(query)
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
