//! Backup annotations as Barman's `AnnotationManagerFile` keeps them (`barman/annotations.py`):
//! one small file per backup and key, `meta/<ID>-<key>`, holding the value without a newline.
//! Barman < 3.13.3 kept them in `base/<ID>/annotations/<key>`; like Barman, commands that
//! change annotations first move such a file to the new place.
//!
//! Two keys are used: `keep` ([`KeepTarget`], `barman keep`) and `delete_this`, the marker a
//! deletion leaves while it runs so that `cron` finishes a deletion that was interrupted.

use std::path::PathBuf;

use super::policy::KeepTarget;
use super::RetentionError;
use crate::catalog::{BackupId, ServerCatalog};
use crate::storage::{self, StorageError, atomic_write, create_dir_all_durable, durable_rename, fsync_dir, DIR_MODE, FILE_MODE};

/// The annotation `barman keep` writes.
pub const KEEP: &str = "keep";
/// The annotation a deletion in progress leaves (Barman's `DELETE_ANNOTATION`).
pub const DELETE_THIS: &str = "delete_this";

fn legacy_path(catalog: &ServerCatalog, id: BackupId, key: &str) -> PathBuf {
    catalog.backup_dir(id).join("annotations").join(key)
}

/// The annotation's content, from either place, without moving anything (for the reading
/// commands). `None` when there is none.
pub fn read(catalog: &ServerCatalog, id: BackupId, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
    if let Some(bytes) = storage::fs::read_if_exists(&catalog.annotation_path(id, key))? {
        return Ok(Some(bytes));
    }
    storage::fs::read_if_exists(&legacy_path(catalog, id, key))
}

/// Moves a pre-3.13.3 annotation to `meta/` (Barman's `_check_and_relocate_old_annotation`).
fn relocate(catalog: &ServerCatalog, id: BackupId, key: &str) -> Result<(), RetentionError> {
    let old = legacy_path(catalog, id, key);
    if storage::fs::exists(&old)? {
        create_dir_all_durable(&catalog.meta_dir(), DIR_MODE)?;
        durable_rename(&old, &catalog.annotation_path(id, key))?;
    }
    Ok(())
}

/// Writes the annotation durably (temporary file, fsync, rename, fsync of `meta/`).
pub fn put(catalog: &ServerCatalog, id: BackupId, key: &str, value: &str) -> Result<(), RetentionError> {
    create_dir_all_durable(&catalog.meta_dir(), DIR_MODE)?;
    atomic_write(&catalog.annotation_path(id, key), value.as_bytes(), FILE_MODE)?;
    Ok(())
}

/// Removes the annotation (from either place); a missing one is not an error.
pub fn remove(catalog: &ServerCatalog, id: BackupId, key: &str) -> Result<(), RetentionError> {
    relocate(catalog, id, key)?;
    let path = catalog.annotation_path(id, key);
    if storage::fs::exists(&path)? {
        storage::fs::remove_file_if_exists(&path)?;
        fsync_dir(&catalog.meta_dir())?;
    }
    Ok(())
}

/// The keep target of `id` as the retention report reads it.
pub fn keep_target(catalog: &ServerCatalog, id: BackupId) -> Result<Option<KeepTarget>, StorageError> {
    Ok(read(catalog, id, KEEP)?.and_then(|b| KeepTarget::from_annotation(&b)))
}

/// Whether `id` has a keep annotation at all (Barman's `should_keep_backup`: even an empty
/// file refuses a `delete`).
pub fn has_keep(catalog: &ServerCatalog, id: BackupId) -> Result<bool, StorageError> {
    Ok(read(catalog, id, KEEP)?.is_some())
}

/// `barman keep --target`.
pub fn keep(catalog: &ServerCatalog, id: BackupId, target: KeepTarget) -> Result<(), RetentionError> {
    relocate(catalog, id, KEEP)?;
    put(catalog, id, KEEP, target.as_str())
}

/// `barman keep --release`.
pub fn release_keep(catalog: &ServerCatalog, id: BackupId) -> Result<(), RetentionError> {
    remove(catalog, id, KEEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_file_is_barmans() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = ServerCatalog::new("pg", dir.path().join("pg"), dir.path());
        catalog.create_skeleton().unwrap();
        let id: BackupId = "20261125T123233".parse().unwrap();
        assert_eq!(keep_target(&catalog, id).unwrap(), None);
        keep(&catalog, id, KeepTarget::Standalone).unwrap();
        // Sample catalog/20261125T123233-keep: the word, no newline.
        let sample =
            std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/catalog/20261125T123233-keep")).unwrap();
        assert_eq!(std::fs::read(catalog.keep_path(id)).unwrap(), sample);
        assert_eq!(keep_target(&catalog, id).unwrap(), Some(KeepTarget::Standalone));
        release_keep(&catalog, id).unwrap();
        assert!(!catalog.keep_path(id).exists());
        release_keep(&catalog, id).unwrap();

        // A pre-3.13.3 annotation is read in place and moved when changed.
        let legacy = catalog.backup_dir(id).join("annotations");
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(legacy.join("keep"), b"full").unwrap();
        assert!(has_keep(&catalog, id).unwrap());
        assert_eq!(keep_target(&catalog, id).unwrap(), Some(KeepTarget::Full));
        keep(&catalog, id, KeepTarget::Standalone).unwrap();
        assert!(!legacy.join("keep").exists());
        assert_eq!(keep_target(&catalog, id).unwrap(), Some(KeepTarget::Standalone));
    }
}
