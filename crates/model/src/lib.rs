//! Tollgate's data model: workflow definitions and their validation, the records the
//! engine persists, and the execution status machine.
//!
//! This crate is pure: no I/O, no async, no clock. Everything else in Tollgate builds on
//! it, and anything that must behave identically in every backend (parsing, validation,
//! the approval quorum, the status machine) lives here.
//!
//! ```
//! let doc = serde_json::json!({
//!     "workflow_id": "big_orders", "version": "1",
//!     "trigger": {"type": "event", "event": "order.*"},
//!     "steps": [{"id": "check", "type": "condition",
//!                "condition": {"field": "order.total", "operator": "gte", "value": 10000},
//!                "on_true": "block"},
//!               {"id": "block", "type": "action", "action": "block"}]
//! });
//! let loaded = tollgate_model::load(&doc).expect("valid");
//! assert_eq!(loaded.definition.steps.len(), 2);
//! ```

#![deny(missing_docs)]

pub mod builder;
pub mod condition;
pub mod definition;
pub mod duration;
pub mod form;
pub mod parse;
pub mod paths;
pub mod problem;
pub mod records;
pub mod schedule;
pub mod status;
pub mod template;
pub mod undo;
pub mod validate;
pub mod wire;

pub use condition::{Condition, Leaf, Operator};
pub use definition::{Step, StepKind, Trigger, WorkflowDefinition};
pub use duration::Duration;
pub use parse::{check, load, load_stored, load_str, parse_condition, Loaded};
pub use problem::{Problem, Report};
pub use status::{ErrorKind, ExecutionResult, ExecutionStatus, PauseReason};
