//! START_REPLICATION CopyData payloads: never panic; what decodes re-encodes to bytes that
//! decode to the same message, and to the same bytes except a keepalive's reply flag (any
//! non-zero byte means "reply", as in pg_receivewal; it is written back as 1); the stream state
//! never accepts WAL that is not contiguous.
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
        assert_eq!(WalSenderMessage::parse(out.clone().freeze()).expect("re-encoded parses"), msg);
        if let WalSenderMessage::Keepalive { reply_requested, .. } = msg {
            assert_eq!(out[..17], data[..17]);
            assert_eq!(out[17..], [u8::from(reply_requested)]);
            assert_eq!(reply_requested, data[17] != 0);
        } else {
            assert_eq!(&out[..], data);
        }
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
