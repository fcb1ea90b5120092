//! The client's side of a run: what it sent and what it was answered, which the
//! invariants (`check`) hold the store to.

use std::collections::{BTreeMap, HashMap};

use tollgate_model::records::Event;
use uuid::Uuid;

/// What the client was told, per act.
#[derive(Debug, Default)]
pub(crate) struct Client {
    /// Events answered 2xx, by key.
    pub sent: BTreeMap<&'static str, Event>,
    /// Direct deliveries refused (409): key, addressee, type.
    pub refused_deliveries: Vec<(&'static str, Uuid, &'static str)>,
    /// Decisions answered 2xx (or recognised as the caller's own after a lost answer):
    /// approval, decider.
    pub decisions: Vec<(Uuid, &'static str)>,
    /// Decisions refused (403/409): approval, decider.
    pub refused_decisions: Vec<(Uuid, &'static str)>,
    /// The approval each (execution key, decider) aimed at on its first try.
    pub approval_for: HashMap<(&'static str, &'static str), Uuid>,
    /// Answers that were server errors (none may happen).
    pub failures: Vec<String>,
    /// Which acts were answered.
    pub answered: Vec<bool>,
    pub log: Vec<String>,
}
