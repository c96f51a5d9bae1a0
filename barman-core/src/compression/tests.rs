//! Round trips for every algorithm, Barman's magic-byte detection, level resolution, and
//! streams written by Python's `gzip`, `bz2`, `lz4.frame` and `zstandard` (the libraries
//! Barman 3.x compresses with), captured as hex below, to prove barman-rs reads Barman's WAL.

use super::*;

/// What the Python fixtures compress.
fn fixture_data() -> Vec<u8> {
    let mut data = b"barman-rs WAL compression fixture ".repeat(8);
    data.extend(0..=255u8);
    data
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

// Produced by Barman's own calls: `lz4.frame.open(f, mode="wb", compression_level=6)` (lz4
// 4.4.5: linked blocks, 64 KiB), `zstandard.ZstdCompressor(level=4).stream_writer`,
// `gzip.GzipFile("000000010000000000000007.compressed", "wb", 6)`, `bz2.compress(data, 5)`.
const PY_LZ4_FRAME: &str = concat!(
    "04224d184040c029010000ff136261726d616e2d72732057414c20636f6d7072657373696f6e20666978747572652022",
    "00dbf0f1000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b",
    "2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b",
    "5c5d5e5f606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b",
    "8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babb",
    "bcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaeb",
    "ecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff00000000",
);
const PY_ZSTD: &str = concat!(
    "28b52ffd00585d090024126261726d616e2d72732057414c20636f6d7072657373696f6e206669787475726520000102",
    "030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132",
    "333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162",
    "636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192",
    "939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2",
    "c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2",
    "f3f4f5f6f7f8f9fafbfcfdfeff01005a174a3d01",
);
const PY_GZIP: &str = concat!(
    "1f8b0808a9d5066b00ff3030303030303031303030303030303030303030303030372e636f6d70726573736564004b4a",
    "2cca4dccd32d2a560877f45148cecf2d284a2d2ececccf5348cbac28292d4a55481a512a181899985958d9d83938b9b8",
    "7978f9f8050485844544c5c42524a5a46564e5e4151495945554d5d43534b5b47574f5f40d0c8d8c4d4ccdcc2d2cadac",
    "6d6cedec1d1c9d9c5d5cdddc3d3cbdbc7d7cfdfc030283824342c3c22322a3a26362e3e2131293925352d3d23332b3b2",
    "7372f3f20b0a8b8a4b4acbca2b2aabaa6b6aebea1b1a9b9a5b5adbda3b3abbba7b7afbfa274c9c3479cad469d367cc9c",
    "357bcedc79f3172c5cb478c9d265cb57ac5cb57acdda75eb376cdcb479cbd66ddb77ecdcb57bcfde7dfb0f1c3c74f8c8",
    "d163c74f9c3c75faccd973e72f5cbc74f9cad56bd76fdcbc75fbcedd7bf71f3c7cf4f8c9d367cf5fbc7cf5facddb77ef",
    "3f7cfcf4f9cbd76fdf7ffcfcf5fbcfdf7fff01293ac9be10020000",
);
const PY_BZIP2: &str = concat!(
    "425a6835314159265359875774fa00005cffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffb0011b458930004c0004c000000000000000000000000000000000000000000000000000000002aa9a60004c00",
    "00000000000134c0000230000000000000000268c23268c00004c09930000000000009548d20d4c344f50c9a19343400",
    "0d320313234c46400064034c8c350d018234c2686869934d003464c9a000068d3464c41a0d00d340640c8d3430022da9",
    "12a299595d61653d91696d717542f2fd954d9acf686061b4b15aad76c636477657e012a0862c05405c0a8acb0b4b8bcc",
    "0c4c8ccd0d44c0001b1b9c1c9d1d9e1e9f1fa020a121a222a323a424ae80004b4c4d4e4ff8a87c945493818dbce3b1f9",
    "0c8e4b2794cae5afe065d8330eaed99cd66f399dcf2a034002e2087f9e1144079d301a2480392601e9edf1d004407d55",
    "a34e06934a00a005f5002c8188564c03f6a004802c00e2069d68050029012eac047528027d52e8003d063dbe3ebf3fc0",
    "40c141c242c343c444c545c646c747c848c949ca4acb4bcc4ccd4dce4ecf4fd050d151d252d37d69e969a9ea2a6aaaeb",
    "2b6babec2c6caced2d6dadee2e6eaeef2f6faff03070b0f13171b1f23272b2f33373b3f43474b4f53575b5f63676b6f7",
    "3777b7f83878b8f93979b9fa3a7abafb3b7bbbfc3c7cbcfd3d7dbdfe3e7ebeff3f45dc914e142421d5dd3e80",
);

/// Something WAL-like: a page header, records, a long zero tail.
fn wal_like() -> Vec<u8> {
    let mut v = Vec::with_capacity(1 << 20);
    for i in 0..4096u32 {
        v.extend_from_slice(&i.to_le_bytes());
        v.extend_from_slice(b"\x10\xd1\x02\x00some record payload");
    }
    v.resize(1 << 20, 0);
    v
}

fn compress(settings: &WalCompression, algorithm: Option<Compression>, data: &[u8]) -> Vec<u8> {
    let mut enc = settings.encoder(algorithm, "000000010000000000000001", 1_700_000_000, Vec::new()).unwrap();
    // Odd-sized writes, to exercise buffering.
    for chunk in data.chunks(7777) {
        enc.write_all(chunk).unwrap();
    }
    enc.finish().unwrap()
}

fn decompress(settings: &WalCompression, algorithm: Option<Compression>, data: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    settings.decoder(algorithm, io::Cursor::new(data)).unwrap().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn every_supported_algorithm_round_trips_and_is_identified_by_its_barman_name() {
    let data = wal_like();
    // (configured, what identify reports: the alphabetically first name sharing the magic)
    let cases = [
        (Compression::Gzip, Compression::Gzip),
        (Compression::Pygzip, Compression::Gzip),
        (Compression::Pigz, Compression::Gzip),
        (Compression::Bzip2, Compression::Bzip2),
        (Compression::Pybzip2, Compression::Bzip2),
        (Compression::Zstd, Compression::Zstd),
        (Compression::Lz4, Compression::Lz4),
    ];
    for (algorithm, identified) in cases {
        for level in [None, Some(CompressionLevel::Low), Some(CompressionLevel::High), Some(CompressionLevel::Level(3))] {
            let settings = WalCompression { algorithm: Some(algorithm), level, ..Default::default() };
            let packed = compress(&settings, Some(algorithm), &data);
            assert!(packed.len() < data.len() / 4, "{algorithm} at {level:?} did not compress");
            assert!(packed.starts_with(magic(algorithm).unwrap()), "{algorithm}: magic");
            assert_eq!(settings.identify(&packed), Some(identified), "{algorithm}");
            assert_eq!(decompress(&settings, Some(identified), packed), data, "{algorithm} at {level:?}");
        }
    }
}

#[test]
fn no_compression_passes_bytes_through() {
    let settings = WalCompression::none();
    let data = wal_like();
    let stored = compress(&settings, None, &data);
    assert_eq!(stored, data);
    assert_eq!(settings.identify(&stored), None, "a WAL page header is no compression magic");
    assert_eq!(decompress(&settings, None, stored), data);
}

#[test]
fn reads_what_barmans_python_libraries_wrote() {
    let settings = WalCompression::none();
    for (hex, algorithm) in [
        (PY_LZ4_FRAME, Compression::Lz4),
        (PY_ZSTD, Compression::Zstd),
        (PY_GZIP, Compression::Gzip),
        (PY_BZIP2, Compression::Bzip2),
    ] {
        let bytes = unhex(hex);
        assert_eq!(identify(&bytes, None), Some(algorithm));
        assert_eq!(decompress(&settings, Some(algorithm), bytes), fixture_data(), "{algorithm}");
    }
}

#[test]
fn gzip_header_names_the_wal_file() {
    let settings = WalCompression::with(Compression::Gzip);
    let packed = compress(&settings, Some(Compression::Gzip), b"x");
    assert_eq!(&packed[..4], b"\x1f\x8b\x08\x08", "FNAME flag set, like Barman's");
    assert_eq!(&packed[4..8], &1_700_000_000u32.to_le_bytes());
    assert_eq!(&packed[10..35], b"000000010000000000000001\0");
}

#[test]
fn concatenated_gzip_members_read_as_one_stream() {
    let settings = WalCompression::with(Compression::Gzip);
    let mut two = compress(&settings, Some(Compression::Gzip), b"first ");
    two.extend(compress(&settings, Some(Compression::Gzip), b"second"));
    assert_eq!(decompress(&settings, Some(Compression::Gzip), two), b"first second");
}

#[test]
fn identify_follows_barmans_alphabetical_registry() {
    let cases: [(&[u8], Option<Compression>); 9] = [
        (b"BZh91AY&SY", Some(Compression::Bzip2)),
        (b"\x1f\x8b\x08\x00", Some(Compression::Gzip)),
        (b"\x04\x22\x4d\x18\x60", Some(Compression::Lz4)),
        (b"\xff\x06\x00\x00sNaPpY", Some(Compression::Snappy)),
        (b"\xfd7zXZ\x00\x00", Some(Compression::Xz)),
        (b"(\xb5/\xfd\x00", Some(Compression::Zstd)),
        (b"\x10\xd1\x02\x00\x01\x00\x00\x00", None),
        (b"\x1f\x8b", None),
        (b"", None),
    ];
    for (start, expected) in cases {
        assert_eq!(identify(start, None), expected, "{start:02x?}");
    }
    // A configured custom magic sorts before gzip, so it wins over gzip's magic.
    assert_eq!(identify(b"\x1f\x8b\x08\x00", Some(b"\x1f\x8b")), Some(Compression::Custom));
    assert_eq!(identify(b"CUSTOMxyz", Some(b"CUSTOM")), Some(Compression::Custom));
    assert_eq!(identify(b"CUSTOMxyz", Some(b"")), None);
}

#[test]
fn unidentified_archived_files_are_custom_only_without_a_custom_magic() {
    let mut s = WalCompression::with(Compression::Custom);
    assert_eq!(s.identify(b"plain"), None, "incoming/: unrecognised means uncompressed");
    assert_eq!(s.identify_archived(b"plain"), Some(Compression::Custom));
    s.custom.magic = Some(b"MAG".to_vec());
    assert_eq!(s.identify_archived(b"plain"), None);
    assert_eq!(s.identify_archived(b"MAGIC"), Some(Compression::Custom));
    assert_eq!(WalCompression::with(Compression::Gzip).identify_archived(b"plain"), None);
}

#[test]
fn levels_resolve_as_barmans_compressor_classes() {
    use CompressionLevel::*;
    let cases = [
        (Compression::Gzip, None, Some(6)),
        (Compression::Gzip, Some(Low), Some(1)),
        (Compression::Gzip, Some(High), Some(9)),
        (Compression::Gzip, Some(Level(0)), Some(1)),
        (Compression::Gzip, Some(Level(12)), Some(9)),
        (Compression::Bzip2, Some(Medium), Some(5)),
        (Compression::Zstd, None, Some(4)),
        (Compression::Zstd, Some(High), Some(9)),
        (Compression::Zstd, Some(Level(-5)), Some(-5)),
        (Compression::Zstd, Some(Level(99)), Some(22)),
        (Compression::Lz4, Some(Low), Some(0)),
        (Compression::Lz4, Some(High), Some(10)),
        (Compression::Xz, Some(High), Some(5)),
        (Compression::Custom, Some(High), None),
        (Compression::Custom, Some(Level(3)), Some(3)),
    ];
    for (algorithm, level, expected) in cases {
        assert_eq!(resolve_level(algorithm, level), expected, "{algorithm} {level:?}");
    }
}

#[test]
fn custom_magic_parses_like_unhexlify() {
    assert_eq!(parse_custom_magic("0x1f8b").unwrap(), b"\x1f\x8b");
    assert_eq!(parse_custom_magic("0XABCD01").unwrap(), b"\xab\xcd\x01");
    for bad in ["1f8b", "0x", "0x1", "0xzz", ""] {
        assert!(matches!(parse_custom_magic(bad), Err(CompressionError::BadCustomMagic(_))), "{bad:?}");
    }
}

#[test]
fn xz_and_snappy_are_detected_but_refused() {
    for algorithm in [Compression::Xz, Compression::Snappy] {
        let s = WalCompression::with(algorithm);
        assert!(matches!(s.encoder(Some(algorithm), "x", 0, Vec::new()), Err(CompressionError::Unsupported(a)) if a == algorithm));
        assert!(matches!(s.decoder(Some(algorithm), io::empty()), Err(CompressionError::Unsupported(_))));
    }
}

#[test]
fn custom_filters_run_through_the_shell() {
    let s = WalCompression {
        algorithm: Some(Compression::Custom),
        level: None,
        custom: CustomFilters {
            compress: Some("printf MAGIC; gzip -c -1".into()),
            decompress: Some("tail -c +6 | gzip -d -c".into()),
            magic: Some(b"MAGIC".to_vec()),
            path_prefix: Some("/nonexistent/bin".into()),
        },
    };
    let data = wal_like();
    let packed = compress(&s, Some(Compression::Custom), &data);
    assert!(packed.starts_with(b"MAGIC\x1f\x8b"));
    assert_eq!(s.identify(&packed), Some(Compression::Custom));
    assert_eq!(decompress(&s, Some(Compression::Custom), packed), data);
}

#[test]
fn a_failing_custom_filter_is_an_error_with_its_stderr() {
    let s = WalCompression {
        algorithm: Some(Compression::Custom),
        level: None,
        custom: CustomFilters {
            compress: Some("cat >/dev/null; echo boom >&2; exit 3".into()),
            decompress: Some("cat >/dev/null; exit 4".into()),
            magic: None,
            path_prefix: None,
        },
    };
    let mut enc = s.encoder(Some(Compression::Custom), "x", 0, Vec::new()).unwrap();
    enc.write_all(&wal_like()).unwrap();
    match enc.finish() {
        Err(CompressionError::FilterFailed { stderr, status, .. }) => {
            assert_eq!(stderr, "boom");
            assert_eq!(status.code(), Some(3));
        }
        other => panic!("{other:?}"),
    }
    let mut out = Vec::new();
    let err = s.decoder(Some(Compression::Custom), io::Cursor::new(wal_like())).unwrap().read_to_end(&mut out).unwrap_err();
    assert!(err.to_string().contains("failed"), "{err}");
    // Abandoning an encoder mid-stream stops the filter without hanging.
    let mut enc = s.encoder(Some(Compression::Custom), "x", 0, Vec::new()).unwrap();
    enc.write_all(b"partial").unwrap();
    drop(enc);
}

#[test]
fn a_corrupt_stream_is_a_read_error() {
    let settings = WalCompression::with(Compression::Zstd);
    let mut packed = compress(&settings, Some(Compression::Zstd), &wal_like());
    packed.truncate(packed.len() / 2);
    let mut out = Vec::new();
    assert!(settings.decoder(Some(Compression::Zstd), io::Cursor::new(packed)).unwrap().read_to_end(&mut out).is_err());
}

#[test]
fn custom_compression_without_filters_is_refused() {
    let s = WalCompression::with(Compression::Custom);
    assert!(matches!(
        s.encoder(Some(Compression::Custom), "x", 0, Vec::new()),
        Err(CompressionError::MissingFilter("custom_compression_filter"))
    ));
}
