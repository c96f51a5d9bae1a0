//! The `barman` binary under test: where it is, and running it with a configuration file.
//!
//! The binary is looked for next to the test executable's directory
//! (`target/<profile>/deps/e2e-…` → `target/<profile>/barman`), which is where `cargo test`
//! and `cargo nextest run --workspace` put it. When it is missing (a test binary built alone),
//! it is built once per process with `cargo build -p barman-cli` into the same target
//! directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context as _};

/// How a `barman` run ended.
#[derive(Debug, Clone)]
pub struct BarmanRun {
    /// Exit status (`-1` when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl BarmanRun {
    /// Standard output parsed as JSON (fails with both outputs shown).
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("stdout is not JSON:\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

impl std::fmt::Display for BarmanRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// The path of the `barman` binary, building it if needed (once per process).
pub fn barman_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate().map_err(|e| format!("{e:#}"))).clone().map_err(anyhow::Error::msg)
}

fn locate() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable has no target/<profile>/ directory above it")?
        .to_path_buf();
    let bin = profile_dir.join("barman");
    if bin.is_file() {
        return Ok(bin);
    }
    let target_dir = profile_dir.parent().context("target/<profile>/ has no parent")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "barman-cli", "--bin", "barman"]).env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().context("running cargo build -p barman-cli")?;
    if !status.success() || !bin.is_file() {
        bail!("cargo build -p barman-cli did not produce {}", bin.display());
    }
    Ok(bin)
}

/// Runs `barman -c <config> <args…>` with a clean `PG*` environment and returns what happened.
pub fn run_barman(config: &Path, args: &[&str]) -> anyhow::Result<BarmanRun> {
    let mut cmd = Command::new(barman_bin()?);
    cmd.arg("-c").arg(config).args(args).env_remove("BARMAN_CONFIG_FILE");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    // No developer ~/.pgpass or root.crt can change an outcome.
    cmd.env("PGPASSFILE", "/nonexistent/pgpass");
    let out = cmd.output().with_context(|| format!("running barman {args:?}"))?;
    Ok(BarmanRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
