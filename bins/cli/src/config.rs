//! Saved profiles: a server URL and an API key under a name, in one owner-only file.
//!
//! The file is `profiles.json` in the user's configuration directory (`$XDG_CONFIG_HOME`
//! or `~/.config` on Linux, `~/Library/Application Support` on macOS, `%APPDATA%` on
//! Windows), under `tollgate/`; `TOLLGATE_CONFIG_DIR` names another directory. On Unix
//! the directory is created `0700` and the file written `0600`, through a temporary file
//! renamed into place, so a crash never leaves half a file and no other user can read a key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One saved connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    /// The server's base URL.
    pub url: String,
    /// The API key.
    pub key: String,
}

/// Every saved profile and which one is used when none is named.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Profiles {
    /// The profile used when `--profile` is not given.
    #[serde(default)]
    pub current: Option<String>,
    /// By name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Where profiles are kept.
pub fn dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TOLLGATE_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    dirs::config_dir()
        .map(|d| d.join("tollgate"))
        .context("cannot tell where your configuration directory is (set TOLLGATE_CONFIG_DIR)")
}

fn file(dir: &Path) -> PathBuf {
    dir.join("profiles.json")
}

impl Profiles {
    /// The saved profiles (none when the file does not exist yet).
    pub fn load() -> Result<Self> {
        let path = file(&dir()?);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a profiles file: fix or delete it",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the profiles, readable by the owner only; returns the file's path.
    pub fn save(&self) -> Result<PathBuf> {
        let dir = dir()?;
        create_private_dir(&dir)?;
        let path = file(&dir);
        let temp = dir.join(format!(".profiles.json.{}", std::process::id()));
        let text = serde_json::to_vec_pretty(self)?;
        write_private(&temp, &text).with_context(|| format!("cannot write {}", temp.display()))?;
        std::fs::rename(&temp, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
