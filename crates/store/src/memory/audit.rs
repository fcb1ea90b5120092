//! [`ResumeRequestStore`], [`RecordStore`] and [`NotificationStore`] in memory.

use async_trait::async_trait;
use tollgate_model::records::{Notification, Record, ResumeRequest};
use uuid::Uuid;

use super::{encode_id, id_cursor, paginate, MemoryStore};
use crate::traits::{NotificationStore, RecordStore, ResumeRequestStore};
use crate::types::{NotificationFilter, Page, PageRequest};
use crate::{Error, Result};

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
}
