//! Sending notifications out of the outbox.
//!
//! A notification is committed with the step that makes it (a `notify` sub-action, an
//! approval's `notify`, a rung of its ladder) as `queued`; a worker claims it and hands
//! it to the [`Notifier`], and records how the attempt ended (docs/notifications.md,
//! "The outbox"). [`WebhookNotifier`] posts to one URL; the servers' notifier (email,
//! Slack, Teams and the webhook, with decision links) is built from their config file.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tollgate_model::records::{ApprovalRequest, Notification};

/// A queued notification on its way out, with the approval request it is about (read
/// when it is sent, so the message shows the request as it is then).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The notification; its id is stable across attempts (the receivers' dedupe key).
    pub notification: Notification,
    /// Its request, when it is about one.
    pub approval: Option<ApprovalRequest>,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later (a timeout, a 5xx, a channel not configured yet).
    #[error("{0}")]
    Retry(String),
    /// Will fail the same way every time (the receiver refused the message itself).
    #[error("{0}")]
    Permanent(String),
}

/// Sends notifications somewhere.
#[async_trait]
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// The channel a `notify` sub-action naming `requested` (or none) is queued on;
    /// `None` means it is only recorded and logged.
    fn channel(&self, requested: Option<&str>) -> Option<String>;

    /// Makes one attempt at `outgoing`. At-least-once: an attempt whose outcome was not
    /// recorded (the worker died) is made again, with the same notification id.
    async fn send(&self, outgoing: &Outgoing) -> Result<(), SendError>;
}

/// The default notifier: nothing is configured, so a `notify` without a channel is
/// recorded and logged, and a message for a named channel fails with "not configured"
/// (retried, so a configuration rolled out later still sends it).
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordingNotifier;

#[async_trait]
impl Notifier for RecordingNotifier {
    fn channel(&self, requested: Option<&str>) -> Option<String> {
        requested.map(str::to_owned)
    }

    async fn send(&self, outgoing: &Outgoing) -> Result<(), SendError> {
        Err(not_configured(&outgoing.notification.channel))
    }
}

/// The error for a message on a channel this process has no configuration for.
pub fn not_configured(channel: &str) -> SendError {
    SendError::Retry(format!(
        "no `{channel}` channel is configured on this worker (docs/notifications.md, \"Channels\")"
    ))
}

/// Classifies an HTTP answer: 2xx is sent; 408, 429 and 5xx are worth retrying; any
/// other refusal will not change.
pub fn http_outcome(status: reqwest::StatusCode, what: &str) -> Result<(), SendError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Err(SendError::Retry(format!("{what} answered {status}")))
    } else {
        Err(SendError::Permanent(format!("{what} refused it: {status}")))
    }
}

/// Posts each notification as JSON to one URL (e.g. a chat or paging bridge), signed
/// when it has a secret (see [`signature`]).
#[derive(Clone)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("url", &self.url)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl WebhookNotifier {
    /// A notifier posting to `url` with a per-request `timeout`.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(timeout).build()?,
            url: url.into(),
            secret: None,
        })
    }

    /// Signs every post with `secret` in a `Tollgate-Signature` header, so that the
    /// receiver can tell it came from this server and was not changed or replayed late.
    pub fn signed_with(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }
}

/// The header a signed webhook carries (docs/notifications.md, "Signed webhooks").
pub const SIGNATURE_HEADER: &str = "Tollgate-Signature";

/// The `Tollgate-Signature` value for `body` sent at Unix time `at`:
/// `t=<at>,v1=<hex HMAC-SHA256 of "<at>.<body>" under secret>` — the timestamp is
/// signed with the body, so a receiver that checks it refuses old replays.
pub fn signature(secret: &str, at: i64, body: &[u8]) -> String {
    let mac = signature_hmac(secret, at, body)
        .map(|m| hmac::Mac::finalize(m).into_bytes().to_vec())
        .unwrap_or_default();
    format!("t={at},v1={}", hex(&mac))
}

/// Whether `header` is a valid [`signature`] of `body` under `secret`, made at most
/// `tolerance` seconds from `now` (Unix seconds). For receivers written in Rust; others
/// do the same in a few lines (docs/notifications.md).
pub fn verify_signature(secret: &str, header: &str, body: &[u8], now: i64, tolerance: i64) -> bool {
    let mut at = None;
    let mut given = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => at = t.parse::<i64>().ok(),
            Some(("v1", v)) => given.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(at) = at.filter(|at| (now - at).abs() <= tolerance) else {
        return false;
    };
    given
        .iter()
        .any(|v| match (unhex(v), signature_hmac(secret, at, body)) {
            (Some(bytes), Some(mac)) => hmac::Mac::verify_slice(mac, &bytes).is_ok(),
            _ => false,
        })
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The HMAC of `"<at>.<body>"` under `secret`, before finalisation. (HMAC takes keys of
/// any length, so `None` does not happen in practice.)
fn signature_hmac(secret: &str, at: i64, body: &[u8]) -> Option<HmacSha256> {
    use hmac::Mac;
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(at.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

impl WebhookNotifier {
    /// Posts `outgoing` as JSON, signed when there is a secret. The body carries the
    /// notification (id, kind, execution, step, recipients, message, subject) and the
    /// request's id; the `Idempotency-Key` header is the notification id.
    pub async fn post(
        &self,
        outgoing: &Outgoing,
        extra: serde_json::Value,
    ) -> Result<(), SendError> {
        let n = &outgoing.notification;
        let mut body = json!({
            "id": n.id, "kind": n.kind, "execution_id": n.execution_id, "step_id": n.step_id,
            "recipients": n.recipients, "message": n.message, "subject": n.subject,
            "approval_id": n.approval_id, "created_at": n.created_at,
        });
        if let (Some(map), serde_json::Value::Object(more)) = (body.as_object_mut(), extra) {
            map.extend(more);
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut request = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", n.id.to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.secret {
            let at = chrono::Utc::now().timestamp();
            request = request.header(SIGNATURE_HEADER, signature(secret, at, &body));
        }
        match request.body(body).send().await {
            Ok(response) => http_outcome(response.status(), "the webhook"),
            Err(err) => Err(SendError::Retry(format!("the webhook: {err}"))),
        }
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn channel(&self, requested: Option<&str>) -> Option<String> {
        Some(requested.unwrap_or("webhook").to_owned())
    }

    async fn send(&self, outgoing: &Outgoing) -> Result<(), SendError> {
        if outgoing.notification.channel != "webhook" {
            return Err(not_configured(&outgoing.notification.channel));
        }
        self.post(outgoing, json!({})).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature is what a receiver computes with any HMAC library (this value
    /// came from Python's `hmac.new(secret, b"<t>.<body>", sha256).hexdigest()`).
    #[test]
    fn a_signature_is_the_hmac_of_timestamp_and_body() {
        let body = br#"{"id":1}"#;
        let header = signature("whsec_abc", 1_700_000_000, body);
        assert_eq!(
            header,
            "t=1700000000,v1=18c046f8eef45b069779eaa1dca0fd321afacde38b5c7b2b9d1a88a11cd9dc5e"
        );
        assert!(verify_signature(
            "whsec_abc",
            &header,
            body,
            1_700_000_100,
            300
        ));
        assert!(!verify_signature(
            "whsec_abc",
            &header,
            body,
            1_700_000_301,
            300
        ));
        assert!(!verify_signature(
            "whsec_abc",
            "t=1700000000",
            body,
            1_700_000_000,
            300
        ));
        assert!(!verify_signature(
            "whsec_abc",
            "v1=00,t=x",
            body,
            1_700_000_000,
            300
        ));
    }
}
