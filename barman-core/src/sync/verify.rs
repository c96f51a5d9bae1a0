//! What `sync-wals` checks before a WAL file copied from the primary enters this node's
//! catalog: the primary's archive is trusted no more than PostgreSQL's `archive_command`.
//!
//! Each file is read whole, decompressed in memory (as stored: the algorithm is recognised
//! from its magic bytes as `get-wal` does, `.partial` files are plain) and checked as
//! `archive-wal` checks what it archives ([`ContentCheck`]): segments strictly, `.partial`
//! files up to their last good record, `.history` files parsed, `.backup` files bounded.
//! Segments are checked in order, each directly following one checked before it on the same
//! timeline continuing from its [`Carry`], so that a record spanning both gets its CRC checked
//! across them (as `archive-wal` does within a batch).

use std::io::Read as _;
use std::path::Path;

use barman_replication::SystemId;

use super::SyncError;
use crate::archive_wal::{Checked, ContentCheck, Refusal};
use crate::compression::WalCompression;
use crate::storage::{StorageError, StorageOp};
use crate::wal::{Carry, ExpectedSegment, SegmentValidator, WalFileName, WalSegmentName, WalSegmentSize};

/// Offset of `xlp_seg_size` in a segment's first (long) page header.
const SEG_SIZE_OFFSET: usize = 32;
/// The largest decompressed file read: the largest segment size PostgreSQL allows, plus one
/// byte to tell a longer file.
const MAX_DECOMPRESSED: u64 = (1 << 30) + 1;

/// Checks the files of one `sync-wals` run, in WAL order.
pub struct WalVerifier {
    compression: WalCompression,
    system_id: Option<SystemId>,
    /// The segment checked just before, and the state its WAL leaves for the next one.
    previous: Option<(WalSegmentName, Carry)>,
}

impl WalVerifier {
    /// A verifier reading files stored with `compression`'s rules, requiring `system_id` in
    /// segment headers when known.
    pub fn new(compression: WalCompression, system_id: Option<SystemId>) -> Self {
        WalVerifier { compression, system_id, previous: None }
    }

    /// Checks the file `name` at `path`. The outer error is a failure to read it (this node's
    /// trouble); the inner one is the file's own.
    pub fn check(&mut self, name: WalFileName, path: &Path) -> Result<Result<Checked, Refusal>, SyncError> {
        let previous = self.previous.take();
        let stored = std::fs::read(path).map_err(|e| StorageError::io(StorageOp::Read, path, e))?;
        let algorithm = match name {
            WalFileName::Partial(_) => None,
            _ => self.compression.identify_archived(&stored[..stored.len().min(self.compression.magic_len())]),
        };
        let plain = match self.decompress(algorithm, stored) {
            Ok(plain) => plain,
            Err(why) => return Ok(Err(Refusal::Corrupt(why))),
        };
        let checked = match (name, previous) {
            (WalFileName::Segment(segment), Some((before, carry))) => match segment_size(&plain) {
                Some(size) if before.timeline() == segment.timeline() && before.next(size) == Some(segment) => {
                    self.continued(segment, size, carry, &plain)
                }
                _ => self.alone(name, &plain),
            },
            _ => self.alone(name, &plain),
        };
        if let (WalFileName::Segment(segment), Ok(checked)) = (name, &checked) {
            self.previous = checked.carry.clone().map(|carry| (segment, carry));
        }
        Ok(checked)
    }

    fn decompress(&self, algorithm: Option<crate::compression::Compression>, stored: Vec<u8>) -> Result<Vec<u8>, String> {
        let Some(algorithm) = algorithm else { return Ok(stored) };
        let reader = self
            .compression
            .decoder(Some(algorithm), std::io::Cursor::new(stored))
            .map_err(|e| format!("cannot decompress ({algorithm}): {e}"))?;
        let mut plain = Vec::new();
        reader
            .take(MAX_DECOMPRESSED)
            .read_to_end(&mut plain)
            .map_err(|e| format!("cannot decompress ({algorithm}): {e}"))?;
        if plain.len() as u64 >= MAX_DECOMPRESSED {
            return Err(format!("decompresses to more than {} bytes", MAX_DECOMPRESSED - 1));
        }
        Ok(plain)
    }

    /// [`ContentCheck`], as `archive-wal` checks a file on its own.
    fn alone(&self, name: WalFileName, plain: &[u8]) -> Result<Checked, Refusal> {
        let mut check = ContentCheck::new(name, self.system_id, None, Some(plain.len() as u64));
        check.feed(plain);
        check.finish()
    }

    /// A segment validated as the continuation of the one before it.
    fn continued(&self, segment: WalSegmentName, size: WalSegmentSize, carry: Carry, plain: &[u8]) -> Result<Checked, Refusal> {
        let mut expected = ExpectedSegment::new(segment, size).after(carry);
        if let Some(id) = self.system_id {
            expected = expected.with_system_id(id);
        }
        let mut validator = SegmentValidator::new(expected)?;
        validator.feed(plain)?;
        Checked::from_segment_report(segment, &validator.finish()?)
    }
}

/// The segment size a segment's long page header states, if it states a valid one.
fn segment_size(plain: &[u8]) -> Option<WalSegmentSize> {
    let bytes = plain.get(SEG_SIZE_OFFSET..SEG_SIZE_OFFSET + 4)?;
    WalSegmentSize::new(u64::from(u32::from_le_bytes(bytes.try_into().ok()?))).ok()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::compression::Compression;

    /// The captures of `testdata/wal/18` (1 MiB segments): 0C holds the start of a 2 MiB
    /// record, 0D nothing but its continuation, 0E its end.
    fn capture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/wal/18").join(format!("{name}.zst"))
    }

    fn plain(name: &str) -> Vec<u8> {
        let file = std::fs::File::open(capture(name)).unwrap();
        let mut out = Vec::new();
        WalCompression::none().decoder(Some(Compression::Zstd), file).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    const C: &str = "00000001000000000000000C";
    const D: &str = "00000001000000000000000D";
    const E: &str = "00000001000000000000000E";

    #[test]
    fn compressed_segments_in_a_row_pass() {
        let mut v = WalVerifier::new(WalCompression::none(), None);
        for name in [C, D, E] {
            let checked = v.check(name.parse().unwrap(), &capture(name)).unwrap();
            assert!(checked.is_ok(), "{name}: {checked:?}");
        }
    }

    #[test]
    fn a_flipped_byte_in_a_record_spanning_segments_refuses_where_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut middle = plain(D);
        middle[300_000] ^= 0x40;
        let bad = dir.path().join(D);
        std::fs::write(&bad, &middle).unwrap();
        let mut v = WalVerifier::new(WalCompression::none(), None);
        assert!(v.check(C.parse().unwrap(), &capture(C)).unwrap().is_ok());
        // The continuation bytes carry no CRC of their own: the record's, at its end, fails.
        assert!(v.check(D.parse().unwrap(), &bad).unwrap().is_ok());
        let refused = v.check(E.parse().unwrap(), &capture(E)).unwrap();
        assert!(matches!(&refused, Err(Refusal::Corrupt(why)) if why.contains("CRC")), "{refused:?}");
        // Alone, 0E cannot tell: the record's start is not known.
        assert!(WalVerifier::new(WalCompression::none(), None).check(E.parse().unwrap(), &capture(E)).unwrap().is_ok());
    }

    #[test]
    fn a_continuation_from_another_system_is_refused_as_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = plain(D);
        other[24] ^= 0x01; // xlp_sysid
        let path = dir.path().join(D);
        std::fs::write(&path, &other).unwrap();
        let mut v = WalVerifier::new(WalCompression::none(), None);
        assert!(v.check(C.parse().unwrap(), &capture(C)).unwrap().is_ok());
        let refused = v.check(D.parse().unwrap(), &path).unwrap();
        assert!(matches!(refused, Err(Refusal::Foreign { .. })), "{refused:?}");
    }

    #[test]
    fn a_corrupt_compressed_stream_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = std::fs::read(capture(C)).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0xFF;
        let bad = dir.path().join(C);
        std::fs::write(&bad, &bytes).unwrap();
        let mut v = WalVerifier::new(WalCompression::none(), None);
        assert!(matches!(v.check(C.parse().unwrap(), &bad).unwrap(), Err(Refusal::Corrupt(_))));
    }

    #[test]
    fn history_files_must_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000002.history");
        std::fs::write(&path, b"1\t0/C03588\tno recovery target specified\n").unwrap();
        let mut v = WalVerifier::new(WalCompression::none(), None);
        assert!(v.check("00000002.history".parse().unwrap(), &path).unwrap().is_ok());
        std::fs::write(&path, b"not a history file\n").unwrap();
        assert!(v.check("00000002.history".parse().unwrap(), &path).unwrap().is_err());
    }
}
