//! A backup's `backup_manifest`: `barman verify-backup`, natively — every file the server's
//! manifest lists is in the backup with its size and checksum, read from the plain tree or
//! streamed out of the (compressed) tar archives, and nothing else is there; the manifest's
//! own checksum holds — and `barman generate-manifest` for a plain backup that has none.
//!
//! What pg_verifybackup checks about files, without needing pg_verifybackup or a plain copy:
//! Barman runs the server's pg_verifybackup, which cannot read lz4/zstd tars before 18. WAL is
//! not replayed here (pg_verifybackup's `-n` behaviour): the archive checks cover it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::compressed::{decoder, ArchiveCompression};
use super::tar_stream::{EntryKind, TarError, TarEvent, TarStream};
use crate::catalog::{BackupInfo, ServerCatalog};
use crate::storage::{StorageError, StorageOp};

/// Files in a backup's data directory that the manifest never lists (as pg_verifybackup's
/// default ignore list).
const NOT_IN_MANIFEST: [&str; 5] = ["backup_manifest", "pg_wal", "postgresql.auto.conf", "recovery.signal", "standby.signal"];

/// Why a backup cannot be verified at all (a mismatch is a [`VerifyReport`] problem instead).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The backup has no manifest to verify against.
    #[error("backup {0} has no backup_manifest")]
    NoManifest(String),
    /// The manifest is not one PostgreSQL wrote.
    #[error("backup_manifest: {0}")]
    BadManifest(String),
    /// A file could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An archive could not be decompressed or is not a tar.
    #[error("{path}: {why}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// A checksum as the manifest records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    None,
    Crc32c,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    fn parse(s: &str) -> Option<Algorithm> {
        Some(match s {
            "NONE" => Algorithm::None,
            "CRC32C" => Algorithm::Crc32c,
            "SHA224" => Algorithm::Sha224,
            "SHA256" => Algorithm::Sha256,
            "SHA384" => Algorithm::Sha384,
            "SHA512" => Algorithm::Sha512,
            _ => return None,
        })
    }
}

/// A running checksum of one file.
enum Hasher {
    None,
    Crc32c(u32),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(a: Algorithm) -> Hasher {
        match a {
            Algorithm::None => Hasher::None,
            Algorithm::Crc32c => Hasher::Crc32c(0),
            Algorithm::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::None => {}
            Hasher::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest as the manifest spells it: lower-case hex of the bytes (CRC-32C: of the
    /// value's bytes in little-endian order, as PostgreSQL copies the `uint32` out).
    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::None => return String::new(),
            Hasher::Crc32c(c) => c.to_le_bytes().to_vec(),
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One file the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    size: u64,
    algorithm: Algorithm,
    checksum: String,
}

/// A parsed `backup_manifest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    files: BTreeMap<String, Expected>,
}

impl Manifest {
    /// Parses a manifest and checks its own SHA-256 (`Manifest-Checksum`, computed over the
    /// text before the line holding it).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, VerifyError> {
        let bad = |m: String| VerifyError::BadManifest(m);
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let at = text.rfind("\"Manifest-Checksum\"").ok_or_else(|| bad("no Manifest-Checksum".into()))?;
        let line_start = text[..at].rfind('\n').map(|i| i + 1).ok_or_else(|| bad("Manifest-Checksum on the first line".into()))?;
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let recorded = json["Manifest-Checksum"].as_str().ok_or_else(|| bad("Manifest-Checksum is not a string".into()))?;
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(&bytes[..line_start]);
        let actual = h.hex();
        if !actual.eq_ignore_ascii_case(recorded) {
            return Err(bad(format!("manifest checksum mismatch: recorded {recorded}, computed {actual}")));
        }
        let mut files = BTreeMap::new();
        for f in json["Files"].as_array().ok_or_else(|| bad("no Files array".into()))? {
            let path = match (f["Path"].as_str(), f["Encoded-Path"].as_str()) {
                (Some(p), _) => p.to_owned(),
                (None, Some(hex)) => decode_hex_path(hex).ok_or_else(|| bad(format!("bad Encoded-Path {hex}")))?,
                _ => return Err(bad(format!("a file entry without a path: {f}"))),
            };
            let size = f["Size"].as_u64().ok_or_else(|| bad(format!("{path}: no Size")))?;
            let algorithm = match f["Checksum-Algorithm"].as_str() {
                None => Algorithm::None,
                Some(a) => Algorithm::parse(a).ok_or_else(|| bad(format!("{path}: unknown checksum algorithm {a}")))?,
            };
            let checksum = f["Checksum"].as_str().unwrap_or_default().to_ascii_lowercase();
            files.insert(path, Expected { size, algorithm, checksum });
        }
        Ok(Manifest { files })
    }

    /// How many files it lists.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it lists no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn decode_hex_path(hex: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect();
    String::from_utf8(bytes?).ok()
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files checked against the manifest.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Every mismatch, one line each (`"base/1/1259" has size 0 on disk but size 8192 in
    /// the manifest`, as pg_verifybackup words them).
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// No problem found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok() {
            f.write_str("backup successfully verified")
        } else {
            write!(f, "{} problem(s) found", self.problems.len())
        }
    }
}

/// Checks files as they are read, against the manifest.
struct Checker<'m> {
    manifest: &'m Manifest,
    seen: BTreeMap<String, ()>,
    report: VerifyReport,
}

impl<'m> Checker<'m> {
    fn new(manifest: &'m Manifest) -> Self {
        Checker { manifest, seen: BTreeMap::new(), report: VerifyReport::default() }
    }

    /// A file of the backup, by its manifest path; `None` when it should not be checked.
    fn start(&mut self, path: &str) -> Option<(String, Hasher, u64)> {
        let Some(expected) = self.manifest.files.get(path) else {
            if !ignored(path) {
                self.report.problems.push(format!("\"{path}\" is present on disk but not in the manifest"));
            }
            return None;
        };
        self.seen.insert(path.to_owned(), ());
        Some((path.to_owned(), Hasher::new(expected.algorithm), 0))
    }

    fn finish(&mut self, path: &str, hasher: Hasher, size: u64) {
        let expected = &self.manifest.files[path];
        self.report.files += 1;
        self.report.bytes += size;
        if size != expected.size {
            self.report
                .problems
                .push(format!("\"{path}\" has size {size} on disk but size {} in the manifest", expected.size));
            return;
        }
        if expected.algorithm != Algorithm::None && hasher.hex() != expected.checksum {
            self.report.problems.push(format!("checksum mismatch for file \"{path}\""));
        }
    }

    fn into_report(mut self) -> VerifyReport {
        for path in self.manifest.files.keys() {
            if !self.seen.contains_key(path) {
                self.report.problems.push(format!("\"{path}\" is present in the manifest but not on disk"));
            }
        }
        self.report
    }
}

fn ignored(path: &str) -> bool {
    NOT_IN_MANIFEST.iter().any(|i| path == *i || path.starts_with(&format!("{i}/")))
}

/// Verifies a backup of `catalog` against its manifest: a plain tree, or the tar archives
/// named by backup.info's `compression`.
pub fn verify_backup(catalog: &ServerCatalog, info: &BackupInfo) -> Result<VerifyReport, VerifyError> {
    let data = catalog.backup_data_dir(info.backup_id);
    let manifest_path = data.join("backup_manifest");
    let bytes = match std::fs::read(&manifest_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(VerifyError::NoManifest(info.backup_id.to_string())),
        Err(e) => return Err(StorageError::io(StorageOp::Read, &manifest_path, e).into()),
    };
    let manifest = Manifest::parse(&bytes)?;
    let mut checker = Checker::new(&manifest);
    match info.compression.as_deref().and_then(ArchiveCompression::from_name) {
        Some(algorithm) => {
            let base = data.join(algorithm.archive_file("base.tar"));
            verify_archive(&mut checker, &base, algorithm, "")?;
            for ts in info.tablespaces.iter().flatten() {
                let archive = data.join(algorithm.archive_file(&format!("{}.tar", ts.oid)));
                verify_archive(&mut checker, &archive, algorithm, &format!("pg_tblspc/{}/", ts.oid))?;
            }
        }
        None => {
            walk_plain(&mut checker, &data, "")?;
            for ts in info.tablespaces.iter().flatten() {
                let dir = catalog.backup_dir(info.backup_id).join(ts.oid.to_string());
                walk_plain(&mut checker, &dir, &format!("pg_tblspc/{}/", ts.oid))?;
            }
        }
    }
    Ok(checker.into_report())
}

/// Checks every regular file under `dir` (symbolic links — the tablespace links — are not
/// followed: their targets are walked separately).
fn walk_plain(checker: &mut Checker<'_>, dir: &Path, prefix: &str) -> Result<(), VerifyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io(StorageOp::Read, dir, e))?;
    let mut names: Vec<_> = entries.filter_map(Result::ok).collect();
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            checker.report.problems.push(format!("{}: a file name that is not UTF-8", path.display()));
            continue;
        };
        let rel = format!("{prefix}{name}");
        let kind = entry.file_type().map_err(|e| StorageError::io(StorageOp::Metadata, &path, e))?;
        if kind.is_dir() {
            if !ignored(&rel) {
                walk_plain(checker, &path, &format!("{rel}/"))?;
            }
        } else if kind.is_file() {
            let Some((rel, mut hasher, _)) = checker.start(&rel) else { continue };
            let mut file = std::fs::File::open(&path).map_err(|e| StorageError::io(StorageOp::Open, &path, e))?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut size = 0u64;
            loop {
                let n = file.read(&mut buf).map_err(|e| StorageError::io(StorageOp::Read, &path, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            checker.finish(&rel, hasher, size);
        }
    }
    Ok(())
}

/// Checks every file member of one archive; `prefix` maps member names to manifest paths.
fn verify_archive(checker: &mut Checker<'_>, archive: &Path, algorithm: ArchiveCompression, prefix: &str) -> Result<(), VerifyError> {
    let err = |why: String| VerifyError::Archive { path: archive.to_owned(), why };
    let file = std::fs::File::open(archive).map_err(|e| StorageError::io(StorageOp::Open, archive, e))?;
    let mut decoded = decoder(algorithm, file).map_err(|e| err(e.to_string()))?;
    let mut tar = TarStream::new();
    let mut current: Option<(String, Hasher, u64)> = None;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = decoded.read(&mut buf).map_err(|e| err(format!("cannot decompress ({algorithm}): {e}")))?;
        if n == 0 {
            break;
        }
        tar.feed::<TarError>(&buf[..n], &mut |ev| {
            match ev {
                TarEvent::Entry(e) => {
                    if let Some((path, hasher, size)) = current.take() {
                        checker.finish(&path, hasher, size);
                    }
                    if let EntryKind::File { .. } = e.kind {
                        current = checker.start(&format!("{prefix}{}", e.path.trim_end_matches('/')));
                    }
                }
                TarEvent::Data(d) => {
                    if let Some((_, hasher, size)) = &mut current {
                        hasher.update(d);
                        *size += d.len() as u64;
                    }
                }
                TarEvent::End => {
                    if let Some((path, hasher, size)) = current.take() {
                        checker.finish(&path, hasher, size);
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| err(e.to_string()))?;
    }
    tar.finish().map_err(|e| err(e.to_string()))?;
    if let Some((path, hasher, size)) = current.take() {
        checker.finish(&path, hasher, size);
    }
    Ok(())
}

/// Writes `data/backup_manifest` for a plain backup that has none, as Barman's
/// `BackupManifest.create_backup_manifest`: every regular file under `data/` (symbolic links,
/// i.e. tablespaces, not followed), SHA-256, one JSON object per line with sorted keys, no
/// WAL ranges, and the manifest checksum. Returns how many files it lists.
pub fn generate_manifest(catalog: &ServerCatalog, info: &BackupInfo) -> Result<usize, VerifyError> {
    let data = catalog.backup_data_dir(info.backup_id);
    let path = data.join("backup_manifest");
    if path.exists() {
        return Err(VerifyError::BadManifest(format!("File {} already exists.", path.display())));
    }
    if info.compression.as_deref().and_then(ArchiveCompression::from_name).is_some() {
        return Err(VerifyError::BadManifest(format!(
            "backup {} is in tar format: only a plain backup can get a generated manifest",
            info.backup_id
        )));
    }
    let mut lines = Vec::new();
    collect_entries(&data, "", &mut lines)?;
    let mut text = String::from("{\"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n");
    text.push_str(&lines.join(",\n"));
    text.push_str("],\n");
    let mut h = Hasher::new(Algorithm::Sha256);
    h.update(text.as_bytes());
    text.push_str(&format!("\"Manifest-Checksum\": \"{}\"}}\n", h.hex()));
    crate::storage::atomic_write(&path, text.as_bytes(), crate::storage::FILE_MODE)?;
    Ok(lines.len())
}

/// One manifest line per regular file under `dir`, as Python's `json.dumps(sort_keys=True)`.
fn collect_entries(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), VerifyError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(|e| StorageError::io(StorageOp::Read, dir, e))?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let rel = format!("{prefix}{name}");
        let kind = entry.file_type().map_err(|e| StorageError::io(StorageOp::Metadata, &path, e))?;
        if kind.is_dir() {
            collect_entries(&path, &format!("{rel}/"), out)?;
        } else if kind.is_file() {
            let meta = entry.metadata().map_err(|e| StorageError::io(StorageOp::Metadata, &path, e))?;
            let mut h = Hasher::new(Algorithm::Sha256);
            let mut file = std::fs::File::open(&path).map_err(|e| StorageError::io(StorageOp::Open, &path, e))?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = file.read(&mut buf).map_err(|e| StorageError::io(StorageOp::Read, &path, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| time::OffsetDateTime::from_unix_timestamp(d.as_secs() as i64).ok())
                .map(|t| {
                    format!(
                        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                        t.year(),
                        u8::from(t.month()),
                        t.day(),
                        t.hour(),
                        t.minute(),
                        t.second()
                    )
                })
                .unwrap_or_default();
            out.push(format!(
                "{{\"Checksum\": \"{}\", \"Checksum-Algorithm\": \"SHA256\", \"Last-Modified\": \"{modified}\", \"Path\": {}, \"Size\": {}}}",
                h.hex(),
                serde_json::Value::from(rel.as_str()),
                meta.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as PostgreSQL writes it, with its checksum.
    fn manifest(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut text = String::from("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n");
        for (i, (path, content)) in files.iter().enumerate() {
            let mut h = Hasher::new(Algorithm::Sha256);
            h.update(content);
            text.push_str(&format!(
                "{{ \"Path\": \"{path}\", \"Size\": {}, \"Last-Modified\": \"2026-11-25 12:32:10 GMT\", \"Checksum-Algorithm\": \"SHA256\", \"Checksum\": \"{}\" }}{}\n",
                content.len(),
                h.hex(),
                if i + 1 < files.len() { "," } else { "" }
            ));
        }
        text.push_str("],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n");
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(text.as_bytes());
        text.push_str(&format!("\"Manifest-Checksum\": \"{}\"}}\n", h.hex()));
        text.into_bytes()
    }

    #[test]
    fn manifest_checksum_and_entries() {
        let m = manifest(&[("PG_VERSION", b"16\n"), ("base/1/1259", &[0u8; 8192])]);
        let parsed = Manifest::parse(&m).unwrap();
        assert_eq!(parsed.len(), 2);
        let mut tampered = m.clone();
        let i = tampered.iter().position(|&b| b == b'8').unwrap();
        tampered[i] = b'9';
        assert!(matches!(Manifest::parse(&tampered), Err(VerifyError::BadManifest(_))));
        assert_eq!(decode_hex_path("6162").as_deref(), Some("ab"));
    }

    #[test]
    fn plain_tree_mismatches_are_each_reported() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = ServerCatalog::new("pg", dir.path().join("pg"), dir.path());
        let id: crate::catalog::BackupId = "20261125T123210".parse().unwrap();
        let data = catalog.backup_data_dir(id);
        std::fs::create_dir_all(data.join("base/1")).unwrap();
        std::fs::create_dir_all(data.join("pg_wal")).unwrap();
        std::fs::write(data.join("PG_VERSION"), b"16\n").unwrap();
        std::fs::write(data.join("base/1/1259"), [0u8; 8192]).unwrap();
        std::fs::write(data.join("pg_wal/000000010000000000000002"), b"ignored").unwrap();
        std::fs::write(data.join("backup_manifest"), manifest(&[("PG_VERSION", b"16\n"), ("base/1/1259", &[0u8; 8192])])).unwrap();
        let info = BackupInfo::new(id);
        let report = verify_backup(&catalog, &info).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!((report.files, report.bytes), (2, 8195));

        std::fs::write(data.join("base/1/1259"), [1u8; 8192]).unwrap();
        std::fs::write(data.join("extra"), b"x").unwrap();
        std::fs::remove_file(data.join("PG_VERSION")).unwrap();
        let report = verify_backup(&catalog, &info).unwrap();
        assert_eq!(
            report.problems,
            [
                "checksum mismatch for file \"base/1/1259\"",
                "\"extra\" is present on disk but not in the manifest",
                "\"PG_VERSION\" is present in the manifest but not on disk",
            ]
        );
    }

    #[test]
    fn generated_manifest_verifies_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = ServerCatalog::new("pg", dir.path().join("pg"), dir.path());
        let id: crate::catalog::BackupId = "20261125T123210".parse().unwrap();
        let data = catalog.backup_data_dir(id);
        std::fs::create_dir_all(data.join("base/1")).unwrap();
        std::fs::write(data.join("PG_VERSION"), b"16\n").unwrap();
        std::fs::write(data.join("base/1/1259"), [7u8; 8192]).unwrap();
        let info = BackupInfo::new(id);
        assert_eq!(generate_manifest(&catalog, &info).unwrap(), 2);
        let text = std::fs::read_to_string(data.join("backup_manifest")).unwrap();
        assert!(text.starts_with("{\"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{\"Checksum\": \""), "{text}");
        assert!(text.contains("\"Path\": \"base/1/1259\", \"Size\": 8192}"), "{text}");
        let report = verify_backup(&catalog, &info).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert!(matches!(generate_manifest(&catalog, &info), Err(VerifyError::BadManifest(m)) if m.contains("already exists")));
    }
}
