//! The metrics recorder's upkeep: histogram samples nobody scrapes do not pile up.
//! A test binary of its own, so that nothing else runs in the process whose resident
//! memory it reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(target_os = "linux")]

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// This process's resident memory, in bytes.
fn resident() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Two million request latencies recorded with `/metrics` never scraped (the samples
/// alone would hold about 16 MB until a scrape) leave the resident memory within 6 MB
/// of where it was: the server's upkeep folds them into their buckets as they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unscraped_histogram_samples_do_not_pile_up() {
    let stop = CancellationToken::new();
    tollgate_api::telemetry::metrics();
    let upkeep = tokio::spawn(tollgate_api::telemetry::keep_metrics(
        Duration::from_millis(5),
        stop.clone(),
    ));
    let record = |n: usize| {
        for i in 0..n {
            metrics::histogram!("tollgate_upkeep_test_seconds").record(i as f64 / 1e6);
        }
    };
    // The histogram and its first sample blocks exist before memory is read.
    record(20_000);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = resident();
    for _ in 0..100 {
        record(20_000);
        // Lets the upkeep run between bursts, as requests leave it room to.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grown = resident() - before;
    stop.cancel();
    upkeep.await.unwrap();
    assert!(
        grown < 6 * 1024 * 1024,
        "resident memory grew by {grown} bytes over two million unscraped samples"
    );
}
