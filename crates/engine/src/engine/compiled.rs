//! Definitions as executions use them: conditions compiled once per snapshot, and the
//! cache that loads each snapshot once however many executions ask at the same moment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tollgate_model::definition::{Step, StepKind};
use tollgate_model::{paths, WorkflowDefinition};

use crate::condition::CompiledCondition;
use crate::error::{Error, Result};
use crate::path::Path;

/// Values loaded once per key. Concurrent callers for a key being loaded wait for that
/// load: the first burst of executions of a definition costs one store read, not one
/// each (30 reads at the approval benchmark's start, before this).
pub(crate) struct OnceMap<V> {
    cells: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<V>>>>,
}

impl<V: Clone> OnceMap<V> {
    pub(super) fn new() -> Self {
        Self {
            cells: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn cells(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::OnceCell<V>>>> {
        self.cells.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key`, when loaded already.
    pub(super) fn get(&self, key: &str) -> Option<V> {
        self.cells().get(key).and_then(|cell| cell.get().cloned())
    }

    /// The value of `key`, loaded by `load` unless loaded or being loaded already. A
    /// failed load is the error of the callers that waited for it; the next caller
    /// loads again, and a key that never loads leaves nothing behind.
    pub(super) async fn get_or_load<F, E>(
        &self,
        key: &str,
        load: impl FnOnce() -> F,
    ) -> Result<V, E>
    where
        F: std::future::Future<Output = Result<V, E>>,
    {
        let cell = self.cells().entry(key.to_owned()).or_default().clone();
        let loaded = cell.get_or_try_init(load).await.cloned();
        if loaded.is_err() {
            let mut cells = self.cells();
            if cells
                .get(key)
                .is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized())
            {
                cells.remove(key);
            }
        }
        loaded
    }
}

/// A definition with its conditions compiled, shared by every execution pinned to it.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) definition: Arc<WorkflowDefinition>,
    pub(crate) conditions: HashMap<String, CompiledCondition>,
    /// Under `strict_paths`: per top-level step, the context paths it reads (with where
    /// in the definition), checked before the step runs.
    pub(crate) required_paths: HashMap<String, Vec<(String, Path)>>,
}

impl Compiled {
    pub(super) fn new(definition: Arc<WorkflowDefinition>) -> Result<Self> {
        fn collect(steps: &[Step], out: &mut HashMap<String, CompiledCondition>) -> Result<()> {
            for step in steps {
                if let StepKind::Condition { condition, .. } = &step.kind {
                    let compiled = CompiledCondition::compile(condition)
                        .map_err(|e| Error::Definition(e.to_string()))?;
                    out.insert(step.id.clone(), compiled);
                }
                collect(step.children(), out)?;
            }
            Ok(())
        }
        let mut conditions = HashMap::new();
        collect(&definition.steps, &mut conditions)?;
        let mut required_paths = HashMap::new();
        if definition.strict_paths {
            for (i, step) in definition.steps.iter().enumerate() {
                let reads: Vec<(String, Path)> = paths::step_uses(step, &format!("steps[{i}]"))
                    .into_iter()
                    .filter(|u| u.how == paths::Use::Read)
                    .map(|u| (u.location, Path::parse(&u.path)))
                    .collect();
                required_paths.insert(step.id.clone(), reads);
            }
        }
        Ok(Self {
            definition,
            conditions,
            required_paths,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    pub(super) async fn a_key_is_loaded_once_for_every_concurrent_caller() {
        let map = Arc::new(OnceMap::<Arc<String>>::new());
        let loads = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..32)
            .map(|_| {
                let (map, loads) = (map.clone(), loads.clone());
                tokio::spawn(async move {
                    map.get_or_load("k", || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, ()>(Arc::new("v".to_owned()))
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut values = Vec::new();
        for caller in callers {
            values.push(caller.await.unwrap());
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
        assert_eq!(map.get("k").as_deref().map(String::as_str), Some("v"));
    }

    #[tokio::test]
    pub(super) async fn a_failed_load_is_retried_and_leaves_nothing_behind() {
        let map = OnceMap::<u32>::new();
        assert_eq!(
            map.get_or_load("k", || async { Err("down") }).await,
            Err("down")
        );
        assert!(map.get("k").is_none());
        assert!(map.cells().is_empty(), "no cell kept for a key that failed");
        assert_eq!(
            map.get_or_load("k", || async { Ok::<_, &str>(7) }).await,
            Ok(7)
        );
        assert_eq!(map.get("k"), Some(7));
    }
}
