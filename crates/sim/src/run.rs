//! Running a scenario with processes that die at chosen store calls.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::TimeZone;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tollgate_engine::{Clock, Engine, EngineOptions, TestClock};
use tollgate_model::records::{snapshot_id, DecisionKind, Principal, Workflow};
use tollgate_resumer::{
    ApprovalService, EventService, ExecutionControl, NewEvent, Progress, Worker, WorkerOptions,
};
use tollgate_store::{MemoryStore, Store};
use uuid::Uuid;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::client::Client;
use crate::fuse::{CrashPoint, CrashStore, Fuse};
use crate::scenario::{Act, Remote, Scenario};

/// The lease every simulated process takes; the clock moves past it after a crash.
pub const LEASE: Duration = Duration::from_secs(30);

/// At most this many worker passes to reach quiescence; more means an execution cycles.
const MAX_PASSES: usize = 40;

/// Where the durable state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-memory store, shared by every process of the run.
    Memory,
    /// A SQLite file: each process opens its own pool on it, and a dead process's pool
    /// is dropped without being closed.
    Sqlite,
}

/// How a run goes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Where each process in turn dies (`crashes[0]` is the first process); the process
    /// after the last crash runs to the end.
    pub crashes: Vec<CrashPoint>,
    /// Randomised mode: the seed of the interleavings (random yields before store
    /// calls, acts sent concurrently in random groups).
    pub jitter: Option<u64>,
}

/// What one run did and found.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Store calls of the first process (the dry run's count sizes the sweep).
    pub calls: usize,
    /// The crashes that happened: point and the store method it hit.
    pub crashed: Vec<(CrashPoint, &'static str)>,
    /// Invariants checked.
    pub checks: usize,
    /// Invariants broken, each saying what and where.
    pub violations: Vec<String>,
    /// What the client did and was answered, in order (for failure reports).
    pub log: Vec<String>,
}

type Shared = Arc<Mutex<Client>>;

fn lock(client: &Shared) -> std::sync::MutexGuard<'_, Client> {
    client.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One process: an engine with its services and worker loop, on its own view of the
/// store (through a fuse when it is to die).
struct Process {
    engine: Engine,
    approvals: ApprovalService,
    events: EventService,
    control: ExecutionControl,
    worker: Worker,
    fuse: Arc<Fuse>,
}

impl Process {
    fn new(store: Arc<dyn Store>, clock: Arc<TestClock>, id: &str, fuse: Arc<Fuse>) -> Self {
        let store: Arc<dyn Store> = Arc::new(CrashStore::new(store, fuse.clone()));
        let options = EngineOptions {
            worker_id: id.to_owned(),
            lease: LEASE,
            inline_retry_max: Duration::from_millis(100),
            http_timeout: Duration::from_secs(5),
            ..EngineOptions::default()
        };
        let engine = match Engine::builder(store).clock(clock).options(options).build() {
            Ok(engine) => engine,
            Err(err) => panic!("the engine cannot be built: {err}"),
        };
        Self {
            approvals: ApprovalService::new(engine.clone()),
            events: EventService::new(engine.clone()),
            control: ExecutionControl::new(engine.clone()),
            worker: Worker::new(
                engine.clone(),
                WorkerOptions {
                    batch: 100,
                    concurrency: 1,
                    poll_interval: Duration::from_secs(3600),
                    delivery_grace: LEASE,
                    // The scenarios move the clock by days; the invariants say every
                    // event answered 2xx stays stored, so nothing is deleted by age here
                    // (retention has its own tests).
                    retention: tollgate_resumer::RetentionOptions {
                        events: None,
                        ..tollgate_resumer::RetentionOptions::default()
                    },
                    ..WorkerOptions::default()
                },
            ),
            engine,
            fuse,
        }
    }

    /// Runs `work` unless the process dies first; `None` when it died.
    async fn alive<F: Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = work => if self.fuse.is_blown() { None } else { Some(out) },
            () = self.fuse.blown() => None,
        }
    }
}

/// The world a run's processes share: the durable store, the clock, the outside service.
struct World {
    backend: Backend,
    memory: Arc<dyn Store>,
    sqlite: Option<(tempdir::Dir, PathBuf)>,
    clock: Arc<TestClock>,
    remote: MockServer,
}

mod tempdir {
    //! A directory removed when dropped (for SQLite runs).
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> std::io::Result<Self> {
            let path = std::env::temp_dir().join(format!("tollgate-sim-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The outside service: records every request; `FailsOnce` answers the first request
/// of each path with a 500.
struct Answer {
    fails_once: bool,
    seen: Mutex<HashMap<String, u32>>,
}

impl Respond for Answer {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let n = seen.entry(request.url.path().to_owned()).or_insert(0);
        *n += 1;
        if self.fails_once && *n == 1 {
            ResponseTemplate::new(500)
        } else {
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "score": 3, "paid": true, "rows": 2}))
        }
    }
}

fn start_time() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .with_ymd_and_hms(2026, 6, 1, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Points `{{remote}}` and the originals' `https://….example.com` hosts at `base`.
fn point_at(doc: &Value, base: &str, hosts: &regex::Regex) -> Value {
    match doc {
        Value::String(s) => Value::String(
            hosts
                .replace_all(&s.replace("{{remote}}", base), base)
                .into_owned(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| point_at(v, base, hosts)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), point_at(v, base, hosts)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl World {
    async fn new(scenario: &Scenario, backend: Backend) -> anyhow::Result<Self> {
        let remote = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(Answer {
                fails_once: scenario.remote == Remote::FailsOnce,
                seen: Mutex::default(),
            })
            .mount(&remote)
            .await;
        let sqlite = match backend {
            Backend::Memory => None,
            Backend::Sqlite => {
                let dir = tempdir::Dir::new()?;
                let path = dir.path().join("sim.db");
                Some((dir, path))
            }
        };
        let world = Self {
            backend,
            memory: Arc::new(MemoryStore::new()),
            sqlite,
            clock: Arc::new(TestClock::new(start_time())),
            remote,
        };
        let store = world.open().await?;
        let hosts = regex::Regex::new(r"https://[a-z0-9.-]+\.example\.com")?;
        for doc in &scenario.workflows {
            let doc = point_at(doc, &world.remote.uri(), &hosts);
            let loaded = tollgate_model::load(&doc)
                .map_err(|r| anyhow::anyhow!("{}: {:?}", scenario.name, r.errors))?;
            let definition = Arc::new(loaded.definition);
            let now = world.clock.now();
            store
                .create_workflow(Workflow {
                    id: Uuid::now_v7(),
                    snapshot_id: snapshot_id(&definition),
                    enabled: definition.enabled,
                    definition,
                    created_at: now,
                    updated_at: now,
                })
                .await?;
        }
        Ok(world)
    }

    /// A process's own connection to the durable state.
    async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        match (&self.backend, &self.sqlite) {
            (Backend::Sqlite, Some((_, path))) => {
                let options = tollgate_sqlite::SqliteOptions {
                    read_connections: 2,
                    ..tollgate_sqlite::SqliteOptions::new(path)
                };
                Ok(Arc::new(
                    tollgate_sqlite::SqliteStore::open(&options).await?,
                ))
            }
            _ => Ok(self.memory.clone()),
        }
    }
}

/// Runs `scenario` on `backend` as `plan` says, then checks every invariant.
pub async fn run(scenario: &Scenario, backend: Backend, plan: &Plan) -> anyhow::Result<RunReport> {
    let world = World::new(scenario, backend).await?;
    let client: Shared = Arc::new(Mutex::new(Client {
        answered: vec![false; scenario.script.len()],
        ..Client::default()
    }));
    let mut rng = plan.jitter.map(StdRng::seed_from_u64);
    let mut report = RunReport::default();
    let mut generation = 0usize;
    let mut pending: Vec<usize> = (0..scenario.script.len()).collect();
    loop {
        let point = plan.crashes.get(generation).copied();
        let fuse = match rng.as_mut() {
            Some(rng) => Fuse::with_jitter(point, StdRng::seed_from_u64(rng.random())),
            None => point.map_or_else(Fuse::counting, Fuse::at),
        };
        let store = world.open().await?;
        let process = Process::new(
            store,
            world.clock.clone(),
            &format!("process-{generation}"),
            fuse.clone(),
        );
        let done = process
            .alive(live(
                &process,
                &world,
                scenario,
                &client,
                &mut pending,
                &mut rng,
                generation,
            ))
            .await;
        if generation == 0 {
            report.calls = fuse.calls();
        }
        if done.is_some() {
            break;
        }
        if let Some(point) = point {
            let name = fuse.names().get(point.call).copied().unwrap_or("?");
            lock(&client)
                .log
                .push(format!("process-{generation} killed {point} ({name})"));
            report.crashed.push((point, name));
        }
        // Whatever the dead process was doing stays as it is: its tasks wait forever on
        // its fuse. The next process starts on the same durable state.
        generation += 1;
        if generation > plan.crashes.len() + 1 {
            report
                .violations
                .push("the run did not finish after its last crash".into());
            break;
        }
    }
    let store = world.open().await?;
    let requests = world.remote.received_requests().await.unwrap_or_default();
    let client = std::mem::take(&mut *lock(&client));
    let (checks, violations) =
        crate::check::check(&store, world.clock.now(), &client, &requests).await;
    report.checks += checks;
    report.violations.extend(violations);
    report.log = client.log;
    Ok(report)
}

/// One process's life: recovery (after a predecessor died), the client's remaining
/// acts, then quiescence past every lease and deadline.
async fn live(
    process: &Process,
    world: &World,
    scenario: &Scenario,
    client: &Shared,
    pending: &mut Vec<usize>,
    rng: &mut Option<StdRng>,
    generation: usize,
) -> Result<(), String> {
    if generation > 0 {
        // Another process takes over once the dead one's leases have lapsed. The client
        // goes on at once — its retry and next calls meet the state exactly as the
        // crash left it (an operator may well pause what looks stuck) — and the worker
        // loop's passes come after.
        world.clock.advance(LEASE + Duration::from_secs(1));
    }
    loop {
        pending.retain(|i| !lock(client).answered[*i]);
        if pending.is_empty() {
            break;
        }
        // A group of acts sent at once (one at a time unless randomised).
        let size = match rng.as_mut() {
            Some(rng) => rng.random_range(1..=3usize).min(pending.len()),
            None => 1,
        };
        let group: Vec<usize> = pending[..size].to_vec();
        futures_util::future::join_all(
            group
                .iter()
                .map(|&i| act(process, world, &scenario.script[i], i, client)),
        )
        .await;
    }
    finish(process, world, client).await;
    Ok(())
}

/// Runs worker passes until one finds nothing to do.
async fn quiesce(process: &Process, client: &Shared) {
    for _ in 0..MAX_PASSES {
        match process.worker.tick().await {
            Ok(report) if report.total() == 0 => return,
            Ok(_) => {}
            Err(err) => lock(client)
                .failures
                .push(format!("worker pass failed: {err}")),
        }
    }
    lock(client).failures.push(format!(
        "the worker was still busy after {MAX_PASSES} passes: an execution cycles"
    ));
}

/// The end of the story: every lease, retry wait and deadline passes.
async fn finish(process: &Process, world: &World, client: &Shared) {
    quiesce(process, client).await;
    world.clock.advance(LEASE + Duration::from_secs(1));
    quiesce(process, client).await;
    world.clock.advance(Duration::from_secs(40 * 24 * 3600));
    quiesce(process, client).await;
    world.clock.advance(LEASE + Duration::from_secs(1));
    quiesce(process, client).await;
}

/// The execution the event sent with `key` started.
fn started_by(client: &Shared, key: &str) -> Option<Uuid> {
    lock(client)
        .sent
        .get(key)
        .and_then(|e| e.started.first().copied())
}

const SETTLE: Duration = Duration::from_secs(60);

async fn settle(process: &Process, client: &Shared, what: &str, progress: Vec<Progress>) {
    for p in progress {
        if let Err(err) = p.settled(&process.engine, SETTLE).await {
            lock(client)
                .failures
                .push(format!("{what}: settling failed: {err}"));
        }
    }
}

fn refused(err: &tollgate_resumer::Error) -> bool {
    !matches!(
        err,
        tollgate_resumer::Error::Store(_) | tollgate_resumer::Error::Engine(_)
    )
}

/// One act of the client; marks it answered as soon as the answer comes.
async fn act(process: &Process, world: &World, act: &Act, index: usize, client: &Shared) {
    let answered = |line: String| {
        let mut c = lock(client);
        c.answered[index] = true;
        c.log.push(line);
    };
    match act {
        Act::Send {
            event_type,
            key,
            payload,
            to,
        } => {
            let correlation_id = to.and_then(|k| started_by(client, k));
            let result = process
                .events
                .ingest(NewEvent {
                    event_type: (*event_type).to_owned(),
                    payload: payload.clone(),
                    source: Some("sim".into()),
                    event_id: Some((*key).to_owned()),
                    correlation_id,
                    submitted_by: Some("shop".into()),
                })
                .await;
            match result {
                Ok(ingested) => {
                    answered(format!(
                        "send {key}: stored (duplicate: {}), started {}, resumed {}",
                        ingested.duplicate,
                        ingested.started.len(),
                        ingested.resumed.len()
                    ));
                    lock(client).sent.insert(key, ingested.event.clone());
                    let all = ingested
                        .started
                        .into_iter()
                        .chain(ingested.resumed)
                        .collect();
                    settle(process, client, key, all).await;
                }
                Err(err) => {
                    answered(format!("send {key}: {err}"));
                    if !refused(&err) {
                        lock(client).failures.push(format!("send {key}: {err}"));
                    }
                }
            }
        }
        Act::Deliver {
            of,
            event_type,
            key,
            payload,
        } => {
            let Some(id) = started_by(client, of) else {
                answered(format!("deliver {key}: nothing started by {of}"));
                return;
            };
            match process
                .events
                .deliver_to(
                    id,
                    event_type,
                    payload.clone(),
                    Some((*key).to_owned()),
                    Some("shop"),
                )
                .await
            {
                Ok(delivered) => {
                    answered(format!(
                        "deliver {key}: accepted (duplicate: {})",
                        delivered.duplicate
                    ));
                    settle(process, client, key, vec![delivered.progress]).await;
                }
                Err(err) => {
                    answered(format!("deliver {key}: {err}"));
                    if refused(&err) {
                        lock(client).refused_deliveries.push((key, id, event_type));
                    } else {
                        lock(client).failures.push(format!("deliver {key}: {err}"));
                    }
                }
            }
        }
        Act::Decide {
            of,
            who,
            roles,
            approve,
        } => {
            let Some(id) = started_by(client, of) else {
                answered(format!("decide {of} by {who}: nothing started"));
                return;
            };
            let known = lock(client).approval_for.get(&(*of, *who)).copied();
            let approval_id = match known {
                Some(a) => a,
                None => {
                    let Ok(execution) = process.engine.store().get_execution(id).await else {
                        answered(format!("decide {of} by {who}: execution unreadable"));
                        return;
                    };
                    let Some(a) = execution.gate.as_ref().and_then(|g| g.approval_id) else {
                        answered(format!(
                            "decide {of} by {who}: not at an approval ({})",
                            execution.status
                        ));
                        return;
                    };
                    lock(client).approval_for.insert((of, who), a);
                    a
                }
            };
            let principal = Principal {
                subject: (*who).to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            };
            let kind = if *approve {
                DecisionKind::Approve
            } else {
                DecisionKind::Reject
            };
            let reason = (!approve).then(|| "not this one".to_owned());
            match process
                .approvals
                .decide(approval_id, &principal, kind, reason, json!({"by": who}))
                .await
            {
                Ok(decided) => {
                    answered(format!(
                        "decide {of} by {who}: {}",
                        decided.approval.status.as_str()
                    ));
                    lock(client).decisions.push((approval_id, who));
                    settle(process, client, who, vec![decided.progress]).await;
                }
                Err(err) => {
                    // A retry whose first try was stored: the client recognises its own
                    // decision on the request and takes it as done.
                    let own = match process.engine.store().get_approval(approval_id).await {
                        Ok(a) => a.decisions.iter().any(|d| d.decided_by == *who),
                        Err(_) => false,
                    };
                    answered(format!(
                        "decide {of} by {who}: {err} (own decision stored: {own})"
                    ));
                    if own {
                        lock(client).decisions.push((approval_id, who));
                    } else if !refused(&err) {
                        lock(client)
                            .failures
                            .push(format!("decide {of} by {who}: {err}"));
                    } else if matches!(
                        err,
                        tollgate_resumer::Error::Conflict(_)
                            | tollgate_resumer::Error::Forbidden(_)
                    ) {
                        lock(client).refused_decisions.push((approval_id, who));
                    }
                }
            }
        }
        Act::Pause { of } | Act::Resume { of, .. } | Act::Cancel { of } => {
            let Some(id) = started_by(client, of) else {
                answered(format!("operator on {of}: nothing started"));
                return;
            };
            let (name, result) = match act {
                Act::Pause { .. } => (
                    "pause",
                    process
                        .control
                        .pause(id, Some("ops"), Some("looks stuck"))
                        .await
                        .map(|e| (e, None)),
                ),
                Act::Resume { data, .. } => (
                    "resume",
                    process
                        .control
                        .resume(id, Some("ops"), data.clone())
                        .await
                        .map(|p| (p.execution.clone(), Some(p))),
                ),
                _ => (
                    "cancel",
                    process
                        .control
                        .cancel(id, Some("ops"), Some("not needed"))
                        .await
                        .map(|e| (e, None)),
                ),
            };
            match result {
                Ok((execution, progress)) => {
                    answered(format!("{name} {of}: {}", execution.status));
                    settle(process, client, name, progress.into_iter().collect()).await;
                }
                Err(err) => {
                    answered(format!("{name} {of}: {err}"));
                    if !refused(&err) {
                        lock(client).failures.push(format!("{name} {of}: {err}"));
                    }
                }
            }
        }
        Act::Advance(by) => {
            world.clock.advance(*by);
            answered(format!("clock +{}s", by.as_secs()));
        }
        Act::Tick => match process.worker.tick().await {
            Ok(report) => answered(format!("worker pass: {report:?}")),
            Err(err) => {
                answered(format!("worker pass: {err}"));
                lock(client).failures.push(format!("worker pass: {err}"));
            }
        },
    }
}

/// Runs `run` on a runtime of its own (one thread), so that everything a dead process
/// left waiting is dropped with it.
pub fn run_blocking(
    scenario: &Scenario,
    backend: Backend,
    plan: &Plan,
) -> anyhow::Result<RunReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(scenario, backend, plan));
    runtime.shutdown_background();
    report
}
