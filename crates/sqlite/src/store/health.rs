//! [`Health`] on SQLite.

use async_trait::async_trait;
use tollgate_store::{Error, Health, Result};

use crate::rows::backend;

/// How long readiness waits for its write.
const WRITE_PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
use crate::SqliteStore;

#[async_trait]
impl Health for SqliteStore {
    async fn ping(&self) -> Result<()> {
        // A stopped batching task would fail every step commit while the file still
        // answers: not ready.
        for (name, running) in [
            ("step commit", self.committer.is_running()),
            ("decision", self.decider.is_running()),
            ("event", self.intake.is_running()),
        ] {
            if !running {
                return Err(Error::Backend(
                    format!("the {name} batching task has stopped").into(),
                ));
            }
        }
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(backend)?;
        // Reads can succeed while writes fail (a full disk, a write lock held by another
        // process): one committed write through the writer, bounded, says whether the
        // server can do its job.
        let probe = sqlx::query("UPDATE health_probe SET at = ? WHERE id = 1")
            .bind(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            )
            .execute(&self.writer);
        match tokio::time::timeout(WRITE_PROBE_LIMIT, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(Error::Backend(
                format!("the database refuses writes: {err}").into(),
            )),
            Err(_) => Err(Error::Backend(
                format!(
                    "the writer did not complete a write within {} s",
                    WRITE_PROBE_LIMIT.as_secs()
                )
                .into(),
            )),
        }
    }
}
