//! What the handle's operations return when they do not succeed.

use crate::backend::BackendError;

/// One problem with an input, at a JSON path (`steps[2].on_true`, `cron`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// Why an operation did not happen. Every variant means nothing was changed.
///
/// The variants are the HTTP API's answers by another name: `NotFound` is its 404,
/// `Conflict` its 409, `Forbidden` its 403, `Invalid` and `Validation` its 400.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The workflow, execution, approval or schedule does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow it, or another caller won a race (a second decision,
    /// a duplicate `workflow_id` + `version`, a disabled workflow); the reason says which.
    #[error("{0}")]
    Conflict(String),
    /// The principal may not do this (not an approver of the request, the requester
    /// deciding their own request); the reason says why.
    #[error("{0}")]
    Forbidden(String),
    /// The request itself is wrong (a rejection without a reason).
    #[error("{0}")]
    Invalid(String),
    /// A definition or schedule failed validation, or an approval's data its step's
    /// decision form; every problem has its path.
    #[error("{message}")]
    Validation {
        /// A summary (`the workflow definition has 2 error(s)`).
        message: String,
        /// Each problem where it is.
        problems: Vec<Problem>,
    },
    /// The execution did not stop within the time given to
    /// [`Tollgate::wait_until_stopped`](crate::Tollgate::wait_until_stopped).
    #[error("execution {0} was still running when the wait ended")]
    StillRunning(uuid::Uuid),
    /// The database could not be opened.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The store failed (database unreachable, unreadable row); nothing is known to
    /// have changed, and the call may be retried.
    #[error(transparent)]
    Store(tollgate_store::Error),
    /// The engine failed outside any execution (its settings).
    #[error(transparent)]
    Engine(tollgate_engine::Error),
}

impl Error {
    /// True for errors that a later retry of the same call may not meet (the store
    /// was unavailable); false for answers about the request itself.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store(_))
    }
}

impl From<tollgate_store::Error> for Error {
    fn from(err: tollgate_store::Error) -> Self {
        tollgate_resumer::Error::from(err).into()
    }
}

impl From<tollgate_engine::Error> for Error {
    fn from(err: tollgate_engine::Error) -> Self {
        tollgate_resumer::Error::from(err).into()
    }
}

impl From<tollgate_resumer::Error> for Error {
    fn from(err: tollgate_resumer::Error) -> Self {
        use tollgate_resumer::Error as R;
        match err {
            R::NotFound(message) => Self::NotFound(message),
            R::Forbidden(message) => Self::Forbidden(message),
            R::Conflict(message) => Self::Conflict(message),
            R::Invalid(message) => Self::Invalid(message),
            err @ R::FormInvalid(_) => {
                let message = err.to_string();
                let R::FormInvalid(problems) = err else {
                    return Self::Invalid(message);
                };
                Self::Validation {
                    message,
                    problems: problems
                        .into_iter()
                        .map(|p| Problem {
                            path: p.path,
                            message: p.message,
                        })
                        .collect(),
                }
            }
            R::Store(store) => Self::Store(store),
            R::Engine(engine) => Self::Engine(engine),
        }
    }
}

impl From<tollgate_model::Report> for Error {
    fn from(report: tollgate_model::Report) -> Self {
        Self::Validation {
            message: format!(
                "the workflow definition has {} error(s)",
                report.errors.len()
            ),
            problems: report
                .errors
                .into_iter()
                .map(|p| Problem {
                    path: p.path,
                    message: p.message,
                })
                .collect(),
        }
    }
}

/// Results of the handle's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
