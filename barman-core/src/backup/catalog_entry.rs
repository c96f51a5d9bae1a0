//! A backup's entry in the catalog, as both executors ([`super::streaming`] and
//! [`super::rsync`]) open, fill and close it — Barman's `BackupManager.backup` around
//! whichever executor runs:
//!
//! * [`open`] takes `.<server>-backup.lock`, marks abandoned backups `FAILED`, picks the ID
//!   (local time, never one already used), writes `meta/<ID>-backup.info` as `EMPTY` (with its
//!   parent, and listed among the parent's children, for an incremental backup), runs the
//!   pre-backup hooks and moves it to `STARTED`;
//! * [`check_identity`] and [`record_facts`] tie the backup to its server (identity.json, the
//!   facts Barman's `_pg_get_metadata` records);
//! * [`close`] records how the executor's run ended: the backup stays as the run left it, or
//!   becomes `FAILED` with `error=failure <phase> (<reason>)`.
//!
//! What is copied, and how the begin and end positions are learned, is each executor's own.

use std::time::Duration;

use barman_replication::SystemId;

use super::facts::{local_now, ServerFacts};
use super::streaming::{check_parent, fail_abandoned, link_child, BackupError, BackupNotice, IncrementalRefusal};
use crate::catalog::{BackupId, BackupInfo, BackupStatus, CatalogLock, LockKind, ServerCatalog, ServerIdentity};
use crate::hooks::HookSet;

/// Opens a new backup of `server` in `catalog` (see the module's header), `mode` being
/// backup.info's `mode`; `parent` makes it incremental, checked first ([`check_parent`]).
/// Returns the backup lock, held until the backup ends, and the backup.info, now `STARTED`; a
/// pre-backup retry script's 63 leaves it `FAILED` and fails here, before anything is copied.
pub(crate) async fn open(
    catalog: &ServerCatalog,
    server: &str,
    name: Option<String>,
    parent: Option<BackupId>,
    mode: &str,
    hooks: Option<&HookSet>,
    notify: &mut (dyn FnMut(BackupNotice) + Send),
) -> Result<(CatalogLock, BackupInfo), BackupError> {
    let lock = catalog.lock(LockKind::ServerBackup)?;
    catalog.create_skeleton()?;
    for id in fail_abandoned(catalog, &lock)? {
        tracing::warn!(server, backup = %id, "marked FAILED: its backup process ended without finishing it");
    }
    if let Some(p) = parent {
        // Under the lock: the parent chosen before it was taken may have been deleted since.
        let info = BackupInfo::read(catalog, p)
            .map_err(|e| IncrementalRefusal::ParentUnreadable { id: p, reason: e.to_string() })?;
        check_parent(catalog, &info)?;
    }
    let mut id = BackupId::from_datetime(local_now()?)?;
    // Two backups in the same second: wait for the next one rather than reuse an ID.
    while catalog.backup_info_path(id).exists() || catalog.backup_dir(id).exists() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        id = BackupId::from_datetime(local_now()?)?;
    }
    let mut info = BackupInfo::new(id);
    info.server_name = Some(server.to_owned());
    info.backup_name = name;
    info.mode = Some(mode.to_owned());
    info.parent_backup_id = parent;
    info.status = BackupStatus::Empty;
    info.write(catalog)?;
    if let Some(p) = parent {
        if let Err(e) = link_child(catalog, p, id) {
            return Err(fail(catalog, &mut info, format!("failure starting backup ({e})")));
        }
    }
    notify(BackupNotice::Starting { id, dir: catalog.backup_dir(id) });
    if let Some(hooks) = hooks {
        if let Err(abort) = hooks.run_pre(&|h| h.env_from_catalog_backup(catalog, &info)) {
            return Err(fail(catalog, &mut info, format!("failure starting backup ({abort})")));
        }
    }
    info.status = BackupStatus::Started;
    info.write(catalog)?;
    Ok((lock, info))
}

/// The end of an executor's run: `info` as it left it, or, when it failed during `phase`,
/// `FAILED` with the first line of the reason (Barman's `error=` text).
pub(crate) fn close(
    catalog: &ServerCatalog,
    mut info: BackupInfo,
    phase: &str,
    outcome: Result<(), BackupError>,
) -> Result<BackupInfo, BackupError> {
    match outcome {
        Ok(()) => Ok(info),
        Err(e) => {
            let chain = crate::error_chain(&e);
            let reason = format!("failure {phase} ({})", chain.lines().next().unwrap_or(&chain));
            Err(fail(catalog, &mut info, reason))
        }
    }
}

/// Records the backup `FAILED` for `reason`; the error to answer is [`BackupError::Failed`],
/// or why backup.info could not say so.
fn fail(catalog: &ServerCatalog, info: &mut BackupInfo, reason: String) -> BackupError {
    info.status = BackupStatus::Failed;
    info.error = Some(reason.clone());
    match info.write(catalog) {
        Ok(()) => BackupError::Failed { id: info.backup_id, reason },
        Err(e) => e.into(),
    }
}

/// Refuses a server that is not the one the catalog belongs to; writes identity.json at the
/// first backup (Barman never rewrites it).
pub(crate) fn check_identity(catalog: &ServerCatalog, systemid: SystemId, version: u32) -> Result<(), BackupError> {
    let path = catalog.identity_path();
    match ServerIdentity::read(&path)? {
        Some(known) if known.systemid != systemid => {
            Err(BackupError::ForeignSystem { expected: known.systemid.to_string(), found: systemid.to_string() })
        }
        Some(_) => Ok(()),
        None => {
            let identity = ServerIdentity { systemid, version: (version / 10000).to_string(), extra: Default::default() };
            identity.write_if_missing(&path)?;
            Ok(())
        }
    }
}

/// The facts Barman's `_pg_get_metadata` records in backup.info.
pub(crate) fn record_facts(info: &mut BackupInfo, facts: &ServerFacts, systemid: SystemId) {
    info.systemid = Some(systemid);
    info.version = Some(facts.version);
    info.pgdata = Some(facts.pgdata.clone());
    info.config_file = Some(facts.config_file.clone());
    info.hba_file = Some(facts.hba_file.clone());
    info.ident_file = Some(facts.ident_file.clone());
    info.data_checksums = Some(facts.data_checksums.clone());
    info.summarize_wal = facts.summarize_wal.clone();
    info.cluster_size = facts.cluster_size;
    info.xlog_segment_size = Some(facts.segment_size);
    info.tablespaces = (!facts.tablespaces.is_empty()).then(|| facts.tablespaces.clone());
    info.included_files = (!facts.included_files.is_empty()).then(|| facts.included_files.clone());
}
