//! Wire shapes of docs/api.md. They are defined in [`tollgate_model::wire`], shared with
//! the typed client, so the server and its clients cannot drift apart; this module adds
//! what only the server can build (from the store's types).

pub use tollgate_model::wire::*;

/// The wire shape of a quarantined execution.
pub fn quarantined(q: &tollgate_store::Quarantined) -> QuarantinedDto {
    QuarantinedDto {
        execution_id: q.execution_id,
        detail: q.detail.clone(),
        original: q.original.clone(),
        quarantined_at: q.quarantined_at,
    }
}
