//! [`ApiKeyStore`] on SQLite.

use async_trait::async_trait;
use tollgate_model::records::ApiKey;
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, ApiKeyStore, Error, Page, PageRequest, Result,
};
use uuid::Uuid;

use crate::rows::{backend, json, ts};
use crate::{rows, SqliteStore};

use super::sql::id_after;

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey> {
        let result = sqlx::query(
            "INSERT INTO api_keys (id, name, roles, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(key.id.to_string())
        .bind(key.name.clone())
        .bind(json(&key.roles))
        .bind(key.key_hash.clone())
        .bind(ts(key.created_at))
        .execute(&self.writer)
        .await
        .map_err(backend);
        match result {
            Err(Error::Conflict(_)) => Err(Error::Conflict(format!(
                "an API key named `{}` already exists",
                key.name
            ))),
            Err(other) => Err(other),
            Ok(_) => Ok(key),
        }
    }

    async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKey>> {
        let after = id_after(page)?.unwrap_or_default();
        let rows = sqlx::query("SELECT * FROM api_keys WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        let items = rows.iter().map(rows::api_key).collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |k| {
            encode_id_cursor(k.id)
        }))
    }

    async fn delete_api_key(&self, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("api key", id));
        }
        Ok(())
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE key_hash = ?")
            .bind(key_hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::api_key).transpose()
    }
}
