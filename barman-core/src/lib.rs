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
pub mod ssh;
pub mod storage;
pub mod sync;
pub mod wal;

/// An error and its causes on one line, `what: why: deeper cause`, each cause once (a
/// wrapper that already quotes its source's text does not repeat it). For messages that must
/// fit Barman's one-line forms (`error=` in backup.info, `ERROR:` lines).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}
