//! Tollgate's engine: the step interpreter, the condition evaluator and templates.
//!
//! The engine knows nothing of HTTP servers or of which database is in use: it reads and
//! writes through the `tollgate-store` traits, so it can be embedded in any Rust service.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tollgate_engine::{Engine, StartRequest};
//! use tollgate_model::records::{snapshot_id, Workflow};
//! use tollgate_store::{MemoryStore, Store};
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let engine = Engine::builder(store.clone()).build()?;
//! let doc = serde_json::json!({"workflow_id": "w", "version": "1",
//!     "steps": [{"id": "ok", "type": "action", "action": "allow"}]});
//! let definition = Arc::new(tollgate_model::load(&doc).map_err(|r| format!("{:?}", r.errors))?.definition);
//! let now = engine.clock().now();
//! let workflow = store.create_workflow(Workflow { id: uuid::Uuid::now_v7(), snapshot_id: snapshot_id(&definition),
//!     enabled: true, definition, created_at: now, updated_at: now }).await?;
//! let done = engine.start(StartRequest { workflow, trigger_event: "manual".into(), payload: serde_json::json!({}),
//!     event_id: None, event_key: None, source: None, requested_by: None }).await?;
//! assert_eq!(done.result, Some(tollgate_model::ExecutionResult::Allowed));
//! # Ok(()) }
//! ```
//!
//! See `examples/embedded.rs` for a complete program.

#![deny(missing_docs)]

pub mod clock;
pub mod condition;
pub mod correlation;
mod engine;
pub mod error;
mod http;
pub mod notify;
pub mod path;
pub mod provider;
mod steps;
pub mod template;

pub use clock::{Clock, SystemClock, TestClock};
pub use condition::{CompileError, CompiledCondition};
pub use engine::{
    gate_accepts, wait_matches, Ahead, Engine, EngineBuilder, EngineOptions, StartRequest,
    RETRY_ROOT,
};
pub use error::{Error, Result};
pub use notify::{
    http_outcome, not_configured, signature, verify_signature, Notifier, Outgoing,
    RecordingNotifier, SendError, WebhookNotifier, SIGNATURE_HEADER,
};
pub use provider::{ContextProvider, HttpContextProvider, LoadError, NoProviders};
pub use template::{redact_secrets, redact_value, Mode, Scope, Secrets, Template};
