//! What a Rust service that talks to a Tollgate server does: send a business event, wait
//! for the execution it starts to stop at its approval gate, and decide the approval.
//!
//! ```text
//! TOLLGATE_URL=http://127.0.0.1:8080 TOLLGATE_KEY=tg_… \
//!     cargo run -p tollgate-client --example approve -- order.created '{"total": 25000}'
//! ```
//!
//! The key must be allowed to send events (`service`, `operator` or `admin`); deciding
//! needs a key of an approver role other than the requester's, so this example decides
//! with `TOLLGATE_APPROVER_KEY` when it is set and only reports the gate otherwise.

use std::time::Duration;

use tollgate_client::wire::{DecisionBody, NewEventDto};
use tollgate_client::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TOLLGATE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = std::env::var("TOLLGATE_KEY")?;
    let mut args = std::env::args().skip(1);
    let event_type = args.next().unwrap_or_else(|| "order.created".into());
    let payload: serde_json::Value =
        serde_json::from_str(&args.next().unwrap_or_else(|| "{}".into()))?;

    let client = Client::new(&url, key)?;
    // An event_id makes the send safe to retry: the server recognises a repeat.
    let event = NewEventDto::new(event_type, payload).with_id(uuid::Uuid::now_v7().to_string());
    let accepted = client.send_event(&event, false).await?;
    println!(
        "event {} started {} execution(s)",
        accepted.id,
        accepted.started.len()
    );

    for id in accepted.started {
        let execution = client
            .wait_until_stopped(id, Duration::from_secs(30))
            .await?;
        println!("execution {id}: {}", execution.status);
        let Some(approval) = execution.approval_id else {
            continue;
        };
        let Ok(approver_key) = std::env::var("TOLLGATE_APPROVER_KEY") else {
            println!("  waits for approval {approval}");
            continue;
        };
        let approver = Client::new(&url, approver_key)?;
        match approver
            .approve(
                approval,
                &DecisionBody::because("checked by the example"),
                true,
            )
            .await
        {
            Ok(decided) => println!(
                "  approval {}: {}, execution now {}",
                approval, decided.approval.status, decided.execution.status
            ),
            // Someone else decided first, or the deadline passed: the server says which.
            Err(e) if e.is_conflict() => println!("  not decided: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
