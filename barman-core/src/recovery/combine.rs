//! Incremental backups (PostgreSQL 17+): a backup whose `parent_backup_id` names another is
//! only the blocks changed since that parent, and PostgreSQL will not start on it alone. Its
//! chain — the full backup, then each incremental down to the one being restored — is
//! combined by `pg_combinebackup` into one synthetic full backup first, as Barman 3.19's
//! `CombineOperation` (`barman/recovery_executor.py`) does:
//!
//! - [`backup_chain`] walks `parent_backup_id` from the backup up to the full one. Barman
//!   stops silently at a parent it cannot read (and pg_combinebackup then fails on an
//!   incomplete chain); barman-rs refuses a missing parent, a parent that is not `DONE` and
//!   a loop, naming the backup, before anything is written;
//! - [`PgCombineBackup::find`] looks for the program as Barman does: in `path_prefix`, then
//!   in `PATH`, the first one that answers `--version`; its major must be the backup's;
//! - [`combine_args`] is Barman's command line: `--output=DEST`, one
//!   `--tablespace-mapping=OLD=NEW` per tablespace of the last backup (OLD is where that
//!   backup's `pg_tblspc/<oid>` link points, NEW where the tablespace is restored: without a
//!   mapping, pg_combinebackup would write the tablespace into the catalog), `--<combine_mode>`,
//!   then the backups' data directories, the full one first;
//! - [`CombinePlan::combine`] unpacks the compressed members of the chain first, each into
//!   `<staging>/barman-decompress<pid>/<ID>/` (Barman's `DecompressOperation` on the chain;
//!   the plain members are read where they are in the catalog), then runs pg_combinebackup,
//!   printing Barman's `Start combining…` / `End combining…` lines.
//!
//! Where the output goes is the caller's: straight into the destination for a local
//! recovery ([`super::recover_with`] then removes what Barman's `_post_recovery_cleanup`
//! removes and keeps the new manifest as `backup_manifest.<ID>`), or into
//! `<staging_path>/barman-combine<pid>/<ID>/` when it is then sent to a remote host.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{remote::ScratchDir, unpack_archives, RecoveryError, RecoveryNotice};
use crate::backup::compressed::ArchiveCompression;
use crate::catalog::{BackupId, BackupInfo, BackupStatus, CatalogError, ServerCatalog, Tablespace};
use crate::config::CombineMode;
use crate::storage::{StorageError, StorageOp};

/// How a chain is combined, from the server's configuration and the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CombineOptions {
    /// `path_prefix`: searched before `PATH` for `pg_combinebackup`.
    pub path_prefix: Option<String>,
    /// `combine_mode` / `--combine-mode`: `--copy`, `--link`, `--clone` or
    /// `--copy-file-range` (see [`effective_mode`] for when `link` is not honoured).
    pub mode: CombineMode,
    /// Where the chain is combined before it is sent to a remote host,
    /// `<path>/barman-combine<pid>` (`staging_path`, or the deprecated `local_staging_path`).
    pub staging_path: PathBuf,
    /// Where compressed members of the chain are unpacked first,
    /// `<path>/barman-decompress<pid>` (`staging_path`, or the deprecated
    /// `recovery_staging_path`).
    pub decompress_staging_path: PathBuf,
}

impl Default for CombineOptions {
    /// Barman's defaults: no `path_prefix`, `copy`, staging in `/tmp`.
    fn default() -> Self {
        CombineOptions {
            path_prefix: None,
            mode: CombineMode::Copy,
            staging_path: PathBuf::from("/tmp"),
            decompress_staging_path: PathBuf::from("/tmp"),
        }
    }
}

/// A chain that cannot be combined, or pg_combinebackup could not combine it. The texts of
/// [`NotFound`](Self::NotFound), [`VersionMismatch`](Self::VersionMismatch) and
/// [`Failed`](Self::Failed) are Barman's.
#[derive(Debug, thiserror::Error)]
pub enum CombineError {
    /// A backup of the chain names a parent that is not in the catalog.
    #[error(
        "Cannot restore from backup '{leaf}': it is an incremental backup and its chain is broken: \
         the parent {parent} of backup {child} is not in the catalog"
    )]
    MissingParent {
        /// The backup being restored.
        leaf: BackupId,
        /// The backup whose parent is missing.
        child: BackupId,
        /// The missing parent.
        parent: BackupId,
    },
    /// A parent is not `DONE` (a failed or unfinished backup cannot be combined).
    #[error(
        "Cannot restore from backup '{leaf}': it is an incremental backup and the parent {parent} \
         of backup {child} has status {status}, not DONE"
    )]
    ParentNotDone {
        /// The backup being restored.
        leaf: BackupId,
        /// The backup whose parent is not done.
        child: BackupId,
        /// The parent.
        parent: BackupId,
        /// Its status.
        status: BackupStatus,
    },
    /// Following `parent_backup_id` comes back to a backup already seen.
    #[error(
        "Cannot restore from backup '{leaf}': the parent_backup_id links of its chain loop \
         (backup {repeated} is reached twice)"
    )]
    Loop {
        /// The backup being restored.
        leaf: BackupId,
        /// The backup reached twice.
        repeated: BackupId,
    },
    /// A parent's backup.info could not be read.
    #[error("cannot read the backup.info of backup {id}, a parent in the chain")]
    Catalog {
        /// The parent.
        id: BackupId,
        /// Why.
        #[source]
        source: CatalogError,
    },
    /// The backup records no PostgreSQL version, so the program cannot be checked.
    #[error("backup {id} records no PostgreSQL version (version in backup.info): pg_combinebackup cannot be checked against it")]
    NoVersion {
        /// The backup.
        id: BackupId,
    },
    /// No `pg_combinebackup` in `path_prefix` nor `PATH` (Barman's text, then a hint).
    #[error(
        "pg_combinebackup could not be found on the target server\n\
         HINT: barman-rs looks for it in path_prefix, then in PATH: set path_prefix to the \
         bin directory of PostgreSQL {major}"
    )]
    NotFound {
        /// The backup's major.
        major: u32,
    },
    /// pg_combinebackup is of another major than the backup (Barman's text).
    #[error(
        "Postgres version mismatch: The backup '{id}' was taken from Postgres version '{backup}', \
         but pg_combinebackup version is '{tool}'. To restore successfully is necessary to use \
         pg_combinebackup with the same version used when the backup was taken ({backup})."
    )]
    VersionMismatch {
        /// The backup.
        id: BackupId,
        /// Its major.
        backup: u32,
        /// The program's major (`None` when its version could not be read).
        tool: String,
    },
    /// pg_combinebackup could not be started.
    #[error("cannot run {}", path.display())]
    Spawn {
        /// The program.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// pg_combinebackup failed (Barman's text, with its output).
    #[error("Failure copying base backup: Combine action failure on directory '{}'\npg_combinebackup error:\n{output}", dir.display())]
    Failed {
        /// The output directory.
        dir: PathBuf,
        /// What pg_combinebackup printed (stdout, then stderr).
        output: String,
    },
}

/// The backups to combine to restore `leaf`, the full backup first and `leaf` last; just
/// `leaf` when it is not incremental. `lookup` reads a backup's info (`None`: not in the
/// catalog). Every parent must be `DONE`.
pub fn backup_chain(
    leaf: &BackupInfo,
    mut lookup: impl FnMut(BackupId) -> Result<Option<BackupInfo>, CatalogError>,
) -> Result<Vec<BackupInfo>, CombineError> {
    let mut chain = vec![leaf.clone()];
    let mut seen = std::collections::BTreeSet::from([leaf.backup_id]);
    loop {
        let child = chain.last().expect("the chain starts with the leaf");
        let Some(parent_id) = child.parent_backup_id else { break };
        let child_id = child.backup_id;
        if !seen.insert(parent_id) {
            return Err(CombineError::Loop { leaf: leaf.backup_id, repeated: parent_id });
        }
        let parent = lookup(parent_id)
            .map_err(|source| CombineError::Catalog { id: parent_id, source })?
            .ok_or(CombineError::MissingParent { leaf: leaf.backup_id, child: child_id, parent: parent_id })?;
        if parent.status != BackupStatus::Done {
            return Err(CombineError::ParentNotDone {
                leaf: leaf.backup_id,
                child: child_id,
                parent: parent_id,
                status: parent.status,
            });
        }
        chain.push(parent);
    }
    chain.reverse();
    Ok(chain)
}

/// [`backup_chain`] over the catalog's backup.info files.
pub fn read_chain(catalog: &ServerCatalog, leaf: &BackupInfo) -> Result<Vec<BackupInfo>, CombineError> {
    backup_chain(leaf, |id| match BackupInfo::read(catalog, id) {
        Ok(info) => Ok(Some(info)),
        Err(CatalogError::BackupInfoMissing { .. }) => Ok(None),
        Err(e) => Err(e),
    })
}

/// The `pg_combinebackup` program that will combine the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgCombineBackup {
    /// Where it is.
    pub path: PathBuf,
    /// Its version (`17.4`), as Barman reads it from `--version`; `None` when unreadable.
    pub version: Option<String>,
}

impl PgCombineBackup {
    /// Barman's `find_command`: each directory of `path_prefix` then `PATH`, in order; the
    /// first executable `pg_combinebackup` that runs `--version` successfully (Debian installs
    /// wrappers that fail when their major is not installed).
    pub fn find(path_prefix: Option<&str>) -> Option<PgCombineBackup> {
        let mut search = OsString::new();
        if let Some(prefix) = path_prefix.filter(|p| !p.is_empty()) {
            search.push(prefix);
            search.push(":");
        }
        if let Some(path) = std::env::var_os("PATH") {
            search.push(path);
        }
        for dir in std::env::split_paths(&search).filter(|d| !d.as_os_str().is_empty()) {
            let candidate = dir.join("pg_combinebackup");
            let executable = std::fs::metadata(&candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if !executable {
                continue;
            }
            let Ok(out) = Command::new(&candidate).arg("--version").stdin(Stdio::null()).output() else { continue };
            if out.status.success() {
                return Some(PgCombineBackup { version: parse_version(&String::from_utf8_lossy(&out.stdout)), path: candidate });
            }
        }
        None
    }

    /// The major of [`version`](Self::version) (`17` for `17.4`, `18` for `18devel`).
    pub fn major(&self) -> Option<u32> {
        self.version.as_deref().and_then(major_of)
    }
}

/// The version in `pg_combinebackup (PostgreSQL) 17.4 (Debian 17.4-1)`, as Barman's
/// `get_version_info`: parenthesised parts removed, the second word, which must start like
/// a version.
fn parse_version(out: &str) -> Option<String> {
    let mut text = String::new();
    let mut depth = 0usize;
    for c in out.trim().chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => text.push(c),
            _ => {}
        }
    }
    let word = text.split_whitespace().nth(1)?;
    let digits = word.chars().take_while(char::is_ascii_digit).count();
    let rest = &word[digits..];
    let looks_like_version = digits > 0
        && (rest.strip_prefix('.').is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            || ["devel", "beta", "alpha", "rc"].iter().any(|s| rest.starts_with(s)));
    looks_like_version.then(|| word.to_owned())
}

/// The leading number of a version (`17.4` → 17), Barman's `get_major_version`.
fn major_of(version: &str) -> Option<u32> {
    let start = version.find(|c: char| c.is_ascii_digit())?;
    let digits: String = version[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Barman's `PgCombineBackup` arguments: `--output=DEST`, `--tablespace-mapping=OLD=NEW` for
/// each tablespace, `--<mode>`, then `inputs` (the full backup's data directory first). An
/// `=` inside a path is escaped as pg_combinebackup's parser expects (`\=`).
pub fn combine_args(output: &Path, mapping: &[(PathBuf, PathBuf)], mode: CombineMode, inputs: &[PathBuf]) -> Vec<OsString> {
    let escape = |p: &Path| p.to_string_lossy().replace('=', "\\=");
    let mut args: Vec<OsString> = vec![format!("--output={}", output.display()).into()];
    for (old, new) in mapping {
        args.push(format!("--tablespace-mapping={}={}", escape(old), escape(new)).into());
    }
    args.push(format!("--{mode}").into());
    args.extend(inputs.iter().map(|p| p.as_os_str().to_owned()));
    args
}

/// The mode pg_combinebackup runs with. Barman honours `link` only when it is safe and
/// possible, and says why otherwise (`_fallback_to_copy_if_link_is_not_supported`): never for
/// a local restore (a hard link into the catalog would let the restored server modify the
/// backup), not before PostgreSQL 18 (no `--link`), not across filesystems; when it is
/// honoured in a local staging area, it warns that the staged files share the catalog's.
pub fn effective_mode(
    requested: CombineMode,
    remote: bool,
    tool_major: u32,
    same_filesystem: impl FnOnce() -> bool,
) -> (CombineMode, Option<&'static str>) {
    if requested != CombineMode::Link {
        return (requested, None);
    }
    if !remote {
        return (
            CombineMode::Copy,
            Some(
                "'link' mode is not supported for local restore. Falling back to 'copy' mode to prevent \
                 modification of original backup files through hard-links.",
            ),
        );
    }
    if tool_major < 18 {
        return (CombineMode::Copy, Some("'link' mode is not supported on Postgres 17 or older. Falling back to 'copy' mode."));
    }
    if !same_filesystem() {
        return (
            CombineMode::Copy,
            Some("'link' mode is not supported with files across different file systems. Falling back to 'copy' mode."),
        );
    }
    (
        CombineMode::Link,
        Some(
            "CAUTION: Using 'link' mode with a local staging area. Files in the staging path may be hard-linked \
             to files from your Barman backup catalog. Modifying these files, by any means, can lead to permanent \
             backup(s) corruption.",
        ),
    )
}

/// Barman's warning when checksums are on in the backup restored but off in an ancestor.
const CHECKSUM_WARNING: &str = "You are restoring from an incremental backup where checksums were enabled on that backup, \
     but not all backups in the chain. It is advised to disable, and optionally re-enable, checksums on the \
     destination directory to avoid failures.";

/// A chain checked and ready to combine: every member `DONE`, the program found and of the
/// backup's major. Built before anything is written, so that these refusals leave nothing
/// behind.
#[derive(Debug, Clone)]
pub struct CombinePlan {
    /// The server's catalog.
    pub catalog: ServerCatalog,
    /// The backups, the full one first, the one being restored last.
    pub chain: Vec<BackupInfo>,
    /// The program.
    pub tool: PgCombineBackup,
    /// The program's major (the backup's).
    pub major: u32,
}

impl CombinePlan {
    /// The plan for restoring `leaf`; `Ok(None)` when it is not incremental (a plain copy).
    pub fn prepare(catalog: &ServerCatalog, leaf: &BackupInfo, opts: &CombineOptions) -> Result<Option<CombinePlan>, CombineError> {
        if leaf.parent_backup_id.is_none() {
            return Ok(None);
        }
        let chain = read_chain(catalog, leaf)?;
        let major = leaf.version.map(|v| v / 10000).ok_or(CombineError::NoVersion { id: leaf.backup_id })?;
        let tool = PgCombineBackup::find(opts.path_prefix.as_deref()).ok_or(CombineError::NotFound { major })?;
        if tool.major() != Some(major) {
            return Err(CombineError::VersionMismatch {
                id: leaf.backup_id,
                backup: major,
                tool: tool.major().map_or_else(|| "None".to_owned(), |m| m.to_string()),
            });
        }
        Ok(Some(CombinePlan { catalog: catalog.clone(), chain, tool, major }))
    }

    /// The backup being restored.
    pub fn leaf(&self) -> &BackupInfo {
        self.chain.last().expect("a chain holds its leaf")
    }

    /// Barman's `is_checksum_consistent`: false when the restored backup was taken with
    /// `data_checksums` on and an ancestor with them off.
    pub fn checksums_consistent(&self) -> bool {
        let on = |b: &BackupInfo| b.data_checksums.as_deref() == Some("on");
        let off = |b: &BackupInfo| b.data_checksums.as_deref() == Some("off");
        !on(self.leaf()) || !self.chain[..self.chain.len() - 1].iter().any(off)
    }

    /// Combines the chain into `output` (made 0700 if missing; it must be empty), each of the
    /// last backup's tablespaces into the location `locations` gives it (also made 0700), in
    /// the mode [`effective_mode`] allows (`remote`: the output is a staging area that is sent
    /// on). Compressed members are unpacked first under
    /// `<decompress_staging_path>/barman-decompress<pid>`, which is removed afterwards.
    /// Returns how long it took.
    pub fn combine(
        &self,
        output: &Path,
        locations: &[(&Tablespace, PathBuf)],
        remote: bool,
        opts: &CombineOptions,
        jobs: usize,
        notify: &mut dyn FnMut(RecoveryNotice),
    ) -> Result<Duration, RecoveryError> {
        let started = Instant::now();
        let catalog = &self.catalog;
        let compressed: Vec<(usize, ArchiveCompression)> = self
            .chain
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match b.compression.as_deref() {
                None | Some("None") => None,
                Some(name) => Some(ArchiveCompression::from_name(name).map(|a| (i, a)).ok_or_else(|| {
                    RecoveryError::Invalid(format!(
                        "backup {} has compression {name:?}, which barman-rs cannot restore",
                        b.backup_id
                    ))
                })),
            })
            .collect::<Result<_, _>>()?;
        let staging = if compressed.is_empty() {
            None
        } else {
            Some(ScratchDir::create(opts.decompress_staging_path.join(format!("barman-decompress{}", std::process::id())))?)
        };
        let mut inputs: Vec<PathBuf> = self.chain.iter().map(|b| catalog.backup_data_dir(b.backup_id)).collect();
        if let Some(staging) = &staging {
            for (i, algorithm) in &compressed {
                inputs[*i] = unpack_member(catalog, &self.chain[*i], *algorithm, staging.path(), jobs)?;
            }
        }
        let last = inputs.last().expect("a chain holds its leaf");
        let mapping: Vec<(PathBuf, PathBuf)> = locations
            .iter()
            .map(|(ts, location)| {
                let link = last.join("pg_tblspc").join(ts.oid.to_string());
                let old = std::fs::read_link(&link)
                    .unwrap_or_else(|_| catalog.backup_dir(self.leaf().backup_id).join(ts.oid.to_string()));
                (old, location.clone())
            })
            .collect();
        make_dir(output)?;
        for (_, location) in locations {
            if !location.starts_with(output) {
                make_dir(location)?;
            }
        }
        let id = self.leaf().backup_id;
        notify(RecoveryNotice::CombineStarted { id, output: output.to_owned() });
        let leaf_data = catalog.backup_data_dir(id);
        let (mode, why) = effective_mode(opts.mode, remote, self.major, || same_filesystem(output, &leaf_data));
        if let Some(why) = why {
            notify(RecoveryNotice::Warning(why.to_owned()));
        }
        let args = combine_args(output, &mapping, mode, &inputs);
        tracing::info!("running {} {:?}", self.tool.path.display(), args);
        let out = Command::new(&self.tool.path)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| CombineError::Spawn { path: self.tool.path.clone(), source })?;
        if !out.status.success() {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            return Err(CombineError::Failed { dir: output.to_owned(), output: text }.into());
        }
        notify(RecoveryNotice::CombineEnded { id });
        if !self.checksums_consistent() {
            notify(RecoveryNotice::Warning(CHECKSUM_WARNING.to_owned()));
        }
        drop(staging);
        Ok(started.elapsed())
    }
}

/// Unpacks a compressed member into `<staging>/<ID>/data` (its tablespaces into
/// `<staging>/<ID>/<oid>`, linked from `pg_tblspc/<oid>`, which the tar format does not
/// carry), with its `backup_manifest` beside, as pg_combinebackup needs; returns the data
/// directory.
fn unpack_member(
    catalog: &ServerCatalog,
    backup: &BackupInfo,
    algorithm: ArchiveCompression,
    staging: &Path,
    jobs: usize,
) -> Result<PathBuf, RecoveryError> {
    let id = backup.backup_id;
    let root = staging.join(id.to_string());
    let data = root.join("data");
    let staged: Vec<(&Tablespace, PathBuf)> =
        backup.tablespaces.iter().flatten().map(|ts| (ts, root.join(ts.oid.to_string()))).collect();
    unpack_archives(&catalog.backup_data_dir(id), algorithm, &data, &staged, jobs)?;
    let tblspc = data.join("pg_tblspc");
    make_dir(&tblspc)?;
    for (ts, location) in &staged {
        let link = tblspc.join(ts.oid.to_string());
        crate::storage::fs::remove_file_if_exists(&link)?;
        std::os::unix::fs::symlink(location, &link).map_err(|e| StorageError::io(StorageOp::Create, &link, e))?;
    }
    let manifest = catalog.backup_data_dir(id).join("backup_manifest");
    super::copy::copy_file(&manifest, &data.join("backup_manifest"))?;
    Ok(data)
}

/// Whether `a` and `b` (or, for a path not made yet, its nearest existing parent) are on
/// the same filesystem.
pub fn same_filesystem(a: &Path, b: &Path) -> bool {
    let device = |p: &Path| p.ancestors().find_map(|p| std::fs::metadata(p).ok()).map(|m| m.dev());
    matches!((device(a), device(b)), (Some(x), Some(y)) if x == y)
}

fn make_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StorageError::io(StorageOp::CreateDir, dir, e))
}

/// What Barman's `_post_recovery_cleanup` removes from a combined data directory: the
/// contents of `pg_log`, `log`, `pg_xlog` and `pg_wal`, and `postmaster.pid`,
/// `recovery.conf`, `tablespace_map` (the caller fsyncs `dest` afterwards; the directories
/// emptied here are fsynced here).
pub fn post_combine_cleanup(dest: &Path) -> Result<(), StorageError> {
    for dir in ["pg_log", "log", "pg_xlog", "pg_wal"] {
        let dir = dest.join(dir);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut removed_any = false;
        for entry in entries {
            removed_any = true;
            let path = entry.map_err(|e| StorageError::io(StorageOp::Read, &dir, e))?.path();
            let removed = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            removed.map_err(|e| StorageError::io(StorageOp::Remove, &path, e))?;
        }
        if removed_any {
            crate::storage::durable::fsync_dir(&dir)?;
        }
    }
    for file in ["postmaster.pid", "recovery.conf", "tablespace_map"] {
        crate::storage::fs::remove_file_if_exists(&dest.join(file))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn id(s: &str) -> BackupId {
        s.parse().unwrap()
    }

    fn backup(s: &str, parent: Option<&str>, status: BackupStatus) -> BackupInfo {
        let mut b = BackupInfo::new(id(s));
        b.parent_backup_id = parent.map(id);
        b.status = status;
        b
    }

    fn walk(leaf: &BackupInfo, catalog: &[BackupInfo]) -> Result<Vec<String>, CombineError> {
        let by_id: BTreeMap<BackupId, BackupInfo> = catalog.iter().map(|b| (b.backup_id, b.clone())).collect();
        backup_chain(leaf, |i| Ok(by_id.get(&i).cloned())).map(|c| c.iter().map(|b| b.backup_id.to_string()).collect())
    }

    #[test]
    fn walks_from_the_leaf_to_the_full_backup() {
        let full = backup("20260101T000000", None, BackupStatus::Done);
        let inc1 = backup("20260102T000000", Some("20260101T000000"), BackupStatus::Done);
        let inc2 = backup("20260103T000000", Some("20260102T000000"), BackupStatus::Done);
        let all = [full.clone(), inc1.clone(), inc2.clone()];
        assert_eq!(walk(&inc2, &all).unwrap(), ["20260101T000000", "20260102T000000", "20260103T000000"]);
        assert_eq!(walk(&inc1, &all).unwrap(), ["20260101T000000", "20260102T000000"]);
        // Not incremental: the plain path, the backup alone.
        assert_eq!(walk(&full, &[]).unwrap(), ["20260101T000000"]);
    }

    #[test]
    fn refuses_a_missing_parent_a_parent_not_done_and_a_loop() {
        let inc1 = backup("20260102T000000", Some("20260101T000000"), BackupStatus::Done);
        let inc2 = backup("20260103T000000", Some("20260102T000000"), BackupStatus::Done);
        let err = walk(&inc2, std::slice::from_ref(&inc1)).unwrap_err();
        assert!(
            matches!(err, CombineError::MissingParent { child, parent, .. } if child == id("20260102T000000") && parent == id("20260101T000000")),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "Cannot restore from backup '20260103T000000': it is an incremental backup and its chain is broken: \
             the parent 20260101T000000 of backup 20260102T000000 is not in the catalog"
        );

        let failed = backup("20260101T000000", None, BackupStatus::Failed);
        let err = walk(&inc2, &[inc1.clone(), failed]).unwrap_err();
        assert!(matches!(err, CombineError::ParentNotDone { status: BackupStatus::Failed, .. }), "{err}");
        assert!(err.to_string().contains("has status FAILED, not DONE"), "{err}");

        let a = backup("20260101T000000", Some("20260103T000000"), BackupStatus::Done);
        let err = walk(&inc2, &[inc1, a]).unwrap_err();
        assert!(matches!(err, CombineError::Loop { repeated, .. } if repeated == id("20260103T000000")), "{err}");
        let selfish = backup("20260104T000000", Some("20260104T000000"), BackupStatus::Done);
        assert!(matches!(walk(&selfish, std::slice::from_ref(&selfish)).unwrap_err(), CombineError::Loop { .. }));
    }

    #[test]
    fn command_line_is_barmans() {
        let args = combine_args(
            Path::new("/restore/data"),
            &[(PathBuf::from("/barman/pg/base/20260103T000000/16384"), PathBuf::from("/srv/ts=1"))],
            CombineMode::Copy,
            &[PathBuf::from("/barman/pg/base/20260101T000000/data"), PathBuf::from("/barman/pg/base/20260103T000000/data")],
        );
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "--output=/restore/data",
                "--tablespace-mapping=/barman/pg/base/20260103T000000/16384=/srv/ts\\=1",
                "--copy",
                "/barman/pg/base/20260101T000000/data",
                "/barman/pg/base/20260103T000000/data",
            ]
        );
        let args = combine_args(Path::new("/o"), &[], CombineMode::CopyFileRange, &[PathBuf::from("/a")]);
        assert_eq!(args, ["--output=/o", "--copy-file-range", "/a"]);
    }

    #[test]
    fn reads_versions_as_barman() {
        assert_eq!(parse_version("pg_combinebackup (PostgreSQL) 17.4\n").as_deref(), Some("17.4"));
        assert_eq!(parse_version("pg_combinebackup (PostgreSQL) 17.4 (Debian 17.4-1.pgdg120+2)").as_deref(), Some("17.4"));
        assert_eq!(parse_version("pg_combinebackup (PostgreSQL) 18devel").as_deref(), Some("18devel"));
        assert_eq!(parse_version("pg_combinebackup (PostgreSQL) unknown"), None);
        assert_eq!(parse_version("garbage"), None);
        assert_eq!(major_of("17.4"), Some(17));
        assert_eq!(major_of("18devel"), Some(18));
    }

    #[test]
    fn link_mode_falls_back_as_barman() {
        assert_eq!(effective_mode(CombineMode::Copy, false, 18, || true), (CombineMode::Copy, None));
        assert_eq!(effective_mode(CombineMode::Clone, true, 17, || false), (CombineMode::Clone, None));
        let (mode, why) = effective_mode(CombineMode::Link, false, 18, || true);
        assert_eq!(mode, CombineMode::Copy);
        assert!(why.unwrap().starts_with("'link' mode is not supported for local restore."));
        let (mode, why) = effective_mode(CombineMode::Link, true, 17, || true);
        assert_eq!((mode, why.unwrap()), (CombineMode::Copy, "'link' mode is not supported on Postgres 17 or older. Falling back to 'copy' mode."));
        let (mode, why) = effective_mode(CombineMode::Link, true, 18, || false);
        assert!(mode == CombineMode::Copy && why.unwrap().contains("across different file systems"));
        let (mode, why) = effective_mode(CombineMode::Link, true, 18, || true);
        assert!(mode == CombineMode::Link && why.unwrap().starts_with("CAUTION: Using 'link' mode"));
    }

    #[test]
    fn checksum_consistency_is_barmans() {
        let mut full = backup("20260101T000000", None, BackupStatus::Done);
        let mut inc = backup("20260102T000000", Some("20260101T000000"), BackupStatus::Done);
        let tool = PgCombineBackup { path: "/x".into(), version: Some("17.4".into()) };
        let plan = |full: &BackupInfo, inc: &BackupInfo| CombinePlan {
            catalog: ServerCatalog::new("pg", "/nonexistent/pg", "/nonexistent"),
            chain: vec![full.clone(), inc.clone()],
            tool: tool.clone(),
            major: 17,
        };
        full.data_checksums = Some("off".into());
        inc.data_checksums = Some("on".into());
        assert!(!plan(&full, &inc).checksums_consistent());
        inc.data_checksums = Some("off".into());
        assert!(plan(&full, &inc).checksums_consistent());
        full.data_checksums = Some("on".into());
        inc.data_checksums = Some("on".into());
        assert!(plan(&full, &inc).checksums_consistent());
    }

    #[test]
    fn finds_the_program_in_path_prefix_first_and_skips_failing_wrappers() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (shim, real) = (dir.path().join("shim"), dir.path().join("real"));
        for (d, script) in [
            (&shim, "#!/bin/sh\necho 'Error: pg_wrapper: pg_combinebackup was not found' >&2\nexit 1\n"),
            (&real, "#!/bin/sh\necho 'pg_combinebackup (PostgreSQL) 17.6'\n"),
        ] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("pg_combinebackup"), script).unwrap();
            std::fs::set_permissions(d.join("pg_combinebackup"), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let prefix = format!("{}:{}", shim.display(), real.display());
        let found = PgCombineBackup::find(Some(&prefix)).unwrap();
        assert_eq!(found, PgCombineBackup { path: real.join("pg_combinebackup"), version: Some("17.6".into()) });
        assert_eq!(found.major(), Some(17));
    }

    #[test]
    fn cleanup_removes_what_barman_removes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("pg_wal/archive_status")).unwrap();
        std::fs::write(d.join("pg_wal/000000010000000000000001"), b"x").unwrap();
        std::fs::create_dir_all(d.join("base/1")).unwrap();
        for f in ["postmaster.pid", "tablespace_map", "PG_VERSION", "backup_label"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        post_combine_cleanup(d).unwrap();
        assert!(d.join("pg_wal").is_dir() && d.join("pg_wal").read_dir().unwrap().next().is_none());
        assert!(!d.join("postmaster.pid").exists() && !d.join("tablespace_map").exists());
        assert!(d.join("PG_VERSION").exists() && d.join("backup_label").exists() && d.join("base/1").is_dir());
    }
}
