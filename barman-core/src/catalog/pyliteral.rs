//! The subset of Python literals Barman writes into `backup.info` with `repr()` and reads back
//! with `ast.literal_eval` (`barman/infofile.py`: `backup_label`, `copy_stats`,
//! `tablespaces`, `included_files`, `snapshots_info`), and Python's float `repr`, which is
//! also the `time` column of `<server>-xlog.db`.
//!
//! Writing reproduces CPython 3's `repr()` byte for byte for the values Barman stores:
//! strings (quote choice and escapes), ints, floats (shortest round-trip digits, `1.0`,
//! `1e+16`, `1e-05`), `None`/`True`/`False`, lists, tuples and dicts (insertion order,
//! `', '` and `': '` separators). One approximation: whether a non-ASCII character is
//! "printable" (kept verbatim rather than escaped) uses a small table of the non-printable
//! ranges instead of the full Unicode database — exact for ASCII, Latin-1, and the
//! characters found in paths and PostgreSQL labels.
//!
//! Reading accepts what `ast.literal_eval` accepts for these types (prefixes `r`/`u`,
//! both quote styles, escapes, implicit string concatenation, `0x`/`0o`/`0b` ints, `_`
//! digit separators, a unary sign on numbers, trailing commas), and refuses the rest (sets,
//! bytes, complex numbers, triple quotes, `\N{…}` escapes) with an error. Non-finite floats
//! are refused too: Barman would write them as `inf`/`nan`, which it cannot read back.

use std::fmt::{self, Write as _};

/// A Python literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer (Python's are unbounded; these fit 128 bits).
    Int(i128),
    /// A finite float.
    Float(f64),
    /// A string.
    Str(String),
    /// `[a, b]`.
    List(Vec<PyValue>),
    /// `(a, b)`.
    Tuple(Vec<PyValue>),
    /// `{k: v}`, in insertion order, keys unique.
    Dict(Vec<(PyValue, PyValue)>),
}

impl PyValue {
    /// Python truthiness: `None`, `False`, `0`, `0.0`, and empty strings and containers are
    /// false. Barman writes falsy values of `repr` fields as `None` (`null_repr`).
    pub fn is_truthy(&self) -> bool {
        match self {
            PyValue::None => false,
            PyValue::Bool(b) => *b,
            PyValue::Int(i) => *i != 0,
            PyValue::Float(f) => *f != 0.0,
            PyValue::Str(s) => !s.is_empty(),
            PyValue::List(v) | PyValue::Tuple(v) => !v.is_empty(),
            PyValue::Dict(d) => !d.is_empty(),
        }
    }

    /// The string, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number as a float (ints and bools convert), when this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PyValue::Float(f) => Some(*f),
            PyValue::Int(i) => Some(*i as f64),
            PyValue::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        }
    }

    /// The value under key `key` of a dict with string keys.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Parses one literal, as `ast.literal_eval` would (leading spaces and tabs allowed).
    pub fn parse(text: &str) -> Result<PyValue, PyLiteralError> {
        let mut p = Parser { s: text.as_bytes(), text, pos: 0, depth: 0 };
        p.skip_ws();
        let value = p.value()?;
        p.skip_ws();
        if p.pos != p.s.len() {
            return Err(p.err("unexpected text after the value"));
        }
        Ok(value)
    }
}

/// Python's `repr()` of the value.
impl fmt::Display for PyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PyValue::None => f.write_str("None"),
            PyValue::Bool(true) => f.write_str("True"),
            PyValue::Bool(false) => f.write_str("False"),
            PyValue::Int(i) => write!(f, "{i}"),
            PyValue::Float(x) => f.write_str(&float_repr(*x)),
            PyValue::Str(s) => f.write_str(&str_repr(s)),
            PyValue::List(items) => {
                f.write_char('[')?;
                write_items(f, items)?;
                f.write_char(']')
            }
            PyValue::Tuple(items) => {
                f.write_char('(')?;
                write_items(f, items)?;
                if items.len() == 1 {
                    f.write_char(',')?;
                }
                f.write_char(')')
            }
            PyValue::Dict(items) => {
                f.write_char('{')?;
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_char('}')
            }
        }
    }
}

fn write_items(f: &mut fmt::Formatter<'_>, items: &[PyValue]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// Why a text is not a supported Python literal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Python literal at character {position}: {problem}")]
pub struct PyLiteralError {
    /// Byte offset in the text.
    pub position: usize,
    /// What was wrong.
    pub problem: &'static str,
}

/// Python's `repr(float)` (also `str(float)`): the shortest digits that read back to the same
/// double, in fixed notation when the decimal exponent is in `-4 < e <= 16` (with `.0` for
/// whole numbers), else `1.5e+16` / `1e-05` style.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    // Rust's `{:e}` prints the shortest round-trip digits: "1.7956100097475064e9".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let decpt = exp + 1; // value = 0.DIGITS × 10^decpt
    if decpt <= -4 || decpt > 16 {
        let mut out = format!("{sign}{}", &digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
        out
    } else if decpt <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt < n {
        format!("{sign}{}.{}", &digits[..decpt as usize], &digits[decpt as usize..])
    } else {
        format!("{sign}{digits}{}.0", "0".repeat((decpt - n) as usize))
    }
}

/// Python 3's `repr(str)`.
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x7f => out.push(c),
            c if is_printable(c) => out.push(c),
            c if (c as u32) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push(quote);
    out
}

/// Approximates Python's `str.isprintable` for non-ASCII characters: false for controls
/// (Cc), separators other than space (Zs, Zl, Zp), the common format characters (Cf),
/// private use (Co) and noncharacters.
fn is_printable(c: char) -> bool {
    let u = c as u32;
    !matches!(u,
        0x80..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2
        | 0x1680 | 0x180e | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064
        | 0x2066..=0x206f | 0x3000 | 0xd800..=0xf8ff | 0xfdd0..=0xfdef | 0xfeff
        | 0xfff9..=0xfffb | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff)
        && (u & 0xfffe) != 0xfffe
}

/// Nesting limit, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, problem: &'static str) -> PyLiteralError {
        PyLiteralError { position: self.pos, problem }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\x0c')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<PyValue, PyLiteralError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        let v = self.value_inner();
        self.depth -= 1;
        v
    }

    fn value_inner(&mut self) -> Result<PyValue, PyLiteralError> {
        match self.peek() {
            None => Err(self.err("missing value")),
            Some(b'[') => {
                self.pos += 1;
                Ok(PyValue::List(self.items(b']')?.0))
            }
            Some(b'(') => {
                self.pos += 1;
                let (items, trailing_comma) = self.items(b')')?;
                if items.len() == 1 && !trailing_comma {
                    // A parenthesised expression, not a tuple.
                    Ok(items.into_iter().next().expect("one item"))
                } else {
                    Ok(PyValue::Tuple(items))
                }
            }
            Some(b'{') => {
                self.pos += 1;
                self.dict()
            }
            Some(b'-' | b'+') => {
                let negative = self.peek() == Some(b'-');
                self.pos += 1;
                self.skip_ws();
                match self.number()? {
                    PyValue::Int(i) => Ok(PyValue::Int(if negative { -i } else { i })),
                    PyValue::Float(f) => Ok(PyValue::Float(if negative { -f } else { f })),
                    _ => unreachable!("number() yields numbers"),
                }
            }
            Some(b'0'..=b'9' | b'.') => self.number(),
            Some(b'\'' | b'"') => self.strings(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
                    self.pos += 1;
                }
                let word = &self.text[start..self.pos];
                match word {
                    "None" => Ok(PyValue::None),
                    "True" => Ok(PyValue::Bool(true)),
                    "False" => Ok(PyValue::Bool(false)),
                    "r" | "R" | "u" | "U" if matches!(self.peek(), Some(b'\'' | b'"')) => {
                        self.pos = start;
                        self.strings()
                    }
                    _ => {
                        self.pos = start;
                        Err(self.err("unsupported name or string prefix"))
                    }
                }
            }
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    /// Comma-separated values up to `close`; also says whether a trailing comma was seen.
    fn items(&mut self, close: u8) -> Result<(Vec<PyValue>, bool), PyLiteralError> {
        let mut items = Vec::new();
        let mut trailing = false;
        loop {
            self.skip_ws();
            if self.eat(close) {
                return Ok((items, trailing));
            }
            items.push(self.value()?);
            self.skip_ws();
            trailing = self.eat(b',');
            if !trailing {
                self.skip_ws();
                if self.eat(close) {
                    return Ok((items, false));
                }
                return Err(self.err("expected ',' or a closing bracket"));
            }
        }
    }

    fn dict(&mut self) -> Result<PyValue, PyLiteralError> {
        let mut items: Vec<(PyValue, PyValue)> = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b'}') {
                return Ok(PyValue::Dict(items));
            }
            let key_pos = self.pos;
            let key = self.value()?;
            if !hashable(&key) {
                self.pos = key_pos;
                return Err(self.err("unhashable dict key"));
            }
            self.skip_ws();
            if !self.eat(b':') {
                return Err(self.err("expected ':' (sets are not supported)"));
            }
            self.skip_ws();
            let value = self.value()?;
            // Python keeps the first key object and the last value.
            match items.iter_mut().find(|(k, _)| key_eq(k, &key)) {
                Some(slot) => slot.1 = value,
                None => items.push((key, value)),
            }
            self.skip_ws();
            if !self.eat(b',') {
                self.skip_ws();
                if self.eat(b'}') {
                    return Ok(PyValue::Dict(items));
                }
                return Err(self.err("expected ',' or '}'"));
            }
        }
    }

    fn number(&mut self) -> Result<PyValue, PyLiteralError> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
            || (matches!(self.peek(), Some(b'+' | b'-'))
                && matches!(self.s.get(self.pos.wrapping_sub(1)), Some(b'e' | b'E'))
                && !self.text[start..self.pos].starts_with("0x")
                && !self.text[start..self.pos].starts_with("0X"))
        {
            self.pos += 1;
        }
        let token = &self.text[start..self.pos];
        let fail = |problem| PyLiteralError { position: start, problem };
        if token.is_empty() {
            return Err(fail("expected a number"));
        }
        if token.starts_with('_') || token.ends_with('_') || token.contains("__") {
            return Err(fail("misplaced '_' in a number"));
        }
        let lower = token.to_ascii_lowercase();
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
            if let Some(rest) = lower.strip_prefix(prefix) {
                let digits: String = rest.trim_start_matches('_').replace('_', "");
                return i128::from_str_radix(&digits, radix)
                    .ok()
                    .filter(|_| !digits.is_empty() && !digits.starts_with(['+', '-']))
                    .map(PyValue::Int)
                    .ok_or_else(|| fail("bad integer literal"));
            }
        }
        if lower.ends_with('j') {
            return Err(fail("complex numbers are not supported"));
        }
        if lower.contains(['_']) && (lower.contains("_.") || lower.contains("._")
            || lower.contains("_e") || lower.contains("e_"))
        {
            return Err(fail("misplaced '_' in a number"));
        }
        let plain = lower.replace('_', "");
        if plain.bytes().all(|b| b.is_ascii_digit()) {
            if plain.len() > 1 && plain.starts_with('0') && plain.bytes().any(|b| b != b'0') {
                return Err(fail("leading zeros in a decimal integer"));
            }
            return plain.parse::<i128>().map(PyValue::Int).map_err(|_| fail("integer too large"));
        }
        let valid_float = {
            let (mant, exp) = match plain.split_once('e') {
                Some((m, e)) => (m, Some(e)),
                None => (plain.as_str(), None),
            };
            let mant_ok = mant.bytes().filter(|b| *b == b'.').count() <= 1
                && mant.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && mant.bytes().any(|b| b.is_ascii_digit());
            let exp_ok = exp.is_none_or(|e| {
                let e = e.strip_prefix(['+', '-']).unwrap_or(e);
                !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
            });
            mant_ok && exp_ok && (mant.contains('.') || exp.is_some())
        };
        if !valid_float {
            return Err(fail("bad number"));
        }
        match plain.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(PyValue::Float(f)),
            Ok(_) => Err(fail("float out of range")),
            Err(_) => Err(fail("bad number")),
        }
    }

    /// One or more adjacent string literals, concatenated.
    fn strings(&mut self) -> Result<PyValue, PyLiteralError> {
        let mut out = String::new();
        loop {
            out.push_str(&self.string()?);
            let save = self.pos;
            self.skip_ws();
            let next_is_string = match self.peek() {
                Some(b'\'' | b'"') => true,
                Some(b'r' | b'R' | b'u' | b'U') => {
                    matches!(self.s.get(self.pos + 1), Some(b'\'' | b'"'))
                }
                _ => false,
            };
            if !next_is_string {
                self.pos = save;
                return Ok(PyValue::Str(out));
            }
        }
    }

    fn string(&mut self) -> Result<String, PyLiteralError> {
        let raw = match self.peek() {
            Some(b'r' | b'R') => {
                self.pos += 1;
                true
            }
            Some(b'u' | b'U') => {
                self.pos += 1;
                false
            }
            _ => false,
        };
        let quote = self.peek().ok_or_else(|| self.err("missing string"))?;
        if quote != b'\'' && quote != b'"' {
            return Err(self.err("expected a quote"));
        }
        if self.s.get(self.pos + 1) == Some(&quote) && self.s.get(self.pos + 2) == Some(&quote) {
            return Err(self.err("triple-quoted strings are not supported"));
        }
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            // Copy a run of ordinary characters at once (keeps UTF-8 intact).
            while matches!(self.peek(), Some(c) if c != quote && c != b'\\' && c != b'\n' && c != b'\r')
            {
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                None | Some(b'\n' | b'\r') => return Err(self.err("unterminated string")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(_) => {
                    // A backslash.
                    self.pos += 1;
                    if raw {
                        match self.peek() {
                            None | Some(b'\n' | b'\r') => {
                                return Err(self.err("unterminated string"))
                            }
                            Some(_) => {
                                out.push('\\');
                                let c = self.next_char();
                                out.push(c);
                            }
                        }
                        continue;
                    }
                    self.escape(&mut out)?;
                }
            }
        }
    }

    fn next_char(&mut self) -> char {
        let c = self.text[self.pos..].chars().next().expect("not at end");
        self.pos += c.len_utf8();
        c
    }

    fn hex_escape(&mut self, n: usize) -> Result<u32, PyLiteralError> {
        let digits = self.s.get(self.pos..self.pos + n).ok_or_else(|| self.err("truncated escape"))?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(self.err("bad hex escape"));
        }
        let v = u32::from_str_radix(std::str::from_utf8(digits).expect("ascii"), 16)
            .map_err(|_| self.err("bad hex escape"))?;
        self.pos += n;
        Ok(v)
    }

    fn escape(&mut self, out: &mut String) -> Result<(), PyLiteralError> {
        let Some(c) = self.peek() else { return Err(self.err("unterminated string")) };
        self.pos += 1;
        let simple = match c {
            b'\\' => Some('\\'),
            b'\'' => Some('\''),
            b'"' => Some('"'),
            b'a' => Some('\x07'),
            b'b' => Some('\x08'),
            b'f' => Some('\x0c'),
            b'n' => Some('\n'),
            b'r' => Some('\r'),
            b't' => Some('\t'),
            b'v' => Some('\x0b'),
            _ => None,
        };
        if let Some(ch) = simple {
            out.push(ch);
            return Ok(());
        }
        let code = match c {
            b'x' => self.hex_escape(2)?,
            b'u' => self.hex_escape(4)?,
            b'U' => self.hex_escape(8)?,
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                v
            }
            b'N' => return Err(self.err("\\N{...} escapes are not supported")),
            b'\n' | b'\r' => return Err(self.err("unterminated string")),
            _ => {
                // Python keeps unknown escapes as written.
                self.pos -= 1;
                out.push('\\');
                let ch = self.next_char();
                out.push(ch);
                return Ok(());
            }
        };
        let ch = char::from_u32(code).ok_or_else(|| self.err("escape is not a Unicode scalar"))?;
        out.push(ch);
        Ok(())
    }
}

fn hashable(v: &PyValue) -> bool {
    match v {
        PyValue::List(_) | PyValue::Dict(_) => false,
        PyValue::Tuple(items) => items.iter().all(hashable),
        _ => true,
    }
}

/// Python's equality for dict keys: `1 == 1.0 == True`.
fn key_eq(a: &PyValue, b: &PyValue) -> bool {
    match (a, b) {
        (PyValue::Tuple(x), PyValue::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| key_eq(p, q))
        }
        (PyValue::Str(x), PyValue::Str(y)) => x == y,
        (PyValue::None, PyValue::None) => true,
        _ => match (numeric(a), numeric(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

fn numeric(v: &PyValue) -> Option<f64> {
    match v {
        PyValue::Bool(_) | PyValue::Int(_) | PyValue::Float(_) => v.as_f64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (2.176814, "2.176814"),
            (58.692069, "58.692069"),
            (1795610009.7475064, "1795610009.7475064"),
            (1795610025.863507, "1795610025.863507"),
            (1795609896.0, "1795609896.0"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (f64::INFINITY, "inf"),
            (f64::NAN, "nan"),
        ];
        for (x, want) in cases {
            assert_eq!(float_repr(*x), *want, "{x:e}");
        }
    }

    #[test]
    fn str_repr_matches_python() {
        let cases: &[(&str, &str)] = &[
            ("", "''"),
            ("abc", "'abc'"),
            ("it's", "\"it's\""),
            ("it's \"x\"", "'it\\'s \"x\"'"),
            ("say \"hi\"", "'say \"hi\"'"),
            ("a\nb\tc\rd\\", "'a\\nb\\tc\\rd\\\\'"),
            ("\x00\x1b\x7f", "'\\x00\\x1b\\x7f'"),
            ("é€😀", "'é€😀'"),
            ("\u{a0}\u{ad}\u{2028}\u{feff}", "'\\xa0\\xad\\u2028\\ufeff'"),
            ("\u{10ffff}", "'\\U0010ffff'"),
        ];
        for (s, want) in cases {
            assert_eq!(str_repr(s), *want);
            assert_eq!(PyValue::parse(want).unwrap(), PyValue::Str(s.to_string()), "{want}");
        }
    }

    #[test]
    fn containers_round_trip() {
        for text in [
            "[('tbs1', 16384, '/tmp/bsample/tbs1')]",
            "{'copy_time': 2.235245, 'total_time': 2.235245}",
            "['/tmp/bsample/pg/postgresql.auto.conf']",
            "(1,)",
            "()",
            "[]",
            "{}",
            "{'a': {'b': [1, 2.5, None, True, False]}, 'c': (-1, 'x')}",
        ] {
            let v = PyValue::parse(text).unwrap();
            assert_eq!(v.to_string(), text);
        }
    }

    #[test]
    fn literal_eval_leniency() {
        let cases: &[(&str, &str)] = &[
            ("  [1,2,]", "[1, 2]"),
            ("( 'a' )", "'a'"),
            ("'a' \"b\" r'\\n'", "'ab\\\\n'"),
            ("u'x'", "'x'"),
            ("0x1F", "31"),
            ("0o17", "15"),
            ("0b101", "5"),
            ("1_000", "1000"),
            ("-1.5e3", "-1500.0"),
            ("+ 3", "3"),
            (".5", "0.5"),
            ("5.", "5.0"),
            ("{1: 'a', 1.0: 'b', True: 'c'}", "{1: 'c'}"),
            ("'\\q\\101\\x41\\u0041'", "'\\\\qAAA'"),
        ];
        for (input, want) in cases {
            assert_eq!(PyValue::parse(input).unwrap().to_string(), *want, "{input}");
        }
        for bad in [
            "", "[", "[1", "{1}", "{[1]: 2}", "b'x'", "1j", "1e999", "007", "'''x'''", "'x",
            "abc", "1 2", "--1", "'\\N{DASH}'", "'\\ud800'", "1__0", "_1", "0x", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        ] {
            assert!(PyValue::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    mod proptests {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn float_repr_reads_back(x in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO) {
                let text = float_repr(x);
                prop_assert_eq!(text.parse::<f64>().unwrap().to_bits(), x.to_bits());
                prop_assert_eq!(PyValue::parse(&text).unwrap(), PyValue::Float(x));
            }

            #[test]
            fn str_repr_reads_back(s in "\\PC*|[\\x00-\\x7f]*") {
                prop_assert_eq!(PyValue::parse(&str_repr(&s)).unwrap(), PyValue::Str(s));
            }

            #[test]
            fn parse_never_panics(s in ".{0,40}") {
                if let Ok(v) = PyValue::parse(&s) {
                    let text = v.to_string();
                    prop_assert_eq!(PyValue::parse(&text).unwrap().to_string(), text);
                }
            }
        }
    }
}
