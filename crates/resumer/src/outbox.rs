//! The outbox's sending side (docs/notifications.md, "The outbox"): each worker pass
//! fires the approval ladders' due rungs, then claims due notifications and sends them
//! with the engine's notifier, recording each attempt's outcome.
//!
//! Crash points: a rung fires in one transaction with the approvers it adds and the
//! notifications it queues, so it fires once or not at all. A notification is claimed
//! (one transaction), sent, then settled (another): a worker dying between the send and
//! the settle leaves the claim to lapse, and the next claim sends it again with the same
//! id, which receivers drop (at-least-once). Dying before the send loses nothing either:
//! the notification stays queued.

use std::time::Duration;

use tokio::task::JoinHandle;
use tollgate_engine::{Engine, Outgoing, SendError};
use tollgate_model::records::{ApprovalStatus, Notification, Timestamp};
use tollgate_store::{LeaseClaim, Settle};

use crate::Result;

/// How the outbox is worked.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// Notifications claimed per pass (and rungs fired per pass).
    pub batch: u32,
    /// How long a claim holds: longer than any send takes, shorter than the wait a
    /// dead worker's messages may bear.
    pub claim_for: Duration,
    /// Attempts before a notification is `failed`.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; each further failure doubles it.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        Self {
            batch: 50,
            claim_for: Duration::from_secs(120),
            max_attempts: 8,
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(3600),
        }
    }
}

/// What one outbox pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxReport {
    /// Rungs fired (or skipped, for a request no longer pending).
    pub rungs: usize,
    /// Notifications claimed and handed to a sending task.
    pub sending: usize,
}

/// Fires due rungs, then claims due notifications and starts a task per send, kept in
/// `sending` (the caller waits for them, or not).
pub(crate) async fn pass(
    engine: &Engine,
    options: &OutboxOptions,
    now: Timestamp,
    sending: &mut Vec<JoinHandle<()>>,
) -> Result<OutboxReport> {
    let store = engine.store();
    let rungs = store.fire_due_rungs(now, options.batch).await?;
    for rung in &rungs {
        tracing::info!(
            execution_id = %rung.execution_id,
            approval_id = %rung.approval_id,
            kind = %rung.kind,
            outcome = rung.outcome.as_deref().unwrap_or_default(),
            "approval rung fired"
        );
        metrics::counter!("tollgate_approval_rungs_total", "kind" => rung.kind.clone(),
            "outcome" => rung.outcome.clone().unwrap_or_default())
        .increment(1);
    }
    let claim = LeaseClaim {
        owner: engine.claim().owner,
        expires_at: now
            + chrono::TimeDelta::from_std(options.claim_for).unwrap_or(chrono::TimeDelta::MAX),
    };
    let claimed = store
        .claim_notifications(now, &claim, options.batch)
        .await?;
    let report = OutboxReport {
        rungs: rungs.len(),
        sending: claimed.len(),
    };
    for notification in claimed {
        let engine = engine.clone();
        let options = options.clone();
        let owner = claim.owner.clone();
        sending.push(tokio::spawn(async move {
            send(&engine, &options, &owner, notification).await;
        }));
    }
    Ok(report)
}

/// One attempt at a claimed notification, and its outcome recorded.
async fn send(engine: &Engine, options: &OutboxOptions, owner: &str, notification: Notification) {
    let store = engine.store();
    let id = notification.id;
    let execution_id = notification.execution_id;
    let channel = notification.channel.clone();
    let approval = match notification.approval_id {
        Some(approval_id) => match store.get_approval(approval_id).await {
            Ok(approval) => Some(approval),
            Err(tollgate_store::Error::NotFound { .. }) => None,
            Err(err) => {
                // Not sent, not settled: the claim lapses and another pass tries.
                tracing::warn!(%execution_id, notification_id = %id, "cannot read the request of a notification (retried): {err}");
                return;
            }
        },
        None => None,
    };
    let settle = match &approval {
        // A message asking for a decision that is already made would mislead.
        Some(a) if a.status != ApprovalStatus::Pending && notification.kind != "notify" => {
            Settle::Dropped {
                why: format!("the request was {} before it went out", a.status.as_str()),
            }
        }
        _ => {
            let outgoing = Outgoing {
                notification: notification.clone(),
                approval,
            };
            match engine.notifier().send(&outgoing).await {
                Ok(()) => Settle::Sent,
                Err(SendError::Retry(error))
                    if notification.attempts + 1 < options.max_attempts =>
                {
                    let wait = backoff(options, notification.attempts);
                    Settle::Retry {
                        at: engine.clock().now()
                            + chrono::TimeDelta::from_std(wait).unwrap_or(chrono::TimeDelta::MAX),
                        error,
                    }
                }
                Err(err) => Settle::Failed {
                    error: err.to_string(),
                },
            }
        }
    };
    let outcome = match &settle {
        Settle::Sent => "sent",
        Settle::Retry { .. } => "retry",
        Settle::Failed { .. } => "failed",
        Settle::Dropped { .. } => "dropped",
    };
    match &settle {
        Settle::Sent | Settle::Dropped { .. } => {
            tracing::info!(%execution_id, notification_id = %id, %channel, outcome, "notification");
        }
        Settle::Retry { error, .. } | Settle::Failed { error } => {
            tracing::warn!(%execution_id, notification_id = %id, %channel, outcome, "notification not sent: {error}");
        }
    }
    metrics::counter!("tollgate_notifications_total", "channel" => channel, "outcome" => outcome)
        .increment(1);
    let now = engine.clock().now();
    if let Err(err) = store.settle_notification(id, owner, now, &settle).await {
        // The claim lapsed and another worker has it: it sends again (at-least-once).
        tracing::warn!(%execution_id, notification_id = %id, "cannot record a notification's attempt: {err}");
    }
}

/// The wait after `attempts` failed attempts so far: `backoff · 2^attempts`, capped.
fn backoff(options: &OutboxOptions, attempts: u32) -> Duration {
    options
        .backoff
        .saturating_mul(1u32 << attempts.min(20))
        .min(options.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let options = OutboxOptions::default();
        assert_eq!(backoff(&options, 0), Duration::from_secs(30));
        assert_eq!(backoff(&options, 1), Duration::from_secs(60));
        assert_eq!(backoff(&options, 6), Duration::from_secs(1920));
        assert_eq!(backoff(&options, 7), Duration::from_secs(3600));
        assert_eq!(backoff(&options, 40), Duration::from_secs(3600));
    }
}
