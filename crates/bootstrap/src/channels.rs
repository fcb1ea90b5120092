//! The servers' notifier (docs/notifications.md, "Channels"): email over SMTP, Slack- and
//! Teams-compatible incoming webhooks, and the generic signed webhook, each configured
//! in the config file's `channels`. Messages about an approval request carry a signed
//! decision link when the process has the link keys and a public URL.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{json, Value};
use tollgate_engine::{
    http_outcome, not_configured, Notifier, Outgoing, SendError, WebhookNotifier,
};
use tollgate_model::records::{ApprovalRequest, ApprovalStatus};

use crate::config::{ChannelsConfig, ChatConfig, EmailConfig};
use crate::links::{digest, LinkClaims, LinkKeys};
use crate::Error;

/// What a process's messages need to carry decision links.
#[derive(Debug, Clone)]
pub struct LinkSource {
    /// The keys links are signed with (the API servers' key file).
    pub keys: Arc<LinkKeys>,
    /// Lifetime of a link to a request without a deadline.
    pub lifetime: Duration,
}

/// Sends queued notifications through the configured channels.
pub struct ChannelNotifier {
    email: Option<Email>,
    slack: Option<ChatConfig>,
    teams: Option<ChatConfig>,
    webhook: Option<WebhookNotifier>,
    http: reqwest::Client,
    links: Option<LinkSource>,
    public_url: Option<String>,
}

struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for ChannelNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the SMTP URL (it may hold a password) nor the webhook URLs (they are
        // bearer secrets on Slack and Teams).
        f.debug_struct("ChannelNotifier")
            .field("email", &self.email.is_some())
            .field("slack", &self.slack.is_some())
            .field("teams", &self.teams.is_some())
            .field("webhook", &self.webhook.is_some())
            .field("links", &self.links.is_some())
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// Whether `email` can be used: a sender that parses and an SMTP URL lettre accepts.
pub fn check_email(email: &EmailConfig) -> Result<(), String> {
    email
        .from
        .parse::<Mailbox>()
        .map_err(|err| format!("from: `{}` is not an address: {err}", email.from))?;
    AsyncSmtpTransport::<Tokio1Executor>::from_url(&email.smtp_url).map_err(|err| {
        format!("smtp_url: {err} (use smtp://, smtp://…?tls=required or smtps://)")
    })?;
    Ok(())
}

impl ChannelNotifier {
    /// The notifier `channels` describes (plus the older `notifier` section as the
    /// webhook channel), each HTTP call limited to `timeout`.
    pub fn new(
        channels: &ChannelsConfig,
        legacy_webhook: Option<&crate::config::NotifierConfig>,
        timeout: Duration,
        links: Option<LinkSource>,
        public_url: Option<String>,
    ) -> Result<Self, Error> {
        let http_error = |source| Error::HttpClient {
            what: "notifier",
            source,
        };
        let email = match &channels.email {
            Some(email) => {
                check_email(email).map_err(Error::Channel)?;
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&email.smtp_url)
                    .map_err(|err| Error::Channel(format!("channels.email.smtp_url: {err}")))?
                    .timeout(Some(timeout))
                    .build();
                let from = email
                    .from
                    .parse::<Mailbox>()
                    .map_err(|err| Error::Channel(format!("channels.email.from: {err}")))?;
                Some(Email { transport, from })
            }
            None => None,
        };
        let webhook = match channels.webhook.as_ref().or(legacy_webhook) {
            Some(config) => {
                let hook = WebhookNotifier::new(config.webhook_url.clone(), timeout)
                    .map_err(http_error)?;
                Some(match &config.signing_secret {
                    Some(secret) => hook.signed_with(secret.clone()),
                    None => hook,
                })
            }
            None => None,
        };
        Ok(Self {
            email,
            slack: channels.slack.clone(),
            teams: channels.teams.clone(),
            webhook,
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .map_err(http_error)?,
            links,
            public_url: channels
                .public_url
                .clone()
                .or(public_url)
                .map(|u| u.trim_end_matches('/').to_owned()),
        })
    }

    /// The decision link for `outgoing`, when it is about a pending request, this
    /// process can sign links, and the notification says whom the link decides as.
    fn link(&self, outgoing: &Outgoing) -> Option<String> {
        let approval = outgoing.approval.as_ref()?;
        let links = self.links.as_ref()?;
        let base = self.public_url.as_ref()?;
        if approval.status != ApprovalStatus::Pending {
            return None;
        }
        let n = &outgoing.notification;
        let (subject, role) = match n.link_user.as_deref()?.strip_prefix("role:") {
            Some(role) if approval.approver_roles.iter().any(|r| r == role) => {
                // A role's link decides as the address it was sent to.
                let address = n
                    .recipients
                    .first()
                    .cloned()
                    .unwrap_or_else(|| n.channel.clone());
                (address, Some(role.to_owned()))
            }
            Some(_) => return None,
            None => {
                let user = n.link_user.clone()?;
                if !approval.approver_users.contains(&user) {
                    return None;
                }
                (user, None)
            }
        };
        let now = chrono::Utc::now();
        let end =
            now + chrono::Duration::from_std(links.lifetime).unwrap_or(chrono::Duration::days(7));
        let expires_at = approval.expires_at.unwrap_or(end);
        if expires_at <= now {
            return None;
        }
        let token = links.keys.mint(&LinkClaims {
            approval_id: approval.id,
            subject,
            role,
            digest: digest(approval),
            expires_at: expires_at.timestamp(),
        });
        Some(format!("{base}/d/{token}"))
    }

    async fn send_email(&self, outgoing: &Outgoing, message: &Message) -> Result<(), SendError> {
        let Some(email) = &self.email else {
            return Err(not_configured("email"));
        };
        let n = &outgoing.notification;
        let mut builder = lettre::Message::builder()
            .from(email.from.clone())
            .subject(message.subject.clone())
            // Receivers (and mail servers) drop repeats of an at-least-once send by it.
            .message_id(Some(format!("<{}@tollgate>", n.id)));
        if n.recipients.is_empty() {
            return Err(SendError::Permanent(
                "an email needs a recipient (`to`)".into(),
            ));
        }
        for to in &n.recipients {
            let mailbox = to.parse::<Mailbox>().map_err(|err| {
                SendError::Permanent(format!("`{to}` is not an email address: {err}"))
            })?;
            builder = builder.to(mailbox);
        }
        let mail = builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(message.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(message.html.clone()),
                    ),
            )
            .map_err(|err| SendError::Permanent(format!("the email does not build: {err}")))?;
        match email.transport.send(mail).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_permanent() => Err(SendError::Permanent(format!(
                "the SMTP server refused it: {err}"
            ))),
            Err(err) => Err(SendError::Retry(format!("SMTP: {err}"))),
        }
    }

    async fn post_json(&self, url: &str, what: &str, body: &Value) -> Result<(), SendError> {
        match self.http.post(url).json(body).send().await {
            Ok(response) => http_outcome(response.status(), what),
            Err(err) => Err(SendError::Retry(format!("{what}: {err}"))),
        }
    }
}

#[async_trait]
impl Notifier for ChannelNotifier {
    fn channel(&self, requested: Option<&str>) -> Option<String> {
        match requested {
            Some(channel) => Some(channel.to_owned()),
            None => self.webhook.as_ref().map(|_| "webhook".to_owned()),
        }
    }

    async fn send(&self, outgoing: &Outgoing) -> Result<(), SendError> {
        let link = self.link(outgoing);
        let console = match (&self.public_url, &outgoing.approval) {
            (Some(base), Some(a)) => Some(format!("{base}/approvals/{}", a.id)),
            _ => None,
        };
        let message = compose(outgoing, link.as_deref(), console.as_deref());
        match outgoing.notification.channel.as_str() {
            "email" => self.send_email(outgoing, &message).await,
            "slack" => {
                let url = chat_url(self.slack.as_ref(), "slack", &outgoing.notification)?;
                self.post_json(url, "Slack", &slack_body(&message)).await
            }
            "teams" => {
                let url = chat_url(self.teams.as_ref(), "teams", &outgoing.notification)?;
                self.post_json(url, "Teams", &teams_body(&message)).await
            }
            "webhook" => match &self.webhook {
                Some(hook) => {
                    hook.post(
                        outgoing,
                        json!({"link": link, "console_url": console, "text": message.text}),
                    )
                    .await
                }
                None => Err(not_configured("webhook")),
            },
            other => Err(not_configured(other)),
        }
    }
}

/// The incoming webhook a chat message goes to: the one its `to` names when the
/// channel has named webhooks, otherwise the channel's default.
fn chat_url<'a>(
    chat: Option<&'a ChatConfig>,
    channel: &str,
    n: &tollgate_model::records::Notification,
) -> Result<&'a str, SendError> {
    let chat = chat.ok_or_else(|| not_configured(channel))?;
    match n.recipients.first() {
        Some(to) if !chat.webhooks.is_empty() => {
            chat.webhooks.get(to).map(String::as_str).ok_or_else(|| {
                SendError::Permanent(format!(
                    "no {channel} webhook named `{to}`: channels.{channel}.webhooks has {}",
                    chat.webhooks
                        .keys()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        }
        _ => Ok(&chat.webhook_url),
    }
}

/// A message in the forms every channel needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// One line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body (every value escaped).
    pub html: String,
    /// The decision link, if any.
    pub link: Option<String>,
    /// The console page of the request, if any.
    pub console: Option<String>,
}

/// Builds the message for `outgoing`: the step's subject and first paragraph when it
/// set them, otherwise the defaults; then what the request shows (entity, reason,
/// requester, deadline, quorum, data) and the links. Everything in it was rendered
/// redacted, so no secret reaches a message.
pub fn compose(outgoing: &Outgoing, link: Option<&str>, console: Option<&str>) -> Message {
    let n = &outgoing.notification;
    let approval = outgoing.approval.as_ref();
    let what = approval.map(describe).unwrap_or_default();
    let prefix = match n.kind.as_str() {
        "reminder" => "Reminder: approval needed",
        "escalation" => "Escalated: approval needed",
        "approval" => "Approval needed",
        _ => "",
    };
    let subject = n.subject.clone().unwrap_or_else(|| match (prefix, &what) {
        ("", _) => n
            .message
            .lines()
            .next()
            .unwrap_or("Tollgate")
            .chars()
            .take(120)
            .collect(),
        (prefix, w) if w.is_empty() => prefix.to_owned(),
        (prefix, w) => format!("{prefix}: {w}"),
    });
    let opening = if n.message.is_empty() {
        match n.kind.as_str() {
            "reminder" => "This approval request is still waiting for a decision.".to_owned(),
            "escalation" => "This approval request has been escalated to you: it is still waiting for a decision.".to_owned(),
            _ => "An approval request is waiting for a decision.".to_owned(),
        }
    } else {
        n.message.clone()
    };
    let mut facts: Vec<(&str, String)> = Vec::new();
    if let Some(a) = approval {
        if !what.is_empty() {
            facts.push(("What", what.clone()));
        }
        if let Some(reason) = &a.reason {
            facts.push(("Why", reason.clone()));
        }
        if let Some(by) = &a.requested_by {
            facts.push(("Requested by", by.clone()));
        }
        facts.push((
            "Requested at",
            a.requested_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        ));
        if let Some(deadline) = a.expires_at {
            facts.push((
                "Deadline",
                deadline.format("%Y-%m-%d %H:%M UTC").to_string(),
            ));
        }
        let approvals = a
            .decisions
            .iter()
            .filter(|d| d.decision == tollgate_model::records::DecisionKind::Approve)
            .count();
        facts.push(("Approvals", format!("{approvals} of {}", a.required)));
        if let Value::Object(data) = &a.data {
            for (key, value) in data {
                let shown = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                facts.push((key.as_str(), shown));
            }
        }
    }
    let mut text = format!("{opening}\n\n");
    for (label, value) in &facts {
        let _ = writeln!(text, "{label}: {value}");
    }
    if let Some(link) = link {
        let _ = write!(text,
            "\nReview and decide: {link}\n(The page asks you to confirm; opening it decides nothing.)\n"
        );
    }
    if let Some(console) = console {
        let _ = writeln!(text, "\nIn the console: {console}");
    }
    let _ = writeln!(text, "\nNotification {}", n.id);
    let mut html = format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\"><p>{}</p><table>",
        escape(&opening)
    );
    for (label, value) in &facts {
        let _ = write!(
            html,
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            escape(label),
            escape(value)
        );
    }
    html.push_str("</table>");
    if let Some(link) = link {
        let _ = write!(
            html,
            "<p><a href=\"{}\" style=\"font-weight:bold\">Review and decide</a></p>",
            escape(link)
        );
    }
    if let Some(console) = console {
        let _ = write!(
            html,
            "<p><a href=\"{}\">Open in the console</a></p>",
            escape(console)
        );
    }
    let _ = write!(
        html,
        "<p style=\"color:#777;font-size:small\">Notification {}</p></body></html>",
        n.id
    );
    Message {
        subject,
        text,
        html,
        link: link.map(str::to_owned),
        console: console.map(str::to_owned),
    }
}

/// `order 42`, or the step id when the request names no entity.
fn describe(a: &ApprovalRequest) -> String {
    match (&a.entity_type, &a.entity_id) {
        (Some(t), Some(id)) if !id.is_empty() => format!("{t} {id}"),
        (Some(t), _) => t.clone(),
        _ => a.step_id.clone(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Slack's incoming-webhook body: the text, and a button opening the link.
pub fn slack_body(message: &Message) -> Value {
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": format!("*{}*\n{}", message.subject, message.text)}
    })];
    let mut buttons = Vec::new();
    if let Some(link) = &message.link {
        buttons.push(json!({"type": "button", "style": "primary",
            "text": {"type": "plain_text", "text": "Review and decide"}, "url": link}));
    }
    if let Some(console) = &message.console {
        buttons.push(json!({"type": "button",
            "text": {"type": "plain_text", "text": "Open in the console"}, "url": console}));
    }
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    json!({"text": message.subject, "blocks": blocks})
}

/// Teams' incoming-webhook body: an Adaptive Card with the text and buttons opening the
/// links.
pub fn teams_body(message: &Message) -> Value {
    let mut actions = Vec::new();
    if let Some(link) = &message.link {
        actions.push(json!({"type": "Action.OpenUrl", "title": "Review and decide", "url": link}));
    }
    if let Some(console) = &message.console {
        actions.push(
            json!({"type": "Action.OpenUrl", "title": "Open in the console", "url": console}),
        );
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "type": "AdaptiveCard",
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": message.subject, "weight": "Bolder", "wrap": true},
                    {"type": "TextBlock", "text": message.text, "wrap": true}
                ],
                "actions": actions
            }
        }]
    })
}
