//! Execution statuses and results, and the status machine of docs/execution-semantics.md.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an execution is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// A worker is (or should be) advancing it.
    Running,
    /// Stopped at an approval gate or by an operator.
    Paused,
    /// Stopped at a wait gate until an event arrives.
    Waiting,
    /// Ended normally.
    Completed,
    /// Ended by an error.
    Failed,
    /// Ended by an operator.
    Cancelled,
    /// Ended by a deadline.
    TimedOut,
}

impl ExecutionStatus {
    /// Every status.
    pub const ALL: [Self; 7] = [
        Self::Running,
        Self::Paused,
        Self::Waiting,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// Ended: no worker moves it again. Only an operator's retry takes a `failed` or
    /// `timed_out` execution back to `running`; `completed` and `cancelled` are final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    /// Stopped at a gate (approval, event or manual).
    pub fn is_gated(self) -> bool {
        matches!(self, Self::Paused | Self::Waiting)
    }

    /// Whether the status machine (docs/execution-semantics.md) allows `self → to`.
    ///
    /// `running → paused | waiting | completed | failed | cancelled | timed_out`;
    /// `paused | waiting → running | cancelled | timed_out | failed`;
    /// `failed | timed_out → running` (an operator's retry); nothing leaves `completed`
    /// or `cancelled`, and no status transitions to itself.
    pub fn can_transition_to(self, to: Self) -> bool {
        use ExecutionStatus::{Cancelled, Completed, Failed, Paused, Running, TimedOut, Waiting};
        match self {
            Running => matches!(
                to,
                Paused | Waiting | Completed | Failed | Cancelled | TimedOut
            ),
            Paused | Waiting => matches!(to, Running | Cancelled | TimedOut | Failed),
            Failed | TimedOut => to == Running,
            Completed | Cancelled => false,
        }
    }

    /// [`Self::can_transition_to`] as a `Result`, for use with `?`.
    pub fn transition_to(self, to: Self) -> Result<Self, TransitionError> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

/// A refused status transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an execution that is {from} cannot become {to}")]
pub struct TransitionError {
    /// The current status.
    pub from: ExecutionStatus,
    /// The refused target.
    pub to: ExecutionStatus,
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown status name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status `{0}` (expected running, paused, waiting, completed, failed, cancelled or timed_out)")]
pub struct UnknownStatus(pub String);

impl FromStr for ExecutionStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// The business outcome of a completed execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionResult {
    /// The last decision was `allow` (or an approval).
    Allowed,
    /// The last decision was `block` (or a rejection).
    Blocked,
    /// No allow/block decision ran.
    Executed,
}

impl ExecutionResult {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Blocked => "blocked",
            Self::Executed => "executed",
        }
    }
}

/// Why an execution is stopped (`paused_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// At an approval gate.
    Approval,
    /// By an operator.
    Manual,
    /// At a wait gate.
    Event,
}

impl PauseReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approval => "approval",
            Self::Manual => "manual",
            Self::Event => "event",
        }
    }
}

/// Why an execution did not complete (`error.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A step failed for good and had no `on_error`.
    StepFailed,
    /// A deadline passed.
    TimedOut,
    /// The step budget was exceeded.
    MaxStepsExceeded,
    /// An operator cancelled it.
    Cancelled,
    /// The engine could not continue (e.g. its definition snapshot is unreadable).
    Interrupted,
}

#[cfg(test)]
mod tests {
    use super::ExecutionStatus::{
        self, Cancelled, Completed, Failed, Paused, Running, TimedOut, Waiting,
    };

    /// The whole 7×7 table, written out so a change to the machine is a visible diff.
    #[test]
    fn transition_table_is_exactly_the_design() {
        let allowed: &[(ExecutionStatus, ExecutionStatus)] = &[
            (Running, Paused),
            (Running, Waiting),
            (Running, Completed),
            (Running, Failed),
            (Running, Cancelled),
            (Running, TimedOut),
            (Paused, Running),
            (Paused, Cancelled),
            (Paused, TimedOut),
            (Paused, Failed),
            (Waiting, Running),
            (Waiting, Cancelled),
            (Waiting, TimedOut),
            (Waiting, Failed),
            (Failed, Running),
            (TimedOut, Running),
        ];
        for from in ExecutionStatus::ALL {
            for to in ExecutionStatus::ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
                assert_eq!(from.transition_to(to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn ended_statuses_leave_only_by_a_retry() {
        for from in ExecutionStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            let exits: Vec<ExecutionStatus> = ExecutionStatus::ALL
                .into_iter()
                .filter(|to| from.can_transition_to(*to))
                .collect();
            let expected = if matches!(from, Failed | TimedOut) {
                vec![Running]
            } else {
                vec![]
            };
            assert_eq!(exits, expected, "{from}");
        }
    }

    #[test]
    fn names_round_trip() {
        for status in ExecutionStatus::ALL {
            assert_eq!(status.as_str().parse::<ExecutionStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert!("done".parse::<ExecutionStatus>().is_err());
    }
}
