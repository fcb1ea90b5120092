//! [`ApiKeyStore`] on PostgreSQL.

use async_trait::async_trait;
use tollgate_model::records::ApiKey;
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, ApiKeyStore, Error, Page, PageRequest, Result,
};
use uuid::Uuid;

use crate::rows::backend;
use crate::{rows, PgStore};

use super::sql::{id_after, limit};

#[async_trait]
impl ApiKeyStore for PgStore {
    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey> {
        let result = sqlx::query("INSERT INTO api_keys (id, name, roles, key_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(key.id)
            .bind(key.name.clone())
            .bind(key.roles.clone())
            .bind(key.key_hash.clone())
            .bind(key.created_at)
            .execute(&self.pool)
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
        let after = id_after(page)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(api_keys),
            " FROM api_keys WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let items = rows.iter().map(rows::api_key).collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |k| {
            encode_id_cursor(k.id)
        }))
    }

    async fn delete_api_key(&self, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("api key", id));
        }
        Ok(())
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(api_keys),
            " FROM api_keys WHERE key_hash = $1"
        ))
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(rows::api_key).transpose()
    }
}
