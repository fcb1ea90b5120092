//! Tollgate's storage contract: one trait per aggregate, each method one atomic domain
//! change, plus an in-memory implementation and the contract test kit every backend runs.
//!
//! Backends are chosen at run time and used as `Arc<dyn Store>`; consumers ask for the
//! narrowest trait they need. Rules that hold for every backend:
//!
//! - **The store never reads the clock.** Every time it writes comes in as an argument.
//! - **Each method is one transaction.** Nothing here hands a transaction to the caller.
//! - **Compare-and-set on executions.** Every change to a running execution names the
//!   lease owner and the version it read; a mismatch is [`Error::Conflict`] and changes
//!   nothing. Every change increments the version.
//! - **Pagination is keyset-based** ([`PageRequest`], [`Page`]): a page costs the same at
//!   item 10 as at item 1,000,000.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tollgate_model::records::{snapshot_id, Workflow};
//! use tollgate_store::{MemoryStore, PageRequest, Store, WorkflowFilter};
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let doc = serde_json::json!({"workflow_id": "w", "version": "1",
//!     "steps": [{"id": "ok", "type": "action", "action": "allow"}]});
//! let definition = Arc::new(tollgate_model::load(&doc).map_err(|r| format!("{:?}", r.errors))?.definition);
//! let now = chrono::Utc::now();
//! let workflow = Workflow { id: uuid::Uuid::now_v7(), snapshot_id: snapshot_id(&definition),
//!     enabled: true, definition, created_at: now, updated_at: now };
//! store.create_workflow(workflow.clone()).await?;
//! // (workflow_id, version) is unique: a second create is a conflict and changes nothing.
//! let again = store.create_workflow(Workflow { id: uuid::Uuid::now_v7(), ..workflow }).await;
//! assert!(matches!(again, Err(tollgate_store::Error::Conflict(_))));
//! let page = store.list_workflows(&WorkflowFilter::default(), &PageRequest::first(10)).await?;
//! assert_eq!(page.items.len(), 1);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod cursor;
pub mod decision_batch;
pub mod group_commit;
pub mod memory;
pub mod rules;
mod traits;
mod types;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use cursor::{
    decode_cursor, decode_due_cursor, decode_id_cursor, decode_time_id_cursor, encode_cursor,
    encode_due_cursor, encode_id_cursor, encode_time_id_cursor, page_from_overfetch,
};
pub use memory::MemoryStore;
pub use traits::{
    ApiKeyStore, ApprovalStore, DelegationStore, EventStore, ExecutionStore, Health,
    NotificationStore, RecordStore, ResumeRequestStore, ScheduleStore, SessionStore, Store,
    WorkerStore, WorkflowStore, WORKERS_FORGOTTEN_AFTER,
};
pub use types::{
    ApprovalFilter, ApprovalPin, AssignmentChange, ClaimedTick, Committed, Continuation, Decided,
    Delivery, Effect, EventInsert, EventKey, EventPurge, EventShape, ExecutionFilter, FormCheck,
    FormRefusal, LeaseClaim, NotificationFilter, Overdue, Page, PageRequest, Purge, Purged,
    Quarantined, ScheduleFilter, SchemaPolicy, Settle, Starting, StepCommit, TickView, Transition,
    WaitKey, WaitShape, WorkflowFilter,
};

/// What can go wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of thing (`execution`, `workflow`, …).
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A uniqueness or state rule refused the change (a lost race, a stale version, a
    /// decided approval). Nothing was changed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// An approval decision the request's rules refuse, and why: the decider's rights
    /// (not an approver, self-approval: 403) or the request's state (no longer pending,
    /// a second approval by one subject, past its deadline, an execution no longer at the
    /// gate: 409). Nothing was changed; the caller audits it.
    #[error("{refusal}")]
    Refused {
        /// The execution the request gates.
        execution_id: uuid::Uuid,
        /// Why.
        refusal: tollgate_model::records::DecisionRefusal,
    },
    /// The arguments cannot be used (e.g. a cursor that this store did not issue).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The caller's [`FormCheck`] did not accept an approving decision's data: invalid
    /// under the step's form (`400`), or its definition was not at hand (the caller
    /// loads it and decides again). Nothing was changed.
    #[error("{0}")]
    Form(FormRefusal),
    /// A stored row this release should be able to read but cannot decode (damaged by
    /// hand, by a bug, or by a release that changed a layout without saying so). Worker
    /// passes quarantine such executions
    /// ([`ExecutionStore::quarantine_execution`]) instead of stopping on them.
    #[error("unreadable {0}")]
    Unreadable(String),
    /// A stored row written by a newer release, in a layout this release does not know
    /// ([`STORED_FORMAT`]). It is left for the processes of that release: never claimed,
    /// changed or quarantined here.
    #[error("{what} {id} was written by a newer release (stored format {format}; this release reads up to {STORED_FORMAT}); an upgraded process handles it")]
    NewerFormat {
        /// Kind of row (`execution`, `snapshot`).
        what: &'static str,
        /// Its id.
        id: String,
        /// The format it was written in.
        format: i64,
    },
    /// The backend did not answer within its bound, or cannot be reached (a dropped
    /// network, a database that is down, no free connection in time). Like
    /// [`Error::Backend`], the change may or may not have happened where the method says
    /// so; callers answer it as "try again shortly" (`503`), not as a bug.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// The backend failed (connection lost, disk full, …). The change may or may not have
    /// happened only where the method's documentation says so; otherwise nothing changed.
    #[error("storage backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// A not-found error.
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// Whether this is a [`Error::Conflict`] (or a row of a newer release's
    /// [`Error::NewerFormat`], which this process must leave alone), or a [`Error::Refused`] about the state of
    /// a request rather than the decider's rights (both answer 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_) | Self::NewerFormat { .. })
            || matches!(self, Self::Refused { refusal, .. } if !refusal.is_forbidden())
    }

    /// Whether this is a [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// The layout version of stored executions and definition snapshots that this release
/// writes, and the newest it reads. Every execution and snapshot row carries the format it
/// was written in. A release that changes what it stores in a way older releases would
/// misread raises this number; during a rolling deploy the older processes then leave
/// the rows in the newer format alone (they neither claim, change nor quarantine them),
/// and the newer processes handle them. A row in this format or older that does not
/// decode is damaged, and is quarantined.
pub const STORED_FORMAT: i64 = 1;

/// Results of store calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The [`Error::Conflict`] for a row whose unique key is taken, in the API's words
/// rather than the database's. `table` is the table; `key` names the key: its columns
/// (SQLite's `table.col, table.col`) or the constraint (PostgreSQL's `table_col_key`,
/// `table_pkey`). Backends map unique violations through this, so a `409` never carries
/// a database's text.
pub fn duplicate_key(table: &str, key: &str) -> Error {
    let has = |column: &str| key.contains(column);
    let message = match table {
        "events" if has("event_id") => "an event with this event_id was already stored".to_owned(),
        "api_keys" if has("name") => "an API key with this name exists".to_owned(),
        "api_keys" if has("key_hash") => "an API key with this secret exists".to_owned(),
        "workflows" if has("workflow_id") => {
            "a workflow with this workflow_id and version exists".to_owned()
        }
        "schedule_ticks" if has("tick_time") => {
            "this schedule tick was already recorded".to_owned()
        }
        "records" => "a record with this entity and entity_id exists".to_owned(),
        "console_sessions" => "this console session exists".to_owned(),
        _ => {
            let what = match table {
                "executions" => "an execution",
                "approvals" => "an approval request",
                "step_records" => "a step record",
                "events" => "an event",
                "notifications" => "a notification",
                "schedules" => "a schedule",
                "schedule_ticks" => "a schedule tick",
                "snapshots" => "a definition snapshot",
                "workflows" => "a workflow",
                "resume_requests" => "a resume request",
                "api_keys" => "an API key",
                _ => "a row",
            };
            format!("{what} with this id already exists")
        }
    };
    Error::Conflict(message)
}
