//! Building and running the server: backend, engine, admin key, worker loop, HTTP.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tollgate_bootstrap::{build_engine, default_worker_id, Kind};
use tollgate_model::records::ApiKey;
use tollgate_resumer::{ArchiveDir, RetentionOptions, Tasks, Worker, WorkerOptions};
use tollgate_store::ApiKeyStore;
use utoipa::OpenApi as _;
use uuid::Uuid;

use crate::auth::{generate_key, hash_key};
use crate::config::{FileConfig, ServeArgs};
use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;

/// The admin key after start-up.
#[derive(Debug, Clone)]
pub enum AdminKey {
    /// Created now: shown once, saved at `path`.
    Created {
        /// The secret.
        key: String,
        /// Where it was written (mode 0600).
        path: PathBuf,
    },
    /// Created earlier; the secret is in `path`.
    Existing {
        /// The key file.
        path: PathBuf,
    },
    /// `path` holds a key this database does not know (revoked, or made for another
    /// database). Delete the file to have a new admin key made at the next start.
    Unknown {
        /// The key file.
        path: PathBuf,
    },
    /// The database already has an admin key, made by another process or data
    /// directory: this one made none (every restart on a fresh volume would otherwise
    /// add a live admin credential).
    InDatabase,
    /// `--admin-key-file`: the supplied key is the database's admin key (registered now,
    /// on a database without one, or earlier).
    Supplied {
        /// The file it was read from.
        path: PathBuf,
    },
    /// `--bootstrap-admin-key off` and no key was supplied: none was made.
    Off,
}

/// How the first admin key comes to be (`--bootstrap-admin-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BootstrapAdminKey {
    /// Made, saved in the data directory and printed once — only while the database has
    /// no admin key.
    #[default]
    Auto,
    /// Never made: keys come from `--admin-key-file` or an existing admin.
    Off,
}

/// Makes sure the database has an admin key, without ever adding a second one:
///
/// - `supplied` (`--admin-key-file`, e.g. a mounted secret) is registered as the admin
///   key when the database has none; it is never printed;
/// - otherwise an existing `<data_dir>/admin.key` is checked against the database;
/// - otherwise, in `Auto` mode and only while the database has no admin key, one is
///   made, saved there (mode 0600) and returned to be printed once.
///
/// A key the database does not know is never registered again while another admin key
/// exists — that would undo a revocation — and is reported instead.
///
/// A new key is written to `admin.key.new`, registered, then renamed to `admin.key`.
/// A process killed before the registration leaves a `.new` file whose key the database
/// does not know: the next start deletes it and begins again. Killed after it: the
/// next start finds the `.new` key registered and renames it, so the only admin key is
/// never lost with its file.
pub async fn ensure_admin_key(
    store: &dyn ApiKeyStore,
    data_dir: &Path,
    mode: BootstrapAdminKey,
    supplied: Option<&Path>,
) -> anyhow::Result<AdminKey> {
    if let Some(file) = supplied {
        let key = read_key(file)?;
        if store.find_api_key(&hash_key(&key)).await?.is_some() {
            return Ok(AdminKey::Supplied {
                path: file.to_owned(),
            });
        }
        if has_admin_key(store).await? {
            return Ok(AdminKey::Unknown {
                path: file.to_owned(),
            });
        }
        return Ok(if register_admin(store, &key).await? {
            AdminKey::Supplied {
                path: file.to_owned(),
            }
        } else {
            AdminKey::InDatabase
        });
    }
    let path = data_dir.join("admin.key");
    let pending = data_dir.join("admin.key.new");
    if pending.exists() {
        let key = read_key(&pending)?;
        if store.find_api_key(&hash_key(&key)).await?.is_some() && !path.exists() {
            std::fs::rename(&pending, &path)
                .with_context(|| format!("cannot rename {}", pending.display()))?;
        } else {
            std::fs::remove_file(&pending)
                .with_context(|| format!("cannot remove {}", pending.display()))?;
        }
    }
    if path.exists() {
        let key = read_key(&path)?;
        if store.find_api_key(&hash_key(&key)).await?.is_some() {
            return Ok(AdminKey::Existing { path });
        }
        return Ok(AdminKey::Unknown { path });
    }
    if mode == BootstrapAdminKey::Off {
        return Ok(AdminKey::Off);
    }
    if has_admin_key(store).await? {
        return Ok(AdminKey::InDatabase);
    }
    let created = !data_dir.exists();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    #[cfg(unix)]
    if created {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", data_dir.display()))?;
    }
    let key = generate_key().map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
    write_secret(&pending, &key)?;
    if !register_admin(store, &key).await? {
        // Another process made the database's first admin key at the same moment.
        std::fs::remove_file(&pending)
            .with_context(|| format!("cannot remove {}", pending.display()))?;
        return Ok(AdminKey::InDatabase);
    }
    std::fs::rename(&pending, &path)
        .with_context(|| format!("cannot rename {}", pending.display()))?;
    Ok(AdminKey::Created { key, path })
}

/// Reads a key file: one Tollgate key (`tg_` and 64 hex digits), surrounding space
/// ignored.
fn read_key(path: &Path) -> anyhow::Result<String> {
    let key = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_owned();
    let well_formed = key.len() == 67
        && key.starts_with("tg_")
        && key[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        anyhow::bail!(
            "{} does not hold a Tollgate key (`tg_` followed by 64 hex digits)",
            path.display()
        );
    }
    Ok(key)
}

/// Whether any key holds the `admin` role.
async fn has_admin_key(store: &dyn ApiKeyStore) -> anyhow::Result<bool> {
    let mut page = tollgate_store::PageRequest::first(500);
    loop {
        let keys = store.list_api_keys(&page).await?;
        if keys
            .items
            .iter()
            .any(|k| k.roles.iter().any(|r| r == "admin"))
        {
            return Ok(true);
        }
        match keys.next_cursor {
            Some(cursor) => page = tollgate_store::PageRequest::after(500, cursor),
            None => return Ok(false),
        }
    }
}

/// Registers `key` as the key named `admin`; `false` when another process registered
/// the first admin key at the same moment (the name is unique, so only one wins). A
/// key that merely took the name without the role does not count: then the admin key
/// gets a suffixed name.
async fn register_admin(store: &dyn ApiKeyStore, key: &str) -> anyhow::Result<bool> {
    let mut record = ApiKey {
        id: Uuid::now_v7(),
        name: "admin".into(),
        roles: vec!["admin".into()],
        key_hash: hash_key(key),
        created_at: chrono::Utc::now(),
    };
    match store.create_api_key(record.clone()).await {
        Ok(_) => Ok(true),
        Err(tollgate_store::Error::Conflict(_)) if has_admin_key(store).await? => Ok(false),
        Err(tollgate_store::Error::Conflict(_)) => {
            record.name = format!("admin-{}", &record.id.simple().to_string()[20..]);
            store.create_api_key(record).await?;
            Ok(true)
        }
        Err(err) => Err(err.into()),
    }
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()?;
    Ok(())
}

/// A running server.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The admin key.
    pub admin_key: AdminKey,
    /// The backend in use.
    pub backend: Kind,
    stop: CancellationToken,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops gracefully (as on SIGTERM) and waits until everything is down.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.join.await.context("server task panicked")?
    }

    /// Waits until the server stops (after SIGTERM/SIGINT).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.join.await.context("server task panicked")?
    }
}

/// Starts everything `args` describes and returns once it listens. With `signals`,
/// SIGTERM and SIGINT stop it gracefully (as [`Running::stop`] does): `/health/ready`
/// answers 503 at once (for `--shutdown-grace`, while still serving), then it stops
/// accepting, finishes in-flight requests, stops the worker loop and waits for
/// executions in flight — all within `--shutdown-timeout`; the rest keep their lease,
/// which another worker reclaims — and closes the database.
pub async fn start(args: &ServeArgs, signals: bool) -> anyhow::Result<Running> {
    let config = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    // The port first: a server that cannot listen must not open (or migrate) the
    // database, nor start a worker loop that would claim executions and then be dropped.
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let backend = args.database.open().await?;
    backend.warm_up();
    if backend.kind == Kind::Sqlite && !args.embedded_worker {
        anyhow::bail!(
            "--embedded-worker false needs PostgreSQL: an SQLite database is served by one \
             process, whose embedded worker handles deadlines and recovery"
        );
    }
    let admin_key = ensure_admin_key(
        backend.store.as_ref(),
        &args.database.data_dir,
        args.bootstrap_admin_key,
        args.admin_key_file.as_deref(),
    )
    .await?;
    let link_keys = std::sync::Arc::new(crate::links::LinkKeys::open(
        &args.links.key_file(&args.database.data_dir),
        args.links.link_key_overlap,
    )?);
    let public_url = args
        .links
        .public_url
        .as_deref()
        .map(|url| url.trim_end_matches('/').to_owned());
    let engine = build_engine(
        backend.store.clone(),
        &config,
        &args.worker,
        default_worker_id("api"),
        Some(tollgate_bootstrap::LinkSource {
            keys: link_keys.clone(),
            lifetime: args.links.link_lifetime,
        }),
        public_url.clone(),
    )?;
    let tasks = Tasks::new(tokio::runtime::Handle::current());
    let state = AppState::new(
        engine.clone(),
        tasks.clone(),
        args.wait_timeout,
        args.max_body_size,
        args.key_cache_ttl,
        args.metrics_terminal_refresh,
    )
    .with_overdue_warning(args.ready_overdue_warning)
    .with_worker_warning(args.ready_worker_warning)
    .with_request_timeout(args.request_timeout)
    .with_links(crate::state::Links {
        keys: link_keys,
        lifetime: args.links.link_lifetime,
        public_url,
    });
    crate::telemetry::metrics();
    state.status_gauges.warm(&state.store);

    let shutdown = CancellationToken::new();
    tokio::spawn(crate::telemetry::keep_metrics(
        crate::telemetry::METRICS_UPKEEP,
        shutdown.clone(),
    ));
    let worker = if args.embedded_worker {
        let worker = Worker::new(
            engine.clone(),
            WorkerOptions {
                batch: 100,
                concurrency: args.worker.worker_concurrency,
                poll_interval: args.worker.poll_interval,
                delivery_grace: args.worker.lease,
                heartbeat_interval: args.worker.heartbeat_interval,
                pass_timeout: args.worker.worker_pass_timeout,
                retention: RetentionOptions {
                    default: args.worker.retention,
                    batch: args.worker.retention_batch,
                    interval: args.worker.retention_interval,
                    archive: args.worker.archive_dir.clone().map(ArchiveDir::new),
                    events: args.worker.event_retention.0,
                },
                outbox: tollgate_resumer::OutboxOptions {
                    claim_for: args.worker.notification_claim,
                    ..Default::default()
                },
            },
        )
        .with_waker(backend.wakeups.clone());
        Some(tokio::spawn(worker.run_supervised(shutdown.clone())))
    } else {
        None
    };

    let max_body = args.max_body_size;
    let data = web::Data::new(state);
    let draining = data.draining.clone();
    let document = web::Data::new(routes::meta::ApiDocument(web::Bytes::from(
        serde_json::to_vec(&crate::openapi::ApiDoc::openapi())
            .context("cannot serialise the OpenAPI document")?,
    )));
    let gateway = if args.mcp {
        Some(web::Data::new(crate::mcp::Gateway::new(
            addr,
            args.request_timeout,
            args.wait_timeout,
            args.mcp_wait_limit,
        )?))
    } else {
        None
    };
    let mcp = gateway.is_some();
    let mut server = HttpServer::new(move || {
        let app = App::new();
        let app = match &gateway {
            Some(gateway) => app.app_data(gateway.clone()),
            None => app,
        };
        app.app_data(data.clone())
            .app_data(document.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                ApiError::bad_request(format!("invalid query string: {err}")).into()
            }))
            .app_data(web::PathConfig::default().error_handler(|err, _| {
                ApiError::bad_request(format!("invalid path: {err}")).into()
            }))
            .app_data(web::FormConfig::default().limit(max_body))
            .wrap(middleware::from_fn(crate::telemetry::observe))
            .configure(routes::configure)
            .configure(crate::console::configure)
            .configure(|cfg| {
                if mcp {
                    crate::mcp::configure(cfg);
                }
            })
            .default_service(web::to(routes::not_found))
    })
    .listen(listener)?
    .shutdown_timeout(args.shutdown_timeout.as_secs().max(1));
    server = server.workers(
        args.http_workers
            .unwrap_or_else(default_http_workers)
            .max(1),
    );
    // Signals are ours, not the HTTP server's: a stop first turns readiness off, then
    // stops the server, the worker loop and the executions in flight against one
    // deadline (`--shutdown-timeout`), so the whole stop is bounded.
    let server = server.disable_signals().run();
    let handle = server.handle();
    let mut served = tokio::spawn(server);
    let stop = CancellationToken::new();
    if signals {
        let stop = stop.clone();
        tokio::spawn(async move {
            match tollgate_bootstrap::wait_for_signal().await {
                Ok(()) => stop.cancel(),
                Err(err) => tracing::error!("cannot listen for signals: {err}"),
            }
        });
    }
    // A clock that drifts beyond --max-clock-skew after start stops the server as a
    // signal does, and the process then exits non-zero; its restart is refused until
    // the clock is fixed.
    let clock = {
        let backend = backend.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let err = backend.watch_clock().await;
            tracing::error!("{err}; stopping");
            stop.cancel();
            err
        })
    };
    let timeout = args.shutdown_timeout;
    let grace = args.shutdown_grace;
    let kind = backend.kind;
    let requested = stop.clone();
    let join = tokio::spawn(async move {
        let ended_by_itself = tokio::select! {
            served = &mut served => Some(served),
            () = requested.cancelled() => None,
        };
        let served = match ended_by_itself {
            Some(served) => served,
            None => {
                // Not ready first, still serving, so load balancers stop sending work.
                draining.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!("stopping: /health/ready answers 503 from now on");
                if !grace.is_zero() {
                    tokio::time::sleep(grace).await;
                }
                let deadline = tokio::time::Instant::now() + timeout;
                if tokio::time::timeout_at(deadline, handle.stop(true))
                    .await
                    .is_err()
                {
                    tracing::warn!("requests still in flight at the shutdown deadline are dropped");
                    handle.stop(false).await;
                }
                let served = served.await;
                tracing::info!("HTTP server stopped; stopping the worker loop");
                shutdown.cancel();
                if let Some(worker) = worker {
                    if tokio::time::timeout_at(deadline, worker).await.is_err() {
                        tracing::warn!("the worker loop did not stop by the shutdown deadline");
                    }
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if !tasks.drain(left).await {
                    tracing::warn!(in_flight = tasks.in_flight(), "executions still running at shutdown keep their lease; another worker takes them over");
                }
                served
            }
        };
        backend.close().await;
        tracing::info!("stopped");
        if clock.is_finished() {
            if let Ok(skew) = clock.await {
                return Err(anyhow::Error::new(skew).context("stopped: the clock drifted"));
            }
        } else {
            clock.abort();
        }
        match served {
            Ok(result) => result.context("HTTP server failed"),
            Err(err) => Err(anyhow::anyhow!("HTTP server task failed: {err}")),
        }
    });
    Ok(Running {
        addr,
        admin_key,
        backend: kind,
        stop,
        join,
    })
}

/// HTTP workers when `--http-workers` is not given: half the cores, at least one. They
/// only parse requests and write answers; executions advance on the runtime's workers
/// (one per core), and SQLite's writer has a thread of its own. With one HTTP worker
/// per core they competed with those for the cores: on two cores a second one cost
/// SQLite about 15 % of its starts (docs/benchmarks.md, thirty-third sitting).
fn default_http_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores / 2).max(1)
}
