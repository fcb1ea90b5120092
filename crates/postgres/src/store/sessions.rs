//! [`SessionStore`] on PostgreSQL: console sessions.

use async_trait::async_trait;
use tollgate_model::records::{ConsoleSession, Timestamp};
use tollgate_store::{Result, SessionStore};

use crate::rows::{self, backend};
use crate::PgStore;

#[async_trait]
impl SessionStore for PgStore {
    async fn create_session(&self, session: ConsoleSession, now: Timestamp) -> Result<()> {
        sqlx::query(
            "WITH gone AS (DELETE FROM console_sessions WHERE expires_at <= $1) \
             INSERT INTO console_sessions (id_hash, key_hash, csrf, created_at, expires_at) VALUES ($2, $3, $4, $5, $6)",
        )
        .bind(now)
        .bind(&session.id_hash)
        .bind(&session.key_hash)
        .bind(&session.csrf)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &str, now: Timestamp) -> Result<Option<ConsoleSession>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(console_sessions),
            " FROM console_sessions WHERE id_hash = $1 AND expires_at > $2"
        ))
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(rows::console_session).transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
