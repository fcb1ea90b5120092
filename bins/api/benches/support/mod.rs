//! What the load drivers share: starting the release server on a fresh database, calling
//! it, and measuring CPU time and latency percentiles.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::ConnectOptions;

pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) admin: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// The server's data directory (its SQLite database is `tollgate.db` there).
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub(crate) async fn start(database_url: Option<&str>, extra: &[&str]) -> Server {
    let mut dir = tempfile::tempdir().unwrap();
    // `TOLLGATE_BENCH_KEEP_DATABASE` keeps the data directory (the SQLite database) too.
    if std::env::var_os("TOLLGATE_BENCH_KEEP_DATABASE").is_some() {
        dir.disable_cleanup(true);
        eprintln!("data directory kept: {}", dir.path().display());
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // `TOLLGATE_BENCH_API_BIN` runs another build of the server (A/B comparisons in one
    // sitting, on a machine whose speed drifts between sittings).
    let binary = std::env::var("TOLLGATE_BENCH_API_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tollgate-api").to_owned());
    let mut cmd = Command::new(binary);
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .env(
            "RUST_LOG",
            std::env::var("TOLLGATE_BENCH_LOG_LEVEL").unwrap_or("error".into()),
        )
        .stdout(match std::env::var("TOLLGATE_BENCH_SERVER_LOG") {
            Ok(p) => Stdio::from(std::fs::File::create(p).unwrap()),
            Err(_) => Stdio::null(),
        })
        .stderr(Stdio::inherit());
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    cmd.args(extra);
    let mut child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(res) = client.get(format!("{base}/health/ready")).send().await {
            if res.status().is_success() {
                let admin = std::fs::read_to_string(dir.path().join("admin.key"))
                    .unwrap()
                    .trim()
                    .to_owned();
                return Server {
                    child,
                    base,
                    admin,
                    dir,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("tollgate-api did not start");
}

pub(crate) async fn fresh_pg(admin_url: &str) -> (String, String) {
    let admin: PgConnectOptions = admin_url.parse().unwrap();
    let mut conn: PgConnection = admin.connect().await.unwrap();
    let name = format!("tollgate_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    (admin.database(&name).to_url_lossy().to_string(), name)
}

/// Removes the run's database (the server has stopped by now).
pub(crate) async fn drop_pg(admin_url: &str, name: &str) {
    let admin: PgConnectOptions = admin_url.parse().unwrap();
    let mut conn: PgConnection = admin.connect().await.unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await;
}

pub(crate) async fn post(
    client: &reqwest::Client,
    url: String,
    key: &str,
    body: Value,
) -> (u16, Value) {
    let res = client
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn gauge(client: &reqwest::Client, base: &str, status: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("tollgate_executions{{status=\"{status}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// CPU time of the whole machine so far (Linux `/proc/stat`, all cores), in ms: busy
/// and stolen (by the hypervisor); zeros elsewhere. Throughput on a shared 2-core
/// virtual machine is noisy, CPU time per operation much less so: it is what a change to
/// the hot path is judged by. Stolen time is not the workload's, so it is not busy time.
pub(crate) fn machine_cpu_ms() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6))
        .map(|(_, v)| v)
        .sum();
    let steal = ticks.get(7).copied().unwrap_or_default();
    (busy * 10.0, steal * 10.0)
}

/// CPU time (user and system) of process `pid` so far, in ms (Linux; 0 elsewhere).
pub(crate) fn process_cpu_ms(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which is in parentheses and may hold spaces): state is
    // the 3rd field of the line, utime the 14th and stime the 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    fields.iter().sum::<f64>() * 10.0
}

/// CPU time of every process named `postgres` so far, in ms (Linux; 0 elsewhere). A
/// backend that exits during the phase takes its time with it; the server's pooled
/// connections live through a run.
pub(crate) fn database_cpu_ms() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(process_cpu_ms)
        .sum()
}

/// CPU use over a phase: the machine's busy and stolen time, the server's own and the
/// database's.
pub(crate) struct CpuMeter {
    pid: u32,
    machine: (f64, f64),
    server: f64,
    database: f64,
}

impl CpuMeter {
    pub(crate) fn start(pid: u32) -> Self {
        Self {
            pid,
            machine: machine_cpu_ms(),
            server: process_cpu_ms(pid),
            database: database_cpu_ms(),
        }
    }

    /// "X ms CPU per op (server Y ms, database D ms), Z % stolen" for `n` operations over
    /// `wall`.
    pub(crate) fn report(&self, n: usize, wall: Duration, what: &str) -> String {
        let (busy, steal) = machine_cpu_ms();
        let server = process_cpu_ms(self.pid) - self.server;
        let database = database_cpu_ms() - self.database;
        let n = n as f64;
        let cores =
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) as f64;
        format!(
            "{:.2} ms CPU per {what} (server {:.2} ms, database {:.2} ms), {:.0} % of the cores stolen",
            (busy - self.machine.0) / n,
            server / n,
            database / n,
            (steal - self.machine.1) / (wall.as_secs_f64() * 1000.0 * cores) * 100.0,
        )
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Runs `run` once per backend named in `TOLLGATE_BENCH_BACKENDS` (`sqlite,postgres`):
/// with no database URL for SQLite (the server's own file), and with a fresh database in
/// `TOLLGATE_BENCH_DATABASE_URL`'s server for PostgreSQL, dropped afterwards unless
/// `TOLLGATE_BENCH_KEEP_DATABASE` is set.
pub(crate) async fn each_backend(mut run: impl AsyncFnMut(&'static str, Option<&str>)) {
    let backends =
        std::env::var("TOLLGATE_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    for backend in backends.split(',') {
        match backend.trim() {
            "sqlite" => run("SQLite", None).await,
            "postgres" => {
                let admin = std::env::var("TOLLGATE_BENCH_DATABASE_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let (url, name) = fresh_pg(&admin).await;
                run("PostgreSQL", Some(&url)).await;
                if std::env::var_os("TOLLGATE_BENCH_KEEP_DATABASE").is_some() {
                    eprintln!("PostgreSQL database kept: {url}");
                } else {
                    drop_pg(&admin, &name).await;
                }
            }
            other => panic!("unknown backend `{other}` in TOLLGATE_BENCH_BACKENDS"),
        }
    }
}

/// The ids of every pending approval request, paged.
pub(crate) async fn pending_approvals(
    client: &reqwest::Client,
    base: &str,
    admin: &str,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/approvals?status=pending&limit=500");
        if let Some(c) = &cursor {
            url = format!("{url}&cursor={c}");
        }
        let page: Value = client
            .get(url)
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ids
}
