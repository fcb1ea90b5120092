//! Ingesting events: starting workflows and resuming waits.

use serde_json::{json, Value};
use tollgate_engine::correlation::event_hash;
use tollgate_engine::{gate_accepts, Ahead, Engine, StartRequest};
use tollgate_model::records::{Event, Execution, ResumeTrigger};
use tollgate_model::{ExecutionStatus, PauseReason};
use tollgate_store::{Delivery, EventInsert, WaitKey, WaitShape};
use uuid::Uuid;

use crate::{audit_refusal, refused, Error, Progress, Result, Tasks};

/// An incoming event, before it is stored.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// Type, e.g. `order.created`.
    pub event_type: String,
    /// Payload.
    pub payload: Value,
    /// The sending system.
    pub source: Option<String>,
    /// The sender's idempotency id.
    pub event_id: Option<String>,
    /// The execution it is addressed to.
    pub correlation_id: Option<Uuid>,
    /// Subject of the sending key.
    pub submitted_by: Option<String>,
}

/// What an ingested event did.
#[derive(Debug)]
pub struct Ingested {
    /// The stored event (the first one, for a duplicate `event_id`).
    pub event: Event,
    /// True when the `event_id` was seen before: nothing was started or resumed again.
    pub duplicate: bool,
    /// Executions it started.
    pub started: Vec<Progress>,
    /// Executions it resumed.
    pub resumed: Vec<Progress>,
}

/// Stores events, starts the workflows they trigger and resumes the waits they satisfy.
#[derive(Debug, Clone)]
pub struct EventService {
    engine: Engine,
    tasks: Option<Tasks>,
}

/// Waiting executions are read in pages of this size.
const SCAN_PAGE: u32 = 200;

impl EventService {
    /// A service acting with `engine`'s worker id.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            tasks: None,
        }
    }

    /// Advances the executions it claims on `tasks` (see [`Tasks`]).
    pub fn with_tasks(mut self, tasks: Tasks) -> Self {
        self.tasks = Some(tasks);
        self
    }

    /// Stores the event (a repeated `event_id` returns the first one and does nothing
    /// else), starts every enabled workflow it triggers (highest enabled version per
    /// `workflow_id`), and resumes every waiting execution whose wait it satisfies.
    pub async fn ingest(&self, new: NewEvent) -> Result<Ingested> {
        if new.event_type.trim().is_empty() {
            return Err(Error::Invalid("`event_type` must not be empty".into()));
        }
        let store = self.engine.store();
        let now = self.engine.clock().now();
        let mut event = Event {
            id: Uuid::now_v7(),
            event_id: new.event_id,
            event_type: new.event_type,
            payload: new.payload,
            source: new.source,
            correlation_id: new.correlation_id,
            submitted_by: new.submitted_by,
            received_at: now,
            started: Vec::new(),
            resumed: Vec::new(),
        };
        // The executions it starts are stored with the event, in one transaction: a
        // crash can never leave an event whose workflows did not start, or the reverse.
        // Each has first run ahead as far as it can without being stored (its
        // side-effect-free steps, up to its first gate or end), so what is stored is
        // already its state there: one write for the event and all of that.
        let mut aheads = Vec::new();
        for workflow in store.workflows_for_event(&event.event_type).await? {
            let execution = self.engine.prepare(StartRequest {
                workflow,
                trigger_event: event.event_type.clone(),
                payload: event.payload.clone(),
                event_id: Some(event.id),
                event_key: event.event_id.clone(),
                source: event.source.clone(),
                requested_by: event.submitted_by.clone(),
            });
            aheads.push(self.engine.run_ahead(execution).await?);
        }
        event.started = aheads.iter().map(|a| a.starting.execution.id).collect();
        let starts = aheads.iter_mut().map(Ahead::take_starting).collect();
        let event = match store.insert_event_starting(event, starts).await? {
            EventInsert::Duplicate(first) => {
                // The first sender may have died between storing the event and offering
                // it to the executions waiting for it: the retry finishes that delivery
                // (idempotent — an execution consumes an event once). It starts nothing.
                let resumed = deliver(&self.engine, &first).await?;
                let first = record_resumed(&self.engine, first, &resumed).await?;
                return Ok(Ingested {
                    event: first,
                    duplicate: true,
                    started: Vec::new(),
                    resumed: self.progress(resumed),
                });
            }
            EventInsert::Inserted(event) => event,
        };
        for ahead in &aheads {
            let execution = &ahead.starting.execution;
            metrics::counter!("tollgate_executions_started_total").increment(1);
            ahead.record_stored();
            tracing::info!(execution_id = %execution.id, workflow = %execution.workflow_key, status = %execution.status, "execution created");
        }

        // A crash from here on leaves the event stored pending delivery: the worker loop
        // (or the client's retry with the same `event_id`) delivers it again.
        let resumed = deliver(&self.engine, &event).await?;
        let event = record_resumed(&self.engine, event, &resumed).await?;
        tracing::info!(event_type = %event.event_type, started = event.started.len(), resumed = event.resumed.len(), "event ingested");
        Ok(Ingested {
            event,
            duplicate: false,
            started: aheads
                .into_iter()
                .map(|ahead| {
                    if ahead.needs_advancing() {
                        let begun = ahead.begun().cloned();
                        Progress::spawn_begun(
                            &self.engine,
                            self.tasks.as_ref(),
                            ahead.starting.execution,
                            begun,
                            "start",
                        )
                    } else {
                        Progress::stopped(ahead.starting.execution)
                    }
                })
                .collect(),
            resumed: self.progress(resumed),
        })
    }

    fn progress(&self, resumed: Vec<(Execution, bool)>) -> Vec<Progress> {
        resumed
            .into_iter()
            .map(|(e, ours)| {
                if ours {
                    Progress::spawn(&self.engine, self.tasks.as_ref(), e, "event")
                } else {
                    Progress::idle(e)
                }
            })
            .collect()
    }

    /// Delivers an event to one execution (`POST /executions/{id}/events`): the event
    /// is stored and the execution claimed with it in one store call, so a refusal
    /// stores nothing (a resend cannot become a second event). `event_id` makes the
    /// delivery idempotent: a repeat answers with the first delivery's event and the
    /// execution as it is now, and changes nothing. `Conflict` (audited) when the
    /// execution is not waiting for `event_type` or the event does not satisfy its
    /// wait's match.
    pub async fn deliver_to(
        &self,
        execution_id: Uuid,
        event_type: &str,
        payload: Value,
        event_id: Option<String>,
        actor: Option<&str>,
    ) -> Result<DirectDelivery> {
        let store = self.engine.store();
        let execution = store.get_execution(execution_id).await?;
        let now = self.engine.clock().now();
        let audit = json!({"event_type": event_type, "payload": payload, "event_id": event_id});
        let gate = execution
            .gate
            .as_ref()
            .filter(|g| g.reason == PauseReason::Event);
        let awaited: Vec<&str> = gate
            .map(|g| {
                g.event
                    .iter()
                    .map(String::as_str)
                    .chain(g.branches.iter().flatten().map(|b| b.event.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let refusal = if execution.status != ExecutionStatus::Waiting
            || !gate.is_some_and(|g| g.awaits(event_type))
        {
            Some(
                if execution.status == ExecutionStatus::Waiting && !awaited.is_empty() {
                    format!(
                        "execution {execution_id} waits for `{}`, not `{event_type}`",
                        awaited.join("` or `")
                    )
                } else {
                    format!(
                        "execution {execution_id} is {} and not waiting for an event",
                        execution.status
                    )
                },
            )
        } else if !gate
            .is_some_and(|g| gate_accepts(g, &execution.context, event_type, &payload, now))
        {
            Some(format!(
                "the event does not satisfy the `match` of execution {execution_id}'s wait"
            ))
        } else {
            None
        };
        // A refused resend of a delivery that was accepted before (the execution no
        // longer waits because that delivery resumed it) is a repeat, not a refusal: the
        // store answers it. Asked with a version no execution has, it answers a known
        // `event_id` as a duplicate and refuses anything else, storing nothing.
        let expected_version = if refusal.is_some() && event_id.is_some() {
            Some(-1)
        } else if let Some(message) = refusal {
            self.refuse(execution_id, actor, audit, &message).await;
            return Err(Error::Conflict(message));
        } else {
            Some(execution.version)
        };
        let event = Event {
            id: Uuid::now_v7(),
            event_id,
            event_type: event_type.to_owned(),
            payload,
            source: None,
            correlation_id: Some(execution_id),
            submitted_by: actor.map(str::to_owned),
            received_at: now,
            started: Vec::new(),
            resumed: Vec::new(),
        };
        match store
            .deliver_event(event, expected_version, &self.engine.claim(), now)
            .await
        {
            Ok(Delivery::Claimed { event, execution }) => Ok(DirectDelivery {
                event,
                duplicate: false,
                progress: Progress::spawn(&self.engine, self.tasks.as_ref(), *execution, "event"),
            }),
            Ok(Delivery::Duplicate(first)) => {
                if first.correlation_id != Some(execution_id) {
                    return Err(Error::Conflict(format!(
                        "event_id `{}` was already used for another event",
                        first.event_id.as_deref().unwrap_or_default()
                    )));
                }
                Ok(DirectDelivery {
                    event: first,
                    duplicate: true,
                    progress: Progress::idle(store.get_execution(execution_id).await?),
                })
            }
            Err(err) if err.is_conflict() => {
                let message = refusal.unwrap_or_else(|| err.to_string());
                self.refuse(execution_id, actor, audit, &message).await;
                Err(Error::Conflict(message))
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn refuse(&self, execution_id: Uuid, actor: Option<&str>, audit: Value, message: &str) {
        audit_refusal(
            &self.engine,
            refused(
                &self.engine,
                execution_id,
                ResumeTrigger::Event,
                actor,
                audit,
                message,
            ),
        )
        .await;
    }
}

/// What a direct delivery did.
#[derive(Debug)]
pub struct DirectDelivery {
    /// The stored event (the first one, for a repeated `event_id`).
    pub event: Event,
    /// True when the `event_id` was seen before: nothing changed.
    pub duplicate: bool,
    /// The execution: being advanced, or (for a duplicate) as it is now.
    pub progress: Progress,
}

/// Offers a stored event to every execution it may resume: its addressee, or the
/// executions waiting for its type whose correlation key it has or that have none.
/// Idempotent — an execution consumes an event once, and one that started after the
/// event arrived, or that the event started, never takes it — so the ingesting request,
/// a retry of it and the worker's sweep of undelivered events may all run it. Returns the executions resumed (`true`: claimed by this call,
/// to be advanced by the caller).
pub(crate) async fn deliver(engine: &Engine, event: &Event) -> Result<Vec<(Execution, bool)>> {
    let store = engine.store();
    let mut resumed = Vec::new();
    match event.correlation_id {
        Some(target) => match store.get_execution(target).await {
            Ok(execution) => {
                if let Some(claimed) = try_claim(engine, &execution, event).await? {
                    resumed.push(claimed);
                }
            }
            // An event addressed to an execution that does not exist resumes nothing.
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(err.into()),
        },
        None => {
            // The waits it may satisfy: those whose correlation key it has (one index
            // probe per shape waiting on its type) and those without a key. Each is then
            // checked against its whole match (`try_claim`). The shapes of plain waits and
            // of `first_of` steps' event gates are read at once, then the waits of both
            // kinds at once: an execution is at one step, so the two sets never meet.
            let (wait_shapes, first_of_shapes) = tokio::try_join!(
                store.wait_shapes(&event.event_type),
                store.first_of_shapes(&event.event_type)
            )?;
            let now = engine.clock().now();
            // The `first_of` steps with an event gate of its type are found by key too, in
            // their own index; nothing more to read when no such step awaits the type.
            let first_of_keys =
                (!first_of_shapes.is_empty()).then(|| keys_of(event, first_of_shapes));
            let keys = keys_of(event, wait_shapes);
            let at_first_of = async {
                match &first_of_keys {
                    Some(keys) => {
                        offer_pages(engine, event, |after| {
                            store.waiting_at_first_of(
                                &event.event_type,
                                keys,
                                after,
                                SCAN_PAGE,
                                now,
                            )
                        })
                        .await
                    }
                    None => Ok(Vec::new()),
                }
            };
            let at_waits = offer_pages(engine, event, |after| {
                store.waiting_for_keys(&event.event_type, &keys, after, SCAN_PAGE, now)
            });
            let (at_first_of, at_waits) = tokio::try_join!(at_first_of, at_waits)?;
            resumed.extend(at_first_of);
            resumed.extend(at_waits);
        }
    }
    Ok(resumed)
}

/// The event's own key for each of `shapes` it has the fields of (the keyless shape
/// needs none: its waits are read without a key).
fn keys_of(event: &Event, shapes: Vec<WaitShape>) -> Vec<WaitKey> {
    shapes
        .into_iter()
        .filter(|s| !s.shape.is_empty())
        .filter_map(|shape| {
            let hash = event_hash(&shape.shape, &shape.fields, &event.payload)?;
            Some(WaitKey {
                shape: shape.shape,
                hash,
            })
        })
        .collect()
}

/// Offers `event` to each execution of the pages `page` reads (given the last id of
/// the one before), until a page is not full; returns those it resumed.
async fn offer_pages<F, Fut>(
    engine: &Engine,
    event: &Event,
    mut page: F,
) -> Result<Vec<(Execution, bool)>>
where
    F: FnMut(Option<Uuid>) -> Fut,
    Fut: std::future::Future<Output = tollgate_store::Result<Vec<Execution>>>,
{
    let mut resumed = Vec::new();
    let mut after = None;
    loop {
        let executions = page(after).await?;
        let full = executions.len() == SCAN_PAGE as usize;
        after = executions.last().map(|e| e.id);
        for execution in &executions {
            if let Some(claimed) = try_claim(engine, execution, event).await? {
                resumed.push(claimed);
            }
        }
        if !full {
            return Ok(resumed);
        }
    }
}

/// Adds the executions just resumed to the event's `resumed` list (informational).
pub(crate) async fn record_resumed(
    engine: &Engine,
    event: Event,
    resumed: &[(Execution, bool)],
) -> Result<Event> {
    let new: Vec<Uuid> = resumed
        .iter()
        .map(|(e, _)| e.id)
        .filter(|id| !event.resumed.contains(id))
        .collect();
    if new.is_empty() {
        return Ok(event);
    }
    let mut all = event.resumed.clone();
    all.extend(new);
    Ok(engine
        .store()
        .set_event_outcome(event.id, event.started.clone(), all)
        .await?)
}

/// Claims `execution` for `event` if it waits for it and the match holds. `Some((e,
/// true))` when this call claimed it (the caller advances it); `Some((e, false))` when
/// the event resumed it through another claimer — the execution itself, re-checking
/// its new wait for events that arrived while it entered it — so that the event still
/// reports it as resumed; `None` when the event does not resume it.
async fn try_claim(
    engine: &Engine,
    execution: &Execution,
    event: &Event,
) -> Result<Option<(Execution, bool)>> {
    let Some(gate) = execution
        .gate
        .as_ref()
        .filter(|g| g.reason == PauseReason::Event)
    else {
        return Ok(None);
    };
    if execution.status != ExecutionStatus::Waiting
        || !gate.awaits(&event.event_type)
        || !tollgate_store::rules::may_take(execution, event)
    {
        return Ok(None);
    }
    let now = engine.clock().now();
    if !gate_accepts(
        gate,
        &execution.context,
        &event.event_type,
        &event.payload,
        now,
    ) {
        return Ok(None);
    }
    match engine
        .store()
        .claim_wait(
            execution.id,
            Some(execution.version),
            event,
            event.submitted_by.as_deref(),
            &engine.claim(),
            now,
        )
        .await
    {
        Ok(claimed) => Ok(Some((claimed, true))),
        Err(err) if err.is_conflict() => {
            let now = engine.store().get_execution(execution.id).await?;
            Ok(now
                .consumed_events
                .contains(&event.id)
                .then_some((now, false)))
        }
        Err(err) => Err(err.into()),
    }
}
