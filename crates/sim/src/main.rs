//! `tollgate-sim`: the crash-point explorer from the command line (`cargo xtask sim`).

use anyhow::{bail, Result};
use clap::Parser;
use tollgate_sim::sweep::{exhaustive, randomised, SweepReport};
use tollgate_sim::Backend;

/// Kills Tollgate at every store call (or at random ones) and checks nothing was lost.
#[derive(Debug, Parser)]
#[command(name = "tollgate-sim")]
struct Cli {
    /// Randomised runs: this many seeds, from `--seed` on.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed (alone: replays that one run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The exhaustive sweep instead: every crash point of every scenario.
    #[arg(long)]
    exhaustive: bool,
    /// Only this scenario.
    #[arg(long)]
    scenario: Option<String>,
    /// `memory` (default) or `sqlite`.
    #[arg(long, default_value = "memory")]
    backend: String,
    /// Print the client's log of every failing run.
    #[arg(long)]
    verbose: bool,
}

fn print(what: &str, report: &SweepReport, verbose: bool) {
    println!(
        "{what}: {} runs, {} processes killed, {} invariant checks, {} failing, {:.1} s",
        report.runs,
        report.crashes,
        report.checks,
        report.failures.len(),
        report.elapsed.as_secs_f64()
    );
    for f in &report.failures {
        if verbose {
            print!("{f}");
        } else {
            println!("  {}: {}", f.replay, f.violations.join("; "));
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let backend = match cli.backend.as_str() {
        "memory" => Backend::Memory,
        "sqlite" => Backend::Sqlite,
        other => bail!("--backend: `{other}` is not memory or sqlite"),
    };
    let mut scenarios = tollgate_sim::all();
    if let Some(name) = &cli.scenario {
        scenarios.retain(|s| s.name == name);
        if scenarios.is_empty() {
            bail!("--scenario: no scenario is called `{name}`");
        }
    }
    let mut failed = 0;
    if cli.exhaustive {
        for scenario in &scenarios {
            let report = exhaustive(scenario, backend, 1, 2)?;
            print(scenario.name, &report, cli.verbose);
            failed += report.failures.len();
        }
    } else {
        let seeds = cli.seeds.unwrap_or(1);
        let report = randomised(&scenarios, cli.seed, seeds, backend)?;
        print(
            &format!("seeds {}..{}", cli.seed, cli.seed + seeds),
            &report,
            cli.verbose,
        );
        failed += report.failures.len();
    }
    if failed > 0 {
        bail!("{failed} runs broke an invariant");
    }
    Ok(())
}
