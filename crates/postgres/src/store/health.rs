//! [`Health`] on PostgreSQL.

use async_trait::async_trait;
use tollgate_store::{Error, Health, Result};

use crate::rows::backend;

/// How long readiness waits for its write.
const WRITE_PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
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
        // A batch connection that stopped answering holds every request of its kind
        // queued behind it until the call bound ends it: not ready meanwhile.
        if let Some(busy) = self.longest_batch().filter(|b| *b > WRITE_PROBE_LIMIT) {
            return Err(Error::Unavailable(format!(
                "a batch write has waited {busy:?} for the database"
            )));
        }
        // A database that answers reads may still refuse writes (a full disk, a
        // read-only standby after a failover): one committed write, bounded.
        let probe =
            sqlx::query("UPDATE health_probe SET at = now() WHERE id = 1").execute(&self.pool);
        match tokio::time::timeout(WRITE_PROBE_LIMIT, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(backend(err)),
            Err(_) => Err(Error::Unavailable(format!(
                "the database did not complete a write within {} s",
                WRITE_PROBE_LIMIT.as_secs()
            ))),
        }
    }
}
