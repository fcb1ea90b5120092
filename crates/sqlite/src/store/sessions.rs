//! [`SessionStore`] on SQLite: console sessions.

use async_trait::async_trait;
use tollgate_model::records::{ConsoleSession, Timestamp};
use tollgate_store::{Result, SessionStore};

use crate::rows::{self, backend, ts};
use crate::SqliteStore;

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, session: ConsoleSession, now: Timestamp) -> Result<()> {
        let done = sqlx::query(
            "BEGIN IMMEDIATE; DELETE FROM console_sessions WHERE expires_at <= ?; \
             INSERT INTO console_sessions (id_hash, key_hash, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?); COMMIT;",
        )
        .bind(ts(now))
        .bind(&session.id_hash)
        .bind(&session.key_hash)
        .bind(&session.csrf)
        .bind(ts(session.created_at))
        .bind(ts(session.expires_at));
        self.held().await?.fetch_all(done).await.map_err(backend)?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &str, now: Timestamp) -> Result<Option<ConsoleSession>> {
        let row =
            sqlx::query("SELECT * FROM console_sessions WHERE id_hash = ? AND expires_at > ?")
                .bind(id_hash)
                .bind(ts(now))
                .fetch_optional(&self.reader)
                .await
                .map_err(backend)?;
        row.as_ref().map(rows::console_session).transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
