//! [`ExecutionStore`] on PostgreSQL.

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::postgres::Postgres;
use sqlx::types::Json;
use sqlx::QueryBuilder;
use sqlx::Row;
use tollgate_model::records::{
    ApprovalStatus, Event, Execution, Migration, ResumeTrigger, Retry, StepRecord, Timestamp, Wake,
};
use tollgate_model::undo::ContextUndo;
use tollgate_model::ExecutionStatus;
use tollgate_store::{
    decode_cursor, encode_cursor, encode_id_cursor, page_from_overfetch, rules, Committed, Error,
    ExecutionFilter, ExecutionStore, LeaseClaim, Overdue, Page, PageRequest, Purge, Purged,
    Quarantined, Result, StepCommit, Transition, WaitKey, WaitShape,
};
use uuid::Uuid;

use crate::rows::backend;
use crate::{rows, PgStore, WAKEUP_CHANNEL};

use super::commits::locked_ids;
use super::intake::{WaitingAnswer, WaitingRead, WaitingScan};
use super::sql::{
    apply_effect, audit, close_approvals, commit, format_of, id_after, insert_approval,
    insert_execution, limit, load_execution, notify_workers, quarantine, readable, refuse,
    status_counts, upsert_steps, write_execution, write_trail,
};

#[async_trait]
impl ExecutionStore for PgStore {
    async fn create_execution(&self, execution: Execution) -> Result<Execution> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        insert_execution(&mut conn, &execution).await?;
        Ok(execution)
    }

    async fn get_execution(&self, id: Uuid) -> Result<Execution> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        load_execution(&mut conn, id, false).await
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: &PageRequest,
    ) -> Result<Page<Execution>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Postgres>::new(format!(
            concat!(
                "SELECT ",
                columns!(executions),
                ", {} FROM executions WHERE TRUE"
            ),
            format_of("executions")
        ));
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(workflow) = filter.workflow_id {
            q.push(" AND workflow_id = ").push_bind(workflow);
        }
        if let Some(key) = &filter.workflow_key {
            q.push(" AND workflow_key = ").push_bind(key.clone());
        }
        if let Some(reason) = filter.paused_reason {
            q.push(" AND status IN ('paused', 'waiting') AND gate_reason = ")
                .push_bind(reason.as_str());
        }
        if let Some(role) = &filter.approver_role {
            q.push(" AND status IN ('paused', 'waiting') AND gate_approval_id IN (SELECT id FROM approvals WHERE status = 'pending' AND ")
                .push_bind(role.clone())
                .push(" = ANY(approver_roles))");
        }
        if let Some(after) = after {
            q.push(" AND id < ").push_bind(after);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::execution)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |e| {
            encode_id_cursor(e.id)
        }))
    }

    async fn count_by_status(&self) -> Result<Vec<(ExecutionStatus, u64)>> {
        status_counts(
            &self.pool,
            "SELECT status, COUNT(*) FROM executions GROUP BY status",
        )
        .await
    }

    async fn count_in_flight(&self) -> Result<Vec<(ExecutionStatus, u64)>> {
        // A range of `executions_status` per status: the executions in flight only.
        status_counts(
            &self.pool,
            "SELECT status, COUNT(*) FROM executions \
             WHERE status IN ('running', 'paused', 'waiting') GROUP BY status",
        )
        .await
    }

    async fn overdue_gates(&self, now: Timestamp) -> Result<Overdue> {
        // The due-gates partial index (`executions_gate_due`) answers this.
        let (count, oldest): (i64, Option<Timestamp>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(gate_deadline) FROM executions \
             WHERE status IN ('paused', 'waiting') AND gate_deadline IS NOT NULL AND gate_deadline <= $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(Overdue {
            count: u64::try_from(count).unwrap_or(0),
            oldest_deadline: oldest,
        })
    }

    async fn list_gated(&self, page: &PageRequest) -> Result<Page<Execution>> {
        let after = page
            .cursor
            .as_deref()
            .map(|c| {
                let parts = decode_cursor(c, 2)?;
                let bad = || Error::Invalid(format!("`{c}` is not a cursor returned by this list"));
                let micros: i64 = parts[0].parse().map_err(|_| bad())?;
                let at = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
                let id = Uuid::parse_str(&parts[1]).map_err(|_| bad())?;
                Ok::<_, Error>((at, id))
            })
            .transpose()?;
        let mut q = QueryBuilder::<Postgres>::new(format!(
            concat!(
                "SELECT ",
                columns!(executions),
                ", {} FROM executions WHERE status IN ('paused', 'waiting')"
            ),
            format_of("executions")
        ));
        if let Some((at, id)) = after {
            q.push(" AND (paused_at, id) > (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY paused_at, id LIMIT ")
            .push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::execution)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |e| {
            let at = e
                .gate
                .as_ref()
                .map_or(0, |g| g.paused_at.timestamp_micros());
            encode_cursor(&[&at.to_string(), &e.id.to_string()])
        }))
    }

    async fn context_trail(&self, execution_id: Uuid) -> Result<Vec<ContextUndo>> {
        let exists = sqlx::query("SELECT 1 FROM executions WHERE id = $1")
            .bind(execution_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(Error::not_found("execution", execution_id));
        }
        let rows =
            sqlx::query("SELECT undo FROM context_trail WHERE execution_id = $1 ORDER BY version")
                .bind(execution_id)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        let mut trail = Vec::new();
        for row in &rows {
            let Json(entries): Json<Vec<ContextUndo>> = row.try_get("undo").map_err(|err| {
                Error::Unreadable(format!(
                    "execution {execution_id}'s context undo trail: {err}"
                ))
            })?;
            trail.extend(entries);
        }
        Ok(trail)
    }

    async fn list_steps(&self, execution_id: Uuid) -> Result<Vec<StepRecord>> {
        let exists = sqlx::query("SELECT 1 FROM executions WHERE id = $1")
            .bind(execution_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(Error::not_found("execution", execution_id));
        }
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(step_records),
            " FROM step_records WHERE execution_id = $1 ORDER BY seq"
        ))
        .bind(execution_id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::step_record).collect()
    }

    async fn begin_step(
        &self,
        execution_id: Uuid,
        owner: &str,
        expected_version: i64,
        record: StepRecord,
        now: Timestamp,
    ) -> Result<i64> {
        // Through the begins' group committer: concurrent begins share one statement and
        // one WAL flush; each keeps its own compare-and-set, its record joined to it.
        let request = tollgate_store::group_commit::BeginRequest {
            execution_id,
            owner: owner.to_owned(),
            expected_version,
            record,
            now,
        };
        self.begins.begin(self, request).await
    }

    async fn commit_step(&self, step: StepCommit) -> Result<Committed> {
        if let Transition::Finish { status, .. } = &step.transition {
            if !status.is_terminal() {
                return Err(Error::Invalid(format!(
                    "a step commit cannot finish an execution as {status}"
                )));
            }
        }
        if step.effects.is_empty() && step.consumed_events.is_empty() {
            return self.commit_in_one_statement(step).await;
        }
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, step.execution_id, true).await?;
        let now = step.now;
        let wakes =
            matches!(&step.transition, Transition::Gate { gate, .. } if gate.deadline.is_some());
        let consumed = step.consumed_events.clone();
        let writes = rules::apply_commit(&mut execution, step)?;
        write_execution(&mut tx, &execution).await?;
        note_consumed(&mut tx, execution.id, &consumed).await?;
        upsert_steps(&mut tx, &writes.records).await?;
        write_trail(&mut tx, &execution, &writes.undo, writes.drop_trail).await?;
        for effect in &writes.effects {
            apply_effect(&mut tx, effect, now).await?;
        }
        if let Some(approval) = &writes.approval {
            insert_approval(&mut tx, approval).await?;
        }
        if let Some(status) = writes.close_approvals {
            close_approvals(&mut tx, execution.id, status, now).await?;
        }
        if wakes {
            notify_workers(&mut tx, "gate").await?;
        }
        commit(tx).await?;
        Ok(writes.committed)
    }

    async fn renew_lease(&self, id: Uuid, owner: &str, expires_at: Timestamp) -> Result<()> {
        let done = sqlx::query("UPDATE executions SET lease_expires_at = $1 WHERE id = $2 AND status = 'running' AND lease_owner = $3")
            .bind(expires_at)
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            let execution = self.get_execution(id).await?;
            return Err(rules::refusal(&execution, owner, None));
        }
        Ok(())
    }

    async fn release_lease(&self, id: Uuid, owner: &str, now: Timestamp) -> Result<()> {
        let done = sqlx::query("WITH upd AS (UPDATE executions SET lease_owner = NULL, lease_expires_at = $1, version = version + 1, updated_at = $1 WHERE id = $2 AND status = 'running' AND lease_owner = $3 RETURNING 1) SELECT pg_notify($4, 'release') FROM upd")
            .bind(now)
            .bind(id)
            .bind(owner)
            .bind(WAKEUP_CHANNEL)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if done.is_none() {
            let execution = self.get_execution(id).await?;
            return Err(rules::refusal(&execution, owner, None));
        }
        Ok(())
    }

    async fn claim_expired_leases(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        n: u32,
    ) -> Result<Vec<Execution>> {
        let readable = readable("executions");
        let rows = sqlx::query(&format!(
            concat!("UPDATE executions SET lease_owner = $1, lease_expires_at = $2, version = version + 1, updated_at = $3 \
             WHERE id IN (SELECT id FROM executions WHERE status = 'running' AND lease_expires_at <= $3 AND {readable} \
                ORDER BY lease_expires_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING ", columns!(executions)),
            readable = readable,
        ))
        .bind(claim.owner.clone())
        .bind(claim.expires_at)
        .bind(now)
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let (claimed, unreadable) = rows::decode_claimed(&rows);
        rules::quarantine_each(self, unreadable, now).await;
        Ok(claimed)
    }

    async fn claim_due_gates(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        n: u32,
    ) -> Result<Vec<Execution>> {
        // Set-based, one statement: pick due gates (SKIP LOCKED), resume them with the
        // wake signal of `rules::deadline_wake`, expire their approval requests, and write
        // the `timer` audit rows — one round trip whatever the batch size.
        let readable = readable("executions");
        let returned = columns!(executions, "e.");
        let rows = sqlx::query(&format!(
            "WITH due AS (SELECT id FROM executions WHERE status IN ('paused', 'waiting') AND gate_deadline <= $1 \
                AND {readable} ORDER BY gate_deadline LIMIT $2 FOR UPDATE SKIP LOCKED), \
             upd AS (UPDATE executions e SET status = 'running', lease_owner = $3, lease_expires_at = $4, version = e.version + 1, \
                updated_at = $1, resume_count = e.resume_count + 1, last_resumed_at = $1, \
                wake = CASE WHEN e.gate_reason = 'approval' AND e.gate_approval_id IS NOT NULL AND NOT (e.gate ? 'branches') \
                    THEN jsonb_build_object('kind', 'approval', 'approval_id', e.gate_approval_id, 'outcome', 'expired', \
                        'decided_by', NULL, 'reason', NULL, 'data', NULL, 'decided_at', $1::timestamptz) \
                    ELSE jsonb_build_object('kind', 'wait_timeout', 'at', $1::timestamptz) END \
                FROM due WHERE e.id = due.id RETURNING {returned}), \
             expired AS (UPDATE approvals SET status = CASE WHEN id IN (SELECT gate_approval_id FROM upd WHERE gate ? 'branches') \
                    THEN 'superseded' ELSE 'expired' END, decided_at = $1 \
                WHERE id IN (SELECT gate_approval_id FROM upd) AND status = 'pending' RETURNING 1), \
             audited AS (INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) \
                SELECT gen_random_uuid(), id, 'timer', NULL, jsonb_build_object('deadline', gate_deadline, 'step_id', gate->>'step_id'), $1, $1, 'resumed', NULL \
                FROM upd RETURNING 1) \
             SELECT upd.*, (SELECT count(*) FROM expired) AS expired_count, (SELECT count(*) FROM audited) AS audited_count \
             FROM upd ORDER BY gate_deadline",
        ))
        .bind(now)
        .bind(limit(n))
        .bind(claim.owner.clone())
        .bind(claim.expires_at)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let (claimed, unreadable) = rows::decode_claimed(&rows);
        rules::quarantine_each(self, unreadable, now).await;
        Ok(claimed)
    }

    async fn time_out_overdue(&self, now: Timestamp, n: u32) -> Result<Vec<Execution>> {
        let readable = readable("executions");
        let mut tx = self.tx().await?;
        let ids = locked_ids(
            &mut tx,
            &format!(
                "SELECT id FROM executions WHERE deadline <= $1 AND (status IN ('paused', 'waiting') \
                 OR (status = 'running' AND (lease_owner IS NULL OR lease_expires_at <= $1))) AND {readable} \
                 ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            now,
            n,
        )
        .await?;
        let mut ended = Vec::with_capacity(ids.len());
        let mut quarantined = Vec::new();
        for id in ids {
            let mut execution = match load_execution(&mut tx, id, true).await {
                Ok(execution) => execution,
                Err(Error::Unreadable(detail)) => {
                    quarantine(&mut tx, id, &detail, now).await?;
                    quarantined.push((id, detail));
                    continue;
                }
                Err(err) => return Err(err),
            };
            let Some(deadline) = execution
                .deadline
                .filter(|_| rules::is_overdue(&execution, now))
            else {
                continue;
            };
            rules::time_out(&mut execution, deadline, now);
            write_execution(&mut tx, &execution).await?;
            close_approvals(&mut tx, id, ApprovalStatus::Expired, now).await?;
            audit(
                &mut tx,
                id,
                ResumeTrigger::Timer,
                None,
                json!({"deadline": deadline, "workflow_timeout": true}),
                now,
            )
            .await?;
            ended.push(execution);
        }
        commit(tx).await?;
        for (id, detail) in quarantined {
            rules::report_quarantine(id, &detail);
        }
        Ok(ended)
    }

    async fn request_pause(
        &self,
        id: Uuid,
        _actor: Option<&str>,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, id, true).await?;
        if let Err(err) = rules::request_pause(&mut execution, reason, now) {
            return refuse(tx, err).await;
        }
        write_execution(&mut tx, &execution).await?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn resume_manual(
        &self,
        id: Uuid,
        actor: Option<&str>,
        data: Value,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, id, true).await?;
        if let Err(err) = rules::check_manually_paused(&execution) {
            return refuse(tx, err).await;
        }
        rules::resume(
            &mut execution,
            Wake::Manual {
                data: data.clone(),
                actor: actor.map(str::to_owned),
            },
            claim,
            now,
        );
        write_execution(&mut tx, &execution).await?;
        audit(&mut tx, id, ResumeTrigger::Manual, actor, data, now).await?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn retry_execution(
        &self,
        id: Uuid,
        retry: &Retry,
        actor: Option<&str>,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, id, true).await?;
        if let Err(err) = rules::retry(&mut execution, retry, claim, now) {
            return refuse(tx, err).await;
        }
        write_execution(&mut tx, &execution).await?;
        write_trail(&mut tx, &execution, &retry.undo, false).await?;
        audit(
            &mut tx,
            id,
            ResumeTrigger::Manual,
            actor,
            retry.audit.clone(),
            now,
        )
        .await?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn purge_ended(&self, purge: &Purge, limit: u32) -> Result<Vec<Purged>> {
        self.purge(purge, limit).await
    }

    async fn purgeable(&self, purge: &Purge, limit: u32) -> Result<Vec<Purged>> {
        PgStore::purgeable(self, purge, limit).await
    }

    async fn migrate_execution(
        &self,
        id: Uuid,
        migration: &Migration,
        actor: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, id, true).await?;
        if let Err(err) = rules::migrate(&mut execution, migration, now) {
            return refuse(tx, err).await;
        }
        write_execution(&mut tx, &execution).await?;
        audit(
            &mut tx,
            id,
            ResumeTrigger::Manual,
            actor,
            migration.audit.clone(),
            now,
        )
        .await?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn cancel_execution(
        &self,
        id: Uuid,
        actor: Option<&str>,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, id, true).await?;
        if let Err(err) = rules::cancel(&mut execution, actor, reason, now) {
            return refuse(tx, err).await;
        }
        write_execution(&mut tx, &execution).await?;
        close_approvals(&mut tx, id, ApprovalStatus::Cancelled, now).await?;
        write_trail(&mut tx, &execution, &[], true).await?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn claim_wait(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        event: &Event,
        actor: Option<&str>,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, id, true).await?;
        if let Err(err) = rules::check_wait_claim(&execution, expected_version, event) {
            return refuse(tx, err).await;
        }
        rules::claim_wait(&mut execution, event, claim, now);
        write_execution(&mut tx, &execution).await?;
        if execution
            .gate
            .as_ref()
            .and_then(tollgate_model::records::Gate::superseded_approval)
            .is_some()
        {
            close_approvals(&mut tx, id, ApprovalStatus::Superseded, now).await?;
        }
        note_consumed(&mut tx, id, &[event.id]).await?;
        audit(
            &mut tx,
            id,
            ResumeTrigger::Event,
            actor,
            json!({"event_id": event.id, "event_type": event.event_type}),
            now,
        )
        .await?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn waiting_for_event(
        &self,
        event_type: &str,
        after: Option<Uuid>,
        n: u32,
        now: Timestamp,
    ) -> Result<Vec<Execution>> {
        self.waits(WaitingRead::Scan(WaitingScan {
            event_type: event_type.to_owned(),
            keys: None,
            after,
            limit: limit(n),
            now,
        }))
        .await
    }

    async fn first_of_shapes(&self, event_type: &str) -> Result<Vec<WaitShape>> {
        self.shapes(WaitingRead::FirstOfShapes(event_type.to_owned()))
            .await
    }

    async fn waiting_at_first_of(
        &self,
        event_type: &str,
        keys: &[WaitKey],
        after: Option<Uuid>,
        n: u32,
        now: Timestamp,
    ) -> Result<Vec<Execution>> {
        self.waits(WaitingRead::FirstOf(WaitingScan {
            event_type: event_type.to_owned(),
            keys: Some(keys.to_vec()),
            after,
            limit: limit(n),
            now,
        }))
        .await
    }

    async fn wait_shapes(&self, event_type: &str) -> Result<Vec<WaitShape>> {
        self.shapes(WaitingRead::Shapes(event_type.to_owned()))
            .await
    }

    async fn waiting_for_keys(
        &self,
        event_type: &str,
        keys: &[WaitKey],
        after: Option<Uuid>,
        n: u32,
        now: Timestamp,
    ) -> Result<Vec<Execution>> {
        self.waits(WaitingRead::Scan(WaitingScan {
            event_type: event_type.to_owned(),
            keys: Some(keys.to_vec()),
            after,
            limit: limit(n),
            now,
        }))
        .await
    }

    async fn quarantine_execution(
        &self,
        id: Uuid,
        detail: &str,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.tx().await?;
        quarantine(&mut tx, id, detail, now).await?;
        let execution = load_execution(&mut tx, id, false).await?;
        commit(tx).await?;
        rules::report_quarantine(id, detail);
        Ok(execution)
    }

    async fn list_quarantined(&self, page: &PageRequest) -> Result<Page<Quarantined>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT execution_id, detail, original, quarantined_at FROM quarantined_executions WHERE TRUE",
        );
        if let Some(after) = after {
            q.push(" AND execution_id < ").push_bind(after);
        }
        q.push(" ORDER BY execution_id DESC LIMIT ")
            .push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::quarantined)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |q| {
            encode_id_cursor(q.execution_id)
        }))
    }
}

impl PgStore {
    /// One page of waits (a [`WaitingRead::Scan`] or [`WaitingRead::FirstOf`]), read in
    /// the waiting batch.
    async fn waits(&self, read: WaitingRead) -> Result<Vec<Execution>> {
        match self.waiting.submit(read).await? {
            WaitingAnswer::Waits(waits) => Ok(waits),
            WaitingAnswer::Shapes(_) => {
                Err(Error::Backend("a waiting scan answered with shapes".into()))
            }
        }
    }

    /// One list of correlation shapes (a [`WaitingRead::Shapes`] or
    /// [`WaitingRead::FirstOfShapes`]), read in the waiting batch.
    async fn shapes(&self, read: WaitingRead) -> Result<Vec<WaitShape>> {
        match self.waiting.submit(read).await? {
            WaitingAnswer::Shapes(shapes) => Ok(shapes),
            WaitingAnswer::Waits(_) => {
                Err(Error::Backend("a shape read answered with waits".into()))
            }
        }
    }
}

/// Lists `execution` in the `resumed` list of each event it consumed, inside the
/// transaction that records the consumption.
async fn note_consumed(tx: &mut super::sql::Tx, execution: Uuid, events: &[Uuid]) -> Result<()> {
    for event in events {
        sqlx::query(super::events::NOTE_CONSUMED)
            .bind(execution)
            .bind(event)
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
    }
    Ok(())
}
