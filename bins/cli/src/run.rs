//! What each command does.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde_json::{Map, Value};
use tollgate_client::wire::{
    ApprovalDto, ApprovalQuery, BulkMigrateDto, BulkRetryDto, DecisionBody, DirectEventDto,
    ExecutionDto, ExecutionQuery, MigrateDto, MigrationItemDto, NewEventDto, NotificationQuery,
    ResumeDto, RetryDto, ScheduleBody, ScheduleDto, ScheduleQuery, StepRecordDto, WorkflowDto,
    WorkflowQuery,
};
use tollgate_client::{Client, PageRequest};
use uuid::Uuid;

use crate::cli::{
    ApprovalCommand, Cli, Command, DataArgs, EventCommand, ExecutionCommand, KeyCommand, LoginArgs,
    Output, ScheduleCommand, WorkflowCommand, WorkflowRef,
};
use crate::config::{Profile, Profiles};
use crate::output::{self, brief, fields, or_dash, table, Style};

/// The default server.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// A command line that is wrong in a way clap cannot see (exit code 2).
#[derive(Debug)]
pub struct Usage(pub String);

/// Something named that does not exist, found out without the server's `404` (exit 3).
#[derive(Debug)]
pub struct NotFound(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}
impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NotFound {}

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// The exit code of a failure: 2 usage, 3 not found, 4 conflict or refused, 5 cannot
/// connect, 1 anything else.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<Usage>().is_some() {
        return 2;
    }
    if error.downcast_ref::<NotFound>().is_some() {
        return 3;
    }
    match error.downcast_ref::<tollgate_client::Error>() {
        Some(e) if e.is_unreachable() => 5,
        Some(e) if e.is_not_found() => 3,
        Some(e) if matches!(e.status(), Some(400 | 401 | 403 | 409 | 413 | 415 | 422)) => 4,
        _ => 1,
    }
}

/// Prints a failure on stderr: the message, every detail path on its own line, and the
/// request id of a server error.
pub fn report(error: &anyhow::Error, style: &Style) {
    let label = if style.color_err {
        "\u{1b}[31merror:\u{1b}[0m"
    } else {
        "error:"
    };
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        message = format!("{message}: {cause}");
    }
    eprintln!("{label} {message}");
    if let Some(e) = error.downcast_ref::<tollgate_client::Error>() {
        for d in e.details() {
            if d.path.is_empty() {
                eprintln!("  {}", d.message);
            } else {
                eprintln!("  {}: {}", d.path, d.message);
            }
        }
        if e.is_unauthorized() {
            eprintln!("  the key is missing, unknown or revoked: run `tollgate login` or set TOLLGATE_KEY");
        }
        if let (Some(id), true) = (e.request_id(), e.status().is_none_or(|s| s >= 500)) {
            eprintln!("  request id: {id} (the server's log lines carry it)");
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let style = Style::detect();
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = crate::command();
            clap_complete::generate(*shell, &mut cmd, "tollgate", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man { dir } => return man_pages(dir),
        Command::Workflows(WorkflowCommand::Validate { files }) => {
            return validate_files(files, cli.output);
        }
        Command::Login(args) => return login(&cli, args, &style).await,
        Command::Logout => return logout(&cli),
        _ => {}
    }
    let client = connect(&cli)?;
    let ctx = Ctx {
        client,
        output: cli.output,
        style,
    };
    match cli.command {
        Command::Mcp { wait_limit } => mcp(ctx.client, wait_limit).await,
        Command::Whoami => ctx.whoami().await,
        Command::Workflows(cmd) => ctx.workflows(cmd).await,
        Command::Executions(cmd) => ctx.executions(cmd).await,
        Command::Approvals(cmd) => ctx.approvals(cmd).await,
        Command::Events(cmd) => ctx.events(cmd).await,
        Command::Schedules(cmd) => ctx.schedules(cmd).await,
        Command::Keys(cmd) => ctx.keys(cmd).await,
        Command::Record { entity, entity_id } => {
            let record = ctx.client.record(&entity, &entity_id).await?;
            ctx.show(&record, || {
                fields(&[
                    ("entity", record.entity.clone()),
                    ("id", record.entity_id.clone()),
                    ("version", record.version.to_string()),
                    ("updated", ctx.style.ago(record.updated_at)),
                ]);
                println!("{}", pretty(&record.data));
            })
        }
        Command::Notifications { execution, limit } => {
            let filter = NotificationQuery {
                execution_id: execution
                    .as_deref()
                    .map(|e| parse_id(e, "execution"))
                    .transpose()?,
            };
            let page = ctx
                .client
                .notifications(&filter, &PageRequest::first(limit.clamp(1, 500) as u32))
                .await?;
            ctx.list(
                &page.items,
                |n| {
                    vec![
                        n.id.to_string(),
                        n.channel.clone(),
                        n.recipients.join(", "),
                        brief(&Value::String(n.message.clone()), 60),
                        ctx.style.status(&n.status),
                        ctx.style.ago(n.created_at),
                    ]
                },
                &["id", "channel", "to", "message", "status", "sent"],
            )
        }
        Command::Health => {
            let health = ctx.client.ready().await?;
            ctx.show(&health, || {
                fields(&[
                    ("status", ctx.style.status(&health.status)),
                    ("database", or_dash(health.database.as_deref())),
                    (
                        "overdue gates",
                        health.overdue_gates.map_or("-".into(), |n| n.to_string()),
                    ),
                    (
                        "workers",
                        health
                            .workers
                            .as_ref()
                            .map_or("-".into(), |w| w.len().to_string()),
                    ),
                ]);
                if let Some(w) = &health.warning {
                    println!("warning: {w}");
                }
            })
        }
        Command::Login(_) | Command::Logout | Command::Completions { .. } | Command::Man { .. } => {
            Ok(())
        }
    }
}

/// `tollgate mcp`: identifies the key (a missing or revoked one ends here, before any
/// tool can run), then serves MCP on stdin/stdout until the client closes them.
async fn mcp(client: tollgate_client::Client, wait_limit: std::time::Duration) -> Result<()> {
    let caller = match tollgate_mcp::Caller::identify(client).await {
        Ok(caller) => caller,
        Err(tollgate_mcp::Error::Api(e)) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "tollgate mcp: serving as `{}` (roles: {}) on stdin/stdout",
        caller.principal().subject,
        caller.principal().roles.join(", ")
    );
    let server = tollgate_mcp::Server::for_caller(caller).with_max_wait(wait_limit);
    tollgate_mcp::serve_stdio(server).await?;
    Ok(())
}

/// The client for the connection the flags, the environment or the profile name.
fn connect(cli: &Cli) -> Result<Client> {
    let profiles = Profiles::load()?;
    let name = cli.profile.clone().or_else(|| profiles.current.clone());
    let profile = match &name {
        Some(n) => match profiles.profiles.get(n) {
            Some(p) => Some(p.clone()),
            None if cli.profile.is_some() => {
                return Err(usage(format!(
                    "no profile `{n}`: `tollgate login --profile {n}` saves one"
                )))
            }
            None => None,
        },
        None => None,
    };
    let url = cli
        .url
        .clone()
        .or_else(|| profile.as_ref().map(|p| p.url.clone()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let key = cli.key.clone().or_else(|| {
        // A profile's key belongs to its server: not sent to another URL.
        profile
            .as_ref()
            .filter(|p| cli.url.is_none() || cli.url.as_deref() == Some(p.url.as_str()))
            .map(|p| p.key.clone())
    });
    let mut builder = Client::builder(url)
        .timeout(cli.timeout)
        .user_agent(concat!("tollgate-cli/", env!("CARGO_PKG_VERSION")));
    if let Some(key) = key {
        builder = builder.key(key);
    }
    builder.build().map_err(|e| usage(e.to_string()))
}

async fn login(cli: &Cli, args: &LoginArgs, style: &Style) -> Result<()> {
    let url = cli.url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
    let key = match &cli.key {
        Some(k) => k.clone(),
        None if args.key_stdin || !std::io::stdin().is_terminal() => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the key from standard input")?;
            line
        }
        None => rpassword::prompt_password(format!("API key for {url}: "))
            .context("cannot read the key")?,
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(usage("no key given"));
    }
    let client = Client::builder(&url)
        .key(&key)
        .timeout(cli.timeout)
        .build()
        .map_err(|e| usage(e.to_string()))?;
    let me = client.whoami().await?;
    let name = cli.profile.clone().unwrap_or_else(|| "default".to_owned());
    let mut profiles = Profiles::load()?;
    profiles.profiles.insert(
        name.clone(),
        Profile {
            url: url.clone(),
            key,
        },
    );
    profiles.current = Some(name.clone());
    let path = profiles.save()?;
    println!(
        "logged in to {url} as {} ({}); profile `{name}` saved in {}",
        style.bold(&me.name),
        me.roles.join(", "),
        path.display()
    );
    Ok(())
}

fn logout(cli: &Cli) -> Result<()> {
    let mut profiles = Profiles::load()?;
    let name = cli
        .profile
        .clone()
        .or_else(|| profiles.current.clone())
        .unwrap_or_else(|| "default".to_owned());
    if profiles.profiles.remove(&name).is_none() {
        return Err(anyhow::Error::new(NotFound(format!("no profile `{name}`"))));
    }
    if profiles.current.as_deref() == Some(name.as_str()) {
        profiles.current = profiles.profiles.keys().next().cloned();
    }
    profiles.save()?;
    println!("profile `{name}` removed");
    Ok(())
}

fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = 0;
    // Built first, so that every subcommand carries the global options (--url, --key, …).
    let mut root = crate::command();
    root.build();
    let mut pending = vec![(String::from("tollgate"), root)];
    while let Some((name, cmd)) = pending.pop() {
        let cmd = cmd
            .display_name(name.clone())
            .bin_name(name.replace('-', " "));
        for sub in cmd.get_subcommands() {
            pending.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
    }
    println!("{written} man pages written to {}", dir.display());
    Ok(())
}

/// Reads a definition file (`-`: standard input) as JSON, errors naming the file.
fn read_json_file(path: &Path) -> Result<(String, Value)> {
    let (name, text) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        ("<stdin>".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        (path.display().to_string(), text)
    };
    let value = serde_json::from_str(&text).map_err(|e| {
        usage(format!(
            "{name} is not JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        ))
    })?;
    Ok((name, value))
}

fn validate_files(files: &[PathBuf], output: Output) -> Result<()> {
    let mut invalid = 0;
    let mut results = Vec::new();
    for path in files {
        let (name, doc) = read_json_file(path)?;
        let report = match tollgate_model::load(&doc) {
            Ok(loaded) => tollgate_model::Report {
                errors: Vec::new(),
                warnings: loaded.warnings,
            },
            Err(report) => report,
        };
        if !report.is_valid() {
            invalid += 1;
        }
        if output == Output::Json {
            results.push(serde_json::json!({
                "file": name,
                "valid": report.is_valid(),
                "errors": report.errors.iter().map(|p| serde_json::json!({"path": p.path, "message": p.message})).collect::<Vec<_>>(),
                "warnings": report.warnings.iter().map(|p| serde_json::json!({"path": p.path, "message": p.message})).collect::<Vec<_>>(),
            }));
            continue;
        }
        if report.is_valid() {
            println!("{name}: valid");
        } else {
            println!("{name}: {} error(s)", report.errors.len());
        }
        for p in &report.errors {
            println!("  error   {}: {}", display_path(&p.path), p.message);
        }
        for p in &report.warnings {
            println!("  warning {}: {}", display_path(&p.path), p.message);
        }
    }
    if output == Output::Json {
        output::json(&results)?;
    }
    if invalid > 0 {
        Err(anyhow::Error::new(Usage(format!(
            "{invalid} of {} definition(s) invalid",
            files.len()
        ))))
    } else {
        Ok(())
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "(document)"
    } else {
        path
    }
}

/// Parses an id argument; a usage error naming what it should be.
fn parse_id(text: &str, what: &str) -> Result<Uuid> {
    Uuid::parse_str(text.trim()).map_err(|_| {
        let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        usage(format!(
            "`{text}` is not {article} {what} id (a UUID such as 0193a5c2-…)"
        ))
    })
}

/// The JSON object of `--data`/`--data-file`, or an empty one.
fn data_object(args: &DataArgs) -> Result<Value> {
    let value = match (&args.data, &args.data_file) {
        (Some(text), _) => serde_json::from_str(text)
            .map_err(|e| usage(format!("--data is not JSON (column {}): {e}", e.column())))?,
        (None, Some(path)) => read_json_file(path)?.1,
        (None, None) => return Ok(Value::Object(Map::new())),
    };
    if !value.is_object() {
        return Err(usage("the data must be a JSON object ({…})"));
    }
    Ok(value)
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// What every command needs.
struct Ctx {
    client: Client,
    output: Output,
    style: Style,
}

impl Ctx {
    /// One resource: its JSON, or what `human` prints.
    fn show(&self, value: &impl serde::Serialize, human: impl FnOnce()) -> Result<()> {
        match self.output {
            Output::Json => output::json(value),
            Output::Table => {
                human();
                Ok(())
            }
        }
    }

    /// A list: a JSON array, or a table of `row`s.
    fn list<T: serde::Serialize>(
        &self,
        items: &[T],
        row: impl Fn(&T) -> Vec<String>,
        headers: &[&str],
    ) -> Result<()> {
        match self.output {
            Output::Json => output::json(&items),
            Output::Table => {
                table(headers, items.iter().map(row).collect());
                Ok(())
            }
        }
    }

    async fn whoami(&self) -> Result<()> {
        let me = self.client.whoami().await?;
        self.show(&me, || {
            fields(&[
                ("name", me.name.clone()),
                ("roles", me.roles.join(", ")),
                ("server", self.client.base_url().to_owned()),
            ]);
        })
    }

    /// The id of a workflow named by id, or by `workflow_id` (+ `--version`).
    async fn resolve_workflow(&self, r: &WorkflowRef) -> Result<Uuid> {
        if let Ok(id) = Uuid::parse_str(&r.workflow) {
            return Ok(id);
        }
        let versions = self.client.workflow_versions(&r.workflow).await?;
        let matching: Vec<&WorkflowDto> = versions
            .iter()
            .filter(|w| r.version.as_ref().is_none_or(|v| &w.version == v))
            .collect();
        match matching.as_slice() {
            [one] => Ok(one.id),
            [] if versions.is_empty() => Err(anyhow::Error::new(NotFound(format!(
                "no workflow `{}`",
                r.workflow
            )))),
            [] => Err(anyhow::Error::new(NotFound(format!(
                "workflow `{}` has no version `{}` (it has {})",
                r.workflow,
                r.version.as_deref().unwrap_or_default(),
                version_list(&versions)
            )))),
            _ => Err(usage(format!(
                "workflow `{}` has versions {}: choose one with --version",
                r.workflow,
                version_list(&versions)
            ))),
        }
    }

    async fn workflows(&self, cmd: WorkflowCommand) -> Result<()> {
        match cmd {
            WorkflowCommand::List {
                enabled,
                disabled,
                tag,
            } => {
                let filter = WorkflowQuery {
                    enabled: if enabled {
                        Some(true)
                    } else if disabled {
                        Some(false)
                    } else {
                        None
                    },
                    workflow_id: None,
                    tag,
                };
                let items: Vec<WorkflowDto> =
                    self.client.workflows_stream(&filter).try_collect().await?;
                self.workflow_table(&items)
            }
            WorkflowCommand::Versions { workflow_id } => {
                let items = self.client.workflow_versions(&workflow_id).await?;
                if items.is_empty() {
                    return Err(anyhow::Error::new(NotFound(format!(
                        "no workflow `{workflow_id}`"
                    ))));
                }
                self.workflow_table(&items)
            }
            WorkflowCommand::Get(r) => {
                let w = self
                    .client
                    .workflow(self.resolve_workflow(&r).await?)
                    .await?;
                self.show(&w, || {
                    fields(&[
                        ("id", w.id.to_string()),
                        (
                            "workflow",
                            format!("{} (version {})", w.workflow_id, w.version),
                        ),
                        ("name", w.name.clone()),
                        ("enabled", w.enabled.to_string()),
                        ("trigger", brief(&w.trigger, 80)),
                        ("timeout", or_dash(w.timeout.as_deref())),
                        ("tags", w.tags.join(", ")),
                        ("updated", self.style.ago(w.updated_at)),
                    ]);
                    println!();
                    let steps = w.steps.as_array().cloned().unwrap_or_default();
                    table(
                        &["step", "type", "next"],
                        steps
                            .iter()
                            .map(|s| vec![brief(&s["id"], 40), brief(&s["type"], 20), step_next(s)])
                            .collect(),
                    );
                })
            }
            WorkflowCommand::Apply { files } => {
                for path in &files {
                    self.apply(path).await?;
                }
                Ok(())
            }
            WorkflowCommand::Validate { .. } => Ok(()),
            WorkflowCommand::Enable(r) => {
                let w = self
                    .client
                    .enable_workflow(self.resolve_workflow(&r).await?)
                    .await?;
                self.show(&w, || {
                    println!("{} version {} enabled", w.workflow_id, w.version);
                })
            }
            WorkflowCommand::Disable(r) => {
                let w = self
                    .client
                    .disable_workflow(self.resolve_workflow(&r).await?)
                    .await?;
                self.show(&w, || {
                    println!("{} version {} disabled", w.workflow_id, w.version);
                })
            }
            WorkflowCommand::Delete(r) => {
                let id = self.resolve_workflow(&r).await?;
                let w = self.client.workflow(id).await?;
                self.client.delete_workflow(id).await?;
                self.show(&serde_json::json!({"deleted": id}), || {
                    println!(
                        "{} version {} deleted (its executions stay readable)",
                        w.workflow_id, w.version
                    );
                })
            }
            WorkflowCommand::Execute {
                workflow,
                data,
                wait,
            } => {
                let id = self.resolve_workflow(&workflow).await?;
                let e = self
                    .client
                    .execute_workflow(id, data_object(&data)?, wait)
                    .await?;
                self.execution_summary(&e)
            }
        }
    }

    fn workflow_table(&self, items: &[WorkflowDto]) -> Result<()> {
        self.list(
            items,
            |w| {
                vec![
                    w.workflow_id.clone(),
                    w.version.clone(),
                    if w.enabled {
                        "enabled".to_owned()
                    } else {
                        self.style.dim("disabled")
                    },
                    brief(&w.trigger, 40),
                    self.style.ago(w.updated_at),
                    w.id.to_string(),
                ]
            },
            &["workflow", "version", "state", "trigger", "updated", "id"],
        )
    }

    /// `workflows apply` of one file.
    async fn apply(&self, path: &Path) -> Result<()> {
        let (name, doc) = read_json_file(path)?;
        let flat = doc
            .get("definition")
            .cloned()
            .unwrap_or_else(|| doc.clone());
        let (Some(workflow_id), Some(version)) = (
            flat.get("workflow_id").and_then(Value::as_str),
            flat.get("version").and_then(Value::as_str),
        ) else {
            return Err(usage(format!(
                "{name}: a definition needs `workflow_id` and `version` (strings)"
            )));
        };
        let versions = self.client.workflow_versions(workflow_id).await?;
        let same = versions.iter().find(|w| w.version == version);
        let (verb, result, before) = if let Some(existing) = same {
            let before = definition_of(existing);
            let changes = diff(&before, &flat);
            if changes.is_empty() {
                self.show(
                    &serde_json::json!({"file": name, "action": "unchanged", "workflow": existing}),
                    || println!("{name}: {workflow_id} version {version} unchanged"),
                )?;
                return Ok(());
            }
            let w = self.client.replace_workflow(existing.id, &doc).await?;
            ("replaced", w, Some(before))
        } else {
            let latest = versions.iter().max_by_key(|w| w.updated_at);
            let before = latest.map(definition_of);
            let w = self.client.create_workflow(&doc).await?;
            let verb = if versions.is_empty() {
                "created"
            } else {
                "added as a new version"
            };
            (verb, w, before)
        };
        let changes = before.as_ref().map(|b| diff(b, &flat)).unwrap_or_default();
        self.show(
            &serde_json::json!({"file": name, "action": verb.split(' ').next(), "changes": changes, "workflow": result}),
            || {
                let others: Vec<&str> = versions
                    .iter()
                    .filter(|w| w.version != version)
                    .map(|w| w.version.as_str())
                    .collect();
                print!("{name}: {workflow_id} version {version} {verb}");
                if verb != "replaced" && !others.is_empty() {
                    print!(" (other versions: {})", others.join(", "));
                }
                println!(" — id {}", result.id);
                if before.is_some() {
                    let against = if verb == "replaced" {
                        "the stored definition".to_owned()
                    } else {
                        "the latest version".to_owned()
                    };
                    if changes.is_empty() {
                        println!("  no changes from {against}");
                    } else {
                        println!("  changes from {against}:");
                        for c in &changes {
                            println!("    {c}");
                        }
                    }
                }
                for w in &result.warnings {
                    println!("  warning {}: {}", display_path(&w.path), w.message);
                }
            },
        )
    }

    async fn executions(&self, cmd: ExecutionCommand) -> Result<()> {
        match cmd {
            ExecutionCommand::List {
                status,
                workflow,
                reason,
                since,
                limit,
            } => {
                let since = since
                    .as_deref()
                    .map(|s| parse_since(s, self.style.now))
                    .transpose()?;
                let filter = ExecutionQuery {
                    status,
                    workflow_id: workflow,
                    workflow_key: None,
                    paused_reason: reason,
                    approver_role: None,
                };
                let stream = self.client.executions_stream(&filter);
                // Newest first: the first one older than `since` ends the list.
                let items = take_while_since(stream, since, limit).await?;
                self.list(
                    &items,
                    |e| {
                        vec![
                            e.id.to_string(),
                            format!("{}@{}", e.workflow_key, e.workflow_version),
                            self.style.status(&e.status),
                            or_dash(e.result.as_deref()),
                            gate_of(e),
                            self.style.ago(e.started_at),
                        ]
                    },
                    &["id", "workflow", "status", "result", "at", "started"],
                )
            }
            ExecutionCommand::Get { id } => {
                let e = self.client.execution(parse_id(&id, "execution")?).await?;
                self.show(&e, || self.execution_fields(&e))
            }
            ExecutionCommand::Steps { id } => {
                let trace = self.client.trace(parse_id(&id, "execution")?).await?;
                self.list(&trace.steps, |s| self.step_row(s), STEP_HEADERS)
            }
            ExecutionCommand::Audit { id } => {
                let audit = self
                    .client
                    .resume_requests(parse_id(&id, "execution")?)
                    .await?;
                self.list(
                    &audit,
                    |r| {
                        vec![
                            self.style.ago(r.requested_at),
                            r.trigger.clone(),
                            or_dash(r.actor.as_deref()),
                            self.style.status(&r.outcome),
                            brief(&r.data, 40),
                            or_dash(r.error.as_deref()),
                        ]
                    },
                    &["when", "trigger", "by", "outcome", "data", "error"],
                )
            }
            ExecutionCommand::Pause { id, reason } => {
                let e = self
                    .client
                    .pause(parse_id(&id, "execution")?, reason.as_deref())
                    .await?;
                self.execution_summary(&e)
            }
            ExecutionCommand::Resume {
                id,
                data,
                reason,
                wait,
            } => {
                let body = ResumeDto {
                    data: data_object(&data)?,
                    reason,
                };
                let e = self
                    .client
                    .resume(parse_id(&id, "execution")?, &body, wait)
                    .await?;
                self.execution_summary(&e)
            }
            ExecutionCommand::Cancel { id, reason } => {
                let e = self
                    .client
                    .cancel(parse_id(&id, "execution")?, reason.as_deref())
                    .await?;
                self.execution_summary(&e)
            }
            ExecutionCommand::Retry {
                id,
                reason,
                from_step,
                wait,
            } => {
                let body = RetryDto { from_step, reason };
                let e = self
                    .client
                    .retry(parse_id(&id, "execution")?, &body, wait)
                    .await?;
                self.execution_summary(&e)
            }
            ExecutionCommand::RetryMany {
                reason,
                status,
                workflow,
                failed_step,
                from_step,
                limit,
                dry_run,
            } => {
                let body = BulkRetryDto {
                    status: Some(status),
                    workflow_id: workflow,
                    failed_step,
                    from_step,
                    reason,
                    limit: Some(limit),
                    dry_run,
                    cursor: None,
                };
                let report = self.client.retry_many(&body).await?;
                self.list(
                    &report.items,
                    |item| {
                        vec![
                            item.execution_id.to_string(),
                            self.style.status(&item.outcome),
                            or_dash(item.from_step.as_deref()),
                            or_dash(item.reason.as_deref()),
                        ]
                    },
                    &["id", "outcome", "from step", "reason"],
                )
            }
            ExecutionCommand::Migrate {
                id,
                to_version,
                map,
                reason,
                dry_run,
            } => {
                let body = MigrateDto {
                    to_version,
                    step_map: map.into_iter().collect(),
                    dry_run,
                    reason,
                };
                let item = self
                    .client
                    .migrate(parse_id(&id, "execution")?, &body)
                    .await?;
                self.list(&[item], |i| self.migration_row(i), MIGRATION_HEADERS)
            }
            ExecutionCommand::MigrateMany {
                workflow,
                to_version,
                from_version,
                status,
                map,
                limit,
                reason,
                dry_run,
            } => {
                let body = BulkMigrateDto {
                    workflow_id: workflow,
                    from_version,
                    to_version,
                    status: Some(status),
                    step_map: map.into_iter().collect(),
                    limit: Some(limit),
                    dry_run,
                    cursor: None,
                    reason,
                };
                let report = self.client.migrate_many(&body).await?;
                self.list(&report.items, |i| self.migration_row(i), MIGRATION_HEADERS)
            }
            ExecutionCommand::Watch { id, timeout } => {
                self.watch(parse_id(&id, "execution")?, timeout).await
            }
        }
    }

    fn migration_row(&self, i: &MigrationItemDto) -> Vec<String> {
        vec![
            i.execution_id.to_string(),
            self.style.status(&i.outcome),
            i.from_version.clone(),
            or_dash(i.gate_step.as_deref()),
            or_dash(i.reason.as_deref()),
        ]
    }

    fn execution_fields(&self, e: &ExecutionDto) {
        let mut rows = vec![
            ("id", e.id.to_string()),
            (
                "workflow",
                format!("{} version {}", e.workflow_key, e.workflow_version),
            ),
            ("status", self.style.status(&e.status)),
            ("result", or_dash(e.result.as_deref())),
            ("at", gate_of(e)),
            ("trigger", e.trigger_event.clone()),
            ("requested by", or_dash(e.requested_by.as_deref())),
            ("started", self.style.ago(e.started_at)),
            ("ended", self.style.ago_opt(e.completed_at)),
        ];
        if let Some(a) = e.approval_id {
            rows.push(("approval", a.to_string()));
        }
        if let Some(d) = e.deadline {
            rows.push(("deadline", self.style.ago(d)));
        }
        if let Some(err) = &e.error {
            rows.push(("error", format!("{}: {}", err.kind, err.message)));
        }
        fields(&rows);
        println!("context:\n{}", pretty(&e.context));
    }

    fn execution_summary(&self, e: &ExecutionDto) -> Result<()> {
        self.show(e, || {
            let mut line = format!("execution {} {}", e.id, self.style.status(&e.status));
            if let Some(r) = &e.result {
                let _ = write!(line, " ({r})");
            }
            let gate = gate_of(e);
            if gate != "-" {
                let _ = write!(line, " at {gate}");
            }
            println!("{line}");
            if let Some(a) = e.approval_id {
                println!("  approval {a}");
            }
            if let Some(err) = &e.error {
                println!("  {}: {}", err.kind, err.message);
            }
        })
    }

    fn step_row(&self, s: &StepRecordDto) -> Vec<String> {
        vec![
            s.started_at.format("%H:%M:%S").to_string(),
            s.step_id.clone(),
            s.step_type.clone(),
            self.style.status(&s.status),
            format!("{}/{}", s.visit, s.attempt),
            s.duration_ms.map_or("-".into(), |d| format!("{d} ms")),
            s.error
                .as_ref()
                .map_or_else(|| brief(&s.output, 50), |e| e.message.clone()),
        ]
    }

    /// Follows an execution until it is no longer running: each step record once when
    /// it settles (and once when it starts, if seen running).
    async fn watch(&self, id: Uuid, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen: BTreeSet<(Uuid, String)> = BTreeSet::new();
        let mut pause = Duration::from_millis(100);
        if self.output == Output::Table {
            println!("{}", watch_line(self, None));
        }
        loop {
            let trace = self.client.trace(id).await?;
            for s in &trace.steps {
                if seen.insert((s.id, s.status.clone())) {
                    match self.output {
                        Output::Json => println!("{}", serde_json::to_string(s)?),
                        Output::Table => println!("{}", watch_line(self, Some(s))),
                    }
                }
            }
            let e = &trace.execution;
            if e.status != "running" {
                return match self.output {
                    Output::Json => {
                        println!("{}", serde_json::to_string(e)?);
                        Ok(())
                    }
                    Output::Table => self.execution_summary(e),
                };
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("execution {id} still running after {}", humanize(timeout));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn approvals(&self, cmd: ApprovalCommand) -> Result<()> {
        match cmd {
            ApprovalCommand::Inbox => {
                let items: Vec<ApprovalDto> = self.client.inbox().try_collect().await?;
                self.approval_table(&items)
            }
            ApprovalCommand::List {
                status,
                role,
                execution,
                limit,
            } => {
                let filter = ApprovalQuery {
                    status,
                    role,
                    execution_id: execution
                        .as_deref()
                        .map(|e| parse_id(e, "execution"))
                        .transpose()?,
                    mine: false,
                    ..ApprovalQuery::default()
                };
                let items: Vec<ApprovalDto> = self
                    .client
                    .approvals_stream(&filter)
                    .take(limit)
                    .try_collect()
                    .await?;
                self.approval_table(&items)
            }
            ApprovalCommand::Get { id } => {
                let a = self.client.approval(parse_id(&id, "approval")?).await?;
                self.show(&a, || {
                    let mut rows = vec![
                        ("id", a.id.to_string()),
                        ("status", self.style.status(&a.status)),
                        ("execution", a.execution_id.to_string()),
                        ("step", a.step_id.clone()),
                        ("what", entity_of(&a)),
                        ("reason", or_dash(a.reason.as_deref())),
                        ("approvers", approvers_of(&a)),
                        ("quorum", format!("{} of {}", approvals_of(&a), a.required)),
                        ("requested by", or_dash(a.requested_by.as_deref())),
                        ("requested", self.style.ago(a.requested_at)),
                        ("deadline", self.style.ago_opt(a.expires_at)),
                    ];
                    if let Some(d) = a.decided_at {
                        rows.push(("decided", self.style.ago(d)));
                    }
                    fields(&rows);
                    if a.data.as_object().is_some_and(|m| !m.is_empty()) {
                        println!("data:\n{}", pretty(&a.data));
                    }
                    for d in &a.decisions {
                        println!(
                            "  {} by {} {}{}",
                            self.style.status(&past(&d.decision)),
                            d.decided_by,
                            self.style.ago(d.decided_at),
                            d.reason
                                .as_deref()
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        );
                    }
                })
            }
            ApprovalCommand::Approve {
                id,
                reason,
                on_behalf_of,
                data,
            } => {
                let body = DecisionBody {
                    reason,
                    data: data_object(&data)?,
                    on_behalf_of,
                };
                let d = self
                    .client
                    .approve(parse_id(&id, "approval")?, &body, true)
                    .await?;
                self.decided(&d)
            }
            ApprovalCommand::Reject {
                id,
                reason,
                on_behalf_of,
                data,
            } => {
                let body = DecisionBody {
                    reason: Some(reason),
                    data: data_object(&data)?,
                    on_behalf_of,
                };
                let d = self
                    .client
                    .reject(parse_id(&id, "approval")?, &body, true)
                    .await?;
                self.decided(&d)
            }
        }
    }

    fn decided(&self, d: &tollgate_client::wire::DecidedDto) -> Result<()> {
        self.show(d, || {
            let a = &d.approval;
            println!(
                "approval {} {} ({} of {} approvals); execution {} {}{}",
                a.id,
                self.style.status(&a.status),
                approvals_of(a),
                a.required,
                d.execution.id,
                self.style.status(&d.execution.status),
                d.execution
                    .result
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        })
    }

    fn approval_table(&self, items: &[ApprovalDto]) -> Result<()> {
        self.list(
            items,
            |a| {
                vec![
                    a.id.to_string(),
                    entity_of(a),
                    a.step_id.clone(),
                    self.style.status(&a.status),
                    format!("{}/{}", approvals_of(a), a.required),
                    approvers_of(a),
                    or_dash(a.requested_by.as_deref()),
                    self.style.ago(a.requested_at),
                    self.style.ago_opt(a.expires_at),
                ]
            },
            &[
                "id",
                "what",
                "step",
                "status",
                "votes",
                "approvers",
                "by",
                "requested",
                "due",
            ],
        )
    }

    async fn events(&self, cmd: EventCommand) -> Result<()> {
        match cmd {
            EventCommand::Send {
                event_type,
                id,
                mut data,
                stdin,
                source,
                to,
                wait,
            } => {
                if stdin.is_some() {
                    data.data_file = Some(PathBuf::from("-"));
                }
                let payload = data_object(&data)?;
                if let Some(to) = to {
                    let body = DirectEventDto {
                        event_type,
                        payload,
                        event_id: id,
                    };
                    let e = self
                        .client
                        .deliver_event(parse_id(&to, "execution")?, &body, wait)
                        .await?;
                    return self.execution_summary(&e);
                }
                let mut event = NewEventDto::new(event_type, payload);
                event.event_id = id;
                event.source = source;
                let accepted = self.client.send_event(&event, wait).await?;
                self.show(&accepted, || {
                    println!(
                        "event {} accepted: started {}, resumed {}{}",
                        accepted.id,
                        accepted.started.len(),
                        accepted.resumed.len(),
                        if accepted.idempotent {
                            ""
                        } else {
                            " (no --id: a resend would start its workflows again)"
                        }
                    );
                    if accepted.started.is_empty() && accepted.resumed.is_empty() {
                        println!("  nobody listens to `{}`", event.event_type);
                    }
                    let states: Vec<(Uuid, String, Option<String>)> = match &accepted.executions {
                        Some(list) => list
                            .iter()
                            .map(|e| (e.id, e.status.clone(), e.result.clone()))
                            .collect(),
                        None => accepted
                            .started
                            .iter()
                            .chain(&accepted.resumed)
                            .map(|id| (*id, "running".to_owned(), None))
                            .collect(),
                    };
                    for (id, status, result) in states {
                        println!(
                            "  execution {id} {}{}",
                            self.style.status(&status),
                            result.map(|r| format!(" ({r})")).unwrap_or_default()
                        );
                    }
                })
            }
            EventCommand::Get { id } => {
                let e = self.client.event(parse_id(&id, "event")?).await?;
                self.show(&e, || {
                    fields(&[
                        ("id", e.id.to_string()),
                        ("type", e.event_type.clone()),
                        ("event id", or_dash(e.event_id.as_deref())),
                        ("source", or_dash(e.source.as_deref())),
                        ("sent by", or_dash(e.submitted_by.as_deref())),
                        ("received", self.style.ago(e.received_at)),
                        ("started", ids(&e.started)),
                        ("resumed", ids(&e.resumed)),
                    ]);
                    println!("payload:\n{}", pretty(&e.payload));
                })
            }
        }
    }

    async fn schedules(&self, cmd: ScheduleCommand) -> Result<()> {
        match cmd {
            ScheduleCommand::List { workflow } => {
                let workflow_id = match workflow {
                    Some(w) => Some(
                        self.resolve_workflow(&WorkflowRef {
                            workflow: w,
                            version: None,
                        })
                        .await?,
                    ),
                    None => None,
                };
                let items: Vec<ScheduleDto> = self
                    .client
                    .schedules_stream(&ScheduleQuery { workflow_id })
                    .try_collect()
                    .await?;
                self.list(
                    &items,
                    |s| {
                        vec![
                            s.id.to_string(),
                            s.cron.clone(),
                            s.timezone.clone(),
                            if s.enabled {
                                "enabled".to_owned()
                            } else {
                                self.style.dim("disabled")
                            },
                            self.style.ago_opt(s.next_fire_at),
                            self.style.ago_opt(s.last_fired_at),
                            s.workflow_id.to_string(),
                        ]
                    },
                    &["id", "cron", "zone", "state", "next", "last", "workflow"],
                )
            }
            ScheduleCommand::Get { id } => {
                let s = self.client.schedule(parse_id(&id, "schedule")?).await?;
                self.schedule_fields(&s)
            }
            ScheduleCommand::Create {
                workflow,
                cron,
                timezone,
                catch_up,
                disabled,
            } => {
                let id = self.resolve_workflow(&workflow).await?;
                let body = ScheduleBody {
                    cron,
                    timezone,
                    enabled: Some(!disabled),
                    catch_up: catch_up
                        .map(|c| serde_json::from_value(Value::String(c.clone())))
                        .transpose()
                        .map_err(|_| usage("--catch-up is `skip` or `all`"))?,
                };
                let s = self.client.create_schedule(id, &body).await?;
                self.schedule_fields(&s)
            }
            ScheduleCommand::Next { id, count } => {
                let next = self
                    .client
                    .schedule_next(parse_id(&id, "schedule")?, count)
                    .await?;
                self.list(
                    &next.next,
                    |t| vec![t.to_rfc3339(), self.style.ago(*t)],
                    &["fires at", "in"],
                )
            }
            ScheduleCommand::Ticks { id, limit } => {
                let page = self
                    .client
                    .schedule_ticks(
                        parse_id(&id, "schedule")?,
                        &PageRequest::first(limit.clamp(1, 500) as u32),
                    )
                    .await?;
                self.list(
                    &page.items,
                    |t| {
                        vec![
                            t.tick_time.to_rfc3339(),
                            self.style.status(&t.status),
                            t.execution_id.map_or("-".into(), |i| i.to_string()),
                            t.outcome
                                .as_deref()
                                .map_or("-".into(), |o| self.style.status(o)),
                            or_dash(t.error.as_deref()),
                        ]
                    },
                    &["tick", "status", "execution", "outcome", "error"],
                )
            }
            ScheduleCommand::Enable { id } => self.set_schedule(&id, true).await,
            ScheduleCommand::Disable { id } => self.set_schedule(&id, false).await,
            ScheduleCommand::Delete { id } => {
                let id = parse_id(&id, "schedule")?;
                self.client.delete_schedule(id).await?;
                self.show(&serde_json::json!({"deleted": id}), || {
                    println!("schedule {id} deleted");
                })
            }
        }
    }

    /// Enables or disables a schedule, keeping the rest of it.
    async fn set_schedule(&self, id: &str, enable: bool) -> Result<()> {
        let id = parse_id(id, "schedule")?;
        let s = self.client.schedule(id).await?;
        let body = ScheduleBody {
            cron: s.cron,
            timezone: Some(s.timezone),
            enabled: Some(enable),
            catch_up: serde_json::from_value(Value::String(s.catch_up)).ok(),
        };
        let s = self.client.replace_schedule(id, &body).await?;
        self.schedule_fields(&s)
    }

    fn schedule_fields(&self, s: &ScheduleDto) -> Result<()> {
        self.show(s, || {
            fields(&[
                ("id", s.id.to_string()),
                ("workflow", s.workflow_id.to_string()),
                ("cron", format!("{} ({})", s.cron, s.timezone)),
                (
                    "state",
                    if s.enabled { "enabled" } else { "disabled" }.to_owned(),
                ),
                ("catch up", s.catch_up.clone()),
                ("next", self.style.ago_opt(s.next_fire_at)),
                ("last", self.style.ago_opt(s.last_fired_at)),
            ]);
        })
    }

    async fn keys(&self, cmd: KeyCommand) -> Result<()> {
        match cmd {
            KeyCommand::List => {
                let items: Vec<_> = self.client.api_keys_stream().try_collect().await?;
                self.list(
                    &items,
                    |k| {
                        vec![
                            k.id.to_string(),
                            k.name.clone(),
                            k.roles.join(", "),
                            self.style.ago(k.created_at),
                        ]
                    },
                    &["id", "name", "roles", "created"],
                )
            }
            KeyCommand::Create { name, roles } => {
                let k = self.client.create_api_key(&name, &roles).await?;
                self.show(&k, || {
                    println!(
                        "key `{}` created ({}), id {}",
                        k.name,
                        k.roles.join(", "),
                        k.id
                    );
                    println!("{}", k.key);
                    eprintln!("store it now: it is never shown again");
                })
            }
            KeyCommand::Revoke { id } => {
                let id = parse_id(&id, "key")?;
                self.client.revoke_api_key(id).await?;
                self.show(&serde_json::json!({"revoked": id}), || {
                    println!("key {id} revoked");
                })
            }
        }
    }
}

/// One line of `executions watch` in fixed columns (lines appear one at a time, so the
/// table cannot be measured first); `None` is the header.
fn watch_line(ctx: &Ctx, step: Option<&StepRecordDto>) -> String {
    let Some(s) = step else {
        return format!(
            "{:<8}  {:<24}  {:<10}  {:<9}  {:<5}  {:<8}  OUTPUT",
            "AT", "STEP", "TYPE", "STATUS", "VISIT", "TOOK"
        );
    };
    let row = ctx.step_row(s);
    // Pad before coloring: escape codes have no width.
    let status = format!("{:<9}", s.status);
    format!(
        "{:<8}  {:<24}  {:<10}  {}  {:<5}  {:<8}  {}",
        row[0],
        row[1],
        row[2],
        status.replacen(&s.status, &ctx.style.status(&s.status), 1),
        row[4],
        row[5],
        row[6]
    )
}

/// Columns of a migration's answer.
const MIGRATION_HEADERS: &[&str] = &["id", "outcome", "from version", "gate step", "reason"];

const STEP_HEADERS: &[&str] = &["at", "step", "type", "status", "visit", "took", "output"];

fn humanize(d: Duration) -> String {
    tollgate_model::Duration::from_millis(d.as_millis() as u64).to_string()
}

fn ids(list: &[Uuid]) -> String {
    if list.is_empty() {
        "-".to_owned()
    } else {
        list.iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn past(decision: &str) -> String {
    match decision {
        "approve" => "approved".to_owned(),
        "reject" => "rejected".to_owned(),
        other => other.to_owned(),
    }
}

fn approvals_of(a: &ApprovalDto) -> usize {
    a.decisions
        .iter()
        .filter(|d| d.decision == "approve")
        .count()
}

fn approvers_of(a: &ApprovalDto) -> String {
    let mut who: Vec<String> = a
        .approver_roles
        .iter()
        .map(|r| format!("role:{r}"))
        .collect();
    who.extend(a.approver_users.iter().cloned());
    if who.is_empty() {
        "-".to_owned()
    } else {
        who.join(", ")
    }
}

fn entity_of(a: &ApprovalDto) -> String {
    let present = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    match (present(&a.entity_type), present(&a.entity_id)) {
        (Some(t), Some(i)) => format!("{t} {i}"),
        (Some(t), None) => t,
        (None, Some(i)) => i,
        (None, None) => "-".to_owned(),
    }
}

/// Where an execution stands: the gate it waits at, or `-`.
fn gate_of(e: &ExecutionDto) -> String {
    match (&e.paused_reason, &e.paused_step_id) {
        (Some(reason), Some(step)) => match &e.wait {
            Some(w) => format!(
                "{step} ({reason}: {})",
                w.event.as_deref().unwrap_or("event")
            ),
            None => format!("{step} ({reason})"),
        },
        _ => "-".to_owned(),
    }
}

/// Where a step goes next, for `workflows get`.
fn step_next(step: &Value) -> String {
    let mut out = Vec::new();
    for key in [
        "next",
        "on_true",
        "on_false",
        "on_approve",
        "on_reject",
        "on_timeout",
        "on_event",
    ] {
        if let Some(target) = step.get(key).and_then(Value::as_str) {
            out.push(format!("{key}: {target}"));
        }
    }
    if out.is_empty() {
        "-".to_owned()
    } else {
        out.join(", ")
    }
}

fn version_list(versions: &[WorkflowDto]) -> String {
    versions
        .iter()
        .map(|w| w.version.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The stored definition of a workflow version, in the shape an author writes.
fn definition_of(w: &WorkflowDto) -> Value {
    let mut doc = Map::new();
    doc.insert("workflow_id".into(), Value::String(w.workflow_id.clone()));
    doc.insert("version".into(), Value::String(w.version.clone()));
    doc.insert("name".into(), Value::String(w.name.clone()));
    if let Some(d) = &w.description {
        doc.insert("description".into(), Value::String(d.clone()));
    }
    doc.insert("enabled".into(), Value::Bool(w.enabled));
    doc.insert(
        "tags".into(),
        Value::Array(w.tags.iter().cloned().map(Value::String).collect()),
    );
    doc.insert("trigger".into(), w.trigger.clone());
    doc.insert("context".into(), w.context.clone());
    if let Some(t) = &w.timeout {
        doc.insert("timeout".into(), Value::String(t.clone()));
    }
    if let Some(m) = w.max_steps {
        doc.insert("max_steps".into(), Value::from(m));
    }
    if let Some(m) = &w.metadata {
        doc.insert("metadata".into(), m.clone());
    }
    if let Some(s) = &w.input_schema {
        doc.insert("input_schema".into(), s.clone());
    }
    doc.insert("strict_paths".into(), Value::Bool(w.strict_paths));
    doc.insert("steps".into(), w.steps.clone());
    Value::Object(doc)
}

/// The canonical form of a definition (as the server stores it), or the document itself
/// when it does not load (the server will say why).
fn canonical(doc: &Value) -> Value {
    match tollgate_model::load(doc) {
        Ok(loaded) => {
            let mut value =
                serde_json::to_value(&loaded.definition).unwrap_or_else(|_| doc.clone());
            if let (Some(map), Some(enabled)) = (value.as_object_mut(), doc.get("enabled")) {
                map.insert("enabled".into(), enabled.clone());
            }
            value
        }
        Err(_) => doc.clone(),
    }
}

/// What differs between two definitions: top-level fields, and steps added, removed or
/// changed (by step id).
fn diff(before: &Value, after: &Value) -> Vec<String> {
    let (before, after) = (canonical(before), canonical(after));
    let empty = Map::new();
    let (b, a) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    let mut changes = Vec::new();
    let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    for key in keys {
        if key == "steps" || key == "version" {
            continue;
        }
        let (old, new) = (b.get(key), a.get(key));
        if old != new && !(key == "enabled" && new.is_none()) {
            changes.push(format!(
                "{key}: {} → {}",
                old.map_or("-".into(), |v| brief(v, 40)),
                new.map_or("-".into(), |v| brief(v, 40))
            ));
        }
    }
    let steps = |doc: &Map<String, Value>| -> Vec<(String, Value)> {
        doc.get("steps")
            .and_then(Value::as_array)
            .map(|s| {
                s.iter()
                    .map(|step| {
                        (
                            step.get("id")
                                .and_then(Value::as_str)
                                .unwrap_or("?")
                                .to_owned(),
                            step.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (old_steps, new_steps) = (steps(b), steps(a));
    for (id, step) in &new_steps {
        match old_steps.iter().find(|(o, _)| o == id) {
            None => changes.push(format!("step {id}: added")),
            Some((_, old)) if old != step => changes.push(format!("step {id}: changed")),
            Some(_) => {}
        }
    }
    for (id, _) in &old_steps {
        if !new_steps.iter().any(|(n, _)| n == id) {
            changes.push(format!("step {id}: removed"));
        }
    }
    let order = |s: &[(String, Value)]| s.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>();
    let (old_order, new_order) = (order(&old_steps), order(&new_steps));
    let common_old: Vec<&String> = old_order.iter().filter(|i| new_order.contains(i)).collect();
    let common_new: Vec<&String> = new_order.iter().filter(|i| old_order.contains(i)).collect();
    if common_old != common_new {
        changes.push("steps reordered".to_owned());
    }
    changes
}

/// `--since`: a window (`2h`) back from now, or an RFC 3339 time.
fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let d: tollgate_model::Duration = text.parse().map_err(|_| {
        usage(format!(
            "--since `{text}` is neither a duration (`2h`, `7d`) nor an RFC 3339 time"
        ))
    })?;
    Ok(now - d.as_chrono())
}

/// The first `limit` executions of a newest-first stream started at or after `since`.
async fn take_while_since(
    stream: impl Stream<Item = tollgate_client::Result<ExecutionDto>>,
    since: Option<DateTime<Utc>>,
    limit: usize,
) -> Result<Vec<ExecutionDto>> {
    let mut stream = std::pin::pin!(stream);
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(item) = stream.next().await else {
            break;
        };
        let e = item?;
        if since.is_some_and(|s| e.started_at < s) {
            break;
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_fields_and_steps() {
        let before = serde_json::json!({"workflow_id": "w", "version": "1", "name": "W",
            "trigger": {"type": "manual"},
            "steps": [{"id": "a", "type": "action", "action": "allow"},
                      {"id": "b", "type": "action", "action": "block"}]});
        let after = serde_json::json!({"workflow_id": "w", "version": "2", "name": "W2",
            "trigger": {"type": "manual"},
            "steps": [{"id": "a", "type": "action", "action": "block"},
                      {"id": "c", "type": "action", "action": "allow"}]});
        let changes = diff(&before, &after);
        assert!(changes.contains(&"name: W → W2".to_owned()), "{changes:?}");
        assert!(
            changes.contains(&"step a: changed".to_owned()),
            "{changes:?}"
        );
        assert!(changes.contains(&"step c: added".to_owned()), "{changes:?}");
        assert!(
            changes.contains(&"step b: removed".to_owned()),
            "{changes:?}"
        );
        assert!(diff(&before, &before).is_empty());
    }

    #[test]
    fn since_takes_a_window_or_a_time() {
        let now = Utc::now();
        assert_eq!(
            parse_since("2h", now).unwrap(),
            now - chrono::TimeDelta::hours(2)
        );
        assert_eq!(
            parse_since("2026-01-02T03:04:05Z", now)
                .unwrap()
                .to_rfc3339(),
            "2026-01-02T03:04:05+00:00"
        );
        let err = parse_since("yesterday", now).unwrap_err();
        assert_eq!(exit_code(&err), 2);
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let api = |status: u16| {
            anyhow::Error::new(tollgate_client::Error::Api {
                status,
                code: "x".into(),
                message: "m".into(),
                details: vec![],
                request_id: None,
            })
        };
        assert_eq!(exit_code(&api(404)), 3);
        assert_eq!(exit_code(&api(409)), 4);
        assert_eq!(exit_code(&api(403)), 4);
        assert_eq!(exit_code(&api(500)), 1);
        let down = anyhow::Error::new(tollgate_client::Error::Connect {
            url: "u".into(),
            reason: "r".into(),
        });
        assert_eq!(exit_code(&down), 5);
        assert_eq!(exit_code(&usage("u")), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
    }
}
