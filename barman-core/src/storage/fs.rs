//! Plain filesystem calls that name their path in every error (in the manner of cargo's
//! `cargo-util/src/paths.rs`). Durable writes are in [`super::durable`].

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{StorageError, StorageOp};

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>, StorageError> {
    fs::read(path).map_err(|e| StorageError::io(StorageOp::Read, path, e))
}

/// Reads a whole file, or `None` when it does not exist.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(StorageOp::Read, path, e)),
    }
}

/// The names in a directory, sorted (byte order), or an empty list when it does not exist.
pub fn list_dir(path: &Path) -> Result<Vec<OsString>, StorageError> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io(StorageOp::Read, path, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(StorageOp::Read, path, e))?;
        names.push(entry.file_name());
    }
    names.sort();
    Ok(names)
}

/// True when `path` exists (following symlinks); errors other than "not found" are reported.
pub fn exists(path: &Path) -> Result<bool, StorageError> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StorageError::io(StorageOp::Metadata, path, e)),
    }
}

/// Removes a file; a missing file is not an error (the goal is reached).
pub fn remove_file_if_exists(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(StorageOp::Remove, path, e)),
    }
}

/// Opens `path` for reading and writing, creating it with exactly `mode` when missing — how
/// Barman opens lock files (`os.open(O_CREAT | O_RDWR, 0o600)`).
pub fn open_or_create_rw(path: &Path, mode: u32) -> Result<File, StorageError> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| StorageError::io(StorageOp::SetPermissions, path, e))?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io(StorageOp::Open, path, e)),
        Err(e) => Err(StorageError::io(StorageOp::Create, path, e)),
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read (short only
/// at the end). For the magic bytes at the start of a file, and chunked comparisons.
pub fn read_full(r: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
