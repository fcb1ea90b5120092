//! Tollgate's engine: the condition evaluator, templates and (with the engine issue) the
//! step interpreter.
//!
//! The engine knows nothing of HTTP servers or of which database is in use: it reads and
//! writes through the `tollgate-store` traits, so it can be embedded in any Rust service.

pub mod condition;
pub mod path;
pub mod template;

pub use condition::{CompileError, CompiledCondition};
pub use template::{Mode, Scope, Secrets, Template};
