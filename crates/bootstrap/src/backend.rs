//! Opening the configured database: the only place that names a concrete backend.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tollgate_postgres::{PgOptions, PgStore};
use tollgate_sqlite::{SqliteOptions, SqliteStore};
use tollgate_store::Store;

use crate::config::{DatabaseArgs, DatabaseTarget};
use crate::Error;

/// Which backend is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One SQLite file: one process serves it.
    Sqlite,
    /// PostgreSQL: any number of API and worker processes.
    Postgres,
}

/// An open store with its wake-up signal.
#[derive(Clone)]
pub struct Backend {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Fires when another writer (or this one) made work due: new gates, decisions,
    /// events.
    pub wakeups: Arc<Notify>,
    /// Which backend.
    pub kind: Kind,
    closer: Closer,
}

#[derive(Clone)]
enum Closer {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Opens the database and applies pending migrations.
    pub async fn open(args: &DatabaseArgs) -> Result<Self, Error> {
        match args.target()? {
            DatabaseTarget::Sqlite(path) => {
                let store = SqliteStore::open(&SqliteOptions::new(&path)).await?;
                Ok(Self {
                    store: Arc::new(store.clone()),
                    wakeups: store.wakeups(),
                    kind: Kind::Sqlite,
                    closer: Closer::Sqlite(store),
                })
            }
            DatabaseTarget::Postgres(url) => {
                let mut options = PgOptions::new(url);
                options.max_connections = args.database_max_connections;
                options.acquire_timeout = Duration::from_secs(5);
                options.session = tollgate_postgres::PgSession {
                    statement_timeout: args.database_statement_timeout,
                    lock_timeout: args.database_lock_timeout,
                    idle_in_transaction_timeout: args.database_idle_in_transaction_timeout,
                    // The process in `pg_stat_activity`: `tollgate-api`, `tollgate-resume-worker`.
                    application_name: std::env::current_exe()
                        .ok()
                        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                        .filter(|name| name.starts_with("tollgate"))
                        .unwrap_or_else(|| "tollgate".into()),
                };
                let store = PgStore::connect(&options)
                    .await
                    .map_err(|source| Error::Postgres {
                        what: "connect to",
                        source,
                    })?;
                store.migrate().await.map_err(|source| Error::Postgres {
                    what: "migrate",
                    source,
                })?;
                store.open_batch_connections();
                Ok(Self {
                    store: Arc::new(store.clone()),
                    wakeups: store.wakeups(),
                    kind: Kind::Postgres,
                    closer: Closer::Postgres(store),
                })
            }
        }
    }

    /// Closes connections (after the last writer finished).
    pub async fn close(&self) {
        match &self.closer {
            Closer::Sqlite(store) => store.close().await,
            Closer::Postgres(store) => store.close().await,
        }
    }
}
