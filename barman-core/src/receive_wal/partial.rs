//! The segment being received: `streaming/<segment>.partial`, as pg_receivewal keeps it.
//!
//! The file is preallocated to the full segment size with real zero bytes (not a sparse
//! `set_len`), so a full disk shows up when the segment is opened, not halfway through a
//! transaction's WAL. Bytes are written at their segment offset; [`PartialSegment::sync`]
//! makes them durable (only then may the receiver report them flushed); a complete segment
//! is validated as it arrives and [`PartialSegment::complete`] renames it to its final name
//! only if every record checked out.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use barman_replication::{Lsn, SystemId};

use crate::storage::durable::{durable_rename, fsync_dir, FILE_MODE};
use crate::storage::{StorageError, StorageOp};
use crate::wal::{ExpectedSegment, SegmentValidator, WalSegmentName, WalSegmentSize};

use super::ReceiveWalError;

/// An open `<segment>.partial`.
pub struct PartialSegment {
    name: WalSegmentName,
    size: WalSegmentSize,
    start: Lsn,
    path: PathBuf,
    file: File,
    /// Bytes written from the segment's start (the receiver always starts a segment at 0).
    written: u64,
    /// Bytes known to be on disk.
    synced: u64,
    validator: SegmentValidator,
}

impl std::fmt::Debug for PartialSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialSegment").field("path", &self.path).field("written", &self.written).finish_non_exhaustive()
    }
}

impl PartialSegment {
    /// Opens (or creates) `<dir>/<name>.partial`, zero-filled to the segment size, fsynced with
    /// its directory, ready to receive the segment from its first byte.
    pub fn open(
        dir: &Path,
        name: WalSegmentName,
        size: WalSegmentSize,
        system_id: Option<SystemId>,
    ) -> Result<PartialSegment, ReceiveWalError> {
        let path = dir.join(format!("{name}.partial"));
        let p = path.clone();
        let io = move |op| {
            let p = p.clone();
            move |e| StorageError::io(op, p, e)
        };
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(FILE_MODE).open(&path).map_err(io(StorageOp::Create))?;
        let len = file.metadata().map_err(io(StorageOp::Metadata))?.len();
        if len != size.bytes() {
            // Fresh file, or a leftover of another size: either way it is rewritten from 0.
            let zeros = vec![0u8; 1 << 20];
            file.set_len(0).map_err(io(StorageOp::Write))?;
            let mut off = 0;
            while off < size.bytes() {
                let n = (size.bytes() - off).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], off).map_err(io(StorageOp::Write))?;
                off += n as u64;
            }
        }
        file.sync_all().map_err(io(StorageOp::SyncFile))?;
        fsync_dir(dir)?;
        let mut expected = ExpectedSegment::new(name, size);
        if let Some(id) = system_id {
            expected = expected.with_system_id(id);
        }
        let validator = SegmentValidator::new(expected).map_err(ReceiveWalError::Wal)?;
        let start = name.start_lsn(size).map_err(|e| ReceiveWalError::Invalid(e.to_string()))?;
        Ok(PartialSegment { name, size, start, path, file, written: 0, synced: 0, validator })
    }

    /// The segment's name.
    pub fn name(&self) -> WalSegmentName {
        self.name
    }

    /// The LSN of the segment's first byte.
    pub fn start(&self) -> Lsn {
        self.start
    }

    /// The LSN after the last byte written.
    pub fn end(&self) -> Lsn {
        Lsn(self.start.0 + self.written)
    }

    /// The LSN after the last byte known durable.
    pub fn synced_end(&self) -> Lsn {
        Lsn(self.start.0 + self.synced)
    }

    /// How many bytes still fit.
    pub fn room(&self) -> u64 {
        self.size.bytes() - self.written
    }

    /// Writes `data` (which must fit) at the current position, and checks it as WAL.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ReceiveWalError> {
        debug_assert!(data.len() as u64 <= self.room());
        self.file
            .write_all_at(data, self.written)
            .map_err(|e| StorageError::io(StorageOp::Write, &self.path, e))?;
        self.written += data.len() as u64;
        self.validator.feed(data).map_err(ReceiveWalError::Wal)
    }

    /// Makes everything written durable.
    pub fn sync(&mut self) -> Result<(), ReceiveWalError> {
        if self.synced < self.written {
            self.file.sync_data().map_err(|e| StorageError::io(StorageOp::SyncFile, &self.path, e))?;
            self.synced = self.written;
        }
        Ok(())
    }

    /// Whether the whole segment has been received.
    pub fn is_full(&self) -> bool {
        self.written == self.size.bytes()
    }

    /// Removes a segment nothing was written to (durably: the directory is fsynced).
    pub fn discard(self) -> Result<(), ReceiveWalError> {
        debug_assert_eq!(self.written, 0);
        drop(self.file);
        std::fs::remove_file(&self.path).map_err(|e| StorageError::io(StorageOp::Remove, &self.path, e))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fsync_dir(dir)?;
        Ok(())
    }

    /// Finishes a full segment: its WAL must validate; then fsync and a durable rename to its
    /// final name. Returns the final path.
    pub fn complete(mut self) -> Result<PathBuf, ReceiveWalError> {
        debug_assert!(self.is_full());
        self.sync()?;
        self.validator.finish().map_err(ReceiveWalError::Wal)?;
        let final_path = self.path.with_file_name(self.name.to_string());
        durable_rename(&self.path, &final_path)?;
        Ok(final_path)
    }
}
