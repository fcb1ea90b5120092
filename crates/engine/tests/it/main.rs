//! Integration tests of the engine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    missing_docs
)]

mod conditions;
mod embedded;
mod properties;
