//! Delivering `notify` sub-actions.
//!
//! Every notification is recorded in the store with the step commit (so it is recorded
//! exactly once). The [`Notifier`] decides what else happens: the default only logs it;
//! [`WebhookNotifier`] also posts it to a configured URL.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tollgate_model::records::Notification;

/// How a notification left the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Channel name stored with the notification (`recorded`, `webhook`).
    pub channel: String,
    /// `recorded`, `sent` or `failed`.
    pub status: String,
}

/// Sends notifications somewhere.
#[async_trait]
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// Delivers one notification. `idempotency_key` is the same every time this
    /// notification is attempted (a step re-run after a crash), so a receiver can drop
    /// repeats. Delivery problems are reported in the result, not as errors: a
    /// notification that could not be sent is still recorded, as `failed`.
    async fn deliver(&self, notification: &Notification, idempotency_key: &str) -> Delivery;
}

/// The default notifier: the notification is recorded by the engine and logged here.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordingNotifier;

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn deliver(&self, n: &Notification, _idempotency_key: &str) -> Delivery {
        tracing::info!(
            execution_id = %n.execution_id,
            step_id = %n.step_id,
            recipients = ?n.recipients,
            message = %n.message,
            "notification"
        );
        Delivery {
            channel: "recorded".into(),
            status: "recorded".into(),
        }
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

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn deliver(&self, n: &Notification, idempotency_key: &str) -> Delivery {
        let body = json!({
            "id": n.id, "execution_id": n.execution_id, "step_id": n.step_id,
            "recipients": n.recipients, "message": n.message, "created_at": n.created_at,
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut request = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", idempotency_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.secret {
            let at = chrono::Utc::now().timestamp();
            request = request.header(SIGNATURE_HEADER, signature(secret, at, &body));
        }
        let result = request.body(body).send().await;
        let status = match result {
            Ok(response) if response.status().is_success() => "sent",
            Ok(response) => {
                tracing::warn!(execution_id = %n.execution_id, step_id = %n.step_id, status = %response.status(), "notification webhook refused");
                "failed"
            }
            Err(err) => {
                tracing::warn!(execution_id = %n.execution_id, step_id = %n.step_id, error = %err, "notification webhook failed");
                "failed"
            }
        };
        Delivery {
            channel: "webhook".into(),
            status: status.into(),
        }
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
