//! Loading `context.load` resources (docs/execution-semantics.md, "Starting").

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::template::{render_str, Mode, Scope};

/// Why a resource could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

/// Fetches named resources (`customer.profile`) for the context.
#[async_trait]
pub trait ContextProvider: Send + Sync + std::fmt::Debug {
    /// The resource's value, `Ok(None)` when no source is configured for it (the engine
    /// skips it with a warning), or an error when the source failed.
    async fn load(&self, resource: &str, scope: &Scope<'_>) -> Result<Option<Value>, LoadError>;
}

/// No resources configured: every `context.load` entry is skipped with a warning.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProviders;

#[async_trait]
impl ContextProvider for NoProviders {
    async fn load(&self, _resource: &str, _scope: &Scope<'_>) -> Result<Option<Value>, LoadError> {
        Ok(None)
    }
}

/// Resources fetched with `GET` from URL templates (`customer.profile` →
/// `https://crm.internal/customers/{{customer.id}}`); the response must be a JSON object.
#[derive(Debug, Clone)]
pub struct HttpContextProvider {
    client: reqwest::Client,
    urls: HashMap<String, String>,
}

impl HttpContextProvider {
    /// A provider for `resource → URL template`, with a per-request `timeout`.
    pub fn new(urls: HashMap<String, String>, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(timeout).build()?,
            urls,
        })
    }
}

#[async_trait]
impl ContextProvider for HttpContextProvider {
    async fn load(&self, resource: &str, scope: &Scope<'_>) -> Result<Option<Value>, LoadError> {
        let Some(template) = self.urls.get(resource) else {
            return Ok(None);
        };
        let mut warnings = Vec::new();
        let url = render_str(template, scope, Mode::Live, &mut warnings);
        let response =
            self.client.get(&url).send().await.map_err(|e| {
                LoadError(format!("GET for `{resource}` failed: {}", e.without_url()))
            })?;
        if !response.status().is_success() {
            return Err(LoadError(format!(
                "GET for `{resource}` answered {}",
                response.status()
            )));
        }
        let value: Value = response
            .json()
            .await
            .map_err(|e| LoadError(format!("`{resource}` is not JSON: {}", e.without_url())))?;
        if value.is_object() {
            Ok(Some(value))
        } else {
            Err(LoadError(format!("`{resource}` is not a JSON object")))
        }
    }
}
