//! The backend contract suite on real PostgreSQL, plus PostgreSQL's own tests.
//!
//! Needs `TOLLGATE_TEST_DATABASE_URL` (an account that may create databases); `cargo xtask
//! test` provides one, starting a throwaway cluster when the variable is not set. Each
//! test gets its own database.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod postgres;

use std::sync::Arc;

use tollgate_postgres::{PgOptions, PgStore};
use tollgate_store::Store;

pub fn admin_url() -> String {
    std::env::var("TOLLGATE_TEST_DATABASE_URL").expect(
        "TOLLGATE_TEST_DATABASE_URL is not set: run `cargo xtask test`, which provides a PostgreSQL server, or point it at one (postgres://user@host:port/postgres)",
    )
}

/// A new, migrated database for one test.
pub async fn fresh_database() -> (PgStore, String) {
    let url = tollgate_postgres::testing::fresh_database_url("test")
        .await
        .unwrap();
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
