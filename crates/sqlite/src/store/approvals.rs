//! [`ApprovalStore`] on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::Sqlite;
use sqlx::QueryBuilder;
use sqlx::Row;
use tollgate_model::records::{
    ApprovalAssignment, ApprovalComment, ApprovalRequest, ApprovalRung, ApprovalSla, Timestamp,
};
use tollgate_store::decision_batch::DecideRequest;
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, rules, ApprovalFilter, ApprovalPin, ApprovalStore,
    AssignmentChange, Decided, Error, Page, PageRequest, Result,
};
use uuid::Uuid;

use crate::rows::{backend, json, opt_ts, ts};
use crate::{rows, SqliteStore};

use super::sql::{commit, id_after, insert_notification, load_approval};

#[async_trait]
impl ApprovalStore for SqliteStore {
    async fn get_approval(&self, id: Uuid) -> Result<ApprovalRequest> {
        let mut conn = self.reader.acquire().await.map_err(backend)?;
        load_approval(&mut conn, id).await
    }

    async fn approval_pin(&self, approval_id: Uuid) -> Result<ApprovalPin> {
        let row = sqlx::query(
            "SELECT a.execution_id, a.step_id, e.snapshot_id FROM approvals a \
             JOIN executions e ON e.id = a.execution_id WHERE a.id = ?",
        )
        .bind(approval_id.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?
        .ok_or_else(|| Error::not_found("approval", approval_id))?;
        let execution: String = row.try_get("execution_id").map_err(backend)?;
        Ok(ApprovalPin {
            execution_id: Uuid::parse_str(&execution).map_err(|e| {
                Error::Unreadable(format!("approval {approval_id}'s execution id: {e}"))
            })?,
            step_id: row.try_get("step_id").map_err(backend)?,
            snapshot_id: row.try_get("snapshot_id").map_err(backend)?,
        })
    }

    async fn count_pending_approvals(&self) -> Result<u64> {
        // The pending requests' partial index (`approvals_pending`) answers this.
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM approvals WHERE status = 'pending'")
                .fetch_one(&self.reader)
                .await
                .map_err(backend)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRequest>> {
        // In due order the sort key is the due time, none last (as the largest value).
        const DUE_KEY: &str = "COALESCE(s.due_at, 9223372036854775807)";
        let (after, due_after) = if filter.by_due {
            (
                None,
                tollgate_store::decode_due_cursor(page.cursor.as_deref())?,
            )
        } else {
            (id_after(page)?, None)
        };
        let mut q = QueryBuilder::<Sqlite>::new(if filter.by_due {
            "SELECT approvals.*, s.due_at AS sla_due FROM approvals LEFT JOIN approval_sla s ON s.approval_id = approvals.id WHERE 1 = 1"
        } else {
            "SELECT * FROM approvals WHERE 1 = 1"
        });
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(role) = &filter.role {
            q.push(" AND EXISTS (SELECT 1 FROM json_each(approvals.approver_roles) WHERE value = ")
                .push_bind(role.clone())
                .push(")");
        }
        if let Some(execution) = filter.execution_id {
            q.push(" AND execution_id = ")
                .push_bind(execution.to_string());
        }
        if let Some(p) = &filter.decidable_by {
            q.push(" AND status = 'pending' AND (")
                .push_bind(i64::from(p.is_admin()))
                .push(" = 1 OR EXISTS (SELECT 1 FROM json_each(approvals.approver_users) WHERE value = ")
                .push_bind(p.subject.clone())
                .push(") OR EXISTS (SELECT 1 FROM json_each(approvals.approver_roles) r, json_each(")
                .push_bind(json(&p.roles))
                .push(") mine WHERE r.value = mine.value))")
                .push(" AND (allow_self_approval = 1 OR requested_by IS NULL OR requested_by <> ")
                .push_bind(p.subject.clone())
                .push(") AND NOT EXISTS (SELECT 1 FROM json_each(approvals.decisions) d WHERE json_extract(d.value, '$.decided_by') = ")
                .push_bind(p.subject.clone())
                .push(")");
        }
        if let Some(key) = &filter.workflow_key {
            q.push(" AND execution_id IN (SELECT id FROM executions WHERE workflow_key = ")
                .push_bind(key.clone())
                .push(")");
        }
        if let Some(step) = &filter.step_id {
            q.push(" AND step_id = ").push_bind(step.clone());
        }
        if let Some(before) = filter.requested_before {
            q.push(" AND requested_at < ")
                .push_bind(crate::rows::ts(before));
        }
        if let Some(after) = after {
            q.push(" AND id < ").push_bind(after);
        }
        if let Some((due, id)) = due_after {
            let due = due.map(ts);
            q.push(format!(" AND ({DUE_KEY} > COALESCE("))
                .push_bind(due)
                .push(format!(", 9223372036854775807) OR ({DUE_KEY} = COALESCE("))
                .push_bind(due)
                .push(", 9223372036854775807) AND id < ")
                .push_bind(id.to_string())
                .push("))");
        }
        if filter.by_due {
            q.push(format!(" ORDER BY {DUE_KEY}, id DESC LIMIT "));
        } else {
            q.push(" ORDER BY id DESC LIMIT ");
        }
        q.push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
        if filter.by_due {
            let mut items = Vec::with_capacity(rows.len());
            for row in &rows {
                let due: Option<i64> = row.try_get("sla_due").map_err(backend)?;
                items.push((due.map(rows::from_ts), rows::approval(row)?));
            }
            let listed = page_from_overfetch(items, page.limit, |(due, a)| {
                tollgate_store::encode_due_cursor(*due, a.id)
            });
            return Ok(Page {
                items: listed.items.into_iter().map(|(_, a)| a).collect(),
                next_cursor: listed.next_cursor,
            });
        }
        let items = rows
            .iter()
            .map(rows::approval)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |a| {
            encode_id_cursor(a.id)
        }))
    }

    async fn decide_request(&self, request: DecideRequest) -> Result<Decided> {
        self.decider.submit(request).await
    }

    async fn add_comment(&self, comment: &ApprovalComment) -> Result<()> {
        // One statement: the request's existence and the insert are one atomic change.
        let done = sqlx::query(
            "INSERT INTO approval_comments (approval_id, id, author, body, created_at) \
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM approvals WHERE id = ?1)",
        )
        .bind(comment.approval_id.to_string())
        .bind(comment.id.to_string())
        .bind(&comment.author)
        .bind(&comment.body)
        .bind(rows::ts(comment.created_at))
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("approval", comment.approval_id));
        }
        Ok(())
    }

    async fn fire_due_rungs(&self, now: Timestamp, limit: u32) -> Result<Vec<ApprovalRung>> {
        // One writer transaction for the batch: SQLite's single writer makes each rung
        // fire once, whichever worker asks.
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(
            "SELECT * FROM approval_rungs WHERE fired_at IS NULL AND due_at <= ? ORDER BY due_at LIMIT ?",
        )
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut fired = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut rung = rows::rung(row)?;
            let mut approval = match load_approval(&mut tx, rung.approval_id).await {
                Ok(approval) => approval,
                Err(Error::NotFound { .. }) => {
                    sqlx::query("DELETE FROM approval_rungs WHERE approval_id = ?")
                        .bind(rung.approval_id.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let queued = rules::fire_rung(&mut approval, &mut rung, now);
            sqlx::query("UPDATE approvals SET approver_roles = ?, approver_users = ? WHERE id = ?")
                .bind(json(&approval.approver_roles))
                .bind(json(&approval.approver_users))
                .bind(approval.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            sqlx::query(
                "UPDATE approval_rungs SET fired_at = ?, outcome = ? WHERE approval_id = ? AND position = ?",
            )
            .bind(opt_ts(rung.fired_at))
            .bind(rung.outcome.clone())
            .bind(rung.approval_id.to_string())
            .bind(i64::from(rung.position))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            for n in &queued {
                insert_notification(&mut tx, n, false).await?;
            }
            fired.push(rung);
        }
        commit(tx).await?;
        Ok(fired)
    }

    async fn list_rungs(&self, approval_id: Uuid) -> Result<Vec<ApprovalRung>> {
        let mut conn = self.reader.acquire().await.map_err(backend)?;
        load_approval(&mut conn, approval_id).await?;
        let rows =
            sqlx::query("SELECT * FROM approval_rungs WHERE approval_id = ? ORDER BY position")
                .bind(approval_id.to_string())
                .fetch_all(&mut *conn)
                .await
                .map_err(backend)?;
        rows.iter().map(rows::rung).collect()
    }

    async fn list_comments(
        &self,
        approval_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<ApprovalComment>> {
        let after = id_after(page)?;
        let exists = sqlx::query("SELECT 1 FROM approvals WHERE id = ?")
            .bind(approval_id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(Error::not_found("approval", approval_id));
        }
        let found = sqlx::query(
            "SELECT id, author, body, created_at FROM approval_comments \
             WHERE approval_id = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(approval_id.to_string())
        .bind(after.unwrap_or_default())
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        let mut items = Vec::with_capacity(found.len());
        for row in &found {
            let id: String = row.try_get("id").map_err(backend)?;
            items.push(ApprovalComment {
                id: Uuid::parse_str(&id)
                    .map_err(|e| Error::Unreadable(format!("comment id `{id}`: {e}")))?,
                approval_id,
                author: row.try_get("author").map_err(backend)?,
                body: row.try_get("body").map_err(backend)?,
                created_at: rows::from_ts(row.try_get("created_at").map_err(backend)?),
            });
        }
        Ok(page_from_overfetch(items, page.limit, |c| {
            encode_id_cursor(c.id)
        }))
    }

    async fn slas(&self, ids: &[Uuid]) -> Result<Vec<ApprovalSla>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let found = sqlx::query(
            "SELECT approval_id, priority, due_at FROM approval_sla \
             WHERE approval_id IN (SELECT value FROM json_each(?))",
        )
        .bind(json(&ids))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        found.iter().map(sla).collect()
    }

    async fn count_overdue_approvals(&self, now: Timestamp) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM approval_sla s JOIN approvals a ON a.id = s.approval_id \
             WHERE s.due_at IS NOT NULL AND s.due_at <= ? AND a.status = 'pending'",
        )
        .bind(ts(now))
        .fetch_one(&self.reader)
        .await
        .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn assign_approval(
        &self,
        approval_id: Uuid,
        change: &AssignmentChange,
        now: Timestamp,
    ) -> Result<Option<ApprovalAssignment>> {
        // Under the single writer's transaction, the read and the write are one change.
        let mut tx = self.write_tx().await?;
        let approval = load_approval(&mut tx, approval_id).await?;
        let current = sqlx::query(
            "SELECT approval_id, assignee, assigned_by, assigned_at FROM approval_assignments \
             WHERE approval_id = ?",
        )
        .bind(approval_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .as_ref()
        .map(assignment)
        .transpose()?;
        let next = rules::assign(approval_id, approval.status, current.as_ref(), change, now)?;
        if next != current {
            match &next {
                Some(a) => sqlx::query(
                    "INSERT INTO approval_assignments (approval_id, assignee, assigned_by, assigned_at) \
                     VALUES (?, ?, ?, ?) ON CONFLICT (approval_id) DO UPDATE SET \
                     assignee = excluded.assignee, assigned_by = excluded.assigned_by, \
                     assigned_at = excluded.assigned_at",
                )
                .bind(approval_id.to_string())
                .bind(&a.assignee)
                .bind(&a.assigned_by)
                .bind(ts(a.assigned_at)),
                None => sqlx::query("DELETE FROM approval_assignments WHERE approval_id = ?")
                    .bind(approval_id.to_string()),
            }
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        commit(tx).await?;
        Ok(next)
    }

    async fn assignments(&self, ids: &[Uuid]) -> Result<Vec<ApprovalAssignment>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let found = sqlx::query(
            "SELECT approval_id, assignee, assigned_by, assigned_at FROM approval_assignments \
             WHERE approval_id IN (SELECT value FROM json_each(?))",
        )
        .bind(json(&ids))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        found.iter().map(assignment).collect()
    }

    async fn assignments_and_slas(
        &self,
        ids: &[Uuid],
    ) -> Result<(Vec<ApprovalAssignment>, Vec<ApprovalSla>)> {
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        // One statement: one hand-off to a reader thread instead of two.
        let found = sqlx::query(SERVICE_SQL)
            .bind(json(&ids))
            .bind(json(&ids))
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        service_rows(&found)
    }
}

/// The holders and service levels of the requests whose ids (a JSON array) bind its two
/// parameters, as one statement whose rows `kind` tells apart (`hold`, `sla`); read by
/// [`service_rows`].
pub(super) const SERVICE_SQL: &str =
    "SELECT 'hold' AS kind, approval_id, assignee, assigned_by, assigned_at, NULL AS priority, NULL AS due_at \
     FROM approval_assignments WHERE approval_id IN (SELECT value FROM json_each(?)) \
     UNION ALL SELECT 'sla', approval_id, NULL, NULL, NULL, priority, due_at \
     FROM approval_sla WHERE approval_id IN (SELECT value FROM json_each(?))";

/// The rows of [`SERVICE_SQL`] as holders and service levels.
pub(super) fn service_rows<'r>(
    rows: impl IntoIterator<Item = &'r sqlx::sqlite::SqliteRow>,
) -> Result<(Vec<ApprovalAssignment>, Vec<ApprovalSla>)> {
    let (mut held, mut slas) = (Vec::new(), Vec::new());
    for row in rows {
        let kind: &str = row.try_get("kind").map_err(backend)?;
        if kind == "hold" {
            held.push(assignment(row)?);
        } else {
            slas.push(sla(row)?);
        }
    }
    Ok((held, slas))
}

fn sla(row: &sqlx::sqlite::SqliteRow) -> Result<ApprovalSla> {
    let id: String = row.try_get("approval_id").map_err(backend)?;
    let due: Option<i64> = row.try_get("due_at").map_err(backend)?;
    Ok(ApprovalSla {
        approval_id: Uuid::parse_str(&id)
            .map_err(|e| Error::Unreadable(format!("service level of `{id}`: {e}")))?,
        priority: row.try_get("priority").map_err(backend)?,
        due_at: due.map(rows::from_ts),
    })
}

fn assignment(row: &sqlx::sqlite::SqliteRow) -> Result<ApprovalAssignment> {
    let id: String = row.try_get("approval_id").map_err(backend)?;
    Ok(ApprovalAssignment {
        approval_id: Uuid::parse_str(&id)
            .map_err(|e| Error::Unreadable(format!("assignment of `{id}`: {e}")))?,
        assignee: row.try_get("assignee").map_err(backend)?,
        assigned_by: row.try_get("assigned_by").map_err(backend)?,
        assigned_at: rows::from_ts(row.try_get("assigned_at").map_err(backend)?),
    })
}
