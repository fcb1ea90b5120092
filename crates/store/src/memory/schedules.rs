//! [`ScheduleStore`] in memory.

use async_trait::async_trait;
use tollgate_model::records::{Execution, Timestamp};
use tollgate_model::schedule::{Schedule, TickStatus};
use uuid::Uuid;

use super::{encode_id, id_cursor, paginate, MemoryStore};
use crate::traits::ScheduleStore;
use crate::types::{ClaimedTick, LeaseClaim, Page, PageRequest, ScheduleFilter, TickView};
use crate::{rules, Error, Result};

#[async_trait]
impl ScheduleStore for MemoryStore {
    async fn create_schedule(&self, schedule: Schedule) -> Result<Schedule> {
        let mut state = self.lock();
        if !state.workflows.contains_key(&schedule.workflow_id) {
            return Err(Error::not_found("workflow", schedule.workflow_id));
        }
        if state.schedules.contains_key(&schedule.id) {
            return Err(Error::Conflict(format!(
                "schedule {} already exists",
                schedule.id
            )));
        }
        state.schedules.insert(schedule.id, schedule.clone());
        Ok(schedule)
    }

    async fn get_schedule(&self, id: Uuid) -> Result<Schedule> {
        self.lock()
            .schedules
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("schedule", id))
    }

    async fn list_schedules(
        &self,
        filter: &ScheduleFilter,
        page: &PageRequest,
    ) -> Result<Page<Schedule>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state
            .schedules
            .values()
            .filter(|s| filter.workflow_id.is_none_or(|w| s.workflow_id == w))
            .map(|s| (s.id, s.clone()))
            .collect();
        Ok(paginate(items, false, after, page.limit, encode_id))
    }

    async fn update_schedule(&self, schedule: Schedule) -> Result<Schedule> {
        let mut state = self.lock();
        let slot = state
            .schedules
            .get_mut(&schedule.id)
            .ok_or_else(|| Error::not_found("schedule", schedule.id))?;
        slot.cron = schedule.cron;
        slot.timezone = schedule.timezone;
        slot.enabled = schedule.enabled;
        slot.catch_up = schedule.catch_up;
        slot.next_fire_at = schedule.next_fire_at;
        slot.updated_at = schedule.updated_at;
        Ok(slot.clone())
    }

    async fn delete_schedule(&self, id: Uuid) -> Result<()> {
        let mut state = self.lock();
        if !state.schedules.contains_key(&id) {
            return Err(Error::not_found("schedule", id));
        }
        state.remove_schedule(id);
        Ok(())
    }

    async fn claim_ticks(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<ClaimedTick>> {
        let mut state = self.lock();
        let mut claimed = Vec::new();
        let orphaned: Vec<Uuid> = state
            .ticks
            .values()
            .filter(|t| {
                t.status == TickStatus::Pending && t.lease_expires_at.is_some_and(|e| e <= now)
            })
            .map(|t| t.id)
            .take(limit as usize)
            .collect();
        for id in orphaned {
            let Some(tick) = state.ticks.get_mut(&id) else {
                continue;
            };
            tick.owner = Some(claim.owner.clone());
            tick.lease_expires_at = Some(claim.expires_at);
            let tick = tick.clone();
            if let Some(schedule) = state.schedules.get(&tick.schedule_id).cloned() {
                claimed.push(ClaimedTick { tick, schedule });
            }
        }
        let mut due: Vec<(Timestamp, Uuid)> = state
            .schedules
            .values()
            .filter(|s| {
                s.enabled
                    && s.next_fire_at.is_some_and(|t| t <= now)
                    && state
                        .workflows
                        .get(&s.workflow_id)
                        .is_some_and(|w| w.enabled)
            })
            .filter_map(|s| s.next_fire_at.map(|t| (t, s.id)))
            .collect();
        due.sort();
        for (_, id) in due.into_iter().take(limit as usize) {
            let Some(schedule) = state.schedules.get_mut(&id) else {
                continue;
            };
            let times = rules::fire_schedule(schedule, now);
            let schedule = schedule.clone();
            for time in times {
                let tick = rules::new_tick(id, time, claim, now);
                if state.ticks.contains_key(&tick.id) {
                    continue;
                }
                state.ticks.insert(tick.id, tick.clone());
                claimed.push(ClaimedTick {
                    tick,
                    schedule: schedule.clone(),
                });
            }
        }
        Ok(claimed)
    }

    async fn start_tick(
        &self,
        tick_id: Uuid,
        owner: &str,
        execution: Execution,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut state = self.lock();
        let tick = state
            .ticks
            .get(&tick_id)
            .ok_or_else(|| Error::not_found("tick", tick_id))?;
        rules::check_tick_owner(tick, owner)?;
        if state.executions.contains_key(&execution.id) {
            return Err(Error::Conflict(format!(
                "execution {} already exists",
                execution.id
            )));
        }
        state.executions.insert(execution.id, execution.clone());
        if let Some(tick) = state.ticks.get_mut(&tick_id) {
            tick.status = TickStatus::Started;
            tick.started_at = Some(now);
            tick.execution_id = Some(execution.id);
            tick.owner = None;
            tick.lease_expires_at = None;
        }
        Ok(execution)
    }

    async fn fail_tick(
        &self,
        tick_id: Uuid,
        owner: &str,
        error: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut state = self.lock();
        let tick = state
            .ticks
            .get_mut(&tick_id)
            .ok_or_else(|| Error::not_found("tick", tick_id))?;
        rules::check_tick_owner(tick, owner)?;
        tick.status = TickStatus::Failed;
        tick.error = Some(error.to_owned());
        tick.started_at = Some(now);
        tick.owner = None;
        tick.lease_expires_at = None;
        Ok(())
    }

    async fn next_fire_at(&self) -> Result<Option<Timestamp>> {
        let state = self.lock();
        Ok(state
            .schedules
            .values()
            .filter(|s| {
                s.enabled
                    && state
                        .workflows
                        .get(&s.workflow_id)
                        .is_some_and(|w| w.enabled)
            })
            .filter_map(|s| s.next_fire_at)
            .min())
    }

    async fn list_ticks(&self, schedule_id: Uuid, page: &PageRequest) -> Result<Page<TickView>> {
        let after = crate::cursor::decode_time_id_cursor(page.cursor.as_deref())?;
        let state = self.lock();
        let items = state
            .ticks
            .values()
            .filter(|t| t.schedule_id == schedule_id)
            .map(|t| {
                let outcome = t
                    .execution_id
                    .and_then(|e| state.executions.get(&e))
                    .map(|e| e.status);
                (
                    (t.tick_time.timestamp_micros(), t.id),
                    TickView {
                        tick: t.clone(),
                        outcome,
                    },
                )
            })
            .collect();
        Ok(paginate(items, true, after, page.limit, |(micros, id)| {
            crate::cursor::encode_cursor(&[&micros.to_string(), &id.to_string()])
        }))
    }
}
