//! The one error shape of the API: `{"error": {"code", "message", "details"}}`.
//!
//! Every failure — the handlers' own, the extractors' (malformed JSON, wrong content
//! type, oversized bodies), unknown routes and wrong methods — leaves the server in this
//! shape. Internal errors keep their cause for the log and show clients only a request
//! id.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

pub use tollgate_model::wire::{Detail, ErrorBody, ErrorEnvelope};

/// A failed API call.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<Detail>,
    /// The hidden cause of an internal error, logged with the request id.
    cause: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            cause: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 400 `validation_failed` with per-path details.
    pub fn validation(message: impl Into<String>, details: Vec<Detail>) -> Self {
        Self {
            details,
            ..Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
        }
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 500 `internal`: `cause` goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; the server log has the details under this response's X-Request-Id",
            )
        }
    }

    /// `503 timeout`: the request did not complete within `budget` (`--request-timeout`).
    pub fn timed_out(budget: std::time::Duration) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request did not complete within {budget:?} (the database may be unreachable); whether it changed anything is unknown, and retrying it is safe"
            ),
        )
    }

    /// `503`: the process is stopping (readiness during `--shutdown-grace`).
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down; send this request to another one",
        )
    }

    /// `503`: the database cannot be reached (the cause goes to the log only).
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unreachable; try again shortly",
            )
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The hidden cause, for the log.
    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }

    /// The response body.
    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code.to_owned(),
                message: self.message.clone(),
                details: self.details.clone(),
            },
        }
    }

    /// The envelope for a bare status code (a response some layer produced without a
    /// JSON body).
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::bad_request("the request could not be understood"),
            401 => Self::unauthorized("a valid API key is required"),
            403 => Self::forbidden("not allowed"),
            404 => Self::not_found("no such resource"),
            405 => Self::method_not_allowed("method not allowed on this route"),
            409 => Self::conflict("conflict"),
            413 => Self::payload_too_large("request body too large"),
            415 => Self::unsupported_media_type("send JSON with Content-Type: application/json"),
            503 => Self::unavailable("service unavailable"),
            _ if status.is_client_error() => Self::new(
                status,
                "bad_request",
                status.canonical_reason().unwrap_or("client error"),
            ),
            _ => Self::internal(format!("a response with status {status} and no body")),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(self.envelope())
    }
}

impl From<tollgate_store::Error> for ApiError {
    fn from(err: tollgate_store::Error) -> Self {
        match err {
            tollgate_store::Error::NotFound { what, id } => {
                Self::not_found(format!("{what} {id} not found"))
            }
            tollgate_store::Error::Conflict(message) => Self::conflict(message),
            tollgate_store::Error::Refused { refusal, .. } if refusal.is_forbidden() => {
                Self::forbidden(refusal.to_string())
            }
            tollgate_store::Error::Refused { refusal, .. } => Self::conflict(refusal.to_string()),
            tollgate_store::Error::Invalid(message) => Self::bad_request(message),
            err @ tollgate_store::Error::NewerFormat { .. } => Self::conflict(err.to_string()),
            tollgate_store::Error::Form(tollgate_store::FormRefusal::Invalid(problems)) => {
                tollgate_resumer::Error::FormInvalid(problems).into()
            }
            err @ (tollgate_store::Error::Unavailable(_)
            | tollgate_store::Error::Form(tollgate_store::FormRefusal::Unloaded(_))) => {
                Self::unavailable(err)
            }
            other @ (tollgate_store::Error::Backend(_) | tollgate_store::Error::Unreadable(_)) => {
                Self::internal(other)
            }
        }
    }
}

impl From<tollgate_resumer::Error> for ApiError {
    fn from(err: tollgate_resumer::Error) -> Self {
        use tollgate_resumer::Error as E;
        match err {
            E::NotFound(message) => Self::not_found(message),
            E::Forbidden(message) => Self::forbidden(message),
            E::Conflict(message) => Self::conflict(message),
            E::Invalid(message) => Self::bad_request(message),
            err @ E::FormInvalid(_) => {
                let message = err.to_string();
                let E::FormInvalid(problems) = err else {
                    return Self::bad_request(message);
                };
                Self::validation(
                    message,
                    problems
                        .into_iter()
                        .map(|p| Detail {
                            path: p.path,
                            message: p.message,
                        })
                        .collect(),
                )
            }
            E::Store(store) => store.into(),
            E::Engine(engine) => engine.into(),
        }
    }
}

impl From<tollgate_engine::Error> for ApiError {
    fn from(err: tollgate_engine::Error) -> Self {
        match err {
            tollgate_engine::Error::Store(store) => store.into(),
            other => Self::internal(other),
        }
    }
}

/// Results of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
