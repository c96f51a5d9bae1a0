//! `barman-wal-archive`: PostgreSQL's `archive_command` helper. It sends one WAL file to
//! `barman put-wal` on the Barman host over ssh, as a tar stream holding the file and a
//! checksum file (`SHA256SUMS`, or `MD5SUMS` with `--md5` for Barman servers before 3.11),
//! so the receiving side can prove the bytes arrived intact before storing them.
//!
//! Exit statuses, as Barman's `walarchive.py`: 0 once the Barman host has the file; 2 for a
//! usage error or a file that cannot be sent; 3 when ssh itself failed (its status 255);
//! otherwise the remote `barman put-wal` status. Any non-zero status makes PostgreSQL keep
//! the segment and retry.
//!
//! Compression (`-z`, `-j`, `--zstd`, `--lz4`) happens here, before sending; the file keeps
//! its name and the Barman archiver recognises the algorithm by its magic bytes. `--xz` and
//! `--snappy`, which Barman offers, are refused: barman-rs cannot write those formats.

mod wal_client;

use std::fs::File;
use std::io::{self, Read, Seek as _, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::Context as _;
use barman_core::compression::{Compression, CompressionLevel, WalCompression};
use barman_core::put_wal::{ChecksumAlgorithm, Hasher};
use clap::{ArgGroup, Parser};

use wal_client::{connectivity_test, exit_code, fail, ssh_command};

/// The arguments of Barman's `barman-wal-archive`.
#[derive(Debug, Parser)]
#[command(
    name = "barman-wal-archive",
    version,
    about = "This script will be used as an 'archive_command' based on the put-wal feature of Barman. \
             A ssh connection will be opened to the Barman host.",
    group(ArgGroup::new("compression").multiple(false))
)]
struct Args {
    /// The user used for the ssh connection to the Barman server.
    #[arg(short = 'U', long, default_value = "barman")]
    user: String,
    /// The port used for the ssh connection to the Barman server.
    #[arg(long)]
    port: Option<String>,
    /// Configuration file on the Barman server.
    #[arg(short = 'c', long, value_name = "CONFIG")]
    config: Option<String>,
    /// Test both the connection and the configuration of the requested PostgreSQL server in
    /// Barman for WAL retrieval. With this option, the 'wal_name' mandatory argument is
    /// ignored.
    #[arg(short = 't', long)]
    test: bool,
    /// Use MD5 as the hash algorithm to maintain compatibility between mismatched client and
    /// server versions.
    #[arg(long)]
    md5: bool,
    /// gzip-compress the WAL file before sending it.
    #[arg(short = 'z', long, group = "compression")]
    gzip: bool,
    /// bzip2-compress the WAL file before sending it.
    #[arg(short = 'j', long, group = "compression")]
    bzip2: bool,
    /// xz-compress the WAL file before sending it (not supported by barman-rs).
    #[arg(long, group = "compression")]
    xz: bool,
    /// snappy-compress the WAL file before sending it (not supported by barman-rs).
    #[arg(long, group = "compression")]
    snappy: bool,
    /// zstd-compress the WAL file before sending it.
    #[arg(long, group = "compression")]
    zstd: bool,
    /// lz4-compress the WAL file before sending it.
    #[arg(long, group = "compression")]
    lz4: bool,
    /// A compression level for the specified compression algorithm.
    #[arg(long, value_parser = parse_level)]
    compression_level: Option<CompressionLevel>,
    /// The host of the Barman server.
    #[arg(value_name = "BARMAN_HOST")]
    barman_host: String,
    /// The server name configured in Barman from which WALs are taken.
    #[arg(value_name = "SERVER_NAME")]
    server_name: String,
    /// The value of the '%p' keyword (according to 'archive_command').
    #[arg(value_name = "WAL_PATH")]
    wal_path: PathBuf,
}

/// Barman's `parse_compression_level`: `low`, `medium`, `high` or an integer.
fn parse_level(text: &str) -> Result<CompressionLevel, String> {
    match text.to_lowercase().as_str() {
        "low" => Ok(CompressionLevel::Low),
        "medium" => Ok(CompressionLevel::Medium),
        "high" => Ok(CompressionLevel::High),
        other => other
            .parse::<i64>()
            .map(CompressionLevel::Level)
            .map_err(|_| format!("{text:?} is not a compression level (low, medium, high or an integer)")),
    }
}

impl Args {
    fn compression(&self) -> Result<Option<Compression>, String> {
        Ok(match () {
            _ if self.gzip => Some(Compression::Gzip),
            _ if self.bzip2 => Some(Compression::Bzip2),
            _ if self.zstd => Some(Compression::Zstd),
            _ if self.lz4 => Some(Compression::Lz4),
            _ if self.xz => return Err("xz compression is not supported by barman-rs".to_owned()),
            _ if self.snappy => return Err("snappy compression is not supported by barman-rs".to_owned()),
            _ => None,
        })
    }

    /// The remote `barman … put-wal SERVER [--test]`. The configuration path is quoted for
    /// the remote shell, as Barman's client does.
    fn ssh(&self) -> std::process::Command {
        let mut cmd = ssh_command(self.port.as_deref(), &self.user, &self.barman_host);
        if let Some(config) = &self.config {
            cmd.arg(format!("--config='{config}'"));
        }
        cmd.arg("put-wal").arg(&self.server_name);
        if self.test {
            cmd.arg("--test");
        }
        cmd
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.test {
        return connectivity_test(args.ssh());
    }
    let compression = match args.compression() {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    if args.wal_path.is_dir() {
        return fail(&format!("WAL_PATH cannot be a directory: {}", args.wal_path.display()), 2);
    }
    // Prepared before ssh starts, so an unreadable WAL_PATH never reaches the Barman host.
    let payload = match Payload::prepare(&args.wal_path, compression, args.compression_level) {
        Ok(p) => p,
        Err(e) => return fail(&format!("{e:#}"), 2),
    };
    let algorithm = if args.md5 { ChecksumAlgorithm::Md5 } else { ChecksumAlgorithm::Sha256 };

    let mut ssh = args.ssh();
    ssh.stdin(Stdio::piped());
    let mut child = match ssh.spawn() {
        Ok(c) => c,
        Err(e) => return fail(&format!("Error executing ssh: {e}"), 2),
    };
    let stdin = child.stdin.take().expect("stdin was piped");
    let sent = send(stdin, payload, algorithm);
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => return fail(&format!("Error executing ssh: {e}"), 2),
    };
    match (exit_code(status), sent) {
        (0, Ok(())) => ExitCode::SUCCESS,
        // The remote side exited 0 without reading everything: it cannot have stored the file.
        (0, Err(e)) => fail(&format!("Sending the WAL file to 'barman put-wal' failed: {e:#}"), 2),
        (255, _) => fail("Connection problem with ssh", 3),
        (code, _) => fail("Remote 'barman put-wal' command has failed!", code),
    }
}

/// The bytes to send under the WAL file's name: the file itself, or a compressed copy in an
/// anonymous temporary file (a segment can be 1 GiB, too much to hold in memory).
struct Payload {
    name: String,
    file: File,
    size: u64,
    mtime: u64,
}

impl Payload {
    fn prepare(
        wal_path: &Path,
        compression: Option<Compression>,
        level: Option<CompressionLevel>,
    ) -> anyhow::Result<Payload> {
        let name = wal_path
            .file_name()
            .with_context(|| format!("WAL_PATH has no file name: {}", wal_path.display()))?
            .to_string_lossy()
            .into_owned();
        let mut file = File::open(wal_path).with_context(|| format!("cannot open WAL_PATH {}", wal_path.display()))?;
        let meta = file.metadata().with_context(|| format!("cannot stat WAL_PATH {}", wal_path.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let Some(algorithm) = compression else {
            return Ok(Payload { name, file, size: meta.len(), mtime });
        };
        let settings = WalCompression { level, ..WalCompression::with(algorithm) };
        let temp = tempfile::tempfile().context("cannot create a temporary file for compression")?;
        let mut encoder = settings
            .encoder(Some(algorithm), &name, u32::try_from(mtime).unwrap_or(0), temp)
            .with_context(|| format!("cannot start {algorithm} compression"))?;
        io::copy(&mut file, &mut encoder).with_context(|| format!("compressing {}", wal_path.display()))?;
        let mut compressed = encoder.finish().with_context(|| format!("compressing {}", wal_path.display()))?;
        let size = compressed.stream_position().context("temporary file")?;
        compressed.rewind().context("temporary file")?;
        Ok(Payload { name, file: compressed, size, mtime })
    }
}

/// A reader that hashes what passes through it: the checksum of exactly the bytes the tar
/// stream carried.
struct Hashing<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes the tar stream: the file, then the checksum file naming it, then the end marker.
fn send(out: impl Write, payload: Payload, algorithm: ChecksumAlgorithm) -> anyhow::Result<()> {
    let mut tar = tar::Builder::new(io::BufWriter::new(out));
    let mut header = regular_header(payload.size, payload.mtime);
    header.set_path(&payload.name).with_context(|| format!("file name {:?}", payload.name))?;
    header.set_cksum();
    let mut reader = Hashing { inner: payload.file.take(payload.size), hasher: algorithm.hasher() };
    tar.append(&header, &mut reader).context("writing the WAL file to ssh")?;
    let line = format!("{} *{}\n", reader.hasher.finish_hex(), payload.name);
    let mut header = regular_header(line.len() as u64, 0);
    header.set_path(algorithm.sums_file_name()).context("checksum file name")?;
    header.set_cksum();
    tar.append(&header, line.as_bytes()).context("writing the checksum file to ssh")?;
    let mut out = tar.into_inner().context("finishing the tar stream")?;
    out.flush().context("writing to ssh")?;
    Ok(())
}

fn regular_header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}
