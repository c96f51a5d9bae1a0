//! Python's `json.dumps` as Barman calls it, byte for byte: one writer for every JSON text
//! barman-rs shares with Barman.
//!
//! * `identity.json` ([`super::identity`]): `json.dump(…, indent=4, sort_keys=True)` plus a
//!   newline;
//! * `-f json` output and `check`'s JSON ([`crate::output::python_json`]):
//!   `json.dumps(…, sort_keys=True)`, one line with `", "` and `": "` separators; `diagnose`
//!   ([`crate::output::python_json_pretty`]) with `indent=4`;
//! * `sync-info` ([`crate::sync::info`]): `json.dump(…, indent=4)`, keys in Barman's insertion
//!   order (the configuration's 122 keys are in Barman's internal order, not sorted). A Barman
//!   passive node only parses it, but writing it as Barman does keeps the two interchangeable.
//!
//! [`Json`] keeps an object's keys in the order given, so `sort_keys` is the caller's: a value
//! from a `serde_json` map ([`Json::from_value`]) comes sorted (barman-rs builds `serde_json`
//! without `preserve_order`). The layout ([`Json::dumps`]) is Python's: with an indent,
//! `",\n"` between items, `": "` after keys, `{}`/`[]` when empty; without, `", "` and `": "`
//! on one line; strings with `ensure_ascii` escapes (`\uXXXX`, lower-case hex, surrogate pairs
//! beyond the BMP); floats as Python's `repr`.

use std::fmt::Write as _;

/// A JSON value whose objects keep their keys in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, already in its text form (Python's `repr` for floats).
    Number(String),
    /// A string.
    Str(String),
    /// `[…]`.
    Array(Vec<Json>),
    /// `{…}`, in this order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// An integer.
    pub fn int(n: impl Into<i128>) -> Json {
        Json::Number(n.into().to_string())
    }

    /// A float, as Python's `repr`.
    pub fn float(x: f64) -> Json {
        Json::Number(crate::catalog::pyliteral::float_repr(x))
    }

    /// A string, or `null`.
    pub fn opt_str(s: Option<impl Into<String>>) -> Json {
        s.map_or(Json::Null, |s| Json::Str(s.into()))
    }

    /// From a `serde_json` value (objects in that value's order).
    pub fn from_value(v: &serde_json::Value) -> Json {
        use serde_json::Value as V;
        match v {
            V::Null => Json::Null,
            V::Bool(b) => Json::Bool(*b),
            V::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
                Some(f) => Json::float(f),
                None => Json::Number(n.to_string()),
            },
            V::String(s) => Json::Str(s.clone()),
            V::Array(items) => Json::Array(items.iter().map(Json::from_value).collect()),
            V::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), Json::from_value(v))).collect()),
        }
    }

    /// The text `json.dumps(value, indent=indent)` writes (`None`: one line), no trailing
    /// newline.
    pub fn dumps(&self, indent: Option<usize>) -> String {
        let mut out = String::new();
        self.write(&mut out, indent, 0);
        out
    }

    fn write(&self, out: &mut String, indent: Option<usize>, level: usize) {
        // Before an item: the separator from the previous one, then the item's own line.
        let item = |out: &mut String, first: bool, level: usize| {
            match (first, indent) {
                (false, None) => out.push_str(", "),
                (false, Some(_)) => out.push(','),
                (true, _) => {}
            }
            if let Some(n) = indent {
                out.push('\n');
                out.push_str(&" ".repeat(n * level));
            }
        };
        let close = |out: &mut String, level: usize, bracket: char| {
            if let Some(n) = indent {
                out.push('\n');
                out.push_str(&" ".repeat(n * level));
            }
            out.push(bracket);
        };
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n),
            Json::Str(s) => write_str(out, s),
            Json::Array(items) if items.is_empty() => out.push_str("[]"),
            Json::Object(items) if items.is_empty() => out.push_str("{}"),
            Json::Array(items) => {
                out.push('[');
                for (i, value) in items.iter().enumerate() {
                    item(out, i == 0, level + 1);
                    value.write(out, indent, level + 1);
                }
                close(out, level, ']');
            }
            Json::Object(items) => {
                out.push('{');
                for (i, (key, value)) in items.iter().enumerate() {
                    item(out, i == 0, level + 1);
                    write_str(out, key);
                    out.push_str(": ");
                    value.write(out, indent, level + 1);
                }
                close(out, level, '}');
            }
        }
    }
}

/// A string as Python's `json` module writes it with `ensure_ascii=True`.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_as_python_json_dump_with_indent_4() {
        let doc = Json::Object(vec![
            ("last_position".into(), Json::int(647)),
            ("last_name".into(), Json::Str("00000001000000000000000A".into())),
            ("backups".into(), Json::Object(vec![])),
            ("wals".into(), Json::Array(vec![Json::Object(vec![("time".into(), Json::float(1795609930.903503))])])),
            ("tablespaces".into(), Json::Array(vec![Json::Array(vec![Json::Str("tbs1".into()), Json::int(16384)])])),
            ("empty".into(), Json::Array(vec![])),
            ("odd".into(), Json::Str("é\"\\\n\u{1}\u{1F600}\u{7f}".into())),
            ("none".into(), Json::Null),
            ("yes".into(), Json::Bool(true)),
        ]);
        let expected = "{\n    \"last_position\": 647,\n    \"last_name\": \"00000001000000000000000A\",\n    \
            \"backups\": {},\n    \"wals\": [\n        {\n            \"time\": 1795609930.903503\n        }\n    ],\n    \
            \"tablespaces\": [\n        [\n            \"tbs1\",\n            16384\n        ]\n    ],\n    \
            \"empty\": [],\n    \"odd\": \"\\u00e9\\\"\\\\\\n\\u0001\\ud83d\\ude00\\u007f\",\n    \"none\": null,\n    \"yes\": true\n}";
        assert_eq!(doc.dumps(Some(4)), expected);
    }

    #[test]
    fn writes_as_python_json_dumps_on_one_line() {
        let doc = Json::Object(vec![
            ("pg".into(), Json::Object(vec![("a".into(), Json::Null), ("b".into(), Json::Array(vec![Json::int(1), Json::Str("é".into())]))])),
            ("e".into(), Json::Array(vec![])),
            ("f".into(), Json::float(1e-05)),
        ]);
        assert_eq!(doc.dumps(None), r#"{"pg": {"a": null, "b": [1, "\u00e9"]}, "e": [], "f": 1e-05}"#);
    }
}
