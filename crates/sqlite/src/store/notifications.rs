//! [`NotificationStore`] on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::Sqlite;
use sqlx::QueryBuilder;
use tollgate_model::records::Notification;
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, NotificationFilter, NotificationStore, Page,
    PageRequest, Result,
};

use crate::rows::{backend, json, ts};
use crate::{rows, SqliteStore};

use super::sql::id_after;

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn put_notification(&self, n: Notification) -> Result<()> {
        sqlx::query(
            "INSERT INTO notifications (id, execution_id, step_id, recipients, message, channel, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET recipients = excluded.recipients, message = excluded.message, channel = excluded.channel, status = excluded.status",
        )
        .bind(n.id.to_string())
        .bind(n.execution_id.to_string())
        .bind(n.step_id)
        .bind(json(&n.recipients))
        .bind(n.message)
        .bind(n.channel)
        .bind(n.status)
        .bind(ts(n.created_at))
        .execute(&self.writer)
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
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM notifications WHERE 1 = 1");
        if let Some(execution) = filter.execution_id {
            q.push(" AND execution_id = ")
                .push_bind(execution.to_string());
        }
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after);
        }
        q.push(" ORDER BY id LIMIT ")
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
}
