//! BASE_BACKUP answers: arbitrary backend frames fed to the decoder of either wire format
//! never panic, and every archive it reports has a plain file name.
#![no_main]

use barman_replication::basebackup::BaseBackupDecoder;
use barman_replication::codec::decode_backend;
use barman_replication::BaseBackupEvent;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for major in [14, 16] {
        let mut buf = BytesMut::from(data);
        let mut decoder = BaseBackupDecoder::new(major);
        while let Ok(Some(msg)) = decode_backend(&mut buf, 1 << 20) {
            if decoder.feed(msg).is_err() {
                break;
            }
            while let Some(e) = decoder.next_event() {
                if let BaseBackupEvent::ArchiveStart { name, .. } = e {
                    assert!(!name.is_empty() && !name.contains('/') && !name.starts_with('.'));
                }
            }
        }
    }
});
