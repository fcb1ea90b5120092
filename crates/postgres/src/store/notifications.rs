//! [`NotificationStore`] on PostgreSQL: notifications, and their delivery through the
//! outbox (`notification_deliveries`).

use async_trait::async_trait;
use sqlx::postgres::Postgres;
use sqlx::{QueryBuilder, Row};
use tollgate_model::records::{Notification, Timestamp};
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, rules, Error, LeaseClaim, NotificationFilter,
    NotificationStore, Page, PageRequest, Result, Settle,
};
use uuid::Uuid;

use crate::rows::backend;
use crate::{rows, PgStore};

use super::sql::{
    commit, id_after, insert_notification, limit, refuse, write_delivery, NOTIFICATION_SELECT,
};

#[async_trait]
impl NotificationStore for PgStore {
    async fn put_notification(&self, n: Notification) -> Result<()> {
        let mut tx = self.tx().await?;
        insert_notification(&mut tx, &n, true).await?;
        commit(tx).await
    }

    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> Result<Page<Notification>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Postgres>::new(NOTIFICATION_SELECT);
        q.push(" WHERE TRUE");
        if let Some(execution) = filter.execution_id {
            q.push(" AND n.execution_id = ").push_bind(execution);
        }
        if let Some(after) = after {
            q.push(" AND n.id > ").push_bind(after);
        }
        q.push(" ORDER BY n.id LIMIT ")
            .push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::notification)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |n| {
            encode_id_cursor(n.id)
        }))
    }

    async fn claim_notifications(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<Notification>> {
        // SKIP LOCKED: concurrent senders take disjoint batches instead of queueing.
        let rows = sqlx::query(
            "WITH picked AS (SELECT notification_id FROM notification_deliveries \
               WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $3 AND (claim_until IS NULL OR claim_until <= $3) \
               ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE notification_deliveries d SET claimed_by = $1, claim_until = $2 \
               FROM picked WHERE d.notification_id = picked.notification_id \
               RETURNING d.notification_id, d.kind, d.approval_id, d.subject, d.link_user, d.attempts, d.last_error, d.next_attempt_at, d.sent_at, d.claimed_by) \
             SELECT n.id, n.execution_id, n.step_id, n.recipients, n.message, n.channel, n.status, n.created_at, \
               d.kind, d.approval_id, d.subject, d.link_user, d.attempts, d.last_error, d.next_attempt_at, d.sent_at, d.claimed_by \
             FROM claimed d JOIN notifications n ON n.id = d.notification_id ORDER BY d.next_attempt_at, n.id"
        )
        .bind(&claim.owner)
        .bind(claim.expires_at)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::notification).collect()
    }

    async fn settle_notification(
        &self,
        id: Uuid,
        owner: &str,
        now: Timestamp,
        settle: &Settle,
    ) -> Result<()> {
        let mut tx = self.tx().await?;
        // An inner join: a row lock cannot take the nullable side of an outer join.
        let locked = NOTIFICATION_SELECT.replace("LEFT JOIN", "JOIN");
        let row = sqlx::query(&format!("{locked} WHERE n.id = $1 FOR UPDATE OF d"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            let exists = sqlx::query("SELECT 1 FROM notifications WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?
                .is_some();
            let err = if exists {
                Error::Conflict(format!("notification {id} is not in the outbox"))
            } else {
                Error::not_found("notification", id)
            };
            return refuse(tx, err).await;
        };
        let mut n = rows::notification(&row)?;
        let holder: Option<String> = row.try_get("claimed_by").map_err(backend)?;
        if let Err(err) = rules::settle(&mut n, holder.as_deref(), owner, now, settle) {
            return refuse(tx, err).await;
        }
        sqlx::query("UPDATE notifications SET status = $1 WHERE id = $2")
            .bind(n.status.clone())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        write_delivery(&mut tx, &n, true).await?;
        commit(tx).await
    }
}
