//! The `webhook`/`http_request` sub-action: one HTTP request, classified for retries.

use std::time::Duration;

use serde_json::{json, Map, Value};
use tollgate_model::definition::ErrorClass;

/// A request with every template already rendered.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: String,
    /// URL.
    pub url: String,
    /// The URL as messages show it: rendered with secrets redacted. Errors name this,
    /// never [`Self::url`], so a secret in a URL cannot reach a stored error or a log.
    pub shown_url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Value>,
    /// Time limit.
    pub timeout: Duration,
    /// `Idempotency-Key` header value.
    pub idempotency_key: String,
}

/// A failed request: its class (for `retry_on`) and what happened.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `timeout`, `5xx`, `4xx`, `network` or `error`.
    pub class: ErrorClass,
    /// Explanation.
    pub message: String,
    /// The response, when there was one.
    pub response: Option<Value>,
}

/// Sends the request; a 2xx response is success, anything else a classified failure.
/// The recorded response body is cut to `max_body` bytes.
pub async fn send(
    client: &reqwest::Client,
    request: &Request,
    max_body: usize,
) -> Result<Value, Failure> {
    let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Failure {
            class: ErrorClass::Other,
            message: format!("`{}` is not an HTTP method", request.method),
            response: None,
        })?;
    let mut builder = client
        .request(method, &request.url)
        .timeout(request.timeout)
        .header("Idempotency-Key", &request.idempotency_key);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = &request.body {
        builder = builder.json(body);
    }
    let response = builder.send().await.map_err(|err| Failure {
        class: if err.is_timeout() {
            ErrorClass::Timeout
        } else if err.is_builder() {
            ErrorClass::Other
        } else {
            ErrorClass::Network
        },
        message: format!(
            "{} {}: {}",
            request.method,
            request.shown_url,
            err.without_url()
        ),
        response: None,
    })?;
    let status = response.status();
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(err) => {
            return Err(Failure {
                class: if err.is_timeout() {
                    ErrorClass::Timeout
                } else {
                    ErrorClass::Network
                },
                message: format!(
                    "reading the response of {} {}: {}",
                    request.method,
                    request.shown_url,
                    err.without_url()
                ),
                response: None,
            })
        }
    };
    let truncated = bytes.len() > max_body;
    let body = if truncated {
        Value::String(String::from_utf8_lossy(&bytes[..max_body]).into_owned())
    } else {
        serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let mut recorded = Map::new();
    recorded.insert("status".into(), json!(status.as_u16()));
    recorded.insert("body".into(), body);
    if truncated {
        recorded.insert("truncated".into(), json!(true));
    }
    let recorded = Value::Object(recorded);
    if status.is_success() {
        Ok(recorded)
    } else {
        Err(Failure {
            class: if status.is_server_error() {
                ErrorClass::Server
            } else if status.is_client_error() {
                ErrorClass::Client
            } else {
                ErrorClass::Other
            },
            message: format!("{} {} answered {status}", request.method, request.shown_url),
            response: Some(recorded),
        })
    }
}
