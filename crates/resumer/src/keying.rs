//! Keying stored events in the worker loop (docs/execution-semantics.md, "Correlation
//! keys"): each event gets, for every shape its type's wait steps have, the key that
//! lets a wait entered later find it by one index probe. Keying follows arrival order a
//! delivery grace behind, so every event it passes is committed; newer ones are read one
//! by one by the few waits that need them.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tollgate_engine::correlation::{definition_shapes, event_hash};
use tollgate_engine::Engine;
use tollgate_model::records::Timestamp;
use tollgate_store::{EventKey, PageRequest, WorkflowFilter};

use crate::Result;

/// Events keyed per shape in one transaction.
const BATCH: u32 = 2_000;
/// At most this many batches per shape in one pass, so a backlog (a new shape over a
/// week of events) is worked off without holding up the pass.
const BATCHES_PER_PASS: usize = 10;
/// How often the shapes are looked for again in the definitions.
const SHAPE_SYNC: Duration = Duration::from_secs(60);

/// The keying part of a worker.
#[derive(Debug, Clone)]
pub(crate) struct Keying {
    engine: Engine,
    grace: Duration,
    next_sync: Arc<Mutex<Option<Timestamp>>>,
}

impl Keying {
    /// Keys events received at least `grace` ago (by then their transactions have
    /// committed: the same bound the redelivery sweep relies on).
    pub(crate) fn new(engine: Engine, grace: Duration) -> Self {
        Self {
            engine,
            grace,
            next_sync: Arc::new(Mutex::new(None)),
        }
    }

    /// Registers new shapes when it is time to look, then keys the next events of every
    /// shape; returns how many events it keyed.
    pub(crate) async fn pass(&self, now: Timestamp) -> Result<u64> {
        let due = self
            .next_sync
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|at| at <= now);
        if due {
            *self
                .next_sync
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(
                now + chrono::TimeDelta::from_std(SHAPE_SYNC).unwrap_or(chrono::TimeDelta::MAX),
            );
            self.sync_shapes().await?;
        }
        let store = self.engine.store();
        let Some(up_to) = chrono::TimeDelta::from_std(self.grace)
            .ok()
            .and_then(|g| now.checked_sub_signed(g))
        else {
            return Ok(0);
        };
        let mut keyed = 0u64;
        for shape in store.event_shapes(None).await? {
            let mut from = shape.keyed_through;
            for _ in 0..BATCHES_PER_PASS {
                let events = store
                    .events_to_key(&shape.event_type, from, up_to, BATCH)
                    .await?;
                let Some(last) = events.last().map(|e| (e.received_at, e.id)) else {
                    break;
                };
                let keys: Vec<EventKey> = events
                    .iter()
                    .filter_map(|e| {
                        Some(EventKey {
                            event_id: e.id,
                            received_at: e.received_at,
                            hash: event_hash(&shape.shape, &shape.fields, &e.payload)?,
                        })
                    })
                    .collect();
                match store
                    .add_event_keys(&shape.event_type, &shape.shape, &keys, from, last)
                    .await
                {
                    Ok(()) => keyed += events.len() as u64,
                    // Another worker keyed them: it goes on from there next pass.
                    Err(err) if err.is_conflict() => break,
                    Err(err) => return Err(err.into()),
                }
                from = Some(last);
                if events.len() < BATCH as usize {
                    break;
                }
            }
        }
        if keyed > 0 {
            metrics::counter!("tollgate_events_keyed_total").increment(keyed);
        }
        Ok(keyed)
    }

    /// Registers every shape a stored definition's wait steps have (all versions:
    /// executions of older ones still wait with their steps).
    async fn sync_shapes(&self) -> Result<()> {
        let store = self.engine.store();
        let known: BTreeSet<(String, String)> = store
            .event_shapes(None)
            .await?
            .into_iter()
            .map(|s| (s.event_type, s.shape))
            .collect();
        let mut page = PageRequest::first(500);
        loop {
            let workflows = store
                .list_workflows(&WorkflowFilter::default(), &page)
                .await?;
            for w in &workflows.items {
                for (event_type, shape, fields) in definition_shapes(&w.definition) {
                    if !known.contains(&(event_type.clone(), shape.clone())) {
                        store.add_event_shape(&event_type, &shape, &fields).await?;
                        tracing::info!(
                            event_type,
                            shape,
                            ?fields,
                            "keying stored events for a new correlation shape"
                        );
                    }
                }
            }
            match workflows.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        Ok(())
    }
}
