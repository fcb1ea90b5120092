//! What the load drivers share: starting the release server on a fresh database, calling
//! it, and measuring CPU time and latency percentiles.
#![allow(dead_code)]

use std::fmt::Write as _;
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
    postgres_pids().into_iter().map(process_cpu_ms).sum()
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

/// How long this host takes for a fixed piece of single-threaded work like the
/// server's (a context-sized JSON document written and parsed 20,000 times), the best
/// of three, in ms: a run's figures can then be read against the speed of the host
/// they were taken on (the same kind of machine has been seen to differ by more than
/// twice from one hour to the next). Measured before the server starts.
pub(crate) fn reference_work_ms() -> f64 {
    let doc = serde_json::json!({
        "order": {"id": "o-12345", "total": 20345, "currency": "EUR", "lines": [
            {"sku": "A-1", "qty": 2, "price": 1999}, {"sku": "B-22", "qty": 1, "price": 16347}]},
        "approve": {"decision": "approved", "by": "manager", "at": "2026-12-07T10:00:00Z"},
        "pay": {"status": 200, "body": {}}, "customer": "c-987", "tags": ["bench", "approval"],
    });
    (0..3)
        .map(|_| {
            let began = std::time::Instant::now();
            for _ in 0..20_000 {
                let text = serde_json::to_string(std::hint::black_box(&doc)).unwrap();
                let back: Value = serde_json::from_str(&text).unwrap();
                std::hint::black_box(back);
            }
            began.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::INFINITY, f64::min)
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

/// Resident memory of process `pid` now, in MiB (Linux `VmRSS`; 0 elsewhere).
pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Bytes process `pid` caused to be written to storage so far (`write_bytes` of
/// `/proc/PID/io`: the log, the database file and checkpoints, not the page cache).
fn written_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Every process named `postgres` (Linux; none elsewhere).
fn postgres_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .collect()
}

/// One reading of everything [`Counts`] compares.
#[derive(Default)]
struct Reading {
    server_written: u64,
    database_written: u64,
    /// `sqlx::query` events in the server's log: statements sent (sqlx logs each at
    /// `debug`; its own `BEGIN`/`COMMIT` on SQLite are not among them).
    statements: Option<u64>,
    /// SQLite: `tollgate_sqlite_commits_total`.
    sqlite_commits: Option<f64>,
    /// PostgreSQL: committed transactions of the run's database, WAL records, WAL
    /// bytes, WAL syncs.
    pg: Option<[i64; 4]>,
}

/// What a phase cost per operation besides CPU, with `TOLLGATE_BENCH_COUNTS=1`: SQL
/// statements (from the server's log, when `TOLLGATE_BENCH_SERVER_LOG` is set and
/// `TOLLGATE_BENCH_LOG_LEVEL` includes `sqlx::query=debug`), write transactions
/// (SQLite's commit counter; PostgreSQL's `xact_commit`, which counts read-only
/// transactions too), syncs (system-wide `fsync`/`fdatasync` calls under `perf stat`;
/// PostgreSQL's `pg_stat_wal.wal_sync` besides), and bytes written to storage by the
/// server and the database processes.
pub(crate) struct Counts {
    pid: u32,
    base: String,
    pg_url: Option<String>,
    start: Reading,
    perf: Option<(Child, std::path::PathBuf)>,
}

impl Counts {
    /// Whether counting is on (`TOLLGATE_BENCH_COUNTS=1`).
    pub(crate) fn enabled() -> bool {
        std::env::var("TOLLGATE_BENCH_COUNTS").is_ok_and(|v| v == "1")
    }

    pub(crate) async fn start(pid: u32, base: &str, pg_url: Option<&str>) -> Self {
        let start = read(pid, base, pg_url).await;
        let file = std::env::temp_dir().join(format!("tollgate-bench-perf-{pid}.csv"));
        let perf = Command::new("perf")
            .args(["stat", "-a", "-x", ",", "-o"])
            .arg(&file)
            .args([
                "-e",
                "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .map(|child| (child, file));
        // perf needs a moment to attach its tracepoints.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Self {
            pid,
            base: base.to_owned(),
            pg_url: pg_url.map(str::to_owned),
            start,
            perf,
        }
    }

    /// "per `what`: S statements, T write transactions, Y syncs, B bytes written".
    pub(crate) async fn report(mut self, n: usize, what: &str) -> String {
        // PostgreSQL backends publish their counters at most every second when busy and
        // after ten when idle: wait them out so the phase's last second is included.
        if self.pg_url.is_some() {
            tokio::time::sleep(Duration::from_secs(11)).await;
        }
        let end = read(self.pid, &self.base, self.pg_url.as_deref()).await;
        let syncs = self.perf.take().and_then(|(child, file)| {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait_with_output();
            let text = std::fs::read_to_string(&file).ok()?;
            let _ = std::fs::remove_file(&file);
            let total: u64 = text
                .lines()
                .filter(|l| l.contains("syscalls:"))
                .filter_map(|l| l.split(',').next()?.trim().parse::<u64>().ok())
                .sum();
            Some(total)
        });
        let n = n as f64;
        let per = |v: f64| v / n;
        let mut out = format!("per {what}:");
        if let (Some(a), Some(b)) = (self.start.statements, end.statements) {
            let _ = write!(out, " {:.1} statements,", per((b - a) as f64));
        }
        if let (Some(a), Some(b)) = (self.start.sqlite_commits, end.sqlite_commits) {
            let _ = write!(out, " {:.2} write transactions,", per(b - a));
        }
        if let (Some(a), Some(b)) = (self.start.pg, end.pg) {
            let _ = write!(
                out,
                " {:.2} transactions (all, reads too), {:.1} WAL records, {:.0} WAL bytes, {:.3} WAL syncs,",
                per((b[0] - a[0]) as f64),
                per((b[1] - a[1]) as f64),
                per((b[2] - a[2]) as f64),
                per((b[3] - a[3]) as f64),
            );
        }
        if let Some(syncs) = syncs {
            let _ = write!(
                out,
                " {:.3} fsync/fdatasync calls (system-wide),",
                per(syncs as f64)
            );
        }
        let _ = write!(
            out,
            " {:.0} bytes written (server {:.0}, database {:.0})",
            per((end.server_written + end.database_written) as f64
                - (self.start.server_written + self.start.database_written) as f64),
            per(end.server_written.saturating_sub(self.start.server_written) as f64),
            per(end
                .database_written
                .saturating_sub(self.start.database_written) as f64),
        );
        out
    }
}

async fn read(pid: u32, base: &str, pg_url: Option<&str>) -> Reading {
    let statements = std::env::var("TOLLGATE_BENCH_SERVER_LOG")
        .ok()
        .and_then(|path| std::fs::read(path).ok())
        .map(|log| {
            log.windows(b"sqlx::query:".len())
                .filter(|w| *w == b"sqlx::query:")
                .count() as u64
        })
        .filter(|n| *n > 0);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sqlite_commits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_sqlite_commits_total "))
        .and_then(|v| v.trim().parse().ok());
    let pg = match pg_url {
        Some(url) => {
            let mut conn: PgConnection = url
                .parse::<PgConnectOptions>()
                .unwrap()
                .connect()
                .await
                .unwrap();
            let (xact,): (i64,) = sqlx::query_as(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            let (records, bytes, syncs): (i64, i64, i64) =
                sqlx::query_as("SELECT wal_records, wal_bytes::bigint, wal_sync FROM pg_stat_wal")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            Some([xact, records, bytes, syncs])
        }
        None => None,
    };
    Reading {
        server_written: written_bytes(pid),
        database_written: postgres_pids().into_iter().map(written_bytes).sum(),
        statements,
        sqlite_commits,
        pg,
    }
}
