//! [`NotificationStore`] on PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::Postgres;
use sqlx::QueryBuilder;
use tollgate_model::records::Notification;
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, NotificationFilter, NotificationStore, Page,
    PageRequest, Result,
};

use crate::rows::backend;
use crate::{rows, PgStore};

use super::sql::{id_after, limit};

#[async_trait]
impl NotificationStore for PgStore {
    async fn put_notification(&self, n: Notification) -> Result<()> {
        sqlx::query(
            "INSERT INTO notifications (id, execution_id, step_id, recipients, message, channel, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET recipients = EXCLUDED.recipients, message = EXCLUDED.message, channel = EXCLUDED.channel, status = EXCLUDED.status",
        )
        .bind(n.id)
        .bind(n.execution_id)
        .bind(n.step_id)
        .bind(n.recipients)
        .bind(n.message)
        .bind(n.channel)
        .bind(n.status)
        .bind(n.created_at)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> Result<Page<Notification>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            columns!(notifications),
            " FROM notifications WHERE TRUE"
        ));
        if let Some(execution) = filter.execution_id {
            q.push(" AND execution_id = ").push_bind(execution);
        }
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after);
        }
        q.push(" ORDER BY id LIMIT ")
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
}
