//! [`ExecutionStore`] on SQLite.

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::sqlite::Sqlite;
use sqlx::{QueryBuilder, Row};
use tollgate_model::records::{
    ApprovalStatus, Event, Execution, Gate, Migration, ResumeTrigger, Retry, StepRecord, Timestamp,
    Wake,
};
use tollgate_model::undo::ContextUndo;
use tollgate_model::ExecutionStatus;
use tollgate_store::{
    decode_cursor, encode_cursor, encode_id_cursor, page_from_overfetch, rules, Committed, Error,
    ExecutionFilter, ExecutionStore, LeaseClaim, Overdue, Page, PageRequest, Purge, Purged,
    Quarantined, Result, StepCommit, Transition, WaitKey, WaitShape,
};
use uuid::Uuid;

use crate::rows::{backend, from_ts, ts};
use crate::{rows, SqliteStore};

use super::sql::{
    apply_effect, audit, close_approvals, commit, id_after, insert_approval, insert_execution,
    load_execution, quarantine, status_counts, upsert_step, write_execution, write_trail,
};

/// What claims and scans filter on: the execution rows this release can read.
const READABLE: &str = readable_execution!();

/// The scans of gated and running executions name their partial index (`INDEXED BY`,
/// which makes preparing fail rather than fall back to a worse plan). SQLite keeps no
/// statistics unless `ANALYZE` runs, and without them its planner preferred
/// `executions_status (status, id)` for each of these: it read every waiting row — 50 ms
/// per query at 100,000 waiting executions, four of them in every worker pass, one
/// holding the writer (docs/benchmarks.md, "Waits at scale").
const DUE_GATES_PICK: &str = concat!(
    "SELECT id FROM executions INDEXED BY executions_gate_due WHERE status IN ('paused', 'waiting') \
     AND gate_deadline IS NOT NULL AND gate_deadline <= ?3 AND ",
    readable_execution!(),
    " ORDER BY gate_deadline LIMIT ?6"
);
/// The rows `claim_due_gates` just claimed: running, with the lease expiry and batch
/// token it wrote (through the lease index, not a scan for the token).
const CLAIMED_BY_TOKEN: &str = "FROM executions INDEXED BY executions_lease_due \
     WHERE status = 'running' AND lease_expires_at = ?2 AND commit_token = ?4";
const EXPIRED_LEASES_PICK: &str = concat!(
    "SELECT id FROM executions INDEXED BY executions_lease_due WHERE status = 'running' \
     AND lease_expires_at <= ? AND ",
    readable_execution!(),
    " ORDER BY lease_expires_at LIMIT ?"
);
const OVERDUE_PICK: &str = concat!(
    "SELECT id FROM executions INDEXED BY executions_deadline WHERE deadline IS NOT NULL AND deadline <= ? \
     AND status IN ('running', 'paused', 'waiting') \
     AND (status IN ('paused', 'waiting') OR (status = 'running' AND (lease_owner IS NULL OR lease_expires_at <= ?))) AND ",
    readable_execution!(),
    " ORDER BY deadline LIMIT ?"
);
const OVERDUE_GATES_COUNT: &str =
    "SELECT COUNT(*), MIN(gate_deadline) FROM executions INDEXED BY executions_gate_due \
     WHERE status IN ('paused', 'waiting') AND gate_deadline IS NOT NULL AND gate_deadline <= ?";
const WAITING_SCAN: &str = concat!(
    "SELECT * FROM executions INDEXED BY executions_waiting_event WHERE status = 'waiting' AND gate_event = ? \
     AND id > ? AND ",
    readable_execution!(),
    " ORDER BY id LIMIT ?"
);

/// Executions waiting at a `first_of` step with an event gate of a type and key: its
/// rows in `gate_events` (kept by triggers; one index range), then each execution by id,
/// still waiting.
const FIRST_OF_SCAN: &str = concat!(
    "SELECT executions.* FROM gate_events JOIN executions ON executions.id = gate_events.execution_id \
     WHERE gate_events.event_type = ? AND gate_events.shape = ? AND gate_events.hash = ? \
     AND gate_events.execution_id > ? AND executions.status = 'waiting' AND ",
    readable_execution!(),
    " ORDER BY gate_events.execution_id LIMIT ?"
);
/// The first `first_of` correlation shape of a type (every shape is >= '', the keyless
/// one's), and the next one after a shape: each one seek of `gate_events`' key (a bound
/// with an `OR`, or a filter on the shape, would read every row of the type).
const FIRST_OF_FIRST_SHAPE: &str =
    "SELECT shape, fields FROM gate_events WHERE event_type = ? AND shape >= ? ORDER BY shape LIMIT 1";
const FIRST_OF_NEXT_SHAPE: &str =
    "SELECT shape, fields FROM gate_events WHERE event_type = ? AND shape > ? ORDER BY shape LIMIT 1";
/// A waiting execution's correlation shape and hash, exactly as the `executions_wait_key`
/// index spells them (SQLite uses an expression index only for the same expression).
const WAIT_SHAPE: &str = "coalesce(json_extract(gate, '$.correlation.shape'), '')";
const WAIT_HASH: &str = "coalesce(json_extract(gate, '$.correlation.hash'), '')";
const _: () = assert!(
    tollgate_store::STORED_FORMAT == 1,
    "readable_execution! names this release's format; raise it with STORED_FORMAT"
);

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn create_execution(&self, execution: Execution) -> Result<Execution> {
        let mut tx = self.write_tx().await?;
        let snapshot = sqlx::query("SELECT 1 FROM snapshots WHERE id = ?")
            .bind(execution.snapshot_id.clone())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if snapshot.is_none() {
            return Err(Error::not_found("snapshot", &execution.snapshot_id));
        }
        insert_execution(&mut tx, &execution)
            .await
            .map_err(|e| match e {
                Error::Conflict(_) => {
                    Error::Conflict(format!("execution {} already exists", execution.id))
                }
                other => other,
            })?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn get_execution(&self, id: Uuid) -> Result<Execution> {
        let row = sqlx::query(concat!(select_executions!(), " WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref()
            .map(rows::execution)
            .transpose()?
            .ok_or_else(|| Error::not_found("execution", id))
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: &PageRequest,
    ) -> Result<Page<Execution>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Sqlite>::new(concat!(select_executions!(), " WHERE 1 = 1"));
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(workflow) = filter.workflow_id {
            q.push(" AND workflow_id = ")
                .push_bind(workflow.to_string());
        }
        if let Some(key) = &filter.workflow_key {
            q.push(" AND workflow_key = ").push_bind(key.clone());
        }
        if let Some(reason) = filter.paused_reason {
            q.push(" AND status IN ('paused', 'waiting') AND gate_reason = ")
                .push_bind(reason.as_str());
        }
        if let Some(role) = &filter.approver_role {
            q.push(" AND status IN ('paused', 'waiting') AND gate_approval_id IN (SELECT id FROM approvals WHERE status = 'pending' AND EXISTS (SELECT 1 FROM json_each(approvals.approver_roles) WHERE value = ")
                .push_bind(role.clone())
                .push("))");
        }
        if let Some(after) = after {
            q.push(" AND id < ").push_bind(after);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
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
            &self.reader,
            "SELECT status, COUNT(*) FROM executions GROUP BY status",
        )
        .await
    }

    async fn count_in_flight(&self) -> Result<Vec<(ExecutionStatus, u64)>> {
        // A range of `executions_status` per status: the executions in flight only.
        status_counts(
            &self.reader,
            "SELECT status, COUNT(*) FROM executions \
             WHERE status IN ('running', 'paused', 'waiting') GROUP BY status",
        )
        .await
    }

    async fn overdue_gates(&self, now: Timestamp) -> Result<Overdue> {
        // The due-gates partial index (`executions_gate_due`) answers this.
        let (count, oldest): (i64, Option<i64>) = sqlx::query_as(OVERDUE_GATES_COUNT)
            .bind(ts(now))
            .fetch_one(&self.reader)
            .await
            .map_err(backend)?;
        Ok(Overdue {
            count: u64::try_from(count).unwrap_or(0),
            oldest_deadline: oldest.map(from_ts),
        })
    }

    async fn list_gated(&self, page: &PageRequest) -> Result<Page<Execution>> {
        let after = page
            .cursor
            .as_deref()
            .map(|c| {
                let parts = decode_cursor(c, 2)?;
                let bad = || Error::Invalid(format!("`{c}` is not a cursor returned by this list"));
                let at: i64 = parts[0].parse().map_err(|_| bad())?;
                let id = Uuid::parse_str(&parts[1]).map_err(|_| bad())?;
                Ok::<_, Error>((at, id.to_string()))
            })
            .transpose()?;
        let mut q = QueryBuilder::<Sqlite>::new(concat!(
            select_executions!(),
            " WHERE status IN ('paused', 'waiting')"
        ));
        if let Some((at, id)) = after {
            q.push(" AND (paused_at > ")
                .push_bind(at)
                .push(" OR (paused_at = ")
                .push_bind(at)
                .push(" AND id > ")
                .push_bind(id)
                .push("))");
        }
        q.push(" ORDER BY paused_at, id LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::execution)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |e| {
            let at = e.gate.as_ref().map_or(0, |g| ts(g.paused_at));
            encode_cursor(&[&at.to_string(), &e.id.to_string()])
        }))
    }

    async fn list_steps(&self, execution_id: Uuid) -> Result<Vec<StepRecord>> {
        let mut conn = self.reader.acquire().await.map_err(backend)?;
        let exists = sqlx::query("SELECT 1 FROM executions WHERE id = ?")
            .bind(execution_id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(Error::not_found("execution", execution_id));
        }
        let rows = sqlx::query("SELECT * FROM step_records WHERE execution_id = ? ORDER BY seq")
            .bind(execution_id.to_string())
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        rows.iter().map(rows::step_record).collect()
    }

    async fn context_trail(&self, execution_id: Uuid) -> Result<Vec<ContextUndo>> {
        let mut conn = self.reader.acquire().await.map_err(backend)?;
        let exists = sqlx::query("SELECT 1 FROM executions WHERE id = ?")
            .bind(execution_id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(Error::not_found("execution", execution_id));
        }
        let rows =
            sqlx::query("SELECT undo FROM context_trail WHERE execution_id = ? ORDER BY version")
                .bind(execution_id.to_string())
                .fetch_all(&mut *conn)
                .await
                .map_err(backend)?;
        let mut trail = Vec::new();
        for row in &rows {
            let text: String = row.try_get("undo").map_err(backend)?;
            let entries: Vec<ContextUndo> = serde_json::from_str(&text).map_err(|err| {
                Error::Unreadable(format!(
                    "execution {execution_id}'s context undo trail: {err}"
                ))
            })?;
            trail.extend(entries);
        }
        Ok(trail)
    }

    async fn begin_step(
        &self,
        execution_id: Uuid,
        owner: &str,
        expected_version: i64,
        record: StepRecord,
        now: Timestamp,
    ) -> Result<i64> {
        // Through the begins' group committer: concurrent begins share one transaction
        // and one hop on the writer; each keeps its own compare-and-set, its record
        // joined to it.
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
        if step.effects.is_empty()
            && step.consumed_events.is_empty()
            && matches!(
                step.transition,
                Transition::Continue | Transition::Release { .. } | Transition::Finish { .. }
            )
        {
            return self.commit_in_one_statement(step).await;
        }
        if step.effects.is_empty() {
            return self.commit_in_two_hops(step).await;
        }
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, step.execution_id).await?;
        let now = step.now;
        let wakes = matches!(
            step.transition,
            Transition::Release { .. } | Transition::Gate { .. }
        );
        let writes = rules::apply_commit(&mut execution, step)?;
        write_execution(&mut tx, &execution).await?;
        for record in &writes.records {
            upsert_step(&mut tx, record).await?;
        }
        write_trail(&mut tx, &execution, &writes.undo, writes.drop_trail).await?;
        for effect in &writes.effects {
            apply_effect(&mut tx, effect, now).await?;
        }
        if let Some(approval) = &writes.approval {
            insert_approval(&mut tx, approval)
                .await
                .map_err(|e| match e {
                    Error::Conflict(_) => {
                        Error::Conflict(format!("approval {} already exists", approval.id))
                    }
                    other => other,
                })?;
        }
        if let Some(status) = writes.close_approvals {
            close_approvals(&mut tx, execution.id, status, now).await?;
        }
        commit(tx).await?;
        if wakes {
            self.wakeups.notify_one();
        }
        Ok(writes.committed)
    }

    async fn renew_lease(&self, id: Uuid, owner: &str, expires_at: Timestamp) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let execution = load_execution(&mut tx, id).await?;
        rules::check_lease(&execution, owner, None)?;
        sqlx::query("UPDATE executions SET lease_expires_at = ? WHERE id = ?")
            .bind(ts(expires_at))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        commit(tx).await
    }

    async fn release_lease(&self, id: Uuid, owner: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let execution = load_execution(&mut tx, id).await?;
        rules::check_lease(&execution, owner, None)?;
        sqlx::query("UPDATE executions SET lease_owner = NULL, lease_expires_at = ?, version = version + 1, updated_at = ? WHERE id = ?")
            .bind(ts(now))
            .bind(ts(now))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        commit(tx).await?;
        self.wakeups.notify_one();
        Ok(())
    }

    async fn claim_expired_leases(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<Execution>> {
        // One statement: pick and claim in the same UPDATE, so no row is handed out twice.
        let rows = sqlx::query(&format!(
            "UPDATE executions SET lease_owner = ?, lease_expires_at = ?, version = version + 1, updated_at = ? \
             WHERE id IN ({EXPIRED_LEASES_PICK}) RETURNING *",
        ))
        .bind(claim.owner.clone())
        .bind(ts(claim.expires_at))
        .bind(ts(now))
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
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
        limit: u32,
    ) -> Result<Vec<Execution>> {
        // One batch, one hop: the claim is a single `UPDATE … RETURNING` (building the wake
        // signal of `rules::deadline_wake` in SQL and stamping a batch token); the approval
        // expiry and the `timer` audit rows follow in the same transaction, selected by
        // that token.
        let token = Uuid::new_v4().to_string();
        let at = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let sql = &format!("BEGIN IMMEDIATE; \
            UPDATE executions SET status = 'running', lease_owner = ?1, lease_expires_at = ?2, version = version + 1, updated_at = ?3, \
                resume_count = resume_count + 1, last_resumed_at = ?3, commit_token = ?4, \
                wake = CASE WHEN gate_reason = 'approval' AND gate_approval_id IS NOT NULL AND json_extract(gate, '$.branches') IS NULL \
                    THEN json_object('kind', 'approval', 'approval_id', gate_approval_id, 'outcome', 'expired', 'decided_by', NULL, \
                        'reason', NULL, 'data', NULL, 'decided_at', ?5) \
                    ELSE json_object('kind', 'wait_timeout', 'at', ?5) END \
              WHERE id IN ({DUE_GATES_PICK}) \
              RETURNING *; \
            UPDATE approvals SET status = 'expired', decided_at = ?3 \
              WHERE status = 'pending' AND id IN (SELECT gate_approval_id {CLAIMED_BY_TOKEN} AND json_extract(gate, '$.branches') IS NULL); \
            UPDATE approvals SET status = 'superseded', decided_at = ?3 \
              WHERE status = 'pending' AND id IN (SELECT gate_approval_id {CLAIMED_BY_TOKEN} AND json_extract(gate, '$.branches') IS NOT NULL); \
            INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) \
              SELECT lower(hex(randomblob(16))), id, 'timer', NULL, \
                json_object('deadline', strftime('%Y-%m-%dT%H:%M:%fZ', gate_deadline / 1000000.0, 'unixepoch'), 'step_id', json_extract(gate, '$.step_id')), \
                ?3, ?3, 'resumed', NULL \
              {CLAIMED_BY_TOKEN}; \
            COMMIT;");
        // The held writer goes back before quarantining, which writes.
        let query = sqlx::query(sql)
            .bind(claim.owner.clone())
            .bind(ts(claim.expires_at))
            .bind(ts(now))
            .bind(token)
            .bind(at)
            .bind(i64::from(limit));
        let rows = self.held().await?.fetch_all(query).await.map_err(backend)?;
        let (claimed, unreadable) = rows::decode_claimed(&rows);
        rules::quarantine_each(self, unreadable, now).await;
        Ok(claimed)
    }

    async fn time_out_overdue(&self, now: Timestamp, limit: u32) -> Result<Vec<Execution>> {
        let mut tx = self.write_tx().await?;
        let ids: Vec<String> = sqlx::query(OVERDUE_PICK)
            .bind(ts(now))
            .bind(ts(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let mut ended = Vec::with_capacity(ids.len());
        let mut quarantined = Vec::new();
        for id in ids {
            let id = Uuid::parse_str(&id).map_err(|e| rows::corrupt("execution id", e))?;
            let mut execution = match load_execution(&mut tx, id).await {
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
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, id).await?;
        rules::request_pause(&mut execution, reason, now)?;
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
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, id).await?;
        rules::check_manually_paused(&execution)?;
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
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, id).await?;
        rules::retry(&mut execution, retry, claim, now)?;
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
        SqliteStore::purgeable(self, purge, limit).await
    }

    async fn migrate_execution(
        &self,
        id: Uuid,
        migration: &Migration,
        actor: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, id).await?;
        rules::migrate(&mut execution, migration, now)?;
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
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, id).await?;
        rules::cancel(&mut execution, actor, reason, now)?;
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
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, id).await?;
        rules::check_wait_claim(&execution, expected_version, event)?;
        rules::claim_wait(&mut execution, event, claim, now);
        write_execution(&mut tx, &execution).await?;
        if execution
            .gate
            .as_ref()
            .and_then(Gate::superseded_approval)
            .is_some()
        {
            close_approvals(&mut tx, id, ApprovalStatus::Superseded, now).await?;
        }
        sqlx::query(super::events::NOTE_CONSUMED)
            .bind(id.to_string())
            .bind(event.id.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
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
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<Execution>> {
        let rows = sqlx::query(WAITING_SCAN)
            .bind(event_type)
            .bind(after.map_or_else(String::new, |a| a.to_string()))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        // A waiting execution nobody can read would fail every event of its type: it is
        // set aside, and the scan answers with the others.
        let (waiting, unreadable) = rows::decode_claimed(&rows);
        rules::quarantine_each(self, unreadable, now).await;
        Ok(waiting)
    }

    async fn first_of_shapes(&self, event_type: &str) -> Result<Vec<WaitShape>> {
        // A skip scan over `gate_events`' key: one probe per distinct shape of the type.
        let mut shapes = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let sql = if after.is_some() {
                FIRST_OF_NEXT_SHAPE
            } else {
                FIRST_OF_FIRST_SHAPE
            };
            let row = sqlx::query(sql)
                .bind(event_type)
                .bind(after.clone().unwrap_or_default())
                .fetch_optional(&self.reader)
                .await
                .map_err(backend)?;
            let Some(row) = row else { break };
            let shape: String = row.try_get("shape").map_err(backend)?;
            let fields: String = row.try_get("fields").map_err(backend)?;
            match serde_json::from_str::<Vec<String>>(&fields) {
                Ok(fields) => shapes.push(WaitShape {
                    shape: shape.clone(),
                    fields,
                }),
                Err(_) => tracing::error!(
                    event_type,
                    shape,
                    "a first_of correlation shape without readable fields"
                ),
            }
            after = Some(shape);
        }
        Ok(shapes)
    }

    async fn waiting_at_first_of(
        &self,
        event_type: &str,
        keys: &[WaitKey],
        after: Option<Uuid>,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<Execution>> {
        self.by_keys(FIRST_OF_SCAN, event_type, keys, after, limit, now)
            .await
    }

    async fn wait_shapes(&self, event_type: &str) -> Result<Vec<WaitShape>> {
        // A skip scan over the key index: one probe per distinct shape.
        let mut shapes = Vec::new();
        let mut after = String::new();
        loop {
            let row = sqlx::query(&format!(
                "SELECT {WAIT_SHAPE} AS shape, json_extract(gate, '$.correlation.fields') AS fields \
                 FROM executions INDEXED BY executions_wait_key WHERE status = 'waiting' AND gate_event = ? AND {WAIT_SHAPE} > ? \
                 ORDER BY {WAIT_SHAPE} LIMIT 1"
            ))
            .bind(event_type)
            .bind(&after)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
            let Some(row) = row else { break };
            let shape: String = row.try_get("shape").map_err(backend)?;
            let fields: Option<String> = row.try_get("fields").map_err(backend)?;
            // A shape whose fields do not read is skipped: its waits are then found by
            // nothing but a direct delivery, so say so loudly.
            match fields.as_deref().map(serde_json::from_str::<Vec<String>>) {
                Some(Ok(fields)) => shapes.push(WaitShape {
                    shape: shape.clone(),
                    fields,
                }),
                _ => tracing::error!(
                    event_type,
                    shape,
                    "a correlation shape without readable fields"
                ),
            }
            after = shape;
        }
        Ok(shapes)
    }

    async fn waiting_for_keys(
        &self,
        event_type: &str,
        keys: &[WaitKey],
        after: Option<Uuid>,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<Execution>> {
        let sql = format!(
            "SELECT * FROM executions INDEXED BY executions_wait_key WHERE status = 'waiting' AND gate_event = ? \
             AND {WAIT_SHAPE} = ? AND {WAIT_HASH} = ? AND id > ? AND {READABLE} \
             ORDER BY id LIMIT ?"
        );
        self.by_keys(&sql, event_type, keys, after, limit, now)
            .await
    }

    async fn quarantine_execution(
        &self,
        id: Uuid,
        detail: &str,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.write_tx().await?;
        quarantine(&mut tx, id, detail, now).await?;
        let execution = load_execution(&mut tx, id).await?;
        commit(tx).await?;
        self.wakeups.notify_one();
        rules::report_quarantine(id, detail);
        Ok(execution)
    }

    async fn list_quarantined(&self, page: &PageRequest) -> Result<Page<Quarantined>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT execution_id, detail, original, quarantined_at FROM quarantined_executions WHERE 1 = 1",
        );
        if let Some(after) = after {
            q.push(" AND execution_id < ").push_bind(after);
        }
        q.push(" ORDER BY execution_id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::quarantined)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |q| {
            encode_id_cursor(q.execution_id)
        }))
    }
}

impl SqliteStore {
    /// The executions `sql` finds (bound to the type, a key's shape and hash, `after`
    /// and `limit`) for the keyless key and each of `keys`: the first `limit` by id,
    /// each once, unreadable rows quarantined.
    async fn by_keys(
        &self,
        sql: &str,
        event_type: &str,
        keys: &[WaitKey],
        after: Option<Uuid>,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<Execution>> {
        let keyless = WaitKey {
            shape: String::new(),
            hash: String::new(),
        };
        let after = after.map_or_else(String::new, |a| a.to_string());
        let mut rows = Vec::new();
        for key in std::iter::once(&keyless).chain(keys) {
            rows.extend(
                sqlx::query(sql)
                    .bind(event_type)
                    .bind(&key.shape)
                    .bind(&key.hash)
                    .bind(&after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(backend)?,
            );
        }
        let (mut waiting, unreadable) = rows::decode_claimed(&rows);
        rules::quarantine_each(self, unreadable, now).await;
        waiting.sort_by_key(|e| e.id);
        waiting.dedup_by_key(|e| e.id);
        waiting.truncate(limit as usize);
        Ok(waiting)
    }
}

#[cfg(test)]
mod plans {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sqlx::Row;

    use super::*;
    use crate::SqliteOptions;

    /// The worker's scans and the intake's probes go through their partial indexes, not
    /// `executions_status` nor a scan of the table: each statement's plan names only the
    /// index it is meant to use. Without `INDEXED BY` these plans read every waiting row
    /// on a database without statistics (SQLite keeps none unless `ANALYZE` runs).
    #[tokio::test]
    async fn gated_scans_use_their_partial_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&SqliteOptions::new(dir.path().join("plans.db")))
            .await
            .unwrap();
        let statements = [
            (DUE_GATES_PICK.to_owned(), "executions_gate_due"),
            (format!("SELECT gate_approval_id {CLAIMED_BY_TOKEN}"), "executions_lease_due"),
            (EXPIRED_LEASES_PICK.to_owned(), "executions_lease_due"),
            (OVERDUE_PICK.to_owned(), "executions_deadline"),
            (OVERDUE_GATES_COUNT.to_owned(), "executions_gate_due"),
            (WAITING_SCAN.to_owned(), "executions_waiting_event"),
            (
                format!(
                    "SELECT * FROM executions INDEXED BY executions_wait_key WHERE status = 'waiting' \
                     AND gate_event = ? AND {WAIT_SHAPE} = ? AND {WAIT_HASH} = ? AND id > ? ORDER BY id LIMIT ?"
                ),
                "executions_wait_key",
            ),
        ];
        // The first_of shape skip scan seeks past each shape (with 100,000 executions
        // at one shape, a scan of the type read all of them per event).
        for sql in [FIRST_OF_FIRST_SHAPE, FIRST_OF_NEXT_SHAPE] {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&store.reader)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            assert!(
                plan.iter()
                    .any(|step| step.contains("event_type=? AND shape>?")),
                "{sql}\n{plan:#?}"
            );
        }
        for (sql, index) in statements {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&store.reader)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            let on_executions: Vec<&String> = plan
                .iter()
                .filter(|step| step.contains(" executions"))
                .collect();
            assert!(
                !on_executions.is_empty()
                    && on_executions
                        .iter()
                        .all(|step| step.contains(&format!("USING INDEX {index} "))),
                "{sql}\n{plan:#?}"
            );
        }
    }
}
