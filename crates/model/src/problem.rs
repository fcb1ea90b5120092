//! Problems found in a definition: where (a JSON path such as `steps[2].on_true`) and why.

use serde::{Deserialize, Serialize};

/// One thing wrong (or suspicious) in a workflow definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// JSON path to the offending value, e.g. `steps[2].on_true`; empty for the document.
    pub path: String,
    /// What is wrong, in a sentence a workflow author can act on.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error and warning found in one definition.
///
/// Errors make the definition unusable; warnings (such as unreachable steps) do not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Problems that make the definition invalid.
    pub errors: Vec<Problem>,
    /// Problems worth knowing about that do not stop the definition from running.
    pub warnings: Vec<Problem>,
}

impl Report {
    /// True when there are no errors (warnings are allowed).
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn error(&mut self, path: &Path, message: impl Into<String>) {
        self.errors.push(Problem::new(path.to_string(), message));
    }

    pub(crate) fn warning(&mut self, path: &Path, message: impl Into<String>) {
        self.warnings.push(Problem::new(path.to_string(), message));
    }
}

/// A JSON path under construction, cheap to extend while walking a document.
#[derive(Debug, Clone, Default)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn root() -> Self {
        Self(String::new())
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let simple = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let mut s = self.0.clone();
        if simple {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(key);
        } else {
            s.push('[');
            s.push_str(&serde_json::Value::String(key.to_owned()).to_string());
            s.push(']');
        }
        Self(s)
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
