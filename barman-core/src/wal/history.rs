//! Timeline history files (`%08X.history`, reference §5.2).
//!
//! The file of timeline `n` lists every ancestor of `n`, oldest first, one line each:
//! `<parent tli>\t<switchpoint X/X>\t<reason>`. The parent timeline is valid up to
//! (excluding) the switchpoint, where its child begins.
//!
//! Parsing follows PostgreSQL's `readTimeLineHistory` (`src/backend/access/transam/timeline.c`)
//! rather than Barman's stricter `decode_history_file`: blank lines and lines whose first
//! non-blank character is `#` are skipped, the fields are `sscanf("%u\t%X/%X")` (any run of
//! white space between the first two), the reason is optional, parent timelines must increase
//! and stay below the file's own timeline. An empty file is valid, as in PostgreSQL (Barman
//! refuses it).

use std::fmt;

use barman_replication::{Lsn, TimelineId};

/// One switch in a timeline's ancestry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The timeline that ended.
    pub parent: TimelineId,
    /// The first LSN not on `parent` (the next timeline starts here).
    pub switchpoint: Lsn,
    /// Why the timeline ended, as PostgreSQL wrote it (`no recovery target specified`, …).
    pub reason: String,
}

/// The parsed history of one timeline: its ancestors, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineHistory {
    timeline: TimelineId,
    entries: Vec<HistoryEntry>,
}

impl TimelineHistory {
    /// Parses the contents of `timeline`'s history file.
    pub fn parse(timeline: TimelineId, text: &[u8]) -> Result<Self, HistoryError> {
        let mut entries: Vec<HistoryEntry> = Vec::new();
        for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let syntax = |hint| HistoryError::Syntax {
                timeline,
                line,
                hint,
            };
            let trimmed = raw.trim_ascii_start();
            if trimmed.is_empty() || trimmed[0] == b'#' {
                continue;
            }
            let (parent, rest) = take_while(trimmed, |b| b.is_ascii_digit());
            let parent = parse_radix(parent, 10).ok_or(syntax(HistoryHint::Timeline))?;
            let rest = rest.trim_ascii_start();
            let (hi, rest) = take_while(rest, |b| b.is_ascii_hexdigit());
            let rest = rest
                .strip_prefix(b"/")
                .ok_or(syntax(HistoryHint::Switchpoint))?;
            let (lo, rest) = take_while(rest, |b| b.is_ascii_hexdigit());
            let (Some(hi), Some(lo)) = (parse_radix(hi, 16), parse_radix(lo, 16)) else {
                return Err(syntax(HistoryHint::Switchpoint));
            };
            let parent = TimelineId(parent);
            if let Some(last) = entries.last() {
                if parent <= last.parent {
                    return Err(HistoryError::NotIncreasing {
                        timeline,
                        line,
                        parent,
                    });
                }
            }
            let reason = String::from_utf8_lossy(rest.trim_ascii()).into_owned();
            entries.push(HistoryEntry {
                parent,
                switchpoint: Lsn((u64::from(hi) << 32) | u64::from(lo)),
                reason,
            });
        }
        if let Some(last) = entries.last() {
            if last.parent >= timeline {
                return Err(HistoryError::NotBelowChild {
                    timeline,
                    parent: last.parent,
                });
            }
        }
        Ok(TimelineHistory { timeline, entries })
    }

    /// The timeline whose history this is.
    pub fn timeline(&self) -> TimelineId {
        self.timeline
    }

    /// The ancestors, oldest first.
    pub fn entries(&self) -> &[HistoryEntry] {
        &self.entries
    }

    /// The timeline that wrote the WAL byte at `lsn` in this timeline's ancestry.
    pub fn timeline_at(&self, lsn: Lsn) -> TimelineId {
        self.entries
            .iter()
            .find(|e| lsn < e.switchpoint)
            .map_or(self.timeline, |e| e.parent)
    }

    /// Where `tli` ended in this ancestry: `Some(switchpoint)` for an ancestor, `None` for
    /// this timeline itself and for timelines not in the ancestry.
    pub fn switchpoint_of(&self, tli: TimelineId) -> Option<Lsn> {
        self.entries
            .iter()
            .find(|e| e.parent == tli)
            .map(|e| e.switchpoint)
    }

    /// Whether `tli` is this timeline or one of its ancestors.
    pub fn contains(&self, tli: TimelineId) -> bool {
        tli == self.timeline || self.entries.iter().any(|e| e.parent == tli)
    }
}

impl fmt::Display for TimelineHistory {
    /// The file as PostgreSQL writes it (without the blank line it inserts before the newest
    /// entry, which readers ignore).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            writeln!(f, "{}\t{}\t{}", e.parent, e.switchpoint, e.reason)?;
        }
        Ok(())
    }
}

fn take_while(s: &[u8], f: impl Fn(u8) -> bool) -> (&[u8], &[u8]) {
    let n = s.iter().position(|&b| !f(b)).unwrap_or(s.len());
    s.split_at(n)
}

fn parse_radix(digits: &[u8], radix: u32) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, radix).ok()
}

/// What a history file's line lacked, as PostgreSQL's hints say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryHint {
    /// "Expected a numeric timeline ID."
    Timeline,
    /// "Expected a write-ahead log switchpoint location."
    Switchpoint,
}

impl fmt::Display for HistoryHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HistoryHint::Timeline => "expected a numeric timeline ID",
            HistoryHint::Switchpoint => "expected a write-ahead log switchpoint location",
        })
    }
}

/// A timeline history file that PostgreSQL would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A line is not `tli<TAB>X/X…`.
    #[error("history file of timeline {timeline}, line {line}: syntax error, {hint}")]
    Syntax {
        /// The file's timeline.
        timeline: TimelineId,
        /// 1-based line number.
        line: usize,
        /// What was missing.
        hint: HistoryHint,
    },
    /// Parent timelines must increase from line to line.
    #[error("history file of timeline {timeline}, line {line}: timeline {parent} does not follow a smaller one")]
    NotIncreasing {
        /// The file's timeline.
        timeline: TimelineId,
        /// 1-based line number.
        line: usize,
        /// The offending parent timeline.
        parent: TimelineId,
    },
    /// An ancestor is not older than the timeline itself.
    #[error("history file of timeline {timeline} lists timeline {parent}, which is not below it")]
    NotBelowChild {
        /// The file's timeline.
        timeline: TimelineId,
        /// The offending parent timeline.
        parent: TimelineId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_file() {
        // As written by PostgreSQL 16 at the end of archive recovery (testdata/wal/16).
        let h = TimelineHistory::parse(
            TimelineId(2),
            b"1\t0/B03588\tno recovery target specified\n",
        )
        .unwrap();
        assert_eq!(
            h.entries(),
            [HistoryEntry {
                parent: TimelineId(1),
                switchpoint: Lsn(0xB03588),
                reason: "no recovery target specified".into()
            }]
        );
        assert_eq!(h.timeline_at(Lsn(0xB03587)), TimelineId(1));
        assert_eq!(h.timeline_at(Lsn(0xB03588)), TimelineId(2));
        assert_eq!(h.switchpoint_of(TimelineId(1)), Some(Lsn(0xB03588)));
        assert!(
            h.contains(TimelineId(1)) && h.contains(TimelineId(2)) && !h.contains(TimelineId(3))
        );
        assert_eq!(h.to_string(), "1\t0/B03588\tno recovery target specified\n");
    }

    #[test]
    fn tolerant_like_postgres() {
        let text = b"# comment\n\n1\t0/50001C0\tno recovery target specified\n\n  \t\n\
                     2 0/6000000\r\n   # indented comment\n4\t1/A\tbefore 2000-01-01 00:00:00+00\n";
        let h = TimelineHistory::parse(TimelineId(5), text).unwrap();
        let got: Vec<_> = h
            .entries()
            .iter()
            .map(|e| (e.parent.0, e.switchpoint.0))
            .collect();
        assert_eq!(got, [(1, 0x50001C0), (2, 0x6000000), (4, 0x1_0000_000A)]);
        assert_eq!(h.entries()[1].reason, "");
        assert_eq!(h.timeline_at(Lsn(0)), TimelineId(1));
        assert_eq!(h.timeline_at(Lsn(0x6000000)), TimelineId(4));
        assert_eq!(h.timeline_at(Lsn(u64::MAX)), TimelineId(5));
        assert!(TimelineHistory::parse(TimelineId(1), b"")
            .unwrap()
            .entries()
            .is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let cases: [(&[u8], HistoryError); 5] = [
            (
                b"1\t0/1\tx\nabc\n",
                HistoryError::Syntax {
                    timeline: TimelineId(3),
                    line: 2,
                    hint: HistoryHint::Timeline,
                },
            ),
            (
                b"\n\n1\t0-1\n",
                HistoryError::Syntax {
                    timeline: TimelineId(3),
                    line: 3,
                    hint: HistoryHint::Switchpoint,
                },
            ),
            (
                b"1\n",
                HistoryError::Syntax {
                    timeline: TimelineId(3),
                    line: 1,
                    hint: HistoryHint::Switchpoint,
                },
            ),
            (
                b"2\t0/1\tx\n1\t0/2\ty\n",
                HistoryError::NotIncreasing {
                    timeline: TimelineId(3),
                    line: 2,
                    parent: TimelineId(1),
                },
            ),
            (
                b"1\t0/1\tx\n3\t0/2\ty\n",
                HistoryError::NotBelowChild {
                    timeline: TimelineId(3),
                    parent: TimelineId(3),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(TimelineHistory::parse(TimelineId(3), text), Err(want));
        }
        assert!(TimelineHistory::parse(TimelineId(3), b"1\t1FFFFFFFF/0\tx\n").is_err());
    }

    mod proptests {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(text in proptest::collection::vec(any::<u8>(), 0..200)) {
                let _ = TimelineHistory::parse(TimelineId(9), &text);
            }

            #[test]
            fn display_parse_round_trip(points in proptest::collection::vec(any::<u64>(), 0..5)) {
                let entries: Vec<_> = points.iter().enumerate().map(|(i, p)| HistoryEntry {
                    parent: TimelineId(i as u32 + 1),
                    switchpoint: Lsn(*p),
                    reason: format!("reason {i}"),
                }).collect();
                let h = TimelineHistory { timeline: TimelineId(9), entries };
                prop_assert_eq!(TimelineHistory::parse(TimelineId(9), h.to_string().as_bytes()).unwrap(), h);
            }
        }
    }
}
