//! Where the PostgreSQL binaries of each major live, and which majors a run covers.
//!
//! The per-process cache below is the harness's only global state: `pg-install` prints the same
//! directory every time, so asking once per major and process is enough (nextest runs each test in
//! its own process, so this mostly saves the second call inside one test).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context as _};

use crate::server_user::is_root;

/// Every major the harness supports, oldest first.
pub const ALL_MAJORS: [u32; 6] = [13, 14, 15, 16, 17, 18];

/// The majors this run tests.
///
/// `BARMAN_TEST_PG_MAJORS` (e.g. `13,15,18`) selects; the default is [`ALL_MAJORS`]. When
/// `PG_BIN_DIR` is set, only the major of those binaries (from `postgres --version`) is kept.
///
/// # Panics
///
/// On a malformed `BARMAN_TEST_PG_MAJORS` or an unusable `PG_BIN_DIR`: every test of the run
/// then fails with the reason, rather than silently testing nothing.
pub fn majors() -> Vec<u32> {
    let mut selected: Vec<u32> = match std::env::var("BARMAN_TEST_PG_MAJORS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|m| {
                let m = m.trim();
                match m.parse::<u32>() {
                    Ok(n) if ALL_MAJORS.contains(&n) => n,
                    _ => {
                        panic!("BARMAN_TEST_PG_MAJORS={list:?}: {m:?} is not one of {ALL_MAJORS:?}")
                    }
                }
            })
            .collect(),
        _ => ALL_MAJORS.to_vec(),
    };
    if let Some(dir) = env_bin_dir() {
        let major = env_bin_dir_major(&dir)
            .unwrap_or_else(|e| panic!("PG_BIN_DIR={}: {e:#}", dir.display()));
        selected.retain(|&m| m == major);
    }
    selected
}

/// The directory holding `postgres`, `initdb`, `psql`, ... of PostgreSQL `major`.
///
/// `PG_BIN_DIR` wins when set (and must hold that major). Otherwise this runs
/// `<workspace>/../shared/tools/pg-install <major>` (or `BARMAN_PG_INSTALL`), which downloads and
/// caches the binaries on first use and prints the directory. As root, the cache is
/// `/var/cache/pgbins` unless `PGBINS_DIR` says otherwise, so that the unprivileged server user
/// can reach the binaries (root's home is mode 700).
pub fn pg_bin_dir(major: u32) -> anyhow::Result<PathBuf> {
    if let Some(dir) = env_bin_dir() {
        let found =
            env_bin_dir_major(&dir).with_context(|| format!("PG_BIN_DIR={}", dir.display()))?;
        if found != major {
            bail!(
                "PG_BIN_DIR={} holds PostgreSQL {found}, not {major}",
                dir.display()
            );
        }
        return Ok(dir);
    }
    static CACHE: OnceLock<Mutex<HashMap<u32, PathBuf>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(dir) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&major) {
        return Ok(dir.clone());
    }
    let dir = run_pg_install(major)?;
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(major, dir.clone());
    Ok(dir)
}

fn env_bin_dir() -> Option<PathBuf> {
    std::env::var_os("PG_BIN_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn env_bin_dir_major(dir: &Path) -> anyhow::Result<u32> {
    static MAJOR: OnceLock<Result<u32, String>> = OnceLock::new();
    MAJOR
        .get_or_init(|| server_major(dir).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Reads the major from `<dir>/postgres --version` (`postgres (PostgreSQL) 16.4 (Debian ...)`).
fn server_major(dir: &Path) -> anyhow::Result<u32> {
    let postgres = dir.join("postgres");
    let out = Command::new(&postgres)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", postgres.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split("(PostgreSQL)")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("unexpected `postgres --version` output {text:?}"))?;
    let major = version
        .split(['.', 'b', 'r', 'd'])
        .next()
        .unwrap_or_default();
    major
        .parse()
        .with_context(|| format!("unexpected PostgreSQL version {version:?}"))
}

fn run_pg_install(major: u32) -> anyhow::Result<PathBuf> {
    let script = match std::env::var_os("BARMAN_PG_INSTALL").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/pg-install"),
    };
    let mut cmd = Command::new(&script);
    cmd.arg(major.to_string());
    if is_root() && std::env::var_os("PGBINS_DIR").is_none() {
        cmd.env("PGBINS_DIR", "/var/cache/pgbins");
    }
    let out = cmd.output().with_context(|| {
        format!(
            "cannot run {} (set PG_BIN_DIR or BARMAN_PG_INSTALL)",
            script.display()
        )
    })?;
    if !out.status.success() {
        bail!(
            "{} {major} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !dir.join("postgres").is_file() {
        bail!(
            "{} {major} printed {:?}, which has no postgres binary",
            script.display(),
            dir
        );
    }
    Ok(dir)
}
