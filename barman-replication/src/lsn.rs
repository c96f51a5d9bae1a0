//! Log sequence numbers, the byte positions of PostgreSQL's write-ahead log.
//!
//! An LSN is a 64-bit offset into the WAL stream. Its text form, used on the wire
//! (`START_REPLICATION 0/3000000`, `IDENTIFY_SYSTEM`'s `xlogpos`) and in Barman's
//! `backup.info` (`begin_xlog=0/3000028`), is two upper-case hex halves separated by a
//! slash, without leading zeros: `16/B374D848`.

use std::fmt;
use std::str::FromStr;

/// A position in the WAL stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid position `0/0`.
    pub const INVALID: Lsn = Lsn(0);

    /// The position `bytes` after this one, or `None` past the end of the address space.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// The start of the WAL segment holding this position, for segments of `segment_size` bytes
    /// (a power of two between 1 MiB and 1 GiB).
    pub fn segment_start(self, segment_size: u64) -> Lsn {
        Lsn(self.0 - self.0 % segment_size)
    }

    /// The offset of this position inside its segment.
    pub fn segment_offset(self, segment_size: u64) -> u64 {
        self.0 % segment_size
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text was not an LSN of the form `hex/hex`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hex numbers separated by '/', like 16/B374D848")]
pub struct ParseLsnError(pub String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |h: &str| {
            if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u32::from_str_radix(h, 16).map_err(|_| err())
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

/// A timeline identifier: a new timeline starts at every promotion or point-in-time recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimelineId(pub u32);

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The database system identifier from `pg_control`, chosen by `initdb` and shared by a
/// primary and all its physical standbys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form() {
        let cases = [
            (0u64, "0/0"),
            (0x3000028, "0/3000028"),
            (0x16_B374_D848, "16/B374D848"),
            (u64::MAX, "FFFFFFFF/FFFFFFFF"),
        ];
        for (value, text) in cases {
            assert_eq!(Lsn(value).to_string(), text);
            assert_eq!(text.parse::<Lsn>().unwrap(), Lsn(value));
        }
        assert_eq!("0/3000028".parse::<Lsn>(), "00000000/03000028".parse());
        assert_eq!("a/b".parse::<Lsn>().unwrap(), Lsn(0xA_0000_000B));
        for bad in ["", "/", "0/", "/0", "0", "0/0/0", "g/0", "123456789/0", "+1/0", " 0/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn segments() {
        let seg = 16 << 20;
        assert_eq!(Lsn(0x3000028).segment_start(seg), Lsn(0x3000000));
        assert_eq!(Lsn(0x3000028).segment_offset(seg), 0x28);
    }

    mod proptests {
        use super::super::Lsn;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn display_parse_round_trip(v: u64) {
                prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
            }

            #[test]
            fn parse_never_panics(s in ".{0,24}") {
                let _ = s.parse::<Lsn>();
            }
        }
    }
}
