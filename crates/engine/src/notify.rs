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

/// Posts each notification as JSON to one URL (e.g. a chat or paging bridge).
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: String,
}

impl WebhookNotifier {
    /// A notifier posting to `url` with a per-request `timeout`.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(timeout).build()?,
            url: url.into(),
        })
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn deliver(&self, n: &Notification, idempotency_key: &str) -> Delivery {
        let body = json!({
            "id": n.id, "execution_id": n.execution_id, "step_id": n.step_id,
            "recipients": n.recipients, "message": n.message, "created_at": n.created_at,
        });
        let result = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", idempotency_key)
            .json(&body)
            .send()
            .await;
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
