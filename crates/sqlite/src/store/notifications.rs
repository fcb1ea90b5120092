//! [`NotificationStore`] on SQLite: notifications, and their delivery through the outbox
//! (`notification_deliveries`).

use async_trait::async_trait;
use sqlx::sqlite::Sqlite;
use sqlx::{QueryBuilder, Row};
use tollgate_model::records::{Notification, Timestamp};
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, rules, Error, LeaseClaim, NotificationFilter,
    NotificationStore, Page, PageRequest, Result, Settle,
};
use uuid::Uuid;

use crate::rows::{backend, ts};
use crate::{rows, SqliteStore};

use super::sql::{commit, id_after, insert_notification, write_delivery, NOTIFICATION_SELECT};

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn put_notification(&self, n: Notification) -> Result<()> {
        let mut tx = self.write_tx().await?;
        insert_notification(&mut tx, &n, true).await?;
        commit(tx).await
    }

    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> Result<Page<Notification>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Sqlite>::new(NOTIFICATION_SELECT);
        q.push(" WHERE 1 = 1");
        if let Some(execution) = filter.execution_id {
            q.push(" AND n.execution_id = ")
                .push_bind(execution.to_string());
        }
        if let Some(after) = after {
            q.push(" AND n.id > ").push_bind(after);
        }
        q.push(" ORDER BY n.id LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
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
        // One writer transaction: the pick and the claim cannot interleave with another
        // worker's (SQLite has one writer).
        let mut tx = self.write_tx().await?;
        let ids: Vec<String> = sqlx::query(
            "UPDATE notification_deliveries SET claimed_by = ?1, claim_until = ?2 \
             WHERE notification_id IN (SELECT notification_id FROM notification_deliveries \
               WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?3 AND (claim_until IS NULL OR claim_until <= ?3) \
               ORDER BY next_attempt_at LIMIT ?4) \
             RETURNING notification_id",
        )
        .bind(claim.owner.clone())
        .bind(ts(claim.expires_at))
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| r.try_get("notification_id"))
        .collect::<Result<_, _>>()
        .map_err(backend)?;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(&format!("{NOTIFICATION_SELECT} WHERE n.id = ?"))
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
            claimed.push(rows::notification(&row)?);
        }
        commit(tx).await?;
        claimed.sort_by_key(|n| (n.next_attempt_at, n.id));
        Ok(claimed)
    }

    async fn settle_notification(
        &self,
        id: Uuid,
        owner: &str,
        now: Timestamp,
        settle: &Settle,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!("{NOTIFICATION_SELECT} WHERE n.id = ?"))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Err(Error::not_found("notification", id));
        };
        let mut n = rows::notification(&row)?;
        let holder: Option<String> = row.try_get("claimed_by").map_err(backend)?;
        rules::settle(&mut n, holder.as_deref(), owner, now, settle)?;
        sqlx::query("UPDATE notifications SET status = ? WHERE id = ?")
            .bind(n.status.clone())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        write_delivery(&mut tx, &n, true).await?;
        commit(tx).await
    }
}
