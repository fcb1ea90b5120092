//! The retention archive: what history retention deletes is first written here
//! (docs/operations.md, "History retention"), so auditors keep what the database drops.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde_json::{json, Value};
use tollgate_engine::Engine;
use tollgate_store::{ApprovalFilter, NotificationFilter, PageRequest, Purged};
use uuid::Uuid;

use crate::{Error, Result};

/// A directory of JSON Lines files, gzip-compressed, one sub-directory per day the
/// executions ended (UTC): `<dir>/2026-12-03/<batch id>.jsonl.gz`, one line per execution
/// with everything the purge deletes. Files are written whole and renamed into place, so
/// a reader never sees half a file; `zcat <dir>/2026-12-03/*.jsonl.gz` is that day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveDir {
    root: PathBuf,
}

impl ArchiveDir {
    /// An archive under `root` (created when first written to).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where it writes.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads what the purge of `batch` will delete and writes it durably (fsynced file
    /// and directory) before returning; an error means nothing may be deleted.
    pub(crate) async fn keep(&self, engine: &Engine, batch: &[Purged]) -> Result<()> {
        let mut days: BTreeMap<NaiveDate, Vec<Value>> = BTreeMap::new();
        let archived_at = engine.clock().now();
        for purged in batch {
            let line = history(engine, purged.execution_id).await?;
            let mut line = line;
            if let Value::Object(map) = &mut line {
                map.insert("archived_at".into(), json!(archived_at));
            }
            days.entry(purged.ended_at.date_naive())
                .or_default()
                .push(line);
        }
        let root = self.root.clone();
        let name = Uuid::now_v7();
        tokio::task::spawn_blocking(move || write_days(&root, name, &days))
            .await
            .map_err(|e| Error::Invalid(format!("archive writer stopped: {e}")))?
            .map_err(|e| Error::Invalid(format!("cannot write the retention archive: {e}")))
    }
}

/// One execution with everything kept about it.
async fn history(engine: &Engine, id: Uuid) -> Result<Value> {
    let store = engine.store();
    let execution = store.get_execution(id).await?;
    let steps = store.list_steps(id).await?;
    let audit = store.list_resume_requests(id).await?;
    let mut approvals = Vec::new();
    let mut page = PageRequest::first(200);
    let by_execution = ApprovalFilter {
        execution_id: Some(id),
        ..ApprovalFilter::default()
    };
    loop {
        let found = store.list_approvals(&by_execution, &page).await?;
        approvals.extend(found.items);
        match found.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    let mut comments = Vec::new();
    for approval in &approvals {
        let mut page = PageRequest::first(200);
        loop {
            let found = store.list_comments(approval.id, &page).await?;
            comments.extend(found.items);
            match found.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
    }
    let mut notifications = Vec::new();
    let mut page = PageRequest::first(200);
    let notes = NotificationFilter {
        execution_id: Some(id),
    };
    loop {
        let found = store.list_notifications(&notes, &page).await?;
        notifications.extend(found.items);
        match found.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    Ok(json!({
        "execution": execution,
        "steps": steps,
        "approvals": approvals,
        "comments": comments,
        "resume_requests": audit,
        "notifications": notifications,
    }))
}

/// Writes each day's lines to a new file: a temporary name, fsync, rename, fsync of the
/// directory.
fn write_days(
    root: &Path,
    name: Uuid,
    days: &BTreeMap<NaiveDate, Vec<Value>>,
) -> std::io::Result<()> {
    for (day, lines) in days {
        let dir = root.join(day.format("%Y-%m-%d").to_string());
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{name}.jsonl.gz.tmp"));
        let file = std::fs::File::create(&tmp)?;
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        for line in lines {
            serde_json::to_writer(&mut gz, line)?;
            gz.write_all(b"\n")?;
        }
        let file = gz.finish()?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(format!("{name}.jsonl.gz")))?;
        std::fs::File::open(&dir)?.sync_all()?;
    }
    Ok(())
}
