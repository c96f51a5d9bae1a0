//! Where streaming resumes, decided from what `streaming/` already holds (reference §4.7,
//! pg_receivewal's `FindStreamingStart`).

use std::path::Path;

use barman_replication::{Lsn, TimelineId};

use crate::storage::fs::list_dir;
use crate::wal::{WalFileName, WalSegmentSize};

use super::ReceiveWalError;

/// A segment-aligned start position and its timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartPoint {
    /// The first LSN to ask for (a segment start).
    pub lsn: Lsn,
    /// The timeline to stream.
    pub timeline: TimelineId,
}

/// The newest segment in `dir` decides: after it if it is complete (and of full size), at its
/// start if it is `.partial`. Ties on the segment number go to the higher timeline, then to
/// the complete file. `None` when the directory holds no segment.
pub fn start_position(dir: &Path, size: WalSegmentSize) -> Result<Option<StartPoint>, ReceiveWalError> {
    let mut best: Option<(u64, TimelineId, bool)> = None;
    for entry in list_dir(dir)? {
        let Some(name) = entry.to_str() else { continue };
        let (seg, partial) = match name.parse::<WalFileName>() {
            Ok(WalFileName::Segment(s)) => {
                // A complete segment of the wrong size is ignored, as pg_receivewal does.
                match std::fs::metadata(dir.join(name)) {
                    Ok(m) if m.len() == size.bytes() => (s, false),
                    _ => continue,
                }
            }
            Ok(WalFileName::Partial(s)) => (s, true),
            _ => continue,
        };
        let Ok(segno) = seg.segno(size) else { continue };
        let key = (segno, seg.timeline(), !partial);
        if best.is_none_or(|b| key > b) {
            best = Some(key);
        }
    }
    Ok(best.map(|(segno, timeline, complete)| {
        let segno = if complete { segno + 1 } else { segno };
        StartPoint { lsn: Lsn(segno * size.bytes()), timeline }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_segment_decides() {
        let dir = tempfile::tempdir().unwrap();
        let size = WalSegmentSize::new(1 << 20).unwrap();
        assert_eq!(start_position(dir.path(), size).unwrap(), None);
        let full = vec![0u8; 1 << 20];
        std::fs::write(dir.path().join("000000010000000000000003"), &full).unwrap();
        assert_eq!(start_position(dir.path(), size).unwrap(), Some(StartPoint { lsn: Lsn(4 << 20), timeline: TimelineId(1) }));
        std::fs::write(dir.path().join("000000010000000000000004.partial"), &full).unwrap();
        assert_eq!(start_position(dir.path(), size).unwrap(), Some(StartPoint { lsn: Lsn(4 << 20), timeline: TimelineId(1) }));
        std::fs::write(dir.path().join("000000020000000000000004.partial"), &full).unwrap();
        assert_eq!(start_position(dir.path(), size).unwrap(), Some(StartPoint { lsn: Lsn(4 << 20), timeline: TimelineId(2) }));
        // Short complete files and strangers are ignored.
        std::fs::write(dir.path().join("000000010000000000000009"), b"short").unwrap();
        std::fs::write(dir.path().join("00000002.history"), b"1\t0/4000000\tno recovery target specified\n").unwrap();
        std::fs::write(dir.path().join("junk"), b"").unwrap();
        assert_eq!(start_position(dir.path(), size).unwrap(), Some(StartPoint { lsn: Lsn(4 << 20), timeline: TimelineId(2) }));
    }
}
