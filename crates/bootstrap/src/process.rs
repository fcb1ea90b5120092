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
