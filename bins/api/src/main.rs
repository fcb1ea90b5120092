//! `tollgate-api`: Tollgate's server and command-line tool.
//!
//! With no arguments it serves the whole product on embedded SQLite in
//! `./tollgate-data/` (see `--help`). Subcommands validate definition files, apply
//! migrations and create API keys.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tollgate_api::app::{self, AdminKey};
use tollgate_api::config::{DatabaseArgs, ServeArgs};
use tollgate_bootstrap::{init_logging, run_main};

/// Tollgate: durable workflows that stop at approvals, events and deadlines.
///
/// Without a subcommand it serves the REST API (and, by default, runs the worker loop
/// in-process). Every flag can also be set through the environment variable shown.
#[derive(Debug, Parser)]
#[command(name = "tollgate-api", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: ServeArgs,
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
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Write a consistent copy of the embedded SQLite database to FILE while the server
    /// keeps running (`VACUUM INTO`). Restore: stop the server, replace
    /// `<data-dir>/tollgate.db` with the copy (removing `tollgate.db-wal` and
    /// `tollgate.db-shm`), start it. Example: `tollgate-api backup /backups/tollgate-2026-12-02.db`
    Backup {
        /// The copy to write (must not exist).
        file: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage the keys that sign decision links.
    LinkKeys {
        #[command(subcommand)]
        command: LinkKeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum LinkKeysCommand {
    /// Replace the key that signs new decision links. Links signed with the old one keep
    /// working for `--link-key-overlap`, then stop; running servers read the new key at
    /// their next link. Example: `tollgate-api link-keys rotate --data-dir /var/lib/tollgate`
    Rotate {
        /// The data directory whose `link.key` is rotated.
        #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "./tollgate-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        links: tollgate_api::config::LinkArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it (it is shown only once; only its hash is stored).
    Create {
        /// The key's subject name (unique), e.g. `billing-service` or `alice`.
        #[arg(long)]
        name: String,
        /// Comma-separated roles: admin, operator, service, viewer, or approver roles.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// jemalloc instead of glibc's malloc or mimalloc: allocations made for a request on
/// one thread and freed on another are the server's most frequent operation, and
/// jemalloc spends the least CPU and memory on them (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Validate { files }) = &cli.command {
        return match validate(files) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::from(2)
            }
        };
    }
    run_main(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    init_logging(cli.serve.log_format);
    match cli.command {
        Some(Command::Validate { .. }) => Ok(()),
        Some(Command::Migrate { mut database }) => {
            // `migrate` applies whatever `--migrate` says for starts.
            database.migrate = tollgate_bootstrap::MigrateMode::Auto;
            let backend = database.open().await?;
            backend.close().await;
            println!("migrations applied ({:?})", backend.kind);
            Ok(())
        }
        Some(Command::Backup { file, mut database }) => {
            // A backup reads; it never changes the schema.
            database.migrate = tollgate_bootstrap::MigrateMode::Off;
            let backend = database.open().await?;
            let written = backend.backup(&file).await;
            backend.close().await;
            written?;
            println!("backup written to {}", file.display());
            Ok(())
        }
        Some(Command::Keys {
            command:
                KeysCommand::Create {
                    name,
                    roles,
                    database,
                },
        }) => {
            let backend = database.open().await?;
            let created = tollgate_api::routes::keys::create_key(
                backend.store.as_ref(),
                name,
                roles,
                chrono::Utc::now(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            backend.close().await;
            println!(
                "created key `{}` with roles {}",
                created.name,
                created.roles.join(",")
            );
            println!("{}", created.key);
            eprintln!("(store it now: it is not shown again)");
            Ok(())
        }
        Some(Command::LinkKeys {
            command: LinkKeysCommand::Rotate { data_dir, links },
        }) => {
            let path = links.key_file(&data_dir);
            let id =
                tollgate_api::links::rotate(&path, links.link_key_overlap, chrono::Utc::now())?;
            println!(
                "link key {id} now signs new links ({}); the keys it replaced verify for {} more",
                path.display(),
                humanize(links.link_key_overlap)
            );
            Ok(())
        }
        None => serve(&cli.serve).await,
    }
}

/// `7d`, `12h`, `90s`: a duration as the flags write it.
fn humanize(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

async fn serve(args: &ServeArgs) -> Result<()> {
    let running = app::start(args, true).await?;
    println!(
        "Tollgate listening on http://{} ({:?}, embedded worker {})",
        running.addr,
        running.backend,
        if args.embedded_worker { "on" } else { "off" }
    );
    match &running.admin_key {
        AdminKey::Created { key, path } => {
            println!(
                "admin API key (shown once, also saved to {}):",
                path.display()
            );
            println!("  {key}");
        }
        AdminKey::Existing { path } => {
            println!("admin API key: in {}", path.display());
        }
        AdminKey::Unknown { path } => {
            println!(
                "warning: {} holds a key this database does not know (revoked, or made for another database); \
                 it was not registered again. Use another admin key (or, when the database has no admin key \
                 left, delete the file and restart to have a new one made).",
                path.display()
            );
        }
        AdminKey::InDatabase => {
            println!(
                "admin API key: the database already has one (made by another process or data directory); \
                 none was made here"
            );
        }
        AdminKey::Supplied { path } => {
            println!("admin API key: the one in {}", path.display());
        }
        AdminKey::Off => {
            println!(
                "admin API key: none made (--bootstrap-admin-key off); manage keys with an existing admin key"
            );
        }
    }
    running.wait().await
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
