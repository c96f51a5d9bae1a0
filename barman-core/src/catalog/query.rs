//! Questions asked of a server's catalog by the reading commands (`list-backups`,
//! `show-backup`, `list-files`, `check`, `status`) and the one command that rebuilds an index
//! (`rebuild-xlogdb`), answered as Barman 3.x answers them.
//!
//! * [`BackupCatalog`] — every backup.info of a server, sorted by ID, with Barman's
//!   neighbours ([`BackupCatalog::previous`] / [`BackupCatalog::next`] skip backups whose copy
//!   is not done), shortcut resolution and keep annotations.
//! * [`WalStats`] — what xlog.db says about the WAL of one backup (`Server.get_wal_info`):
//!   the WAL it needs, the WAL archived until the next backup, rates and compression ratios.
//! * [`BackupCatalog::retention_report`] — the retention column, reading the facts
//!   `crate::retention::policy::report` decides on (keep annotations included).
//! * [`BackupDetails`] — everything `show-backup` prints (`Server.get_backup_ext_info`).
//! * [`BackupCatalog::directory_entries`] — `list-files` (`get_directory_entries`).
//! * [`rebuild_xlogdb`] — xlog.db from the contents of `wals/`.
//!
//! Nothing here prints: rendering is `crate::output::catalog`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use barman_replication::{Lsn, TimelineId};
use time::OffsetDateTime;

use super::backup_id::{BackupId, BackupSelector, BackupStatus};
use super::backup_info::BackupInfo;
use super::layout::ServerCatalog;
use super::lock::LockKind;
use super::timestamp::BarmanTimestamp;
use super::xlogdb::{self, XlogDbEntry};
use super::CatalogError;
use crate::compression::{CompressionError, WalCompression};
pub use crate::retention::{KeepTarget, RetentionStatus};
use crate::retention::{annotations, policy, BackupFacts};
use crate::config::{RetentionPolicy, ServerConfig};
use crate::storage::{self, create_dir_all_durable, StorageError, StorageOp, DIR_MODE};
use crate::wal::history::{HistoryError, TimelineHistory};
use crate::wal::{WalFileName, WalSegmentName, WalSegmentSize};

/// Why a catalog question could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The catalog files themselves.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A filesystem operation.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A compressed `.history` file could not be read back.
    #[error("{}: {source}", path.display())]
    Decompress {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CompressionError,
    },
    /// A `.history` file that is not a timeline history.
    #[error("{}: {source}", path.display())]
    History {
        /// The file.
        path: PathBuf,
        /// Why.
        source: HistoryError,
    },
    /// A backup without the WAL names every done backup has (a hand-edited backup.info).
    #[error("backup {id}: {field} is not set")]
    MissingField {
        /// The backup.
        id: BackupId,
        /// The backup.info key.
        field: &'static str,
    },
}

/// Barman's `backup_type` label: `snapshot` / `rsync` by `mode` prefix, else `incremental`
/// when the backup has a parent, else `full`.
pub fn backup_type(info: &BackupInfo) -> &'static str {
    let mode = info.mode.as_deref().unwrap_or("");
    if mode.starts_with("snapshot") {
        "snapshot"
    } else if mode.starts_with("rsync") {
        "rsync"
    } else if info.parent_backup_id.is_some() {
        "incremental"
    } else {
        "full"
    }
}

/// The segments from `begin_wal` to `end_wal` a backup needs to be consistent (Barman's
/// `generate_segment_names`, which skips segment `FF` of each log before PostgreSQL 9.3).
pub fn required_wal_segments(info: &BackupInfo) -> Vec<WalSegmentName> {
    let (Some(begin), Some(end)) = (info.begin_wal, info.end_wal) else { return Vec::new() };
    if begin.timeline() != end.timeline() {
        return Vec::new();
    }
    let size = info.xlog_segment_size.unwrap_or(WalSegmentSize::DEFAULT);
    let per_log = u64::from(u32::MAX) / size.bytes();
    let skip_last = info.version.is_some_and(|v| v < 90300);
    let (mut log, mut seg) = (u64::from(begin.log()), u64::from(begin.seg()));
    let (end_log, end_seg) = (u64::from(end.log()), u64::from(end.seg()));
    let mut out = Vec::new();
    while log < end_log || (log == end_log && seg <= end_seg) {
        let (Ok(l), Ok(s)) = (u32::try_from(log), u32::try_from(seg)) else { break };
        match WalSegmentName::new(begin.timeline(), l, s) {
            Ok(name) => out.push(name),
            Err(_) => break,
        }
        seg += 1;
        if seg > per_log || (skip_last && seg == per_log) {
            seg = 0;
            log += 1;
        }
    }
    out
}

/// What xlog.db says about the WAL of one backup (Barman's `get_wal_info`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WalStats {
    /// Segments from `begin_wal` to `end_wal` found in the archive.
    pub wal_num: u64,
    /// Their size on disk.
    pub wal_size: u64,
    /// Segments after `end_wal`, up to the next backup's `end_wal`.
    pub until_next_num: u64,
    /// Their size on disk.
    pub until_next_size: u64,
    /// `begin_wal`, when archived.
    pub first: Option<String>,
    /// The newest segment counted.
    pub last: Option<String>,
    /// Segments per second between the first and the last one's mtime (0 when unknown).
    pub wals_per_second: f64,
    /// `1 - wal_size / (wal_num × segment size)`.
    pub compression_ratio: f64,
    /// The same for the segments after the backup.
    pub until_next_compression_ratio: f64,
}

/// What `show-backup` prints about a backup whose copy is done.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyDoneDetails {
    /// The previous done backup, `None` when this is the oldest.
    pub previous: Option<BackupId>,
    /// The next done backup, `None` when this is the latest.
    pub next: Option<BackupId>,
    /// WAL statistics.
    pub wal: WalStats,
    /// `None` when no retention policy is enforced.
    pub retention: Option<RetentionStatus>,
    /// Timelines forked from this backup's timeline after its end.
    pub children_timelines: Vec<TimelineId>,
    /// `copy_stats['copy_time']` when positive.
    pub copy_time: Option<f64>,
    /// `copy_stats['analysis_time']` when at least one second.
    pub analysis_time: Option<f64>,
    /// `deduplicated_size / copy_time` when both are positive.
    pub estimated_throughput: Option<f64>,
    /// `copy_stats['number_of_workers']` when above 1 (and a throughput is known).
    pub number_of_workers: Option<f64>,
    /// The first backup of the incremental chain (itself for a full backup).
    pub root_backup_id: BackupId,
    /// How many backups the chain has up to this one.
    pub chain_size: usize,
    /// `1 - deduplicated_size / cluster_size` (or `size` for rsync backups).
    pub deduplication_ratio: f64,
    /// The bytes that ratio saved.
    pub est_dedup_size: f64,
}

/// Everything `show-backup` says about one backup (Barman's `get_backup_ext_info`).
#[derive(Debug, Clone, PartialEq)]
pub struct BackupDetails {
    /// The backup.info.
    pub info: BackupInfo,
    /// The configuration section name (what Barman prints when backup.info has none).
    pub server_name: String,
    /// Present for WAITING_FOR_WALS and DONE backups only, as in Barman.
    pub copy_done: Option<CopyDoneDetails>,
}

impl BackupDetails {
    /// `full`, `incremental`, `rsync` or `snapshot`.
    pub fn backup_type(&self) -> &'static str {
        backup_type(&self.info)
    }
}

/// One line of `list-backups`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupListing {
    /// The backup.info.
    pub info: BackupInfo,
    /// `size` plus the WAL the backup needs (done backups; else `size`).
    pub size_with_wals: u64,
    /// The WAL archived after the backup until the next one.
    pub wal_size: u64,
    /// A retention status other than VALID, when a policy is enforced.
    pub retention: Option<RetentionStatus>,
}

/// What `list-files --target` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilesTarget {
    /// The files of the backup directory.
    Data,
    /// `Data` plus the WAL segments the backup needs.
    Standalone,
    /// The WAL archived from the backup until the next one (and every `.history` file).
    Wal,
    /// `Data` plus `Wal`.
    Full,
}

impl std::str::FromStr for FilesTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "data" => Ok(FilesTarget::Data),
            "standalone" => Ok(FilesTarget::Standalone),
            "wal" => Ok(FilesTarget::Wal),
            "full" => Ok(FilesTarget::Full),
            other => Err(format!("invalid target {other:?} (data, standalone, wal, full)")),
        }
    }
}

/// Every backup of one server, sorted by ID, plus where the rest of its catalog lives.
#[derive(Debug, Clone)]
pub struct BackupCatalog {
    catalog: ServerCatalog,
    backups: Vec<BackupInfo>,
}

impl BackupCatalog {
    /// Reads every backup.info of `catalog` (both locations). A file that cannot be read is
    /// left out and returned as a problem, so one damaged backup does not hide the others.
    pub fn load(catalog: &ServerCatalog) -> Result<(Self, Vec<CatalogError>), CatalogError> {
        let mut backups = Vec::new();
        let mut problems = Vec::new();
        for id in catalog.backup_ids()? {
            match BackupInfo::read(catalog, id) {
                Ok(info) => backups.push(info),
                Err(e) => problems.push(e),
            }
        }
        Ok((BackupCatalog::from_backups(catalog.clone(), backups), problems))
    }

    /// A catalog over backups already read (tests, callers holding them).
    pub fn from_backups(catalog: ServerCatalog, mut backups: Vec<BackupInfo>) -> Self {
        backups.sort_by_key(|b| b.backup_id);
        BackupCatalog { catalog, backups }
    }

    /// The server's paths.
    pub fn server(&self) -> &ServerCatalog {
        &self.catalog
    }

    /// All backups, oldest first.
    pub fn backups(&self) -> &[BackupInfo] {
        &self.backups
    }

    /// The backup with this ID.
    pub fn get(&self, id: BackupId) -> Option<&BackupInfo> {
        self.backups.binary_search_by_key(&id, |b| b.backup_id).ok().map(|i| &self.backups[i])
    }

    /// The backup an ID, name or shortcut designates.
    pub fn resolve(&self, selector: &BackupSelector) -> Result<&BackupInfo, CatalogError> {
        let id = selector.resolve(&self.backups)?;
        self.get(id).ok_or_else(|| CatalogError::UnknownBackup { selector: selector.to_string() })
    }

    /// The newest backup older than `id` whose copy is done (Barman's `get_previous_backup`).
    pub fn previous(&self, id: BackupId) -> Option<&BackupInfo> {
        self.backups.iter().rev().filter(|b| b.backup_id < id).find(|b| b.status.is_copy_done())
    }

    /// The oldest backup newer than `id` whose copy is done (Barman's `get_next_backup`).
    pub fn next(&self, id: BackupId) -> Option<&BackupInfo> {
        self.backups.iter().filter(|b| b.backup_id > id).find(|b| b.status.is_copy_done())
    }

    /// The `keep` annotation of `id`: `meta/<ID>-keep`, or `base/<ID>/annotations/keep` where
    /// Barman < 3.13.3 kept it (read in place; see `retention::annotations`).
    pub fn keep_target(&self, id: BackupId) -> Result<Option<KeepTarget>, CatalogError> {
        Ok(annotations::keep_target(&self.catalog, id)?)
    }

    /// The retention status of every non-EMPTY backup under `policy` at `now`: the backups'
    /// facts and keep annotations read from disk, the rules applied by
    /// [`crate::retention::policy::report`].
    pub fn retention_report(
        &self,
        policy: RetentionPolicy,
        minimum_redundancy: u32,
        now: OffsetDateTime,
    ) -> Result<BTreeMap<BackupId, RetentionStatus>, CatalogError> {
        let mut facts = Vec::with_capacity(self.backups.len());
        for b in &self.backups {
            // Barman reads the annotation of DONE backups only; others cannot be kept.
            let keep = if b.status == BackupStatus::Done { self.keep_target(b.backup_id)? } else { None };
            facts.push(BackupFacts {
                id: b.backup_id,
                status: b.status,
                end_time: b.end_time.map(instant),
                parent: b.parent_backup_id,
                children: b.children_backup_ids.clone().unwrap_or_default(),
                keep,
            });
        }
        Ok(policy::report(&facts, policy, minimum_redundancy, now))
    }

    /// The retention report of `server`'s policy now; `None` when it has no (valid) policy,
    /// in which case Barman enforces none.
    pub fn retention_now(&self, server: &ServerConfig) -> Result<Option<BTreeMap<BackupId, RetentionStatus>>, CatalogError> {
        match server.retention_policy {
            Some(policy) => Ok(Some(self.retention_report(policy, server.minimum_redundancy, OffsetDateTime::now_utc())?)),
            None => Ok(None),
        }
    }

    /// xlog.db under its lock; when it does not exist it is rebuilt from `wals/` first, as
    /// Barman does on first access.
    pub fn read_xlogdb(&self, compression: &WalCompression) -> Result<Vec<XlogDbEntry>, QueryError> {
        let path = self.catalog.xlogdb_path();
        {
            let lock = self.catalog.lock(LockKind::ServerXlogDb)?;
            if let Some(entries) = xlogdb::read_if_exists(&path, &lock)? {
                return Ok(entries);
            }
        }
        rebuild_xlogdb(&self.catalog, compression)?;
        let lock = self.catalog.lock(LockKind::ServerXlogDb)?;
        Ok(xlogdb::read(&path, &lock)?)
    }

    /// The xlog.db entries from `backup`'s `begin_wal` up to the next done backup's `end_wal`,
    /// on the backup's timeline, segments only — plus every `.history` file when asked
    /// (Barman's `get_wal_until_next_backup`). Names compare as text, as in Barman.
    pub fn wal_until_next_backup<'a>(
        &self,
        backup: &BackupInfo,
        xlog: &'a [XlogDbEntry],
        include_history: bool,
    ) -> Vec<&'a XlogDbEntry> {
        let Some(begin) = backup.begin_wal else { return Vec::new() };
        let begin = begin.to_string();
        let next_end = self.next(backup.backup_id).and_then(|n| n.end_wal).map(|w| w.to_string());
        let tli = backup.begin_wal.map(|w| w.timeline()).unwrap_or(TimelineId(1));
        let mut out = Vec::new();
        for e in xlog {
            if matches!(e.name, WalFileName::History(_)) {
                if include_history {
                    out.push(e);
                }
                continue;
            }
            let name = e.name.to_string();
            if name < begin || e.name.timeline() > tli || !matches!(e.name, WalFileName::Segment(_)) {
                continue;
            }
            if next_end.as_ref().is_some_and(|end| name > *end) {
                break;
            }
            out.push(e);
        }
        out
    }

    /// WAL statistics of `backup` (Barman's `get_wal_info`).
    pub fn wal_stats(&self, backup: &BackupInfo, xlog: &[XlogDbEntry]) -> WalStats {
        let mut s = WalStats::default();
        let begin = backup.begin_wal.map(|w| w.to_string());
        let end = backup.end_wal.map(|w| w.to_string()).unwrap_or_default();
        let (mut first_time, mut last_time) = (None, None);
        for e in self.wal_until_next_backup(backup, xlog, false) {
            let name = e.name.to_string();
            if Some(&name) == begin.as_ref() {
                s.first = Some(name.clone());
                first_time = Some(e.time);
            }
            if name <= end {
                s.wal_num += 1;
                s.wal_size += e.size;
            } else {
                s.until_next_num += 1;
                s.until_next_size += e.size;
            }
            s.last = Some(name);
            last_time = Some(e.time);
        }
        if let (Some(_), Some(_), Some(first), Some(last)) = (&s.first, &s.last, first_time, last_time) {
            let seconds = last - first;
            if seconds > 0.0 {
                s.wals_per_second = (s.wal_num + s.until_next_num) as f64 / seconds;
            }
            let seg = backup.xlog_segment_size.map_or(WalSegmentSize::DEFAULT.bytes(), |z| z.bytes()) as f64;
            let ratio = |size: u64, num: u64| if num == 0 { 0.0 } else { 1.0 - size as f64 / (num as f64 * seg) };
            s.compression_ratio = ratio(s.wal_size, s.wal_num);
            s.until_next_compression_ratio = ratio(s.until_next_size, s.until_next_num);
        }
        s
    }

    /// The rows of `list-backups`, newest first (every status, as Barman lists them).
    pub fn listing(
        &self,
        xlog: &[XlogDbEntry],
        retention: Option<&BTreeMap<BackupId, RetentionStatus>>,
    ) -> Vec<BackupListing> {
        self.backups
            .iter()
            .rev()
            .map(|b| {
                let mut row = BackupListing {
                    info: b.clone(),
                    size_with_wals: b.size.unwrap_or(0),
                    wal_size: 0,
                    retention: None,
                };
                if b.status.is_copy_done() {
                    let stats = self.wal_stats(b, xlog);
                    row.size_with_wals += stats.wal_size;
                    row.wal_size = stats.until_next_size;
                    row.retention = retention
                        .and_then(|r| r.get(&b.backup_id).copied())
                        .filter(|s| *s != RetentionStatus::Valid);
                }
                row
            })
            .collect()
    }

    /// Timelines forked from `tli` at or after `forked_after`, from the `.history` files of
    /// the following timelines in `wals/` (Barman's `get_children_timelines`).
    pub fn children_timelines(
        &self,
        tli: TimelineId,
        forked_after: Option<Lsn>,
        compression: &WalCompression,
    ) -> Result<Vec<TimelineId>, QueryError> {
        let mut children = Vec::new();
        let mut child = tli.0;
        loop {
            child += 1;
            let path = self.catalog.wal_path(&WalFileName::History(TimelineId(child)));
            let Some(bytes) = storage::fs::read_if_exists(&path)? else { break };
            let text = decompress(&path, bytes, compression)?;
            let history = TimelineHistory::parse(TimelineId(child), &text)
                .map_err(|source| QueryError::History { path: path.clone(), source })?;
            for entry in history.entries() {
                if entry.parent != tli || forked_after.is_some_and(|after| entry.switchpoint < after) {
                    continue;
                }
                children.push(TimelineId(child));
            }
        }
        Ok(children)
    }

    /// The details `show-backup` prints for `id`.
    pub fn details(
        &self,
        id: BackupId,
        server_name: &str,
        xlog: &[XlogDbEntry],
        retention: Option<&BTreeMap<BackupId, RetentionStatus>>,
        compression: &WalCompression,
    ) -> Result<BackupDetails, QueryError> {
        let info = self.get(id).ok_or_else(|| CatalogError::UnknownBackup { selector: id.to_string() })?.clone();
        let mut details = BackupDetails { server_name: server_name.to_owned(), copy_done: None, info };
        if !details.info.status.is_copy_done() {
            return Ok(details);
        }
        let info = &details.info;
        let wal = self.wal_stats(info, xlog);
        let children_timelines = match info.timeline {
            Some(tli) => self.children_timelines(tli, info.end_xlog, compression)?,
            None => Vec::new(),
        };
        let copy_time = info.copy_stat("copy_time").filter(|t| *t > 0.0);
        let analysis_time = info.copy_stat("analysis_time").filter(|t| *t >= 1.0);
        let dedup = info.deduplicated_size.unwrap_or(0);
        let (mut estimated_throughput, mut number_of_workers) = (None, None);
        if let Some(ct) = copy_time {
            if dedup > 0 {
                estimated_throughput = Some(dedup as f64 / ct);
                number_of_workers = info.copy_stat("number_of_workers").filter(|n| *n > 1.0);
            }
        }
        let mut chain = vec![info.backup_id];
        let mut cursor = info.parent_backup_id;
        while let Some(parent) = cursor {
            if chain.contains(&parent) {
                break; // a loop in hand-edited files
            }
            chain.push(parent);
            cursor = self.get(parent).and_then(|p| p.parent_backup_id);
        }
        let base = if backup_type(info) == "rsync" { info.size } else { info.cluster_size };
        let deduplication_ratio = match (base, info.deduplicated_size) {
            (Some(size), Some(d)) if size > 0 && d > 0 => 1.0 - d as f64 / size as f64,
            _ => 0.0,
        };
        let est_dedup_size = info.cluster_size.filter(|c| *c > 0).or(info.size).unwrap_or(0) as f64 * deduplication_ratio;
        details.copy_done = Some(CopyDoneDetails {
            previous: self.previous(id).map(|b| b.backup_id),
            next: self.next(id).map(|b| b.backup_id),
            wal,
            retention: retention.map(|r| r.get(&id).copied().unwrap_or(RetentionStatus::None)),
            children_timelines,
            copy_time,
            analysis_time,
            estimated_throughput,
            number_of_workers,
            root_backup_id: *chain.last().expect("starts with the backup"),
            chain_size: chain.len(),
            deduplication_ratio,
            est_dedup_size,
        });
        Ok(details)
    }

    /// The paths `list-files` prints (Barman's `get_directory_entries`): the backup
    /// directory walked top-down — in each directory its files sorted, then its
    /// subdirectories in the order the filesystem lists them, as Python's `os.walk` does, so
    /// the output matches Barman's on the same machine — then WAL paths from xlog.db.
    pub fn directory_entries(
        &self,
        backup: &BackupInfo,
        target: FilesTarget,
        empty_dirs: bool,
        xlog: &[XlogDbEntry],
    ) -> Result<Vec<PathBuf>, QueryError> {
        let mut out = Vec::new();
        if matches!(target, FilesTarget::Data | FilesTarget::Standalone | FilesTarget::Full) {
            walk(&self.catalog.backup_dir(backup.backup_id), empty_dirs, &mut out)?;
        }
        if target == FilesTarget::Standalone {
            out.extend(
                required_wal_segments(backup).into_iter().map(|s| self.catalog.wal_path(&WalFileName::Segment(s))),
            );
        }
        if matches!(target, FilesTarget::Wal | FilesTarget::Full) {
            out.extend(self.wal_until_next_backup(backup, xlog, true).into_iter().map(|e| self.catalog.wal_path(&e.name)));
        }
        Ok(out)
    }
}

/// The instant of a backup.info time; a value without an offset is local time, as Barman
/// reads it.
pub fn instant(t: BarmanTimestamp) -> OffsetDateTime {
    match t.to_offset_datetime() {
        Some(i) => i,
        None => t.assume_offset(local_offset(t)),
    }
}

fn local_offset(t: BarmanTimestamp) -> time::UtcOffset {
    use chrono::{Offset as _, TimeZone as _};
    let d = t.datetime;
    let naive = chrono::NaiveDate::from_ymd_opt(d.year(), u32::from(u8::from(d.month())), u32::from(d.day()))
        .and_then(|day| day.and_hms_opt(u32::from(d.hour()), u32::from(d.minute()), u32::from(d.second())));
    let seconds = naive
        .and_then(|n| chrono::Local.from_local_datetime(&n).earliest())
        .map_or(0, |l| l.offset().fix().local_minus_utc());
    time::UtcOffset::from_whole_seconds(seconds).unwrap_or(time::UtcOffset::UTC)
}

/// `os.walk(top)` without following symlinks: yields `root/file` for the sorted files of each
/// directory, and the directory itself when it is empty and `empty_dirs` is set.
fn walk(top: &Path, empty_dirs: bool, out: &mut Vec<PathBuf>) -> Result<(), QueryError> {
    let entries = match fs::read_dir(top) {
        Ok(e) => e,
        // os.walk ignores directories it cannot list (the top one included).
        Err(_) => return Ok(()),
    };
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(StorageOp::Read, top, e))?;
        let path = entry.path();
        // Like os.scandir's is_dir(): symlinks are followed to classify, never to descend.
        let is_dir = fs::metadata(&path).map(|m| m.is_dir()).unwrap_or(false);
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if is_dir {
            dirs.push((path, is_link));
        } else {
            files.push(entry.file_name());
        }
    }
    files.sort();
    if empty_dirs && files.is_empty() && dirs.is_empty() {
        out.push(top.to_path_buf());
    }
    out.extend(files.into_iter().map(|f| top.join(f)));
    for (dir, is_link) in dirs {
        if !is_link {
            walk(&dir, empty_dirs, out)?;
        }
    }
    Ok(())
}

fn decompress(path: &Path, bytes: Vec<u8>, compression: &WalCompression) -> Result<Vec<u8>, QueryError> {
    let algorithm = compression.identify_archived(&bytes);
    if algorithm.is_none() {
        return Ok(bytes);
    }
    let err = |source| QueryError::Decompress { path: path.to_path_buf(), source };
    let mut reader = compression.decoder(algorithm, std::io::Cursor::new(bytes)).map_err(err)?;
    let mut text = Vec::new();
    reader
        .read_to_end(&mut text)
        .map_err(|e| StorageError::io(StorageOp::Read, path, e))?;
    Ok(text)
}

/// What `rebuild-xlogdb` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebuildCounts {
    /// `.history` files.
    pub history: usize,
    /// `.backup` files.
    pub backup_labels: usize,
    /// Complete WAL segments (`.partial` files are skipped, as Barman skips them).
    pub wal_files: usize,
}

/// Rebuilds xlog.db from the files in `wals/` (Barman's `rebuild_xlogdb`), under the xlog.db
/// lock, replacing the file atomically and durably.
///
/// Entries come sorted by name: `.history` files from `wals/` itself, segments and `.backup`
/// files from the `wals/<TLI+LOG>/` directories. Each line has the file's size on disk, its
/// mtime, and the compression its magic bytes tell. Anything else (temporary files,
/// `.partial` files, stray directories) is left out with a warning in the log, as Barman
/// does. Deliberate difference: encrypted WAL is not recognised (barman-rs does not encrypt),
/// so its encryption column stays `None`.
pub fn rebuild_xlogdb(catalog: &ServerCatalog, compression: &WalCompression) -> Result<RebuildCounts, QueryError> {
    let path = catalog.xlogdb_path();
    if let Some(dir) = path.parent() {
        create_dir_all_durable(dir, DIR_MODE)?;
    }
    let lock = catalog.lock(LockKind::ServerXlogDb)?;
    let xlogdb_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let root = catalog.wals_directory();
    let mut counts = RebuildCounts::default();
    let mut entries = Vec::new();
    for name in storage::fs::list_dir(root)? {
        let name_text = name.to_string_lossy().into_owned();
        if name_text.starts_with(&xlogdb_name) {
            continue;
        }
        let full = root.join(&name);
        if full.is_dir() {
            for wal in storage::fs::list_dir(&full)? {
                let file = full.join(&wal);
                let wal_text = wal.to_string_lossy();
                if file.is_dir() {
                    tracing::warn!(path = %file.display(), "unexpected directory rebuilding the wal database");
                    continue;
                }
                match wal_text.parse::<WalFileName>() {
                    Ok(n @ WalFileName::Segment(_)) => {
                        counts.wal_files += 1;
                        entries.push(file_entry(n, &file, compression)?);
                    }
                    Ok(n @ WalFileName::Backup { .. }) => {
                        counts.backup_labels += 1;
                        entries.push(file_entry(n, &file, compression)?);
                    }
                    _ if wal_text.ends_with(".tmp") => {
                        tracing::warn!(path = %file.display(), "temporary file found rebuilding the wal database");
                    }
                    _ => tracing::warn!(path = %file.display(), "unexpected file rebuilding the wal database"),
                }
            }
        } else {
            match name_text.parse::<WalFileName>() {
                Ok(n @ WalFileName::History(_)) => {
                    counts.history += 1;
                    entries.push(file_entry(n, &full, compression)?);
                }
                _ => tracing::warn!(path = %full.display(), "unexpected file rebuilding the wal database"),
            }
        }
    }
    xlogdb::rewrite(&path, &lock, &entries)?;
    drop(lock);
    // Barman < 3.13 called it xlog.db; a leftover would confuse the older tool.
    storage::fs::remove_file_if_exists(&catalog.wals_directory().join("xlog.db"))?;
    Ok(counts)
}

fn file_entry(name: WalFileName, path: &Path, compression: &WalCompression) -> Result<XlogDbEntry, QueryError> {
    let meta = fs::metadata(path).map_err(|e| StorageError::io(StorageOp::Metadata, path, e))?;
    let mtime = meta.modified().map_err(|e| StorageError::io(StorageOp::Metadata, path, e))?;
    let time = match mtime.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let mut head = vec![0u8; compression.magic_len()];
    let mut file = fs::File::open(path).map_err(|e| StorageError::io(StorageOp::Read, path, e))?;
    let mut filled = 0;
    while filled < head.len() {
        let n = file.read(&mut head[filled..]).map_err(|e| StorageError::io(StorageOp::Read, path, e))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    Ok(XlogDbEntry {
        name,
        size: meta.len(),
        time,
        compression: compression.identify_archived(&head).map(|c| c.to_string()),
        encryption: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/catalog")
    }

    #[test]
    fn rebuild_matches_barman_sample() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = ServerCatalog::new("pg", dir.path().join("pg"), dir.path());
        catalog.create_skeleton().unwrap();
        let sample = std::fs::read(testdata().join("pg-xlog.db.after-rebuild")).unwrap();
        let expected = xlogdb::parse(&sample).unwrap();
        for e in &expected {
            let path = catalog.wal_path(&e.name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let magic: &[u8] = match e.compression.as_deref() {
                Some("gzip") => b"\x1f\x8b\x08",
                Some("zstd") => b"(\xb5/\xfd",
                _ => b"",
            };
            let mut bytes = magic.to_vec();
            bytes.resize(e.size as usize, 0);
            std::fs::write(&path, bytes).unwrap();
        }
        // Left out, as Barman leaves them out.
        std::fs::write(catalog.wal_path(&"000000010000000000000010.partial".parse().unwrap()), b"").unwrap();
        std::fs::write(catalog.wals_directory().join("0000000100000000/x.tmp"), b"").unwrap();
        let counts = rebuild_xlogdb(&catalog, &WalCompression::none()).unwrap();
        // Sample 39-rebuild-xlogdb: "(history: 1, backup_labels: 4, wal_file: 10)".
        assert_eq!(counts, RebuildCounts { history: 1, backup_labels: 4, wal_files: 10 });
        let lock = catalog.lock(LockKind::ServerXlogDb).unwrap();
        let rebuilt = xlogdb::read(&catalog.xlogdb_path(), &lock).unwrap();
        let key = |e: &XlogDbEntry| (e.name.to_string(), e.size, e.compression.clone());
        assert_eq!(rebuilt.iter().map(key).collect::<Vec<_>>(), expected.iter().map(key).collect::<Vec<_>>());
    }

    #[test]
    fn required_segments_follow_barman() {
        let mut info = BackupInfo::new("20261125T123210".parse().unwrap());
        info.begin_wal = Some("0000000100000000000000FE".parse().unwrap());
        info.end_wal = Some("000000010000000100000001".parse().unwrap());
        let names = |info: &BackupInfo| required_wal_segments(info).iter().map(|s| s.to_string()[16..].to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&info), ["000000FE", "000000FF", "00000000", "00000001"]);
        info.version = Some(90205); // before 9.3 segment FF does not exist
        assert_eq!(names(&info), ["000000FE", "00000000", "00000001"]);
    }
}
