//! `barman put-wal`: WAL files arriving as a tar stream (sent by `barman-wal-archive` over
//! ssh) stored durably in the server's `incoming/` directory, as Barman's `Server.put_wal`.
//!
//! The stream holds the WAL files followed by a checksum file, `SHA256SUMS` (Barman ≥ 3.11
//! clients) or `MD5SUMS` (older clients, or `barman-wal-archive --md5`), in `sha256sum`'s
//! format (`<hex> *<name>`). Because the checksum file comes last, each file is written to a
//! temporary name while both digests are computed; only when the whole stream has been read
//! and every file matched its checksum are the files renamed into place. Any failure leaves
//! `incoming/` as it was: the client sees a non-zero exit and PostgreSQL retries the segment.
//!
//! Main items:
//!
//! * [`receive`] — the whole command over a `Read` (the tar stream) and a [`ServerCatalog`].
//! * Pure pieces, tested without files: [`classify_member`] (which tar member is what),
//!   [`parse_checksums`] (the checksum file), [`verify`] (files against checksums, in
//!   Barman's order and with Barman's messages).
//! * [`ChecksumAlgorithm`] and [`Hasher`] — also used by `barman-wal-archive` to write the
//!   checksum file, so both ends agree on one implementation.
//!
//! Deliberate differences from Barman, for safety, none visible to a well-behaved client:
//!
//! * Only WAL file names (segments, `.partial`, `.backup`, `.history`) are accepted; Barman
//!   accepts any name without `/`. Anything else is refused with Barman's "Unsupported
//!   filename" message, so a hostile or broken client cannot drop other files (`..`, hidden
//!   files, names the archiver would later move to `errors/`) into the catalog.
//! * A mismatching duplicate goes to `errors/` without overwriting an earlier error file of
//!   the same second (`.1`, `.2`… after the name, as the archiver does).
//! * A broken tar stream is reported as an error (Barman shows a Python exception).

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use md5::Digest as _;

use crate::catalog::{ErrorReason, ServerCatalog};
use crate::storage::{
    create_dir_all_durable, durable_rename, AtomicFile, StorageError, StorageOp, DIR_MODE, FILE_MODE,
};
use crate::wal::WalFileName;

/// The largest checksum file read. A client sends one line per file (one file in practice);
/// the cap keeps a hostile stream from filling memory.
const MAX_CHECKSUM_FILE: u64 = 1024 * 1024;

/// The hash of a checksum file: its name says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// `MD5SUMS`: clients before Barman 3.11, and `barman-wal-archive --md5`.
    Md5,
    /// `SHA256SUMS`: the default since Barman 3.11.
    Sha256,
}

impl ChecksumAlgorithm {
    /// The name of the checksum file in the tar stream.
    pub fn sums_file_name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Md5 => "MD5SUMS",
            ChecksumAlgorithm::Sha256 => "SHA256SUMS",
        }
    }

    /// The algorithm of a checksum file called `name`, if it is one.
    pub fn from_sums_file_name(name: &str) -> Option<Self> {
        match name {
            "MD5SUMS" => Some(ChecksumAlgorithm::Md5),
            "SHA256SUMS" => Some(ChecksumAlgorithm::Sha256),
            _ => None,
        }
    }

    /// A fresh hasher.
    pub fn hasher(self) -> Hasher {
        match self {
            ChecksumAlgorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(<sha2::Sha256 as sha2::Digest>::new()),
        }
    }
}

/// An incremental digest of one [`ChecksumAlgorithm`], ending in lower-case hex (what
/// Python's `hexdigest()` and `sha256sum` print).
#[derive(Clone)]
pub enum Hasher {
    /// MD5.
    Md5(md5::Md5),
    /// SHA-256.
    Sha256(sha2::Sha256),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hasher::Md5(_) => "Hasher::Md5",
            Hasher::Sha256(_) => "Hasher::Sha256",
        })
    }
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha256(h) => sha2::Digest::update(h, bytes),
        }
    }

    /// The digest in lower-case hex.
    pub fn finish_hex(self) -> String {
        match self {
            Hasher::Md5(h) => to_hex(&h.finalize()),
            Hasher::Sha256(h) => to_hex(&sha2::Digest::finalize(h)),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who sent the stream, for messages: the server, and the client's address when the command
/// runs under ssh (Barman reads `SSH_CONNECTION` and appends ` (SSH host: <ip>)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The server name.
    pub server: String,
    /// The client IP, the first field of `SSH_CONNECTION`.
    pub ssh_host: Option<String>,
}

impl Origin {
    /// `server` with the client taken from an `SSH_CONNECTION` value, if any.
    pub fn new(server: &str, ssh_connection: Option<&str>) -> Origin {
        Origin {
            server: server.to_owned(),
            ssh_host: ssh_connection.and_then(|c| c.split_whitespace().next()).map(str::to_owned),
        }
    }
}

impl fmt::Display for Origin {
    /// `server 'pg'` or `server 'pg' (SSH host: 10.0.0.1)`, the tail of Barman's messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server '{}'", self.server)?;
        if let Some(host) = &self.ssh_host {
            write!(f, " (SSH host: {host})")?;
        }
        Ok(())
    }
}

/// Why a put-wal stream was refused. The messages are Barman's; every refusal leaves
/// `incoming/` untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PutWalError {
    /// A tar member that is not a regular file (a directory, a link…).
    #[error("Unsupported file type '{kind}' for file '{name}' in put-wal for {origin}")]
    UnsupportedType {
        /// The tar type flag, as Python prints it (`b'5'`).
        kind: String,
        /// The member's name.
        name: String,
        /// Who sent it.
        origin: Origin,
    },
    /// A member name that is not a WAL file name (a sub-directory, `..`, anything else).
    #[error("Unsupported filename '{name}' in put-wal for {origin}")]
    UnsupportedName {
        /// The member's name.
        name: String,
        /// Who sent it.
        origin: Origin,
    },
    /// The checksum file names a file the stream did not carry.
    #[error("Checksum without corresponding file '{name}' in put-wal for {origin}")]
    ChecksumWithoutFile {
        /// The name in the checksum file.
        name: String,
        /// Who sent it.
        origin: Origin,
    },
    /// A file's content does not match its checksum: damaged in transit.
    #[error("Bad file checksum '{actual}' (should be {expected}) for file '{name}' in put-wal for {origin}")]
    BadChecksum {
        /// The digest of what arrived.
        actual: String,
        /// The digest the client computed.
        expected: String,
        /// The file.
        name: String,
        /// Who sent it.
        origin: Origin,
    },
    /// A file without a line in the checksum file (or no checksum file at all).
    #[error("Missing checksum for file '{name}' in put-wal for {origin}")]
    MissingChecksum {
        /// The file.
        name: String,
        /// Who sent it.
        origin: Origin,
    },
    /// The stream is not a readable tar archive (cut short, garbage).
    #[error("Invalid tar stream in put-wal for {origin}")]
    Stream {
        /// Who sent it.
        origin: Origin,
        /// What the tar reader said.
        #[source]
        source: io::Error,
    },
    /// A file operation in the catalog failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a tar member is, once its name has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// The checksum file.
    Checksums(ChecksumAlgorithm),
    /// A WAL file to store.
    Wal(WalFileName),
}

/// Checks one tar member, Barman's way: a leading `./` is dropped, the member must be a
/// regular file, and its name must have no `/`; then (barman-rs) it must be a checksum file
/// or a WAL file name. Returns the cleaned name and its kind.
///
/// `type_flag` is the header's type byte; `is_regular` whether it denotes a regular file
/// (`'0'`, NUL, or `'7'`, as Python's `TarInfo.isreg`).
pub fn classify_member(
    raw_name: &str,
    is_regular: bool,
    type_flag: u8,
    origin: &Origin,
) -> Result<(String, MemberKind), PutWalError> {
    let name = raw_name.strip_prefix("./").unwrap_or(raw_name).to_owned();
    if !is_regular {
        let kind = format!("b'{}'", char::from(type_flag).escape_default());
        return Err(PutWalError::UnsupportedType { kind, name, origin: origin.clone() });
    }
    if let Some(algorithm) = ChecksumAlgorithm::from_sums_file_name(&name) {
        return Ok((name, MemberKind::Checksums(algorithm)));
    }
    match name.parse::<WalFileName>() {
        // The canonical spelling must be what was sent: a lower-case name would otherwise be
        // stored under a name its checksum line does not use.
        Ok(wal) if wal.to_string() == name => Ok((name, MemberKind::Wal(wal))),
        _ => Err(PutWalError::UnsupportedName { name, origin: origin.clone() }),
    }
}

/// The lines of a checksum file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChecksumFile {
    /// `(name, checksum)` in file order; a later line for the same name replaces an earlier.
    pub entries: Vec<(String, String)>,
    /// Lines that are not `<checksum> <name>` or `<checksum> *<name>` (warned about, skipped).
    pub bad_lines: Vec<String>,
}

impl ChecksumFile {
    /// Adds the lines of another checksum file (a stream may carry both kinds).
    pub fn merge(&mut self, other: ChecksumFile) {
        for (name, sum) in other.entries {
            self.insert(name, sum);
        }
        self.bad_lines.extend(other.bad_lines);
    }

    fn insert(&mut self, name: String, sum: String) {
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = sum,
            None => self.entries.push((name, sum)),
        }
    }

    /// The checksum given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, s)| s.as_str())
    }
}

/// Parses a checksum file as Barman does: each line (trailing blanks removed) split at the
/// first `" *"` or `"  "` into checksum and name, a leading `./` dropped from the name.
pub fn parse_checksums(text: &str) -> ChecksumFile {
    let mut file = ChecksumFile::default();
    for line in text.lines() {
        let line = line.trim_end();
        // Python's `re.split(r" [* ]", line, 1)`: the first space followed by `*` or a space.
        let split = line
            .match_indices(' ')
            .find(|(i, _)| matches!(line.as_bytes().get(i + 1), Some(b'*' | b' ')))
            .map(|(i, _)| (&line[..i], &line[i + 2..]));
        match split {
            Some((sum, path)) => {
                let path = path.strip_prefix("./").unwrap_or(path);
                file.insert(path.to_owned(), sum.to_owned());
            }
            None => file.bad_lines.push(line.to_owned()),
        }
    }
    file
}

/// The digests of one received file, both computed while it streamed in (the checksum file
/// saying which one counts arrives after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedDigests {
    /// MD5, lower-case hex.
    pub md5: String,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

impl ReceivedDigests {
    /// The digest for `algorithm`.
    pub fn get(&self, algorithm: ChecksumAlgorithm) -> &str {
        match algorithm {
            ChecksumAlgorithm::Md5 => &self.md5,
            ChecksumAlgorithm::Sha256 => &self.sha256,
        }
    }
}

/// Checks the received files against the checksum file, in Barman's order: every checksum
/// line first (its file must be there and match), then every file (it must have a line).
/// `files` are `(name, digests)` in stream order.
pub fn verify(
    files: &[(String, ReceivedDigests)],
    sums: &ChecksumFile,
    algorithm: ChecksumAlgorithm,
    origin: &Origin,
) -> Result<(), PutWalError> {
    for (name, expected) in &sums.entries {
        let Some((_, digests)) = files.iter().find(|(n, _)| n == name) else {
            return Err(PutWalError::ChecksumWithoutFile { name: name.clone(), origin: origin.clone() });
        };
        let actual = digests.get(algorithm);
        if actual != expected {
            return Err(PutWalError::BadChecksum {
                actual: actual.to_owned(),
                expected: expected.clone(),
                name: name.clone(),
                origin: origin.clone(),
            });
        }
    }
    match files.iter().find(|(n, _)| sums.get(n).is_none()) {
        Some((name, _)) => Err(PutWalError::MissingChecksum { name: name.clone(), origin: origin.clone() }),
        None => Ok(()),
    }
}

/// What happened to one file of an accepted stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored in `incoming/`.
    Stored {
        /// The file.
        name: String,
        /// Its checksum (of the stream's algorithm).
        checksum: String,
    },
    /// Already in `incoming/` with the same checksum: nothing to do (PostgreSQL retried an
    /// archive_command whose first run succeeded on this side).
    Identical {
        /// The file.
        name: String,
    },
    /// Already in `incoming/` with different content: the new copy went to `errors/`, and the
    /// command still succeeds so WAL does not pile up on the PostgreSQL server (Barman's rule).
    Duplicate {
        /// The file.
        name: String,
        /// The checksum of the file already in `incoming/`.
        existing: String,
        /// The checksum of the file received.
        incoming: String,
        /// Where the received copy went.
        moved_to: PathBuf,
    },
}

/// A file of the stream, held under its temporary name until verified.
struct Pending {
    name: String,
    file: AtomicFile,
    digests: ReceivedDigests,
}

/// Reads the tar stream `input` and stores its WAL files in `catalog`'s `incoming/`,
/// durably, once every file matched its checksum. Lines of the checksum file that cannot be
/// read are passed to `warn` (with Barman's words) and skipped. `now` stamps the names of
/// files moved to `errors/`.
pub fn receive(
    catalog: &ServerCatalog,
    origin: &Origin,
    input: impl Read,
    now: time::OffsetDateTime,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<Outcome>, PutWalError> {
    let incoming = catalog.incoming_directory();
    create_dir_all_durable(incoming, DIR_MODE)?;

    let stream_err = |source: io::Error| PutWalError::Stream { origin: origin.clone(), source };
    let mut pending: Vec<Pending> = Vec::new();
    let mut sums = ChecksumFile::default();
    let mut algorithm = ChecksumAlgorithm::Sha256;
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(stream_err)? {
        let mut entry = entry.map_err(stream_err)?;
        let header = entry.header();
        let type_flag = header.entry_type().as_byte();
        let is_regular = header.entry_type().is_file();
        let mtime = header.mtime().ok();
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let (name, kind) = classify_member(&raw_name, is_regular, type_flag, origin)?;
        match kind {
            MemberKind::Checksums(found) => {
                let mut text = Vec::new();
                entry.by_ref().take(MAX_CHECKSUM_FILE).read_to_end(&mut text).map_err(stream_err)?;
                let parsed = parse_checksums(&String::from_utf8_lossy(&text));
                for line in &parsed.bad_lines {
                    warn(format!("Bad checksum line '{line}' found in put-wal for {origin}"));
                }
                sums.merge(parsed);
                // Barman: once an MD5SUMS file was seen, MD5 is the algorithm.
                if found == ChecksumAlgorithm::Md5 {
                    algorithm = found;
                }
            }
            MemberKind::Wal(_) => {
                let target = incoming.join(&name);
                let (file, digests) = write_member(&mut entry, &target, mtime, &stream_err)?;
                // A name sent twice: the later copy wins, as in Barman (the earlier temporary
                // file is removed when its AtomicFile drops).
                pending.retain(|p| p.name != name);
                pending.push(Pending { name, file, digests });
            }
        }
    }

    let received: Vec<(String, ReceivedDigests)> =
        pending.iter().map(|p| (p.name.clone(), p.digests.clone())).collect();
    verify(&received, &sums, algorithm, origin)?;

    let mut outcomes = Vec::new();
    for p in pending {
        let checksum = p.digests.get(algorithm).to_owned();
        tracing::info!(file = %p.name, %checksum, "received by put-wal for {origin}");
        let target = p.file.target().to_path_buf();
        if let Some(existing) = hash_existing(&target, algorithm)? {
            if existing == checksum {
                outcomes.push(Outcome::Identical { name: p.name });
                continue;
            }
            let moved_to = move_to_errors(catalog, p.file, &p.name, now)?;
            outcomes.push(Outcome::Duplicate { name: p.name, existing, incoming: checksum, moved_to });
            continue;
        }
        p.file.commit()?;
        outcomes.push(Outcome::Stored { name: p.name, checksum });
    }
    Ok(outcomes)
}

/// Streams one member into a temporary file next to `target`, computing both digests, and
/// gives it the member's modification time (the archiver records it in xlog.db, as Barman's
/// `tar.utime` makes it do).
fn write_member(
    entry: &mut impl Read,
    target: &Path,
    mtime: Option<u64>,
    stream_err: &dyn Fn(io::Error) -> PutWalError,
) -> Result<(AtomicFile, ReceivedDigests), PutWalError> {
    let mut file = AtomicFile::create(target, FILE_MODE)?;
    let mut md5 = ChecksumAlgorithm::Md5.hasher();
    let mut sha256 = ChecksumAlgorithm::Sha256.hasher();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_err(e)),
        };
        md5.update(&buf[..n]);
        sha256.update(&buf[..n]);
        file.write_bytes(&buf[..n])?;
    }
    // The buffer must reach the file before the time is set, or the last write would move it.
    file.flush()
        .map_err(|e| StorageError::io(StorageOp::Write, file.temp_path(), e))?;
    // A time `SystemTime` cannot hold (a GNU base-256 field can say up to 2^64 s) is not set.
    if let Some(when) = mtime.and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))) {
        let temp = file.temp_path();
        File::options()
            .write(true)
            .open(temp)
            .and_then(|f| f.set_modified(when))
            .map_err(|e| StorageError::io(StorageOp::Write, temp, e))?;
    }
    Ok((file, ReceivedDigests { md5: md5.finish_hex(), sha256: sha256.finish_hex() }))
}

/// The digest of `path` if it exists.
fn hash_existing(path: &Path, algorithm: ChecksumAlgorithm) -> Result<Option<String>, StorageError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(StorageOp::Open, path, e)),
    };
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StorageError::io(StorageOp::Read, path, e)),
        }
    }
    Ok(Some(hasher.finish_hex()))
}

/// Moves a received file still under its temporary name to
/// `errors/<name>.<UTC stamp>.duplicate`, durably, never over an earlier error file.
fn move_to_errors(
    catalog: &ServerCatalog,
    mut file: AtomicFile,
    name: &str,
    now: time::OffsetDateTime,
) -> Result<PathBuf, StorageError> {
    create_dir_all_durable(catalog.errors_directory(), DIR_MODE)?;
    let mut target = catalog.error_file_path(OsStr::new(name), now, &ErrorReason::Duplicate)?;
    let mut n = 0u32;
    while std::fs::symlink_metadata(&target).is_ok() {
        n += 1;
        target = catalog.error_file_path(OsStr::new(&format!("{name}.{n}")), now, &ErrorReason::Duplicate)?;
    }
    let temp = file.temp_path().to_path_buf();
    file.flush().map_err(|e| StorageError::io(StorageOp::Write, &temp, e))?;
    File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(|e| StorageError::io(StorageOp::SyncFile, &temp, e))?;
    match durable_rename(&temp, &target) {
        // `file` drops here; its temporary name is gone, so there is nothing left to remove.
        Ok(()) => Ok(target),
        Err(StorageError::Rename { source, .. }) if source.kind() == io::ErrorKind::CrossesDevices => {
            // errors/ on another filesystem: copy durably; dropping `file` removes the temp.
            let mut copy = AtomicFile::create(&target, FILE_MODE)?;
            let mut src = File::open(&temp).map_err(|e| StorageError::io(StorageOp::Open, &temp, e))?;
            io::copy(&mut src, &mut copy).map_err(|e| StorageError::io(StorageOp::Write, &target, e))?;
            copy.commit()?;
            Ok(target)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin::new("pg", None)
    }

    const SEG: &str = "00000001000000000000000C";

    #[test]
    fn digests_match_the_reference_tools() {
        // From 24-put-wal-stream-format.txt: a 33-byte history file.
        let text = b"1\t0/B338058\tat restore point \"X\"\n";
        assert_eq!(text.len(), 33);
        let mut h = ChecksumAlgorithm::Sha256.hasher();
        h.update(text);
        assert_eq!(h.finish_hex(), "55aac1419c8d4411c06f1c738dc21ec9faa4f7aa1d8f7feb96f13db520a6e3ba");
        let mut h = ChecksumAlgorithm::Md5.hasher();
        h.update(b"");
        assert_eq!(h.finish_hex(), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn origin_names_the_ssh_client() {
        assert_eq!(origin().to_string(), "server 'pg'");
        let o = Origin::new("pg", Some("10.1.2.3 50000 10.1.2.4 22"));
        assert_eq!(o.to_string(), "server 'pg' (SSH host: 10.1.2.3)");
    }

    #[test]
    fn members_are_classified() {
        let o = origin();
        let table: &[(&str, bool, u8, Result<&str, &str>)] = &[
            (SEG, true, b'0', Ok(SEG)),
            ("./00000002.history", true, b'0', Ok("00000002.history")),
            ("000000010000000000000002.00000028.backup", true, b'0', Ok("000000010000000000000002.00000028.backup")),
            ("000000010000000000000002.partial", true, b'0', Ok("000000010000000000000002.partial")),
            ("SHA256SUMS", true, b'0', Ok("SHA256SUMS")),
            ("./MD5SUMS", true, b'0', Ok("MD5SUMS")),
            ("pg_wal", false, b'5', Err("Unsupported file type 'b'5'' for file 'pg_wal' in put-wal for server 'pg'")),
            ("a/00000001000000000000000C", true, b'0', Err("Unsupported filename 'a/00000001000000000000000C' in put-wal for server 'pg'")),
            ("../00000001000000000000000C", true, b'0', Err("Unsupported filename '../00000001000000000000000C' in put-wal for server 'pg'")),
            ("..", true, b'0', Err("Unsupported filename '..' in put-wal for server 'pg'")),
            (".bashrc", true, b'0', Err("Unsupported filename '.bashrc' in put-wal for server 'pg'")),
            ("00000001000000000000000c", true, b'0', Err("Unsupported filename '00000001000000000000000c' in put-wal for server 'pg'")),
        ];
        for (raw, regular, flag, want) in table {
            let got = classify_member(raw, *regular, *flag, &o);
            match (got, want) {
                (Ok((name, _)), Ok(w)) => assert_eq!(name, *w, "{raw}"),
                (Err(e), Err(w)) => assert_eq!(e.to_string(), *w, "{raw}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn checksum_lines_parse_as_barman() {
        let f = parse_checksums("abc *./000000010000000000000001\ndef  00000002.history\nnonsense\nx y\n\n");
        assert_eq!(
            f.entries,
            [("000000010000000000000001".to_owned(), "abc".to_owned()), ("00000002.history".to_owned(), "def".to_owned())]
        );
        assert_eq!(f.bad_lines, ["nonsense", "x y", ""]);
    }

    fn digests(sha: &str) -> ReceivedDigests {
        ReceivedDigests { md5: "m".into(), sha256: sha.into() }
    }

    #[test]
    fn verification_follows_barmans_order() {
        let o = origin();
        let files = vec![(SEG.to_owned(), digests("good"))];
        let ok = parse_checksums(&format!("good *{SEG}\n"));
        verify(&files, &ok, ChecksumAlgorithm::Sha256, &o).unwrap();

        let bad = parse_checksums(&format!("{} *{SEG}\n", "0".repeat(8)));
        assert_eq!(
            verify(&files, &bad, ChecksumAlgorithm::Sha256, &o).unwrap_err().to_string(),
            format!("Bad file checksum 'good' (should be 00000000) for file '{SEG}' in put-wal for server 'pg'")
        );
        assert_eq!(
            verify(&files, &ChecksumFile::default(), ChecksumAlgorithm::Sha256, &o).unwrap_err().to_string(),
            format!("Missing checksum for file '{SEG}' in put-wal for server 'pg'")
        );
        let extra = parse_checksums(&format!("good *{SEG}\nx *00000002.history\n"));
        assert_eq!(
            verify(&files, &extra, ChecksumAlgorithm::Sha256, &o).unwrap_err().to_string(),
            "Checksum without corresponding file '00000002.history' in put-wal for server 'pg'"
        );
        // The MD5 digest is the one compared when MD5SUMS was sent.
        let md5 = parse_checksums(&format!("m *{SEG}\n"));
        verify(&files, &md5, ChecksumAlgorithm::Md5, &o).unwrap();
    }

    /// A stream as barman-wal-archive sends it: the files, then the checksum file.
    fn stream(files: &[(&str, &[u8])], sums: Option<(ChecksumAlgorithm, String)>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_entry_type(tar::EntryType::Regular);
            // Written raw: the tar crate refuses to build the hostile names tested here.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        for (name, data) in files {
            add(name, data);
        }
        if let Some((alg, text)) = sums {
            add(alg.sums_file_name(), text.as_bytes());
        }
        b.into_inner().unwrap()
    }

    fn sum_line(alg: ChecksumAlgorithm, name: &str, data: &[u8]) -> String {
        let mut h = alg.hasher();
        h.update(data);
        format!("{} *{name}\n", h.finish_hex())
    }

    fn catalog(dir: &Path) -> ServerCatalog {
        ServerCatalog::new("pg", dir.join("pg"), dir)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(1_764_000_000).unwrap()
    }

    #[test]
    fn good_stream_is_stored_with_its_mtime_and_again_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        let data = vec![7u8; 100_000];
        for alg in [ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Md5] {
            let s = stream(&[(SEG, &data)], Some((alg, sum_line(alg, SEG, &data))));
            let out = receive(&cat, &origin(), &s[..], now(), &mut |w| panic!("{w}")).unwrap();
            let incoming = cat.incoming_directory();
            assert_eq!(names(incoming), [SEG]);
            assert_eq!(std::fs::read(incoming.join(SEG)).unwrap(), data);
            let mtime = std::fs::metadata(incoming.join(SEG)).unwrap().modified().unwrap();
            assert_eq!(mtime, SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
            match (alg, &out[..]) {
                (ChecksumAlgorithm::Sha256, [Outcome::Stored { name, .. }]) => assert_eq!(name, SEG),
                (ChecksumAlgorithm::Md5, [Outcome::Identical { name }]) => assert_eq!(name, SEG),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn refusals_leave_incoming_empty() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        let data = b"segment bytes".as_slice();
        let alg = ChecksumAlgorithm::Sha256;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (stream(&[(SEG, data)], Some((alg, format!("{} *{SEG}\n", "0".repeat(64))))), "Bad file checksum"),
            (stream(&[(SEG, data)], None), "Missing checksum"),
            (stream(&[("../evil", data)], Some((alg, sum_line(alg, "../evil", data)))), "Unsupported filename"),
            (stream(&[(SEG, data)], Some((alg, sum_line(alg, SEG, data))))[..700].to_vec(), "Invalid tar stream"),
        ];
        for (s, want) in cases {
            let err = receive(&cat, &origin(), &s[..], now(), &mut |_| {}).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
            assert_eq!(names(cat.incoming_directory()), Vec::<String>::new(), "{want}");
        }
        assert!(!dir.path().join("evil").exists());
    }

    /// A GNU base-256 mtime beyond what `SystemTime` holds made `UNIX_EPOCH + secs` panic
    /// (found writing fuzz/fuzz_targets/put_wal.rs); such a member is stored without its mtime.
    #[test]
    fn mtime_beyond_system_time_is_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        let alg = ChecksumAlgorithm::Sha256;
        let data = b"segment bytes".as_slice();
        let mut s = stream(&[(SEG, data)], Some((alg, sum_line(alg, SEG, data))));
        let mut h = tar::Header::from_byte_slice(&s[..512]).clone();
        h.set_mtime(u64::MAX);
        h.set_cksum();
        s[..512].copy_from_slice(h.as_bytes());
        let out = receive(&cat, &origin(), &s[..], now(), &mut |w| panic!("{w}")).unwrap();
        assert!(matches!(&out[..], [Outcome::Stored { name, .. }] if name == SEG), "{out:?}");
        assert_eq!(std::fs::read(cat.incoming_directory().join(SEG)).unwrap(), data);
    }

    #[test]
    fn mismatched_duplicate_goes_to_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        let alg = ChecksumAlgorithm::Sha256;
        let first = b"first".as_slice();
        let second = b"second".as_slice();
        receive(&cat, &origin(), &stream(&[(SEG, first)], Some((alg, sum_line(alg, SEG, first))))[..], now(), &mut |_| {})
            .unwrap();
        for round in 0..2 {
            let out = receive(
                &cat,
                &origin(),
                &stream(&[(SEG, second)], Some((alg, sum_line(alg, SEG, second))))[..],
                now(),
                &mut |_| {},
            )
            .unwrap();
            let [Outcome::Duplicate { moved_to, existing, incoming, .. }] = &out[..] else { panic!("{out:?}") };
            assert_ne!(existing, incoming);
            assert_eq!(std::fs::read(moved_to).unwrap(), second);
            let suffix = if round == 0 { "" } else { ".1" };
            assert_eq!(moved_to.file_name().unwrap(), format!("{SEG}{suffix}.20251124T160000Z.duplicate").as_str());
        }
        assert_eq!(std::fs::read(cat.incoming_directory().join(SEG)).unwrap(), first);
        assert_eq!(names(cat.incoming_directory()), [SEG]);
    }

    #[test]
    fn bad_checksum_lines_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        let alg = ChecksumAlgorithm::Sha256;
        let data = b"x".as_slice();
        let text = format!("garbage\n{}", sum_line(alg, SEG, data));
        let mut warnings = Vec::new();
        receive(&cat, &origin(), &stream(&[(SEG, data)], Some((alg, text)))[..], now(), &mut |w| warnings.push(w))
            .unwrap();
        assert_eq!(warnings, ["Bad checksum line 'garbage' found in put-wal for server 'pg'"]);
    }
}
