//! `cargo xtask <task>`: the one entry point for checks.
//!
//! - `test`: formatting, clippy (`-D warnings`), the layering rule, migration parity, then
//!   every test of the workspace.
//! - `bench`: the benchmarks whose figures go into `docs/benchmarks.md`.
//! - `lint`: the checks of `test` without running tests.
//! - `dist`: release binaries plus the CLI's shell completions and man pages, in
//!   `target/dist`.
//! - `sim`: the crash-point explorer (`--seeds N` randomised runs, `--seed S` replays
//!   one, `--exhaustive` kills at every store call of every scenario).

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
            // PostgreSQL for the backend tests: the given server, or a throwaway cluster
            // that lives as long as this process.
            let _cluster = match std::env::var("TOLLGATE_TEST_DATABASE_URL") {
                Ok(url) if !url.is_empty() => {
                    eprintln!("xtask: using PostgreSQL at TOLLGATE_TEST_DATABASE_URL");
                    None
                }
                _ => {
                    let cluster = pg::Cluster::start()?;
                    std::env::set_var("TOLLGATE_TEST_DATABASE_URL", &cluster.url);
                    Some(cluster)
                }
            };
            let browser = browser::ensure();
            let mcp_sdk = mcp_sdk::ensure(&root);
            let smtp = smtp::ensure(&root);
            let previous = previous::build();
            let result = test(&args[1..]).and_then(|()| package());
            if let Err(err) = &previous {
                eprintln!("\n************************************************************");
                eprintln!("xtask: THE ROLLING-UPGRADE TEST WAS SKIPPED: {err:#}");
                eprintln!("************************************************************\n");
            }
            if let Err(err) = &smtp {
                eprintln!("\n************************************************************");
                eprintln!("xtask: SMTP TESTS WERE SKIPPED: {err:#}");
                eprintln!("************************************************************\n");
            }
            if let Err(err) = &mcp_sdk {
                eprintln!("\n************************************************************");
                eprintln!("xtask: MCP SDK TESTS WERE SKIPPED: {err:#}");
                eprintln!("************************************************************\n");
            }
            if !browser {
                eprintln!("\n************************************************************");
                eprintln!("xtask: BROWSER TESTS WERE SKIPPED: chromium/chromedriver could not be installed");
                eprintln!("************************************************************\n");
            }
            result
        }
        Some("lint") => lint(),
        Some("sim") => sim(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("layering") => layering(),
        Some("package") => package(),
        Some("msrv") => msrv(),
        Some("dist") => dist(),
        _ => {
            eprintln!(
                "usage: cargo xtask <test|lint|bench|layering|msrv|package|dist|sim> [extra args]"
            );
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

/// Release binaries and, generated from the CLI's clap definitions, its completions
/// (bash, zsh, fish) and man pages: everything a package of Tollgate ships.
fn dist() -> Result<()> {
    let root = workspace_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    run(
        "cargo build --release (tollgate, tollgate-api, tollgate-resume-worker)",
        cargo().current_dir(&root).args([
            "build",
            "--release",
            "--bin",
            "tollgate",
            "--bin",
            "tollgate-api",
            "--bin",
            "tollgate-resume-worker",
        ]),
    )?;
    let release = target.join("release");
    let dist = target.join("dist");
    let _ = std::fs::remove_dir_all(&dist);
    for dir in ["bin", "completions", "man/man1"] {
        std::fs::create_dir_all(dist.join(dir))?;
    }
    for bin in ["tollgate", "tollgate-api", "tollgate-resume-worker"] {
        let name = format!("{bin}{}", std::env::consts::EXE_SUFFIX);
        std::fs::copy(release.join(&name), dist.join("bin").join(&name))
            .with_context(|| format!("copying {name}"))?;
    }
    let cli = dist
        .join("bin")
        .join(format!("tollgate{}", std::env::consts::EXE_SUFFIX));
    for (shell, file) in [
        ("bash", "tollgate.bash"),
        ("zsh", "_tollgate"),
        ("fish", "tollgate.fish"),
    ] {
        let out = Command::new(&cli).args(["completions", shell]).output()?;
        if !out.status.success() {
            bail!("tollgate completions {shell} failed");
        }
        std::fs::write(dist.join("completions").join(file), out.stdout)?;
    }
    run(
        "tollgate man",
        Command::new(&cli).arg("man").arg(dist.join("man/man1")),
    )?;
    eprintln!("xtask: dist is in {}", dist.display());
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
    backend_features()?;
    migrations()?;
    msrv()?;
    run(
        "cargo doc --no-deps, warnings denied",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )
}

/// The workspace's `rust-version` is true of what it links: no dependency in the lock
/// file declares a newer one, and clippy's `incompatible_msrv` (on under `-D warnings`)
/// refuses standard-library items newer than it in our own code. Only the one
/// toolchain the machine has can build, so language features are not checked against
/// an older compiler (docs/testing.md).
fn msrv() -> Result<()> {
    eprintln!("xtask: minimum supported Rust version");
    let packages = packages("--locked")?;
    let version = |text: &str| -> Vec<u64> {
        let mut parts: Vec<u64> = text.split('.').filter_map(|p| p.parse().ok()).collect();
        parts.resize(3, 0);
        parts
    };
    let ours = packages
        .iter()
        .find(|p| p["name"] == "tollgate")
        .and_then(|p| p["rust_version"].as_str())
        .context("the tollgate crate declares no rust-version")?;
    let newer: Vec<String> = packages
        .iter()
        .filter_map(|p| {
            let needs = p["rust_version"].as_str()?;
            (version(needs) > version(ours)).then(|| {
                format!(
                    "{} {} needs Rust {needs}",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?")
                )
            })
        })
        .collect();
    if !newer.is_empty() {
        bail!(
            "the workspace declares rust-version {ours}, but:\n  {}\nraise rust-version (and say so in the release notes) or hold the dependency back",
            newer.join("\n  ")
        );
    }
    Ok(())
}

/// Cargo verifies a package against the packages of its workspace dependencies, which
/// it unpacks from a scratch registry into `$CARGO_HOME/registry/src/<scratch>/` — and
/// reuses an unpacked `name-version` from an earlier run, even though the version did
/// not change and the source did. Removes those copies so that every run verifies
/// against this tree (crates.io's own copies are left alone).
fn forget_unpacked_packages() -> Result<()> {
    let home = std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"),
        PathBuf::from,
    );
    let Ok(registries) = std::fs::read_dir(home.join("registry").join("src")) else {
        return Ok(());
    };
    let ours: Vec<String> = std::fs::read_dir("crates")?
        .chain(std::fs::read_dir("bins")?)
        .filter_map(|entry| {
            let manifest = std::fs::read_to_string(entry.ok()?.path().join("Cargo.toml")).ok()?;
            let name = manifest
                .lines()
                .find_map(|line| line.strip_prefix("name = "))?
                .trim_matches('"')
                .to_owned();
            Some(format!("{name}-"))
        })
        .collect();
    for registry in registries {
        let registry = registry?;
        if registry.file_name().to_string_lossy().starts_with("index.") {
            continue;
        }
        for unpacked in std::fs::read_dir(registry.path())? {
            let unpacked = unpacked?;
            let name = unpacked.file_name().to_string_lossy().into_owned();
            let is_ours = ours.iter().any(|prefix| {
                name.strip_prefix(prefix.as_str())
                    .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
            });
            if is_ours {
                std::fs::remove_dir_all(unpacked.path())
                    .with_context(|| format!("cannot remove {}", unpacked.path().display()))?;
            }
        }
    }
    Ok(())
}

/// Every crate packs and builds from its package alone, against the packages of the
/// crates it depends on (`cargo package --workspace` verifies each in a scratch
/// registry): no file outside a crate, no dependency without a version, metadata
/// complete.
///
/// The packages build in a target directory of their own, where only our crates are
/// removed before each run: cargo takes a registry crate's build as final for its
/// version, and ours keep one version while their source changes.
fn package() -> Result<()> {
    forget_unpacked_packages()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("package-verify");
    for dir in ["debug/.fingerprint", "debug/deps"] {
        let Ok(entries) = std::fs::read_dir(target.join(dir)) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("tollgate") || name.starts_with("libtollgate") {
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                }
                .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
    }
    run(
        "cargo package --workspace",
        cargo()
            .args([
                "package",
                "--workspace",
                "--allow-dirty",
                "--exclude",
                "xtask",
                "--exclude",
                "tollgate-example-orders",
            ])
            .env("CARGO_TARGET_DIR", &target),
    )
}

/// An embedder that turns one backend off does not compile it: the `tollgate` crate
/// builds with each feature alone, and its dependency tree then lacks the other.
fn backend_features() -> Result<()> {
    for (feature, absent) in [
        ("sqlite", "tollgate-postgres"),
        ("postgres", "tollgate-sqlite"),
    ] {
        run(
            &format!("cargo clippy -p tollgate --features {feature} alone"),
            cargo().args([
                "clippy",
                "-p",
                "tollgate",
                "--no-default-features",
                "--features",
                feature,
                "--",
                "-D",
                "warnings",
            ]),
        )?;
        let tree = cargo()
            .args([
                "tree",
                "-p",
                "tollgate",
                "--no-default-features",
                "--features",
                feature,
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .output()
            .context("could not run cargo tree")?;
        if !tree.status.success() {
            bail!(
                "cargo tree failed: {}",
                String::from_utf8_lossy(&tree.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&tree.stdout);
        if tree.lines().any(|line| line.starts_with(absent)) {
            bail!("tollgate with only the `{feature}` feature still depends on {absent}");
        }
    }
    Ok(())
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

/// The crash-point explorer's randomised mode (`--seeds N`, `--seed S` to replay one
/// run), or its exhaustive sweep (`--exhaustive`); see `crates/sim`.
fn sim(extra: &[String]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--release", "-p", "tollgate-sim", "--"])
        .args(extra);
    run("tollgate-sim", &mut cmd)
}

fn bench(extra: &[String]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["bench", "--workspace"]).args(extra);
    run("cargo bench --workspace", &mut cmd)
}

mod previous {
    //! The previous release's `tollgate-api`, for the rolling-upgrade test (the previous
    //! release and this one on one database while this one migrates it).

    use std::path::PathBuf;
    use std::process::Command;

    use anyhow::{bail, Context, Result};

    /// The commit of the previous release: the last commit before this release's first
    /// migration (0008). Move it forward when a release is cut, so the test always pairs
    /// a release with the one before.
    pub const RELEASE: &str = "41a0e53a92cd1c8219b0285d0242aae4a7731cdb";

    /// Extracts [`RELEASE`] from the repository's history and builds its `tollgate-api`
    /// (debug, in a target directory of its own next to the usual one, so repeated runs
    /// reuse it), then sets `TOLLGATE_PREVIOUS_API_BIN` to it, which makes the upgrade
    /// test run (and fail rather than skip).
    pub fn build() -> Result<()> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| PathBuf::from("target"), PathBuf::from)
            .join("previous-release");
        let source = target.join(format!("src-{}", &RELEASE[..12]));
        if !source.join("Cargo.toml").exists() {
            std::fs::create_dir_all(&source)?;
            let archive = Command::new("git")
                .args(["archive", "--format=tar", RELEASE])
                .output()
                .context("could not run git archive")?;
            if !archive.status.success() {
                bail!(
                    "the previous release {RELEASE} is not in this clone's history: {}",
                    String::from_utf8_lossy(&archive.stderr).trim()
                );
            }
            let mut tar = Command::new("tar")
                .arg("-x")
                .arg("-C")
                .arg(&source)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .context("could not run tar")?;
            if let Some(mut stdin) = tar.stdin.take() {
                use std::io::Write;
                stdin.write_all(&archive.stdout)?;
            }
            if !tar.wait()?.success() {
                bail!("could not extract the previous release");
            }
        }
        eprintln!(
            "xtask: building the previous release's tollgate-api ({})",
            &RELEASE[..12]
        );
        let status = super::cargo()
            .args(["build", "--quiet", "--bin", "tollgate-api"])
            .current_dir(&source)
            .env("CARGO_TARGET_DIR", target.join("target"))
            .status()
            .context("could not build the previous release")?;
        if !status.success() {
            bail!("building the previous release failed ({status})");
        }
        let bin = target.join("target").join("debug").join("tollgate-api");
        std::env::set_var("TOLLGATE_PREVIOUS_API_BIN", &bin);
        Ok(())
    }
}

mod mcp_sdk {
    //! The official MCP Python SDK, which the MCP tests drive Tollgate with as an agent's
    //! runtime would: installed from the Python package index into a virtual environment under the target
    //! directory (once; later runs reuse it).

    use std::path::{Path, PathBuf};
    use std::process::Command;

    use anyhow::{bail, Context, Result};

    /// The SDK release the tests are written against.
    const MCP: &str = "mcp==2.3.0";

    /// Makes the SDK available and points the tests at its interpreter
    /// (`TOLLGATE_MCP_PYTHON`), requiring them to run (`TOLLGATE_REQUIRE_MCP_SDK`).
    pub fn ensure(root: &Path) -> Result<()> {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let venv = target.join("mcp-sdk");
        let python = venv.join("bin").join("python");
        let ready = |python: &Path| {
            Command::new(python)
                .args([
                    "-c",
                    "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '2.3.0')",
                ])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ready(&python) {
            eprintln!(
                "xtask: installing the MCP Python SDK ({MCP}) into {}",
                venv.display()
            );
            let made = Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv)
                .status()
                .context("python3 is needed for the MCP SDK tests")?;
            if !made.success() {
                bail!("python3 -m venv failed");
            }
            let installed = Command::new(venv.join("bin").join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", MCP])
                .status()
                .context("cannot run pip")?;
            if !installed.success() || !ready(&python) {
                bail!("pip install {MCP} failed");
            }
        }
        std::env::set_var("TOLLGATE_MCP_PYTHON", &python);
        std::env::set_var("TOLLGATE_REQUIRE_MCP_SDK", "1");
        Ok(())
    }
}

mod smtp {
    //! A real SMTP server for the notification tests: `aiosmtpd` from the Python package index, in a virtual
    //! environment under the target directory (once; later runs reuse it).

    use std::path::{Path, PathBuf};
    use std::process::Command;

    use anyhow::{bail, Context, Result};

    const AIOSMTPD: &str = "aiosmtpd==1.4.6";

    /// Makes aiosmtpd available and points the tests at its interpreter
    /// (`TOLLGATE_SMTP_PYTHON`), requiring them to run (`TOLLGATE_REQUIRE_SMTP`).
    pub fn ensure(root: &Path) -> Result<()> {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let venv = target.join("smtp-server");
        let python = venv.join("bin").join("python");
        let ready = |python: &Path| {
            Command::new(python)
                .args([
                    "-c",
                    "import importlib.metadata as m, sys; sys.exit(m.version('aiosmtpd') != '1.4.6')",
                ])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ready(&python) {
            eprintln!("xtask: installing {AIOSMTPD} into {}", venv.display());
            let made = Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv)
                .status()
                .context("python3 is needed for the SMTP tests")?;
            if !made.success() {
                bail!("python3 -m venv failed");
            }
            let installed = Command::new(venv.join("bin").join("pip"))
                .args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    AIOSMTPD,
                ])
                .status()
                .context("cannot run pip")?;
            if !installed.success() || !ready(&python) {
                bail!("pip install {AIOSMTPD} failed");
            }
        }
        std::env::set_var("TOLLGATE_SMTP_PYTHON", &python);
        std::env::set_var("TOLLGATE_REQUIRE_SMTP", "1");
        Ok(())
    }
}

mod browser {
    //! Debian's chromium and chromedriver for the console's browser tests.

    use std::path::Path;
    use std::process::Command;

    /// Makes sure chromedriver is there (installing `chromium chromium-driver` with apt
    /// when it is not); returns whether the browser tests can run. When they can, it sets
    /// `TOLLGATE_REQUIRE_BROWSER` so that the tests fail rather than skip.
    pub fn ensure() -> bool {
        let present = || {
            Path::new("/usr/bin/chromedriver").exists() && Path::new("/usr/bin/chromium").exists()
        };
        if !present() {
            eprintln!("xtask: installing chromium and chromium-driver for the browser tests");
            let as_root = Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
            let mut apt = if as_root {
                Command::new("apt-get")
            } else {
                let mut sudo = Command::new("sudo");
                sudo.arg("-n").arg("apt-get");
                sudo
            };
            let installed = apt
                .args(["install", "-y", "-q", "chromium", "chromium-driver"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success());
            if !installed {
                eprintln!("xtask: apt-get install chromium chromium-driver failed");
            }
        }
        if present() {
            std::env::set_var("TOLLGATE_REQUIRE_BROWSER", "1");
            true
        } else {
            false
        }
    }
}

mod pg {
    //! A throwaway PostgreSQL cluster for the test suite: `initdb` in a temporary
    //! directory (as the `postgres` user when running as root, since `initdb` refuses
    //! root), started on a free port, stopped and removed when dropped.

    use std::path::{Path, PathBuf};
    use std::process::Command;

    use anyhow::{bail, Context, Result};

    pub struct Cluster {
        dir: PathBuf,
        bindir: PathBuf,
        as_postgres: bool,
        pub url: String,
    }

    fn bindir() -> Result<PathBuf> {
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").exists() {
                return Ok(dir);
            }
        }
        let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| {
                d.flatten()
                    .map(|e| e.path().join("bin"))
                    .filter(|p| p.join("initdb").exists())
                    .collect()
            })
            .unwrap_or_default();
        candidates.sort();
        candidates.pop().context(
            "no PostgreSQL binaries found (pg_config --bindir, /usr/lib/postgresql/*/bin); install Debian's postgresql package or set TOLLGATE_TEST_DATABASE_URL",
        )
    }

    fn is_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    }

    impl Cluster {
        fn run(&self, program: &str, args: &[&str]) -> Result<()> {
            let exe = self.bindir.join(program);
            let mut cmd = if self.as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&exe);
                c
            } else {
                Command::new(&exe)
            };
            let out = cmd
                .args(args)
                .output()
                .with_context(|| format!("cannot run {}", exe.display()))?;
            if !out.status.success() {
                bail!(
                    "{program} failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        }

        pub fn start() -> Result<Self> {
            let bindir = bindir()?;
            let as_postgres = is_root();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let dir =
                std::env::temp_dir().join(format!("tollgate-pg-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            if as_postgres {
                let status = Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir)
                    .status()?;
                if !status.success() {
                    bail!("cannot hand {} to the postgres user", dir.display());
                }
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let cluster = Self {
                url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                dir,
                bindir,
                as_postgres,
            };
            let data = cluster.dir.join("data");
            let data = path(&data);
            eprintln!(
                "xtask: starting a throwaway PostgreSQL cluster in {} on port {port}",
                cluster.dir.display()
            );
            cluster.run(
                "initdb",
                &[
                    "-D",
                    data,
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            )?;
            let options = format!("-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c max_connections=300", path(&cluster.dir));
            let log = cluster.dir.join("server.log");
            cluster.run(
                "pg_ctl",
                &[
                    "-D",
                    data,
                    "-o",
                    &options,
                    "-l",
                    path(&log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            )?;
            Ok(cluster)
        }
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap_or_default()
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            let data = self.dir.join("data");
            if let Err(err) = self.run("pg_ctl", &["-D", path(&data), "-m", "immediate", "stop"]) {
                eprintln!("xtask: stopping the throwaway cluster: {err}");
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
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
        // The crash-point explorer: a test tool that runs the engine and resumer on the
        // in-memory store and on SQLite files; nothing depends on it.
        (
            "tollgate-sim",
            &[
                "tollgate-model",
                "tollgate-store",
                "tollgate-engine",
                "tollgate-resumer",
                "tollgate-sqlite",
            ][..],
        ),
        // The embedders' crate: the handle, and the one module that names the concrete
        // backends (each behind its cargo feature).
        (
            "tollgate",
            &[
                "tollgate-model",
                "tollgate-store",
                "tollgate-engine",
                "tollgate-resumer",
                "tollgate-sqlite",
                "tollgate-postgres",
            ][..],
        ),
        // What both binaries compose at start-up; it opens backends through the
        // `tollgate` crate. Only binaries (and the server library) depend on it.
        (
            "tollgate-bootstrap",
            &[
                "tollgate-model",
                "tollgate-store",
                "tollgate-engine",
                "tollgate",
            ][..],
        ),
        // The typed client of the REST API: the wire types come from the model, nothing
        // from the server.
        ("tollgate-client", &["tollgate-model"][..]),
        // The MCP server for agents: every tool is a REST call through the client (with
        // the caller's own key), so it never reaches around the API's checks.
        ("tollgate-mcp", &["tollgate-client", "tollgate-model"][..]),
        // The `tollgate` command-line tool: a client of the server, never an engine.
        (
            "tollgate-cli",
            &["tollgate-client", "tollgate-model", "tollgate-mcp"][..],
        ),
        // The HTTP server and console behind `tollgate-api`: it reaches a backend only
        // through tollgate-bootstrap, and nothing depends on it but its binary (and the
        // worker's tests, which run a server beside the worker).
        (
            "tollgate-api",
            &[
                "tollgate-model",
                "tollgate-store",
                "tollgate-engine",
                "tollgate-resumer",
                "tollgate-bootstrap",
                "tollgate-client",
                "tollgate-mcp",
            ][..],
        ),
    ])
}

/// The packages `cargo metadata <flag>` lists.
fn packages(flag: &str) -> Result<Vec<serde_json::Value>> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", flag])
        .output()?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    match metadata["packages"].take() {
        serde_json::Value::Array(packages) => Ok(packages),
        _ => bail!("no packages in cargo metadata"),
    }
}

fn layering() -> Result<()> {
    eprintln!("xtask: layering");
    let packages = packages("--no-deps")?;
    let members: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let rules = allowed();
    let mut problems = Vec::new();
    for package in &packages {
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
    let pg = list("crates/postgres/migrations")?;
    let lite = list("crates/sqlite/migrations")?;
    if pg != lite {
        bail!("migrations differ between backends:\n  postgres: {pg:?}\n  sqlite:   {lite:?}");
    }
    Ok(())
}
