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

/// The `barman -c <config> <args…>` command with a clean `PG*` environment.
fn barman_command(config: &Path, args: &[&str]) -> anyhow::Result<Command> {
    let mut cmd = Command::new(barman_bin()?);
    cmd.arg("-c").arg(config).args(args).env_remove("BARMAN_CONFIG_FILE");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    // No developer ~/.pgpass or root.crt can change an outcome.
    cmd.env("PGPASSFILE", "/nonexistent/pgpass");
    Ok(cmd)
}

/// Runs `barman -c <config> <args…>` with a clean `PG*` environment and returns what happened.
pub fn run_barman(config: &Path, args: &[&str]) -> anyhow::Result<BarmanRun> {
    let mut cmd = barman_command(config, args)?;
    let out = cmd.output().with_context(|| format!("running barman {args:?}"))?;
    Ok(BarmanRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A barman configuration with one server section (`[pg]`) pointing at a test cluster: the
/// `barman` user's `conninfo`, the `streaming_barman` user's `streaming_conninfo`, slot
/// `barman`, `backup_method = postgres`, `streaming_archiver = on`, `archiver = off`.
/// `extra` lines are appended to the `[pg]` section (`compression = gzip`, …).
pub struct BarmanSite {
    /// `barman_home` (a temporary directory, removed on drop).
    pub home: tempfile::TempDir,
    /// The configuration file.
    pub config: PathBuf,
}

impl BarmanSite {
    /// Writes the configuration for `pg`.
    pub fn new(pg: &crate::Cluster, extra: &[&str]) -> anyhow::Result<BarmanSite> {
        use crate::{BARMAN_USER, PASSWORD, STREAMING_USER};
        let home = tempfile::tempdir().context("barman_home")?;
        let conn = format!("{} password={PASSWORD}", pg.conninfo(BARMAN_USER));
        let stream = format!("{} password={PASSWORD}", pg.conninfo(STREAMING_USER));
        let mut text = format!(
            "[barman]\nbarman_home = {home}\nbarman_user = root\nlog_level = INFO\nlog_file = {home}/barman.log\n\n\
             [pg]\ndescription = \"test cluster\"\nconninfo = {conn}\nstreaming_conninfo = {stream}\n\
             backup_method = postgres\nstreaming_archiver = on\narchiver = off\nslot_name = barman\n",
            home = home.path().display(),
        );
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        let config = home.path().join("barman.conf");
        std::fs::write(&config, text).context("writing barman.conf")?;
        Ok(BarmanSite { home, config })
    }

    /// The server's catalog directory (`<barman_home>/pg`).
    pub fn server_dir(&self) -> PathBuf {
        self.home.path().join("pg")
    }

    /// The IDs of the backups with a directory in `base/`, oldest first.
    pub fn backup_ids(&self) -> anyhow::Result<Vec<String>> {
        let base = self.server_dir().join("base");
        let mut ids: Vec<String> = std::fs::read_dir(&base)
            .with_context(|| format!("reading {}", base.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// `barman -c <config> <args…>`.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<BarmanRun> {
        run_barman(&self.config, args)
    }

    /// `barman -c <config> <args…>` in the background (e.g. `receive-wal pg`), killed (SIGTERM,
    /// then SIGKILL) when the returned guard drops.
    pub fn spawn(&self, args: &[&str]) -> anyhow::Result<BackgroundBarman> {
        let mut cmd = barman_command(&self.config, args)?;
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let child = cmd.spawn().with_context(|| format!("starting barman {args:?}"))?;
        Ok(BackgroundBarman { child })
    }
}

/// A `barman` process running in the background; stopped on drop.
pub struct BackgroundBarman {
    child: std::process::Child,
}

impl BackgroundBarman {
    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash or the OOM killer would, and waits for it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM and waits up to 10 s for the exit status (then SIGKILL).
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        Ok(self.child.wait()?)
    }
}

impl Drop for BackgroundBarman {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
        }
    }
}
