//! [`ApiKeyStore`], [`SessionStore`], [`DelegationStore`] and [`Health`] in memory.

use async_trait::async_trait;
use tollgate_model::records::{ApiKey, ConsoleSession, Delegation, Timestamp};
use uuid::Uuid;

use super::{encode_id, id_cursor, paginate, MemoryStore};
use crate::traits::{ApiKeyStore, DelegationStore, Health, SessionStore};
use crate::types::{Page, PageRequest};
use crate::{Error, Result};

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey> {
        let mut state = self.lock();
        if state.api_keys.values().any(|k| k.name == key.name) {
            return Err(Error::Conflict(format!(
                "an API key named `{}` already exists",
                key.name
            )));
        }
        state.api_keys.insert(key.id, key.clone());
        Ok(key)
    }

    async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKey>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state.api_keys.values().map(|k| (k.id, k.clone())).collect();
        Ok(paginate(items, false, after, page.limit, encode_id))
    }

    async fn delete_api_key(&self, id: Uuid) -> Result<()> {
        self.lock()
            .api_keys
            .remove(&id)
            .map(|_| ())
            .ok_or_else(|| Error::not_found("api key", id))
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        Ok(self
            .lock()
            .api_keys
            .values()
            .find(|k| k.key_hash == key_hash)
            .cloned())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(&self, session: ConsoleSession, now: Timestamp) -> Result<()> {
        let mut state = self.lock();
        state.sessions.retain(|_, s| s.expires_at > now);
        if state.sessions.contains_key(&session.id_hash) {
            return Err(Error::Conflict("session exists".into()));
        }
        state.sessions.insert(session.id_hash.clone(), session);
        Ok(())
    }

    async fn get_session(&self, id_hash: &str, now: Timestamp) -> Result<Option<ConsoleSession>> {
        Ok(self
            .lock()
            .sessions
            .get(id_hash)
            .filter(|s| s.expires_at > now)
            .cloned())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        self.lock().sessions.remove(id_hash);
        Ok(())
    }
}

#[async_trait]
impl Health for MemoryStore {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl DelegationStore for MemoryStore {
    async fn create_delegation(&self, delegation: &Delegation) -> Result<()> {
        let mut state = self.lock();
        if state.delegations.contains_key(&delegation.id) {
            return Err(Error::Conflict(format!(
                "delegation {} exists",
                delegation.id
            )));
        }
        state.delegations.insert(delegation.id, delegation.clone());
        Ok(())
    }

    async fn list_delegations(
        &self,
        subject: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Delegation>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state
            .delegations
            .values()
            .filter(|d| subject.is_none_or(|s| d.delegator == s || d.delegate == s))
            .map(|d| (d.id, d.clone()))
            .collect();
        Ok(paginate(items, true, after, page.limit, encode_id))
    }

    async fn revoke_delegation(&self, id: Uuid, now: Timestamp) -> Result<Delegation> {
        let mut state = self.lock();
        let d = state
            .delegations
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("delegation", id))?;
        crate::rules::revoke_delegation(d, now)?;
        Ok(d.clone())
    }

    async fn delegations_to(&self, delegate: &str, now: Timestamp) -> Result<Vec<Delegation>> {
        let state = self.lock();
        Ok(state
            .delegations
            .values()
            .filter(|d| {
                d.delegate == delegate
                    && d.revoked_at.is_none()
                    && d.starts_at <= now
                    && now < d.ends_at
            })
            .cloned()
            .collect())
    }
}
