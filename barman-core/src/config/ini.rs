//! The INI reader: Python `configparser` syntax, as Barman configures it, with line numbers.
//!
//! Barman builds `ConfigParser(strict=False)` with the default `BasicInterpolation`, so this
//! module reproduces exactly that dialect and nothing more:
//!
//! - a section header is a stripped line matching `\[(.+)\]` from its first character; the name
//!   is everything up to the *last* `]` and is case-sensitive (`[PG]` is not `[pg]`); text after
//!   that `]` is ignored, as Python does;
//! - an option line is split at the first `=` or `:`; the key is trimmed and lowercased, the
//!   value trimmed; a line without a delimiter or with an empty key is a syntax error;
//! - a line whose stripped text starts with `#` or `;` is a comment, wherever it is indented;
//!   there are **no inline comments**: `compression = gzip # fast` has the value `gzip # fast`;
//! - a line indented deeper than its option line continues the value (joined with `\n`); blank
//!   lines inside a continued value are kept, trailing ones dropped;
//! - with `strict=False`, a section or key may repeat: sections merge and the later value of a
//!   key wins, keeping the key's first position;
//! - `[DEFAULT]` is not a section: its keys are visible from every section of the same file.
//!
//! Python's parser forgets where a value came from, which is why this is our own reader and not
//! the `configparser` crate: every key keeps its file and line so that warnings and errors can
//! say `/etc/barman.d/pg.conf:12`. Lines end at `\n`, `\r\n` or `\r` (Python's universal
//! newlines); "whitespace" is Python's `str.isspace`, which is Unicode `White_Space` plus the
//! ASCII separators U+001C–U+001F.

use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// A place in a configuration file: what every warning and error points at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The file, as it was named when read (not canonicalized).
    pub path: PathBuf,
    /// 1-based line number; for a continued value, the line holding its key.
    pub line: u32,
}

impl Location {
    /// Builds a location from a path and a 1-based line number.
    pub fn new(path: impl Into<PathBuf>, line: u32) -> Self {
        Location { path: path.into(), line }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// One `key = value` after continuation lines were joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    /// Lowercased key.
    pub key: String,
    /// Raw value (not interpolated, quotes kept), continuation lines joined with `\n`.
    pub value: String,
    /// The line holding the key (of the last assignment when the key repeats).
    pub line: u32,
}

/// A section of one file, possibly assembled from several headers with the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniSection {
    /// The name between the brackets, exactly as written.
    pub name: String,
    /// The line of every header that opened this section, in file order.
    pub header_lines: Vec<u32>,
    /// Keys in first-appearance order; a repeated key replaced its value in place.
    pub entries: Vec<IniEntry>,
}

impl IniSection {
    fn new(name: String, line: u32) -> Self {
        IniSection { name, header_lines: vec![line], entries: Vec::new() }
    }

    /// The entry for `key` (already lowercased), if the section sets it.
    pub fn get(&self, key: &str) -> Option<&IniEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    fn set(&mut self, key: String, value: String, line: u32) -> usize {
        if let Some(i) = self.entries.iter().position(|e| e.key == key) {
            self.entries[i] = IniEntry { key, value, line };
            i
        } else {
            self.entries.push(IniEntry { key, value, line });
            self.entries.len() - 1
        }
    }
}

/// One parsed file: its `[DEFAULT]` keys and its sections in first-appearance order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniDocument {
    /// Where the text came from; used in every [`Location`].
    pub path: PathBuf,
    /// Keys of the `[DEFAULT]` section (empty when there is none).
    pub defaults: Vec<IniEntry>,
    /// Every other section, in the order their first header appears.
    pub sections: Vec<IniSection>,
}

impl IniDocument {
    /// The section called `name`, if the file has one.
    pub fn section(&self, name: &str) -> Option<&IniSection> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Where `line` of this file is.
    pub fn location(&self, line: u32) -> Location {
        Location::new(&self.path, line)
    }
}

/// Python's `str.isspace`.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Splits at `\n`, `\r\n` and `\r`, like Python's text-mode file iteration.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(['\n', '\r']) {
            None => Some(std::mem::take(&mut rest)),
            Some(i) => {
                let line = &rest[..i];
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
                Some(line)
            }
        }
    })
}

/// The name of the section header on a stripped line, as Python's `\[(?P<header>.+)\]` finds it.
fn section_header(value: &str) -> Option<&str> {
    let inner = value.strip_prefix('[')?;
    let close = inner.rfind(']')?;
    (close > 0).then(|| &inner[..close])
}

/// Which section the parser is filling.
#[derive(Clone, Copy)]
enum Target {
    Defaults,
    Section(usize),
}

/// Parses the text of one configuration file.
///
/// `path` only labels locations; nothing is read from disk. Errors stop at the first problem
/// (Python collects every bad line of a file before failing; Barman then exits either way).
pub fn parse(path: &Path, text: &str) -> Result<IniDocument, ConfigError> {
    let mut doc = IniDocument { path: path.to_path_buf(), defaults: Vec::new(), sections: Vec::new() };
    // Value lines of the option being read, joined once the file is done.
    let mut pending: Vec<Vec<String>> = Vec::new();
    let mut defaults = IniSection::new(String::new(), 0);
    let mut current: Option<Target> = None;
    // (target, entry index) of the option that continuation lines extend.
    let mut option: Option<(Target, usize)> = None;
    let mut indent_level = 0usize;
    // Where each entry's value lines live in `pending`: parallel to entries.
    let mut slots_defaults: Vec<usize> = Vec::new();
    let mut slots: Vec<Vec<usize>> = Vec::new();

    for (index, line) in lines(text).enumerate() {
        let lineno = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let stripped = py_strip(line);
        let is_comment = stripped.starts_with('#') || stripped.starts_with(';');
        let value = if is_comment { "" } else { stripped };
        if value.is_empty() {
            // A blank line (not a comment) becomes part of a value that may continue below.
            if !is_comment {
                if let Some((target, i)) = option {
                    let slot = match target {
                        Target::Defaults => slots_defaults[i],
                        Target::Section(s) => slots[s][i],
                    };
                    pending[slot].push(String::new());
                }
            }
            continue;
        }
        let indent = line.chars().take_while(|c| is_py_space(*c)).count();
        if let (Some((target, i)), true) = (option, indent > indent_level) {
            let slot = match target {
                Target::Defaults => slots_defaults[i],
                Target::Section(s) => slots[s][i],
            };
            pending[slot].push(value.to_owned());
            continue;
        }
        indent_level = indent;
        if let Some(name) = section_header(value) {
            if name == "DEFAULT" {
                current = Some(Target::Defaults);
            } else if let Some(s) = doc.sections.iter().position(|s| s.name == name) {
                doc.sections[s].header_lines.push(lineno);
                current = Some(Target::Section(s));
            } else {
                doc.sections.push(IniSection::new(name.to_owned(), lineno));
                slots.push(Vec::new());
                current = Some(Target::Section(doc.sections.len() - 1));
            }
            option = None;
            continue;
        }
        let Some(target) = current else {
            return Err(ConfigError::MissingSectionHeader {
                location: doc.location(lineno),
                text: line.to_owned(),
            });
        };
        let Some(split) = value.find(['=', ':']) else {
            return Err(ConfigError::Syntax {
                location: doc.location(lineno),
                text: line.to_owned(),
                expected: "a `key = value` or `key: value` line, a [section] header or a comment",
            });
        };
        let key = value[..split].trim_end_matches(is_py_space);
        if key.is_empty() {
            return Err(ConfigError::Syntax {
                location: doc.location(lineno),
                text: line.to_owned(),
                expected: "a key before the `=` or `:`",
            });
        }
        let key = key.to_lowercase();
        let first = py_strip(&value[split + 1..]).to_owned();
        pending.push(vec![first]);
        let slot = pending.len() - 1;
        let (section, slot_list) = match target {
            Target::Defaults => (&mut defaults, &mut slots_defaults),
            Target::Section(s) => (&mut doc.sections[s], &mut slots[s]),
        };
        let i = section.set(key, String::new(), lineno);
        if i == slot_list.len() {
            slot_list.push(slot);
        } else {
            slot_list[i] = slot;
        }
        option = Some((target, i));
    }

    let join = |slot: usize| pending[slot].join("\n").trim_end_matches(is_py_space).to_owned();
    for (entry, slot) in defaults.entries.iter_mut().zip(&slots_defaults) {
        entry.value = join(*slot);
    }
    for (section, section_slots) in doc.sections.iter_mut().zip(&slots) {
        for (entry, slot) in section.entries.iter_mut().zip(section_slots) {
            entry.value = join(*slot);
        }
    }
    doc.defaults = defaults.entries;
    Ok(doc)
}

/// Writes sections back as text that [`parse`] reads to the same entries.
///
/// Multi-line values are indented on their continuation lines; empty lines inside a value are
/// written as-is, as configparser would keep them. Used by tests and by tools that generate
/// configuration; it does not preserve comments.
pub fn write(sections: &[(String, Vec<(String, String)>)]) -> String {
    let mut out = String::new();
    for (name, entries) in sections {
        out.push('[');
        out.push_str(name);
        out.push_str("]\n");
        for (key, value) in entries {
            out.push_str(key);
            out.push_str(" = ");
            let mut parts = value.split('\n');
            out.push_str(parts.next().unwrap_or(""));
            out.push('\n');
            for part in parts {
                if !part.is_empty() {
                    out.push_str("    ");
                }
                out.push_str(part);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> IniDocument {
        parse(Path::new("t.conf"), text).expect("parses")
    }

    fn values(d: &IniDocument, section: &str) -> Vec<(String, String, u32)> {
        d.section(section)
            .expect("section exists")
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone(), e.line))
            .collect()
    }

    fn kv(k: &str, v: &str, l: u32) -> (String, String, u32) {
        (k.to_owned(), v.to_owned(), l)
    }

    #[test]
    fn good_inputs() {
        type Row = (String, String, u32);
        let table: &[(&str, Vec<Row>)] = &[
            ("[s]\na = 1\n", vec![kv("a", "1", 2)]),
            ("[s]\nA: 1\n", vec![kv("a", "1", 2)]),
            ("[s]\na:b = c\n", vec![kv("a", "b = c", 2)]),
            ("[s]\na = b : c\n", vec![kv("a", "b : c", 2)]),
            ("[s]\na = v # not a comment\n", vec![kv("a", "v # not a comment", 2)]),
            ("[s]\n  # comment\n; other\na =\n", vec![kv("a", "", 4)]),
            ("[s]\na = 1\n  two\n\tthree\n", vec![kv("a", "1\ntwo\nthree", 2)]),
            ("[s]\na = 1\n\n  y\n\n\n", vec![kv("a", "1\n\ny", 2)]),
            ("[s]\na = 1\n  # hidden\n  y\n", vec![kv("a", "1\ny", 2)]),
            ("[s]\na = 1\nb = 2\na = 3\n", vec![kv("a", "3", 4), kv("b", "2", 3)]),
            ("[s]\r\na = 1\r\nb = 2\rc=3", vec![kv("a", "1", 2), kv("b", "2", 3), kv("c", "3", 4)]),
            ("[s]x\na=1\n", vec![kv("a", "1", 2)]),
            ("  [s]\n  a = 1\n    b\n", vec![kv("a", "1\nb", 2)]),
            ("[s]\na = 1\n  [t]\n", vec![kv("a", "1\n[t]", 2)]),
        ];
        for (text, expected) in table {
            assert_eq!(&values(&doc(text), "s"), expected, "input {text:?}");
        }
    }

    #[test]
    fn sections_merge_and_keep_names_verbatim() {
        let d = doc("[a]\nx=1\n[ B ]\ny=2\n[a]\nz=3\n[a]b]\n");
        let names: Vec<_> = d.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", " B ", "a]b"]);
        assert_eq!(d.sections[0].header_lines, [1, 5]);
        assert_eq!(values(&d, "a"), [kv("x", "1", 2), kv("z", "3", 6)]);
    }

    #[test]
    fn default_section_is_separate() {
        let d = doc("[DEFAULT]\nk = v\n[s]\na = 1\n");
        assert_eq!(d.defaults, [IniEntry { key: "k".into(), value: "v".into(), line: 2 }]);
        assert_eq!(d.sections.len(), 1);
    }

    #[test]
    fn bad_inputs() {
        let table = [
            ("a = 1\n", "t.conf:1: no [section] header before this line: \"a = 1\""),
            ("# c\n\n  b: 2\n", "t.conf:3: no [section] header before this line: \"  b: 2\""),
            ("[s]\njust words\n", "t.conf:2: cannot parse \"just words\": expected a `key = value` or `key: value` line, a [section] header or a comment"),
            ("[s]\n = v\n", "t.conf:2: cannot parse \" = v\": expected a key before the `=` or `:`"),
            ("[s]\n[]\n", "t.conf:2: cannot parse \"[]\": expected a `key = value` or `key: value` line, a [section] header or a comment"),
        ];
        for (text, message) in table {
            let err = parse(Path::new("t.conf"), text).expect_err(text);
            assert_eq!(err.to_string(), message, "input {text:?}");
        }
    }

    mod proptests {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(text in "\\PC*") {
                let _ = parse(Path::new("p.conf"), &text);
            }

            #[test]
            fn never_panics_on_ini_like(text in "([\\[\\]=:#; \t\r\na-z%()]|\n  ){0,200}") {
                if let Ok(d) = parse(Path::new("p.conf"), &text) {
                    for s in &d.sections {
                        for e in &s.entries {
                            prop_assert!(e.line >= 1);
                            prop_assert_eq!(e.key.to_lowercase(), e.key.clone());
                        }
                    }
                }
            }

            #[test]
            fn written_config_round_trips(
                sections in proptest::collection::btree_map(
                    "[a-z][a-z0-9_-]{0,8}",
                    proptest::collection::btree_map(
                        "[a-z][a-z0-9_]{0,12}",
                        "[a-zA-Z0-9/_.,%() -]{0,20}(\n[a-zA-Z0-9/_ ]{0,10}){0,2}",
                        0..6,
                    ),
                    1..5,
                )
            ) {
                let input: Vec<(String, Vec<(String, String)>)> = sections
                    .iter()
                    .filter(|(name, _)| name.as_str() != "DEFAULT")
                    .map(|(name, entries)| {
                        let entries = entries
                            .iter()
                            .map(|(k, v)| {
                                // configparser trims every line of a value and drops trailing blanks.
                                let v = v.split('\n').map(py_strip).collect::<Vec<_>>().join("\n");
                                (k.clone(), v.trim_end().to_owned())
                            })
                            .collect();
                        (name.clone(), entries)
                    })
                    .collect();
                let text = write(&input);
                let d = parse(Path::new("p.conf"), &text).expect("written text parses");
                let back: Vec<(String, Vec<(String, String)>)> = d
                    .sections
                    .iter()
                    .map(|s| (s.name.clone(), s.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect()))
                    .collect();
                prop_assert_eq!(back, input);
            }
        }
    }
}
