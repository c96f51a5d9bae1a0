//! Which files one archiver pass takes, in which order, and what it leaves behind — Barman's
//! `FileWalArchiver.get_next_batch` and `StreamingWalArchiver.get_next_batch`
//! (`barman/wal_archiver.py`), as a pure function of a directory listing.
//!
//! Both archivers list their directory the way Python's `glob("*")` does (hidden names are not
//! seen), sort the names, and cut the list to the batch size **before** looking at them, so
//! skipped and unknown files count against the batch. Within the cut:
//!
//! * names ending in `.tmp` are ignored (a writer is still busy with them);
//! * incoming/: a WAL name (segment, `.partial`, `.backup`, `.history`) that is a regular
//!   file is archived; anything else is unknown and goes to `errors/`;
//! * streaming/: a name that vanished meanwhile is ignored; anything that is not a regular
//!   file, or not a WAL name, is unknown; `.partial` files are held back. Then, so that the
//!   WAL receiver can resume: of several `.partial` files all but the newest are archived
//!   (after the complete files, as `.partial`), and with no `.partial` the newest archivable
//!   file stays.

use std::ffi::{OsStr, OsString};

use crate::wal::WalFileName;

use super::WalSource;

/// What a name in the directory is, as far as the planner cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (symlinks followed, as Python's `os.path.isfile`).
    File,
    /// A directory, socket, broken symlink…
    NotAFile,
    /// Gone since the listing.
    Vanished,
}

/// The files of one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Entries in the directory (hidden names excepted), before the batch cut: Barman's
    /// `total_size`.
    pub total: usize,
    /// What to archive, in order.
    pub files: Vec<(OsString, WalFileName)>,
    /// Not WAL (or not regular files): moved to `errors/` as `unknown`.
    pub unknown: Vec<OsString>,
    /// Left for the WAL receiver to resume from (streaming/ only).
    pub left_behind: Vec<OsString>,
}

impl Batch {
    /// The number of files archived in this pass: Barman's `run_size`.
    pub fn run_size(&self) -> usize {
        self.files.len()
    }

    /// The batch size Barman prints in the header — `Some(run_size)` when files remain for a
    /// later pass, which also happens because of what is left behind or was unknown.
    pub fn shown_batch_size(&self) -> Option<usize> {
        (self.run_size() > 0 && self.total > self.run_size()).then_some(self.run_size())
    }
}

/// Whether Python's `glob("*")` lists the name (it skips names starting with a dot).
pub fn visible(name: &OsStr) -> bool {
    !name.as_encoded_bytes().starts_with(b".")
}

fn wal_name(name: &OsStr) -> Option<WalFileName> {
    name.to_str()?.parse().ok()
}

/// Plans one pass over `names` (the directory listing, any order; hidden names are dropped
/// here). `batch_size` 0 means unlimited. `kind` is asked only about the names in the cut.
pub fn plan(
    source: WalSource,
    names: &[OsString],
    batch_size: usize,
    mut kind: impl FnMut(&OsStr) -> EntryKind,
) -> Batch {
    let mut names: Vec<&OsString> = names.iter().filter(|n| visible(n)).collect();
    names.sort();
    let total = names.len();
    if batch_size > 0 {
        names.truncate(batch_size);
    }
    let mut batch = Batch { total, ..Batch::default() };
    let mut partials = Vec::new();
    for name in names {
        if name.as_encoded_bytes().ends_with(b".tmp") {
            continue;
        }
        let parsed = wal_name(name);
        match source {
            WalSource::FileArchival => match (parsed, kind(name)) {
                (Some(wal), EntryKind::File) => batch.files.push((name.clone(), wal)),
                _ => batch.unknown.push(name.clone()),
            },
            WalSource::Streaming => match (kind(name), parsed) {
                (EntryKind::Vanished, _) => {}
                (EntryKind::NotAFile, _) | (EntryKind::File, None) => batch.unknown.push(name.clone()),
                (EntryKind::File, Some(wal @ WalFileName::Partial(_))) => partials.push((name.clone(), wal)),
                (EntryKind::File, Some(wal)) => batch.files.push((name.clone(), wal)),
            },
        }
    }
    if source == WalSource::Streaming {
        match partials.pop() {
            Some(newest) => {
                batch.files.extend(partials);
                batch.left_behind.push(newest.0);
            }
            None => {
                if let Some(newest) = batch.files.pop() {
                    batch.left_behind.push(newest.0);
                }
            }
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn all_files(_: &OsStr) -> EntryKind {
        EntryKind::File
    }

    fn shown(v: &[(OsString, WalFileName)]) -> Vec<String> {
        v.iter().map(|(n, _)| n.to_string_lossy().into_owned()).collect()
    }

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|n| n.to_string_lossy().into_owned()).collect()
    }

    const S1: &str = "000000010000000000000001";
    const S2: &str = "000000010000000000000002";
    const S3: &str = "000000010000000000000003";
    const S4: &str = "000000010000000000000004";

    #[test]
    fn incoming_is_sorted_skips_tmp_and_hidden_and_rejects_unknown() {
        let listing = names(&[
            S3,
            "garbage.txt",
            S1,
            "000000010000000000000002.tmp",
            ".000000010000000000000002.123.0.tmp",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000004.partial",
        ]);
        let b = plan(WalSource::FileArchival, &listing, 0, all_files);
        assert_eq!(
            shown(&b.files),
            [S1, "000000010000000000000002.00000028.backup", S3, "000000010000000000000004.partial", "00000002.history"]
        );
        assert_eq!(strs(&b.unknown), ["garbage.txt"]);
        assert!(b.left_behind.is_empty());
        // The hidden temporary is not listed at all; the visible .tmp counts.
        assert_eq!(b.total, 7);
        assert_eq!(b.shown_batch_size(), Some(5), "garbage and .tmp remain: Barman prints a batch size");
    }

    #[test]
    fn incoming_batch_cut_happens_before_classification() {
        let listing = names(&[S1, S2, S3, S4, "aaa-not-wal"]);
        let b = plan(WalSource::FileArchival, &listing, 2, all_files);
        assert_eq!(shown(&b.files), [S1, S2]);
        assert_eq!(b.total, 5);
        assert_eq!(b.shown_batch_size(), Some(2));
        let b = plan(WalSource::FileArchival, &listing, 0, all_files);
        assert_eq!(b.run_size(), 4);
        assert_eq!(strs(&b.unknown), ["aaa-not-wal"], "sorts after the digits");
        let clean = plan(WalSource::FileArchival, &names(&[S1, S2]), 0, all_files);
        assert_eq!(clean.shown_batch_size(), None, "everything taken: no batch size shown");
        let empty = plan(WalSource::FileArchival, &[], 5, all_files);
        assert_eq!(empty.shown_batch_size(), None);
    }

    #[test]
    fn incoming_wal_name_that_is_a_directory_is_unknown() {
        let listing = names(&[S1, S2]);
        let b = plan(WalSource::FileArchival, &listing, 0, |n| if n == S2 { EntryKind::NotAFile } else { EntryKind::File });
        assert_eq!(shown(&b.files), [S1]);
        assert_eq!(strs(&b.unknown), [S2]);
    }

    #[test]
    fn streaming_keeps_the_newest_partial() {
        let listing = names(&[S1, S2, "000000010000000000000003.partial"]);
        let b = plan(WalSource::Streaming, &listing, 0, all_files);
        assert_eq!(shown(&b.files), [S1, S2]);
        assert_eq!(strs(&b.left_behind), ["000000010000000000000003.partial"]);
        assert_eq!(b.shown_batch_size(), Some(2), "the kept .partial makes Barman print a batch size");
    }

    #[test]
    fn streaming_archives_older_partials_after_the_complete_files() {
        let listing = names(&[
            "000000010000000000000003.partial",
            S1,
            "000000020000000000000003.partial",
            "00000002.history",
            "000000020000000000000004",
        ]);
        let b = plan(WalSource::Streaming, &listing, 0, all_files);
        assert_eq!(
            shown(&b.files),
            [S1, "00000002.history", "000000020000000000000004", "000000010000000000000003.partial"]
        );
        assert_eq!(strs(&b.left_behind), ["000000020000000000000003.partial"]);
    }

    #[test]
    fn streaming_without_partial_keeps_the_newest_complete_file() {
        let b = plan(WalSource::Streaming, &names(&[S2, S1, S3]), 0, all_files);
        assert_eq!(shown(&b.files), [S1, S2]);
        assert_eq!(strs(&b.left_behind), [S3]);
        let one = plan(WalSource::Streaming, &names(&[S1]), 0, all_files);
        assert!(one.files.is_empty());
        assert_eq!(strs(&one.left_behind), [S1]);
        assert_eq!(one.shown_batch_size(), None);
    }

    #[test]
    fn streaming_batch_applies_the_rules_within_the_cut() {
        // Barman cuts first: the .partial beyond the cut is not seen, so the newest file of the
        // cut stays behind.
        let listing = names(&[S1, S2, S3, "000000010000000000000004.partial"]);
        let b = plan(WalSource::Streaming, &listing, 2, all_files);
        assert_eq!(shown(&b.files), [S1]);
        assert_eq!(strs(&b.left_behind), [S2]);
        assert_eq!(b.shown_batch_size(), Some(1));
    }

    #[test]
    fn streaming_unknowns_and_vanished_files() {
        let listing = names(&[S1, "junk", S2, S3, "000000010000000000000004.partial"]);
        let b = plan(WalSource::Streaming, &listing, 0, |n| {
            if n == S2 {
                EntryKind::Vanished
            } else if n == S3 {
                EntryKind::NotAFile
            } else {
                EntryKind::File
            }
        });
        assert_eq!(shown(&b.files), [S1]);
        assert_eq!(strs(&b.unknown), [S3, "junk"]);
        assert_eq!(strs(&b.left_behind), ["000000010000000000000004.partial"]);
    }

    #[test]
    fn non_utf8_names_are_unknown() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![0x30, 0xff]);
        let b = plan(WalSource::FileArchival, std::slice::from_ref(&odd), 0, all_files);
        assert_eq!(b.unknown, [odd]);
    }
}
