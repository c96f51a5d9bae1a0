//! The retention report: which backups a policy keeps, as Barman's
//! `RedundancyRetentionPolicy._backup_report` and `RecoveryWindowRetentionPolicy._backup_report`
//! (`barman/retention_policies.py`) compute it.
//!
//! [`report`] is a pure function of the backups' facts ([`BackupFacts`]), the policy and the
//! current time, so the rules can be property-tested without a catalog. Reading the facts
//! from disk is `catalog::query::BackupCatalog::retention_report`; deleting what the report
//! calls OBSOLETE is [`super::delete`].
//!
//! The rules, walking backups newest first and skipping incremental ones (they take their
//! root's status afterwards):
//!
//! * only DONE backups count; any other non-EMPTY status reports `-`;
//! * a `keep` annotation always wins: `KEEP:FULL` / `KEEP:STANDALONE`, never OBSOLETE;
//! * `REDUNDANCY n` keeps the newest `max(n, minimum_redundancy)` DONE backups, kept ones
//!   included in the count;
//! * `RECOVERY WINDOW OF …` keeps every backup that ended inside the window and the newest
//!   one that ended before it (the point of recoverability); older ones are OBSOLETE, except
//!   that backups are kept as `OBSOLETE*` until `minimum_redundancy` are kept in all;
//! * incremental backups get their root's status, except that a kept root passes on VALID
//!   (OBSOLETE for a `standalone` root already outside the policy).

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::catalog::{BackupId, BackupStatus};
use crate::config::RetentionPolicy;

/// The `keep` annotation of a backup (`barman keep --target`), `meta/<ID>-keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepTarget {
    /// `full`: keep the backup and all the WAL after it (point-in-time recovery from it).
    Full,
    /// `standalone`: keep the backup and only the WAL it needs to be consistent.
    Standalone,
}

impl KeepTarget {
    /// Barman's spelling, which is also the annotation file's content.
    pub fn as_str(self) -> &'static str {
        match self {
            KeepTarget::Full => "full",
            KeepTarget::Standalone => "standalone",
        }
    }

    /// Reads an annotation's content as Barman does: `standalone` is standalone, any other
    /// non-empty text is treated as `full` "for safety"; an empty file is no keep.
    pub fn from_annotation(content: &[u8]) -> Option<KeepTarget> {
        match content {
            b"" => None,
            b"standalone" => Some(KeepTarget::Standalone),
            _ => Some(KeepTarget::Full),
        }
    }
}

impl std::fmt::Display for KeepTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backup's state under the retention policy, spelled as Barman prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetentionStatus {
    /// Inside the policy.
    Valid,
    /// Outside the policy; `cron` deletes it when `retention_policy_mode = auto`.
    Obsolete,
    /// Outside the recovery window but kept for `minimum_redundancy` (`OBSOLETE*`).
    PotentiallyObsolete,
    /// Not subject to the policy (not DONE): `-`.
    None,
    /// `KEEP:FULL`.
    KeepFull,
    /// `KEEP:STANDALONE`.
    KeepStandalone,
}

impl RetentionStatus {
    /// Barman's spelling (`BackupInfo.VALID`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionStatus::Valid => "VALID",
            RetentionStatus::Obsolete => "OBSOLETE",
            RetentionStatus::PotentiallyObsolete => "OBSOLETE*",
            RetentionStatus::None => "-",
            RetentionStatus::KeepFull => "KEEP:FULL",
            RetentionStatus::KeepStandalone => "KEEP:STANDALONE",
        }
    }

    /// The status a keep annotation gives.
    pub fn from_keep(keep: KeepTarget) -> Self {
        match keep {
            KeepTarget::Full => RetentionStatus::KeepFull,
            KeepTarget::Standalone => RetentionStatus::KeepStandalone,
        }
    }
}

/// What the policy needs to know about one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    /// The backup.
    pub id: BackupId,
    /// Its status; only DONE backups count.
    pub status: BackupStatus,
    /// When it ended (`end_time`), as an instant; a value without an offset already read in
    /// the local zone, as Barman reads it. `None` never counts as outside a window.
    pub end_time: Option<OffsetDateTime>,
    /// `parent_backup_id`: set for an incremental backup.
    pub parent: Option<BackupId>,
    /// `children_backup_ids`.
    pub children: Vec<BackupId>,
    /// Its keep annotation.
    pub keep: Option<KeepTarget>,
}

/// The retention status of every non-EMPTY backup in `backups` (any order) under `policy`
/// with `minimum_redundancy`, at `now`.
pub fn report(
    backups: &[BackupFacts],
    policy: RetentionPolicy,
    minimum_redundancy: u32,
    now: OffsetDateTime,
) -> BTreeMap<BackupId, RetentionStatus> {
    let mut sorted: Vec<&BackupFacts> = backups.iter().filter(|b| b.status != BackupStatus::Empty).collect();
    sorted.sort_by_key(|b| std::cmp::Reverse(b.id));
    let by_id: BTreeMap<BackupId, &BackupFacts> = sorted.iter().map(|b| (b.id, *b)).collect();
    let mut report = BTreeMap::new();

    // Redundancy: `counted` is Barman's `i`. Window: `counted` is Barman's `valid`, and
    // `outside` its `found` (a backup ending before the point of recoverability was seen).
    let redundancy = match policy {
        RetentionPolicy::Redundancy(n) => Some(n.max(minimum_redundancy)),
        RetentionPolicy::RecoveryWindow { .. } => None,
    };
    let point = policy.window().map(|w| now - w);
    let mut counted = 0u32;
    let mut outside = false;

    for b in sorted.iter().filter(|b| b.parent.is_none()) {
        let status = if b.status != BackupStatus::Done {
            RetentionStatus::None
        } else {
            let keep = b.keep.map(RetentionStatus::from_keep);
            match (redundancy, point) {
                (Some(n), _) => {
                    let s = keep.unwrap_or(if counted < n { RetentionStatus::Valid } else { RetentionStatus::Obsolete });
                    counted += 1;
                    s
                }
                (None, Some(point)) => {
                    if !outside {
                        counted += 1;
                        if b.end_time.is_some_and(|t| t < point) {
                            outside = true;
                        }
                        keep.unwrap_or(RetentionStatus::Valid)
                    } else if counted < minimum_redundancy {
                        counted += 1;
                        keep.unwrap_or(RetentionStatus::PotentiallyObsolete)
                    } else {
                        keep.unwrap_or(RetentionStatus::Obsolete)
                    }
                }
                (None, None) => unreachable!("a policy is either redundancy or a window"),
            }
        };
        report.insert(b.id, status);
        if !b.children.is_empty() {
            let beyond = match redundancy {
                Some(n) => counted > n,
                None => outside,
            };
            let inherited = match status {
                RetentionStatus::KeepStandalone if beyond => RetentionStatus::Obsolete,
                RetentionStatus::KeepStandalone | RetentionStatus::KeepFull => RetentionStatus::Valid,
                other => other,
            };
            propagate(b, inherited, &by_id, &mut report, 0);
        }
    }
    report
}

/// Gives every descendant of `parent` the status `status` (Barman's
/// `_propagate_retention_status_to_children`). Children missing from the catalog are
/// skipped; the depth bound stops a loop in hand-edited files.
fn propagate(
    parent: &BackupFacts,
    status: RetentionStatus,
    by_id: &BTreeMap<BackupId, &BackupFacts>,
    report: &mut BTreeMap<BackupId, RetentionStatus>,
    depth: usize,
) {
    if depth > by_id.len() {
        return;
    }
    for child in &parent.children {
        if let Some(c) = by_id.get(child) {
            report.insert(*child, status);
            propagate(c, status, by_id, report, depth + 1);
        }
    }
}

/// The backups a report marks OBSOLETE, oldest first — the order in which Barman's
/// `cron_retention_policy` deletes them.
pub fn obsolete(report: &BTreeMap<BackupId, RetentionStatus>) -> Vec<BackupId> {
    report.iter().filter(|(_, s)| **s == RetentionStatus::Obsolete).map(|(id, _)| *id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::WindowUnit;
    use time::Duration;

    fn id(n: u32) -> BackupId {
        format!("2026010{}T{:06}", 1 + n / 100_000, n % 100_000).parse().unwrap()
    }

    fn facts(n: u32, status: BackupStatus, end: OffsetDateTime) -> BackupFacts {
        BackupFacts { id: id(n), status, end_time: Some(end), parent: None, children: Vec::new(), keep: None }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn statuses(r: &BTreeMap<BackupId, RetentionStatus>) -> Vec<&'static str> {
        r.values().map(|s| s.as_str()).collect()
    }

    #[test]
    fn redundancy_keeps_the_newest_done_backups() {
        use BackupStatus::*;
        let t = now();
        let backups = [facts(1, Done, t), facts(2, Done, t), facts(3, Failed, t), facts(4, Done, t), facts(5, Empty, t)];
        let r = report(&backups, RetentionPolicy::Redundancy(1), 0, t);
        assert_eq!(statuses(&r), ["OBSOLETE", "OBSOLETE", "-", "VALID"]);
        // minimum_redundancy raises the count.
        let r = report(&backups, RetentionPolicy::Redundancy(1), 2, t);
        assert_eq!(statuses(&r), ["OBSOLETE", "VALID", "-", "VALID"]);
        // A kept backup counts but is never obsolete.
        let mut kept = backups.clone();
        kept[0].keep = Some(KeepTarget::Standalone);
        kept[3].keep = Some(KeepTarget::Full);
        let r = report(&kept, RetentionPolicy::Redundancy(1), 0, t);
        assert_eq!(statuses(&r), ["KEEP:STANDALONE", "OBSOLETE", "-", "KEEP:FULL"]);
    }

    #[test]
    fn window_keeps_the_point_of_recoverability() {
        use BackupStatus::*;
        let t = now();
        let day = Duration::days(1);
        let week = RetentionPolicy::RecoveryWindow { count: 7, unit: WindowUnit::Days };
        let backups = [
            facts(1, Done, t - day * 20),
            facts(2, Done, t - day * 10),
            facts(3, Done, t - day * 8),
            facts(4, Done, t - day * 2),
        ];
        let r = report(&backups, week, 0, t);
        // 3 ended before the window: it is where recovery into the window starts.
        assert_eq!(statuses(&r), ["OBSOLETE", "OBSOLETE", "VALID", "VALID"]);
        let r = report(&backups, week, 3, t);
        assert_eq!(statuses(&r), ["OBSOLETE", "OBSOLETE*", "VALID", "VALID"]);
        // Exactly on the boundary is inside: Barman compares with `<`.
        let edge = [facts(1, Done, t - day * 9), facts(2, Done, t - day * 7)];
        assert_eq!(statuses(&report(&edge, week, 0, t)), ["VALID", "VALID"]);
    }

    #[test]
    fn children_take_the_roots_status() {
        use BackupStatus::*;
        let t = now();
        let mut root = facts(1, Done, t);
        root.children = vec![id(2)];
        let mut child = facts(2, Done, t);
        child.parent = Some(id(1));
        child.children = vec![id(3)];
        let mut grandchild = facts(3, Done, t);
        grandchild.parent = Some(id(2));
        let newer = facts(4, Done, t);
        let all = [root.clone(), child.clone(), grandchild.clone(), newer.clone()];
        let r = report(&all, RetentionPolicy::Redundancy(1), 0, t);
        assert_eq!(statuses(&r), ["OBSOLETE", "OBSOLETE", "OBSOLETE", "VALID"]);
        root.keep = Some(KeepTarget::Standalone);
        let r = report(&[root.clone(), child.clone(), grandchild.clone(), newer.clone()], RetentionPolicy::Redundancy(1), 0, t);
        assert_eq!(statuses(&r), ["KEEP:STANDALONE", "OBSOLETE", "OBSOLETE", "VALID"]);
        root.keep = Some(KeepTarget::Full);
        let r = report(&[root, child, grandchild, newer], RetentionPolicy::Redundancy(1), 0, t);
        assert_eq!(statuses(&r), ["KEEP:FULL", "VALID", "VALID", "VALID"]);
    }

    #[test]
    fn keep_annotation_content_reads_as_barman() {
        assert_eq!(KeepTarget::from_annotation(b"standalone"), Some(KeepTarget::Standalone));
        assert_eq!(KeepTarget::from_annotation(b"full"), Some(KeepTarget::Full));
        assert_eq!(KeepTarget::from_annotation(b"anything"), Some(KeepTarget::Full));
        assert_eq!(KeepTarget::from_annotation(b""), None);
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        /// A random catalog of full backups, oldest first, ending one to 30 days apart.
        fn catalog() -> impl Strategy<Value = Vec<BackupFacts>> {
            let status = prop_oneof![
                6 => Just(BackupStatus::Done),
                1 => Just(BackupStatus::Failed),
                1 => Just(BackupStatus::WaitingForWals),
                1 => Just(BackupStatus::Started),
                1 => Just(BackupStatus::Empty),
            ];
            let keep = prop_oneof![6 => Just(None), 1 => Just(Some(KeepTarget::Full)), 1 => Just(Some(KeepTarget::Standalone))];
            prop::collection::vec((status, keep, 0i64..30 * 86_400), 0..14).prop_map(|rows| {
                let mut end = now() - Duration::days(400);
                rows.into_iter()
                    .enumerate()
                    .map(|(i, (status, keep, gap))| {
                        end += Duration::seconds(gap);
                        BackupFacts { keep, ..facts(i as u32 + 1, status, end) }
                    })
                    .collect()
            })
        }

        fn policy() -> impl Strategy<Value = RetentionPolicy> {
            prop_oneof![
                (0u32..6).prop_map(RetentionPolicy::Redundancy),
                (0u32..60).prop_map(|count| RetentionPolicy::RecoveryWindow { count, unit: WindowUnit::Days }),
                (0u32..9).prop_map(|count| RetentionPolicy::RecoveryWindow { count, unit: WindowUnit::Weeks }),
                (0u32..3).prop_map(|count| RetentionPolicy::RecoveryWindow { count, unit: WindowUnit::Months }),
            ]
        }

        proptest! {
            #[test]
            fn never_obsoletes_a_kept_or_unfinished_backup(backups in catalog(), policy in policy(), min in 0u32..5) {
                let r = report(&backups, policy, min, now());
                for b in &backups {
                    let s = r.get(&b.id).copied();
                    if b.status == BackupStatus::Empty {
                        prop_assert_eq!(s, None);
                    } else if b.status != BackupStatus::Done {
                        prop_assert_eq!(s, Some(RetentionStatus::None));
                    } else if let Some(k) = b.keep {
                        prop_assert_eq!(s, Some(RetentionStatus::from_keep(k)));
                    } else {
                        prop_assert!(s.is_some());
                    }
                }
            }

            #[test]
            fn never_leaves_fewer_than_minimum_redundancy(backups in catalog(), policy in policy(), min in 0u32..5) {
                let r = report(&backups, policy, min, now());
                let gone = obsolete(&r);
                let done = backups.iter().filter(|b| b.status == BackupStatus::Done).count();
                let left = backups.iter().filter(|b| b.status == BackupStatus::Done && !gone.contains(&b.id)).count();
                prop_assert!(left >= done.min(min as usize), "{left} left of {done}, minimum {min}");
                if let RetentionPolicy::Redundancy(n) = policy {
                    prop_assert!(left >= done.min(n.max(min) as usize));
                }
            }

            #[test]
            fn window_keeps_everything_recovery_into_it_needs(backups in catalog(), policy in policy(), min in 0u32..5) {
                let Some(window) = policy.window() else { return Ok(()) };
                let point = now() - window;
                let r = report(&backups, policy, min, now());
                let done: Vec<&BackupFacts> = backups.iter().filter(|b| b.status == BackupStatus::Done).collect();
                // Every backup that ended inside the window, and the newest one that ended
                // before it, stay.
                let anchor = done.iter().rev().find(|b| b.end_time.is_some_and(|t| t < point)).map(|b| b.id);
                for b in &done {
                    let inside = b.end_time.is_some_and(|t| t >= point);
                    let s = r[&b.id];
                    if inside || Some(b.id) == anchor {
                        prop_assert!(s != RetentionStatus::Obsolete && s != RetentionStatus::PotentiallyObsolete, "{} {:?}", b.id, s);
                    } else if b.keep.is_none() {
                        // Older than the anchor: obsolete, unless minimum redundancy holds it.
                        prop_assert!(s == RetentionStatus::Obsolete || s == RetentionStatus::PotentiallyObsolete, "{} {:?}", b.id, s);
                    }
                }
            }
        }
    }
}
