//! `<server>-xlog.db`: the index of every file in the WAL archive, one line per file, in
//! archival order (Barman's `WalFileInfo.to_xlogdb_line` / `from_xlogdb_line` in
//! `barman/infofile.py`).
//!
//! A line is `name\tsize\ttime\tcompression\tencryption\n`:
//!
//! * `name` — the archived file's base name: segment, `.partial`, `.backup` or `.history`;
//! * `size` — bytes on disk (after compression/encryption);
//! * `time` — the file's mtime in seconds since the epoch, as Python's `str(float)`
//!   ([`float_repr`]: `1795610009.7475064`, `1795609896.0`);
//! * `compression` / `encryption` — an algorithm name or the literal `None`.
//!
//! Barman's reader splits each line on any whitespace and accepts 3, 4 or 5 columns (old
//! catalogs lack encryption and maybe compression); barman-rs does the same, and always
//! writes 5. Names must be valid archive names ([`WalFileName`]); lower-case hex, which
//! Barman tolerates, is read and written back in upper case. Deliberate leniency: blank lines
//! are skipped (Barman fails on them). Anything else malformed is an error with its line
//! number.
//!
//! Every access holds the `.<server>-xlogdb.lock` lock ([`CatalogLock`] of kind
//! [`LockKind::ServerXlogDb`]), which these functions take as a parameter so it cannot be
//! forgotten. Appends are fsynced (as Barman does); rewrites (after deleting WAL, or when
//! rebuilding, which Barman sorts) replace the file atomically.

use std::path::Path;

use super::backup_info::py_is_space;
use super::lock::{CatalogLock, LockKind};
use super::pyliteral::float_repr;
use super::{CatalogError, ParseError, ParseProblem};
use crate::storage::{self, append_durable, atomic_write, FILE_MODE};
use crate::wal::WalFileName;

/// One archived WAL file, as recorded in xlog.db.
#[derive(Debug, Clone, PartialEq)]
pub struct XlogDbEntry {
    /// The file's name in the archive.
    pub name: WalFileName,
    /// Its size on disk.
    pub size: u64,
    /// Its modification time, seconds since the epoch (preserved from the source file, so it
    /// is when PostgreSQL or the WAL receiver last wrote it, not the archival time).
    pub time: f64,
    /// The compression detected or applied (`gzip`, `zstd`, …), `None` when stored raw.
    pub compression: Option<String>,
    /// `gpg` when encrypted.
    pub encryption: Option<String>,
}

impl XlogDbEntry {
    /// Parses one line's text (without its terminator).
    pub fn parse_line(line: &str) -> Result<Self, ParseProblem> {
        let columns: Vec<&str> = line.split(py_is_space).filter(|c| !c.is_empty()).collect();
        if !(3..=5).contains(&columns.len()) {
            return Err(ParseProblem::ColumnCount { found: columns.len() });
        }
        let bad = |field: &str, value: &str, expected| ParseProblem::BadValue {
            field: field.to_owned(),
            value: value.to_owned(),
            expected,
        };
        let name = columns[0]
            .parse::<WalFileName>()
            .map_err(|_| bad("name", columns[0], "a WAL, .partial, .backup or .history file name"))?;
        let size_text = columns[1].strip_prefix('+').unwrap_or(columns[1]);
        let size = if !size_text.is_empty() && size_text.bytes().all(|b| b.is_ascii_digit()) {
            size_text.parse().ok()
        } else {
            None
        }
        .ok_or_else(|| bad("size", columns[1], "a size in bytes"))?;
        let time = columns[2]
            .parse::<f64>()
            .map_err(|_| bad("time", columns[2], "a number of seconds"))?;
        let optional = |i: usize| columns.get(i).filter(|c| **c != "None").map(|c| (*c).to_owned());
        Ok(XlogDbEntry { name, size, time, compression: optional(3), encryption: optional(4) })
    }

    /// The line Barman writes for this entry, newline included.
    pub fn to_line(&self) -> Result<String, CatalogError> {
        fn token(field: &str, v: &Option<String>) -> Result<String, CatalogError> {
            match v {
                None => Ok("None".to_owned()),
                Some(s) if s.is_empty() || s == "None" || s.contains(py_is_space) => {
                    Err(CatalogError::Unrepresentable {
                        field: field.to_owned(),
                        value: s.clone(),
                        reason: "an xlog.db column must be one word other than None",
                    })
                }
                Some(s) => Ok(s.clone()),
            }
        }
        Ok(format!(
            "{}\t{}\t{}\t{}\t{}\n",
            self.name,
            self.size,
            float_repr(self.time),
            token("compression", &self.compression)?,
            token("encryption", &self.encryption)?
        ))
    }
}

/// Splits on Python's universal newlines (`\n`, `\r\n`, `\r`), as Barman's text-mode reader.
fn universal_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = match rest.get(end) {
            Some(b'\r') if rest.get(end + 1) == Some(&b'\n') => 2,
            Some(_) => 1,
            None => 0,
        };
        rest = &rest[end + skip..];
        Some(line)
    })
}

/// Parses a whole xlog.db.
pub fn parse(bytes: &[u8]) -> Result<Vec<XlogDbEntry>, ParseError> {
    let mut entries = Vec::new();
    for (i, raw) in universal_lines(bytes).enumerate() {
        let err = |problem| ParseError { line: i + 1, problem };
        let line = std::str::from_utf8(raw).map_err(|_| err(ParseProblem::NotUtf8))?;
        if line.chars().all(py_is_space) {
            continue;
        }
        entries.push(XlogDbEntry::parse_line(line).map_err(err)?);
    }
    Ok(entries)
}

/// The bytes of an xlog.db holding `entries`, in the given order.
pub fn render(entries: &[XlogDbEntry]) -> Result<Vec<u8>, CatalogError> {
    let mut out = Vec::with_capacity(entries.len() * 64);
    for entry in entries {
        out.extend_from_slice(entry.to_line()?.as_bytes());
    }
    Ok(out)
}

fn check_lock(lock: &CatalogLock) {
    debug_assert_eq!(lock.kind(), &LockKind::ServerXlogDb, "xlog.db access needs the xlogdb lock");
}

/// Reads the xlog.db at `path` under its lock.
pub fn read(path: &Path, lock: &CatalogLock) -> Result<Vec<XlogDbEntry>, CatalogError> {
    check_lock(lock);
    let bytes = storage::fs::read(path)?;
    parse(&bytes).map_err(|e| e.in_file(path))
}

/// Like [`read`], but `None` when the file does not exist (Barman then rebuilds it from the
/// archive's contents).
pub fn read_if_exists(
    path: &Path,
    lock: &CatalogLock,
) -> Result<Option<Vec<XlogDbEntry>>, CatalogError> {
    check_lock(lock);
    match storage::fs::read_if_exists(path)? {
        Some(bytes) => Ok(Some(parse(&bytes).map_err(|e| e.in_file(path))?)),
        None => Ok(None),
    }
}

/// Appends `entries` and fsyncs, creating the file if needed — call only once the WAL files
/// themselves are durable in `wals/` (DESIGN.md §3). Refuses to append after a torn last line.
pub fn append(path: &Path, lock: &CatalogLock, entries: &[XlogDbEntry]) -> Result<(), CatalogError> {
    check_lock(lock);
    let bytes = render(entries)?;
    if let Some(existing) = storage::fs::read_if_exists(path)? {
        if existing.last().is_some_and(|&b| b != b'\n') {
            return Err(CatalogError::XlogDbTornTail { path: path.to_path_buf() });
        }
    }
    append_durable(path, &bytes, FILE_MODE)?;
    Ok(())
}

/// Replaces the whole file with `entries`, atomically (WAL deletion keeps the original order;
/// `rebuild-xlogdb` passes them sorted by name).
pub fn rewrite(path: &Path, lock: &CatalogLock, entries: &[XlogDbEntry]) -> Result<(), CatalogError> {
    check_lock(lock);
    atomic_write(path, &render(entries)?, FILE_MODE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn testdata() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/catalog")
    }

    #[test]
    fn samples_round_trip_byte_for_byte() {
        for name in ["pg-xlog.db", "pg-xlog.db.after-delete", "pg-xlog.db.after-rebuild", "pg-xlog.db.final"] {
            let bytes = std::fs::read(testdata().join(name)).unwrap();
            let entries = parse(&bytes).unwrap();
            assert_eq!(entries.len(), bytes.iter().filter(|&&b| b == b'\n').count());
            assert_eq!(String::from_utf8(render(&entries).unwrap()).unwrap(), String::from_utf8(bytes).unwrap(), "{name}");
        }
        let entries = parse(&std::fs::read(testdata().join("pg-xlog.db.final")).unwrap()).unwrap();
        let history = entries.iter().find(|e| matches!(e.name, WalFileName::History(_))).unwrap();
        assert_eq!(history.size, 42);
        assert_eq!(history.compression.as_deref(), Some("zstd"));
        assert_eq!(entries[0].time, 1795610009.7475064);
        assert_eq!(entries[0].compression, None);
        assert_eq!(entries[0].encryption, None);
        assert!(matches!(entries[1].name, WalFileName::Backup { offset: 0x28, .. }));
    }

    #[test]
    fn old_column_counts_and_separators() {
        let text = b"000000010000000000000001 16777216 1700000000\r\n\
                     000000010000000000000002\t5\t1700000000.5\tgzip\n\n  \n\
                     000000010000000000000003  6  1.5e9  None  gpg\r\
                     00000001000000000000000a.partial 7 2";
        let e = parse(text).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].compression, None);
        assert_eq!(e[1].compression.as_deref(), Some("gzip"));
        assert_eq!(e[2].encryption.as_deref(), Some("gpg"));
        assert_eq!(e[3].name.to_string(), "00000001000000000000000A.partial");
        let out = String::from_utf8(render(&e).unwrap()).unwrap();
        assert_eq!(
            out,
            "000000010000000000000001\t16777216\t1700000000.0\tNone\tNone\n\
             000000010000000000000002\t5\t1700000000.5\tgzip\tNone\n\
             000000010000000000000003\t6\t1500000000.0\tNone\tgpg\n\
             00000001000000000000000A.partial\t7\t2.0\tNone\tNone\n"
        );
    }

    #[test]
    fn malformed_lines_have_numbers() {
        let good = "000000010000000000000001\t1\t1.0\tNone\tNone\n";
        let cases: &[(&str, usize, &str)] = &[
            ("000000010000000000000001\t1\n", 1, "found 2"),
            ("000000010000000000000001 1 1.0 a b c\n", 1, "found 6"),
            ("garbage.txt\t1\t1.0\n", 1, "name"),
            ("000000010000000000000001\t-1\t1.0\n", 1, "size"),
            ("000000010000000000000001\t1\tsoon\n", 1, "time"),
            ("\n000000010000000000000001\t1\t1.0\tNone\tNone\tx\n", 2, "columns"),
        ];
        for (body, line, needle) in cases {
            let text = format!("{good}{body}");
            let err = parse(text.as_bytes()).unwrap_err();
            assert_eq!(err.line, line + 1, "{text:?}");
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err = parse(b"\xff\n").unwrap_err();
        assert_eq!((err.line, err.problem), (1, ParseProblem::NotUtf8));
    }

    #[test]
    fn append_and_rewrite_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg-xlog.db");
        let lock = CatalogLock::acquire(dir.path(), "pg", LockKind::ServerXlogDb).unwrap();
        assert!(read_if_exists(&path, &lock).unwrap().is_none());
        let all = parse(&std::fs::read(testdata().join("pg-xlog.db.final")).unwrap()).unwrap();
        append(&path, &lock, &all[..10]).unwrap();
        append(&path, &lock, &all[10..]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(testdata().join("pg-xlog.db.final")).unwrap());
        rewrite(&path, &lock, &all[..10]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(testdata().join("pg-xlog.db.after-delete")).unwrap());
        assert_eq!(read(&path, &lock).unwrap(), all[..10].to_vec());

        std::fs::write(&path, b"000000010000000000000001\t1").unwrap();
        assert!(matches!(append(&path, &lock, &all[..1]), Err(CatalogError::XlogDbTornTail { .. })));
        let err = read(&path, &lock).unwrap_err().to_string();
        assert!(err.contains("pg-xlog.db:1:"), "{err}");
    }

    #[test]
    fn unwritable_tokens_are_refused() {
        let mut e = parse(b"000000010000000000000001\t1\t1.0\n").unwrap().remove(0);
        for bad in ["", "None", "two words", "tab\there"] {
            e.compression = Some(bad.to_owned());
            assert!(e.to_line().is_err(), "{bad:?}");
        }
    }

    mod proptests {
        use super::super::*;
        use barman_replication::TimelineId;
        use crate::wal::WalSegmentName;
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = WalFileName> {
            (1u32..20, any::<u32>(), 0u32..256, 0u8..4, any::<u32>()).prop_map(|(t, l, s, kind, off)| {
                let seg = WalSegmentName::new(TimelineId(t), l, s).unwrap();
                match kind {
                    0 => WalFileName::Segment(seg),
                    1 => WalFileName::Partial(seg),
                    2 => WalFileName::Backup { segment: seg, offset: off },
                    _ => WalFileName::History(TimelineId(t)),
                }
            })
        }

        fn entry() -> impl Strategy<Value = XlogDbEntry> {
            (
                name(),
                any::<u64>(),
                proptest::num::f64::POSITIVE | proptest::num::f64::NEGATIVE | proptest::num::f64::ZERO,
                proptest::option::of("[a-z0-9]{1,8}".prop_filter("", |s| s != "None")),
                proptest::option::of(Just("gpg".to_owned())),
            )
                .prop_map(|(name, size, time, compression, encryption)| XlogDbEntry {
                    name,
                    size,
                    time,
                    compression,
                    encryption,
                })
        }

        proptest! {
            #[test]
            fn write_then_read_is_identity(entries in proptest::collection::vec(entry(), 0..20)) {
                let bytes = render(&entries).unwrap();
                let back = parse(&bytes).unwrap();
                prop_assert_eq!(render(&back).unwrap(), bytes);
                prop_assert_eq!(back, entries);
            }

            #[test]
            fn parse_write_parse_is_stable(text in "([0-9A-Fa-f.a-z]{8,40}[ \t][0-9+]{1,5}[ \t][-0-9.e]{1,8}([ \t][a-zN]{1,5}){0,3}[\r\n]{1,2}){0,5}") {
                if let Ok(entries) = parse(text.as_bytes()) {
                    if let Ok(bytes) = render(&entries) {
                        prop_assert_eq!(render(&parse(&bytes).unwrap()).unwrap(), bytes);
                    }
                }
            }
        }
    }
}
