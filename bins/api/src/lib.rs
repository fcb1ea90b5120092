//! `tollgate-api` as a library: the REST server of docs/api.md, its settings, and the pieces
//! the `tollgate-resume-worker` binary shares with it (opening the database, building
//! the engine, logging).
//!
//! The binaries are thin: `main.rs` parses flags and calls [`app::start`]; tests start
//! the same server on port 0.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> anyhow::Result<()> {
//! use clap::Parser;
//! use tollgate_api::config::ServeArgs;
//!
//! #[derive(Parser)]
//! struct Flags {
//!     #[command(flatten)]
//!     serve: ServeArgs,
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let data_dir = dir.path().to_string_lossy();
//! let flags = Flags::parse_from(["tollgate-api", "--listen", "127.0.0.1:0", "--data-dir", &data_dir]);
//! let running = tollgate_api::app::start(&flags.serve, false).await?;
//! let health = reqwest::get(format!("http://{}/health/live", running.addr)).await?;
//! assert!(health.status().is_success());
//! running.stop().await?;
//! # Ok(()) }
//! ```

pub mod app;
pub mod auth;
pub mod config;
pub mod console;
pub mod dto;
pub mod error;
pub mod gauges;
pub mod key_cache;
pub mod links;
pub mod mcp;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod telemetry;
