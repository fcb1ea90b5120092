//! [`EventStore`] on PostgreSQL.

use async_trait::async_trait;
use serde_json::json;
use sqlx::types::Json;
use sqlx::Row;
use tollgate_model::records::{Event, ResumeTrigger, Timestamp};
use tollgate_store::{
    rules, Delivery, Error, EventInsert, EventKey, EventPurge, EventShape, EventStore, LeaseClaim,
    Result, Starting,
};
use uuid::Uuid;

use crate::rows::backend;
use crate::{rows, PgStore};

use super::sql::{audit, commit, limit, load_execution, refuse, write_execution};

#[async_trait]
impl EventStore for PgStore {
    async fn insert_event(&self, event: Event) -> Result<EventInsert> {
        self.insert_event_starting(event, Vec::new()).await
    }

    async fn insert_event_starting(
        &self,
        event: Event,
        starts: Vec<Starting>,
    ) -> Result<EventInsert> {
        self.events.submit((event, starts)).await
    }

    async fn set_event_outcome(
        &self,
        id: Uuid,
        started: Vec<Uuid>,
        resumed: Vec<Uuid>,
    ) -> Result<Event> {
        let row = sqlx::query(concat!(
            "UPDATE events SET started = $1, resumed = ARRAY(SELECT DISTINCT unnest(resumed || $2::uuid[])) WHERE id = $3 RETURNING ",
            columns!(events)
        ))
        .bind(started)
        .bind(resumed)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref()
            .map(rows::event)
            .transpose()?
            .ok_or_else(|| Error::not_found("event", id))
    }

    async fn get_event(&self, id: Uuid) -> Result<Event> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(events),
            " FROM events WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref()
            .map(rows::event)
            .transpose()?
            .ok_or_else(|| Error::not_found("event", id))
    }

    async fn deliver_event(
        &self,
        mut event: Event,
        expected_version: Option<i64>,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Delivery> {
        let target = rules::delivery_target(&event)?;
        let mut tx = self.tx().await?;
        // The execution is locked first, as by every other claim, so the lock order is
        // the same everywhere.
        let mut execution = load_execution(&mut tx, target, true).await?;
        if let Some(key) = &event.event_id {
            let first = sqlx::query(concat!(
                "SELECT ",
                columns!(events),
                " FROM events WHERE event_id = $1"
            ))
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
            if let Some(first) = first {
                let first = rows::event(&first)?;
                commit(tx).await?;
                return Ok(Delivery::Duplicate(first));
            }
        }
        if let Err(err) = rules::check_wait_claim(&execution, expected_version, &event) {
            return refuse(tx, err).await;
        }
        rules::claim_wait(&mut execution, &event, claim, now);
        write_execution(&mut tx, &execution).await?;
        if execution
            .gate
            .as_ref()
            .and_then(tollgate_model::records::Gate::superseded_approval)
            .is_some()
        {
            super::sql::close_approvals(
                &mut tx,
                target,
                tollgate_model::records::ApprovalStatus::Superseded,
                now,
            )
            .await?;
        }
        event.resumed = vec![target];
        let inserted = sqlx::query(
            "INSERT INTO events (id, event_id, event_type, payload, source, correlation_id, submitted_by, received_at, started, resumed, delivered) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.id)
        .bind(event.event_id.clone())
        .bind(event.event_type.clone())
        .bind(Json(&event.payload))
        .bind(event.source.clone())
        .bind(target)
        .bind(event.submitted_by.clone())
        .bind(event.received_at)
        .bind(&event.started)
        .bind(&event.resumed)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if inserted.rows_affected() == 0 {
            // A concurrent delivery with the same `event_id` committed first: ours is
            // rolled back (claim included) and the caller retries into the duplicate.
            let err = Error::Conflict(format!(
                "event_id `{}` is being delivered concurrently",
                event.event_id.as_deref().unwrap_or_default()
            ));
            return refuse(tx, err).await;
        }
        audit(
            &mut tx,
            target,
            ResumeTrigger::Event,
            event.submitted_by.as_deref(),
            json!({"event_id": event.id, "event_type": event.event_type}),
            now,
        )
        .await?;
        commit(tx).await?;
        Ok(Delivery::Claimed {
            event,
            execution: Box::new(execution),
        })
    }

    async fn events_for_wait(
        &self,
        event_type: &str,
        since: Timestamp,
        execution_id: Uuid,
        after: Option<(Timestamp, Uuid)>,
        n: u32,
    ) -> Result<Vec<Event>> {
        // Keyset paging on (received_at, id), through the (event_type, received_at, id)
        // index: a page costs the same however many events of the type came before it.
        let rows = sqlx::query(
            concat!("SELECT ", columns!(events), " FROM events WHERE event_type = $1 AND received_at >= $2 AND (correlation_id IS NULL OR correlation_id = $3) \
             AND ($4::timestamptz IS NULL OR (received_at, id) > ($4, $5)) ORDER BY received_at, id LIMIT $6"),
        )
        .bind(event_type)
        .bind(since)
        .bind(execution_id)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::event).collect()
    }

    async fn undelivered_events(&self, received_before: Timestamp, n: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            concat!("SELECT ", columns!(events), " FROM events WHERE NOT delivered AND received_at <= $1 ORDER BY received_at, id LIMIT $2"),
        )
        .bind(received_before)
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::event).collect()
    }

    async fn mark_events_delivered(&self, ids: &[Uuid]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE events SET delivered = true WHERE NOT delivered AND id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn event_shapes(&self, event_type: Option<&str>) -> Result<Vec<EventShape>> {
        let rows = sqlx::query(
            "SELECT event_type, shape, fields, keyed_at, keyed_id FROM event_shapes \
             WHERE $1::text IS NULL OR event_type = $1 ORDER BY event_type, shape",
        )
        .bind(event_type)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let Json(fields): Json<Vec<String>> = row.try_get("fields").map_err(backend)?;
                let keyed_at: Option<Timestamp> = row.try_get("keyed_at").map_err(backend)?;
                let keyed_id: Option<Uuid> = row.try_get("keyed_id").map_err(backend)?;
                Ok(EventShape {
                    event_type: row.try_get("event_type").map_err(backend)?,
                    shape: row.try_get("shape").map_err(backend)?,
                    fields,
                    keyed_through: keyed_at.zip(keyed_id),
                })
            })
            .collect()
    }

    async fn add_event_shape(
        &self,
        event_type: &str,
        shape: &str,
        fields: &[String],
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO event_shapes (event_type, shape, fields) VALUES ($1, $2, $3) \
             ON CONFLICT (event_type, shape) DO NOTHING",
        )
        .bind(event_type)
        .bind(shape)
        .bind(Json(fields))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn events_to_key(
        &self,
        event_type: &str,
        after: Option<(Timestamp, Uuid)>,
        up_to: Timestamp,
        n: u32,
    ) -> Result<Vec<Event>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(events),
            " FROM events WHERE event_type = $1 AND received_at <= $2 \
             AND ($3::timestamptz IS NULL OR (received_at, id) > ($3, $4)) ORDER BY received_at, id LIMIT $5"
        ))
        .bind(event_type)
        .bind(up_to)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::event).collect()
    }

    async fn add_event_keys(
        &self,
        event_type: &str,
        shape: &str,
        keys: &[EventKey],
        from: Option<(Timestamp, Uuid)>,
        through: (Timestamp, Uuid),
    ) -> Result<()> {
        // One statement: the cursor moves only from `from`, and the keys land only if
        // it did (an event deleted meanwhile has nothing to key).
        let hashes: Vec<&str> = keys.iter().map(|k| k.hash.as_str()).collect();
        let times: Vec<Timestamp> = keys.iter().map(|k| k.received_at).collect();
        let ids: Vec<Uuid> = keys.iter().map(|k| k.event_id).collect();
        let row = sqlx::query(
            "WITH moved AS (UPDATE event_shapes SET keyed_at = $3, keyed_id = $4 \
                 WHERE event_type = $1 AND shape = $2 \
                   AND keyed_at IS NOT DISTINCT FROM $5 AND keyed_id IS NOT DISTINCT FROM $6 RETURNING 1), \
             added AS (INSERT INTO event_keys (event_type, shape, hash, received_at, event_id) \
                 SELECT $1, $2, k.hash, k.received_at, k.event_id \
                 FROM unnest($7::text[], $8::timestamptz[], $9::uuid[]) AS k(hash, received_at, event_id) \
                 WHERE EXISTS (SELECT 1 FROM moved) AND EXISTS (SELECT 1 FROM events e WHERE e.id = k.event_id) \
                 ON CONFLICT DO NOTHING) \
             SELECT EXISTS (SELECT 1 FROM moved) AS moved, \
                    EXISTS (SELECT 1 FROM event_shapes WHERE event_type = $1 AND shape = $2) AS known",
        )
        .bind(event_type)
        .bind(shape)
        .bind(through.0)
        .bind(through.1)
        .bind(from.map(|f| f.0))
        .bind(from.map(|f| f.1))
        .bind(hashes)
        .bind(times)
        .bind(ids)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        let moved: bool = row.try_get("moved").map_err(backend)?;
        let known: bool = row.try_get("known").map_err(backend)?;
        match (moved, known) {
            (true, _) => Ok(()),
            (false, true) => Err(Error::Conflict(format!(
                "the events of `{event_type}` were keyed for shape {shape} meanwhile"
            ))),
            (false, false) => Err(Error::not_found(
                "event shape",
                format!("{event_type}/{shape}"),
            )),
        }
    }

    async fn keyed_events_for_wait(
        &self,
        event_type: &str,
        shape: &str,
        hash: &str,
        since: Timestamp,
        execution_id: Uuid,
        after: Option<(Timestamp, Uuid)>,
        through: (Timestamp, Uuid),
        n: u32,
    ) -> Result<Vec<Event>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(events, "e."),
            " FROM event_keys k JOIN events e ON e.id = k.event_id \
             WHERE k.event_type = $1 AND k.shape = $2 AND k.hash = $3 AND k.received_at >= $4 \
               AND ($5::timestamptz IS NULL OR (k.received_at, k.event_id) > ($5, $6)) \
               AND (k.received_at, k.event_id) <= ($7, $8) \
               AND (e.correlation_id IS NULL OR e.correlation_id = $9) \
             ORDER BY k.received_at, k.event_id LIMIT $10"
        ))
        .bind(event_type)
        .bind(shape)
        .bind(hash)
        .bind(since)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(through.0)
        .bind(through.1)
        .bind(execution_id)
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::event).collect()
    }

    async fn purge_events(&self, purge: &EventPurge, limit: u32) -> Result<u64> {
        if limit == 0 {
            return Ok(0);
        }
        // One range of the partial index of untaken events, up to the latest cutoff;
        // each type's own cutoff filters within it. Rows another purge holds are skipped.
        let latest = purge
            .per_type
            .iter()
            .map(|(_, at)| *at)
            .fold(purge.before, Timestamp::max);
        let (types, cutoffs): (Vec<String>, Vec<Timestamp>) =
            purge.per_type.iter().cloned().unzip();
        let done = sqlx::query(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e \
               LEFT JOIN unnest($3::text[], $4::timestamptz[]) AS t(event_type, before) ON t.event_type = e.event_type \
             WHERE cardinality(e.started) = 0 AND cardinality(e.resumed) = 0 AND e.delivered \
               AND e.received_at < $1 AND e.received_at < COALESCE(t.before, $2) \
             ORDER BY e.received_at, e.id LIMIT $5 FOR UPDATE OF e SKIP LOCKED)",
        )
        .bind(latest)
        .bind(purge.before)
        .bind(types)
        .bind(cutoffs)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

/// Adds `$1` (an execution) to the `resumed` list of the event `$2` it consumed, once:
/// how retention knows the event was taken.
pub(super) const NOTE_CONSUMED: &str = "UPDATE events SET resumed = array_append(resumed, $1) \
    WHERE id = $2 AND NOT ($1 = ANY(resumed))";
