//! `cargo xtask <task>`: the one entry point for checks.
//!
//! - `test`: formatting, clippy (`-D warnings`), the layering rule, migration parity, then
//!   every test of the workspace.
//! - `bench`: the benchmarks whose figures go into `docs/benchmarks.md`.
//! - `lint`: the checks of `test` without running tests.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("test") => {
            lint()?;
            test(&args[1..])
        }
        Some("lint") => lint(),
        Some("bench") => bench(&args[1..]),
        Some("layering") => layering(),
        _ => {
            eprintln!("usage: cargo xtask <test|lint|bench|layering> [extra cargo test args]");
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn lint() -> Result<()> {
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    run(
        "cargo clippy -D warnings",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    layering()?;
    migrations()
}

fn test(extra: &[String]) -> Result<()> {
    eprintln!("xtask: cargo test --workspace");
    let mut child = cargo()
        .args(["test", "--workspace", "--all-features"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    // Echo the output and add up every "test result:" line, so the run ends with one
    // total for the whole workspace rather than the last crate's doc-test count.
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                passed += count(rest, "passed");
                failed += count(rest, "failed");
                ignored += count(rest, "ignored");
            }
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The number before `word` in a "test result:" line (`ok. 12 passed; 0 failed; …`).
fn count(line: &str, word: &str) -> u64 {
    line.split(';')
        .filter_map(|part| {
            let mut words = part.split_whitespace().rev();
            if words.next() == Some(word) {
                words.next().and_then(|n| n.parse::<u64>().ok())
            } else {
                None
            }
        })
        .sum()
}

fn bench(extra: &[String]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["bench", "--workspace"]).args(extra);
    run("cargo bench --workspace", &mut cmd)
}

/// The dependency rule of docs/ARCHITECTURE.md: which workspace crates each crate may
/// depend on (normal dependencies; dev-dependencies are free).
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("tollgate-model", &[][..]),
        ("tollgate-store", &["tollgate-model"][..]),
        (
            "tollgate-postgres",
            &["tollgate-model", "tollgate-store"][..],
        ),
        ("tollgate-sqlite", &["tollgate-model", "tollgate-store"][..]),
        ("tollgate-engine", &["tollgate-model", "tollgate-store"][..]),
        (
            "tollgate-resumer",
            &["tollgate-model", "tollgate-store", "tollgate-engine"][..],
        ),
    ])
}

fn layering() -> Result<()> {
    eprintln!("xtask: layering");
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let packages = metadata["packages"]
        .as_array()
        .context("no packages in cargo metadata")?;
    let members: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let rules = allowed();
    let mut problems = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        let internal: Vec<&str> = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| members.contains(d))
            .collect();
        match rules.get(name) {
            Some(allowed) => {
                for dep in internal {
                    if !allowed.contains(&dep) {
                        problems.push(format!("{name} may not depend on {dep}"));
                    }
                }
            }
            // Binaries and xtask may depend on anything; any other library must be listed.
            None if package["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| {
                    t["kind"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|k| k == "lib")
                }) =>
            {
                problems.push(format!(
                    "{name} is a library missing from the layering rule in xtask"
                ));
            }
            None => {}
        }
    }
    if !problems.is_empty() {
        bail!("layering violations:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// Both backends must have the same sequence of migrations (same file names).
fn migrations() -> Result<()> {
    eprintln!("xtask: migration parity");
    let list = |dir: &str| -> Result<Vec<String>> {
        let mut names = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if Path::new(&name)
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("sql"))
                {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    };
    let pg = list("migrations/postgres")?;
    let lite = list("migrations/sqlite")?;
    if pg != lite {
        bail!("migrations differ between backends:\n  postgres: {pg:?}\n  sqlite:   {lite:?}");
    }
    Ok(())
}
