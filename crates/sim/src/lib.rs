//! The crash-point explorer.
//!
//! Tollgate promises that a workflow stopped at a gate resumes exactly once whatever
//! crashes, and that nothing accepted is lost. This crate tests the promise
//! mechanically: a scenario (workflows plus a client's script of events, decisions,
//! operator commands and clock moves) runs once to count the store calls it makes; then,
//! for every call index and both sides of it (before the call takes effect, after it
//! committed but before its caller saw the answer), it runs again and kills the process
//! there ([`fuse`]). A fresh process takes over on the same durable state, the clock
//! moves past the dead one's leases, the client retries what it was not answered, and
//! the run goes on to quiescence past every deadline. Then [`check`]'s invariants must
//! hold: nothing running, every gate entitled, no event left undelivered, every
//! answered decision applied once and followed, effects under one key, the resume
//! count equal to its audit.
//!
//! `cargo xtask test` runs the exhaustive sweep on the in-memory store (and a subset on
//! SQLite); `cargo xtask sim --seeds N` runs the randomised mode: two crashes per run,
//! concurrent callers and random interleavings, each run replayable from its seed.
//!
//! ```
//! use tollgate_sim::fuse::{CrashPoint, Phase};
//! use tollgate_sim::run::{run_blocking, Backend, Plan};
//!
//! let scenario = tollgate_sim::scenario::all().into_iter().next().expect("a scenario");
//! // Once without a crash, to count its store calls, then killed after the third call
//! // committed: every invariant must hold both times.
//! let dry = run_blocking(&scenario, Backend::Memory, &Plan::default())?;
//! assert!(dry.violations.is_empty(), "{:?}", dry.violations);
//! let plan = Plan { crashes: vec![CrashPoint { call: 3.min(dry.calls - 1), phase: Phase::After }], jitter: None };
//! let crashed = run_blocking(&scenario, Backend::Memory, &plan)?;
//! assert!(crashed.violations.is_empty(), "{:?}", crashed.violations);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod check;
mod client;
pub mod fuse;
pub mod run;
pub mod scenario;
pub mod sweep;

pub use fuse::{CrashPoint, Phase};
pub use run::{run_blocking, Backend, Plan, RunReport};
pub use scenario::{all, named, Act, Scenario};
