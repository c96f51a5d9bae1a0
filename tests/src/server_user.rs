//! The unprivileged user that runs PostgreSQL when the tests run as root.
//!
//! `postgres` (and `initdb`, `pg_ctl`) refuse to run as root. As root, the harness runs them as
//! `postgres` when that user exists (Debian images with PostgreSQL packages), otherwise as a
//! system user `barman-test` that it creates with `useradd` on first use. Without root, everything
//! runs as the current user and this module is not involved.
//!
//! The user is looked up once per process. Creating it tolerates other test processes doing the
//! same at the same time (nextest runs every test in its own process): creation is serialized
//! with `flock`, because concurrent `useradd` runs overwrite each other's `/etc/passwd`.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context as _};

/// Name of the system user the harness creates when `postgres` does not exist.
pub(crate) const FALLBACK_USER: &str = "barman-test";
/// Serializes user creation between test processes (see `create_system_user`).
const USERADD_LOCK: &str = "/tmp/barman-tests-useradd.lock";

/// A local user account the server processes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Whether this process runs with effective uid 0.
///
/// Read from the owner of `/proc/self` (which is the effective uid) because `libc::geteuid` is
/// an `unsafe` FFI call and the workspace forbids `unsafe`; `id -u` is the fallback.
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| match std::fs::metadata("/proc/self") {
        Ok(meta) => meta.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false),
    })
}

/// The user that runs the servers: `None` when not root (servers run as the current user).
///
/// As root: `postgres` if it exists, otherwise `barman-test`, created if needed with
/// `useradd --system --no-create-home --shell /bin/sh` (a shell, not `nologin`, because the
/// ssh tests log in as this user and sshd runs every command through its shell; the password
/// stays locked).
pub fn server_user() -> anyhow::Result<Option<ServerUser>> {
    if !is_root() {
        return Ok(None);
    }
    static USER: OnceLock<Result<ServerUser, String>> = OnceLock::new();
    USER.get_or_init(|| find_or_create().map_err(|e| format!("{e:#}")))
        .clone()
        .map(Some)
        .map_err(anyhow::Error::msg)
}

fn find_or_create() -> anyhow::Result<ServerUser> {
    match lookup("postgres")? {
        Some(user) => Ok(user),
        None => create_system_user(FALLBACK_USER),
    }
}

/// Returns system user `name`, creating it first if needed; safe to call from several
/// processes at once.
///
/// Concurrent `useradd` runs are not safe: with shadow 4.13 (Debian 12) four simultaneous runs
/// all exit 0 and the last rewrite of `/etc/passwd` wins, so a user seen a moment ago can vanish
/// (or another account's update be lost). Look-up and creation therefore run under an exclusive
/// `flock` on [`USERADD_LOCK`]; without `flock(1)` the fallback retries and re-checks.
fn create_system_user(name: &str) -> anyhow::Result<ServerUser> {
    if let Some(user) = lookup(name)? {
        return Ok(user);
    }
    let script = "getent passwd \"$1\" >/dev/null || \
                  useradd --system --no-create-home --shell /bin/sh \"$1\"";
    let locked = Command::new("flock")
        .args(["-w", "120", USERADD_LOCK, "sh", "-c", script, "sh", name])
        .output();
    match locked {
        Ok(out) if out.status.success() => {
            return lookup(name)?.with_context(|| format!("useradd {name} left no passwd entry"));
        }
        Ok(out) => bail!(
            "cannot create system user {name} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(_) => {} // no flock(1): unserialized fallback below
    }
    let mut last_error = String::new();
    let mut seen = None;
    for attempt in 0..20 {
        match lookup(name)? {
            // Twice the same answer, 200 ms apart: no concurrent rewrite undid it.
            Some(user) if seen.as_ref() == Some(&user) => return Ok(user),
            Some(user) => seen = Some(user),
            None => {
                seen = None;
                let out = Command::new("useradd")
                    .args([
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/bin/sh",
                        name,
                    ])
                    .output()
                    .context(
                        "cannot run useradd (needed as root when there is no `postgres` user)",
                    )?;
                if !out.status.success() {
                    last_error = format!(
                        "{}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200 + 20 * attempt));
    }
    bail!("cannot create system user {name}: useradd failed ({last_error})")
}

/// Looks `name` up with `getent passwd` (so NSS sources count), falling back to `/etc/passwd`.
fn lookup(name: &str) -> anyhow::Result<Option<ServerUser>> {
    let line = match Command::new("getent").args(["passwd", name]).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(_) => return Ok(None),
        Err(_) => {
            let passwd = Path::new("/etc/passwd");
            let text = std::fs::read_to_string(passwd)
                .with_context(|| format!("cannot read {}", passwd.display()))?;
            match text.lines().find(|l| l.split(':').next() == Some(name)) {
                Some(l) => l.to_owned(),
                None => return Ok(None),
            }
        }
    };
    let fields: Vec<&str> = line.split(':').collect();
    let (Some(uid), Some(gid)) = (fields.get(2), fields.get(3)) else {
        bail!("malformed passwd entry for {name}: {line:?}");
    };
    Ok(Some(ServerUser {
        name: name.to_owned(),
        uid: uid
            .parse()
            .with_context(|| format!("uid of {name} in {line:?}"))?,
        gid: gid
            .parse()
            .with_context(|| format!("gid of {name} in {line:?}"))?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates and deletes a real system user, so it only runs on request, as root:
    /// `cargo test -p barman-tests --lib -- --ignored`.
    #[test]
    #[ignore = "adds and removes a system user; run as root with --ignored"]
    fn concurrent_creation_agrees() {
        if !is_root() {
            return;
        }
        let name = "barman-test-race";
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || create_system_user(name).map_err(|e| format!("{e:#}")))
            })
            .collect();
        let users: Vec<ServerUser> = threads
            .into_iter()
            .map(|t| t.join().expect("thread").expect("user created"))
            .collect();
        let _ = Command::new("userdel").arg(name).output();
        assert!(users.iter().all(|u| *u == users[0]), "{users:?}");
        assert!(
            users[0].uid > 0 && users[0].uid < 1000,
            "not a system uid: {users:?}"
        );
    }
}
