//! Whether a WAL archive can take a new server's WAL (Barman's `check_archive_usable` in
//! `barman/xlog.py`, behind `barman check-wal-archive`).
//!
//! A server that starts archiving into a directory that already holds WAL of the same names
//! would clash with it: segments of a previous cluster on timeline 1 look exactly like the new
//! cluster's. The check is run before pointing a new (or re-created, or promoted) server at an
//! existing archive. Its rule, as Barman's:
//!
//! * without a timeline, the archive must be empty: any file at all (segment, `.partial`,
//!   `.backup`, `.history`) fails it;
//! * with `--timeline N`, only files on timeline N or later fail it, so a cluster promoted to
//!   timeline N may keep the archive its ancestors wrote on earlier timelines. A
//!   `0000000N.history` counts as on timeline N.
//!
//! The names come from xlog.db, already parsed into [`WalFileName`]s; a line whose name is not
//! a WAL archive name is an xlog.db parse error before this check runs (Barman reports it here,
//! as `Unexpected file … found in WAL archive`, and only with a timeline).

use super::WalFileName;

/// Why the archive is not usable; the texts are Barman's `WalArchiveContentError` messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalArchiveContentError {
    /// No timeline was given and the archive holds files.
    #[error("Expected empty archive")]
    NotEmpty,
    /// Files on the given timeline or a later one.
    #[error(
        "Found {count} file{} in WAL archive equal to or newer than timeline {timeline}",
        if *count > 1 { "s" } else { "" }
    )]
    TimelineInUse {
        /// How many files are on `timeline` or later.
        count: usize,
        /// The timeline asked about.
        timeline: u64,
    },
}

/// Checks the archive holding `names` against Barman's rule (module docs). `timeline` is the
/// earliest timeline whose files fail the check; it is a `u64` because Barman takes any
/// positive integer there and prints it back as given, even one no timeline can reach.
pub fn check_archive_usable<'a>(
    names: impl IntoIterator<Item = &'a WalFileName>,
    timeline: Option<u64>,
) -> Result<(), WalArchiveContentError> {
    let mut names = names.into_iter();
    match timeline {
        None => match names.next() {
            None => Ok(()),
            Some(_) => Err(WalArchiveContentError::NotEmpty),
        },
        Some(timeline) => match names.filter(|n| u64::from(n.timeline().0) >= timeline).count() {
            0 => Ok(()),
            count => Err(WalArchiveContentError::TimelineInUse { count, timeline }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<WalFileName> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn check(list: &[&str], timeline: Option<u64>) -> Result<(), String> {
        check_archive_usable(&names(list), timeline).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_archive_is_usable_with_or_without_a_timeline() {
        assert_eq!(check(&[], None), Ok(()));
        assert_eq!(check(&[], Some(1)), Ok(()));
        assert_eq!(check(&[], Some(u64::MAX)), Ok(()));
    }

    #[test]
    fn without_a_timeline_any_file_fails() {
        for one in [
            "000000010000000000000001",
            "000000010000000000000001.partial",
            "000000010000000000000001.00000028.backup",
            "00000002.history",
        ] {
            assert_eq!(check(&[one], None), Err("Expected empty archive".to_owned()), "{one}");
        }
    }

    #[test]
    fn with_a_timeline_only_that_timeline_and_later_ones_count() {
        // Barman's tests/test_xlog.py TestCheckArchiveUsable, and the cases around them.
        let found = |n: usize, s: &str, tli: u64| {
            Err(format!("Found {n} file{s} in WAL archive equal to or newer than timeline {tli}"))
        };
        let table: &[(&[&str], u64, Result<(), String>)] = &[
            // Older timelines only: usable.
            (&["000000010000000000000001"], 2, Ok(())),
            (&["000000020000000000000001"], 3, Ok(())),
            (&["00000002.history"], 3, Ok(())),
            (&["00000002.history", "00000003.history"], 4, Ok(())),
            (
                &["000000010000000000000001", "000000010000000000000002.partial", "000000010000000000000002.00000028.backup"],
                2,
                Ok(()),
            ),
            // The same timeline: every file on it counts, whatever its kind.
            (&["000000010000000000000001"], 1, found(1, "", 1)),
            (&["00000002.history"], 2, found(1, "", 2)),
            (
                &["000000010000000000000001", "000000020000000000000002", "000000020000000000000002.00000028.backup", "00000002.history"],
                2,
                found(3, "s", 2),
            ),
            // Newer timelines count too.
            (&["00000002.history"], 1, found(1, "", 1)),
            (&["00000002.history", "00000003.history"], 2, found(2, "s", 2)),
            (&["00000003.history", "00000002.history"], 3, found(1, "", 3)),
            (&["000000010000000000000001", "0000000A0000000000000001.partial"], 2, found(1, "", 2)),
            // Timelines compare as numbers, not as names.
            (&["0000000A0000000000000001"], 9, found(1, "", 9)),
            (&["000000090000000000000001"], 10, Ok(())),
            (&["FFFFFFFF0000000000000001"], u64::from(u32::MAX), found(1, "", 4294967295)),
            (&["FFFFFFFF0000000000000001"], u64::from(u32::MAX) + 1, Ok(())),
        ];
        for (list, tli, expected) in table {
            assert_eq!(&check(list, Some(*tli)), expected, "{list:?} --timeline {tli}");
        }
    }
}
