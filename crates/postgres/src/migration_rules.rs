//! The rules every PostgreSQL migration from 0009 on follows, checked on the files: an
//! index on an existing table is built without blocking writes, and no existing table
//! gains a column.
//!
//! `CREATE INDEX` takes a lock that blocks every write to the table for the whole build —
//! minutes on a large `executions` table, during which no step commits. `CREATE INDEX
//! CONCURRENTLY` does not, but cannot run in a transaction, nor in a multi-statement
//! query (PostgreSQL runs those as one implicit transaction). So such a migration starts
//! with sqlx's `-- no-transaction` line and holds that one statement. The statement runs
//! under the connection's `lock_timeout`, so it never queues every later write behind a
//! long transaction. Migrations up to 0008 predate the rule (they built their indexes
//! when the tables were new).
//!
//! No column is added to an existing table because the previous release, which keeps
//! running during a rolling upgrade, reads whole rows (`SELECT *`, `RETURNING *`) through
//! prepared statements, and PostgreSQL refuses to run a prepared statement whose result
//! columns changed ("cached plan must not change result type") — every process of the
//! previous release would fail on every such statement until its connections were
//! replaced. New data about an existing row goes into a new table keyed by the row's id
//! (as `execution_formats` does). This release reads every table by named columns
//! (checked below, and by `reads_survive_columns_a_newer_release_adds`), so the rule can
//! be lifted once this release is the previous one (`previous::RELEASE` in xtask).

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
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        if *w != "ALTER" || words.get(i + 1) != Some(&"TABLE") {
            continue;
        }
        let rest = &words[i + 2..];
        let skip = if rest.starts_with(&["IF", "EXISTS"]) {
            2
        } else {
            0
        };
        let rest = &rest[skip.min(rest.len())..];
        let table = rest.first().map_or("", |t| t.trim_start_matches("ONLY"));
        let created = text.contains(&format!("CREATE TABLE {table} "))
            || text.contains(&format!("CREATE TABLE IF NOT EXISTS {table} "));
        if rest.get(1) == Some(&"ADD") && rest.get(2) != Some(&"CONSTRAINT") && !created {
            problems.push(format!(
                "adds a column to the existing table {}: the previous release's whole-row prepared statements would fail; put it in a new table",
                table.to_ascii_lowercase()
            ));
        }
    }
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
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
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
        // No index, no new column: nothing to say.
        assert!(violations(9, "CREATE TABLE x (id uuid PRIMARY KEY);").is_empty());
    }

    /// Whole-row reads (`SELECT *`, `RETURNING *`, `alias.*` of a table) would make the
    /// next release's new columns break this one mid-upgrade; reads name their columns
    /// (`columns!`). Whole rows of a subquery or CTE (whose columns the query fixes) and
    /// of record sets built from parameters are fine.
    #[test]
    fn queries_name_their_columns() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let whole_row =
            regex::Regex::new(r"SELECT \*(,| FROM (\w+))|RETURNING (\w+\.)?\*|\b(\w+)\.\*")
                .unwrap();
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                for found in whole_row.captures_iter(line) {
                    let fine = match (found.get(2), found.get(4)) {
                        (Some(from), _) => matches!(from.as_str(), "jsonb_to_recordset" | "UNNEST"),
                        (None, Some(alias)) => matches!(alias.as_str(), "x" | "upd"),
                        _ => false,
                    };
                    assert!(
                        fine,
                        "{}:{}: a whole-row read: {}",
                        path.display(),
                        n + 1,
                        line.trim()
                    );
                }
            }
            checked += 1;
        }
        assert!(checked > 10);
    }

    #[test]
    fn the_rule_refuses_new_columns_on_existing_tables() {
        for sql in [
            "ALTER TABLE executions ADD COLUMN x int;",
            "alter table if exists executions add x int;",
            "ALTER TABLE snapshots ADD COLUMN format bigint NOT NULL DEFAULT 1;",
        ] {
            assert_eq!(
                violations(9, sql).len(),
                1,
                "{sql}: {:?}",
                violations(9, sql)
            );
        }
        // A table the migration itself creates may grow; a constraint adds no column.
        let new = "CREATE TABLE t (id uuid PRIMARY KEY);\nALTER TABLE t ADD COLUMN x int;";
        assert!(violations(9, new).is_empty(), "{:?}", violations(9, new));
        let check = "ALTER TABLE executions ADD CONSTRAINT c CHECK (steps_run >= 0);";
        assert!(violations(9, check).is_empty());
        // Migrations up to 0008 predate the rule.
        assert!(violations(8, "ALTER TABLE executions ADD COLUMN x int;").is_empty());
    }
}
