//! Fuzzes the configuration reader: the INI parser and the whole loader on arbitrary bytes.
//!
//! Beyond "no panic" it checks what the loader promises: every located key points at a line
//! that exists in the input, keys are lowercase, and text that `ini::write` produced from the
//! parsed sections parses back to the same sections.
#![no_main]

use std::path::Path;

use barman_core::config::{ini, Config, MemoryFs};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = Path::new("/etc/barman.conf");

    // The whole loader, from memory (it refuses non-UTF-8 with a located error).
    let mut fs = MemoryFs::new();
    fs.add(path, data.to_vec());
    let _ = Config::load_with(&fs, path, None);

    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(doc) = ini::parse(path, text) else { return };
    // Python counts lines after \n, \r\n or \r; an upper bound is enough here.
    let max_line = text.matches(['\n', '\r']).count() as u32 + 1;
    let sections: Vec<(String, Vec<(String, String)>)> = doc
        .sections
        .iter()
        .map(|s| {
            for e in &s.entries {
                assert!(e.line >= 1 && e.line <= max_line, "line {} out of range", e.line);
                assert_eq!(e.key, e.key.to_lowercase());
            }
            (s.name.clone(), s.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect())
        })
        .collect();

    // Round trip, when the names and values are ones `write` can express faithfully.
    let writable = sections.iter().all(|(name, entries)| {
        name != "DEFAULT"
            && !name.contains(['\n', '\r'])
            && !name.starts_with(|c: char| c.is_whitespace())
            && entries.iter().all(|(k, v)| {
                !k.contains(['=', ':', '\n', '\r', '[', '#', ';'])
                    && !k.starts_with(|c: char| c.is_whitespace())
                    && !v.contains('\r')
                    && v.split('\n').all(|l| !l.starts_with(['#', ';']) && l.trim() == l)
            })
    });
    if writable {
        let again = ini::parse(path, &ini::write(&sections)).expect("written text parses");
        let back: Vec<(String, Vec<(String, String)>)> = again
            .sections
            .iter()
            .map(|s| (s.name.clone(), s.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect()))
            .collect();
        assert_eq!(back, sections);
    }
});
