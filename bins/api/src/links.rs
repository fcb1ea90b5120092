//! Signed decision links (docs/notifications.md, "Decision links"): the keys, tokens and
//! digests live in `tollgate_bootstrap::links`, shared with the workers that put links
//! into notifications; the pages that open them are in the console.

pub use tollgate_bootstrap::links::*;
