//! The engine's error type.

/// What can stop the engine from advancing an execution.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] tollgate_store::Error),
    /// This worker no longer holds the execution (another worker claimed it after a lease
    /// expiry, or it was cancelled). Whoever holds it now continues; nothing is lost.
    #[error("execution {0} is no longer held by this worker")]
    Lost(uuid::Uuid),
    /// The pinned definition cannot be used (a snapshot that fails to compile).
    #[error("definition problem: {0}")]
    Definition(String),
}

/// Results of engine calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
