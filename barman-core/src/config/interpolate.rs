//! `%(name)s` interpolation, as Python's `configparser.BasicInterpolation` does it.
//!
//! Rules (Python 3, the only ones Barman 3 runs on):
//!
//! - `%%` is a literal `%`;
//! - `%(name)s` is replaced by the value of option `name` (lowercased before lookup); when that
//!   value itself contains `%`, it is interpolated too, at most [`MAX_DEPTH`] levels deep;
//! - any other `%` is an error, as is a name nobody defines.
//!
//! *Which* names are visible is the caller's business (see the loader in `mod.rs`), because
//! Barman interpolates twice: once per file when merging (section + that file's `[DEFAULT]`),
//! and again when a server reads an option (the server's already computed settings, then the
//! section). [`check_set`] is the test `ConfigParser.set` applies between the two passes.

use std::fmt;

/// Python's `MAX_INTERPOLATION_DEPTH`.
pub const MAX_DEPTH: usize = 10;

/// Why a value could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpolationProblem {
    /// `%(name)s` names an option that is not visible from the section.
    MissingOption {
        /// The name inside `%( )s`, lowercased.
        name: String,
    },
    /// A `%` that starts neither `%%` nor a complete `%(name)s`.
    BadSyntax {
        /// The text from the offending `%` to the end of the value.
        rest: String,
    },
    /// References nest deeper than [`MAX_DEPTH`] (usually a cycle).
    TooDeep,
}

impl fmt::Display for InterpolationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpolationProblem::MissingOption { name } => {
                write!(f, "'%({name})s' refers to an option that is not defined where it is visible")
            }
            InterpolationProblem::BadSyntax { rest } => {
                write!(f, "bad '%' at {rest:?}: expected '%%' or '%(name)s'")
            }
            InterpolationProblem::TooDeep => write!(
                f,
                "references nest more than {MAX_DEPTH} levels deep (a reference cycle?)"
            ),
        }
    }
}

/// Interpolates `value`, resolving names through `lookup` (which receives lowercased names).
pub fn interpolate<'a>(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<&'a str>,
) -> Result<String, InterpolationProblem> {
    let mut out = String::with_capacity(value.len());
    interpolate_into(&mut out, value, lookup, 1)?;
    Ok(out)
}

fn interpolate_into<'a>(
    out: &mut String,
    mut rest: &str,
    lookup: &dyn Fn(&str) -> Option<&'a str>,
    depth: usize,
) -> Result<(), InterpolationProblem> {
    if depth > MAX_DEPTH {
        return Err(InterpolationProblem::TooDeep);
    }
    while let Some(p) = rest.find('%') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        let after = &rest[1..];
        if let Some(tail) = after.strip_prefix('%') {
            out.push('%');
            rest = tail;
        } else if after.starts_with('(') {
            let Some((name, len)) = reference(rest) else {
                return Err(InterpolationProblem::BadSyntax { rest: rest.to_owned() });
            };
            let name = name.to_lowercase();
            let Some(v) = lookup(&name) else {
                return Err(InterpolationProblem::MissingOption { name });
            };
            if v.contains('%') {
                interpolate_into(out, v, lookup, depth + 1)?;
            } else {
                out.push_str(v);
            }
            rest = &rest[len..];
        } else {
            return Err(InterpolationProblem::BadSyntax { rest: rest.to_owned() });
        }
    }
    out.push_str(rest);
    Ok(())
}

/// Matches Python's `%\(([^)]+)\)s` at the start of `s`: the name and the match length.
fn reference(s: &str) -> Option<(&str, usize)> {
    let inner = s.strip_prefix("%(")?;
    let close = inner.find(')')?;
    if close == 0 || !inner[close + 1..].starts_with('s') {
        return None;
    }
    Some((&inner[..close], 2 + close + 2))
}

/// The check `ConfigParser.set` runs on a value: after removing `%%` and every `%(name)s`, no
/// `%` may remain. Barman stores already-interpolated values with `set`, so `100%%` in a file
/// (which becomes `100%`) makes Barman stop with an error; we report it the same way.
pub fn check_set(value: &str) -> Result<(), InterpolationProblem> {
    let without_escapes = value.replace("%%", "");
    let mut rest = without_escapes.as_str();
    while let Some(p) = rest.find('%') {
        match reference(&rest[p..]) {
            Some((_, len)) => rest = &rest[p + len..],
            None => {
                return Err(InterpolationProblem::BadSyntax { rest: rest[p..].to_owned() });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(value: &str) -> Result<String, InterpolationProblem> {
        let vars = [("home", "/var/lib/barman"), ("a", "%(b)s"), ("b", "x%%y"), ("loop", "%(loop)s")];
        interpolate(value, &|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| *v))
    }

    #[test]
    fn good() {
        let table = [
            ("plain", "plain"),
            ("%(home)s/pg", "/var/lib/barman/pg"),
            ("%(HOME)s", "/var/lib/barman"),
            ("100%%", "100%"),
            ("%(a)s", "x%y"),
            ("%%(home)s", "%(home)s"),
            ("", ""),
        ];
        for (input, expected) in table {
            assert_eq!(run(input).as_deref(), Ok(expected), "input {input:?}");
        }
    }

    #[test]
    fn bad() {
        let table = [
            ("%(nope)s", "'%(nope)s' refers to an option that is not defined where it is visible"),
            ("50%", "bad '%' at \"%\": expected '%%' or '%(name)s'"),
            ("%(home)", "bad '%' at \"%(home)\": expected '%%' or '%(name)s'"),
            ("%()s", "bad '%' at \"%()s\": expected '%%' or '%(name)s'"),
            ("a %d", "bad '%' at \"%d\": expected '%%' or '%(name)s'"),
            ("%(loop)s", "references nest more than 10 levels deep (a reference cycle?)"),
        ];
        for (input, message) in table {
            assert_eq!(run(input).expect_err(input).to_string(), message, "input {input:?}");
        }
    }

    #[test]
    fn set_check() {
        assert!(check_set("a %(b)s %% c").is_ok());
        assert!(check_set("100%").is_err());
        assert!(check_set("%%%").is_err());
        assert!(check_set("%(x)").is_err());
    }
}
