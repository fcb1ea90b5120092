//! [`ApiKeyStore`](crate::ApiKeyStore) and [`SessionStore`](crate::SessionStore): API
//! keys and console sessions.

use std::sync::Arc;

use tollgate_model::records::{ApiKey, Timestamp};
use uuid::Uuid;

use super::fixtures::{secs, t0};
use crate::{Error, PageRequest, Store};

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

/// Heartbeats: one row per worker, claims counted and timed, silent workers forgotten.
pub async fn worker_heartbeats_are_kept_per_worker(store: Arc<dyn Store>) {
    assert!(store.list_workers(t0()).await.unwrap().is_empty());
    store.heartbeat("w1", t0(), t0(), 0).await.unwrap();
    store
        .heartbeat("w2", t0(), t0() + secs(5), 3)
        .await
        .unwrap();
    store
        .heartbeat("w1", t0(), t0() + secs(10), 0)
        .await
        .unwrap();
    let workers = store.list_workers(t0()).await.unwrap();
    let seen: Vec<(&str, Timestamp, Option<Timestamp>, u64)> = workers
        .iter()
        .map(|w| (w.worker_id.as_str(), w.beat_at, w.last_claim_at, w.claimed))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("w1", t0() + secs(10), None, 0),
            ("w2", t0() + secs(5), Some(t0() + secs(5)), 3),
        ],
        "latest first; a beat without claims keeps the last claim time"
    );
    store
        .heartbeat("w2", t0(), t0() + secs(15), 0)
        .await
        .unwrap();
    store
        .heartbeat("w2", t0(), t0() + secs(20), 2)
        .await
        .unwrap();
    let w2 = store.list_workers(t0() + secs(11)).await.unwrap();
    assert_eq!(w2.len(), 1, "w1 beat before `since`");
    assert_eq!(
        (w2[0].last_claim_at, w2[0].claimed, w2[0].started_at),
        (Some(t0() + secs(20)), 5, t0())
    );
    // A restarted loop under the same id reports its new start.
    store
        .heartbeat("w2", t0() + secs(30), t0() + secs(30), 0)
        .await
        .unwrap();
    // A week of silence: the next beat of anyone forgets w1 (and keeps the beater).
    let later = t0() + crate::WORKERS_FORGOTTEN_AFTER + secs(11);
    store
        .heartbeat("w2", t0() + secs(30), later, 0)
        .await
        .unwrap();
    let all = store.list_workers(t0()).await.unwrap();
    assert_eq!(
        all.iter().map(|w| w.worker_id.as_str()).collect::<Vec<_>>(),
        vec!["w2"]
    );
    assert_eq!(all[0].started_at, t0() + secs(30));
}

/// Delegations: listed from and to a subject, newest first; usable between their
/// start and end until revoked; revoked once.
pub async fn delegations_are_listed_used_in_their_period_and_revoked_once(store: Arc<dyn Store>) {
    use tollgate_model::records::Delegation;
    let make = |from: &str, to: &str, start: i64, end: i64| Delegation {
        id: uuid::Uuid::now_v7(),
        delegator: from.into(),
        delegator_roles: vec!["sales_manager".into()],
        delegate: to.into(),
        workflow_key: Some("orders".into()),
        role: None,
        starts_at: t0() + secs(start),
        ends_at: t0() + secs(end),
        reason: Some("on leave".into()),
        created_by: from.into(),
        created_at: t0(),
        revoked_at: None,
    };
    let maria_to_tom = make("maria", "tom", 0, 3600);
    let ann_to_tom = make("ann", "tom", 600, 1200);
    let tom_to_zoe = make("tom", "zoe", 0, 3600);
    for d in [&maria_to_tom, &ann_to_tom, &tom_to_zoe] {
        store.create_delegation(d).await.unwrap();
    }
    assert!(matches!(
        store.create_delegation(&maria_to_tom).await,
        Err(Error::Conflict(_))
    ));

    // From or to tom, newest first, a page at a time; everyone's for `None`.
    let first = store
        .list_delegations(Some("tom"), &PageRequest::first(2))
        .await
        .unwrap();
    assert_eq!(
        first.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        [tom_to_zoe.id, ann_to_tom.id]
    );
    assert_eq!(first.items[1], ann_to_tom, "stored as given");
    let rest = store
        .list_delegations(
            Some("tom"),
            &PageRequest::after(2, first.next_cursor.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items, vec![maria_to_tom.clone()]);
    assert_eq!(
        store
            .list_delegations(Some("maria"), &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        store
            .list_delegations(None, &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        3
    );

    // Usable by their delegate within their period only.
    let ids = |ds: Vec<Delegation>| ds.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.delegations_to("tom", t0()).await.unwrap()),
        [maria_to_tom.id]
    );
    let mut both = ids(store.delegations_to("tom", t0() + secs(600)).await.unwrap());
    both.sort();
    let mut expected = vec![maria_to_tom.id, ann_to_tom.id];
    expected.sort();
    assert_eq!(both, expected);
    assert!(store
        .delegations_to("tom", t0() + secs(3600))
        .await
        .unwrap()
        .is_empty());

    // Revoked once; then no longer usable. An ended one cannot be revoked.
    let revoked = store
        .revoke_delegation(maria_to_tom.id, t0() + secs(10))
        .await
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(t0() + secs(10)));
    assert!(matches!(
        store
            .revoke_delegation(maria_to_tom.id, t0() + secs(11))
            .await,
        Err(Error::Conflict(_))
    ));
    assert!(store
        .delegations_to("tom", t0() + secs(20))
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        store
            .revoke_delegation(ann_to_tom.id, t0() + secs(1200))
            .await,
        Err(Error::Conflict(_))
    ));
    assert!(store
        .revoke_delegation(uuid::Uuid::now_v7(), t0())
        .await
        .unwrap_err()
        .is_not_found());
}
