//! Backend frame decoder: never panics, never consumes more than it was given, and what it
//! decodes re-encodes to bytes that decode to the same messages.
#![no_main]

use barman_replication::codec::decode_backend;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut decoded = Vec::new();
    while let Ok(Some(msg)) = decode_backend(&mut buf, 1 << 20) {
        decoded.push(msg);
    }
    assert!(buf.len() <= data.len());
    let mut wire = BytesMut::new();
    for m in &decoded {
        m.encode(&mut wire);
    }
    let mut again = Vec::new();
    while let Some(m) = decode_backend(&mut wire, 1 << 20).expect("re-encoded frames decode") {
        again.push(m);
    }
    assert_eq!(again, decoded);
    assert!(wire.is_empty());
});
