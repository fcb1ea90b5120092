//! [`ResumeRequestStore`] on SQLite.

use async_trait::async_trait;
use tollgate_model::records::ResumeRequest;
use tollgate_store::{Error, Result, ResumeRequestStore};
use uuid::Uuid;

use crate::rows::backend;
use crate::{rows, SqliteStore};

use super::sql::insert_resume_request;

#[async_trait]
impl ResumeRequestStore for SqliteStore {
    async fn record_resume_request(&self, request: ResumeRequest) -> Result<()> {
        let mut conn = self.writer.acquire().await.map_err(backend)?;
        insert_resume_request(&mut conn, &request).await
    }

    async fn list_resume_requests(&self, execution_id: Uuid) -> Result<Vec<ResumeRequest>> {
        let mut conn = self.reader.acquire().await.map_err(backend)?;
        let exists = sqlx::query("SELECT 1 FROM executions WHERE id = ?")
            .bind(execution_id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(Error::not_found("execution", execution_id));
        }
        let rows = sqlx::query("SELECT * FROM resume_requests WHERE execution_id = ? ORDER BY seq")
            .bind(execution_id.to_string())
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        rows.iter().map(rows::resume_request).collect()
    }
}
