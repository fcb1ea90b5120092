//! `tollgate-resume-worker`: the worker loop as its own process, for PostgreSQL
//! deployments that scale out.
//!
//! It claims due deadlines and abandoned executions in batches (`FOR UPDATE SKIP
//! LOCKED`), advances them, wakes on `LISTEN/NOTIFY` and polls as the safety net. Any
//! number of these may run beside any number of API processes: each claim is a
//! compare-and-set, so nothing runs twice, and a killed worker's executions are taken
//! over when its lease expires.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio_util::sync::CancellationToken;
use tollgate_bootstrap::{
    build_engine, default_worker_id, describe_metrics, init_logging, parse_duration,
    parse_positive_duration, run_main, wait_for_signal, DatabaseArgs, DatabaseTarget, FileConfig,
    Kind, LogFormat, MigrateMode, WorkerArgs, DECISION_SECONDS, DECISION_SECONDS_BUCKETS,
    SECONDS_BUCKETS,
};
use tollgate_resumer::{ArchiveDir, RetentionOptions, Worker, WorkerOptions};

/// Runs Tollgate's worker loop against a shared PostgreSQL database.
#[derive(Debug, Parser)]
#[command(name = "tollgate-resume-worker", version, about)]
struct Cli {
    /// PostgreSQL URL, e.g. `postgres://tollgate@db/tollgate`. SQLite is refused: an
    /// SQLite database is served by one `tollgate-api` process and its embedded worker.
    #[arg(long, env = "TOLLGATE_DATABASE_URL")]
    database_url: String,

    /// Maximum PostgreSQL connections of this process.
    #[arg(long, env = "TOLLGATE_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    database_max_connections: u32,

    /// Longest a statement may run before the server cancels it (`0s`: no limit).
    #[arg(long, env = "TOLLGATE_DATABASE_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    database_statement_timeout: Duration,

    /// Longest a statement waits for a lock (`0s`: no limit).
    #[arg(long, env = "TOLLGATE_DATABASE_LOCK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    database_lock_timeout: Duration,

    /// What a start does with the schema: `auto` applies missing migrations, `check`
    /// refuses to start on a schema that lacks some, `off` leaves it alone.
    #[arg(long, env = "TOLLGATE_MIGRATE", value_enum, default_value_t = MigrateMode::Auto)]
    migrate: MigrateMode,

    /// Refuse to start when this host's clock differs from the database server's by
    /// more than this, and stop (exit non-zero) when the check every minute finds it so
    /// later (a host ahead by a lease would take over running executions).
    #[arg(long, env = "TOLLGATE_MAX_CLOCK_SKEW", default_value = "5s", value_parser = parse_positive_duration)]
    max_clock_skew: Duration,

    /// A transaction left idle this long is ended by the server (`0s`: no limit).
    #[arg(long, env = "TOLLGATE_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    database_idle_in_transaction_timeout: Duration,

    /// Executions advanced at once.
    #[arg(long, env = "TOLLGATE_WORKER_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,

    /// Executions claimed per query.
    #[arg(long, env = "TOLLGATE_WORKER_BATCH", default_value_t = 100)]
    batch: u32,

    /// Safety-net poll when no wake-up arrives (e.g. `1s`).
    #[arg(long, env = "TOLLGATE_POLL_INTERVAL", default_value = "1s", value_parser = parse_positive_duration)]
    poll_interval: Duration,

    /// How long a claim lasts without a heartbeat (heartbeats renew it every third).
    #[arg(long, env = "TOLLGATE_LEASE", default_value = "30s", value_parser = parse_positive_duration)]
    lease: Duration,

    /// How often this worker records its heartbeat in the database (which
    /// `/health/ready` and `/metrics` of the API servers report).
    #[arg(long, env = "TOLLGATE_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = parse_positive_duration)]
    heartbeat_interval: Duration,

    /// The longest the loop waits for the database in one pass (its claims, its
    /// heartbeat); past it the pass is abandoned and the next starts on fresh
    /// connections, so a connection a network partition black-holed stops the loop for
    /// this long rather than the many minutes TCP takes to give up.
    /// (`--worker-pass-timeout`, as on `tollgate-api`; `--pass-timeout` is its old name.)
    #[arg(long = "worker-pass-timeout", alias = "pass-timeout", env = "TOLLGATE_WORKER_PASS_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pass_timeout: Duration,

    /// Delete ended executions this long after they end (e.g. `90d`), in small batches;
    /// off when not given. A workflow's own `retention` overrides it. One node purges at
    /// a time, so every worker may have it.
    #[arg(long, env = "TOLLGATE_RETENTION", value_parser = parse_positive_duration)]
    retention: Option<Duration>,

    /// Ended executions deleted per transaction by retention.
    #[arg(long, env = "TOLLGATE_RETENTION_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    retention_batch: u32,

    /// How often to look for history past its retention when the last batch was not full.
    #[arg(long, env = "TOLLGATE_RETENTION_INTERVAL", default_value = "60s", value_parser = parse_positive_duration)]
    retention_interval: Duration,

    /// Before retention deletes a batch, write it here (gzip JSON Lines, a directory per
    /// day the executions ended).
    #[arg(long, env = "TOLLGATE_ARCHIVE_DIR")]
    archive_dir: Option<std::path::PathBuf>,

    /// Delete events nobody took this long after they arrive, in batches; `off` keeps
    /// them. A wait step's `early_events` keeps its event type longer.
    #[arg(long, env = "TOLLGATE_EVENT_RETENTION", default_value = "7d", value_parser = tollgate_bootstrap::config::parse_duration_or_off)]
    event_retention: tollgate_bootstrap::DurationOrOff,

    /// How long a claim on a notification being sent lasts: a worker that dies mid-send
    /// leaves it to another after this.
    #[arg(long, env = "TOLLGATE_NOTIFICATION_CLAIM", default_value = "2m", value_parser = tollgate_bootstrap::parse_positive_duration)]
    notification_claim: std::time::Duration,

    /// This worker's name in leases and logs (default: hostname, pid and a random
    /// suffix). Must be unique among running workers.
    #[arg(long, env = "TOLLGATE_WORKER_ID")]
    worker_id: Option<String>,

    /// Log format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// JSON file with context providers, secrets and the notifier webhook (as for
    /// `tollgate-api --config`).
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,

    /// How long shutdown waits for the executions in flight.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// Serve this worker's Prometheus metrics (timer lag, steps, ends, resume latency) on
    /// this address, e.g. `0.0.0.0:9187`. Every path answers with the exposition and 200,
    /// so the address also serves as a liveness probe. Off by default.
    #[arg(long, env = "TOLLGATE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

/// jemalloc instead of glibc's malloc or mimalloc: allocations made for a request on
/// one thread and freed on another are the server's most frequent operation, and
/// jemalloc spends the least CPU and memory on them (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    run_main(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    init_logging(cli.log_format);
    let database = DatabaseArgs {
        data_dir: PathBuf::from("."),
        database_url: Some(cli.database_url.clone()),
        database_max_connections: cli.database_max_connections,
        database_statement_timeout: cli.database_statement_timeout,
        database_lock_timeout: cli.database_lock_timeout,
        database_idle_in_transaction_timeout: cli.database_idle_in_transaction_timeout,
        migrate: cli.migrate,
        max_clock_skew: cli.max_clock_skew,
        sqlite_synchronous: tollgate_bootstrap::config::SqliteSync::Normal,
    };
    if !matches!(database.target()?, DatabaseTarget::Postgres(_)) {
        bail!(
            "tollgate-resume-worker needs PostgreSQL (--database-url postgres://…). SQLite is \
             single-node: the worker loop embedded in `tollgate-api` serves it."
        );
    }
    let config = match &cli.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    if let Some(addr) = cli.metrics_listen {
        serve_metrics(addr)?;
    }
    let backend = database.open().await?;
    debug_assert_eq!(backend.kind, Kind::Postgres);
    let worker_id = cli
        .worker_id
        .clone()
        .unwrap_or_else(|| default_worker_id("worker"));
    // Decision links in messages need the API servers' key file (`channels.link_key_file`).
    let links = match &config.channels.link_key_file {
        Some(path) => Some(tollgate_bootstrap::LinkSource {
            keys: std::sync::Arc::new(tollgate_bootstrap::links::LinkKeys::open(
                path,
                std::time::Duration::from_secs(7 * 24 * 3600),
            )?),
            lifetime: std::time::Duration::from_secs(7 * 24 * 3600),
        }),
        None => None,
    };
    let engine = build_engine(
        backend.store.clone(),
        &config,
        &WorkerArgs {
            poll_interval: cli.poll_interval,
            worker_concurrency: cli.concurrency,
            lease: cli.lease,
            heartbeat_interval: cli.heartbeat_interval,
            worker_pass_timeout: cli.pass_timeout,
            retention: cli.retention,
            retention_batch: cli.retention_batch,
            retention_interval: cli.retention_interval,
            archive_dir: cli.archive_dir.clone(),
            event_retention: cli.event_retention,
            notification_claim: cli.notification_claim,
        },
        worker_id.clone(),
        links,
        None,
    )?;
    let worker = Worker::new(
        engine,
        WorkerOptions {
            batch: cli.batch.max(1),
            concurrency: cli.concurrency.max(1),
            poll_interval: cli.poll_interval,
            delivery_grace: cli.lease,
            heartbeat_interval: cli.heartbeat_interval,
            pass_timeout: cli.pass_timeout,
            retention: RetentionOptions {
                default: cli.retention,
                batch: cli.retention_batch,
                interval: cli.retention_interval,
                archive: cli.archive_dir.clone().map(ArchiveDir::new),
                events: cli.event_retention.0,
            },
            outbox: tollgate_resumer::OutboxOptions {
                claim_for: cli.notification_claim,
                ..Default::default()
            },
        },
    )
    .with_waker(backend.wakeups.clone());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run_supervised(shutdown.clone()));
    println!("tollgate-resume-worker {worker_id} running");
    // A signal stops the worker; so does a clock that drifts beyond --max-clock-skew
    // after start (a host ahead by a lease would take over executions still running
    // elsewhere), which then exits non-zero.
    let drifted = tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            None
        }
        skew = backend.watch_clock() => Some(skew),
    };
    match &drifted {
        None => {
            tracing::info!(worker = %worker_id, "shutting down: finishing executions in flight");
        }
        Some(skew) => {
            tracing::error!(worker = %worker_id, "{skew}; shutting down: finishing executions in flight");
        }
    }
    shutdown.cancel();
    tokio::time::timeout(cli.shutdown_timeout, running)
        .await
        .context("executions in flight did not finish in time; their leases will expire")?
        .context("worker loop panicked")?;
    backend.close().await;
    match drifted {
        None => Ok(()),
        Some(skew) => Err(anyhow::Error::new(skew).context("stopped: the clock drifted")),
    }
}

/// Installs the process's metrics recorder with an HTTP listener on `addr`. Histograms of
/// seconds get the same buckets as the API server's, so dashboards can add them up.
fn serve_metrics(addr: SocketAddr) -> Result<()> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(DECISION_SECONDS.into()),
            &DECISION_SECONDS_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        })
        .context("invalid histogram buckets")?
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    describe_metrics();
    // Present from the first scrape: this process is up and advancing nothing yet.
    metrics::gauge!("tollgate_executions_in_flight").set(0.0);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_pass_timeout_flag_has_the_api_servers_name_and_keeps_its_old_one() {
        for flag in ["--worker-pass-timeout", "--pass-timeout"] {
            let cli = Cli::try_parse_from([
                "tollgate-resume-worker",
                "--database-url",
                "postgres://localhost/x",
                flag,
                "5s",
            ])
            .unwrap();
            assert_eq!(cli.pass_timeout, Duration::from_secs(5), "{flag}");
        }
    }
}
