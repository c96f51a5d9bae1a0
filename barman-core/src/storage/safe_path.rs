//! The checked join: the only way a name that came from outside — a tar entry of a
//! `BASE_BACKUP` stream, a path in a `backup_manifest`, a WAL file name from `put-wal` or
//! `incoming/` — becomes a path barman-rs opens (DESIGN.md §3: "never follow a tar entry,
//! manifest path or WAL name outside its directory").
//!
//! [`safe_join`] is purely lexical: it accepts only plain relative names made of ordinary
//! components. [`safe_join_no_symlink_escape`] additionally looks at the filesystem and
//! refuses a path whose existing prefix goes through a symbolic link that leads outside the
//! base. That check is made at call time; a directory the caller does not control could still
//! change afterwards, so bases must be directories barman-rs owns.
//!
//! Note for plain backups: `data/pg_tblspc/<oid>` is an (absolute) symlink to the sibling
//! `base/<ID>/<oid>` directory, so manifest paths of tablespace files escape `data/` by
//! design; check them against `base/<ID>/` instead.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{StorageError, StorageOp};

/// Why [`safe_join`] refused a name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsafePathReason {
    /// The name is empty.
    Empty,
    /// The name starts with `/`.
    Absolute,
    /// A `..` component.
    ParentDir,
    /// A `.` component (PostgreSQL never writes one; refusing keeps names canonical).
    CurDir,
    /// Two slashes in a row.
    EmptyComponent,
    /// A NUL byte, which would truncate the name at the syscall.
    Nul,
    /// A `/` in what must be a single file name.
    Separator,
    /// The existing path goes through a symbolic link leading outside the base.
    SymlinkEscape {
        /// The symlink (or the first existing path through it) found under the base.
        link: PathBuf,
        /// Where it resolves to.
        target: PathBuf,
    },
}

impl fmt::Display for UnsafePathReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsafePathReason::Empty => f.write_str("empty name"),
            UnsafePathReason::Absolute => f.write_str("absolute path"),
            UnsafePathReason::ParentDir => f.write_str("contains a '..' component"),
            UnsafePathReason::CurDir => f.write_str("contains a '.' component"),
            UnsafePathReason::EmptyComponent => f.write_str("contains an empty component"),
            UnsafePathReason::Nul => f.write_str("contains a NUL byte"),
            UnsafePathReason::Separator => f.write_str("a file name may not contain '/'"),
            UnsafePathReason::SymlinkEscape { link, target } => write!(
                f,
                "{} is a symbolic link to {}, outside the base directory",
                link.display(),
                target.display()
            ),
        }
    }
}

fn refuse(base: &Path, relative: &OsStr, reason: UnsafePathReason) -> StorageError {
    StorageError::UnsafePath {
        base: base.to_path_buf(),
        relative: PathBuf::from(relative),
        reason,
    }
}

/// Joins `relative` under `base` after checking it names something inside `base`: refuses
/// absolute names, `..` and `.` components, empty components (`a//b`) and NUL bytes. One
/// trailing `/` (as tar writes for directories) is accepted and dropped.
///
/// This is lexical only; see [`safe_join_no_symlink_escape`] when the tree may hold symlinks.
pub fn safe_join(base: &Path, relative: impl AsRef<OsStr>) -> Result<PathBuf, StorageError> {
    let relative = relative.as_ref();
    let bytes = relative.as_bytes();
    if bytes.is_empty() {
        return Err(refuse(base, relative, UnsafePathReason::Empty));
    }
    if bytes.contains(&0) {
        return Err(refuse(base, relative, UnsafePathReason::Nul));
    }
    if bytes[0] == b'/' {
        return Err(refuse(base, relative, UnsafePathReason::Absolute));
    }
    let trimmed = bytes.strip_suffix(b"/").unwrap_or(bytes);
    let mut joined = base.to_path_buf();
    for component in trimmed.split(|&b| b == b'/') {
        match component {
            b"" => return Err(refuse(base, relative, UnsafePathReason::EmptyComponent)),
            b"." => return Err(refuse(base, relative, UnsafePathReason::CurDir)),
            b".." => return Err(refuse(base, relative, UnsafePathReason::ParentDir)),
            name => joined.push(OsStr::from_bytes(name)),
        }
    }
    Ok(joined)
}

/// [`safe_join`] for a single file name (a WAL name from `put-wal`, a file found in
/// `incoming/`): additionally refuses any `/`.
pub fn safe_file_name(base: &Path, name: impl AsRef<OsStr>) -> Result<PathBuf, StorageError> {
    let name = name.as_ref();
    if name.as_bytes().contains(&b'/') {
        return Err(refuse(base, name, UnsafePathReason::Separator));
    }
    safe_join(base, name)
}

/// [`safe_join`], then walks the components that already exist under `base` and refuses the
/// name when one of them is a symbolic link resolving outside `base` (a tar that plants
/// `x -> /etc` and then writes `x/passwd`). Links that stay inside `base` are allowed.
pub fn safe_join_no_symlink_escape(
    base: &Path,
    relative: impl AsRef<OsStr>,
) -> Result<PathBuf, StorageError> {
    let relative = relative.as_ref();
    let joined = safe_join(base, relative)?;
    let real_base =
        fs::canonicalize(base).map_err(|e| StorageError::io(StorageOp::Metadata, base, e))?;
    let mut prefix = base.to_path_buf();
    for component in joined.strip_prefix(base).expect("joined under base").components() {
        prefix.push(component);
        match fs::symlink_metadata(&prefix) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = match fs::canonicalize(&prefix) {
                    Ok(t) => t,
                    // A dangling link: judge it by where it points.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        let link = fs::read_link(&prefix)
                            .map_err(|e| StorageError::io(StorageOp::ReadLink, &prefix, e))?;
                        let parent = prefix.parent().unwrap_or(base);
                        lexical_normalize(&parent.join(link))
                    }
                    Err(e) => return Err(StorageError::io(StorageOp::Metadata, &prefix, e)),
                };
                if !target.starts_with(&real_base) && !target.starts_with(base) {
                    return Err(refuse(
                        base,
                        relative,
                        UnsafePathReason::SymlinkEscape { link: prefix, target },
                    ));
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(StorageError::io(StorageOp::Metadata, &prefix, e)),
        }
    }
    Ok(joined)
}

/// Resolves `.` and `..` without touching the filesystem (for dangling links only).
fn lexical_normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn hostile_names_are_refused() {
        let base = Path::new("/var/lib/barman/pg/base/20261125T123610");
        let table: &[(&[u8], Option<UnsafePathReason>)] = &[
            (b"data/base/1/1259", None),
            (b"data/pg_wal/", None),
            (b"backup_manifest", None),
            (b"..data", None),
            (b"data/...", None),
            (b"", Some(UnsafePathReason::Empty)),
            (b"/", Some(UnsafePathReason::Absolute)),
            (b"/etc/passwd", Some(UnsafePathReason::Absolute)),
            (b"..", Some(UnsafePathReason::ParentDir)),
            (b"../x", Some(UnsafePathReason::ParentDir)),
            (b"data/../../x", Some(UnsafePathReason::ParentDir)),
            (b"data/..", Some(UnsafePathReason::ParentDir)),
            (b"data/../", Some(UnsafePathReason::ParentDir)),
            (b"./data", Some(UnsafePathReason::CurDir)),
            (b"data/./x", Some(UnsafePathReason::CurDir)),
            (b".", Some(UnsafePathReason::CurDir)),
            (b"data//x", Some(UnsafePathReason::EmptyComponent)),
            (b"data//", Some(UnsafePathReason::EmptyComponent)),
            (b"data\0/x", Some(UnsafePathReason::Nul)),
            (b"\0", Some(UnsafePathReason::Nul)),
        ];
        for (name, expected) in table {
            let result = safe_join(base, OsStr::from_bytes(name));
            match (result, expected) {
                (Ok(path), None) => assert!(path.starts_with(base), "{name:?}"),
                (Err(StorageError::UnsafePath { reason, .. }), Some(want)) => {
                    assert_eq!(&reason, want, "{name:?}")
                }
                (other, _) => panic!("{name:?}: unexpected {other:?}"),
            }
        }
        assert!(safe_file_name(base, "000000010000000000000001").is_ok());
        for bad in ["a/b", "a/", "/a", "..", "", "."] {
            assert!(safe_file_name(base, bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            safe_join(base, "data/pg_wal/").unwrap(),
            base.join("data").join("pg_wal")
        );
    }

    #[test]
    fn symlinks_escaping_the_base_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("base");
        let outside = root.path().join("outside");
        fs::create_dir_all(base.join("data/sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        symlink(&outside, base.join("data/evil")).unwrap();
        symlink("../../../outside", base.join("data/sub/rel-evil")).unwrap();
        symlink("sub", base.join("data/good")).unwrap();
        symlink("/nonexistent/dangling", base.join("data/dangling")).unwrap();
        symlink("sub/none", base.join("data/dangling-inside")).unwrap();

        for bad in ["data/evil/x", "data/evil", "data/sub/rel-evil/y", "data/dangling"] {
            let err = safe_join_no_symlink_escape(&base, bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    StorageError::UnsafePath { reason: UnsafePathReason::SymlinkEscape { .. }, .. }
                ),
                "{bad}: {err}"
            );
        }
        for good in ["data/good/file", "data/sub/new/deeper", "data/new", "data/dangling-inside"] {
            let path = safe_join_no_symlink_escape(&base, good).unwrap();
            assert_eq!(path, base.join(good));
        }
        assert!(safe_join_no_symlink_escape(&base, "../outside").is_err());
    }
}
