//! WAL compression by Barman's names, and detection by magic bytes exactly as Barman does it
//! (`barman/compression.py`; `shared/reference/barman-formats.md` §1.6).
//!
//! Barman stores a compressed WAL file under its own name (no `.gz` suffix) and tells the
//! algorithm from the file's first bytes. barman-rs writes the same formats, so either tool
//! reads what the other archived:
//!
//! | `compression` | written as | magic | levels (min..max, low/medium/high) |
//! |---|---|---|---|
//! | `gzip`, `pygzip`, `pigz` | gzip member (flate2) | `1F 8B 08` | 1..9, 1/6/9 |
//! | `bzip2`, `pybzip2` | bzip2 stream | `42 5A 68` | 1..9, 1/5/9 |
//! | `zstd` | zstd frame | `28 B5 2F FD` | -22..22, 1/4/9 |
//! | `lz4` | lz4 frame (independent blocks, like any frame Python's `lz4.frame` reads) | `04 22 4D 18` | 0..16, 0/6/10 |
//! | `custom` | `custom_compression_filter` run by `sh` (stdin → stdout) | `custom_compression_magic`, if set | passed through |
//! | `xz`, `snappy` | detected only: [`CompressionError::Unsupported`] for reading and writing | `FD 37 7A 58 5A 00`, `FF 06 00 00 73 4E 61 50 70 59` | |
//!
//! * [`identify`] — Barman's `CompressionManager.identify_compression`: the registry's names
//!   tried in **alphabetical order**, first magic match wins, so a gzip file is always reported
//!   as `gzip` (never `pigz`/`pygzip`) and a configured custom magic beats gzip's.
//! * [`WalCompression`] — the server's settings (`compression`, `compression_level`,
//!   `custom_*`, `path_prefix`), resolved once: [`WalCompression::encoder`] and
//!   [`WalCompression::decoder`] stream through any of the algorithms.
//! * [`Encoder`] — an `io::Write` adaptor whose [`Encoder::finish`] hands the inner writer back
//!   (so a caller can still commit an `AtomicFile` it compressed into).
//!
//! Deliberate differences from Barman, none of which changes what a reader sees:
//!
//! * `pigz` compresses in-process (no `pigz` binary needed); the output is a plain gzip member
//!   that `pigz -d` and Python's `gzip` read. xlog.db still records `pigz`, as Barman does.
//! * The gzip header names the WAL file itself (Barman's names its temporary file,
//!   `<segment>.compressed`) and carries the source's mtime rather than the compression time.
//! * lz4 ignores the level: `lz4_flex` has one (fast) compressor. The frames are standard.
//! * A custom filter runs as `sh -c FILTER` fed through pipes, instead of Barman's
//!   `FILTER > "$2" < "$1"`; a filter that seeks its input is not supported.
//!
//! Where the bytes come from or go (files, `AtomicFile`) is the caller's business.

mod filter;

use std::fmt;
use std::io::{self, BufReader, Read, Write};

pub use crate::config::{Compression, CompressionLevel};
use crate::config::ServerConfig;

pub use filter::{FilterReader, FilterWriter};

/// The magic bytes of each algorithm Barman registers (custom excepted: it is configured).
const MAGICS: [(Compression, &[u8]); 9] = [
    (Compression::Bzip2, b"\x42\x5a\x68"),
    (Compression::Gzip, b"\x1f\x8b\x08"),
    (Compression::Lz4, b"\x04\x22\x4d\x18"),
    (Compression::Pigz, b"\x1f\x8b\x08"),
    (Compression::Pybzip2, b"\x42\x5a\x68"),
    (Compression::Pygzip, b"\x1f\x8b\x08"),
    (Compression::Snappy, b"\xff\x06\x00\x00sNaPpY"),
    (Compression::Xz, b"\xfd7zXZ\x00"),
    (Compression::Zstd, b"(\xb5/\xfd"),
];

/// The longest built-in magic (snappy's): how many bytes [`identify`] needs without a custom
/// magic.
pub const BUILTIN_MAGIC_MAX_LEN: usize = 10;

/// The magic bytes Barman tests for `algorithm`; `None` for `custom` (configured, see
/// [`WalCompression::custom_magic`]).
pub fn magic(algorithm: Compression) -> Option<&'static [u8]> {
    MAGICS.iter().find(|(c, _)| *c == algorithm).map(|(_, m)| *m)
}

/// Which algorithm wrote a file starting with `start`, by Barman's rule: every registered name
/// in alphabetical order (`bzip2`, `custom`, `gzip`, `lz4`, `pigz`, `pybzip2`, `pygzip`,
/// `snappy`, `xz`, `zstd`), the first whose magic `start` begins with. `custom` takes part
/// only with a configured magic. `None`: not compressed by any known algorithm.
pub fn identify(start: &[u8], custom_magic: Option<&[u8]>) -> Option<Compression> {
    let mut candidates: Vec<(&'static str, Compression, &[u8])> = MAGICS
        .iter()
        .map(|(c, m)| (name_of(*c), *c, *m))
        .collect();
    if let Some(m) = custom_magic.filter(|m| !m.is_empty()) {
        candidates.push(("custom", Compression::Custom, m));
    }
    candidates.sort_by_key(|(name, _, _)| *name);
    candidates
        .into_iter()
        .find(|(_, _, m)| start.starts_with(m))
        .map(|(_, c, _)| c)
}

fn name_of(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::Bzip2 => "bzip2",
        Compression::Pygzip => "pygzip",
        Compression::Pybzip2 => "pybzip2",
        Compression::Pigz => "pigz",
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
        Compression::Lz4 => "lz4",
        Compression::Snappy => "snappy",
        Compression::Custom => "custom",
    }
}

/// The level range and the `low`/`medium`/`high` mapping of Barman's compressor classes.
struct Levels {
    min: i64,
    max: i64,
    low: i64,
    medium: i64,
    high: i64,
}

fn levels(algorithm: Compression) -> Option<Levels> {
    let l = |min, max, low, medium, high| Some(Levels { min, max, low, medium, high });
    match algorithm {
        Compression::Gzip | Compression::Pygzip | Compression::Pigz => l(1, 9, 1, 6, 9),
        Compression::Bzip2 | Compression::Pybzip2 => l(1, 9, 1, 5, 9),
        Compression::Xz => l(1, 9, 1, 3, 5),
        Compression::Zstd => l(-22, 22, 1, 4, 9),
        Compression::Lz4 => l(0, 16, 0, 6, 10),
        Compression::Snappy | Compression::Custom => None,
    }
}

/// The numeric level `algorithm` compresses at, as Barman's `Compressor.__init__` resolves
/// `compression_level`: a number is clamped to the algorithm's range, `low`/`high` map to the
/// algorithm's values, anything else (unset, `medium`) to its medium. `None` for algorithms
/// without levels (custom, snappy), where a word means nothing.
pub fn resolve_level(algorithm: Compression, level: Option<CompressionLevel>) -> Option<i64> {
    let Some(range) = levels(algorithm) else {
        return match level {
            Some(CompressionLevel::Level(n)) => Some(n),
            _ => None,
        };
    };
    Some(match level {
        Some(CompressionLevel::Level(n)) => n.clamp(range.min, range.max),
        Some(CompressionLevel::Low) => range.low,
        Some(CompressionLevel::High) => range.high,
        Some(CompressionLevel::Medium) | None => range.medium,
    })
}

/// Why compressing or decompressing cannot be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionError {
    /// An algorithm Barman knows that barman-rs cannot read or write (xz, snappy).
    #[error("compression '{0}' is not supported by barman-rs (supported: gzip, pygzip, pigz, bzip2, pybzip2, zstd, lz4, custom)")]
    Unsupported(Compression),
    /// `compression = custom` without the filter it needs.
    #[error("compression = custom requires '{0}' to be set")]
    MissingFilter(&'static str),
    /// `custom_compression_magic` is not `0x` followed by an even number of hex digits.
    #[error("custom_compression_magic {0:?} is not 0x followed by pairs of hex digits")]
    BadCustomMagic(String),
    /// The shell running a custom filter could not be started.
    #[error("cannot start custom filter `{command}`")]
    Spawn {
        /// The filter.
        command: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A custom filter exited unsuccessfully.
    #[error("custom filter `{command}` failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    FilterFailed {
        /// The filter.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// Reading or writing the stream failed (a corrupt compressed stream shows up here).
    #[error("{algorithm} stream")]
    Io {
        /// The algorithm.
        algorithm: Compression,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The custom filter settings (`custom_compression_filter`, `custom_decompression_filter`,
/// `custom_compression_magic`) and `path_prefix`, which Barman puts before `PATH` for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomFilters {
    /// Compresses stdin to stdout.
    pub compress: Option<String>,
    /// Decompresses stdin to stdout.
    pub decompress: Option<String>,
    /// The magic bytes of the custom format, already decoded from `0x…`.
    pub magic: Option<Vec<u8>>,
    /// Prepended to `PATH` when running the filters.
    pub path_prefix: Option<String>,
}

/// Parses `custom_compression_magic` (`0x` and hex pairs, as Barman's
/// `binascii.unhexlify(value[2:])`).
pub fn parse_custom_magic(text: &str) -> Result<Vec<u8>, CompressionError> {
    let bad = || CompressionError::BadCustomMagic(text.to_owned());
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .ok_or_else(bad)?;
    if hex.is_empty() || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

/// A server's WAL compression settings, resolved: what new WAL is compressed with, and how
/// to read any algorithm back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalCompression {
    /// `compression`; `None` stores WAL as it is.
    pub algorithm: Option<Compression>,
    /// `compression_level`, unresolved (see [`resolve_level`]).
    pub level: Option<CompressionLevel>,
    /// The custom filters.
    pub custom: CustomFilters,
}

impl WalCompression {
    /// No compression: WAL is stored as received.
    pub fn none() -> Self {
        WalCompression::default()
    }

    /// Compress with `algorithm` at its default level.
    pub fn with(algorithm: Compression) -> Self {
        WalCompression { algorithm: Some(algorithm), ..WalCompression::default() }
    }

    /// Reads the settings of `cfg`, checking what Barman checks when it builds the compressor:
    /// a custom compression needs both filters, a custom magic must be hex, and the algorithm
    /// must be one barman-rs implements.
    pub fn from_config(cfg: &ServerConfig) -> Result<Self, CompressionError> {
        let magic = cfg.custom_compression_magic.as_deref().map(parse_custom_magic).transpose()?;
        let settings = WalCompression {
            algorithm: cfg.compression,
            level: cfg.compression_level,
            custom: CustomFilters {
                compress: cfg.custom_compression_filter.clone(),
                decompress: cfg.custom_decompression_filter.clone(),
                magic,
                path_prefix: cfg.path_prefix.clone(),
            },
        };
        if let Some(algorithm) = settings.algorithm {
            settings.check_writable(algorithm)?;
        }
        Ok(settings)
    }

    /// The configured custom magic, if any.
    pub fn custom_magic(&self) -> Option<&[u8]> {
        self.custom.magic.as_deref()
    }

    /// How many leading bytes [`identify`](Self::identify) looks at.
    pub fn magic_len(&self) -> usize {
        BUILTIN_MAGIC_MAX_LEN.max(self.custom_magic().map_or(0, <[u8]>::len))
    }

    /// [`identify`] with this server's custom magic. This is how Barman's archiver looks at
    /// files arriving in `incoming/`: an unrecognised file counts as uncompressed.
    pub fn identify(&self, start: &[u8]) -> Option<Compression> {
        identify(start, self.custom_magic())
    }

    /// How Barman identifies a file already in the archive (`get_wal_file_info`): as
    /// [`identify`](Self::identify), except that with `compression = custom` and no custom
    /// magic every unrecognised file is taken to be custom-compressed.
    pub fn identify_archived(&self, start: &[u8]) -> Option<Compression> {
        self.identify(start).or(
            (self.algorithm == Some(Compression::Custom) && self.custom_magic().is_none())
                .then_some(Compression::Custom),
        )
    }

    fn check_writable(&self, algorithm: Compression) -> Result<(), CompressionError> {
        match algorithm {
            Compression::Xz | Compression::Snappy => Err(CompressionError::Unsupported(algorithm)),
            Compression::Custom if self.custom.compress.is_none() => {
                Err(CompressionError::MissingFilter("custom_compression_filter"))
            }
            Compression::Custom if self.custom.decompress.is_none() => {
                Err(CompressionError::MissingFilter("custom_decompression_filter"))
            }
            _ => Ok(()),
        }
    }

    /// An encoder compressing into `out` with `algorithm` (`None`: bytes pass through) at this
    /// server's level. `file_name` goes into the gzip header.
    pub fn encoder<W: Write + Send + 'static>(
        &self,
        algorithm: Option<Compression>,
        file_name: &str,
        mtime: u32,
        out: W,
    ) -> Result<Encoder<W>, CompressionError> {
        let Some(algorithm) = algorithm else {
            return Ok(Encoder { algorithm: None, inner: Inner::Plain(out) });
        };
        self.check_writable(algorithm)?;
        let level = resolve_level(algorithm, self.level);
        let inner = match algorithm {
            Compression::Gzip | Compression::Pygzip | Compression::Pigz => {
                let level = level.unwrap_or(6).clamp(1, 9) as u32;
                Inner::Gzip(
                    flate2::GzBuilder::new()
                        .filename(file_name.as_bytes())
                        .mtime(mtime)
                        .operating_system(255)
                        .write(out, flate2::Compression::new(level)),
                )
            }
            Compression::Bzip2 | Compression::Pybzip2 => {
                let level = level.unwrap_or(5).clamp(1, 9) as u32;
                Inner::Bzip2(bzip2::write::BzEncoder::new(out, bzip2::Compression::new(level)))
            }
            Compression::Zstd => {
                let level = level.unwrap_or(4).clamp(-22, 22) as i32;
                let encoder = zstd::stream::write::Encoder::new(out, level)
                    .map_err(|source| CompressionError::Io { algorithm, source })?;
                Inner::Zstd(encoder)
            }
            Compression::Lz4 => Inner::Lz4(lz4_flex::frame::FrameEncoder::new(out)),
            Compression::Custom => {
                let command = self.custom.compress.as_deref().ok_or(CompressionError::MissingFilter("custom_compression_filter"))?;
                Inner::Filter(FilterWriter::spawn(command, self.custom.path_prefix.as_deref(), out)?)
            }
            Compression::Xz | Compression::Snappy => unreachable!("refused by check_writable"),
        };
        Ok(Encoder { algorithm: Some(algorithm), inner })
    }

    /// A reader of the bytes that `algorithm` compressed into `input` (`None`: read as is).
    /// Several concatenated gzip members, bzip2 streams or zstd frames are read as one, as
    /// Python's readers do.
    pub fn decoder<R: Read + Send + 'static>(
        &self,
        algorithm: Option<Compression>,
        input: R,
    ) -> Result<Box<dyn Read + Send>, CompressionError> {
        let Some(algorithm) = algorithm else {
            return Ok(Box::new(input));
        };
        Ok(match algorithm {
            Compression::Gzip | Compression::Pygzip | Compression::Pigz => {
                Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(input)))
            }
            Compression::Bzip2 | Compression::Pybzip2 => {
                Box::new(bzip2::read::MultiBzDecoder::new(BufReader::new(input)))
            }
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(input)
                    .map_err(|source| CompressionError::Io { algorithm, source })?,
            ),
            Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(BufReader::new(input))),
            Compression::Custom => {
                let command = self
                    .custom
                    .decompress
                    .as_deref()
                    .ok_or(CompressionError::MissingFilter("custom_decompression_filter"))?;
                Box::new(FilterReader::spawn(command, self.custom.path_prefix.as_deref(), input)?)
            }
            Compression::Xz | Compression::Snappy => return Err(CompressionError::Unsupported(algorithm)),
        })
    }
}

enum Inner<W: Write + Send + 'static> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
    Filter(FilterWriter<W>),
}

/// Compresses what is written to it into the inner writer; [`finish`](Encoder::finish) ends
/// the stream and returns the inner writer. Dropping it unfinished abandons the stream (and
/// stops a custom filter).
pub struct Encoder<W: Write + Send + 'static> {
    algorithm: Option<Compression>,
    inner: Inner<W>,
}

impl<W: Write + Send + 'static> fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl<W: Write + Send + 'static> Encoder<W> {
    /// The algorithm applied (`None`: stored as is).
    pub fn algorithm(&self) -> Option<Compression> {
        self.algorithm
    }

    /// Writes the end of the compressed stream and returns the inner writer (not flushed:
    /// committing it is the caller's business).
    pub fn finish(self) -> Result<W, CompressionError> {
        let io = |source| CompressionError::Io {
            algorithm: self.algorithm.unwrap_or(Compression::Gzip),
            source,
        };
        match self.inner {
            Inner::Plain(w) => Ok(w),
            Inner::Gzip(e) => e.finish().map_err(io),
            Inner::Bzip2(e) => e.finish().map_err(io),
            Inner::Zstd(e) => e.finish().map_err(io),
            Inner::Lz4(e) => e.finish().map_err(|e| io(io::Error::other(e))),
            Inner::Filter(f) => f.finish(),
        }
    }
}

impl<W: Write + Send + 'static> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(w) => w.write(buf),
            Inner::Gzip(e) => e.write(buf),
            Inner::Bzip2(e) => e.write(buf),
            Inner::Zstd(e) => e.write(buf),
            Inner::Lz4(e) => e.write(buf),
            Inner::Filter(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.flush(),
            Inner::Gzip(e) => e.flush(),
            Inner::Bzip2(e) => e.flush(),
            Inner::Zstd(e) => e.flush(),
            Inner::Lz4(e) => e.flush(),
            Inner::Filter(f) => f.flush(),
        }
    }
}

#[cfg(test)]
mod tests;
