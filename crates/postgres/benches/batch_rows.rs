//! How a batch statement's rows should travel to PostgreSQL, measured on the group
//! commit's row shape (23 columns, a context-sized document among them): as one `jsonb`
//! recordset (what the batch writers send), as one `json` text read by
//! `json_to_recordset`, or as one typed array per column read by `UNNEST`.
//!
//! Each form reads the same rows in a statement that changes nothing, 4,000 times per
//! batch size, in alternating blocks of 200 (so that a host whose speed drifts treats
//! the forms alike), and prints the database backend's CPU per statement, read from
//! `/proc/<pid>/stat` (the database must run on this machine). The figures and the
//! decision they led to are in `docs/benchmarks.md`.
//!
//! `TOLLGATE_BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! names the server; nothing is written to it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::types::Json;
use sqlx::ConnectOptions;
use uuid::Uuid;

/// One step commit's row, as the group commit's recordset carries it.
#[derive(Serialize)]
struct Row<'a> {
    slot: i32,
    id: Uuid,
    owner: &'a str,
    expected: i64,
    kind: &'a str,
    status: &'a str,
    context: &'a Value,
    cursor: &'a Value,
    visits: &'a Value,
    steps_run: i32,
    result: Option<&'a str>,
    expires: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    gate: Option<&'a Value>,
    gate_reason: Option<&'a str>,
    gate_deadline: Option<DateTime<Utc>>,
    gate_event: Option<&'a str>,
    gate_approval_id: Option<Uuid>,
    paused_at: Option<DateTime<Utc>>,
    error: Option<&'a Value>,
    close: Option<&'a str>,
    wakes: bool,
    stop: bool,
}

const COLUMNS: &str = "slot int, id uuid, owner text, expected bigint, kind text, status text, \
    context jsonb, cursor jsonb, visits jsonb, steps_run int, result text, expires timestamptz, now timestamptz, gate jsonb, \
    gate_reason text, gate_deadline timestamptz, gate_event text, gate_approval_id uuid, paused_at timestamptz, error jsonb, \
    close text, wakes boolean, stop boolean";

/// Every row is produced (the filter reads its id and its document).
const FILTER: &str = "WHERE v.id = ANY($2) AND v.context IS NOT NULL";

fn jsonb_sql() -> String {
    format!("SELECT count(*) FROM jsonb_to_recordset($1) AS v({COLUMNS}) {FILTER}")
}

fn json_text_sql() -> String {
    format!("SELECT count(*) FROM json_to_recordset($1::text::json) AS v({COLUMNS}) {FILTER}")
}

/// One array parameter per column of [`COLUMNS`], of that column's type.
fn arrays_sql() -> String {
    let (names, arrays): (Vec<&str>, Vec<String>) = COLUMNS
        .split(',')
        .enumerate()
        .map(|(i, column)| {
            let (name, ty) = column.trim().split_once(' ').unwrap();
            (name, format!("${}::{ty}[]", i + 1))
        })
        .unzip();
    format!(
        "SELECT count(*) FROM UNNEST({}) AS v({}) {FILTER}",
        arrays.join(", "),
        names.join(", ")
    )
}

/// CPU (user and system) the process `pid` has used, in ms.
fn cpu_ms(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .expect("the database backend's /proc entry: the database must run on this machine");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime, in clock ticks of 10 ms.
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) * 10.0
}

async fn jsonb(conn: &mut PgConnection, sql: &str, rows: &[Row<'_>], ids: &[Uuid]) -> i64 {
    sqlx::query_scalar(sql)
        .bind(Json(rows))
        .bind(ids)
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn json_text(conn: &mut PgConnection, sql: &str, rows: &[Row<'_>], ids: &[Uuid]) -> i64 {
    sqlx::query_scalar(sql)
        .bind(serde_json::to_string(rows).unwrap())
        .bind(ids)
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn arrays(conn: &mut PgConnection, sql: &str, rows: &[Row<'_>]) -> i64 {
    fn col<'r, T>(rows: &'r [Row<'_>], f: impl Fn(&'r Row<'_>) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    sqlx::query_scalar(sql)
        .bind(col(rows, |r| r.slot))
        .bind(col(rows, |r| r.id))
        .bind(col(rows, |r| r.owner))
        .bind(col(rows, |r| r.expected))
        .bind(col(rows, |r| r.kind))
        .bind(col(rows, |r| r.status))
        .bind(col(rows, |r| Json(r.context)))
        .bind(col(rows, |r| Some(Json(r.cursor))))
        .bind(col(rows, |r| Json(r.visits)))
        .bind(col(rows, |r| r.steps_run))
        .bind(col(rows, |r| r.result))
        .bind(col(rows, |r| r.expires))
        .bind(col(rows, |r| r.now))
        .bind(col(rows, |r| r.gate.map(Json)))
        .bind(col(rows, |r| r.gate_reason))
        .bind(col(rows, |r| r.gate_deadline))
        .bind(col(rows, |r| r.gate_event))
        .bind(col(rows, |r| r.gate_approval_id))
        .bind(col(rows, |r| r.paused_at))
        .bind(col(rows, |r| r.error.map(Json)))
        .bind(col(rows, |r| r.close))
        .bind(col(rows, |r| r.wakes))
        .bind(col(rows, |r| r.stop))
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: then only
    // a smoke run of each form.
    let benching = std::env::args().any(|a| a == "--bench");
    let url = std::env::var("TOLLGATE_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    // The batch connections' planning (generic plans kept per connection).
    let options: PgConnectOptions = url.parse().unwrap();
    let mut conn = options
        .options([("plan_cache_mode", "force_generic_plan")])
        .connect()
        .await
        .expect("PostgreSQL for the benchmark (TOLLGATE_BENCH_DATABASE_URL)");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let context = json!({
        "order": {"id": "o-12345", "total": 20345, "currency": "EUR", "lines": [
            {"sku": "A-1", "qty": 2, "price": 1999}, {"sku": "B-22", "qty": 1, "price": 16347}]},
        "approve": {"decision": "approved", "by": "manager", "at": "2026-12-07T10:00:00Z"},
        "pay": {"status": 200, "body": {}}, "customer": "c-987", "tags": ["bench", "approval"],
    });
    let cursor = json!({"step": "pay", "index": 3, "stack": []});
    let visits = json!({"check": 1, "approve": 1, "pay": 1});
    let (jsonb_stmt, text_stmt, arrays_stmt) = (jsonb_sql(), json_text_sql(), arrays_sql());
    let (blocks, per_block) = if benching { (20, 200) } else { (1, 2) };
    for size in [1_usize, 4, 8, 16, 64] {
        let now = Utc::now();
        let ids: Vec<Uuid> = (0..size).map(|_| Uuid::now_v7()).collect();
        let rows: Vec<Row> = ids
            .iter()
            .enumerate()
            .map(|(slot, id)| Row {
                slot: i32::try_from(slot).unwrap(),
                id: *id,
                owner: "worker-1-3f9c",
                expected: 5,
                kind: "continue",
                status: "running",
                context: &context,
                cursor: &cursor,
                visits: &visits,
                steps_run: 3,
                result: None,
                expires: Some(now),
                now,
                gate: None,
                gate_reason: None,
                gate_deadline: None,
                gate_event: None,
                gate_approval_id: None,
                paused_at: None,
                error: None,
                close: None,
                wakes: false,
                stop: false,
            })
            .collect();
        let mut spent = [0.0_f64; 3];
        for _ in 0..blocks {
            for (form, total) in spent.iter_mut().enumerate() {
                let before = cpu_ms(pid);
                for _ in 0..per_block {
                    let read = match form {
                        0 => jsonb(&mut conn, &jsonb_stmt, &rows, &ids).await,
                        1 => json_text(&mut conn, &text_stmt, &rows, &ids).await,
                        _ => arrays(&mut conn, &arrays_stmt, &rows).await,
                    };
                    assert_eq!(read, i64::try_from(size).unwrap());
                }
                *total += cpu_ms(pid) - before;
            }
        }
        let per = |ms: f64| ms * 1000.0 / f64::from(blocks * per_block);
        println!(
            "batch rows, {size} per statement: database CPU per statement: jsonb recordset {:.0} µs, json text recordset {:.0} µs, typed arrays {:.0} µs",
            per(spent[0]),
            per(spent[1]),
            per(spent[2]),
        );
    }
}
