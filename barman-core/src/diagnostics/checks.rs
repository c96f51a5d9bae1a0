//! `barman check`: Barman's checks, in Barman's order, as data.
//!
//! [`run`] does the I/O (creates the catalog directories as Barman's `check` does, reads the
//! live facts and the catalog); [`evaluate`] is the pure decision, from those inputs to a list
//! of [`CheckResult`]s, and is what the unit tests drive. Names and hints are Barman's
//! (`barman/server.py`, `barman/backup.py`, `barman/wal_archiver.py`,
//! `barman/backup_executor.py`), because monitoring parses them.
//!
//! # Deliberate differences from Barman
//!
//! - `PostgreSQL: FAILED` carries the connection error as its hint (Barman prints none and
//!   sends the reason to its log only), so a wrong port or password is visible at once.
//! - "WAL archive" only looks at the catalog: Barman would also run an archiver pass and a
//!   `switch-wal --archive` when xlog.db is empty. barman-rs has no WAL archiver yet, so a
//!   fresh catalog reports `WAL archive: FAILED` until WAL has been archived.
//! - `pg_basebackup*` and `pg_receivexlog*` keep their names for monitoring compatibility, but
//!   check barman-rs' built-in replication client (which replaces those programs): it is
//!   always installed and is compatible with PostgreSQL 13 to 18. Hints say `built-in`
//!   where Barman gives the program's version.
//! - A new check, `unsupported options`, fails when the configuration asks for something
//!   barman-rs does not implement (another backup method, encryption, …),
//!   rather than silently doing something else. It is shown only when it fails.
//! - WAL-specific connections (`wal_conninfo`, `wal_streaming_conninfo`) are reported as
//!   unsupported options instead of being checked.
//! - `backup_compression*` settings that `backup` refuses are listed under `configuration`,
//!   in Barman's words, but do not disable the server as they do in Barman (Barman's
//!   pg_basebackup-version issues have no counterpart: the client is built in).
//! - `Primary server is not a standby` fails, with the reason, when `primary_conninfo` cannot
//!   be reached (Barman passes it and fails only the system ID check).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::catalog_view::CatalogView;
use super::facts::{self, EnvLookup, LiveFacts};
use crate::backup::compressed::BackupCompressionSettings;
use crate::config::{BackupMethod, Compression, GlobalSettings, ServerConfig, Source};
use crate::output::{human_duration, pretty_size};

/// PostgreSQL majors the built-in replication client is tested with.
pub const SUPPORTED_MAJORS: std::ops::RangeInclusive<u32> = 13..=18;

/// What stands in for the version of `pg_basebackup` / `pg_receivewal` in hints.
pub const BUILT_IN: &str = "built-in";

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Barman's name for it (`wal_level`, `replication slot`, …).
    pub name: String,
    /// Passed?
    pub ok: bool,
    /// The text Barman puts in parentheses.
    pub hint: Option<String>,
    /// Nagios performance data in bytes (`backup minimum size`, `wal size`).
    pub perfdata: Option<u64>,
    /// Extra lines printed after the check (the `configuration` check's messages).
    pub details: Vec<String>,
}

impl CheckResult {
    fn new(name: impl Into<String>, ok: bool, hint: Option<String>) -> CheckResult {
        CheckResult { name: name.into(), ok, hint, perfdata: None, details: Vec::new() }
    }
}

/// Every check of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCheck {
    /// The server.
    pub server: String,
    /// `active = on`? (an inactive server's failures do not fail the command).
    pub active: bool,
    /// Disabled by configuration errors?
    pub disabled: bool,
    /// The results in execution order.
    pub results: Vec<CheckResult>,
}

impl ServerCheck {
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.results.iter().any(|r| !r.ok)
    }

    /// Whether this server makes `check` fail (inactive servers never do).
    pub fn counts_as_failure(&self) -> bool {
        self.active && self.failed()
    }

    /// The failed checks that stop a backup: all but Barman's [`NON_CRITICAL`] ones.
    pub fn critical_failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(|r| !r.ok && !NON_CRITICAL.contains(&r.name.as_str()))
    }
}

/// The checks whose failure does not stop a backup (Barman's `CheckStrategy.NON_CRITICAL_CHECKS`,
/// `barman/server.py`): a FAILED earlier backup, say, must not prevent the next one.
pub const NON_CRITICAL: [&str; 11] = [
    "minimum redundancy requirements",
    "backup maximum age",
    "backup minimum size",
    "failed backups",
    "archiver errors",
    "empty incoming directory",
    "empty streaming directory",
    "incoming WALs directory",
    "streaming WALs directory",
    "wal maximum age",
    "PostgreSQL server is standby",
];

/// Inputs of [`evaluate`] that are not facts of the server.
#[derive(Debug, Clone)]
pub struct CheckContext {
    /// The current time.
    pub now: SystemTime,
    /// The result of creating the catalog directories (`Err((path, reason))`), `None`
    /// when the server is disabled and Barman does not try.
    pub directories: Option<Result<(), (PathBuf, String)>>,
    /// Whether reading the live facts ran out of `check_timeout`.
    pub timed_out: bool,
}

/// Runs every check of `cfg`: creates missing directories, reads the live facts (bounded by
/// `check_timeout`, or `timeout_override`), reads the catalog, then [`evaluate`]s.
pub async fn run(
    global: &GlobalSettings,
    cfg: &ServerConfig,
    env: EnvLookup<'_>,
    timeout_override: Option<u64>,
) -> ServerCheck {
    let directories = (!cfg.disabled).then(|| make_directories(cfg));
    let secs = timeout_override.unwrap_or(u64::try_from(cfg.check_timeout).unwrap_or(0));
    let timeout = Duration::from_secs(secs);
    let gathered = if secs == 0 {
        Some(facts::gather(cfg, env, Duration::ZERO).await)
    } else {
        tokio::time::timeout(timeout, facts::gather(cfg, env, timeout)).await.ok()
    };
    let timed_out = gathered.is_none();
    let live = gathered.unwrap_or_else(|| LiveFacts {
        postgres: cfg.conninfo.as_ref().map(|_| facts::PostgresFacts {
            connection_error: Some(format!("no answer within {secs} seconds")),
            ..Default::default()
        }),
        streaming: None,
        primary: None,
    });
    let catalog = CatalogView::read(global, cfg);
    let ctx = CheckContext { now: SystemTime::now(), directories, timed_out };
    let mut results = evaluate(cfg, &live, &catalog, &ctx);
    // A passive node's executor check (ssh to the primary Barman) follows the backup
    // manager's, as in Barman.
    if cfg.is_passive() {
        let passive = cfg.clone();
        let ssh = tokio::task::spawn_blocking(move || crate::sync::passive::ssh_check(&passive)).await.unwrap_or_default();
        let at = results.iter().position(|r| r.name == "minimum redundancy requirements").map_or(results.len(), |i| i + 1);
        results.splice(at..at, ssh);
    } else if matches!(cfg.backup_method, BackupMethod::Rsync | BackupMethod::LocalRsync) {
        // So is the rsync executor's (ssh to the PostgreSQL host, or its local PGDATA).
        let server = cfg.clone();
        let pgdata = live.postgres.as_ref().and_then(|p| p.setting("data_directory")).map(str::to_owned);
        let ssh = tokio::task::spawn_blocking(move || crate::backup::rsync::executor_checks(&server, pgdata.as_deref()))
            .await
            .unwrap_or_default();
        let at = results.iter().position(|r| r.name == "minimum redundancy requirements").map_or(results.len(), |i| i + 1);
        results.splice(at..at, ssh);
    }
    ServerCheck { server: cfg.name.clone(), active: cfg.active, disabled: cfg.disabled, results }
}

/// Barman's `_make_directories`: every `*_directory` of the server that does not exist.
///
/// TEMPORARY: not through `crate::storage` (the caller wants the bare OS reason). Mode 0700
/// like every catalog directory ([`crate::storage::DIR_MODE`]), where Barman's umask-based
/// `os.makedirs` gives 0755.
pub fn make_directories(cfg: &ServerConfig) -> Result<(), (PathBuf, String)> {
    use std::os::unix::fs::DirBuilderExt as _;
    for dir in [
        &cfg.backup_directory,
        &cfg.basebackups_directory,
        &cfg.errors_directory,
        &cfg.incoming_wals_directory,
        &cfg.streaming_wals_directory,
        &cfg.wals_directory,
        &cfg.xlogdb_directory,
    ] {
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(crate::storage::DIR_MODE)
                .create(dir)
                .map_err(|e| (dir.clone(), io_reason(&e)))?;
        }
    }
    Ok(())
}

/// Python's `strerror` for the common cases, the OS text otherwise.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::PermissionDenied => "Permission denied".to_owned(),
        K::NotADirectory => "Not a directory".to_owned(),
        K::AlreadyExists => "File exists".to_owned(),
        K::ReadOnlyFilesystem => "Read-only file system".to_owned(),
        _ => {
            let t = e.to_string();
            t.split(" (os error").next().unwrap_or(&t).to_owned()
        }
    }
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The options barman-rs does not implement, with what is set (empty when all is well).
pub fn unsupported_options(cfg: &ServerConfig) -> Vec<String> {
    let mut out = Vec::new();
    if !matches!(cfg.backup_method, BackupMethod::Postgres | BackupMethod::Rsync | BackupMethod::LocalRsync) {
        out.push(format!("backup_method = {}", cfg.backup_method));
    }
    if let Some(e) = cfg.encryption {
        if e.to_string() != "none" {
            out.push(format!("encryption = {e}"));
        }
    }
    if let Some(c) = cfg.compression {
        if matches!(c, Compression::Xz | Compression::Snappy | Compression::Custom) {
            out.push(format!("compression = {c}"));
        }
    }
    for (name, set) in [
        ("wal_conninfo", cfg.wal_conninfo.is_some()),
        ("wal_streaming_conninfo", cfg.wal_streaming_conninfo.is_some()),
        ("snapshot_provider", cfg.snapshot_provider.is_some()),
    ] {
        if set {
            out.push(name.to_owned());
        }
    }
    out
}

/// The checks, in Barman's order (see the module doc for the differences).
pub fn evaluate(cfg: &ServerConfig, live: &LiveFacts, catalog: &CatalogView, ctx: &CheckContext) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let name = cfg.name.as_str();
    let passive = cfg.is_passive();

    // check_archive
    let waiting = catalog.backups.iter().any(|b| b.status == "WAITING_FOR_WALS");
    if !catalog.xlogdb_nonempty && !waiting {
        out.push(CheckResult::new("WAL archive", false, Some("please make sure WAL shipping is setup".into())));
    }
    for (dir, enabled, path, option, count) in [
        ("incoming", cfg.archiver, &cfg.incoming_wals_directory, "archiver", catalog.incoming_count),
        ("streaming", cfg.streaming_archiver, &cfg.streaming_wals_directory, "streaming_archiver", catalog.streaming_count.saturating_sub(1)),
    ] {
        if !enabled {
            if count > 0 {
                out.push(CheckResult::new(
                    format!("empty {dir} directory"),
                    false,
                    Some(format!("'{}' must be empty when {option}=off", path.display())),
                ));
            }
        } else if let Some(max) = cfg.max_incoming_wals_queue {
            if i64::try_from(count).unwrap_or(i64::MAX) > max {
                out.push(CheckResult::new(
                    format!("{dir} WALs directory"),
                    false,
                    Some(format!("there are too many WALs in queue: {count}, max {max}")),
                ));
            }
        }
    }

    let pg = live.postgres.clone().unwrap_or_default();
    if !passive {
        check_postgres(&mut out, cfg, live, &pg);
        // check_wal_streaming: the replication slot, read on the SQL session.
        if let Some(slot_name) = &cfg.slot_name {
            let slot = &pg.replication_slot;
            if cfg.streaming_archiver {
                let (ok, hint) = match slot {
                    None => (false, Some(format!(
                        "replication slot '{slot_name}' doesn't exist. Please execute 'barman receive-wal --create-slot {name}'"
                    ))),
                    Some(s) if s.restart_lsn.is_none() => {
                        (false, Some(format!("slot '{slot_name}' not initialised: is 'receive-wal' running?")))
                    }
                    Some(s) if !s.active => (false, Some(format!("slot '{slot_name}' not active: is 'receive-wal' running?"))),
                    Some(_) => (true, None),
                };
                out.push(CheckResult::new("replication slot", ok, hint));
            } else if let Some(s) = slot {
                if s.restart_lsn.is_some() {
                    let state = if s.active { "active" } else { "initialised" };
                    out.push(CheckResult::new(
                        "replication slot",
                        true,
                        Some(format!("WARNING: slot '{slot_name}' is {state} but not required by the current config")),
                    ));
                }
            }
        }
    }

    // check_directories
    if let Some(result) = &ctx.directories {
        out.push(match result {
            Ok(()) => CheckResult::new("directories", true, None),
            Err((path, reason)) => CheckResult::new("directories", false, Some(format!("{}: {reason}", path.display()))),
        });
    }

    // check_retention_policy_settings: written but not understood.
    let policy_written = !matches!(cfg.source("retention_policy"), None | Some(Source::Default));
    let policy_invalid = policy_written && cfg.retention_policy.is_none();
    out.push(CheckResult::new("retention policy settings", !policy_invalid, policy_invalid.then(|| "see log".to_owned())));

    // check_backup_validity
    let now = epoch(ctx.now);
    let last = catalog.last_done();
    match &cfg.last_backup_maximum_age {
        Some(max) => {
            let (ok, age) = match last.and_then(|b| b.end_time.map(|t| (b, t))) {
                Some((_, end)) => (end >= now - max.as_duration().as_secs_f64(), crate::output::human_age(now - end)),
                None => (false, "No available backups".to_owned()),
            };
            out.push(CheckResult::new(
                "backup maximum age",
                ok,
                Some(format!("interval provided: {}, latest backup age: {age}", human_duration(max.as_duration(), false))),
            ));
        }
        None => out.push(CheckResult::new("backup maximum age", true, Some("no last_backup_maximum_age provided".into()))),
    }
    let last_size = last.and_then(|b| b.size).unwrap_or(0);
    let mut size_check = match cfg.last_backup_minimum_size {
        Some(min) => {
            let ok = last.is_some() && last_size >= min;
            let gtlt = if ok { ">" } else { "<" };
            CheckResult::new(
                "backup minimum size",
                ok,
                Some(format!("last backup size {} {gtlt} {} minimum", pretty_size(last_size as f64), pretty_size(min as f64))),
            )
        }
        None => CheckResult::new("backup minimum size", true, Some(pretty_size(last_size as f64))),
    };
    size_check.perfdata = Some(last_size);
    out.push(size_check);

    // check_wal_validity
    let (wal_size, wal_last) = last.map(|b| catalog.wal_after(b)).unwrap_or((0, None));
    match &cfg.last_wal_maximum_age {
        Some(max) => {
            let (ok, hint) = match (last, wal_last) {
                (Some(_), Some(t)) => (
                    now - t <= max.as_duration().as_secs_f64(),
                    format!(
                        "interval provided: {}, latest wal age: {}",
                        human_duration(max.as_duration(), false),
                        crate::output::human_age(now - t)
                    ),
                ),
                _ => (false, "No WAL files archived for last backup".to_owned()),
            };
            out.push(CheckResult::new("wal maximum age", ok, Some(hint)));
        }
        None => out.push(CheckResult::new("wal maximum age", true, Some("no last_wal_maximum_age provided".into()))),
    }
    let wal_size = if cfg.last_wal_maximum_age.is_some() && wal_last.is_none() { 0 } else { wal_size };
    let mut wal_check = CheckResult::new("wal size", true, Some(pretty_size(wal_size as f64)));
    wal_check.perfdata = Some(wal_size);
    out.push(wal_check);

    // backup_manager.check
    let compression_ok = !(cfg.compression == Some(Compression::Custom)
        && (cfg.custom_compression_filter.is_none() || cfg.custom_decompression_filter.is_none()));
    out.push(CheckResult::new("compression settings", compression_ok, None));
    let failed = catalog.backups.iter().filter(|b| b.status == "FAILED").count();
    out.push(CheckResult::new("failed backups", failed == 0, Some(format!("there are {failed} failed backups"))));
    let full = catalog.done().filter(|b| b.is_full_kind()).count();
    let min = cfg.minimum_redundancy as usize;
    out.push(CheckResult::new(
        "minimum redundancy requirements",
        full >= min,
        Some(format!("have {full} non-incremental backups, expected at least {min}")),
    ));
    if !passive && cfg.backup_method == BackupMethod::Postgres {
        let streaming = live.streaming.clone().unwrap_or_default();
        out.push(CheckResult::new("pg_basebackup", true, None));
        out.push(compatible("pg_basebackup", &streaming));
        if pg.server_txt_version.is_some() {
            out.push(CheckResult::new("pg_basebackup supports tablespaces mapping", true, None));
        }
    }

    // check_configuration: Barman's PostgresBackupExecutor validates backup_compression while
    // the server is set up (adding to the messages this check prints), only when PostgreSQL
    // answers.
    let mut messages = cfg.messages.clone();
    if !passive && cfg.backup_method == BackupMethod::Postgres {
        if let Some(version) = pg.server_version {
            messages.extend(compression_issues(cfg, version));
        }
    }
    if !messages.is_empty() {
        let mut c = CheckResult::new("configuration", false, None);
        c.details = messages;
        out.push(c);
    }
    let unsupported = unsupported_options(cfg);
    if !unsupported.is_empty() {
        out.push(CheckResult::new(
            "unsupported options",
            false,
            Some(format!("not implemented by barman-rs: {}", unsupported.join(", "))),
        ));
    }

    // check_identity
    if !passive {
        out.push(check_identity(live, catalog));
    }

    // archivers: streaming first, then file (Barman's order)
    if !passive && cfg.streaming_archiver {
        let streaming = live.streaming.clone().unwrap_or_default();
        out.push(CheckResult::new("pg_receivexlog", true, None));
        out.push(compatible("pg_receivexlog", &streaming));
        out.push(CheckResult::new(
            "receive-wal running",
            catalog.receive_wal_running,
            (!catalog.receive_wal_running).then(|| "See the Barman log file for more details".to_owned()),
        ));
    }
    if !passive && cfg.archiver {
        if let Some(mode) = pg.setting("archive_mode") {
            let ok = mode == "on" || mode == "always";
            out.push(CheckResult::new("archive_mode", ok, (!ok).then(|| "please set it to 'on' or 'always'".to_owned())));
            match pg.setting("archive_command") {
                Some(cmd) if !cmd.is_empty() && cmd != "(disabled)" => {
                    out.push(CheckResult::new("archive_command", true, None));
                    if let Some(is_archiving) = pg.archiver.as_ref().and_then(|a| a.is_archiving) {
                        out.push(CheckResult::new("continuous archiving", is_archiving, None));
                    }
                }
                _ => out.push(CheckResult::new(
                    "archive_command",
                    false,
                    Some("please set it accordingly to documentation".into()),
                )),
            }
        }
    }

    // check_archiver_errors
    out.push(CheckResult::new("archiver errors", catalog.error_files.is_empty(), summarise_error_files(&catalog.error_files)));

    if ctx.timed_out {
        out.push(CheckResult::new("check timeout", false, Some("barman check command timed out".into())));
    }
    out
}

/// What `backup` would refuse in the `backup_compression*` options against a server of
/// `server_version` (the same validation, so check and backup cannot disagree).
fn compression_issues(cfg: &ServerConfig, server_version: u32) -> Vec<String> {
    match BackupCompressionSettings::from_config(cfg) {
        Ok(None) => Vec::new(),
        Ok(Some(settings)) => settings.check_server(server_version).err().map(|e| e.issues).unwrap_or_default(),
        Err(e) => e.issues,
    }
}

fn check_postgres(out: &mut Vec<CheckResult>, cfg: &ServerConfig, live: &LiveFacts, pg: &facts::PostgresFacts) {
    if cfg.conninfo.is_none() {
        // Barman's Server has no PostgreSQL connection: the check has no result line.
        return;
    }
    let Some(version) = &pg.server_txt_version else {
        out.push(CheckResult::new("PostgreSQL", false, pg.connection_error.clone()));
        return;
    };
    if pg.version_supported() == Some(false) {
        out.push(CheckResult::new(
            "PostgreSQL",
            false,
            Some(format!("unsupported version: PostgreSQL server is too old ({version} < 9.6.0)")),
        ));
        return;
    }
    out.push(CheckResult::new("PostgreSQL", true, None));
    match pg.has_backup_privileges {
        Some(true) => out.push(CheckResult::new("superuser or standard user with backup privileges", true, None)),
        Some(false) => out.push(CheckResult::new(
            "no access to backup functions",
            false,
            Some("privileges for PostgreSQL backup functions are required (see documentation)".into()),
        )),
        None => {}
    }
    if let Some(s) = &live.streaming {
        let hint = if s.streaming_supported.is_none() { s.connection_error.clone() } else { None };
        out.push(CheckResult::new("PostgreSQL streaming", s.streaming == Some(true), hint));
    }
    if let Some(level) = pg.setting("wal_level") {
        let ok = level != "minimal";
        out.push(CheckResult::new("wal_level", ok, (!ok).then(|| "please set it to a higher level than 'minimal'".to_owned())));
    }
    if cfg.primary_conninfo.is_some() {
        check_standby(out, pg, live.primary.as_ref());
    }
}

/// Barman's `_check_standby`: `conninfo` is a standby, `primary_conninfo` its primary.
fn check_standby(out: &mut Vec<CheckResult>, standby: &facts::PostgresFacts, primary: Option<&facts::PrimaryFacts>) {
    let is_standby = standby.is_in_recovery == Some(true);
    out.push(CheckResult::new(
        "PostgreSQL server is standby",
        is_standby,
        (!is_standby).then(|| "conninfo should point to a standby server if primary_conninfo is set".to_owned()),
    ));
    // Barman has no primary connection to check once conninfo is not a standby.
    if !is_standby {
        return;
    }
    let primary = primary.cloned().unwrap_or_default();
    let (ok, hint) = match (&primary.connection_error, primary.is_in_recovery) {
        (Some(e), _) => (false, Some(format!("cannot connect to primary_conninfo: {e}"))),
        (None, Some(true)) => (false, Some("primary_conninfo should point to a primary server, not a standby".to_owned())),
        (None, _) => (true, None),
    };
    out.push(CheckResult::new("Primary server is not a standby", ok, hint));
    let same = primary.systemid.is_some() && primary.systemid == standby.postgres_systemid;
    out.push(CheckResult::new(
        "Primary and standby have same system ID",
        same,
        (!same).then(|| {
            "primary_conninfo and conninfo should point to primary and standby servers which share the same system identifier"
                .to_owned()
        }),
    ));
}

fn compatible(tool: &str, streaming: &facts::StreamingFacts) -> CheckResult {
    let ok = streaming.server_version.is_some_and(|v| SUPPORTED_MAJORS.contains(&(v / 10000)));
    let hint = (!ok).then(|| {
        format!(
            "PostgreSQL version: {}, {tool} version: {BUILT_IN}",
            streaming.server_txt_version.as_deref().unwrap_or("None")
        )
    });
    CheckResult::new(format!("{tool} compatible"), ok, hint)
}

fn check_identity(live: &LiveFacts, catalog: &CatalogView) -> CheckResult {
    let from_streaming = live.streaming.as_ref().and_then(|s| s.streaming_systemid.clone());
    let from_postgres = live.postgres.as_ref().and_then(|p| p.postgres_systemid.clone());
    if let (Some(a), Some(b)) = (&from_streaming, &from_postgres) {
        if a != b {
            return CheckResult::new(
                "systemid coherence",
                false,
                Some("is the streaming DSN targeting the same server of the PostgreSQL connection string?".into()),
            );
        }
    }
    let Some(live_id) = from_streaming.or(from_postgres) else {
        return CheckResult::new("systemid coherence", true, Some("no system Id available".into()));
    };
    match &catalog.identity_systemid {
        None => CheckResult::new("systemid coherence", true, Some("no system Id stored on disk".into())),
        Some(stored) if stored.as_deref() == Some(live_id.as_str()) => CheckResult::new("systemid coherence", true, None),
        Some(_) => CheckResult::new(
            "systemid coherence",
            false,
            Some(format!(
                "the system Id of the connected PostgreSQL server changed, stored in \"{}\"",
                catalog.identity_path.display()
            )),
        ),
    }
}

/// Barman's `summarise_error_files`: counts by reason suffix, in order of first appearance.
pub fn summarise_error_files(names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let mut counters: Vec<(&str, usize)> = Vec::new();
    for n in names {
        let kind = if n.ends_with(".error") {
            "not relevant"
        } else if n.ends_with(".duplicate") {
            "duplicates"
        } else if n.ends_with(".unknown") {
            "unknown"
        } else {
            "unknown failure"
        };
        match counters.iter_mut().find(|c| c.0 == kind) {
            Some(c) => c.1 += 1,
            None => counters.push((kind, 1)),
        }
    }
    Some(counters.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, MemoryFs};
    use crate::diagnostics::catalog_view::BackupSummary;
    use crate::diagnostics::facts::{PostgresFacts, SlotState, StreamingFacts};

    fn server(extra: &str) -> ServerConfig {
        let mut fs = MemoryFs::new();
        fs.add(
            "/etc/barman.conf",
            format!(
                "[barman]\nbarman_home = /var/lib/barman\n[pg]\nconninfo = host=x\nbackup_method = postgres\n\
                 streaming_archiver = on\narchiver = on\nslot_name = barman\n{extra}"
            ),
        );
        let cfg = Config::load_with(&fs, std::path::Path::new("/etc/barman.conf"), None).expect("valid");
        cfg.server("pg").expect("pg").clone()
    }

    fn good_facts() -> LiveFacts {
        let mut pg = PostgresFacts {
            server_version: Some(150018),
            server_txt_version: Some("15.18".into()),
            has_backup_privileges: Some(true),
            postgres_systemid: Some("42".into()),
            replication_slot: Some(SlotState { slot_name: "barman".into(), active: true, restart_lsn: Some("0/3000000".into()) }),
            archiver: Some(facts::ArchiverStats { is_archiving: Some(true), ..Default::default() }),
            ..Default::default()
        };
        pg.settings.insert("wal_level", Some("replica".into()));
        pg.settings.insert("archive_mode", Some("on".into()));
        pg.settings.insert("archive_command", Some("barman-wal-archive x pg %p".into()));
        let streaming = StreamingFacts {
            streaming_supported: Some(true),
            streaming: Some(true),
            streaming_systemid: Some("42".into()),
            server_version: Some(150018),
            server_txt_version: Some("15.18".into()),
            ..Default::default()
        };
        LiveFacts { postgres: Some(pg), streaming: Some(streaming), primary: None }
    }

    fn good_catalog() -> CatalogView {
        CatalogView {
            xlogdb_nonempty: true,
            receive_wal_running: true,
            identity_systemid: Some(Some("42".into())),
            backups: vec![BackupSummary {
                id: "20261125T123353".into(),
                status: "DONE".into(),
                backup_type: "full".into(),
                end_time: Some(1_000_000.0),
                size: Some(37_576_284),
                end_wal: Some("00000001000000000000000A".into()),
            }],
            ..Default::default()
        }
    }

    fn ctx() -> CheckContext {
        CheckContext { now: UNIX_EPOCH + Duration::from_secs(1_000_008), directories: Some(Ok(())), timed_out: false }
    }

    fn lines(results: &[CheckResult]) -> Vec<String> {
        results
            .iter()
            .map(|r| match &r.hint {
                Some(h) => format!("{}: {} ({h})", r.name, if r.ok { "OK" } else { "FAILED" }),
                None => format!("{}: {}", r.name, if r.ok { "OK" } else { "FAILED" }),
            })
            .collect()
    }

    #[test]
    fn a_good_server_passes_in_barmans_order() {
        let cfg = server("minimum_redundancy = 1\nlast_backup_maximum_age = 1 DAYS\n");
        let got = lines(&evaluate(&cfg, &good_facts(), &good_catalog(), &ctx()));
        let want = [
            "PostgreSQL: OK",
            "superuser or standard user with backup privileges: OK",
            "PostgreSQL streaming: OK",
            "wal_level: OK",
            "replication slot: OK",
            "directories: OK",
            "retention policy settings: OK",
            "backup maximum age: OK (interval provided: 1 day, latest backup age: 8 seconds)",
            "backup minimum size: OK (35.8 MiB)",
            "wal maximum age: OK (no last_wal_maximum_age provided)",
            "wal size: OK (0 B)",
            "compression settings: OK",
            "failed backups: OK (there are 0 failed backups)",
            "minimum redundancy requirements: OK (have 1 non-incremental backups, expected at least 1)",
            "pg_basebackup: OK",
            "pg_basebackup compatible: OK",
            "pg_basebackup supports tablespaces mapping: OK",
            "systemid coherence: OK",
            "pg_receivexlog: OK",
            "pg_receivexlog compatible: OK",
            "receive-wal running: OK",
            "archive_mode: OK",
            "archive_command: OK",
            "continuous archiving: OK",
            "archiver errors: OK",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn postgresql_down_matches_barman() {
        let cfg = server("");
        let live = LiveFacts {
            postgres: Some(PostgresFacts { connection_error: Some("cannot connect".into()), ..Default::default() }),
            streaming: Some(StreamingFacts { connection_error: Some("cannot connect".into()), ..Default::default() }),
            primary: None,
        };
        let mut catalog = good_catalog();
        catalog.receive_wal_running = false;
        catalog.error_files = vec!["a.unknown".into(), "b.duplicate".into(), "c.duplicate".into()];
        let got = lines(&evaluate(&cfg, &live, &catalog, &ctx()));
        assert_eq!(got[0], "PostgreSQL: FAILED (cannot connect)");
        assert_eq!(
            got[1],
            "replication slot: FAILED (replication slot 'barman' doesn't exist. Please execute 'barman receive-wal --create-slot pg')"
        );
        assert!(got.contains(&"pg_basebackup compatible: FAILED (PostgreSQL version: None, pg_basebackup version: built-in)".to_owned()));
        assert!(got.contains(&"systemid coherence: OK (no system Id available)".to_owned()));
        assert!(got.contains(&"receive-wal running: FAILED (See the Barman log file for more details)".to_owned()));
        assert_eq!(got.last().map(String::as_str), Some("archiver errors: FAILED (unknown: 1, duplicates: 2)"));
        assert!(!got.iter().any(|l| l.starts_with("archive_mode") || l.starts_with("wal_level")));
    }

    #[test]
    fn broken_settings_fail_with_barmans_hints() {
        let cfg = server("last_backup_minimum_size = 1 Gi\n");
        let mut live = good_facts();
        let pg = live.postgres.as_mut().expect("pg");
        pg.settings.insert("wal_level", Some("minimal".into()));
        pg.settings.insert("archive_command", Some("(disabled)".into()));
        pg.replication_slot = None;
        pg.postgres_systemid = Some("43".into());
        live.streaming.as_mut().expect("streaming").streaming_systemid = Some("43".into());
        let got = lines(&evaluate(&cfg, &live, &good_catalog(), &ctx()));
        for want in [
            "wal_level: FAILED (please set it to a higher level than 'minimal')",
            "backup minimum size: FAILED (last backup size 35.8 MiB < 1.0 GiB minimum)",
            "archive_command: FAILED (please set it accordingly to documentation)",
            "systemid coherence: FAILED (the system Id of the connected PostgreSQL server changed, stored in \"\")",
        ] {
            assert!(got.contains(&want.to_owned()), "{want} not in {got:#?}");
        }
    }

    #[test]
    fn empty_catalog_and_unsupported_options() {
        let cfg = server("backup_method = snapshot\nminimum_redundancy = 1\n");
        let got = lines(&evaluate(&cfg, &good_facts(), &CatalogView::default(), &ctx()));
        assert_eq!(got[0], "WAL archive: FAILED (please make sure WAL shipping is setup)");
        assert!(got.contains(&"unsupported options: FAILED (not implemented by barman-rs: backup_method = snapshot)".to_owned()));
        assert!(got.contains(&"minimum redundancy requirements: FAILED (have 0 non-incremental backups, expected at least 1)".to_owned()));
        assert!(got.contains(&"systemid coherence: OK (no system Id stored on disk)".to_owned()));
        assert!(!got.iter().any(|l| l.starts_with("pg_basebackup")));
    }

    #[test]
    fn local_rsync_is_supported_without_ssh_command() {
        let cfg = server("backup_method = local-rsync\n");
        assert!(!cfg.disabled);
        let got = evaluate(&cfg, &good_facts(), &good_catalog(), &ctx());
        assert!(!got.iter().any(|r| r.name == "unsupported options" || r.name == "configuration"), "{got:#?}");

        // Barman's local mode refuses an ssh_command: the server is disabled, and says why.
        let cfg = server("backup_method = local-rsync\nssh_command = ssh postgres@pg\n");
        assert!(cfg.disabled);
        let got = evaluate(&cfg, &good_facts(), &good_catalog(), &ctx());
        let c = got.iter().find(|r| r.name == "configuration").expect("configuration");
        assert_eq!(
            (c.ok, c.details.clone()),
            (false, vec!["Local copy requires ssh_command in barman configuration to be empty for server pg".to_owned()])
        );
    }

    #[test]
    fn backup_compression_refused_by_backup_fails_configuration() {
        let details = |extra: &str, version: u32| {
            let cfg = server(extra);
            let mut live = good_facts();
            live.postgres.as_mut().expect("pg").server_version = Some(version);
            let results = evaluate(&cfg, &live, &good_catalog(), &ctx());
            results.iter().find(|r| r.name == "configuration").map(|r| (r.ok, r.details.clone()))
        };
        assert_eq!(
            details("backup_compression = zstd\nbackup_compression_format = plain\n", 150018),
            Some((false, vec!["backup_compression_format plain is not compatible with backup_compression_location None".to_owned()]))
        );
        assert_eq!(
            details("backup_compression = lz4\nbackup_compression_location = server\n", 140011),
            Some((false, vec!["backup_compression_location = server requires PostgreSQL 15 or greater".to_owned()]))
        );
        assert_eq!(
            details("backup_compression = gzip\nbackup_compression_workers = 2\n", 150018),
            Some((false, vec!["backup_compression_workers is not compatible with compression gzip".to_owned()]))
        );
        // Settings backup accepts leave the check out, as in Barman.
        assert_eq!(details("backup_compression = lz4\nbackup_compression_location = server\n", 150018), None);
        assert_eq!(details("backup_compression = zstd\n", 130000), None);
        // PostgreSQL down: Barman cannot validate and says nothing.
        let cfg = server("backup_compression = zstd\nbackup_compression_format = plain\n");
        let mut live = good_facts();
        live.postgres = Some(PostgresFacts { connection_error: Some("refused".into()), ..Default::default() });
        assert!(!evaluate(&cfg, &live, &good_catalog(), &ctx()).iter().any(|r| r.name == "configuration"));
    }

    #[test]
    fn standby_checks_as_barmans() {
        let cfg = server("primary_conninfo = host=primary\n");
        let mut live = good_facts();
        live.postgres.as_mut().expect("pg").is_in_recovery = Some(true);
        live.primary = Some(facts::PrimaryFacts { is_in_recovery: Some(false), systemid: Some("42".into()), ..Default::default() });
        let got = lines(&evaluate(&cfg, &live, &good_catalog(), &ctx()));
        let at = got.iter().position(|l| l == "wal_level: OK").expect("wal_level");
        assert_eq!(
            got[at + 1..at + 4],
            ["PostgreSQL server is standby: OK", "Primary server is not a standby: OK", "Primary and standby have same system ID: OK"]
        );
        assert!(!got.iter().any(|l| l.starts_with("unsupported options")), "{got:#?}");

        live.primary = Some(facts::PrimaryFacts { is_in_recovery: Some(true), systemid: Some("43".into()), ..Default::default() });
        let got = lines(&evaluate(&cfg, &live, &good_catalog(), &ctx()));
        assert!(got.contains(&"Primary server is not a standby: FAILED (primary_conninfo should point to a primary server, not a standby)".to_owned()));
        assert!(got.contains(&"Primary and standby have same system ID: FAILED (primary_conninfo and conninfo should point to primary and standby servers which share the same system identifier)".to_owned()));

        live.primary = Some(facts::PrimaryFacts { connection_error: Some("connection refused".into()), ..Default::default() });
        let got = lines(&evaluate(&cfg, &live, &good_catalog(), &ctx()));
        assert!(got.contains(&"Primary server is not a standby: FAILED (cannot connect to primary_conninfo: connection refused)".to_owned()));

        live.postgres.as_mut().expect("pg").is_in_recovery = Some(false);
        let got = lines(&evaluate(&cfg, &live, &good_catalog(), &ctx()));
        assert!(got.contains(&"PostgreSQL server is standby: FAILED (conninfo should point to a standby server if primary_conninfo is set)".to_owned()));
        assert!(!got.iter().any(|l| l.starts_with("Primary")), "{got:#?}");
    }

    #[test]
    fn error_file_summary() {
        assert_eq!(summarise_error_files(&[]), None);
        let names = ["x.duplicate", "y.unknown", "z.duplicate", "w.error", "v.oops"].map(String::from);
        assert_eq!(
            summarise_error_files(&names).as_deref(),
            Some("duplicates: 2, unknown: 1, not relevant: 1, unknown failure: 1")
        );
    }
}
