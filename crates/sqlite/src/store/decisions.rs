//! Approval decisions in two hops on the writer: read the request and its execution
//! under `BEGIN IMMEDIATE`, judge with [`tollgate_store::rules`], write and commit.

use sqlx::Row;
use tollgate_model::records::{Decision, Principal, StepRecord, Timestamp};
use tollgate_model::ExecutionStatus;
use tollgate_store::{rules, Continuation, Decided, Error, LeaseClaim, Result, Starting};
use uuid::Uuid;

use crate::rows::{backend, json, opt_ts, ts};
use crate::{rows, SqliteStore};

use super::sql::{
    bind_approval, bind_execution, bind_step, bind_trail, trail_sql, upsert_execution_sql,
    UPSERT_STEP_SQL,
};

impl SqliteStore {
    pub(super) async fn decide_with(
        &self,
        approval_id: Uuid,
        decision: Decision,
        decider: &Principal,
        claim: &LeaseClaim,
        now: Timestamp,
        then: Option<&Continuation>,
    ) -> Result<Decided> {
        // Hop 1: open the transaction and read the request and its execution.
        let mut held = self.held().await?;
        let read = sqlx::query(concat!(
            "BEGIN IMMEDIATE; SELECT * FROM approvals WHERE id = ?; ",
            select_executions!(),
            " WHERE id = (SELECT execution_id FROM approvals WHERE id = ?)"
        ))
        .bind(approval_id.to_string())
        .bind(approval_id.to_string())
        .fetch_all(held.conn()?)
        .await;
        let rows = match read {
            Ok(rows) => rows,
            Err(err) => {
                held.rollback().await;
                return Err(backend(err));
            }
        };
        let approval_row = rows
            .iter()
            .find(|r| r.try_get::<String, _>("decisions").is_ok());
        let execution_row = rows
            .iter()
            .find(|r| r.try_get::<String, _>("context").is_ok());
        let (Some(approval_row), Some(execution_row)) = (approval_row, execution_row) else {
            held.rollback().await;
            return Err(Error::not_found("approval", approval_id));
        };
        let mut approval = rows::approval(approval_row)?;
        let mut execution = rows::execution_to_change(execution_row)?;
        let (decided_by, audit) = (
            decision.decided_by.clone(),
            rules::decision_audit(approval_id, &decision),
        );
        let claimed =
            match rules::decide(&mut approval, &mut execution, decision, decider, claim, now) {
                Ok(claimed) => claimed,
                Err(refusal) => {
                    held.rollback().await;
                    return Err(refusal);
                }
            };
        // The side-effect-free steps after the decision, stored with it.
        let next = match then {
            Some(then) if claimed => rules::continuation(&execution, then),
            _ => None,
        };
        // Leaving the gate closed its only open request (the decided one), so an ending
        // here has no other request to close.
        let wakes = next.as_ref().is_some_and(Starting::wakes_workers);
        if let Some(next) = &next {
            execution = next.execution.clone();
        }
        let records: &[StepRecord] = next.as_ref().map_or(&[], |n| &n.records);
        let completed = execution.status == ExecutionStatus::Completed;
        let new_approval = next.as_ref().and_then(|n| n.approval.as_ref());
        // Hop 2: every write and the commit, in one batch.
        let mut sql = String::from(
            "UPDATE approvals SET status = ?, decisions = ?, decided_at = ? WHERE id = ?;",
        );
        if claimed {
            sql.push(' ');
            sql.push_str(&upsert_execution_sql());
            sql.push_str("; INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) VALUES (?, ?, 'approval', ?, ?, ?, ?, 'resumed', NULL);");
            for _ in records {
                sql.push(' ');
                sql.push_str(UPSERT_STEP_SQL);
                sql.push(';');
            }
            if let Some(next) = &next {
                sql.push_str(trail_sql(&next.undo, completed));
            }
            if new_approval.is_some() {
                sql.push_str(" INSERT INTO approvals (id, execution_id, step_id, visit, entity_type, entity_id, approver_roles, approver_users, required, status, reason, data, decisions, requested_by, allow_self_approval, requested_at, expires_at, decided_at) VALUES (");
                sql.push_str(&vec!["?"; 18].join(", "));
                sql.push_str(");");
            }
        }
        sql.push_str(" COMMIT;");
        let mut write = sqlx::query(&sql)
            .bind(approval.status.as_str())
            .bind(json(&approval.decisions))
            .bind(opt_ts(approval.decided_at))
            .bind(approval_id.to_string());
        if claimed {
            write = bind_execution(write, &execution)
                .bind(Uuid::now_v7().to_string())
                .bind(execution.id.to_string())
                .bind(decided_by.clone())
                .bind(json(&audit))
                .bind(ts(now))
                .bind(ts(now));
            for record in records {
                write = bind_step(write, record);
            }
            if let Some(next) = &next {
                write = bind_trail(write, &execution, &next.undo, completed);
            }
            if let Some(new_approval) = &new_approval {
                write = bind_approval(write, new_approval);
            }
        }
        match write.execute(held.conn()?).await {
            Ok(_) => held.settled = true,
            Err(err) => {
                held.rollback().await;
                return Err(backend(err));
            }
        }
        if wakes {
            self.wakeups.notify_one();
        }
        Ok(Decided {
            approval,
            execution,
            claimed,
            continued: next,
        })
    }
}
