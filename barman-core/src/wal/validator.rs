//! The WAL segment validator: every page header and every record's CRC-32C, checked as the
//! bytes stream past, without I/O and in constant memory.
//!
//! # Use
//!
//! 1. Describe what the segment must be: [`ExpectedSegment::new`] with its name and the
//!    cluster's segment size, then optionally the system identifier, the major version (else it
//!    is told by the first page's magic), the timeline history, and the [`Carry`] of the
//!    previous segment when validating a run of segments in order.
//! 2. [`SegmentValidator::feed`] the segment's bytes in chunks of any size; the outcome does
//!    not depend on where the chunks split. The first error is final and is returned again by
//!    every later call; [`SegmentValidator::progress`] still says how far the WAL was good.
//! 3. [`SegmentValidator::finish`] returns a [`SegmentReport`], or [`WalError::Truncated`] when
//!    fewer bytes than a segment arrived.
//!
//! # What is checked (reference §5.4–§5.10; PostgreSQL's `xlogreader.c`)
//!
//! Per page: `xlp_magic` (the major's `XLOG_PAGE_MAGIC`), `xlp_info` (known flags only; the
//! long-header flag exactly on a segment's first page), `xlp_pageaddr` equal to the page's own
//! LSN, `xlp_tli` (never above the file's timeline, never decreasing; with a history, a lower
//! timeline only on pages before that timeline's switchpoint), the long header's system
//! identifier, segment size and block size, and the continuation flag and `xlp_rem_len` of
//! every page a record spans onto.
//!
//! Per record: `xl_tot_len` (at least 24 bytes, at most 1020 MiB from 16 on, 1 GiB before),
//! `xl_rmid` (built-in 0–21; custom 128–255 from 15 on), `xl_prev` (equal to the previous
//! record's start when known, else below the record), and the CRC-32C over the body and then
//! the first 20 header bytes (§5.7), computed incrementally: a 1 GB record costs no memory.
//! Record bodies are not decoded (block references, §5.8); the CRC already covers them.
//!
//! # Where valid WAL ends (§5.10)
//!
//! * After `XLOG_SWITCH` the rest of the segment must be zero bytes, page headers included.
//! * Where a record should start, `xl_tot_len == 0` or an all-zero page header ends the WAL
//!   (a `.partial` segment, or one the server had not filled yet); everything after must be
//!   zero too. A record whose continuation page is all zeros is incomplete: the WAL ends at
//!   its start.
//! * Anything else — a wrong page header, a bad CRC, non-zero bytes after the end — is an
//!   error, reported with its LSN. Stale pages of a recycled segment after the end of WAL are
//!   thus an error here (PostgreSQL's reader would just stop there); archived and streamed
//!   segments are zero-filled, and a caller that wants PostgreSQL's leniency can take
//!   [`SegmentValidator::progress`] at the error.

use std::fmt;

use barman_replication::{Lsn, SystemId, TimelineId};

use super::history::TimelineHistory;
use super::segment_name::{WalNameError, WalSegmentName, WalSegmentSize};

/// `XLOG_BLCKSZ` of standard builds: the size of a WAL page.
pub const DEFAULT_WAL_BLOCK_SIZE: u32 = 8192;

/// `SizeOfXLogShortPHD`.
const SHORT_HEADER: usize = 24;
/// `SizeOfXLogLongPHD`.
const LONG_HEADER: usize = 40;
/// `SizeOfXLogRecord`.
const RECORD_HEADER: usize = 24;
/// The record header bytes covered by the CRC: everything before `xl_crc`.
const CRC_COVERED_HEADER: usize = 20;

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// `XLP_ALL_FLAGS` of 14+ and of 13.5+ (which got `XLP_FIRST_IS_OVERWRITE_CONTRECORD` back-patched;
/// 13.23 writes it). Accepting bit 3 on 13 keeps segments of any 13 minor readable.
const XLP_ALL_FLAGS: u16 = 0x000F;

const RM_XLOG_ID: u8 = 0;
const XLOG_SWITCH: u8 = 0x40;
/// `RM_MAX_BUILTIN_ID`: the same 22 resource managers in 13–18.
const RM_MAX_BUILTIN_ID: u8 = 21;
/// `RM_MIN_CUSTOM_ID`, 15+.
const RM_MIN_CUSTOM_ID: u8 = 128;

/// `XLOG_PAGE_MAGIC` of each supported major version (reference §5.5, confirmed on real
/// 13.23, 14, 15, 16, 17 and 18 servers by the captures in `testdata/wal/`).
pub const PAGE_MAGICS: [(u32, u16); 6] = [
    (13, 0xD106),
    (14, 0xD10D),
    (15, 0xD110),
    (16, 0xD113),
    (17, 0xD116),
    (18, 0xD118),
];

/// The `XLOG_PAGE_MAGIC` of major version `major`, if supported.
pub fn page_magic(major: u32) -> Option<u16> {
    PAGE_MAGICS
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, magic)| *magic)
}

/// The major version that writes pages with this magic, if supported.
pub fn major_of_magic(magic: u16) -> Option<u32> {
    PAGE_MAGICS
        .iter()
        .find(|(_, m)| *m == magic)
        .map(|(major, _)| *major)
}

/// The largest record PostgreSQL writes or reads: `XLogRecordMaxSize` (16+), else the reader's
/// `MaxAllocSize` bound.
fn max_record_len(major: u32) -> u32 {
    if major >= 16 {
        1020 * 1024 * 1024
    } else {
        0x3FFF_FFFF
    }
}

fn maxalign(pos: u64) -> u64 {
    (pos + 7) & !7
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What a segment must be. Build with [`ExpectedSegment::new`] and the `with_*` methods.
#[derive(Clone, Debug)]
pub struct ExpectedSegment {
    /// The segment's file name: its timeline and position.
    pub name: WalSegmentName,
    /// The cluster's `wal_segment_size`.
    pub segment_size: WalSegmentSize,
    /// `XLOG_BLCKSZ`, [`DEFAULT_WAL_BLOCK_SIZE`] unless the server was built otherwise.
    pub block_size: u32,
    /// The cluster's system identifier; `None` accepts any (and reports it).
    pub system_id: Option<SystemId>,
    /// The server's major version; `None` tells it from the first page's magic.
    pub major: Option<u32>,
    /// The history of the segment's timeline, to check pages written on ancestor timelines.
    pub history: Option<TimelineHistory>,
    /// The state left by the previous segment, to validate a record spanning both and the
    /// first record's back link.
    pub previous: Option<Carry>,
}

impl ExpectedSegment {
    /// A segment called `name` of a cluster with segments of `segment_size`.
    pub fn new(name: WalSegmentName, segment_size: WalSegmentSize) -> Self {
        ExpectedSegment {
            name,
            segment_size,
            block_size: DEFAULT_WAL_BLOCK_SIZE,
            system_id: None,
            major: None,
            history: None,
            previous: None,
        }
    }

    /// Requires this system identifier in the long page header.
    pub fn with_system_id(mut self, system_id: SystemId) -> Self {
        self.system_id = Some(system_id);
        self
    }

    /// Requires the page magic of this major version.
    pub fn with_major(mut self, major: u32) -> Self {
        self.major = Some(major);
        self
    }

    /// Checks pages written on ancestor timelines against this history.
    pub fn with_history(mut self, history: TimelineHistory) -> Self {
        self.history = Some(history);
        self
    }

    /// Continues from the previous segment's report ([`SegmentReport::carry`]).
    pub fn after(mut self, previous: Carry) -> Self {
        self.previous = Some(previous);
        self
    }
}

/// A record whose bytes are being read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    start: u64,
    header: [u8; RECORD_HEADER],
    /// Header bytes collected so far.
    have: usize,
    /// `xl_tot_len`, once at least 4 header bytes are in.
    total_len: u32,
    /// Record bytes read so far, header included.
    read: u32,
    /// Running CRC-32C of the body.
    crc: u32,
}

impl Pending {
    fn remaining(&self) -> u32 {
        self.total_len - self.read
    }
}

/// Where the parser is in the record stream (page headers are handled apart).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Records {
    /// Between records: the next one starts at `next` (padding before it is skipped), or at the
    /// first byte after the next page header if `next` is a page boundary.
    Between { next: u64 },
    /// Inside a record.
    Record(Pending),
    /// Inside a record begun in a previous segment that was not validated with this one: its
    /// bytes cannot be checked and are skipped.
    Skip { remaining: u32 },
    /// Past the end of valid WAL: only zero bytes may follow. Bytes before `from` are padding.
    Zeroes { from: u64, after_switch: bool },
}

/// The state a segment leaves for the next one, so that a run of segments validated in order
/// is checked as one stream (a record spanning segments gets its CRC checked, the first
/// record's `xl_prev` is known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carry {
    next_start: Lsn,
    system_id: SystemId,
    major: u32,
    last_tli: TimelineId,
    prev_record: Option<u64>,
    records: Records,
}

impl Carry {
    /// Where the next segment starts.
    pub fn next_start(&self) -> Lsn {
        self.next_start
    }

    /// Whether the record the next segment continues began in a segment not validated in this
    /// chain, so that its CRC cannot be checked: the carry of a segment validated alone that
    /// a record crosses from end to end. A carry from the segment before would make it known.
    pub fn is_blind(&self) -> bool {
        matches!(self.records, Records::Skip { .. })
    }

    /// The bytes of a record the next segment must continue with, if any.
    pub fn expected_continuation(&self) -> Option<u32> {
        match &self.records {
            Records::Record(p) => Some(p.remaining()),
            Records::Skip { remaining } => Some(*remaining),
            _ => None,
        }
    }
}

/// A record that begins in this segment and ends in a later one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Continuation {
    /// Where the record starts.
    pub record_start: Lsn,
    /// Its `xl_tot_len`, or `None` if it started in an earlier segment not validated with this
    /// one.
    pub total_len: Option<u32>,
    /// Record bytes the next segment's first pages must hold (their `xlp_rem_len`).
    pub remaining: u32,
}

/// What a segment turned out to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentReport {
    /// The segment validated.
    pub segment: WalSegmentName,
    /// Its first LSN.
    pub start: Lsn,
    /// The major version that wrote it (`None` only for an all-zero segment).
    pub major: Option<u32>,
    /// The system identifier in its long header (`None` only for an all-zero segment).
    pub system_id: Option<SystemId>,
    /// Where a reader stops in this segment: the segment's end when it holds WAL to its end
    /// (the last record continues into the next segment, or ends exactly at the end, or an
    /// `XLOG_SWITCH` sent the reader to the next segment); otherwise where the next record
    /// would start (the LSN `pg_waldump` reports as the end of WAL).
    pub valid_up_to: Lsn,
    /// The end of the last complete record, if any record ended in this segment.
    pub last_record_end: Option<Lsn>,
    /// The start of the first record that begins in this segment.
    pub first_record: Option<Lsn>,
    /// Where the zero bytes after the end of valid WAL begin (a `.partial` or not yet filled
    /// segment, or the rest of a segment after `XLOG_SWITCH`).
    pub zero_tail_from: Option<Lsn>,
    /// A record cut short by the zero tail: it starts here and is not valid.
    pub incomplete_record: Option<Lsn>,
    /// A record that continues into the next segment.
    pub continuation: Option<Continuation>,
    /// Bytes at the start of this segment that finish a record begun in an earlier segment;
    /// they are checked only when this segment was validated after that one
    /// ([`ExpectedSegment::after`]).
    pub continued_from_previous: Option<u32>,
    /// Whether the bytes continuing the previous segment's record went into that record's
    /// CRC check (validated after it with [`ExpectedSegment::after`]) rather than being skipped.
    pub continuation_checked: bool,
    /// Whether the segment's WAL ends with an `XLOG_SWITCH` record.
    pub ended_with_switch: bool,
    /// Records that ended in this segment, CRC checked.
    pub records: u64,
    /// Records abandoned at a page marked `XLP_FIRST_IS_OVERWRITE_CONTRECORD` (14+).
    pub overwritten_records: u64,
    carry: Option<Carry>,
}

impl SegmentReport {
    /// Whether the segment holds WAL up to its last byte (or up to `XLOG_SWITCH`): what an
    /// archived segment must be. A `.partial` segment normally is not.
    pub fn is_complete(&self) -> bool {
        self.carry.is_some()
    }

    /// The state to validate the next segment with ([`ExpectedSegment::after`]); `None` when
    /// this segment is not complete, as no WAL can follow it.
    pub fn carry(&self) -> Option<Carry> {
        self.carry.clone()
    }
}

/// How far the WAL was good, available even after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the segment consumed.
    pub consumed: u64,
    /// Where the WAL was good up to: the end of the last complete record, or the segment
    /// start if none.
    pub valid_up_to: Lsn,
    /// Records checked so far.
    pub records: u64,
}

/// Which timeline rule a page broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineProblem {
    /// `xlp_tli` is 0.
    Zero,
    /// Above the timeline in the file name.
    AboveFile,
    /// Below the timeline of an earlier page.
    Decreasing {
        /// The earlier page's timeline.
        previous: TimelineId,
    },
    /// Not an ancestor in the timeline history, or a page at or after that ancestor's
    /// switchpoint.
    NotInHistory,
}

impl fmt::Display for TimelineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimelineProblem::Zero => f.write_str("timeline 0 does not exist"),
            TimelineProblem::AboveFile => f.write_str("above the file name's timeline"),
            TimelineProblem::Decreasing { previous } => {
                write!(f, "below timeline {previous} of an earlier page")
            }
            TimelineProblem::NotInHistory => {
                f.write_str("not an ancestor valid at this position in the timeline history")
            }
        }
    }
}

/// A segment that must not enter the archive, or a validator misused. Every variant names the
/// segment; those about a position carry its LSN ([`WalError::lsn`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    /// The segment name does not exist at this segment size.
    #[error(transparent)]
    BadName(#[from] WalNameError),
    /// `block_size` is not a power of two from 1 kB to 64 kB dividing the segment size.
    #[error("{segment}: WAL block size {block_size} is not valid")]
    BadBlockSizeSetting {
        /// The segment.
        segment: WalSegmentName,
        /// The block size asked for.
        block_size: u32,
    },
    /// The previous segment's carry does not lead to this segment.
    #[error("{segment}: does not follow the previous segment, which ends at {expected}")]
    NotContiguous {
        /// The segment.
        segment: WalSegmentName,
        /// Where the previous segment ended.
        expected: Lsn,
    },
    /// A page's `xlp_magic` is not the expected major version's (or no known version's).
    #[error("{segment}: page at {lsn} has magic {found:#06X}, expected {}", expected.map_or("a PostgreSQL 13-18 magic".to_owned(), |m| format!("{m:#06X}")))]
    BadMagic {
        /// The segment.
        segment: WalSegmentName,
        /// The page.
        lsn: Lsn,
        /// `xlp_magic`.
        found: u16,
        /// The expected magic, `None` when auto-detecting.
        expected: Option<u16>,
    },
    /// A page's `xlp_info` has unknown bits, or the long-header bit where it does not belong.
    #[error("{segment}: page at {lsn} has invalid info bits {info:#06X}: {reason}")]
    BadPageInfo {
        /// The segment.
        segment: WalSegmentName,
        /// The page.
        lsn: Lsn,
        /// `xlp_info`.
        info: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// A page's `xlp_pageaddr` is not its position: a recycled or misplaced segment.
    #[error("{segment}: page at {lsn} claims to be at {found}")]
    BadPageAddress {
        /// The segment.
        segment: WalSegmentName,
        /// The page.
        lsn: Lsn,
        /// `xlp_pageaddr`.
        found: Lsn,
    },
    /// A page's `xlp_tli` is not allowed.
    #[error("{segment}: page at {lsn} is on timeline {found}: {problem}")]
    WrongTimeline {
        /// The segment.
        segment: WalSegmentName,
        /// The page.
        lsn: Lsn,
        /// `xlp_tli`.
        found: TimelineId,
        /// Which rule it broke.
        problem: TimelineProblem,
    },
    /// The long header names another cluster.
    #[error("{segment}: system identifier {found} is not this server's ({expected})")]
    ForeignSystem {
        /// The segment.
        segment: WalSegmentName,
        /// `xlp_sysid`.
        found: SystemId,
        /// The cluster's.
        expected: SystemId,
    },
    /// The long header's `xlp_seg_size` differs from the cluster's.
    #[error("{segment}: long header says segments of {found} bytes, expected {expected}")]
    BadSegmentSize {
        /// The segment.
        segment: WalSegmentName,
        /// `xlp_seg_size`.
        found: u32,
        /// The cluster's.
        expected: u64,
    },
    /// The long header's `xlp_xlog_blcksz` differs from the expected page size.
    #[error("{segment}: long header says WAL blocks of {found} bytes, expected {expected}")]
    BadBlockSize {
        /// The segment.
        segment: WalSegmentName,
        /// `xlp_xlog_blcksz`.
        found: u32,
        /// The expected.
        expected: u32,
    },
    /// A record continues onto a page that does not say so, or says so with the wrong length.
    #[error("{segment}: page at {lsn} should continue the record at {record} with {expected} bytes, has {} with xlp_rem_len {found}", if *flagged { "the contrecord flag" } else { "no contrecord flag" })]
    BadContinuation {
        /// The segment.
        segment: WalSegmentName,
        /// The page.
        lsn: Lsn,
        /// The record being continued (the segment start if it began in an unseen segment).
        record: Lsn,
        /// Bytes of the record still to come.
        expected: u32,
        /// `xlp_rem_len`.
        found: u32,
        /// Whether `XLP_FIRST_IS_CONTRECORD` was set.
        flagged: bool,
    },
    /// A page says it continues a record where a new record should begin.
    #[error("{segment}: page at {lsn} continues a record ({found} bytes) where a new record should begin")]
    UnexpectedContinuation {
        /// The segment.
        segment: WalSegmentName,
        /// The page.
        lsn: Lsn,
        /// `xlp_rem_len`.
        found: u32,
    },
    /// `xl_tot_len` is below 24 or above the maximum.
    #[error("{segment}: record at {lsn} has invalid length {len}")]
    RecordLength {
        /// The segment.
        segment: WalSegmentName,
        /// The record.
        lsn: Lsn,
        /// `xl_tot_len`.
        len: u32,
    },
    /// `xl_rmid` names no resource manager.
    #[error("{segment}: record at {lsn} has invalid resource manager {rmid}")]
    BadResourceManager {
        /// The segment.
        segment: WalSegmentName,
        /// The record.
        lsn: Lsn,
        /// `xl_rmid`.
        rmid: u8,
    },
    /// `xl_prev` does not point at the previous record.
    #[error("{segment}: record at {lsn} has back link {found}, expected {}", expected.map_or("an earlier LSN".to_owned(), |e| e.to_string()))]
    BadPrevLink {
        /// The segment.
        segment: WalSegmentName,
        /// The record.
        lsn: Lsn,
        /// `xl_prev`.
        found: Lsn,
        /// The previous record's start, when known.
        expected: Option<Lsn>,
    },
    /// The record's CRC-32C does not match `xl_crc`.
    #[error("{segment}: record at {lsn} has CRC {found:08X}, computed {computed:08X}")]
    CrcMismatch {
        /// The segment.
        segment: WalSegmentName,
        /// The record.
        lsn: Lsn,
        /// `xl_crc`.
        found: u32,
        /// The CRC of the bytes read.
        computed: u32,
    },
    /// Non-zero bytes after the end of valid WAL.
    #[error("{segment}: WAL ends at {end_of_wal}{} but a non-zero byte follows at {lsn}", if *after_switch { " (XLOG_SWITCH)" } else { "" })]
    NonZeroTail {
        /// The segment.
        segment: WalSegmentName,
        /// Where valid WAL ended.
        end_of_wal: Lsn,
        /// The first non-zero byte.
        lsn: Lsn,
        /// Whether the WAL ended with `XLOG_SWITCH`.
        after_switch: bool,
    },
    /// Fewer bytes than a segment.
    #[error("{segment}: truncated after {len} bytes (WAL valid up to {valid_up_to})")]
    Truncated {
        /// The segment.
        segment: WalSegmentName,
        /// Bytes received.
        len: u64,
        /// The end of the last complete record, or the segment start.
        valid_up_to: Lsn,
    },
    /// More bytes than a segment.
    #[error("{segment}: more than {size} bytes")]
    TooLong {
        /// The segment.
        segment: WalSegmentName,
        /// The segment size.
        size: WalSegmentSize,
    },
}

impl WalError {
    /// The LSN the error is about, if it is about one.
    pub fn lsn(&self) -> Option<Lsn> {
        match self {
            WalError::BadMagic { lsn, .. }
            | WalError::BadPageInfo { lsn, .. }
            | WalError::BadPageAddress { lsn, .. }
            | WalError::WrongTimeline { lsn, .. }
            | WalError::BadContinuation { lsn, .. }
            | WalError::UnexpectedContinuation { lsn, .. }
            | WalError::RecordLength { lsn, .. }
            | WalError::BadResourceManager { lsn, .. }
            | WalError::BadPrevLink { lsn, .. }
            | WalError::CrcMismatch { lsn, .. }
            | WalError::NonZeroTail { lsn, .. } => Some(*lsn),
            WalError::Truncated { valid_up_to, .. } => Some(*valid_up_to),
            _ => None,
        }
    }
}

/// Validates one segment fed in chunks. See the [module documentation](self).
#[derive(Debug)]
pub struct SegmentValidator {
    expected: ExpectedSegment,
    segment: WalSegmentName,
    block: u64,
    start: u64,
    end: u64,
    pos: u64,
    /// Page header bytes being collected, and how many the header has.
    page_header: [u8; LONG_HEADER],
    page_have: usize,
    page_need: usize,
    records: Records,
    magic: Option<u16>,
    major: Option<u32>,
    system_id: Option<SystemId>,
    last_tli: Option<TimelineId>,
    prev_record: Option<u64>,
    last_record_end: Option<u64>,
    first_record: Option<u64>,
    record_count: u64,
    overwritten: u64,
    incomplete_record: Option<u64>,
    /// Where reading stopped, when valid WAL ended before the segment's end.
    end_of_wal: Option<u64>,
    ended_with_switch: bool,
    continued_from_previous: Option<u32>,
    continuation_checked: bool,
    failed: Option<WalError>,
}

impl SegmentValidator {
    /// A validator for one segment.
    pub fn new(expected: ExpectedSegment) -> Result<Self, WalError> {
        let segment = expected.name;
        let size = expected.segment_size;
        let start = expected.name.start_lsn(size)?.0;
        let end = start
            .checked_add(size.bytes())
            .ok_or(WalNameError::SegOutOfRange {
                name: segment,
                size,
            })?;
        let block_size = expected.block_size;
        if !block_size.is_power_of_two()
            || !(1024..=65536).contains(&block_size)
            || !size.bytes().is_multiple_of(u64::from(block_size))
        {
            return Err(WalError::BadBlockSizeSetting {
                segment,
                block_size,
            });
        }
        let mut v = SegmentValidator {
            segment,
            block: u64::from(block_size),
            start,
            end,
            pos: start,
            page_header: [0; LONG_HEADER],
            page_have: 0,
            page_need: 0,
            records: Records::Between { next: start },
            magic: expected.major.and_then(page_magic),
            major: expected.major,
            system_id: expected.system_id,
            last_tli: None,
            prev_record: None,
            last_record_end: None,
            first_record: None,
            record_count: 0,
            overwritten: 0,
            incomplete_record: None,
            end_of_wal: None,
            ended_with_switch: false,
            continued_from_previous: None,
            continuation_checked: false,
            failed: None,
            expected,
        };
        if let Some(major) = v.expected.major {
            if page_magic(major).is_none() {
                // Unsupported major: every page will fail the magic check against "any known".
                v.major = None;
            }
        }
        if let Some(carry) = v.expected.previous.clone() {
            if carry.next_start.0 != start || carry.last_tli > segment.timeline() {
                return Err(WalError::NotContiguous {
                    segment,
                    expected: carry.next_start,
                });
            }
            v.system_id = v.system_id.or(Some(carry.system_id));
            if v.major.is_none() {
                v.major = Some(carry.major);
                v.magic = page_magic(carry.major);
            }
            v.last_tli = Some(carry.last_tli);
            v.prev_record = carry.prev_record;
            v.records = match carry.records {
                Records::Record(p) => {
                    v.continuation_checked = true;
                    Records::Record(p)
                }
                Records::Skip { remaining } => Records::Skip { remaining },
                _ => Records::Between { next: start },
            };
        }
        Ok(v)
    }

    /// Feeds the segment's next bytes.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), WalError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.feed_inner(data);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// How far the WAL was good so far.
    pub fn progress(&self) -> Progress {
        Progress {
            consumed: self.pos - self.start,
            valid_up_to: Lsn(self.last_record_end.unwrap_or(self.start).max(self.start)),
            records: self.record_count,
        }
    }

    /// Ends validation once the whole segment was fed.
    pub fn finish(self) -> Result<SegmentReport, WalError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.pos < self.end {
            let valid_up_to = self.progress().valid_up_to;
            return Err(WalError::Truncated {
                segment: self.segment,
                len: self.pos - self.start,
                valid_up_to,
            });
        }
        let lsn = |p: u64| Lsn(p);
        let (zero_tail_from, valid_up_to) = match &self.records {
            Records::Zeroes {
                from,
                after_switch: true,
            } => ((*from < self.end).then_some(*from), self.end),
            Records::Zeroes {
                from,
                after_switch: false,
            } => (Some(*from), self.end_of_wal.unwrap_or(*from)),
            _ => (None, self.end),
        };
        let continuation = match &self.records {
            Records::Record(p) => Some(Continuation {
                record_start: lsn(p.start),
                total_len: Some(p.total_len),
                remaining: p.remaining(),
            }),
            Records::Skip { remaining } => Some(Continuation {
                record_start: self.start_of_skipped(),
                total_len: None,
                remaining: *remaining,
            }),
            _ => None,
        };
        let complete = match &self.records {
            Records::Zeroes { after_switch, .. } => *after_switch,
            _ => true,
        };
        let carry = match (complete, self.system_id, self.major, self.last_tli) {
            (true, Some(system_id), Some(major), Some(last_tli)) => Some(Carry {
                next_start: lsn(self.end),
                system_id,
                major,
                last_tli,
                prev_record: self.prev_record,
                records: self.records.clone(),
            }),
            _ => None,
        };
        Ok(SegmentReport {
            segment: self.segment,
            start: lsn(self.start),
            major: self.major,
            system_id: self.system_id,
            valid_up_to: lsn(valid_up_to),
            last_record_end: self.last_record_end.map(lsn),
            first_record: self.first_record.map(lsn),
            zero_tail_from: zero_tail_from.map(lsn),
            incomplete_record: self.incomplete_record.map(lsn),
            continuation,
            continued_from_previous: self.continued_from_previous,
            continuation_checked: self.continuation_checked,
            ended_with_switch: self.ended_with_switch,
            records: self.record_count,
            overwritten_records: self.overwritten,
            carry,
        })
    }

    /// A skipped record's start is unknown; the segment start stands for it.
    fn start_of_skipped(&self) -> Lsn {
        Lsn(self.start)
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<(), WalError> {
        while !data.is_empty() {
            if self.pos >= self.end {
                return Err(WalError::TooLong {
                    segment: self.segment,
                    size: self.expected.segment_size,
                });
            }
            let n = match self.records {
                Records::Zeroes { from, after_switch } => {
                    let n = data.len().min((self.end - self.pos) as usize);
                    let skip = from.saturating_sub(self.pos).min(n as u64) as usize;
                    if let Some(i) = data[skip..n].iter().position(|&b| b != 0) {
                        return Err(WalError::NonZeroTail {
                            segment: self.segment,
                            end_of_wal: Lsn(self.end_of_wal.unwrap_or(from)),
                            lsn: Lsn(self.pos + (skip + i) as u64),
                            after_switch,
                        });
                    }
                    n
                }
                _ => {
                    // `block` is a power of two (checked in `new`): a mask, not a division,
                    // on this path taken once or twice per record.
                    let in_page = self.pos & (self.block - 1);
                    if in_page == 0 && self.page_need == 0 {
                        self.page_need = if self.pos == self.start {
                            LONG_HEADER
                        } else {
                            SHORT_HEADER
                        };
                        self.page_have = 0;
                    }
                    if self.page_need > 0 {
                        let n = (self.page_need - self.page_have).min(data.len());
                        self.page_header[self.page_have..self.page_have + n]
                            .copy_from_slice(&data[..n]);
                        self.page_have += n;
                        self.pos += n as u64;
                        data = &data[n..];
                        if self.page_have == self.page_need {
                            self.page_header_done()?;
                        }
                        continue;
                    }
                    let page_left = (self.block - in_page) as usize;
                    let avail = data.len().min(page_left);
                    self.payload(&data[..avail])?
                }
            };
            self.pos += n as u64;
            data = &data[n..];
            self.maybe_complete()?;
        }
        Ok(())
    }

    /// Consumes record bytes (never past the current page); returns how many.
    fn payload(&mut self, data: &[u8]) -> Result<usize, WalError> {
        let segment = self.segment;
        match &mut self.records {
            Records::Zeroes { .. } => unreachable!("zero tails are checked by feed_inner"),
            Records::Between { next } => {
                if self.pos < *next {
                    return Ok(data.len().min((*next - self.pos) as usize));
                }
                self.first_record.get_or_insert(self.pos);
                self.records = Records::Record(Pending {
                    start: self.pos,
                    header: [0; RECORD_HEADER],
                    have: 0,
                    total_len: 0,
                    read: 0,
                    crc: 0,
                });
                Ok(0)
            }
            Records::Skip { remaining } => {
                let n = data.len().min(*remaining as usize);
                *remaining -= n as u32;
                if *remaining == 0 {
                    self.records = Records::Between {
                        next: maxalign(self.pos + n as u64),
                    };
                }
                Ok(n)
            }
            Records::Record(p) => {
                if p.have < RECORD_HEADER {
                    let before = p.have;
                    let n = data.len().min(RECORD_HEADER - p.have);
                    p.header[p.have..p.have + n].copy_from_slice(&data[..n]);
                    p.have += n;
                    p.read += n as u32;
                    if before < 4 && p.have >= 4 {
                        let total_len = u32_at(&p.header, 0);
                        p.total_len = total_len;
                        let start = p.start;
                        if total_len == 0 {
                            // The end of WAL: what followed the last record is zeroes.
                            let header = p.header;
                            let have = p.have;
                            if let Some(i) = header[..have].iter().position(|&b| b != 0) {
                                return Err(WalError::NonZeroTail {
                                    segment,
                                    end_of_wal: Lsn(start),
                                    lsn: Lsn(start + i as u64),
                                    after_switch: false,
                                });
                            }
                            if self.first_record == Some(start) {
                                self.first_record = None;
                            }
                            self.end_of_wal = Some(start);
                            self.records = Records::Zeroes {
                                from: start,
                                after_switch: false,
                            };
                            return Ok(n);
                        }
                        let max = max_record_len(self.major.unwrap_or(16));
                        if (total_len as usize) < RECORD_HEADER || total_len > max {
                            return Err(WalError::RecordLength {
                                segment,
                                lsn: Lsn(start),
                                len: total_len,
                            });
                        }
                    }
                    if p.have == RECORD_HEADER {
                        let (start, header) = (p.start, p.header);
                        self.check_record_header(start, &header)?;
                    }
                    return Ok(n);
                }
                let n = data.len().min(p.remaining() as usize);
                p.crc = crc32c::crc32c_append(p.crc, &data[..n]);
                p.read += n as u32;
                Ok(n)
            }
        }
    }

    /// Checks `xl_rmid` and `xl_prev` once the 24-byte header is in.
    fn check_record_header(
        &self,
        start: u64,
        header: &[u8; RECORD_HEADER],
    ) -> Result<(), WalError> {
        let segment = self.segment;
        let rmid = header[17];
        let custom_ok = self.major.unwrap_or(16) >= 15 && rmid >= RM_MIN_CUSTOM_ID;
        if rmid > RM_MAX_BUILTIN_ID && !custom_ok {
            return Err(WalError::BadResourceManager {
                segment,
                lsn: Lsn(start),
                rmid,
            });
        }
        let prev = u64_at(header, 8);
        let ok = match self.prev_record {
            Some(expected) => prev == expected,
            None => prev < start,
        };
        if !ok {
            return Err(WalError::BadPrevLink {
                segment,
                lsn: Lsn(start),
                found: Lsn(prev),
                expected: self.prev_record.map(Lsn),
            });
        }
        Ok(())
    }

    /// Closes the current record if all its bytes are in (`self.pos` is just past them).
    fn maybe_complete(&mut self) -> Result<(), WalError> {
        let Records::Record(p) = &self.records else {
            return Ok(());
        };
        if p.have < RECORD_HEADER || p.read < p.total_len {
            return Ok(());
        }
        let computed = crc32c::crc32c_append(p.crc, &p.header[..CRC_COVERED_HEADER]);
        let found = u32_at(&p.header, CRC_COVERED_HEADER);
        if computed != found {
            return Err(WalError::CrcMismatch {
                segment: self.segment,
                lsn: Lsn(p.start),
                found,
                computed,
            });
        }
        let (start, rmid, info) = (p.start, p.header[17], p.header[16]);
        self.record_count += 1;
        self.prev_record = Some(start);
        self.last_record_end = Some(self.pos);
        let next = maxalign(self.pos);
        if rmid == RM_XLOG_ID && info & 0xF0 == XLOG_SWITCH {
            self.ended_with_switch = true;
            self.records = Records::Zeroes {
                from: next,
                after_switch: true,
            };
        } else {
            self.records = Records::Between { next };
        }
        Ok(())
    }

    fn page_header_done(&mut self) -> Result<(), WalError> {
        let need = self.page_need;
        self.page_need = 0;
        let h = self.page_header;
        let page = self.pos - need as u64;
        let segment = self.segment;
        let lsn = Lsn(page);

        if h[..need].iter().all(|&b| b == 0) {
            // A page never written: the end of WAL.
            let stop = match &self.records {
                Records::Between { next } => (*next).min(page),
                Records::Record(p) => {
                    self.incomplete_record = Some(p.start);
                    if self.first_record == Some(p.start) {
                        self.first_record = None;
                    }
                    p.start.max(self.start)
                }
                Records::Skip { .. } => self.start,
                Records::Zeroes { .. } => unreachable!("zero tails are checked by feed_inner"),
            };
            // Mid-record, the record's own bytes run up to this page: the zeroes start here.
            let mid_record = !matches!(self.records, Records::Between { .. });
            self.end_of_wal = Some(stop);
            let from = if mid_record { page } else { stop };
            self.records = Records::Zeroes {
                from,
                after_switch: false,
            };
            return Ok(());
        }

        let magic = u16_at(&h, 0);
        match self.magic {
            Some(expected) if magic != expected => {
                return Err(WalError::BadMagic {
                    segment,
                    lsn,
                    found: magic,
                    expected: Some(expected),
                });
            }
            Some(_) => {}
            None => match major_of_magic(magic) {
                Some(major) if self.expected.major.is_none() => {
                    self.magic = Some(magic);
                    self.major = Some(major);
                }
                _ => {
                    return Err(WalError::BadMagic {
                        segment,
                        lsn,
                        found: magic,
                        expected: None,
                    })
                }
            },
        }
        let info = u16_at(&h, 2);
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(WalError::BadPageInfo {
                segment,
                lsn,
                info,
                reason: "unknown flag bits",
            });
        }
        let first_page = page == self.start;
        if first_page != (info & XLP_LONG_HEADER != 0) {
            let reason = if first_page {
                "a segment's first page must have a long header"
            } else {
                "only a segment's first page has a long header"
            };
            return Err(WalError::BadPageInfo {
                segment,
                lsn,
                info,
                reason,
            });
        }
        if first_page {
            let sysid = SystemId(u64_at(&h, 24));
            match self.system_id {
                Some(expected) if expected != sysid => {
                    return Err(WalError::ForeignSystem {
                        segment,
                        found: sysid,
                        expected,
                    });
                }
                _ => self.system_id = Some(sysid),
            }
            let seg_size = u32_at(&h, 32);
            if u64::from(seg_size) != self.expected.segment_size.bytes() {
                return Err(WalError::BadSegmentSize {
                    segment,
                    found: seg_size,
                    expected: self.expected.segment_size.bytes(),
                });
            }
            let blcksz = u32_at(&h, 36);
            if blcksz != self.expected.block_size {
                return Err(WalError::BadBlockSize {
                    segment,
                    found: blcksz,
                    expected: self.expected.block_size,
                });
            }
        }

        let pageaddr = u64_at(&h, 8);
        if pageaddr != page {
            return Err(WalError::BadPageAddress {
                segment,
                lsn,
                found: Lsn(pageaddr),
            });
        }
        let tli = TimelineId(u32_at(&h, 4));
        self.check_timeline(page, tli)?;
        let rem_len = u32_at(&h, 16);
        let cont = info & XLP_FIRST_IS_CONTRECORD != 0;
        let overwrite = info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0;
        let header_end = self.pos;
        match &self.records {
            Records::Record(_) | Records::Skip { .. } if overwrite => {
                // The server abandoned the record (lost at a crash or promotion) and starts
                // afresh on this page (14+, back-patched into 13.5+).
                self.overwritten += 1;
                if let Records::Record(p) = &self.records {
                    if self.first_record == Some(p.start) {
                        self.first_record = None;
                    }
                }
                self.records = Records::Between { next: header_end };
            }
            Records::Record(p) => {
                let expected = p.remaining();
                if !cont || rem_len != expected {
                    return Err(WalError::BadContinuation {
                        segment,
                        lsn,
                        record: Lsn(p.start),
                        expected,
                        found: rem_len,
                        flagged: cont,
                    });
                }
                if first_page {
                    self.continued_from_previous = Some(rem_len);
                }
            }
            Records::Skip { remaining } => {
                if !cont || rem_len != *remaining {
                    return Err(WalError::BadContinuation {
                        segment,
                        lsn,
                        record: Lsn(self.start),
                        expected: *remaining,
                        found: rem_len,
                        flagged: cont,
                    });
                }
            }
            Records::Between { .. } if cont && first_page && self.expected.previous.is_none() => {
                // A record begun in a segment we have not seen: its bytes cannot be checked.
                if rem_len == 0 {
                    return Err(WalError::BadContinuation {
                        segment,
                        lsn,
                        record: lsn,
                        expected: 0,
                        found: 0,
                        flagged: true,
                    });
                }
                self.continued_from_previous = Some(rem_len);
                self.records = Records::Skip { remaining: rem_len };
            }
            Records::Between { .. } if cont => {
                return Err(WalError::UnexpectedContinuation {
                    segment,
                    lsn,
                    found: rem_len,
                });
            }
            Records::Between { .. } => {}
            Records::Zeroes { .. } => unreachable!("zero tails are checked by feed_inner"),
        }
        Ok(())
    }

    fn check_timeline(&mut self, page: u64, tli: TimelineId) -> Result<(), WalError> {
        let segment = self.segment;
        let lsn = Lsn(page);
        let bad = |problem| WalError::WrongTimeline {
            segment,
            lsn,
            found: tli,
            problem,
        };
        if tli.0 == 0 {
            return Err(bad(TimelineProblem::Zero));
        }
        if tli > segment.timeline() {
            return Err(bad(TimelineProblem::AboveFile));
        }
        if let Some(previous) = self.last_tli {
            if tli < previous {
                return Err(bad(TimelineProblem::Decreasing { previous }));
            }
        }
        if tli < segment.timeline() {
            // A new timeline's first segment starts as a copy of its parent's (reference §5.9).
            if let Some(history) = &self.expected.history {
                match history.switchpoint_of(tli) {
                    Some(switch) if page < switch.0 => {}
                    _ => return Err(bad(TimelineProblem::NotInHistory)),
                }
            }
        }
        self.last_tli = Some(tli);
        Ok(())
    }
}

/// The start of a segment, kept while the segment is validated on its own, so that the record
/// it finishes can be checked later against the previous segment's [`Carry`] ([`Self::resume`])
/// without reading the segment again: its first page header and, when that page continues a
/// record (`XLP_FIRST_IS_CONTRECORD`), the bytes up to that record's end, page headers
/// included. The length comes from the header's `xlp_rem_len`, at most the segment size; the
/// headers are trusted here and checked by the validation.
#[derive(Clone, Debug, Default)]
pub struct LeadingBytes {
    bytes: Vec<u8>,
    /// How many bytes to keep, once the first page header is in.
    want: Option<u64>,
}

impl LeadingBytes {
    /// Feeds the segment's next bytes; those past the continuation are ignored.
    pub fn feed(&mut self, mut data: &[u8]) {
        loop {
            let want = self.want.unwrap_or(LONG_HEADER as u64);
            let have = self.bytes.len() as u64;
            if have < want {
                let take = usize::try_from(want - have).unwrap_or(usize::MAX).min(data.len());
                self.bytes.extend_from_slice(&data[..take]);
                data = &data[take..];
            }
            if self.want.is_some() || self.bytes.len() < LONG_HEADER {
                return;
            }
            self.want = Some(self.span());
        }
    }

    /// The segment size the long header states, if valid.
    pub fn segment_size(&self) -> Option<WalSegmentSize> {
        (self.bytes.len() >= LONG_HEADER)
            .then(|| u32_at(&self.bytes, 32))
            .and_then(|size| WalSegmentSize::new(u64::from(size)).ok())
    }

    /// Bytes holding the first page header and the continued record's end.
    fn span(&self) -> u64 {
        let h = &self.bytes;
        let rem_len = u64::from(u32_at(h, 16));
        let block = u64::from(u32_at(h, 36));
        let (Some(size), true) = (self.segment_size(), u16_at(h, 2) & XLP_FIRST_IS_CONTRECORD != 0) else {
            return LONG_HEADER as u64;
        };
        if !block.is_power_of_two() || !(1024..=65536).contains(&block) {
            return LONG_HEADER as u64;
        }
        let (mut page, mut header, mut left) = (0, LONG_HEADER as u64, rem_len);
        while page < size.bytes() {
            let room = block - header;
            if left <= room {
                return page + header + left;
            }
            left -= room;
            page += block;
            header = SHORT_HEADER as u64;
        }
        size.bytes()
    }

    /// Validates these bytes of segment `name` after `previous`, the carry of the segment
    /// just before it: the record `previous` leaves open gets its CRC checked over the bytes
    /// that end it here, and the first page's continuation flag and `xlp_rem_len` are checked
    /// against it. Returns the carry for the next segment when that record goes on past this
    /// segment (the kept bytes are then the whole segment), else `None`: the carry of the
    /// segment's own validation then holds.
    pub fn resume(&self, name: WalSegmentName, previous: Carry) -> Result<Option<Carry>, WalError> {
        let size = self.segment_size().unwrap_or(WalSegmentSize::DEFAULT);
        let mut v = SegmentValidator::new(ExpectedSegment::new(name, size).after(previous))?;
        v.feed(&self.bytes)?;
        if v.pos == v.end {
            return v.finish().map(|report| report.carry());
        }
        match v.records {
            Records::Record(_) | Records::Skip { .. } => Err(WalError::Truncated {
                segment: v.segment,
                len: v.pos - v.start,
                valid_up_to: v.progress().valid_up_to,
            }),
            Records::Between { .. } | Records::Zeroes { .. } => Ok(None),
        }
    }
}

#[cfg(test)]
#[path = "validator_tests.rs"]
mod tests;
