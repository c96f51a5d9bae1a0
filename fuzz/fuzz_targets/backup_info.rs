//! Fuzzes the backup.info reader (`barman_core::catalog::BackupInfo`): arbitrary bytes never
//! panic, and whatever parses writes back to bytes that parse to the same value and write back
//! identically (parse → write → parse is stable).
#![no_main]

use barman_core::catalog::{BackupId, BackupInfo};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let id: BackupId = "20261125T123210".parse().expect("valid ID");
    let Ok(info) = BackupInfo::parse(id, data) else { return };
    let written = info.to_bytes().expect("a parsed backup.info is always writable");
    let again = BackupInfo::parse(id, &written).expect("written backup.info reads back");
    assert_eq!(again.to_bytes().expect("writable"), written, "write is not stable");
    assert_eq!(again.extra, info.extra);
    assert_eq!(again.status, info.status);
});
