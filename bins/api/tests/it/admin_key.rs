//! The first admin key: made once per database, never again on a fresh data directory,
//! optionally supplied from a secret, and never lost to a crash between writing its
//! file and registering it.

use std::path::Path;
use std::time::Duration;

use tollgate_api::app::{ensure_admin_key, AdminKey, BootstrapAdminKey};
use tollgate_api::auth::{generate_key, hash_key};
use tollgate_bootstrap::DatabaseArgs;
use tollgate_store::{ApiKeyStore, PageRequest, Store};

use crate::fresh_pg_database;

async fn open(url: &str, dir: &Path) -> std::sync::Arc<dyn Store> {
    DatabaseArgs {
        data_dir: dir.to_path_buf(),
        database_url: Some(url.to_owned()),
        database_max_connections: 4,
        database_statement_timeout: Duration::from_secs(30),
        database_lock_timeout: Duration::from_secs(10),
        database_idle_in_transaction_timeout: Duration::from_secs(60),
        migrate: tollgate_bootstrap::MigrateMode::Auto,
        max_clock_skew: Duration::from_secs(5),
        sqlite_synchronous: tollgate_bootstrap::config::SqliteSync::Normal,
    }
    .open()
    .await
    .unwrap()
    .store
}

async fn admin_keys(store: &dyn ApiKeyStore) -> Vec<String> {
    store
        .list_api_keys(&PageRequest::first(100))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|k| k.roles.iter().any(|r| r == "admin"))
        .map(|k| k.key_hash)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_data_directories_on_one_database_make_one_admin_key() {
    let url = fresh_pg_database().await;
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (sa, sb) = (open(&url, a.path()).await, open(&url, b.path()).await);
    // Two processes starting at once on an empty database: one makes the key.
    let (ka, kb) = tokio::join!(
        ensure_admin_key(sa.as_ref(), a.path(), BootstrapAdminKey::Auto, None),
        ensure_admin_key(sb.as_ref(), b.path(), BootstrapAdminKey::Auto, None),
    );
    let made: Vec<&AdminKey> = [ka.as_ref().unwrap(), kb.as_ref().unwrap()]
        .into_iter()
        .filter(|k| matches!(k, AdminKey::Created { .. }))
        .collect();
    assert_eq!(made.len(), 1, "{ka:?} {kb:?}");
    assert_eq!(admin_keys(sa.as_ref()).await.len(), 1);
    // A restart on a fresh volume (a third data directory) makes none.
    let sc = open(&url, c.path()).await;
    let kc = ensure_admin_key(sc.as_ref(), c.path(), BootstrapAdminKey::Auto, None)
        .await
        .unwrap();
    assert!(matches!(kc, AdminKey::InDatabase), "{kc:?}");
    assert!(!c.path().join("admin.key").exists());
    assert_eq!(admin_keys(sc.as_ref()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplied_key_or_none_at_all() {
    let url = fresh_pg_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&url, dir.path()).await;
    // Off: nothing is made.
    let off = ensure_admin_key(store.as_ref(), dir.path(), BootstrapAdminKey::Off, None)
        .await
        .unwrap();
    assert!(matches!(off, AdminKey::Off), "{off:?}");
    assert!(admin_keys(store.as_ref()).await.is_empty());
    // A malformed secret is refused, saying what a key looks like.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "hunter2\n").unwrap();
    let err = ensure_admin_key(
        store.as_ref(),
        dir.path(),
        BootstrapAdminKey::Off,
        Some(&secret),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("`tg_` followed by 64 hex digits"),
        "{err}"
    );
    // A well-formed one becomes the admin key, and stays it on every restart.
    let key = generate_key().unwrap();
    std::fs::write(&secret, format!("{key}\n")).unwrap();
    for _ in 0..2 {
        let got = ensure_admin_key(
            store.as_ref(),
            dir.path(),
            BootstrapAdminKey::Off,
            Some(&secret),
        )
        .await
        .unwrap();
        assert!(matches!(got, AdminKey::Supplied { .. }), "{got:?}");
    }
    assert_eq!(admin_keys(store.as_ref()).await, vec![hash_key(&key)]);
    // Another secret, while the database has an admin key, is not registered.
    std::fs::write(&secret, generate_key().unwrap()).unwrap();
    let other = ensure_admin_key(
        store.as_ref(),
        dir.path(),
        BootstrapAdminKey::Off,
        Some(&secret),
    )
    .await
    .unwrap();
    assert!(matches!(other, AdminKey::Unknown { .. }), "{other:?}");
    assert_eq!(admin_keys(store.as_ref()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_key_file_and_the_registration_loses_nothing() {
    let url = fresh_pg_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&url, dir.path()).await;
    // Killed before registering: the pending file's key is unknown; it is dropped and a
    // new key made.
    let unregistered = generate_key().unwrap();
    std::fs::write(dir.path().join("admin.key.new"), &unregistered).unwrap();
    let made = ensure_admin_key(store.as_ref(), dir.path(), BootstrapAdminKey::Auto, None)
        .await
        .unwrap();
    let AdminKey::Created { key, .. } = made else {
        panic!("{made:?}")
    };
    assert_ne!(key, unregistered);
    assert!(!dir.path().join("admin.key.new").exists());
    // Killed after registering, before the rename: the next start finds the pending
    // key registered and keeps it — the database's only admin key is not lost.
    std::fs::rename(
        dir.path().join("admin.key"),
        dir.path().join("admin.key.new"),
    )
    .unwrap();
    let again = ensure_admin_key(store.as_ref(), dir.path(), BootstrapAdminKey::Auto, None)
        .await
        .unwrap();
    assert!(matches!(again, AdminKey::Existing { .. }), "{again:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("admin.key"))
            .unwrap()
            .trim(),
        key
    );
    assert_eq!(admin_keys(store.as_ref()).await, vec![hash_key(&key)]);
}
