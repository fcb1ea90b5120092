//! [`Health`] on PostgreSQL.

use async_trait::async_trait;
use tollgate_store::{Error, Health, Result};

use crate::rows::backend;
use crate::PgStore;

#[async_trait]
impl Health for PgStore {
    async fn ping(&self) -> Result<()> {
        // A batching task that stopped would fail every write of its kind while the
        // database still answers: not ready.
        for (name, running) in [
            ("step commit", self.committer.is_running()),
            ("decision", self.decider.is_running()),
            ("event", self.events.is_running()),
            ("trigger lookup", self.triggered.is_running()),
            ("waiting-execution scan", self.waiting.is_running()),
        ] {
            if !running {
                return Err(Error::Backend(
                    format!("the {name} batching task has stopped").into(),
                ));
            }
        }
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
