//! [`RecordStore`] on SQLite.

use async_trait::async_trait;
use tollgate_model::records::Record;
use tollgate_store::{Error, RecordStore, Result};

use crate::rows::backend;
use crate::{rows, SqliteStore};

#[async_trait]
impl RecordStore for SqliteStore {
    async fn get_record(&self, entity: &str, entity_id: &str) -> Result<Record> {
        let row = sqlx::query("SELECT * FROM records WHERE entity = ? AND entity_id = ?")
            .bind(entity)
            .bind(entity_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref()
            .map(rows::record)
            .transpose()?
            .ok_or_else(|| Error::not_found("record", format!("{entity}/{entity_id}")))
    }
}
