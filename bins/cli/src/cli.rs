//! The command line: every command, its arguments and an example in its `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people; times relative ("2 h ago").
    Table,
    /// The API's JSON (lists: every page's items as one array); times absolute.
    Json,
}

/// `tollgate`: see what waits for you, approve it, send events, roll out workflows.
#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "The command-line tool for a Tollgate server",
    long_about = "The command-line tool for a Tollgate server: workflows, executions, approvals, \
                  events, schedules and API keys.\n\nConnection: --url / TOLLGATE_URL (default \
                  http://127.0.0.1:8080) and --key / TOLLGATE_KEY, or a profile saved by \
                  `tollgate login`.",
    after_help = "Examples:\n  tollgate login\n  tollgate approvals inbox\n  tollgate approvals approve 0193… --reason \"checked\"\n  tollgate events send order.created --data '{\"total\": 25000}'\n\nExit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict or refused, 5 cannot connect."
)]
pub struct Cli {
    /// The server's base URL.
    #[arg(long, env = "TOLLGATE_URL", global = true)]
    pub url: Option<String>,
    /// The API key (better: `tollgate login`, which stores it owner-only).
    #[arg(long, env = "TOLLGATE_KEY", global = true, hide_env_values = true)]
    pub key: Option<String>,
    /// A profile saved by `tollgate login` (default: the one used last).
    #[arg(long, short = 'p', env = "TOLLGATE_PROFILE", global = true)]
    pub profile: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// How long one call may take, e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = duration, global = true)]
    pub timeout: std::time::Duration,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Parses `30s`, `2m`, `1h30m`.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<tollgate_model::Duration>()
        .map(tollgate_model::Duration::as_std)
        .map_err(|e| e.to_string())
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Checks an API key against the server and saves it in a profile (owner-only file).
    #[command(
        after_help = "Example:\n  tollgate login --url https://tollgate.example.com --profile prod\n  echo \"$KEY\" | tollgate login   # from a script: the key on stdin"
    )]
    Login(LoginArgs),
    /// Forgets a saved profile.
    #[command(after_help = "Example:\n  tollgate logout --profile prod")]
    Logout,
    /// Shows the key in use: its name and roles.
    #[command(after_help = "Example:\n  tollgate whoami")]
    Whoami,
    /// Workflows: list, show, apply definitions, enable, disable, delete, run by hand.
    #[command(
        subcommand,
        after_help = "Example:\n  tollgate workflows apply -f big-orders.json"
    )]
    Workflows(WorkflowCommand),
    /// Executions: list, inspect, follow, pause, resume, cancel.
    #[command(
        subcommand,
        after_help = "Example:\n  tollgate executions list --status paused"
    )]
    Executions(ExecutionCommand),
    /// Approvals: your inbox, decide.
    #[command(subcommand, after_help = "Example:\n  tollgate approvals inbox")]
    Approvals(ApprovalCommand),
    /// Events: send one, look one up.
    #[command(
        subcommand,
        after_help = "Example:\n  tollgate events send payment.settled --id pay-42 --data '{\"order_id\": 7}'"
    )]
    Events(EventCommand),
    /// Schedules: cron triggers of workflows.
    #[command(
        subcommand,
        after_help = "Example:\n  tollgate schedules create big_orders --cron '0 9 * * MON-FRI' --timezone Europe/Paris"
    )]
    Schedules(ScheduleCommand),
    /// API keys (admin).
    #[command(
        subcommand,
        after_help = "Example:\n  tollgate keys create billing-service --role service"
    )]
    Keys(KeyCommand),
    /// Business records written by `create_record`/`update_record` actions.
    #[command(after_help = "Example:\n  tollgate record order 1042")]
    Record {
        /// Entity type, e.g. `order`.
        entity: String,
        /// Entity id.
        entity_id: String,
    },
    /// Notifications sent by `notify` actions, newest first.
    #[command(after_help = "Example:\n  tollgate notifications --execution 0193…")]
    Notifications {
        /// Only those of this execution.
        #[arg(long)]
        execution: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Serves Tollgate's tools to an AI agent over the Model Context Protocol on
    /// standard input and output, acting with this connection's key (docs/agents.md).
    #[command(
        after_help = "Example:\n  tollgate mcp --profile agent\n\nAs an MCP client's server entry:\n  {\"command\": \"tollgate\", \"args\": [\"mcp\", \"--profile\", \"agent\"]}\n\nNothing but MCP messages is written to standard output; problems go to standard error."
    )]
    Mcp {
        /// Longest a `wait_for_approval` call waits before it answers "still pending".
        #[arg(long, default_value = "5m", value_parser = duration)]
        wait_limit: std::time::Duration,
    },
    /// Whether the server is up and its database answers (readiness).
    #[command(after_help = "Example:\n  tollgate health")]
    Health,
    /// Prints a shell completion script.
    #[command(
        after_help = "Example:\n  tollgate completions bash > /etc/bash_completion.d/tollgate\n  tollgate completions zsh > \"${fpath[1]}/_tollgate\""
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Writes man pages (one per command) into a directory.
    #[command(after_help = "Example:\n  tollgate man /usr/local/share/man/man1")]
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
}

/// `tollgate login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Read the key from standard input without a prompt (also the default when
    /// standard input is not a terminal).
    #[arg(long)]
    pub key_stdin: bool,
}

/// A workflow by the server's id or by the author's name (with `--version` when the
/// name has several).
#[derive(Debug, Clone, Args)]
pub struct WorkflowRef {
    /// The workflow: its id (a UUID) or its `workflow_id` (e.g. `big_orders`).
    pub workflow: String,
    /// Which version, when the name has several.
    #[arg(long)]
    pub version: Option<String>,
}

/// `tollgate workflows …`.
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Lists workflows.
    #[command(after_help = "Example:\n  tollgate workflows list --enabled --tag finance")]
    List {
        /// Only enabled workflows.
        #[arg(long, conflicts_with = "disabled")]
        enabled: bool,
        /// Only disabled workflows.
        #[arg(long)]
        disabled: bool,
        /// Only workflows with this tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Shows one workflow with its steps.
    #[command(after_help = "Example:\n  tollgate workflows get big_orders --version 2")]
    Get(WorkflowRef),
    /// Lists the versions of a workflow.
    #[command(after_help = "Example:\n  tollgate workflows versions big_orders")]
    Versions {
        /// The author's `workflow_id`.
        workflow_id: String,
    },
    /// Creates each definition, or adds it as a new version, or replaces the version it
    /// names; says which and shows what changed.
    #[command(
        after_help = "Example:\n  tollgate workflows apply -f big-orders.json -f quotes.json"
    )]
    Apply {
        /// Definition files (JSON); `-` reads standard input.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
    /// Checks definition files offline, with the server's parser and messages.
    #[command(after_help = "Example:\n  tollgate workflows validate workflows/*.json")]
    Validate {
        /// Definition files (JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Lets events start the workflow.
    #[command(after_help = "Example:\n  tollgate workflows enable big_orders")]
    Enable(WorkflowRef),
    /// Stops events (and manual runs) from starting the workflow.
    #[command(after_help = "Example:\n  tollgate workflows disable big_orders")]
    Disable(WorkflowRef),
    /// Deletes a workflow version (its executions stay readable).
    #[command(after_help = "Example:\n  tollgate workflows delete big_orders --version 1")]
    Delete(WorkflowRef),
    /// Starts an execution by hand.
    #[command(
        after_help = "Example:\n  tollgate workflows execute big_orders --data '{\"order\": {\"total\": 12000}}' --wait"
    )]
    Execute {
        /// The workflow.
        #[command(flatten)]
        workflow: WorkflowRef,
        /// The trigger payload (a JSON object).
        #[command(flatten)]
        data: DataArgs,
        /// Answer once it reached its first gate or ended.
        #[arg(long)]
        wait: bool,
    },
}

/// A JSON object given inline, from a file, or on standard input.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// JSON object, inline.
    #[arg(long, conflicts_with = "data_file")]
    pub data: Option<String>,
    /// JSON object from a file (`-` reads standard input).
    #[arg(short = 'f', long = "data-file")]
    pub data_file: Option<PathBuf>,
}

/// `tollgate executions …`.
#[derive(Debug, Subcommand)]
pub enum ExecutionCommand {
    /// Lists executions, newest first.
    #[command(
        after_help = "Example:\n  tollgate executions list --status paused --reason approval --since 2h"
    )]
    List {
        /// `running`, `paused`, `waiting`, `completed`, `failed`, `cancelled` or `timed_out`.
        #[arg(long)]
        status: Option<String>,
        /// A workflow: its id or its `workflow_id` (every version).
        #[arg(long)]
        workflow: Option<String>,
        /// Why it is paused: `approval`, `manual` or `event`.
        #[arg(long)]
        reason: Option<String>,
        /// Only those started in this window (`2h`, `7d`) or since this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Shows one execution.
    #[command(after_help = "Example:\n  tollgate executions get 0193…")]
    Get {
        /// Execution id.
        id: String,
    },
    /// Its step records, in order.
    #[command(after_help = "Example:\n  tollgate executions steps 0193…")]
    Steps {
        /// Execution id.
        id: String,
    },
    /// Every attempt to wake it (approvals, events, manual resumes, timers), in order.
    #[command(after_help = "Example:\n  tollgate executions audit 0193…")]
    Audit {
        /// Execution id.
        id: String,
    },
    /// Pauses a running execution (at its next step boundary if a step is in flight).
    #[command(
        after_help = "Example:\n  tollgate executions pause 0193… --reason \"supplier outage\""
    )]
    Pause {
        /// Execution id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resumes a manually paused execution, merging data into its context.
    #[command(
        after_help = "Example:\n  tollgate executions resume 0193… --data '{\"supplier\": \"b\"}' --reason \"switched\""
    )]
    Resume {
        /// Execution id.
        id: String,
        /// Merged into the context.
        #[command(flatten)]
        data: DataArgs,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Answer once it reached its next gate or ended.
        #[arg(long)]
        wait: bool,
    },
    /// Cancels an execution that has not ended.
    #[command(
        after_help = "Example:\n  tollgate executions cancel 0193… --reason \"duplicate order\""
    )]
    Cancel {
        /// Execution id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Starts a failed or timed-out execution again, from the step that stopped it or
    /// from `--from-step` (side effects run again with new idempotency keys).
    #[command(
        after_help = "Example:\n  tollgate executions retry 0193… --reason \"ledger is back\" --wait"
    )]
    Retry {
        /// Execution id.
        id: String,
        /// Why (required; kept in the audit).
        #[arg(long)]
        reason: String,
        /// A top-level step of its pinned definition to continue from.
        #[arg(long)]
        from_step: Option<String>,
        /// Answer once it reached its next gate or ended.
        #[arg(long)]
        wait: bool,
    },
    /// Retries the failed (or timed-out) executions a filter selects, at most `--limit`
    /// per call; `--dry-run` only says what each retry would do.
    #[command(
        name = "retry-many",
        after_help = "Example:\n  tollgate executions retry-many --workflow refunds --failed-step pay --reason \"ledger is back\" --dry-run"
    )]
    RetryMany {
        /// Why (required; kept in each execution's audit).
        #[arg(long)]
        reason: String,
        /// `failed` or `timed_out`.
        #[arg(long, default_value = "failed")]
        status: String,
        /// Only executions of this workflow (its `workflow_id`).
        #[arg(long)]
        workflow: Option<String>,
        /// Only executions that stopped at this step.
        #[arg(long)]
        failed_step: Option<String>,
        /// Continue each from this step instead of the one that stopped it.
        #[arg(long)]
        from_step: Option<String>,
        /// Look at this many executions (1–100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Change nothing; list what would happen.
        #[arg(long)]
        dry_run: bool,
    },
    /// Moves a paused or waiting execution to another version of its workflow; its
    /// pending approval or wait carries over.
    #[command(
        after_help = "Example:\n  tollgate executions migrate 0193… --to-version 2 --map await_payment=payment --dry-run"
    )]
    Migrate {
        /// Execution id.
        id: String,
        /// The target version.
        #[arg(long)]
        to_version: String,
        /// `OLD=NEW`: the gate's step is called NEW in the target version (repeatable).
        #[arg(long = "map", value_parser = step_pair)]
        map: Vec<(String, String)>,
        /// Why (kept in the audit).
        #[arg(long)]
        reason: Option<String>,
        /// Change nothing; say whether the move would be accepted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Moves a workflow's paused (or waiting) executions to another version, at most
    /// `--limit` per call; `--dry-run` only says what each move would do.
    #[command(
        name = "migrate-many",
        after_help = "Example:\n  tollgate executions migrate-many --workflow orders --from-version 1 --to-version 2 --dry-run"
    )]
    MigrateMany {
        /// The workflow (its `workflow_id`).
        #[arg(long)]
        workflow: String,
        /// The target version.
        #[arg(long)]
        to_version: String,
        /// Only executions on this version.
        #[arg(long)]
        from_version: Option<String>,
        /// `paused` or `waiting`.
        #[arg(long, default_value = "paused")]
        status: String,
        /// `OLD=NEW` step renames (repeatable).
        #[arg(long = "map", value_parser = step_pair)]
        map: Vec<(String, String)>,
        /// Look at this many executions (1–100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Why (kept in each audit).
        #[arg(long)]
        reason: Option<String>,
        /// Change nothing; list what would happen.
        #[arg(long)]
        dry_run: bool,
    },
    /// Follows an execution, showing each step as it happens, until it stops at a gate
    /// or ends.
    #[command(after_help = "Example:\n  tollgate executions watch 0193… --timeout 10m")]
    Watch {
        /// Execution id.
        id: String,
        /// Give up after this long.
        #[arg(long, default_value = "10m", value_parser = duration)]
        timeout: std::time::Duration,
    },
}

/// `tollgate approvals …`.
#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {
    /// What you may decide now (pending, addressed to your roles or to you by name, not
    /// requested by you).
    #[command(after_help = "Example:\n  tollgate approvals inbox")]
    Inbox,
    /// Lists approval requests, newest first.
    #[command(after_help = "Example:\n  tollgate approvals list --status pending --role finance")]
    List {
        /// `pending`, `approved`, `rejected`, `expired`, `cancelled` or `superseded`.
        #[arg(long)]
        status: Option<String>,
        /// Addressed to this approver role.
        #[arg(long)]
        role: Option<String>,
        /// Of this execution.
        #[arg(long)]
        execution: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Shows one request with its data and decisions.
    #[command(after_help = "Example:\n  tollgate approvals get 0193…")]
    Get {
        /// Approval id.
        id: String,
    },
    /// Approves (one vote towards the quorum).
    #[command(
        after_help = "Example:\n  tollgate approvals approve 0193… --reason \"within budget\" --data '{\"approved_amount\": 9000}'"
    )]
    Approve {
        /// Approval id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Decide as this subject's delegate (a delegation from them must cover it).
        #[arg(long, value_name = "SUBJECT")]
        on_behalf_of: Option<String>,
        /// Data merged into the execution's context.
        #[command(flatten)]
        data: DataArgs,
    },
    /// Rejects (a reason is required).
    #[command(after_help = "Example:\n  tollgate approvals reject 0193… --reason \"over budget\"")]
    Reject {
        /// Approval id.
        id: String,
        /// Why.
        #[arg(long, required = true)]
        reason: String,
        /// Decide as this subject's delegate (a delegation from them must cover it).
        #[arg(long, value_name = "SUBJECT")]
        on_behalf_of: Option<String>,
        /// Data merged into the execution's context.
        #[command(flatten)]
        data: DataArgs,
    },
}

/// `tollgate events …`.
#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Sends an event: starts what it triggers and resumes what waits for it.
    #[command(
        after_help = "Examples:\n  tollgate events send order.created --id order-1042 --data '{\"total\": 25000}'\n  cat event.json | tollgate events send order.created -\n  tollgate events send payment.settled --to 0193… --data '{}'   # to one waiting execution"
    )]
    Send {
        /// The event type, e.g. `order.created`.
        event_type: String,
        /// Idempotency id: a resend changes nothing (and makes retries safe).
        #[arg(long)]
        id: Option<String>,
        /// The payload (a JSON object).
        #[command(flatten)]
        data: DataArgs,
        /// `-`: the payload (a JSON object) from standard input, like `-f -`.
        #[arg(value_name = "-", value_parser = ["-"], conflicts_with_all = ["data", "data_file"])]
        stdin: Option<String>,
        /// The sending system.
        #[arg(long)]
        source: Option<String>,
        /// Deliver to this one waiting execution only.
        #[arg(long)]
        to: Option<String>,
        /// Answer once what it started or resumed reached its next gate or ended.
        #[arg(long)]
        wait: bool,
    },
    /// Shows a stored event and what it started and resumed.
    #[command(after_help = "Example:\n  tollgate events get 0193…")]
    Get {
        /// The server's event id.
        id: String,
    },
}

/// `tollgate schedules …`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Lists schedules.
    #[command(after_help = "Example:\n  tollgate schedules list --workflow big_orders")]
    List {
        /// Only this workflow's (id, or `workflow_id` with one version).
        #[arg(long)]
        workflow: Option<String>,
    },
    /// Shows one schedule.
    #[command(after_help = "Example:\n  tollgate schedules get 0193…")]
    Get {
        /// Schedule id.
        id: String,
    },
    /// Attaches a schedule to a workflow.
    #[command(
        after_help = "Example:\n  tollgate schedules create big_orders --cron '0 9 * * MON-FRI' --timezone Europe/Paris"
    )]
    Create {
        /// The workflow.
        #[command(flatten)]
        workflow: WorkflowRef,
        /// Cron expression (5 or 6 fields, or `@hourly`…).
        #[arg(long)]
        cron: String,
        /// IANA time zone (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// `skip` (missed ticks collapse into one) or `all`.
        #[arg(long)]
        catch_up: Option<String>,
        /// Create it paused.
        #[arg(long)]
        disabled: bool,
    },
    /// The coming fire times.
    #[command(after_help = "Example:\n  tollgate schedules next 0193… --count 5")]
    Next {
        /// Schedule id.
        id: String,
        /// How many (1–100).
        #[arg(long)]
        count: Option<u32>,
    },
    /// Its ticks, newest first, with each execution's outcome.
    #[command(after_help = "Example:\n  tollgate schedules ticks 0193…")]
    Ticks {
        /// Schedule id.
        id: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Lets the schedule fire.
    #[command(after_help = "Example:\n  tollgate schedules enable 0193…")]
    Enable {
        /// Schedule id.
        id: String,
    },
    /// Pauses the schedule.
    #[command(after_help = "Example:\n  tollgate schedules disable 0193…")]
    Disable {
        /// Schedule id.
        id: String,
    },
    /// Deletes the schedule and its tick history.
    #[command(after_help = "Example:\n  tollgate schedules delete 0193…")]
    Delete {
        /// Schedule id.
        id: String,
    },
}

/// `tollgate keys …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Lists keys (never their secrets).
    #[command(after_help = "Example:\n  tollgate keys list")]
    List,
    /// Creates a key; its secret is shown once.
    #[command(after_help = "Example:\n  tollgate keys create alice --role finance --role viewer")]
    Create {
        /// Its unique name (the subject its decisions are recorded under).
        name: String,
        /// A role: admin, operator, service, viewer, or an approver role. Repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// Revokes a key at once.
    #[command(after_help = "Example:\n  tollgate keys revoke 0193…")]
    Revoke {
        /// Key id.
        id: String,
    },
}

/// `OLD=NEW` of `--map`.
fn step_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((old, new)) if !old.is_empty() && !new.is_empty() => {
            Ok((old.to_owned(), new.to_owned()))
        }
        _ => Err(format!(
            "`{text}` is not OLD=NEW (a step id, `=`, the new step id)"
        )),
    }
}
