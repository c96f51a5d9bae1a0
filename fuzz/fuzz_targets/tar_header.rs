//! The BASE_BACKUP tar reader: arbitrary bytes in arbitrary chunks never panic, never yield
//! more data than a file's declared size, and give the same events whatever the chunking.
#![no_main]

use barman_core::backup::tar_stream::{EntryKind, TarError, TarEvent, TarStream};
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], chunk: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut t = TarStream::new();
    let mut left = 0u64;
    for c in data.chunks(chunk) {
        let r = t.feed::<TarError>(c, &mut |e| {
            match e {
                TarEvent::Entry(e) => {
                    if let EntryKind::File { size } = e.kind {
                        left = size;
                    }
                    out.push(format!("{e:?}"));
                }
                TarEvent::Data(d) => {
                    assert!(d.len() as u64 <= left);
                    left -= d.len() as u64;
                    out.push(format!("data{}", d.len()));
                }
                TarEvent::End => out.push("end".into()),
            }
            Ok(())
        });
        if let Err(e) = r {
            out.push(format!("error {e}"));
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let a = run(data, data.len().max(1)).into_iter().filter(|s| !s.starts_with("data")).collect::<Vec<_>>();
    let b = run(data, 7).into_iter().filter(|s| !s.starts_with("data")).collect::<Vec<_>>();
    assert_eq!(a, b);
});
