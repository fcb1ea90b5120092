//! [`DelegationStore`] on SQLite.

use async_trait::async_trait;
use sqlx::Row;
use tollgate_model::records::{Delegation, Timestamp};
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, rules, DelegationStore, Error, Page, PageRequest, Result,
};
use uuid::Uuid;

use crate::rows::{self, backend, json, opt_ts, ts};
use crate::SqliteStore;

use super::sql::{commit, id_after};

const COLUMNS: &str = "id, delegator, delegator_roles, delegate, workflow_key, role, starts_at, \
    ends_at, reason, created_by, created_at, revoked_at";

fn delegation(row: &sqlx::sqlite::SqliteRow) -> Result<Delegation> {
    let id: String = row.try_get("id").map_err(backend)?;
    let roles: String = row.try_get("delegator_roles").map_err(backend)?;
    let revoked: Option<i64> = row.try_get("revoked_at").map_err(backend)?;
    Ok(Delegation {
        id: Uuid::parse_str(&id)
            .map_err(|e| Error::Unreadable(format!("delegation id `{id}`: {e}")))?,
        delegator: row.try_get("delegator").map_err(backend)?,
        delegator_roles: serde_json::from_str(&roles)
            .map_err(|e| Error::Unreadable(format!("delegation {id} roles: {e}")))?,
        delegate: row.try_get("delegate").map_err(backend)?,
        workflow_key: row.try_get("workflow_key").map_err(backend)?,
        role: row.try_get("role").map_err(backend)?,
        starts_at: rows::from_ts(row.try_get("starts_at").map_err(backend)?),
        ends_at: rows::from_ts(row.try_get("ends_at").map_err(backend)?),
        reason: row.try_get("reason").map_err(backend)?,
        created_by: row.try_get("created_by").map_err(backend)?,
        created_at: rows::from_ts(row.try_get("created_at").map_err(backend)?),
        revoked_at: revoked.map(rows::from_ts),
    })
}

#[async_trait]
impl DelegationStore for SqliteStore {
    async fn create_delegation(&self, d: &Delegation) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO delegations ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(d.id.to_string())
        .bind(&d.delegator)
        .bind(json(&d.delegator_roles))
        .bind(&d.delegate)
        .bind(&d.workflow_key)
        .bind(&d.role)
        .bind(ts(d.starts_at))
        .bind(ts(d.ends_at))
        .bind(&d.reason)
        .bind(&d.created_by)
        .bind(ts(d.created_at))
        .bind(opt_ts(d.revoked_at))
        .execute(&self.writer)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict(format!("delegation {} exists", d.id))
            }
            _ => backend(err),
        })?;
        Ok(())
    }

    async fn list_delegations(
        &self,
        subject: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Delegation>> {
        let after = id_after(page)?;
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM delegations WHERE (?1 IS NULL OR delegator = ?1 OR delegate = ?1) \
             AND id < ?2 ORDER BY id DESC LIMIT ?3"
        ))
        .bind(subject)
        .bind(after.unwrap_or_else(|| "g".to_owned()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        let items = found.iter().map(delegation).collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |d| {
            encode_id_cursor(d.id)
        }))
    }

    async fn revoke_delegation(&self, id: Uuid, now: Timestamp) -> Result<Delegation> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM delegations WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or_else(|| Error::not_found("delegation", id))?;
        let mut d = delegation(&row)?;
        rules::revoke_delegation(&mut d, now)?;
        sqlx::query("UPDATE delegations SET revoked_at = ? WHERE id = ?")
            .bind(opt_ts(d.revoked_at))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        commit(tx).await?;
        Ok(d)
    }

    async fn delegations_to(&self, delegate: &str, now: Timestamp) -> Result<Vec<Delegation>> {
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM delegations WHERE delegate = ? AND revoked_at IS NULL \
             AND starts_at <= ? AND ends_at > ? ORDER BY id"
        ))
        .bind(delegate)
        .bind(ts(now))
        .bind(ts(now))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        found.iter().map(delegation).collect()
    }
}
