//! [`ResumeRequestStore`], [`RecordStore`] and [`NotificationStore`] in memory.

use async_trait::async_trait;
use tollgate_model::records::{Notification, Record, ResumeRequest, Timestamp};
use uuid::Uuid;

use super::{encode_id, id_cursor, paginate, MemoryStore};
use crate::traits::{NotificationStore, RecordStore, ResumeRequestStore};
use crate::types::{LeaseClaim, NotificationFilter, Page, PageRequest, Settle};
use crate::{rules, Error, Result};

#[async_trait]
impl ResumeRequestStore for MemoryStore {
    async fn record_resume_request(&self, request: ResumeRequest) -> Result<()> {
        self.lock()
            .resume_requests
            .entry(request.execution_id)
            .or_default()
            .push(request);
        Ok(())
    }

    async fn list_resume_requests(&self, execution_id: Uuid) -> Result<Vec<ResumeRequest>> {
        let state = self.lock();
        if !state.executions.contains_key(&execution_id) {
            return Err(Error::not_found("execution", execution_id));
        }
        Ok(state
            .resume_requests
            .get(&execution_id)
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait]
impl RecordStore for MemoryStore {
    async fn get_record(&self, entity: &str, entity_id: &str) -> Result<Record> {
        self.lock()
            .records
            .get(&(entity.to_owned(), entity_id.to_owned()))
            .cloned()
            .ok_or_else(|| Error::not_found("record", format!("{entity}/{entity_id}")))
    }
}

#[async_trait]
impl NotificationStore for MemoryStore {
    async fn put_notification(&self, notification: Notification) -> Result<()> {
        self.lock()
            .notifications
            .insert(notification.id, notification);
        Ok(())
    }

    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> Result<Page<Notification>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state
            .notifications
            .values()
            .filter(|n| filter.execution_id.is_none_or(|e| n.execution_id == e))
            .map(|n| (n.id, n.clone()))
            .collect();
        Ok(paginate(items, false, after, page.limit, encode_id))
    }

    async fn claim_notifications(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<Notification>> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut due: Vec<(Timestamp, Uuid)> = state
            .notifications
            .values()
            .filter(|n| n.status == "queued" && n.next_attempt_at.is_some_and(|at| at <= now))
            .filter(|n| {
                state
                    .notification_claims
                    .get(&n.id)
                    .is_none_or(|(_, until)| *until <= now)
            })
            .filter_map(|n| n.next_attempt_at.map(|at| (at, n.id)))
            .collect();
        due.sort();
        due.truncate(limit as usize);
        let mut claimed = Vec::with_capacity(due.len());
        for (_, id) in due {
            state
                .notification_claims
                .insert(id, (claim.owner.clone(), claim.expires_at));
            if let Some(n) = state.notifications.get(&id) {
                claimed.push(n.clone());
            }
        }
        Ok(claimed)
    }

    async fn settle_notification(
        &self,
        id: Uuid,
        owner: &str,
        now: Timestamp,
        settle: &Settle,
    ) -> Result<()> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(notification) = state.notifications.get_mut(&id) else {
            return Err(Error::not_found("notification", id));
        };
        let holder = state.notification_claims.get(&id).map(|(o, _)| o.as_str());
        rules::settle(notification, holder, owner, now, settle)?;
        state.notification_claims.remove(&id);
        Ok(())
    }
}
