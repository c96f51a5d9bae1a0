//! Compressed base backups (`backup_compression`), written and read back the way Barman's
//! `PgBaseBackupCompression` (barman/compression.py) and its restore (`DecompressOperation`,
//! barman/recovery_executor.py) lay them out (formats §1.5):
//!
//! ```text
//! base/<ID>/data/base.tar.gz        PGDATA, with backup_label and tablespace_map, no pg_tblspc links
//! base/<ID>/data/<oid>.tar.gz       one archive per tablespace (.gz, .lz4, .zst; none: .tar)
//! base/<ID>/data/backup_manifest    uncompressed
//! base/<ID>/<oid>/                  empty, as pg_basebackup's tablespace mapping leaves it
//! ```
//!
//! * [`BackupCompressionSettings`] — the `backup_compression*` options, checked as Barman checks
//!   them (its `*PgBaseBackupCompressionOption.validate`), and the BASE_BACKUP `COMPRESSION`
//!   option when the server compresses.
//! * [`ArchivePipe`] — one archive written on a blocking thread fed by a bounded channel, so the
//!   socket keeps flowing while a core compresses and memory stays flat: [`spawn_archive_file`]
//!   compresses (client side) or passes through (server side) into an `AtomicFile`;
//!   [`spawn_plain_extract`] decompresses a server-compressed archive into a plain tree
//!   (`backup_compression_format = plain`).
//! * [`read_member`] — one small member of a written archive (Barman's `get_file_content`,
//!   used for `backup_label`).
//! * [`extract_archive`] — decompress + untar into a directory through [`PlainExtractor`]
//!   (every name checked by `safe_join`), for `recover`.
//!
//! Deliberate differences from pg_basebackup, invisible to a reader of the files:
//!
//! * lz4 compresses with `lz4_flex`, which has a single (fast) level: `backup_compression_level`
//!   is checked but does not change the output. With `backup_compression_location = server`
//!   the server applies it.
//! * zstd without `backup_compression_workers` uses every core (pg_basebackup: one thread);
//!   frames carry a content checksum.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::{BackupCompression, BackupCompressionFormat, BackupCompressionLocation, ServerConfig};
use crate::storage::durable::{AtomicFile, FILE_MODE};
use crate::storage::{StorageError, StorageOp};

use super::extract::{ExtractError, PlainExtractor};
use super::tar_stream::{EntryKind, TarError, TarEvent, TarStream};

/// Chunks in flight between the socket and an archive's thread: with the 15+ servers' CopyData
/// of up to 32 kB each, about a megabyte.
const PIPE_DEPTH: usize = 32;

/// Bytes read at a time from an archive on disk.
const READ_CHUNK: usize = 256 * 1024;

/// The algorithm of a tar-format backup, spelt as backup.info's `compression` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveCompression {
    /// `base.tar.gz`.
    Gzip,
    /// `base.tar.lz4`.
    Lz4,
    /// `base.tar.zst`.
    Zstd,
    /// `backup_compression = none`: `base.tar`, uncompressed.
    None,
}

impl ArchiveCompression {
    /// From the configuration word.
    pub fn from_config(c: BackupCompression) -> ArchiveCompression {
        match c {
            BackupCompression::Gzip => ArchiveCompression::Gzip,
            BackupCompression::Lz4 => ArchiveCompression::Lz4,
            BackupCompression::Zstd => ArchiveCompression::Zstd,
            BackupCompression::None => ArchiveCompression::None,
        }
    }

    /// From backup.info's `compression` (`None` when it is not a tar-format backup's).
    pub fn from_name(name: &str) -> Option<ArchiveCompression> {
        Some(match name {
            "gzip" => ArchiveCompression::Gzip,
            "lz4" => ArchiveCompression::Lz4,
            "zstd" => ArchiveCompression::Zstd,
            "none" => ArchiveCompression::None,
            _ => return None,
        })
    }

    /// backup.info's `compression`, and the BASE_BACKUP `COMPRESSION` method.
    pub fn name(self) -> &'static str {
        match self {
            ArchiveCompression::Gzip => "gzip",
            ArchiveCompression::Lz4 => "lz4",
            ArchiveCompression::Zstd => "zstd",
            ArchiveCompression::None => "none",
        }
    }

    /// What pg_basebackup appends to `base.tar` (Barman's `file_extension` minus `tar`).
    pub fn suffix(self) -> &'static str {
        match self {
            ArchiveCompression::Gzip => ".gz",
            ArchiveCompression::Lz4 => ".lz4",
            ArchiveCompression::Zstd => ".zst",
            ArchiveCompression::None => "",
        }
    }

    /// The file name of the archive the server calls `tar_name` (`base.tar`, `<oid>.tar`).
    pub fn archive_file(self, tar_name: &str) -> String {
        format!("{tar_name}{}", self.suffix())
    }
}

impl fmt::Display for ArchiveCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which side compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionLocation {
    /// barman-rs compresses what the server sends (the default, as pg_basebackup's).
    Client,
    /// PostgreSQL 15+ compresses before sending (BASE_BACKUP `COMPRESSION`).
    Server,
}

/// The `backup_compression*` options of a server, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupCompressionSettings {
    /// `backup_compression`.
    pub algorithm: ArchiveCompression,
    /// `backup_compression_location` (unset: client).
    pub location: CompressionLocation,
    /// `backup_compression_format = plain`: the server compresses, barman-rs unpacks into a
    /// plain `data/` tree (backup.info `compression=None`). Only with location server.
    pub plain: bool,
    /// `backup_compression_level`.
    pub level: Option<i64>,
    /// `backup_compression_workers` (zstd only).
    pub workers: Option<u32>,
}

/// The options ask for something Barman refuses too; the text is Barman's (one issue a line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", issues.join("\n"))]
pub struct CompressionConfigError {
    /// Each problem found.
    pub issues: Vec<String>,
}

impl BackupCompressionSettings {
    /// Reads and checks the server's options; `Ok(None)` without `backup_compression`.
    pub fn from_config(cfg: &ServerConfig) -> Result<Option<BackupCompressionSettings>, CompressionConfigError> {
        let Some(algorithm) = cfg.backup_compression else { return Ok(None) };
        let algorithm = ArchiveCompression::from_config(algorithm);
        let location = match cfg.backup_compression_location {
            Some(BackupCompressionLocation::Server) => CompressionLocation::Server,
            Some(BackupCompressionLocation::Client) | None => CompressionLocation::Client,
        };
        let plain = cfg.backup_compression_format == Some(BackupCompressionFormat::Plain);
        let mut issues = Vec::new();
        if plain && location != CompressionLocation::Server {
            let loc = match cfg.backup_compression_location {
                Some(l) => l.to_string(),
                None => "None".into(),
            };
            issues.push(format!("backup_compression_format plain is not compatible with backup_compression_location {loc}"));
        }
        let level = cfg.backup_compression_level;
        let name = algorithm.name();
        match (algorithm, level) {
            (ArchiveCompression::Gzip, Some(l)) if !(1..=9).contains(&l) && l != -1 => {
                let mut msg = format!(
                    "backup_compression_level {l} unsupported by compression algorithm. {name} expects a compression level between 1 and 9 (-1 will use default compression level)."
                );
                if l == 0 {
                    msg.push_str("\nIf you need to create an archive not compressed, you should set `backup_compression = none`.");
                }
                issues.push(msg);
            }
            (ArchiveCompression::Lz4, Some(l)) if !(0..=12).contains(&l) => issues.push(format!(
                "backup_compression_level {l} unsupported by compression algorithm. {name} expects a compression level between 1 and 12 (0 will use default compression level)."
            )),
            (ArchiveCompression::Zstd, Some(l)) if !(-131072..=22).contains(&l) => issues.push(format!(
                "backup_compression_level {l} unsupported by compression algorithm. '{name}' expects a compression level between -131072 and 22 (3 will use default compression level)."
            )),
            (ArchiveCompression::None, Some(l)) if l != 0 => {
                issues.push(format!("backup_compression {name} only supports backup_compression_level 0."))
            }
            _ => {}
        }
        let workers = match (algorithm, cfg.backup_compression_workers) {
            (_, None) => None,
            (ArchiveCompression::Zstd, Some(w)) => match u32::try_from(w) {
                Ok(w) => Some(w),
                Err(_) => {
                    issues.push(format!("backup_compression_workers should be a positive integer: '{w}' is invalid."));
                    None
                }
            },
            (ArchiveCompression::Gzip, Some(_)) => {
                issues.push(format!("backup_compression_workers is not compatible with compression {name}"));
                None
            }
            (ArchiveCompression::Lz4, Some(_)) => {
                issues.push(format!("backup_compression_workers is not compatible with compression {name}."));
                None
            }
            (ArchiveCompression::None, Some(_)) => {
                issues.push(format!("backup_compression_workers is not compatible with compression '{name}'."));
                None
            }
        };
        if !issues.is_empty() {
            return Err(CompressionConfigError { issues });
        }
        Ok(Some(BackupCompressionSettings { algorithm, location, plain, level, workers }))
    }

    /// Whether the result is one tar per tablespace (backup.info `compression` set), rather than
    /// a plain tree.
    pub fn is_tar(&self) -> bool {
        !self.plain
    }

    /// backup.info's `compression`: the algorithm for tar backups, `None` for plain ones.
    pub fn info_compression(&self) -> Option<String> {
        self.is_tar().then(|| self.algorithm.name().to_owned())
    }

    /// What the server must do: BASE_BACKUP `COMPRESSION` and `COMPRESSION_DETAIL`
    /// (`level=N,workers=N`, as pg_basebackup's `--compress=server-…:…`). `None` when the
    /// client compresses, or nothing is to be compressed.
    pub fn server_option(&self) -> Option<(String, Option<String>)> {
        if self.location != CompressionLocation::Server || self.algorithm == ArchiveCompression::None {
            return None;
        }
        let mut detail = Vec::new();
        if let Some(l) = self.level {
            detail.push(format!("level={l}"));
        }
        if let Some(w) = self.workers {
            detail.push(format!("workers={w}"));
        }
        Some((self.algorithm.name().to_owned(), (!detail.is_empty()).then(|| detail.join(","))))
    }

    /// The problem with running these settings against a server of `server_version_num`, in
    /// Barman's words.
    pub fn check_server(&self, server_version_num: u32) -> Result<(), CompressionConfigError> {
        if self.location == CompressionLocation::Server && server_version_num < 150000 {
            return Err(CompressionConfigError {
                issues: vec!["backup_compression_location = server requires PostgreSQL 15 or greater".into()],
            });
        }
        Ok(())
    }

    /// The algorithm the archives arriving from the server are compressed with (`None`: plain
    /// tar that the client must compress or extract).
    pub fn on_the_wire(&self) -> Option<ArchiveCompression> {
        self.server_option().map(|_| self.algorithm)
    }
}

/// Writing or reading a compressed archive failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The archive could not be unpacked.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// The compressed stream is damaged or could not be written.
    #[error("{algorithm} archive {}", path.display())]
    Codec {
        /// The archive.
        path: PathBuf,
        /// Its compression.
        algorithm: ArchiveCompression,
        /// What the codec said.
        #[source]
        source: io::Error,
    },
    /// The tar inside is malformed.
    #[error("archive {}", path.display())]
    Tar {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: TarError,
    },
    /// The stream feeding the archive stopped before its end (the backup failed elsewhere).
    #[error("the stream of {} ended before the archive did", path.display())]
    Abandoned {
        /// The archive.
        path: PathBuf,
    },
    /// The archive's thread panicked or was cancelled.
    #[error("the thread writing {} failed: {why}", path.display())]
    Thread {
        /// The archive.
        path: PathBuf,
        /// What happened.
        why: String,
    },
}

enum Chunk {
    Data(Bytes),
    End,
}

/// The receiving end of an [`ArchivePipe`], read on the blocking thread.
struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
}

impl ChannelReader {
    /// The next chunk; `Ok(None)` at the end the sender declared; an error if the sender went
    /// away without declaring it (nothing may then be committed).
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.current.is_empty() {
            return Ok(Some(std::mem::take(&mut self.current)));
        }
        if self.ended {
            return Ok(None);
        }
        loop {
            match self.rx.blocking_recv() {
                Some(Chunk::Data(d)) if d.is_empty() => continue,
                Some(Chunk::Data(d)) => return Ok(Some(d)),
                Some(Chunk::End) => {
                    self.ended = true;
                    return Ok(None);
                }
                None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "archive stream abandoned")),
            }
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.current.is_empty() {
            match self.next_chunk()? {
                Some(d) => self.current = d,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// One archive handled on a blocking thread, fed through a bounded channel: a slow disk or a
/// busy compressor slows the socket instead of filling memory.
///
/// Call order: [`feed`](Self::feed) each chunk, then [`finish`](Self::finish), which declares the
/// end and returns the thread's result. Dropping the pipe unfinished abandons the archive: the
/// thread sees the stream end without its declared end and commits nothing.
pub struct ArchivePipe<T: Send + 'static> {
    path: PathBuf,
    tx: mpsc::Sender<Chunk>,
    task: tokio::task::JoinHandle<Result<T, ArchiveError>>,
}

impl<T: Send + 'static> fmt::Debug for ArchivePipe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchivePipe").field("path", &self.path).finish_non_exhaustive()
    }
}

impl<T: Send + 'static> ArchivePipe<T> {
    fn spawn(path: PathBuf, job: impl FnOnce(&mut ChannelReader) -> Result<T, ArchiveError> + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        let task = tokio::task::spawn_blocking(move || job(&mut ChannelReader { rx, current: Bytes::new(), ended: false }));
        ArchivePipe { path, tx, task }
    }

    /// The file or directory being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands a chunk of the archive to the thread (waits while the channel is full). If the
    /// thread has stopped, returns its error.
    pub async fn feed(&mut self, data: Bytes) -> Result<(), ArchiveError> {
        if self.tx.send(Chunk::Data(data)).await.is_err() {
            return Err(self.stopped().await);
        }
        Ok(())
    }

    async fn stopped(&mut self) -> ArchiveError {
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => ArchiveError::Thread { path: self.path.clone(), why: "it ended before the archive".into() },
            Err(e) => ArchiveError::Thread { path: self.path.clone(), why: e.to_string() },
        }
    }

    /// Declares the end of the archive and waits for the thread to complete it.
    pub async fn finish(self) -> Result<T, ArchiveError> {
        let ArchivePipe { path, tx, task } = self;
        // A closed channel means the thread already stopped: its result says why.
        let _ = tx.send(Chunk::End).await;
        drop(tx);
        match task.await {
            Ok(r) => r,
            Err(e) => Err(ArchiveError::Thread { path, why: e.to_string() }),
        }
    }
}

/// A compressing writer over `W`; [`ArchiveEncoder::finish`] ends the stream.
enum ArchiveEncoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> ArchiveEncoder<W> {
    /// As pg_basebackup's client compressors: gzip at zlib's default (6) unless a level is set,
    /// a gzip header without name or time; zstd at 3 unless set, on `workers` threads.
    fn new(algorithm: ArchiveCompression, level: Option<i64>, workers: Option<u32>, out: W) -> io::Result<Self> {
        Ok(match algorithm {
            ArchiveCompression::None => ArchiveEncoder::Plain(out),
            ArchiveCompression::Gzip => {
                let level = level.filter(|l| (1..=9).contains(l)).unwrap_or(6) as u32;
                ArchiveEncoder::Gzip(flate2::write::GzEncoder::new(out, flate2::Compression::new(level)))
            }
            ArchiveCompression::Lz4 => ArchiveEncoder::Lz4(lz4_flex::frame::FrameEncoder::new(out)),
            ArchiveCompression::Zstd => {
                let level = level.map_or(3, |l| l.clamp(-131072, 22) as i32);
                let mut e = zstd::stream::write::Encoder::new(out, level)?;
                let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
                if workers > 0 {
                    e.multithread(workers)?;
                }
                e.include_checksum(true)?;
                ArchiveEncoder::Zstd(e)
            }
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            ArchiveEncoder::Plain(w) => Ok(w),
            ArchiveEncoder::Gzip(e) => e.finish(),
            ArchiveEncoder::Lz4(e) => e.finish().map_err(io::Error::other),
            ArchiveEncoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for ArchiveEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ArchiveEncoder::Plain(w) => w.write(buf),
            ArchiveEncoder::Gzip(e) => e.write(buf),
            ArchiveEncoder::Lz4(e) => e.write(buf),
            ArchiveEncoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ArchiveEncoder::Plain(w) => w.flush(),
            ArchiveEncoder::Gzip(e) => e.flush(),
            ArchiveEncoder::Lz4(e) => e.flush(),
            ArchiveEncoder::Zstd(e) => e.flush(),
        }
    }
}

/// How [`spawn_archive_file`] treats the bytes it is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveInput {
    /// Plain tar from the server: compress it with this algorithm, level and workers.
    Compress {
        /// The algorithm.
        algorithm: ArchiveCompression,
        /// `backup_compression_level`.
        level: Option<i64>,
        /// `backup_compression_workers`.
        workers: Option<u32>,
    },
    /// Already compressed by the server: stored byte for byte.
    Store,
}

/// Writes one archive to `target` (mode 0600) on a blocking thread. The file appears under its
/// name only once complete, fsynced, and its directory fsynced; until then it is a temporary
/// that an abandoned or failed archive removes. The thread returns the bytes written to disk.
///
/// Must be called inside a tokio runtime.
pub fn spawn_archive_file(target: PathBuf, input: ArchiveInput) -> ArchivePipe<u64> {
    let path = target.clone();
    ArchivePipe::spawn(target.clone(), move |rx| {
        let file = AtomicFile::create(&target, FILE_MODE)?;
        let (algorithm, level, workers) = match input {
            ArchiveInput::Compress { algorithm, level, workers } => (algorithm, level, workers),
            ArchiveInput::Store => (ArchiveCompression::None, None, None),
        };
        let codec = |source: io::Error| ArchiveError::Codec { path: path.clone(), algorithm, source };
        let mut out = ArchiveEncoder::new(algorithm, level, workers, CountingWriter { inner: file, count: 0 }).map_err(codec)?;
        loop {
            match rx.next_chunk() {
                Ok(Some(d)) => out.write_all(&d).map_err(|e| unwrap_storage(e, &path, algorithm))?,
                Ok(None) => break,
                Err(_) => return Err(ArchiveError::Abandoned { path: path.clone() }),
            }
        }
        let counted = out.finish().map_err(|e| unwrap_storage(e, &path, algorithm))?;
        let written = counted.count;
        counted.inner.commit()?;
        Ok(written)
    })
}

/// An `io::Error` from the `AtomicFile` below a codec carries the `StorageError` naming the file;
/// anything else is the codec's own.
fn unwrap_storage(e: io::Error, path: &Path, algorithm: ArchiveCompression) -> ArchiveError {
    if e.get_ref().is_some_and(|inner| inner.is::<StorageError>()) {
        let inner = e.into_inner().expect("checked above");
        return ArchiveError::Storage(*inner.downcast::<StorageError>().expect("checked above"));
    }
    ArchiveError::Codec { path: path.to_owned(), algorithm, source: e }
}

struct CountingWriter<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader of what `algorithm` compressed into `input`.
pub(crate) fn decoder<'a, R: Read + Send + 'a>(algorithm: ArchiveCompression, input: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match algorithm {
        ArchiveCompression::None => Box::new(input),
        ArchiveCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(input))),
        ArchiveCompression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(BufReader::new(input))),
        ArchiveCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
    })
}

/// Unpacks everything `input` decodes to into `extractor`, then finishes it (fsyncs).
fn unpack(
    path: &Path,
    algorithm: ArchiveCompression,
    input: impl Read + Send,
    mut extractor: PlainExtractor,
) -> Result<(u64, u64), ArchiveError> {
    let codec = |source: io::Error| ArchiveError::Codec { path: path.to_owned(), algorithm, source };
    let mut decoded = decoder(algorithm, input).map_err(codec)?;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match decoded.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(codec(e)),
        };
        extractor.feed(&buf[..n])?;
    }
    Ok(extractor.finish()?)
}

/// Unpacks a server-compressed archive into the plain tree at `root` on a blocking thread
/// (`backup_compression_format = plain`); `links` as [`PlainExtractor::new`]. The thread returns
/// (files, bytes) written.
///
/// Must be called inside a tokio runtime.
pub fn spawn_plain_extract(
    root: PathBuf,
    algorithm: ArchiveCompression,
    links: BTreeMap<String, PathBuf>,
) -> Result<ArchivePipe<(u64, u64)>, ArchiveError> {
    let extractor = PlainExtractor::new(&root, links)?;
    let path = root.clone();
    Ok(ArchivePipe::spawn(root, move |rx| {
        let r = unpack(&path, algorithm, &mut *rx, extractor);
        // A stream cut short shows up as a codec error; name the real cause.
        if r.is_err() && !rx.ended {
            return Err(ArchiveError::Abandoned { path });
        }
        r
    }))
}

/// The content of the first member called `name` in the archive at `path` (at most `limit`
/// bytes), reading no further than that member — Barman's `get_file_content`, used for the
/// `backup_label` at the head of `base.tar*`. `Ok(None)` if the archive has no such member.
pub fn read_member(path: &Path, algorithm: ArchiveCompression, name: &str, limit: usize) -> Result<Option<Vec<u8>>, ArchiveError> {
    let codec = |source: io::Error| ArchiveError::Codec { path: path.to_owned(), algorithm, source };
    let file = std::fs::File::open(path).map_err(|e| StorageError::io(StorageOp::Open, path, e))?;
    let mut decoded = decoder(algorithm, file).map_err(codec)?;
    let mut tar = TarStream::new();
    let mut buf = vec![0u8; 64 * 1024];
    // The member's content and whether it is complete.
    let mut found: Option<(Vec<u8>, bool)> = None;
    let mut remaining = 0u64;
    let tar_err = |source: TarError| ArchiveError::Tar { path: path.to_owned(), source };
    loop {
        let n = decoded.read(&mut buf).map_err(codec)?;
        if n == 0 {
            break;
        }
        tar.feed::<TarError>(&buf[..n], &mut |ev| {
            match ev {
                TarEvent::Entry(e) if found.is_none() && e.path == name => {
                    // A member larger than asked for is not the one looked for.
                    match e.kind {
                        EntryKind::File { size } if size <= limit as u64 => {
                            remaining = size;
                            found = Some((Vec::with_capacity(size as usize), size == 0));
                        }
                        _ => {}
                    }
                }
                TarEvent::Data(d) => {
                    if let Some((content, done @ false)) = &mut found {
                        content.extend_from_slice(d);
                        remaining -= d.len() as u64;
                        *done = remaining == 0;
                    }
                }
                _ => {}
            }
            Ok(())
        })
        .map_err(tar_err)?;
        if let Some((content, true)) = found {
            return Ok(Some(content));
        }
    }
    Ok(None)
}

/// Decompresses and unpacks the archive at `path` into `root`, skipping the top-level members
/// named in `exclude` (Barman leaves out `recovery.conf` and `tablespace_map` when restoring
/// `base.tar*`). Returns (files, bytes) written; everything is fsynced.
pub fn extract_archive(
    path: &Path,
    algorithm: ArchiveCompression,
    root: &Path,
    links: BTreeMap<String, PathBuf>,
    exclude: &[&str],
) -> Result<(u64, u64), ArchiveError> {
    let file = std::fs::File::open(path).map_err(|e| StorageError::io(StorageOp::Open, path, e))?;
    let extractor =
        PlainExtractor::new(root, links)?.excluding(exclude.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>());
    unpack(path, algorithm, file, extractor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn server(extra: &str) -> ServerConfig {
        let text = format!("[barman]\nbarman_home = /tmp/x\n\n[pg]\nconninfo = host=x\nbackup_method = postgres\n{extra}\n");
        let mut fs = crate::config::MemoryFs::new();
        fs.add("/etc/barman.conf", text);
        let cfg = Config::load_with(&fs, Path::new("/etc/barman.conf"), None).expect("config");
        cfg.server("pg").expect("server pg").clone()
    }

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("backup_label", &b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"[..]),
            ("tablespace_map", b"16384 /srv/ts\n"),
            ("recovery.conf", b"x"),
            ("base/1/1259", &[7u8; 70_000][..]),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o600);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn settings_are_checked_as_barman_checks_them() {
        let ok = BackupCompressionSettings::from_config(&server("backup_compression = zstd\nbackup_compression_level = 5\nbackup_compression_workers = 2"))
            .unwrap()
            .unwrap();
        assert_eq!(ok.algorithm, ArchiveCompression::Zstd);
        assert_eq!(ok.location, CompressionLocation::Client);
        assert_eq!(ok.info_compression().as_deref(), Some("zstd"));
        assert_eq!(ok.server_option(), None);
        assert!(BackupCompressionSettings::from_config(&server("")).unwrap().is_none());

        let srv = BackupCompressionSettings::from_config(&server(
            "backup_compression = gzip\nbackup_compression_location = server\nbackup_compression_format = plain\nbackup_compression_level = 3",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(srv.server_option(), Some(("gzip".into(), Some("level=3".into()))));
        assert_eq!(srv.info_compression(), None);
        assert!(srv.check_server(140000).is_err() && srv.check_server(150000).is_ok());

        for (extra, text) in [
            ("backup_compression = gzip\nbackup_compression_format = plain", "backup_compression_format plain is not compatible with backup_compression_location None"),
            ("backup_compression = gzip\nbackup_compression_level = 0", "set `backup_compression = none`"),
            ("backup_compression = gzip\nbackup_compression_workers = 2", "backup_compression_workers is not compatible with compression gzip"),
            ("backup_compression = lz4\nbackup_compression_level = 13", "between 1 and 12"),
            ("backup_compression = zstd\nbackup_compression_level = 23", "between -131072 and 22"),
            ("backup_compression = zstd\nbackup_compression_workers = -1", "should be a positive integer"),
            ("backup_compression = none\nbackup_compression_level = 1", "only supports backup_compression_level 0"),
        ] {
            let e = BackupCompressionSettings::from_config(&server(extra)).unwrap_err();
            assert!(e.to_string().contains(text), "{extra}: {e}");
        }
    }

    #[test]
    fn archives_round_trip_through_every_algorithm() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let data = sample_tar();
        for algorithm in [ArchiveCompression::Gzip, ArchiveCompression::Lz4, ArchiveCompression::Zstd, ArchiveCompression::None] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join(algorithm.archive_file("base.tar"));
            let written = rt
                .block_on(async {
                    let mut pipe = spawn_archive_file(target.clone(), ArchiveInput::Compress { algorithm, level: Some(1), workers: Some(2) });
                    for c in data.chunks(1000) {
                        pipe.feed(Bytes::copy_from_slice(c)).await?;
                    }
                    pipe.finish().await
                })
                .unwrap();
            let on_disk = std::fs::read(&target).unwrap();
            assert_eq!(written, on_disk.len() as u64);
            let magic: &[u8] = match algorithm {
                ArchiveCompression::Gzip => b"\x1f\x8b\x08\x00",
                ArchiveCompression::Lz4 => b"\x04\x22\x4d\x18",
                ArchiveCompression::Zstd => b"\x28\xb5\x2f\xfd",
                ArchiveCompression::None => b"backup_label",
            };
            assert!(on_disk.starts_with(magic), "{algorithm}");
            // No temporary left next to it.
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

            let label = read_member(&target, algorithm, "backup_label", 4096).unwrap().unwrap();
            assert!(label.starts_with(b"START WAL LOCATION"));
            assert_eq!(read_member(&target, algorithm, "nope", 4096).unwrap(), None);

            let root = dir.path().join("restore");
            extract_archive(&target, algorithm, &root, BTreeMap::new(), &["recovery.conf", "tablespace_map"]).unwrap();
            assert_eq!(std::fs::read(root.join("base/1/1259")).unwrap(), vec![7u8; 70_000]);
            assert!(root.join("backup_label").exists());
            assert!(!root.join("tablespace_map").exists() && !root.join("recovery.conf").exists());
        }
    }

    #[test]
    fn an_abandoned_archive_leaves_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("base.tar.zst");
        rt.block_on(async {
            let mut pipe = spawn_archive_file(
                target.clone(),
                ArchiveInput::Compress { algorithm: ArchiveCompression::Zstd, level: None, workers: None },
            );
            pipe.feed(Bytes::from_static(b"some bytes")).await.unwrap();
            drop(pipe);
            // The thread notices and removes its temporary file.
            for _ in 0..200 {
                if std::fs::read_dir(dir.path()).unwrap().count() == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        });
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn server_compressed_plain_is_unpacked_and_damage_detected() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&sample_tar()).unwrap();
        let compressed = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let (files, _) = rt
            .block_on(async {
                let mut pipe = spawn_plain_extract(root.clone(), ArchiveCompression::Gzip, BTreeMap::new())?;
                for c in compressed.chunks(100) {
                    pipe.feed(Bytes::copy_from_slice(c)).await?;
                }
                pipe.finish().await
            })
            .unwrap();
        assert_eq!(files, 4);
        assert_eq!(std::fs::read(root.join("base/1/1259")).unwrap(), vec![7u8; 70_000]);

        let mut damaged = compressed.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0xff;
        let archive = dir.path().join("bad.tar.gz");
        std::fs::write(&archive, &damaged).unwrap();
        assert!(extract_archive(&archive, ArchiveCompression::Gzip, &dir.path().join("r2"), BTreeMap::new(), &[]).is_err());
    }
}
