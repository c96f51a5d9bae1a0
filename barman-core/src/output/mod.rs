//! How Barman shows things: sizes, durations, dates, JSON, and the console / JSON / Nagios
//! renderings of the server diagnostics ([`render`]) and of the catalog ([`catalog`]).
//!
//! Barman's scripts and monitoring parse these texts, so each helper reproduces one function
//! of Barman 3.x byte for byte (`pretty_size`, `human_readable_timedelta`, `ctime()`,
//! `json.dumps(sort_keys=True)`, `redact_passwords`); each says which. The renderers for a
//! command live in [`render`]; they turn the data of [`crate::diagnostics`] into text and do
//! no I/O, so the CLI only prints what they return.

pub mod catalog;
pub mod render;

use std::time::Duration;

use serde_json::Value;

use crate::catalog::pyjson::Json;

/// Barman's `pretty_size` (base 1024): `"%d B"` under 1 KiB, `"%.1f KiB"`, `MiB`, … above.
pub fn pretty_size(size: f64) -> String {
    const SUFFIXES: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut size = size;
    for (i, suffix) in SUFFIXES.iter().enumerate() {
        if size.abs() < 1024.0 || i == SUFFIXES.len() - 1 {
            return if i == 0 {
                // Python's "%d" truncates towards zero.
                format!("{} {suffix}", size.trunc() as i64)
            } else {
                format!("{size:.1} {suffix}")
            };
        }
        size /= 1024.0;
    }
    unreachable!("the last suffix always returns")
}

/// Barman's `human_readable_timedelta`: `1 day, 2 hours, 3 minutes, 4 seconds`,
/// `less than one second`, with ` ago` appended when `negative`.
pub fn human_duration(delta: Duration, negative: bool) -> String {
    let total = delta.as_secs();
    let days = total / 86_400;
    let secs = total % 86_400;
    let parts = [(days, "day"), (secs / 3600, "hour"), ((secs / 60) % 60, "minute"), (secs % 60, "second")];
    let mut words = Vec::new();
    for (n, unit) in parts {
        if n > 0 {
            words.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
        }
    }
    let mut human = words.join(", ");
    if delta < Duration::from_secs(1) {
        human = "less than one second".to_owned();
    }
    if negative {
        human.push_str(" ago");
    }
    human
}

/// The signed difference `later - earlier` in seconds, as [`human_duration`] shows it.
pub fn human_age(seconds: f64) -> String {
    let negative = seconds < 0.0;
    human_duration(Duration::from_secs_f64(seconds.abs().min(1e15)), negative)
}

/// Python's `datetime.ctime()` of a Unix time in the local time zone
/// (`Wed Nov 25 12:33:55 2026`), as Barman prints dates in `status` and JSON.
pub fn ctime(epoch: f64) -> String {
    use chrono::TimeZone as _;
    let secs = epoch.floor() as i64;
    match chrono::Local.timestamp_opt(secs, 0) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.format("%a %b %e %H:%M:%S %Y").to_string()
        }
        chrono::LocalResult::None => epoch.to_string(),
    }
}

/// The current local time as Python's `datetime.now(tzlocal()).isoformat()`
/// (`2026-11-25T12:34:31.702241+00:00`), as `barman diagnose` stamps its report.
pub fn iso_now() -> String {
    chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string()
}

/// The current local time as Python's `str(datetime.now())` (`2026-11-25 12:32:10.852816`),
/// as Barman prints a backup's start.
pub fn local_now() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// The current local time as Python's `str(datetime.now(tzlocal()))`
/// (`2026-11-25 12:35:32.934166+00:00`), as Barman prints a restore's start.
pub fn local_now_with_offset() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string()
}

/// Python's `str()` of a timezone-aware datetime from PostgreSQL's text form:
/// `2026-11-25 12:33:55.815961+00` becomes `2026-11-25 12:33:55.815961+00:00`.
pub fn python_timestamp(pg_text: &str) -> String {
    let Some(sign_at) = pg_text.rfind(['+', '-']).filter(|&i| i > 10) else { return pg_text.to_owned() };
    let (head, offset) = pg_text.split_at(sign_at);
    let digits = &offset[1..];
    let normal = match digits.len() {
        2 => format!("{}{digits}:00", &offset[..1]),
        _ => offset.to_owned(),
    };
    format!("{head}{normal}")
}

/// Barman's `redact_passwords`: `password=...` in key/value connection strings and the
/// password of a `postgresql://user:password@` URI become `*REDACTED*`.
pub fn redact_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("password=") {
        out.push_str(&rest[..at + "password=".len()]);
        let value = &rest[at + "password=".len()..];
        let consumed = if let Some(quoted) = value.strip_prefix('\'') {
            // '...' with \' escapes; an unterminated quote is left as it is.
            let mut end = None;
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' => {
                        end = Some(i + 2);
                        break;
                    }
                    _ => {}
                }
            }
            end.unwrap_or(0)
        } else {
            value.find([' ', '\'', '"']).unwrap_or(value.len())
        };
        out.push_str("*REDACTED*");
        rest = &value[consumed..];
    }
    out.push_str(rest);
    redact_uri_passwords(&out)
}

fn redact_uri_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    const SCHEME: &str = "postgresql://";
    while let Some(at) = rest.find(SCHEME) {
        out.push_str(&rest[..at + SCHEME.len()]);
        let after = &rest[at + SCHEME.len()..];
        // user:password@ with no space, ':' or '@' inside either part.
        let user_end = after.find([' ', ':', '@']).unwrap_or(after.len());
        if user_end > 0 && after[user_end..].starts_with(':') {
            let pw = &after[user_end + 1..];
            let pw_end = pw.find([' ', ':', '@']).unwrap_or(pw.len());
            if pw[pw_end..].starts_with('@') {
                out.push_str(&after[..=user_end]);
                out.push_str("*REDACTED*@");
                rest = &pw[pw_end + 1..];
                continue;
            }
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Applies [`redact_passwords`] to every string of a JSON value.
pub fn redact_json(value: &mut Value) {
    match value {
        Value::String(s) if s.contains("password=") || s.contains("postgresql://") => *s = redact_passwords(s),
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::Object(map) => map.values_mut().for_each(redact_json),
        _ => {}
    }
}

/// Python's `json.dumps(value, sort_keys=True)`: `", "` and `": "` separators, non-ASCII
/// escaped as `\uXXXX`, keys sorted (serde_json's map is ordered), no trailing newline
/// ([`crate::catalog::pyjson`]).
pub fn python_json(value: &Value) -> String {
    Json::from_value(value).dumps(None)
}

/// Python's `json.dumps(value, indent=4, sort_keys=True)` (as `barman diagnose` prints).
pub fn python_json_pretty(value: &Value) -> String {
    Json::from_value(value).dumps(Some(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_barman_prints_them() {
        let cases = [
            (0.0, "0 B"),
            (682.0, "682 B"),
            (1023.0, "1023 B"),
            (1024.0, "1.0 KiB"),
            (1_003_202.0, "979.7 KiB"),
            (37_576_284.0, "35.8 MiB"),
            (37_748_736.0, "36.0 MiB"),
            (-3_244_432.0, "-3.1 MiB"),
            (-56.0, "-56 B"),
        ];
        for (n, text) in cases {
            assert_eq!(pretty_size(n), text, "{n}");
        }
    }

    #[test]
    fn durations_as_barman_prints_them() {
        let d = |s| Duration::from_secs(s);
        assert_eq!(human_duration(d(86_400), false), "1 day");
        assert_eq!(human_duration(d(63), false), "1 minute, 3 seconds");
        assert_eq!(human_duration(d(8), false), "8 seconds");
        assert_eq!(human_duration(d(2 * 86_400 + 3600), false), "2 days, 1 hour");
        assert_eq!(human_duration(Duration::from_millis(200), false), "less than one second");
        assert_eq!(human_duration(d(5), true), "5 seconds ago");
        assert_eq!(human_age(-5.2), "5 seconds ago");
    }

    #[test]
    fn timestamps() {
        assert_eq!(python_timestamp("2026-11-25 12:33:55.815961+00"), "2026-11-25 12:33:55.815961+00:00");
        assert_eq!(python_timestamp("2026-11-25 12:33:55+05:30"), "2026-11-25 12:33:55+05:30");
        assert_eq!(python_timestamp("2026-11-25 12:33:55-03"), "2026-11-25 12:33:55-03:00");
    }

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            ("host=a password=s3cret user=b", "host=a password=*REDACTED* user=b"),
            ("password='a b\\' c' port=1", "password=*REDACTED* port=1"),
            ("postgresql://bob:pw@host/db", "postgresql://bob:*REDACTED*@host/db"),
            ("postgresql://bob@host/db", "postgresql://bob@host/db"),
            ("no secret here", "no secret here"),
        ];
        for (text, redacted) in cases {
            assert_eq!(redact_passwords(text), redacted, "{text}");
        }
    }

    #[test]
    fn json_like_python() {
        let v: Value = serde_json::json!({"pg": {"b": [1, "é"], "a": null, "c": true}});
        assert_eq!(python_json(&v), r#"{"pg": {"a": null, "b": [1, "\u00e9"], "c": true}}"#);
        let pretty = python_json_pretty(&serde_json::json!({"a": {}, "b": [1]}));
        assert_eq!(pretty, "{\n    \"a\": {},\n    \"b\": [\n        1\n    ]\n}");
    }
}
