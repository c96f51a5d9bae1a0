//! Barman's domain, rebuilt: configuration, the catalog on disk, WAL, backup and recovery.
//!
//! Policy lives here; bytes on the wire live in `barman-replication`; argument parsing and
//! rendering live in `barman-cli`.

#![warn(missing_docs)]

pub mod archive_wal;
pub mod backup;
pub mod catalog;
pub mod compression;
pub mod config;
pub mod diagnostics;
pub mod get_wal;
pub mod hooks;
pub mod output;
pub mod put_wal;
pub mod receive_wal;
pub mod recovery;
pub mod retention;
pub mod storage;
pub mod wal;
