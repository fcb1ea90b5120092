//! The rule every PostgreSQL migration from 0009 on follows, checked on the files: an
//! index on an existing table is built without blocking writes.
//!
//! `CREATE INDEX` takes a lock that blocks every write to the table for the whole build —
//! minutes on a large `executions` table, during which no step commits. `CREATE INDEX
//! CONCURRENTLY` does not, but cannot run in a transaction, nor in a multi-statement
//! query (PostgreSQL runs those as one implicit transaction). So such a migration starts
//! with sqlx's `-- no-transaction` line and holds that one statement. The statement runs
//! under the connection's `lock_timeout`, so it never queues every later write behind a
//! long transaction. Migrations up to 0008 predate the rule (they built their indexes
//! when the tables were new).

/// The first migration version the rule applies to.
const FIRST: i64 = 9;

/// What is wrong with migration `version` (its SQL text) under the rule.
fn violations(version: i64, sql: &str) -> Vec<String> {
    if version < FIRST {
        return Vec::new();
    }
    let code: Vec<&str> = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    let text = code.join(" ").to_ascii_uppercase();
    let mut problems = Vec::new();
    let creates_index = text.contains("CREATE INDEX") || text.contains("CREATE UNIQUE INDEX");
    if !creates_index {
        return problems;
    }
    if !text.contains("INDEX CONCURRENTLY") {
        problems.push(
            "builds an index without CONCURRENTLY (blocks writes for the whole build)".into(),
        );
    }
    if !sql.trim_start().starts_with("-- no-transaction") {
        problems.push("an index build must start with `-- no-transaction` (CONCURRENTLY cannot run in a transaction)".into());
    }
    let statements = text.split(';').filter(|s| !s.trim().is_empty()).count();
    if statements != 1 {
        problems.push(format!(
            "holds {statements} statements; an index build must be alone (several statements run as one implicit transaction)"
        ));
    }
    problems
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::violations;

    #[test]
    fn every_migration_follows_the_index_rule() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/postgres");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let version: i64 = name.split('_').next().unwrap().parse().unwrap();
            let sql = std::fs::read_to_string(&path).unwrap();
            let problems = violations(version, &sql);
            assert!(problems.is_empty(), "{name}: {problems:?}");
            checked += 1;
        }
        assert!(checked >= 8);
    }

    #[test]
    fn the_rule_refuses_blocking_or_transactional_index_builds() {
        let blocking = "CREATE INDEX executions_by_key ON executions (workflow_key);";
        assert_eq!(
            violations(9, blocking).len(),
            2,
            "{:?}",
            violations(9, blocking)
        );
        let in_tx = "CREATE INDEX CONCURRENTLY executions_by_key ON executions (workflow_key);";
        assert_eq!(violations(9, in_tx).len(), 1);
        let two = "-- no-transaction\nCREATE INDEX CONCURRENTLY a ON executions (x);\nCREATE INDEX CONCURRENTLY b ON executions (y);";
        assert_eq!(violations(9, two).len(), 1);
        let good = "-- no-transaction\n-- Why: listing by key.\nCREATE INDEX CONCURRENTLY IF NOT EXISTS executions_by_key ON executions (workflow_key);\n";
        assert!(violations(9, good).is_empty(), "{:?}", violations(9, good));
        // Tables are new in older migrations: their plain index builds stand.
        assert!(violations(1, blocking).is_empty());
        // No index: nothing to say.
        assert!(violations(9, "ALTER TABLE executions ADD COLUMN x int;").is_empty());
    }
}
