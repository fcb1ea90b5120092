//! Tollgate embedded in a Rust service.
//!
//! Tollgate runs workflows that stop at gates — an approval, an awaited event, a
//! deadline — with all their state in the database, and resume exactly where they
//! stopped when the decision or event comes, on whichever process, with no side effect
//! run twice. This crate is the way to use it from Rust without the HTTP server: one
//! cloneable [`Tollgate`] handle, opened from a database URL, with the operations the
//! HTTP API offers and the same rules.
//!
//! ```
//! use serde_json::json;
//! use tollgate::builder::{Approval, Cond, StepBuilder, WorkflowBuilder};
//! use tollgate::{NewEvent, Principal, Tollgate};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollgate::Error> {
//! // `sqlite:orders.db` keeps it in a file, `postgres://…` shares it between processes.
//! let tollgate = Tollgate::open("sqlite::memory:").await?;
//!
//! // A workflow in code, validated exactly as its JSON form would be.
//! tollgate
//!     .create_workflow(
//!         WorkflowBuilder::new("big_orders", "1")
//!             .on_event("order.created")
//!             .step(
//!                 StepBuilder::condition("check", Cond::field("total").gt(10_000))
//!                     .on_true("manager")
//!                     .on_false("ship"),
//!             )
//!             .step(
//!                 StepBuilder::approval("manager", Approval::role("sales_manager").timeout("2d"))
//!                     .on_approve("ship")
//!                     .on_reject("refuse"),
//!             )
//!             .step(StepBuilder::allow("ship"))
//!             .step(StepBuilder::block("refuse")),
//!     )
//!     .await?;
//!
//! // An order arrives: the execution stops at the approval, durably.
//! let sent = tollgate
//!     .send_event(NewEvent {
//!         event_type: "order.created".into(),
//!         payload: json!({"order_id": "o-1", "total": 25_000}),
//!         event_id: Some("o-1".into()),
//!         ..NewEvent::default()
//!     })
//!     .await?;
//! let execution = sent.started[0].id;
//!
//! // Any time later, in any process on the same database: a manager decides.
//! let maria = Principal { subject: "maria".into(), roles: vec!["sales_manager".into()] };
//! let inbox = tollgate.inbox(&maria, &Default::default()).await?;
//! tollgate.approve(inbox.items[0].id, &maria, Some("known customer")).await?;
//!
//! let done = tollgate.wait_until_stopped(execution, std::time::Duration::from_secs(5)).await?;
//! assert_eq!(done.status, tollgate::ExecutionStatus::Completed);
//! # Ok(())
//! # }
//! ```
//!
//! Deadlines, schedules and executions abandoned by a crashed process need the worker
//! loop: run [`Tollgate::run_worker`] on the service's runtime with its shutdown signal.
//! `docs/embedding.md` in the repository covers the handle, the worker, shutdown, the
//! builder, the choice of backend and running several processes.
//!
//! # Features
//!
//! - `sqlite` (default): `sqlite:PATH` and `sqlite::memory:`.
//! - `postgres` (default): `postgres://…`.
//!
//! An embedder that uses one backend turns the other off
//! (`default-features = false, features = ["postgres"]`) and does not compile it.

#![deny(missing_docs)]

pub mod backend;
mod error;
mod handle;

pub use backend::{Backend, BackendError, BackendOptions, DatabaseTarget, Kind};
pub use error::{Error, Problem, Result};
pub use handle::{
    default_worker_id, Builder, Decided, Definition, NewSchedule, Sent, Tollgate, DRAIN_TIMEOUT,
};

/// The typed workflow builder ([`tollgate_model::builder`]).
pub use tollgate_model::builder;
pub use tollgate_model::records::{
    ApprovalRequest, ApprovalStatus, DecisionKind, Event, Execution, Principal, Record,
    ResumeRequest, StepRecord, Workflow,
};
pub use tollgate_model::schedule::{CatchUp, Schedule};
pub use tollgate_model::{ExecutionResult, ExecutionStatus, PauseReason, WorkflowDefinition};
pub use tollgate_resumer::{NewEvent, WorkerOptions};
pub use tollgate_store::{
    ApprovalFilter, ExecutionFilter, Page, PageRequest, ScheduleFilter, SchemaPolicy,
    WorkflowFilter,
};

/// The lower layers, for what the handle does not wrap.
pub mod layers {
    pub use tollgate_engine as engine;
    pub use tollgate_model as model;
    pub use tollgate_resumer as resumer;
    pub use tollgate_store as store;
}
