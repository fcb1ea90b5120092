//! The backend contract suite on real PostgreSQL, plus PostgreSQL's own tests.
//!
//! Needs `TOLLGATE_TEST_DATABASE_URL` (an account that may create databases); `cargo xtask
//! test` provides one, starting a throwaway cluster when the variable is not set. Each
//! test gets its own database.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod postgres;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use tollgate_postgres::{PgOptions, PgStore};
use tollgate_store::Store;

pub fn admin_url() -> String {
    std::env::var("TOLLGATE_TEST_DATABASE_URL").expect(
        "TOLLGATE_TEST_DATABASE_URL is not set: run `cargo xtask test`, which provides a PostgreSQL server, or point it at one (postgres://user@host:port/postgres)",
    )
}

/// A new, migrated database for one test.
pub async fn fresh_database() -> (PgStore, String) {
    let admin: PgConnectOptions = admin_url().parse().unwrap();
    let mut conn: PgConnection = admin.connect().await.unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Databases of earlier runs that are over an hour old are dropped.
    for row in sqlx::query("SELECT datname FROM pg_database WHERE datname LIKE 'tollgate_test_%'")
        .fetch_all(&mut conn)
        .await
        .unwrap()
    {
        let name: String = row.get("datname");
        let created: u64 = name
            .split('_')
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(created) > 3600 {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    let name = format!("tollgate_test_{now}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let url = admin.database(&name).to_url_lossy().to_string();
    let store = PgStore::connect(&PgOptions {
        max_connections: 8,
        ..PgOptions::new(&url)
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    // As the binaries do: every contract test then decides on connections whose
    // statements were prepared ahead.
    store.open_batch_connections();
    (store, url)
}

tollgate_store::contract_tests!(|| async { Arc::new(fresh_database().await.0) as Arc<dyn Store> });
