//! Tollgate's engine: the step interpreter, the condition evaluator and templates.
//!
//! The engine knows nothing of HTTP servers or of which database is in use: it reads and
//! writes through the `tollgate-store` traits, so it can be embedded in any Rust service.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tollgate_engine::{Engine, StartRequest};
//! use tollgate_store::{MemoryStore, Store};
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let engine = Engine::builder(store.clone()).build()?;
//! # let workflow: tollgate_model::records::Workflow = unimplemented!();
//! let execution = engine
//!     .start(StartRequest {
//!         workflow,
//!         trigger_event: "order.created".into(),
//!         payload: serde_json::json!({"order": {"total": 12000}}),
//!         event_id: None, event_key: None, source: None, requested_by: Some("shop".into()),
//!     })
//!     .await?;
//! println!("{:?}", execution.status); // Paused at an approval, or Completed
//! # Ok(()) }
//! ```
//!
//! See `examples/embedded.rs` for a complete program.

pub mod clock;
pub mod condition;
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
pub use engine::{wait_matches, Engine, EngineBuilder, EngineOptions, StartRequest};
pub use error::{Error, Result};
pub use notify::{Delivery, Notifier, RecordingNotifier, WebhookNotifier};
pub use provider::{ContextProvider, HttpContextProvider, LoadError, NoProviders};
pub use template::{Mode, Scope, Secrets, Template};
