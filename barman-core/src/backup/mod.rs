//! Taking backups: the streaming executor (`backup_method = postgres`) and the pieces it is
//! built from.
//!
//! * [`tar_stream`] reads the tar archives BASE_BACKUP sends, without buffering files.
//! * [`extract`] writes one out as a plain directory tree, durably and safely.
//! * [`compressed`] writes them as compressed tars (`backup_compression`) and reads those back.
//! * [`streaming`] takes a whole backup into the catalog (`backup_method = postgres`).
//! * [`stall`] tells a frozen BASE_BACKUP stream from a server busy saying nothing.
//! * [`standby`] is what a backup from a standby adds: WAL switches on its primary.
//! * [`rsync`] takes one with rsync over ssh between `pg_backup_start` and `pg_backup_stop`
//!   (`backup_method = rsync`), or with a local rsync on the database host
//!   (`backup_method = local-rsync`), from the server [`facts`] it shares with [`streaming`].
//! * [`catalog_entry`] opens, fills and closes a backup's entry in the catalog for both.
//! * [`manifest`] checks a backup against its `backup_manifest` (`verify-backup`) and writes
//!   one for a backup that has none (`generate-manifest`).

pub(crate) mod catalog_entry;
pub mod compressed;
pub mod extract;
pub(crate) mod facts;
pub mod manifest;
pub mod rsync;
pub mod standby;
mod stall;
pub mod streaming;
pub mod tar_stream;
