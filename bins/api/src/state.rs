//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use tollgate_engine::Engine;
use tollgate_resumer::{ApprovalService, EventService, ExecutionControl, Tasks};
use tollgate_store::Store;

use crate::gauges::StatusGauges;
use crate::key_cache::KeyCache;

/// The services behind the routes. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The interpreter (creates and advances executions).
    pub engine: Engine,
    /// Approval decisions.
    pub approvals: ApprovalService,
    /// Event ingestion and direct delivery.
    pub events: EventService,
    /// Pause, resume, cancel.
    pub control: ExecutionControl,
    /// Where executions claimed by requests are advanced.
    pub tasks: Tasks,
    /// Upper bound of `?wait=true`.
    pub wait_timeout: Duration,
    /// Longest a request may take before it is answered `503` (plus `wait_timeout` for
    /// a `?wait=true` call).
    pub request_timeout: Duration,
    /// Largest accepted body, in bytes.
    pub max_body_size: usize,
    /// Recently verified API keys.
    pub keys: Arc<KeyCache>,
    /// Executions per status for `/metrics`, terminal counts cached.
    pub status_gauges: Arc<StatusGauges>,
    /// How long a gate may stay overdue before `/health/ready` warns.
    pub overdue_warning: Duration,
    /// How long without any worker heartbeat before `/health/ready` warns.
    pub worker_warning: Duration,
    /// Set when the process begins to stop: `/health/ready` answers 503.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Signed decision links: their keys and settings; `None` when links are off (no
    /// key file could be read or made).
    pub links: Option<Arc<Links>>,
}

/// What signed decision links need: the keys, how long a link to a request without a
/// deadline works, and the address links start with.
#[derive(Debug)]
pub struct Links {
    /// Signs and verifies the tokens.
    pub keys: Arc<crate::links::LinkKeys>,
    /// Lifetime of a link to a request without a deadline.
    pub lifetime: Duration,
    /// `--public-url`, without a trailing `/`.
    pub public_url: Option<String>,
}

impl AppState {
    /// Services sharing `engine`, advancing executions on `tasks`; verified API keys
    /// are trusted for `key_cache_ttl` before they are looked up again; `/metrics`
    /// counts ended executions at most once per `terminal_refresh`.
    pub fn new(
        engine: Engine,
        tasks: Tasks,
        wait_timeout: Duration,
        max_body_size: usize,
        key_cache_ttl: Duration,
        terminal_refresh: Duration,
    ) -> Self {
        Self {
            store: engine.store().clone(),
            approvals: ApprovalService::new(engine.clone()).with_tasks(tasks.clone()),
            events: EventService::new(engine.clone()).with_tasks(tasks.clone()),
            control: ExecutionControl::new(engine.clone()).with_tasks(tasks.clone()),
            engine,
            tasks,
            wait_timeout,
            request_timeout: Duration::from_secs(30),
            max_body_size,
            keys: Arc::new(KeyCache::new(key_cache_ttl)),
            status_gauges: Arc::new(StatusGauges::new(terminal_refresh)),
            overdue_warning: Duration::from_secs(300),
            worker_warning: Duration::from_secs(60),
            draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            links: None,
        }
    }

    /// Serves signed decision links with `links`.
    pub fn with_links(mut self, links: Links) -> Self {
        self.links = Some(Arc::new(links));
        self
    }

    /// Requests taking longer than this are answered `503`.
    pub fn with_request_timeout(mut self, after: Duration) -> Self {
        self.request_timeout = after;
        self
    }

    /// `/health/ready` warns once a gate has been overdue this long.
    pub fn with_overdue_warning(mut self, after: Duration) -> Self {
        self.overdue_warning = after;
        self
    }

    /// `/health/ready` warns once no worker has beaten for this long.
    pub fn with_worker_warning(mut self, after: Duration) -> Self {
        self.worker_warning = after;
        self
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("engine", &self.engine)
            .field("wait_timeout", &self.wait_timeout)
            .finish_non_exhaustive()
    }
}
