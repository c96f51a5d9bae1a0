//! `barman get-wal`: one WAL file out of the catalog for a `restore_command`, as Barman's
//! `Server.get_wal` — looked for in the archive, then in `incoming/` and `streaming/` (and,
//! with `partial`, the receiver's `.partial`), decompressed, optionally recompressed for the
//! trip (`-z`/`-j`), or sent as stored (`--keep-compression`).
//!
//! The search order is Barman's, including its repeats: a file that vanishes while it is
//! being looked at (the archiver moved it) is looked for again where it went.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::catalog::ServerCatalog;
use crate::compression::{Compression, CompressionError, WalCompression};
use crate::storage::{StorageError, StorageOp};
use crate::wal::{WalFileName, WalSegmentName};

/// A get-wal failed.
#[derive(Debug, thiserror::Error)]
pub enum GetWalError {
    /// Not a WAL file name (Barman exits 3 for it).
    #[error("'{0}' is not a valid wal file name")]
    InvalidName(String),
    /// In none of the places it could be.
    #[error("WAL file '{name}' not found in server '{server}'")]
    NotFound {
        /// The name asked for.
        name: String,
        /// The server.
        server: String,
    },
    /// A file operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The stored file could not be decompressed, or the output compressed.
    #[error("WAL file {path}: {source}")]
    Compression {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CompressionError,
    },
    /// Writing the output failed (a closed pipe, a full disk).
    #[error("writing WAL file {name}: {source}")]
    Output {
        /// The file.
        name: String,
        /// Why.
        source: io::Error,
    },
}

/// How the file is to be sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// `-z` (gzip) or `-j` (bzip2): compress what is sent.
    pub compress_output: Option<Compression>,
    /// `--keep-compression`: send the stored bytes as they are.
    pub keep_compression: bool,
    /// `-P`: also look for the receiver's `.partial` file.
    pub partial: bool,
}

/// The places `name` may be, in Barman's order (`get_wal_possible_paths`).
pub fn possible_paths(catalog: &ServerCatalog, name: &WalFileName, partial: bool) -> Vec<PathBuf> {
    let text = name.to_string();
    let archive = catalog.wal_path(name);
    let incoming = catalog.incoming_directory().join(&text);
    let streaming = catalog.streaming_directory().join(&text);
    let with_partial = |p: &Path| {
        let mut s = p.as_os_str().to_owned();
        s.push(".partial");
        PathBuf::from(s)
    };
    let mut paths = vec![archive.clone(), incoming.clone(), streaming.clone()];
    if partial {
        paths.push(with_partial(&streaming));
        paths.push(streaming);
        paths.push(with_partial(&archive));
        paths.push(with_partial(&incoming));
    }
    paths.push(archive);
    paths
}

/// Parses a name as `get-wal` accepts it: any WAL file name.
pub fn parse_name(text: &str) -> Result<WalFileName, GetWalError> {
    text.parse().map_err(|_| GetWalError::InvalidName(text.to_owned()))
}

/// `--peek N`: `name` and the names after it that the catalog holds, up to `n`, stopping at
/// the first gap. Segment sizes are unknown here, so after a missing name whose segment
/// number is a power of two the search goes on at the next log file (Barman's rule: that is
/// where a log ends for every possible segment size).
pub fn peek(catalog: &ServerCatalog, name: &WalFileName, n: usize) -> Vec<String> {
    let exists = |f: &WalFileName| possible_paths(catalog, f, false).iter().any(|p| p.exists());
    let mut found = Vec::new();
    let WalFileName::Segment(mut seg) = *name else {
        if exists(name) && n > 0 {
            found.push(name.to_string());
        }
        return found;
    };
    while found.len() < n {
        let as_file = WalFileName::Segment(seg);
        if exists(&as_file) {
            found.push(seg.to_string());
            match next_name(seg) {
                Some(next) => seg = next,
                None => break,
            }
            continue;
        }
        if !seg.seg().is_power_of_two() {
            break;
        }
        match seg.log().checked_add(1).and_then(|log| WalSegmentName::new(seg.timeline(), log, 0).ok()) {
            Some(next) => seg = next,
            None => break,
        }
    }
    found
}

fn next_name(seg: WalSegmentName) -> Option<WalSegmentName> {
    WalSegmentName::new(seg.timeline(), seg.log(), seg.seg().checked_add(1)?).ok()
}

/// Finds `name` and writes it to `out`; returns the path it came from. `compression` is the
/// server's (for `custom` filters). Nothing is written when the file is not found.
pub fn send(
    catalog: &ServerCatalog,
    compression: &WalCompression,
    name: &WalFileName,
    opts: SendOptions,
    out: &mut dyn Write,
) -> Result<PathBuf, GetWalError> {
    for path in possible_paths(catalog, name, opts.partial) {
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StorageError::io(StorageOp::Open, &path, e).into()),
        };
        send_file(compression, name, &path, file, opts, out)?;
        return Ok(path);
    }
    Err(GetWalError::NotFound { name: name.to_string(), server: catalog.server_name().to_owned() })
}

fn send_file(
    compression: &WalCompression,
    name: &WalFileName,
    path: &Path,
    mut file: std::fs::File,
    opts: SendOptions,
    out: &mut dyn Write,
) -> Result<(), GetWalError> {
    let output_err = |source| GetWalError::Output { name: name.to_string(), source };
    let compression_err = |source| GetWalError::Compression { path: path.to_path_buf(), source };
    let is_partial = path.extension().is_some_and(|e| e == "partial");
    // What the stored file is: the receiver's files are always plain.
    let stored = if is_partial {
        None
    } else {
        let mut head = vec![0u8; compression.magic_len()];
        let got = crate::storage::fs::read_full(&mut file, &mut head).map_err(|e| StorageError::io(StorageOp::Read, path, e))?;
        head.truncate(got);
        compression.identify_archived(&head)
    };
    let file = std::fs::File::open(path).map_err(|e| StorageError::io(StorageOp::Open, path, e))?;
    if opts.keep_compression || stored == opts.compress_output {
        let mut file = file;
        copy_chunked(&mut file, out).map_err(output_err)?;
        return out.flush().map_err(output_err);
    }
    let mut plain = compression.decoder(stored, file).map_err(compression_err)?;
    match opts.compress_output {
        None => {
            copy_chunked(&mut plain, out).map_err(output_err)?;
        }
        Some(algorithm) => {
            // The encoder owns its sink (a custom filter runs in a thread): it writes into a
            // shared buffer drained to `out` after every chunk, so memory stays bounded.
            let sink = SharedBuf::default();
            let mut encoder = WalCompression::with(algorithm)
                .encoder(Some(algorithm), &name.to_string(), 0, sink.clone())
                .map_err(compression_err)?;
            let mut chunk = vec![0u8; 256 * 1024];
            loop {
                let n = plain.read(&mut chunk).map_err(|e| compression_err(CompressionError::Io { algorithm, source: e }))?;
                if n == 0 {
                    break;
                }
                encoder.write_all(&chunk[..n]).map_err(output_err)?;
                sink.drain_to(out).map_err(output_err)?;
            }
            encoder.finish().map_err(compression_err)?;
            sink.drain_to(out).map_err(output_err)?;
        }
    }
    out.flush().map_err(output_err)
}

/// Read size when sending: `io::copy` through `dyn` reader and writer moves 8 KiB at a time,
/// and standard output (line-buffered) turns each of those into two `write` calls — 4096 for
/// one 16 MiB segment. A large chunk keeps a segment to a few dozen.
const SEND_CHUNK: usize = 1 << 20;

/// `io::copy` in [`SEND_CHUNK`] pieces.
fn copy_chunked(input: &mut dyn Read, out: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; SEND_CHUNK];
    let mut total = 0;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// An owned, sendable sink whose bytes the caller moves on to a borrowed writer.
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    fn drain_to(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut buf = self.0.lock().map_err(|_| io::Error::other("compression buffer poisoned"))?;
        out.write_all(&buf)?;
        buf.clear();
        Ok(())
    }
}

impl Write for SharedBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.lock().map_err(|_| io::Error::other("compression buffer poisoned"))?.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> (tempfile::TempDir, ServerCatalog) {
        let home = tempfile::tempdir().unwrap();
        let catalog = ServerCatalog::new("pg", home.path().join("pg"), home.path());
        catalog.create_skeleton().unwrap();
        (home, catalog)
    }

    fn archive(catalog: &ServerCatalog, name: &str, bytes: &[u8]) {
        let name: WalFileName = name.parse().unwrap();
        std::fs::create_dir_all(catalog.wal_dir(&name)).unwrap();
        std::fs::write(catalog.wal_path(&name), bytes).unwrap();
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = WalCompression::with(Compression::Gzip).encoder(Some(Compression::Gzip), "x", 0, Vec::new()).unwrap();
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn sends_plain_compressed_and_recompressed() {
        let (_home, catalog) = catalog();
        let content = vec![7u8; 100_000];
        archive(&catalog, "000000010000000000000001", &gzip(&content));
        let name = parse_name("000000010000000000000001").unwrap();
        let none = WalCompression::none();

        let mut out = Vec::new();
        send(&catalog, &none, &name, SendOptions::default(), &mut out).unwrap();
        assert_eq!(out, content, "decompressed by magic");

        let mut kept = Vec::new();
        send(&catalog, &none, &name, SendOptions { keep_compression: true, ..Default::default() }, &mut kept).unwrap();
        assert_eq!(kept, gzip(&content));

        let mut bz = Vec::new();
        send(&catalog, &none, &name, SendOptions { compress_output: Some(Compression::Bzip2), ..Default::default() }, &mut bz)
            .unwrap();
        let mut back = Vec::new();
        none.decoder(Some(Compression::Bzip2), std::io::Cursor::new(bz)).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, content);
    }

    #[test]
    fn partial_only_when_asked_and_missing_is_not_found() {
        let (_home, catalog) = catalog();
        std::fs::write(catalog.streaming_directory().join("000000010000000000000002.partial"), b"partial bytes").unwrap();
        let name = parse_name("000000010000000000000002").unwrap();
        let none = WalCompression::none();
        let mut out = Vec::new();
        let err = send(&catalog, &none, &name, SendOptions::default(), &mut out).unwrap_err();
        assert_eq!(err.to_string(), "WAL file '000000010000000000000002' not found in server 'pg'");
        assert!(out.is_empty());
        let from = send(&catalog, &none, &name, SendOptions { partial: true, ..Default::default() }, &mut out).unwrap();
        assert!(from.ends_with("000000010000000000000002.partial"));
        assert_eq!(out, b"partial bytes");
        assert!(matches!(parse_name("nope"), Err(GetWalError::InvalidName(_))));
    }

    #[test]
    fn peek_follows_the_archive_across_log_boundaries() {
        let (_home, catalog) = catalog();
        for n in ["0000000100000000000000FE", "0000000100000000000000FF", "000000010000000100000000"] {
            archive(&catalog, n, b"x");
        }
        let name = parse_name("0000000100000000000000FE").unwrap();
        assert_eq!(
            peek(&catalog, &name, 5),
            ["0000000100000000000000FE", "0000000100000000000000FF", "000000010000000100000000"]
        );
        assert_eq!(peek(&catalog, &name, 1), ["0000000100000000000000FE"]);
        assert!(peek(&catalog, &parse_name("000000010000000000000005").unwrap(), 3).is_empty());
        let history = parse_name("00000002.history").unwrap();
        assert!(peek(&catalog, &history, 3).is_empty());
        archive(&catalog, "00000002.history", b"1\t0/3000000\tno recovery target specified\n");
        assert_eq!(peek(&catalog, &history, 3), ["00000002.history"]);
    }
}
