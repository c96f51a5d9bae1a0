//! End-to-end tests of barman-rs against real PostgreSQL clusters, one binary of topic modules
//! over the shared harness in `tests/src/`. Each `pg_test!` runs once per major, 13 to 18.

mod archive_wal;
mod backup;
mod backup_compression;
mod backup_faults;
mod basebackup;
mod catalog_commands;
mod check_wal_archive;
mod cli_cycle;
mod config_models;
mod connection;
mod crash_safety;
mod delta_restore;
mod faults;
mod hooks;
mod incremental_backup;
mod incremental_recovery;
mod passive_node;
mod processes;
mod receive_wal;
mod recovery;
mod recovery_targets;
mod remote_recovery;
mod retention;
mod rsync_backup;
mod security;
mod streaming;
mod wal_helpers;
mod server_commands;
mod standby_backup;
