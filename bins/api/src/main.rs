//! `tollgate-api`: Tollgate's server and command-line tool.
//!
//! Today it validates workflow files (`tollgate-api validate FILE…`); the HTTP server is
//! tracked by the API issue and is not part of this build yet.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Tollgate: durable workflows that stop at approvals, events and deadlines.
#[derive(Debug, Parser)]
#[command(name = "tollgate-api", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check workflow definition files; prints every error and warning with its JSON path
    /// and exits with status 1 if any file has errors.
    Validate {
        /// Definition files (JSON), canonical or in the compatibility forms.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate { files }) => match validate(&files) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::from(2)
            }
        },
        None => {
            eprintln!(
                "tollgate-api: this build has no HTTP server yet (see the API issue); \
                 available now: `tollgate-api validate FILE...`"
            );
            ExitCode::from(2)
        }
    }
}

/// Validates each file; returns whether all were valid.
fn validate(files: &[PathBuf]) -> Result<bool> {
    let mut all_valid = true;
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        match tollgate_model::load_str(&text) {
            Ok(loaded) => {
                println!(
                    "{}: valid ({} {})",
                    file.display(),
                    loaded.definition.workflow_id,
                    loaded.definition.version
                );
                for warning in &loaded.warnings {
                    println!("  warning: {warning}");
                }
            }
            Err(report) => {
                all_valid = false;
                println!("{}: {} error(s)", file.display(), report.errors.len());
                for error in &report.errors {
                    println!("  error: {error}");
                }
                for warning in &report.warnings {
                    println!("  warning: {warning}");
                }
            }
        }
    }
    Ok(all_valid)
}
