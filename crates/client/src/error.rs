//! What a call can fail with.

use std::time::Duration;

use tollgate_model::wire::Detail;

/// A failed call: the server's refusal, or why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with its error envelope (`{"error": {code, message, details}}`).
    #[error("{message}")]
    Api {
        /// HTTP status, e.g. 404.
        status: u16,
        /// The envelope's machine-readable code, e.g. `not_found`, `validation_failed`.
        code: String,
        /// What went wrong, for people.
        message: String,
        /// Per-field problems, each with its JSON path.
        details: Vec<Detail>,
        /// The server's `X-Request-Id` of the call: its log lines carry the same id.
        request_id: Option<String>,
    },
    /// No connection could be made (nothing listens there, DNS, TLS).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// Where.
        url: String,
        /// Why, as the HTTP stack says it.
        reason: String,
    },
    /// No answer within the call's timeout. Whether the call changed anything is unknown.
    #[error("{url} did not answer within {}", humanize(*.timeout))]
    Timeout {
        /// Where.
        url: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// An answer that is not what the API sends (not JSON, or not the expected shape).
    #[error("unexpected answer from {url} (HTTP {status}): {reason}")]
    Protocol {
        /// Where.
        url: String,
        /// Its HTTP status.
        status: u16,
        /// What was wrong with it.
        reason: String,
        /// The server's `X-Request-Id`, when it sent one.
        request_id: Option<String>,
    },
    /// The client was configured with something unusable (a base URL that is not
    /// `http(s)://…`, a key that cannot be sent in a header).
    #[error("{0}")]
    Config(String),
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

impl Error {
    /// The HTTP status of an answered call.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Protocol { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The envelope's code (`not_found`, `conflict`, …) of a refused call.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The per-field problems of a refused call (empty otherwise).
    pub fn details(&self) -> &[Detail] {
        match self {
            Error::Api { details, .. } => details,
            _ => &[],
        }
    }

    /// The `X-Request-Id` of the failed call, to find its log lines on the server.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api { request_id, .. } | Error::Protocol { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }

    /// `404`: the resource (or route) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// `409`: refused because of the resource's state (a race lost, a decided approval,
    /// a taken name).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// `401`: the key is missing, unknown or revoked.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }

    /// `403`: the key may not do this.
    pub fn is_forbidden(&self) -> bool {
        self.status() == Some(403)
    }

    /// No answer came: nothing listens, or the call timed out.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Timeout { .. })
    }

    /// Worth trying again when the call is safe to repeat: no connection, a timeout, or
    /// the server said it is unavailable for now (`502`/`503`/`504`).
    pub fn is_transient(&self) -> bool {
        self.is_unreachable() || matches!(self.status(), Some(502..=504))
    }
}
