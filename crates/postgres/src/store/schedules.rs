//! [`ScheduleStore`] on PostgreSQL: schedules and their ticks.

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use sqlx::Row;
use tollgate_model::records::{Execution, Timestamp, Workflow};
use tollgate_model::schedule::{Schedule, TickStatus};
use tollgate_store::{
    decode_time_id_cursor, encode_id_cursor, encode_time_id_cursor, page_from_overfetch, rules,
    ClaimedTick, Error, LeaseClaim, Page, PageRequest, Result, ScheduleFilter, ScheduleStore,
    TickView,
};
use uuid::Uuid;

use super::sql::{insert_execution, limit};
use crate::rows::{self, backend, enum_str};
use crate::PgStore;

const UPSERT_SCHEDULE: &str = "INSERT INTO schedules (id, workflow_id, cron, timezone, enabled, catch_up, from_trigger, next_fire_at, last_fired_at, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
    ON CONFLICT (id) DO UPDATE SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, enabled = EXCLUDED.enabled, catch_up = EXCLUDED.catch_up, \
    next_fire_at = EXCLUDED.next_fire_at, last_fired_at = EXCLUDED.last_fired_at, updated_at = EXCLUDED.updated_at";

async fn upsert(conn: &mut PgConnection, s: &Schedule) -> Result<()> {
    sqlx::query(UPSERT_SCHEDULE)
        .bind(s.id)
        .bind(s.workflow_id)
        .bind(&s.cron)
        .bind(&s.timezone)
        .bind(s.enabled)
        .bind(enum_str(&s.catch_up))
        .bind(s.from_trigger)
        .bind(s.next_fire_at)
        .bind(s.last_fired_at)
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Keeps the schedule mirroring `workflow`'s trigger in step with it (inside the
/// caller's transaction). `only_if_missing`: create it, never change an existing one.
pub(crate) async fn sync_trigger_schedule(
    conn: &mut PgConnection,
    workflow: &Workflow,
    now: Timestamp,
    only_if_missing: bool,
) -> Result<()> {
    let id = rules::trigger_schedule_id(workflow.id);
    let existing = sqlx::query(concat!(
        "SELECT ",
        columns!(schedules),
        " FROM schedules WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?
    .as_ref()
    .map(rows::schedule)
    .transpose()?;
    if only_if_missing && existing.is_some() {
        return Ok(());
    }
    match rules::trigger_schedule(workflow, existing.as_ref(), now) {
        Some(schedule) => upsert(conn, &schedule).await,
        None => {
            sqlx::query("DELETE FROM schedules WHERE id = $1")
                .bind(id)
                .execute(conn)
                .await
                .map_err(backend)?;
            Ok(())
        }
    }
}

impl PgStore {
    /// `NotFound` or `Conflict` for a tick `owner` could not change.
    async fn tick_refusal(&self, tick_id: Uuid, owner: &str) -> Error {
        match sqlx::query(concat!(
            "SELECT ",
            columns!(schedule_ticks),
            " FROM schedule_ticks WHERE id = $1"
        ))
        .bind(tick_id)
        .fetch_optional(&self.pool)
        .await
        {
            Ok(Some(row)) => match rows::tick(&row) {
                Ok(tick) => rules::check_tick_owner(&tick, owner)
                    .err()
                    .unwrap_or_else(|| {
                        Error::Conflict(format!("tick {tick_id} changed meanwhile"))
                    }),
                Err(err) => err,
            },
            Ok(None) => Error::not_found("tick", tick_id),
            Err(err) => backend(err),
        }
    }
}

#[async_trait]
impl ScheduleStore for PgStore {
    async fn create_schedule(&self, schedule: Schedule) -> Result<Schedule> {
        let result = sqlx::query("INSERT INTO schedules (id, workflow_id, cron, timezone, enabled, catch_up, from_trigger, next_fire_at, last_fired_at, created_at, updated_at) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
            .bind(schedule.id)
            .bind(schedule.workflow_id)
            .bind(&schedule.cron)
            .bind(&schedule.timezone)
            .bind(schedule.enabled)
            .bind(enum_str(&schedule.catch_up))
            .bind(schedule.from_trigger)
            .bind(schedule.next_fire_at)
            .bind(schedule.last_fired_at)
            .bind(schedule.created_at)
            .bind(schedule.updated_at)
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(schedule),
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                Err(Error::not_found("workflow", schedule.workflow_id))
            }
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(Error::Conflict(
                format!("schedule {} already exists", schedule.id),
            )),
            Err(err) => Err(backend(err)),
        }
    }

    async fn get_schedule(&self, id: Uuid) -> Result<Schedule> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(schedules),
            " FROM schedules WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(rows::schedule)
        .transpose()?
        .ok_or_else(|| Error::not_found("schedule", id))
    }

    async fn list_schedules(
        &self,
        filter: &ScheduleFilter,
        page: &PageRequest,
    ) -> Result<Page<Schedule>> {
        let after = tollgate_store::decode_id_cursor(page.cursor.as_deref())?;
        let rows = sqlx::query(
            concat!("SELECT ", columns!(schedules), " FROM schedules WHERE ($1::uuid IS NULL OR workflow_id = $1) AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"),
        )
        .bind(filter.workflow_id)
        .bind(after)
        .bind(limit(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::schedule)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |s| {
            encode_id_cursor(s.id)
        }))
    }

    async fn update_schedule(&self, schedule: Schedule) -> Result<Schedule> {
        sqlx::query(
            concat!("UPDATE schedules SET cron = $1, timezone = $2, enabled = $3, catch_up = $4, next_fire_at = $5, updated_at = $6 WHERE id = $7 RETURNING ", columns!(schedules)),
        )
        .bind(&schedule.cron)
        .bind(&schedule.timezone)
        .bind(schedule.enabled)
        .bind(enum_str(&schedule.catch_up))
        .bind(schedule.next_fire_at)
        .bind(schedule.updated_at)
        .bind(schedule.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(rows::schedule)
        .transpose()?
        .ok_or_else(|| Error::not_found("schedule", schedule.id))
    }

    async fn delete_schedule(&self, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM schedules WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("schedule", id));
        }
        Ok(())
    }

    async fn claim_ticks(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        max: u32,
    ) -> Result<Vec<ClaimedTick>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Ticks whose claimer died before starting them.
        let orphans = sqlx::query(concat!(
            "UPDATE schedule_ticks SET owner = $1, lease_expires_at = $2 WHERE id IN \
             (SELECT id FROM schedule_ticks WHERE status = 'pending' AND lease_expires_at <= $3 \
              ORDER BY lease_expires_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING ",
            columns!(schedule_ticks)
        ))
        .bind(&claim.owner)
        .bind(claim.expires_at)
        .bind(now)
        .bind(limit(max))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(rows::tick)
        .collect::<Result<Vec<_>>>()?;
        // Due schedules of enabled workflows; others' claims are skipped, not waited on.
        let mut due = sqlx::query(concat!(
            "SELECT ",
            columns!(schedules, "s."),
            " FROM schedules s JOIN workflows w ON w.id = s.workflow_id \
             WHERE s.enabled AND w.enabled AND s.next_fire_at <= $1 \
             ORDER BY s.next_fire_at LIMIT $2 FOR UPDATE OF s SKIP LOCKED"
        ))
        .bind(now)
        .bind(limit(max))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(rows::schedule)
        .collect::<Result<Vec<_>>>()?;
        let mut fresh = Vec::new();
        for schedule in &mut due {
            let times = rules::fire_schedule(schedule, now);
            sqlx::query("UPDATE schedules SET next_fire_at = $1, last_fired_at = $2, updated_at = $3 WHERE id = $4")
                .bind(schedule.next_fire_at)
                .bind(schedule.last_fired_at)
                .bind(schedule.updated_at)
                .bind(schedule.id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            for time in times {
                fresh.push(rules::new_tick(schedule.id, time, claim, now));
            }
        }
        let mut inserted = Vec::new();
        if !fresh.is_empty() {
            let rows = sqlx::query(
                concat!("INSERT INTO schedule_ticks (id, schedule_id, tick_time, status, owner, lease_expires_at, claimed_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[]) \
                 ON CONFLICT DO NOTHING RETURNING ", columns!(schedule_ticks)),
            )
            .bind(fresh.iter().map(|t| t.id).collect::<Vec<_>>())
            .bind(fresh.iter().map(|t| t.schedule_id).collect::<Vec<_>>())
            .bind(fresh.iter().map(|t| t.tick_time).collect::<Vec<_>>())
            .bind(fresh.iter().map(|_| TickStatus::Pending.as_str()).collect::<Vec<_>>())
            .bind(fresh.iter().map(|t| t.owner.clone()).collect::<Vec<_>>())
            .bind(fresh.iter().map(|t| t.lease_expires_at).collect::<Vec<_>>())
            .bind(fresh.iter().map(|t| t.claimed_at).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
            inserted = rows.iter().map(rows::tick).collect::<Result<Vec<_>>>()?;
        }
        // Schedules of the orphaned ticks.
        let wanted: Vec<Uuid> = orphans.iter().map(|t| t.schedule_id).collect();
        let mut known = due;
        if !wanted.is_empty() {
            let more = sqlx::query(concat!(
                "SELECT ",
                columns!(schedules),
                " FROM schedules WHERE id = ANY($1)"
            ))
            .bind(&wanted)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
            for row in &more {
                known.push(rows::schedule(row)?);
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(orphans
            .into_iter()
            .chain(inserted)
            .filter_map(|tick| {
                known
                    .iter()
                    .find(|s| s.id == tick.schedule_id)
                    .cloned()
                    .map(|schedule| ClaimedTick { tick, schedule })
            })
            .collect())
    }

    async fn start_tick(
        &self,
        tick_id: Uuid,
        owner: &str,
        execution: Execution,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done = sqlx::query(
            "UPDATE schedule_ticks SET status = 'started', started_at = $1, execution_id = $2, owner = NULL, lease_expires_at = NULL \
             WHERE id = $3 AND status = 'pending' AND owner = $4",
        )
        .bind(now)
        .bind(execution.id)
        .bind(tick_id)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            drop(tx);
            return Err(self.tick_refusal(tick_id, owner).await);
        }
        insert_execution(&mut tx, &execution).await?;
        tx.commit().await.map_err(backend)?;
        Ok(execution)
    }

    async fn fail_tick(
        &self,
        tick_id: Uuid,
        owner: &str,
        error: &str,
        now: Timestamp,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE schedule_ticks SET status = 'failed', error = $1, started_at = $2, owner = NULL, lease_expires_at = NULL \
             WHERE id = $3 AND status = 'pending' AND owner = $4",
        )
        .bind(error)
        .bind(now)
        .bind(tick_id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(self.tick_refusal(tick_id, owner).await);
        }
        Ok(())
    }

    async fn next_fire_at(&self) -> Result<Option<Timestamp>> {
        sqlx::query_scalar(
            "SELECT MIN(s.next_fire_at) FROM schedules s JOIN workflows w ON w.id = s.workflow_id \
             WHERE s.enabled AND w.enabled AND s.next_fire_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)
    }

    async fn list_ticks(&self, schedule_id: Uuid, page: &PageRequest) -> Result<Page<TickView>> {
        let after = decode_time_id_cursor(page.cursor.as_deref())?
            .map(|(micros, id)| {
                chrono::DateTime::from_timestamp_micros(micros)
                    .map(|at| (at, id))
                    .ok_or_else(|| Error::Invalid("a cursor with an impossible time".into()))
            })
            .transpose()?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(schedule_ticks, "t."),
            ", e.status AS outcome FROM schedule_ticks t LEFT JOIN executions e ON e.id = t.execution_id \
             WHERE t.schedule_id = $1 AND ($2::timestamptz IS NULL OR (t.tick_time, t.id) < ($2, $3)) \
             ORDER BY t.tick_time DESC, t.id DESC LIMIT $4"
        ))
        .bind(schedule_id)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let items = rows
            .iter()
            .map(|row| {
                let outcome: Option<String> = row.try_get("outcome").map_err(backend)?;
                Ok(TickView {
                    tick: rows::tick(row)?,
                    outcome: outcome.and_then(|s| s.parse().ok()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |v| {
            encode_time_id_cursor(v.tick.tick_time, v.tick.id)
        }))
    }
}
