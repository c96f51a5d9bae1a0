//! `backup_method = postgres`: a base backup over barman-rs's own BASE_BACKUP client, written
//! straight into the catalog as Barman lays it out (formats §1.3, §1.5) — no pg_basebackup.
//!
//! The life of a backup, as Barman's `PostgresBackupExecutor`:
//!
//! 1. take `.<server>-backup.lock`; pick the ID (local time, `%Y%m%dT%H%M%S`); write
//!    `meta/<ID>-backup.info` with status `STARTED`;
//! 2. read the facts Barman records from a normal session (`data_directory`, config files,
//!    `server_version_num`, tablespaces, `cluster_size`, `CURRENT_TIMESTAMP` as `begin_time`);
//! 3. BASE_BACKUP (label `barman_<ID>`, manifest with SHA256 checksums) on the streaming
//!    connection: `base.tar` extracted into `base/<ID>/data/`, each tablespace's archive into
//!    `base/<ID>/<oid>/` with `data/pg_tblspc/<oid>` pointing there, the manifest as
//!    `data/backup_manifest` — every file fsynced. With `backup_compression` (tar format) the
//!    archives are instead written compressed as `data/base.tar.gz`, `data/<oid>.tar.gz`, …
//!    (see [`super::compressed`]), with a `tablespace_map` in place of the links, as
//!    `pg_basebackup --format=tar` asks for. A copy that fails is retried
//!    `basebackup_retry_times` times ([`CopyRetry`]): the files copied so far are removed and,
//!    after `basebackup_retry_sleep` seconds, a new replication session starts a new
//!    BASE_BACKUP, the status staying `STARTED` — Barman's `_retry_handler` around pg_basebackup.
//!    A stream that stops arriving while the server is not busy with it fails the copy after
//!    `keepalive_interval` seconds and a confirmation ([`super::stall`]);
//! 4. record the end (`pg_current_wal_lsn()` right after the copy, as Barman does; a
//!    standby's last replayed position), the begin fields from `backup_label`, sizes and copy
//!    statistics;
//! 5. status `WAITING_FOR_WALS` until the WAL up to `end_wal` is archived, then `DONE`.
//!
//! A standby is backed up the same way; what differs (the end position, the WAL switches on
//! its primary) is in [`super::standby`].
//!
//! An incremental backup (`backup --incremental`, PostgreSQL 17+ with `summarize_wal = on`)
//! names its parent in `parent_backup_id` from its first backup.info on, and is listed in the
//! parent's `children_backup_ids` right after ([`link_child`]); each copy attempt first uploads
//! the parent's `backup_manifest` on its replication session (UPLOAD_MANIFEST), then asks for
//! `BASE_BACKUP ( INCREMENTAL, … )`. The tree then holds `INCREMENTAL.<relfile>` files and a
//! backup_label with `INCREMENTAL FROM LSN`; pg_combinebackup rebuilds a full one from the chain.
//!
//! Any failure leaves the backup `FAILED` with `error=failure <phase> (<reason>)`, files kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use barman_replication::{BaseBackupEvent, BaseBackupOptions, ConnConfig, Connection, Lsn, SessionKind, SystemId, TimelineId};
use bytes::Bytes;

use crate::catalog::{BackupId, BackupInfo, BackupStatus, CatalogError, LockKind, PyValue, ServerCatalog};
use crate::storage::durable::{atomic_write, fsync_dir, FILE_MODE};
use crate::hooks::HookSet;
use crate::storage::StorageError;
use crate::wal::{WalSegmentName, WalSegmentSize};

use super::compressed::{
    read_member, spawn_archive_file, spawn_plain_extract, ArchiveCompression, ArchiveError, ArchiveInput, ArchivePipe,
    BackupCompressionSettings,
};
use super::catalog_entry;
use super::extract::{ExtractError, PlainExtractor};
use super::facts::{parse_pg_timestamp, read_facts, sql_one, sql_row};
use super::stall::StallWatch;
use super::standby::{primary_for_backup, Primary, PrimaryOptions};

/// The largest `backup_label` read back from a compressed `base.tar*` (PostgreSQL's is a few
/// hundred bytes).
const BACKUP_LABEL_MAX: usize = 64 * 1024;

/// Where the current archive's bytes go.
enum ArchiveSink {
    /// Unpacked into a plain tree on this task (uncompressed backups).
    Plain(PlainExtractor),
    /// Written as a (compressed) file on a blocking thread.
    File(ArchivePipe<u64>),
    /// Decompressed and unpacked on a blocking thread (server compression, plain format).
    Unpack(ArchivePipe<(u64, u64)>),
}

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct StreamingBackupRequest {
    /// The server's name.
    pub server: String,
    /// `conninfo`: a normal session for the facts.
    pub conninfo: String,
    /// `streaming_conninfo`: the replication session that streams the backup.
    pub streaming_conninfo: String,
    /// `streaming_backup_name`: the application name of the streaming session.
    pub application_name: String,
    /// The catalog to write into.
    pub catalog: ServerCatalog,
    /// `backup --name`.
    pub name: Option<String>,
    /// `immediate_checkpoint` (or the command-line override).
    pub immediate_checkpoint: bool,
    /// `bandwidth_limit` in kB/s.
    pub bandwidth_limit: Option<u32>,
}

/// Barman's `basebackup_retry_times` / `basebackup_retry_sleep` (or `backup --retry-times`,
/// `--retry-sleep`, `--no-retry`): how often a failed copy starts again, and after how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyRetry {
    /// Further attempts after the first (0: a failed copy fails the backup).
    pub times: u32,
    /// The pause before each new attempt.
    pub sleep: Duration,
}

/// How a backup is taken, beyond what [`StreamingBackupRequest`] says: the default is a plain
/// backup, no hooks, no retries, no primary.
#[derive(Clone, Copy, Default)]
pub struct BackupOptions<'a> {
    /// The server's `backup_compression*` settings (checked with
    /// [`BackupCompressionSettings::from_config`]): tar archives compressed by barman-rs or by
    /// a PostgreSQL 15+ server, or a plain tree unpacked from a server-compressed stream.
    pub compression: Option<&'a BackupCompressionSettings>,
    /// The `pre_backup_script` and `pre_backup_retry_script`, run once the backup has its ID
    /// (status `EMPTY`, as Barman runs them); a retry script's 63 fails the backup before
    /// anything is copied. The post hooks are the caller's: Barman runs them after `--wait`.
    pub hooks: Option<&'a HookSet>,
    /// Retries of a failed copy.
    pub retry: CopyRetry,
    /// `primary_conninfo`: the server is a standby, and this is its primary.
    pub primary: Option<&'a PrimaryOptions>,
    /// `keepalive_interval`: after this long without a byte from the server, ask it (on a
    /// `conninfo` session) whether the stream is stalled or the server busy ([`super::stall`]);
    /// a stalled copy fails (and is retried as any failed copy). `None` waits forever.
    pub stall_check: Option<Duration>,
    /// `backup --incremental`: the backup this one is incremental to (PostgreSQL 17+). Checked
    /// with [`check_parent`] under the backup lock before the new backup exists.
    pub parent: Option<BackupId>,
}

/// Why an incremental backup cannot be taken: Barman's `_validate_incremental_backup_configs`
/// (its words), and what barman-rs checks of the parent besides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncrementalRefusal {
    /// The server is older than 17.
    #[error("Postgres version 17 or greater is required for incremental backups using the Postgres backup method")]
    ServerTooOld,
    /// `backup_method` is not `postgres`.
    #[error("Backup using the `--incremental` flag is available only for 'backup_method = postgres'. Check Barman's documentation for more help on this topic.")]
    NotPostgresMethod,
    /// The server does not summarize its WAL.
    #[error("'summarize_wal' option has to be enabled in the Postgres server to perform an incremental backup using the Postgres backup method")]
    NoWalSummaries,
    /// The parent was taken without WAL summaries.
    #[error("Backup ID {0} is not eligible as a parent for an incremental backup because WAL summaries were not enabled when that backup was taken.")]
    ParentWithoutSummaries(BackupId),
    /// The parent's copy is not complete (Barman would start the backup and fail it; a chain
    /// on a FAILED backup cannot be restored).
    #[error("Backup ID {id} is not eligible as a parent for an incremental backup because its status is {status}.")]
    ParentNotComplete {
        /// The parent.
        id: BackupId,
        /// Its status.
        status: BackupStatus,
    },
    /// The parent has no `backup_manifest` to upload (an rsync backup without one).
    #[error("Backup ID {0} is not eligible as a parent for an incremental backup because it has no backup_manifest.")]
    ParentWithoutManifest(BackupId),
    /// The parent's backup.info cannot be read (deleted since it was chosen).
    #[error("Backup ID {id} is not eligible as a parent for an incremental backup: {reason}")]
    ParentUnreadable {
        /// The parent.
        id: BackupId,
        /// Why.
        reason: String,
    },
}

/// Barman's checks of the server for an incremental backup, in its order: the version
/// (`server_version_num`), `backup_method = postgres`, then `summarize_wal`.
pub fn check_incremental_server(version: u32, postgres_method: bool, summarize_wal: Option<&str>) -> Result<(), IncrementalRefusal> {
    if version < 170000 {
        return Err(IncrementalRefusal::ServerTooOld);
    }
    if !postgres_method {
        return Err(IncrementalRefusal::NotPostgresMethod);
    }
    if summarize_wal != Some("on") {
        return Err(IncrementalRefusal::NoWalSummaries);
    }
    Ok(())
}

/// The checks of an incremental backup's parent: taken with `summarize_wal = on` (Barman's),
/// its copy complete (`DONE` or `WAITING_FOR_WALS`) and its `backup_manifest` present.
/// Chains are allowed: the parent may itself be incremental, and compressed.
pub fn check_parent(catalog: &ServerCatalog, parent: &BackupInfo) -> Result<(), IncrementalRefusal> {
    let id = parent.backup_id;
    if parent.summarize_wal.as_deref() != Some("on") {
        return Err(IncrementalRefusal::ParentWithoutSummaries(id));
    }
    if !parent.status.is_copy_done() {
        return Err(IncrementalRefusal::ParentNotComplete { id, status: parent.status });
    }
    if !parent_manifest_path(catalog, id).is_file() {
        return Err(IncrementalRefusal::ParentWithoutManifest(id));
    }
    Ok(())
}

/// Where a backup's `backup_manifest` is, plain or compressed (Barman's
/// `get_backup_manifest_path`).
fn parent_manifest_path(catalog: &ServerCatalog, id: BackupId) -> PathBuf {
    catalog.backup_data_dir(id).join("backup_manifest")
}

/// How long [`link_child`] waits for the parent's lock (archive-wal and check-backup hold it
/// for a moment while they rewrite its backup.info).
const PARENT_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Lists `child` in `parent`'s `children_backup_ids`, durably — Barman does so for every
/// incremental backup whatever its outcome, so that a FAILED child is deleted with its parent
/// and shown by show-backup. The caller holds the server's backup lock (no delete runs); the
/// parent's own `.<server>-<ID>.lock` is taken for the read-modify-write, since archive-wal
/// rewrites a `WAITING_FOR_WALS` parent's backup.info under it.
///
/// Ordering: the child's backup.info (naming its parent) is written first, then the parent's;
/// a crash in between leaves a child that [`fail_unfinished`] lists when it marks it FAILED.
pub(crate) fn link_child(catalog: &ServerCatalog, parent: BackupId, child: BackupId) -> Result<(), BackupError> {
    let deadline = Instant::now() + PARENT_LOCK_WAIT;
    let _lock = loop {
        match catalog.lock(LockKind::Backup(parent)) {
            Ok(lock) => break lock,
            Err(CatalogError::LockBusy { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e.into()),
        }
    };
    let mut info = BackupInfo::read(catalog, parent)?;
    let children = info.children_backup_ids.get_or_insert_with(Vec::new);
    if !children.contains(&child) {
        children.push(child);
        info.write(catalog)?;
    }
    Ok(())
}

/// The parent's `backup_manifest`, to upload before each incremental BASE_BACKUP.
fn read_parent_manifest(catalog: &ServerCatalog, parent: BackupId) -> Result<Bytes, BackupError> {
    let path = parent_manifest_path(catalog, parent);
    std::fs::read(&path)
        .map(Bytes::from)
        .map_err(|e| StorageError::io(crate::storage::StorageOp::Read, &path, e).into())
}

/// Progress worth telling the operator, in Barman's words (the CLI renders them).
#[derive(Debug, Clone, PartialEq)]
pub enum BackupNotice {
    /// `Starting backup using postgres method for server pg in <dir>`.
    Starting {
        /// The backup's ID.
        id: BackupId,
        /// Its directory.
        dir: PathBuf,
    },
    /// `Backup start at LSN: 0/4000000 (000000010000000000000003, 00000000)`.
    StartLsn {
        /// The position.
        lsn: Lsn,
        /// Its WAL file.
        wal: WalSegmentName,
        /// Offset in it.
        offset: u64,
    },
    /// `Starting backup copy via pg_basebackup for <ID>` (ours: native streaming).
    CopyStarted(BackupId),
    /// A copy attempt failed and the copy starts again: Barman's `Failure executing a backup
    /// using pg_basebackup (attempt N)` and `The files copied so far will be removed and the
    /// backup process will restart in S seconds`.
    CopyRetry {
        /// The attempt that failed, from 0 (Barman's numbering).
        attempt: u32,
        /// Why it failed.
        reason: String,
        /// The pause before the next attempt.
        sleep: Duration,
    },
    /// Something the operator should know that does not stop the backup (Barman's
    /// `output.warning`), in Barman's words where Barman has them.
    Warning(String),
    /// `Copy done (time: N seconds)`.
    CopyDone {
        /// Seconds.
        seconds: f64,
    },
    /// Bytes copied so far, of an estimated total (the server's, with PROGRESS). Sent at most
    /// a few times a second; a front end draws a bar or logs it.
    Progress {
        /// Bytes received so far.
        done: u64,
        /// The server's estimate of the total, if it gave one.
        total: Option<u64>,
    },
    /// `Finalising the backup.`
    Finalising,
    /// `Backup size: 29.4 MiB`.
    Size {
        /// Bytes on disk.
        bytes: u64,
    },
    /// `Backup end at LSN: ...`.
    EndLsn {
        /// The position.
        lsn: Lsn,
        /// Its WAL file.
        wal: WalSegmentName,
        /// Offset in it.
        offset: u64,
    },
}

/// A backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Another backup (or delete) of this server is running.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A file operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The connection string is malformed.
    #[error(transparent)]
    Conninfo(#[from] barman_replication::conninfo::ConninfoError),
    /// The server or the connection failed.
    #[error(transparent)]
    Connection(#[from] barman_replication::Error),
    /// The backup stream could not be written out.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// A compressed archive could not be written or read back.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The server answered something barman-rs cannot use.
    #[error("{0}")]
    Invalid(String),
    /// The backup stream stopped arriving, and the server is not busy with it ([`super::stall`]).
    #[error("{0}")]
    Stalled(String),
    /// An incremental backup cannot be taken (Barman's refusal).
    #[error(transparent)]
    Incremental(#[from] IncrementalRefusal),
    /// The server is not the one this catalog belongs to.
    #[error("the server's system identifier {found} differs from the catalog's {expected} (identity.json)")]
    ForeignSystem {
        /// identity.json's.
        expected: String,
        /// The server's.
        found: String,
    },
    /// `primary_conninfo` could not be used.
    #[error(transparent)]
    Primary(#[from] super::standby::PrimaryError),
    /// A backup ran and failed; its backup.info says FAILED with the reason.
    #[error("backup {id} failed: {reason}")]
    Failed {
        /// The backup.
        id: BackupId,
        /// Barman's `error=` text.
        reason: String,
    },
}

/// Runs one streaming backup. On success the backup is `DONE` or `WAITING_FOR_WALS`; on
/// failure after the ID was chosen it is `FAILED` and [`BackupError::Failed`] says why.
pub async fn take_streaming_backup(
    req: &StreamingBackupRequest,
    notify: &mut (dyn FnMut(BackupNotice) + Send),
) -> Result<BackupInfo, BackupError> {
    take_streaming_backup_with(req, &BackupOptions::default(), notify).await
}

/// [`take_streaming_backup`] with compression, hooks, retries or a primary ([`BackupOptions`]).
pub async fn take_streaming_backup_with(
    req: &StreamingBackupRequest,
    opts: &BackupOptions<'_>,
    notify: &mut (dyn FnMut(BackupNotice) + Send),
) -> Result<BackupInfo, BackupError> {
    let (_lock, mut info) =
        catalog_entry::open(&req.catalog, &req.server, req.name.clone(), opts.parent, "postgres", opts.hooks, notify).await?;
    let started = Instant::now();
    let mut phase = "starting backup";
    let outcome = run(req, opts, &mut info, &mut phase, started, notify).await;
    catalog_entry::close(&req.catalog, info, phase, outcome)
}

/// The error recorded for a backup whose process died (killed, crashed, machine restarted).
pub const ABANDONED: &str = "failure during backup (the backup process ended without finishing the backup)";

/// Marks FAILED every backup left `EMPTY` or `STARTED` — which only a running backup may be —
/// for a caller holding the server's backup lock (`lock`), so no backup of this server is
/// running. Returns the backups it marked.
pub fn fail_abandoned(catalog: &ServerCatalog, lock: &crate::catalog::CatalogLock) -> Result<Vec<BackupId>, BackupError> {
    fail_unfinished(catalog, lock, ABANDONED)
}

/// [`fail_abandoned`] with the `error=` to record (an interrupted backup says so).
pub fn fail_unfinished(catalog: &ServerCatalog, lock: &crate::catalog::CatalogLock, reason: &str) -> Result<Vec<BackupId>, BackupError> {
    debug_assert_eq!(lock.kind(), &LockKind::ServerBackup);
    let mut failed = Vec::new();
    for id in catalog.backup_ids()? {
        let Ok(mut info) = BackupInfo::read(catalog, id) else { continue };
        if matches!(info.status, BackupStatus::Empty | BackupStatus::Started) {
            info.status = BackupStatus::Failed;
            info.error = Some(reason.to_owned());
            info.write(catalog)?;
            // An incremental backup that died before its parent listed it (see link_child).
            if let Some(parent) = info.parent_backup_id {
                if let Err(e) = link_child(catalog, parent, id) {
                    tracing::warn!(backup = %id, %parent, error = %e, "cannot list the failed backup among its parent's children");
                }
            }
            failed.push(id);
        }
    }
    Ok(failed)
}

/// [`fail_abandoned`] when no backup of the server runs (its lock is free); nothing when one
/// does (`cron`).
pub fn fail_abandoned_backups(catalog: &ServerCatalog) -> Result<Vec<BackupId>, BackupError> {
    match catalog.lock(LockKind::ServerBackup) {
        Ok(lock) => fail_abandoned(catalog, &lock),
        Err(CatalogError::LockBusy { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

async fn run(
    req: &StreamingBackupRequest,
    opts: &BackupOptions<'_>,
    info: &mut BackupInfo,
    phase: &mut &'static str,
    started: Instant,
    notify: &mut (dyn FnMut(BackupNotice) + Send),
) -> Result<(), BackupError> {
    let id = info.backup_id;
    let compression = opts.compression;
    let mut sql = Connection::connect(&req.conninfo.parse()?, SessionKind::Normal).await?;
    let facts = read_facts(&mut sql).await?;
    let begin_time = parse_pg_timestamp(&sql_one(&mut sql, "SELECT CURRENT_TIMESTAMP").await?)?;
    let in_recovery = sql_one(&mut sql, "SELECT pg_is_in_recovery()").await? == "t";
    let mut repl = connect_streaming(req).await?;
    let sys = repl.identify_system().await?;

    catalog_entry::check_identity(&req.catalog, sys.system_id, facts.version)?;
    catalog_entry::record_facts(info, &facts, sys.system_id);
    info.begin_time = Some(begin_time);
    info.write(&req.catalog)?;
    if let Some(c) = compression {
        c.check_server(facts.version).map_err(|e| BackupError::Invalid(e.to_string()))?;
    }
    // The CLI checked the server before starting; the facts say how it is now.
    let parent_manifest = match opts.parent {
        Some(parent) => {
            check_incremental_server(facts.version, true, facts.summarize_wal.as_deref())?;
            Some(read_parent_manifest(&req.catalog, parent)?)
        }
        None => None,
    };
    // Tar format: one (compressed) archive per tablespace, as `pg_basebackup --format=tar`.
    let tar_algorithm = compression.filter(|c| c.is_tar()).map(|c| c.algorithm);
    // What the server compresses with, if it does: its archives arrive as `base.tar.gz`, ….
    let on_the_wire = compression.and_then(BackupCompressionSettings::on_the_wire);

    // A standby cannot switch WAL: its primary, when `primary_conninfo` names it, does
    // (Barman's `StandbyPostgreSQLConnection`).
    let mut primary = primary_for_backup(&req.server, in_recovery, opts.primary, sys.system_id, notify).await?;
    if let Some(p) = primary.as_mut() {
        if req.immediate_checkpoint {
            p.checkpoint_and_wait_for_replay(&mut sql).await;
        }
    }

    let seg = facts.segment_size.bytes();
    let position = if in_recovery { "pg_last_wal_replay_lsn()" } else { "pg_current_wal_lsn()" };
    let current: Lsn = sql_one(&mut sql, &format!("SELECT {position}")).await?.parse().map_err(|e| BackupError::Invalid(format!("{e}")))?;
    notify(BackupNotice::StartLsn { lsn: current, wal: segment_of(sys.timeline, current, facts.segment_size)?, offset: current.0 % seg });

    *phase = "copying files";
    notify(BackupNotice::CopyStarted(id));
    let backup_dir = req.catalog.backup_dir(id);
    let data_dir = req.catalog.backup_data_dir(id);
    let links: BTreeMap<String, PathBuf> =
        facts.tablespaces.iter().map(|t| (t.oid.to_string(), backup_dir.join(t.oid.to_string()))).collect();
    let plan = CopyPlan {
        options: BaseBackupOptions {
            label: format!("barman_{id}"),
            progress: true,
            fast_checkpoint: req.immediate_checkpoint,
            wal: false,
            wait: true,
            max_rate: req.bandwidth_limit,
            // Tar archives cannot hold a usable pg_tblspc link: pg_basebackup asks for the map.
            tablespace_map: tar_algorithm.is_some(),
            manifest: true,
            manifest_checksums: Some("SHA256".into()),
            verify_checksums: true,
            compression: compression.and_then(BackupCompressionSettings::server_option),
            incremental: parent_manifest.is_some(),
        },
        parent_manifest,
        backup_dir: backup_dir.clone(),
        data_dir: data_dir.clone(),
        links,
        tar_algorithm,
        on_the_wire,
        compression,
        stall_check: opts.stall_check.filter(|d| !d.is_zero()),
        conninfo: &req.conninfo,
    };
    let copy_start = Instant::now();
    let mut attempt = 0;
    let mut session = Some(repl);
    let copied = loop {
        let result = match session.take() {
            Some(repl) => copy_once(repl, &plan, primary.as_ref(), notify).await,
            None => match reconnect(req, sys.system_id).await {
                Ok(repl) => copy_once(repl, &plan, primary.as_ref(), notify).await,
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(copied) => break copied,
            Err(e) if attempt < opts.retry.times => {
                // Barman's `_retry_handler`: say so, remove what was copied, wait, start again.
                let reason = first_line(&crate::error_chain(&e)).to_owned();
                tracing::warn!(
                    server = %req.server, backup = %id, attempt, %reason,
                    "copy failed; the files copied so far are removed and the copy restarts in {} seconds",
                    opts.retry.sleep.as_secs()
                );
                notify(BackupNotice::CopyRetry { attempt, reason, sleep: opts.retry.sleep });
                remove_partial_copy(&plan.backup_dir)?;
                tokio::time::sleep(opts.retry.sleep).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let copy_time = copy_start.elapsed().as_secs_f64();
    notify(BackupNotice::CopyDone { seconds: copy_time });

    *phase = "finalising the backup";
    notify(BackupNotice::Finalising);
    let (end_time, end_xlog, end_wal) = if in_recovery {
        // Barman's `current_xlog_info` on a standby: the last replayed position, which is at
        // or past where the backup ends. Its WAL file is named here, on the backup's end
        // timeline, a boundary belonging to the segment it ends (as on a primary).
        let row = sql_row(&mut sql, "SELECT CURRENT_TIMESTAMP, pg_last_wal_replay_lsn()").await?;
        let end_xlog: Lsn = row[1].parse().map_err(|e| BackupError::Invalid(format!("{e}")))?;
        let timeline = copied.end.map_or(sys.timeline, |(_, t)| t);
        let end_wal = segment_of(timeline, Lsn(end_xlog.0.saturating_sub(1)), facts.segment_size)?;
        // Barman's `stop_backup` through a standby connection: the switch happens on the
        // primary, completing the segment that holds the end, which then reaches the standby
        // and the WAL streamers attached to it. No restore point: a standby cannot write one
        // (Barman skips it there too).
        if let Some(p) = primary.as_mut() {
            p.switch_wal().await;
        }
        (parse_pg_timestamp(&row[0])?, end_xlog, end_wal)
    } else {
        let row = sql_row(&mut sql, "SELECT CURRENT_TIMESTAMP, pg_current_wal_lsn(), file_name, file_offset FROM pg_walfile_name_offset(pg_current_wal_lsn())").await?;
        // As Barman: a restore point named after the backup, a target for `--target-name`.
        sql_one(&mut sql, &format!("SELECT pg_create_restore_point('barman_{id}')::text")).await?;
        // As Barman's `stop_backup`: close the segment holding the end position, so it is
        // archived now. BASE_BACKUP switched at its end, but any record written since
        // (bgwriter's running-xacts, autovacuum, this restore point) leaves `end_wal` open, and
        // `backup --wait` would wait for whatever fills it next.
        sql_one(&mut sql, "SELECT pg_switch_wal()::text").await?;
        let end_xlog: Lsn = row[1].parse().map_err(|e| BackupError::Invalid(format!("{e}")))?;
        let mut end_wal: WalSegmentName = row[2].parse().map_err(|e| BackupError::Invalid(format!("end WAL {}: {e}", row[2])))?;
        // PostgreSQL 17 changed pg_walfile_name_offset() at a segment boundary: it names the
        // segment that starts there, where older servers (and Barman's catalog) name the one that
        // ends there — the segment holding the backup's last WAL. Barman corrects it the same way.
        if facts.version >= 170000 && end_xlog.0.is_multiple_of(seg) {
            end_wal = end_wal.prev(facts.segment_size).unwrap_or(end_wal);
        }
        (parse_pg_timestamp(&row[0])?, end_xlog, end_wal)
    };
    sql.close().await?;
    if let Some(p) = primary {
        p.close().await;
    }
    info.end_time = Some(end_time);
    info.end_xlog = Some(end_xlog);
    info.end_wal = Some(end_wal);
    info.end_offset = Some(end_xlog.0 % seg);

    let backup_start = copied.start;
    let label = match tar_algorithm {
        None => std::fs::read_to_string(data_dir.join("backup_label"))
            .map_err(|e| StorageError::io(crate::storage::StorageOp::Read, data_dir.join("backup_label"), e))?,
        Some(algorithm) => {
            // As Barman's `_read_compressed_backup_label`: the member of base.tar*.
            let base = data_dir.join(algorithm.archive_file("base.tar"));
            let bytes = read_member(&base, algorithm, "backup_label", BACKUP_LABEL_MAX)?
                .ok_or_else(|| BackupError::Invalid(format!("Could not find backup_label in {}", base.display())))?;
            String::from_utf8(bytes).map_err(|_| BackupError::Invalid(format!("backup_label in {} is not UTF-8", base.display())))?
        }
    };
    info.compression = compression.and_then(BackupCompressionSettings::info_compression);
    let (begin_xlog, begin_wal) = parse_label(&label)?;
    if let Some((lsn, _)) = backup_start {
        if lsn != begin_xlog {
            return Err(BackupError::Invalid(format!("backup_label says {begin_xlog}, BASE_BACKUP said {lsn}")));
        }
    }
    info.backup_label = Some(label);
    info.begin_xlog = Some(begin_xlog);
    info.begin_wal = Some(begin_wal);
    info.begin_offset = Some(begin_xlog.0 % seg);
    info.timeline = Some(begin_wal.timeline());
    let size = tree_size(&backup_dir)?;
    info.size = Some(size);
    info.deduplicated_size = Some(size);
    let total = started.elapsed().as_secs_f64();
    info.copy_stats = Some(vec![
        (PyValue::Str("copy_time".into()), PyValue::Float(round6(copy_time))),
        (PyValue::Str("total_time".into()), PyValue::Float(round6(total))),
    ]);
    notify(BackupNotice::Size { bytes: size });
    notify(BackupNotice::EndLsn { lsn: end_xlog, wal: end_wal, offset: end_xlog.0 % seg });
    info.status = BackupStatus::WaitingForWals;
    info.write(&req.catalog)?;
    Ok(())
}

/// Where and how each copy attempt writes.
struct CopyPlan<'a> {
    options: BaseBackupOptions,
    /// The parent's `backup_manifest`, uploaded on each attempt's session (incremental only).
    parent_manifest: Option<Bytes>,
    backup_dir: PathBuf,
    data_dir: PathBuf,
    /// Tablespace OID → its directory in the backup.
    links: BTreeMap<String, PathBuf>,
    tar_algorithm: Option<ArchiveCompression>,
    on_the_wire: Option<ArchiveCompression>,
    compression: Option<&'a BackupCompressionSettings>,
    /// [`BackupOptions::stall_check`] (never zero).
    stall_check: Option<Duration>,
    /// Where the stall check asks the server.
    conninfo: &'a str,
}

/// What a successful copy learned from the server.
struct Copied {
    /// BASE_BACKUP's start position.
    start: Option<(Lsn, TimelineId)>,
    /// BASE_BACKUP's end position.
    end: Option<(Lsn, TimelineId)>,
}

/// The replication session for BASE_BACKUP, named `streaming_backup_name`.
async fn connect_streaming(req: &StreamingBackupRequest) -> Result<Connection, BackupError> {
    let mut stream_cfg: ConnConfig = req.streaming_conninfo.parse()?;
    stream_cfg.application_name = Some(req.application_name.clone());
    Ok(Connection::connect(&stream_cfg, SessionKind::Physical).await?)
}

/// A new replication session for a retried copy, still on the same system (a failover
/// between attempts must not mix two clusters in one backup).
async fn reconnect(req: &StreamingBackupRequest, expected: SystemId) -> Result<Connection, BackupError> {
    let mut repl = connect_streaming(req).await?;
    let sys = repl.identify_system().await?;
    if sys.system_id != expected {
        return Err(BackupError::ForeignSystem { expected: expected.to_string(), found: sys.system_id.to_string() });
    }
    Ok(repl)
}

/// Barman's `_prepare_backup_destination` before a retry: what the failed attempt wrote goes.
fn remove_partial_copy(backup_dir: &Path) -> Result<(), StorageError> {
    match std::fs::remove_dir_all(backup_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(crate::storage::StorageOp::Remove, backup_dir, e)),
    }
}

/// One BASE_BACKUP on `repl`, written as `plan` says, every file durable when it returns.
async fn copy_once(
    mut repl: Connection,
    plan: &CopyPlan<'_>,
    primary: Option<&Primary>,
    notify: &mut (dyn FnMut(BackupNotice) + Send),
) -> Result<Copied, BackupError> {
    if plan.tar_algorithm.is_some() {
        // As Barman's `_prepare_backup_destination`: data/ and one (here empty) directory per
        // tablespace, which its pg_basebackup tablespace mapping creates.
        crate::storage::durable::create_dir_all_durable(&plan.data_dir, 0o700)?;
        for dir in plan.links.values() {
            crate::storage::durable::create_dir_all_durable(dir, 0o700)?;
        }
    }
    let mut progress = ProgressMeter::default();
    let mut sink: Option<ArchiveSink> = None;
    let mut manifest: Vec<u8> = Vec::new();
    let mut backup_start: Option<(Lsn, TimelineId)> = None;
    let mut backup_end: Option<(Lsn, TimelineId)> = None;
    let mut switcher = None;
    let mut sink_is_base = false;
    if let Some(manifest) = &plan.parent_manifest {
        repl.upload_manifest(manifest.clone()).await?;
    }
    {
        let pid = repl.backend_pid();
        let mut reader = repl.base_backup(&plan.options).await?;
        let mut watch = plan.stall_check.map(|every| StallWatch::new(every, plan.conninfo, pid, reader.bytes_received()));
        loop {
            let next = match watch.as_mut() {
                None => reader.next_event().await?,
                Some(watch) => loop {
                    watch.arm(reader.bytes_received());
                    match tokio::time::timeout(watch.wait(), reader.next_event()).await {
                        Ok(next) => break next?,
                        Err(_) => watch.look(reader.bytes_received()).await.map_err(BackupError::Stalled)?,
                    }
                },
            };
            let Some(event) = next else { break };
            match event {
                BaseBackupEvent::Started { lsn, timeline } => backup_start = Some((lsn, timeline)),
                BaseBackupEvent::Tablespaces(list) => {
                    progress.total = list.iter().map(|t| t.size_kb.map(|kb| kb * 1024)).sum();
                }
                BaseBackupEvent::Progress(done) => {
                    progress.server_done = done;
                    progress.report(notify);
                }
                BaseBackupEvent::Finished { lsn, timeline } => backup_end = Some((lsn, timeline)),
                BaseBackupEvent::ArchiveStart { name, .. } => {
                    if sink.is_some() {
                        return Err(BackupError::Invalid(format!("archive {name:?} started inside another")));
                    }
                    let unexpected = || BackupError::Invalid(format!("unexpected archive {name:?} from the server"));
                    // `base.tar` or `<oid>.tar`, plus the server's compression suffix.
                    let tar_name = name.strip_suffix(plan.on_the_wire.map_or("", ArchiveCompression::suffix)).ok_or_else(unexpected)?;
                    sink_is_base = tar_name == "base.tar";
                    let target = match tar_name {
                        "base.tar" => plan.data_dir.clone(),
                        other => match other.strip_suffix(".tar").filter(|o| plan.links.contains_key(*o)) {
                            Some(oid) => plan.backup_dir.join(oid),
                            None => return Err(unexpected()),
                        },
                    };
                    sink = Some(match (plan.tar_algorithm, plan.on_the_wire) {
                        (Some(algorithm), wire) => {
                            let input = match (wire, plan.compression) {
                                (Some(_), _) => ArchiveInput::Store,
                                (None, c) => ArchiveInput::Compress {
                                    algorithm,
                                    level: c.and_then(|c| c.level),
                                    workers: c.and_then(|c| c.workers),
                                },
                            };
                            ArchiveSink::File(spawn_archive_file(plan.data_dir.join(algorithm.archive_file(tar_name)), input))
                        }
                        (None, Some(wire)) => ArchiveSink::Unpack(spawn_plain_extract(target, wire, plan.links.clone())?),
                        (None, None) => ArchiveSink::Plain(PlainExtractor::new(&target, plan.links.clone())?),
                    });
                }
                BaseBackupEvent::ArchiveData(d) => match sink.as_mut().inspect(|_| {
                    progress.received += d.len() as u64;
                    progress.report(notify);
                }) {
                    Some(ArchiveSink::Plain(x)) => x.feed(&d)?,
                    Some(ArchiveSink::File(p)) => p.feed(d).await?,
                    Some(ArchiveSink::Unpack(p)) => p.feed(d).await?,
                    None => return Err(BackupError::Invalid("archive data outside an archive".into())),
                },
                BaseBackupEvent::ArchiveEnd => {
                    match sink.take() {
                        Some(ArchiveSink::Plain(x)) => {
                            x.finish()?;
                        }
                        Some(ArchiveSink::File(p)) => {
                            p.finish().await?;
                        }
                        Some(ArchiveSink::Unpack(p)) => {
                            p.finish().await?;
                        }
                        None => return Err(BackupError::Invalid("archive end outside an archive".into())),
                    }
                    // The main archive comes last; then the server stops the backup, and a
                    // standby with `archive_mode = always` waits there until its WAL is
                    // archived — which takes WAL switches on the primary.
                    if let (Some(p), None, true) = (primary, &switcher, sink_is_base) {
                        switcher = Some(p.spawn_switcher());
                    }
                }
                BaseBackupEvent::ManifestStart | BaseBackupEvent::ManifestEnd => {}
                BaseBackupEvent::ManifestData(d) => manifest.extend_from_slice(&d),
            }
        }
    }
    drop(switcher);
    if sink.is_some() {
        return Err(BackupError::Invalid("the backup stream ended inside an archive".into()));
    }
    repl.close().await?;
    atomic_write(&plan.data_dir.join("backup_manifest"), &manifest, FILE_MODE)?;
    fsync_dir(&plan.backup_dir)?;
    Ok(Copied { start: backup_start, end: backup_end })
}

/// How far the copy is, reported a few times a second at most.
#[derive(Default)]
struct ProgressMeter {
    /// Archive bytes received (what 13/14 let us count).
    received: u64,
    /// The server's own count (15+), uncompressed even when the server compresses.
    server_done: u64,
    total: Option<u64>,
    last: Option<Instant>,
}

impl ProgressMeter {
    fn report(&mut self, notify: &mut (dyn FnMut(BackupNotice) + Send)) {
        if self.last.is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(250)) {
            return;
        }
        self.last = Some(Instant::now());
        notify(BackupNotice::Progress { done: self.received.max(self.server_done), total: self.total });
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn segment_of(tli: TimelineId, lsn: Lsn, size: WalSegmentSize) -> Result<WalSegmentName, BackupError> {
    WalSegmentName::from_lsn(tli, lsn, size).map_err(|e| BackupError::Invalid(e.to_string()))
}

/// `START WAL LOCATION: 0/E000028 (file 00000001000000000000000E)`.
fn parse_label(label: &str) -> Result<(Lsn, WalSegmentName), BackupError> {
    let line = label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
        .ok_or_else(|| BackupError::Invalid("backup_label has no START WAL LOCATION".into()))?;
    let (lsn, rest) = line.split_once(' ').ok_or_else(|| BackupError::Invalid(format!("START WAL LOCATION {line:?}")))?;
    let file = rest.trim_start_matches("(file ").trim_end_matches(')');
    let lsn = lsn.parse().map_err(|e| BackupError::Invalid(format!("{e}")))?;
    let wal = file.parse().map_err(|e| BackupError::Invalid(format!("backup_label WAL file {file:?}: {e}")))?;
    Ok((lsn, wal))
}

/// Sum of the sizes of the regular files under `dir` (links are not followed), as Barman's
/// `size`.
fn tree_size(dir: &Path) -> Result<u64, StorageError> {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| StorageError::io(crate::storage::StorageOp::Read, &d, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| StorageError::io(crate::storage::StorageOp::Read, &d, e))?;
            let meta = entry.path().symlink_metadata().map_err(|e| StorageError::io(crate::storage::StorageOp::Metadata, entry.path(), e))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_checks_in_barmans_order() {
        use IncrementalRefusal::*;
        assert_eq!(check_incremental_server(160004, false, None), Err(ServerTooOld));
        assert_eq!(check_incremental_server(170002, false, Some("off")), Err(NotPostgresMethod));
        assert_eq!(check_incremental_server(170002, true, Some("off")), Err(NoWalSummaries));
        assert_eq!(check_incremental_server(170002, true, None), Err(NoWalSummaries));
        assert_eq!(check_incremental_server(180001, true, Some("on")), Ok(()));
    }

    #[test]
    fn parent_checks_and_children() {
        let home = tempfile::tempdir().unwrap();
        let catalog = ServerCatalog::new("pg", home.path().join("pg"), home.path());
        catalog.create_skeleton().unwrap();
        let id: BackupId = "20261130T100000".parse().unwrap();
        let mut parent = BackupInfo::new(id);
        parent.status = BackupStatus::Done;
        parent.write(&catalog).unwrap();
        assert_eq!(check_parent(&catalog, &parent), Err(IncrementalRefusal::ParentWithoutSummaries(id)));
        parent.summarize_wal = Some("on".into());
        assert_eq!(check_parent(&catalog, &parent), Err(IncrementalRefusal::ParentWithoutManifest(id)));
        std::fs::create_dir_all(catalog.backup_data_dir(id)).unwrap();
        std::fs::write(catalog.backup_data_dir(id).join("backup_manifest"), "{}").unwrap();
        assert_eq!(check_parent(&catalog, &parent), Ok(()));
        parent.status = BackupStatus::Failed;
        assert_eq!(check_parent(&catalog, &parent), Err(IncrementalRefusal::ParentNotComplete { id, status: BackupStatus::Failed }));

        // Each child once, in order, whatever else backup.info holds.
        let (c1, c2): (BackupId, BackupId) = ("20261130T110000".parse().unwrap(), "20261130T120000".parse().unwrap());
        link_child(&catalog, id, c1).unwrap();
        link_child(&catalog, id, c1).unwrap();
        link_child(&catalog, id, c2).unwrap();
        let read = BackupInfo::read(&catalog, id).unwrap();
        assert_eq!(read.children_backup_ids, Some(vec![c1, c2]));
        assert_eq!(read.status, BackupStatus::Done);

        // A child that died before being listed is listed when it is marked FAILED.
        let c3: BackupId = "20261130T130000".parse().unwrap();
        let mut orphan = BackupInfo::new(c3);
        orphan.parent_backup_id = Some(id);
        orphan.status = BackupStatus::Started;
        orphan.write(&catalog).unwrap();
        let lock = catalog.lock(LockKind::ServerBackup).unwrap();
        assert_eq!(fail_abandoned(&catalog, &lock).unwrap(), vec![c3]);
        assert_eq!(BackupInfo::read(&catalog, id).unwrap().children_backup_ids, Some(vec![c1, c2, c3]));
    }

    #[test]
    fn label() {
        let (lsn, wal) = parse_label("START WAL LOCATION: 0/E000028 (file 00000001000000000000000E)\nCHECKPOINT LOCATION: 0/E000060\n").unwrap();
        assert_eq!(lsn, Lsn(0xE000028));
        assert_eq!(wal.to_string(), "00000001000000000000000E");
        assert!(parse_label("nothing").is_err());
    }
}
