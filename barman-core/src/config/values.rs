//! Value parsers: text of one option → typed value, with Barman's exact acceptance rules.
//!
//! Each parser mirrors one function of Barman's `barman/config.py` (or, for
//! `retention_policy`, `barman/retention_policies.py`). Error texts are ours, and say what was
//! expected. Barman treats a value that fails here as absent, with a warning: the loader does
//! the same (see `mod.rs`), so these functions only report.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::ini::py_strip;

/// What a parser made of a text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Parsed<T> {
    /// A value; stops the search through server section, `[barman]` and default.
    Value(T),
    /// Explicitly nothing (an empty string option): stops the search, the setting is unset.
    Unset,
    /// Barman's parser returned `None`: as if the option were not written, keep searching.
    Inherit,
}

/// Parses a boolean the way Barman's `parse_boolean` does (case-insensitive).
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "1" | "on" => Ok(true),
        "false" | "f" | "no" | "0" | "off" => Ok(false),
        _ => Err("expected a boolean (true|t|yes|1|on or false|f|no|0|off)".to_owned()),
    }
}

/// Parses an integer like Python's `int()`: surrounding whitespace, a sign, `_` between digits.
pub fn parse_int(text: &str) -> Result<i64, String> {
    let err = || "expected an integer".to_owned();
    let t = py_strip(text);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return Err(err());
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    let magnitude: i128 = clean.parse().map_err(|_| "integer out of range".to_owned())?;
    let v = if neg { -magnitude } else { magnitude };
    i64::try_from(v).map_err(|_| "integer out of range".to_owned())
}

/// Reads `\d+` then returns (number, rest).
fn leading_number(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    Some((s[..end].parse().ok()?, &s[end..]))
}

/// The unit of a [`TimeInterval`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalUnit {
    /// 3600 seconds.
    Hour,
    /// 24 hours.
    Day,
    /// 7 days.
    Week,
    /// Barman counts a month as 31 days.
    Month,
}

/// `N (hour|day|week|month)[s]`, as `last_backup_maximum_age` and `last_wal_maximum_age` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeInterval {
    /// How many units.
    pub count: u64,
    /// Which unit.
    pub unit: IntervalUnit,
}

impl TimeInterval {
    /// The interval as Barman computes its `timedelta` (a month is 31 days).
    pub fn as_duration(&self) -> Duration {
        let unit_secs: u64 = match self.unit {
            IntervalUnit::Hour => 3600,
            IntervalUnit::Day => 86_400,
            IntervalUnit::Week => 7 * 86_400,
            IntervalUnit::Month => 31 * 86_400,
        };
        Duration::from_secs(self.count.saturating_mul(unit_secs))
    }
}

impl fmt::Display for TimeInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            IntervalUnit::Hour => "HOURS",
            IntervalUnit::Day => "DAYS",
            IntervalUnit::Week => "WEEKS",
            IntervalUnit::Month => "MONTHS",
        };
        write!(f, "{} {unit}", self.count)
    }
}

/// Barman's `parse_time_interval`: an empty text means "not set" (keep inheriting).
pub(crate) fn parse_time_interval(text: &str) -> Result<Parsed<TimeInterval>, String> {
    if text.is_empty() {
        return Ok(Parsed::Inherit);
    }
    let err = || "expected a time interval such as `7 DAYS` (N hour|day|week|month, optional s)".to_owned();
    let s = py_strip(text);
    let (count, rest) = leading_number(s).ok_or_else(err)?;
    let unit_text = rest.trim_start_matches(is_space);
    if unit_text.len() == rest.len() {
        return Err(err());
    }
    let word = unit_text.to_ascii_lowercase();
    let word = word.strip_suffix('s').unwrap_or(&word);
    let unit = match word {
        "hour" => IntervalUnit::Hour,
        "day" => IntervalUnit::Day,
        "week" => IntervalUnit::Week,
        "month" => IntervalUnit::Month,
        _ => return Err(err()),
    };
    Ok(Parsed::Value(TimeInterval { count, unit }))
}

fn is_space(c: char) -> bool {
    super::ini::is_py_space(c)
}

/// Barman's `parse_si_suffix`: `N [k|Ki|M|Mi|G|Gi|T|Ti]` in bytes (suffix case-sensitive, so
/// `1 GB` is refused, as in Barman); empty means "not set".
pub(crate) fn parse_si_size(text: &str) -> Result<Parsed<u64>, String> {
    if text.is_empty() {
        return Ok(Parsed::Inherit);
    }
    let err = || "expected a size such as `1 Gi` (N with an optional k, Ki, M, Mi, G, Gi, T or Ti)".to_owned();
    let (n, rest) = leading_number(text).ok_or_else(err)?;
    let suffix = py_strip(rest);
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "Ki" => 1 << 10,
        "M" => 1_000_000,
        "Mi" => 1 << 20,
        "G" => 1_000_000_000,
        "Gi" => 1 << 30,
        "T" => 1_000_000_000_000,
        "Ti" => 1 << 40,
        _ => return Err(err()),
    };
    n.checked_mul(mult).map(Parsed::Value).ok_or_else(|| "size out of range".to_owned())
}

/// Declares a closed set of lowercase words with one `FromStr`/`Display` pair.
macro_rules! words {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every accepted spelling, in Barman's order.
            pub const ALL: &'static [&'static str] = &[$($text),+];
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.to_lowercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!("expected {} (one of: {})", $what, Self::ALL.join(", "))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($name::$variant => $text),+ })
            }
        }
    };
}

words!(
    /// `backup_method`.
    BackupMethod, "a backup method" {
        /// rsync over SSH.
        Rsync = "rsync",
        /// pg_basebackup-style streaming (our own replication client).
        Postgres = "postgres",
        /// rsync on the same host.
        LocalRsync = "local-rsync",
        /// Cloud disk snapshots.
        Snapshot = "snapshot",
    }
);

words!(
    /// `backup_compression` (compression of base backups by the server or client).
    BackupCompression, "a base backup compression" {
        /// gzip.
        Gzip = "gzip",
        /// lz4.
        Lz4 = "lz4",
        /// zstd.
        Zstd = "zstd",
        /// Explicitly none.
        None = "none",
    }
);

words!(
    /// `backup_compression_format`.
    BackupCompressionFormat, "a backup compression format" {
        /// Unpacked data directory.
        Plain = "plain",
        /// One tar per tablespace.
        Tar = "tar",
    }
);

words!(
    /// `backup_compression_location`.
    BackupCompressionLocation, "a backup compression location" {
        /// Compress on the Barman side.
        Client = "client",
        /// Compress on the PostgreSQL side.
        Server = "server",
    }
);

words!(
    /// `compression` (WAL compression), the keys of Barman's `compression_registry`.
    Compression, "a WAL compression" {
        /// gzip (Barman 3.17 compresses in-process, like pygzip).
        Gzip = "gzip",
        /// bzip2 (in-process, like pybzip2).
        Bzip2 = "bzip2",
        /// Python gzip.
        Pygzip = "pygzip",
        /// Python bzip2.
        Pybzip2 = "pybzip2",
        /// Parallel gzip command.
        Pigz = "pigz",
        /// xz.
        Xz = "xz",
        /// zstd.
        Zstd = "zstd",
        /// lz4.
        Lz4 = "lz4",
        /// snappy.
        Snappy = "snappy",
        /// The `custom_compression_filter` command.
        Custom = "custom",
    }
);

words!(
    /// `reuse_backup`.
    ReuseBackup, "a reuse_backup mode" {
        /// Copy unchanged files from the previous backup.
        Copy = "copy",
        /// Hard-link unchanged files.
        Link = "link",
        /// Copy everything.
        Off = "off",
    }
);

words!(
    /// `create_slot`.
    CreateSlot, "a create_slot mode" {
        /// The operator creates the slot.
        Manual = "manual",
        /// `barman cron`/`receive-wal` create it.
        Auto = "auto",
    }
);

words!(
    /// `combine_mode` (pg_combinebackup).
    CombineMode, "a combine mode" {
        /// --copy.
        Copy = "copy",
        /// --link.
        Link = "link",
        /// --clone.
        Clone = "clone",
        /// --copy-file-range.
        CopyFileRange = "copy-file-range",
    }
);

words!(
    /// `staging_location`.
    StagingLocation, "a staging location" {
        /// On the Barman host.
        Local = "local",
        /// On the recovery host.
        Remote = "remote",
    }
);

words!(
    /// `encryption` (`none` means unset and is handled before this type).
    Encryption, "an encryption" {
        /// GnuPG.
        Gpg = "gpg",
    }
);

/// Barman's `parse_encryption`: `none` (any case) is treated as "not written" and inherits.
pub(crate) fn parse_encryption(text: &str) -> Result<Parsed<Encryption>, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Parsed::Inherit);
    }
    text.parse().map(Parsed::Value).map_err(|_| "expected an encryption (one of: none, gpg)".to_owned())
}

/// Barman's `parse_compression`: empty means unset.
pub(crate) fn parse_compression(text: &str) -> Result<Parsed<Compression>, String> {
    if text.is_empty() {
        return Ok(Parsed::Unset);
    }
    text.parse().map(Parsed::Value)
}

/// `compression_level`: a word or an integer (negative allowed, zstd uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionLevel {
    /// Fastest.
    Low,
    /// Barman's default.
    Medium,
    /// Smallest.
    High,
    /// An algorithm-specific number.
    Level(i64),
}

impl fmt::Display for CompressionLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompressionLevel::Low => f.write_str("low"),
            CompressionLevel::Medium => f.write_str("medium"),
            CompressionLevel::High => f.write_str("high"),
            CompressionLevel::Level(n) => write!(f, "{n}"),
        }
    }
}

/// Barman's `parse_compression_level`: empty means unset.
pub(crate) fn parse_compression_level(text: &str) -> Result<Parsed<CompressionLevel>, String> {
    if text.is_empty() {
        return Ok(Parsed::Unset);
    }
    let lower = text.to_lowercase();
    let digits = lower.trim_start_matches('-');
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        return parse_int(&lower).map(|n| Parsed::Value(CompressionLevel::Level(n)));
    }
    match lower.as_str() {
        "low" => Ok(Parsed::Value(CompressionLevel::Low)),
        "medium" => Ok(Parsed::Value(CompressionLevel::Medium)),
        "high" => Ok(Parsed::Value(CompressionLevel::High)),
        _ => Err("expected a compression level (low, medium, high or an integer)".to_owned()),
    }
}

/// `backup_options`: a comma list of `concurrent_backup`, `exclusive_backup`,
/// `external_configuration` (the first two exclude each other).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupOptions {
    /// `concurrent_backup`.
    pub concurrent_backup: bool,
    /// `exclusive_backup` (refused by PostgreSQL 15+).
    pub exclusive_backup: bool,
    /// `external_configuration`: do not warn about configuration files outside PGDATA.
    pub external_configuration: bool,
}

/// Barman's `BackupOptions` CSV parser. Empty gives the empty set.
pub fn parse_backup_options(text: &str) -> Result<BackupOptions, String> {
    let mut o = BackupOptions::default();
    if text.is_empty() {
        return Ok(o);
    }
    let mut words: Vec<String> = text.split(',').map(|w| py_strip(w).to_lowercase()).collect();
    words.sort();
    for w in words {
        match w.as_str() {
            "concurrent_backup" if o.exclusive_backup => {
                return Err("cannot contain both 'concurrent_backup' and 'exclusive_backup'".to_owned())
            }
            "exclusive_backup" if o.concurrent_backup => {
                return Err("cannot contain both 'exclusive_backup' and 'concurrent_backup'".to_owned())
            }
            "concurrent_backup" => o.concurrent_backup = true,
            "exclusive_backup" => o.exclusive_backup = true,
            "external_configuration" => o.external_configuration = true,
            other => {
                return Err(format!(
                    "unknown option '{other}' (expected a comma list of concurrent_backup, exclusive_backup, external_configuration)"
                ))
            }
        }
    }
    Ok(o)
}

impl fmt::Display for BackupOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.concurrent_backup, "concurrent_backup"),
            (self.exclusive_backup, "exclusive_backup"),
            (self.external_configuration, "external_configuration"),
        ];
        let list: Vec<&str> = names.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        f.write_str(&list.join(","))
    }
}

/// `recovery_options`: a comma list of `get-wal`, `delta-restore`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryOptions {
    /// `get-wal`: restore_command fetches WAL from Barman.
    pub get_wal: bool,
    /// `delta-restore`: reuse files already at the destination.
    pub delta_restore: bool,
}

/// Barman's `RecoveryOptions` CSV parser. Empty gives the empty set.
pub fn parse_recovery_options(text: &str) -> Result<RecoveryOptions, String> {
    let mut o = RecoveryOptions::default();
    if text.is_empty() {
        return Ok(o);
    }
    for w in text.split(',') {
        match py_strip(w).to_lowercase().as_str() {
            "get-wal" => o.get_wal = true,
            "delta-restore" => o.delta_restore = true,
            other => {
                return Err(format!(
                    "unknown option '{other}' (expected a comma list of get-wal, delta-restore)"
                ))
            }
        }
    }
    Ok(o)
}

/// Barman's `parse_slot_name`: lowercased, then only `[0-9a-z_]`.
pub fn parse_slot_name(text: &str) -> Result<String, String> {
    let v = text.to_lowercase();
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == '_') {
        Ok(v)
    } else {
        Err("a replication slot name may only contain lower case letters, numbers and '_'".to_owned())
    }
}

/// Barman's `parse_staging_path`: an absolute path.
pub fn parse_absolute_path(text: &str) -> Result<String, String> {
    if text.starts_with('/') {
        Ok(text.to_owned())
    } else {
        Err("expected an absolute path".to_owned())
    }
}

/// Barman's `parse_snapshot_disks`: a comma list of non-empty names.
pub fn parse_name_list(text: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = text.split(',').map(str::to_owned).collect();
    if names.iter().any(String::is_empty) {
        return Err("expected a comma-separated list of non-empty disk names".to_owned());
    }
    Ok(names)
}

/// The unit of a recovery window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowUnit {
    /// Days.
    Days,
    /// Weeks.
    Weeks,
    /// Months of 31 days.
    Months,
}

/// `retention_policy`, as `barman/retention_policies.py` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionPolicy {
    /// `REDUNDANCY n`: keep the n most recent backups.
    Redundancy(u32),
    /// `RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS`: keep what point-in-time recovery to any moment
    /// of the last n units needs.
    RecoveryWindow {
        /// n.
        count: u32,
        /// The unit.
        unit: WindowUnit,
    },
}

impl RetentionPolicy {
    /// The window as Barman's `timedelta` (a month is 31 days); `None` for redundancy.
    pub fn window(&self) -> Option<Duration> {
        match *self {
            RetentionPolicy::Redundancy(_) => None,
            RetentionPolicy::RecoveryWindow { count, unit } => {
                let days = match unit {
                    WindowUnit::Days => 1,
                    WindowUnit::Weeks => 7,
                    WindowUnit::Months => 31,
                };
                Some(Duration::from_secs(u64::from(count) * days * 86_400))
            }
        }
    }
}

impl FromStr for RetentionPolicy {
    type Err = String;

    /// Case-insensitive, any whitespace between words; the unit may drop its `S`.
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "cannot parse retention policy {s:?}: expected `REDUNDANCY n` or `RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS`"
            )
        };
        let lower = s.to_lowercase();
        let words: Vec<&str> = lower.split(is_space).filter(|w| !w.is_empty()).collect();
        let number = |w: &str| -> Result<u32, String> {
            if w.chars().all(|c| c.is_ascii_digit()) {
                w.parse().map_err(|_| format!("retention policy {s:?}: number too large"))
            } else {
                Err(err())
            }
        };
        match words.as_slice() {
            ["redundancy", n] => Ok(RetentionPolicy::Redundancy(number(n)?)),
            ["recovery", "window", "of", n, unit] => {
                let unit = match unit.strip_suffix('s').unwrap_or(unit) {
                    "day" => WindowUnit::Days,
                    "week" => WindowUnit::Weeks,
                    "month" => WindowUnit::Months,
                    _ => return Err(err()),
                };
                Ok(RetentionPolicy::RecoveryWindow { count: number(n)?, unit })
            }
            _ => Err(err()),
        }
    }
}

impl fmt::Display for RetentionPolicy {
    /// Barman's spelling (`REDUNDANCY 3`, `RECOVERY WINDOW OF 7 DAYS`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetentionPolicy::Redundancy(n) => write!(f, "REDUNDANCY {n}"),
            RetentionPolicy::RecoveryWindow { count, unit } => {
                let unit = match unit {
                    WindowUnit::Days => "DAYS",
                    WindowUnit::Weeks => "WEEKS",
                    WindowUnit::Months => "MONTHS",
                };
                write!(f, "RECOVERY WINDOW OF {count} {unit}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        for t in ["true", "T", "Yes", "1", "ON", "on"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for t in ["false", "F", "no", "0", "Off"] {
            assert_eq!(parse_bool(t), Ok(false), "{t}");
        }
        for t in ["maybe", "", "2", "enabled", "y"] {
            assert_eq!(
                parse_bool(t),
                Err("expected a boolean (true|t|yes|1|on or false|f|no|0|off)".to_owned()),
                "{t}"
            );
        }
    }

    #[test]
    fn integers() {
        let good = [("30", 30), ("-5", -5), ("+7", 7), ("1_000", 1000), (" 4 ", 4)];
        for (t, v) in good {
            assert_eq!(parse_int(t), Ok(v), "{t}");
        }
        for t in ["", "x", "1.5", "_1", "1__0", "1_", "0x10", "-"] {
            assert_eq!(parse_int(t), Err("expected an integer".to_owned()), "{t}");
        }
        assert_eq!(parse_int("99999999999999999999"), Err("integer out of range".to_owned()));
    }

    #[test]
    fn intervals() {
        let good = [
            ("1 WEEKS", 1, IntervalUnit::Week),
            ("7 days", 7, IntervalUnit::Day),
            ("1 day", 1, IntervalUnit::Day),
            ("2  Months", 2, IntervalUnit::Month),
            ("12 hour", 12, IntervalUnit::Hour),
        ];
        for (t, count, unit) in good {
            assert_eq!(parse_time_interval(t), Ok(Parsed::Value(TimeInterval { count, unit })), "{t}");
        }
        assert_eq!(parse_time_interval(""), Ok(Parsed::Inherit));
        for t in ["1week", "one day", "1 year", "1 days ago", "-1 day", "1 dayss"] {
            assert!(parse_time_interval(t).is_err(), "{t}");
        }
        let month = TimeInterval { count: 1, unit: IntervalUnit::Month };
        assert_eq!(month.as_duration(), Duration::from_secs(31 * 86_400));
        assert_eq!(month.to_string(), "1 MONTHS");
    }

    #[test]
    fn sizes() {
        let good = [("1", 1), ("1 Gi", 1 << 30), ("1Gi", 1 << 30), ("2 k", 2000), ("3 Mi", 3 << 20), ("1 T", 1_000_000_000_000)];
        for (t, v) in good {
            assert_eq!(parse_si_size(t), Ok(Parsed::Value(v)), "{t}");
        }
        assert_eq!(parse_si_size(""), Ok(Parsed::Inherit));
        for t in ["1 GB", "1 g", "1 KiB", "x", "1.5 G", " 1"] {
            assert!(parse_si_size(t).is_err(), "{t}");
        }
        assert_eq!(parse_si_size("99999999999 Ti"), Err("size out of range".to_owned()));
    }

    #[test]
    fn words() {
        assert_eq!("Local-Rsync".parse(), Ok(BackupMethod::LocalRsync));
        assert_eq!(
            "tape".parse::<BackupMethod>(),
            Err("expected a backup method (one of: rsync, postgres, local-rsync, snapshot)".to_owned())
        );
        assert_eq!(parse_compression("ZSTD"), Ok(Parsed::Value(Compression::Zstd)));
        assert_eq!(parse_compression(""), Ok(Parsed::Unset));
        assert_eq!(
            parse_compression("rar"),
            Err("expected a WAL compression (one of: gzip, bzip2, pygzip, pybzip2, pigz, xz, zstd, lz4, snappy, custom)".to_owned())
        );
        assert_eq!(parse_encryption("None"), Ok(Parsed::Inherit));
        assert_eq!(parse_encryption("GPG"), Ok(Parsed::Value(Encryption::Gpg)));
    }

    #[test]
    fn compression_levels() {
        assert_eq!(parse_compression_level("-3"), Ok(Parsed::Value(CompressionLevel::Level(-3))));
        assert_eq!(parse_compression_level("HIGH"), Ok(Parsed::Value(CompressionLevel::High)));
        assert_eq!(parse_compression_level(""), Ok(Parsed::Unset));
        assert!(parse_compression_level("--3").is_err());
        assert!(parse_compression_level("max").is_err());
    }

    #[test]
    fn csv_options() {
        let o = parse_backup_options("Concurrent_Backup, external_configuration").expect("valid");
        assert!(o.concurrent_backup && o.external_configuration && !o.exclusive_backup);
        assert_eq!(o.to_string(), "concurrent_backup,external_configuration");
        assert_eq!(
            parse_backup_options("concurrent_backup,exclusive_backup"),
            Err("cannot contain both 'exclusive_backup' and 'concurrent_backup'".to_owned())
        );
        assert!(parse_backup_options("fast").is_err());
        assert_eq!(parse_backup_options(""), Ok(BackupOptions::default()));
        let r = parse_recovery_options("get-wal").expect("valid");
        assert!(r.get_wal && !r.delta_restore);
        assert!(parse_recovery_options("get_wal").is_err());
    }

    #[test]
    fn retention_policies() {
        let good = [
            ("REDUNDANCY 3", RetentionPolicy::Redundancy(3)),
            ("  redundancy   0 ", RetentionPolicy::Redundancy(0)),
            ("RECOVERY WINDOW OF 7 DAYS", RetentionPolicy::RecoveryWindow { count: 7, unit: WindowUnit::Days }),
            ("recovery window of 1 week", RetentionPolicy::RecoveryWindow { count: 1, unit: WindowUnit::Weeks }),
            ("Recovery Window Of 6 Months", RetentionPolicy::RecoveryWindow { count: 6, unit: WindowUnit::Months }),
        ];
        for (t, v) in good {
            assert_eq!(t.parse::<RetentionPolicy>(), Ok(v), "{t}");
        }
        let bad = [
            ("REDUNDANCY", "cannot parse retention policy \"REDUNDANCY\": expected `REDUNDANCY n` or `RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS`"),
            ("REDUNDANCY -1", "cannot parse retention policy \"REDUNDANCY -1\": expected `REDUNDANCY n` or `RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS`"),
            ("RECOVERY WINDOW OF 7 YEARS", "cannot parse retention policy \"RECOVERY WINDOW OF 7 YEARS\": expected `REDUNDANCY n` or `RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS`"),
            ("REDUNDANCY 99999999999", "retention policy \"REDUNDANCY 99999999999\": number too large"),
        ];
        for (t, message) in bad {
            assert_eq!(t.parse::<RetentionPolicy>(), Err(message.to_owned()), "{t}");
        }
        assert_eq!(
            RetentionPolicy::RecoveryWindow { count: 2, unit: WindowUnit::Weeks }.to_string(),
            "RECOVERY WINDOW OF 2 WEEKS"
        );
    }

    #[test]
    fn slot_names_and_paths() {
        assert_eq!(parse_slot_name("Barman_1"), Ok("barman_1".to_owned()));
        assert!(parse_slot_name("bar-man").is_err());
        assert!(parse_slot_name("").is_err());
        assert!(parse_absolute_path("tmp").is_err());
        assert_eq!(parse_name_list("a,b"), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert!(parse_name_list("a,,b").is_err());
    }
}
