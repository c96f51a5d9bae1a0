//! `backup_method = rsync`: a concurrent backup through PostgreSQL's low-level API, the files
//! pulled with rsync over ssh into the catalog as Barman lays them out (formats §1.3) — Barman's
//! `RsyncBackupExecutor` with its `LocalConcurrentBackupStrategy` (`barman/backup_executor.py`),
//! `mode=rsync-concurrent` in backup.info.
//!
//! `backup_method = local-rsync` is the same executor in Barman's *local mode*, for a Barman
//! that runs on the database host: `ssh_command` must be empty, rsync copies from the local
//! paths PostgreSQL reports (no `-e`, no `:` before the sources), and `barman check` looks at
//! the local PGDATA instead of ssh ([`executor_checks`]). Everything else, backup.info's `mode`
//! included, is the rsync method's.
//!
//! The life of a backup:
//!
//! 1. take `.<server>-backup.lock`; pick the ID; `meta/<ID>-backup.info` with status `EMPTY`;
//!    the pre-backup hooks; status `STARTED`;
//! 2. on one SQL session (`conninfo`), kept for the whole backup: the server's facts, then
//!    `pg_backup_start(label, fast)` (`pg_start_backup(label, fast, false)` before 15) with
//!    `idle_session_timeout` off (14+), which gives `begin_xlog`, `begin_time` and the timeline;
//! 3. the copy ([`copy`]): every tablespace's `PG_<major>_*` directory into `base/<ID>/<oid>/`,
//!    PGDATA into `base/<ID>/data/` without what PostgreSQL says to leave out (`pg_wal/*`,
//!    `pg_replslot/*`, `postmaster.pid`, temporary files, … — Barman's `PGDATA_EXCLUDE_LIST` and
//!    `EXCLUDE_LIST`) and without the `pg_tblspc` links (recovery makes them), `global/pg_control`
//!    last, then the configuration files that live outside PGDATA. With `reuse_backup = link`
//!    (or `copy`) the files unchanged since the previous backup are hard-linked (or copied) from
//!    it rather than transferred. While it runs, the session is kept alive with `SELECT 1`
//!    every `keepalive_interval` seconds: losing it would abort the backup on the server;
//! 4. `pg_backup_stop()` (`pg_stop_backup(false)`) on the same session, which waits for the WAL
//!    to be archived when `archive_mode` is on and answers the end position and the
//!    `backup_label` (and `tablespace_map`), written into `data/`; a WAL switch (so `end_wal` is archived now) and a
//!    restore point `barman_<ID>`, as Barman;
//! 5. every file and directory fsynced; `size` and `deduplicated_size` (files whose link count
//!    is 1) recorded; status `WAITING_FOR_WALS` until the WAL up to `end_wal` is archived
//!    (`archiver` or `streaming_archiver`), then `DONE`.
//!
//! The tablespaces are kept beside `data/` and recovery links `pg_tblspc/<oid>` to wherever
//! each one is restored. `pg_backup_stop`'s `tablespace_map` is also written into `data/`
//! (Barman drops it), so that the copy in `data/` is what PostgreSQL documents for a
//! low-level backup and can be restored by hand; `recover` leaves it out, as Barman's does, or
//! PostgreSQL would point the links back at the original locations, undoing `--tablespace`.
//!
//! A standby is backed up the same way, as Barman's `StandbyPostgreSQLConnection` does it
//! ([`super::standby`]): with `primary_conninfo`, the WAL switches happen on the primary — in
//! the background while the standby stops the backup (where, with `archive_mode = always`, it
//! waits for its WAL to be archived, which only a switch on the primary brings), then once
//! after — and no restore point is written (a standby cannot). Without `primary_conninfo` the
//! backup is taken anyway, as Barman takes it, with a warning that its last WAL file waits for
//! the primary's next switch.
//!
//! Any failure leaves the backup `FAILED` with `error=failure <phase> (<reason>)`, files kept.

mod copy;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use barman_replication::{Connection, Lsn, SessionKind, TimelineId};

use self::copy::{CopyPlan, DirItem, FileItem};
use super::catalog_entry;
use super::facts::{parse_pg_timestamp, read_facts, sql_literal, sql_one, sql_row, ServerFacts};
use super::standby::{primary_for_backup, Primary, PrimaryOptions};
use super::streaming::{BackupError, BackupNotice};
use crate::catalog::{BackupId, BackupInfo, BackupStatus, ServerCatalog};
use crate::config::{BackupMethod, ReuseBackup, ServerConfig};
use crate::diagnostics::checks::CheckResult;
use crate::hooks::HookSet;
use crate::ssh::{ChildSet, Rsync};
use crate::storage::durable::{atomic_write, fsync_dir, FILE_MODE};
use crate::storage::{StorageError, StorageOp};
use crate::wal::WalSegmentName;

/// backup.info's `mode` for this method: the executor's name and its strategy's.
pub const MODE: &str = "rsync-concurrent";

/// Left out of PGDATA (Barman's `PGDATA_EXCLUDE_LIST`, `barman/postgres_plumbing.py`): the
/// logs, the WAL (it comes from the archive), and `pg_control`, copied on its own at the end.
const PGDATA_EXCLUDE: [&str; 5] = ["/pg_log/*", "/log/*", "/pg_xlog/*", "/pg_wal/*", "/global/pg_control"];

/// Left out everywhere (Barman's `EXCLUDE_LIST`): what PostgreSQL's `basebackup.c` leaves out
/// (`excludeFiles`, `excludeDirContents`) and temporary relation files.
const EXCLUDE: [&str; 16] = [
    "pgsql_tmp*",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "pg_internal.init",
    "postmaster.pid",
    "postmaster.opts",
    "recovery.conf",
    "standby.signal",
    "**/[0-9]*/t[0-9]*_[0-9]*",
    "pg_dynshmem/*",
    "pg_notify/*",
    "pg_replslot/*",
    "pg_serial/*",
    "pg_stat_tmp/*",
    "pg_snapshots/*",
    "pg_subtrans/*",
];

/// The server's settings for an rsync backup, with the `barman backup` overrides applied.
#[derive(Debug, Clone)]
pub struct RsyncBackupRequest {
    /// The server's name.
    pub server: String,
    /// `conninfo`: the session that starts and stops the backup.
    pub conninfo: String,
    /// `ssh_command`: how rsync reaches the PostgreSQL host; `None` for `local-rsync`, which
    /// reads the PostgreSQL host's paths directly.
    pub ssh_command: Option<String>,
    /// The catalog to write into.
    pub catalog: ServerCatalog,
    /// `backup --name`.
    pub name: Option<String>,
    /// `immediate_checkpoint` (or the command-line override).
    pub immediate_checkpoint: bool,
    /// `reuse_backup` (or `--reuse-backup`).
    pub reuse: ReuseBackup,
    /// `parallel_jobs` (or `--jobs`): rsync processes at once.
    pub jobs: usize,
    /// `bandwidth_limit` (or `--bwlimit`) in KB/s, for PGDATA and tablespaces without their own.
    pub bwlimit: Option<u64>,
    /// `tablespace_bandwidth_limit`: KB/s per tablespace name.
    pub tablespace_bwlimit: BTreeMap<String, u64>,
    /// `network_compression`: rsync `-z`.
    pub network_compression: bool,
    /// `basebackup_retry_times` (or `--retry-times`, 0 with `--no-retry`): extra attempts of a
    /// failed rsync.
    pub retry_times: u32,
    /// `basebackup_retry_sleep` (or `--retry-sleep`).
    pub retry_sleep: Duration,
    /// `keepalive_interval` (or `--keepalive-interval`): `None` or zero disables it.
    pub keepalive_interval: Option<Duration>,
    /// `backup_options` has `external_configuration`: included configuration files outside
    /// PGDATA are the operator's business, and not warned about.
    pub external_configuration: bool,
    /// `backup_options` names no strategy: concurrent is used, and Barman warns.
    pub strategy_defaulted: bool,
    /// `primary_conninfo` (and `primary_checkpoint_timeout`): where the WAL switches happen
    /// when `conninfo` is a standby.
    pub primary: Option<PrimaryOptions>,
}

/// What `barman backup` can override.
#[derive(Debug, Clone, Default)]
pub struct RsyncOverrides {
    /// `--name`.
    pub name: Option<String>,
    /// `--immediate-checkpoint` / `--no-immediate-checkpoint`.
    pub immediate_checkpoint: Option<bool>,
    /// `--reuse-backup`.
    pub reuse: Option<ReuseBackup>,
    /// `--jobs`.
    pub jobs: Option<u64>,
    /// `--bwlimit`.
    pub bwlimit: Option<u64>,
    /// `--retry-times` (0 for `--no-retry`).
    pub retry_times: Option<u64>,
    /// `--retry-sleep`.
    pub retry_sleep: Option<u64>,
    /// `--keepalive-interval`.
    pub keepalive_interval: Option<u64>,
}

/// The server's configuration cannot take an rsync backup.
#[derive(Debug, thiserror::Error)]
pub enum RsyncConfigError {
    /// No `ssh_command` (Barman disables the server with this message).
    #[error("Missing or invalid ssh_command in barman configuration for server {0}")]
    NoSshCommand(String),
    /// `backup_method = local-rsync` with an `ssh_command` (Barman disables the server with
    /// this message).
    #[error("Local copy requires ssh_command in barman configuration to be empty for server {0}")]
    LocalWithSshCommand(String),
    /// No `conninfo`.
    #[error("missing 'conninfo' for server '{0}'")]
    NoConninfo(String),
    /// `backup_compression` is for the postgres method only (Barman disables the server).
    #[error("backup_compression option is not supported by rsync backup_method")]
    Compression,
    /// Exclusive backups (PostgreSQL 13/14 only) are not built.
    #[error(
        "backup_options = exclusive_backup is not implemented yet in barman-rs (server '{0}'); \
         use backup_options = concurrent_backup"
    )]
    Exclusive(String),
}

impl RsyncBackupRequest {
    /// The request for `server` (`backup_method = rsync` or `local-rsync`), as Barman's
    /// `RsyncBackupExecutor` reads its configuration, with `overrides` from the command line.
    pub fn from_config(server: &ServerConfig, catalog: ServerCatalog, overrides: &RsyncOverrides) -> Result<Self, RsyncConfigError> {
        let name = &server.name;
        let configured = server.ssh_command.clone().filter(|s| !s.trim().is_empty());
        let ssh_command = match (server.backup_method == BackupMethod::LocalRsync, configured) {
            (false, Some(c)) => Some(c),
            (false, None) => return Err(RsyncConfigError::NoSshCommand(name.clone())),
            (true, None) => None,
            (true, Some(_)) => return Err(RsyncConfigError::LocalWithSshCommand(name.clone())),
        };
        let conninfo = server.conninfo.clone().ok_or_else(|| RsyncConfigError::NoConninfo(name.clone()))?;
        if server.backup_compression.is_some() {
            return Err(RsyncConfigError::Compression);
        }
        if server.backup_options.exclusive_backup {
            return Err(RsyncConfigError::Exclusive(name.clone()));
        }
        let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
        let bwlimit = overrides.bwlimit.or(server.bandwidth_limit.and_then(positive)).filter(|b| *b > 0);
        let tablespace_bwlimit = server
            .tablespace_bandwidth_limit
            .iter()
            .flatten()
            .filter_map(|(k, v)| u64::try_from(*v).ok().map(|v| (k.clone(), v)))
            .collect();
        Ok(RsyncBackupRequest {
            server: name.clone(),
            conninfo,
            ssh_command,
            catalog,
            name: overrides.name.clone(),
            immediate_checkpoint: overrides.immediate_checkpoint.unwrap_or(server.immediate_checkpoint),
            reuse: overrides.reuse.or(server.reuse_backup).unwrap_or(ReuseBackup::Off),
            jobs: overrides.jobs.or(positive(server.parallel_jobs)).unwrap_or(1).clamp(1, 1024) as usize,
            bwlimit,
            tablespace_bwlimit,
            network_compression: server.network_compression,
            retry_times: overrides.retry_times.or(u64::try_from(server.basebackup_retry_times).ok()).unwrap_or(0).min(u32::MAX.into()) as u32,
            retry_sleep: Duration::from_secs(overrides.retry_sleep.or(u64::try_from(server.basebackup_retry_sleep).ok()).unwrap_or(30)),
            keepalive_interval: overrides
                .keepalive_interval
                .or(u64::try_from(server.keepalive_interval).ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            external_configuration: server.backup_options.external_configuration,
            strategy_defaulted: !server.backup_options.concurrent_backup,
            primary: PrimaryOptions::from_config(server),
        })
    }

    /// How Barman's "Starting backup copy via … for <ID>" names the copy
    /// (`RsyncBackupExecutor._start_backup_copy_message`).
    pub fn copy_via(&self) -> &'static str {
        match self.ssh_command {
            Some(_) => "rsync/SSH",
            None => "local rsync",
        }
    }
}

/// The rsync executor's checks for `barman check` (and the silent checks before `barman
/// backup`), Barman's `ExternalBackupExecutor.check`: `ssh_check` for `backup_method =
/// rsync`; for `local-rsync`, `local_pgdata_check` on `data_directory` as PostgreSQL reports
/// it (none when PostgreSQL did not: its own checks fail then), and none at all when an
/// `ssh_command` is set — Barman then has no executor, and its `configuration` check reports
/// the server disabled ([`RsyncConfigError::LocalWithSshCommand`]).
pub fn executor_checks(cfg: &ServerConfig, data_directory: Option<&str>) -> Vec<CheckResult> {
    if cfg.backup_method != BackupMethod::LocalRsync {
        return ssh_check(cfg);
    }
    if cfg.ssh_command.as_deref().is_some_and(|c| !c.trim().is_empty()) {
        return Vec::new();
    }
    data_directory.map(|d| local_pgdata_check(Path::new(d))).into_iter().collect()
}

/// Barman's `ExternalBackupExecutor._remote_check`: [`crate::ssh::ssh_checks`] on
/// `ssh_command`, which reaches the PostgreSQL host; without one, `ssh` fails with Barman's
/// message.
fn ssh_check(cfg: &ServerConfig) -> Vec<CheckResult> {
    match cfg.ssh_command.as_deref().filter(|c| !c.trim().is_empty()) {
        Some(command) => crate::ssh::ssh_checks(command, "PostgreSQL server"),
        None => vec![CheckResult {
            name: "ssh".to_owned(),
            ok: false,
            hint: Some(RsyncConfigError::NoSshCommand(cfg.name.clone()).to_string()),
            perfdata: None,
            details: Vec::new(),
        }],
    }
}

/// Barman's `ExternalBackupExecutor._local_check`: `local PGDATA`, `OK (Access to local
/// PGDATA)` when `pgdata` is a directory this process can list.
///
/// Deliberate difference: Barman's check always passes (only its hint changes, to "A file with
/// the same name exists, but is not a directory" for a file); this one fails whenever the copy
/// could not read the directory — missing, not a directory, or not readable by the user
/// barman-rs runs as — so that `backup` refuses to start rather than failing in the copy.
fn local_pgdata_check(pgdata: &Path) -> CheckResult {
    let failure = match std::fs::metadata(pgdata) {
        Ok(m) if !m.is_dir() => Some("A file with the same name exists, but is not a directory".to_owned()),
        Ok(_) => std::fs::read_dir(pgdata).err().map(|e| format!("cannot read {}: {e}", pgdata.display())),
        Err(e) => Some(format!("cannot access {}: {e}", pgdata.display())),
    };
    CheckResult {
        name: "local PGDATA".to_owned(),
        ok: failure.is_none(),
        hint: Some(failure.unwrap_or_else(|| "Access to local PGDATA".to_owned())),
        perfdata: None,
        details: Vec::new(),
    }
}

/// Runs one rsync backup, with `hooks`' pre-backup scripts once the backup has its ID (status
/// `EMPTY`, as Barman runs them; a retry script's 63 fails it before anything is copied). The
/// post hooks are the caller's: Barman runs them after `--wait`.
///
/// On success the backup is `WAITING_FOR_WALS`; on failure after the ID was chosen it is
/// `FAILED` and [`BackupError::Failed`] says why. Dropping the future stops the rsync processes
/// it started.
pub async fn take_rsync_backup(
    req: &RsyncBackupRequest,
    hooks: Option<&HookSet>,
    notify: &mut (dyn FnMut(BackupNotice) + Send),
) -> Result<BackupInfo, BackupError> {
    if req.strategy_defaulted {
        notify(BackupNotice::Warning(format!("No backup strategy set for server '{}' (using default 'concurrent_backup').", req.server)));
    }
    let (_lock, mut info) = catalog_entry::open(&req.catalog, &req.server, req.name.clone(), None, MODE, hooks, notify).await?;
    let mut phase = "issuing start backup command";
    let outcome = run(req, &mut info, &mut phase, notify).await;
    catalog_entry::close(&req.catalog, info, phase, outcome)
}

/// Stops the copy's rsync processes when dropped (the backup future was dropped: Ctrl-C, a
/// lost session, a failure).
struct CancelOnDrop(Arc<ChildSet>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn run(
    req: &RsyncBackupRequest,
    info: &mut BackupInfo,
    phase: &mut &'static str,
    notify: &mut (dyn FnMut(BackupNotice) + Send),
) -> Result<(), BackupError> {
    let id = info.backup_id;
    let mut sql = Connection::connect(&req.conninfo.parse()?, SessionKind::Normal).await?;
    let facts = read_facts(&mut sql).await?;
    let systemid = barman_replication::SystemId(
        sql_one(&mut sql, "SELECT system_identifier::text FROM pg_control_system()")
            .await?
            .parse()
            .map_err(|_| BackupError::Invalid("pg_control_system() gave no system identifier".into()))?,
    );
    catalog_entry::check_identity(&req.catalog, systemid, facts.version)?;
    catalog_entry::record_facts(info, &facts, systemid);
    info.write(&req.catalog)?;

    // A standby cannot switch WAL: its primary, when `primary_conninfo` names it, does
    // (Barman's `StandbyPostgreSQLConnection`).
    let in_recovery = sql_one(&mut sql, "SELECT pg_is_in_recovery()").await? == "t";
    let mut primary = primary_for_backup(&req.server, in_recovery, req.primary.as_ref(), systemid, notify).await?;
    if let (Some(p), true) = (primary.as_mut(), req.immediate_checkpoint) {
        p.checkpoint_and_wait_for_replay(&mut sql).await;
    }

    // Start: the session must stay open until the stop.
    let v15 = facts.version >= 150000;
    if facts.version >= 140000 {
        sql.simple_query("SET idle_session_timeout TO 0").await?;
    }
    let label = sql_literal(&format!("Barman backup {} {id}", req.server));
    let fast = if req.immediate_checkpoint { "true" } else { "false" };
    let start_call = if v15 { format!("pg_backup_start({label}, {fast})") } else { format!("pg_start_backup({label}, {fast}, false)") };
    let r = sql_row(
        &mut sql,
        &format!("SELECT location, (SELECT timeline_id FROM pg_control_checkpoint()), now() FROM {start_call} AS location"),
    )
    .await?;
    let seg = facts.segment_size;
    let begin_xlog: Lsn = r[0].parse().map_err(|e| BackupError::Invalid(format!("{start_call} answered {:?}: {e}", r[0])))?;
    let timeline = TimelineId(r[1].parse().map_err(|_| BackupError::Invalid(format!("timeline {:?}", r[1])))?);
    let begin_wal = WalSegmentName::from_lsn(timeline, begin_xlog, seg).map_err(|e| BackupError::Invalid(e.to_string()))?;
    info.begin_time = Some(parse_pg_timestamp(&r[2])?);
    info.begin_xlog = Some(begin_xlog);
    info.begin_wal = Some(begin_wal);
    info.begin_offset = Some(begin_xlog.0 % seg.bytes());
    info.timeline = Some(timeline);
    info.write(&req.catalog)?;
    notify(BackupNotice::StartLsn { lsn: begin_xlog, wal: begin_wal, offset: begin_xlog.0 % seg.bytes() });

    *phase = "copying files";
    notify(BackupNotice::CopyStarted(id));
    let plan = plan_copy(req, info, &facts)?;
    for dir in std::iter::once(&req.catalog.backup_data_dir(id)).chain(plan.dirs.iter().map(|d| &d.dst)) {
        crate::storage::durable::create_dir_all_durable(dir, 0o700)?;
    }
    let rsync = match &req.ssh_command {
        Some(ssh) => Rsync::new(ssh, req.network_compression, req.retry_times, req.retry_sleep),
        None => Rsync::local(req.network_compression, req.retry_times, req.retry_sleep),
    };
    let _cancel = CancelOnDrop(rsync.children.clone());
    let copy_started = Instant::now();
    let mut copying = tokio::task::spawn_blocking(move || copy::copy(&plan, &rsync));
    // The copy runs on its own thread; this task keeps the session alive meanwhile.
    let outcome = loop {
        let keepalive = async {
            match req.keepalive_interval {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = &mut copying => break done.map_err(|e| BackupError::Invalid(format!("the copy thread failed: {e}")))?,
            () = keepalive => {
                if let Err(e) = sql.simple_query("SELECT 1").await {
                    tracing::error!(error = %e, "keep-alive query failed");
                    return Err(BackupError::Invalid("Connection to the Postgres server was lost during the backup.".into()));
                }
            }
        }
    };
    let outcome = outcome.map_err(|e| BackupError::Invalid(crate::error_chain(&e)))?;
    tracing::debug!(seconds = copy_started.elapsed().as_secs_f64(), "copy finished");
    notify(BackupNotice::CopyDone { seconds: outcome.copy_time });
    // As Barman: included configuration files outside PGDATA are not copied; say so unless
    // `backup_options` has `external_configuration`.
    let outside: Vec<&str> = facts.included_files.iter().map(String::as_str).filter(|f| !inside(f, &facts.pgdata)).collect();
    if !outside.is_empty() && !req.external_configuration {
        notify(BackupNotice::Warning(format!(
            "The usage of include directives is not supported for files that reside outside PGDATA.\n\
             Please manually backup the following files:\n\t{}\n",
            outside.join("\n\t")
        )));
    }
    info.copy_stats = Some(outcome.stats);

    *phase = "issuing stop backup command (native concurrent)";
    notify(BackupNotice::Finalising);
    if facts.version >= 140000 {
        sql.simple_query("RESET idle_session_timeout").await?;
    }
    let stop_call = if v15 { "pg_backup_stop()" } else { "pg_stop_backup(false)" };
    // A standby with `archive_mode = always` waits in the stop until the WAL file holding the
    // end is archived, which only a WAL switch on the primary completes (Barman's
    // `StandbyPostgreSQLConnection._stop_backup`). The switching stops with the stop.
    let switcher = primary.as_ref().map(Primary::spawn_switcher);
    let r = sql_row(
        &mut sql,
        &format!(
            "SELECT end_row.lsn, (SELECT CASE WHEN pg_is_in_recovery() THEN min_recovery_end_timeline ELSE timeline_id END \
             FROM pg_control_checkpoint(), pg_control_recovery()), end_row.labelfile, now(), coalesce(end_row.spcmapfile, '') FROM {stop_call} AS end_row"
        ),
    )
    .await?;
    drop(switcher);
    let end_xlog: Lsn = r[0].parse().map_err(|e| BackupError::Invalid(format!("{stop_call} answered {:?}: {e}", r[0])))?;
    let end_tli = TimelineId(r[1].parse().map_err(|_| BackupError::Invalid(format!("timeline {:?}", r[1])))?);
    let end_wal = WalSegmentName::from_lsn(end_tli, end_xlog, seg).map_err(|e| BackupError::Invalid(e.to_string()))?;
    info.backup_label = Some(r[2].clone());
    info.end_time = Some(parse_pg_timestamp(&r[3])?);
    info.end_xlog = Some(end_xlog);
    info.end_wal = Some(end_wal);
    info.end_offset = Some(end_xlog.0 % seg.bytes());
    // As Barman: close the segment holding the end so it is archived now — on the primary for
    // a standby's backup, not at all without `primary_conninfo` — then a restore point named
    // after the backup (not on a standby, which cannot write one).
    match primary.as_mut() {
        Some(p) => p.switch_wal().await,
        None if !in_recovery => {
            sql_one(&mut sql, "SELECT pg_switch_wal()::text").await?;
        }
        None => {}
    }
    *phase = "writing backup label";
    let data_dir = req.catalog.backup_data_dir(id);
    atomic_write(&data_dir.join("backup_label"), r[2].as_bytes(), FILE_MODE)?;
    if !r[4].is_empty() {
        atomic_write(&data_dir.join("tablespace_map"), r[4].as_bytes(), FILE_MODE)?;
    }
    if !in_recovery {
        sql_one(&mut sql, &format!("SELECT pg_create_restore_point({})::text", sql_literal(&format!("barman_{id}")))).await?;
    }
    sql.close().await?;
    if let Some(p) = primary {
        p.close().await;
    }

    *phase = "calculating backup size";
    let backup_dir = req.catalog.backup_dir(id);
    let (size, deduplicated) = fsync_and_measure(&backup_dir)?;
    info.size = Some(size);
    info.deduplicated_size = Some(deduplicated);
    notify(BackupNotice::Size { bytes: size });
    info.status = BackupStatus::WaitingForWals;
    info.write(&req.catalog)?;
    notify(BackupNotice::EndLsn { lsn: end_xlog, wal: end_wal, offset: end_xlog.0 % seg.bytes() });
    Ok(())
}

/// Whether `path` is inside `pgdata` (Barman's `startswith(pgdata + "/")`).
fn inside(path: &str, pgdata: &str) -> bool {
    path.strip_prefix(pgdata.trim_end_matches('/')).is_some_and(|rest| rest.starts_with('/'))
}

/// The newest backup before `id` whose copy is done (`WAITING_FOR_WALS` or `DONE`), as
/// Barman's `get_previous_backup`.
fn previous_backup(catalog: &ServerCatalog, id: BackupId) -> Result<Option<BackupInfo>, BackupError> {
    let mut ids = catalog.backup_ids()?;
    ids.retain(|b| *b < id);
    ids.sort();
    for b in ids.into_iter().rev() {
        match BackupInfo::read(catalog, b) {
            Ok(info) if info.status.is_copy_done() => return Ok(Some(info)),
            Ok(_) => {}
            Err(e) => tracing::warn!(backup = %b, error = %e, "skipping an unreadable backup.info"),
        }
    }
    Ok(None)
}

/// The instant of a backup.info time in seconds since the epoch (a naive one is local time,
/// as Barman reads it).
fn epoch_seconds(t: crate::catalog::BarmanTimestamp) -> Option<i64> {
    if let Some(t) = t.to_offset_datetime() {
        return Some(t.unix_timestamp());
    }
    let d = t.datetime;
    let naive = chrono::NaiveDate::from_ymd_opt(d.year(), d.month() as u32, d.day().into())?
        .and_hms_opt(d.hour().into(), d.minute().into(), d.second().into())?;
    use chrono::TimeZone as _;
    chrono::Local.from_local_datetime(&naive).earliest().map(|t| t.timestamp())
}

/// What to copy where: Barman's `RsyncBackupExecutor.backup_copy`.
fn plan_copy(req: &RsyncBackupRequest, info: &BackupInfo, facts: &ServerFacts) -> Result<CopyPlan, BackupError> {
    let id = info.backup_id;
    let previous = previous_backup(&req.catalog, id)?;
    let reuse_dir = |oid: Option<u32>| -> Option<PathBuf> {
        let prev = previous.as_ref().filter(|_| req.reuse != ReuseBackup::Off)?;
        Some(match oid {
            Some(oid) => req.catalog.backup_dir(prev.backup_id).join(oid.to_string()),
            None => req.catalog.backup_data_dir(prev.backup_id),
        })
    };
    let exclude = |list: &mut Vec<String>| list.extend(EXCLUDE.iter().map(|p| format!("--exclude={p}")));
    let pgdata = facts.pgdata.trim_end_matches('/').to_owned();
    let major = facts.version / 10000;
    let mut dirs = Vec::new();
    let mut protect = Vec::new();
    for ts in &facts.tablespaces {
        // A tablespace inside PGDATA must not be copied twice.
        if inside(&ts.location, &pgdata) {
            protect.push(ts.location[pgdata.len()..].to_owned());
        }
        protect.push(format!("/pg_tblspc/{}", ts.oid));
        // Only this major's directory, `PG_<major>_<catalog version>` (Barman's comment: the
        // catalog version is not easy to know, and other majors' directories are left out).
        let mut filters = vec![format!("--include=/PG_{major}_*"), "--exclude=/*".to_owned()];
        exclude(&mut filters);
        dirs.push(DirItem {
            label: ts.name.clone(),
            src: ts.location.clone(),
            dst: req.catalog.backup_dir(id).join(ts.oid.to_string()),
            reuse: reuse_dir(Some(ts.oid)),
            filters,
            bwlimit: req.tablespace_bwlimit.get(&ts.name).copied().or(req.bwlimit),
        });
    }
    let mut filters: Vec<String> = PGDATA_EXCLUDE.iter().map(|p| format!("--exclude={p}")).collect();
    exclude(&mut filters);
    for p in &protect {
        filters.push(format!("--exclude={p}"));
        filters.push(format!("--filter=P_{p}"));
    }
    let data_dir = req.catalog.backup_data_dir(id);
    dirs.push(DirItem {
        label: "pgdata".into(),
        src: pgdata.clone(),
        dst: data_dir.clone(),
        reuse: reuse_dir(None),
        filters,
        bwlimit: req.bwlimit,
    });
    let pg_control = FileItem {
        label: "pg_control".into(),
        src: format!("{pgdata}/global/pg_control"),
        dst: data_dir.join("global/pg_control").to_string_lossy().into_owned(),
        optional: false,
    };
    let mut config = Vec::new();
    for (label, path) in [("config_file", &facts.config_file), ("hba_file", &facts.hba_file), ("ident_file", &facts.ident_file)] {
        if !inside(path, &pgdata) {
            config.push(FileItem {
                label: label.into(),
                src: path.clone(),
                dst: format!("{}/", data_dir.display()),
                optional: label == "ident_file",
            });
        }
    }
    Ok(CopyPlan {
        dirs,
        pg_control,
        config,
        reuse: req.reuse,
        safe_horizon: previous.as_ref().and_then(|p| p.begin_time).and_then(epoch_seconds),
        jobs: req.jobs,
    })
}

/// Fsyncs every file and directory under `dir` and returns Barman's `size` (every regular
/// file) and `deduplicated_size` (the files with a single link, i.e. not shared with another
/// backup), as Barman's `_set_backup_sizes(fsync=True)`.
fn fsync_and_measure(dir: &Path) -> Result<(u64, u64), StorageError> {
    let (mut size, mut dedup) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| StorageError::io(StorageOp::Read, &d, e))?;
        for entry in rd {
            let path = entry.map_err(|e| StorageError::io(StorageOp::Read, &d, e))?.path();
            let meta = path.symlink_metadata().map_err(|e| StorageError::io(StorageOp::Metadata, &path, e))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let file = std::fs::File::open(&path).map_err(|e| StorageError::io(StorageOp::Read, &path, e))?;
                file.sync_all().map_err(|e| StorageError::io(StorageOp::SyncFile, &path, e))?;
                size += meta.len();
                if meta.nlink() == 1 {
                    dedup += meta.len();
                }
            }
        }
        fsync_dir(&d)?;
    }
    Ok((size, dedup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_pgdata() {
        assert!(inside("/pg/data/postgresql.conf", "/pg/data"));
        assert!(inside("/pg/data/postgresql.conf", "/pg/data/"));
        assert!(!inside("/pg/data2/postgresql.conf", "/pg/data"));
        assert!(!inside("/etc/postgresql/16/main/postgresql.conf", "/pg/data"));
    }

    #[test]
    fn measures_shared_files_apart() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("b");
        std::fs::create_dir_all(backup.join("data/base")).unwrap();
        std::fs::write(backup.join("data/base/1"), vec![0; 100]).unwrap();
        std::fs::write(backup.join("data/base/2"), vec![0; 10]).unwrap();
        std::fs::hard_link(backup.join("data/base/1"), dir.path().join("previous")).unwrap();
        assert_eq!(fsync_and_measure(&backup).unwrap(), (110, 10));
    }

    fn server(extra: &str) -> ServerConfig {
        server_and_catalog(extra).0
    }

    fn server_and_catalog(extra: &str) -> (ServerConfig, ServerCatalog) {
        let mut fs = crate::config::MemoryFs::new();
        fs.add("/etc/barman.conf", format!("[barman]\nbarman_home = /var/lib/barman\n[pg]\nconninfo = host=x\n{extra}"));
        let cfg = crate::config::Config::load_with(&fs, Path::new("/etc/barman.conf"), None).expect("valid");
        let server = cfg.server("pg").expect("pg").clone();
        let catalog = ServerCatalog::from_config(&server, &cfg.global);
        (server, catalog)
    }

    fn request(extra: &str) -> Result<RsyncBackupRequest, RsyncConfigError> {
        let (server, catalog) = server_and_catalog(extra);
        RsyncBackupRequest::from_config(&server, catalog, &RsyncOverrides::default())
    }

    #[test]
    fn local_mode_needs_no_ssh_command_and_refuses_one() {
        let req = request("backup_method = local-rsync\n").expect("local-rsync without ssh_command");
        assert_eq!((req.ssh_command.as_deref(), req.copy_via()), (None, "local rsync"));

        let with_ssh = "backup_method = local-rsync\nssh_command = ssh postgres@pg\n";
        assert_eq!(
            request(with_ssh).expect_err("an ssh_command").to_string(),
            "Local copy requires ssh_command in barman configuration to be empty for server pg"
        );
        assert!(executor_checks(&server(with_ssh), Some("/")).is_empty(), "Barman has no executor to check");

        let req = request("backup_method = rsync\nssh_command = ssh postgres@pg\n").expect("rsync with ssh_command");
        assert_eq!(req.copy_via(), "rsync/SSH");
        assert!(matches!(request("backup_method = rsync\n"), Err(RsyncConfigError::NoSshCommand(_))));
    }

    #[test]
    fn local_pgdata_check_as_barmans() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = server("backup_method = local-rsync\n");
        let line = |pgdata: &Path| {
            let got = executor_checks(&cfg, pgdata.to_str());
            assert_eq!(got.len(), 1, "{got:?}");
            (got[0].name.clone(), got[0].ok, got[0].hint.clone().unwrap_or_default())
        };
        assert_eq!(line(dir.path()), ("local PGDATA".to_owned(), true, "Access to local PGDATA".to_owned()));
        std::fs::write(dir.path().join("file"), b"").unwrap();
        assert_eq!(line(&dir.path().join("file")).2, "A file with the same name exists, but is not a directory");
        let (_, ok, hint) = line(&dir.path().join("missing"));
        assert!(!ok && hint.starts_with("cannot access ") && hint.contains("missing"), "{hint}");
        // PostgreSQL did not say where its data is: its own checks fail, this one is left out.
        assert!(executor_checks(&cfg, None).is_empty());
    }

    #[test]
    fn epoch_of_backup_times() {
        let t: crate::catalog::BarmanTimestamp = "2026-01-05 12:00:00+00:00".parse().unwrap();
        assert_eq!(epoch_seconds(t), Some(1_767_614_400));
    }
}
