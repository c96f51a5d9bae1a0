//! What a file must hold to enter the archive, decided from its (decompressed) bytes as they
//! stream past: a sans-I/O wrapper around [`SegmentValidator`] that also knows `.partial`,
//! `.history` and `.backup` files.
//!
//! * A segment is validated strictly: every page header and record CRC, the system identifier
//!   from `identity.json` when known, the whole segment present, and some WAL in it (an
//!   all-zero file is refused).
//! * A `.partial` segment holds WAL up to some point: it may be short, and what follows its
//!   last good record may be anything (a standby's segment recycled from old WAL, archived by
//!   PostgreSQL at promotion). It is accepted when at least one record validated and its long
//!   header is right (system identifier, segment size); what follows is reported, not refused.
//! * A `.history` file must parse as PostgreSQL parses it ([`TimelineHistory`]).
//! * A `.backup` file (backup history, text) is not checked, only bounded in size.
//!
//! The segment size is, in order: the one given (the cluster's, when known), the one in the
//! file's own long page header, the file's length. Whichever is used, the validator checks
//! the header and the length against it.

use std::fmt;

use barman_replication::{Lsn, SystemId};

use crate::catalog::ErrorReason;
use crate::wal::{Carry, ExpectedSegment, SegmentReport, SegmentValidator, TimelineHistory, WalError, WalFileName, WalSegmentSize};

/// Offset of `xlp_seg_size` in a segment's first (long) page header.
const SEG_SIZE_OFFSET: usize = 32;
/// Bytes needed to read `xlp_seg_size`.
const HEADER_PEEK: usize = 40;
/// The largest `.history` or `.backup` file accepted.
const MAX_TEXT_FILE: usize = 1 << 20;

/// Why a file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The WAL belongs to another cluster (`foreign`).
    Foreign {
        /// What the file says.
        found: SystemId,
        /// This server's.
        expected: SystemId,
    },
    /// Broken, truncated, empty or not what its name says (`corrupt`).
    Corrupt(String),
}

impl Refusal {
    /// The reason ending the refused file's name in `errors/`: `foreign` or `corrupt`.
    pub fn reason(&self) -> ErrorReason {
        ErrorReason::Other(
            match self {
                Refusal::Foreign { .. } => "foreign",
                Refusal::Corrupt(_) => "corrupt",
            }
            .to_owned(),
        )
    }

    /// What is wrong with the file, for the operator.
    pub fn detail(&self) -> String {
        match self {
            Refusal::Foreign { found, expected } => format!("system identifier {found} is not this server's ({expected})"),
            Refusal::Corrupt(detail) => detail.clone(),
        }
    }
}

/// What the WAL validator found, as a refusal: another system identifier is `foreign`, any
/// other fault `corrupt`. The one mapping for every path into the catalog (`archive-wal`,
/// `sync-wals`), so that the same fault gets the same `errors/` reason wherever it is found.
impl From<WalError> for Refusal {
    fn from(e: WalError) -> Self {
        match e {
            WalError::ForeignSystem { found, expected, .. } => Refusal::Foreign { found, expected },
            other => Refusal::Corrupt(other.to_string()),
        }
    }
}

/// What a file that passed turned out to hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// For segments and `.partial` files: where the WAL in it is valid up to.
    pub valid_up_to: Option<Lsn>,
    /// For a `.partial` file: what stopped validation after its valid WAL, if anything did.
    pub tail_problem: Option<String>,
    /// For a segment holding WAL to its end: the state to validate the next one with.
    pub carry: Option<Carry>,
}

impl Checked {
    /// The verdict on `name`, a segment (or `.partial` file) its validator finished without
    /// error: what it holds — unless that is no WAL at all. An all-zero file is refused:
    /// `report.major` is unknown only when no page header was ever seen (the system
    /// identifier may come from `identity.json`, so it cannot tell), and zeroes from the
    /// segment's very start are a file preallocated and never written.
    pub fn from_segment_report(name: impl fmt::Display, report: &SegmentReport) -> Result<Checked, Refusal> {
        if report.major.is_none() || report.zero_tail_from == Some(report.start) {
            return Err(Refusal::Corrupt(format!("{name}: holds no WAL (all zero bytes)")));
        }
        Ok(Checked { valid_up_to: Some(report.valid_up_to), tail_problem: None, carry: report.carry() })
    }
}

enum State {
    /// Collecting the first bytes of a segment to read its header.
    Peek(Vec<u8>),
    Validating(Box<SegmentValidator>),
    Text(Vec<u8>),
    Failed(Refusal),
}

/// Checks one file fed in chunks of any size.
pub struct ContentCheck {
    name: WalFileName,
    system_id: Option<SystemId>,
    segment_size: Option<WalSegmentSize>,
    length_hint: Option<u64>,
    state: State,
    fed: u64,
}

impl ContentCheck {
    /// A check of a file named `name`. `system_id`: the server's, if known. `segment_size`:
    /// the cluster's, if known. `length_hint`: the decompressed length, if known.
    pub fn new(
        name: WalFileName,
        system_id: Option<SystemId>,
        segment_size: Option<WalSegmentSize>,
        length_hint: Option<u64>,
    ) -> Self {
        let state = match name {
            WalFileName::Segment(_) | WalFileName::Partial(_) => State::Peek(Vec::with_capacity(HEADER_PEEK)),
            WalFileName::History(_) | WalFileName::Backup { .. } => State::Text(Vec::new()),
        };
        ContentCheck { name, system_id, segment_size, length_hint, state, fed: 0 }
    }

    /// Whether the file is already known to be refused (the rest need not be read).
    pub fn failed(&self) -> bool {
        matches!(self.state, State::Failed(_))
    }

    /// Feeds the next bytes.
    pub fn feed(&mut self, mut data: &[u8]) {
        self.fed += data.len() as u64;
        loop {
            match &mut self.state {
                State::Failed(_) => return,
                State::Text(buf) => {
                    if buf.len() + data.len() > MAX_TEXT_FILE {
                        self.state = State::Failed(Refusal::Corrupt(format!(
                            "larger than {MAX_TEXT_FILE} bytes, not a {} file",
                            if matches!(self.name, WalFileName::History(_)) { "history" } else { "backup history" }
                        )));
                    } else {
                        buf.extend_from_slice(data);
                    }
                    return;
                }
                State::Peek(buf) => {
                    let take = (HEADER_PEEK - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() < HEADER_PEEK {
                        return;
                    }
                    let head = std::mem::take(buf);
                    self.start_validator(&head);
                }
                State::Validating(v) => {
                    if !data.is_empty() {
                        if let Err(e) = v.feed(data) {
                            if !tolerated(&self.name, &e) {
                                self.state = State::Failed(e.into());
                            }
                        }
                    }
                    return;
                }
            }
        }
    }

    fn start_validator(&mut self, head: &[u8]) {
        let segment = self.name.segment().expect("segment or partial");
        let from_header = (head.len() >= SEG_SIZE_OFFSET + 4)
            .then(|| u32::from_le_bytes(head[SEG_SIZE_OFFSET..SEG_SIZE_OFFSET + 4].try_into().expect("4 bytes")))
            .and_then(|s| WalSegmentSize::new(u64::from(s)).ok());
        let from_length = self.length_hint.and_then(|l| WalSegmentSize::new(l).ok());
        let size = self.segment_size.or(from_header).or(from_length).unwrap_or(WalSegmentSize::DEFAULT);
        let mut expected = ExpectedSegment::new(segment, size);
        if let Some(id) = self.system_id {
            expected = expected.with_system_id(id);
        }
        match SegmentValidator::new(expected) {
            Ok(mut v) => {
                let result = v.feed(head);
                self.state = State::Validating(Box::new(v));
                if let Err(e) = result {
                    if !tolerated(&self.name, &e) {
                        self.state = State::Failed(e.into());
                    }
                }
            }
            Err(e) => self.state = State::Failed(e.into()),
        }
    }

    /// The verdict, once every byte was fed.
    pub fn finish(mut self) -> Result<Checked, Refusal> {
        if let State::Peek(head) = &mut self.state {
            // Shorter than a page header.
            let head = std::mem::take(head);
            self.start_validator(&head);
        }
        match self.state {
            State::Failed(r) => Err(r),
            State::Text(bytes) => match self.name {
                WalFileName::History(tli) => TimelineHistory::parse(tli, &bytes)
                    .map(|_| Checked::default())
                    .map_err(|e| Refusal::Corrupt(e.to_string())),
                _ => Ok(Checked::default()),
            },
            State::Peek(_) => unreachable!("replaced above"),
            State::Validating(v) => {
                let partial = matches!(self.name, WalFileName::Partial(_));
                let progress = v.progress();
                match v.finish() {
                    Ok(report) => Checked::from_segment_report(self.name, &report),
                    Err(e) if partial && tolerated(&self.name, &e) => {
                        if progress.records == 0 {
                            Err(Refusal::Corrupt(format!("no valid WAL record: {e}")))
                        } else {
                            Ok(Checked { valid_up_to: Some(progress.valid_up_to), tail_problem: Some(e.to_string()), carry: None })
                        }
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }
}

/// Errors a `.partial` file may have after its valid WAL: anything but a wrong long header.
fn tolerated(name: &WalFileName, e: &WalError) -> bool {
    matches!(name, WalFileName::Partial(_))
        && !matches!(
            e,
            WalError::ForeignSystem { .. } | WalError::BadSegmentSize { .. } | WalError::BadBlockSize { .. }
        )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::wal::WalSegmentName;

    /// 18's capture of segment 0C (1 MiB segments), decompressed.
    fn capture_0c() -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/wal/18/00000001000000000000000C.zst");
        zstd::decode_all(&std::fs::read(path).expect("capture")[..]).expect("zstd")
    }

    fn segment_0c() -> WalSegmentName {
        "00000001000000000000000C".parse().expect("segment")
    }

    fn report_of(bytes: &[u8]) -> SegmentReport {
        let mut v = SegmentValidator::new(ExpectedSegment::new(segment_0c(), WalSegmentSize::MIN)).expect("validator");
        v.feed(bytes).expect("feed");
        v.finish().expect("finish")
    }

    #[test]
    fn another_system_identifier_is_foreign_any_other_fault_corrupt() {
        let foreign = WalError::ForeignSystem { segment: segment_0c(), found: SystemId(7), expected: SystemId(9) };
        let refusal = Refusal::from(foreign);
        assert_eq!(refusal, Refusal::Foreign { found: SystemId(7), expected: SystemId(9) });
        assert_eq!(refusal.reason(), ErrorReason::Other("foreign".into()));
        assert_eq!(refusal.detail(), "system identifier 7 is not this server's (9)");

        let misplaced = WalError::BadPageAddress { segment: segment_0c(), lsn: Lsn(0x0C0_0000), found: Lsn(0x0A0_0000) };
        let message = misplaced.to_string();
        let refusal = Refusal::from(misplaced);
        assert_eq!(refusal, Refusal::Corrupt(message.clone()));
        assert_eq!(refusal.reason(), ErrorReason::Other("corrupt".into()));
        assert_eq!(refusal.detail(), message);
    }

    #[test]
    fn a_segment_report_of_zeroes_is_refused_one_of_wal_is_checked() {
        let zeroes = report_of(&vec![0u8; 1 << 20]);
        assert_eq!(
            Checked::from_segment_report(segment_0c(), &zeroes),
            Err(Refusal::Corrupt("00000001000000000000000C: holds no WAL (all zero bytes)".into()))
        );

        let wal = report_of(&capture_0c());
        let checked = Checked::from_segment_report(segment_0c(), &wal).expect("holds WAL");
        assert_eq!(checked.valid_up_to, Some(wal.valid_up_to));
        assert_eq!(checked.tail_problem, None);
        assert_eq!(checked.carry, wal.carry());
        assert!(checked.carry.is_some(), "0C's record goes on into 0D");
    }
}
