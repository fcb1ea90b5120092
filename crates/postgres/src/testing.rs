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

/// The options of the batch connections that only look rows up by key: `url`'s, with
/// their planner settings. For tests of how PostgreSQL plans their statements there.
pub fn keyed_batch_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(crate::keyed_batch_options(&url.parse()?))
}

/// The statements those connections run, each with a name.
pub fn keyed_batch_statements() -> Vec<(&'static str, String)> {
    crate::store::keyed_batch_statements()
}

/// A TCP proxy to the test server that can cut the network and restore it, as a
/// partition looks to TCP: while it is down nothing passes and nobody is told (no reset,
/// no error); once it is up, what was sent meanwhile arrives (TCP's retransmission), so
/// connections that were waiting carry on.
#[derive(Debug)]
pub struct Partition {
    /// The local port to connect to instead of the server's.
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Partition {
    /// Starts forwarding to `upstream` (host, port).
    pub async fn to(upstream: (String, u16)) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = down.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(Self::pipe(cr, sw, flag.clone()));
                    tokio::spawn(Self::pipe(sr, cw, flag));
                });
            }
        });
        Ok(Self { port, down })
    }

    /// Forwards bytes while the link is up; while it is down, holds them.
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            while down.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// Cuts (`true`) or restores (`false`) the network.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
}
