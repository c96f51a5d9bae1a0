//! The passive node's side of geo-redundancy, as Barman's `Server.primary_node_info`,
//! `sync_backup`, `sync_wals`, `sync_cron` and `PassiveBackupExecutor.check`.
//!
//! Everything goes through `primary_ssh_command`:
//!
//! - [`primary_node_info`] runs `barman sync-info SERVER [LAST_WAL [LAST_POSITION]]` there
//!   (`barman -c <this configuration> …` with `forward_config_path`), retries once without
//!   the resume point when the primary refuses it (exit 1), and keeps the answer as
//!   `<backup_directory>/primary.info` (written atomically) for the two copy steps;
//! - [`sync_backup`] copies one backup listed in primary.info: its backup.info is written
//!   first with status `SYNCING` (what `list-backups` shows meanwhile), the backup directory is
//!   pulled with rsync (`--fsync`, then every directory fsynced), and only then is the status
//!   `DONE`; any failure leaves it `FAILED` with the reason. The
//!   `.<server>-<ID>-sync-backup.lock` is held throughout;
//! - [`sync_wals`] pulls the WAL files listed in primary.info after the last one synced
//!   (`wals/sync-wals.info`), checks each in WAL order — its content decompressed and
//!   validated ([`super::verify`]), then its size against the primary's xlog.db line —,
//!   fsyncs them, then appends those lines to the local xlog.db and records the new resume
//!   point, under `.<server>-sync-wal.lock`. The first file refused goes to `errors/` (reason
//!   `corrupt` or `foreign`, as `archive-wal`), the files before it are synced (the resume
//!   point is the last of them), those after it are removed unchecked, and the run fails;
//! - [`cron_plan`] is what `cron` decides for a passive node: which backup to start a
//!   `sync-backup` for (one per run, the oldest missing), and whether to start `sync-wals`;
//! - [`ssh_check`] is the `ssh` check of `barman check`.
//!
//! Deliberate difference: Barman adds `-o BatchMode=yes -o StrictHostKeyChecking=no` after the
//! whole command line of its `ssh` check, where ssh reads them as part of the remote command
//! when `primary_ssh_command` ends with one (`ssh host env …`); barman-rs puts them right after
//! the program name.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{Notice, SyncError, SyncPoint};
use crate::catalog::pyliteral::{float_repr, PyValue};
use crate::catalog::query::BackupCatalog;
use crate::catalog::{xlogdb, BackupId, BackupInfo, BackupStatus, CatalogError, LockKind, ServerCatalog, XlogDbEntry};
use crate::config::ServerConfig;
use crate::diagnostics::CheckResult;
use crate::retention::RetentionStatus;
use crate::ssh::{remote_shell, Rsync, SshError};
use super::verify::WalVerifier;
use crate::archive_wal::Refusal;
use crate::catalog::ServerIdentity;
use crate::compression::WalCompression;
use crate::storage::durable::{atomic_write, create_dir_all_durable, durable_rename, fsync_dir, DIR_MODE};
use crate::storage::fs::remove_file_if_exists;
use crate::storage::{StorageError, StorageOp};
use crate::wal::WalFileName;

/// Where the last `sync-info` answer of the primary is kept (in `backup_directory`).
pub const PRIMARY_INFO_FILE: &str = "primary.info";
/// The resume point of WAL synchronisation (in `wals_directory`): `<last_name>\t<position>`.
pub const SYNC_WALS_INFO_FILE: &str = "sync-wals.info";

fn primary_ssh(cfg: &ServerConfig) -> Result<&str, SyncError> {
    cfg.primary_ssh_command.as_deref().ok_or_else(|| SyncError::Failed(format!("server {} is not passive", cfg.name)))
}

/// The command run on the primary host, as Barman composes it (its stray spaces included).
pub fn sync_info_command(cfg: &ServerConfig, config_file: &Path, from: &SyncPoint) -> String {
    let base = if cfg.forward_config_path {
        format!("barman -c {} sync-info", config_file.display())
    } else {
        "barman sync-info".to_owned()
    };
    let mut cmd = format!("{base} {}", cfg.name);
    if let Some(wal) = &from.last_wal {
        cmd.push_str(&format!(" {wal} "));
        if let Some(position) = from.last_position {
            cmd.push_str(&format!(" {position} "));
        }
    }
    cmd
}

/// The primary's answer to `sync-info`.
#[derive(Debug, Clone)]
pub struct PrimaryInfo {
    /// The text, as received (and as kept in primary.info).
    pub text: String,
    /// The same, parsed.
    pub doc: Value,
}

impl PrimaryInfo {
    /// The IDs of the primary's backups.
    pub fn backup_ids(&self) -> Vec<BackupId> {
        let mut ids: Vec<BackupId> =
            self.doc["backups"].as_object().into_iter().flatten().filter_map(|(k, _)| k.parse().ok()).collect();
        ids.sort();
        ids
    }

    /// Whether the answer lists WAL files.
    pub fn has_wals(&self) -> bool {
        self.doc["wals"].as_array().is_some_and(|w| !w.is_empty())
    }
}

/// Asks the primary for its state (`sync-info` through `primary_ssh_command`), starting
/// from `from`, and keeps the answer in primary.info. `config_file` is this node's main
/// configuration file (sent along with `forward_config_path`).
pub fn primary_node_info(
    cfg: &ServerConfig,
    catalog: &ServerCatalog,
    config_file: &Path,
    mut from: SyncPoint,
    notify: &mut dyn FnMut(Notice),
) -> Result<PrimaryInfo, SyncError> {
    let ssh = primary_ssh(cfg)?;
    let text = loop {
        match remote_shell(ssh, &sync_info_command(cfg, config_file, &from)) {
            Ok(out) => break out,
            // Barman's own refusal (exit 1) of a resume point: ask for everything once.
            Err(SshError::Failed { status, .. }) if status.code() == Some(1) && from.last_wal.is_some() => {
                from = SyncPoint::default();
                notify(Notice::Warning(format!(
                    "sync-info is out of sync. Self-recovery procedure started: requesting full synchronisation \
                     from primary server {}",
                    cfg.name
                )));
            }
            Err(SshError::Failed { stderr, .. }) => {
                return Err(SyncError::Failed(format!(
                    "sync-info execution on remote primary server {} failed: {stderr}",
                    cfg.name
                )))
            }
            Err(e) => return Err(e.into()),
        }
    };
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        SyncError::Failed(format!("sync-info execution on remote primary server {} failed: not JSON ({e})", cfg.name))
    })?;
    catalog.create_skeleton()?;
    atomic_write(&catalog.backup_directory().join(PRIMARY_INFO_FILE), text.as_bytes(), 0o644)?;
    Ok(PrimaryInfo { text, doc })
}

/// primary.info, as the last [`primary_node_info`] kept it.
pub fn load_primary_info(cfg: &ServerConfig, catalog: &ServerCatalog) -> Result<PrimaryInfo, SyncError> {
    let path = catalog.backup_directory().join(PRIMARY_INFO_FILE);
    let cannot = |why: String| SyncError::Failed(format!("Cannot open {PRIMARY_INFO_FILE} file for server {}: {why}", cfg.name));
    let text = std::fs::read_to_string(&path).map_err(|e| cannot(format!("{e}: '{}'", path.display())))?;
    let doc = serde_json::from_str(&text).map_err(|e| cannot(e.to_string()))?;
    Ok(PrimaryInfo { text, doc })
}

/// The resume point of WAL synchronisation (none before the first `sync-wals`).
pub fn load_sync_wals_info(cfg: &ServerConfig, catalog: &ServerCatalog) -> Result<SyncPoint, SyncError> {
    let path = catalog.wals_directory().join(SYNC_WALS_INFO_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SyncPoint::default()),
        Err(e) => {
            return Err(SyncError::Failed(format!("Cannot open {SYNC_WALS_INFO_FILE} file for server {}: {e}", cfg.name)))
        }
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split('\t');
    let last_wal = parts.next().filter(|w| !w.is_empty()).map(str::to_owned);
    let last_position = parts.next().and_then(|p| p.trim().parse().ok());
    Ok(SyncPoint { last_wal, last_position })
}

/// Whether a backup of the primary is to be copied, as Barman's `check_sync_required`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncDecision {
    /// Copy it.
    Sync,
    /// Nothing to do, and why (info).
    NothingToDo(String),
    /// Gone from the primary and FAILED here: to be deleted (warning).
    ToBeDeleted(String),
}

/// Barman's `check_sync_required` for backup `id`: `local` is this node's copy, if any.
pub fn check_sync_required(
    cfg: &ServerConfig,
    catalog: &ServerCatalog,
    id: BackupId,
    primary: &PrimaryInfo,
    local: Option<&BackupInfo>,
) -> Result<SyncDecision, SyncError> {
    let name = &cfg.name;
    let remote = primary.doc["backups"].get(id.as_str());
    let local_status = local.map(|l| l.status);
    match (remote, local_status) {
        (None, None) => return Err(SyncError::Failed(format!("Backup {id} is absent on {name} server"))),
        (None, Some(BackupStatus::Failed)) => {
            return Ok(SyncDecision::ToBeDeleted(format!("Backup {id} is absent on {name} server and is incomplete locally")))
        }
        (None, Some(BackupStatus::Done)) => {
            return Ok(SyncDecision::NothingToDo(format!(
                "Backup {id} is absent on {name} server, but present locally (local copy only)"
            )))
        }
        (None, Some(_)) => return Err(SyncError::Failed(format!("Backup {id} is absent on {name} server"))),
        (Some(_), Some(BackupStatus::Done)) => {
            return Ok(SyncDecision::NothingToDo(format!("Backup {id} is already synced with {name} server")))
        }
        (Some(_), _) => {}
    }
    let auto = cfg.retention_policy_mode.is_empty() || cfg.retention_policy_mode == "auto";
    if let (Some(policy), true, Some(remote)) = (cfg.retention_policy, auto, remote) {
        // The local catalog as it would be with the remote backup copied.
        let (local_backups, _) = BackupCatalog::load(catalog)?;
        let mut backups: Vec<BackupInfo> =
            local_backups.backups().iter().filter(|b| b.status != BackupStatus::Empty && b.backup_id != id).cloned().collect();
        backups.push(backup_from_json(id, remote)?);
        let report = BackupCatalog::from_backups(catalog.clone(), backups).retention_report(
            policy,
            cfg.minimum_redundancy,
            time::OffsetDateTime::now_utc(),
        )?;
        if report.get(&id) == Some(&RetentionStatus::Obsolete) {
            let primary_name = primary.doc["config"]["name"].as_str().unwrap_or(name);
            return Ok(SyncDecision::NothingToDo(format!(
                "Remote backup {primary_name}/{id} is obsolete for local retention policies."
            )));
        }
    }
    Ok(SyncDecision::Sync)
}

/// A backup.info from its `to_json()` form (Barman's `LocalBackupInfo.from_json`): the times
/// from the `_iso` fields, tablespaces back to tuples, `copy_stats` and `included_files` to
/// Python literals, `backup_label` kept as the literal it is.
pub fn backup_from_json(id: BackupId, v: &Value) -> Result<BackupInfo, SyncError> {
    let obj = v.as_object().ok_or_else(|| SyncError::Failed(format!("backup {id} of the primary is not an object")))?;
    let mut text = String::new();
    for (key, value) in obj {
        let rendered = match (key.as_str(), value) {
            ("backup_id" | "begin_time_iso" | "end_time_iso" | "snapshots_info", _) => continue,
            (_, Value::Null) => "None".to_owned(),
            ("begin_time" | "end_time", _) => match obj.get(&format!("{key}_iso")).and_then(Value::as_str) {
                Some(iso) => iso.replacen('T', " ", 1),
                None => return Err(SyncError::Failed(format!("backup {id} of the primary has no {key}_iso"))),
            },
            ("tablespaces", Value::Array(items)) => PyValue::List(
                items.iter().map(|t| PyValue::Tuple(t.as_array().into_iter().flatten().map(py_value).collect())).collect(),
            )
            .to_string(),
            ("copy_stats" | "included_files", other) => py_value(other).to_string(),
            (_, Value::String(s)) => s.clone(),
            (_, Value::Bool(b)) => (if *b { "True" } else { "False" }).to_owned(),
            (_, Value::Number(n)) => n.as_f64().filter(|_| n.is_f64()).map_or_else(|| n.to_string(), float_repr),
            (_, other) => py_value(other).to_string(),
        };
        if rendered.contains('\n') {
            return Err(SyncError::Failed(format!("backup {id} of the primary: {key} holds a newline")));
        }
        text.push_str(&format!("{key}={rendered}\n"));
    }
    BackupInfo::parse(id, text.as_bytes()).map_err(|e| SyncError::Failed(format!("backup {id} of the primary: {e}")))
}

/// A JSON value as the Python literal `json.load` would have made of it.
fn py_value(v: &Value) -> PyValue {
    match v {
        Value::Null => PyValue::None,
        Value::Bool(b) => PyValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => PyValue::Int(i.into()),
            None => n.as_u64().map_or_else(|| PyValue::Float(n.as_f64().unwrap_or(0.0)), |u| PyValue::Int(u.into())),
        },
        Value::String(s) => PyValue::Str(s.clone()),
        Value::Array(items) => PyValue::List(items.iter().map(py_value).collect()),
        Value::Object(m) => PyValue::Dict(m.iter().map(|(k, v)| (PyValue::Str(k.clone()), py_value(v))).collect()),
    }
}

/// How the copies reach the primary: `primary_ssh_command` for rsync, with the server's
/// `network_compression`, `bandwidth_limit` and retry settings.
fn rsync_for(cfg: &ServerConfig, retry: bool) -> Result<Rsync, SyncError> {
    let (times, sleep) = if retry {
        (u32::try_from(cfg.basebackup_retry_times.max(0)).unwrap_or(u32::MAX), cfg.basebackup_retry_sleep.max(0))
    } else {
        (0, 0)
    };
    Ok(Rsync::new(primary_ssh(cfg)?, cfg.network_compression, times, Duration::from_secs(sleep.unsigned_abs())))
}

fn bwlimit(cfg: &ServerConfig) -> Option<u64> {
    cfg.bandwidth_limit.and_then(|b| u64::try_from(b).ok())
}

/// `barman sync-backup SERVER ID`: copies backup `id` from the primary (see the module doc).
/// Refusals and outcomes are notices; `Err` is kept for what Barman raises as `SyncError`.
pub fn sync_backup(cfg: &ServerConfig, catalog: &ServerCatalog, id: BackupId, notify: &mut dyn FnMut(Notice)) -> Result<(), SyncError> {
    primary_ssh(cfg)?;
    let name = &cfg.name;
    let local = match BackupInfo::read(catalog, id) {
        Ok(info) => Some(info),
        Err(CatalogError::BackupInfoMissing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    tracing::info!("Synchronising with server {name} backup {id}: step 1/3: parse server information");
    let primary = load_primary_info(cfg, catalog)?;
    match check_sync_required(cfg, catalog, id, &primary, local.as_ref())? {
        SyncDecision::Sync => {}
        SyncDecision::NothingToDo(why) => {
            notify(Notice::Info(why));
            return Ok(());
        }
        SyncDecision::ToBeDeleted(why) => {
            notify(Notice::Warning(format!("{why}, purging local backup")));
            if let Some(local) = &local {
                let settings = crate::retention::RetentionSettings::from_config(cfg);
                crate::retention::delete_backup(catalog, &settings, local, &mut |n| {
                    notify(match n.level {
                        crate::retention::Level::Error => Notice::Error(n.text),
                        crate::retention::Level::Warning => Notice::Warning(n.text),
                        _ => Notice::Info(n.text),
                    })
                })
                .map_err(|e| SyncError::Failed(crate::error_chain(&e)))?;
            }
            return Ok(());
        }
    }
    let remote = &primary.doc["backups"][id.as_str()];
    let remote_dir = primary.doc["config"]["basebackups_directory"]
        .as_str()
        .ok_or_else(|| SyncError::Failed(format!("primary.info of server {name} has no basebackups_directory")))?
        .to_owned();
    let _lock = match catalog.lock(LockKind::BackupSync(id)) {
        Ok(lock) => lock,
        Err(CatalogError::LockBusy { .. }) => {
            notify(Notice::Error(format!(
                "Another synchronisation process for backup {id} of server {name} is already running."
            )));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let mut info = backup_from_json(id, remote)?;
    info.status = BackupStatus::Syncing;
    info.error = None;
    catalog.create_skeleton()?;
    info.write(catalog)?;
    tracing::info!("Synchronising with server {name} backup {id}: step 2/3: file copy");
    match copy_backup(cfg, catalog, &info, &remote_dir) {
        Ok(()) => {
            tracing::info!("Synchronising with server {name} backup {id}: step 3/3: finalise sync");
            info.status = BackupStatus::Done;
            info.write(catalog)?;
            Ok(())
        }
        Err(e) => {
            let msg = format!("failure syncing server {name} backup {id}: {}", crate::error_chain(&e));
            info.status = BackupStatus::Failed;
            info.error = Some(msg.lines().next().unwrap_or_default().to_owned());
            info.write(catalog)?;
            notify(Notice::Error(msg));
            Ok(())
        }
    }
}

/// The rsync of one backup directory from the primary, made durable: Barman's exclusions
/// (the primary's backup.info and backup lock, the tablespace links of old layouts).
fn copy_backup(cfg: &ServerConfig, catalog: &ServerCatalog, info: &BackupInfo, remote_dir: &str) -> Result<(), SyncError> {
    let id = info.backup_id;
    let dest = catalog.backup_dir(id);
    let mut args: Vec<String> = vec!["--exclude=/backup.info".into(), "--exclude=/.backup.lock".into()];
    for ts in info.tablespaces.iter().flatten() {
        args.push(format!("--exclude=/data/pg_tblspc/{}", ts.oid));
    }
    args.extend(["--fsync".into(), format!(":{remote_dir}/{id}/"), format!("{}/", dest.display())]);
    rsync_for(cfg, true)?.run(&args, None, bwlimit(cfg))?;
    fsync_tree(&dest)?;
    fsync_dir(catalog.basebackups_directory())?;
    Ok(())
}

/// fsyncs every directory under `root` (rsync `--fsync` did the files).
fn fsync_tree(root: &Path) -> Result<(), StorageError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| StorageError::io(StorageOp::Read, &dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(StorageOp::Read, &dir, e))?;
            if entry.file_type().map_err(|e| StorageError::io(StorageOp::Metadata, entry.path(), e))?.is_dir() {
                stack.push(entry.path());
            }
        }
        fsync_dir(&dir)?;
    }
    Ok(())
}

/// `barman sync-wals SERVER`: copies the WAL files primary.info lists after the resume
/// point (see the module doc).
pub fn sync_wals(cfg: &ServerConfig, catalog: &ServerCatalog, notify: &mut dyn FnMut(Notice)) -> Result<(), SyncError> {
    primary_ssh(cfg)?;
    let name = &cfg.name;
    let _lock = catalog.lock(LockKind::ServerWalSync)?;
    let from = load_sync_wals_info(cfg, catalog)?;
    let primary = load_primary_info(cfg, catalog)?;
    let remote_compression = primary.doc["config"]["compression"].as_str().map(str::to_owned);
    let local_compression = cfg.compression.map(|c| c.to_string());
    if remote_compression != local_compression {
        let show = |c: &Option<String>| c.clone().unwrap_or_else(|| "None".to_owned());
        return Err(SyncError::Failed(format!(
            "Compression method on server {name} ({}) does not match local compression method ({}) ",
            show(&remote_compression),
            show(&local_compression)
        )));
    }
    let wals: Vec<XlogDbEntry> = primary.doc["wals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| wal_entry(w).ok_or_else(|| SyncError::Failed(format!("primary.info of server {name}: a malformed WAL entry {w}"))))
        .collect::<Result<_, _>>()?;
    // Nothing older than the first local backup is copied: it would belong to no backup.
    let first_remote_wal = wals.iter().find_map(|w| match w.name {
        WalFileName::Segment(s) => Some(s.to_string()),
        _ => None,
    });
    let (local, _) = BackupCatalog::load(catalog)?;
    let Some(first_backup) = local.backups().iter().find(|b| b.status.is_copy_done()) else {
        notify(Notice::Warning(format!("No base backup for server {name}")));
        return Ok(());
    };
    if let (Some(begin), Some(first)) = (first_backup.begin_wal.map(|w| w.to_string()), &first_remote_wal) {
        if begin > *first {
            notify(Notice::Warning(format!(
                "Skipping WAL synchronisation for server {name}: no available local backup for {first}"
            )));
            return Ok(());
        }
    }
    let wanted: Vec<XlogDbEntry> =
        wals.into_iter().filter(|w| from.last_wal.as_deref().is_none_or(|last| w.name.to_string().as_str() > last)).collect();
    if !wanted.is_empty() {
        let remote_dir = primary.doc["config"]["wals_directory"]
            .as_str()
            .ok_or_else(|| SyncError::Failed(format!("primary.info of server {name} has no wals_directory")))?;
        let local_dir = catalog.wals_directory();
        let relative = |e: &XlogDbEntry| {
            let path = catalog.wal_path(&e.name);
            path.strip_prefix(local_dir).map(Path::to_path_buf).unwrap_or(path)
        };
        let list: String = wanted.iter().map(|e| format!("{}\n", relative(e).display())).collect();
        // `--ignore-existing`: an archived WAL file never changes, and the copy here was
        // checked when it came; a resync from an earlier point must not replace it with the
        // primary's before that one is checked (were the primary's bad, ours would be lost).
        let args = vec![
            "--protect-args".to_owned(),
            "--fsync".to_owned(),
            "--ignore-existing".to_owned(),
            "--files-from=-".to_owned(),
            format!(":{remote_dir}/"),
            format!("{}/", local_dir.display()),
        ];
        rsync_for(cfg, false)?.run(&args, Some(&list), bwlimit(cfg))?;
        let system_id = match ServerIdentity::read(&catalog.identity_path())? {
            Some(identity) => Some(identity.systemid),
            None => first_backup.systemid,
        };
        let compression = WalCompression::from_config(cfg).map_err(|e| SyncError::Failed(e.to_string()))?;
        let mut verifier = WalVerifier::new(compression, system_id);
        let mut refused = None;
        let mut good = Vec::new();
        for (i, e) in wanted.iter().enumerate() {
            match verify_copy(&mut verifier, catalog, e)? {
                Ok(()) => good.push(e.clone()),
                Err(refusal) => {
                    refused = Some((i, refusal));
                    break;
                }
            }
        }
        // The files before a refused one are synced; the ones after it were not checked.
        let mut dirs = std::collections::BTreeSet::new();
        for e in &good {
            dirs.insert(catalog.wal_dir(&e.name));
        }
        for dir in dirs.iter().chain(std::iter::once(&local_dir.to_path_buf())) {
            fsync_dir(dir)?;
        }
        let lock = catalog.lock(LockKind::ServerXlogDb)?;
        let indexed: std::collections::HashSet<WalFileName> =
            xlogdb::read_if_exists(&catalog.xlogdb_path(), &lock)?.unwrap_or_default().into_iter().map(|e| e.name).collect();
        xlogdb::append(&catalog.xlogdb_path(), &lock, &good)?;
        drop(lock);
        if let Some((i, refusal)) = refused {
            let bad = &wanted[i];
            let moved = move_to_errors(catalog, &bad.name, &refusal)?;
            // Removed for good before the run reports: a file coming back after a crash would
            // lie in wals/ unchecked, and `rebuild-xlogdb` would index it.
            let mut emptied = std::collections::BTreeSet::new();
            for e in wanted[i + 1..].iter().filter(|e| !indexed.contains(&e.name)) {
                remove_file_if_exists(&catalog.wal_path(&e.name))?;
                emptied.insert(catalog.wal_dir(&e.name));
            }
            for dir in &emptied {
                fsync_dir(dir)?;
            }
            if let Some(last) = good.last() {
                // No byte offset is known for it: the primary reads its xlog.db from the start.
                atomic_write(&catalog.wals_directory().join(SYNC_WALS_INFO_FILE), format!("{}\t0", last.name).as_bytes(), 0o644)?;
            }
            notify(Notice::Info(format!("{} WAL file(s) synchronised for server {name}", good.len())));
            return Err(SyncError::Failed(format!(
                "{} refused ({}), moved to {}: {}",
                bad.name,
                refusal.reason(),
                moved.display(),
                refusal.detail()
            )));
        }
    }
    let last_name = primary.doc["last_name"].as_str().unwrap_or_default();
    let last_position = primary.doc["last_position"].as_u64().unwrap_or(0);
    atomic_write(&catalog.wals_directory().join(SYNC_WALS_INFO_FILE), format!("{last_name}\t{last_position}").as_bytes(), 0o644)?;
    Ok(())
}

/// Checks one file rsync copied: its content ([`WalVerifier`]), then its size against the
/// primary's xlog.db line.
fn verify_copy(verifier: &mut WalVerifier, catalog: &ServerCatalog, e: &XlogDbEntry) -> Result<Result<(), Refusal>, SyncError> {
    let path = catalog.wal_path(&e.name);
    if let Err(refusal) = verifier.check(e.name, &path)? {
        return Ok(Err(refusal));
    }
    let size = std::fs::metadata(&path).map_err(|err| StorageError::io(StorageOp::Metadata, &path, err))?.len();
    if size != e.size {
        return Ok(Err(Refusal::Corrupt(format!("{} has {size} bytes, the primary recorded {}", e.name, e.size))));
    }
    Ok(Ok(()))
}

/// Moves a refused copy to `errors/<name>.<UTC stamp>.<reason>`, as `archive-wal` does with
/// a file that fails its check; a clash gets `.1`, `.2`… after the name. Returns where.
fn move_to_errors(catalog: &ServerCatalog, name: &WalFileName, refusal: &Refusal) -> Result<std::path::PathBuf, SyncError> {
    create_dir_all_durable(catalog.errors_directory(), DIR_MODE)?;
    let reason = refusal.reason();
    let file_name = name.to_string();
    let now = time::OffsetDateTime::now_utc();
    let mut target = catalog.error_file_path(OsStr::new(&file_name), now, &reason)?;
    let mut n = 0u32;
    while std::fs::symlink_metadata(&target).is_ok() {
        n += 1;
        target = catalog.error_file_path(OsStr::new(&format!("{file_name}.{n}")), now, &reason)?;
    }
    let src = catalog.wal_path(name);
    match durable_rename(&src, &target) {
        Ok(()) => {}
        Err(StorageError::Rename { source, .. }) if source.kind() == std::io::ErrorKind::CrossesDevices => {
            let bytes = std::fs::read(&src).map_err(|e| StorageError::io(StorageOp::Read, &src, e))?;
            atomic_write(&target, &bytes, 0o600)?;
            remove_file_if_exists(&src)?;
            fsync_dir(&catalog.wal_dir(name))?;
        }
        Err(e) => return Err(e.into()),
    }
    tracing::warn!(file = %name, reason = %reason, detail = %refusal.detail(), "sync-wals refused a WAL file from the primary");
    Ok(target)
}

/// One `wals` entry of sync-info (`WalFileInfo.to_json()`).
fn wal_entry(v: &Value) -> Option<XlogDbEntry> {
    Some(XlogDbEntry {
        name: v["name"].as_str()?.parse().ok()?,
        size: v["size"].as_u64()?,
        time: v["time"].as_f64()?,
        compression: v["compression"].as_str().map(str::to_owned),
        encryption: v["encryption"].as_str().map(str::to_owned),
    })
}

/// What `cron` starts on a passive node (Barman's `sync_cron`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronPlan {
    /// The backup to start a `sync-backup` for, if any (one per run).
    pub backup: Option<BackupId>,
    /// Whether to start `sync-wals`.
    pub wals: bool,
}

/// Barman's `sync_cron` decisions, given the primary's fresh answer: the oldest backup of the
/// primary not available here that still needs copying and whose sync lock is free; WAL when
/// the primary listed any and no `sync-wals` runs.
pub fn cron_plan(
    cfg: &ServerConfig,
    catalog: &ServerCatalog,
    primary: &PrimaryInfo,
    notify: &mut dyn FnMut(Notice),
) -> Result<CronPlan, SyncError> {
    let name = &cfg.name;
    let mut plan = CronPlan { backup: None, wals: false };
    let remote_ids = primary.backup_ids();
    if remote_ids.is_empty() {
        notify(Notice::Info(format!("No backup synchronisation required for server {name}")));
    }
    let (local, _) = BackupCatalog::load(catalog)?;
    for id in remote_ids {
        if local.get(id).is_some_and(|b| b.status.is_copy_done()) {
            continue;
        }
        match check_sync_required(cfg, catalog, id, primary, local.get(id)) {
            Err(e) => {
                notify(Notice::Error(format!("Unexpected state: {e}")));
                break;
            }
            Ok(SyncDecision::NothingToDo(_)) => continue,
            Ok(SyncDecision::Sync | SyncDecision::ToBeDeleted(_)) => {}
        }
        match catalog.lock(LockKind::BackupSync(id)) {
            Ok(lock) => {
                drop(lock);
                notify(Notice::Info(format!("Starting copy of backup {id} for server {name}")));
                plan.backup = Some(id);
            }
            Err(CatalogError::LockBusy { .. }) => notify(Notice::Info(format!(
                "A synchronisation process for backup {id} on server {name} is already in progress"
            ))),
            Err(e) => return Err(e.into()),
        }
        break;
    }
    if primary.has_wals() {
        match crate::catalog::CatalogLock::try_acquire(catalog.lock_directory(), name, LockKind::ServerWalSync) {
            Ok(lock) => {
                drop(lock);
                notify(Notice::Info(format!("Started copy of WAL files for server {name}")));
                plan.wals = true;
            }
            Err(CatalogError::LockBusy { .. }) => {
                notify(Notice::Info(format!("WAL synchronisation already running for server {name}")))
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        notify(Notice::Info(format!("No WAL synchronisation required for server {name}")));
    }
    Ok(plan)
}

/// The `ssh` check of a passive node (Barman's `PassiveBackupExecutor.check`):
/// [`crate::ssh::ssh_checks`] on `primary_ssh_command`, which reaches the Barman primary node.
pub fn ssh_check(cfg: &ServerConfig) -> Vec<CheckResult> {
    match cfg.primary_ssh_command.as_deref() {
        Some(command) => crate::ssh::ssh_checks(command, "Barman primary node"),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(extra: &str) -> (crate::config::Config, tempfile::TempDir) {
        let home = tempfile::tempdir().unwrap();
        let text = format!(
            "[barman]\nbarman_home = {}\n\n[pg]\nprimary_ssh_command = ssh barman@primary\n{extra}\n",
            home.path().display()
        );
        let mut fs = crate::config::MemoryFs::new();
        fs.add("/etc/barman.conf", text);
        (crate::config::Config::load_with(&fs, Path::new("/etc/barman.conf"), None).unwrap(), home)
    }

    #[test]
    fn the_remote_command_is_barmans() {
        let (config, _home) = server("");
        let cfg = config.server("pg").unwrap();
        let file = Path::new("/etc/barman.conf");
        assert_eq!(sync_info_command(cfg, file, &SyncPoint::default()), "barman sync-info pg");
        let at = SyncPoint { last_wal: Some("00000001000000000000000F".into()), last_position: Some(877) };
        assert_eq!(sync_info_command(cfg, file, &at), "barman sync-info pg 00000001000000000000000F  877 ");
        let (config, _home) = server("forward_config_path = true");
        assert_eq!(
            sync_info_command(config.server("pg").unwrap(), file, &SyncPoint::default()),
            "barman -c /etc/barman.conf sync-info pg"
        );
    }

    #[test]
    fn backup_info_round_trips_through_sync_info_json() {
        let text = "backup_label='START WAL LOCATION: 0/A000028 (file 00000001000000000000000A)\\n'\n\
            begin_offset=40\nbegin_time=2026-11-25 12:33:54.004487+00:00\nbegin_wal=00000001000000000000000A\n\
            begin_xlog=0/A000028\ncompression=None\ncopy_stats={'copy_time': 2.235245, 'total_time': 2.5}\n\
            end_time=2026-11-25 12:33:56+00:00\nend_wal=00000001000000000000000A\nend_xlog=0/B000000\n\
            mode=postgres\nstatus=DONE\nsystemid=7712085579849293106\n\
            tablespaces=[('tbs1', 16384, '/tmp/bsample/tbs1')]\ntimeline=1\nversion=150018\n";
        let id: BackupId = "20261125T123353".parse().unwrap();
        let info = BackupInfo::parse(id, text.as_bytes()).unwrap();
        let json = super::super::info::backup_json(&info).unwrap().dumps(Some(4));
        let back = backup_from_json(id, &serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.to_bytes().unwrap(), info.to_bytes().unwrap());
    }

    #[test]
    fn sync_decisions_are_barmans() {
        let (config, _home) = server("");
        let cfg = config.server("pg").unwrap();
        let catalog = ServerCatalog::from_config(cfg, &config.global);
        let id: BackupId = "20261125T123353".parse().unwrap();
        let primary = PrimaryInfo {
            text: String::new(),
            doc: serde_json::json!({"backups": {"20261125T123353": {"status": "DONE", "begin_time_iso": null, "end_time_iso": null}}, "config": {"name": "pg"}}),
        };
        let nothing = PrimaryInfo { text: String::new(), doc: serde_json::json!({"backups": {}, "config": {"name": "pg"}}) };
        let mut done = BackupInfo::new(id);
        done.status = BackupStatus::Done;
        let mut failed = BackupInfo::new(id);
        failed.status = BackupStatus::Failed;
        assert_eq!(check_sync_required(cfg, &catalog, id, &primary, None).unwrap(), SyncDecision::Sync);
        assert_eq!(check_sync_required(cfg, &catalog, id, &primary, Some(&failed)).unwrap(), SyncDecision::Sync);
        assert_eq!(
            check_sync_required(cfg, &catalog, id, &primary, Some(&done)).unwrap(),
            SyncDecision::NothingToDo("Backup 20261125T123353 is already synced with pg server".into())
        );
        assert_eq!(
            check_sync_required(cfg, &catalog, id, &nothing, Some(&failed)).unwrap(),
            SyncDecision::ToBeDeleted("Backup 20261125T123353 is absent on pg server and is incomplete locally".into())
        );
        assert_eq!(
            check_sync_required(cfg, &catalog, id, &nothing, None).unwrap_err().to_string(),
            "Backup 20261125T123353 is absent on pg server"
        );
    }

    #[test]
    fn ssh_check_runs_true_through_the_command() {
        let (config, _home) = server("");
        let mut cfg = config.server("pg").unwrap().clone();
        // A local shell stands for ssh, and refuses the -o options ssh would take.
        cfg.primary_ssh_command = Some("/bin/sh -c".into());
        let checks = ssh_check(&cfg);
        assert!(!checks[0].ok, "sh refuses -o: {checks:?}");
        assert!(checks[0].hint.as_deref().unwrap().starts_with("Connection failed using '/bin/sh -c -o BatchMode=yes"), "{checks:?}");
    }
}
