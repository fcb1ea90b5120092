//! [`ResumeRequestStore`] on PostgreSQL.

use async_trait::async_trait;
use tollgate_model::records::ResumeRequest;
use tollgate_store::{Error, Result, ResumeRequestStore};
use uuid::Uuid;

use crate::rows::backend;
use crate::{rows, PgStore};

use super::sql::insert_resume_request;

#[async_trait]
impl ResumeRequestStore for PgStore {
    async fn record_resume_request(&self, request: ResumeRequest) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        insert_resume_request(&mut conn, &request).await
    }

    async fn list_resume_requests(&self, execution_id: Uuid) -> Result<Vec<ResumeRequest>> {
        let exists = sqlx::query("SELECT 1 FROM executions WHERE id = $1")
            .bind(execution_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(Error::not_found("execution", execution_id));
        }
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(resume_requests),
            " FROM resume_requests WHERE execution_id = $1 ORDER BY seq"
        ))
        .bind(execution_id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::resume_request).collect()
    }
}
