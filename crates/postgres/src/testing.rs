//! Test support (feature `testing`): a new, empty database per test on the server named
//! by `TOLLGATE_TEST_DATABASE_URL`, which `cargo xtask test` provides. Written once for
//! every crate whose tests need PostgreSQL, so that no two tests share state.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

/// The variable naming the test server (an account that may create databases).
pub const TEST_DATABASE_URL: &str = "TOLLGATE_TEST_DATABASE_URL";

/// Creates an empty database named `tollgate_<prefix>_<unix seconds>_<uuid>` and returns
/// its URL. Databases with the same prefix left over an hour ago (by runs that died)
/// are dropped first. An error when the variable is unset or the server refuses.
pub async fn fresh_database_url(prefix: &str) -> Result<String, sqlx::Error> {
    let admin_url = std::env::var(TEST_DATABASE_URL).map_err(|_| {
        sqlx::Error::Configuration(
            format!("{TEST_DATABASE_URL} is not set: run `cargo xtask test`, which provides a PostgreSQL server, or point it at one (postgres://user@host:port/postgres)").into(),
        )
    })?;
    let admin: PgConnectOptions = admin_url.parse()?;
    let mut conn: PgConnection = admin.connect().await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let pattern = format!("tollgate_{prefix}_%");
    let old: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .bind(&pattern)
            .fetch_all(&mut conn)
            .await?;
    for name in old {
        let created: u64 = name
            .rsplit('_')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(created) > 3600 {
            // Best effort: another run may be dropping it at the same time.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    let name = format!("tollgate_{prefix}_{now}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(admin.database(&name).to_url_lossy().to_string())
}
