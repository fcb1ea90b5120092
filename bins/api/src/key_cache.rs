//! The cache of verified API keys, shared by the requests of one server: one store
//! lookup per key and TTL, single-flight, and never a revoked key put back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate_model::records::Principal;

/// Keys this server verified against the store in the last `ttl`, by hash, so that a
/// client sending many requests with one key costs one store lookup per `ttl` rather
/// than one per request. Only keys that exist are kept. A revocation through this
/// server empties the cache at once; one made through another server (or directly in
/// the database) takes effect here within `ttl`. A `ttl` of zero turns caching off.
///
/// Lookups are single-flight per key: when a key's entry is missing or expired, one
/// request looks it up while the others with the same key wait for that answer. Without
/// this, every request in flight when a busy key's entry expired went to the store at
/// once, each taking a pool connection (53 lookups in one ten-second benchmark run with
/// a 1 s TTL and two keys).
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
    /// One lock per key being looked up; an entry lives while someone holds or waits.
    lookups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped by every [`KeyCache::clear`] (under the entries lock): a lookup that read
    /// the store before a revocation cleared the cache must not put its (now stale)
    /// answer back.
    generation: std::sync::atomic::AtomicU64,
}

/// The right to look one key up ([`KeyCache::lookup_turn`]); gives it to the next
/// waiter when dropped.
pub struct LookupTurn<'a> {
    cache: &'a KeyCache,
    hash: String,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LookupTurn<'_> {
    fn drop(&mut self) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        let mut lookups = self.cache.lookups();
        let lock = tokio::sync::OwnedMutexGuard::mutex(&turn).clone();
        drop(turn);
        // Clones are made under this map lock: the map's, this one and any waiter's.
        if Arc::strong_count(&lock) <= 2 {
            lookups.remove(&self.hash);
        }
    }
}

/// Most keys a [`KeyCache`] holds; beyond that, expired entries are dropped first, then
/// everything.
const KEY_CACHE_CAPACITY: usize = 4096;

impl KeyCache {
    /// A cache keeping verified keys for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The cache's generation: read it before looking a key up in the store, and hand it
    /// to `put`.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lookups(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // The map holds no invariant a panicking holder could break.
        self.lookups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until no other request is looking `hash` up, then holds that right until
    /// the returned turn is dropped; the caller checks `get` again before its
    /// own lookup. `None` when caching is off (every request looks up on its own).
    pub async fn lookup_turn(&self, hash: &str) -> Option<LookupTurn<'_>> {
        if self.ttl.is_zero() {
            return None;
        }
        let lock = {
            let mut lookups = self.lookups();
            if lookups.len() >= KEY_CACHE_CAPACITY {
                // Entries only the map holds were left by waiters that gave up.
                lookups.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            lookups.entry(hash.to_owned()).or_default().clone()
        };
        Some(LookupTurn {
            cache: self,
            hash: hash.to_owned(),
            turn: Some(lock.lock_owned().await),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, Instant)>> {
        // The map holds no invariant a panicking holder could break.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The principal of a key verified less than `ttl` ago.
    pub(crate) fn get(&self, hash: &str) -> Option<Principal> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries();
        let (principal, verified) = entries.get(hash)?;
        (verified.elapsed() < self.ttl).then(|| principal.clone())
    }

    /// Keeps a key the store verified; nothing is kept when the cache was cleared since
    /// `seen` (the [`Self::generation`] read before the store lookup), because the
    /// answer may predate a revocation.
    pub(crate) fn put(&self, hash: String, principal: Principal, seen: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries();
        if self.generation() != seen {
            return;
        }
        if entries.len() >= KEY_CACHE_CAPACITY {
            let ttl = self.ttl;
            entries.retain(|_, (_, verified)| verified.elapsed() < ttl);
            if entries.len() >= KEY_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(hash, (principal, Instant::now()));
    }

    /// Forgets every key: the next request with any key is checked against the store.
    pub fn clear(&self) {
        let mut entries = self.entries();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_cache_keeps_keys_for_its_ttl_only() {
        let principal = Principal {
            subject: "k".into(),
            roles: vec!["viewer".into()],
        };
        let cache = KeyCache::new(Duration::from_millis(50));
        assert!(cache.get("h").is_none());
        cache.put("h".into(), principal.clone(), cache.generation());
        assert_eq!(cache.get("h"), Some(principal.clone()));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("h").is_none(), "expired");
        cache.put("h".into(), principal.clone(), cache.generation());
        cache.clear();
        assert!(cache.get("h").is_none(), "cleared");
        // A lookup that read the store before the clear (a revocation) keeps nothing.
        let seen = cache.generation();
        cache.clear();
        cache.put("h".into(), principal.clone(), seen);
        assert!(cache.get("h").is_none(), "a stale answer is not cached");

        let off = KeyCache::new(Duration::ZERO);
        off.put("h".into(), principal, off.generation());
        assert!(off.get("h").is_none(), "a zero ttl caches nothing");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_key_is_looked_up_once_however_many_requests_carry_it() {
        let cache = Arc::new(KeyCache::new(Duration::from_secs(60)));
        let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests: Vec<_> = (0..32)
            .map(|_| {
                let (cache, lookups) = (cache.clone(), lookups.clone());
                tokio::spawn(async move {
                    if let Some(found) = cache.get("h") {
                        return found;
                    }
                    let _turn = cache.lookup_turn("h").await;
                    if let Some(found) = cache.get("h") {
                        return found;
                    }
                    lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let principal = Principal {
                        subject: "k".into(),
                        roles: vec!["viewer".into()],
                    };
                    cache.put("h".into(), principal.clone(), cache.generation());
                    principal
                })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap().subject, "k");
        }
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(
            cache.lookups().is_empty(),
            "no lookup lock outlives its lookups"
        );

        let off = KeyCache::new(Duration::ZERO);
        assert!(
            off.lookup_turn("h").await.is_none(),
            "no caching, no waiting"
        );
    }

    #[test]
    fn key_cache_stays_bounded() {
        let cache = KeyCache::new(Duration::from_secs(60));
        for i in 0..KEY_CACHE_CAPACITY + 10 {
            cache.put(
                format!("h{i}"),
                Principal {
                    subject: "k".into(),
                    roles: Vec::new(),
                },
                cache.generation(),
            );
        }
        assert!(cache.entries().len() <= KEY_CACHE_CAPACITY);
        assert!(cache.get(&format!("h{}", KEY_CACHE_CAPACITY + 9)).is_some());
    }
}
