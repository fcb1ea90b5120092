//! The backend contract suite on SQLite (a real file per test), plus SQLite's own
//! concurrency and durability tests.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tollgate_sqlite::{SqliteOptions, SqliteStore};
use tollgate_store::Store;

/// A fresh database file for one test, in cargo's per-target temporary directory. Files
/// from earlier runs older than an hour are removed so the directory does not grow.
pub fn fresh_path() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sqlite-tests");
    std::fs::create_dir_all(&dir).unwrap();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    dir.join(format!("{}.db", uuid::Uuid::now_v7()))
}

pub async fn fresh() -> SqliteStore {
    SqliteStore::open(&SqliteOptions::new(fresh_path()))
        .await
        .unwrap()
}

tollgate_store::contract_tests!(|| async { Arc::new(fresh().await) as Arc<dyn Store> });
