//! The exhaustive sweep (every crash point of a scenario) and the randomised mode.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fuse::{CrashPoint, Phase};
use crate::run::{run_blocking, Backend, Plan, RunReport};
use crate::scenario::Scenario;

/// A run that broke an invariant, with what it takes to replay it.
#[derive(Debug)]
pub struct Failure {
    /// How to reproduce it: the crash point, or the seed.
    pub replay: String,
    /// What broke.
    pub violations: Vec<String>,
    /// What the client did and was answered.
    pub log: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}:", self.replay)?;
        for v in &self.violations {
            writeln!(f, "  violated: {v}")?;
        }
        for line in &self.log {
            writeln!(f, "    | {line}")?;
        }
        Ok(())
    }
}

/// What a sweep explored and found.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Store calls of the crash-free run: each is a crash point, twice (before/after).
    pub calls: usize,
    /// Runs made (the crash-free one included).
    pub runs: usize,
    /// Processes killed over all runs.
    pub crashes: usize,
    /// Invariant checks made over all runs.
    pub checks: usize,
    /// Runs that broke an invariant.
    pub failures: Vec<Failure>,
    /// Wall time.
    pub elapsed: Duration,
}

fn failure(replay: String, report: RunReport) -> Option<Failure> {
    (!report.violations.is_empty()).then_some(Failure {
        replay,
        violations: report.violations,
        log: report.log,
    })
}

/// Kills the process at every `stride`-th store call of `scenario`, before and after the
/// call, on `threads` threads; every run is checked.
pub fn exhaustive(
    scenario: &Scenario,
    backend: Backend,
    stride: usize,
    threads: usize,
) -> anyhow::Result<SweepReport> {
    let began = Instant::now();
    let dry = run_blocking(scenario, backend, &Plan::default())?;
    let mut report = SweepReport {
        calls: dry.calls,
        runs: 1,
        checks: dry.checks,
        ..SweepReport::default()
    };
    report
        .failures
        .extend(failure(format!("{} without a crash", scenario.name), dry));
    let points: Vec<CrashPoint> = (0..report.calls)
        .step_by(stride.max(1))
        .flat_map(|call| {
            [Phase::Before, Phase::After]
                .into_iter()
                .map(move |phase| CrashPoint { call, phase })
        })
        .collect();
    let threads = threads.max(1);
    let results: Vec<anyhow::Result<(CrashPoint, RunReport)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let points = &points;
                scope.spawn(move || {
                    points
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|point| {
                            let plan = Plan {
                                crashes: vec![*point],
                                jitter: None,
                            };
                            run_blocking(scenario, backend, &plan).map(|r| (*point, r))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    for result in results {
        let (point, run) = result?;
        report.runs += 1;
        report.checks += run.checks;
        report.crashes += run.crashed.len();
        let hit = run
            .crashed
            .first()
            .map_or_else(String::new, |(_, name)| format!(" ({name})"));
        report.failures.extend(failure(
            format!("{} killed {point}{hit}", scenario.name),
            run,
        ));
    }
    report.elapsed = began.elapsed();
    Ok(report)
}

/// One randomised run: the seed picks the scenario, two crash points (the first
/// process's and its successor's), the groups of acts sent concurrently and the
/// interleaving of their store calls. The same seed replays the same run.
pub fn random(
    scenarios: &[Scenario],
    seed: u64,
    backend: Backend,
) -> anyhow::Result<(String, RunReport)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let scenario = &scenarios[rng.random_range(0..scenarios.len())];
    let dry = run_blocking(scenario, backend, &Plan::default())?;
    let point = |rng: &mut StdRng| CrashPoint {
        call: rng.random_range(0..dry.calls.max(1)),
        phase: if rng.random_bool(0.5) {
            Phase::Before
        } else {
            Phase::After
        },
    };
    let plan = Plan {
        crashes: vec![point(&mut rng), point(&mut rng)],
        jitter: Some(rng.random()),
    };
    let report = run_blocking(scenario, backend, &plan)?;
    Ok((scenario.name.to_owned(), report))
}

/// Runs `seeds` randomised runs from `first` on; returns the runs made, checks and
/// failures (each naming its seed).
pub fn randomised(
    scenarios: &[Scenario],
    first: u64,
    seeds: u64,
    backend: Backend,
) -> anyhow::Result<SweepReport> {
    let began = Instant::now();
    let mut report = SweepReport::default();
    for seed in first..first + seeds {
        let (name, run) = random(scenarios, seed, backend)?;
        report.runs += 1;
        report.checks += run.checks;
        report.crashes += run.crashed.len();
        report.failures.extend(failure(
            format!("seed {seed} ({name}; replay: cargo xtask sim --seed {seed})"),
            run,
        ));
    }
    report.elapsed = began.elapsed();
    Ok(report)
}
