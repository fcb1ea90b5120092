//! [`ScheduleStore`] on SQLite: schedules and their ticks. There is one writer, so a claim is one `BEGIN
//! IMMEDIATE` transaction and needs no row locks.

use async_trait::async_trait;
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;
use tollgate_model::records::{Execution, Timestamp, Workflow};
use tollgate_model::schedule::Schedule;
use tollgate_store::{
    decode_time_id_cursor, encode_id_cursor, encode_time_id_cursor, page_from_overfetch, rules,
    ClaimedTick, Error, LeaseClaim, Page, PageRequest, Result, ScheduleFilter, ScheduleStore,
    TickView,
};
use uuid::Uuid;

use super::sql::insert_execution;
use crate::rows::{self, backend, enum_str, opt_ts, ts};
use crate::SqliteStore;

async fn upsert(conn: &mut SqliteConnection, s: &Schedule) -> Result<()> {
    sqlx::query(
        "INSERT INTO schedules (id, workflow_id, cron, timezone, enabled, catch_up, from_trigger, next_fire_at, last_fired_at, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, enabled = excluded.enabled, catch_up = excluded.catch_up, \
         next_fire_at = excluded.next_fire_at, last_fired_at = excluded.last_fired_at, updated_at = excluded.updated_at",
    )
    .bind(s.id.to_string())
    .bind(s.workflow_id.to_string())
    .bind(&s.cron)
    .bind(&s.timezone)
    .bind(i64::from(s.enabled))
    .bind(enum_str(&s.catch_up))
    .bind(i64::from(s.from_trigger))
    .bind(opt_ts(s.next_fire_at))
    .bind(opt_ts(s.last_fired_at))
    .bind(ts(s.created_at))
    .bind(ts(s.updated_at))
    .execute(conn)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Keeps the schedule mirroring `workflow`'s trigger in step with it (inside the
/// caller's transaction). `only_if_missing`: create it, never change an existing one.
pub(crate) async fn sync_trigger_schedule(
    conn: &mut SqliteConnection,
    workflow: &Workflow,
    now: Timestamp,
    only_if_missing: bool,
) -> Result<()> {
    let id = rules::trigger_schedule_id(workflow.id);
    let existing = sqlx::query("SELECT * FROM schedules WHERE id = ?")
        .bind(id.to_string())
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
            sqlx::query("DELETE FROM schedules WHERE id = ?")
                .bind(id.to_string())
                .execute(conn)
                .await
                .map_err(backend)?;
            Ok(())
        }
    }
}

async fn load_schedule(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<Schedule>> {
    sqlx::query("SELECT * FROM schedules WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(conn)
        .await
        .map_err(backend)?
        .as_ref()
        .map(rows::schedule)
        .transpose()
}

impl SqliteStore {
    /// `NotFound` or `Conflict` for a tick `owner` could not change.
    async fn tick_refusal(&self, tick_id: Uuid, owner: &str) -> Error {
        match sqlx::query("SELECT * FROM schedule_ticks WHERE id = ?")
            .bind(tick_id.to_string())
            .fetch_optional(&self.writer)
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
impl ScheduleStore for SqliteStore {
    async fn create_schedule(&self, schedule: Schedule) -> Result<Schedule> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let workflow_exists = sqlx::query("SELECT 1 FROM workflows WHERE id = ?")
            .bind(schedule.workflow_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .is_some();
        if !workflow_exists {
            return Err(Error::not_found("workflow", schedule.workflow_id));
        }
        if load_schedule(&mut tx, schedule.id).await?.is_some() {
            return Err(Error::Conflict(format!(
                "schedule {} already exists",
                schedule.id
            )));
        }
        upsert(&mut tx, &schedule).await?;
        tx.commit().await.map_err(backend)?;
        Ok(schedule)
    }

    async fn get_schedule(&self, id: Uuid) -> Result<Schedule> {
        let mut conn = self.reader.acquire().await.map_err(backend)?;
        load_schedule(&mut conn, id)
            .await?
            .ok_or_else(|| Error::not_found("schedule", id))
    }

    async fn list_schedules(
        &self,
        filter: &ScheduleFilter,
        page: &PageRequest,
    ) -> Result<Page<Schedule>> {
        let after = tollgate_store::decode_id_cursor(page.cursor.as_deref())?
            .map(|u| u.to_string())
            .unwrap_or_default();
        let rows = sqlx::query(
            "SELECT * FROM schedules WHERE (?1 IS NULL OR workflow_id = ?1) AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .bind(filter.workflow_id.map(|w| w.to_string()))
        .bind(after)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
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
            "UPDATE schedules SET cron = ?, timezone = ?, enabled = ?, catch_up = ?, next_fire_at = ?, updated_at = ? WHERE id = ? RETURNING *",
        )
        .bind(&schedule.cron)
        .bind(&schedule.timezone)
        .bind(i64::from(schedule.enabled))
        .bind(enum_str(&schedule.catch_up))
        .bind(opt_ts(schedule.next_fire_at))
        .bind(ts(schedule.updated_at))
        .bind(schedule.id.to_string())
        .fetch_optional(&self.writer)
        .await
        .map_err(backend)?
        .as_ref()
        .map(rows::schedule)
        .transpose()?
        .ok_or_else(|| Error::not_found("schedule", schedule.id))
    }

    async fn delete_schedule(&self, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM schedules WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let orphans = sqlx::query(
            "UPDATE schedule_ticks SET owner = ?1, lease_expires_at = ?2 WHERE id IN \
             (SELECT id FROM schedule_ticks WHERE status = 'pending' AND lease_expires_at <= ?3 ORDER BY lease_expires_at LIMIT ?4) RETURNING *",
        )
        .bind(&claim.owner)
        .bind(ts(claim.expires_at))
        .bind(ts(now))
        .bind(i64::from(max))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(rows::tick)
        .collect::<Result<Vec<_>>>()?;
        let mut due = sqlx::query(
            "SELECT s.* FROM schedules s JOIN workflows w ON w.id = s.workflow_id \
             WHERE s.enabled = 1 AND w.enabled = 1 AND s.next_fire_at IS NOT NULL AND s.next_fire_at <= ? \
             ORDER BY s.next_fire_at LIMIT ?",
        )
        .bind(ts(now))
        .bind(i64::from(max))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(rows::schedule)
        .collect::<Result<Vec<_>>>()?;
        let mut claimed = Vec::new();
        for schedule in &mut due {
            let times = rules::fire_schedule(schedule, now);
            sqlx::query("UPDATE schedules SET next_fire_at = ?, last_fired_at = ?, updated_at = ? WHERE id = ?")
                .bind(opt_ts(schedule.next_fire_at))
                .bind(opt_ts(schedule.last_fired_at))
                .bind(ts(schedule.updated_at))
                .bind(schedule.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            for time in times {
                let tick = rules::new_tick(schedule.id, time, claim, now);
                let inserted = sqlx::query(
                    "INSERT INTO schedule_ticks (id, schedule_id, tick_time, status, owner, lease_expires_at, claimed_at) \
                     VALUES (?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(tick.id.to_string())
                .bind(tick.schedule_id.to_string())
                .bind(ts(tick.tick_time))
                .bind(&claim.owner)
                .bind(ts(claim.expires_at))
                .bind(ts(now))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                if inserted.rows_affected() == 1 {
                    claimed.push(ClaimedTick {
                        tick,
                        schedule: schedule.clone(),
                    });
                }
            }
        }
        let mut with_schedules = Vec::with_capacity(orphans.len() + claimed.len());
        for tick in orphans {
            if let Some(schedule) = load_schedule(&mut tx, tick.schedule_id).await? {
                with_schedules.push(ClaimedTick { tick, schedule });
            }
        }
        tx.commit().await.map_err(backend)?;
        with_schedules.extend(claimed);
        Ok(with_schedules)
    }

    async fn start_tick(
        &self,
        tick_id: Uuid,
        owner: &str,
        execution: Execution,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let done = sqlx::query(
            "UPDATE schedule_ticks SET status = 'started', started_at = ?, execution_id = ?, owner = NULL, lease_expires_at = NULL \
             WHERE id = ? AND status = 'pending' AND owner = ?",
        )
        .bind(ts(now))
        .bind(execution.id.to_string())
        .bind(tick_id.to_string())
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            tx.rollback().await.map_err(backend)?;
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
            "UPDATE schedule_ticks SET status = 'failed', error = ?, started_at = ?, owner = NULL, lease_expires_at = NULL \
             WHERE id = ? AND status = 'pending' AND owner = ?",
        )
        .bind(error)
        .bind(ts(now))
        .bind(tick_id.to_string())
        .bind(owner)
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(self.tick_refusal(tick_id, owner).await);
        }
        Ok(())
    }

    async fn next_fire_at(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(s.next_fire_at) FROM schedules s JOIN workflows w ON w.id = s.workflow_id \
             WHERE s.enabled = 1 AND w.enabled = 1 AND s.next_fire_at IS NOT NULL",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(backend)?;
        Ok(next.map(rows::from_ts))
    }

    async fn list_ticks(&self, schedule_id: Uuid, page: &PageRequest) -> Result<Page<TickView>> {
        let after = decode_time_id_cursor(page.cursor.as_deref())?
            .map(|(micros, id)| (micros, id.to_string()));
        let rows = sqlx::query(
            "SELECT t.*, e.status AS outcome FROM schedule_ticks t LEFT JOIN executions e ON e.id = t.execution_id \
             WHERE t.schedule_id = ?1 AND (?2 IS NULL OR t.tick_time < ?2 OR (t.tick_time = ?2 AND t.id < ?3)) \
             ORDER BY t.tick_time DESC, t.id DESC LIMIT ?4",
        )
        .bind(schedule_id.to_string())
        .bind(after.as_ref().map(|(m, _)| *m))
        .bind(after.as_ref().map(|(_, id)| id.clone()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
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
