//! `barman recover`: a backup brought back into a directory, with the WAL and the recovery
//! configuration PostgreSQL 12+ needs to replay to the chosen target.
//!
//! The steps, in Barman's order (formats §2.18):
//!
//! 1. check the backup is `DONE`; create the destination (0700);
//! 2. copy `base/<ID>/data` into it on `jobs` threads, each tablespace into its location
//!    (`--tablespace NAME:LOCATION` or where it was), and point `pg_tblspc/<oid>` there; the
//!    manifest is kept as `backup_manifest.<ID>` so PostgreSQL ignores it. A compressed
//!    (tar-format) backup is decompressed and unpacked instead, one archive per thread:
//!    `data/<oid>.tar.*` into each tablespace's location, `data/base.tar.*` into the
//!    destination without `recovery.conf` and `tablespace_map` (Barman's
//!    `DecompressOperation`), every name checked on the way;
//! 3. copy the WAL the target needs, decompressed, into `<dest>/barman_wal/` (or `pg_wal/`
//!    for a standby); when the newest WAL exists only as the receiver's `streaming/*.partial`
//!    and the target reaches past the archive, that segment is supplied too, with every byte
//!    the receiver had fsynced — so a synchronous (RPO=0) setup loses no commit;
//! 4. comment out what is dangerous in the restored configuration, append the recovery
//!    settings to `postgresql.auto.conf`, create `recovery.signal` (or `standby.signal`), and
//!    keep a copy of backup.info as `.barman-recover.info`.

pub mod copy;
pub mod pgconf;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backup::compressed::{extract_archive, ArchiveCompression, ArchiveError};
use crate::compression::{Compression, WalCompression};
use crate::catalog::{xlogdb, BackupId, BackupInfo, BackupStatus, CatalogError, LockKind, ServerCatalog, XlogDbEntry};
use crate::storage::durable::{atomic_write, fsync_dir, FILE_MODE};
use crate::storage::{StorageError, StorageOp};
use crate::wal::{TimelineHistory, WalFileName, WalSegmentName};

pub use pgconf::{ConfLine, ConfReport};

/// `--target-tli`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTimeline {
    /// A number.
    Id(u32),
    /// `current`: the backup's timeline.
    Current,
    /// `latest`: the newest timeline in the archive.
    Latest,
}

/// Where recovery should stop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryTarget {
    /// `--target-time`.
    pub time: Option<String>,
    /// `--target-xid`.
    pub xid: Option<String>,
    /// `--target-lsn`.
    pub lsn: Option<String>,
    /// `--target-name`.
    pub name: Option<String>,
    /// `--target-immediate`.
    pub immediate: bool,
    /// `--exclusive`: stop just before the target rather than after.
    pub exclusive: bool,
    /// `--target-tli`.
    pub timeline: Option<TargetTimeline>,
    /// `--target-action pause|shutdown|promote`.
    pub action: Option<String>,
}

impl RecoveryTarget {
    /// Whether any point-in-time target is set.
    pub fn is_pitr(&self) -> bool {
        self.time.is_some() || self.xid.is_some() || self.lsn.is_some() || self.name.is_some() || self.immediate
    }
}

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RecoveryRequest {
    /// The server's catalog.
    pub catalog: ServerCatalog,
    /// The backup.
    pub backup_id: BackupId,
    /// The destination directory.
    pub destination: PathBuf,
    /// `--tablespace NAME:LOCATION` relocations.
    pub tablespaces: BTreeMap<String, PathBuf>,
    /// The recovery target.
    pub target: RecoveryTarget,
    /// `--standby-mode`.
    pub standby_mode: bool,
    /// Parallel copy threads (`--jobs`).
    pub jobs: usize,
    /// Whether to supply the receiver's `.partial` segment when the target needs it
    /// (default on; Barman's `--partial-wal` turns it on there).
    pub partial_wal: bool,
    /// The server's WAL compression settings: archived WAL is decompressed with them
    /// (`custom` needs the configured filters; the others are recognised by name).
    pub compression: WalCompression,
}

/// What the operator should hear, in Barman's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryNotice {
    /// `Starting local restore for server pg using backup <ID>` + `Destination directory: …`.
    Starting {
        /// The server.
        server: String,
        /// The backup.
        id: BackupId,
        /// The destination.
        destination: PathBuf,
    },
    /// `Doing PITR. Recovery target …`.
    Pitr(String),
    /// `Copying the base backup.`
    CopyingBase,
    /// `\t<oid>, <name>, <location>`.
    Tablespace {
        /// OID.
        oid: u32,
        /// Name.
        name: String,
        /// New location.
        location: PathBuf,
    },
    /// `Copying required WAL segments.`
    CopyingWal,
    /// The receiver's partial segment was supplied as the last WAL.
    PartialWal(String),
    /// `Generating recovery configuration`
    GeneratingConfig,
    /// `Identify dangerous settings in destination directory.`
    IdentifyDangerous,
}

/// The result of a recovery.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryReport {
    /// Settings changed to prevent data loss.
    pub changes: Vec<ConfLine>,
    /// Settings to review.
    pub warnings: Vec<ConfLine>,
    /// Configuration files that were not in the backup.
    pub missing_files: Vec<String>,
    /// WAL files copied.
    pub wal_files: usize,
    /// Seconds it took.
    pub elapsed: f64,
}

/// Recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Catalog trouble (unknown backup, unreadable backup.info, lock).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A file operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An archive of a compressed backup could not be unpacked.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The backup cannot be recovered.
    #[error("cannot recover from backup {id} of server {server} (status: {status})")]
    NotDone {
        /// The backup.
        id: BackupId,
        /// The server.
        server: String,
        /// Its status.
        status: BackupStatus,
    },
    /// The request does not make sense.
    #[error("{0}")]
    Invalid(String),
    /// A WAL file needed is missing or unusable.
    #[error("WAL file {name}: {why}")]
    Wal {
        /// The file.
        name: String,
        /// What is wrong.
        why: String,
    },
}

/// Restores the backup as requested.
pub fn recover(req: &RecoveryRequest, notify: &mut dyn FnMut(RecoveryNotice)) -> Result<RecoveryReport, RecoveryError> {
    let started = Instant::now();
    let catalog = &req.catalog;
    let info = BackupInfo::read(catalog, req.backup_id)?;
    if info.status != BackupStatus::Done {
        return Err(RecoveryError::NotDone { id: info.backup_id, server: catalog.server_name().into(), status: info.status });
    }
    check_destination(&req.destination)?;
    check_target(&info, &req.target)?;
    notify(RecoveryNotice::Starting { server: catalog.server_name().into(), id: info.backup_id, destination: req.destination.clone() });
    if let Some(what) = describe_target(&req.target) {
        notify(RecoveryNotice::Pitr(what));
    }
    let dest = &req.destination;

    // 2. The base backup and its tablespaces.
    notify(RecoveryNotice::CopyingBase);
    let data = catalog.backup_data_dir(info.backup_id);
    let id = info.backup_id;
    let archived = match info.compression.as_deref() {
        None | Some("None") => None,
        Some(name) => Some(ArchiveCompression::from_name(name).ok_or_else(|| {
            RecoveryError::Invalid(format!("backup {id} has compression {name:?}, which barman-rs cannot restore"))
        })?),
    };
    let locations: Vec<(&crate::catalog::Tablespace, PathBuf)> = info
        .tablespaces
        .iter()
        .flatten()
        .map(|ts| (ts, req.tablespaces.get(&ts.name).cloned().unwrap_or_else(|| PathBuf::from(&ts.location))))
        .collect();
    match archived {
        None => {
            copy::copy_tree(&data, dest, req.jobs, &|rel| {
                rel.starts_with("pg_tblspc") && rel != Path::new("pg_tblspc") || rel == Path::new("backup_manifest")
            })?;
        }
        Some(algorithm) => unpack_archives(&data, algorithm, dest, &locations, req.jobs)?,
    }
    if data.join("backup_manifest").exists() {
        copy::copy_file(&data.join("backup_manifest"), &dest.join(format!("backup_manifest.{id}")))?;
    }
    for (ts, location) in &locations {
        let location = location.clone();
        notify(RecoveryNotice::Tablespace { oid: ts.oid, name: ts.name.clone(), location: location.clone() });
        if archived.is_none() {
            copy::copy_tree(&catalog.backup_dir(id).join(ts.oid.to_string()), &location, req.jobs, &|_| false)?;
        }
        let link = dest.join("pg_tblspc").join(ts.oid.to_string());
        std::fs::create_dir_all(dest.join("pg_tblspc")).map_err(|e| StorageError::io(StorageOp::CreateDir, dest.join("pg_tblspc"), e))?;
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&location, &link).map_err(|e| StorageError::io(StorageOp::Create, &link, e))?;
    }
    fsync_dir(&dest.join("pg_tblspc")).or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) })?;

    // 3. WAL.
    notify(RecoveryNotice::CopyingWal);
    let wal_dest = if req.standby_mode { dest.join("pg_wal") } else { dest.join("barman_wal") };
    std::fs::create_dir_all(wal_dest.join("archive_status")).map_err(|e| StorageError::io(StorageOp::CreateDir, &wal_dest, e))?;
    let mut wal_files = 0;
    let wals = required_wal(catalog, &info, &req.target)?;
    let last_archived = wals.iter().filter_map(|e| e.name.segment()).max_by_key(|s| (s.timeline(), s.log(), s.seg()));
    for entry in &wals {
        restore_wal_file(catalog, &req.compression, entry, &wal_dest.join(entry.name.to_string()))?;
        wal_files += 1;
    }
    if req.partial_wal && !req.target.immediate {
        if let Some(name) = supply_partial(catalog, &info, last_archived, &wal_dest)? {
            notify(RecoveryNotice::PartialWal(name));
            wal_files += 1;
        }
    }
    fsync_dir(&wal_dest)?;

    // 4. Configuration.
    notify(RecoveryNotice::GeneratingConfig);
    let mut settings: Vec<(String, String)> = Vec::new();
    if !req.standby_mode || wal_files > 0 {
        settings.push(("restore_command".into(), format!("cp {}/%f %p", wal_dest.display())));
    }
    if !req.standby_mode {
        settings.push(("recovery_end_command".into(), format!("rm -fr {}", wal_dest.display())));
    }
    let t = &req.target;
    if let Some(v) = &t.time {
        settings.push(("recovery_target_time".into(), v.clone()));
    }
    if let Some(v) = &t.xid {
        settings.push(("recovery_target_xid".into(), v.clone()));
    }
    if let Some(v) = &t.lsn {
        settings.push(("recovery_target_lsn".into(), v.clone()));
    }
    if let Some(v) = &t.name {
        settings.push(("recovery_target_name".into(), v.clone()));
    }
    if t.immediate {
        settings.push(("recovery_target".into(), "immediate".into()));
    }
    if t.exclusive {
        settings.push(("recovery_target_inclusive".into(), "false".into()));
    }
    match t.timeline {
        Some(TargetTimeline::Id(n)) => settings.push(("recovery_target_timeline".into(), n.to_string())),
        Some(TargetTimeline::Current) => settings.push(("recovery_target_timeline".into(), "current".into())),
        Some(TargetTimeline::Latest) => settings.push(("recovery_target_timeline".into(), "latest".into())),
        None => {}
    }
    if let Some(a) = &t.action {
        settings.push(("recovery_target_action".into(), a.clone()));
    }
    notify(RecoveryNotice::IdentifyDangerous);
    let (report, missing_files) = pgconf::secure_configuration(dest)?;
    pgconf::append_recovery_settings(dest, &settings)?;
    let signal = if req.standby_mode { "standby.signal" } else { "recovery.signal" };
    atomic_write(&dest.join(signal), b"", 0o644)?;
    atomic_write(&dest.join(".barman-recover.info"), &info.to_bytes()?, FILE_MODE)?;
    fsync_dir(dest)?;
    Ok(RecoveryReport {
        changes: report.changes,
        warnings: report.warnings,
        missing_files,
        wal_files,
        elapsed: started.elapsed().as_secs_f64(),
    })
}

/// Unpacks a tar-format backup: every archive on its own thread, at most `jobs` at once
/// (the base archive, usually the biggest, first). Stops at the first failure.
fn unpack_archives(
    data: &Path,
    algorithm: ArchiveCompression,
    dest: &Path,
    locations: &[(&crate::catalog::Tablespace, PathBuf)],
    jobs: usize,
) -> Result<(), RecoveryError> {
    // (archive, where it goes, members left out)
    let mut work: Vec<(PathBuf, PathBuf, &[&str])> =
        vec![(data.join(algorithm.archive_file("base.tar")), dest.to_owned(), &["recovery.conf", "tablespace_map"])];
    for (ts, location) in locations {
        work.push((data.join(algorithm.archive_file(&format!("{}.tar", ts.oid))), location.clone(), &[]));
    }
    for (archive, _, _) in &work {
        if !archive.exists() {
            return Err(RecoveryError::Invalid(format!("the backup has no archive {}", archive.display())));
        }
    }
    // The base archive holds no links (tablespace_map replaces them); should one come, it may
    // only be a tablespace's and point where that tablespace is restored.
    let links: std::collections::BTreeMap<String, PathBuf> =
        locations.iter().map(|(ts, l)| (ts.oid.to_string(), l.clone())).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failure: std::sync::Mutex<Option<RecoveryError>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, work.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((archive, target, exclude)) = work.get(i) else { break };
                if failure.lock().expect("no panics while held").is_some() {
                    break;
                }
                if let Err(e) = extract_archive(archive, algorithm, target, links.clone(), exclude) {
                    failure.lock().expect("no panics while held").get_or_insert(e.into());
                    break;
                }
            });
        }
    });
    match failure.into_inner().expect("threads joined") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The destination must be absent or empty: restoring over files would mix two clusters
/// (Barman overwrites; barman-rs refuses, and says why — a running server's directory
/// especially).
fn check_destination(dest: &Path) -> Result<(), RecoveryError> {
    let mut entries = match std::fs::read_dir(dest) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io(StorageOp::Read, dest, e).into()),
    };
    if entries.next().is_none() {
        return Ok(());
    }
    if dest.join("postmaster.pid").exists() {
        return Err(RecoveryError::Invalid(format!(
            "destination directory {} holds a running PostgreSQL (postmaster.pid); stop it and empty the directory first",
            dest.display()
        )));
    }
    Err(RecoveryError::Invalid(format!(
        "destination directory {} is not empty; recover into a new or empty directory",
        dest.display()
    )))
}

/// A target the backup cannot reach: a time before the backup ended (Barman's message), an
/// LSN before its end.
fn check_target(info: &BackupInfo, target: &RecoveryTarget) -> Result<(), RecoveryError> {
    if let (Some(time), Some(end)) = (target.time.as_deref(), info.end_time) {
        let end_epoch = end.to_offset_datetime().map(|t| t.unix_timestamp() as f64);
        if let (Some(t), Some(e)) = (parse_target_epoch(time), end_epoch) {
            if t < e.floor() {
                return Err(RecoveryError::Invalid(format!(
                    "The requested target time {time} is before the backup end time {end}"
                )));
            }
        }
    }
    if let (Some(lsn), Some(end)) = (target.lsn.as_deref(), info.end_xlog) {
        if let Ok(l) = lsn.parse::<barman_replication::Lsn>() {
            if l < end {
                return Err(RecoveryError::Invalid(format!(
                    "The requested target LSN {lsn} is before the backup end LSN {end}"
                )));
            }
        }
    }
    Ok(())
}

fn describe_target(t: &RecoveryTarget) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(v) = &t.time {
        parts.push(format!("Recovery target time: '{v}'"));
    }
    if let Some(v) = &t.xid {
        parts.push(format!("Recovery target xid: '{v}'"));
    }
    if let Some(v) = &t.lsn {
        parts.push(format!("Recovery target LSN: '{v}'"));
    }
    if let Some(v) = &t.name {
        parts.push(format!("Recovery target name: '{v}'"));
    }
    if t.immediate {
        parts.push("Recovery target: 'immediate'".into());
    }
    (!parts.is_empty()).then(|| format!("Doing PITR. {}", parts.join(", ")))
}

/// The WAL to copy, as Barman's `get_required_xlog_files`: every `.history` file; segments
/// from the backup's `begin_wal` on, on timelines up to the target one; with a target time,
/// up to the first segment archived after it.
fn required_wal(catalog: &ServerCatalog, info: &BackupInfo, target: &RecoveryTarget) -> Result<Vec<XlogDbEntry>, RecoveryError> {
    let begin = info.begin_wal.ok_or_else(|| RecoveryError::Invalid(format!("backup {} has no begin_wal", info.backup_id)))?;
    let end = info.end_wal.ok_or_else(|| RecoveryError::Invalid(format!("backup {} has no end_wal", info.backup_id)))?;
    let lock = catalog.lock(LockKind::ServerXlogDb)?;
    let entries = xlogdb::read_if_exists(&catalog.xlogdb_path(), &lock)?.unwrap_or_default();
    drop(lock);
    let max_tli = entries.iter().map(|e| e.name.timeline().0).max().unwrap_or(1);
    let target_tli = match target.timeline {
        Some(TargetTimeline::Id(n)) => n,
        Some(TargetTimeline::Current) => end.timeline().0,
        Some(TargetTimeline::Latest) | None => max_tli.max(end.timeline().0),
    };
    // A history file tells which older timelines lead to the target one.
    let history = entries
        .iter()
        .find(|e| matches!(e.name, WalFileName::History(t) if t.0 == target_tli))
        .map(|e| std::fs::read(catalog.wal_path(&e.name)).map_err(|err| StorageError::io(StorageOp::Read, catalog.wal_path(&e.name), err)))
        .transpose()?
        .and_then(|bytes| TimelineHistory::parse(barman_replication::TimelineId(target_tli), &bytes).ok());
    let target_time = target.time.as_deref().and_then(parse_target_epoch);
    let mut out = Vec::new();
    for e in entries {
        match e.name {
            WalFileName::History(_) => out.push(e),
            WalFileName::Segment(s) => {
                if (s.log(), s.seg()) < (begin.log(), begin.seg()) || s.timeline().0 > target_tli {
                    continue;
                }
                if let Some(h) = &history {
                    if s.timeline().0 != target_tli && !h.contains(s.timeline()) {
                        continue;
                    }
                }
                let past_target = target_time.is_some_and(|t| e.time > t) && (s.log(), s.seg()) > (end.log(), end.seg());
                out.push(e);
                if past_target {
                    break;
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Seconds since the epoch of a `--target-time` such as `2026-11-25 12:36:30+00:00`, when it
/// carries an offset; other forms leave the WAL selection unlimited (and correct).
fn parse_target_epoch(s: &str) -> Option<f64> {
    let ts: crate::catalog::BarmanTimestamp = s.parse().ok()?;
    ts.to_offset_datetime().map(|t| t.unix_timestamp() as f64)
}

/// Copies one archived WAL file, decompressed, to `dest` (fsynced; the directory is fsynced
/// once all are copied).
fn restore_wal_file(
    catalog: &ServerCatalog,
    compression: &WalCompression,
    entry: &XlogDbEntry,
    dest: &Path,
) -> Result<(), RecoveryError> {
    let src = catalog.wal_path(&entry.name);
    let wal_err = |why: String| RecoveryError::Wal { name: entry.name.to_string(), why };
    let algorithm: Compression = match entry.compression.as_deref() {
        None | Some("None") => {
            copy::copy_file(&src, dest)?;
            return Ok(());
        }
        Some(name) => name.parse().map_err(|_| wal_err(format!("xlog.db names an unknown compression {name:?}")))?,
    };
    let input = std::fs::File::open(&src).map_err(|e| StorageError::io(StorageOp::Open, &src, e))?;
    let mut decoded = compression
        .decoder(Some(algorithm), input)
        .map_err(|e| wal_err(format!("cannot decompress {} ({algorithm}): {e}", src.display())))?;
    let mut out = crate::storage::AtomicFile::create(dest, FILE_MODE)?;
    std::io::copy(&mut decoded, &mut out).map_err(|e| wal_err(format!("cannot decompress {} ({algorithm}): {e}", src.display())))?;
    out.commit()?;
    Ok(())
}

/// The receiver's `.partial` for the segment right after the last archived one, on the same
/// timeline, copied as a complete segment name: PostgreSQL replays it up to its last valid
/// record. Returns its name when supplied.
fn supply_partial(
    catalog: &ServerCatalog,
    info: &BackupInfo,
    last_archived: Option<WalSegmentName>,
    wal_dest: &Path,
) -> Result<Option<String>, RecoveryError> {
    let size = info.xlog_segment_size.unwrap_or(crate::wal::WalSegmentSize::DEFAULT);
    let Ok(entries) = std::fs::read_dir(catalog.streaming_directory()) else { return Ok(None) };
    let mut best: Option<WalSegmentName> = None;
    for e in entries.flatten() {
        if let Some(Ok(WalFileName::Partial(s))) = e.file_name().to_str().map(str::parse::<WalFileName>) {
            if best.is_none_or(|b| (s.log(), s.seg(), s.timeline()) > (b.log(), b.seg(), b.timeline())) {
                best = Some(s);
            }
        }
    }
    let Some(partial) = best else { return Ok(None) };
    let follows = match last_archived {
        Some(last) => last.next(size).is_some_and(|n| n == partial),
        None => info.begin_wal == Some(partial),
    };
    if !follows {
        return Ok(None);
    }
    let src = catalog.streaming_directory().join(format!("{partial}.partial"));
    copy::copy_file(&src, &wal_dest.join(partial.to_string()))?;
    Ok(Some(partial.to_string()))
}
