//! Sub-actions, one function per kind: what each renders, does, and records as its input
//! and output. Effects on the engine's tables (notifications, records) are not applied
//! here; they ride on the step's commit, so they happen once however often a step runs.

use serde_json::{json, Value};
use tollgate_model::definition::{ErrorClass, HttpRequest, LogLevel, SubAction, SubActionKind};
use tollgate_model::records::{Notification, StepError};
use tollgate_store::Effect;
use uuid::Uuid;

use super::{Body, Call};
use crate::http;
use crate::template::{redact_secrets, redact_value, render_value, Mode, Template};

/// A sub-action's input, output and context writes (`set`).
pub(super) type SubOk = (Value, Value, Vec<(String, Value)>);
/// A failed sub-action: its input, its output (e.g. the response) and the error. Boxed:
/// failures are rare and the tuple is large.
pub(super) type SubErr = Box<(Value, Value, StepError)>;

/// Runs one sub-action of a step.
pub(super) async fn run(
    call: &Call<'_>,
    action: &SubAction,
    body: &mut Body,
) -> Result<SubOk, SubErr> {
    let kind = action.kind.type_name();
    match &action.kind {
        SubActionKind::Webhook(request) => webhook(call, kind, request, &mut body.warnings).await,
        SubActionKind::Notify {
            recipients,
            message,
            channel,
        } => Ok(notify(
            call,
            kind,
            recipients,
            message,
            channel.as_deref(),
            body,
        )),
        SubActionKind::Log { message, level } => {
            Ok(log(call, kind, message, *level, &mut body.warnings))
        }
        SubActionKind::Set { values } => Ok(set(call, kind, values, &mut body.warnings)),
        SubActionKind::CreateRecord {
            entity,
            entity_id,
            data,
        } => {
            let entity_id = match entity_id {
                Some(t) => text(call, t, Mode::Redacted, &mut body.warnings),
                // A stable id per step visit: a re-run writes the same record again.
                None => Uuid::new_v5(
                    &call.env.run_exec_id,
                    format!(
                        "record:{}:{}:{:?}:{}",
                        call.step.id, call.env.visit, call.env.iteration, call.index
                    )
                    .as_bytes(),
                )
                .to_string(),
            };
            record_effect(call, kind, entity, entity_id, data, false, body)
        }
        SubActionKind::UpdateRecord {
            entity,
            entity_id,
            data,
        } => {
            let entity_id = text(call, entity_id, Mode::Redacted, &mut body.warnings);
            record_effect(call, kind, entity, entity_id, data, true, body)
        }
        SubActionKind::CreateApprovalRequest(_) => Ok((
            json!({"type": kind}),
            json!({"approval": "requested"}),
            Vec::new(),
        )),
    }
}

fn text(call: &Call<'_>, template: &str, mode: Mode, warnings: &mut Vec<String>) -> String {
    Template::parse(template).render_text(call.scope, mode, warnings)
}

/// The `n`-th sub-action's key: the first keeps the step's own key.
fn key(call: &Call<'_>, suffix: &str) -> String {
    match call.index {
        0 => format!("{}{suffix}", call.key_base),
        n => format!("{}{suffix}:{n}", call.key_base),
    }
}

/// Sends an HTTP request with the step's idempotency key. What the remote answers is
/// stored and shown, so it is redacted: a remote that echoes what it was sent must not
/// carry a secret into the step's output or error.
async fn webhook(
    call: &Call<'_>,
    kind: &str,
    request: &HttpRequest,
    warnings: &mut Vec<String>,
) -> Result<SubOk, SubErr> {
    let scope = call.scope;
    let url = text(call, &request.url, Mode::Live, warnings);
    let method = text(call, &request.method, Mode::Live, warnings);
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| {
            let rendered = render_value(value, scope, Mode::Live, warnings);
            let mut s = String::new();
            crate::template::push_text(&mut s, &rendered);
            (name.clone(), s)
        })
        .collect();
    let body_value = request
        .body
        .as_ref()
        .map(|b| render_value(b, scope, Mode::Live, warnings));
    let idempotency_key = key(call, "");
    let shown_url = text(call, &request.url, Mode::Redacted, &mut Vec::new());
    let input = json!({
        "type": kind,
        "method": method,
        "url": shown_url,
        "headers": request.headers.iter().map(|(k, v)| (k.clone(), render_value(v, scope, Mode::Redacted, &mut Vec::new()))).collect::<serde_json::Map<_, _>>(),
        "body": request.body.as_ref().map(|b| render_value(b, scope, Mode::Redacted, &mut Vec::new())),
        "idempotency_key": idempotency_key,
    });
    let timeout = request
        .timeout
        .or(call.step.timeout)
        .map_or(call.tools.http_timeout, tollgate_model::Duration::as_std);
    let req = http::Request {
        method,
        url,
        shown_url,
        headers,
        body: body_value,
        timeout,
        idempotency_key,
    };
    let secrets = call.tools.secrets;
    match http::send(call.tools.http, &req, call.tools.max_response_bytes).await {
        Ok(response) => Ok((input, redact_value(response, secrets), Vec::new())),
        Err(failure) => Err(Box::new((
            input,
            redact_value(failure.response.unwrap_or(Value::Null), secrets),
            StepError {
                class: failure.class,
                message: redact_secrets(&failure.message, secrets),
            },
        ))),
    }
}

/// Queues a notification in the step's commit, so it is recorded once however often
/// the step runs and sent later by a worker (docs/notifications.md, "The outbox"); with
/// no channel to send it on, it is recorded and logged only.
fn notify(
    call: &Call<'_>,
    kind: &str,
    recipients: &[String],
    message: &str,
    channel: Option<&str>,
    body: &mut Body,
) -> SubOk {
    let warnings = &mut body.warnings;
    let recipients: Vec<String> = recipients
        .iter()
        .map(|r| text(call, r, Mode::Redacted, warnings))
        .collect();
    let message = text(call, message, Mode::Redacted, warnings);
    let now = call.scope.now;
    let mut notification = match call.tools.notifier.channel(channel) {
        Some(channel) => {
            Notification::queued(call.env.run_exec_id, &call.step.id, "notify", channel, now)
        }
        None => {
            tracing::info!(
                execution_id = %call.env.run_exec_id,
                step_id = %call.step.id,
                recipients = ?recipients,
                message = %message,
                "notification (recorded: no channel is configured)"
            );
            Notification {
                channel: "recorded".into(),
                status: "recorded".into(),
                next_attempt_at: None,
                ..Notification::queued(call.env.run_exec_id, &call.step.id, "notify", "", now)
            }
        }
    };
    notification.recipients = recipients;
    notification.message = message;
    let input = json!({"type": kind, "recipients": notification.recipients, "message": notification.message});
    let output = json!({"notification_id": notification.id, "status": notification.status, "channel": notification.channel});
    body.effects.push(Effect::Notify(notification));
    (input, output, Vec::new())
}

/// Writes a line to the process's log, with the execution and step.
fn log(
    call: &Call<'_>,
    kind: &str,
    message: &str,
    level: LogLevel,
    warnings: &mut Vec<String>,
) -> SubOk {
    let message = text(call, message, Mode::Redacted, warnings);
    let (execution_id, step_id) = (call.env.run_exec_id, call.step.id.as_str());
    match level {
        LogLevel::Debug => tracing::debug!(%execution_id, step_id, "{message}"),
        LogLevel::Info => tracing::info!(%execution_id, step_id, "{message}"),
        LogLevel::Warn => tracing::warn!(%execution_id, step_id, "{message}"),
        LogLevel::Error => tracing::error!(%execution_id, step_id, "{message}"),
    }
    (
        json!({"type": kind}),
        json!({"logged": message}),
        Vec::new(),
    )
}

/// Context writes, rendered now and applied by the caller in order.
fn set(
    call: &Call<'_>,
    kind: &str,
    values: &serde_json::Map<String, Value>,
    warnings: &mut Vec<String>,
) -> SubOk {
    let writes: Vec<(String, Value)> = values
        .iter()
        .map(|(path, v)| {
            (
                path.clone(),
                render_value(v, call.scope, Mode::Redacted, warnings),
            )
        })
        .collect();
    let output = Value::Object(writes.iter().cloned().collect());
    (json!({"type": kind}), output, writes)
}

/// A record upsert (`merge`: update), applied with the step's commit.
fn record_effect(
    call: &Call<'_>,
    kind: &str,
    entity: &str,
    entity_id: String,
    data: &Value,
    merge: bool,
    body: &mut Body,
) -> Result<SubOk, SubErr> {
    let data = render_value(data, call.scope, Mode::Redacted, &mut body.warnings);
    let input = json!({"type": kind, "entity": entity, "entity_id": entity_id, "data": data});
    if entity_id.is_empty() {
        return Err(Box::new((
            input,
            Value::Null,
            StepError {
                class: ErrorClass::Other,
                message: format!("{kind}: the entity id rendered empty"),
            },
        )));
    }
    let output = json!({"entity": entity, "entity_id": entity_id});
    body.effects.push(Effect::UpsertRecord {
        entity: entity.to_owned(),
        entity_id,
        data,
        merge,
    });
    Ok((input, output, Vec::new()))
}
