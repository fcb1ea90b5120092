//! History retention in the worker loop (docs/operations.md, "History retention"): ended
//! executions older than their workflow's retention are deleted in small batches, one
//! node at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tollgate_engine::Engine;
use tollgate_model::definition::{compare_versions, Step, StepKind};
use tollgate_model::records::Timestamp;
use tollgate_model::WorkflowDefinition;
use tollgate_store::{EventPurge, PageRequest, Purge, WorkflowFilter};

use crate::archive::ArchiveDir;
use crate::Result;

/// How long ended executions are kept, and how fast they are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionOptions {
    /// Kept this long after they end, for workflows whose definition sets no
    /// `retention`; `None` keeps them (a definition's `retention` still applies).
    pub default: Option<Duration>,
    /// Executions deleted per transaction: small, so no purge holds locks for long.
    pub batch: u32,
    /// How often the loop looks for expired history when the last batch was not full
    /// (a full batch is followed by the next one on the next pass).
    pub interval: Duration,
    /// Where each batch is written before it is deleted; `None`: deleted only.
    pub archive: Option<ArchiveDir>,
    /// Events nobody took are kept this long after they arrive (longer for an event
    /// type a wait step's `early_events` asks to keep longer); `None` keeps them.
    pub events: Option<Duration>,
}

/// The default of [`RetentionOptions::events`]: a week.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for RetentionOptions {
    fn default() -> Self {
        Self {
            default: None,
            batch: 500,
            interval: Duration::from_secs(60),
            archive: None,
            events: Some(DEFAULT_EVENT_RETENTION),
        }
    }
}

/// The retention part of a worker: when it next looks, and what it does then.
#[derive(Debug, Clone)]
pub(crate) struct Retention {
    engine: Engine,
    options: RetentionOptions,
    next_at: Arc<Mutex<Option<Timestamp>>>,
}

impl Retention {
    pub(crate) fn new(engine: Engine, options: RetentionOptions) -> Self {
        Self {
            engine,
            options,
            next_at: Arc::new(Mutex::new(None)),
        }
    }

    /// Deletes one batch of expired history and one of expired untaken events when it
    /// is time to look; returns how many executions and events it deleted. One failing
    /// does not keep the other from running.
    pub(crate) async fn pass(&self, now: Timestamp) -> (Result<usize>, Result<u64>) {
        let due = self
            .next_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|at| at <= now);
        if !due || self.options.batch == 0 {
            return (Ok(0), Ok(0));
        }
        let later = now
            + chrono::TimeDelta::from_std(self.options.interval).unwrap_or(chrono::TimeDelta::MAX);
        // A failed look is tried again after the interval, not on every pass.
        *self.next_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(later);
        // Without the definitions neither cutoff is known (a wait step may keep its
        // events longer): both wait for the next look.
        let workflows = match self.highest_definitions().await {
            Ok(workflows) => workflows,
            Err(err) => return (Err(err), Ok(0)),
        };
        let executions = self.purge_executions(now, &workflows).await;
        let events = self.purge_events(now, &workflows).await;
        let batch = self.options.batch as usize;
        let full = executions.as_ref().is_ok_and(|n| *n >= batch)
            || events.as_ref().is_ok_and(|n| *n >= batch as u64);
        if full {
            *self.next_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
        }
        (executions, events)
    }

    /// One batch of untaken events past their type's cutoff.
    async fn purge_events(&self, now: Timestamp, workflows: &Definitions) -> Result<u64> {
        let Some(default) = self.options.events else {
            return Ok(0);
        };
        let before = |keep: Duration| {
            chrono::TimeDelta::from_std(keep)
                .ok()
                .and_then(|keep| now.checked_sub_signed(keep))
        };
        let Some(cutoff) = before(default) else {
            return Ok(0);
        };
        // Every stored version counts: executions of an older version still wait with
        // its steps.
        let mut longest: BTreeMap<String, Duration> = BTreeMap::new();
        for definition in workflows.values().flat_map(|(_, all)| all) {
            for_each_wait(&definition.steps, &mut |event, early_events| {
                if let Some(keep) = early_events.map(tollgate_model::Duration::as_std) {
                    if keep > default {
                        let entry = longest.entry(event.to_owned()).or_insert(keep);
                        *entry = (*entry).max(keep);
                    }
                }
            });
        }
        let purge = EventPurge {
            before: cutoff,
            per_type: longest
                .into_iter()
                .map(|(event_type, keep)| (event_type, before(keep).unwrap_or(Timestamp::MIN_UTC)))
                .collect(),
        };
        let deleted = self
            .engine
            .store()
            .purge_events(&purge, self.options.batch)
            .await?;
        if deleted > 0 {
            metrics::counter!("tollgate_events_purged_total").increment(deleted);
            tracing::info!(
                count = deleted,
                "deleted untaken events past their retention"
            );
        }
        Ok(deleted)
    }

    /// One batch of ended executions past their workflow's retention.
    async fn purge_executions(&self, now: Timestamp, workflows: &Definitions) -> Result<usize> {
        let purge = self.policy(now, workflows);
        let purged = if purge.is_empty() {
            Vec::new()
        } else if let Some(archive) = &self.options.archive {
            // Archive first, then delete only what the archive holds. A crash between
            // the two leaves the batch in the database, and the next pass archives it
            // again (lines may repeat; none is lost).
            let batch = self
                .engine
                .store()
                .purgeable(&purge, self.options.batch)
                .await?;
            if batch.is_empty() {
                Vec::new()
            } else {
                archive.keep(&self.engine, &batch).await?;
                let archived = Purge {
                    only: Some(batch.iter().map(|p| p.execution_id).collect()),
                    ..purge
                };
                self.engine
                    .store()
                    .purge_ended(&archived, self.options.batch)
                    .await?
            }
        } else {
            self.engine
                .store()
                .purge_ended(&purge, self.options.batch)
                .await?
        };
        if !purged.is_empty() {
            metrics::counter!("tollgate_executions_purged_total").increment(purged.len() as u64);
            let oldest = purged.iter().map(|p| p.ended_at).min();
            tracing::info!(count = purged.len(), oldest_end = ?oldest, "deleted ended executions past their retention");
        }
        Ok(purged.len())
    }

    /// Every stored workflow's definitions by string id: the highest version's (which
    /// decides its retention) and all of them.
    async fn highest_definitions(&self) -> Result<Definitions> {
        let store = self.engine.store();
        let mut all: Definitions = BTreeMap::new();
        let mut page = PageRequest::first(500);
        loop {
            let workflows = store
                .list_workflows(&WorkflowFilter::default(), &page)
                .await?;
            for w in &workflows.items {
                let key = w.workflow_id().to_owned();
                let version = w.version().to_owned();
                let entry = all
                    .entry(key)
                    .or_insert_with(|| (version.clone(), Vec::new()));
                if compare_versions(&version, &entry.0).is_gt() {
                    entry.0 = version;
                }
                entry.1.push(w.definition.clone());
            }
            match workflows.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        Ok(all)
    }

    /// The cutoffs at `now`: the server's default, and each workflow whose highest
    /// version's definition sets `retention`.
    fn policy(&self, now: Timestamp, workflows: &Definitions) -> Purge {
        let before = |keep: Duration| {
            chrono::TimeDelta::from_std(keep)
                .ok()
                .and_then(|keep| now.checked_sub_signed(keep))
        };
        Purge {
            default_before: self.options.default.and_then(before),
            per_workflow: workflows
                .iter()
                .filter_map(|(key, (highest, all))| {
                    let keep = all
                        .iter()
                        .find(|d| &d.version == highest)
                        .and_then(|d| d.retention)?;
                    Some((key.clone(), before(keep.as_std())?))
                })
                .collect(),
            only: None,
        }
    }
}

/// Stored definitions by workflow string id: the highest version, and every version.
type Definitions = BTreeMap<String, (String, Vec<Arc<WorkflowDefinition>>)>;

/// Calls `f` with the event type and `early_events` window of every wait step and every
/// event gate of a `first_of` step, children of parallel and foreach steps included.
fn for_each_wait(steps: &[Step], f: &mut impl FnMut(&str, Option<tollgate_model::Duration>)) {
    for step in steps {
        match &step.kind {
            StepKind::Wait { wait, .. } => f(&wait.event, wait.early_events),
            StepKind::FirstOf { first_of } => {
                for branch in first_of {
                    if let tollgate_model::definition::Branch::Event {
                        event,
                        early_events,
                        ..
                    } = branch
                    {
                        f(event, *early_events);
                    }
                }
            }
            _ => {}
        }
        for_each_wait(step.children(), f);
    }
}
