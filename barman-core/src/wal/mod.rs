//! WAL: segment and archive file names, timeline history files, and the segment validator
//! that every WAL byte passes before barman-rs trusts it (DESIGN.md §4).
//!
//! * [`archive_content`] — [`check_archive_usable`]: whether an archive can take a new
//!   server's WAL (`check-wal-archive`).
//! * [`segment_name`] — [`WalSegmentName`], [`WalSegmentSize`], [`WalFileName`] (what an
//!   archive may hold: segments, `.partial`, `.backup`, `.history`).
//! * [`history`] — [`TimelineHistory`], parsed as PostgreSQL reads `%08X.history`.
//! * [`validator`] — [`SegmentValidator`]: page headers and record CRCs, fed in chunks, no I/O.
//!
//! Reading files, decompression and moving rejected segments to `errors/` are left to the
//! archiver and storage modules.

pub mod archive_content;
pub mod history;
pub mod segment_name;
pub mod validator;

pub use archive_content::{check_archive_usable, WalArchiveContentError};
pub use history::{HistoryEntry, HistoryError, TimelineHistory};
pub use segment_name::{WalFileName, WalNameError, WalSegmentName, WalSegmentSize};
pub use validator::{
    major_of_magic, page_magic, Carry, Continuation, ExpectedSegment, Progress, SegmentReport,
    SegmentValidator, TimelineProblem, WalError, DEFAULT_WAL_BLOCK_SIZE, PAGE_MAGICS,
};
