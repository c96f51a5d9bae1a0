//! Making a restored configuration safe, as Barman does (formats §2.18): settings that would
//! archive into the production archive or stop recovery early are commented out with
//! `#BARMAN#` (`archive_command` also replaced by `archive_command = false`), settings that
//! point at paths of the original server are reported for review, the originals are kept as
//! `<file>.origin`, and the recovery settings are appended to `postgresql.auto.conf`. The signal
//! files that came with the backup are removed ([`remove_signal_files`]) before the one the
//! recovery asks for is written.

use std::path::Path;

use crate::storage::durable::{atomic_write, FILE_MODE};
use crate::storage::{StorageError, StorageOp};

/// Settings Barman comments out (and, for `archive_command`, replaces with `false`).
const OPTIONS_TO_MANGLE: &[&str] = &[
    "archive_command",
    "recovery_target",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
];

/// Settings Barman warns about: paths or includes of the original server.
const DANGEROUS_OPTIONS: &[&str] = &[
    "data_directory",
    "config_file",
    "hba_file",
    "ident_file",
    "external_pid_file",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "ssl_crl_file",
    "unix_socket_directory",
    "unix_socket_directories",
    "include",
    "include_dir",
    "include_if_exists",
];

/// One setting found in a file: `(file name, 0-based line, key, value)`, as Barman reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfLine {
    /// `postgresql.conf` or `postgresql.auto.conf`.
    pub file: String,
    /// The 0-based line number (Barman's convention).
    pub line: usize,
    /// The setting.
    pub key: String,
    /// Its value as written.
    pub value: String,
}

/// What the analysis changed and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfReport {
    /// Settings commented out or replaced.
    pub changes: Vec<ConfLine>,
    /// Settings to review.
    pub warnings: Vec<ConfLine>,
}

/// `^\s*([^\s=]+)\s*=?\s*(.*)$`: a setting line (commented lines start with `#` and are kept
/// as they are, because `#` is part of the key then and matches nothing).
fn setting(line: &str) -> Option<(&str, &str)> {
    let t = line.trim_start();
    let end = t.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(t.len());
    if end == 0 {
        return None;
    }
    let (key, rest) = t.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    Some((key, rest.trim_end()))
}

/// Rewrites `text` (a file named `file`), returning the new text and what it did.
pub fn mangle(file: &str, text: &str, report: &mut ConfReport) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches('\n');
        match setting(body) {
            Some((key, value)) if OPTIONS_TO_MANGLE.contains(&key) => {
                out.push_str("#BARMAN#");
                out.push_str(line);
                if !line.ends_with('\n') {
                    out.push('\n');
                }
                if key == "archive_command" {
                    out.push_str("archive_command = false\n");
                    report.changes.push(ConfLine { file: file.into(), line: i, key: key.into(), value: "false".into() });
                } else {
                    report.changes.push(ConfLine { file: file.into(), line: i, key: key.into(), value: value.into() });
                }
            }
            Some((key, value)) if DANGEROUS_OPTIONS.contains(&key) => {
                report.warnings.push(ConfLine { file: file.into(), line: i, key: key.into(), value: value.into() });
                out.push_str(line);
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// Analyses `postgresql.conf` and `postgresql.auto.conf` in `data`, keeping `.origin`
/// copies; returns the report and the names of the files that were missing.
pub fn secure_configuration(data: &Path) -> Result<(ConfReport, Vec<String>), StorageError> {
    let mut report = ConfReport::default();
    let mut missing = Vec::new();
    for name in ["postgresql.conf", "postgresql.auto.conf"] {
        if !secure_file(data, name, &mut report)? {
            missing.push(name.to_owned());
        }
    }
    for name in ["pg_hba.conf", "pg_ident.conf"] {
        if !data.join(name).exists() {
            missing.push(name.to_owned());
        }
    }
    Ok((report, missing))
}

/// Mangles one configuration file `data/name` (see [`mangle`]), keeping the original as
/// `<name>.origin`. Returns false when the file does not exist.
pub fn secure_file(data: &Path, name: &str, report: &mut ConfReport) -> Result<bool, StorageError> {
    let path = data.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StorageError::io(StorageOp::Read, &path, e)),
    };
    let file = Path::new(name).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| name.to_owned());
    atomic_write(&data.join(format!("{name}.origin")), text.as_bytes(), FILE_MODE)?;
    let new = mangle(&file, &text, report);
    atomic_write(&path, new.as_bytes(), FILE_MODE)?;
    Ok(true)
}

/// The files whose presence puts PostgreSQL 12+ into recovery at start-up: `standby.signal`
/// (a standby, following `primary_conninfo` and never promoting by itself) and
/// `recovery.signal` (archive recovery to a target).
pub const SIGNAL_FILES: [&str; 2] = ["standby.signal", "recovery.signal"];

/// Removes the [`SIGNAL_FILES`] in `data` and returns the names of those that were there.
///
/// A backup taken from a standby holds the standby's `standby.signal` (BASE_BACKUP copies it,
/// and Barman's recover keeps it): the restored server would then start as a standby of the
/// live primary named in the copied `postgresql.auto.conf`, instead of recovering to the
/// target and promoting. barman-rs removes it (a deliberate difference from Barman), so the
/// only signal file left is the one the requested mode writes. The caller fsyncs `data`.
pub fn remove_signal_files(data: &Path) -> Result<Vec<String>, StorageError> {
    let mut removed = Vec::new();
    for name in SIGNAL_FILES {
        let path = data.join(name);
        if crate::storage::fs::exists(&path)? {
            crate::storage::fs::remove_file_if_exists(&path)?;
            removed.push(name.to_owned());
        }
    }
    Ok(removed)
}

/// Quotes a value for postgresql.conf: single quotes, `'` doubled.
pub fn quote_conf(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `key = 'value'`, as Barman writes a recovery setting.
pub fn setting_line(key: &str, value: &str) -> String {
    format!("{key} = {}", quote_conf(value))
}

/// Appends `lines` to the file at `path` (created if missing) as Barman does to
/// `postgresql.auto.conf`: a newline first (always, unless the file is empty), then one
/// line each.
pub fn append_lines(path: &Path, lines: &[String]) -> Result<(), StorageError> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(StorageError::io(StorageOp::Read, path, e)),
    };
    if !text.is_empty() {
        text.push('\n');
    }
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    atomic_write(path, text.as_bytes(), FILE_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mangles_as_barman() {
        let text = "# comment\n#archive_command = ''\narchive_command = 'barman-wal-archive x pg %p'\n\
                    recovery_target_name='old'\nunix_socket_directories = '/tmp/sock'\nport = 5432\n";
        let mut r = ConfReport::default();
        let out = mangle("postgresql.conf", text, &mut r);
        assert_eq!(
            out,
            "# comment\n#archive_command = ''\n#BARMAN#archive_command = 'barman-wal-archive x pg %p'\narchive_command = false\n\
             #BARMAN#recovery_target_name='old'\nunix_socket_directories = '/tmp/sock'\nport = 5432\n"
        );
        assert_eq!(r.changes.len(), 2);
        assert_eq!((r.changes[0].line, r.changes[0].value.as_str()), (2, "false"));
        assert_eq!(r.warnings, vec![ConfLine { file: "postgresql.conf".into(), line: 4, key: "unix_socket_directories".into(), value: "'/tmp/sock'".into() }]);
    }

    #[test]
    fn removes_the_backups_signal_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("standby.signal"), "").unwrap();
        std::fs::write(dir.path().join("postgresql.auto.conf"), "").unwrap();
        assert_eq!(remove_signal_files(dir.path()).unwrap(), ["standby.signal"]);
        assert!(!dir.path().join("standby.signal").exists());
        assert!(dir.path().join("postgresql.auto.conf").exists());
        assert!(remove_signal_files(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn appends_with_a_blank_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgresql.auto.conf"), "# Do not edit this file manually!\n").unwrap();
        let lines = [setting_line("restore_command", "cp /x/%f %p"), setting_line("recovery_target_name", "it's")];
        append_lines(&dir.path().join("postgresql.auto.conf"), &lines).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap(),
            "# Do not edit this file manually!\n\nrestore_command = 'cp /x/%f %p'\nrecovery_target_name = 'it''s'\n"
        );
    }
}
