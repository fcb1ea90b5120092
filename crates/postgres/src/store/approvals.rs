//! [`ApprovalStore`] on PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::Postgres;
use sqlx::QueryBuilder;
use tollgate_model::records::{ApprovalRequest, Decision, Principal, Timestamp};
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
}
