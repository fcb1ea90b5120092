//! The invariants every run must satisfy, whatever crashed where.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tollgate_model::records::{ApprovalStatus, Execution, ResumeOutcome, StepStatus, Timestamp};
use tollgate_model::{ErrorKind, ExecutionStatus, PauseReason};
use tollgate_store::{ApprovalFilter, ExecutionFilter, NotificationFilter, PageRequest, Store};
use wiremock::Request;

use crate::client::Client;

/// Counts checks and collects violations.
#[derive(Default)]
struct Verdict {
    checks: usize,
    violations: Vec<String>,
}

impl Verdict {
    fn expect(&mut self, holds: bool, violation: impl FnOnce() -> String) {
        self.checks += 1;
        if !holds {
            self.violations.push(violation());
        }
    }
}

async fn all_executions(store: &Arc<dyn Store>) -> Result<Vec<Execution>, String> {
    let mut all = Vec::new();
    let mut page = PageRequest::first(200);
    loop {
        let got = store
            .list_executions(&ExecutionFilter::default(), &page)
            .await
            .map_err(|e| format!("cannot list executions: {e}"))?;
        all.extend(got.items);
        match got.next_cursor {
            Some(cursor) => page = PageRequest::after(200, cursor),
            None => return Ok(all),
        }
    }
}

/// Checks the store left by a run against what the client was told. Returns the number
/// of checks made and the violations found.
pub(crate) async fn check(
    store: &Arc<dyn Store>,
    now: Timestamp,
    client: &Client,
    requests: &[Request],
) -> (usize, Vec<String>) {
    let mut v = Verdict::default();
    for failure in &client.failures {
        v.expect(false, || {
            format!("a call failed with a server error: {failure}")
        });
    }
    let executions = match all_executions(store).await {
        Ok(all) => all,
        Err(err) => return (v.checks, vec![err]),
    };
    for e in &executions {
        if let Err(err) = check_execution(store, now, e, &mut v).await {
            v.expect(false, || err);
        }
    }
    // Every event answered 2xx is stored.
    for (key, event) in &client.sent {
        let stored = store.get_event(event.id).await;
        v.expect(stored.is_ok(), || {
            format!("event `{key}` was answered 2xx but is not stored")
        });
    }
    // A refused direct delivery stores nothing.
    for (key, target, event_type) in &client.refused_deliveries {
        let stored = events_of(store, event_type, *target).await;
        v.expect(
            !stored.iter().any(|e| e.event_id.as_deref() == Some(key)),
            || {
                format!(
                    "the delivery `{key}` to {target} was refused (409) but its event was stored"
                )
            },
        );
    }
    // Every decision answered 2xx is on its request exactly once.
    for (approval_id, who) in &client.decisions {
        match store.get_approval(*approval_id).await {
            Ok(a) => {
                let n = a.decisions.iter().filter(|d| d.decided_by == *who).count();
                v.expect(n == 1, || {
                    format!("{who}'s decision on approval {approval_id} was answered 2xx and is stored {n} times")
                });
            }
            Err(err) => v.expect(false, || format!("approval {approval_id}: {err}")),
        }
    }
    // A refused decision changed nothing and is in its execution's audit.
    for (approval_id, who) in &client.refused_decisions {
        let audited = match store.get_approval(*approval_id).await {
            Ok(a) => store
                .list_resume_requests(a.execution_id)
                .await
                .is_ok_and(|rows| {
                    rows.iter().any(|r| {
                        r.outcome == ResumeOutcome::Refused && r.actor.as_deref() == Some(who)
                    })
                }),
            Err(_) => false,
        };
        v.expect(audited, || {
            format!("{who}'s refused decision on approval {approval_id} is not in the audit")
        });
    }
    check_effects(&executions, requests, &mut v);
    (v.checks, v.violations)
}

async fn events_of(
    store: &Arc<dyn Store>,
    event_type: &str,
    execution: uuid::Uuid,
) -> Vec<tollgate_model::records::Event> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let Ok(page) = store
            .events_for_wait(event_type, Timestamp::MIN_UTC, execution, after, 500)
            .await
        else {
            return all;
        };
        let full = page.len() == 500;
        after = page.last().map(|e| (e.received_at, e.id));
        all.extend(page);
        if !full {
            return all;
        }
    }
}

async fn check_execution(
    store: &Arc<dyn Store>,
    now: Timestamp,
    e: &Execution,
    v: &mut Verdict,
) -> Result<(), String> {
    let id = e.id;
    // Quiescent: terminal, or stopped at a gate it is entitled to be at.
    v.expect(e.status != ExecutionStatus::Running, || {
        format!(
            "execution {id} ({}) is still running after every lease and deadline passed (lease {:?}, wake {:?})",
            e.workflow_key, e.lease, e.wake.as_ref().map(|_| "stored")
        )
    });
    if e.status.is_terminal() {
        v.expect(
            e.gate.is_none() && e.lease.is_none() && e.wake.is_none(),
            || format!("ended execution {id} still has a gate, lease or wake signal"),
        );
    }
    let gate = e.gate.as_ref();
    if e.status == ExecutionStatus::Paused {
        match gate.map(|g| (g.reason, g.approval_id)) {
            Some((PauseReason::Approval, Some(approval_id))) => {
                let a = store
                    .get_approval(approval_id)
                    .await
                    .map_err(|err| format!("approval {approval_id} of {id}: {err}"))?;
                v.expect(a.status == ApprovalStatus::Pending, || {
                    format!(
                        "execution {id} is paused at approval {approval_id}, which is {} (a lost resume)",
                        a.status.as_str()
                    )
                });
                v.expect(a.expires_at.is_none_or(|d| d > now), || {
                    format!(
                        "execution {id} is paused at approval {approval_id} whose deadline passed"
                    )
                });
            }
            Some((PauseReason::Manual, _)) => {}
            other => v.expect(false, || {
                format!("execution {id} is paused with gate {other:?}")
            }),
        }
    }
    if e.status == ExecutionStatus::Waiting {
        let Some(g) = gate.filter(|g| g.reason == PauseReason::Event) else {
            v.expect(false, || {
                format!("execution {id} is waiting without an event gate")
            });
            return Ok(());
        };
        v.expect(g.deadline.is_none_or(|d| d > now), || {
            format!("execution {id} still waits although its deadline passed")
        });
        // No stored event that this wait may take was left undelivered.
        let event_type = g.event.clone().unwrap_or_default();
        for event in events_of(store, &event_type, id).await {
            if !tollgate_store::rules::may_take(e, &event) {
                continue;
            }
            let matches = tollgate_engine::wait_matches(
                g.event_match.as_ref(),
                &e.context,
                &event.payload,
                now,
            );
            v.expect(!matches, || {
                format!(
                    "event {} (`{}`, key {:?}) matches the wait of execution {id} but was never delivered",
                    event.id, event.event_type, event.event_id
                )
            });
        }
    }
    let steps = store
        .list_steps(id)
        .await
        .map_err(|err| format!("steps of {id}: {err}"))?;
    // Cancelled, or ended by the workflow deadline: signals may be left unresolved.
    let cut_short = e.status == ExecutionStatus::Cancelled
        || e.error.as_ref().is_some_and(|err| {
            err.kind == ErrorKind::TimedOut && err.message.contains("workflow deadline")
        });
    // Every event the execution consumed was acted on: a completed wait step names it.
    // (A consumed event no step took is lost: its wake signal was dropped.)
    if !cut_short {
        for event_id in &e.consumed_events {
            let taken = steps.iter().any(|s| {
                s.status == StepStatus::Completed
                    && s.output.get("event_id").and_then(|x| x.as_str())
                        == Some(event_id.to_string().as_str())
            });
            v.expect(taken, || {
                format!("execution {id} consumed event {event_id} but no step acted on it")
            });
        }
    }
    // An event is consumed once.
    let distinct: HashSet<_> = e.consumed_events.iter().collect();
    v.expect(distinct.len() == e.consumed_events.len(), || {
        format!(
            "execution {id} consumed an event twice: {:?}",
            e.consumed_events
        )
    });
    // The resume count agrees with the audit of accepted resumes.
    let audit = store
        .list_resume_requests(id)
        .await
        .map_err(|err| format!("audit of {id}: {err}"))?;
    let resumes = audit
        .iter()
        .filter(|r| r.outcome == ResumeOutcome::Resumed)
        .filter(|r| r.data.get("workflow_timeout").is_none())
        .count();
    v.expect(resumes == e.resume_count as usize, || {
        format!(
            "execution {id} says it resumed {} times, its audit says {resumes}",
            e.resume_count
        )
    });
    // The path follows each approval's final status, once.
    let approvals = store
        .list_approvals(
            &ApprovalFilter {
                execution_id: Some(id),
                ..ApprovalFilter::default()
            },
            &PageRequest::first(500),
        )
        .await
        .map_err(|err| format!("approvals of {id}: {err}"))?
        .items;
    for a in &approvals {
        let resolved: Vec<_> = steps
            .iter()
            .filter(|s| {
                s.step_id == a.step_id && s.visit == a.visit && s.status == StepStatus::Completed
            })
            .filter(|s| {
                s.output.get("approval_id").and_then(|x| x.as_str()) == Some(&a.id.to_string())
            })
            .collect();
        v.expect(resolved.len() <= 1, || {
            format!(
                "approval {} of {id} was resolved {} times",
                a.id,
                resolved.len()
            )
        });
        if matches!(
            a.status,
            ApprovalStatus::Approved | ApprovalStatus::Rejected
        ) && !cut_short
        {
            v.expect(resolved.len() == 1, || {
                format!(
                    "approval {} of {id} is {} but the execution ({}) never acted on it",
                    a.id,
                    a.status.as_str(),
                    e.status
                )
            });
        }
        for r in resolved {
            v.expect(
                r.output.get("status").and_then(|s| s.as_str()) == Some(a.status.as_str()),
                || {
                    format!(
                        "approval {} of {id} is {} but the execution went the way of {}",
                        a.id,
                        a.status.as_str(),
                        r.output["status"]
                    )
                },
            );
        }
        let deciders: HashSet<_> = a.decisions.iter().map(|d| &d.decided_by).collect();
        v.expect(deciders.len() == a.decisions.len(), || {
            format!("approval {} holds two decisions by one decider", a.id)
        });
    }
    // Notifications are written with their step's commit: at most one per visit.
    let notes = store
        .list_notifications(
            &NotificationFilter {
                execution_id: Some(id),
            },
            &PageRequest::first(500),
        )
        .await
        .map_err(|err| format!("notifications of {id}: {err}"))?
        .items;
    let mut per_step: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for n in &notes {
        *per_step.entry((&n.step_id, &n.message)).or_default() += 1;
    }
    for ((step, message), n) in per_step {
        let visits = e.visits.get(step).copied().unwrap_or(0);
        v.expect(n <= visits.max(1), || {
            format!("execution {id} notified `{message}` {n} times in {visits} visits of `{step}`")
        });
    }
    Ok(())
}

/// Outside effects: the same effect (execution, target, content) is only ever sent
/// under one idempotency key, and every key names an execution that exists.
fn check_effects(executions: &[Execution], requests: &[Request], v: &mut Verdict) {
    let known: HashSet<String> = executions.iter().map(|e| e.id.to_string()).collect();
    let mut keys: HashMap<(String, String, Vec<u8>), HashSet<String>> = HashMap::new();
    for r in requests {
        let Some(key) = r
            .headers
            .get("idempotency-key")
            .and_then(|k| k.to_str().ok())
        else {
            v.expect(false, || {
                format!("a request to {} carried no idempotency key", r.url.path())
            });
            continue;
        };
        let execution = key.split(':').next().unwrap_or_default().to_owned();
        v.expect(known.contains(&execution), || {
            format!("idempotency key {key} names no stored execution")
        });
        keys.entry((execution, r.url.path().to_owned(), r.body.clone()))
            .or_default()
            .insert(key.to_owned());
    }
    for ((execution, path, _), set) in keys {
        v.expect(set.len() == 1, || {
            format!(
                "execution {execution} sent the same request to {path} under {} keys: {set:?}",
                set.len()
            )
        });
    }
}
