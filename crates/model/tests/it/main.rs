//! Integration tests of the model: the original examples, every validation rule, the

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    missing_docs
)]
//! compatibility forms and round-tripping.

mod definitions;
mod validation;
