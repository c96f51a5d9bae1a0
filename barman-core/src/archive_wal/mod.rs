//! `barman archive-wal`: moves WAL from `streaming/` (the WAL receiver) and `incoming/`
//! (`archive_command`, `put-wal`) into the archive, as Barman's `WalArchiver.archive`
//! (`barman/wal_archiver.py`) does — with every segment validated first.
//!
//! # Use
//!
//! [`archive_wal`] with the server's [`ServerCatalog`] and [`ArchiverSettings`] (built by
//! [`ArchiverSettings::from_config`]) runs one archiving pass per enabled archiver, streaming
//! first, under the `.<server>-archive-wal.lock`. It calls `on_event` with an
//! [`ArchiveEvent`] for every line Barman prints ([`ArchiveEvent::console_line`] gives the
//! text) and returns an [`ArchiveReport`] of what happened to each file.
//!
//! Beside the archiver: [`waiting`] turns WAITING_FOR_WALS backups DONE (or FAILED) once
//! their WAL is archived ([`complete_waiting_backups`], [`check_backup`]), and [`switch`]
//! closes the server's segment and waits for it to be archived (`switch-wal --archive`).
//!
//! # One file's way into the archive (DESIGN.md §3)
//!
//! 1. Which files, in which order, and what stays behind for the WAL receiver: [`batch`]
//!    (Barman's rules exactly, batch sizes included).
//! 2. Same name already archived: both are decompressed and compared. Identical: the new copy
//!    is deleted (and an entry missing from xlog.db — a crash between the two steps below — is
//!    added). Different: moved to `errors/` as `duplicate`.
//! 3. The bytes are read once: checked ([`check`]: every page header and record CRC, the
//!    system identifier from `identity.json`) while being compressed with `compression` into
//!    a temporary file in `wals/<TLI+LOG>/` (`.history` files: `wals/`). A file that arrives
//!    already compressed (magic bytes, as Barman) is decompressed to be checked and stored as
//!    it is. Refused files go to `errors/<name>.<UTC stamp>.<reason>`; barman-rs adds two
//!    reasons to Barman's `duplicate` and `unknown`: `corrupt` (fails validation) and
//!    `foreign` (another system identifier). Barman's `check` counts both as "unknown failure".
//!    This step, the CPU-bound one, runs for several files at once (`stage`, one worker per
//!    CPU, [`ArchiverSettings::workers`]); everything after it happens one file at a time, in
//!    the batch's (WAL) order, exactly as when files are archived one after the other.
//!    A worker validates its segment alone, so the bytes at its start that finish a record
//!    begun in the previous segment are skipped there; it keeps them (`LeadingBytes`), and
//!    when the segment committed just before it in the batch is the directly preceding one on
//!    the same timeline, they are checked here against that segment's carry (the record's CRC
//!    across both); a failure refuses the segment as `corrupt`. For the first segment of a
//!    batch, the preceding segment is read back from the archive for its carry, when it is
//!    there. A record spanning three or more segments is thus checked as a whole, and a bad
//!    byte anywhere in it refuses the segment where it ends.
//! 4. Under the xlog.db lock: the temporary file is fsynced and renamed into place and the
//!    directory fsynced; only then is the xlog.db line appended (and fsynced).
//! 5. The source is removed and its directory fsynced. A crash anywhere leaves the source in
//!    place, and the next run finishes the job through step 2.
//!
//! The xlog.db line is Barman's: the name, the size on disk, the **source's** mtime (kept on
//! the archived file too, as Barman's `copystat`), and the compression (the configured name,
//! e.g. `pigz`, or the detected one for files that arrived compressed).
//!
//! # Not done here (yet)
//!
//! `pre/post_archive_script` and `..._retry_script` hooks, encryption (`encryption = gpg`),
//! and rebuilding a missing xlog.db before appending to it (Barman rebuilds it silently).

pub mod batch;
pub mod check;
mod stage;
#[cfg(test)]
mod tests;
pub mod switch;
pub mod waiting;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use barman_replication::{Lsn, SystemId};

use crate::catalog::{self, CatalogError, ErrorReason, LockKind, ServerCatalog, ServerIdentity, XlogDbEntry};
use crate::compression::{Compression, CompressionError, WalCompression};
use crate::config::ServerConfig;
use crate::hooks::{AbortStop, HookKind, HookSet};
use crate::storage::fs::read_full;
use crate::storage::{self, create_dir_all_durable, durable_rename, fsync_dir, AtomicFile, StorageError, StorageOp, DIR_MODE, FILE_MODE};
use crate::wal::validator::LeadingBytes;
use crate::wal::{Carry, WalFileName, WalSegmentName, WalSegmentSize};

pub use batch::{Batch, EntryKind};
use stage::{Prepared, Staged, Stager};
pub use check::{Checked, ContentCheck, Refusal};
pub use waiting::{check_backup, complete_waiting_backups, latest_archived_segments};

/// Read size while comparing duplicates.
const CHUNK: usize = 256 * 1024;

/// Where an archiver takes its files from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalSource {
    /// `streaming/`, filled by the WAL receiver (`streaming_archiver = on`).
    Streaming,
    /// `incoming/`, filled by `archive_command` / `put-wal` (`archiver = on`).
    FileArchival,
}

impl fmt::Display for WalSource {
    /// Barman's archiver names, as printed in the header line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WalSource::Streaming => "streaming",
            WalSource::FileArchival => "file archival",
        })
    }
}

/// What the archiver needs from the server's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiverSettings {
    /// The server's name (messages).
    pub server: String,
    /// `streaming_archiver`: archive from `streaming/`.
    pub streaming_archiver: bool,
    /// `archiver`: archive from `incoming/`.
    pub file_archiver: bool,
    /// `archiver_batch_size`; 0 = unlimited.
    pub archiver_batch_size: usize,
    /// `streaming_archiver_batch_size`; 0 = unlimited.
    pub streaming_archiver_batch_size: usize,
    /// `compression`, `compression_level`, `custom_*`.
    pub compression: WalCompression,
    /// The cluster's WAL segment size, when the caller knows it; otherwise each segment's own
    /// long page header says (and is checked against its length).
    pub segment_size: Option<WalSegmentSize>,
    /// Barman's `verbose`: print each archiver's header and `no file found` even when there is
    /// nothing to do (`archive-wal`); when false (`cron`, `check`) a header only precedes files.
    pub verbose: bool,
    /// The `pre`/`post` `archive_script` and `archive_retry_script` hooks, run around each
    /// file (see [`ArchiverSettings::with_hooks`]); `None`: no hooks.
    pub hooks: Option<HookSet>,
    /// How many files are checked and compressed at once (default: the CPUs available).
    /// Committing stays one file at a time, in WAL order; with hooks, files are archived one
    /// after the other.
    pub workers: usize,
}

impl ArchiverSettings {
    /// The settings of `cfg` (Barman has already forced `archiver = on` when both archivers are
    /// off; so has our configuration loader). Fails when the compression cannot be used.
    pub fn from_config(cfg: &ServerConfig) -> Result<Self, CompressionError> {
        let size = |n: i64| usize::try_from(n).unwrap_or(0);
        Ok(ArchiverSettings {
            server: cfg.name.clone(),
            streaming_archiver: cfg.streaming_archiver,
            file_archiver: cfg.archiver,
            archiver_batch_size: size(cfg.archiver_batch_size),
            streaming_archiver_batch_size: size(cfg.streaming_archiver_batch_size),
            compression: WalCompression::from_config(cfg)?,
            segment_size: None,
            verbose: true,
            hooks: None,
            workers: default_workers(),
        })
    }

    /// Runs `cfg`'s archive hooks around each file; `config_file` is the main configuration
    /// file (the hooks' `BARMAN_CONFIGURATION`).
    pub fn with_hooks(mut self, cfg: &ServerConfig, config_file: &Path) -> Self {
        self.hooks = HookSet::configured(cfg, config_file, HookKind::Archive);
        self
    }

    /// Settings for `server` with only the file archiver on, no compression, no batch limits.
    pub fn new(server: impl Into<String>) -> Self {
        ArchiverSettings {
            server: server.into(),
            streaming_archiver: false,
            file_archiver: true,
            archiver_batch_size: 0,
            streaming_archiver_batch_size: 0,
            compression: WalCompression::none(),
            segment_size: None,
            verbose: true,
            hooks: None,
            workers: default_workers(),
        }
    }
}

/// One worker per CPU available, at most 8: checking and compressing are CPU-bound, and more
/// would only add temporary files waiting for their turn.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Something Barman prints while archiving; [`console_line`](Self::console_line) is the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveEvent {
    /// An archiver pass begins: `Processing xlog segments from streaming for pg (batch size: 3)`.
    Header {
        /// The server.
        server: String,
        /// Which archiver.
        source: WalSource,
        /// Shown when files remain for a later pass (see [`Batch::shown_batch_size`]).
        batch_size: Option<usize>,
    },
    /// A file is being archived: `\t000000010000000000000003` (also for a dropped identical
    /// duplicate and for files then refused).
    File {
        /// Its name.
        name: String,
    },
    /// The pass found nothing to archive: `\tno file found`.
    NoFileFound,
    /// The file was already archived with other content and went to `errors/`.
    Duplicate {
        /// The server.
        server: String,
        /// The file.
        name: String,
    },
    /// barman-rs only: the file failed validation and went to `errors/`.
    Refused {
        /// The file.
        name: String,
        /// `corrupt` or `foreign`.
        reason: ErrorReason,
        /// What the validator found.
        detail: String,
    },
    /// Files that are not WAL were found; each follows as [`ArchiveEvent::Unknown`].
    UnknownFound {
        /// The server.
        server: String,
    },
    /// One such file, moved to `errors/` as `unknown`.
    Unknown {
        /// Its name.
        name: String,
    },
}

impl ArchiveEvent {
    /// The line Barman prints (`output.info`), without the newline.
    pub fn console_line(&self) -> String {
        match self {
            ArchiveEvent::Header { server, source, batch_size } => {
                let mut line = format!("Processing xlog segments from {source} for {server}");
                if let Some(n) = batch_size {
                    line.push_str(&format!(" (batch size: {n})"));
                }
                line
            }
            ArchiveEvent::File { name } | ArchiveEvent::Unknown { name } => format!("\t{name}"),
            ArchiveEvent::NoFileFound => "\tno file found".to_owned(),
            ArchiveEvent::Duplicate { server, name } => format!(
                "\tError: {name} is already present in server {server}. File moved to errors directory."
            ),
            ArchiveEvent::Refused { name, reason, detail } => {
                format!("\tError: {name} is not valid WAL ({reason}: {detail}). File moved to errors directory.")
            }
            ArchiveEvent::UnknownFound { server } => format!(
                "Some unknown objects have been found while processing xlog segments for {server}. \
                 Objects moved to errors directory:"
            ),
        }
    }
}

impl fmt::Display for ArchiveEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.console_line())
    }
}

/// A file that entered the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedWal {
    /// The line appended to xlog.db.
    pub entry: XlogDbEntry,
    /// Where it is stored.
    pub path: PathBuf,
    /// For segments and `.partial` files: where their WAL is valid up to.
    pub valid_up_to: Option<Lsn>,
    /// For a `.partial` file: what follows its valid WAL, if not zeroes.
    pub tail_problem: Option<String>,
}

/// A file moved to `errors/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedToErrors {
    /// Its name where it was found.
    pub name: String,
    /// The reason, last part of its new name.
    pub reason: ErrorReason,
    /// Why, for `corrupt` and `foreign`.
    pub detail: Option<String>,
    /// Its new path; `None` when it vanished before it could be moved.
    pub path: Option<PathBuf>,
}

/// What happened to one file of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum FileOutcome {
    /// Archived.
    Archived(ArchivedWal),
    /// The same content was already archived; the new copy was deleted.
    IdenticalDuplicate {
        /// The file.
        name: WalFileName,
        /// Whether xlog.db lacked the archived file's line and it was added.
        xlogdb_repaired: bool,
    },
    /// Moved to `errors/` (`duplicate`, `corrupt`, `foreign`).
    Refused(MovedToErrors),
    /// It disappeared before it could be read.
    Vanished {
        /// Its name.
        name: String,
    },
}

/// One archiver's pass.
#[derive(Debug, Clone, PartialEq)]
pub struct PassReport {
    /// Which archiver.
    pub source: WalSource,
    /// Entries found in its directory.
    pub total: usize,
    /// The files it took, in order, with their fate.
    pub outcomes: Vec<FileOutcome>,
    /// Files that were not WAL, moved to `errors/` as `unknown`.
    pub unknown: Vec<MovedToErrors>,
    /// Files left for the WAL receiver (streaming/ only).
    pub left_behind: Vec<String>,
}

/// Everything one [`archive_wal`] run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ArchiveReport {
    /// One pass per enabled archiver, streaming first.
    pub passes: Vec<PassReport>,
}

impl ArchiveReport {
    /// Every file archived, in order.
    pub fn archived(&self) -> impl Iterator<Item = &ArchivedWal> {
        self.passes.iter().flat_map(|p| &p.outcomes).filter_map(|o| match o {
            FileOutcome::Archived(a) => Some(a),
            _ => None,
        })
    }

    /// Every file moved to `errors/`, unknown ones included.
    pub fn moved_to_errors(&self) -> impl Iterator<Item = &MovedToErrors> {
        self.passes.iter().flat_map(|p| {
            p.outcomes
                .iter()
                .filter_map(|o| match o {
                    FileOutcome::Refused(m) => Some(m),
                    _ => None,
                })
                .chain(&p.unknown)
        })
    }
}

/// Why archiving stopped. Files already archived stay archived; the file being handled stays
/// where it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// Another `archive-wal` holds the lock. Barman prints this as information and carries on
    /// (exit 0).
    #[error("Another archive-wal process is already running on server {server}. Skipping to the next server")]
    AlreadyRunning {
        /// The server.
        server: String,
        /// The holder, if known.
        pid: Option<u32>,
    },
    /// The catalog (identity.json, xlog.db, locks) failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A file operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A `pre_archive_retry_script` returned 63: archiving stops, the file stays where it is.
    #[error("archiving of {name} stopped: {abort}")]
    HookAbort {
        /// The file that was not archived.
        name: String,
        /// The hook.
        abort: AbortStop,
    },
    /// Compressing into, or decompressing, `path` failed for a reason other than its content.
    #[error("{}", path.display())]
    Compression {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: CompressionError,
    },
}

/// Archives what `streaming/` and `incoming/` hold, as `barman archive-wal SERVER`. See the
/// [module documentation](self).
pub fn archive_wal(
    catalog: &ServerCatalog,
    settings: &ArchiverSettings,
    on_event: &mut dyn FnMut(&ArchiveEvent),
) -> Result<ArchiveReport, ArchiveError> {
    let _lock = match catalog.lock(LockKind::ServerArchiveWal) {
        Ok(lock) => lock,
        Err(CatalogError::LockBusy { pid, .. }) => {
            return Err(ArchiveError::AlreadyRunning { server: settings.server.clone(), pid })
        }
        Err(e) => return Err(e.into()),
    };
    let system_id = ServerIdentity::read(&catalog.identity_path())?.map(|i| i.systemid);
    let stager = Stager { catalog, settings, system_id, mkdir: std::sync::Mutex::new(()) };
    let mut run = Run { catalog, settings, system_id, indexed: None, previous: None, on_event };
    let mut report = ArchiveReport::default();
    if settings.streaming_archiver {
        report.passes.push(run.pass(&stager, WalSource::Streaming)?);
    }
    if settings.file_archiver {
        report.passes.push(run.pass(&stager, WalSource::FileArchival)?);
    }
    Ok(report)
}

/// How many archived segments, at most, are read back to check the first segment of a batch
/// ([`Run::archived_carry`]): records crossing more than that are checked from where it starts.
const ARCHIVED_CHAIN: usize = 4;

struct Run<'a> {
    catalog: &'a ServerCatalog,
    settings: &'a ArchiverSettings,
    /// The server's, from identity.json, if known.
    system_id: Option<SystemId>,
    /// Names in xlog.db, loaded the first time a duplicate needs them.
    indexed: Option<std::collections::HashSet<WalFileName>>,
    /// The segment just archived in this batch and its carry, if it holds WAL to its end: the
    /// next segment, if it directly follows on the same timeline, finishes the record it
    /// leaves open (see [`Run::continues`]).
    previous: Option<(WalSegmentName, Carry)>,
    on_event: &'a mut dyn FnMut(&ArchiveEvent),
}

fn lossy(name: &OsStr) -> String {
    name.to_string_lossy().into_owned()
}

fn entry_kind(path: &Path) -> EntryKind {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => EntryKind::File,
        Ok(_) => EntryKind::NotAFile,
        Err(e) if e.kind() == io::ErrorKind::NotFound => EntryKind::Vanished,
        Err(_) => EntryKind::NotAFile,
    }
}

impl Run<'_> {
    fn emit(&mut self, event: ArchiveEvent) {
        (self.on_event)(&event);
    }

    fn pass(&mut self, stager: &Stager<'_>, source: WalSource) -> Result<PassReport, ArchiveError> {
        let (dir, batch_size) = match source {
            WalSource::Streaming => (self.catalog.streaming_directory(), self.settings.streaming_archiver_batch_size),
            WalSource::FileArchival => (self.catalog.incoming_directory(), self.settings.archiver_batch_size),
        };
        let dir = dir.to_path_buf();
        self.previous = None;
        let names = storage::fs::list_dir(&dir)?;
        let batch = batch::plan(source, &names, batch_size, |n| entry_kind(&dir.join(n)));
        tracing::info!(
            server = %self.settings.server, %source, found = batch.total, archiving = batch.run_size(),
            "archiving WAL"
        );
        let header = ArchiveEvent::Header {
            server: self.settings.server.clone(),
            source,
            batch_size: batch.shown_batch_size(),
        };
        if self.settings.verbose {
            self.emit(header.clone());
        }
        let mut report = PassReport {
            source,
            total: batch.total,
            outcomes: Vec::new(),
            unknown: Vec::new(),
            left_behind: batch.left_behind.iter().map(|n| lossy(n)).collect(),
        };
        if self.settings.hooks.is_some() {
            // Each file between its own hooks: one after the other.
            for (i, (file_name, wal)) in batch.files.iter().enumerate() {
                if i == 0 && !self.settings.verbose {
                    self.emit(header.clone());
                }
                self.emit(ArchiveEvent::File { name: lossy(file_name) });
                let outcome = self.archive_one(stager, source, &dir, file_name, *wal)?;
                report.outcomes.push(outcome);
            }
        } else {
            // Checked and compressed ahead on `workers` threads; committed here, in order.
            let prepare = |(file_name, wal): &(OsString, WalFileName)| stager.prepare(source, &dir.join(file_name), *wal);
            stage::in_order(self.settings.workers, &batch.files, prepare, |i, prepared| {
                let (file_name, wal) = &batch.files[i];
                if i == 0 && !self.settings.verbose {
                    self.emit(header.clone());
                }
                self.emit(ArchiveEvent::File { name: lossy(file_name) });
                let outcome = self.finish(&dir.join(file_name), file_name, *wal, prepared)?;
                report.outcomes.push(outcome);
                Ok::<(), ArchiveError>(())
            })?;
        }
        if batch.files.is_empty() && self.settings.verbose {
            self.emit(ArchiveEvent::NoFileFound);
        }
        if !batch.unknown.is_empty() {
            self.emit(ArchiveEvent::UnknownFound { server: self.settings.server.clone() });
            for name in &batch.unknown {
                self.emit(ArchiveEvent::Unknown { name: lossy(name) });
                tracing::warn!(server = %self.settings.server, %source, file = %lossy(name), "moving a file that is not WAL to errors/");
                let moved = self.move_to_errors(&dir.join(name), name, ErrorReason::Unknown, None)?;
                report.unknown.push(moved);
            }
        }
        Ok(report)
    }

    /// [`Run::archive_file`] between the archive hooks, as Barman's `archive_wal`: pre
    /// script, pre retry script (63 stops archiving), the file, post retry script (63
    /// ignored: it is after the fact), post script.
    fn archive_one(
        &mut self,
        stager: &Stager<'_>,
        source: WalSource,
        dir: &Path,
        file_name: &OsStr,
        wal: WalFileName,
    ) -> Result<FileOutcome, ArchiveError> {
        let Some(hooks) = self.settings.hooks.clone() else { return self.archive_file(stager, source, dir, file_name, wal) };
        let src = dir.join(file_name);
        let Ok(meta) = std::fs::metadata(&src) else { return self.archive_file(stager, source, dir, file_name, wal) };
        let mtime = meta.modified().map(epoch_seconds).unwrap_or(0.0);
        let arrived_as = match source {
            WalSource::Streaming => None,
            WalSource::FileArchival => {
                self.settings.compression.identify(&read_prefix(&src, self.settings.compression.magic_len())?)
            }
        };
        let before =
            XlogDbEntry { name: wal, size: meta.len(), time: mtime, compression: arrived_as.map(|c| c.to_string()), encryption: None };
        if let Err(abort) = hooks.run_pre(&|h| h.env_from_wal(&before, &src, None)) {
            return Err(ArchiveError::HookAbort { name: lossy(file_name), abort });
        }
        let outcome = self.archive_file(stager, source, dir, file_name, wal);
        let dst = self.catalog.wal_path(&wal);
        let (after, error) = match &outcome {
            Ok(FileOutcome::Archived(a)) => (a.entry.clone(), None),
            Ok(FileOutcome::Refused(m)) => (before.clone(), Some(m.detail.clone().unwrap_or_else(|| m.reason.to_string()))),
            Ok(_) => (before.clone(), None),
            Err(e) => (before.clone(), Some(e.to_string())),
        };
        // Barman passes the error to the post script's runner but then overwrites
        // BARMAN_ERROR with an empty one (its sample hooks/15 shows it); scripts written for
        // Barman see the same. The post retry script does get it.
        hooks.run_post(&|h, retry| h.env_from_wal(&after, &dst, if retry { error.as_deref() } else { None }));
        outcome
    }

    fn archive_file(
        &mut self,
        stager: &Stager<'_>,
        source: WalSource,
        dir: &Path,
        file_name: &OsStr,
        wal: WalFileName,
    ) -> Result<FileOutcome, ArchiveError> {
        let src = dir.join(file_name);
        let prepared = stager.prepare(source, &src, wal);
        self.finish(&src, file_name, wal, prepared)
    }

    /// The second half of archiving a file, once [`Stager::prepare`] has read it: steps 2, 4
    /// and 5 of the [module documentation](self). Called in the batch's order.
    fn finish(
        &mut self,
        src: &Path,
        file_name: &OsStr,
        wal: WalFileName,
        prepared: Result<Prepared, ArchiveError>,
    ) -> Result<FileOutcome, ArchiveError> {
        // Whatever happens to this file, the next one follows it, not the one before.
        let previous = self.previous.take();
        let (staged, mtime, dst) = match prepared? {
            Prepared::Vanished => {
                tracing::warn!(file = %src.display(), "vanished before it could be archived");
                return Ok(FileOutcome::Vanished { name: lossy(file_name) });
            }
            Prepared::Duplicate { arrived_as, dst } => return self.duplicate(src, file_name, wal, arrived_as, &dst),
            Prepared::Staged { staged, mtime, dst } => (staged, mtime, dst),
        };
        let (file, size, compression, mut checked, leading) = match staged {
            Staged::Ready { file, size, compression, checked, leading } => (file, size, compression, checked, leading),
            Staged::Refused(refusal) => return self.refuse(src, file_name, refusal),
        };
        if let (WalFileName::Segment(name), Some(leading)) = (wal, &leading) {
            // The first segment of a batch continues one archived by an earlier run.
            let previous = previous.or_else(|| self.archived_carry(name, leading));
            match Self::continues(previous, name, leading) {
                Err(refusal) => {
                    // Dropping the staged file removes it.
                    drop(file);
                    return self.refuse(src, file_name, refusal);
                }
                Ok(Some(carry)) => checked.carry = Some(carry),
                Ok(None) => {}
            }
            self.previous = checked.carry.take().map(|carry| (name, carry));
        }
        let entry = XlogDbEntry {
            name: wal,
            size,
            time: epoch_seconds(mtime),
            compression: compression.map(|c| c.to_string()),
            encryption: None,
        };
        self.commit_and_index(file, &entry)?;
        remove_source(src)?;
        if let Some(partial_tail) = &checked.tail_problem {
            tracing::info!(file = %wal, valid_up_to = ?checked.valid_up_to, tail = %partial_tail, "archived a .partial file; its WAL ends before the file does");
        }
        Ok(FileOutcome::Archived(ArchivedWal {
            entry,
            path: dst,
            valid_up_to: checked.valid_up_to,
            tail_problem: checked.tail_problem,
        }))
    }

    /// Moves a file that failed its check to `errors/`.
    fn refuse(&mut self, src: &Path, file_name: &OsStr, refusal: Refusal) -> Result<FileOutcome, ArchiveError> {
        let (reason, detail) = (refusal.reason(), refusal.detail());
        tracing::warn!(server = %self.settings.server, file = %src.display(), %reason, %detail, "refusing WAL");
        self.emit(ArchiveEvent::Refused { name: lossy(file_name), reason: reason.clone(), detail: detail.clone() });
        let moved = self.move_to_errors(src, file_name, reason, Some(detail))?;
        Ok(FileOutcome::Refused(moved))
    }

    /// The bytes at the start of segment `name` that finish a record begun in the segment just
    /// archived, checked against that segment's carry: each segment was validated on its own
    /// by the workers, which cannot check a record's CRC across two segments. Only when
    /// `previous` is the segment directly before `name` on the same timeline; otherwise nothing
    /// is known of the record and its bytes stay unchecked, as in a first segment. Returns the
    /// carry for the next segment when the record goes on past this one (then its own
    /// validation could only skip it).
    fn continues(
        previous: Option<(WalSegmentName, Carry)>,
        name: WalSegmentName,
        leading: &LeadingBytes,
    ) -> Result<Option<Carry>, Refusal> {
        let Some(size) = leading.segment_size() else { return Ok(None) };
        match previous {
            Some((before, carry)) if before.timeline() == name.timeline() && before.next(size) == Some(name) => {
                leading.resume(name, carry).map_err(Refusal::from)
            }
            _ => Ok(None),
        }
    }

    /// The carry of the segment before `name`, read back from the archive: so that the bytes
    /// at the start of the first segment of a batch (one archived alone, as `archive_command`
    /// delivers them) that finish a record begun there are checked too. The archived segment
    /// is decompressed and validated again, and so are the ones before it while a record
    /// crosses them from end to end ([`ARCHIVED_CHAIN`] at most). If one is missing (a
    /// timeline's first segment, a gap) or cannot be read, the bytes stay unchecked, as
    /// before, and why is logged at debug level: the segment being archived is not to blame.
    fn archived_carry(&self, name: WalSegmentName, leading: &LeadingBytes) -> Option<(WalSegmentName, Carry)> {
        let size = leading.segment_size()?;
        let before = name.prev(size).filter(|b| b.timeline() == name.timeline())?;
        match self.carry_of_archived(before, size, ARCHIVED_CHAIN) {
            Ok(carry) => carry.map(|c| (before, c)),
            Err(why) => {
                tracing::debug!(segment = %before, %why, "cannot read the archived segment back to check where {name} continues it");
                None
            }
        }
    }

    /// The carry at the end of the archived segment `name`, chained from the `depth` segments
    /// before it when its own is blind. `Ok(None)`: not archived.
    fn carry_of_archived(&self, name: WalSegmentName, size: WalSegmentSize, depth: usize) -> Result<Option<Carry>, String> {
        let path = self.catalog.wal_path(&WalFileName::Segment(name));
        let compression = &self.settings.compression;
        let head = match read_prefix(&path, compression.magic_len()) {
            Ok(h) => h,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let mut reader = compression
            .decoder(compression.identify_archived(&head), SourceReader::open(&path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let mut check = ContentCheck::new(WalFileName::Segment(name), self.system_id, Some(size), Some(size.bytes()));
        let mut leading = LeadingBytes::default();
        let mut buf = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buf).map_err(|e| e.to_string())? {
                0 => break,
                n => {
                    check.feed(&buf[..n]);
                    leading.feed(&buf[..n]);
                }
            }
        }
        let own = check.finish().map_err(|r| r.detail())?.carry;
        let Some(before) = name.prev(size).filter(|b| b.timeline() == name.timeline() && depth > 0) else { return Ok(own) };
        if !own.as_ref().is_some_and(Carry::is_blind) {
            return Ok(own);
        }
        match self.carry_of_archived(before, size, depth - 1)? {
            Some(previous) => Ok(leading.resume(name, previous).map_err(|e| e.to_string())?.or(own)),
            None => Ok(own),
        }
    }

    /// Makes the staged file durable in the archive, then records it in xlog.db — both under
    /// the xlog.db lock, so that a reader of xlog.db never misses a file it lists.
    fn commit_and_index(&mut self, file: AtomicFile, entry: &XlogDbEntry) -> Result<(), ArchiveError> {
        let xlogdb = self.catalog.xlogdb_path();
        if let Some(dir) = xlogdb.parent() {
            create_dir_all_durable(dir, DIR_MODE)?;
        }
        let lock = self.catalog.lock(LockKind::ServerXlogDb)?;
        file.commit()?;
        catalog::xlogdb::append(&xlogdb, &lock, std::slice::from_ref(entry))?;
        drop(lock);
        if let Some(set) = &mut self.indexed {
            set.insert(entry.name);
        }
        tracing::info!(server = %self.settings.server, file = %entry.name, size = entry.size, compression = ?entry.compression, "archived");
        Ok(())
    }

    /// A file whose name is already archived (Barman's `MatchingDuplicateWalFile` /
    /// `DuplicateWalFile`).
    fn duplicate(
        &mut self,
        src: &Path,
        file_name: &OsStr,
        wal: WalFileName,
        arrived_as: Option<Compression>,
        dst: &Path,
    ) -> Result<FileOutcome, ArchiveError> {
        let stored_as = self.settings.compression.identify_archived(&read_prefix(dst, self.settings.compression.magic_len())?);
        let same = self.same_content(src, arrived_as, dst, stored_as)?;
        if !same {
            self.emit(ArchiveEvent::Duplicate { server: self.settings.server.clone(), name: lossy(file_name) });
            tracing::warn!(server = %self.settings.server, file = %src.display(), "already archived with different content");
            let moved = self.move_to_errors(src, file_name, ErrorReason::Duplicate, None)?;
            return Ok(FileOutcome::Refused(moved));
        }
        let xlogdb_repaired = self.ensure_indexed(wal, dst, stored_as)?;
        remove_source(src)?;
        tracing::info!(server = %self.settings.server, file = %src.display(), xlogdb_repaired, "already archived with the same content; removed");
        Ok(FileOutcome::IdenticalDuplicate { name: wal, xlogdb_repaired })
    }

    /// Compares the decompressed contents. A stored file that cannot be decompressed counts
    /// as different (the new copy goes to `errors/`, nothing is overwritten).
    fn same_content(
        &self,
        src: &Path,
        src_as: Option<Compression>,
        dst: &Path,
        dst_as: Option<Compression>,
    ) -> Result<bool, ArchiveError> {
        let open = |path: &Path, c| -> Result<Box<dyn Read + Send>, ArchiveError> {
            self.settings
                .compression
                .decoder(c, SourceReader::open(path)?)
                .map_err(|source| ArchiveError::Compression { path: path.to_path_buf(), source })
        };
        let (mut a, mut b) = (open(src, src_as)?, open(dst, dst_as)?);
        let (mut abuf, mut bbuf) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        loop {
            let na = match read_full(&mut a, &mut abuf) {
                Ok(n) => n,
                Err(e) => return storage_cause(e).map(|s| Err(s.into())).unwrap_or(Ok(false)),
            };
            let nb = match read_full(&mut b, &mut bbuf) {
                Ok(n) => n,
                Err(e) => return storage_cause(e).map(|s| Err(s.into())).unwrap_or(Ok(false)),
            };
            if na != nb || abuf[..na] != bbuf[..nb] {
                return Ok(false);
            }
            if na == 0 {
                return Ok(true);
            }
        }
    }

    /// Adds the archived file's line to xlog.db if it is missing (archived, then a crash
    /// before xlog.db was appended). Returns whether it did.
    fn ensure_indexed(&mut self, wal: WalFileName, dst: &Path, stored_as: Option<Compression>) -> Result<bool, ArchiveError> {
        let xlogdb = self.catalog.xlogdb_path();
        if self.indexed.is_none() {
            let lock = self.catalog.lock(LockKind::ServerXlogDb)?;
            let entries = catalog::xlogdb::read_if_exists(&xlogdb, &lock)?.unwrap_or_default();
            self.indexed = Some(entries.into_iter().map(|e| e.name).collect());
        }
        if self.indexed.as_ref().is_some_and(|s| s.contains(&wal)) {
            return Ok(false);
        }
        let meta = std::fs::metadata(dst).map_err(|e| StorageError::io(StorageOp::Metadata, dst, e))?;
        let mtime = meta.modified().map_err(|e| StorageError::io(StorageOp::Metadata, dst, e))?;
        let entry = XlogDbEntry {
            name: wal,
            size: meta.len(),
            time: epoch_seconds(mtime),
            compression: stored_as.map(|c| c.to_string()),
            encryption: None,
        };
        if let Some(dir) = xlogdb.parent() {
            create_dir_all_durable(dir, DIR_MODE)?;
        }
        let lock = self.catalog.lock(LockKind::ServerXlogDb)?;
        catalog::xlogdb::append(&xlogdb, &lock, std::slice::from_ref(&entry))?;
        drop(lock);
        tracing::warn!(server = %self.settings.server, file = %wal, "archived file was missing from xlog.db; added");
        if let Some(set) = &mut self.indexed {
            set.insert(wal);
        }
        Ok(true)
    }

    /// Moves `src` to `errors/<name>.<UTC stamp>.<reason>` (Barman's
    /// `move_wal_file_to_errors_directory`), never overwriting an earlier error file: a clash
    /// (same name, same second) gets `.1`, `.2`… after the name.
    fn move_to_errors(
        &mut self,
        src: &Path,
        file_name: &OsStr,
        reason: ErrorReason,
        detail: Option<String>,
    ) -> Result<MovedToErrors, ArchiveError> {
        create_dir_all_durable(self.catalog.errors_directory(), DIR_MODE)?;
        let now = time::OffsetDateTime::now_utc();
        let mut target = self.catalog.error_file_path(file_name, now, &reason)?;
        let mut n = 0u32;
        while std::fs::symlink_metadata(&target).is_ok() {
            n += 1;
            let mut alt = OsString::from(file_name);
            alt.push(format!(".{n}"));
            target = self.catalog.error_file_path(&alt, now, &reason)?;
        }
        let moved = match durable_rename(src, &target) {
            Ok(()) => Some(target),
            Err(e) if e.is_not_found() => {
                tracing::warn!(file = %src.display(), "not found, cannot move it to errors/");
                None
            }
            Err(StorageError::Rename { source, .. }) if source.kind() == io::ErrorKind::CrossesDevices => {
                copy_across(src, &target)?;
                remove_source(src)?;
                Some(target)
            }
            Err(e) => return Err(e.into()),
        };
        Ok(MovedToErrors { name: lossy(file_name), reason, detail, path: moved })
    }
}

/// A source file whose read errors carry a [`StorageError`] naming it, so that after passing
/// through a decompressor they can still be told apart from corrupt content.
struct SourceReader {
    file: File,
    path: PathBuf,
}

impl SourceReader {
    fn open(path: &Path) -> Result<Self, StorageError> {
        let file = File::open(path).map_err(|e| StorageError::io(StorageOp::Open, path, e))?;
        Ok(SourceReader { file, path: path.to_path_buf() })
    }
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), StorageError::io(StorageOp::Read, &self.path, e)))
    }
}

/// The [`StorageError`] inside `e`, if it came from the filesystem; else `e` itself.
fn storage_cause(e: io::Error) -> Result<StorageError, io::Error> {
    if e.get_ref().is_some_and(|inner| inner.is::<StorageError>()) {
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<StorageError>()) {
            Some(Ok(storage)) => Ok(*storage),
            _ => Err(io::Error::from(kind)),
        }
    } else {
        Err(e)
    }
}

/// For reads and writes of our own files: the filesystem error, or the error as is.
fn unwrap_storage(e: io::Error) -> ArchiveError {
    match storage_cause(e) {
        Ok(storage) => storage.into(),
        Err(e) => StorageError::io(StorageOp::Read, PathBuf::new(), e).into(),
    }
}

/// The first `n` bytes of a file (fewer if it is shorter).
fn read_prefix(path: &Path, n: usize) -> Result<Vec<u8>, StorageError> {
    let mut buf = vec![0u8; n];
    let mut reader = SourceReader::open(path)?;
    let got = read_full(&mut reader, &mut buf).map_err(|e| match storage_cause(e) {
        Ok(s) => s,
        Err(e) => StorageError::io(StorageOp::Read, path, e),
    })?;
    buf.truncate(got);
    Ok(buf)
}

/// A file time as Python's `os.stat().st_mtime` computes it (`sec + nsec * 1e-9`, CPython's
/// `fill_time`), so that the xlog.db time column is the very float Barman would write.
/// (`Duration::as_secs_f64` divides by 1e9 instead and can differ in the last digit.)
fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as f64 + f64::from(d.subsec_nanos()) * 1e-9)
        .unwrap_or(0.0)
}

/// Gives the staged file the source's mtime before it is fsynced (Barman's `copystat`): the
/// xlog.db time and `rebuild-xlogdb` read it.
// TODO(storage): belongs in `storage::durable` as `AtomicFile::set_modified`.
fn set_mtime(path: &Path, mtime: SystemTime) -> Result<(), StorageError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io(StorageOp::Open, path, e))?;
    file.set_modified(mtime).map_err(|e| StorageError::io(StorageOp::Write, path, e))
}

/// Removes an archived (or dropped) source and makes the removal durable.
fn remove_source(src: &Path) -> Result<(), StorageError> {
    storage::fs::remove_file_if_exists(src)?;
    match src.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fsync_dir(dir),
        _ => Ok(()),
    }
}

/// `shutil.move`'s fallback across filesystems: a durable copy keeping the mtime.
fn copy_across(src: &Path, target: &Path) -> Result<(), ArchiveError> {
    let mtime = std::fs::metadata(src)
        .and_then(|m| m.modified())
        .map_err(|e| StorageError::io(StorageOp::Metadata, src, e))?;
    let mut out = AtomicFile::create(target, FILE_MODE)?;
    io::copy(&mut SourceReader::open(src)?, &mut out).map_err(unwrap_storage)?;
    out.flush().map_err(unwrap_storage)?;
    set_mtime(out.temp_path(), mtime)?;
    out.commit()?;
    Ok(())
}

