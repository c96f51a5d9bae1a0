//! The archiver against real WAL captured from PostgreSQL 13–18 (`testdata/wal/`, 1 MiB
//! segments), in a temporary catalog.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use barman_replication::SystemId;

use super::*;
use crate::catalog::ServerIdentity;

const MAJORS: [u32; 6] = [13, 14, 15, 16, 17, 18];

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/wal")
}

/// The decompressed capture `file` of `major`.
fn capture(major: u32, file: &str) -> Vec<u8> {
    let path = testdata().join(major.to_string()).join(format!("{file}.zst"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    zstd::decode_all(&raw[..]).expect("zstd")
}

/// The capture names of `major`, sorted: `[seg, seg, seg, seg(switch), tl1.partial,
/// 00000002.history, tl2 seg]` (`testdata/wal/README.md`).
fn captures(major: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(testdata().join(major.to_string()))
        .expect("testdata dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter_map(|n| n.strip_suffix(".zst").map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The system identifier in a segment's long page header (`xlp_sysid`, offset 24).
fn sysid_of(segment: &[u8]) -> SystemId {
    SystemId(u64::from_le_bytes(segment[24..32].try_into().expect("8 bytes")))
}

/// A whole-microsecond mtime, like the ones in Barman's xlog.db samples.
const MTIME: f64 = 1_795_610_025.863_507;

fn mtime() -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(1_795_610_025_863_507_000)
}

struct Site {
    _dir: tempfile::TempDir,
    catalog: ServerCatalog,
    settings: ArchiverSettings,
    major: u32,
}

impl Site {
    /// An empty catalog for server `pg` whose identity.json has `major`'s system identifier.
    fn new(major: u32) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = ServerCatalog::new("pg", dir.path().join("pg"), dir.path());
        catalog.create_skeleton().expect("skeleton");
        let first = &captures(major)[0];
        let identity = ServerIdentity {
            systemid: sysid_of(&capture(major, first)),
            version: major.to_string(),
            extra: Default::default(),
        };
        identity.write(&catalog.identity_path()).expect("identity");
        Site { _dir: dir, catalog, settings: ArchiverSettings::new("pg"), major }
    }

    fn name(&self, i: usize) -> String {
        captures(self.major)[i].clone()
    }

    /// Drops `bytes` as `name` into `dir` with the test mtime.
    fn put_bytes(&self, dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        f.set_modified(mtime()).expect("mtime");
        path
    }

    fn incoming(&self, i: usize) -> String {
        let name = self.name(i);
        self.put_bytes(self.catalog.incoming_directory(), &name, &capture(self.major, &name));
        name
    }

    fn streaming(&self, i: usize) -> String {
        let name = self.name(i);
        self.put_bytes(self.catalog.streaming_directory(), &name, &capture(self.major, &name));
        name
    }

    /// Runs the archiver, returning its report and the lines Barman would print.
    fn archive(&self) -> (ArchiveReport, Vec<String>) {
        let mut lines = Vec::new();
        let report = archive_wal(&self.catalog, &self.settings, &mut |e| lines.push(e.console_line())).expect("archive");
        (report, lines)
    }

    fn archived_path(&self, name: &str) -> PathBuf {
        self.catalog.wal_path(&name.parse().expect("wal name"))
    }

    /// The archived file, decompressed by its magic.
    fn archived_content(&self, name: &str) -> Vec<u8> {
        let path = self.archived_path(name);
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let algo = self.settings.compression.identify(&raw);
        let mut out = Vec::new();
        self.settings.compression.decoder(algo, std::io::Cursor::new(raw)).expect("decoder").read_to_end(&mut out).expect("decompress");
        out
    }

    fn xlogdb_text(&self) -> String {
        std::fs::read_to_string(self.catalog.xlogdb_path()).unwrap_or_default()
    }

    fn xlogdb_names(&self) -> Vec<String> {
        self.xlogdb_text().lines().map(|l| l.split('\t').next().expect("name").to_owned()).collect()
    }

    fn errors(&self) -> Vec<String> {
        list(self.catalog.errors_directory())
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every file under `dir`, recursively (to catch leftover temporaries).
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// `errors/<name>.<YYYYmmddTHHMMSSZ>.<reason>`.
fn is_error_file(file: &str, name: &str, reason: &str) -> bool {
    let Some(rest) = file.strip_prefix(name).and_then(|r| r.strip_prefix('.')) else { return false };
    let Some(stamp) = rest.strip_suffix(reason).and_then(|r| r.strip_suffix('.')) else { return false };
    stamp.len() == 16
        && stamp.as_bytes()[8] == b'T'
        && stamp.ends_with('Z')
        && stamp.bytes().enumerate().all(|(i, b)| i == 8 || i == 15 || b.is_ascii_digit())
}

#[test]
fn plain_archiving_of_every_major_keeps_bytes_and_writes_barmans_xlogdb_lines() {
    for major in MAJORS {
        let site = Site::new(major);
        let names: Vec<String> = (0..7).map(|i| site.incoming(i)).collect();
        let (report, lines) = site.archive();

        let mut expected_lines = vec!["Processing xlog segments from file archival for pg".to_owned()];
        // Sorted: the timeline 2 history file sorts after every segment name.
        let mut order = names.clone();
        order.sort();
        expected_lines.extend(order.iter().map(|n| format!("\t{n}")));
        assert_eq!(lines, expected_lines, "major {major}");
        assert_eq!(report.archived().count(), 7, "major {major}");

        for name in &names {
            assert_eq!(site.archived_content(name), capture(major, name), "major {major} {name}");
            let stored = std::fs::metadata(site.archived_path(name)).expect("stat");
            assert_eq!(stored.modified().expect("mtime"), mtime(), "the source's mtime is kept ({name})");
        }
        assert!(site.archived_path("00000002.history").starts_with(site.catalog.wals_directory()));
        assert_eq!(
            site.archived_path("00000002.history").parent(),
            Some(site.catalog.wals_directory()),
            "history files live at the top of wals/"
        );

        let expected_db: String = order
            .iter()
            .map(|n| format!("{n}\t{}\t{MTIME}\tNone\tNone\n", capture(major, n).len()))
            .collect();
        assert_eq!(site.xlogdb_text(), expected_db, "major {major}");
        assert!(list(site.catalog.incoming_directory()).is_empty());
        assert!(site.errors().is_empty());
        // No temporary files anywhere in the archive.
        assert!(walk(site.catalog.wals_directory()).iter().all(|f| !f.ends_with(".tmp")));
    }
}

#[test]
fn compressed_archiving_with_each_algorithm() {
    let cases = [
        (Compression::Gzip, &b"\x1f\x8b\x08"[..], "gzip"),
        (Compression::Pigz, &b"\x1f\x8b\x08"[..], "pigz"),
        (Compression::Zstd, &b"\x28\xb5\x2f\xfd"[..], "zstd"),
        (Compression::Bzip2, &b"BZh"[..], "bzip2"),
        (Compression::Lz4, &b"\x04\x22\x4d\x18"[..], "lz4"),
    ];
    for (algorithm, magic, word) in cases {
        let mut site = Site::new(16);
        site.settings.compression = WalCompression::with(algorithm);
        let seg = site.incoming(0);
        let history = site.incoming(5);
        site.archive();
        for name in [&seg, &history] {
            let path = site.archived_path(name);
            let raw = std::fs::read(&path).expect("archived");
            assert!(raw.starts_with(magic), "{word}: {name} starts with its magic");
            assert!(raw.len() < capture(16, name).len() || name.ends_with(".history"), "{word}: compressed");
            assert_eq!(site.archived_content(name), capture(16, name), "{word}: {name} decompresses to the source");
            assert_eq!(std::fs::metadata(&path).expect("stat").modified().expect("mtime"), mtime());
        }
        let seg_size = std::fs::metadata(site.archived_path(&seg)).expect("stat").len();
        let hist_size = std::fs::metadata(site.archived_path(&history)).expect("stat").len();
        assert_eq!(
            site.xlogdb_text(),
            format!("{seg}\t{seg_size}\t{MTIME}\t{word}\tNone\n{history}\t{hist_size}\t{MTIME}\t{word}\tNone\n"),
            "{word}: size on disk, source mtime, the configured name"
        );
    }
}

#[test]
fn a_file_arriving_gzip_compressed_is_stored_as_it_came() {
    let mut site = Site::new(16);
    site.settings.compression = WalCompression::with(Compression::Zstd);
    let name = site.name(1);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&capture(16, &name)).expect("gzip");
    let gz = gz.finish().expect("gzip");
    site.put_bytes(site.catalog.incoming_directory(), &name, &gz);
    let (report, _) = site.archive();
    assert_eq!(report.archived().count(), 1);
    assert_eq!(std::fs::read(site.archived_path(&name)).expect("archived"), gz, "not recompressed");
    assert_eq!(site.xlogdb_text(), format!("{name}\t{}\t{MTIME}\tgzip\tNone\n", gz.len()));
}

#[test]
fn a_compressed_arrival_with_broken_wal_inside_is_refused() {
    let site = Site::new(16);
    let name = site.name(1);
    let mut wal = capture(16, &name);
    wal[100_000] ^= 0xff;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&wal).expect("gzip");
    site.put_bytes(site.catalog.incoming_directory(), &name, &gz.finish().expect("gzip"));
    let (report, _) = site.archive();
    assert_eq!(report.archived().count(), 0);
    let errors = site.errors();
    assert_eq!(errors.len(), 1);
    assert!(is_error_file(&errors[0], &name, "corrupt"), "{errors:?}");
    assert!(!site.archived_path(&name).exists());
}

#[test]
fn identical_duplicate_is_dropped_and_a_missing_xlogdb_line_is_restored() {
    let mut site = Site::new(16);
    site.settings.compression = WalCompression::with(Compression::Gzip);
    let name = site.incoming(0);
    site.archive();
    let line = site.xlogdb_text();

    // The same WAL again (as an archive_command retry does): dropped, nothing else changes.
    site.incoming(0);
    let (report, lines) = site.archive();
    assert_eq!(lines, ["Processing xlog segments from file archival for pg".to_owned(), format!("\t{name}")]);
    let parsed: crate::wal::WalFileName = name.parse().expect("name");
    assert_eq!(
        report.passes[0].outcomes,
        [FileOutcome::IdenticalDuplicate { name: parsed, xlogdb_repaired: false }]
    );
    assert!(list(site.catalog.incoming_directory()).is_empty());
    assert!(site.errors().is_empty());
    assert_eq!(site.xlogdb_text(), line);

    // A crash after the file entered wals/ but before xlog.db was appended: the retry adds it.
    std::fs::write(site.catalog.xlogdb_path(), "").expect("empty xlog.db");
    site.incoming(0);
    let (report, _) = site.archive();
    assert_eq!(
        report.passes[0].outcomes,
        [FileOutcome::IdenticalDuplicate { name: parsed, xlogdb_repaired: true }]
    );
    assert_eq!(site.xlogdb_text(), line, "the same line as the first archival (size and mtime of the stored file)");
    assert!(list(site.catalog.incoming_directory()).is_empty());
}

#[test]
fn different_duplicate_goes_to_errors_as_duplicate() {
    let site = Site::new(16);
    let name = site.incoming(0);
    site.archive();
    let before = std::fs::read(site.archived_path(&name)).expect("archived");
    let mut other = capture(16, &name);
    other[500_000] ^= 1;
    site.put_bytes(site.catalog.incoming_directory(), &name, &other);
    let (report, lines) = site.archive();
    assert_eq!(
        lines,
        [
            "Processing xlog segments from file archival for pg".to_owned(),
            format!("\t{name}"),
            format!("\tError: {name} is already present in server pg. File moved to errors directory."),
        ],
        "Barman's words (commands/21-archive-wal-errors.txt)"
    );
    assert_eq!(report.moved_to_errors().count(), 1);
    let errors = site.errors();
    assert_eq!(errors.len(), 1);
    assert!(is_error_file(&errors[0], &name, "duplicate"), "{errors:?}");
    assert_eq!(std::fs::read(site.catalog.errors_directory().join(&errors[0])).expect("moved"), other);
    assert_eq!(std::fs::read(site.archived_path(&name)).expect("archived"), before, "the archive is untouched");
    assert_eq!(site.xlogdb_names(), [name]);
}

#[test]
fn corrupt_and_foreign_segments_go_to_errors() {
    let site = Site::new(16);
    // A flipped byte inside the records.
    let bad = site.name(1);
    let mut wal = capture(16, &bad);
    wal[300_000] ^= 0x55;
    site.put_bytes(site.catalog.incoming_directory(), &bad, &wal);
    // A truncated segment.
    let short = site.name(2);
    site.put_bytes(site.catalog.incoming_directory(), &short, &capture(16, &short)[..200_000]);
    // A good one, archived in between.
    let good = site.incoming(0);
    let (report, lines) = site.archive();
    assert_eq!(report.archived().map(|a| a.entry.name.to_string()).collect::<Vec<_>>(), std::slice::from_ref(&good));
    assert!(lines.iter().any(|l| l.starts_with(&format!("\tError: {bad} is not valid WAL (corrupt: "))), "{lines:?}");
    let errors = site.errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|f| is_error_file(f, &bad, "corrupt")), "{errors:?}");
    assert!(errors.iter().any(|f| is_error_file(f, &short, "corrupt")), "{errors:?}");
    assert_eq!(site.xlogdb_names(), std::slice::from_ref(&good));
    assert!(walk(site.catalog.wals_directory()).iter().all(|f| !f.ends_with(".tmp")), "no temporary left behind");

    // WAL of another cluster (a 17 capture into a catalog whose identity is 16's).
    // (Its name must not be archived yet, or it would be a duplicate.)
    let foreign = captures(17).into_iter().find(|n| n.len() == 24 && *n != good).expect("a segment");
    site.put_bytes(site.catalog.incoming_directory(), &foreign, &capture(17, &foreign));
    let (report, lines) = site.archive();
    assert_eq!(report.archived().count(), 0);
    assert!(lines.iter().any(|l| l.starts_with(&format!("\tError: {foreign} is not valid WAL (foreign: system identifier"))), "{lines:?}");
    assert!(site.errors().iter().any(|f| is_error_file(f, &foreign, "foreign")));
    assert!(!site.archived_path(&foreign).exists());
}

#[test]
fn an_all_zero_segment_is_refused() {
    let site = Site::new(16);
    let name = site.name(0);
    site.put_bytes(site.catalog.incoming_directory(), &name, &vec![0u8; 1 << 20]);
    let (report, _) = site.archive();
    assert_eq!(report.archived().count(), 0);
    assert!(site.errors().iter().any(|f| is_error_file(f, &name, "corrupt")));
}

#[test]
fn streaming_keeps_the_partial_and_the_newest_file_for_the_receiver() {
    let mut site = Site::new(16);
    site.settings.streaming_archiver = true;
    site.settings.file_archiver = false;
    site.settings.compression = WalCompression::with(Compression::Zstd);
    let a = site.streaming(0);
    let b = site.streaming(1);
    // The receiver's open segment: the next one, partly written.
    let open = format!("{}.partial", site.name(2));
    site.put_bytes(site.catalog.streaming_directory(), &open, &capture(16, &site.name(2))[..65536]);
    let (report, lines) = site.archive();
    assert_eq!(
        lines,
        [
            "Processing xlog segments from streaming for pg (batch size: 2)".to_owned(),
            format!("\t{a}"),
            format!("\t{b}"),
        ]
    );
    assert_eq!(report.passes[0].left_behind, std::slice::from_ref(&open));
    assert_eq!(list(site.catalog.streaming_directory()), [open]);
    assert_eq!(site.archived_content(&a), capture(16, &a));
    assert_eq!(site.xlogdb_names(), [a, b]);

    // Nothing left to do: verbose prints the header and "no file found".
    let (_, lines) = site.archive();
    assert_eq!(lines, ["Processing xlog segments from streaming for pg", "\tno file found"]);
}

#[test]
fn streaming_without_partial_leaves_the_newest_segment() {
    let mut site = Site::new(16);
    site.settings.streaming_archiver = true;
    site.settings.file_archiver = false;
    let a = site.streaming(0);
    let b = site.streaming(1);
    let (report, _) = site.archive();
    assert_eq!(site.xlogdb_names(), [a]);
    assert_eq!(report.passes[0].left_behind, std::slice::from_ref(&b));
    assert_eq!(list(site.catalog.streaming_directory()), [b]);
}

#[test]
fn partial_and_history_files_from_incoming_are_archived() {
    let site = Site::new(16);
    let partial = site.incoming(4);
    let history = site.incoming(5);
    assert!(partial.ends_with(".partial") && history.ends_with(".history"));
    let (report, _) = site.archive();
    let archived: Vec<_> = report.archived().collect();
    assert_eq!(archived.len(), 2);
    let p = archived.iter().find(|a| a.entry.name.to_string() == partial).expect("partial archived");
    assert!(p.valid_up_to.is_some(), "a .partial reports where its WAL ends");
    assert_eq!(site.archived_content(&partial), capture(16, &partial));
    assert_eq!(site.archived_content(&history), capture(16, &history));
    assert_eq!(site.xlogdb_names(), [partial, history]);
}

#[test]
fn a_broken_history_file_is_refused() {
    let site = Site::new(16);
    site.put_bytes(site.catalog.incoming_directory(), "00000003.history", b"this is not\ta history file\n");
    let (report, _) = site.archive();
    assert_eq!(report.archived().count(), 0);
    assert!(site.errors().iter().any(|f| is_error_file(f, "00000003.history", "corrupt")), "{:?}", site.errors());
}

#[test]
fn batch_size_limits_each_run() {
    let mut site = Site::new(16);
    site.settings.archiver_batch_size = 2;
    let names: Vec<String> = (0..4).map(|i| site.incoming(i)).collect();
    let (_, lines) = site.archive();
    assert_eq!(
        lines,
        [
            "Processing xlog segments from file archival for pg (batch size: 2)".to_owned(),
            format!("\t{}", names[0]),
            format!("\t{}", names[1]),
        ]
    );
    assert_eq!(list(site.catalog.incoming_directory()), names[2..].to_vec());
    let (_, lines) = site.archive();
    assert_eq!(lines[0], "Processing xlog segments from file archival for pg", "the rest fits: no batch size shown");
    assert_eq!(site.xlogdb_names(), names);
}

#[test]
fn unknown_files_go_to_errors_with_barmans_lines() {
    let site = Site::new(16);
    site.put_bytes(site.catalog.incoming_directory(), "garbage.txt", b"hello");
    let name = site.incoming(0);
    let (_, lines) = site.archive();
    assert_eq!(
        lines,
        [
            "Processing xlog segments from file archival for pg (batch size: 1)".to_owned(),
            format!("\t{name}"),
            "Some unknown objects have been found while processing xlog segments for pg. Objects moved to errors directory:"
                .to_owned(),
            "\tgarbage.txt".to_owned(),
        ]
    );
    let errors = site.errors();
    assert_eq!(errors.len(), 1);
    assert!(is_error_file(&errors[0], "garbage.txt", "unknown"), "{errors:?}");
}

#[test]
fn quiet_mode_prints_nothing_without_files() {
    let mut site = Site::new(16);
    site.settings.verbose = false;
    site.settings.streaming_archiver = true;
    let (_, lines) = site.archive();
    assert!(lines.is_empty(), "{lines:?}");
    let name = site.incoming(0);
    let (_, lines) = site.archive();
    assert_eq!(lines, ["Processing xlog segments from file archival for pg".to_owned(), format!("\t{name}")]);
}

#[test]
fn a_second_archiver_is_refused_while_the_lock_is_held() {
    let site = Site::new(16);
    let _held = site.catalog.lock(LockKind::ServerArchiveWal).expect("lock");
    let err = archive_wal(&site.catalog, &site.settings, &mut |_| {}).expect_err("busy");
    assert!(matches!(err, ArchiveError::AlreadyRunning { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Another archive-wal process is already running on server pg. Skipping to the next server"
    );
}

#[test]
fn without_identity_json_any_system_is_accepted() {
    let site = Site::new(15);
    std::fs::remove_file(site.catalog.identity_path()).expect("rm identity");
    let name = site.incoming(0);
    let (report, _) = site.archive();
    assert_eq!(report.archived().count(), 1);
    assert_eq!(site.xlogdb_names(), [name]);
}

#[test]
fn files_checked_in_parallel_are_committed_in_wal_order_and_a_corrupt_one_still_goes_to_errors() {
    for workers in [1, 2, 3, 8] {
        let mut site = Site::new(17);
        site.settings.workers = workers;
        site.settings.compression = WalCompression::with(Compression::Zstd);
        let names: Vec<String> = (0..7).map(|i| site.incoming(i)).collect();
        // A flipped byte among the small records of the second segment.
        let bad = names[1].clone();
        let mut wal = capture(17, &bad);
        wal[100_000] ^= 0x55;
        site.put_bytes(site.catalog.incoming_directory(), &bad, &wal);

        let (report, lines) = site.archive();
        let mut expected = vec!["Processing xlog segments from file archival for pg".to_owned()];
        for n in &names {
            expected.push(format!("\t{n}"));
            if *n == bad {
                let refused = lines.iter().find(|l| l.starts_with(&format!("\tError: {bad} is not valid WAL (corrupt: ")));
                expected.push(refused.unwrap_or_else(|| panic!("{workers} workers: {lines:?}")).clone());
            }
        }
        assert_eq!(lines, expected, "{workers} workers: Barman's lines, in order");
        let good: Vec<String> = names.iter().filter(|n| **n != bad).cloned().collect();
        let archived: Vec<String> = report.archived().map(|a| a.entry.name.to_string()).collect();
        assert_eq!(archived, good, "{workers} workers");
        assert_eq!(site.xlogdb_names(), good, "{workers} workers: xlog.db in WAL order");
        for n in &good {
            assert_eq!(site.archived_content(n), capture(17, n), "{workers} workers: {n}");
        }
        let errors = site.errors();
        assert!(errors.len() == 1 && is_error_file(&errors[0], &bad, "corrupt"), "{workers} workers: {errors:?}");
        assert!(list(site.catalog.incoming_directory()).is_empty());
        assert!(walk(site.catalog.wals_directory()).iter().all(|f| !f.ends_with(".tmp")), "{workers} workers");
    }
}

#[test]
fn an_error_mid_batch_keeps_what_follows_in_incoming_and_leaves_no_temporary() {
    let mut site = Site::new(16);
    site.settings.workers = 4;
    let names: Vec<String> = (0..7).map(|i| site.incoming(i)).collect();
    // Where the fourth file would be archived stands a directory: it cannot be read as a
    // duplicate, and archiving stops there, after the files before it were committed.
    let blocked = site.archived_path(&names[3]);
    std::fs::create_dir_all(&blocked).expect("mkdir");
    let mut lines = Vec::new();
    let err = archive_wal(&site.catalog, &site.settings, &mut |e| lines.push(e.console_line())).expect_err("stops");
    assert!(matches!(err, ArchiveError::Storage(_)), "{err:?}");
    assert_eq!(site.xlogdb_names(), names[..3].to_vec());
    assert_eq!(list(site.catalog.incoming_directory()), names[3..].to_vec(), "the rest waits for the next run");
    // The files staged ahead of the failure were dropped with their temporary files.
    assert!(walk(site.catalog.wals_directory()).iter().all(|f| !f.ends_with(".tmp")), "{:?}", walk(site.catalog.wals_directory()));
    assert!(lines.last().is_some_and(|l| *l == format!("\t{}", names[3])), "{lines:?}");

    std::fs::remove_dir(&blocked).expect("rmdir");
    let (report, _) = site.archive();
    assert_eq!(report.archived().count(), 4);
    assert_eq!(site.xlogdb_names(), names);
}

/// `wal` gzip-compressed, as an archive_command may deliver it.
fn gzip(wal: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(wal).expect("gzip");
    gz.finish().expect("gzip")
}

#[test]
fn a_corrupted_continuation_is_caught_when_the_segment_before_is_in_the_batch() {
    for major in MAJORS {
        for workers in [1, 3] {
            let mut site = Site::new(major);
            site.settings.workers = workers;
            // Captures 1–3 hold a 2 MiB record: begun in the first, all of the second, ended
            // in the third. A byte of its end, right after the third's long page header, is
            // flipped: the third alone cannot tell (its bytes finish a record it never saw).
            let (first, second, third) = (site.name(1), site.name(2), site.name(3));
            let mut bad = capture(major, &third);
            bad[1000] ^= 0x01;

            let alone = Site::new(major);
            alone.put_bytes(alone.catalog.incoming_directory(), &third, &bad);
            assert_eq!(alone.archive().0.archived().count(), 1, "{major}: unchecked alone");

            site.incoming(1);
            // The second arrives compressed: its bytes are kept through the decompressor.
            site.put_bytes(site.catalog.incoming_directory(), &second, &gzip(&capture(major, &second)));
            site.put_bytes(site.catalog.incoming_directory(), &third, &bad);
            let (report, lines) = site.archive();
            let archived: Vec<String> = report.archived().map(|a| a.entry.name.to_string()).collect();
            assert_eq!(archived, [first.clone(), second.clone()], "{major}, {workers} workers");
            assert!(
                lines.iter().any(|l| l.starts_with(&format!("\tError: {third} is not valid WAL (corrupt: ")) && l.contains("CRC")),
                "{major}, {workers} workers: {lines:?}"
            );
            let errors = site.errors();
            assert!(errors.len() == 1 && is_error_file(&errors[0], &third, "corrupt"), "{errors:?}");
            assert_eq!(site.xlogdb_names(), [first.clone(), second.clone()]);
            assert!(walk(site.catalog.wals_directory()).iter().all(|f| !f.ends_with(".tmp")), "no temporary left behind");

            // The intact segment then follows, checked after nothing (the batch starts with it).
            site.incoming(3);
            assert_eq!(site.archive().0.archived().count(), 1);
            assert_eq!(site.xlogdb_names(), [first, second, third]);
        }
    }
}

#[test]
fn a_corrupted_continuation_is_caught_when_the_segment_before_was_archived_by_an_earlier_run() {
    for major in MAJORS {
        for compression in [None, Some(Compression::Gzip)] {
            let mut site = Site::new(major);
            if let Some(c) = compression {
                site.settings.compression = WalCompression::with(c);
            }
            // As in the test above, the third's first bytes end the 2 MiB record; here the
            // first two were archived by an earlier run (one segment per run, as an
            // archive_command delivers them), and are read back from the archive to check it.
            let (first, second, third) = (site.name(1), site.name(2), site.name(3));
            site.incoming(1);
            assert_eq!(site.archive().0.archived().count(), 1);
            site.incoming(2);
            assert_eq!(site.archive().0.archived().count(), 1);
            let mut bad = capture(major, &third);
            bad[1000] ^= 0x01;
            site.put_bytes(site.catalog.incoming_directory(), &third, &bad);
            let (report, lines) = site.archive();
            assert_eq!(report.archived().count(), 0, "{major} {compression:?}: {lines:?}");
            assert!(
                lines.iter().any(|l| l.starts_with(&format!("\tError: {third} is not valid WAL (corrupt: ")) && l.contains("CRC")),
                "{major} {compression:?}: {lines:?}"
            );
            let errors = site.errors();
            assert!(errors.len() == 1 && is_error_file(&errors[0], &third, "corrupt"), "{errors:?}");

            site.incoming(3);
            assert_eq!(site.archive().0.archived().count(), 1, "{major} {compression:?}: the intact one passes");
            assert_eq!(site.xlogdb_names(), [first, second, third]);
        }
    }
}

#[test]
fn a_continuation_is_not_checked_across_a_gap_or_a_refused_segment() {
    let major = 16;
    let site = Site::new(major);
    // The first segment of the record, then the third with its continuation intact: the
    // second is missing, so nothing links them and the third is archived unchecked.
    site.incoming(1);
    site.incoming(3);
    let (report, _) = site.archive();
    assert_eq!(report.archived().count(), 2);
    assert!(site.errors().is_empty());

    // A refused segment (here truncated) carries nothing to the next.
    let site = Site::new(major);
    site.incoming(1);
    let second = site.name(2);
    site.put_bytes(site.catalog.incoming_directory(), &second, &capture(major, &second)[..200_000]);
    site.incoming(3);
    let (report, _) = site.archive();
    let archived: Vec<String> = report.archived().map(|a| a.entry.name.to_string()).collect();
    assert_eq!(archived, [site.name(1), site.name(3)]);
    let errors = site.errors();
    assert!(errors.len() == 1 && is_error_file(&errors[0], &second, "corrupt"), "{errors:?}");
}

#[test]
fn a_continuation_from_another_system_is_refused_as_foreign() {
    // Without identity.json each segment alone accepts any system identifier; the second,
    // continuing the first's record, must still carry the first's (as `sync-wals` finds).
    let major = 18;
    let site = Site::new(major);
    std::fs::remove_file(site.catalog.identity_path()).expect("rm identity");
    site.incoming(1);
    let second = site.name(2);
    let mut other = capture(major, &second);
    other[24] ^= 0x01;
    site.put_bytes(site.catalog.incoming_directory(), &second, &other);
    let (report, lines) = site.archive();
    assert_eq!(report.archived().count(), 1);
    assert!(lines.iter().any(|l| l.starts_with(&format!("\tError: {second} is not valid WAL (foreign: system identifier"))), "{lines:?}");
    let errors = site.errors();
    assert!(errors.len() == 1 && is_error_file(&errors[0], &second, "foreign"), "{errors:?}");
}

mod waiting_for_wals {
    use super::*;
    use crate::catalog::{BackupId, BackupInfo, BackupStatus};

    /// 16's captures are segments 07, 09, 0A, 0B of timeline 1 (08 is not captured).
    fn seg(hex: &str) -> crate::wal::WalSegmentName {
        format!("0000000100000000000000{hex}").parse().expect("segment")
    }

    fn backup(site: &Site, id: &str, begin: &str, end: Option<&str>, status: BackupStatus) -> BackupId {
        let id: BackupId = id.parse().expect("id");
        let mut info = BackupInfo::new(id);
        info.status = status;
        info.begin_wal = Some(seg(begin));
        info.end_wal = end.map(seg);
        info.xlog_segment_size = Some(crate::wal::WalSegmentSize::MIN);
        info.write(&site.catalog).expect("write backup.info");
        id
    }

    fn status(site: &Site, id: BackupId) -> BackupInfo {
        BackupInfo::read(&site.catalog, id).expect("read")
    }

    /// Archives 16's captures `indexes` through incoming/.
    fn archive(site: &Site, indexes: &[usize]) {
        for &i in indexes {
            site.incoming(i);
        }
        site.archive();
    }

    #[test]
    fn done_once_the_end_segment_is_archived() {
        let site = Site::new(16);
        let id = backup(&site, "20261125T123210", "09", Some("0B"), BackupStatus::WaitingForWals);
        // Nothing archived on the timeline yet (case 1).
        assert_eq!(complete_waiting_backups(&site.catalog).expect("check"), []);
        archive(&site, &[0]); // 07, before the backup's start (case 2)
        assert_eq!(complete_waiting_backups(&site.catalog).expect("check"), []);
        archive(&site, &[1, 2]); // 09, 0A: on the way (case 5)
        assert_eq!(complete_waiting_backups(&site.catalog).expect("check"), []);
        assert_eq!(status(&site, id).status, BackupStatus::WaitingForWals);
        archive(&site, &[3]); // 0B: the end (case 4)
        assert_eq!(complete_waiting_backups(&site.catalog).expect("check"), [(id, BackupStatus::Done)]);
        let info = status(&site, id);
        assert_eq!(info.status, BackupStatus::Done);
        assert_eq!(info.error, None);
        let text = std::fs::read_to_string(site.catalog.backup_info_path(id)).expect("backup.info");
        assert!(text.lines().any(|l| l == "status=DONE"), "{text}");
        // Nothing more to do.
        assert_eq!(complete_waiting_backups(&site.catalog).expect("check"), []);
    }

    #[test]
    fn failed_when_the_archive_moved_past_a_missing_segment() {
        let site = Site::new(16);
        let id = backup(&site, "20261125T123210", "07", Some("0A"), BackupStatus::WaitingForWals);
        archive(&site, &[0, 1]); // 07 and 09: 08 will never come
        assert_eq!(complete_waiting_backups(&site.catalog).expect("check"), [(id, BackupStatus::Failed)]);
        let info = status(&site, id);
        assert_eq!(info.status, BackupStatus::Failed);
        assert_eq!(
            info.error.as_deref(),
            Some("At least one WAL file is missing. The first missing WAL file is 000000010000000000000008")
        );
    }

    #[test]
    fn only_waiting_backups_are_touched_and_failed_ones_stay_failed() {
        let site = Site::new(16);
        archive(&site, &[1, 2, 3]);
        let failed = backup(&site, "20261125T120000", "09", Some("0A"), BackupStatus::Failed);
        let done = backup(&site, "20261125T120100", "09", Some("0A"), BackupStatus::Done);
        let started = backup(&site, "20261125T120200", "09", None, BackupStatus::WaitingForWals);
        let waiting = backup(&site, "20261125T120300", "09", Some("0A"), BackupStatus::WaitingForWals);
        assert_eq!(complete_waiting_backups(&site.catalog).expect("check"), [(waiting, BackupStatus::Done)]);
        assert_eq!(status(&site, failed).status, BackupStatus::Failed);
        assert_eq!(status(&site, done).status, BackupStatus::Done);
        assert_eq!(status(&site, started).status, BackupStatus::WaitingForWals, "no end_wal: still copying");

        // check_backup refuses to turn a FAILED backup into DONE.
        let mut info = status(&site, failed);
        assert!(!check_backup(&site.catalog, &mut info).expect("check"));
        assert_eq!(status(&site, failed).status, BackupStatus::Failed);
    }

    #[test]
    fn a_locked_backup_is_skipped() {
        let site = Site::new(16);
        archive(&site, &[1, 2]);
        let id = backup(&site, "20261125T123210", "09", Some("0A"), BackupStatus::WaitingForWals);
        let held = site.catalog.lock(crate::catalog::LockKind::Backup(id)).expect("lock");
        assert_eq!(complete_waiting_backups(&site.catalog).expect("check"), []);
        drop(held);
        assert_eq!(complete_waiting_backups(&site.catalog).expect("check"), [(id, BackupStatus::Done)]);
    }

    #[test]
    fn latest_archived_ignores_partial_backup_and_history_files() {
        let site = Site::new(16);
        archive(&site, &[0, 4, 5, 6]); // 07, 0C.partial (tl 1), 00000002.history, 0C (tl 2)
        let latest = latest_archived_segments(&site.catalog).expect("latest");
        assert_eq!(latest.get("00000001").map(String::as_str), Some("000000010000000000000007"));
        assert_eq!(latest.get("00000002").map(String::as_str), Some("00000002000000000000000C"));
        assert_eq!(latest.len(), 2);
    }
}
