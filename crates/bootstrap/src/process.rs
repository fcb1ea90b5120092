//! The frame of a Tollgate process: logging, the async runtime, exit codes, and the
//! signal that starts a graceful shutdown.

use std::future::Future;
use std::process::ExitCode;

use crate::config::LogFormat;
use crate::Error;

/// Installs the tracing subscriber (once per process; later calls do nothing). The
/// filter comes from `RUST_LOG`, default `info`.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: in a file or a log shipper they are
    // noise that breaks searching.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Runs `main` on a multi-threaded runtime and turns its outcome into the exit code every
/// Tollgate process uses: `0` when it returns `Ok`, `1` with the error's chain on stderr
/// when it fails, `2` when the runtime itself cannot start.
pub fn run_main<F, E>(main: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Debug + std::fmt::Display,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` of an `anyhow::Error` prints its whole chain.
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Returns when the process is asked to stop: SIGTERM (what orchestrators send) or
/// SIGINT (Ctrl-C).
pub async fn wait_for_signal() -> Result<(), Error> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|source| Error::Signal {
            signal: "SIGTERM",
            source,
        })?;
        tokio::select! {
            _ = term.recv() => {}
            res = tokio::signal::ctrl_c() => res.map_err(|source| Error::Signal { signal: "SIGINT", source })?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .map_err(|source| Error::Signal {
            signal: "Ctrl-C",
            source,
        })?;
    Ok(())
}

/// Bucket bounds of every `…_seconds` histogram, the same in every process so that
/// dashboards can add the API's and the workers' histograms up: 0.5 ms to 60 s.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Bucket bounds of `tollgate_approval_decision_seconds` (request to decision), which
/// people take minutes to weeks over: 1 minute to 4 weeks.
pub const DECISION_SECONDS_BUCKETS: [f64; 14] = [
    60.0,
    300.0,
    900.0,
    1_800.0,
    3_600.0,
    7_200.0,
    14_400.0,
    28_800.0,
    86_400.0,
    172_800.0,
    259_200.0,
    604_800.0,
    1_209_600.0,
    2_419_200.0,
];

/// The name of the time-to-decision histogram, which has its own buckets.
pub const DECISION_SECONDS: &str = "tollgate_approval_decision_seconds";

/// `# HELP` for every metric Tollgate records (the exporter writes `# TYPE` itself), so
/// a scrape says what each series means without the docs at hand. Call it once the
/// process's recorder is installed.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "tollgate_executions",
        "Executions by status, as the database holds them (terminal counts refreshed at most every --metrics-terminal-refresh)."
    );
    describe_gauge!(
        "tollgate_executions_in_flight",
        "Executions this process is advancing now."
    );
    describe_gauge!(
        "tollgate_approvals_pending",
        "Approval requests waiting for a decision (the database's view)."
    );
    describe_gauge!(
        "tollgate_approvals_overdue",
        "Pending approval requests past their due time (the step's `due`; the database's view)."
    );
    describe_histogram!(
        DECISION_SECONDS,
        Unit::Seconds,
        "Time from an approval request to the decision that settled it, by workflow and step."
    );
    describe_counter!(
        "tollgate_decisions_total",
        "Approval decisions this process recorded, by channel (direct: the decider's own key; link; bulk) and decision."
    );
    describe_counter!(
        "tollgate_notifications_total",
        "Notification send attempts this process made from the outbox, by channel and outcome (sent, retry, failed, dropped)."
    );
    describe_counter!(
        "tollgate_approval_rungs_total",
        "Approval ladder rungs this process fired, by kind (reminder, escalation) and outcome (fired, skipped)."
    );
    describe_counter!(
        "tollgate_sqlite_commits_total",
        "SQLite: write transactions the writer committed (a group commit carries many decisions or events; under --sqlite-synchronous full each is one sync)."
    );
    describe_counter!(
        "tollgate_worker_restarts_total",
        "Times this process's worker loop stopped unexpectedly (a panic) and was started again."
    );
    describe_gauge!(
        "tollgate_database_reachable",
        "1 when the database answered this scrape's reads within 2 s, 0 when it did not (the database gauges then keep their last values)."
    );
    describe_gauge!(
        "tollgate_clock_skew_seconds",
        "How far this host's clock was from the PostgreSQL server's at the last check (positive: ahead); beyond --max-clock-skew the process stops."
    );
    describe_counter!(
        "tollgate_quarantined_executions_total",
        "Executions this process set aside because their stored row or definition could not be read (GET /api/v1/executions/quarantined lists them)."
    );
    describe_counter!(
        "tollgate_unreadable_workflows_total",
        "Times an event lookup of this process skipped a workflow whose stored definition it could not read (damaged, or written by a newer release)."
    );
    describe_gauge!(
        "tollgate_workers_alive",
        "Worker loops whose latest heartbeat is within --ready-worker-warning (the database's view)."
    );
    describe_gauge!(
        "tollgate_worker_heartbeat_age_seconds",
        "Seconds since the latest heartbeat of any worker loop; growing means none runs."
    );
    describe_gauge!(
        "tollgate_gates_overdue",
        "Gated executions whose deadline passed and that no worker has claimed yet; nonzero for long means no worker loop runs."
    );
    describe_gauge!(
        "tollgate_gates_overdue_oldest_seconds",
        Unit::Seconds,
        "How long the oldest overdue gate's deadline has passed (0 when none is overdue)."
    );
    describe_counter!(
        "tollgate_executions_started_total",
        "Executions started by this process."
    );
    describe_counter!(
        "tollgate_executions_ended_total",
        "Executions this process ended, by final status."
    );
    describe_counter!(
        "tollgate_gates_entered_total",
        "Gates (approval, event, manual) executions stopped at in this process."
    );
    describe_counter!(
        "tollgate_schedule_ticks_fired_total",
        "Schedule ticks this process started an execution for."
    );
    describe_histogram!(
        "tollgate_step_duration_seconds",
        Unit::Seconds,
        "Time a step took, by step type."
    );
    describe_histogram!(
        "tollgate_resume_latency_seconds",
        Unit::Seconds,
        "From a signal being recorded (decision, event, manual resume, start) to the execution's next stop."
    );
    describe_histogram!(
        "tollgate_timer_lag_seconds",
        Unit::Seconds,
        "How late a deadline was claimed: claim time minus the gate's deadline."
    );
    describe_histogram!(
        "tollgate_schedule_tick_lag_seconds",
        Unit::Seconds,
        "How late a schedule tick started: start time minus its scheduled time."
    );
    describe_histogram!(
        "tollgate_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method, route template and status."
    );
}
