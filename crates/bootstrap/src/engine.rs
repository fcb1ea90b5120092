//! The engine as every Tollgate process builds it.

use std::sync::Arc;

use tollgate_engine::{
    ContextProvider, Engine, EngineOptions, HttpContextProvider, NoProviders, Notifier,
    RecordingNotifier,
};
use tollgate_store::Store;

use crate::channels::{ChannelNotifier, LinkSource};
use crate::config::{FileConfig, WorkerArgs};
use crate::Error;

/// Builds the engine the way every Tollgate process does: `config` supplies context
/// providers, secrets and the notification channels; `links` (the API servers' link
/// keys) lets its messages carry decision links, under `public_url` unless the config
/// names one.
pub fn build_engine(
    store: Arc<dyn Store>,
    config: &FileConfig,
    worker: &WorkerArgs,
    worker_id: String,
    links: Option<LinkSource>,
    public_url: Option<String>,
) -> Result<Engine, Error> {
    let http_timeout = config.http_timeout();
    let channels = &config.channels;
    let configured = channels.email.is_some()
        || channels.slack.is_some()
        || channels.teams.is_some()
        || channels.webhook.is_some()
        || config.notifier.is_some();
    let notifier: Arc<dyn Notifier> = if configured {
        Arc::new(ChannelNotifier::new(
            channels,
            config.notifier.as_ref(),
            http_timeout,
            links,
            public_url,
        )?)
    } else {
        Arc::new(RecordingNotifier)
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
