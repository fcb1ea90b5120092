//! `tollgate`, the command-line tool for a Tollgate server, built on `tollgate-client`.
//!
//! The library holds the command definitions so that tests and `cargo xtask dist`
//! (completions and man pages) see exactly what the binary parses.

pub mod cli;
mod config;
pub mod output;
mod run;

pub use run::{exit_code, report, run, DEFAULT_URL};

/// The clap definition of the whole command line.
pub fn command() -> clap::Command {
    <cli::Cli as clap::CommandFactory>::command()
}

/// How errors are printed on this terminal (colors only where they belong).
pub fn output_style() -> output::Style {
    output::Style::detect()
}
