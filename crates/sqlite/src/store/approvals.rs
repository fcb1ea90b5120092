//! [`ApprovalStore`] on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::Sqlite;
use sqlx::QueryBuilder;
use tollgate_model::records::{ApprovalRequest, Decision, Principal, Timestamp};
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, ApprovalFilter, ApprovalStore, Continuation, Decided,
    LeaseClaim, Page, PageRequest, Result,
};
use uuid::Uuid;

use crate::rows::{backend, json};
use crate::{rows, SqliteStore};

use super::sql::{id_after, load_approval};

#[async_trait]
impl ApprovalStore for SqliteStore {
    async fn get_approval(&self, id: Uuid) -> Result<ApprovalRequest> {
        let mut conn = self.reader.acquire().await.map_err(backend)?;
        load_approval(&mut conn, id).await
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
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM approvals WHERE 1 = 1");
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
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
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
        self.decide_with(approval_id, decision, decider, claim, now, then.as_ref())
            .await
    }
}
