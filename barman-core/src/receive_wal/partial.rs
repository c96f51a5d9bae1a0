//! The segment being received: `streaming/<segment>.partial`, as pg_receivewal keeps it.
//!
//! The file is preallocated to the full segment size with real zero bytes (not a sparse
//! `set_len`), so a full disk shows up when the segment is opened, not halfway through a
//! transaction's WAL. Bytes are written at their segment offset; [`PartialSegment::sync`]
//! makes them durable (only then may the receiver report them flushed); a complete segment
//! is validated as it arrives and [`PartialSegment::complete`] renames it to its final name
//! only if every record checked out.
//!
//! Segments received in order on one timeline are validated as one stream: the [`Carry`]
//! [`PartialSegment::complete`] returns goes into [`PartialSegment::open`] of the next one, so
//! the bytes at a segment's start that finish a record begun in the previous segment get their
//! CRC checked instead of being skipped.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use barman_replication::{Lsn, SystemId};

use crate::storage::durable::{durable_rename, fsync_dir, FILE_MODE};
use crate::storage::{StorageError, StorageOp};
use crate::wal::{Carry, ExpectedSegment, SegmentValidator, WalSegmentName, WalSegmentSize};

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
    /// its directory, ready to receive the segment from its first byte. `previous` is the carry
    /// of the segment just completed when this one directly follows it on the same timeline in
    /// the same stream; `None` (a new stream, a taken-over `.partial`) skips the bytes
    /// finishing a record begun before, as nothing of that record was seen.
    pub fn open(
        dir: &Path,
        name: WalSegmentName,
        size: WalSegmentSize,
        system_id: Option<SystemId>,
        previous: Option<Carry>,
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
        if let Some(carry) = previous {
            expected = expected.after(carry);
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
    /// final name. Returns the final path and the carry to validate the next segment with
    /// (`None` when this one's WAL ended before its last byte, so no WAL can follow it).
    pub fn complete(mut self) -> Result<(PathBuf, Option<Carry>), ReceiveWalError> {
        debug_assert!(self.is_full());
        self.sync()?;
        let report = self.validator.finish().map_err(ReceiveWalError::Wal)?;
        let final_path = self.path.with_file_name(self.name.to_string());
        durable_rename(&self.path, &final_path)?;
        Ok((final_path, report.carry()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalError;

    const MIB: WalSegmentSize = WalSegmentSize::MIN;

    /// The decompressed real capture `file` of `major` (`testdata/wal/README.md`).
    fn capture(major: u32, file: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/wal")
            .join(major.to_string())
            .join(format!("{file}.zst"));
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        zstd::decode_all(&raw[..]).expect("zstd")
    }

    /// The three consecutive segments of `major`'s captures holding one 2 MiB record: it
    /// starts in the first, fills the second and ends in the third (the 2nd to 4th captures by
    /// name, as in the validator's tests).
    fn big_record_segments(major: u32) -> Vec<String> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/wal").join(major.to_string());
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("testdata dir")
            .map(|e| e.expect("dir entry").file_name().into_string().expect("utf-8 name"))
            .filter_map(|n| n.strip_suffix(".zst").map(str::to_owned))
            .collect();
        names.sort();
        names[1..4].to_vec()
    }

    /// Receives `data` as segment `name` the way the receiver does: open, write in chunks that
    /// do not align with pages, complete.
    fn receive(
        dir: &Path,
        name: &str,
        data: &[u8],
        previous: Option<Carry>,
    ) -> Result<(PathBuf, Option<Carry>), ReceiveWalError> {
        let mut seg = PartialSegment::open(dir, name.parse().expect("name"), MIB, None, previous)?;
        for chunk in data.chunks(3 * 8192 + 5) {
            seg.write(chunk)?;
        }
        seg.complete()
    }

    #[test]
    fn a_corrupted_continuation_in_a_streamed_segment_is_caught() {
        for major in [13, 14, 15, 16, 17, 18] {
            let names = big_record_segments(major);
            let [first, second, third] = [&names[0], &names[1], &names[2]].map(String::as_str);
            let (one, two) = (capture(major, first), capture(major, second));
            let mut three = capture(major, third);
            // A byte of the big record's tail, right after the third segment's long page header:
            // bytes that finish a record begun in an earlier segment.
            let dir = tempfile::tempdir().expect("tempdir");
            let (_, carry) = receive(dir.path(), first, &one, None).expect("first");
            let (_, carry) = receive(dir.path(), second, &two, carry).expect("second");
            let carry = carry.expect("the second segment is complete");
            let remaining = carry.expected_continuation().expect("the record continues");
            assert!(remaining > 1000, "{major}: {remaining}");
            three[1000] ^= 0x01;

            // Alone (a new stream starting there), the continuation cannot be checked.
            let alone = tempfile::tempdir().expect("tempdir");
            receive(alone.path(), third, &three, None).expect("unchecked continuation accepted");

            // Received after the segments it continues, the record's CRC covers it.
            let err = receive(dir.path(), third, &three, Some(carry.clone())).unwrap_err();
            assert!(
                matches!(err, ReceiveWalError::Wal(WalError::CrcMismatch { .. })),
                "{major}: {err}"
            );
            assert!(dir.path().join(format!("{third}.partial")).exists(), "not renamed");
            assert!(!dir.path().join(third).exists(), "not renamed");

            // And the intact segment passes in sequence.
            three[1000] ^= 0x01;
            receive(dir.path(), third, &three, Some(carry)).expect("intact third");
        }
    }
}
