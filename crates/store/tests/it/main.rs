//! The backend contract suite on the in-memory store.

use std::sync::Arc;

use tollgate_store::{MemoryStore, Store};

tollgate_store::contract_tests!(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> });
