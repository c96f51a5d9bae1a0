use super::*;
use std::path::PathBuf;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/wal")
}

/// The decompressed capture `file` of `major`.
fn capture(major: u32, file: &str) -> Vec<u8> {
    let path = testdata()
        .join(major.to_string())
        .join(format!("{file}.zst"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    zstd::decode_all(&raw[..]).expect("zstd")
}

/// Every capture of `major`, sorted by name.
fn captures(major: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(testdata().join(major.to_string()))
        .expect("testdata dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .filter_map(|n| n.strip_suffix(".zst").map(str::to_owned))
        .collect();
    names.sort();
    names
}

const MAJORS: [u32; 6] = [13, 14, 15, 16, 17, 18];
const MIB: WalSegmentSize = WalSegmentSize::MIN;

fn segment_of(file: &str) -> WalSegmentName {
    file[..24].parse().expect("segment name")
}

fn expect(file: &str) -> ExpectedSegment {
    ExpectedSegment::new(segment_of(file), MIB)
}

/// Feeds `data` in chunks whose sizes come from `sizes` (cycled).
fn run(expected: ExpectedSegment, data: &[u8], sizes: &[usize]) -> Result<SegmentReport, WalError> {
    let mut v = SegmentValidator::new(expected)?;
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        if let Err(e) = v.feed(chunk) {
            // Errors are sticky.
            assert_eq!(v.feed(tail).unwrap_err(), e);
            return Err(e);
        }
        rest = tail;
    }
    v.finish()
}

fn whole(expected: ExpectedSegment, data: &[u8]) -> Result<SegmentReport, WalError> {
    run(expected, data, &[usize::MAX])
}

/// (major, file, records, first record, end of last record, valid up to, zero tail from,
/// bytes continuing into the next segment, bytes continued from the previous one, ended with
/// XLOG_SWITCH). The record count, first record, end of the last record and (for the
/// `.partial` files) the end of WAL were checked against `pg_waldump` of the same major run on
/// each file alone (`testdata/wal/README.md`); pg_waldump counts the records *starting* in a
/// segment, we count those *ending* in it, which differ only by the record spanning segments.
type Row = (
    u32,
    &'static str,
    u64,
    Option<u64>,
    Option<u64>,
    u64,
    Option<u64>,
    Option<u32>,
    Option<u32>,
    bool,
);

#[rustfmt::skip]
const EXPECTED: [Row; 36] = [
    (13, "000000010000000000000008", 2369, Some(0x800028), Some(0x8FE7F0), 0x900000, None, Some(669), None, false),
    (13, "00000001000000000000000A", 4007, Some(0xA00028), Some(0xA4B912), 0xB00000, None, Some(1360327), None, false),
    (13, "00000001000000000000000B", 0, None, None, 0xC00000, None, Some(314839), Some(1360327), false),
    (13, "00000001000000000000000C", 4, Some(0xC4D190), Some(0xC4D260), 0xD00000, Some(0xC4D260), None, Some(314839), true),
    (13, "00000001000000000000000D.partial", 201, Some(0xD00028), Some(0xD03582), 0xD03588, Some(0xD03588), None, None, false),
    (13, "00000002000000000000000D", 206, Some(0xD00028), Some(0xD05CF8), 0xE00000, Some(0xD05CF8), None, None, true),
    (14, "000000010000000000000009", 2369, Some(0x900028), Some(0x9FE7F0), 0xA00000, None, Some(669), None, false),
    (14, "00000001000000000000000B", 4007, Some(0xB00028), Some(0xB4B912), 0xC00000, None, Some(1360327), None, false),
    (14, "00000001000000000000000C", 0, None, None, 0xD00000, None, Some(314839), Some(1360327), false),
    (14, "00000001000000000000000D", 4, Some(0xD4D190), Some(0xD4D260), 0xE00000, Some(0xD4D260), None, Some(314839), true),
    (14, "00000001000000000000000E.partial", 201, Some(0xE00028), Some(0xE03582), 0xE03588, Some(0xE03588), None, None, false),
    (14, "00000002000000000000000E", 206, Some(0xE00028), Some(0xE05CF8), 0xF00000, Some(0xE05CF8), None, None, true),
    (15, "000000010000000000000007", 2369, Some(0x700028), Some(0x7FE7F0), 0x800000, None, Some(669), None, false),
    (15, "000000010000000000000009", 4007, Some(0x900028), Some(0x94B912), 0xA00000, None, Some(1360327), None, false),
    (15, "00000001000000000000000A", 0, None, None, 0xB00000, None, Some(314839), Some(1360327), false),
    (15, "00000001000000000000000B", 4, Some(0xB4D190), Some(0xB4D260), 0xC00000, Some(0xB4D260), None, Some(314839), true),
    (15, "00000001000000000000000C.partial", 201, Some(0xC00028), Some(0xC03582), 0xC03588, Some(0xC03588), None, None, false),
    (15, "00000002000000000000000C", 206, Some(0xC00028), Some(0xC05CF8), 0xD00000, Some(0xC05CF8), None, None, true),
    (16, "000000010000000000000007", 2369, Some(0x700028), Some(0x7FE7F0), 0x800000, None, Some(669), None, false),
    (16, "000000010000000000000009", 4007, Some(0x900028), Some(0x94B912), 0xA00000, None, Some(1360327), None, false),
    (16, "00000001000000000000000A", 0, None, None, 0xB00000, None, Some(314839), Some(1360327), false),
    (16, "00000001000000000000000B", 4, Some(0xB4D190), Some(0xB4D260), 0xC00000, Some(0xB4D260), None, Some(314839), true),
    (16, "00000001000000000000000C.partial", 201, Some(0xC00028), Some(0xC03582), 0xC03588, Some(0xC03588), None, None, false),
    (16, "00000002000000000000000C", 206, Some(0xC00028), Some(0xC05CF8), 0xD00000, Some(0xC05CF8), None, None, true),
    (17, "000000010000000000000007", 2370, Some(0x700028), Some(0x7FE810), 0x800000, None, Some(701), None, false),
    (17, "000000010000000000000009", 4007, Some(0x900028), Some(0x94B912), 0xA00000, None, Some(1360327), None, false),
    (17, "00000001000000000000000A", 0, None, None, 0xB00000, None, Some(314839), Some(1360327), false),
    (17, "00000001000000000000000B", 4, Some(0xB4D190), Some(0xB4D260), 0xC00000, Some(0xB4D260), None, Some(314839), true),
    (17, "00000001000000000000000C.partial", 201, Some(0xC00028), Some(0xC03582), 0xC03588, Some(0xC03588), None, None, false),
    (17, "00000002000000000000000C", 206, Some(0xC00028), Some(0xC05CF8), 0xD00000, Some(0xC05CF8), None, None, true),
    (18, "00000001000000000000000A", 2436, Some(0xA00028), Some(0xAFF2C8), 0xB00000, None, Some(4521), None, false),
    (18, "00000001000000000000000C", 4007, Some(0xC00028), Some(0xC4B912), 0xD00000, None, Some(1360327), None, false),
    (18, "00000001000000000000000D", 0, None, None, 0xE00000, None, Some(314839), Some(1360327), false),
    (18, "00000001000000000000000E", 4, Some(0xE4D190), Some(0xE4D260), 0xF00000, Some(0xE4D260), None, Some(314839), true),
    (18, "00000001000000000000000F.partial", 201, Some(0xF00028), Some(0xF03582), 0xF03588, Some(0xF03588), None, None, false),
    (18, "00000002000000000000000F", 206, Some(0xF00028), Some(0xF05CF8), 0x1000000, Some(0xF05CF8), None, None, true),
];

#[test]
fn captures_match_pg_waldump() {
    for (major, file, records, first, last_end, valid_up_to, zero_tail, cont, from_prev, switch) in
        EXPECTED
    {
        let data = capture(major, file);
        let r = whole(expect(file), &data).unwrap_or_else(|e| panic!("{major} {file}: {e}"));
        let lsn = |v: Option<u64>| v.map(Lsn);
        assert_eq!(r.major, Some(major), "{file}");
        assert_eq!(r.records, records, "{major} {file}");
        assert_eq!(r.first_record, lsn(first), "{major} {file}");
        assert_eq!(r.last_record_end, lsn(last_end), "{major} {file}");
        assert_eq!(r.valid_up_to, Lsn(valid_up_to), "{major} {file}");
        assert_eq!(r.zero_tail_from, lsn(zero_tail), "{major} {file}");
        assert_eq!(r.continuation.map(|c| c.remaining), cont, "{major} {file}");
        assert_eq!(r.continued_from_previous, from_prev, "{major} {file}");
        assert_eq!(r.ended_with_switch, switch, "{major} {file}");
        assert_eq!(
            r.is_complete(),
            !file.ends_with(".partial"),
            "{major} {file}"
        );
        assert_eq!(r.incomplete_record, None);
        // Naming the major gives the same report; naming another is refused at the first page.
        let sysid = r.system_id.expect("system id");
        let named = expect(file).with_major(major).with_system_id(sysid);
        assert_eq!(whole(named, &data).as_ref(), Ok(&r));
        let other = if major == 18 { 13 } else { major + 1 };
        let err = whole(expect(file).with_major(other), &data).unwrap_err();
        assert_eq!(
            err,
            WalError::BadMagic {
                segment: segment_of(file),
                lsn: r.start,
                found: page_magic(major).unwrap(),
                expected: page_magic(other),
            }
        );
    }
}

#[test]
fn magic_per_major_is_in_the_first_two_bytes() {
    for major in MAJORS {
        for file in captures(major).iter().filter(|f| !f.ends_with(".history")) {
            let data = capture(major, file);
            assert_eq!(
                u16_at(&data, 0),
                page_magic(major).unwrap(),
                "{major} {file}"
            );
            assert_eq!(major_of_magic(u16_at(&data, 0)), Some(major));
        }
    }
}

/// A deterministic stream of chunk sizes.
fn random_sizes(mut seed: u64, max: usize) -> Vec<usize> {
    (0..997)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            1 + (seed % max as u64) as usize
        })
        .collect()
}

fn assert_split_invariant(expected: &ExpectedSegment, data: &[u8], what: &str) {
    let reference = whole(expected.clone(), data);
    let patterns: Vec<Vec<usize>> = vec![
        vec![1],
        vec![7],
        vec![8191],
        vec![8192],
        vec![8193, 3],
        vec![24, 40, 8],
        random_sizes(0x9E37_79B9_7F4A_7C15, 64),
        random_sizes(42, 20_000),
    ];
    for sizes in patterns {
        assert_eq!(
            run(expected.clone(), data, &sizes),
            reference,
            "{what} split by {:?}",
            &sizes[..3.min(sizes.len())]
        );
    }
}

#[test]
fn every_capture_gives_the_same_result_however_split() {
    for major in MAJORS {
        for file in captures(major).iter().filter(|f| !f.ends_with(".history")) {
            assert_split_invariant(
                &expect(file),
                &capture(major, file),
                &format!("{major} {file}"),
            );
        }
    }
}

/// The roles of the captures of one major, in name order (README.md).
struct Set {
    fpi: String,
    big1: String,
    big2: String,
    big3: String,
    partial: String,
    history: String,
    tli2: String,
}

fn set(major: u32) -> Set {
    let c = captures(major);
    assert_eq!(c.len(), 7, "{major}: {c:?}");
    let [fpi, big1, big2, big3, partial, history, tli2] = <[String; 7]>::try_from(c).unwrap();
    assert!(partial.ends_with(".partial") && history.ends_with(".history"));
    Set {
        fpi,
        big1,
        big2,
        big3,
        partial,
        history,
        tli2,
    }
}

#[test]
fn segments_in_sequence_check_the_record_spanning_them() {
    for major in MAJORS {
        let s = set(major);
        let r1 = whole(expect(&s.big1), &capture(major, &s.big1)).unwrap();
        let big = r1.continuation.expect("big record continues");
        assert_eq!(
            big.total_len,
            Some(2_097_215),
            "2 MiB of message plus headers"
        );
        assert_eq!(
            r1.carry().unwrap().expected_continuation(),
            Some(big.remaining)
        );

        let big2 = capture(major, &s.big2);
        let r2 = whole(expect(&s.big2).after(r1.carry().unwrap()), &big2).unwrap();
        assert!(r2.continuation_checked);
        assert_eq!(r2.continuation.unwrap().record_start, big.record_start);
        assert_eq!(r2.continuation.unwrap().total_len, Some(2_097_215));

        let r3 = whole(
            expect(&s.big3).after(r2.carry().unwrap()),
            &capture(major, &s.big3),
        )
        .unwrap();
        assert!(r3.continuation_checked && r3.ended_with_switch);
        assert_eq!(r3.records, 5, "the big record and the 4 after it");

        // After XLOG_SWITCH the next segment starts afresh; its first record points back at the
        // switch record, on either timeline.
        let r4 = whole(
            expect(&s.partial).after(r3.carry().unwrap()),
            &capture(major, &s.partial),
        )
        .unwrap();
        assert_eq!(r4.records, 201);
        let r5 = whole(
            expect(&s.tli2).after(r3.carry().unwrap()),
            &capture(major, &s.tli2),
        )
        .unwrap();
        assert_eq!(r5.records, 206);

        // A corrupted byte in the middle of the big record: invisible alone, caught in sequence
        // when the record completes.
        let mut bad = big2.clone();
        bad[500_000] ^= 0x01;
        assert!(whole(expect(&s.big2), &bad).is_ok());
        let r2 = whole(expect(&s.big2).after(r1.carry().unwrap()), &bad).unwrap();
        let err = whole(
            expect(&s.big3).after(r2.carry().unwrap()),
            &capture(major, &s.big3),
        )
        .unwrap_err();
        assert!(
            matches!(err, WalError::CrcMismatch { lsn, .. } if lsn == big.record_start),
            "{major}: {err}"
        );

        // The wrong order is refused.
        let err = SegmentValidator::new(expect(&s.big3).after(r1.carry().unwrap())).unwrap_err();
        assert!(matches!(err, WalError::NotContiguous { .. }), "{err}");
        assert_eq!(r4.carry(), None);
    }
}

#[test]
fn new_timeline_segment_with_its_history() {
    for major in MAJORS {
        let s = set(major);
        let text = capture(major, &s.history);
        let history = TimelineHistory::parse(TimelineId(2), &text).unwrap();
        let switch = history.switchpoint_of(TimelineId(1)).unwrap();
        let partial = whole(expect(&s.partial), &capture(major, &s.partial)).unwrap();
        assert_eq!(
            partial.valid_up_to, switch,
            "{major}: the old timeline ends at the switchpoint"
        );

        let data = capture(major, &s.tli2);
        let plain = whole(expect(&s.tli2), &data).unwrap();
        assert_eq!(
            whole(expect(&s.tli2).with_history(history.clone()), &data).as_ref(),
            Ok(&plain)
        );

        // Pages of timeline 1 at or after its switchpoint are not in timeline 2's history.
        let early = TimelineHistory::parse(TimelineId(2), b"1\t0/100\tx\n").unwrap();
        let err = whole(expect(&s.tli2).with_history(early), &data).unwrap_err();
        assert!(
            matches!(err, WalError::WrongTimeline { problem: TimelineProblem::NotInHistory, lsn, .. } if lsn == plain.start),
            "{major}: {err}"
        );
        // The same bytes under a timeline-1 name: pages of timeline 2 are above the file's.
        let as_tli1 =
            WalSegmentName::new(TimelineId(1), plain.segment.log(), plain.segment.seg()).unwrap();
        let err = whole(ExpectedSegment::new(as_tli1, MIB), &data).unwrap_err();
        assert!(
            matches!(
                err,
                WalError::WrongTimeline {
                    problem: TimelineProblem::AboveFile,
                    ..
                }
            ),
            "{major}: {err}"
        );
    }
}

const PAGE: usize = 8192;

fn set_u16(d: &mut [u8], at: usize, v: u16) {
    d[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn set_u32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn set_u64(d: &mut [u8], at: usize, v: u64) {
    d[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Offsets of the first records of the first page (those that fit on it).
fn first_page_records(data: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 40;
    while at + 24 <= PAGE {
        let len = u32_at(data, at) as usize;
        if len == 0 || at + len > PAGE {
            break;
        }
        out.push(at);
        at = (at + len + 7) & !7;
    }
    out
}

#[test]
fn corruptions_are_reported_with_their_lsn() {
    for major in MAJORS {
        let s = set(major);
        let data = capture(major, &s.fpi);
        let ok = whole(expect(&s.fpi), &data).unwrap();
        let start = ok.start.0;
        let sysid = ok.system_id.unwrap();
        let segment = segment_of(&s.fpi);
        let magic = page_magic(major).unwrap();
        let page_lsn = |n: usize| Lsn(start + (n * PAGE) as u64);
        let check = |what: &str, bad: &[u8], want: WalError| {
            let e = expect(&s.fpi).with_system_id(sysid);
            assert_eq!(whole(e.clone(), bad), Err(want), "{major} {what}");
            // Errors too do not depend on the split.
            assert_eq!(
                run(e, bad, &random_sizes(major.into(), 5000)),
                whole(expect(&s.fpi).with_system_id(sysid), bad)
            );
        };
        let recs = first_page_records(&data);
        assert!(recs.len() >= 3, "{major}: {recs:?}");
        let third = recs[2];
        let third_lsn = Lsn(start + third as u64);

        let mut d = data.clone();
        let len = u32_at(&d, third) as usize;
        d[third + len - 1] ^= 0x40;
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&d[third + 24..third + len]),
            &d[third..third + 20],
        );
        check(
            "flipped body byte",
            &d,
            WalError::CrcMismatch {
                segment,
                lsn: third_lsn,
                found: u32_at(&d, third + 20),
                computed: crc,
            },
        );

        let mut d = data.clone();
        d[third + 20] ^= 0x01;
        let found = u32_at(&d, third + 20);
        check(
            "flipped crc byte",
            &d,
            WalError::CrcMismatch {
                segment,
                lsn: third_lsn,
                found,
                computed: found ^ 0x01,
            },
        );

        let mut d = data.clone();
        set_u64(&mut d, third + 8, start + 8);
        check(
            "bad back link",
            &d,
            WalError::BadPrevLink {
                segment,
                lsn: third_lsn,
                found: Lsn(start + 8),
                expected: Some(Lsn(start + recs[1] as u64)),
            },
        );

        let mut d = data.clone();
        set_u32(&mut d, third, 10);
        check(
            "short record",
            &d,
            WalError::RecordLength {
                segment,
                lsn: third_lsn,
                len: 10,
            },
        );
        set_u32(&mut d, third, u32::MAX);
        check(
            "huge record",
            &d,
            WalError::RecordLength {
                segment,
                lsn: third_lsn,
                len: u32::MAX,
            },
        );

        let mut d = data.clone();
        d[third + 17] = 100;
        check(
            "unknown rmgr",
            &d,
            WalError::BadResourceManager {
                segment,
                lsn: third_lsn,
                rmid: 100,
            },
        );

        let mut d = data.clone();
        set_u16(&mut d, 3 * PAGE, 0xD000);
        check(
            "wrong magic",
            &d,
            WalError::BadMagic {
                segment,
                lsn: page_lsn(3),
                found: 0xD000,
                expected: Some(magic),
            },
        );

        let mut d = data.clone();
        set_u64(&mut d, 5 * PAGE + 8, page_lsn(5).0 - (1 << 20));
        check(
            "stale page address",
            &d,
            WalError::BadPageAddress {
                segment,
                lsn: page_lsn(5),
                found: Lsn(page_lsn(5).0 - (1 << 20)),
            },
        );

        let mut d = data.clone();
        d[24] ^= 0x01;
        check(
            "foreign system",
            &d,
            WalError::ForeignSystem {
                segment,
                found: SystemId(sysid.0 ^ 1),
                expected: sysid,
            },
        );
        assert_eq!(
            whole(expect(&s.fpi).with_system_id(SystemId(1)), &data),
            Err(WalError::ForeignSystem {
                segment,
                found: sysid,
                expected: SystemId(1)
            })
        );

        let mut d = data.clone();
        set_u32(&mut d, 4 * PAGE + 4, 2);
        check(
            "page above the file's timeline",
            &d,
            WalError::WrongTimeline {
                segment,
                lsn: page_lsn(4),
                found: TimelineId(2),
                problem: TimelineProblem::AboveFile,
            },
        );
        set_u32(&mut d, 4 * PAGE + 4, 0);
        check(
            "timeline 0",
            &d,
            WalError::WrongTimeline {
                segment,
                lsn: page_lsn(4),
                found: TimelineId(0),
                problem: TimelineProblem::Zero,
            },
        );

        let mut d = data.clone();
        d[6 * PAGE + 2] |= 0x10;
        let info = u16_at(&d, 6 * PAGE + 2);
        check(
            "unknown info bit",
            &d,
            WalError::BadPageInfo {
                segment,
                lsn: page_lsn(6),
                info,
                reason: "unknown flag bits",
            },
        );
        let mut d = data.clone();
        d[6 * PAGE + 2] |= 0x02;
        let info = u16_at(&d, 6 * PAGE + 2);
        check(
            "long header inside",
            &d,
            WalError::BadPageInfo {
                segment,
                lsn: page_lsn(6),
                info,
                reason: "only a segment's first page has a long header",
            },
        );
        let mut d = data.clone();
        d[2] &= !0x02;
        let info = u16_at(&d, 2);
        check(
            "short first header",
            &d,
            WalError::BadPageInfo {
                segment,
                lsn: page_lsn(0),
                info,
                reason: "a segment's first page must have a long header",
            },
        );

        let mut d = data.clone();
        set_u32(&mut d, 32, 16 << 20);
        check(
            "segment size",
            &d,
            WalError::BadSegmentSize {
                segment,
                found: 16 << 20,
                expected: 1 << 20,
            },
        );
        let mut d = data.clone();
        set_u32(&mut d, 36, 4096);
        check(
            "block size",
            &d,
            WalError::BadBlockSize {
                segment,
                found: 4096,
                expected: 8192,
            },
        );
        let two = WalSegmentSize::new(2 << 20).unwrap();
        let err = SegmentValidator::new(ExpectedSegment::new(segment, two))
            .and_then(|mut v| v.feed(&data).map(|()| v))
            .unwrap_err();
        assert!(
            matches!(
                err,
                WalError::BadSegmentSize {
                    found: 0x100000,
                    ..
                }
            ),
            "{err}"
        );

        // Truncated and oversized files.
        let err = whole(expect(&s.fpi), &data[..100_000]).unwrap_err();
        let WalError::Truncated {
            len: 100_000,
            valid_up_to,
            ..
        } = err
        else {
            panic!("{err}")
        };
        assert!(valid_up_to.0 > start && valid_up_to.0 <= start + 100_000);
        let mut d = data.clone();
        d.push(0);
        assert_eq!(
            whole(expect(&s.fpi), &d),
            Err(WalError::TooLong { segment, size: MIB })
        );
    }
}

#[test]
fn continuation_pages_must_say_so() {
    for major in MAJORS {
        let s = set(major);
        let data = capture(major, &s.big2);
        let segment = segment_of(&s.big2);
        let start = segment.start_lsn(MIB).unwrap().0;
        let rem = u32_at(&data, 5 * PAGE + 16);
        let mut d = data.clone();
        d[5 * PAGE + 2] &= !0x01;
        assert_eq!(
            whole(expect(&s.big2), &d),
            Err(WalError::BadContinuation {
                segment,
                lsn: Lsn(start + 5 * PAGE as u64),
                record: Lsn(start),
                expected: rem,
                found: rem,
                flagged: false,
            })
        );
        let mut d = data.clone();
        set_u32(&mut d, 5 * PAGE + 16, rem + 8);
        assert!(matches!(
            whole(expect(&s.big2), &d),
            Err(WalError::BadContinuation { flagged: true, .. })
        ));

        // A continuation flag where the previous segment left no record open.
        let r3 = whole(expect(&s.big3), &capture(major, &s.big3)).unwrap();
        let mut d = capture(major, &s.partial);
        d[2] |= 0x01;
        set_u32(&mut d, 16, 8);
        let partial_segment = segment_of(&s.partial);
        assert_eq!(
            whole(expect(&s.partial).after(r3.carry().unwrap()), &d),
            Err(WalError::UnexpectedContinuation {
                segment: partial_segment,
                lsn: partial_segment.start_lsn(MIB).unwrap(),
                found: 8,
            })
        );
    }
}

#[test]
fn what_follows_the_end_of_wal_must_be_zero() {
    for major in MAJORS {
        let s = set(major);
        // After XLOG_SWITCH.
        let data = capture(major, &s.big3);
        let ok = whole(expect(&s.big3), &data).unwrap();
        let mut d = data.clone();
        d[700_000] = 1;
        assert_eq!(
            whole(expect(&s.big3), &d),
            Err(WalError::NonZeroTail {
                segment: ok.segment,
                end_of_wal: ok.zero_tail_from.unwrap(),
                lsn: Lsn(ok.start.0 + 700_000),
                after_switch: true,
            })
        );
        // In a .partial.
        let data = capture(major, &s.partial);
        let ok = whole(expect(&s.partial), &data).unwrap();
        let mut d = data.clone();
        *d.last_mut().unwrap() = 0xFF;
        assert_eq!(
            whole(expect(&s.partial), &d),
            Err(WalError::NonZeroTail {
                segment: ok.segment,
                end_of_wal: ok.valid_up_to,
                lsn: Lsn(ok.start.0 + (1 << 20) - 1),
                after_switch: false,
            })
        );
        // A tail of stale (recycled) pages is an error too, at the first stale page.
        let mut d = data.clone();
        let fpi = capture(major, &s.fpi);
        let first_zero_page = (ok.valid_up_to.0 - ok.start.0) as usize / PAGE + 1;
        d[first_zero_page * PAGE..].copy_from_slice(&fpi[first_zero_page * PAGE..]);
        assert!(matches!(
            whole(expect(&s.partial), &d),
            Err(WalError::NonZeroTail { .. })
        ));
    }
}

#[test]
fn a_record_cut_by_zeroes_is_incomplete() {
    // As a WAL receiver leaves a segment when the connection drops in the middle of a record
    // spanning pages: the record's first pages, then zeroes.
    for major in MAJORS {
        let s = set(major);
        let data = capture(major, &s.big1);
        let ok = whole(expect(&s.big1), &data).unwrap();
        let big = ok.continuation.unwrap().record_start;
        let cut = ((big.0 - ok.start.0) as usize / PAGE + 3) * PAGE;
        let mut d = data.clone();
        d[cut..].fill(0);
        let r = whole(expect(&s.big1), &d).unwrap();
        assert_eq!(r.incomplete_record, Some(big), "{major}");
        assert_eq!(r.valid_up_to, big);
        assert_eq!(r.zero_tail_from, Some(Lsn(ok.start.0 + cut as u64)));
        assert_eq!(r.last_record_end, ok.last_record_end);
        assert_eq!(r.records, ok.records);
        assert!(!r.is_complete() && r.continuation.is_none());
        assert_split_invariant(&expect(&s.big1), &d, "cut record");
    }
}

#[test]
fn an_all_zero_segment_is_empty_not_corrupt() {
    let name = "000000010000000000000003".parse().unwrap();
    let r = whole(ExpectedSegment::new(name, MIB), &vec![0; 1 << 20]).unwrap();
    assert_eq!(r.records, 0);
    assert_eq!(r.zero_tail_from, Some(Lsn(0x300000)));
    assert_eq!(r.valid_up_to, Lsn(0x300000));
    assert_eq!((r.major, r.system_id, r.is_complete()), (None, None, false));
}

#[test]
fn settings_are_checked() {
    let name: WalSegmentName = "000000010000000000001000".parse().unwrap();
    assert!(matches!(
        SegmentValidator::new(ExpectedSegment::new(name, MIB)),
        Err(WalError::BadName(WalNameError::SegOutOfRange { .. }))
    ));
    let mut e = ExpectedSegment::new("000000010000000000000001".parse().unwrap(), MIB);
    e.block_size = 3000;
    assert!(matches!(
        SegmentValidator::new(e),
        Err(WalError::BadBlockSizeSetting { .. })
    ));
    // An unsupported major never matches a page.
    let data = capture(16, &set(16).fpi);
    let err = whole(expect(&set(16).fpi).with_major(12), &data).unwrap_err();
    assert!(
        matches!(err, WalError::BadMagic { expected: None, .. }),
        "{err}"
    );
    assert_eq!(err.lsn(), Some(Lsn(0x700000)));
}

mod proptests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn fpi16() -> &'static [u8] {
        static DATA: OnceLock<Vec<u8>> = OnceLock::new();
        DATA.get_or_init(|| capture(16, &set(16).fpi))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..20_000),
            split in 1usize..5000,
        ) {
            let e = ExpectedSegment::new("000000010000000000000007".parse().unwrap(), MIB);
            let a = whole(e.clone(), &data);
            prop_assert_eq!(run(e, &data, &[split]), a);
        }

        #[test]
        fn corrupted_capture_never_panics_and_ignores_splits(
            at in 0usize..(1 << 20),
            bytes in proptest::collection::vec(any::<u8>(), 1..64),
            seed: u64,
        ) {
            let mut d = fpi16().to_vec();
            let end = (at + bytes.len()).min(d.len());
            d[at..end].copy_from_slice(&bytes[..end - at]);
            let e = expect(&set(16).fpi);
            let a = whole(e.clone(), &d);
            prop_assert_eq!(run(e, &d, &random_sizes(seed | 1, 9000)), a.clone());
            if let Err(err) = a {
                // An error never points past the damage.
                if let Some(lsn) = err.lsn() {
                    prop_assert!(lsn.0 <= 0x700000 + end as u64, "{}", err);
                }
            }
        }
    }
}

#[test]
fn a_corrupted_continuation_is_caught_only_in_sequence() {
    for major in MAJORS {
        let s = set(major);
        let r1 = whole(expect(&s.big1), &capture(major, &s.big1)).unwrap();
        let big = r1.continuation.unwrap();
        let r2 = whole(
            expect(&s.big2).after(r1.carry().unwrap()),
            &capture(major, &s.big2),
        )
        .unwrap();
        let remaining = r2.carry().unwrap().expected_continuation().unwrap();
        assert!(remaining > 1000, "{major}: {remaining}");
        // A byte of the big record's end, right after the third segment's long page header.
        let mut big3 = capture(major, &s.big3);
        big3[1000] ^= 0x01;

        let alone = whole(expect(&s.big3), &big3).unwrap();
        assert_eq!(alone.continued_from_previous, Some(remaining));
        assert!(!alone.continuation_checked, "{major}: skipped alone");

        let err = whole(expect(&s.big3).after(r2.carry().unwrap()), &big3).unwrap_err();
        assert!(
            matches!(err, WalError::CrcMismatch { lsn, .. } if lsn == big.record_start),
            "{major}: {err}"
        );
    }
}

/// Keeps the leading bytes of `data` fed in uneven chunks.
fn leading(data: &[u8]) -> LeadingBytes {
    let mut l = LeadingBytes::default();
    for chunk in data.chunks(7919) {
        l.feed(chunk);
    }
    l
}

#[test]
fn leading_bytes_check_a_continuation_after_the_fact() {
    for major in MAJORS {
        let s = set(major);
        let (big1, big2, big3) = (
            capture(major, &s.big1),
            capture(major, &s.big2),
            capture(major, &s.big3),
        );
        let r1 = whole(expect(&s.big1), &big1).unwrap();
        let big = r1.continuation.unwrap();
        let r2 = whole(expect(&s.big2).after(r1.carry().unwrap()), &big2).unwrap();

        // The second segment is all continuation: kept whole, and resuming it gives the carry
        // a validation in sequence gives.
        let l2 = leading(&big2);
        assert_eq!(l2.bytes.len(), big2.len());
        assert_eq!(l2.segment_size(), Some(MIB));
        let c2 = l2
            .resume(segment_of(&s.big2), r1.carry().unwrap())
            .unwrap()
            .expect("the record goes on");
        assert_eq!(Some(c2.clone()), r2.carry());

        // The third finishes the record: kept up to its end only, which checks out.
        let l3 = leading(&big3);
        let end = r2.carry().unwrap().expected_continuation().unwrap();
        assert!(
            l3.bytes.len() > end as usize && l3.bytes.len() < big3.len(),
            "{major}: {} bytes kept",
            l3.bytes.len()
        );
        assert_eq!(l3.resume(segment_of(&s.big3), c2.clone()), Ok(None));

        // A flipped byte in the continuation: the record's CRC fails.
        let mut bad = big3.clone();
        bad[1000] ^= 0x01;
        let err = leading(&bad)
            .resume(segment_of(&s.big3), c2.clone())
            .unwrap_err();
        assert!(
            matches!(err, WalError::CrcMismatch { lsn, .. } if lsn == big.record_start),
            "{major}: {err}"
        );

        // A segment that continues nothing keeps its page header only; after XLOG_SWITCH none
        // is expected.
        let r3 = whole(expect(&s.big3).after(c2), &big3).unwrap();
        let l4 = leading(&capture(major, &s.partial));
        assert_eq!(l4.bytes.len(), LONG_HEADER);
        assert_eq!(l4.resume(segment_of(&s.partial), r3.carry().unwrap()), Ok(None));

        // One that should continue the record and does not say so.
        let mut unflagged = big2.clone();
        set_u16(&mut unflagged, 2, u16_at(&big2, 2) & !XLP_FIRST_IS_CONTRECORD);
        let l = leading(&unflagged);
        assert_eq!(l.bytes.len(), LONG_HEADER);
        let err = l
            .resume(segment_of(&s.big2), r1.carry().unwrap())
            .unwrap_err();
        assert!(
            matches!(err, WalError::BadContinuation { flagged: false, .. }),
            "{major}: {err}"
        );
    }
}
