//! Writes that survive a crash — the single home of durability in barman-rs (STYLE.md,
//! "Durability has one home"; DESIGN.md §3).
//!
//! The recipe is always the same: write to a temporary name **in the target's directory**
//! (so the final `rename` never crosses a filesystem), `fsync` the file, `rename` it over the
//! target (atomic on POSIX: a reader sees the old or the new content, never a mix), then
//! `fsync` the directory so the rename itself is on disk. Barman does the same for
//! `backup.info` (`FieldListFile.save()` writes `<file>.tmp`, renames, `fsync_dir`).
//!
//! Temporary names are `.<target name>.<pid>.<n>.tmp`: hidden, unique per process and call,
//! and ending in `.tmp`, which Barman's own scanners skip (`rebuild-xlogdb` ignores `*.tmp` in
//! `wals/`, the archiver ignores `*.tmp` in `incoming/`), so a leftover after a crash never
//! looks like catalog content to either tool.
//!
//! Permission bits are set explicitly after creation, so the result does not depend on the
//! process umask: catalog files are [`FILE_MODE`] (0600) and directories [`DIR_MODE`] (0700).
//! (Barman itself leaves both to the umask, typically 0644/0755; it reads either.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{StorageError, StorageOp};

/// Mode of every catalog file barman-rs creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every catalog directory barman-rs creates.
pub const DIR_MODE: u32 = 0o700;

/// Size of [`AtomicFile`]'s write buffer.
const BUFFER_SIZE: usize = 64 * 1024;

/// Makes temporary names unique within this process. Process-wide on purpose: it holds no
/// state anyone reads back, only a number that must differ between two concurrent writers
/// of the same target (the PID separates processes).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err(op: StorageOp, path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::io(op, path, source)
}

/// The directory holding `path` (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically and durably, with permission bits `mode`: after a
/// crash `path` holds either its previous content or `bytes`, never a torn mix.
///
/// The parent directory must exist (see [`create_dir_all_durable`]).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StorageError> {
    let mut file = AtomicFile::create(path, mode)?;
    file.write_bytes(bytes)?;
    file.commit()
}

/// Makes the directory entries of `dir` durable: after a `rename`, `create` or `unlink` in
/// `dir`, the change is on disk only once the directory itself has been fsynced.
pub fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    let handle = File::open(dir).map_err(io_err(StorageOp::Open, dir))?;
    handle.sync_all().map_err(io_err(StorageOp::SyncDir, dir))
}

/// Makes everything written on the filesystem of `handle` durable — every file's data and
/// every directory entry — with one `syncfs(2)`, as `pg_basebackup --sync-method=syncfs`.
/// `path` names `handle` in errors.
///
/// For trees of many files written in one go (a plain backup, a restore): fsyncing each file
/// as it is closed makes the writer wait for the disk once per file; one flush at the end lets
/// the kernel write back in bulk. `syncfs` reports writeback errors on that filesystem since
/// `handle` was opened (Linux ≥ 5.8), so open it before the first write: then a failed write
/// is never taken for durable data.
pub fn sync_filesystem_of(handle: &File, path: &Path) -> Result<(), StorageError> {
    rustix::fs::syncfs(handle).map_err(|e| StorageError::io(StorageOp::SyncDir, path, e.into()))
}

/// Renames `from` to `to` and fsyncs the directories involved (both, when they differ), so
/// that after a crash the file is found under exactly one of the two names.
///
/// `from` should already be durable (fsynced) — a rename makes a name durable, not content.
pub fn durable_rename(from: &Path, to: &Path) -> Result<(), StorageError> {
    fs::rename(from, to).map_err(|source| StorageError::Rename {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })?;
    let to_dir = parent_dir(to);
    fsync_dir(to_dir)?;
    let from_dir = parent_dir(from);
    if from_dir != to_dir {
        fsync_dir(from_dir)?;
    }
    Ok(())
}

/// Creates `path` and any missing ancestors with permission bits `mode` (use [`DIR_MODE`]),
/// fsyncing each new directory's parent so the creation survives a crash. Existing
/// directories are left as they are, permissions included.
pub fn create_dir_all_durable(path: &Path, mode: u32) -> Result<(), StorageError> {
    // Collect the missing ancestors, deepest first.
    let mut missing = Vec::new();
    let mut cursor = Some(path);
    while let Some(dir) = cursor {
        if dir.as_os_str().is_empty() {
            break;
        }
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(StorageError::io(
                    StorageOp::CreateDir,
                    dir,
                    io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a directory"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(dir),
            Err(e) => return Err(StorageError::io(StorageOp::Metadata, dir, e)),
        }
        cursor = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => {
                fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                    .map_err(io_err(StorageOp::SetPermissions, dir))?;
                fsync_dir(parent_dir(dir))?;
            }
            // Another process won the race; fine as long as it made a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(StorageError::io(StorageOp::CreateDir, dir, e)),
        }
    }
    Ok(())
}

/// Appends `bytes` to `path` (creating it with `mode` if missing) and fsyncs it before
/// returning; when the file is new, its directory is fsynced too.
///
/// This is how Barman grows `<server>-xlog.db` (open in append mode, write, `fsync`). A crash
/// mid-append can leave a partial last line — readers of append-only files must cope. A failed
/// write (a full disk) does not: the file is cut back to its length before the append.
pub fn append_durable(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StorageError> {
    let (mut file, created) = match OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(f) => {
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io_err(StorageOp::SetPermissions, path))?;
            (f, true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let f = OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(io_err(StorageOp::Open, path))?;
            (f, false)
        }
        Err(e) => return Err(StorageError::io(StorageOp::Create, path, e)),
    };
    let before = file.metadata().map_err(io_err(StorageOp::Metadata, path))?.len();
    if let Err(e) = file.write_all(bytes) {
        // ENOSPC after a partial write would otherwise leave a torn last line behind.
        let _ = file.set_len(before);
        return Err(StorageError::io(StorageOp::Write, path, e));
    }
    file.sync_data().map_err(io_err(StorageOp::SyncFile, path))?;
    if created {
        fsync_dir(parent_dir(path))?;
    }
    Ok(())
}

/// A file being written under a temporary name, which replaces its target only on
/// [`commit`](AtomicFile::commit).
///
/// Call order: [`create`](AtomicFile::create) → any number of
/// [`write_bytes`](AtomicFile::write_bytes) (or `io::Write` calls, e.g. under a compressor) →
/// [`commit`](AtomicFile::commit). Dropping it without committing (an error, a panic, a
/// cancelled backup) removes the temporary file, so the target is never half written and no
/// litter is left behind.
#[derive(Debug)]
pub struct AtomicFile {
    /// `None` only after commit or while dropping.
    writer: Option<BufWriter<File>>,
    temp_path: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Creates a temporary file next to `target` with permission bits `mode`.
    ///
    /// The parent directory must exist. Nothing happens to `target` until
    /// [`commit`](AtomicFile::commit).
    pub fn create(target: &Path, mode: u32) -> Result<Self, StorageError> {
        let file_name = target.file_name().ok_or_else(|| {
            StorageError::io(
                StorageOp::Create,
                target,
                io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
            )
        })?;
        let dir = parent_dir(target);
        loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut temp_name = std::ffi::OsString::from(".");
            temp_name.push(file_name);
            temp_name.push(format!(".{}.{n}.tmp", std::process::id()));
            let temp_path = dir.join(temp_name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&temp_path)
            {
                Ok(file) => {
                    let me = AtomicFile {
                        writer: Some(BufWriter::with_capacity(BUFFER_SIZE, file)),
                        temp_path,
                        target: target.to_path_buf(),
                    };
                    // Exact bits regardless of umask.
                    me.file()
                        .set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(io_err(StorageOp::SetPermissions, &me.temp_path))?;
                    return Ok(me);
                }
                // A leftover from a crashed process that had our PID: pick the next number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StorageError::io(StorageOp::Create, temp_path, e)),
            }
        }
    }

    fn file(&self) -> &File {
        self.writer.as_ref().expect("AtomicFile used after commit").get_ref()
    }

    /// The path this file will have once committed.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The temporary path being written.
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Appends `bytes`; errors name the temporary path.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let temp = &self.temp_path;
        self.writer
            .as_mut()
            .expect("AtomicFile used after commit")
            .write_all(bytes)
            .map_err(|e| StorageError::io(StorageOp::Write, temp, e))
    }

    /// Flushes, fsyncs, renames over the target and fsyncs the directory. Only after this
    /// returns `Ok` is the new content guaranteed to be what a reader (or a restart) sees.
    pub fn commit(mut self) -> Result<(), StorageError> {
        let writer = self.writer.take().expect("AtomicFile committed twice");
        let file = writer.into_inner().map_err(|e| {
            let (source, writer) = e.into_parts();
            // Put it back so Drop removes the temporary file.
            self.writer = Some(writer);
            StorageError::io(StorageOp::Write, &self.temp_path, source)
        })?;
        if let Err(source) = file.sync_all() {
            self.writer = Some(BufWriter::new(file));
            return Err(StorageError::io(StorageOp::SyncFile, &self.temp_path, source));
        }
        drop(file);
        if let Err(source) = fs::rename(&self.temp_path, &self.target) {
            let _ = fs::remove_file(&self.temp_path);
            return Err(StorageError::Rename {
                from: self.temp_path.clone(),
                to: self.target.clone(),
                source,
            });
        }
        // The temporary name no longer exists; nothing for Drop to clean.
        fsync_dir(parent_dir(&self.target))
    }
}

impl Write for AtomicFile {
    /// Writes through the buffer. The error keeps its `io::ErrorKind` and carries a
    /// [`StorageError`] naming the temporary path.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let temp = &self.temp_path;
        self.writer
            .as_mut()
            .expect("AtomicFile used after commit")
            .write(buf)
            .map_err(|e| io::Error::new(e.kind(), StorageError::io(StorageOp::Write, temp, e)))
    }

    fn flush(&mut self) -> io::Result<()> {
        let temp = &self.temp_path;
        self.writer
            .as_mut()
            .expect("AtomicFile used after commit")
            .flush()
            .map_err(|e| io::Error::new(e.kind(), StorageError::io(StorageOp::Write, temp, e)))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            // Discard buffered bytes without writing them; close, then unlink.
            let (file, _unwritten) = writer.into_parts();
            drop(file);
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn atomic_write_replaces_content_with_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pg-xlog.db");
        atomic_write(&target, b"first\n", FILE_MODE).unwrap();
        atomic_write(&target, b"second\n", FILE_MODE).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"second\n");
        assert_eq!(mode_of(&target), 0o600);
        assert_eq!(names_in(dir.path()), ["pg-xlog.db"]);
        atomic_write(&target, b"x", 0o644).unwrap();
        assert_eq!(mode_of(&target), 0o644);
    }

    #[test]
    fn atomic_file_streams_and_commits() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("backup_manifest");
        let mut file = AtomicFile::create(&target, FILE_MODE).unwrap();
        let temp = file.temp_path().to_path_buf();
        assert!(temp.file_name().unwrap().to_str().unwrap().ends_with(".tmp"));
        assert_eq!(temp.parent(), target.parent());
        for chunk in 0..100u8 {
            file.write_bytes(&[chunk; 1000]).unwrap();
        }
        write!(file, "end").unwrap();
        assert!(!target.exists());
        file.commit().unwrap();
        let bytes = fs::read(&target).unwrap();
        assert_eq!(bytes.len(), 100_003);
        assert!(bytes.ends_with(b"end"));
        assert!(!temp.exists());
        assert_eq!(names_in(dir.path()), ["backup_manifest"]);
    }

    #[test]
    fn atomic_file_drop_without_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("meta-file");
        atomic_write(&target, b"old", FILE_MODE).unwrap();
        {
            let mut file = AtomicFile::create(&target, FILE_MODE).unwrap();
            file.write_bytes(&vec![7u8; 200_000]).unwrap(); // past the buffer: really on disk
            assert_eq!(names_in(dir.path()).len(), 2);
        }
        assert_eq!(names_in(dir.path()), ["meta-file"]);
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("missing-dir").join("file");
        let err = atomic_write(&target, b"x", FILE_MODE).unwrap_err();
        assert!(err.is_not_found());
        let text = err.to_string();
        assert!(text.contains("missing-dir"), "{text}");
        assert!(text.starts_with("cannot create"), "{text}");
    }

    #[test]
    fn create_dir_all_durable_sets_modes_on_new_dirs_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let deep = dir.path().join("pg/wals/0000000100000000");
        create_dir_all_durable(&deep, DIR_MODE).unwrap();
        assert!(deep.is_dir());
        assert_eq!(mode_of(&dir.path().join("pg")), 0o700);
        assert_eq!(mode_of(&deep), 0o700);
        assert_eq!(mode_of(dir.path()), 0o755);
        create_dir_all_durable(&deep, DIR_MODE).unwrap(); // idempotent
        let file = dir.path().join("plain");
        fs::write(&file, b"").unwrap();
        assert!(create_dir_all_durable(&file.join("sub"), DIR_MODE).is_err());
        assert!(create_dir_all_durable(&file, DIR_MODE).is_err());
    }

    #[test]
    fn append_durable_creates_then_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg-xlog.db");
        append_durable(&path, b"a\n", FILE_MODE).unwrap();
        append_durable(&path, b"b\n", FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"a\nb\n");
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn durable_rename_across_directories() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("incoming");
        let b = dir.path().join("wals");
        create_dir_all_durable(&a, DIR_MODE).unwrap();
        create_dir_all_durable(&b, DIR_MODE).unwrap();
        atomic_write(&a.join("seg"), b"wal", FILE_MODE).unwrap();
        durable_rename(&a.join("seg"), &b.join("seg")).unwrap();
        assert_eq!(fs::read(b.join("seg")).unwrap(), b"wal");
        let err = durable_rename(&a.join("seg"), &b.join("seg2")).unwrap_err();
        assert!(matches!(err, StorageError::Rename { .. }));
        assert!(err.is_not_found());
    }
}
