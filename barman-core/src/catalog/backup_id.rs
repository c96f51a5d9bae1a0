//! Backup IDs, backup statuses, and the shortcuts users type in their place.
//!
//! A backup ID is the local time the backup started, `strftime("%Y%m%dT%H%M%S")`, and Barman
//! recognises one with the regex `^\d{8}T\d{6}$` (`barman/utils.py: is_backup_id`). Being
//! fixed-width digits, IDs sort chronologically as text, which is how Barman finds the
//! "previous" and "next" backup.
//!
//! Shortcuts (`barman/utils.py: get_backup_id_using_shortcut`): `latest`/`last` and
//! `oldest`/`first` pick among backups whose copy is done (`WAITING_FOR_WALS` or `DONE`),
//! `last-failed` among `FAILED` ones, `latest-full`/`last-full` among done *full* backups
//! (not incremental, not snapshot); any other word that is not an ID is a `backup_name`
//! (`backup --name`). Deliberate difference: Barman tests `last-failed` with Python's `in`
//! on a string, i.e. as a *substring* (`failed`, `st-f`, even `a` select the last failed
//! backup, which makes such backup names unreachable); barman-rs accepts only `last-failed`.

use std::fmt;
use std::str::FromStr;

use time::{Date, Month, PrimitiveDateTime, Time};

use super::CatalogError;

/// A backup's identifier, `YYYYMMDDTHHMMSS` (local time at the start of the backup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId([u8; 15]);

impl BackupId {
    /// The ID of a backup started at `local` (wall-clock time in the Barman host's zone).
    pub fn from_datetime(local: PrimitiveDateTime) -> Result<Self, CatalogError> {
        let text = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}",
            local.year(),
            u8::from(local.month()),
            local.day(),
            local.hour(),
            local.minute(),
            local.second()
        );
        text.parse()
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("validated ASCII")
    }

    /// The wall-clock time the ID spells, when it is a real calendar time (Barman's regex
    /// accepts `99999999T999999`; such an ID has no time).
    pub fn to_datetime(&self) -> Option<PrimitiveDateTime> {
        let n = |r: std::ops::Range<usize>| self.as_str()[r].parse::<u32>().ok();
        let month = Month::try_from(n(4..6)? as u8).ok()?;
        let date = Date::from_calendar_date(n(0..4)? as i32, month, n(6..8)? as u8).ok()?;
        let time = Time::from_hms(n(9..11)? as u8, n(11..13)? as u8, n(13..15)? as u8).ok()?;
        Some(PrimitiveDateTime::new(date, time))
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackupId {
    type Err = CatalogError;

    /// Accepts exactly Barman's `^\d{8}T\d{6}$` (ASCII digits).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = b.len() == 15
            && b[8] == b'T'
            && b[..8].iter().chain(&b[9..]).all(u8::is_ascii_digit);
        if !ok {
            return Err(CatalogError::InvalidBackupId(s.to_owned()));
        }
        let mut id = [0u8; 15];
        id.copy_from_slice(b);
        Ok(BackupId(id))
    }
}

/// Where a backup is in its life (`status=` in backup.info). The spelling on disk is the
/// one of Barman's `BackupInfo` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackupStatus {
    /// The info file exists, nothing else was done yet (Barman's default).
    #[default]
    Empty,
    /// The copy is running.
    Started,
    /// The copy is done; the WAL up to `end_wal` is not archived yet.
    WaitingForWals,
    /// Complete and usable.
    Done,
    /// Failed; `error=` says why.
    Failed,
    /// Being copied from a primary Barman (passive node).
    Syncing,
}

impl BackupStatus {
    /// Every status, in Barman's `STATUS_ALL` order.
    pub const ALL: [BackupStatus; 6] = [
        BackupStatus::Empty,
        BackupStatus::Started,
        BackupStatus::WaitingForWals,
        BackupStatus::Done,
        BackupStatus::Syncing,
        BackupStatus::Failed,
    ];

    /// Barman's `STATUS_COPY_DONE`: the statuses `latest`, `oldest`, names and recovery
    /// consider (`BackupManager.DEFAULT_STATUS_FILTER`).
    pub fn is_copy_done(self) -> bool {
        matches!(self, BackupStatus::WaitingForWals | BackupStatus::Done)
    }

    /// The on-disk spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupStatus::Empty => "EMPTY",
            BackupStatus::Started => "STARTED",
            BackupStatus::WaitingForWals => "WAITING_FOR_WALS",
            BackupStatus::Done => "DONE",
            BackupStatus::Failed => "FAILED",
            BackupStatus::Syncing => "SYNCING",
        }
    }
}

impl fmt::Display for BackupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackupStatus {
    type Err = CatalogError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackupStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| CatalogError::InvalidBackupStatus(s.to_owned()))
    }
}

/// What a user may type where a backup ID is expected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackupSelector {
    /// An explicit ID.
    Id(BackupId),
    /// `latest` / `last`: the newest backup whose copy is done.
    Latest,
    /// `oldest` / `first`: the oldest backup whose copy is done.
    Oldest,
    /// `last-failed`: the newest FAILED backup.
    LastFailed,
    /// `latest-full` / `last-full`: the newest done backup that is neither incremental nor a
    /// snapshot.
    LatestFull,
    /// Anything else: a `backup_name`.
    Name(String),
}

impl FromStr for BackupSelector {
    type Err = std::convert::Infallible;

    /// Never fails: what is neither a shortcut nor an ID is a name (checked on resolution).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "latest" | "last" => BackupSelector::Latest,
            "oldest" | "first" => BackupSelector::Oldest,
            "last-failed" => BackupSelector::LastFailed,
            "latest-full" | "last-full" => BackupSelector::LatestFull,
            _ => match s.parse::<BackupId>() {
                Ok(id) => BackupSelector::Id(id),
                Err(_) => BackupSelector::Name(s.to_owned()),
            },
        })
    }
}

impl fmt::Display for BackupSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupSelector::Id(id) => write!(f, "{id}"),
            BackupSelector::Latest => f.write_str("latest"),
            BackupSelector::Oldest => f.write_str("oldest"),
            BackupSelector::LastFailed => f.write_str("last-failed"),
            BackupSelector::LatestFull => f.write_str("latest-full"),
            BackupSelector::Name(n) => f.write_str(n),
        }
    }
}

/// What resolving a [`BackupSelector`] needs to know about each backup in the catalog;
/// implemented by [`super::BackupInfo`].
pub trait BackupSummary {
    /// The backup's ID.
    fn backup_id(&self) -> BackupId;
    /// Its status.
    fn status(&self) -> BackupStatus;
    /// Neither incremental (has a parent) nor a snapshot backup (Barman's `is_full`).
    fn is_full(&self) -> bool;
    /// Its `backup_name`, if one was given.
    fn backup_name(&self) -> Option<&str>;
}

impl BackupSelector {
    /// Finds the backup this selector names among `backups` (in any order).
    ///
    /// An explicit ID must be present (any status). A name must match exactly one done
    /// backup; several matches are an error listing them, as in Barman.
    pub fn resolve<B: BackupSummary>(&self, backups: &[B]) -> Result<BackupId, CatalogError> {
        let newest = |keep: &dyn Fn(&B) -> bool| {
            backups.iter().filter(|b| keep(b)).map(|b| b.backup_id()).max()
        };
        let found = match self {
            BackupSelector::Id(id) => backups.iter().map(|b| b.backup_id()).find(|b| b == id),
            BackupSelector::Latest => newest(&|b| b.status().is_copy_done()),
            BackupSelector::Oldest => backups
                .iter()
                .filter(|b| b.status().is_copy_done())
                .map(|b| b.backup_id())
                .min(),
            BackupSelector::LastFailed => newest(&|b| b.status() == BackupStatus::Failed),
            BackupSelector::LatestFull => newest(&|b| b.status().is_copy_done() && b.is_full()),
            BackupSelector::Name(name) => {
                let mut ids: Vec<BackupId> = backups
                    .iter()
                    .filter(|b| b.status().is_copy_done() && b.backup_name() == Some(name))
                    .map(|b| b.backup_id())
                    .collect();
                ids.sort();
                if ids.len() > 1 {
                    return Err(CatalogError::AmbiguousBackupName { name: name.clone(), ids });
                }
                ids.pop()
            }
        };
        found.ok_or_else(|| CatalogError::UnknownBackup { selector: self.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct B(&'static str, BackupStatus, bool, Option<&'static str>);

    impl BackupSummary for B {
        fn backup_id(&self) -> BackupId {
            self.0.parse().unwrap()
        }
        fn status(&self) -> BackupStatus {
            self.1
        }
        fn is_full(&self) -> bool {
            self.2
        }
        fn backup_name(&self) -> Option<&str> {
            self.3
        }
    }

    #[test]
    fn ids_validate_and_sort() {
        let a: BackupId = "20261125T123210".parse().unwrap();
        let b: BackupId = "20261125T123233".parse().unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "20261125T123210");
        let dt = a.to_datetime().unwrap();
        assert_eq!(BackupId::from_datetime(dt).unwrap(), a);
        assert!("99999999T999999".parse::<BackupId>().unwrap().to_datetime().is_none());
        for bad in ["", "20261125123210", "20261125t123210", "20261125T12321", "2026112ST123210",
            "20261125T1232100", "٢0261125T123210"] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_spell_as_barman() {
        for st in BackupStatus::ALL {
            assert_eq!(st.to_string().parse::<BackupStatus>().unwrap(), st);
        }
        assert_eq!(BackupStatus::WaitingForWals.to_string(), "WAITING_FOR_WALS");
        assert!("done".parse::<BackupStatus>().is_err());
        assert_eq!(BackupStatus::default(), BackupStatus::Empty);
    }

    #[test]
    fn shortcuts_resolve_like_barman() {
        use BackupStatus::*;
        let backups = [
            B("20261125T123233", Done, true, None),
            B("20261125T123210", WaitingForWals, true, Some("dup")),
            B("20261125T123353", Done, true, Some("before-upgrade")),
            B("20261125T123714", Failed, true, None),
            B("20261125T123610", Done, false, Some("dup")),
            B("20261125T123824", Started, true, None),
            B("20261125T123700", Failed, true, None),
        ];
        let r = |s: &str| s.parse::<BackupSelector>().unwrap().resolve(&backups).map(|id| id.to_string());
        assert_eq!(r("latest").unwrap(), "20261125T123610");
        assert_eq!(r("last").unwrap(), "20261125T123610");
        assert_eq!(r("oldest").unwrap(), "20261125T123210");
        assert_eq!(r("first").unwrap(), "20261125T123210");
        assert_eq!(r("last-failed").unwrap(), "20261125T123714");
        assert_eq!(r("latest-full").unwrap(), "20261125T123353");
        assert_eq!(r("last-full").unwrap(), "20261125T123353");
        assert_eq!(r("before-upgrade").unwrap(), "20261125T123353");
        assert_eq!(r("20261125T123824").unwrap(), "20261125T123824");
        assert!(matches!(r("20261125T000000"), Err(CatalogError::UnknownBackup { .. })));
        assert!(matches!(r("failed"), Err(CatalogError::UnknownBackup { .. })));
        match r("dup") {
            Err(CatalogError::AmbiguousBackupName { ids, .. }) => assert_eq!(ids.len(), 2),
            other => panic!("{other:?}"),
        }
        let none: [B; 0] = [];
        assert!(BackupSelector::Latest.resolve(&none).is_err());
    }
}
