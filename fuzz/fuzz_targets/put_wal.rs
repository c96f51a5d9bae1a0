//! `barman put-wal`'s tar input (`barman_core::put_wal`), as `barman-wal-archive` sends it.
//!
//! There is no sans-I/O entry point for the whole stream: `receive` writes to the catalog. So
//! each input goes two ways and the two must agree:
//!
//! * in memory, through the pure pieces `receive` is built from (`classify_member`,
//!   `parse_checksums`, `verify`, `Hasher`) over the same `tar` reader: accepted names are plain
//!   WAL names or a checksum file, and `verify` only passes files whose digest is in the file;
//! * through `receive` itself into a fresh catalog on tmpfs (`/dev/shm` when there is one):
//!   it succeeds exactly when the pure pipeline does, stores exactly those files with their
//!   content, and on failure leaves `incoming/` empty and writes nothing anywhere else.
#![no_main]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use barman_core::catalog::ServerCatalog;
use barman_core::put_wal::{
    classify_member, parse_checksums, receive, verify, ChecksumAlgorithm, ChecksumFile, MemberKind, Origin,
    ReceivedDigests,
};
use libfuzzer_sys::fuzz_target;

/// What `receive` should store: name → content, or why it refuses.
fn in_memory(data: &[u8], origin: &Origin) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files: Vec<(String, ReceivedDigests, Vec<u8>)> = Vec::new();
    let mut sums = ChecksumFile::default();
    let mut algorithm = ChecksumAlgorithm::Sha256;
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let header = entry.header();
        let (type_flag, is_regular) = (header.entry_type().as_byte(), header.entry_type().is_file());
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let (name, kind) = classify_member(&raw, is_regular, type_flag, origin).map_err(|e| e.to_string())?;
        assert!(!name.is_empty() && !name.contains('/') && !name.starts_with('.'), "{name:?} accepted");
        match kind {
            MemberKind::Checksums(found) => {
                assert_eq!(found.sums_file_name(), name);
                let mut text = Vec::new();
                entry.by_ref().take(1024 * 1024).read_to_end(&mut text).map_err(|e| e.to_string())?;
                sums.merge(parse_checksums(&String::from_utf8_lossy(&text)));
                if found == ChecksumAlgorithm::Md5 {
                    algorithm = found;
                }
            }
            MemberKind::Wal(wal) => {
                assert_eq!(wal.to_string(), name);
                let mut content = Vec::new();
                entry.read_to_end(&mut content).map_err(|e| e.to_string())?;
                let digest = |a: ChecksumAlgorithm| {
                    let mut h = a.hasher();
                    h.update(&content);
                    h.finish_hex()
                };
                let digests =
                    ReceivedDigests { md5: digest(ChecksumAlgorithm::Md5), sha256: digest(ChecksumAlgorithm::Sha256) };
                files.retain(|(n, _, _)| *n != name);
                files.push((name, digests, content));
            }
        }
    }
    let received: Vec<(String, ReceivedDigests)> = files.iter().map(|(n, d, _)| (n.clone(), d.clone())).collect();
    verify(&received, &sums, algorithm, origin).map_err(|e| e.to_string())?;
    for (name, digests, _) in &files {
        assert_eq!(sums.get(name), Some(digests.get(algorithm)), "verify passed {name} without its checksum");
    }
    Ok(files.into_iter().map(|(n, _, c)| (n, c)).collect())
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let dir = base.join(format!("barman-fuzz-put-wal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

fn tree(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).expect("readable").map(|e| e.expect("entry")) {
        let p = e.path();
        out.push(p.strip_prefix(scratch()).expect("inside").display().to_string());
        if e.file_type().expect("type").is_dir() {
            tree(&p, out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The checksum-file parser alone, on any text.
    let parsed = parse_checksums(&String::from_utf8_lossy(data));
    for (name, _) in &parsed.entries {
        assert_eq!(parsed.entries.iter().filter(|(n, _)| n == name).count(), 1, "duplicate {name:?}");
    }

    let origin = Origin::new("pg", None);
    let expected = in_memory(data, &origin);

    static RUN: AtomicU64 = AtomicU64::new(0);
    let root = scratch().join(RUN.fetch_add(1, Ordering::Relaxed).to_string());
    let catalog = ServerCatalog::new("pg", root.join("pg"), &root);
    let now = time::OffsetDateTime::from_unix_timestamp(1_764_000_000).expect("valid");
    let got = receive(&catalog, &origin, data, now, &mut |_| {});

    let mut stored = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(catalog.incoming_directory()) {
        for e in dir.map(|e| e.expect("entry")) {
            stored.insert(e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("readable"));
        }
    }
    let mut all = Vec::new();
    tree(&root, &mut all);
    all.sort();
    std::fs::remove_dir_all(&root).expect("cleanup");

    let incoming = catalog.incoming_directory().strip_prefix(scratch()).expect("inside").display().to_string();
    for p in &all {
        assert!(incoming.starts_with(p.as_str()) || p.starts_with(&incoming), "wrote {p} outside incoming/");
    }
    match (expected, got) {
        (Ok(files), Ok(outcomes)) => {
            assert_eq!(outcomes.len(), files.len());
            assert_eq!(stored, files, "stored files differ from the stream's");
        }
        (Err(_), Err(_)) => assert!(stored.is_empty(), "a refused stream left {:?}", stored.keys()),
        (want, got) => panic!("pure pipeline {:?} but receive {:?}", want.map(|f| f.into_keys().collect::<Vec<_>>()), got),
    }
});
