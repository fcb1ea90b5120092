//! The server's own settings; those every process shares come from
//! [`tollgate_bootstrap::config`] and are re-exported here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use tollgate_bootstrap::config::{
    parse_duration, DatabaseArgs, FileConfig, LogFormat, NotifierConfig, WorkerArgs,
};

/// Everything `tollgate-api` needs to serve.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Run the worker loop (deadlines, abandoned executions) inside this process. Turn
    /// it off when separate `tollgate-resume-worker` processes do it (PostgreSQL only).
    #[arg(long, env = "TOLLGATE_EMBEDDED_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub embedded_worker: bool,

    /// Worker loop tuning.
    #[command(flatten)]
    pub worker: WorkerArgs,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "TOLLGATE_MAX_BODY_SIZE", default_value_t = 1024 * 1024)]
    pub max_body_size: usize,

    /// Longest a `?wait=true` call waits for the execution to reach a gate or end.
    #[arg(long, env = "TOLLGATE_WAIT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub wait_timeout: Duration,

    /// Longest a request may take before it is answered `503` (a `?wait=true` call gets
    /// `--wait-timeout` more): a database that stopped answering fails requests instead
    /// of holding them, and their connections, until TCP gives up. Whether a change the
    /// request asked for was applied is then unknown; retrying is safe.
    #[arg(long, env = "TOLLGATE_REQUEST_TIMEOUT", default_value = "30s", value_parser = tollgate_bootstrap::config::parse_positive_duration)]
    pub request_timeout: Duration,

    /// Serve the Model Context Protocol endpoint `/mcp`, through which AI agents request
    /// approvals and start workflows with their API keys (docs/agents.md).
    #[arg(long, env = "TOLLGATE_MCP", default_value_t = true, action = clap::ArgAction::Set)]
    pub mcp: bool,

    /// Longest an MCP `wait_for_approval` call waits for a decision before it answers
    /// "still pending" (the agent then calls again); `/mcp` requests get this much more
    /// than `--request-timeout`.
    #[arg(long, env = "TOLLGATE_MCP_WAIT_LIMIT", default_value = "60s", value_parser = tollgate_bootstrap::config::parse_positive_duration)]
    pub mcp_wait_limit: Duration,

    /// How long a verified API key is trusted before it is looked up again. A key
    /// revoked through this server stops working at once; one revoked through another
    /// server stops working here within this time. `0s` looks the key up on every
    /// request.
    #[arg(long, env = "TOLLGATE_KEY_CACHE_TTL", default_value = "1s", value_parser = parse_duration)]
    pub key_cache_ttl: Duration,

    /// How old the counts of ended executions (completed, failed, cancelled, timed out)
    /// in `/metrics` may be. Counting them reads every execution ever run, so each
    /// server does it at most this often; `running`, `paused` and `waiting` are counted
    /// on every scrape. `0s` counts everything on every scrape.
    #[arg(long, env = "TOLLGATE_METRICS_TERMINAL_REFRESH", default_value = "60s", value_parser = parse_duration)]
    pub metrics_terminal_refresh: Duration,

    /// `/health/ready` warns when a gate's deadline passed longer ago than this and no
    /// worker has claimed it (no worker loop runs against the database). It still
    /// answers ready: the server itself can serve.
    #[arg(long, env = "TOLLGATE_READY_OVERDUE_WARNING", default_value = "5m", value_parser = parse_duration)]
    pub ready_overdue_warning: Duration,

    /// `/health/ready` warns when no worker loop has recorded a heartbeat for this long
    /// (none runs against the database: deadlines, take-overs and schedules wait). It
    /// still answers ready. Keep it above the workers' `--heartbeat-interval`.
    #[arg(long, env = "TOLLGATE_READY_WORKER_WARNING", default_value = "1m", value_parser = parse_duration)]
    pub ready_worker_warning: Duration,

    /// How the first admin key is made: `auto` makes one (saved in the data directory
    /// and printed once) only while the database has no admin key; `off` never does.
    #[arg(long, env = "TOLLGATE_BOOTSTRAP_ADMIN_KEY", value_enum, default_value_t = crate::app::BootstrapAdminKey::Auto)]
    pub bootstrap_admin_key: crate::app::BootstrapAdminKey,

    /// A file holding the admin key (a mounted secret, `tg_` and 64 hex digits): it
    /// becomes the admin key of a database that has none, and is never printed.
    #[arg(long, env = "TOLLGATE_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,

    /// HTTP worker threads (default: half the cores, at least one).
    #[arg(long, env = "TOLLGATE_HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    /// Log format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// JSON file with context providers, secrets and the notifier webhook.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,

    /// How long a stop may take in all (requests, the worker loop, executions in
    /// flight); what is still running then keeps its lease, which another worker takes
    /// over when it expires.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// On SIGTERM, how long `/health/ready` answers 503 while the server still serves,
    /// before it stops accepting: time for a load balancer to stop sending requests.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_GRACE", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Signed decision links.
    #[command(flatten)]
    pub links: LinkArgs,
}

/// Signed decision links (docs/notifications.md).
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    /// The file of the keys that sign decision links (default: `<data-dir>/link.key`,
    /// made on first start, owner-only). Servers sharing a database must share it.
    #[arg(long, env = "TOLLGATE_LINK_KEY_FILE")]
    pub link_key_file: Option<PathBuf>,

    /// How long a key replaced by `tollgate-api link-keys rotate` still verifies the
    /// links it signed.
    #[arg(long, env = "TOLLGATE_LINK_KEY_OVERLAP", default_value = "7d", value_parser = parse_duration)]
    pub link_key_overlap: Duration,

    /// How long a link to a request without a deadline works (a request with one: until
    /// its deadline).
    #[arg(long, env = "TOLLGATE_LINK_LIFETIME", default_value = "7d", value_parser = tollgate_bootstrap::config::parse_positive_duration)]
    pub link_lifetime: Duration,

    /// The address approvers reach this server at, e.g. `https://tollgate.example.com`:
    /// the start of every link. Default: the scheme and host of the request that made
    /// the link.
    #[arg(long, env = "TOLLGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl Default for LinkArgs {
    /// The flags' defaults: the key file in the data directory, a week's overlap, links
    /// that work a week, addresses from the request.
    fn default() -> Self {
        Self {
            link_key_file: None,
            link_key_overlap: Duration::from_secs(7 * 86_400),
            link_lifetime: Duration::from_secs(7 * 86_400),
            public_url: None,
        }
    }
}

impl LinkArgs {
    /// The key file: `--link-key-file`, or `link.key` in `data_dir`.
    pub fn key_file(&self, data_dir: &std::path::Path) -> PathBuf {
        self.link_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("link.key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_bootstrap::DatabaseTarget;

    fn db(url: Option<&str>) -> DatabaseArgs {
        DatabaseArgs {
            data_dir: PathBuf::from("/d"),
            database_url: url.map(str::to_owned),
            database_max_connections: 4,
            database_statement_timeout: Duration::from_secs(30),
            database_lock_timeout: Duration::from_secs(10),
            database_idle_in_transaction_timeout: Duration::from_secs(60),
            migrate: tollgate_bootstrap::MigrateMode::Auto,
            max_clock_skew: Duration::from_secs(5),
            sqlite_synchronous: tollgate_bootstrap::config::SqliteSync::Normal,
        }
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            db(None).target().unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("/d/tollgate.db"))
        );
        assert_eq!(
            db(Some("sqlite:/tmp/x.db")).target().unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(
            db(Some("sqlite://rel.db?mode=rwc")).target().unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("rel.db"))
        );
        assert!(matches!(
            db(Some("postgres://u@h/db")).target().unwrap(),
            DatabaseTarget::Postgres(_)
        ));
        assert!(db(Some("mysql://x")).target().is_err());
        assert!(db(Some("sqlite:")).target().is_err());
    }
}
