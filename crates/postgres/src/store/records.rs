//! [`RecordStore`] on PostgreSQL.

use async_trait::async_trait;
use tollgate_model::records::Record;
use tollgate_store::{Error, RecordStore, Result};

use crate::rows::backend;
use crate::{rows, PgStore};

#[async_trait]
impl RecordStore for PgStore {
    async fn get_record(&self, entity: &str, entity_id: &str) -> Result<Record> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(records),
            " FROM records WHERE entity = $1 AND entity_id = $2"
        ))
        .bind(entity)
        .bind(entity_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref()
            .map(rows::record)
            .transpose()?
            .ok_or_else(|| Error::not_found("record", format!("{entity}/{entity_id}")))
    }
}
