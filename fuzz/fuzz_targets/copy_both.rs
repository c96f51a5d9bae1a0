//! START_REPLICATION CopyData payloads: never panic; what decodes re-encodes to the same
//! bytes; the stream state never accepts WAL that is not contiguous.
#![no_main]

use std::time::Instant;

use barman_replication::codec::WalSenderMessage;
use barman_replication::{Lsn, StreamOptions, WalStream};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = WalSenderMessage::parse(Bytes::copy_from_slice(data)) {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        assert_eq!(&out[..], data);
    }
    // Feed the input, cut into payloads by its own first bytes, to a stream.
    let mut s = WalStream::new(Lsn(0), StreamOptions::default());
    let now = Instant::now();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len());
        let before = s.received();
        if let Ok(Some(barman_replication::StreamEvent::WalData { start, data })) = s.feed(Bytes::copy_from_slice(&tail[..n]), now) {
            assert_eq!(start, before);
            assert_eq!(s.received().0, before.0 + data.len() as u64);
        }
        rest = &tail[n..];
    }
});
