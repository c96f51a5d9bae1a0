//! A sans-I/O reader of the tar streams PostgreSQL sends in BASE_BACKUP (reference §3.3).
//!
//! The server writes plain ustar: 512-byte headers, octal numbers (base-256 for files of
//! 8 GiB and more), names of at most 99 bytes (no GNU or PAX long names), data padded to 512
//! bytes, directories and symlinks with size 0, and two zero blocks at the end. [`TarStream`]
//! takes the bytes in chunks of any size and yields [`TarEvent`]s, holding at most one header
//! block: file data passes through as slices of the caller's chunk, so memory stays flat
//! whatever the file sizes.
//!
//! A leading `./` is dropped (PostgreSQL writes `./pg_wal/archive_status` that way).
//! Everything is checked: the header checksum, the numeric fields, the entry type (regular,
//! directory, symlink; anything else is refused), and names are handed out as received for
//! the caller to check with `storage::safe_join` before they touch a filesystem.

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes.
    File {
        /// Its length.
        size: u64,
    },
    /// A directory.
    Directory,
    /// A symbolic link (PostgreSQL only sends these for `pg_tblspc/<oid>`).
    Symlink {
        /// The link target.
        target: String,
    },
}

/// One header, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The path inside the archive, without a trailing `/`.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
    /// What it is.
    pub kind: EntryKind,
}

/// What the stream produced.
#[derive(Debug, PartialEq, Eq)]
pub enum TarEvent<'a> {
    /// A new entry starts; for files, [`TarEvent::Data`] follows until its size is reached.
    Entry(TarEntry),
    /// File content (a slice of the chunk fed).
    Data(&'a [u8]),
    /// The end-of-archive blocks: nothing more may follow.
    End,
}

/// The stream is not a tar archive PostgreSQL would send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// The header checksum does not match.
    #[error("tar header at offset {offset}: checksum mismatch")]
    Checksum {
        /// Byte offset of the header in the stream.
        offset: u64,
    },
    /// A field is malformed.
    #[error("tar header at offset {offset}: {what}")]
    Header {
        /// Byte offset of the header in the stream.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The entry type is not one PostgreSQL sends.
    #[error("tar entry {path:?}: unsupported type {typeflag:?}")]
    Type {
        /// The entry.
        path: String,
        /// Its type flag.
        typeflag: char,
    },
    /// Bytes after the end-of-archive blocks.
    #[error("data after the end of the tar archive")]
    TrailingData,
    /// The stream ended inside an entry or without end-of-archive blocks.
    #[error("tar archive truncated at offset {offset}")]
    Truncated {
        /// Where it ended.
        offset: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a 512-byte header.
    Header,
    /// Passing `remaining` bytes of file data, then `padding` bytes of zeros.
    Data { remaining: u64, padding: u64 },
    /// After the first zero block: the second must follow.
    SecondZero,
    End,
}

/// The reader. Feed with [`TarStream::feed`], which calls back once per event.
#[derive(Debug)]
pub struct TarStream {
    state: State,
    header: Vec<u8>,
    offset: u64,
}

impl Default for TarStream {
    fn default() -> Self {
        Self::new()
    }
}

impl TarStream {
    /// A reader at the start of an archive.
    pub fn new() -> TarStream {
        TarStream { state: State::Header, header: Vec::with_capacity(512), offset: 0 }
    }

    /// Feeds a chunk; `on_event` sees every event it completes, in order. Stops at the first
    /// error of the stream or of the callback.
    pub fn feed<E: From<TarError>>(
        &mut self,
        mut chunk: &[u8],
        on_event: &mut dyn FnMut(TarEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while !chunk.is_empty() {
            match self.state {
                State::End => {
                    // Some writers pad the archive to a record size with more zero blocks.
                    if chunk.iter().any(|&b| b != 0) {
                        return Err(TarError::TrailingData.into());
                    }
                    self.offset += chunk.len() as u64;
                    return Ok(());
                }
                State::Header | State::SecondZero => {
                    let take = (512 - self.header.len()).min(chunk.len());
                    self.header.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.header.len() < 512 {
                        continue;
                    }
                    let block = std::mem::replace(&mut self.header, Vec::with_capacity(512));
                    let at = self.offset;
                    self.offset += 512;
                    if block.iter().all(|&b| b == 0) {
                        if self.state == State::SecondZero {
                            self.state = State::End;
                            on_event(TarEvent::End)?;
                        } else {
                            self.state = State::SecondZero;
                        }
                        continue;
                    }
                    if self.state == State::SecondZero {
                        return Err(TarError::Header { offset: at, what: "a header after an end-of-archive block".into() }.into());
                    }
                    let entry = parse_header(&block, at)?;
                    if let EntryKind::File { size } = entry.kind {
                        let padding = (512 - size % 512) % 512;
                        if size + padding > 0 {
                            self.state = State::Data { remaining: size, padding };
                        }
                    }
                    on_event(TarEvent::Entry(entry))?;
                }
                State::Data { remaining, padding } => {
                    if remaining > 0 {
                        let n = remaining.min(chunk.len() as u64) as usize;
                        let (data, rest) = chunk.split_at(n);
                        chunk = rest;
                        self.offset += n as u64;
                        self.state = State::Data { remaining: remaining - n as u64, padding };
                        on_event(TarEvent::Data(data))?;
                    } else {
                        let n = padding.min(chunk.len() as u64) as usize;
                        chunk = &chunk[n..];
                        self.offset += n as u64;
                        self.state = if padding - n as u64 == 0 { State::Header } else { State::Data { remaining: 0, padding: padding - n as u64 } };
                    }
                    if let State::Data { remaining: 0, padding: 0 } = self.state {
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that the archive ended properly.
    pub fn finish(&self) -> Result<(), TarError> {
        if self.state == State::End {
            Ok(())
        } else {
            Err(TarError::Truncated { offset: self.offset })
        }
    }
}

fn parse_header(h: &[u8], offset: u64) -> Result<TarEntry, TarError> {
    let bad = |what: String| TarError::Header { offset, what };
    let stored = parse_number(&h[148..156]).ok_or_else(|| bad("invalid checksum field".into()))?;
    let sum: u64 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
    if sum != stored {
        return Err(TarError::Checksum { offset });
    }
    let name = cstring(&h[0..100]);
    let prefix = if &h[257..262] == b"ustar" { cstring(&h[345..500]) } else { String::new() };
    let mut path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
    while path.ends_with('/') {
        path.pop();
    }
    // Some servers write `./pg_wal/archive_status` (basebackup.c names it literally).
    while let Some(rest) = path.strip_prefix("./") {
        path = rest.to_owned();
    }
    if path.is_empty() {
        return Err(bad("empty name".into()));
    }
    let mode = parse_number(&h[100..108]).ok_or_else(|| bad("invalid mode".into()))? as u32 & 0o7777;
    let size = parse_number(&h[124..136]).ok_or_else(|| bad("invalid size".into()))?;
    // The data and its padding must fit in a u64 offset (base-256 can say up to 2^64 - 1).
    if size > u64::MAX - 511 {
        return Err(bad(format!("invalid size {size}")));
    }
    let mtime = parse_number(&h[136..148]).ok_or_else(|| bad("invalid mtime".into()))?;
    let typeflag = h[156];
    let kind = match typeflag {
        b'0' | 0 | b'7' => EntryKind::File { size },
        b'5' => EntryKind::Directory,
        b'2' => EntryKind::Symlink { target: cstring(&h[157..257]) },
        other => return Err(TarError::Type { path, typeflag: char::from(other) }),
    };
    if !matches!(kind, EntryKind::File { .. }) && size != 0 {
        return Err(bad(format!("{path}: a directory or link with size {size}")));
    }
    Ok(TarEntry { path, mode, mtime, kind })
}

fn cstring(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Octal ASCII (space- or NUL-terminated, possibly space-padded) or, with the high bit of the
/// first byte set, base-256 big-endian.
fn parse_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small archive made by the `tar` crate, as PostgreSQL makes them: a directory, a
    /// file whose size is not a multiple of 512, a symlink, an empty file.
    fn sample() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o700);
        dir.set_size(0);
        b.append_data(&mut dir, "base/", &[][..]).unwrap();
        let mut f = tar::Header::new_ustar();
        f.set_mode(0o600);
        f.set_size(700);
        b.append_data(&mut f, "base/1/1259", &[7u8; 700][..]).unwrap();
        let mut l = tar::Header::new_ustar();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        b.append_link(&mut l, "pg_tblspc/16384", "/srv/ts1").unwrap();
        let mut e = tar::Header::new_ustar();
        e.set_size(0);
        b.append_data(&mut e, "empty", &[][..]).unwrap();
        b.into_inner().unwrap()
    }

    fn events(data: &[u8], chunk: usize) -> Result<Vec<String>, TarError> {
        let mut out = Vec::new();
        let mut t = TarStream::new();
        for c in data.chunks(chunk.max(1)) {
            t.feed::<TarError>(c, &mut |e| {
                out.push(match e {
                    TarEvent::Entry(e) => format!("{} {:?} {:o}", e.path, e.kind, e.mode),
                    TarEvent::Data(d) => format!("data {}", d.len()),
                    TarEvent::End => "end".into(),
                });
                Ok(())
            })?;
        }
        t.finish()?;
        // Merge consecutive data events, which depend on the chunking.
        let mut merged: Vec<String> = Vec::new();
        for e in out {
            match (merged.last_mut(), e.strip_prefix("data ")) {
                (Some(last), Some(n)) if last.starts_with("data ") => {
                    let total: usize = last[5..].parse::<usize>().unwrap() + n.parse::<usize>().unwrap();
                    *last = format!("data {total}");
                }
                _ => merged.push(e),
            }
        }
        Ok(merged)
    }

    #[test]
    fn same_events_at_any_chunking() {
        let data = sample();
        let whole = events(&data, data.len()).unwrap();
        assert_eq!(
            whole,
            vec![
                "base Directory 700",
                "base/1/1259 File { size: 700 } 600",
                "data 700",
                "pg_tblspc/16384 Symlink { target: \"/srv/ts1\" } 0",
                "empty File { size: 0 } 0",
                "end",
            ]
        );
        for chunk in [1, 7, 511, 512, 513, 4096] {
            assert_eq!(events(&data, chunk).unwrap(), whole, "chunk {chunk}");
        }
    }

    #[test]
    fn damage_is_detected() {
        let data = sample();
        let mut bad = data.clone();
        bad[0] ^= 1;
        assert!(matches!(events(&bad, 512), Err(TarError::Checksum { offset: 0 })));
        assert!(matches!(events(&data[..data.len() - 512], 512), Err(TarError::Truncated { .. })));
        let mut trailing = data.clone();
        trailing.extend_from_slice(&[1; 10]);
        assert_eq!(events(&trailing, 512), Err(TarError::TrailingData));
        let mut fifo = data.clone();
        fifo[156] = b'6';
        let sum: u64 = fifo[..512].iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
        fifo[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        assert!(matches!(events(&fifo, 512), Err(TarError::Type { typeflag: '6', .. })));
    }

    /// A base-256 size near `u64::MAX` overflowed `size + padding`: a panic with overflow checks,
    /// an empty "file" without them (found reviewing what fuzz/fuzz_targets/tar_header.rs reaches).
    #[test]
    fn size_without_room_for_padding_is_refused() {
        let mut data = sample();
        let h = &mut data[512..1024];
        h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let sum: u64 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        for chunk in [1, 512, data.len()] {
            match events(&data, chunk) {
                Err(TarError::Header { offset: 512, what }) => assert!(what.contains("size"), "{what}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"0000644 "), Some(0o644));
        assert_eq!(parse_number(b"00000001750\0"), Some(1000));
        assert_eq!(parse_number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0]), Some(2 << 16));
        assert_eq!(parse_number(b"9"), None);
    }

    mod proptests {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048), chunk in 1usize..600) {
                let mut t = TarStream::new();
                for c in data.chunks(chunk) {
                    if t.feed::<TarError>(c, &mut |_| Ok(())).is_err() { break; }
                }
            }
        }
    }
}
