//! `tollgate-api` as a library: the REST server of docs/api.md, its settings, and the pieces
//! the `tollgate-resume-worker` binary shares with it (opening the database, building
//! the engine, logging).
//!
//! The binaries are thin: `main.rs` parses flags and calls [`app::start`]; tests start
//! the same server on port 0.

pub mod app;
pub mod auth;
pub mod config;
pub mod console;
pub mod dto;
pub mod error;
pub mod gauges;
pub mod key_cache;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod telemetry;
