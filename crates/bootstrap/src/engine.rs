//! The engine as every Tollgate process builds it.

use std::sync::Arc;

use tollgate_engine::{
    ContextProvider, Engine, EngineOptions, HttpContextProvider, NoProviders, Notifier,
    RecordingNotifier, WebhookNotifier,
};
use tollgate_store::Store;

use crate::config::{FileConfig, WorkerArgs};
use crate::Error;

/// Builds the engine the way every Tollgate process does: `config` supplies context
/// providers, secrets and the notifier.
pub fn build_engine(
    store: Arc<dyn Store>,
    config: &FileConfig,
    worker: &WorkerArgs,
    worker_id: String,
) -> Result<Engine, Error> {
    let http_timeout = config.http_timeout();
    let notifier: Arc<dyn Notifier> = match &config.notifier {
        Some(n) => {
            let webhook =
                WebhookNotifier::new(n.webhook_url.clone(), http_timeout).map_err(|source| {
                    Error::HttpClient {
                        what: "notifier",
                        source,
                    }
                })?;
            Arc::new(match &n.signing_secret {
                Some(secret) => webhook.signed_with(secret.clone()),
                None => webhook,
            })
        }
        None => Arc::new(RecordingNotifier),
    };
    let provider: Arc<dyn ContextProvider> = if config.context_providers.is_empty() {
        Arc::new(NoProviders)
    } else {
        Arc::new(
            HttpContextProvider::new(config.context_providers.clone(), http_timeout).map_err(
                |source| Error::HttpClient {
                    what: "context providers",
                    source,
                },
            )?,
        )
    };
    let options = EngineOptions {
        worker_id,
        lease: worker.lease,
        http_timeout,
        secrets: config.secrets.clone(),
        ..EngineOptions::default()
    };
    Ok(Engine::builder(store)
        .notifier(notifier)
        .context_provider(provider)
        .options(options)
        .build()?)
}

/// A unique id for this process's worker: `prefix`, host, pid and a random suffix.
pub fn default_worker_id(prefix: &str) -> String {
    tollgate::default_worker_id(prefix)
}
