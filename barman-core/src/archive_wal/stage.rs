//! Step 3 of a file's way into the archive ([module documentation](super)): reading,
//! checking and compressing it into a temporary file in `wals/` — the CPU-bound part, which
//! touches nothing shared (no xlog.db, no `errors/`, no output), so several files can be
//! staged at once while they are committed one by one, in WAL order.
//!
//! * [`Stager::prepare`] takes one file as far as a staged temporary file (or a verdict:
//!   refused, vanished, already archived).
//! * [`in_order`] runs `prepare` on worker threads, a bounded number of files ahead, and
//!   hands the results to the caller in the batch's order. Durability is untouched by it:
//!   the caller still commits each staged file (fsync, rename, directory fsync) and appends
//!   its xlog.db line before it looks at the next result.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::SystemTime;

use barman_replication::SystemId;

use crate::catalog::ServerCatalog;
use crate::compression::{Compression, CompressionError};
use crate::storage::{self, create_dir_all_durable, AtomicFile, StorageError, StorageOp, DIR_MODE, FILE_MODE};
use crate::wal::validator::LeadingBytes;
use crate::wal::WalFileName;

use super::check::{Checked, ContentCheck, Refusal};
use super::{epoch_seconds, read_prefix, set_mtime, storage_cause, unwrap_storage, ArchiveError, ArchiverSettings, SourceReader, WalSource};

/// Read size while checking and compressing.
const CHUNK: usize = 256 * 1024;

/// What [`Stager::prepare`] found out about one file.
pub(super) enum Prepared {
    /// It disappeared before it could be read.
    Vanished,
    /// Its name is already archived at `dst`; the committer compares the contents.
    Duplicate {
        /// How it arrived (incoming/ may hold compressed files).
        arrived_as: Option<Compression>,
        /// The archived file.
        dst: PathBuf,
    },
    /// Read, checked and (if it passed) written to a temporary file next to `dst`.
    Staged {
        /// The verdict and, if it passed, the temporary file (flushed, with the source's
        /// mtime, not yet fsynced).
        staged: Staged,
        /// The source's mtime.
        mtime: SystemTime,
        /// Where it goes.
        dst: PathBuf,
    },
}

/// A file read and checked.
pub(super) enum Staged {
    /// It passed: `file` holds what goes into the archive.
    Ready {
        /// The temporary file.
        file: AtomicFile,
        /// Its size (the xlog.db size column).
        size: u64,
        /// How it is stored.
        compression: Option<Compression>,
        /// What the check found (boxed: it holds the segment's carry).
        checked: Box<Checked>,
        /// For a segment: its start, to check the record it finishes once the committer knows
        /// the previous segment of the batch.
        leading: Option<LeadingBytes>,
    },
    /// It failed the check.
    Refused(Refusal),
}

/// Stages files for one server; shared by the worker threads.
pub(super) struct Stager<'a> {
    pub(super) catalog: &'a ServerCatalog,
    pub(super) settings: &'a ArchiverSettings,
    /// From identity.json, when known.
    pub(super) system_id: Option<SystemId>,
    /// Held while creating a `wals/<TLI+LOG>/` directory, so that a second thread never
    /// stages into a directory whose creation is not yet durable.
    pub(super) mkdir: Mutex<()>,
}

impl Stager<'_> {
    /// Takes `src` (named `wal`, found in `source`'s directory) as far as a staged temporary
    /// file, as the first half of Barman's `archive_wal`.
    pub(super) fn prepare(&self, source: WalSource, src: &Path, wal: WalFileName) -> Result<Prepared, ArchiveError> {
        let meta = match std::fs::metadata(src) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Prepared::Vanished),
            Err(e) => return Err(StorageError::io(StorageOp::Metadata, src, e).into()),
        };
        let mtime = meta.modified().map_err(|e| StorageError::io(StorageOp::Metadata, src, e))?;
        // The streaming archiver knows pg_receivewal's files are plain; incoming/ may hold
        // files compressed by the archive_command (Barman's from_file(compression=...)).
        let arrived_as = match source {
            WalSource::Streaming => None,
            WalSource::FileArchival => self.settings.compression.identify(&read_prefix(src, self.settings.compression.magic_len())?),
        };
        let dst = self.catalog.wal_path(&wal);
        if storage::fs::exists(&dst)? {
            return Ok(Prepared::Duplicate { arrived_as, dst });
        }
        {
            let _creating = self.mkdir.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            create_dir_all_durable(&self.catalog.wal_dir(&wal), DIR_MODE)?;
        }
        let staged = match arrived_as {
            None => self.check_and_compress(src, wal, &dst, meta.len(), mtime)?,
            Some(c) => self.check_and_copy(src, wal, &dst, c)?,
        };
        let staged = match staged {
            Staged::Ready { mut file, size, compression, checked, leading } => {
                // The buffered tail must reach the file before its mtime is set, or writing
                // it later (at commit) would stamp the archival time instead of the source's.
                file.flush().map_err(unwrap_storage)?;
                set_mtime(file.temp_path(), mtime)?;
                Staged::Ready { file, size, compression, checked, leading }
            }
            refused => refused,
        };
        Ok(Prepared::Staged { staged, mtime, dst })
    }

    fn content_check(&self, wal: WalFileName, length: Option<u64>) -> ContentCheck {
        ContentCheck::new(wal, self.system_id, self.settings.segment_size, length)
    }

    /// Where a segment's start is kept (`.partial`, `.history` and `.backup` files continue no
    /// record of the batch).
    fn leading(wal: WalFileName) -> Option<LeadingBytes> {
        matches!(wal, WalFileName::Segment(_)).then(LeadingBytes::default)
    }

    /// A plain source: one read feeds the check and the compressor.
    fn check_and_compress(&self, src: &Path, wal: WalFileName, dst: &Path, length: u64, mtime: SystemTime) -> Result<Staged, ArchiveError> {
        let algorithm = self.settings.compression.algorithm;
        let file = AtomicFile::create(dst, FILE_MODE)?;
        let mtime32 = u32::try_from(epoch_seconds(mtime) as u64).unwrap_or(0);
        let compression_err = |source| ArchiveError::Compression { path: dst.to_path_buf(), source };
        let mut encoder = self
            .settings
            .compression
            .encoder(algorithm, &wal.to_string(), mtime32, Counting { inner: file, bytes: 0 })
            .map_err(compression_err)?;
        let mut check = self.content_check(wal, Some(length));
        let mut leading = Self::leading(wal);
        let mut input = SourceReader::open(src)?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = input.read(&mut buf).map_err(unwrap_storage)?;
            if n == 0 {
                break;
            }
            check.feed(&buf[..n]);
            if let Some(leading) = &mut leading {
                leading.feed(&buf[..n]);
            }
            if check.failed() {
                break;
            }
            if let Err(e) = encoder.write_all(&buf[..n]) {
                return Err(match storage_cause(e) {
                    Ok(storage) => storage.into(),
                    // A custom filter that died: its exit status says why.
                    Err(e) => match encoder.finish() {
                        Err(source) => compression_err(source),
                        Ok(_) => compression_err(CompressionError::Io { algorithm: algorithm.unwrap_or(Compression::Custom), source: e }),
                    },
                });
            }
        }
        let checked = match check.finish() {
            Ok(c) => c,
            Err(refusal) => return Ok(Staged::Refused(refusal)),
        };
        let counting = encoder.finish().map_err(|e| match e {
            CompressionError::Io { source, algorithm } => match storage_cause(source) {
                Ok(storage) => storage.into(),
                Err(source) => compression_err(CompressionError::Io { algorithm, source }),
            },
            other => compression_err(other),
        })?;
        Ok(Staged::Ready { size: counting.bytes, file: counting.inner, compression: algorithm, checked: Box::new(checked), leading })
    }

    /// A source that arrived compressed: checked through a decompressor, then stored as is.
    fn check_and_copy(&self, src: &Path, wal: WalFileName, dst: &Path, algorithm: Compression) -> Result<Staged, ArchiveError> {
        let mut check = self.content_check(wal, None);
        let mut leading = Self::leading(wal);
        let mut decoded = self
            .settings
            .compression
            .decoder(Some(algorithm), SourceReader::open(src)?)
            .map_err(|source| ArchiveError::Compression { path: src.to_path_buf(), source })?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match decoded.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    check.feed(&buf[..n]);
                    if let Some(leading) = &mut leading {
                        leading.feed(&buf[..n]);
                    }
                    if check.failed() {
                        break;
                    }
                }
                Err(e) => match storage_cause(e) {
                    Ok(storage) => return Err(storage.into()),
                    Err(e) => return Ok(Staged::Refused(Refusal::Corrupt(format!("cannot decompress ({algorithm}): {e}")))),
                },
            }
        }
        drop(decoded);
        let checked = match check.finish() {
            Ok(c) => c,
            Err(refusal) => return Ok(Staged::Refused(refusal)),
        };
        let mut out = Counting { inner: AtomicFile::create(dst, FILE_MODE)?, bytes: 0 };
        let mut input = SourceReader::open(src)?;
        io::copy(&mut input, &mut out).map_err(unwrap_storage)?;
        Ok(Staged::Ready { size: out.bytes, file: out.inner, compression: Some(algorithm), checked: Box::new(checked), leading })
    }
}

/// Counts the bytes that reach the inner writer: the size on disk of what was compressed.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How many files may wait staged, per worker, for their turn to be committed: enough that a
/// worker never idles behind a slow commit, few enough that temporary files (each an open
/// descriptor and up to a segment on disk) stay a handful.
const AHEAD_PER_WORKER: usize = 2;

/// Runs `prepare` over `items` on `workers` threads and gives each result to `commit` in
/// `items`' order, the `i`-th only once `commit` has returned for all before it. At most
/// `workers × 2` results exist at once. The first error from `commit` stops the run: nothing
/// more is started and results not yet committed are dropped (a staged [`AtomicFile`] then
/// removes its temporary file). With one worker or one item, everything runs on the calling
/// thread, one item after the other.
pub(super) fn in_order<T, P, E>(
    workers: usize,
    items: &[T],
    prepare: impl Fn(&T) -> P + Sync,
    mut commit: impl FnMut(usize, P) -> Result<(), E>,
) -> Result<(), E>
where
    T: Sync,
    P: Send,
{
    if workers <= 1 || items.len() <= 1 {
        for (i, item) in items.iter().enumerate() {
            commit(i, prepare(item))?;
        }
        return Ok(());
    }
    let window = workers * AHEAD_PER_WORKER;
    let stop = AtomicBool::new(false);
    let (jobs, queue) = mpsc::sync_channel::<(usize, mpsc::SyncSender<P>)>(window);
    let queue = Mutex::new(queue);
    std::thread::scope(|scope| {
        for _ in 0..workers.min(items.len()) {
            scope.spawn(|| loop {
                // The lock is held only to take a job, not while preparing it.
                let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((i, reply)) = job else { break };
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                // The committer may have stopped meanwhile: the result is then dropped.
                let _ = reply.send(prepare(&items[i]));
            });
        }
        // Every job sent is in `pending` until committed, so the queue never holds more than
        // `window` and sending never blocks.
        let mut pending: VecDeque<(usize, mpsc::Receiver<P>)> = VecDeque::with_capacity(window);
        let mut next = 0;
        let result = loop {
            while pending.len() < window && next < items.len() {
                let (reply, result) = mpsc::sync_channel(1);
                jobs.send((next, reply)).expect("workers run until the queue closes");
                pending.push_back((next, result));
                next += 1;
            }
            let Some((i, result)) = pending.pop_front() else { break Ok(()) };
            let prepared = result.recv().expect("a worker panicked while preparing a file");
            if let Err(e) = commit(i, prepared) {
                break Err(e);
            }
        };
        stop.store(true, Ordering::Relaxed);
        drop(jobs);
        drop(pending);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn results_come_in_order_whatever_order_they_are_ready_in() {
        let items: Vec<u64> = (0..40).collect();
        for workers in [1, 2, 3, 8] {
            let mut seen = Vec::new();
            // Early items take longest, so later ones are ready first.
            let prepare = |&n: &u64| {
                std::thread::sleep(Duration::from_micros((40 - n) * 50));
                n * 10
            };
            in_order(workers, &items, prepare, |i, p| {
                assert_eq!(p, items[i] * 10);
                seen.push(i);
                Ok::<(), ()>(())
            })
            .expect("no error");
            assert_eq!(seen, (0..40).collect::<Vec<_>>(), "{workers} workers");
        }
    }

    #[test]
    fn at_most_a_bounded_number_of_results_exist_at_once() {
        let live = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let items: Vec<u32> = (0..50).collect();
        in_order(
            3,
            &items,
            |_| {
                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                Counted(&live)
            },
            |_, counted| {
                // A slow committer: the workers must wait for it rather than run ahead.
                std::thread::sleep(Duration::from_micros(200));
                drop(counted);
                Ok::<(), ()>(())
            },
        )
        .expect("no error");
        assert!(peak.load(Ordering::SeqCst) <= 3 * AHEAD_PER_WORKER + 1, "peak {}", peak.load(Ordering::SeqCst));
        assert_eq!(live.load(Ordering::SeqCst), 0, "every result dropped");
    }

    #[test]
    fn an_error_stops_the_run_and_drops_what_was_prepared_ahead() {
        let prepared = AtomicUsize::new(0);
        let dropped = AtomicUsize::new(0);
        struct Tracked<'a>(&'a AtomicUsize);
        impl Drop for Tracked<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let items: Vec<u32> = (0..100).collect();
        let mut committed = Vec::new();
        let result = in_order(
            2,
            &items,
            |_| {
                prepared.fetch_add(1, Ordering::SeqCst);
                Tracked(&dropped)
            },
            |i, _tracked| {
                if i == 5 {
                    return Err(i);
                }
                committed.push(i);
                Ok(())
            },
        );
        assert_eq!(result, Err(5));
        assert_eq!(committed, [0, 1, 2, 3, 4]);
        let prepared = prepared.load(Ordering::SeqCst);
        assert!(prepared <= 6 + 2 * AHEAD_PER_WORKER, "stopped preparing soon after the error: {prepared}");
        assert_eq!(dropped.load(Ordering::SeqCst), prepared, "every prepared result was dropped");
    }
}
