//! Hook scripts, as Barman runs them (`barman/hooks.py`): `pre_`/`post_` × `backup`,
//! `archive`, `delete`, `wal_delete`, `recovery` scripts, each also as a `_retry_script`.
//!
//! * A plain hook runs once; whatever it returns, the operation goes on (a non-zero status
//!   is logged with the script's output).
//! * A retry hook runs until it returns 0 (success), 62 (ABORT_CONTINUE: give up on the hook,
//!   go on) or 63 (ABORT_STOP: the operation stops — only meaningful for `pre` hooks; Barman
//!   ignores it after the fact). Between attempts it waits [`RetryPolicy::break_time`]; after
//!   every [`RetryPolicy::attempts_before_nap`] failures, [`RetryPolicy::nap_time`].
//! * Order around an operation, as Barman: pre script, pre retry script, the operation, post
//!   retry script, post script.
//!
//! The scripts run through `sh -c` with `path_prefix` before `PATH`, and with Barman's
//! environment variables (`BARMAN_*`, see the `env_*` methods); their output goes to the log.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::catalog::pyliteral::float_repr;
use crate::catalog::{BackupInfo, ServerCatalog, XlogDbEntry};
use crate::config::ServerConfig;

/// The version hook scripts see in `BARMAN_VERSION`: the Barman release whose behaviour
/// barman-rs reproduces, since that is what such scripts compare against.
pub const BARMAN_COMPAT_VERSION: &str = "3.19.1";

/// Exit status of a retry hook asking Barman to give up on the hook but go on.
pub const EXIT_ABORT_CONTINUE: i32 = 62;
/// Exit status of a retry hook asking Barman to stop the operation.
pub const EXIT_ABORT_STOP: i32 = 63;

/// Which operation a hook belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// `backup_script`.
    Backup,
    /// `archive_script` (each WAL file archived).
    Archive,
    /// `delete_script` (each backup deleted).
    Delete,
    /// `wal_delete_script` (each WAL file deleted).
    WalDelete,
    /// `recovery_script`.
    Recovery,
}

impl HookKind {
    fn base(self) -> &'static str {
        match self {
            HookKind::Backup => "backup",
            HookKind::Archive => "archive",
            HookKind::Delete => "delete",
            HookKind::WalDelete => "wal_delete",
            HookKind::Recovery => "recovery",
        }
    }
}

/// Before or after the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `pre`.
    Pre,
    /// `post`.
    Post,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
        }
    }
}

/// The waits between the attempts of a retry hook (Barman: 3 s, and 60 s after every 5
/// failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Between two attempts.
    pub break_time: Duration,
    /// After every `attempts_before_nap` failures.
    pub nap_time: Duration,
    /// Failures before a nap.
    pub attempts_before_nap: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { break_time: Duration::from_secs(3), nap_time: Duration::from_secs(60), attempts_before_nap: 5 }
    }
}

/// A retry hook returned [`EXIT_ABORT_STOP`]: the operation must not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Abort '{config_name}' retry hook script ({script}, exit code: 63)")]
pub struct AbortStop {
    /// The option that named the script (`pre_backup_retry_script`).
    pub config_name: String,
    /// The script.
    pub script: String,
}

/// One hook of one server, with the environment it will see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    config_name: String,
    script: Option<String>,
    retry: bool,
    path_prefix: Option<String>,
    env: BTreeMap<String, String>,
    policy: RetryPolicy,
}

fn script_of(cfg: &ServerConfig, name: &str) -> Option<String> {
    let s = match name {
        "pre_backup_script" => &cfg.pre_backup_script,
        "pre_backup_retry_script" => &cfg.pre_backup_retry_script,
        "post_backup_script" => &cfg.post_backup_script,
        "post_backup_retry_script" => &cfg.post_backup_retry_script,
        "pre_archive_script" => &cfg.pre_archive_script,
        "pre_archive_retry_script" => &cfg.pre_archive_retry_script,
        "post_archive_script" => &cfg.post_archive_script,
        "post_archive_retry_script" => &cfg.post_archive_retry_script,
        "pre_delete_script" => &cfg.pre_delete_script,
        "pre_delete_retry_script" => &cfg.pre_delete_retry_script,
        "post_delete_script" => &cfg.post_delete_script,
        "post_delete_retry_script" => &cfg.post_delete_retry_script,
        "pre_wal_delete_script" => &cfg.pre_wal_delete_script,
        "pre_wal_delete_retry_script" => &cfg.pre_wal_delete_retry_script,
        "post_wal_delete_script" => &cfg.post_wal_delete_script,
        "post_wal_delete_retry_script" => &cfg.post_wal_delete_retry_script,
        "pre_recovery_script" => &cfg.pre_recovery_script,
        "pre_recovery_retry_script" => &cfg.pre_recovery_retry_script,
        "post_recovery_script" => &cfg.post_recovery_script,
        "post_recovery_retry_script" => &cfg.post_recovery_retry_script,
        _ => return None,
    };
    s.clone().filter(|s| !s.trim().is_empty())
}

impl Hook {
    /// The `phase` hook of `kind` for `cfg` (`retry`: the `_retry_script` one), whose
    /// `BARMAN_CONFIGURATION` is `config_file`. A hook the configuration does not set is
    /// still built: [`Hook::run`] then does nothing.
    pub fn new(cfg: &ServerConfig, config_file: &Path, kind: HookKind, phase: Phase, retry: bool) -> Hook {
        let hook_name = format!("{}_{}script", kind.base(), if retry { "retry_" } else { "" });
        let config_name = format!("{}_{hook_name}", phase.as_str());
        let mut env = BTreeMap::new();
        env.insert("BARMAN_VERSION".into(), BARMAN_COMPAT_VERSION.into());
        env.insert("BARMAN_SERVER".into(), cfg.name.clone());
        env.insert("BARMAN_CONFIGURATION".into(), config_file.display().to_string());
        env.insert("BARMAN_HOOK".into(), hook_name);
        env.insert("BARMAN_RETRY".into(), if retry { "1" } else { "0" }.into());
        env.insert("BARMAN_PHASE".into(), phase.as_str().into());
        Hook {
            script: script_of(cfg, &config_name),
            config_name,
            retry,
            path_prefix: cfg.path_prefix.clone(),
            env,
            policy: RetryPolicy::default(),
        }
    }

    /// Replaces the waits between retry attempts.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Hook {
        self.policy = policy;
        self
    }

    /// Whether a script is configured.
    pub fn is_set(&self) -> bool {
        self.script.is_some()
    }

    /// The environment the script will get (besides the inherited one).
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    fn set(&mut self, k: &str, v: impl Into<String>) {
        self.env.insert(k.to_owned(), v.into());
    }

    /// Barman's `env_from_backup_info`: the backup's directory, backup.info path, ID, the
    /// IDs of its neighbours, status and error. `previous`/`next`: the IDs around it.
    pub fn env_from_backup(&mut self, catalog: &ServerCatalog, info: &BackupInfo, previous: Option<&str>, next: Option<&str>) {
        self.set("BARMAN_BACKUP_DIR", catalog.backup_dir(info.backup_id).display().to_string());
        self.set("BARMAN_BACKUP_INFO_PATH", catalog.backup_info_path(info.backup_id).display().to_string());
        self.set("BARMAN_BACKUP_ID", info.backup_id.to_string());
        self.set("BARMAN_PREVIOUS_ID", previous.unwrap_or_default());
        self.set("BARMAN_NEXT_ID", next.unwrap_or_default());
        self.set("BARMAN_STATUS", info.status.to_string());
        self.set("BARMAN_ERROR", info.error.clone().unwrap_or_default());
    }

    /// [`Hook::env_from_backup`] with the neighbours read from the catalog (the newest older
    /// and the oldest newer backup whose copy is done, as Barman's `get_previous_backup`).
    pub fn env_from_catalog_backup(&mut self, catalog: &ServerCatalog, info: &BackupInfo) {
        let (backups, _) = match crate::catalog::query::BackupCatalog::load(catalog) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the catalog for the hook's BARMAN_PREVIOUS_ID / BARMAN_NEXT_ID");
                (crate::catalog::query::BackupCatalog::from_backups(catalog.clone(), Vec::new()), Vec::new())
            }
        };
        let previous = backups.previous(info.backup_id).map(|b| b.backup_id.to_string());
        let next = backups.next(info.backup_id).map(|b| b.backup_id.to_string());
        self.env_from_backup(catalog, info, previous.as_deref(), next.as_deref());
    }

    /// Barman's `env_from_wal_info`: the WAL file's name, path, size, time and compression.
    pub fn env_from_wal(&mut self, entry: &XlogDbEntry, path: &Path, error: Option<&str>) {
        self.set("BARMAN_SEGMENT", entry.name.to_string());
        self.set("BARMAN_FILE", path.display().to_string());
        self.set("BARMAN_SIZE", entry.size.to_string());
        self.set("BARMAN_TIMESTAMP", float_repr(entry.time));
        self.set("BARMAN_COMPRESSION", entry.compression.clone().unwrap_or_default());
        self.set("BARMAN_ERROR", error.unwrap_or_default());
    }

    /// Barman's `env_from_recover`: [`Hook::env_from_backup`] plus the destination, the
    /// tablespace relocations and the recovery options (both as Python's sorted
    /// `json.dumps`, empty when there are none), and the remote command.
    pub fn env_from_recover(
        &mut self,
        destination: &Path,
        tablespaces: &BTreeMap<String, String>,
        remote_command: Option<&str>,
        options: &BTreeMap<String, serde_json::Value>,
        error: Option<&str>,
    ) {
        self.set("BARMAN_DESTINATION_DIRECTORY", destination.display().to_string());
        self.set("BARMAN_TABLESPACES", python_json_map(tablespaces));
        self.set("BARMAN_REMOTE_COMMAND", remote_command.unwrap_or_default());
        self.set("BARMAN_RECOVER_OPTIONS", python_json_map(options));
        self.set("BARMAN_ERROR", error.unwrap_or_default());
    }

    /// Runs the hook if one is configured. A plain hook's status is only logged; a retry
    /// hook is retried as the [module documentation](self) says, and [`AbortStop`] is
    /// returned for exit 63 (the caller decides whether that stops anything: it does for
    /// `pre` hooks). Returns the last exit status (`None`: no script, or it could not run).
    pub fn run(&self) -> Result<Option<i32>, AbortStop> {
        let Some(script) = &self.script else { return Ok(None) };
        if !self.retry {
            return Ok(self.run_once(script));
        }
        let mut failures = 0u32;
        loop {
            let status = self.run_once(script);
            match status {
                Some(0) => return Ok(status),
                Some(EXIT_ABORT_CONTINUE) => {
                    tracing::warn!(script, status = EXIT_ABORT_CONTINUE, "{script} was aborted (got exit status 62, Barman resumes)");
                    return Ok(status);
                }
                Some(EXIT_ABORT_STOP) => {
                    tracing::error!(script, "{script} was aborted (got exit status 63, Barman requested to stop)");
                    return Err(AbortStop { config_name: self.config_name.clone(), script: script.clone() });
                }
                _ => {}
            }
            failures += 1;
            if failures < self.policy.attempts_before_nap {
                std::thread::sleep(self.policy.break_time);
            } else {
                failures = 0;
                std::thread::sleep(self.policy.nap_time);
            }
        }
    }

    fn run_once(&self, script: &str) -> Option<i32> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).envs(&self.env).stdin(Stdio::null());
        if let Some(prefix) = self.path_prefix.as_deref().filter(|p| !p.is_empty()) {
            let path = match std::env::var("PATH") {
                Ok(old) => format!("{prefix}:{old}"),
                Err(_) => prefix.to_owned(),
            };
            cmd.env("PATH", path);
        }
        match cmd.output() {
            Ok(out) => {
                let status = out.status.code().unwrap_or(-1);
                if status == 0 {
                    tracing::debug!(hook = %self.config_name, script, "returned 0");
                } else {
                    tracing::warn!(
                        hook = %self.config_name, script, status,
                        stdout = %String::from_utf8_lossy(&out.stdout), stderr = %String::from_utf8_lossy(&out.stderr),
                        "{script} returned {status}"
                    );
                }
                Some(status)
            }
            Err(e) => {
                tracing::error!(hook = %self.config_name, script, error = %e, "cannot run the hook script");
                None
            }
        }
    }
}

/// The four hooks of one operation, run in Barman's order: [`HookSet::run_pre`] before it,
/// [`HookSet::run_post`] after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSet {
    /// `pre_<kind>_script`.
    pub pre: Hook,
    /// `pre_<kind>_retry_script`.
    pub pre_retry: Hook,
    /// `post_<kind>_retry_script`.
    pub post_retry: Hook,
    /// `post_<kind>_script`.
    pub post: Hook,
}

impl HookSet {
    /// The hooks of `kind` for `cfg`; `config_file` is the main configuration file.
    pub fn new(cfg: &ServerConfig, config_file: &Path, kind: HookKind) -> HookSet {
        HookSet {
            pre: Hook::new(cfg, config_file, kind, Phase::Pre, false),
            pre_retry: Hook::new(cfg, config_file, kind, Phase::Pre, true),
            post_retry: Hook::new(cfg, config_file, kind, Phase::Post, true),
            post: Hook::new(cfg, config_file, kind, Phase::Post, false),
        }
    }

    /// The hooks of `kind`, or `None` when the configuration sets none of them.
    pub fn configured(cfg: &ServerConfig, config_file: &Path, kind: HookKind) -> Option<HookSet> {
        let set = HookSet::new(cfg, config_file, kind);
        [&set.pre, &set.pre_retry, &set.post_retry, &set.post].iter().any(|h| h.is_set()).then_some(set)
    }

    /// Replaces the waits between retry attempts of both retry hooks.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> HookSet {
        self.pre_retry.policy = policy;
        self.post_retry.policy = policy;
        self
    }

    /// The pre script, then the pre retry script, each after `env` filled its environment.
    /// [`AbortStop`] from the retry script: the operation must not run.
    pub fn run_pre(&self, env: &dyn Fn(&mut Hook)) -> Result<(), AbortStop> {
        let mut pre = self.pre.clone();
        env(&mut pre);
        let _ = pre.run();
        let mut retry = self.pre_retry.clone();
        env(&mut retry);
        retry.run().map(drop)
    }

    /// The post retry script (its 63 is logged and ignored: the operation is over, as in
    /// Barman), then the post script, each after `env` filled its environment; `env` is told
    /// which of the two it prepares (`true`: the retry script).
    pub fn run_post(&self, env: &dyn Fn(&mut Hook, bool)) {
        let mut retry = self.post_retry.clone();
        env(&mut retry, true);
        if let Err(abort) = retry.run() {
            tracing::warn!(%abort, "ignoring the stop request of a post retry hook script: the operation is over");
        }
        let mut post = self.post.clone();
        env(&mut post, false);
        let _ = post.run();
    }
}

/// Python's `json.dumps(map, sort_keys=True)`, or the empty string for an empty map.
fn python_json_map<V: Clone + Into<serde_json::Value>>(map: &BTreeMap<String, V>) -> String {
    if map.is_empty() {
        return String::new();
    }
    let items: Vec<String> =
        map.iter().map(|(k, v)| format!("{}: {}", serde_json::Value::from(k.as_str()), v.clone().into())).collect();
    format!("{{{}}}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(lines: &str) -> (tempfile::TempDir, crate::config::Config) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("barman.conf");
        std::fs::write(
            &path,
            format!("[barman]\nbarman_home = {}\n\n[pg]\nconninfo = host=x\nbackup_method = postgres\nstreaming_archiver = on\nslot_name = s\n{lines}", dir.path().display()),
        )
        .unwrap();
        let config = crate::config::Config::load(&path).unwrap();
        (dir, config)
    }

    fn dump_script(dir: &Path, name: &str, exit: i32) -> String {
        let out = dir.join(format!("{name}.env"));
        let script = dir.join(format!("{name}.sh"));
        std::fs::write(&script, format!("#!/bin/sh\nenv | grep ^BARMAN_ | grep -v ^BARMAN_TEST_ | sort >> {}\necho run >> {}.count\nexit {exit}\n", out.display(), out.display())).unwrap();
        format!("sh {}", script.display())
    }

    #[test]
    fn plain_hook_sees_barmans_environment_and_never_stops_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let s = dump_script(tmp.path(), "pre_archive", 1);
        let (_dir, config) = server(&format!("pre_archive_script = {s}\n"));
        let cfg = config.server("pg").unwrap();
        let mut hook = Hook::new(cfg, Path::new("/etc/barman.conf"), HookKind::Archive, Phase::Pre, false);
        let entry = XlogDbEntry {
            name: "000000010000000000000009".parse().unwrap(),
            size: 16777216,
            time: 1795610034.0315073,
            compression: None,
            encryption: None,
        };
        hook.env_from_wal(&entry, Path::new("/var/lib/barman/pg/streaming/000000010000000000000009"), None);
        assert_eq!(hook.run(), Ok(Some(1)));
        let env = std::fs::read_to_string(tmp.path().join("pre_archive.env")).unwrap();
        // Barman's sample hooks/10-pre_archive_script-from-streaming.env, paths aside.
        assert_eq!(
            env,
            "BARMAN_COMPRESSION=\nBARMAN_CONFIGURATION=/etc/barman.conf\nBARMAN_ERROR=\n\
             BARMAN_FILE=/var/lib/barman/pg/streaming/000000010000000000000009\nBARMAN_HOOK=archive_script\n\
             BARMAN_PHASE=pre\nBARMAN_RETRY=0\nBARMAN_SEGMENT=000000010000000000000009\nBARMAN_SERVER=pg\n\
             BARMAN_SIZE=16777216\nBARMAN_TIMESTAMP=1795610034.0315073\nBARMAN_VERSION=3.19.1\n"
        );
        let unset = Hook::new(cfg, Path::new("/etc/barman.conf"), HookKind::Archive, Phase::Post, false);
        assert!(!unset.is_set());
        assert_eq!(unset.run(), Ok(None));
    }

    #[test]
    fn retry_hook_retries_until_success_or_abort() {
        let fast = RetryPolicy { break_time: Duration::ZERO, nap_time: Duration::ZERO, attempts_before_nap: 2 };
        let tmp = tempfile::tempdir().unwrap();
        // Fails twice, then succeeds.
        let flaky = tmp.path().join("flaky.sh");
        std::fs::write(&flaky, format!("#!/bin/sh\necho x >> {0}/n\n[ $(wc -l < {0}/n) -ge 3 ]\n", tmp.path().display())).unwrap();
        let stop = dump_script(tmp.path(), "stop", 63);
        let go_on = dump_script(tmp.path(), "go_on", 62);
        let (_dir, config) = server(&format!(
            "pre_backup_retry_script = sh {}\npost_backup_retry_script = {stop}\npre_delete_retry_script = {go_on}\n",
            flaky.display()
        ));
        let cfg = config.server("pg").unwrap();
        let conf = Path::new("/etc/barman.conf");
        let flaky_hook = Hook::new(cfg, conf, HookKind::Backup, Phase::Pre, true).with_retry_policy(fast);
        assert_eq!(flaky_hook.env()["BARMAN_HOOK"], "backup_retry_script");
        assert_eq!(flaky_hook.env()["BARMAN_RETRY"], "1");
        assert_eq!(flaky_hook.run(), Ok(Some(0)));
        assert_eq!(std::fs::read_to_string(tmp.path().join("n")).unwrap().lines().count(), 3);

        let err = Hook::new(cfg, conf, HookKind::Backup, Phase::Post, true).with_retry_policy(fast).run().unwrap_err();
        assert_eq!(err.to_string(), format!("Abort 'post_backup_retry_script' retry hook script ({stop}, exit code: 63)"));
        assert_eq!(Hook::new(cfg, conf, HookKind::Delete, Phase::Pre, true).with_retry_policy(fast).run(), Ok(Some(62)));
    }

    #[test]
    fn recovery_environment_uses_pythons_json() {
        let mut ts = BTreeMap::new();
        ts.insert("tbs1".to_owned(), "/tmp/rest-tbs1".to_owned());
        let mut opts = BTreeMap::new();
        opts.insert("target_name".to_owned(), serde_json::Value::from("X"));
        assert_eq!(python_json_map(&ts), r#"{"tbs1": "/tmp/rest-tbs1"}"#);
        assert_eq!(python_json_map(&opts), r#"{"target_name": "X"}"#);
        opts.insert("target_immediate".to_owned(), serde_json::Value::from(true));
        assert_eq!(python_json_map(&opts), r#"{"target_immediate": true, "target_name": "X"}"#);
        assert_eq!(python_json_map(&BTreeMap::<String, String>::new()), "");
    }
}
