//! Time, behind a trait so tests drive deadlines without sleeping.

use std::fmt::Debug;
use std::sync::{Mutex, PoisonError};

use chrono::{SubsecRound, Utc};
use tollgate_model::records::Timestamp;

/// Where the engine and resumer get "now" from.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system clock, at microsecond precision: what both SQL backends store, so a value
/// read back equals the value written (an API answer never changes between the first
/// response and a later read).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that only moves when told to: deadlines in tests pass instantly.
#[derive(Debug)]
pub struct TestClock {
    now: Mutex<Timestamp>,
}

impl TestClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += chrono::TimeDelta::from_std(by).unwrap_or(chrono::TimeDelta::MAX);
    }

    /// Sets the clock.
    pub fn set(&self, at: Timestamp) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
