//! WAL segment validator: never panics on any bytes, gives the same outcome however the input
//! is split, and its report stays inside the segment.
//!
//! The input is the start of a 1 MiB segment (zero-padded, or cut, to 1 MiB) whose name is
//! taken from its first page header (`xlp_tli`, `xlp_pageaddr`), so every real capture from
//! `barman-core/testdata/wal/<major>/` is a seed that validates; the chunk size is derived
//! from the input's length.
#![no_main]

use barman_core::wal::{ExpectedSegment, SegmentValidator, WalSegmentName, WalSegmentSize};
use barman_replication::{Lsn, TimelineId};
use libfuzzer_sys::fuzz_target;

const SIZE: usize = 1 << 20;

fn validate(
    expected: &ExpectedSegment,
    data: &[u8],
    chunk: usize,
) -> Result<barman_core::wal::SegmentReport, barman_core::wal::WalError> {
    let mut v = SegmentValidator::new(expected.clone()).expect("valid settings");
    for piece in data.chunks(chunk) {
        v.feed(piece)?;
    }
    v.finish()
}

fuzz_target!(|input: &[u8]| {
    let mut data = input[..input.len().min(SIZE)].to_vec();
    data.resize(SIZE, 0);
    let size = WalSegmentSize::MIN;
    let tli = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes")).max(1);
    let pageaddr = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    let name = WalSegmentName::from_lsn(TimelineId(tli), Lsn(pageaddr), size).expect("tli >= 1");
    let Some(end) = name.end_lsn(size).expect("in range") else {
        return;
    };
    let start = name.start_lsn(size).expect("in range");
    let expected = ExpectedSegment::new(name, size);

    let whole = validate(&expected, &data, SIZE);
    let chunk = input.len() % 8191 + 1;
    assert_eq!(validate(&expected, &data, chunk), whole);

    match whole {
        Ok(report) => {
            assert!(report.valid_up_to >= start && report.valid_up_to <= end);
            if let Some(last) = report.last_record_end {
                assert!(last > start && last <= end);
            }
            if let Some(zero) = report.zero_tail_from {
                assert!(zero >= start && zero <= end);
                assert!(report.continuation.is_none());
            }
            assert!(report.records <= (SIZE / 24) as u64);
        }
        Err(e) => {
            if let Some(lsn) = e.lsn() {
                assert!(lsn >= Lsn(0) && lsn <= end, "{e}");
            }
        }
    }
});
