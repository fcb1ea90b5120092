//! [`ApprovalStore`] on PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::Postgres;
use sqlx::QueryBuilder;
use sqlx::Row;
use tollgate_model::records::{ApprovalComment, ApprovalRequest, Decision, Principal, Timestamp};
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, ApprovalFilter, ApprovalStore, Continuation, Decided,
    LeaseClaim, Page, PageRequest, Result,
};
use uuid::Uuid;

use crate::rows::backend;
use crate::{rows, PgStore};

use super::decisions::DecideRequest;
use super::sql::{id_after, limit, load_approval};

#[async_trait]
impl ApprovalStore for PgStore {
    async fn get_approval(&self, id: Uuid) -> Result<ApprovalRequest> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        load_approval(&mut conn, id, false).await
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
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            columns!(approvals),
            " FROM approvals WHERE TRUE"
        ));
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
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::approval)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |a| {
            encode_id_cursor(a.id)
        }))
    }

    async fn decide(
        &self,
        approval_id: Uuid,
        decision: Decision,
        decider: &Principal,
        claim: &LeaseClaim,
        now: Timestamp,
        then: Option<Continuation>,
    ) -> Result<Decided> {
        self.decider
            .submit(DecideRequest::new(
                approval_id,
                decision,
                decider,
                claim,
                now,
                then,
            ))
            .await
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
}
