//! `begin_time` / `end_time` of `backup.info`: Python's `str(datetime)`.
//!
//! Barman writes `YYYY-MM-DD HH:MM:SS[.ffffff]+HH:MM` (microseconds omitted when exactly
//! zero, the offset gaining `:SS` only when it has seconds) and reads with `dateutil`, giving
//! a value without an offset the *local* zone (`load_datetime_tz` in `barman/infofile.py`).
//! [`BarmanTimestamp`] keeps "no offset" as it was read, so such a file is written back as it
//! was; [`BarmanTimestamp::assume_offset`] applies the local zone when a caller needs an
//! instant. Parsing accepts Barman's form plus the ISO `T` separator, `Z`, `+HHMM` and `+HH`
//! offsets, and 1–6 fraction digits — not everything `dateutil` guesses at.

use std::fmt;
use std::str::FromStr;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// A wall-clock time with its UTC offset, as Barman stores it (`str(datetime)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BarmanTimestamp {
    /// The wall-clock date and time.
    pub datetime: PrimitiveDateTime,
    /// The UTC offset written after it; `None` for a naive value (which Barman reads as local
    /// time).
    pub offset: Option<UtcOffset>,
}

impl BarmanTimestamp {
    /// The instant of an offset-aware value.
    pub fn to_offset_datetime(self) -> Option<OffsetDateTime> {
        self.offset.map(|o| self.datetime.assume_offset(o))
    }

    /// The instant, reading a naive value as being at `local` (Barman uses the local zone).
    pub fn assume_offset(self, local: UtcOffset) -> OffsetDateTime {
        self.datetime.assume_offset(self.offset.unwrap_or(local))
    }
}

impl From<OffsetDateTime> for BarmanTimestamp {
    /// Keeps the value's own offset (PostgreSQL's `CURRENT_TIMESTAMP` is in the session's zone).
    fn from(t: OffsetDateTime) -> Self {
        BarmanTimestamp {
            datetime: PrimitiveDateTime::new(t.date(), t.time()),
            offset: Some(t.offset()),
        }
    }
}

impl fmt::Display for BarmanTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.datetime;
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        )?;
        if d.microsecond() != 0 {
            write!(f, ".{:06}", d.microsecond())?;
        }
        if let Some(offset) = self.offset {
            let total = offset.whole_seconds();
            let sign = if total < 0 { '-' } else { '+' };
            let abs = total.unsigned_abs();
            write!(f, "{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60)?;
            if abs % 60 != 0 {
                write!(f, ":{:02}", abs % 60)?;
            }
        }
        Ok(())
    }
}

/// The text is not a timestamp barman-rs understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a timestamp like 2026-11-25 12:33:54.004487+00:00")]
pub struct ParseTimestampError(pub String);

fn digits<T: FromStr>(s: &str, n: usize) -> Option<T> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn parse_offset(s: &str) -> Option<UtcOffset> {
    if s == "Z" {
        return Some(UtcOffset::UTC);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1i8, &s[1..]),
        b'-' => (-1i8, &s[1..]),
        _ => return None,
    };
    let (h, m, sec) = if rest.contains(':') {
        let mut parts = rest.split(':');
        let h = digits::<i8>(parts.next()?, 2)?;
        let m = digits::<i8>(parts.next()?, 2)?;
        let sec = match parts.next() {
            Some(p) => digits::<i8>(p, 2)?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        (h, m, sec)
    } else {
        match rest.len() {
            2 => (digits::<i8>(rest, 2)?, 0, 0),
            4 => (digits::<i8>(&rest[..2], 2)?, digits::<i8>(&rest[2..], 2)?, 0),
            _ => return None,
        }
    };
    // Python's timezone requires |offset| < 24h.
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    UtcOffset::from_hms(sign * h, sign * m, sign * sec).ok()
}

impl FromStr for BarmanTimestamp {
    type Err = ParseTimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTimestampError(s.to_owned());
        if !s.is_ascii() || s.len() < 19 {
            return Err(err());
        }
        let (date, rest) = s.split_at(10);
        let sep = rest.as_bytes()[0];
        if sep != b' ' && sep != b'T' {
            return Err(err());
        }
        let rest = &rest[1..];
        let (clock, mut tail) = rest.split_at(8);
        let year = digits::<i32>(&date[0..4], 4).ok_or_else(err)?;
        let month = digits::<u8>(&date[5..7], 2).ok_or_else(err)?;
        let day = digits::<u8>(&date[8..10], 2).ok_or_else(err)?;
        if &date[4..5] != "-" || &date[7..8] != "-" || &clock[2..3] != ":" || &clock[5..6] != ":"
        {
            return Err(err());
        }
        let hour = digits::<u8>(&clock[0..2], 2).ok_or_else(err)?;
        let minute = digits::<u8>(&clock[3..5], 2).ok_or_else(err)?;
        let second = digits::<u8>(&clock[6..8], 2).ok_or_else(err)?;
        let mut micro = 0u32;
        if let Some(frac) = tail.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 || n > 6 {
                return Err(err());
            }
            micro = frac[..n].parse::<u32>().map_err(|_| err())? * 10u32.pow(6 - n as u32);
            tail = &frac[n..];
        }
        let offset = if tail.is_empty() { None } else { Some(parse_offset(tail).ok_or_else(err)?) };
        let month = Month::try_from(month).map_err(|_| err())?;
        let date = Date::from_calendar_date(year, month, day).map_err(|_| err())?;
        let time = Time::from_hms_micro(hour, minute, second, micro).map_err(|_| err())?;
        Ok(BarmanTimestamp { datetime: PrimitiveDateTime::new(date, time), offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_str_datetime_round_trips() {
        for text in [
            "2026-11-25 12:33:54.004487+00:00",
            "2026-11-25 12:33:54+00:00",
            "2026-11-25 12:33:54.000001-05:30",
            "2026-11-25 12:33:54+05:30:15",
            "0001-01-01 00:00:00",
            "2024-02-29 23:59:59.999999+14:00",
        ] {
            let t: BarmanTimestamp = text.parse().unwrap();
            assert_eq!(t.to_string(), text);
        }
    }

    #[test]
    fn lenient_forms_normalise() {
        let cases = [
            ("2026-11-25T12:33:54Z", "2026-11-25 12:33:54+00:00"),
            ("2026-11-25 12:33:54.5+0100", "2026-11-25 12:33:54.500000+01:00"),
            ("2026-11-25 12:33:54-03", "2026-11-25 12:33:54-03:00"),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<BarmanTimestamp>().unwrap().to_string(), want);
        }
        for bad in [
            "",
            "2026-11-25",
            "2026-02-30 00:00:00",
            "2026-11-25 24:00:00",
            "2026-11-25 12:33:54.",
            "2026-11-25 12:33:54.1234567",
            "2026-11-25 12:33:54 UTC",
            "2026-11-25 12:33:54+25:00",
            "2026/11/25 12:33:54",
        ] {
            assert!(bad.parse::<BarmanTimestamp>().is_err(), "{bad}");
        }
    }

    #[test]
    fn instants() {
        let t: BarmanTimestamp = "2026-11-25 12:33:54+01:00".parse().unwrap();
        assert_eq!(t.to_offset_datetime().unwrap().unix_timestamp(), 1795606434);
        let naive: BarmanTimestamp = "2026-11-25 11:33:54".parse().unwrap();
        assert!(naive.to_offset_datetime().is_none());
        assert_eq!(naive.assume_offset(UtcOffset::UTC).unix_timestamp(), 1795606434);
    }
}
