//! [`ApprovalStore`] on PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::Postgres;
use sqlx::QueryBuilder;
use sqlx::Row;
use tollgate_model::records::{
    ApprovalAssignment, ApprovalComment, ApprovalRequest, ApprovalRung, ApprovalSla, Timestamp,
};
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, rules, ApprovalFilter, ApprovalPin, ApprovalStore,
    AssignmentChange, Decided, Error, Page, PageRequest, Result,
};
use uuid::Uuid;

use crate::rows::backend;
use crate::{rows, PgStore};

use super::sql::{commit, id_after, insert_notification, limit, load_approval, RUNG_COLUMNS};
use tollgate_store::decision_batch::DecideRequest;

#[async_trait]
impl ApprovalStore for PgStore {
    async fn get_approval(&self, id: Uuid) -> Result<ApprovalRequest> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        load_approval(&mut conn, id, false).await
    }

    async fn approval_pin(&self, approval_id: Uuid) -> Result<ApprovalPin> {
        let row = sqlx::query(
            "SELECT a.execution_id, a.step_id, e.snapshot_id FROM approvals a \
             JOIN executions e ON e.id = a.execution_id WHERE a.id = $1",
        )
        .bind(approval_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or_else(|| Error::not_found("approval", approval_id))?;
        Ok(ApprovalPin {
            execution_id: row.try_get("execution_id").map_err(backend)?,
            step_id: row.try_get("step_id").map_err(backend)?,
            snapshot_id: row.try_get("snapshot_id").map_err(backend)?,
        })
    }

    async fn count_pending_approvals(&self) -> Result<u64> {
        // The pending requests' partial index (`approvals_pending`) answers this.
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM approvals WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRequest>> {
        // In due order the sort key is the due time, none last (as infinity).
        const DUE_KEY: &str = "COALESCE(s.due_at, 'infinity'::timestamptz)";
        let (after, due_after) = if filter.by_due {
            (
                None,
                tollgate_store::decode_due_cursor(page.cursor.as_deref())?,
            )
        } else {
            (id_after(page)?, None)
        };
        let mut q = QueryBuilder::<Postgres>::new(if filter.by_due {
            concat!(
                "SELECT ",
                columns!(approvals),
                ", s.due_at AS sla_due FROM approvals LEFT JOIN approval_sla s ON s.approval_id = approvals.id WHERE TRUE"
            )
        } else {
            concat!("SELECT ", columns!(approvals), " FROM approvals WHERE TRUE")
        });
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(role) = &filter.role {
            q.push(" AND ")
                .push_bind(role.clone())
                .push(" = ANY(approver_roles)");
        }
        if let Some(execution) = filter.execution_id {
            q.push(" AND execution_id = ").push_bind(execution);
        }
        if let Some(p) = &filter.decidable_by {
            q.push(" AND status = 'pending' AND (")
                .push_bind(p.is_admin())
                .push(" OR ")
                .push_bind(p.subject.clone())
                .push(" = ANY(approver_users) OR approver_roles && ")
                .push_bind(p.roles.clone())
                .push(") AND (allow_self_approval OR requested_by IS NULL OR requested_by <> ")
                .push_bind(p.subject.clone())
                .push(") AND NOT decisions @> jsonb_build_array(jsonb_build_object('decided_by', ")
                .push_bind(p.subject.clone())
                .push("::text))");
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
            q.push(" AND requested_at < ").push_bind(before);
        }
        if let Some(after) = after {
            q.push(" AND id < ").push_bind(after);
        }
        if let Some((due, id)) = due_after {
            q.push(format!(" AND ({DUE_KEY} > COALESCE("))
                .push_bind(due)
                .push(format!(
                    "::timestamptz, 'infinity') OR ({DUE_KEY} = COALESCE("
                ))
                .push_bind(due)
                .push("::timestamptz, 'infinity') AND id < ")
                .push_bind(id)
                .push("))");
        }
        if filter.by_due {
            q.push(format!(" ORDER BY {DUE_KEY}, id DESC LIMIT "));
        } else {
            q.push(" ORDER BY id DESC LIMIT ");
        }
        q.push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        if filter.by_due {
            let mut items = Vec::with_capacity(rows.len());
            for row in &rows {
                let due: Option<Timestamp> = row.try_get("sla_due").map_err(backend)?;
                items.push((due, rows::approval(row)?));
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
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM approvals WHERE id = $1)",
        )
        .bind(comment.approval_id)
        .bind(comment.id)
        .bind(&comment.author)
        .bind(&comment.body)
        .bind(comment.created_at)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(tollgate_store::Error::not_found(
                "approval",
                comment.approval_id,
            ));
        }
        Ok(())
    }

    async fn fire_due_rungs(&self, now: Timestamp, limit: u32) -> Result<Vec<ApprovalRung>> {
        // SKIP LOCKED: a rung another worker is firing is passed over, and once it
        // commits it is no longer due, so each rung fires once.
        let mut tx = self.tx().await?;
        let rows = sqlx::query(&format!(
            "SELECT {RUNG_COLUMNS} FROM approval_rungs WHERE fired_at IS NULL AND due_at <= $1              ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut fired = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut rung = rows::rung(row)?;
            let mut approval = match load_approval(&mut tx, rung.approval_id, true).await {
                Ok(approval) => approval,
                Err(Error::NotFound { .. }) => {
                    sqlx::query("DELETE FROM approval_rungs WHERE approval_id = $1")
                        .bind(rung.approval_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let queued = rules::fire_rung(&mut approval, &mut rung, now);
            sqlx::query(
                "UPDATE approvals SET approver_roles = $1, approver_users = $2 WHERE id = $3",
            )
            .bind(&approval.approver_roles)
            .bind(&approval.approver_users)
            .bind(approval.id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            sqlx::query(
                "UPDATE approval_rungs SET fired_at = $1, outcome = $2 WHERE approval_id = $3 AND position = $4",
            )
            .bind(rung.fired_at)
            .bind(rung.outcome.clone())
            .bind(rung.approval_id)
            .bind(i32::try_from(rung.position).unwrap_or(i32::MAX))
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
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        load_approval(&mut conn, approval_id, false).await?;
        let rows = sqlx::query(&format!(
            "SELECT {RUNG_COLUMNS} FROM approval_rungs WHERE approval_id = $1 ORDER BY position"
        ))
        .bind(approval_id)
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
        let exists = sqlx::query("SELECT 1 FROM approvals WHERE id = $1")
            .bind(approval_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(tollgate_store::Error::not_found("approval", approval_id));
        }
        let found = sqlx::query(
            "SELECT id, author, body, created_at FROM approval_comments \
             WHERE approval_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(approval_id)
        .bind(after.unwrap_or(Uuid::nil()))
        .bind(limit(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut items = Vec::with_capacity(found.len());
        for row in &found {
            items.push(ApprovalComment {
                id: row.try_get("id").map_err(backend)?,
                approval_id,
                author: row.try_get("author").map_err(backend)?,
                body: row.try_get("body").map_err(backend)?,
                created_at: row.try_get("created_at").map_err(backend)?,
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
        let found = sqlx::query(
            "SELECT approval_id, priority, due_at FROM approval_sla WHERE approval_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        found.iter().map(sla).collect()
    }

    async fn count_overdue_approvals(&self, now: Timestamp) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM approval_sla s JOIN approvals a ON a.id = s.approval_id \
             WHERE s.due_at IS NOT NULL AND s.due_at <= $1 AND a.status = 'pending'",
        )
        .bind(now)
        .fetch_one(&self.pool)
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
        // The request row is locked first (as a decision locks it), so a claim and a
        // decision, or two claims, run one after the other.
        let mut tx = self.tx().await?;
        let approval = load_approval(&mut tx, approval_id, true).await?;
        let current = sqlx::query(
            "SELECT approval_id, assignee, assigned_by, assigned_at FROM approval_assignments \
             WHERE approval_id = $1",
        )
        .bind(approval_id)
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
                     VALUES ($1, $2, $3, $4) ON CONFLICT (approval_id) DO UPDATE SET \
                     assignee = excluded.assignee, assigned_by = excluded.assigned_by, \
                     assigned_at = excluded.assigned_at",
                )
                .bind(approval_id)
                .bind(&a.assignee)
                .bind(&a.assigned_by)
                .bind(a.assigned_at),
                None => {
                    sqlx::query("DELETE FROM approval_assignments WHERE approval_id = $1")
                        .bind(approval_id)
                }
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
        let found = sqlx::query(
            "SELECT approval_id, assignee, assigned_by, assigned_at FROM approval_assignments \
             WHERE approval_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
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
        // One statement: one round trip and one connection instead of two.
        let found = sqlx::query(
            "SELECT true AS hold, approval_id, assignee, assigned_by, assigned_at, NULL::text AS priority, NULL::timestamptz AS due_at \
             FROM approval_assignments WHERE approval_id = ANY($1) \
             UNION ALL SELECT false, approval_id, NULL, NULL, NULL, priority, due_at \
             FROM approval_sla WHERE approval_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let (mut held, mut slas) = (Vec::new(), Vec::new());
        for row in &found {
            if row.try_get::<bool, _>("hold").map_err(backend)? {
                held.push(assignment(row)?);
            } else {
                slas.push(sla(row)?);
            }
        }
        Ok((held, slas))
    }
}

fn sla(row: &sqlx::postgres::PgRow) -> Result<ApprovalSla> {
    Ok(ApprovalSla {
        approval_id: row.try_get("approval_id").map_err(backend)?,
        priority: row.try_get("priority").map_err(backend)?,
        due_at: row.try_get("due_at").map_err(backend)?,
    })
}

fn assignment(row: &sqlx::postgres::PgRow) -> Result<ApprovalAssignment> {
    Ok(ApprovalAssignment {
        approval_id: row.try_get("approval_id").map_err(backend)?,
        assignee: row.try_get("assignee").map_err(backend)?,
        assigned_by: row.try_get("assigned_by").map_err(backend)?,
        assigned_at: row.try_get("assigned_at").map_err(backend)?,
    })
}
