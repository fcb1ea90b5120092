//! [`EventStore`] in memory.

use async_trait::async_trait;
use serde_json::json;
use tollgate_model::records::{Event, ResumeTrigger, Timestamp};
use tollgate_model::ExecutionStatus;
use uuid::Uuid;

use super::{upsert_step, MemoryStore};
use crate::traits::EventStore;
use crate::types::{Delivery, EventInsert, EventKey, EventPurge, EventShape, LeaseClaim, Starting};
use crate::{rules, Error, Result};

#[async_trait]
impl EventStore for MemoryStore {
    async fn insert_event(&self, event: Event) -> Result<EventInsert> {
        self.insert_event_starting(event, Vec::new()).await
    }

    async fn insert_event_starting(
        &self,
        event: Event,
        starts: Vec<Starting>,
    ) -> Result<EventInsert> {
        let mut state = self.lock();
        // This very event (same id) is stored: a retried write of it. It was inserted.
        if let Some(ours) = state.events.get(&event.id) {
            return Ok(EventInsert::Inserted(ours.clone()));
        }
        if let Some(key) = &event.event_id {
            if let Some(existing) = state.event_ids.get(key).and_then(|id| state.events.get(id)) {
                return Ok(EventInsert::Duplicate(existing.clone()));
            }
        }
        if let Some(taken) = starts
            .iter()
            .find(|s| state.executions.contains_key(&s.execution.id))
        {
            return Err(Error::Conflict(format!(
                "execution {} already exists",
                taken.execution.id
            )));
        }
        if let Some(taken) = starts
            .iter()
            .filter_map(|s| s.approval.as_ref())
            .find(|a| state.approvals.contains_key(&a.id))
        {
            return Err(Error::Conflict(format!(
                "approval {} already exists",
                taken.id
            )));
        }
        if let Some(key) = &event.event_id {
            state.event_ids.insert(key.clone(), event.id);
        }
        for start in starts {
            let id = start.execution.id;
            let completed = start.execution.status == ExecutionStatus::Completed;
            state.extend_trail(id, start.execution.version, start.undo, completed);
            state.executions.insert(id, start.execution);
            let steps = state.steps.entry(id).or_default();
            for record in start.records {
                upsert_step(steps, record);
            }
            if let Some(approval) = start.approval {
                state.insert_approval(approval);
            }
        }

        state.undelivered.insert(event.id);
        state.events.insert(event.id, event.clone());
        Ok(EventInsert::Inserted(event))
    }

    async fn deliver_event(
        &self,
        mut event: Event,
        expected_version: Option<i64>,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Delivery> {
        let mut state = self.lock();
        let target = rules::delivery_target(&event)?;
        if let Some(key) = &event.event_id {
            if let Some(existing) = state.event_ids.get(key).and_then(|id| state.events.get(id)) {
                return Ok(Delivery::Duplicate(existing.clone()));
            }
        }
        let execution = state.execution_mut(target)?;
        rules::check_wait_claim(execution, expected_version, &event)?;
        rules::claim_wait(execution, &event, claim, now);
        let claimed = execution.clone();
        if claimed
            .gate
            .as_ref()
            .and_then(tollgate_model::records::Gate::superseded_approval)
            .is_some()
        {
            state.close_approvals(
                target,
                tollgate_model::records::ApprovalStatus::Superseded,
                now,
            );
        }
        event.resumed = vec![target];
        if let Some(key) = &event.event_id {
            state.event_ids.insert(key.clone(), event.id);
        }
        state.events.insert(event.id, event.clone());
        state.audit(
            target,
            ResumeTrigger::Event,
            event.submitted_by.as_deref(),
            json!({"event_id": event.id, "event_type": event.event_type}),
            now,
        );
        Ok(Delivery::Claimed {
            event,
            execution: Box::new(claimed),
        })
    }

    async fn set_event_outcome(
        &self,
        id: Uuid,
        started: Vec<Uuid>,
        resumed: Vec<Uuid>,
    ) -> Result<Event> {
        let mut state = self.lock();
        let event = state
            .events
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("event", id))?;
        event.started = started;
        for id in resumed {
            if !event.resumed.contains(&id) {
                event.resumed.push(id);
            }
        }
        Ok(event.clone())
    }

    async fn get_event(&self, id: Uuid) -> Result<Event> {
        self.lock()
            .events
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("event", id))
    }

    async fn events_for_wait(
        &self,
        event_type: &str,
        since: Timestamp,
        execution_id: Uuid,
        after: Option<(Timestamp, Uuid)>,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let state = self.lock();
        let mut events: Vec<&Event> = state
            .events
            .values()
            .filter(|e| e.event_type == event_type && e.received_at >= since)
            .filter(|e| e.correlation_id.is_none_or(|c| c == execution_id))
            .filter(|e| after.is_none_or(|a| (e.received_at, e.id) > a))
            .collect();
        events.sort_by_key(|e| (e.received_at, e.id));
        Ok(events.into_iter().take(limit as usize).cloned().collect())
    }

    async fn undelivered_events(
        &self,
        received_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let state = self.lock();
        let mut events: Vec<&Event> = state
            .undelivered
            .iter()
            .filter_map(|id| state.events.get(id))
            .filter(|e| e.received_at <= received_before)
            .collect();
        events.sort_by_key(|e| (e.received_at, e.id));
        Ok(events.into_iter().take(limit as usize).cloned().collect())
    }

    async fn mark_events_delivered(&self, ids: &[Uuid]) -> Result<()> {
        let mut state = self.lock();
        for id in ids {
            state.undelivered.remove(id);
        }
        Ok(())
    }

    async fn event_shapes(&self, event_type: Option<&str>) -> Result<Vec<EventShape>> {
        Ok(self
            .lock()
            .event_shapes
            .iter()
            .filter(|s| event_type.is_none_or(|t| s.event_type == t))
            .cloned()
            .collect())
    }

    async fn add_event_shape(
        &self,
        event_type: &str,
        shape: &str,
        fields: &[String],
    ) -> Result<()> {
        let mut state = self.lock();
        if !state
            .event_shapes
            .iter()
            .any(|s| s.event_type == event_type && s.shape == shape)
        {
            state.event_shapes.push(EventShape {
                event_type: event_type.to_owned(),
                shape: shape.to_owned(),
                fields: fields.to_vec(),
                keyed_through: None,
            });
        }
        Ok(())
    }

    async fn events_to_key(
        &self,
        event_type: &str,
        after: Option<(Timestamp, Uuid)>,
        up_to: Timestamp,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let state = self.lock();
        let mut events: Vec<&Event> = state
            .events
            .values()
            .filter(|e| e.event_type == event_type && e.received_at <= up_to)
            .filter(|e| after.is_none_or(|a| (e.received_at, e.id) > a))
            .collect();
        events.sort_by_key(|e| (e.received_at, e.id));
        Ok(events.into_iter().take(limit as usize).cloned().collect())
    }

    async fn add_event_keys(
        &self,
        event_type: &str,
        shape: &str,
        keys: &[EventKey],
        from: Option<(Timestamp, Uuid)>,
        through: (Timestamp, Uuid),
    ) -> Result<()> {
        let mut state = self.lock();
        let registered = state
            .event_shapes
            .iter_mut()
            .find(|s| s.event_type == event_type && s.shape == shape)
            .ok_or_else(|| Error::not_found("event shape", format!("{event_type}/{shape}")))?;
        if registered.keyed_through != from {
            return Err(Error::Conflict(format!(
                "the events of `{event_type}` were keyed for shape {shape} meanwhile"
            )));
        }
        registered.keyed_through = Some(through);
        for key in keys {
            if state.events.contains_key(&key.event_id) {
                state
                    .event_keys
                    .entry((event_type.to_owned(), shape.to_owned(), key.hash.clone()))
                    .or_default()
                    .insert((key.received_at, key.event_id));
            }
        }
        Ok(())
    }

    async fn keyed_events_for_wait(
        &self,
        event_type: &str,
        shape: &str,
        hash: &str,
        since: Timestamp,
        execution_id: Uuid,
        after: Option<(Timestamp, Uuid)>,
        through: (Timestamp, Uuid),
        limit: u32,
    ) -> Result<Vec<Event>> {
        let state = self.lock();
        let key = (event_type.to_owned(), shape.to_owned(), hash.to_owned());
        let Some(keyed) = state.event_keys.get(&key) else {
            return Ok(Vec::new());
        };
        Ok(keyed
            .iter()
            .filter(|k| k.0 >= since && after.is_none_or(|a| **k > a) && **k <= through)
            .filter_map(|(_, id)| state.events.get(id))
            .filter(|e| e.correlation_id.is_none_or(|c| c == execution_id))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn purge_events(&self, purge: &EventPurge, limit: u32) -> Result<u64> {
        let mut state = self.lock();
        let mut expired: Vec<(Timestamp, Uuid)> = state
            .events
            .values()
            .filter(|e| e.started.is_empty() && e.resumed.is_empty())
            .filter(|e| !state.undelivered.contains(&e.id))
            .filter(|e| e.received_at < purge.cutoff(&e.event_type))
            .map(|e| (e.received_at, e.id))
            .collect();
        expired.sort();
        expired.truncate(limit as usize);
        for (_, id) in &expired {
            if let Some(event) = state.events.remove(id) {
                if let Some(key) = event.event_id {
                    state.event_ids.remove(&key);
                }
            }
        }
        for keyed in state.event_keys.values_mut() {
            for gone in &expired {
                keyed.remove(gone);
            }
        }
        Ok(expired.len() as u64)
    }
}
