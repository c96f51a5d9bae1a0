//! Delta restore (`recovery_options = delta-restore`, `recover --delta-restore`): a plain
//! backup restored over a destination that already holds a data directory — typically an
//! earlier restore that was started, used and stopped — rewriting only what differs from the
//! backup. Barman does it with its rsync copy controller (`copy_controller.py`,
//! `RsyncCopyController` with a `safe_horizon`); this module does the same on this host
//! ([`sync_tree`]) and gives [`super::remote`] the rules to do it through rsync
//! ([`safe_horizon`], [`filter_pattern`]).
//!
//! The destination ends up as a restore into an empty directory would leave it:
//!
//! - **removed**: every file, link and directory the backup does not have — a stray file, the
//!   WAL in `pg_wal/`, server logs, `postmaster.opts`, the previous restore's `barman_wal/`,
//!   its signal files and `.barman-recover.info`, another backup's `backup_manifest.<ID>`.
//!   Barman's first rsync pass (`--delete --delete-excluded`) removes the same, the excluded
//!   `pg_wal/*`, `log/*`, … included. Except what is **protected** (Barman's
//!   `exclude_and_protect`): the links `pg_tblspc/<oid>` of the backup's tablespaces and
//!   tablespace locations inside the destination, which are synced on their own. A link to a
//!   directory where the backup has a directory (`pg_wal` on another disk) is kept and synced
//!   through, as rsync `-K` does; any other link is removed, never what it points to.
//! - **kept**: a file with the backup's content, judged as Barman judges it (below);
//! - **written**: every other file of the backup, in place (rsync `--inplace`; a file with
//!   other hard links is replaced instead, so that they keep their content), with the
//!   backup's mtime (so that the next delta restore can judge it) and mode 0600; then, as
//!   [`super::copy`] does, one `syncfs` of each filesystem written to and an fsync of each
//!   directory make it all durable before [`sync_tree`] returns.
//!
//! # Which files are read to be compared
//!
//! Barman's rule (`RsyncCopyController._analyze_directory`): a file whose size or mtime differs
//! from the backup's is rewritten. One whose size and mtime match is trusted without being read
//! only when the backup's copy is older than the **safe horizon**, the earlier of the begin
//! times of the backup being restored and of the one restored there before (its
//! `.barman-recover.info`): such a file was last written before either backup began, so both
//! hold the same content, and whatever wrote it since (PostgreSQL running on the restored copy)
//! moved its mtime. Every other matching file is read and compared byte for byte, where Barman
//! runs rsync `--checksum`. Without a `.barman-recover.info` — or with one of another system,
//! a check Barman does not make — there is no horizon and every matching file is compared.
//! So a file with the backup's size and mtime but another content is rewritten whenever Barman
//! would catch it: newer than the horizon, or with no horizon. Mtimes are compared to the
//! nanosecond (rsync's default is the second): stricter, never looser.
//!
//! A streaming backup's files carry the time they were received, after the backup began, so
//! restoring one again compares every file whose size and mtime match; a file PostgreSQL
//! wrote since has another mtime and is rewritten without being read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use super::copy::SourceTree;
use crate::catalog::{BarmanTimestamp, BackupInfo};
use crate::config::StagingLocation;
use crate::storage::durable::{fsync_dir, sync_filesystem_of};
use crate::storage::{StorageError, StorageOp};

/// The name of the copy of backup.info a restore leaves in the destination.
pub const RECOVER_INFO: &str = ".barman-recover.info";

/// Why Barman refuses a delta restore of `info` (cli.py, `recover`), in its words: locally,
/// a backup that is not plain (incremental, compressed or encrypted: it is combined or
/// unpacked straight into the destination, which must then be empty); remotely (`remote` is
/// the `staging_location`), when the backup would be unpacked on the recovery host.
pub fn refusal(info: &BackupInfo, remote: Option<StagingLocation>) -> Option<&'static str> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| v != "None");
    match remote {
        None if info.parent_backup_id.is_some() || set(&info.compression) || set(&info.encryption) => {
            Some("Cannot restore a backup locally with delta mode when the backup is not plain.")
        }
        Some(StagingLocation::Remote) => {
            Some("Cannot restore a backup remotely with delta mode when 'staging_location=remote'.")
        }
        _ => None,
    }
}

/// The safe horizon: files of the backup older than it, with the size and mtime the
/// destination's copy has, are not read (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafeHorizon {
    /// The instant.
    pub at: SystemTime,
    /// The begin time it comes from, as Barman prints it (`Using safe horizon time for smart
    /// rsync copy: …`).
    pub begin_time: BarmanTimestamp,
}

/// Barman's safe horizon (`_retrieve_safe_horizon`): the earlier begin time of the backup
/// restored and of the `previous` one restored into the destination (its
/// `.barman-recover.info`). `None` — compare every file whose size and mtime match — when
/// there is no previous restore, when a begin time is missing or has no UTC offset, or when
/// the two backups are of different systems.
pub fn safe_horizon(backup: &BackupInfo, previous: Option<&BackupInfo>) -> Option<SafeHorizon> {
    let previous = previous?;
    if let (Some(a), Some(b)) = (backup.systemid, previous.systemid) {
        if a != b {
            return None;
        }
    }
    let begin = |i: &BackupInfo| {
        let t = i.begin_time?;
        Some(SafeHorizon { at: SystemTime::from(t.to_offset_datetime()?), begin_time: t })
    };
    let (a, b) = (begin(backup)?, begin(previous)?);
    Some(if b.at < a.at { b } else { a })
}

/// The previous restore's backup.info, from the bytes of a `.barman-recover.info` (`None` if
/// they do not parse: then there is no horizon).
pub fn previous_restore(backup: &BackupInfo, bytes: &[u8]) -> Option<BackupInfo> {
    BackupInfo::parse(backup.backup_id, bytes).ok()
}

/// `path` as an rsync filter pattern anchored at the transfer's root (`/base/1/1259`): the
/// wildcard characters escaped, which rsync honours only in a pattern holding a wildcard.
pub fn filter_pattern(rel: &Path) -> String {
    let text = rel.to_string_lossy();
    if text.contains(['*', '?', '[']) {
        let mut out = String::from("/");
        for c in text.chars() {
            if matches!(c, '*' | '?' | '[' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    } else {
        format!("/{text}")
    }
}

/// What is at a path of the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A directory, or a link to one where the backup has a directory (followed, rsync `-K`).
    Dir,
    /// A regular file.
    File {
        /// Its size.
        size: u64,
        /// Its mtime.
        mtime: SystemTime,
    },
    /// Anything else: another link, a socket, a FIFO, a device.
    Other,
}

/// The destination as far as the plan needs it: what is in each directory the backup has (and
/// in each directory leading to a protected path), protected paths left out; and the
/// directories reached through a link, which may be on another filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destination {
    /// Each entry found, relative to the root.
    pub found: BTreeMap<PathBuf, Found>,
    /// Directories that are links followed.
    pub linked_dirs: Vec<PathBuf>,
}

impl Destination {
    /// Reads the destination at `root` (absent: empty).
    pub fn scan(root: &Path, source: &SourceTree, protected: &BTreeSet<PathBuf>) -> Result<Destination, StorageError> {
        let mut dest = Destination::default();
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(StorageError::io(StorageOp::Read, root, std::io::ErrorKind::NotADirectory.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dest),
            Err(e) => return Err(StorageError::io(StorageOp::Metadata, root, e)),
        }
        let kept = kept_ancestors(protected);
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(&rel);
            for entry in fs::read_dir(&dir).map_err(|e| StorageError::io(StorageOp::Read, &dir, e))? {
                let entry = entry.map_err(|e| StorageError::io(StorageOp::Read, &dir, e))?;
                let rel = rel.join(entry.file_name());
                if protected.contains(&rel) {
                    continue;
                }
                let path = root.join(&rel);
                let meta = fs::symlink_metadata(&path).map_err(|e| StorageError::io(StorageOp::Metadata, &path, e))?;
                let wanted_dir = source.dirs.contains(&rel) || kept.contains(&rel);
                let found = if meta.is_dir() {
                    Found::Dir
                } else if meta.is_file() {
                    let mtime = meta.modified().map_err(|e| StorageError::io(StorageOp::Metadata, &path, e))?;
                    Found::File { size: meta.len(), mtime }
                } else if meta.file_type().is_symlink() && wanted_dir && fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                    dest.linked_dirs.push(rel.clone());
                    Found::Dir
                } else {
                    Found::Other
                };
                if found == Found::Dir && wanted_dir {
                    stack.push(rel.clone());
                }
                dest.found.insert(rel, found);
            }
        }
        Ok(dest)
    }
}

/// The directories leading to protected paths: kept, and looked into, even when the backup
/// does not have them (rsync does not delete a directory holding a protected file).
fn kept_ancestors(protected: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    protected.iter().flat_map(|p| p.ancestors().skip(1)).filter(|a| !a.as_os_str().is_empty()).map(Path::to_path_buf).collect()
}

/// What a delta restore does to the destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaPlan {
    /// Entries to remove, each with what it holds (a link: the link only).
    pub remove: Vec<PathBuf>,
    /// Directories to create, parents first.
    pub make_dirs: Vec<PathBuf>,
    /// Files to write: missing, or differing in kind, size or mtime.
    pub write: Vec<PathBuf>,
    /// Files whose size and mtime match but which are not older than the safe horizon: read
    /// and compared, written if they differ.
    pub compare: Vec<PathBuf>,
    /// Files whose size and mtime match, older than the safe horizon: left as they are.
    pub keep: Vec<PathBuf>,
}

/// Decides, for each path, what a delta restore of `source` over `dest` does (see the
/// [module docs](self)); `protected` paths are neither looked at nor removed.
pub fn plan(source: &SourceTree, dest: &Destination, protected: &BTreeSet<PathBuf>, horizon: Option<SystemTime>) -> DeltaPlan {
    let kept = kept_ancestors(protected);
    let mut plan = DeltaPlan::default();
    for (rel, found) in &dest.found {
        if source.dirs.contains(rel) {
            if *found != Found::Dir {
                plan.remove.push(rel.clone());
            }
        } else if let Some(file) = source.files.get(rel) {
            match *found {
                Found::File { size, mtime } if size != file.size || mtime != file.mtime => plan.write.push(rel.clone()),
                Found::File { .. } if horizon.is_some_and(|h| file.mtime < h) => plan.keep.push(rel.clone()),
                Found::File { .. } => plan.compare.push(rel.clone()),
                Found::Dir | Found::Other => {
                    plan.remove.push(rel.clone());
                    plan.write.push(rel.clone());
                }
            }
        } else if !(kept.contains(rel) && *found == Found::Dir) {
            plan.remove.push(rel.clone());
        }
    }
    plan.make_dirs = source.dirs.iter().filter(|d| dest.found.get(*d) != Some(&Found::Dir)).cloned().collect();
    plan.write.extend(source.files.keys().filter(|f| !dest.found.contains_key(*f)).cloned());
    plan
}

/// What a delta restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Files left as they were.
    pub unchanged: u64,
    /// Files written.
    pub written: u64,
    /// Bytes written.
    pub written_bytes: u64,
    /// Entries removed (a directory counts once).
    pub removed: u64,
}

/// Makes the tree at `dst` (created 0700 if absent) hold exactly what `src` holds — less what
/// `skip` names, plus the `extra` files (restored name, source path) — rewriting only what
/// differs (see the [module docs](self)); `protected` paths of `dst` are left alone. Everything
/// written and removed is on disk when this returns `Ok`.
pub fn sync_tree(
    src: &Path,
    dst: &Path,
    skip: &dyn Fn(&Path) -> bool,
    extra: &[(PathBuf, PathBuf)],
    protected: &BTreeSet<PathBuf>,
    horizon: Option<SystemTime>,
    jobs: usize,
) -> Result<DeltaStats, StorageError> {
    let under_protected = |rel: &Path| protected.iter().any(|p| rel.starts_with(p));
    let mut source = SourceTree::scan(src, &|rel| skip(rel) || under_protected(rel))?;
    for (rel, path) in extra {
        source.add_file(rel.clone(), path)?;
    }
    let dest = Destination::scan(dst, &source, protected)?;
    let plan = plan(&source, &dest, protected, horizon);
    apply(&source, dst, &dest, &plan, jobs)
}

/// Carries out `plan` in `root`: removals, directories, then the files on `jobs` threads
/// (biggest first); then one `syncfs` per filesystem written to and an fsync of every
/// directory touched.
fn apply(source: &SourceTree, root: &Path, dest: &Destination, plan: &DeltaPlan, jobs: usize) -> Result<DeltaStats, StorageError> {
    super::copy::make_dir(root)?;
    // Opened before anything is written, so that each final sync reports every writeback error.
    let mut filesystems = vec![(root.to_owned(), File::open(root).map_err(|e| StorageError::io(StorageOp::Open, root, e))?)];
    for rel in &dest.linked_dirs {
        let path = root.join(rel);
        filesystems.push((path.clone(), File::open(&path).map_err(|e| StorageError::io(StorageOp::Open, &path, e))?));
    }
    let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut stats = DeltaStats { unchanged: plan.keep.len() as u64, ..DeltaStats::default() };
    for rel in &plan.remove {
        let path = root.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(|e| StorageError::io(StorageOp::Metadata, &path, e))?;
        let removed = if meta.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        removed.map_err(|e| StorageError::io(StorageOp::Remove, &path, e))?;
        touched.insert(parent_of(rel));
        stats.removed += 1;
    }
    for rel in &plan.make_dirs {
        super::copy::make_dir(&root.join(rel))?;
        touched.insert(parent_of(rel));
    }
    let mut work: Vec<(&PathBuf, bool)> = plan.write.iter().map(|r| (r, false)).chain(plan.compare.iter().map(|r| (r, true))).collect();
    work.sort_by_key(|(rel, _)| std::cmp::Reverse(source.files.get(*rel).map_or(0, |f| f.size)));
    let (next, unchanged, written, bytes) = (AtomicUsize::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let failure: Mutex<Option<StorageError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((rel, compare)) = work.get(i) else { break };
                if failure.lock().expect("no panics while held").is_some() {
                    break;
                }
                let Some(file) = source.files.get(*rel) else { continue };
                let target = root.join(rel);
                let result = (|| -> Result<(), StorageError> {
                    if *compare && same_content(&file.path, &target)? {
                        unchanged.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    // A file hard-linked elsewhere (`cp -al`, `pg_upgrade --link`, a catalog)
                    // is unlinked first: written in place, its other names would change too.
                    if fs::symlink_metadata(&target).is_ok_and(|m| m.is_file() && m.nlink() > 1) {
                        fs::remove_file(&target).map_err(|e| StorageError::io(StorageOp::Remove, &target, e))?;
                    }
                    let n = super::copy::copy_unsynced(&file.path, &target)?;
                    fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                        .map_err(|e| StorageError::io(StorageOp::SetPermissions, &target, e))?;
                    written.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(n, Ordering::Relaxed);
                    Ok(())
                })();
                if let Err(e) = result {
                    failure.lock().expect("no panics while held").get_or_insert(e);
                    break;
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("threads joined") {
        return Err(e);
    }
    stats.unchanged += unchanged.into_inner();
    stats.written = written.into_inner();
    stats.written_bytes = bytes.into_inner();
    // Only now is anything durable: the files' data, then the directory entries.
    for (path, handle) in &filesystems {
        sync_filesystem_of(handle, path)?;
    }
    touched.insert(PathBuf::new());
    touched.extend(source.dirs.iter().cloned());
    for rel in touched.iter().rev() {
        fsync_dir(&root.join(rel))?;
    }
    Ok(stats)
}

fn parent_of(rel: &Path) -> PathBuf {
    rel.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Whether the files at `a` and `b` hold the same bytes.
fn same_content(a: &Path, b: &Path) -> Result<bool, StorageError> {
    const CHUNK: usize = 256 * 1024;
    let open = |p: &Path| File::open(p).map_err(|e| StorageError::io(StorageOp::Open, p, e));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| StorageError::io(StorageOp::Read, a, e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| StorageError::io(StorageOp::Read, b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::copy::SourceFile;
    use std::time::Duration;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn source(files: &[(&str, u64, u64)], dirs: &[&str]) -> SourceTree {
        SourceTree {
            dirs: dirs.iter().map(PathBuf::from).collect(),
            files: files
                .iter()
                .map(|(rel, size, mtime)| (PathBuf::from(rel), SourceFile { path: PathBuf::from("/src").join(rel), size: *size, mtime: t(*mtime) }))
                .collect(),
        }
    }

    fn dest(entries: &[(&str, Found)]) -> Destination {
        Destination { found: entries.iter().map(|(r, f)| (PathBuf::from(r), *f)).collect(), linked_dirs: Vec::new() }
    }

    fn paths(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    fn file(size: u64, mtime: u64) -> Found {
        Found::File { size, mtime: t(mtime) }
    }

    #[test]
    fn plans_as_barmans_copy_controller() {
        let src = source(
            &[("PG_VERSION", 3, 100), ("base/1/1259", 8192, 100), ("base/1/2608", 8192, 500), ("base/1/new", 10, 500), ("global/pg_control", 8192, 500)],
            &["base", "base/1", "global", "pg_wal"],
        );
        let found = dest(&[
            ("PG_VERSION", file(3, 100)),          // older than the horizon, size and mtime match: kept
            ("base", Found::Dir),
            ("base/1", Found::Dir),
            ("base/1/1259", file(8192, 900)),      // written to since: another mtime
            ("base/1/2608", file(8192, 500)),      // newer than the horizon: compared
            ("base/1/stray", file(1, 900)),        // not in the backup
            ("global", Found::Other),              // a link to a file where a directory belongs
            ("pg_wal", Found::Dir),
            ("pg_wal/000000010000000000000003", file(16, 900)),
            ("postmaster.opts", file(10, 900)),
            ("barman_wal", Found::Dir),
            ("pg_tblspc", Found::Dir),
        ]);
        let p = plan(&src, &found, &BTreeSet::new(), Some(t(200)));
        assert_eq!(p.keep, paths(&["PG_VERSION"]));
        assert_eq!(p.compare, paths(&["base/1/2608"]));
        assert_eq!(p.write, paths(&["base/1/1259", "base/1/new", "global/pg_control"]));
        assert_eq!(
            p.remove,
            paths(&["barman_wal", "base/1/stray", "global", "pg_tblspc", "pg_wal/000000010000000000000003", "postmaster.opts"])
        );
        assert_eq!(p.make_dirs, paths(&["global"]));
    }

    #[test]
    fn same_size_and_mtime_is_trusted_only_before_the_horizon() {
        let src = source(&[("f", 5, 100)], &[]);
        let found = dest(&[("f", file(5, 100))]);
        // No previous restore: compared. Horizon after the file: kept. At or before it: compared.
        assert_eq!(plan(&src, &found, &BTreeSet::new(), None).compare, paths(&["f"]));
        assert_eq!(plan(&src, &found, &BTreeSet::new(), Some(t(101))).keep, paths(&["f"]));
        assert_eq!(plan(&src, &found, &BTreeSet::new(), Some(t(100))).compare, paths(&["f"]));
        // A file where a directory belongs, and a directory where a file belongs: replaced.
        let p = plan(&source(&[("d", 1, 1)], &["f"]), &dest(&[("d", Found::Dir), ("f", file(5, 100))]), &BTreeSet::new(), None);
        assert_eq!((p.remove, p.write, p.make_dirs), (paths(&["d", "f"]), paths(&["d"]), paths(&["f"])));
    }

    #[test]
    fn protected_paths_and_the_directories_leading_to_them_stay() {
        let src = source(&[], &["pg_tblspc"]);
        let protected: BTreeSet<PathBuf> = paths(&["pg_tblspc/16384", "extra/tbs"]).into_iter().collect();
        let found = dest(&[("pg_tblspc", Found::Dir), ("pg_tblspc/99999", Found::Other), ("extra", Found::Dir), ("extra/junk", file(1, 1))]);
        let p = plan(&src, &found, &protected, None);
        assert_eq!(p.remove, paths(&["extra/junk", "pg_tblspc/99999"]));
    }

    #[test]
    fn syncs_a_tree_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        for d in ["base/1", "pg_wal", "pg_tblspc"] {
            fs::create_dir_all(src.join(d)).unwrap();
        }
        fs::write(src.join("PG_VERSION"), b"16\n").unwrap();
        fs::write(src.join("base/1/same"), b"same bytes").unwrap();
        fs::write(src.join("base/1/tampered"), b"good bytes").unwrap();
        fs::write(src.join("base/1/changed"), b"backup").unwrap();
        fs::write(src.join("backup_manifest"), b"{}").unwrap();
        let skip = |rel: &Path| rel == Path::new("backup_manifest");
        super::super::copy::copy_tree(&src, &dst, 2, &skip).unwrap();
        // What a server and a user do to it: a changed file, a stray file and directory, WAL, a
        // file given other bytes but the backup's size and mtime, a link out of the tree.
        fs::write(dst.join("base/1/changed"), b"changed by the server").unwrap();
        fs::write(dst.join("stray"), b"x").unwrap();
        fs::create_dir_all(dst.join("base/2/3")).unwrap();
        fs::write(dst.join("pg_wal/000000020000000000000001"), b"wal").unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), b"p").unwrap();
        std::os::unix::fs::symlink(&outside, dst.join("base/link")).unwrap();
        std::os::unix::fs::symlink(&outside, dst.join("pg_tblspc/16384")).unwrap();
        let mtime = fs::metadata(dst.join("base/1/tampered")).unwrap().modified().unwrap();
        fs::write(dst.join("base/1/tampered"), b"evil bytes").unwrap();
        File::options().write(true).open(dst.join("base/1/tampered")).unwrap().set_modified(mtime).unwrap();

        fs::hard_link(dst.join("base/1/changed"), dir.path().join("other-name")).unwrap();
        let protected: BTreeSet<PathBuf> = paths(&["pg_tblspc/16384"]).into_iter().collect();
        let extra = [(PathBuf::from("backup_manifest.X"), src.join("backup_manifest"))];
        let stats = sync_tree(&src, &dst, &skip, &extra, &protected, None, 2).unwrap();
        assert_eq!(fs::read(dst.join("base/1/tampered")).unwrap(), b"good bytes", "compared without a horizon");
        assert_eq!(fs::read(dst.join("base/1/changed")).unwrap(), b"backup");
        assert_eq!(fs::read(dir.path().join("other-name")).unwrap(), b"changed by the server", "another name kept its bytes");
        assert_eq!(fs::read(dst.join("backup_manifest.X")).unwrap(), b"{}");
        for gone in ["stray", "base/2", "base/link", "pg_wal/000000020000000000000001", "backup_manifest"] {
            assert!(fs::symlink_metadata(dst.join(gone)).is_err(), "{gone} removed");
        }
        assert!(outside.join("precious").exists() && fs::read_link(dst.join("pg_tblspc/16384")).unwrap() == outside);
        assert_eq!(stats, DeltaStats { unchanged: 2, written: 3, written_bytes: 18, removed: 4 });
        let mtime_of = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
        assert_eq!(mtime_of(&dst.join("base/1/changed")), mtime_of(&src.join("base/1/changed")));

        // Again, with a horizon after every file: nothing is read, nothing written.
        let stats = sync_tree(&src, &dst, &skip, &extra, &protected, Some(SystemTime::now() + Duration::from_secs(60)), 1).unwrap();
        assert_eq!(stats, DeltaStats { unchanged: 5, ..DeltaStats::default() });
    }

    #[test]
    fn a_directory_link_where_the_backup_has_a_directory_is_synced_through() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst, wal) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("wal"));
        fs::create_dir_all(src.join("pg_wal/archive_status")).unwrap();
        fs::create_dir_all(wal.join("archive_status")).unwrap();
        fs::write(wal.join("000000010000000000000001"), b"old wal").unwrap();
        fs::create_dir(&dst).unwrap();
        std::os::unix::fs::symlink(&wal, dst.join("pg_wal")).unwrap();
        sync_tree(&src, &dst, &|_| false, &[], &BTreeSet::new(), None, 1).unwrap();
        assert_eq!(fs::read_link(dst.join("pg_wal")).unwrap(), wal);
        assert!(!wal.join("000000010000000000000001").exists() && wal.join("archive_status").is_dir());
    }

    #[test]
    fn horizon_and_refusals_are_barmans() {
        let info = |begin: &str, systemid: u64| {
            let mut i = BackupInfo::new("20261130T150000".parse().unwrap());
            i.begin_time = Some(begin.parse().unwrap());
            i.systemid = Some(barman_replication::SystemId(systemid));
            i
        };
        let new = info("2026-11-30 15:00:00+00:00", 7);
        let old = info("2026-11-29 15:00:00+01:00", 7);
        let h = safe_horizon(&new, Some(&old)).unwrap();
        assert_eq!((h.at, h.begin_time.to_string()), (t(1_795_960_800), "2026-11-29 15:00:00+01:00".to_owned()));
        assert_eq!(safe_horizon(&new, None), None);
        assert_eq!(safe_horizon(&new, Some(&info("2026-11-29 15:00:00+01:00", 8))), None, "another system");
        let parsed = previous_restore(&new, &old.to_bytes().unwrap()).unwrap();
        assert_eq!(parsed.begin_time, old.begin_time);

        let mut plain = BackupInfo::new("20261130T150000".parse().unwrap());
        plain.compression = Some("None".into());
        assert_eq!(refusal(&plain, None), None);
        assert_eq!(refusal(&plain, Some(StagingLocation::Local)), None);
        let not_plain = "Cannot restore a backup locally with delta mode when the backup is not plain.";
        let mut zstd = plain.clone();
        zstd.compression = Some("zstd".into());
        assert_eq!(refusal(&zstd, None), Some(not_plain));
        assert_eq!(refusal(&zstd, Some(StagingLocation::Local)), None);
        let mut incremental = plain.clone();
        incremental.parent_backup_id = Some("20261129T150000".parse().unwrap());
        assert_eq!(refusal(&incremental, None), Some(not_plain));
        assert_eq!(
            refusal(&plain, Some(StagingLocation::Remote)),
            Some("Cannot restore a backup remotely with delta mode when 'staging_location=remote'.")
        );
    }

    #[test]
    fn filter_patterns_are_literal() {
        assert_eq!(filter_pattern(Path::new("base/1/1259")), "/base/1/1259");
        assert_eq!(filter_pattern(Path::new("conf/a[1]*.conf")), "/conf/a\\[1]\\*.conf");
        assert_eq!(filter_pattern(Path::new("a\\b")), "/a\\b");
    }
}
