//! [`ApiKeyStore`](crate::ApiKeyStore) and [`SessionStore`](crate::SessionStore): API
//! keys and console sessions.

use std::sync::Arc;

use tollgate_model::records::{ApiKey, Timestamp};
use uuid::Uuid;

use super::fixtures::{secs, t0};
use crate::{PageRequest, Store};

pub async fn api_keys_are_unique_findable_and_revocable(store: Arc<dyn Store>) {
    let key = ApiKey {
        id: Uuid::now_v7(),
        name: "billing".into(),
        roles: vec!["service".into()],
        key_hash: "ab".repeat(32),
        created_at: t0(),
    };
    assert_eq!(store.create_api_key(key.clone()).await.unwrap(), key);
    let clash = ApiKey {
        id: Uuid::now_v7(),
        key_hash: "cd".repeat(32),
        ..key.clone()
    };
    let err = store.create_api_key(clash).await.unwrap_err();
    assert!(err.is_conflict());
    // In the API's words, never the database's (`UNIQUE constraint failed: …`,
    // `duplicate key value violates …`).
    let message = err.to_string();
    assert!(message.contains("API key"), "{message}");
    assert!(
        !message.contains("UNIQUE") && !message.contains("duplicate key"),
        "{message}"
    );
    let second = ApiKey {
        id: Uuid::now_v7(),
        name: "ops".into(),
        roles: vec!["operator".into()],
        key_hash: "ef".repeat(32),
        created_at: t0(),
    };
    store.create_api_key(second.clone()).await.unwrap();
    assert_eq!(
        store.find_api_key(&key.key_hash).await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(store.find_api_key("00").await.unwrap(), None);
    let listed = store.list_api_keys(&PageRequest::first(10)).await.unwrap();
    assert_eq!(listed.items, [key.clone(), second]);
    store.delete_api_key(key.id).await.unwrap();
    assert_eq!(store.find_api_key(&key.key_hash).await.unwrap(), None);
    assert!(store
        .delete_api_key(key.id)
        .await
        .unwrap_err()
        .is_not_found());
}

/// Console sessions: found until they expire or are deleted; creating one sweeps expired
/// ones; ids are unique.
pub async fn console_sessions_live_until_they_expire(store: Arc<dyn Store>) {
    let session = |id: &str, expires: Timestamp| tollgate_model::records::ConsoleSession {
        id_hash: id.to_owned(),
        key_hash: "key".into(),
        csrf: format!("csrf-{id}"),
        created_at: t0(),
        expires_at: expires,
    };
    store
        .create_session(session("a", t0() + secs(60)), t0())
        .await
        .unwrap();
    store
        .create_session(session("b", t0() + secs(3600)), t0())
        .await
        .unwrap();
    assert!(store
        .create_session(session("a", t0() + secs(60)), t0())
        .await
        .is_err());
    assert_eq!(
        store.get_session("a", t0()).await.unwrap(),
        Some(session("a", t0() + secs(60)))
    );
    assert_eq!(
        store.get_session("a", t0() + secs(60)).await.unwrap(),
        None,
        "expired at its time"
    );
    assert_eq!(store.get_session("nope", t0()).await.unwrap(), None);
    store.delete_session("b").await.unwrap();
    assert_eq!(store.get_session("b", t0()).await.unwrap(), None);
    store.delete_session("b").await.unwrap();
    // A later sign-in sweeps the expired `a`, so its id can be used again.
    store
        .create_session(session("c", t0() + secs(7200)), t0() + secs(120))
        .await
        .unwrap();
    store
        .create_session(session("a", t0() + secs(7200)), t0() + secs(120))
        .await
        .unwrap();
}
