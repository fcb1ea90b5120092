//! [`Health`] on SQLite.

use async_trait::async_trait;
use tollgate_store::{Error, Health, Result};

use crate::rows::backend;
use crate::SqliteStore;

#[async_trait]
impl Health for SqliteStore {
    async fn ping(&self) -> Result<()> {
        // A stopped batching task would fail every step commit while the file still
        // answers: not ready.
        if !self.committer.is_running() {
            return Err(Error::Backend(
                "the step commit batching task has stopped".into(),
            ));
        }
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
