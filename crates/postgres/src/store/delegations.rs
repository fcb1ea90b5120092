//! [`DelegationStore`] on PostgreSQL.

use async_trait::async_trait;
use sqlx::Row;
use tollgate_model::records::{Delegation, Timestamp};
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, rules, DelegationStore, Error, Page, PageRequest, Result,
};
use uuid::Uuid;

use crate::rows::backend;
use crate::PgStore;

use super::sql::{commit, id_after, limit};

const COLUMNS: &str = "id, delegator, delegator_roles, delegate, workflow_key, role, starts_at, \
    ends_at, reason, created_by, created_at, revoked_at";

fn delegation(row: &sqlx::postgres::PgRow) -> Result<Delegation> {
    Ok(Delegation {
        id: row.try_get("id").map_err(backend)?,
        delegator: row.try_get("delegator").map_err(backend)?,
        delegator_roles: row.try_get("delegator_roles").map_err(backend)?,
        delegate: row.try_get("delegate").map_err(backend)?,
        workflow_key: row.try_get("workflow_key").map_err(backend)?,
        role: row.try_get("role").map_err(backend)?,
        starts_at: row.try_get("starts_at").map_err(backend)?,
        ends_at: row.try_get("ends_at").map_err(backend)?,
        reason: row.try_get("reason").map_err(backend)?,
        created_by: row.try_get("created_by").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
        revoked_at: row.try_get("revoked_at").map_err(backend)?,
    })
}

#[async_trait]
impl DelegationStore for PgStore {
    async fn create_delegation(&self, d: &Delegation) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO delegations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(d.id)
        .bind(&d.delegator)
        .bind(&d.delegator_roles)
        .bind(&d.delegate)
        .bind(&d.workflow_key)
        .bind(&d.role)
        .bind(d.starts_at)
        .bind(d.ends_at)
        .bind(&d.reason)
        .bind(&d.created_by)
        .bind(d.created_at)
        .bind(d.revoked_at)
        .execute(&self.pool)
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
            "SELECT {COLUMNS} FROM delegations WHERE ($1::text IS NULL OR delegator = $1 OR delegate = $1) \
             AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(subject)
        .bind(after)
        .bind(limit(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let items = found.iter().map(delegation).collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |d| {
            encode_id_cursor(d.id)
        }))
    }

    async fn revoke_delegation(&self, id: Uuid, now: Timestamp) -> Result<Delegation> {
        let mut tx = self.tx().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM delegations WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or_else(|| Error::not_found("delegation", id))?;
        let mut d = delegation(&row)?;
        rules::revoke_delegation(&mut d, now)?;
        sqlx::query("UPDATE delegations SET revoked_at = $1 WHERE id = $2")
            .bind(d.revoked_at)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        commit(tx).await?;
        Ok(d)
    }

    async fn delegations_to(&self, delegate: &str, now: Timestamp) -> Result<Vec<Delegation>> {
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM delegations WHERE delegate = $1 AND revoked_at IS NULL \
             AND starts_at <= $2 AND ends_at > $2 ORDER BY id"
        ))
        .bind(delegate)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        found.iter().map(delegation).collect()
    }
}
